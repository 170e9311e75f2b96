//! One test (or more) per mapping.

use crate::examples::{alert, bp, event, news2, pid, reading, t0};
use vigil_fhir::{Bundle, BundleLink, IssueType, Resource, Severity, system};
use vigil_model::{DataAbsentReason, EventKind, Flags};
use vigil_store::AlertStatus;

fn is_fhir_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

#[test]
fn bp_is_the_85354_9_panel_with_systolic_diastolic_and_mean_components() {
    let o = vigil_fhir::observation(&pid(), &bp(121.0, 79.0, Some(93.0)));
    assert!(o.code.has(system::LOINC, "85354-9"));
    assert!(o.code.has(system::MDC, "150020"));
    assert!(o.value_quantity.is_none() && o.data_absent_reason.is_none());
    let comp = |loinc: &str| {
        o.component
            .iter()
            .find(|c| c.code.has(system::LOINC, loinc))
            .expect(loinc)
    };
    for (loinc, mdc, v) in [
        ("8480-6", "150021", 121.0),
        ("8462-4", "150022", 79.0),
        ("8478-0", "150023", 93.0),
    ] {
        let c = comp(loinc);
        assert!(c.code.has(system::MDC, mdc), "{loinc}");
        let q = c.value_quantity.as_ref().expect("quantity");
        assert_eq!(
            (q.value, q.code.as_deref(), q.system.as_deref()),
            (v, Some("mm[Hg]"), Some(system::UCUM))
        );
    }
    let meta = o.meta.as_ref().expect("meta");
    assert!(meta.profile.iter().any(|p| p == vigil_fhir::BP_PROFILE));
}

#[test]
fn bp_without_diastolic_still_has_the_required_component_with_a_data_absent_reason() {
    let mut r = bp(121.0, 79.0, None);
    r.components.truncate(1);
    let o = vigil_fhir::observation(&pid(), &r);
    assert_eq!(o.component.len(), 2);
    let dia = o
        .component
        .iter()
        .find(|c| c.code.has(system::LOINC, "8462-4"))
        .expect("diastolic");
    assert!(dia.value_quantity.is_none());
    assert!(
        dia.data_absent_reason
            .as_ref()
            .expect("dar")
            .has(system::DATA_ABSENT_REASON, "unknown")
    );
}

#[test]
fn absent_value_gives_data_absent_reason_and_no_value_quantity() {
    for reason in DataAbsentReason::ALL {
        let mut r = reading("8867-4", None);
        r.absent = Some(reason);
        let o = vigil_fhir::observation(&pid(), &r);
        assert!(o.value_quantity.is_none());
        let dar = o.data_absent_reason.expect("dataAbsentReason");
        assert!(
            dar.has(system::DATA_ABSENT_REASON, reason.code()),
            "{reason:?}"
        );
    }
    // A non-finite number never becomes a quantity.
    let o = vigil_fhir::observation(&pid(), &reading("8867-4", Some(f64::INFINITY)));
    assert!(o.value_quantity.is_none());
    assert!(
        o.data_absent_reason
            .expect("dar")
            .has(system::DATA_ABSENT_REASON, "positive-infinity")
    );
    let json = serde_json::to_value(vigil_fhir::observation(
        &pid(),
        &reading("8867-4", Some(f64::NAN)),
    ))
    .expect("json");
    assert!(json.get("valueQuantity").is_none(), "{json}");
}

#[test]
fn vital_sign_has_category_loinc_ucum_and_mdc_coding() {
    let o = vigil_fhir::observation(&pid(), &reading("8867-4", Some(72.0)));
    assert!(
        o.category
            .iter()
            .any(|c| c.has(system::OBSERVATION_CATEGORY, "vital-signs"))
    );
    assert!(o.code.has(system::LOINC, "8867-4"));
    assert!(o.code.has(system::MDC, "147842"));
    let q = o.value_quantity.expect("quantity");
    assert_eq!(
        (
            q.value,
            q.unit.as_deref(),
            q.code.as_deref(),
            q.system.as_deref()
        ),
        (72.0, Some("/min"), Some("/min"), Some(system::UCUM))
    );
    assert_eq!(o.status, "final");
    // SpO2 carries the R4 core code 2708-6 beside its primary 59408-5.
    let s = vigil_fhir::observation(&pid(), &reading("59408-5", Some(97.0)));
    assert!(
        s.code.has(system::LOINC, "59408-5")
            && s.code.has(system::LOINC, "2708-6")
            && s.code.has(system::MDC, "150456")
    );
    // No MDC code in the registry, no MDC coding; not a vital sign, no vital-signs category.
    let f = vigil_fhir::observation(&pid(), &reading("20150-9", Some(3.1)));
    assert!(
        f.code
            .coding
            .iter()
            .all(|c| c.system.as_deref() != Some(system::MDC))
    );
    assert!(f.category.is_empty());
}

#[test]
fn effective_date_time_is_the_device_time_and_references_are_set() {
    let r = reading("8310-5", Some(37.0));
    let o = vigil_fhir::observation(&pid(), &r);
    assert_eq!(
        o.effective_date_time.as_deref(),
        Some("2026-11-24T08:15:30.250Z")
    );
    assert_eq!(
        o.issued.as_deref(),
        Some(r.hub_received.to_rfc3339().as_str())
    );
    assert_eq!(o.subject, Some(vigil_fhir::patient_reference(&pid())));
    assert_eq!(o.device, Some(vigil_fhir::device_reference(&r.device)));
}

#[test]
fn same_reading_gives_the_same_id_and_identifier_and_a_different_one_does_not() {
    let a = reading("8867-4", Some(72.0));
    let mut again = a.clone();
    again.hub_received = again.hub_received.saturating_add_millis(60_000);
    again.received = None;
    let (oa, ob) = (
        vigil_fhir::observation(&pid(), &a),
        vigil_fhir::observation(&pid(), &again),
    );
    assert_eq!(oa.id, ob.id);
    assert_eq!(oa.identifier, ob.identifier);
    let id = oa.id.clone().expect("id");
    assert!(is_fhir_id(&id));
    // The id names its reading, so a read can find it again.
    let key = vigil_fhir::ObservationKey::parse(&id).expect("resolvable id");
    assert_eq!(key.time, a.time);
    assert_eq!(key.metric, a.metric);
    assert!(key.matches(&pid(), &a.device));
    assert!(!key.matches(&pid(), &crate::examples::did("ox-2")));
    assert_eq!(
        oa.identifier[0].system.as_deref(),
        Some(system::OBSERVATION)
    );
    let mut later = a.clone();
    later.time = later.time.saturating_add_millis(1);
    assert_ne!(vigil_fhir::observation(&pid(), &later).id, oa.id);
    let mut other_device = a.clone();
    other_device.device = crate::examples::did("ox-2");
    assert_ne!(vigil_fhir::observation(&pid(), &other_device).id, oa.id);
}

#[test]
fn reading_flags_become_tags_and_ongoing_measurements_are_preliminary() {
    let mut r = reading("8867-4", Some(72.0));
    r.flags = Flags::MEASUREMENT_ONGOING | Flags::LOW_BATTERY;
    let o = vigil_fhir::observation(&pid(), &r);
    assert_eq!(o.status, "preliminary");
    let tags: Vec<_> = o
        .meta
        .expect("meta")
        .tag
        .into_iter()
        .filter_map(|c| c.code)
        .collect();
    assert_eq!(tags, ["low_battery", "measurement_ongoing"]);
}

#[test]
fn patient_and_device_have_fhir_ids_and_keep_vigil_ids_as_identifiers() {
    let p = vigil_fhir::patient(&vigil_model::Patient {
        id: pid(),
        name: Some("Ada".into()),
        birth_date: Some("1950-03-01".into()),
    });
    let id = p.id.clone().expect("id");
    assert!(is_fhir_id(&id), "{id}");
    assert!(
        p.identifier
            .iter()
            .any(|i| i.value.as_deref() == Some("p:001_a"))
    );
    assert_eq!(p.birth_date.as_deref(), Some("1950-03-01"));
    let bad = vigil_fhir::patient(&vigil_model::Patient {
        id: pid(),
        name: None,
        birth_date: Some("01/03/1950".into()),
    });
    assert_eq!(bad.birth_date, None);
    assert_eq!(bad.id, p.id);
    let Some((_, Resource::Device(d))) = crate::examples::all()
        .into_iter()
        .find(|(n, _)| n == "device-oximeter")
    else {
        panic!("example device")
    };
    assert!(d.kind.as_ref().expect("type").has(system::MDC, "528388"));
    assert_eq!(d.serial_number.as_deref(), Some("SN-1"));
    assert_eq!(
        d.id.as_deref(),
        Some(vigil_fhir::device_id(&crate::examples::did("ox-1")).as_str())
    );
}

#[test]
fn news2_risk_assessment_has_a_basis_per_parameter_and_the_risk_band() {
    let n = news2();
    let ra = vigil_fhir::risk_assessment(&pid(), &n, t0());
    assert_eq!(ra.basis.len(), 8, "aggregate and seven parameters");
    assert_eq!(ra.contained.len(), 8);
    for b in &ra.basis {
        let target = b
            .reference
            .as_deref()
            .and_then(|r| r.strip_prefix('#'))
            .expect("local reference");
        assert!(
            ra.contained.iter().any(|c| c.id() == Some(target)),
            "{target}"
        );
    }
    let score = |key: &str| {
        ra.contained
            .iter()
            .find_map(|c| match c {
                Resource::Observation(o) if o.code.has(system::NEWS2, key) => o.value_integer,
                _ => None,
            })
            .expect(key)
    };
    assert_eq!(score("total"), i64::from(n.total));
    assert_eq!(score("rr"), i64::from(n.rr));
    assert_eq!(score("temp"), i64::from(n.temp));
    let q = ra.prediction[0].qualitative_risk.as_ref().expect("risk");
    assert!(q.coding[0].system.as_deref() == Some(system::RISK_PROBABILITY));
    assert_eq!(
        ra.occurrence_date_time.as_deref(),
        Some("2026-11-24T08:15:30.250Z")
    );
    assert_eq!(vigil_fhir::risk_assessment(&pid(), &n, t0()).id, ra.id);
    // The id names the patient and time, so a read can compute the assessment again.
    let id = ra.id.clone().expect("id");
    assert!(is_fhir_id(&id));
    let key = vigil_fhir::RiskKey::parse(&id).expect("resolvable id");
    assert_eq!(key.time, t0());
    assert!(vigil_fhir::patient_id(&pid()).starts_with(&key.patient));
    assert_eq!(vigil_fhir::RiskKey::parse("news2.xyz.1"), None);
    assert_eq!(vigil_fhir::ObservationKey::parse(&id), None);
}

#[test]
fn alert_is_a_flag_active_until_resolved_with_a_stable_id() {
    let open = vigil_fhir::flag(&alert(AlertStatus::Open));
    let resolved = vigil_fhir::flag(&alert(AlertStatus::Resolved));
    assert_eq!(open.status, "active");
    assert_eq!(resolved.status, "inactive");
    assert_eq!(
        open.id, resolved.id,
        "one Flag per alert across its lifecycle"
    );
    assert!(open.period.as_ref().expect("period").end.is_none());
    assert!(resolved.period.as_ref().expect("period").end.is_some());
    assert!(open.code.has(system::ALERT_RULE, "news2"));
    assert_eq!(
        vigil_fhir::flag(&alert(AlertStatus::Acknowledged)).status,
        "active"
    );
}

#[test]
fn medication_events_map_to_medication_administration_and_others_do_not() {
    let ing = vigil_fhir::medication_administration(
        &pid(),
        &event(EventKind::MedicationIngestion {
            medication: "metformin".into(),
            dose: None,
        }),
    )
    .expect("ingestion");
    assert_eq!(ing.status, "completed");
    assert_eq!(ing.effective_date_time, "2026-11-24T08:15:30.250Z");
    assert_eq!(
        ing.medication_codeable_concept.text.as_deref(),
        Some("metformin")
    );
    let inh = vigil_fhir::medication_administration(
        &pid(),
        &event(EventKind::InhalerActuation {
            medication: Some("salbutamol".into()),
            rescue: true,
            peak_inspiratory_flow: None,
        }),
    )
    .expect("inhaler");
    assert!(
        inh.dosage
            .expect("dosage")
            .text
            .expect("text")
            .contains("rescue")
    );
    assert_ne!(ing.id, inh.id);
    assert!(vigil_fhir::medication_administration(&pid(), &event(EventKind::BedExit)).is_err());
}

#[test]
fn stock_level_maps_to_a_supply_request_delivered_to_its_location() {
    let e = event(EventKind::StockLevel {
        item: "gauze".into(),
        quantity: 1.0,
        location: Some("ward-3".into()),
    });
    let s = vigil_fhir::supply_request(&e, 10.0).expect("maps");
    assert_eq!(s.quantity.value, 10.0);
    let loc = vigil_fhir::location("ward-3");
    assert_eq!(
        s.deliver_to.and_then(|r| r.reference),
        Some(format!("Location/{}", loc.id.expect("id")))
    );
    assert!(vigil_fhir::supply_request(&e, f64::NAN).is_err());
    assert!(vigil_fhir::supply_request(&event(EventKind::BedExit), 1.0).is_err());
}

#[test]
fn operation_outcome_carries_severity_code_and_diagnostics() {
    let oo = vigil_fhir::operation_outcome(Severity::Error, IssueType::Invalid, "bad date");
    let json = serde_json::to_value(Resource::from(oo)).expect("json");
    assert_eq!(json["resourceType"], "OperationOutcome");
    assert_eq!(json["issue"][0]["severity"], "error");
    assert_eq!(json["issue"][0]["code"], "invalid");
    assert_eq!(json["issue"][0]["diagnostics"], "bad date");
}

#[test]
fn searchset_has_total_links_and_match_entries() {
    let o: Resource = vigil_fhir::observation(&pid(), &reading("8867-4", Some(70.0))).into();
    let b = Bundle::searchset(
        vec![o],
        Some(31),
        vec![BundleLink::new("next", "https://h/fhir/Observation?page=2")],
    );
    let json = serde_json::to_value(Resource::from(b)).expect("json");
    assert_eq!(json["type"], "searchset");
    assert_eq!(json["total"], 31);
    assert_eq!(json["link"][0]["relation"], "next");
    assert_eq!(json["entry"][0]["search"]["mode"], "match");
    assert_eq!(json["entry"][0]["resource"]["resourceType"], "Observation");
}

#[test]
fn transaction_uses_conditional_create_on_the_identifier_and_sends_a_repeat_once() {
    let r = reading("8867-4", Some(70.0));
    let o = vigil_fhir::observation(&pid(), &r);
    let id = o.id.clone().expect("id");
    let p = vigil_fhir::patient(&vigil_model::Patient {
        id: pid(),
        name: None,
        birth_date: None,
    });
    let b = Bundle::transaction(vec![
        p.clone().into(),
        o.clone().into(),
        vigil_fhir::observation(&pid(), &r).into(),
    ]);
    assert_eq!(b.entry.len(), 2, "the repeated reading is sent once");
    let put = b.entry[0].request.as_ref().expect("request");
    assert_eq!(
        (put.method.as_str(), put.url.clone()),
        ("PUT", format!("Patient/{}", p.id.expect("id")))
    );
    let post = b.entry[1].request.as_ref().expect("request");
    assert_eq!(post.method, "POST");
    assert_eq!(post.url, "Observation");
    assert_eq!(
        post.if_none_exist.as_deref(),
        Some(format!("identifier=urn:vigil:observation|{id}").as_str())
    );
    assert!(
        b.entry[1]
            .full_url
            .as_deref()
            .is_some_and(|u| u.starts_with("urn:uuid:"))
    );
}

#[test]
fn resources_round_trip_through_json() {
    for (name, r) in crate::examples::all() {
        let text = r.to_json().expect("json");
        let back: Resource = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(back, r, "{name}");
    }
}

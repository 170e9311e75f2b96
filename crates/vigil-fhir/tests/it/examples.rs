//! One or more example resources of every kind vigil-fhir emits, built through its public API.

use vigil_fhir::{Bundle, BundleLink, IssueType, Resource, Severity};
use vigil_model::{
    Component, DataAbsentReason, Device, DeviceId, DeviceKind, Event, EventKind, Flags, Patient,
    PatientId, Source, Timestamp, registry,
};
use vigil_rules::{Acvpu, Inputs, Spo2Scale};
use vigil_store::{Alert, AlertSource, AlertStatus, StoredReading};

pub fn pid() -> PatientId {
    PatientId::new("p:001_a").expect("id")
}

pub fn did(s: &str) -> DeviceId {
    DeviceId::new(s).expect("id")
}

pub fn t0() -> Timestamp {
    Timestamp::parse("2026-11-24T08:15:30.250Z").expect("time")
}

pub fn reading(code: &str, value: Option<f64>) -> StoredReading {
    StoredReading {
        metric: registry().lookup(code).expect("metric"),
        device: did("ox-1"),
        time: t0(),
        received: Some(t0().saturating_add_millis(400)),
        hub_received: t0().saturating_add_millis(2000),
        value,
        components: Vec::new(),
        absent: None,
        flags: Flags::empty(),
        source: Source::Ble,
    }
}

pub fn bp(sys: f64, dia: f64, mean: Option<f64>) -> StoredReading {
    let m = |c: &str| registry().lookup(c).expect("metric");
    let mut components = vec![
        Component {
            metric: m("8480-6"),
            value: sys,
        },
        Component {
            metric: m("8462-4"),
            value: dia,
        },
    ];
    if let Some(v) = mean {
        components.push(Component {
            metric: m("8478-0"),
            value: v,
        });
    }
    StoredReading {
        device: did("cuff-1"),
        components,
        ..reading("85354-9", None)
    }
}

pub fn alert(status: AlertStatus) -> Alert {
    Alert {
        id: 42,
        patient: pid(),
        rule_id: "news2".to_owned(),
        severity: "critical".to_owned(),
        message: "NEWS2 7: emergency response".to_owned(),
        value: Some(7.0),
        source: AlertSource::Hub,
        status,
        opened_at: t0(),
        last_seen: t0(),
        created: t0(),
        acknowledged_by: None,
        acknowledged_at: None,
        silence_until: None,
        resolved_by: None,
        resolved_at: (status == AlertStatus::Resolved)
            .then(|| t0().saturating_add_millis(3_600_000)),
        note: None,
        escalation_level: 0,
        escalated_at: None,
    }
}

pub fn news2() -> vigil_rules::News2 {
    vigil_rules::score(&Inputs {
        respiration_rate: Some(24.0),
        spo2: Some(93.0),
        scale: Spo2Scale::Scale1,
        supplemental_oxygen: Some(false),
        systolic_bp: Some(105.0),
        pulse: Some(115.0),
        consciousness: Some(Acvpu::Alert),
        temperature: Some(38.5),
    })
    .expect("complete inputs")
}

pub fn event(kind: EventKind) -> Event {
    Event {
        device: did("pillcam-1"),
        time: t0(),
        received: None,
        kind,
        source: Source::Mqtt,
        patient: None,
    }
}

/// `(file stem, resource)` for every kind, with the edge cases that matter.
pub fn all() -> Vec<(String, Resource)> {
    let p = pid();
    let mut out: Vec<(String, Resource)> = Vec::new();
    let mut add = |name: &str, r: Resource| out.push((name.to_owned(), r));

    add(
        "patient",
        vigil_fhir::patient(&Patient {
            id: p.clone(),
            name: Some("Ada Example".to_owned()),
            birth_date: Some("1950-03-01".to_owned()),
        })
        .into(),
    );
    add(
        "patient-minimal",
        vigil_fhir::patient(&Patient {
            id: p.clone(),
            name: None,
            birth_date: Some("not a date".to_owned()),
        })
        .into(),
    );
    add(
        "device-oximeter",
        vigil_fhir::device(&Device {
            id: did("ox-1"),
            kind: DeviceKind::PulseOximeter,
            serial: Some("SN-1".to_owned()),
            mac: Some("00:11:22:33:44:55".to_owned()),
            eui64: Some("00-11-22-FF-FE-33-44-55".to_owned()),
            manufacturer: Some("Acme".to_owned()),
            model: Some("OX-9".to_owned()),
            gateway: Some("gw-1".to_owned()),
        })
        .into(),
    );
    add(
        "device-other",
        vigil_fhir::device(&Device {
            id: did("shelf-3"),
            kind: DeviceKind::SupplyShelf,
            serial: None,
            mac: None,
            eui64: None,
            manufacturer: None,
            model: None,
            gateway: None,
        })
        .into(),
    );
    let mut hr = reading("8867-4", Some(72.0));
    hr.flags = Flags::LOW_BATTERY | Flags::MOTION_ARTIFACT;
    add(
        "observation-heart-rate",
        vigil_fhir::observation(&p, &hr).into(),
    );
    add(
        "observation-spo2",
        vigil_fhir::observation(&p, &reading("59408-5", Some(97.0))).into(),
    );
    add(
        "observation-temp",
        vigil_fhir::observation(&p, &reading("8310-5", Some(37.2))).into(),
    );
    add(
        "observation-bp",
        vigil_fhir::observation(&p, &bp(120.0, 80.0, Some(93.0))).into(),
    );
    let mut bp_sys_only = bp(120.0, 80.0, None);
    bp_sys_only.components.truncate(1);
    add(
        "observation-bp-partial",
        vigil_fhir::observation(&p, &bp_sys_only).into(),
    );
    let mut bp_absent = reading("85354-9", None);
    bp_absent.absent = Some(DataAbsentReason::Error);
    add(
        "observation-bp-absent",
        vigil_fhir::observation(&p, &bp_absent).into(),
    );
    let mut absent = reading("2708-6", None);
    absent.absent = Some(DataAbsentReason::NotANumber);
    add(
        "observation-absent",
        vigil_fhir::observation(&p, &absent).into(),
    );
    add(
        "observation-glucose",
        vigil_fhir::observation(&p, &reading("2339-0", Some(105.0))).into(),
    );
    add(
        "observation-steps",
        vigil_fhir::observation(&p, &reading("55423-8", Some(1234.0))).into(),
    );
    add(
        "risk-assessment",
        vigil_fhir::risk_assessment(&p, &news2(), t0()).into(),
    );
    add(
        "flag-active",
        vigil_fhir::flag(&alert(AlertStatus::Open)).into(),
    );
    add(
        "flag-resolved",
        vigil_fhir::flag(&alert(AlertStatus::Resolved)).into(),
    );
    add(
        "medication-ingestion",
        vigil_fhir::medication_administration(
            &p,
            &event(EventKind::MedicationIngestion {
                medication: "metformin 500 mg".to_owned(),
                dose: Some("morning".to_owned()),
            }),
        )
        .expect("maps")
        .into(),
    );
    add(
        "medication-inhaler",
        vigil_fhir::medication_administration(
            &p,
            &event(EventKind::InhalerActuation {
                medication: None,
                rescue: true,
                peak_inspiratory_flow: Some(42.5),
            }),
        )
        .expect("maps")
        .into(),
    );
    add(
        "supply-request",
        vigil_fhir::supply_request(
            &event(EventKind::StockLevel {
                item: "saline 500 mL".to_owned(),
                quantity: 2.0,
                location: Some("ward-3".to_owned()),
            }),
            20.0,
        )
        .expect("maps")
        .into(),
    );
    add("location", vigil_fhir::location("ward-3").into());
    add(
        "operation-outcome",
        vigil_fhir::operation_outcome(Severity::Error, IssueType::NotFound, "no patient p-404")
            .into(),
    );
    let members: Vec<Resource> = out.iter().map(|(_, r)| r.clone()).collect();
    let searchset = Bundle::searchset(
        members
            .iter()
            .filter(|r| matches!(r, Resource::Observation(_)))
            .cloned()
            .collect(),
        Some(120),
        vec![
            BundleLink::new(
                "self",
                "https://hub.example/fhir/Observation?patient=x&_count=9",
            ),
            BundleLink::new(
                "next",
                "https://hub.example/fhir/Observation?patient=x&_count=9&_page=2",
            ),
        ],
    );
    let transaction = Bundle::transaction(
        members
            .into_iter()
            .filter(|r| !matches!(r, Resource::OperationOutcome(_)))
            .collect(),
    );
    out.push(("bundle-searchset".to_owned(), searchset.into()));
    out.push(("bundle-transaction".to_owned(), transaction.into()));
    out
}

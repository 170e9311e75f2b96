//! FHIR R4 resources Vigil emits, and the mappings from Vigil's own types.
//!
//! Vigil owns a typed subset ([`types`]) instead of depending on a FHIR crate (see
//! ENGINEERING-NOTES: none of them is both R4 and stable). The subset is checked in the test
//! suite by an implementation Vigil did not write: `tests/validate.py` parses every kind of
//! resource emitted here with the PyPI package `fhir.resources` (its R4B models).
//!
//! # Mappings
//!
//! | Vigil | FHIR |
//! |---|---|
//! | `vigil_model::Patient` | [`Patient`] ([`patient`]) |
//! | `vigil_model::Device` | [`Device`] ([`device`]) |
//! | `vigil_store::StoredReading` | [`Observation`] ([`observation`]), R4 vital-signs profile for vital signs |
//! | `vigil_rules::News2` | [`RiskAssessment`] ([`risk_assessment`]) with one contained Observation per parameter score in `basis` |
//! | `vigil_store::Alert` | [`Flag`] ([`flag`]) |
//! | `Event` medication ingestion / inhaler actuation | [`MedicationAdministration`] ([`medication_administration`]) |
//! | `Event` stock level | [`SupplyRequest`] ([`supply_request`]) |
//! | a location name | [`Location`] ([`location`]) |
//! | an error | [`OperationOutcome`] ([`operation_outcome`]) |
//! | lists and uploads | [`Bundle::searchset`], [`Bundle::transaction`] |
//!
//! # Deterministic ids
//!
//! Every resource id is a pure function of its resource type and natural key. Most are the
//! first 32 hex digits of a SHA-256 over both (length-prefixed parts, so no two keys collide
//! by concatenation). Observations and NEWS2 RiskAssessments, of which there are millions,
//! instead spell their key out so that a read finds them in storage without an index:
//! `<patient hash 16 hex>.<LOINC>.<device time ms>.<device hash 8 hex>` and
//! `news2.<patient hash 16 hex>.<time ms>` ([`ObservationKey`], [`RiskKey`]). The same id is also the
//! value of the resource's first identifier (system `urn:vigil:<kind>`), which transaction
//! bundles use for conditional create (`ifNoneExist: identifier=system|value`): re-ingesting
//! the same reading yields the same id and identifier and never a second Observation.
//! Vigil's own ids allow `_` and `:`, which FHIR ids do not, so they are never used as FHIR ids
//! directly; they are kept as the value of the Patient's and Device's second identifier.
//!
//! # Why alerts are `Flag`s
//!
//! A Vigil alert is a standing warning about one patient with a lifecycle (open while the
//! condition holds, resolved later) keyed by (patient, rule). `Flag` is FHIR's resource for
//! "a prospective warning of potential issues when providing care to the patient", with an
//! `active | inactive` status and a `period`, which is that lifecycle exactly. `DetectedIssue`
//! records a problem with *clinical actions* (interactions, duplicate therapy, a contraindicated
//! order) and points at the implicated orders; a NEWS2 or threshold alert implicates no order.
//! `Communication` records a message that was sent: it fits the notifications Vigil delivers
//! about an alert (one per recipient and attempt), not the alert itself. The triggering
//! evidence is carried separately as Observations and a RiskAssessment.

pub mod audit_event;
pub mod types;

pub use types::{
    Annotation, Bundle, BundleEntry, BundleLink, CodeableConcept, Coding, Device, DeviceName,
    Dosage, EntryRequest, EntrySearch, Flag, HumanName, Identifier, Issue, Location,
    MedicationAdministration, Meta, Observation, ObservationComponent, OperationOutcome, Patient,
    Period, Prediction, Quantity, Reference, Resource, RiskAssessment, SupplyRequest, system,
};

use sha2::{Digest, Sha256};
use vigil_model::{
    DataAbsentReason, DeviceId, DeviceKind, Event, EventKind, Flags, Metric, PatientId, Timestamp,
};
use vigil_rules::{News2, Parameter, Risk};
use vigil_store::{Alert, StoredReading};

/// Mapping failures: the input is not something this mapping can express.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FhirError {
    #[error("event {0} does not map to a {1}")]
    WrongEvent(&'static str, &'static str),
    #[error("{0} is not a finite number")]
    NotFinite(&'static str),
}

/// Official URL of the R4 vital-signs profile.
pub const VITAL_SIGNS_PROFILE: &str = "http://hl7.org/fhir/StructureDefinition/vitalsigns";
/// Official URL of the R4 blood-pressure profile.
pub const BP_PROFILE: &str = "http://hl7.org/fhir/StructureDefinition/bp";

/// LOINC codes of the R4 vital-signs set (ValueSet `observation-vitalsignresult`). A metric
/// whose primary LOINC is outside this set (SpO2 59408-5) also gets its alias from the set
/// (2708-6), which the profile's slice requires.
const R4_VITAL_LOINC: [&str; 12] = [
    "85353-1", "9279-1", "8867-4", "2708-6", "8310-5", "8302-2", "9843-4", "29463-7", "39156-5",
    "85354-9", "8480-6", "8462-4",
];

const LOINC_BP_PANEL: &str = "85354-9";
const LOINC_SYSTOLIC: &str = "8480-6";
const LOINC_DIASTOLIC: &str = "8462-4";

/// The first 32 hex digits of SHA-256 over `kind` and the length-prefixed `parts`.
pub fn deterministic_id(kind: &str, parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in std::iter::once(kind).chain(parts.iter().copied()) {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p.as_bytes());
    }
    let mut s = hex::encode(h.finalize());
    s.truncate(32);
    s
}

/// The FHIR id of a Vigil patient.
pub fn patient_id(p: &PatientId) -> String {
    deterministic_id("Patient", &[p.as_str()])
}

/// The FHIR id of a Vigil device.
pub fn device_id(d: &DeviceId) -> String {
    deterministic_id("Device", &[d.as_str()])
}

/// Whether `s` is a valid FHIR id (`[A-Za-z0-9\-\.]{1,64}`).
pub fn is_fhir_id(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// The FHIR id of the Observation for (patient, device, metric, device time).
///
/// The id names its reading so that a read resolves it from storage without an index:
/// `<16 hex of the patient's FHIR id>.<LOINC>.<device time in ms>.<8 hex of the device's
/// FHIR id>` (see [`ObservationKey::parse`]). It is a pure function of the key, so the same
/// reading always has the same id.
pub fn observation_id(
    patient: &PatientId,
    device: &DeviceId,
    metric: Metric,
    t: Timestamp,
) -> String {
    let resolvable = format!(
        "{}.{}.{}.{}",
        &patient_id(patient)[..16],
        metric.loinc(),
        t.millis(),
        &device_id(device)[..8]
    );
    if is_fhir_id(&resolvable) {
        resolvable
    } else {
        deterministic_id(
            "Observation",
            &[
                patient.as_str(),
                device.as_str(),
                metric.loinc(),
                &t.millis().to_string(),
            ],
        )
    }
}

/// What an Observation id (from [`observation_id`]) names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservationKey {
    /// The first 16 hex digits of the patient's FHIR id.
    pub patient: String,
    pub metric: Metric,
    pub time: Timestamp,
    /// The first 8 hex digits of the device's FHIR id.
    pub device: String,
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
}

impl ObservationKey {
    /// The key an Observation id names; `None` when it is not such an id.
    pub fn parse(id: &str) -> Option<Self> {
        let mut parts = id.split('.');
        let (p, code, t, d) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || !is_hex(p, 16) || !is_hex(d, 8) {
            return None;
        }
        Some(Self {
            patient: p.to_owned(),
            metric: code.parse().ok()?,
            time: Timestamp(t.parse().ok()?),
            device: d.to_owned(),
        })
    }

    /// Whether the key names a reading of this patient and device.
    pub fn matches(&self, patient: &PatientId, device: &DeviceId) -> bool {
        patient_id(patient).starts_with(&self.patient)
            && device_id(device).starts_with(&self.device)
    }
}

/// The FHIR id of a NEWS2 RiskAssessment of `patient` at `time`:
/// `news2.<16 hex of the patient's FHIR id>.<time in ms>` (see [`RiskKey::parse`]).
pub fn risk_assessment_id(patient: &PatientId, time: Timestamp) -> String {
    format!("news2.{}.{}", &patient_id(patient)[..16], time.millis())
}

/// What a RiskAssessment id (from [`risk_assessment_id`]) names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RiskKey {
    /// The first 16 hex digits of the patient's FHIR id.
    pub patient: String,
    pub time: Timestamp,
}

impl RiskKey {
    pub fn parse(id: &str) -> Option<Self> {
        let rest = id.strip_prefix("news2.")?;
        let (p, t) = rest.split_once('.')?;
        if !is_hex(p, 16) {
            return None;
        }
        Some(Self {
            patient: p.to_owned(),
            time: Timestamp(t.parse().ok()?),
        })
    }
}

/// The FHIR id of a location by its Vigil name.
pub fn location_id(name: &str) -> String {
    deterministic_id("Location", &[name])
}

pub fn patient_reference(p: &PatientId) -> Reference {
    Reference::to("Patient", &patient_id(p))
}

pub fn device_reference(d: &DeviceId) -> Reference {
    Reference::to("Device", &device_id(d))
}

/// Whether `s` is a FHIR `date` (`YYYY`, `YYYY-MM` or `YYYY-MM-DD`).
fn is_fhir_date(s: &str) -> bool {
    let b = s.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    match b.len() {
        4 => digits(0..4),
        7 => digits(0..4) && b[4] == b'-' && digits(5..7),
        10 => digits(0..4) && b[4] == b'-' && digits(5..7) && b[7] == b'-' && digits(8..10),
        _ => false,
    }
}

/// A Vigil patient. A birth date that is not a FHIR date is left out.
pub fn patient(p: &vigil_model::Patient) -> Patient {
    let id = patient_id(&p.id);
    Patient {
        identifier: vec![
            Identifier::new(system::PATIENT, id.clone()),
            Identifier::new("urn:vigil:patient-id", p.id.as_str()),
        ],
        id: Some(id),
        active: Some(true),
        name: p
            .name
            .iter()
            .filter(|n| !n.trim().is_empty())
            .map(|n| HumanName {
                text: Some(n.clone()),
            })
            .collect(),
        birth_date: p.birth_date.clone().filter(|d| is_fhir_date(d)),
    }
}

/// The IEEE 11073 device specialisation (PHD ValueSet DeviceTypes11073MDC) of a kind, when it
/// has one.
fn device_specialisation(kind: DeviceKind) -> Option<(u32, &'static str)> {
    Some(match kind {
        DeviceKind::PulseOximeter => (528388, "Pulse oximeter"),
        DeviceKind::BloodPressureMonitor => (528391, "Blood pressure monitor"),
        DeviceKind::Thermometer => (528392, "Thermometer"),
        DeviceKind::WeightScale => (528399, "Weight scale"),
        DeviceKind::GlucoseMeter => (528401, "Glucose meter"),
        _ => return None,
    })
}

fn kind_name(kind: DeviceKind) -> String {
    serde_json::to_value(kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "other".to_owned())
}

/// A Vigil device.
pub fn device(d: &vigil_model::Device) -> Device {
    let id = device_id(&d.id);
    let mut identifier = vec![
        Identifier::new(system::DEVICE, id.clone()),
        Identifier::new("urn:vigil:device-id", d.id.as_str()),
    ];
    if let Some(e) = d.eui64.as_deref().filter(|s| !s.is_empty()) {
        identifier.push(Identifier::new(system::EUI64, e));
    }
    let kind = match device_specialisation(d.kind) {
        Some((code, display)) => CodeableConcept {
            coding: vec![Coding::new(system::MDC, code.to_string()).with_display(display)],
            text: Some(kind_name(d.kind)),
        },
        None => CodeableConcept::text(kind_name(d.kind)),
    };
    let nonempty = |s: &Option<String>| s.clone().filter(|s| !s.trim().is_empty());
    Device {
        id: Some(id),
        identifier,
        status: Some("active".to_owned()),
        manufacturer: nonempty(&d.manufacturer),
        serial_number: nonempty(&d.serial),
        model_number: nonempty(&d.model),
        device_name: nonempty(&d.model)
            .map(|m| DeviceName {
                name: m,
                kind: "model-name".to_owned(),
            })
            .into_iter()
            .collect(),
        kind: Some(kind),
        location: None,
    }
}

/// LOINC coding (plus a vital-sign alias where the profile needs one) and the first MDC code.
fn metric_code(m: Metric) -> CodeableConcept {
    let def = m.def();
    let mut coding = vec![Coding::new(system::LOINC, m.loinc()).with_display(m.display())];
    if def.vital_sign && !R4_VITAL_LOINC.contains(&m.loinc()) {
        for a in def
            .aliases
            .iter()
            .filter(|a| R4_VITAL_LOINC.contains(&a.as_str()))
        {
            coding.push(Coding::new(system::LOINC, a.clone()));
        }
    }
    if let Some(mdc) = def.mdc.first() {
        coding.push(Coding::new(system::MDC, mdc.to_string()));
    }
    CodeableConcept {
        coding,
        text: Some(m.display().to_owned()),
    }
}

fn absent(reason: DataAbsentReason) -> CodeableConcept {
    CodeableConcept::coding(Coding::new(system::DATA_ABSENT_REASON, reason.code()))
}

/// A value as a UCUM quantity, or the data-absent reason a non-finite number stands for.
fn value(m: Metric, v: f64) -> (Option<Quantity>, Option<CodeableConcept>) {
    if v.is_finite() {
        (Some(Quantity::ucum(v, m.ucum())), None)
    } else {
        let reason = if v.is_nan() {
            DataAbsentReason::NotANumber
        } else if v > 0.0 {
            DataAbsentReason::PositiveInfinity
        } else {
            DataAbsentReason::NegativeInfinity
        };
        (None, Some(absent(reason)))
    }
}

fn component(m: Metric, v: Option<f64>, reason: DataAbsentReason) -> ObservationComponent {
    let (value_quantity, data_absent_reason) = match v {
        Some(v) => value(m, v),
        None => (None, Some(absent(reason))),
    };
    ObservationComponent {
        code: metric_code(m),
        value_quantity,
        data_absent_reason,
    }
}

/// A stored reading of `patient`, as an Observation.
///
/// Vital signs carry the R4 vital-signs profile (category `vital-signs`, LOINC code, UCUM
/// quantity); blood pressure is the 85354-9 panel with systolic and diastolic components (a
/// missing one gets a data-absent reason, as the BP profile requires both) and the mean as an
/// extra component when measured. `effectiveDateTime` is the device's time, `issued` the hub's
/// receive time. Reading flags become `meta.tag` codings (`urn:vigil:reading-flag`); a
/// reading still being measured or an early estimate is `preliminary`, others `final`.
pub fn observation(patient: &PatientId, r: &StoredReading) -> Observation {
    let m = r.metric;
    let def = m.def();
    let id = observation_id(patient, &r.device, m, r.time);
    let is_bp = m.loinc() == LOINC_BP_PANEL;
    let mut meta = Meta {
        last_updated: Some(r.hub_received.to_rfc3339()),
        ..Meta::default()
    };
    if def.vital_sign {
        meta.profile.push(VITAL_SIGNS_PROFILE.to_owned());
    }
    if is_bp {
        meta.profile.push(BP_PROFILE.to_owned());
    }
    meta.tag = r
        .flags
        .names()
        .map(|n| Coding::new(system::READING_FLAG, n))
        .collect();
    let status = if r.flags.contains(Flags::MEASUREMENT_ONGOING)
        || r.flags.contains(Flags::EARLY_ESTIMATE)
    {
        "preliminary"
    } else {
        "final"
    };
    let category = if def.vital_sign {
        vec![CodeableConcept {
            coding: vec![
                Coding::new(system::OBSERVATION_CATEGORY, "vital-signs")
                    .with_display("Vital Signs"),
            ],
            text: Some("Vital Signs".to_owned()),
        }]
    } else {
        Vec::new()
    };

    let mut obs = Observation {
        id: Some(id.clone()),
        meta: (!meta.is_empty()).then_some(meta),
        identifier: vec![Identifier::new(system::OBSERVATION, id)],
        status: status.to_owned(),
        category,
        code: metric_code(m),
        subject: Some(patient_reference(patient)),
        effective_date_time: Some(r.time.to_rfc3339()),
        issued: Some(r.hub_received.to_rfc3339()),
        device: Some(device_reference(&r.device)),
        ..Observation::default()
    };

    if m.is_panel() {
        let reason = r.absent.unwrap_or(DataAbsentReason::Unknown);
        for &c in m.components() {
            let v = r.components.iter().find(|x| x.metric == c).map(|x| x.value);
            let required = is_bp && (c.loinc() == LOINC_SYSTOLIC || c.loinc() == LOINC_DIASTOLIC);
            if v.is_some() || required {
                obs.component.push(component(c, v, reason));
            }
        }
        if obs.component.is_empty() {
            obs.data_absent_reason = Some(absent(reason));
        }
    } else if let Some(v) = r.value {
        (obs.value_quantity, obs.data_absent_reason) = value(m, v);
    } else {
        obs.data_absent_reason = Some(absent(r.absent.unwrap_or(DataAbsentReason::Unknown)));
    }
    obs
}

fn parameter_key(p: Parameter) -> &'static str {
    match p {
        Parameter::RespirationRate => "rr",
        Parameter::Spo2 => "spo2",
        Parameter::AirOrOxygen => "air-or-oxygen",
        Parameter::SystolicBp => "sbp",
        Parameter::Pulse => "pulse",
        Parameter::Consciousness => "consciousness",
        Parameter::Temperature => "temp",
    }
}

/// A NEWS2 score of `patient` at `time` (the device time of the newest input).
///
/// Each of the seven parameter scores and the aggregate is a contained Observation
/// (`valueInteger`, code system `urn:vigil:news2`) referenced from `basis`; the risk band maps
/// to `risk-probability` (`low`, `moderate` for low-medium and medium, `high`) with the band and
/// the RCP clinical response as rationale and the monitoring frequency as mitigation.
pub fn risk_assessment(patient: &PatientId, n: &News2, time: Timestamp) -> RiskAssessment {
    let id = risk_assessment_id(patient, time);
    let subject = patient_reference(patient);
    let when = time.to_rfc3339();
    let score_obs = |key: &str, display: String, score: u8| -> Resource {
        Resource::Observation(Observation {
            id: Some(format!("news2-{key}")),
            status: "final".to_owned(),
            code: CodeableConcept {
                coding: vec![Coding::new(system::NEWS2, key).with_display(display.clone())],
                text: Some(display),
            },
            subject: Some(subject.clone()),
            effective_date_time: Some(when.clone()),
            value_integer: Some(i64::from(score)),
            ..Observation::default()
        })
    };
    let mut contained = vec![score_obs(
        "total",
        "NEWS2 aggregate score".to_owned(),
        n.total,
    )];
    for (p, s) in n.parameters() {
        contained.push(score_obs(parameter_key(p), format!("NEWS2 {p} score"), s));
    }
    let basis = contained
        .iter()
        .filter_map(Resource::id)
        .map(Reference::contained)
        .collect();
    let probability = match n.risk {
        Risk::Low => "low",
        Risk::LowMedium | Risk::Medium => "moderate",
        Risk::High => "high",
    };
    RiskAssessment {
        identifier: vec![Identifier::new(system::RISK_ASSESSMENT, id.clone())],
        id: Some(id),
        contained,
        status: "final".to_owned(),
        method: Some(CodeableConcept {
            coding: vec![Coding::new(system::NEWS2, "news2").with_display("NEWS2 (RCP 2017)")],
            text: Some(format!(
                "NEWS2 (RCP 2017), SpO2 scale {}",
                u8::from(n.scale)
            )),
        }),
        code: Some(CodeableConcept::text("National Early Warning Score 2")),
        subject,
        occurrence_date_time: Some(when),
        basis,
        prediction: vec![Prediction {
            outcome: Some(CodeableConcept::text("Clinical deterioration")),
            qualitative_risk: Some(CodeableConcept::coding(Coding::new(
                system::RISK_PROBABILITY,
                probability,
            ))),
            rationale: Some(format!(
                "NEWS2 {} ({} risk): {}",
                n.total, n.risk, n.response
            )),
        }],
        mitigation: Some(n.monitoring.text().to_owned()),
        note: Vec::new(),
    }
}

/// An alert as a Flag (see the crate documentation for why a Flag). Its id derives from the
/// alert's key (patient, rule, opening time), so the same alert maps to the same Flag as it
/// moves through its lifecycle: active while open, acknowledged or escalated, inactive once
/// resolved, with `period` from `opened_at` to `resolved_at`.
pub fn flag(a: &Alert) -> Flag {
    let id = deterministic_id(
        "Flag",
        &[
            a.patient.as_str(),
            &a.rule_id,
            &a.opened_at.millis().to_string(),
        ],
    );
    Flag {
        identifier: vec![
            Identifier::new(system::ALERT, id.clone()),
            Identifier::new("urn:vigil:alert-id", a.id.to_string()),
        ],
        id: Some(id),
        meta: Some(Meta {
            last_updated: None,
            profile: Vec::new(),
            tag: vec![
                Coding::new(system::ALERT_SEVERITY, a.severity.clone()),
                Coding::new("urn:vigil:alert-status", a.status.as_str()),
                Coding::new("urn:vigil:alert-source", a.source.as_str()),
            ],
        }),
        status: if a.status.is_active() {
            "active"
        } else {
            "inactive"
        }
        .to_owned(),
        category: vec![CodeableConcept::coding(
            Coding::new(system::FLAG_CATEGORY, "clinical").with_display("Clinical"),
        )],
        code: CodeableConcept {
            coding: vec![Coding::new(system::ALERT_RULE, a.rule_id.clone())],
            text: Some(a.message.clone()),
        },
        subject: patient_reference(&a.patient),
        period: Some(Period {
            start: Some(a.opened_at.to_rfc3339()),
            end: a.resolved_at.map(Timestamp::to_rfc3339),
        }),
    }
}

/// A medication ingestion (ingestible sensor) or inhaler actuation of `patient`.
pub fn medication_administration(
    patient: &PatientId,
    e: &Event,
) -> Result<MedicationAdministration, FhirError> {
    let (medication, route, dosage_text, notes) = match &e.kind {
        EventKind::MedicationIngestion { medication, dose } => (
            medication.clone(),
            "oral",
            None,
            dose.iter()
                .map(|d| format!("answers scheduled dose {d}"))
                .collect::<Vec<_>>(),
        ),
        EventKind::InhalerActuation {
            medication,
            rescue,
            peak_inspiratory_flow,
        } => (
            medication
                .clone()
                .unwrap_or_else(|| "unspecified inhaled medication".to_owned()),
            "inhalation",
            Some(
                if *rescue {
                    "1 actuation (rescue)"
                } else {
                    "1 actuation"
                }
                .to_owned(),
            ),
            peak_inspiratory_flow
                .filter(|f| f.is_finite())
                .map(|f| format!("peak inspiratory flow {f} L/min"))
                .into_iter()
                .collect(),
        ),
        other => {
            return Err(FhirError::WrongEvent(
                other.name(),
                "MedicationAdministration",
            ));
        }
    };
    let id = deterministic_id(
        "MedicationAdministration",
        &[
            patient.as_str(),
            e.device.as_str(),
            e.kind.name(),
            &e.time.millis().to_string(),
        ],
    );
    Ok(MedicationAdministration {
        identifier: vec![Identifier::new(
            system::MEDICATION_ADMINISTRATION,
            id.clone(),
        )],
        id: Some(id),
        status: "completed".to_owned(),
        medication_codeable_concept: CodeableConcept::text(medication),
        subject: patient_reference(patient),
        effective_date_time: e.time.to_rfc3339(),
        device: vec![device_reference(&e.device)],
        note: notes.into_iter().map(|text| Annotation { text }).collect(),
        dosage: Some(Dosage {
            text: dosage_text,
            route: Some(CodeableConcept::text(route)),
        }),
    })
}

/// A supply request raised by a stock-level event: `requested` units of the item, to be
/// delivered to the event's location (see [`location`]). The observed stock level is the
/// reason.
pub fn supply_request(e: &Event, requested: f64) -> Result<SupplyRequest, FhirError> {
    let EventKind::StockLevel {
        item,
        quantity,
        location: loc,
    } = &e.kind
    else {
        return Err(FhirError::WrongEvent(e.kind.name(), "SupplyRequest"));
    };
    if !requested.is_finite() {
        return Err(FhirError::NotFinite("requested quantity"));
    }
    let id = deterministic_id(
        "SupplyRequest",
        &[e.device.as_str(), item, &e.time.millis().to_string()],
    );
    let reason = if quantity.is_finite() {
        format!("stock level {quantity} reported by device {}", e.device)
    } else {
        format!("stock level reported by device {}", e.device)
    };
    Ok(SupplyRequest {
        identifier: vec![Identifier::new(system::SUPPLY_REQUEST, id.clone())],
        id: Some(id),
        status: Some("active".to_owned()),
        item_codeable_concept: CodeableConcept::text(item.clone()),
        quantity: Quantity {
            value: requested,
            ..Quantity::default()
        },
        authored_on: Some(e.time.to_rfc3339()),
        reason_code: vec![CodeableConcept::text(reason)],
        deliver_to: loc
            .as_deref()
            .map(|l| Reference::to("Location", &location_id(l))),
    })
}

/// A location known by its Vigil name (a ward, room or shelf).
pub fn location(name: &str) -> Location {
    let id = location_id(name);
    Location {
        identifier: vec![
            Identifier::new(system::LOCATION, id.clone()),
            Identifier::new("urn:vigil:location-name", name),
        ],
        id: Some(id),
        status: Some("active".to_owned()),
        name: Some(name.to_owned()),
        mode: Some("instance".to_owned()),
    }
}

/// `OperationOutcome.issue.severity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Fatal,
    Error,
    Warning,
    Information,
}

impl Severity {
    pub fn code(self) -> &'static str {
        match self {
            Self::Fatal => "fatal",
            Self::Error => "error",
            Self::Warning => "warning",
            Self::Information => "information",
        }
    }
}

/// The `issue-type` codes Vigil uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IssueType {
    Invalid,
    Structure,
    Required,
    Value,
    Security,
    Login,
    Forbidden,
    NotFound,
    NotSupported,
    Duplicate,
    Conflict,
    TooCostly,
    Throttled,
    Processing,
    Exception,
    Timeout,
    Transient,
    Informational,
}

impl IssueType {
    pub fn code(self) -> &'static str {
        match self {
            Self::Invalid => "invalid",
            Self::Structure => "structure",
            Self::Required => "required",
            Self::Value => "value",
            Self::Security => "security",
            Self::Login => "login",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not-found",
            Self::NotSupported => "not-supported",
            Self::Duplicate => "duplicate",
            Self::Conflict => "conflict",
            Self::TooCostly => "too-costly",
            Self::Throttled => "throttled",
            Self::Processing => "processing",
            Self::Exception => "exception",
            Self::Timeout => "timeout",
            Self::Transient => "transient",
            Self::Informational => "informational",
        }
    }
}

/// An error (or warning) as an OperationOutcome with one issue.
pub fn operation_outcome(
    severity: Severity,
    code: IssueType,
    diagnostics: &str,
) -> OperationOutcome {
    OperationOutcome {
        id: None,
        issue: vec![Issue {
            severity: severity.code().to_owned(),
            code: code.code().to_owned(),
            diagnostics: (!diagnostics.is_empty()).then(|| diagnostics.to_owned()),
        }],
    }
}

/// A 128-bit hex id written as a UUID (for `urn:uuid:` full URLs).
fn as_uuid(hex32: &str) -> Option<String> {
    let h = hex32.get(..32)?;
    Some(format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    ))
}

impl Bundle {
    /// A search result page: every resource is a `match`; `total` counts all matches, not just
    /// this page; `links` are `self`, `next`, ...
    pub fn searchset(entries: Vec<Resource>, total: Option<u64>, links: Vec<BundleLink>) -> Self {
        Self {
            id: None,
            kind: "searchset".to_owned(),
            total,
            link: links,
            entry: entries
                .into_iter()
                .map(|r| BundleEntry {
                    full_url: None,
                    resource: Some(Box::new(r)),
                    search: Some(EntrySearch {
                        mode: Some("match".to_owned()),
                    }),
                    request: None,
                })
                .collect(),
        }
    }

    /// A transaction that may be sent any number of times with the same effect.
    ///
    /// Patients, Devices, Locations and Flags are `PUT Type/id` with their deterministic id:
    /// other resources refer to them by that id, and a Flag changes status over its life.
    /// Everything else (Observations, RiskAssessments, MedicationAdministrations,
    /// SupplyRequests) is an immutable record sent as a conditional create, `POST Type` with
    /// `ifNoneExist: identifier=system|value`, so a resend never creates a second one.
    /// Resources without an id or identifier are plain `POST`s. A resource given twice (same
    /// type and id) is sent once.
    pub fn transaction(entries: Vec<Resource>) -> Self {
        let mut seen = std::collections::HashSet::new();
        let entry = entries
            .into_iter()
            // The same resource twice (a reading delivered twice) is sent once.
            .filter(|r| match r.id() {
                Some(id) => seen.insert((r.resource_type(), id.to_owned())),
                None => true,
            })
            .map(|r| {
                let ty = r.resource_type();
                let id = r.id().map(str::to_owned);
                let by_put = matches!(
                    r,
                    Resource::Patient(_)
                        | Resource::Device(_)
                        | Resource::Location(_)
                        | Resource::Flag(_)
                );
                let request = match (&id, by_put) {
                    (Some(id), true) => EntryRequest {
                        method: "PUT".to_owned(),
                        url: format!("{ty}/{id}"),
                        if_none_exist: None,
                    },
                    _ => EntryRequest {
                        method: "POST".to_owned(),
                        url: ty.to_owned(),
                        if_none_exist: r.identifier().and_then(|i| {
                            Some(format!(
                                "identifier={}|{}",
                                i.system.as_deref()?,
                                i.value.as_deref()?
                            ))
                        }),
                    },
                };
                BundleEntry {
                    full_url: (!by_put)
                        .then(|| id.as_deref().and_then(as_uuid))
                        .flatten()
                        .map(|u| format!("urn:uuid:{u}")),
                    resource: Some(Box::new(r)),
                    search: None,
                    request: Some(request),
                }
            })
            .collect();
        Self {
            id: None,
            kind: "transaction".to_owned(),
            total: None,
            link: Vec::new(),
            entry,
        }
    }
}

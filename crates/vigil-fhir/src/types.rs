//! The typed FHIR R4 subset Vigil emits: data types and resources, serialized with serde in
//! FHIR JSON form (camelCase names, absent elements omitted, `resourceType` as the tag).

use serde::{Deserialize, Serialize};

/// Code system URIs used by the mappings.
pub mod system {
    pub const LOINC: &str = "http://loinc.org";
    pub const UCUM: &str = "http://unitsofmeasure.org";
    /// IEEE 11073-10101 (MDC) nomenclature, as the HL7 PHD IG writes it.
    pub const MDC: &str = "urn:iso:std:iso:11073:10101";
    pub const OBSERVATION_CATEGORY: &str =
        "http://terminology.hl7.org/CodeSystem/observation-category";
    pub const DATA_ABSENT_REASON: &str = "http://terminology.hl7.org/CodeSystem/data-absent-reason";
    pub const RISK_PROBABILITY: &str = "http://terminology.hl7.org/CodeSystem/risk-probability";
    pub const FLAG_CATEGORY: &str = "http://terminology.hl7.org/CodeSystem/flag-category";
    pub const EUI64: &str = "http://hl7.org/fhir/sid/eui-64";
    pub const PATIENT: &str = "urn:vigil:patient";
    pub const DEVICE: &str = "urn:vigil:device";
    pub const OBSERVATION: &str = "urn:vigil:observation";
    pub const RISK_ASSESSMENT: &str = "urn:vigil:risk-assessment";
    pub const ALERT: &str = "urn:vigil:alert";
    pub const ALERT_RULE: &str = "urn:vigil:alert-rule";
    pub const ALERT_SEVERITY: &str = "urn:vigil:alert-severity";
    pub const MEDICATION_ADMINISTRATION: &str = "urn:vigil:medication-administration";
    pub const SUPPLY_REQUEST: &str = "urn:vigil:supply-request";
    pub const LOCATION: &str = "urn:vigil:location";
    pub const READING_FLAG: &str = "urn:vigil:reading-flag";
    pub const NEWS2: &str = "urn:vigil:news2";
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Coding {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display: Option<String>,
}

impl Coding {
    pub fn new(system: &str, code: impl Into<String>) -> Self {
        Self {
            system: Some(system.to_owned()),
            code: Some(code.into()),
            display: None,
        }
    }
    pub fn with_display(mut self, display: impl Into<String>) -> Self {
        self.display = Some(display.into());
        self
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CodeableConcept {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub coding: Vec<Coding>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

impl CodeableConcept {
    pub fn coding(c: Coding) -> Self {
        Self {
            coding: vec![c],
            text: None,
        }
    }
    pub fn text(t: impl Into<String>) -> Self {
        Self {
            coding: Vec::new(),
            text: Some(t.into()),
        }
    }
    /// Whether any coding has this system and code.
    pub fn has(&self, system: &str, code: &str) -> bool {
        self.coding
            .iter()
            .any(|c| c.system.as_deref() == Some(system) && c.code.as_deref() == Some(code))
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Quantity {
    pub value: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

impl Quantity {
    /// A quantity in a UCUM unit.
    pub fn ucum(value: f64, unit: &str) -> Self {
        Self {
            value,
            unit: Some(unit.to_owned()),
            system: Some(system::UCUM.to_owned()),
            code: Some(unit.to_owned()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Reference {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display: Option<String>,
}

impl Reference {
    pub fn to(resource_type: &str, id: &str) -> Self {
        Self {
            reference: Some(format!("{resource_type}/{id}")),
            display: None,
        }
    }
    /// A reference to a contained resource.
    pub fn contained(id: &str) -> Self {
        Self {
            reference: Some(format!("#{id}")),
            display: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Identifier {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

impl Identifier {
    pub fn new(system: &str, value: impl Into<String>) -> Self {
        Self {
            system: Some(system.to_owned()),
            value: Some(value.into()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Meta {
    /// When the hub last changed (received) the resource.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_updated: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub profile: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tag: Vec<Coding>,
}

impl Meta {
    pub fn is_empty(&self) -> bool {
        self.last_updated.is_none() && self.profile.is_empty() && self.tag.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Period {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HumanName {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Annotation {
    pub text: String,
}

// ---------------------------------------------------------------------------------------------
// Resources
// ---------------------------------------------------------------------------------------------

/// Any resource Vigil emits. Serialized with its `resourceType`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "resourceType")]
#[allow(clippy::large_enum_variant)]
pub enum Resource {
    Patient(Patient),
    Device(Device),
    Observation(Observation),
    RiskAssessment(RiskAssessment),
    Flag(Flag),
    MedicationAdministration(MedicationAdministration),
    SupplyRequest(SupplyRequest),
    Location(Location),
    OperationOutcome(OperationOutcome),
    Bundle(Bundle),
}

impl Resource {
    pub fn resource_type(&self) -> &'static str {
        match self {
            Self::Patient(_) => "Patient",
            Self::Device(_) => "Device",
            Self::Observation(_) => "Observation",
            Self::RiskAssessment(_) => "RiskAssessment",
            Self::Flag(_) => "Flag",
            Self::MedicationAdministration(_) => "MedicationAdministration",
            Self::SupplyRequest(_) => "SupplyRequest",
            Self::Location(_) => "Location",
            Self::OperationOutcome(_) => "OperationOutcome",
            Self::Bundle(_) => "Bundle",
        }
    }

    pub fn id(&self) -> Option<&str> {
        match self {
            Self::Patient(r) => r.id.as_deref(),
            Self::Device(r) => r.id.as_deref(),
            Self::Observation(r) => r.id.as_deref(),
            Self::RiskAssessment(r) => r.id.as_deref(),
            Self::Flag(r) => r.id.as_deref(),
            Self::MedicationAdministration(r) => r.id.as_deref(),
            Self::SupplyRequest(r) => r.id.as_deref(),
            Self::Location(r) => r.id.as_deref(),
            Self::OperationOutcome(r) => r.id.as_deref(),
            Self::Bundle(r) => r.id.as_deref(),
        }
    }

    /// The first identifier, the one conditional creates match on.
    pub fn identifier(&self) -> Option<&Identifier> {
        match self {
            Self::Patient(r) => r.identifier.first(),
            Self::Device(r) => r.identifier.first(),
            Self::Observation(r) => r.identifier.first(),
            Self::RiskAssessment(r) => r.identifier.first(),
            Self::Flag(r) => r.identifier.first(),
            Self::MedicationAdministration(r) => r.identifier.first(),
            Self::SupplyRequest(r) => r.identifier.first(),
            Self::Location(r) => r.identifier.first(),
            Self::OperationOutcome(_) | Self::Bundle(_) => None,
        }
    }

    /// FHIR JSON text.
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string_pretty(self)
    }
}

macro_rules! into_resource {
    ($($t:ident),*) => {$(
        impl From<$t> for Resource {
            fn from(r: $t) -> Self {
                Self::$t(r)
            }
        }
    )*};
}
into_resource!(
    Patient,
    Device,
    Observation,
    RiskAssessment,
    Flag,
    MedicationAdministration,
    SupplyRequest,
    Location,
    OperationOutcome,
    Bundle
);

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Patient {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub identifier: Vec<Identifier>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub active: Option<bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub name: Vec<HumanName>,
    /// `YYYY`, `YYYY-MM` or `YYYY-MM-DD`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub birth_date: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceName {
    pub name: String,
    /// `udi-label-name | user-friendly-name | patient-reported-name | manufacturer-name |
    /// model-name | other`.
    #[serde(rename = "type")]
    pub kind: String,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Device {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub identifier: Vec<Identifier>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manufacturer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serial_number: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_number: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub device_name: Vec<DeviceName>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<CodeableConcept>,
    /// Where the device was last seen (tracked equipment).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<Reference>,
}

/// `Observation.component`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObservationComponent {
    pub code: CodeableConcept,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value_quantity: Option<Quantity>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_absent_reason: Option<CodeableConcept>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Observation {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub meta: Option<Meta>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub contained: Vec<Resource>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub identifier: Vec<Identifier>,
    /// `registered | preliminary | final | amended | ...`
    pub status: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub category: Vec<CodeableConcept>,
    pub code: CodeableConcept,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<Reference>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub effective_date_time: Option<String>,
    /// When the hub received it (an instant).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issued: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value_quantity: Option<Quantity>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value_integer: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_absent_reason: Option<CodeableConcept>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interpretation: Vec<CodeableConcept>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<Reference>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub component: Vec<ObservationComponent>,
}

/// `RiskAssessment.prediction`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Prediction {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<CodeableConcept>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qualitative_risk: Option<CodeableConcept>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rationale: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RiskAssessment {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Per-parameter scores as contained Observations, referenced from `basis`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub contained: Vec<Resource>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub identifier: Vec<Identifier>,
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<CodeableConcept>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<CodeableConcept>,
    pub subject: Reference,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub occurrence_date_time: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub basis: Vec<Reference>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prediction: Vec<Prediction>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mitigation: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub note: Vec<Annotation>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Flag {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub meta: Option<Meta>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub identifier: Vec<Identifier>,
    /// `active | inactive | entered-in-error`
    pub status: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub category: Vec<CodeableConcept>,
    pub code: CodeableConcept,
    pub subject: Reference,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub period: Option<Period>,
}

/// `MedicationAdministration.dosage`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Dosage {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<CodeableConcept>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MedicationAdministration {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub identifier: Vec<Identifier>,
    /// `in-progress | not-done | on-hold | completed | entered-in-error | stopped | unknown`
    pub status: String,
    pub medication_codeable_concept: CodeableConcept,
    pub subject: Reference,
    pub effective_date_time: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub device: Vec<Reference>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub note: Vec<Annotation>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dosage: Option<Dosage>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SupplyRequest {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub identifier: Vec<Identifier>,
    /// `draft | active | suspended | cancelled | completed | entered-in-error | unknown`
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    pub item_codeable_concept: CodeableConcept,
    pub quantity: Quantity,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authored_on: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reason_code: Vec<CodeableConcept>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deliver_to: Option<Reference>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Location {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub identifier: Vec<Identifier>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `instance | kind`
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
}

/// `OperationOutcome.issue`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Issue {
    pub severity: String,
    pub code: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diagnostics: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OperationOutcome {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub issue: Vec<Issue>,
}

/// `Bundle.link`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BundleLink {
    /// `self`, `next`, `previous`, `first`, `last`.
    pub relation: String,
    pub url: String,
}

impl BundleLink {
    pub fn new(relation: &str, url: impl Into<String>) -> Self {
        Self {
            relation: relation.to_owned(),
            url: url.into(),
        }
    }
}

/// `Bundle.entry.search`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EntrySearch {
    /// `match | include | outcome`
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
}

/// `Bundle.entry.request`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EntryRequest {
    pub method: String,
    pub url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub if_none_exist: Option<String>,
}

/// `Bundle.entry`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BundleEntry {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub full_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource: Option<Box<Resource>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub search: Option<EntrySearch>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<EntryRequest>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Bundle {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `searchset | transaction | ...`
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub link: Vec<BundleLink>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entry: Vec<BundleEntry>,
}

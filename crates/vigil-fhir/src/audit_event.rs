//! Audit log entries as FHIR R4 `AuditEvent`s (DICOM/HL7 audit codes).
//!
//! | entry | AuditEvent |
//! |---|---|
//! | every entry | `type` = `rest` (audit-event-type), `source.type` = 4 (application server) |
//! | `action` | `subtype` (restful-interaction: read, search-type, create, update, patch, delete) and `action` C/R/U/D/E |
//! | `time` | `recorded` |
//! | `outcome` (HTTP status) | `outcome` 0 (2xx, 3xx), 4 (4xx: refused, not found, bad request), 8 (5xx); `outcomeDesc` |
//! | `purpose` | `purposeOfEvent` (HL7 v3 ActReason) |
//! | `actor`, `role`, `source` | `agent` (requestor; `who` by identifier `urn:vigil:user` or `urn:vigil:gateway`; network address type 2) |
//! | `patient` | `entity.what` = the Patient reference, with `resource` and `detail` |
//! | `hash` | the resource id (the first 32 hex digits of a SHA-256 over the entry hash) |

use crate::{deterministic_id, patient_id};
use serde_json::{Value, json};
use vigil_model::PatientId;
use vigil_store::audit::{ANY_PATIENT, AuditEntry};

/// HL7 v3 ActReason codes of purpose of use the hub accepts, with their display.
pub const PURPOSES: [(&str, &str); 7] = [
    ("TREAT", "treatment"),
    ("ETREAT", "Emergency Treatment"),
    ("HOPERAT", "healthcare operations"),
    ("HPAYMT", "healthcare payment"),
    ("HRESCH", "healthcare research"),
    ("PUBHLTH", "public health"),
    ("PATRQT", "patient requested"),
];

fn interaction(action: &str) -> (&'static str, &'static str) {
    match action {
        "read" => ("read", "R"),
        "search-type" => ("search-type", "E"),
        "create" => ("create", "C"),
        "update" => ("update", "U"),
        "patch" => ("patch", "U"),
        "delete" => ("delete", "D"),
        _ => ("operation", "E"),
    }
}

fn outcome(status: u16) -> &'static str {
    match status {
        0..=399 => "0",
        400..=499 => "4",
        _ => "8",
    }
}

/// The AuditEvent of one entry.
pub fn audit_event(e: &AuditEntry) -> Value {
    let x = &e.entry;
    let (subtype, action) = interaction(&x.action);
    let who_system = if x.role == "gateway" {
        "urn:vigil:gateway"
    } else {
        "urn:vigil:user"
    };
    let mut agent = json!({
        "type": {"text": x.role},
        "who": {
            "identifier": {"system": who_system, "value": x.actor},
            "display": x.actor,
        },
        "requestor": true,
    });
    if !x.source.is_empty() && x.source != "unknown" {
        agent["network"] = json!({"address": x.source, "type": "2"});
    }
    let what = match PatientId::new(x.patient.as_str()) {
        Ok(p) if x.patient != ANY_PATIENT => json!({
            "reference": format!("Patient/{}", patient_id(&p)),
            "display": x.patient,
        }),
        _ => json!({"display": "the patients in the requester's scope"}),
    };
    let mut entity = json!({
        "what": what,
        "type": {
            "system": "http://terminology.hl7.org/CodeSystem/audit-entity-type",
            "code": "1",
            "display": "Person",
        },
        "role": {
            "system": "http://terminology.hl7.org/CodeSystem/object-role",
            "code": "1",
            "display": "Patient",
        },
        "description": x.resource,
    });
    if !x.detail.is_empty() {
        entity["detail"] = json!([{"type": "detail", "valueString": x.detail}]);
    }
    let purpose = PURPOSES
        .iter()
        .find(|(code, _)| *code == x.purpose)
        .map(|(code, display)| {
            json!({"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/v3-ActReason",
                "code": code,
                "display": display,
            }]})
        })
        .unwrap_or_else(|| json!({"text": x.purpose}));
    json!({
        "resourceType": "AuditEvent",
        "id": deterministic_id("AuditEvent", &[&e.hash]),
        "type": {
            "system": "http://terminology.hl7.org/CodeSystem/audit-event-type",
            "code": "rest",
            "display": "RESTful Operation",
        },
        "subtype": [{
            "system": "http://hl7.org/fhir/restful-interaction",
            "code": subtype,
        }],
        "action": action,
        "recorded": x.time.to_rfc3339(),
        "outcome": outcome(x.outcome),
        "outcomeDesc": format!("HTTP {} (audit entry {}, hash {})", x.outcome, e.seq, e.hash),
        "purposeOfEvent": [purpose],
        "agent": [agent],
        "source": {
            "site": "vigil-hub",
            "observer": {"display": "vigil-hub"},
            "type": [{
                "system": "http://terminology.hl7.org/CodeSystem/security-source-type",
                "code": "4",
                "display": "Application Server",
            }],
        },
        "entity": [entity],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_model::Timestamp;
    use vigil_store::audit::NewAuditEntry;

    #[test]
    fn a_denied_read_maps_to_a_minor_failure_with_patient_and_agent() {
        let e = AuditEntry {
            seq: 3,
            entry: NewAuditEntry {
                time: Timestamp(1_700_000_000_000),
                actor: "dr-a".into(),
                role: "clinician".into(),
                patient: "pat-b".into(),
                action: "read".into(),
                resource: "GET /api/v1/patients/pat-b".into(),
                source: "10.1.2.3".into(),
                purpose: "TREAT".into(),
                outcome: 404,
                detail: String::new(),
            },
            prev_hash: "00".repeat(32),
            hash: "ab".repeat(32),
        };
        let v = audit_event(&e);
        assert_eq!(v["subtype"][0]["code"], "read");
        assert_eq!(v["action"], "R");
        assert_eq!(v["outcome"], "4");
        assert_eq!(
            v["entity"][0]["what"]["reference"],
            format!(
                "Patient/{}",
                patient_id(&PatientId::new("pat-b").expect("id"))
            )
        );
        assert_eq!(v["agent"][0]["who"]["identifier"]["value"], "dr-a");
        assert_eq!(v["agent"][0]["network"]["address"], "10.1.2.3");
        assert_eq!(v["purposeOfEvent"][0]["coding"][0]["code"], "TREAT");
    }
}

//! Alerts, their lifecycle, care teams and the notification queue.
//!
//! One alert is *active* (open, acknowledged or escalated) per (patient, rule) at a time: a
//! second signal for the same patient and rule moves `last_seen` instead of opening another.
//! Every change of status is appended to a transitions table with its actor and time; the
//! transition id only grows, so a client can resume a stream of transitions from the last id
//! it saw.

use serde::{Deserialize, Serialize};
use vigil_model::{PatientId, Timestamp};

/// Where an alert stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertStatus {
    Open,
    Acknowledged,
    Escalated,
    Resolved,
}

impl AlertStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Acknowledged => "acknowledged",
            Self::Escalated => "escalated",
            Self::Resolved => "resolved",
        }
    }

    /// Parses the stored or query form.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "open" => Self::Open,
            "acknowledged" => Self::Acknowledged,
            "escalated" => Self::Escalated,
            "resolved" => Self::Resolved,
            _ => return None,
        })
    }

    /// Open, acknowledged and escalated alerts are active; resolved ones are history.
    pub fn is_active(self) -> bool {
        self != Self::Resolved
    }
}

/// Who saw the condition first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertSource {
    /// The hub's rule engine.
    Hub,
    /// A gateway's edge rules (an `EventKind::Alert` event).
    Edge,
}

impl AlertSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hub => "hub",
            Self::Edge => "edge",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "hub" => Some(Self::Hub),
            "edge" => Some(Self::Edge),
            _ => None,
        }
    }
}

/// A rule finding (from the hub or an edge) for one patient.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertSignal {
    pub patient: PatientId,
    pub rule_id: String,
    /// `info`, `warning` or `critical`.
    pub severity: String,
    pub message: String,
    pub value: Option<f64>,
    /// Device time of the reading that triggered it.
    pub time: Timestamp,
    /// Device time of the latest evaluation that still found it (`>= time`).
    pub seen: Timestamp,
    pub source: AlertSource,
}

/// An alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub id: i64,
    pub patient: PatientId,
    pub rule_id: String,
    pub severity: String,
    pub message: String,
    pub value: Option<f64>,
    pub source: AlertSource,
    pub status: AlertStatus,
    /// Device time of the reading that triggered it.
    pub opened_at: Timestamp,
    /// Device time of the latest finding.
    pub last_seen: Timestamp,
    /// Hub time the alert was recorded.
    pub created: Timestamp,
    pub acknowledged_by: Option<String>,
    pub acknowledged_at: Option<Timestamp>,
    pub silence_until: Option<Timestamp>,
    pub resolved_by: Option<String>,
    pub resolved_at: Option<Timestamp>,
    pub note: Option<String>,
    /// 0 none, 1 backup clinicians, 2 on-call.
    pub escalation_level: u32,
    /// Hub time of the latest escalation or notification.
    pub escalated_at: Option<Timestamp>,
}

/// One change of an alert's status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertTransition {
    /// Grows monotonically across all alerts.
    pub id: i64,
    pub alert_id: i64,
    pub patient: PatientId,
    pub rule_id: String,
    pub from: Option<AlertStatus>,
    pub to: AlertStatus,
    pub actor: String,
    pub time: Timestamp,
    pub note: Option<String>,
    pub escalation_level: u32,
}

/// What a signal did.
#[derive(Debug, Clone, PartialEq)]
pub struct Raised {
    pub alert: Alert,
    /// The `open` transition when the signal opened a new alert.
    pub opened: Option<AlertTransition>,
}

/// Which alerts to list.
#[derive(Debug, Clone, Default)]
pub struct AlertFilter {
    pub status: Option<AlertStatus>,
    /// Only active (not resolved) alerts; ignored when `status` is set.
    pub active: bool,
    pub patient: Option<PatientId>,
    pub limit: usize,
}

/// The people responsible for one patient (user names are API token names).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CareTeam {
    /// Designated (primary) clinicians.
    pub primary: Vec<String>,
    /// Backup clinicians: first escalation level.
    pub backup: Vec<String>,
    /// Family or other caregivers.
    pub caregivers: Vec<String>,
}

/// A queued notification.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    pub id: i64,
    pub alert_id: Option<i64>,
    /// `webhook`, `email` or `log`.
    pub channel: String,
    /// A webhook name or a user name.
    pub target: String,
    pub payload: serde_json::Value,
    pub attempts: u32,
    pub next_attempt_at: Timestamp,
    /// `pending`, `delivered` or `dead`.
    pub status: String,
    pub last_error: Option<String>,
    pub created: Timestamp,
}

/// A notification to queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewNotification {
    pub alert_id: Option<i64>,
    pub channel: String,
    pub target: String,
    pub payload: serde_json::Value,
}

//! Vigil's storage layer.
//!
//! [`Store`] is the one trait the hub talks to; [`sqlite::SqliteStore`] is the embedded
//! backend (a PostgreSQL backend implements the same trait and passes the same conformance
//! suite in `tests/`). Readings are kept as compressed [`chunk`]s clustered by patient, metric
//! and hour, so a stored reading costs a few bytes; the latest value of each metric per patient
//! is kept in its own small table so dashboards never scan the time series.
//!
//! Ingest is idempotent on (gateway, outbox epoch, sequence): every batch moves the gateway's
//! cursor in the same transaction that stores its readings, so a batch sent twice, or resent
//! after a crash on either side, is stored once. Records that cannot be attributed to a
//! patient, or that fail validation, go to the quarantine with their reason, never nowhere.
//!
//! This crate never decides policy about who may see what; the hub does.

pub mod alert;
pub mod audit;
pub mod chunk;
pub mod privacy;
pub mod push;
pub mod sqlite;
mod sqlite_alerts;
pub mod sqlite_audit;
mod sqlite_privacy;
mod sqlite_push;
mod sqlite_users;
pub mod users;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use vigil_model::{
    Assignment, Device, DeviceId, Event, Metric, Patient, PatientId, Reading, Record, Timestamp,
};

pub use alert::{
    Alert, AlertFilter, AlertSignal, AlertSource, AlertStatus, AlertTransition, CareTeam,
    NewNotification, Notification, Raised,
};
pub use chunk::StoredReading;
pub use privacy::PrivacyStore;
pub use push::PushStore;
pub use users::{
    LockoutPolicy, NewSession, SessionInfo, TokenInfo, UserAccount, UserStore, token_id,
};

/// Storage failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage engine error: {0}")]
    Engine(String),
    #[error("the batch claims the hub holds up to sequence {claimed} but it holds up to {cursor}")]
    CursorAhead { claimed: u64, cursor: u64 },
    #[error("{0} not found")]
    NotFound(String),
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("invalid: {0}")]
    Invalid(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Engine(e.to_string())
    }
}

impl From<chunk::ChunkError> for StoreError {
    fn from(e: chunk::ChunkError) -> Self {
        Self::Corrupt(e.to_string())
    }
}

/// One record of a batch as it arrived: its sequence number and either the decoded record or
/// why it could not be decoded (kept with its raw bytes for the quarantine).
#[derive(Debug, Clone)]
pub struct IncomingRecord {
    pub seq: u64,
    pub record: Result<Record, (String, Vec<u8>)>,
}

/// A gateway batch ready for storage.
#[derive(Debug, Clone)]
pub struct IngestBatch {
    pub gateway: String,
    pub epoch: u64,
    /// The sequence number the gateway believes the hub has stored up to.
    pub after: u64,
    pub records: Vec<IncomingRecord>,
    pub hub_received: Timestamp,
    /// How far ahead of the hub's clock a device time may be.
    pub max_future_ms: i64,
}

/// A record accepted into storage, attributed to a patient.
#[derive(Debug, Clone, PartialEq)]
pub enum Accepted {
    Reading(PatientId, Reading),
    Event(PatientId, Event),
}

/// What an ingest did.
#[derive(Debug, Clone, Default)]
pub struct IngestOutcome {
    /// The gateway's cursor after this batch: everything up to it is stored or quarantined.
    pub cursor: u64,
    pub stored: usize,
    pub quarantined: usize,
    pub duplicates: usize,
    /// The newly stored records, for the rule engine.
    pub accepted: Vec<Accepted>,
}

/// A quarantined record and why.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct QuarantineEntry {
    pub id: i64,
    pub received: Timestamp,
    pub gateway: String,
    pub device: Option<String>,
    pub reason_code: String,
    pub reason: String,
    /// The record as JSON when it could be decoded.
    pub record: Option<serde_json::Value>,
    pub status: String,
}

/// A patient with the latest value of each of their metrics.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PatientSummary {
    #[serde(flatten)]
    pub patient: Patient,
    pub latest: Vec<StoredReading>,
}

/// Time-range query over one patient's readings.
#[derive(Debug, Clone)]
pub struct ReadingQuery {
    pub patient: PatientId,
    pub metric: Option<Metric>,
    pub from: Option<Timestamp>,
    pub to: Option<Timestamp>,
    pub limit: usize,
    /// Newest first when true.
    pub descending: bool,
}

/// A stored event.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StoredEvent {
    pub patient: PatientId,
    pub hub_received: Timestamp,
    #[serde(flatten)]
    pub event: Event,
}

/// A gateway's credentials and cursor state.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GatewayInfo {
    pub id: String,
    pub created: Timestamp,
    pub revoked: bool,
    pub last_seen: Option<Timestamp>,
}

/// An API credential (stored only as a hash).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ApiToken {
    pub name: String,
    pub role: String,
    pub created: Timestamp,
    pub expires: Option<Timestamp>,
    pub revoked: bool,
}

/// Sizes and counts for reports and metrics.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct StoreStats {
    pub readings: u64,
    pub chunks: u64,
    pub chunk_bytes: u64,
    pub events: u64,
    pub quarantined_open: u64,
    pub file_bytes: u64,
}

/// Result of re-processing the quarantine.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ReprocessOutcome {
    pub examined: usize,
    pub stored: usize,
    pub still_quarantined: usize,
}

/// The hub's storage.
#[async_trait]
pub trait Store:
    audit::AuditStore + PrivacyStore + UserStore + PushStore + Send + Sync + 'static
{
    /// Stores a gateway batch atomically with the gateway's cursor (see the crate docs).
    async fn ingest(&self, batch: IngestBatch) -> Result<IngestOutcome, StoreError>;

    async fn upsert_patient(&self, p: Patient) -> Result<(), StoreError>;
    async fn patient(&self, id: &PatientId) -> Result<Option<Patient>, StoreError>;
    /// Every patient with their latest value per metric.
    async fn patients(&self) -> Result<Vec<PatientSummary>, StoreError>;
    async fn latest(&self, id: &PatientId) -> Result<Vec<StoredReading>, StoreError>;

    async fn upsert_device(&self, d: Device) -> Result<(), StoreError>;
    async fn devices(&self) -> Result<Vec<Device>, StoreError>;
    /// Adds an assignment and re-processes quarantined records it may now attribute.
    async fn assign(&self, a: Assignment) -> Result<ReprocessOutcome, StoreError>;
    async fn assignments(&self, device: Option<&DeviceId>) -> Result<Vec<Assignment>, StoreError>;

    async fn readings(&self, q: ReadingQuery) -> Result<Vec<StoredReading>, StoreError>;
    async fn events(
        &self,
        patient: &PatientId,
        from: Option<Timestamp>,
        to: Option<Timestamp>,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError>;

    async fn quarantine(
        &self,
        limit: usize,
        open_only: bool,
    ) -> Result<Vec<QuarantineEntry>, StoreError>;
    async fn reprocess_quarantine(&self) -> Result<ReprocessOutcome, StoreError>;

    async fn create_gateway(&self, id: &str, token_hash: &[u8]) -> Result<(), StoreError>;
    /// The gateway a token hash belongs to, unless revoked.
    async fn gateway_by_token(&self, token_hash: &[u8]) -> Result<Option<GatewayInfo>, StoreError>;
    async fn gateways(&self) -> Result<Vec<GatewayInfo>, StoreError>;
    async fn revoke_gateway(&self, id: &str) -> Result<(), StoreError>;

    async fn create_api_token(&self, token_hash: &[u8], token: ApiToken) -> Result<(), StoreError>;
    async fn api_token(&self, token_hash: &[u8]) -> Result<Option<ApiToken>, StoreError>;

    /// Merges small chunks of the same patient, metric and window. Returns chunks removed.
    async fn compact(&self) -> Result<u64, StoreError>;
    async fn stats(&self) -> Result<StoreStats, StoreError>;

    /// Opens an alert for the signal's (patient, rule), or joins the active one (moving
    /// `last_seen`, taking the higher severity and the latest message, and moving `opened_at`
    /// back when the signal is older). A signal whose time falls inside a resolved alert's
    /// span joins that alert and opens nothing. `now` is the hub's clock.
    async fn raise_alert(&self, signal: AlertSignal, now: Timestamp) -> Result<Raised, StoreError>;
    async fn alert(&self, id: i64) -> Result<Option<Alert>, StoreError>;
    /// Alerts matching the filter, newest first.
    async fn alerts(&self, filter: AlertFilter) -> Result<Vec<Alert>, StoreError>;
    /// Acknowledges an active alert. `Conflict` when it is resolved.
    async fn acknowledge_alert(
        &self,
        id: i64,
        actor: &str,
        at: Timestamp,
        silence_until: Option<Timestamp>,
    ) -> Result<(Alert, AlertTransition), StoreError>;
    /// Resolves an active alert. `Conflict` when it is already resolved.
    async fn resolve_alert(
        &self,
        id: i64,
        actor: &str,
        at: Timestamp,
        note: Option<String>,
    ) -> Result<(Alert, AlertTransition), StoreError>;
    /// Escalates an open or escalated alert to `level` (actor `system`). `Conflict` when it
    /// is acknowledged or resolved.
    async fn escalate_alert(
        &self,
        id: i64,
        level: u32,
        at: Timestamp,
    ) -> Result<(Alert, AlertTransition), StoreError>;
    /// Reopens an acknowledged alert whose silence has run out (actor `system`): status
    /// open, escalation level 0, escalation clock restarted at `at`. `Conflict` unless it is
    /// acknowledged.
    async fn reopen_alert(
        &self,
        id: i64,
        at: Timestamp,
    ) -> Result<(Alert, AlertTransition), StoreError>;
    /// Records that an escalated alert was notified again at `at` (no transition).
    async fn mark_alert_notified(&self, id: i64, at: Timestamp) -> Result<(), StoreError>;
    /// Transitions with an id greater than `after`, oldest first.
    async fn alert_transitions(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<AlertTransition>, StoreError>;
    /// The id of the newest transition (0 when there is none).
    async fn latest_transition_id(&self) -> Result<i64, StoreError>;
    /// The transitions of one alert, oldest first.
    async fn transitions_of(&self, alert: i64) -> Result<Vec<AlertTransition>, StoreError>;

    /// Replaces a patient's care team. `NotFound` for an unknown patient.
    async fn set_care_team(&self, patient: &PatientId, team: CareTeam) -> Result<(), StoreError>;
    /// A patient's care team (empty when none was set).
    async fn care_team(&self, patient: &PatientId) -> Result<CareTeam, StoreError>;
    /// Replaces a patient's rule settings (an opaque JSON document the rule engine's caller
    /// validates; the store keeps it as given). `NotFound` for an unknown patient.
    async fn set_rule_settings(
        &self,
        patient: &PatientId,
        settings: serde_json::Value,
        now: Timestamp,
    ) -> Result<(), StoreError>;
    /// A patient's rule settings, none when never set.
    async fn rule_settings(
        &self,
        patient: &PatientId,
    ) -> Result<Option<serde_json::Value>, StoreError>;
    /// Every patient's rule settings, by patient id.
    async fn all_rule_settings(&self) -> Result<Vec<(PatientId, serde_json::Value)>, StoreError>;
    /// Replaces the on-call list (in order).
    async fn set_on_call(&self, users: Vec<String>) -> Result<(), StoreError>;
    async fn on_call(&self) -> Result<Vec<String>, StoreError>;

    /// Queues notifications, due at `at`.
    async fn enqueue_notifications(
        &self,
        list: Vec<NewNotification>,
        at: Timestamp,
    ) -> Result<(), StoreError>;
    /// Pending notifications due at `now`, oldest first.
    async fn due_notifications(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<Notification>, StoreError>;
    async fn notification_delivered(&self, id: i64) -> Result<(), StoreError>;
    /// Counts a failed attempt; retries at `retry_at`, or dead-letters when it is `None`.
    async fn notification_failed(
        &self,
        id: i64,
        error: &str,
        retry_at: Option<Timestamp>,
    ) -> Result<(), StoreError>;
    /// Notifications with `status` (`pending`, `delivered`, `dead`), newest first;
    /// all statuses when `None`.
    async fn notifications(
        &self,
        status: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Notification>, StoreError>;
}

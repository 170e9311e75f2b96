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

pub mod chunk;
pub mod sqlite;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use vigil_model::{
    Assignment, Device, DeviceId, Event, Metric, Patient, PatientId, Reading, Record, Timestamp,
};

pub use chunk::StoredReading;

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
pub trait Store: Send + Sync + 'static {
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
}

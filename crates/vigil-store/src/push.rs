//! EHR push: per-target cursors over durable data, dead letters, resources received from
//! other systems (the hub acting as an EHR) and OAuth2 clients.
//!
//! New readings reach push targets through the **push journal**: every chunk the ingest (or
//! the re-processing of the quarantine) writes is also appended, in the same transaction, to
//! a journal with a sequence number that only grows, while at least one target that takes
//! observations is configured. Each target keeps its own cursor over the journal and over the
//! alert transitions (append-only, ids only grow). A cursor moves only after the target
//! confirmed the batch, so a crash of either side resends, never skips. Journal entries every
//! target has passed are pruned.

use crate::StoreError;
use crate::chunk::StoredReading;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use vigil_model::{PatientId, Timestamp};

/// What a push target takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PushStream {
    /// New readings, as Observations (cursor over the push journal).
    Observations,
    /// Alert transitions, as Flags (cursor over alert transition ids).
    Alerts,
}

impl PushStream {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Observations => "observations",
            Self::Alerts => "alerts",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "observations" => Some(Self::Observations),
            "alerts" => Some(Self::Alerts),
            _ => None,
        }
    }
}

/// A configured target as the store knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushTargetSpec {
    pub name: String,
    pub observations: bool,
    pub alerts: bool,
}

/// One target's durable state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PushTargetState {
    pub name: String,
    /// Whether the target is in the current configuration.
    pub active: bool,
    pub observations: bool,
    pub alerts: bool,
    /// Last push journal sequence the target confirmed.
    pub observation_cursor: i64,
    /// Last alert transition id the target confirmed.
    pub alert_cursor: i64,
    /// Failed attempts since the last success.
    pub attempts: u32,
    pub last_error: Option<String>,
    pub last_error_at: Option<Timestamp>,
    pub last_success_at: Option<Timestamp>,
    /// Resources the target confirmed.
    pub pushed: u64,
    pub dead_lettered: u64,
}

/// A journal entry: readings of one patient and one metric stored by one transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct JournalEntry {
    pub seq: i64,
    pub patient: PatientId,
    pub readings: Vec<StoredReading>,
}

/// A batch the target refused as invalid: kept for an operator, never retried by itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PushDeadLetter {
    pub id: i64,
    pub target: String,
    pub stream: PushStream,
    /// The batch covered cursor positions `from` (exclusive) to `to` (inclusive).
    pub from: i64,
    pub to: i64,
    pub resources: u64,
    pub error: String,
    pub created: Timestamp,
}

/// How an inbound entry asks to be written.
#[derive(Debug, Clone, PartialEq)]
pub enum InboundWrite {
    /// Create unless a resource of this type has this identifier (`ifNoneExist`).
    CreateIfNone {
        resource_type: String,
        /// The id to use when it is free (the sender's id); otherwise one is generated.
        id: Option<String>,
        system: String,
        value: String,
        body: serde_json::Value,
    },
    /// Create or replace the resource with this id.
    Put {
        resource_type: String,
        id: String,
        identifier: Option<(String, String)>,
        body: serde_json::Value,
    },
}

/// What happened to one inbound entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundResult {
    pub resource_type: String,
    pub id: String,
    pub version: i64,
    /// Whether a new resource was created (201) rather than found or updated (200).
    pub created: bool,
}

/// A stored inbound resource.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InboundResource {
    pub resource_type: String,
    pub id: String,
    pub version: i64,
    pub identifier_system: Option<String>,
    pub identifier_value: Option<String>,
    pub received: Timestamp,
    pub resource: serde_json::Value,
}

/// Which inbound resources to list.
#[derive(Debug, Clone, Default)]
pub struct InboundFilter {
    pub resource_type: Option<String>,
    /// (system, value) of the first identifier.
    pub identifier: Option<(String, String)>,
    pub limit: usize,
}

/// An OAuth2 client (a service account) of the hub's token endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OAuthClient {
    pub id: String,
    /// PHC string of the secret's Argon2id hash.
    pub secret_hash: String,
    /// Role of the tokens issued to it.
    pub role: String,
    pub created: Timestamp,
}

/// Storage of EHR push state, inbound FHIR resources and OAuth2 clients.
#[async_trait]
pub trait PushStore: Send + Sync {
    /// Makes `targets` the active ones. A new target starts at the current end of the journal
    /// and of the alert transitions: it receives what is stored from now on. Targets no
    /// longer configured keep their state but stop holding back the journal.
    async fn configure_push_targets(&self, targets: Vec<PushTargetSpec>) -> Result<(), StoreError>;
    async fn push_target(&self, name: &str) -> Result<Option<PushTargetState>, StoreError>;
    async fn push_targets(&self) -> Result<Vec<PushTargetState>, StoreError>;
    /// Journal entries after `after`, oldest first, until they hold `max_readings` readings
    /// (always at least one entry when there is one).
    async fn push_journal(
        &self,
        after: i64,
        max_readings: usize,
    ) -> Result<Vec<JournalEntry>, StoreError>;
    /// The newest journal sequence (0 when empty and never used).
    async fn push_journal_head(&self) -> Result<i64, StoreError>;
    /// The target confirmed `resources` resources up to `to` of `stream`.
    async fn push_advanced(
        &self,
        target: &str,
        stream: PushStream,
        to: i64,
        resources: u64,
        at: Timestamp,
    ) -> Result<(), StoreError>;
    /// Counts a failed attempt of `target`.
    async fn push_failed(&self, target: &str, error: &str, at: Timestamp)
    -> Result<(), StoreError>;
    /// Records a refused batch as a dead letter and moves the cursor past it, atomically.
    async fn push_dead_letter(
        &self,
        letter: PushDeadLetter,
        at: Timestamp,
    ) -> Result<(), StoreError>;
    async fn push_dead_letters(
        &self,
        target: Option<&str>,
        limit: usize,
    ) -> Result<Vec<PushDeadLetter>, StoreError>;
    /// Deletes journal entries every active observation target has confirmed. Returns how
    /// many.
    async fn prune_push_journal(&self) -> Result<u64, StoreError>;

    /// Applies the writes of one transaction Bundle atomically, in order.
    async fn inbound_transaction(
        &self,
        writes: Vec<InboundWrite>,
        now: Timestamp,
    ) -> Result<Vec<InboundResult>, StoreError>;
    /// Matching inbound resources (newest first, at most `limit`) and how many match.
    async fn inbound_resources(
        &self,
        filter: InboundFilter,
    ) -> Result<(Vec<InboundResource>, u64), StoreError>;

    /// Creates or replaces an OAuth2 client.
    async fn put_oauth_client(&self, client: OAuthClient) -> Result<(), StoreError>;
    async fn oauth_client(&self, id: &str) -> Result<Option<OAuthClient>, StoreError>;
}

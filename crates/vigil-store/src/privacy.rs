//! Consent, break-glass grants, device enrolment revocation, patient export, erasure with a
//! tombstone, and retention sweeps.
//!
//! The store keeps the records; the hub decides what they allow (`vigil-hub/src/access.rs`).

use crate::StoreError;
use crate::chunk::StoredReading;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use vigil_model::{DeviceId, PatientId, Timestamp};

/// A patient's consent that `grantee` (a caregiver's user name) may read their data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Consent {
    pub id: i64,
    pub patient: PatientId,
    pub grantee: String,
    /// What it allows; `read` is the only scope today.
    pub scope: String,
    /// The patient, or the administrator who recorded it on the patient's behalf.
    pub granted_by: String,
    pub granted_at: Timestamp,
    pub expires: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
    pub revoked_by: Option<String>,
}

impl Consent {
    /// Whether it grants access at `now`.
    pub fn active_at(&self, now: Timestamp) -> bool {
        self.revoked_at.is_none() && self.expires.is_none_or(|e| e > now)
    }
}

/// A consent to record.
#[derive(Debug, Clone, PartialEq)]
pub struct NewConsent {
    pub grantee: String,
    pub scope: String,
    pub granted_by: String,
    pub expires: Option<Timestamp>,
}

/// One break-glass access: who opened a patient's record outside their care team, why and
/// for how long.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BreakGlass {
    pub id: i64,
    pub user: String,
    pub role: String,
    /// The patient id, or `erased:<hash>` once the patient was erased.
    pub patient: String,
    pub reason: String,
    pub from: Timestamp,
    pub until: Timestamp,
}

/// A device whose enrolment was revoked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceRevocation {
    pub device: DeviceId,
    pub revoked_by: String,
    pub revoked_at: Timestamp,
}

/// What an erasure removed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ErasureCounts {
    pub readings: u64,
    pub chunks: u64,
    pub latest: u64,
    pub events: u64,
    pub alerts: u64,
    pub transitions: u64,
    pub notifications: u64,
    pub consents: u64,
    pub break_glass_pseudonymised: u64,
    pub care_team: u64,
    pub rule_settings: u64,
    pub assignments: u64,
    pub quarantine: u64,
    pub patient_tokens_revoked: u64,
    /// Readings queued for EHR push targets that had not taken them yet.
    #[serde(default)]
    pub push_journal: u64,
}

/// The trace an erasure leaves: no identifier, only its salted hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tombstone {
    pub id: i64,
    /// Hex SHA-256 of the hub's secret salt followed by the patient id.
    pub patient_hash: String,
    pub erased_by: String,
    pub erased_at: Timestamp,
    pub reason: String,
    pub counts: ErasureCounts,
}

/// Retention cut-offs per kind of data: what is older than the cut is deleted; `None` keeps
/// that kind forever.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RetentionCuts {
    /// Whole chunks whose newest reading is older (device time); `latest` rows likewise.
    pub readings: Option<Timestamp>,
    /// Events by device time.
    pub events: Option<Timestamp>,
    /// Resolved alerts by resolution time, with their transitions and notifications.
    pub alerts: Option<Timestamp>,
    /// Quarantine entries by hub receive time.
    pub quarantine: Option<Timestamp>,
    /// Delivered or dead notifications by creation time (pending ones are kept).
    pub notifications: Option<Timestamp>,
}

/// What a retention sweep deleted.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RetentionOutcome {
    pub chunks: u64,
    pub readings: u64,
    pub latest: u64,
    pub events: u64,
    pub alerts: u64,
    pub transitions: u64,
    pub quarantine: u64,
    pub notifications: u64,
}

impl RetentionOutcome {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// Where a reading export continues: (metric code id, window) of the last group sent.
pub type ExportCursor = (i64, i64);

/// One page of a patient's readings for export, in (metric, window) order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReadingPage {
    pub readings: Vec<StoredReading>,
    /// `None` when this was the last page.
    pub next: Option<ExportCursor>,
}

/// Storage of privacy records and operations.
#[async_trait]
pub trait PrivacyStore {
    /// Records a consent. An active consent of the same grantee is replaced (revoked by the
    /// granter, then the new one recorded). `NotFound` for an unknown patient.
    async fn grant_consent(
        &self,
        patient: &PatientId,
        consent: NewConsent,
        now: Timestamp,
    ) -> Result<Consent, StoreError>;
    /// Every consent of a patient (active, expired and revoked), newest first.
    async fn consents(&self, patient: &PatientId) -> Result<Vec<Consent>, StoreError>;
    /// Revokes the grantee's active consent at once. `NotFound` when there is none.
    async fn revoke_consent(
        &self,
        patient: &PatientId,
        grantee: &str,
        by: &str,
        now: Timestamp,
    ) -> Result<Consent, StoreError>;
    /// The patients whose active consent names `grantee` at `now`.
    async fn consented_patients(
        &self,
        grantee: &str,
        now: Timestamp,
    ) -> Result<Vec<PatientId>, StoreError>;

    /// Records a break-glass access. `NotFound` for an unknown patient.
    async fn record_break_glass(
        &self,
        patient: &PatientId,
        user: &str,
        role: &str,
        reason: &str,
        from: Timestamp,
        until: Timestamp,
    ) -> Result<BreakGlass, StoreError>;
    /// Break-glass records, newest first; of one patient when given.
    async fn break_glass_log(
        &self,
        patient: Option<&PatientId>,
        limit: usize,
    ) -> Result<Vec<BreakGlass>, StoreError>;
    /// The patients `user` holds a running break-glass grant for at `now`.
    async fn break_glass_patients(
        &self,
        user: &str,
        now: Timestamp,
    ) -> Result<Vec<PatientId>, StoreError>;

    /// Revokes a device's enrolment with immediate effect: its later records are
    /// quarantined as `revoked_device`; what is stored stays. `NotFound` for an unknown
    /// device, `Conflict` when already revoked.
    async fn revoke_device(
        &self,
        device: &DeviceId,
        by: &str,
        now: Timestamp,
    ) -> Result<DeviceRevocation, StoreError>;
    async fn device_revocations(&self) -> Result<Vec<DeviceRevocation>, StoreError>;

    /// A page of a patient's readings (every stored reading once), up to `max_groups`
    /// (metric, hour) groups after `after`. `NotFound` for an unknown patient.
    async fn export_readings(
        &self,
        patient: &PatientId,
        after: Option<ExportCursor>,
        max_groups: usize,
    ) -> Result<ReadingPage, StoreError>;

    /// Erases a patient and everything about them in one transaction, leaving a
    /// [`Tombstone`]. `NotFound` for an unknown patient.
    async fn erase_patient(
        &self,
        patient: &PatientId,
        by: &str,
        reason: &str,
        now: Timestamp,
    ) -> Result<Tombstone, StoreError>;
    async fn tombstones(&self) -> Result<Vec<Tombstone>, StoreError>;

    /// Deletes what is older than the cuts.
    async fn sweep_retention(&self, cuts: RetentionCuts) -> Result<RetentionOutcome, StoreError>;

    /// Names of the unrevoked admin API tokens (whom privacy reports go to).
    async fn admin_users(&self) -> Result<Vec<String>, StoreError>;
}

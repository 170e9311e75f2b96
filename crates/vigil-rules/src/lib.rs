//! Vigil's clinical rule engine, shared by the gateway (local rules while offline) and the hub.
//!
//! # What this crate owns
//! - [`news2`]: the National Early Warning Score 2 exactly as the Royal College of Physicians
//!   2017 charts define it, the clinical response and monitoring frequency of each band, and
//!   the assembly of a NEWS2 parameter set from a patient's latest readings.
//! - [`thresholds`]: guideline threshold rules (ADA glucose levels, ACC/AHA hypertensive
//!   crisis, SpO2 desaturation, bradycardia, tachycardia, fever), each with its id, severity,
//!   values and citation, and a clinician's per-patient overrides.
//! - [`baseline`]: personal baselines (`baseline-deviation`) and the heart-failure
//!   `weight-gain` rule.
//! - [`engine`]: a small facade that keeps a window of recent samples per patient (serde, so a
//!   caller can persist it) and turns each new reading into [`Finding`]s.
//!
//! # What it must never do
//! - No I/O of any kind: no files, network, database, clock (`Timestamp::now`), logging or
//!   randomness. Every result depends only on the arguments, so the gateway and the hub reach
//!   the same findings from the same readings.
//! - Never report a NEWS2 score from an incomplete parameter set (it names what is missing).
//! - Never let a reading that is not [`Flags::trustworthy`](vigil_model::Flags::trustworthy)
//!   raise a finding, and never panic on any input value (NaN, infinities, negative numbers,
//!   out-of-order times).
//! - Never decide what happens next: opening, de-duplicating, notifying and escalating alerts
//!   belong to the hub; findings are level-triggered facts.
//!
//! Values are in the model's canonical units (`/min`, `%`, `mm[Hg]`, `Cel`, `mg/dL`).

pub mod baseline;
pub mod engine;
pub mod news2;
pub mod sample;
pub mod thresholds;

pub use baseline::BaselineSettings;
pub use engine::{Assessment, Engine, PatientConfig, PatientState};
pub use news2::{
    Acvpu, Assessments, Incomplete, Inputs, Monitoring, News2, News2Settings, Observed, Parameter,
    Risk, Spo2Scale, score,
};
pub use sample::Sample;
pub use thresholds::{Rule, ThresholdOverrides, Thresholds};

use serde::{Deserialize, Serialize};
use vigil_model::{Metric, Timestamp};

/// How urgently a finding needs a person.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

/// Something a rule found in a patient's readings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// A rule id from [`thresholds::RULE_IDS`], or [`engine::NEWS2_RULE_ID`].
    pub rule_id: String,
    pub severity: Severity,
    /// A short human-readable account, with the values that triggered it.
    pub message: String,
    /// The device time of the reading that triggered it.
    pub time: Timestamp,
    /// The metric that triggered it (none for NEWS2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<Metric>,
    /// The triggering value (the total for NEWS2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// The full score, for NEWS2 findings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub news2: Option<News2>,
}

/// Invalid configuration or input text.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RulesError {
    #[error("{field} = {value} is outside {lo}..={hi}")]
    OutOfRange {
        field: &'static str,
        value: f64,
        lo: f64,
        hi: f64,
    },
    #[error("inconsistent thresholds: {0}")]
    Inconsistent(&'static str),
    #[error("unknown rule id {0:?}")]
    UnknownRule(String),
    #[error("SpO2 scale {0} does not exist (use 1 or 2)")]
    InvalidScale(u8),
    #[error("{0:?} is not an ACVPU level (use A, C, V, P or U)")]
    InvalidAcvpu(String),
}

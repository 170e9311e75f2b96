//! NEWS2, the National Early Warning Score 2 (Royal College of Physicians, 2017).
//!
//! [`score`] implements Chart 1 (the scoring table), Chart 2 (thresholds and triggers) and
//! Chart 4 (clinical response and minimum monitoring frequency) exactly:
//!
//! | parameter | 3 | 2 | 1 | 0 | 1 | 2 | 3 |
//! |---|---|---|---|---|---|---|---|
//! | respiration rate /min | ≤8 | | 9–11 | 12–20 | | 21–24 | ≥25 |
//! | SpO2 scale 1 % | ≤91 | 92–93 | 94–95 | ≥96 | | | |
//! | SpO2 scale 2 % | ≤83 | 84–85 | 86–87 | 88–92, ≥93 on air | 93–94 on O2 | 95–96 on O2 | ≥97 on O2 |
//! | air or oxygen | | oxygen | | air | | | |
//! | systolic BP mmHg | ≤90 | 91–100 | 101–110 | 111–219 | | | ≥220 |
//! | pulse /min | ≤40 | | 41–50 | 51–90 | 91–110 | 111–130 | ≥131 |
//! | consciousness | | | | alert | | | new confusion, voice, pain, unresponsive |
//! | temperature °C | ≤35.0 | | 35.1–36.0 | 36.1–38.0 | 38.1–39.0 | ≥39.1 | |
//!
//! **Resolution.** The chart is written in whole numbers (temperature in tenths). Values are
//! therefore rounded half-up before banding: respiration rate, SpO2, systolic BP and pulse to
//! a whole number (`20.4` → 20 scores 0, `20.5` → 21 scores 2), temperature to 0.1 °C
//! (`38.04` → 38.0 scores 0, `38.05` → 38.1 scores 1). This closes the gaps a literal reading
//! of the chart leaves (where would 35.05 °C or 91.5 % fall?).
//!
//! **Incomplete sets.** A score from an incomplete set of parameters is not a NEWS2 score:
//! [`score`] then returns [`Incomplete`] naming the missing parameters, never a lower total.
//! A value that is not a finite, non-negative number counts as missing.
//!
//! SpO2 scale 2 is only for patients with hypercapnic respiratory failure and a prescribed
//! 88–92 % target, chosen by a clinician; it is a per-patient setting ([`News2Settings`]),
//! never inferred here.

use crate::RulesError;
use crate::sample::{Sample, known, scaled};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use vigil_model::{Metric, Reading, Timestamp};

/// Which SpO2 scale the patient is scored on. Serialized as the number `1` or `2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub enum Spo2Scale {
    /// The default for every patient.
    #[default]
    Scale1,
    /// Hypercapnic respiratory failure with a prescribed 88–92 % target (clinician's choice).
    Scale2,
}

impl TryFrom<u8> for Spo2Scale {
    type Error = RulesError;
    fn try_from(n: u8) -> Result<Self, RulesError> {
        match n {
            1 => Ok(Self::Scale1),
            2 => Ok(Self::Scale2),
            other => Err(RulesError::InvalidScale(other)),
        }
    }
}

impl From<Spo2Scale> for u8 {
    fn from(s: Spo2Scale) -> u8 {
        match s {
            Spo2Scale::Scale1 => 1,
            Spo2Scale::Scale2 => 2,
        }
    }
}

/// Level of consciousness on the ACVPU scale. Serialized as its letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Acvpu {
    #[serde(rename = "A")]
    Alert,
    /// *New* confusion (new-onset or worsening disorientation or delirium).
    #[serde(rename = "C")]
    Confusion,
    #[serde(rename = "V")]
    Voice,
    #[serde(rename = "P")]
    Pain,
    #[serde(rename = "U")]
    Unresponsive,
}

impl Acvpu {
    pub fn letter(self) -> char {
        match self {
            Self::Alert => 'A',
            Self::Confusion => 'C',
            Self::Voice => 'V',
            Self::Pain => 'P',
            Self::Unresponsive => 'U',
        }
    }
}

impl FromStr for Acvpu {
    type Err = RulesError;
    /// Accepts the letter or the word, in any case (`"V"`, `"voice"`).
    fn from_str(s: &str) -> Result<Self, RulesError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "a" | "alert" => Ok(Self::Alert),
            "c" | "confusion" | "new confusion" => Ok(Self::Confusion),
            "v" | "voice" => Ok(Self::Voice),
            "p" | "pain" => Ok(Self::Pain),
            "u" | "unresponsive" => Ok(Self::Unresponsive),
            _ => Err(RulesError::InvalidAcvpu(s.to_owned())),
        }
    }
}

/// The seven NEWS2 parameters. Serialized with the same names as the fields of [`News2`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Parameter {
    #[serde(rename = "rr")]
    RespirationRate,
    #[serde(rename = "spo2")]
    Spo2,
    #[serde(rename = "air_or_oxygen")]
    AirOrOxygen,
    #[serde(rename = "sbp")]
    SystolicBp,
    #[serde(rename = "pulse")]
    Pulse,
    #[serde(rename = "consciousness")]
    Consciousness,
    #[serde(rename = "temp")]
    Temperature,
}

impl Parameter {
    pub const ALL: [Self; 7] = [
        Self::RespirationRate,
        Self::Spo2,
        Self::AirOrOxygen,
        Self::SystolicBp,
        Self::Pulse,
        Self::Consciousness,
        Self::Temperature,
    ];
}

impl fmt::Display for Parameter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::RespirationRate => "respiration rate",
            Self::Spo2 => "SpO2",
            Self::AirOrOxygen => "air or oxygen",
            Self::SystolicBp => "systolic blood pressure",
            Self::Pulse => "pulse",
            Self::Consciousness => "consciousness (ACVPU)",
            Self::Temperature => "temperature",
        })
    }
}

/// The observations NEWS2 is computed from, in canonical units (`/min`, `%`, `mm[Hg]`, `Cel`).
/// Every parameter is optional so that an incomplete set can be reported as such.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Inputs {
    pub respiration_rate: Option<f64>,
    pub spo2: Option<f64>,
    pub scale: Spo2Scale,
    /// `true` on supplemental oxygen, `false` on air.
    pub supplemental_oxygen: Option<bool>,
    pub systolic_bp: Option<f64>,
    pub pulse: Option<f64>,
    pub consciousness: Option<Acvpu>,
    pub temperature: Option<f64>,
}

/// NEWS2 clinical risk (Chart 2). Serialized as `low`, `low-medium`, `medium`, `high`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Risk {
    /// Aggregate 0–4 with no single parameter scoring 3.
    Low,
    /// A single parameter scores 3 (a red score) and the aggregate is 0–4.
    LowMedium,
    /// Aggregate 5–6: key threshold for urgent response.
    Medium,
    /// Aggregate 7 or more: emergency response.
    High,
}

impl Risk {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::LowMedium => "low-medium",
            Self::Medium => "medium",
            Self::High => "high",
        }
    }
}

impl fmt::Display for Risk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Minimum frequency of monitoring (Chart 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Monitoring {
    /// Aggregate 0: minimum 12-hourly.
    TwelveHourly,
    /// Aggregate 1–4: minimum 4–6-hourly.
    FourToSixHourly,
    /// A red score or aggregate 5–6: minimum 1-hourly.
    Hourly,
    /// Aggregate 7 or more: continuous monitoring of vital signs.
    Continuous,
}

impl Monitoring {
    pub fn text(self) -> &'static str {
        match self {
            Self::TwelveHourly => "minimum 12-hourly",
            Self::FourToSixHourly => "minimum 4-6-hourly",
            Self::Hourly => "minimum 1-hourly",
            Self::Continuous => "continuous monitoring of vital signs",
        }
    }
}

impl fmt::Display for Monitoring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.text())
    }
}

/// A complete NEWS2 score.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct News2 {
    /// Aggregate score, 0–20.
    pub total: u8,
    pub rr: u8,
    pub spo2: u8,
    pub air_or_oxygen: u8,
    pub sbp: u8,
    pub pulse: u8,
    pub consciousness: u8,
    pub temp: u8,
    /// The SpO2 scale the score was computed on.
    pub scale: Spo2Scale,
    pub risk: Risk,
    /// The clinical response for this score (RCP 2017, paraphrased).
    pub response: String,
    pub monitoring: Monitoring,
}

impl News2 {
    /// The seven parameter scores, in [`Parameter::ALL`] order.
    pub fn parameters(&self) -> [(Parameter, u8); 7] {
        [
            (Parameter::RespirationRate, self.rr),
            (Parameter::Spo2, self.spo2),
            (Parameter::AirOrOxygen, self.air_or_oxygen),
            (Parameter::SystolicBp, self.sbp),
            (Parameter::Pulse, self.pulse),
            (Parameter::Consciousness, self.consciousness),
            (Parameter::Temperature, self.temp),
        ]
    }

    /// Whether any single parameter scores 3 (a "red score").
    pub fn red_score(&self) -> bool {
        self.parameters().iter().any(|(_, s)| *s >= 3)
    }

    /// Whether the band calls for more than the routine ward response: a red score, medium
    /// or high risk.
    pub fn warrants_alert(&self) -> bool {
        self.risk >= Risk::LowMedium
    }
}

/// The parameters a NEWS2 score could not be computed without.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[error("incomplete NEWS2 parameter set; missing: {}", list(.missing))]
pub struct Incomplete {
    /// Missing (or unusable) parameters, in [`Parameter::ALL`] order; never empty.
    pub missing: Vec<Parameter>,
}

fn list(ps: &[Parameter]) -> String {
    ps.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

const RESPONSE_ZERO: &str = "Continue routine NEWS2 monitoring.";
const RESPONSE_LOW: &str = "Assessment by a competent registered nurse, who decides whether increased \
     frequency of clinical monitoring or escalation of care is required.";
const RESPONSE_LOW_MEDIUM: &str = "Urgent ward-based response: registered nurse to inform the medical team \
     caring for the patient; urgent assessment by a clinician, who decides whether escalation \
     of care is necessary.";
const RESPONSE_MEDIUM: &str = "Key threshold for urgent response: registered nurse to inform the medical team \
     immediately; urgent assessment by a clinician or team with competencies in the \
     assessment of acutely ill patients, in an environment with monitoring facilities.";
const RESPONSE_HIGH: &str = "Emergency response: registered nurse to inform the medical team immediately; \
     emergency assessment by a clinical team with critical care competencies, including \
     airway management; usually transfer to a higher level of care.";

/// Computes NEWS2, or names the missing parameters.
pub fn score(inputs: &Inputs) -> Result<News2, Incomplete> {
    let usable = |v: Option<f64>| v.filter(|v| v.is_finite() && *v >= 0.0);
    let rr = usable(inputs.respiration_rate);
    let spo2 = usable(inputs.spo2);
    let sbp = usable(inputs.systolic_bp);
    let pulse = usable(inputs.pulse);
    let temp = usable(inputs.temperature);
    let (oxygen, acvpu) = (inputs.supplemental_oxygen, inputs.consciousness);

    let present = [
        rr.is_some(),
        spo2.is_some(),
        oxygen.is_some(),
        sbp.is_some(),
        pulse.is_some(),
        acvpu.is_some(),
        temp.is_some(),
    ];
    let missing: Vec<Parameter> = Parameter::ALL
        .into_iter()
        .zip(present)
        .filter(|(_, here)| !here)
        .map(|(p, _)| p)
        .collect();
    let (Some(rr), Some(spo2), Some(oxygen), Some(sbp), Some(pulse), Some(acvpu), Some(temp)) =
        (rr, spo2, oxygen, sbp, pulse, acvpu, temp)
    else {
        return Err(Incomplete { missing });
    };

    let mut n = News2 {
        total: 0,
        rr: rr_score(rr),
        spo2: spo2_score(spo2, inputs.scale, oxygen),
        air_or_oxygen: if oxygen { 2 } else { 0 },
        sbp: sbp_score(sbp),
        pulse: pulse_score(pulse),
        consciousness: if acvpu == Acvpu::Alert { 0 } else { 3 },
        temp: temp_score(temp),
        scale: inputs.scale,
        risk: Risk::Low,
        response: String::new(),
        monitoring: Monitoring::TwelveHourly,
    };
    n.total = n.parameters().iter().map(|(_, s)| s).sum();
    n.risk = match n.total {
        7.. => Risk::High,
        5..=6 => Risk::Medium,
        _ if n.red_score() => Risk::LowMedium,
        _ => Risk::Low,
    };
    let (response, monitoring) = match n.risk {
        Risk::High => (RESPONSE_HIGH, Monitoring::Continuous),
        Risk::Medium => (RESPONSE_MEDIUM, Monitoring::Hourly),
        Risk::LowMedium => (RESPONSE_LOW_MEDIUM, Monitoring::Hourly),
        Risk::Low if n.total == 0 => (RESPONSE_ZERO, Monitoring::TwelveHourly),
        Risk::Low => (RESPONSE_LOW, Monitoring::FourToSixHourly),
    };
    n.response = response.to_owned();
    n.monitoring = monitoring;
    Ok(n)
}

fn rr_score(v: f64) -> u8 {
    match scaled(v, 0) {
        ..=8 => 3,
        9..=11 => 1,
        12..=20 => 0,
        21..=24 => 2,
        _ => 3,
    }
}

fn spo2_score(v: f64, scale: Spo2Scale, oxygen: bool) -> u8 {
    let s = scaled(v, 0);
    match scale {
        Spo2Scale::Scale1 => match s {
            ..=91 => 3,
            92..=93 => 2,
            94..=95 => 1,
            _ => 0,
        },
        Spo2Scale::Scale2 => match s {
            ..=83 => 3,
            84..=85 => 2,
            86..=87 => 1,
            88..=92 => 0,
            _ if !oxygen => 0,
            93..=94 => 1,
            95..=96 => 2,
            _ => 3,
        },
    }
}

fn sbp_score(v: f64) -> u8 {
    match scaled(v, 0) {
        ..=90 => 3,
        91..=100 => 2,
        101..=110 => 1,
        111..=219 => 0,
        _ => 3,
    }
}

fn pulse_score(v: f64) -> u8 {
    match scaled(v, 0) {
        ..=40 => 3,
        41..=50 => 1,
        51..=90 => 0,
        91..=110 => 1,
        111..=130 => 2,
        _ => 3,
    }
}

fn temp_score(v: f64) -> u8 {
    match scaled(v, 1) {
        ..=350 => 3,
        351..=360 => 1,
        361..=380 => 0,
        381..=390 => 1,
        _ => 2,
    }
}

/// Per-patient NEWS2 settings, set by a clinician.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct News2Settings {
    pub scale: Spo2Scale,
    /// How old (before the evaluation time) an observation may be and still count towards
    /// the set. A platform choice, not an RCP figure. Default 3600 s.
    pub window_s: u32,
}

impl Default for News2Settings {
    fn default() -> Self {
        Self {
            scale: Spo2Scale::Scale1,
            window_s: 3600,
        }
    }
}

/// A value observed or recorded by a person at a time (for NEWS2: ACVPU, air or oxygen).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observed<T> {
    pub value: T,
    pub time: Timestamp,
}

/// Observations that do not come from devices: the ACVPU a nurse assessed and, when there is
/// no flow meter, whether the patient is on supplemental oxygen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Assessments {
    pub consciousness: Option<Observed<Acvpu>>,
    pub supplemental_oxygen: Option<Observed<bool>>,
}

/// Builds NEWS2 inputs from the latest usable sample of each parameter in the window
/// `[at - settings.window_s, at]`.
///
/// Samples that are not [`Flags::trustworthy`](vigil_model::Flags::trustworthy) or not finite
/// are ignored (an older usable sample is used instead), as are samples after `at`. Pulse
/// comes from heart rate (8867-4); systolic BP from 8480-6 (standalone or a panel component);
/// air or oxygen from the later of an inhaled-oxygen-flow sample (3151-8; a flow > 0 L/min
/// means on oxygen) and [`Assessments::supplemental_oxygen`] (on a tie, oxygen wins);
/// consciousness only from [`Assessments::consciousness`]. Assessments outside the window
/// are ignored too.
pub fn inputs_from_samples(
    samples: &[Sample],
    at: Timestamp,
    settings: &News2Settings,
    assessments: &Assessments,
) -> Inputs {
    inputs_with(
        |metric, from, at| latest_usable(samples.iter(), metric, from, at),
        at,
        settings,
        assessments,
    )
}

/// [`inputs_from_samples`] over readings (each split with [`Sample::from_reading`]).
pub fn inputs_from_readings(
    readings: &[Reading],
    at: Timestamp,
    settings: &News2Settings,
    assessments: &Assessments,
) -> Inputs {
    let samples: Vec<Sample> = readings.iter().flat_map(Sample::from_reading).collect();
    inputs_from_samples(&samples, at, settings, assessments)
}

/// The latest usable sample of `metric` with `from <= time <= at` (the later one in slice
/// order on a tie).
pub(crate) fn latest_usable<'a>(
    samples: impl Iterator<Item = &'a Sample>,
    metric: Metric,
    from: Timestamp,
    at: Timestamp,
) -> Option<Sample> {
    samples
        .filter(|s| s.metric == metric && s.usable() && s.time >= from && s.time <= at)
        .max_by_key(|s| s.time)
        .copied()
}

/// The window logic shared by the slice helpers and the engine's per-metric state.
pub(crate) fn inputs_with(
    latest: impl Fn(Metric, Timestamp, Timestamp) -> Option<Sample>,
    at: Timestamp,
    settings: &News2Settings,
    assessments: &Assessments,
) -> Inputs {
    let k = known();
    let from = at.saturating_add_millis(-i64::from(settings.window_s) * 1000);
    let in_window = |t: Timestamp| t >= from && t <= at;
    let value = |m: Metric| latest(m, from, at).map(|s| s.value);

    let flow = latest(k.o2_flow, from, at).map(|s| Observed {
        value: s.value > 0.0,
        time: s.time,
    });
    let recorded = assessments
        .supplemental_oxygen
        .filter(|o| in_window(o.time));
    let supplemental_oxygen = match (flow, recorded) {
        (Some(f), Some(r)) if f.time == r.time => Some(f.value || r.value),
        (Some(f), Some(r)) => Some(if f.time > r.time { f.value } else { r.value }),
        (f, r) => f.or(r).map(|o| o.value),
    };

    Inputs {
        respiration_rate: value(k.resp_rate),
        spo2: value(k.spo2),
        scale: settings.scale,
        supplemental_oxygen,
        systolic_bp: value(k.systolic),
        pulse: value(k.heart_rate),
        consciousness: assessments
            .consciousness
            .filter(|c| in_window(c.time))
            .map(|c| c.value),
        temperature: value(k.body_temp),
    }
}

/// The metrics whose samples feed NEWS2 (a new sample of one of them may change the score).
pub fn input_metrics() -> [Metric; 6] {
    let k = known();
    [
        k.resp_rate,
        k.spo2,
        k.o2_flow,
        k.systolic,
        k.heart_rate,
        k.body_temp,
    ]
}

//! Threshold rules with defaults from published guidelines.
//!
//! | rule id | severity | default | source |
//! |---|---|---|---|
//! | `hypoglycaemia-level-2` | critical | glucose < 54 mg/dL (3.0 mmol/L) | ADA Standards of Care, Section 6 |
//! | `hypoglycaemia-level-1` | warning | 54 ≤ glucose < 70 mg/dL (3.9 mmol/L) | ADA Standards of Care, Section 6 |
//! | `hyperglycaemia-level-1` | info | 180 < glucose ≤ 250 mg/dL | Agiostratidou et al. 2017 consensus |
//! | `hyperglycaemia-level-2` | warning | glucose > 250 mg/dL (13.9 mmol/L) | Agiostratidou et al. 2017 consensus |
//! | `hypertensive-crisis` | critical | systolic > 180 and/or diastolic > 120 mmHg | 2017 ACC/AHA guideline |
//! | `spo2-desaturation` | critical | SpO2 ≤ 91 % sustained 60 s | NEWS2 scale 1 red band; persistence is a Vigil design |
//! | `bradycardia` | warning | heart rate < 50 /min sustained 60 s | AHA ACLS working definition |
//! | `tachycardia` | warning | heart rate > 100 /min sustained 300 s | conventional adult limit |
//! | `fever` | warning | temperature ≥ 38.0 °C | common definition, **UNVERIFIED** in Vigil's reference |
//!
//! The fever threshold is marked UNVERIFIED in Vigil's clinical reference (not checked against
//! a primary source; SCCM/IDSA 2008 uses ≥ 38.3 °C in intensive care): confirm it locally.
//! Severities, persistence durations and the 300 s tachycardia window are platform choices.
//!
//! **Comparisons.** Values are rounded half-up to the resolution the guideline states them in
//! before comparing: whole numbers for glucose (mg/dL), blood pressure, SpO2 and heart rate,
//! 0.1 °C for temperature (so 37.95 °C counts as 38.0 °C).
//!
//! **Spot rules** (glucose, blood pressure, fever) look at the latest usable measurement in the
//! window. **Sustained rules** (desaturation, bradycardia, tachycardia) fire only when the
//! latest usable sample and every usable sample before it, back to one at least `duration`
//! older, meet the condition; there must be at least `sustained_min_samples` (default 2) of
//! them and no gap between consecutive ones longer than `duration`, so two spot checks hours
//! apart never count as "sustained". Samples that are not
//! [`trustworthy`](vigil_model::Flags::trustworthy) are ignored throughout: they neither
//! trigger nor interrupt a rule.
//!
//! Findings are level-triggered: every evaluation while a condition holds returns a finding.
//! Turning findings into one open alert is the caller's job.

use crate::sample::{Sample, known, rounded};
use crate::{Finding, RulesError, Severity};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use vigil_model::Metric;

/// Every rule id this module defines, in evaluation order.
pub const RULE_IDS: [&str; 9] = [
    HYPO_2, HYPO_1, HYPER_1, HYPER_2, CRISIS, DESAT, BRADY, TACHY, FEVER,
];

const HYPO_1: &str = "hypoglycaemia-level-1";
const HYPO_2: &str = "hypoglycaemia-level-2";
const HYPER_1: &str = "hyperglycaemia-level-1";
const HYPER_2: &str = "hyperglycaemia-level-2";
const CRISIS: &str = "hypertensive-crisis";
const DESAT: &str = "spo2-desaturation";
const BRADY: &str = "bradycardia";
const TACHY: &str = "tachycardia";
const FEVER: &str = "fever";

const ADA: &str = "ADA Standards of Care in Diabetes, Section 6 (Glycemic Goals and \
    Hypoglycemia): level 1 <70 mg/dL (3.9 mmol/L) and >=54 mg/dL; level 2 <54 mg/dL (3.0 mmol/L)";
const ADA_HYPER: &str = "Agiostratidou et al., Diabetes Care 2017;40:1622 (consensus, endorsed \
    by ADA): level 1 >180 mg/dL (10.0 mmol/L) and <=250 mg/dL; level 2 >250 mg/dL (13.9 mmol/L)";
const ACC_AHA: &str = "2017 ACC/AHA High Blood Pressure Guideline (Whelton et al., Hypertension \
    2018;71:1269): hypertensive crisis SBP >180 and/or DBP >120 mm Hg";
const NEWS2_SPO2: &str = "RCP NEWS2 (2017) SpO2 scale 1: <=91 % scores 3; persistence \
    requirement is a Vigil alert design, not a guideline";
const ACLS: &str = "AHA ACLS: working definition of (symptomatic) bradycardia <50 /min";
const TACHY_CITE: &str = "Conventional adult resting heart-rate limit 60-100 /min (tachycardia \
    >100 /min); sustained window is a Vigil alert design";
const FEVER_CITE: &str = "Fever >=38.0 C (100.4 F), common definition: UNVERIFIED in Vigil's \
    clinical reference (SCCM/IDSA 2008 uses >=38.3 C in ICU)";

/// A comparison against threshold values (in the metric's canonical unit).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Test {
    Below(f64),
    AtOrBelow(f64),
    Above(f64),
    AtOrAbove(f64),
    /// `lo <= v < hi`.
    AtLeastAndBelow(f64, f64),
    /// `lo < v <= hi`.
    AboveAndAtMost(f64, f64),
}

impl Test {
    pub fn holds(self, v: f64) -> bool {
        match self {
            Self::Below(t) => v < t,
            Self::AtOrBelow(t) => v <= t,
            Self::Above(t) => v > t,
            Self::AtOrAbove(t) => v >= t,
            Self::AtLeastAndBelow(lo, hi) => v >= lo && v < hi,
            Self::AboveAndAtMost(lo, hi) => v > lo && v <= hi,
        }
    }

    fn describe(self) -> String {
        match self {
            Self::Below(t) => format!("< {t}"),
            Self::AtOrBelow(t) => format!("<= {t}"),
            Self::Above(t) => format!("> {t}"),
            Self::AtOrAbove(t) => format!(">= {t}"),
            Self::AtLeastAndBelow(lo, hi) => format!(">= {lo} and < {hi}"),
            Self::AboveAndAtMost(lo, hi) => format!("> {lo} and <= {hi}"),
        }
    }
}

/// One metric and the test its value (rounded to `decimals` places) must pass.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Criterion {
    pub metric: Metric,
    pub test: Test,
    pub decimals: u8,
}

impl Criterion {
    pub fn holds(&self, value: f64) -> bool {
        self.test.holds(rounded(value, self.decimals))
    }
}

/// How long a condition must hold before a sustained rule fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Persistence {
    pub duration_ms: i64,
    pub min_samples: usize,
}

/// One threshold rule.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rule {
    pub id: &'static str,
    pub title: &'static str,
    pub severity: Severity,
    pub citation: &'static str,
    /// The rule fires when any criterion holds (blood pressure: systolic or diastolic).
    pub criteria: Vec<Criterion>,
    /// `None` for a spot rule (latest measurement only).
    pub persistence: Option<Persistence>,
}

impl Rule {
    /// Whether a sample of `metric` is relevant to this rule.
    pub fn uses(&self, metric: Metric) -> bool {
        self.criteria.iter().any(|c| c.metric == metric)
    }

    /// Evaluates the rule at the time of the latest usable sample in `window` (the recent
    /// samples of one patient, any metrics, any order).
    pub fn evaluate(&self, window: &[Sample]) -> Option<Finding> {
        let mut hits: Vec<(&Sample, &Criterion)> = window
            .iter()
            .filter(|s| s.usable())
            .filter_map(|s| {
                self.criteria
                    .iter()
                    .find(|c| c.metric == s.metric)
                    .map(|c| (s, c))
            })
            .collect();
        hits.sort_by_key(|(s, _)| s.time);
        let (last, _) = *hits.last()?;
        match self.persistence {
            None => {
                let triggered: Vec<&(&Sample, &Criterion)> = hits
                    .iter()
                    .filter(|(s, c)| s.time == last.time && c.holds(s.value))
                    .collect();
                let (first, _) = **triggered.first()?;
                let what = triggered
                    .iter()
                    .map(|(s, c)| describe_value(s, c))
                    .collect::<Vec<_>>()
                    .join(", ");
                Some(self.finding(first, format!("{}: {what}", self.title)))
            }
            Some(p) => {
                let max_gap = if p.duration_ms > 0 {
                    p.duration_ms
                } else {
                    i64::MAX
                };
                let mut count = 0usize;
                let mut next = last.time;
                for (s, c) in hits.iter().rev() {
                    if !c.holds(s.value) || next.0.saturating_sub(s.time.0) > max_gap {
                        return None;
                    }
                    count += 1;
                    next = s.time;
                    let held = last.time.0.saturating_sub(s.time.0);
                    if count >= p.min_samples && held >= p.duration_ms {
                        let (_, lc) = hits.last()?;
                        let message = format!(
                            "{}: {} for {} s ({count} samples since {})",
                            self.title,
                            describe_value(last, lc),
                            held / 1000,
                            s.time
                        );
                        return Some(self.finding(last, message));
                    }
                }
                None
            }
        }
    }

    fn finding(&self, s: &Sample, message: String) -> Finding {
        Finding {
            rule_id: self.id.to_owned(),
            severity: self.severity,
            message,
            time: s.time,
            metric: Some(s.metric),
            value: Some(s.value),
            news2: None,
        }
    }
}

fn describe_value(s: &Sample, c: &Criterion) -> String {
    let d = usize::from(c.decimals);
    format!(
        "{} {:.d$} {} ({} {})",
        s.metric.display().to_lowercase(),
        rounded(s.value, c.decimals),
        s.metric.ucum(),
        c.test.describe(),
        s.metric.ucum()
    )
}

/// Threshold values in canonical units, with the guideline defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Thresholds {
    /// Level 1 hypoglycaemia below this (and at or above level 2). ADA: 70.
    pub hypoglycaemia_level1_below_mg_dl: f64,
    /// Level 2 hypoglycaemia below this. ADA: 54.
    pub hypoglycaemia_level2_below_mg_dl: f64,
    /// Level 1 hyperglycaemia above this (and at or below level 2). Consensus: 180.
    pub hyperglycaemia_level1_above_mg_dl: f64,
    /// Level 2 hyperglycaemia above this. Consensus: 250.
    pub hyperglycaemia_level2_above_mg_dl: f64,
    /// ACC/AHA: 180.
    pub crisis_systolic_above_mmhg: f64,
    /// ACC/AHA: 120.
    pub crisis_diastolic_above_mmhg: f64,
    /// NEWS2 scale 1 red band: 91.
    pub desaturation_at_or_below_pct: f64,
    pub desaturation_for_s: u32,
    /// ACLS: 50.
    pub bradycardia_below_bpm: f64,
    pub bradycardia_for_s: u32,
    /// Conventional: 100.
    pub tachycardia_above_bpm: f64,
    pub tachycardia_for_s: u32,
    /// Least number of usable samples a sustained rule needs (at least 2).
    pub sustained_min_samples: u32,
    /// Common definition, UNVERIFIED: 38.0.
    pub fever_at_or_above_cel: f64,
    /// Rule ids that do not run.
    pub disabled: BTreeSet<String>,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            hypoglycaemia_level1_below_mg_dl: 70.0,
            hypoglycaemia_level2_below_mg_dl: 54.0,
            hyperglycaemia_level1_above_mg_dl: 180.0,
            hyperglycaemia_level2_above_mg_dl: 250.0,
            crisis_systolic_above_mmhg: 180.0,
            crisis_diastolic_above_mmhg: 120.0,
            desaturation_at_or_below_pct: 91.0,
            desaturation_for_s: 60,
            bradycardia_below_bpm: 50.0,
            bradycardia_for_s: 60,
            tachycardia_above_bpm: 100.0,
            tachycardia_for_s: 300,
            sustained_min_samples: 2,
            fever_at_or_above_cel: 38.0,
            disabled: BTreeSet::new(),
        }
    }
}

/// A clinician's per-patient changes to [`Thresholds`]: every field given replaces the
/// default, every field left out keeps it. Unknown fields are rejected, so a misspelt
/// override fails instead of silently doing nothing.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ThresholdOverrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hypoglycaemia_level1_below_mg_dl: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hypoglycaemia_level2_below_mg_dl: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hyperglycaemia_level1_above_mg_dl: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hyperglycaemia_level2_above_mg_dl: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crisis_systolic_above_mmhg: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crisis_diastolic_above_mmhg: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub desaturation_at_or_below_pct: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub desaturation_for_s: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bradycardia_below_bpm: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bradycardia_for_s: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tachycardia_above_bpm: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tachycardia_for_s: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sustained_min_samples: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fever_at_or_above_cel: Option<f64>,
    /// Replaces the disabled set when given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disabled: Option<BTreeSet<String>>,
}

const MAX_DURATION_S: u32 = 86_400;

impl Thresholds {
    /// These thresholds with `overrides` applied, validated.
    pub fn merged(&self, o: &ThresholdOverrides) -> Result<Self, RulesError> {
        let t = Self {
            hypoglycaemia_level1_below_mg_dl: o
                .hypoglycaemia_level1_below_mg_dl
                .unwrap_or(self.hypoglycaemia_level1_below_mg_dl),
            hypoglycaemia_level2_below_mg_dl: o
                .hypoglycaemia_level2_below_mg_dl
                .unwrap_or(self.hypoglycaemia_level2_below_mg_dl),
            hyperglycaemia_level1_above_mg_dl: o
                .hyperglycaemia_level1_above_mg_dl
                .unwrap_or(self.hyperglycaemia_level1_above_mg_dl),
            hyperglycaemia_level2_above_mg_dl: o
                .hyperglycaemia_level2_above_mg_dl
                .unwrap_or(self.hyperglycaemia_level2_above_mg_dl),
            crisis_systolic_above_mmhg: o
                .crisis_systolic_above_mmhg
                .unwrap_or(self.crisis_systolic_above_mmhg),
            crisis_diastolic_above_mmhg: o
                .crisis_diastolic_above_mmhg
                .unwrap_or(self.crisis_diastolic_above_mmhg),
            desaturation_at_or_below_pct: o
                .desaturation_at_or_below_pct
                .unwrap_or(self.desaturation_at_or_below_pct),
            desaturation_for_s: o.desaturation_for_s.unwrap_or(self.desaturation_for_s),
            bradycardia_below_bpm: o
                .bradycardia_below_bpm
                .unwrap_or(self.bradycardia_below_bpm),
            bradycardia_for_s: o.bradycardia_for_s.unwrap_or(self.bradycardia_for_s),
            tachycardia_above_bpm: o
                .tachycardia_above_bpm
                .unwrap_or(self.tachycardia_above_bpm),
            tachycardia_for_s: o.tachycardia_for_s.unwrap_or(self.tachycardia_for_s),
            sustained_min_samples: o
                .sustained_min_samples
                .unwrap_or(self.sustained_min_samples),
            fever_at_or_above_cel: o
                .fever_at_or_above_cel
                .unwrap_or(self.fever_at_or_above_cel),
            disabled: o.disabled.clone().unwrap_or_else(|| self.disabled.clone()),
        };
        t.validate()?;
        Ok(t)
    }

    /// Checks every value is a finite number inside the metric's possible range, that the
    /// levels are ordered, durations are at most a day, and disabled ids exist.
    pub fn validate(&self) -> Result<(), RulesError> {
        let k = known();
        let values = [
            (
                "hypoglycaemia_level1_below_mg_dl",
                self.hypoglycaemia_level1_below_mg_dl,
                k.glucose,
            ),
            (
                "hypoglycaemia_level2_below_mg_dl",
                self.hypoglycaemia_level2_below_mg_dl,
                k.glucose,
            ),
            (
                "hyperglycaemia_level1_above_mg_dl",
                self.hyperglycaemia_level1_above_mg_dl,
                k.glucose,
            ),
            (
                "hyperglycaemia_level2_above_mg_dl",
                self.hyperglycaemia_level2_above_mg_dl,
                k.glucose,
            ),
            (
                "crisis_systolic_above_mmhg",
                self.crisis_systolic_above_mmhg,
                k.systolic,
            ),
            (
                "crisis_diastolic_above_mmhg",
                self.crisis_diastolic_above_mmhg,
                k.diastolic,
            ),
            (
                "desaturation_at_or_below_pct",
                self.desaturation_at_or_below_pct,
                k.spo2,
            ),
            (
                "bradycardia_below_bpm",
                self.bradycardia_below_bpm,
                k.heart_rate,
            ),
            (
                "tachycardia_above_bpm",
                self.tachycardia_above_bpm,
                k.heart_rate,
            ),
            (
                "fever_at_or_above_cel",
                self.fever_at_or_above_cel,
                k.body_temp,
            ),
        ];
        for (field, value, metric) in values {
            if !metric.possible(value) {
                let [lo, hi] = metric.def().range;
                return Err(RulesError::OutOfRange {
                    field,
                    value,
                    lo,
                    hi,
                });
            }
        }
        let order = [
            (
                self.hypoglycaemia_level2_below_mg_dl < self.hypoglycaemia_level1_below_mg_dl,
                "hypoglycaemia level 2 must be below level 1",
            ),
            (
                self.hypoglycaemia_level1_below_mg_dl <= self.hyperglycaemia_level1_above_mg_dl,
                "hypoglycaemia level 1 must not be above hyperglycaemia level 1",
            ),
            (
                self.hyperglycaemia_level1_above_mg_dl < self.hyperglycaemia_level2_above_mg_dl,
                "hyperglycaemia level 1 must be below level 2",
            ),
            (
                self.bradycardia_below_bpm <= self.tachycardia_above_bpm,
                "bradycardia threshold must not be above tachycardia threshold",
            ),
        ];
        if let Some((_, why)) = order.iter().find(|(ok, _)| !ok) {
            return Err(RulesError::Inconsistent(why));
        }
        for (field, s) in [
            ("desaturation_for_s", self.desaturation_for_s),
            ("bradycardia_for_s", self.bradycardia_for_s),
            ("tachycardia_for_s", self.tachycardia_for_s),
        ] {
            if s > MAX_DURATION_S {
                return Err(RulesError::OutOfRange {
                    field,
                    value: f64::from(s),
                    lo: 0.0,
                    hi: f64::from(MAX_DURATION_S),
                });
            }
        }
        if !(2..=10_000).contains(&self.sustained_min_samples) {
            return Err(RulesError::OutOfRange {
                field: "sustained_min_samples",
                value: f64::from(self.sustained_min_samples),
                lo: 2.0,
                hi: 10_000.0,
            });
        }
        if let Some(id) = self
            .disabled
            .iter()
            .find(|id| !RULE_IDS.contains(&id.as_str()))
        {
            return Err(RulesError::UnknownRule(id.clone()));
        }
        Ok(())
    }

    /// The enabled rules with these values, in [`RULE_IDS`] order.
    pub fn rules(&self) -> Vec<Rule> {
        let k = known();
        let spot = |metric, test, decimals| Criterion {
            metric,
            test,
            decimals,
        };
        let sustained = |s: u32| {
            Some(Persistence {
                duration_ms: i64::from(s) * 1000,
                min_samples: usize::try_from(self.sustained_min_samples).unwrap_or(usize::MAX),
            })
        };
        let all = [
            Rule {
                id: HYPO_2,
                title: "Level 2 hypoglycaemia",
                severity: Severity::Critical,
                citation: ADA,
                criteria: vec![spot(
                    k.glucose,
                    Test::Below(self.hypoglycaemia_level2_below_mg_dl),
                    0,
                )],
                persistence: None,
            },
            Rule {
                id: HYPO_1,
                title: "Level 1 hypoglycaemia",
                severity: Severity::Warning,
                citation: ADA,
                criteria: vec![spot(
                    k.glucose,
                    Test::AtLeastAndBelow(
                        self.hypoglycaemia_level2_below_mg_dl,
                        self.hypoglycaemia_level1_below_mg_dl,
                    ),
                    0,
                )],
                persistence: None,
            },
            Rule {
                id: HYPER_1,
                title: "Level 1 hyperglycaemia",
                severity: Severity::Info,
                citation: ADA_HYPER,
                criteria: vec![spot(
                    k.glucose,
                    Test::AboveAndAtMost(
                        self.hyperglycaemia_level1_above_mg_dl,
                        self.hyperglycaemia_level2_above_mg_dl,
                    ),
                    0,
                )],
                persistence: None,
            },
            Rule {
                id: HYPER_2,
                title: "Level 2 hyperglycaemia",
                severity: Severity::Warning,
                citation: ADA_HYPER,
                criteria: vec![spot(
                    k.glucose,
                    Test::Above(self.hyperglycaemia_level2_above_mg_dl),
                    0,
                )],
                persistence: None,
            },
            Rule {
                id: CRISIS,
                title: "Hypertensive crisis",
                severity: Severity::Critical,
                citation: ACC_AHA,
                criteria: vec![
                    spot(k.systolic, Test::Above(self.crisis_systolic_above_mmhg), 0),
                    spot(
                        k.diastolic,
                        Test::Above(self.crisis_diastolic_above_mmhg),
                        0,
                    ),
                ],
                persistence: None,
            },
            Rule {
                id: DESAT,
                title: "Sustained SpO2 desaturation",
                severity: Severity::Critical,
                citation: NEWS2_SPO2,
                criteria: vec![spot(
                    k.spo2,
                    Test::AtOrBelow(self.desaturation_at_or_below_pct),
                    0,
                )],
                persistence: sustained(self.desaturation_for_s),
            },
            Rule {
                id: BRADY,
                title: "Sustained bradycardia",
                severity: Severity::Warning,
                citation: ACLS,
                criteria: vec![spot(
                    k.heart_rate,
                    Test::Below(self.bradycardia_below_bpm),
                    0,
                )],
                persistence: sustained(self.bradycardia_for_s),
            },
            Rule {
                id: TACHY,
                title: "Sustained tachycardia",
                severity: Severity::Warning,
                citation: TACHY_CITE,
                criteria: vec![spot(
                    k.heart_rate,
                    Test::Above(self.tachycardia_above_bpm),
                    0,
                )],
                persistence: sustained(self.tachycardia_for_s),
            },
            Rule {
                id: FEVER,
                title: "Fever",
                severity: Severity::Warning,
                citation: FEVER_CITE,
                criteria: vec![spot(
                    k.body_temp,
                    Test::AtOrAbove(self.fever_at_or_above_cel),
                    1,
                )],
                persistence: None,
            },
        ];
        all.into_iter()
            .filter(|r| !self.disabled.contains(r.id))
            .collect()
    }

    /// The longest persistence duration, in milliseconds.
    pub fn longest_duration_ms(&self) -> i64 {
        let s = self
            .desaturation_for_s
            .max(self.bradycardia_for_s)
            .max(self.tachycardia_for_s);
        i64::from(s) * 1000
    }
}

/// Evaluates every enabled rule over `window`, returning the findings in [`RULE_IDS`] order.
pub fn evaluate_all(thresholds: &Thresholds, window: &[Sample]) -> Vec<Finding> {
    thresholds
        .rules()
        .iter()
        .filter_map(|r| r.evaluate(window))
        .collect()
}

//! Personal baselines and the heart-failure weight-gain rule.
//!
//! # Baselines
//! Per patient and metric, the engine keeps hourly summaries (count, sum, sum of squares) of
//! trustworthy samples over the last [`BaselineSettings::days`] days. The baseline used at time
//! `t` is the mean and standard deviation pooled over the complete hours that ended before the
//! deviation window `(t - window_s, t]`, so a deviation never pulls its own baseline towards
//! itself. It is used only once it holds at least [`BaselineSettings::min_samples`] samples.
//!
//! A `baseline-deviation` finding (warning) is raised when the deviation is *sustained*: at
//! least [`BaselineSettings::min_window_samples`] samples in the window, the first of them at
//! least half the window before `t`, and every one of them more than `k` standard deviations
//! from the baseline mean on the same side. The standard deviation is floored at 1 % of the
//! mean's magnitude (and a tiny absolute floor) so a nearly constant history does not turn
//! every small change into a deviation. These are platform choices, not guideline figures.
//!
//! # Weight gain
//! `weight-gain` (warning): body weight (LOINC 29463-7, kg) more than 2 kg above the lowest
//! weight of the preceding 3 days. Source: common heart-failure self-care guidance (ESC Heart
//! Failure Association self-care recommendations; HFSA patient education): "contact your
//! team on a weight gain of more than 2 kg in 3 days". Exactly 2 kg does not trigger.

use crate::sample::known;
use crate::{Finding, RulesError, Sample, Severity};
use serde::{Deserialize, Serialize};
use vigil_model::{Metric, Timestamp};

/// Rule id of baseline deviations.
pub const BASELINE_RULE_ID: &str = "baseline-deviation";
/// Rule id of the heart-failure weight-gain rule.
pub const WEIGHT_GAIN_RULE_ID: &str = "weight-gain";
/// Weight gain (kg) that must be exceeded.
pub const WEIGHT_GAIN_KG: f64 = 2.0;
/// Over this many days.
pub const WEIGHT_GAIN_DAYS: i64 = 3;

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;

/// How baselines are built and judged.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BaselineSettings {
    /// Days of history in the baseline (1..=60). Default 7.
    pub days: u32,
    /// Samples the baseline needs before it is used (>= 2). Default 20.
    pub min_samples: u32,
    /// Standard deviations beyond which a sample deviates (> 0). Default 3.
    pub k: f64,
    /// The window over which a deviation must be sustained, seconds (60..=86400). Default 1800.
    pub window_s: u32,
    /// Samples the window needs (>= 1). Default 3.
    pub min_window_samples: u32,
}

impl Default for BaselineSettings {
    fn default() -> Self {
        Self {
            days: 7,
            min_samples: 20,
            k: 3.0,
            window_s: 1800,
            min_window_samples: 3,
        }
    }
}

impl BaselineSettings {
    /// Checks the ranges above.
    pub fn validate(&self) -> Result<(), RulesError> {
        let checks = [
            ("baseline.days", f64::from(self.days), 1.0, 60.0),
            (
                "baseline.min_samples",
                f64::from(self.min_samples),
                2.0,
                1e6,
            ),
            ("baseline.k", self.k, 0.5, 20.0),
            (
                "baseline.window_s",
                f64::from(self.window_s),
                60.0,
                86_400.0,
            ),
            (
                "baseline.min_window_samples",
                f64::from(self.min_window_samples),
                1.0,
                1e6,
            ),
        ];
        for (field, value, lo, hi) in checks {
            if !(lo..=hi).contains(&value) {
                return Err(RulesError::OutOfRange {
                    field,
                    value,
                    lo,
                    hi,
                });
            }
        }
        Ok(())
    }

    fn window_ms(&self) -> i64 {
        i64::from(self.window_s) * 1000
    }

    /// How long hourly summaries are kept.
    pub(crate) fn history_ms(&self) -> i64 {
        i64::from(self.days) * DAY_MS + self.window_ms() + HOUR_MS
    }
}

/// The metrics with a personal baseline: the vital signs and glucose.
pub fn baseline_metrics() -> [Metric; 7] {
    let k = known();
    [
        k.heart_rate,
        k.resp_rate,
        k.spo2,
        k.body_temp,
        k.systolic,
        k.diastolic,
        k.glucose,
    ]
}

/// The body weight metric (LOINC 29463-7).
pub fn weight_metric() -> Metric {
    known().body_weight
}

/// One hour of one metric's samples.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HourBin {
    /// Start of the hour (ms since the epoch, a multiple of 3 600 000).
    pub hour: i64,
    pub n: u64,
    pub sum: f64,
    pub sum_sq: f64,
}

/// Adds a usable sample to the hourly bins (kept in hour order).
pub(crate) fn add(bins: &mut Vec<HourBin>, s: &Sample) {
    let hour = s.time.0.div_euclid(HOUR_MS) * HOUR_MS;
    let at = bins.partition_point(|b| b.hour < hour);
    match bins.get_mut(at) {
        Some(b) if b.hour == hour => {
            b.n += 1;
            b.sum += s.value;
            b.sum_sq += s.value * s.value;
        }
        _ => bins.insert(
            at,
            HourBin {
                hour,
                n: 1,
                sum: s.value,
                sum_sq: s.value * s.value,
            },
        ),
    }
}

/// Drops bins older than the history before `newest`.
pub(crate) fn prune(bins: &mut Vec<HourBin>, newest: Timestamp, settings: &BaselineSettings) {
    let cutoff = newest.0.saturating_sub(settings.history_ms());
    bins.retain(|b| b.hour.saturating_add(HOUR_MS) > cutoff);
}

/// A baseline: pooled mean and standard deviation, and how many samples it rests on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Baseline {
    pub mean: f64,
    pub sd: f64,
    pub n: u64,
}

/// The baseline as of `at`: complete hours ending at or before the window's start and within
/// the history. `None` with too few samples.
pub fn baseline(bins: &[HourBin], at: Timestamp, settings: &BaselineSettings) -> Option<Baseline> {
    let end = at.0.saturating_sub(settings.window_ms());
    let start = end.saturating_sub(i64::from(settings.days) * DAY_MS);
    let (mut n, mut sum, mut sum_sq) = (0u64, 0.0, 0.0);
    for b in bins
        .iter()
        .filter(|b| b.hour >= start && b.hour.saturating_add(HOUR_MS) <= end)
    {
        n += b.n;
        sum += b.sum;
        sum_sq += b.sum_sq;
    }
    if n < u64::from(settings.min_samples.max(2)) {
        return None;
    }
    let nf = n as f64;
    let mean = sum / nf;
    let var = ((sum_sq - nf * mean * mean) / (nf - 1.0)).max(0.0);
    let sd = var.sqrt().max(mean.abs() * 0.01).max(1e-6);
    (mean.is_finite() && sd.is_finite()).then_some(Baseline { mean, sd, n })
}

/// The deviation finding for `metric` as of `at`, given its recent samples (oldest first) and
/// hourly bins.
pub(crate) fn deviation(
    metric: Metric,
    recent: &[Sample],
    bins: &[HourBin],
    at: Timestamp,
    settings: &BaselineSettings,
) -> Option<Finding> {
    let base = baseline(bins, at, settings)?;
    let from = at.0.saturating_sub(settings.window_ms());
    let window: Vec<&Sample> = recent
        .iter()
        .filter(|s| s.usable() && s.time.0 > from && s.time <= at)
        .collect();
    let first = window.first()?;
    if window.len() < settings.min_window_samples.max(1) as usize
        || first.time.0 > at.0.saturating_sub(settings.window_ms() / 2)
    {
        return None;
    }
    let z = |s: &Sample| (s.value - base.mean) / base.sd;
    let all_high = window.iter().all(|s| z(s) > settings.k);
    let all_low = window.iter().all(|s| z(s) < -settings.k);
    if !(all_high || all_low) {
        return None;
    }
    let last = window.last()?;
    let direction = if all_high { "above" } else { "below" };
    Some(Finding {
        rule_id: BASELINE_RULE_ID.to_owned(),
        severity: Severity::Warning,
        message: format!(
            "{} {direction} the personal baseline for {} min: latest {} (baseline {:.1} ± {:.1} \
             over {} samples, beyond {} SD)",
            metric.key(),
            settings.window_s / 60,
            last.value,
            base.mean,
            base.sd,
            base.n,
            settings.k
        ),
        time: at,
        metric: Some(metric),
        value: Some(last.value),
        news2: None,
    })
}

/// The weight-gain finding as of `at` from the weight samples (oldest first).
pub(crate) fn weight_gain(weights: &[Sample], at: Timestamp) -> Option<Finding> {
    let current = weights.iter().rev().find(|s| s.usable() && s.time <= at)?;
    let from = at.0.saturating_sub(WEIGHT_GAIN_DAYS * DAY_MS);
    let lowest = weights
        .iter()
        .filter(|s| s.usable() && s.time.0 >= from && s.time < current.time)
        .map(|s| s.value)
        .fold(f64::INFINITY, f64::min);
    if !lowest.is_finite() {
        return None;
    }
    let gain = current.value - lowest;
    // Compare at 0.01 kg so a gain written as exactly 2.00 kg is not above it.
    (crate::sample::scaled(gain, 2) > crate::sample::scaled(WEIGHT_GAIN_KG, 2)).then(|| Finding {
        rule_id: WEIGHT_GAIN_RULE_ID.to_owned(),
        severity: Severity::Warning,
        message: format!(
            "weight gain of {gain:.1} kg within {WEIGHT_GAIN_DAYS} days (more than \
             {WEIGHT_GAIN_KG} kg; heart-failure self-care guidance): {lowest} kg to {} kg",
            current.value
        ),
        time: at,
        metric: Some(current.metric),
        value: Some(current.value),
        news2: None,
    })
}

/// How long weight samples are kept for the weight-gain rule.
pub(crate) const WEIGHT_RETENTION_MS: i64 = WEIGHT_GAIN_DAYS * DAY_MS;

//! A small per-patient facade over [`news2`] and
//! [`thresholds`](crate::thresholds).
//!
//! The caller keeps one [`PatientState`] per patient (serializable, so the hub may persist it)
//! and one [`Engine`] per patient configuration, and hands each new reading to
//! [`Engine::on_reading`]. Rules are evaluated *as of the new reading's device time*, so a
//! reading that arrives late (after a gateway was offline) is judged against what was known
//! at its own time, not against newer samples.

use crate::baseline::{self, BaselineSettings, HourBin};
use crate::news2::{self, Acvpu, Assessments, Incomplete, News2, News2Settings, Observed, Risk};
use crate::thresholds::{Rule, ThresholdOverrides, Thresholds};
use crate::{Finding, RulesError, Sample, Severity};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use vigil_model::{Metric, Reading, Timestamp};

/// The rule id of NEWS2 findings.
pub const NEWS2_RULE_ID: &str = "news2";

/// What a clinician sets for one patient.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PatientConfig {
    pub news2: News2Settings,
    pub thresholds: ThresholdOverrides,
}

/// An observation recorded by a person rather than a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Assessment {
    Consciousness(Acvpu),
    /// `true` on supplemental oxygen, `false` on air.
    SupplementalOxygen(bool),
}

/// Recent usable samples of one patient, per metric in time order, and the latest
/// assessments. Pruned to the engine's retention window after each reading.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct PatientState {
    samples: BTreeMap<Metric, Vec<Sample>>,
    assessments: Assessments,
    /// Hourly summaries per metric for personal baselines.
    baselines: BTreeMap<Metric, Vec<HourBin>>,
}

impl PatientState {
    pub fn new() -> Self {
        Self::default()
    }

    /// The samples of `metric`, oldest first.
    pub fn samples(&self, metric: Metric) -> &[Sample] {
        self.samples.get(&metric).map_or(&[], Vec::as_slice)
    }

    /// Number of samples held.
    pub fn len(&self) -> usize {
        self.samples.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn assessments(&self) -> &Assessments {
        &self.assessments
    }

    /// The latest sample time held, if any.
    pub fn newest(&self) -> Option<Timestamp> {
        self.samples
            .values()
            .filter_map(|v| v.last().map(|s| s.time))
            .max()
    }

    fn insert(&mut self, s: Sample) {
        let v = self.samples.entry(s.metric).or_default();
        let at = v.partition_point(|x| x.time <= s.time);
        v.insert(at, s);
    }

    /// Samples of the given metrics with `time <= at`.
    fn until(&self, metrics: impl Iterator<Item = Metric>, at: Timestamp) -> Vec<Sample> {
        let mut out = Vec::new();
        for m in metrics {
            let v = self.samples(m);
            out.extend_from_slice(&v[..v.partition_point(|s| s.time <= at)]);
        }
        out
    }

    /// The hourly baseline summaries of `metric`, oldest first.
    pub fn baseline_bins(&self, metric: Metric) -> &[HourBin] {
        self.baselines.get(&metric).map_or(&[], Vec::as_slice)
    }

    fn prune(&mut self, retention_ms: i64, settings: &BaselineSettings) {
        let Some(newest) = self.newest() else { return };
        let weight = baseline::weight_metric();
        for (m, v) in self.samples.iter_mut() {
            let keep = if *m == weight {
                retention_ms.max(baseline::WEIGHT_RETENTION_MS)
            } else {
                retention_ms
            };
            let cutoff = newest.saturating_add_millis(-keep);
            v.retain(|s| s.time >= cutoff);
        }
        self.samples.retain(|_, v| !v.is_empty());
        for bins in self.baselines.values_mut() {
            baseline::prune(bins, newest, settings);
        }
        self.baselines.retain(|_, v| !v.is_empty());
    }
}

/// The rules of one patient: defaults merged with the clinician's overrides, validated once.
#[derive(Debug, Clone, PartialEq)]
pub struct Engine {
    news2: News2Settings,
    thresholds: Thresholds,
    rules: Vec<Rule>,
    baseline: BaselineSettings,
}

impl Default for Engine {
    /// Guideline defaults, SpO2 scale 1.
    fn default() -> Self {
        let thresholds = Thresholds::default();
        Self {
            news2: News2Settings::default(),
            rules: thresholds.rules(),
            thresholds,
            baseline: BaselineSettings::default(),
        }
    }
}

impl Engine {
    /// The rules for a patient: `defaults` (site-wide) with `config`'s overrides applied.
    pub fn new(defaults: &Thresholds, config: &PatientConfig) -> Result<Self, RulesError> {
        let thresholds = defaults.merged(&config.thresholds)?;
        Ok(Self {
            news2: config.news2,
            rules: thresholds.rules(),
            thresholds,
            baseline: BaselineSettings::default(),
        })
    }

    /// The same engine with other baseline settings, validated.
    pub fn with_baseline(self, baseline: BaselineSettings) -> Result<Self, RulesError> {
        baseline.validate()?;
        Ok(Self { baseline, ..self })
    }

    pub fn baseline_settings(&self) -> &BaselineSettings {
        &self.baseline
    }

    pub fn thresholds(&self) -> &Thresholds {
        &self.thresholds
    }

    pub fn news2_settings(&self) -> &News2Settings {
        &self.news2
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// How far back (from the newest sample) the state keeps samples: the longer of the
    /// NEWS2 window and the longest persistence duration.
    pub fn retention_ms(&self) -> i64 {
        (i64::from(self.news2.window_s) * 1000)
            .max(self.thresholds.longest_duration_ms())
            .max(i64::from(self.baseline.window_s) * 1000)
    }

    /// Adds a reading to the state and returns what it triggers: the threshold rules that use
    /// its metrics, and NEWS2 when the reading feeds it and the complete score warrants an
    /// alert (a red score, medium or high). A reading with no usable sample (untrustworthy,
    /// data-absent, not finite) is not stored and triggers nothing.
    pub fn on_reading(&self, state: &mut PatientState, reading: &Reading) -> Vec<Finding> {
        let new: Vec<Sample> = Sample::from_reading(reading)
            .into_iter()
            .filter(Sample::usable)
            .collect();
        if new.is_empty() {
            return Vec::new();
        }
        let tracked = baseline::baseline_metrics();
        for s in &new {
            state.insert(*s);
            if tracked.contains(&s.metric) {
                baseline::add(state.baselines.entry(s.metric).or_default(), s);
            }
        }
        let at = reading.time;
        let touched = |m: Metric| new.iter().any(|s| s.metric == m);
        let mut findings: Vec<Finding> = self
            .rules
            .iter()
            .filter(|r| r.criteria.iter().any(|c| touched(c.metric)))
            .filter_map(|r| {
                let window = state.until(r.criteria.iter().map(|c| c.metric), at);
                r.evaluate(&window)
            })
            .collect();
        if news2::input_metrics().into_iter().any(touched) {
            findings.extend(self.news2_finding(state, at));
        }
        let mut deviations = tracked.into_iter().filter(|m| touched(*m)).filter_map(|m| {
            baseline::deviation(
                m,
                state.samples(m),
                state.baseline_bins(m),
                at,
                &self.baseline,
            )
        });
        // One baseline finding per reading (one alert per patient and rule).
        findings.extend(deviations.next());
        let weight = baseline::weight_metric();
        if touched(weight) {
            findings.extend(baseline::weight_gain(state.samples(weight), at));
        }
        state.prune(self.retention_ms(), &self.baseline);
        findings
    }

    /// Records a person's assessment (ACVPU, air or oxygen) and returns the NEWS2 finding it
    /// completes or changes, if that warrants an alert.
    pub fn on_assessment(
        &self,
        state: &mut PatientState,
        assessment: Assessment,
        time: Timestamp,
    ) -> Vec<Finding> {
        let a = &mut state.assessments;
        match assessment {
            Assessment::Consciousness(value) => {
                if a.consciousness.is_none_or(|o| o.time <= time) {
                    a.consciousness = Some(Observed { value, time });
                }
            }
            Assessment::SupplementalOxygen(value) => {
                if a.supplemental_oxygen.is_none_or(|o| o.time <= time) {
                    a.supplemental_oxygen = Some(Observed { value, time });
                }
            }
        }
        self.news2_finding(state, time).into_iter().collect()
    }

    /// The NEWS2 score as of `at` from the state (for a dashboard), or what is missing.
    pub fn news2(&self, state: &PatientState, at: Timestamp) -> Result<News2, Incomplete> {
        let inputs = news2::inputs_with(
            |m, from, at| news2::latest_usable(state.samples(m).iter(), m, from, at),
            at,
            &self.news2,
            &state.assessments,
        );
        news2::score(&inputs)
    }

    fn news2_finding(&self, state: &PatientState, at: Timestamp) -> Option<Finding> {
        let n = self.news2(state, at).ok().filter(News2::warrants_alert)?;
        let severity = match n.risk {
            Risk::High => Severity::Critical,
            _ => Severity::Warning,
        };
        let red: Vec<String> = n
            .parameters()
            .iter()
            .filter(|(_, s)| *s >= 3)
            .map(|(p, _)| p.to_string())
            .collect();
        let red = if red.is_empty() {
            String::new()
        } else {
            format!("; red score: {}", red.join(", "))
        };
        Some(Finding {
            rule_id: NEWS2_RULE_ID.to_owned(),
            severity,
            message: format!(
                "NEWS2 {} ({} risk{red}). {} Monitoring: {}.",
                n.total, n.risk, n.response, n.monitoring
            ),
            time: at,
            metric: None,
            value: Some(f64::from(n.total)),
            news2: Some(n),
        })
    }
}

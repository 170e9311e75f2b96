//! Personal baselines (`baseline-deviation`) and the heart-failure `weight-gain` rule, with
//! synthetic series on both sides of each limit.

use vigil_model::{DeviceId, Flags, Metric, Reading, Timestamp};
use vigil_rules::baseline::{BASELINE_RULE_ID, WEIGHT_GAIN_RULE_ID};
use vigil_rules::{BaselineSettings, Engine, Finding, PatientState, RulesError, Severity};

const T0: i64 = 1_700_000_000_000;
const HR: &str = "8867-4";
const WEIGHT: &str = "29463-7";
const MIN: i64 = 60;
const DAY: i64 = 86_400;

fn m(code: &str) -> Metric {
    code.parse().expect("registry code")
}

fn r(code: &str, v: f64, secs: i64) -> Reading {
    Reading::quantity(
        DeviceId::new("dev-1").expect("id"),
        m(code),
        v,
        Timestamp(T0 + secs * 1000),
    )
}

/// Two days of heart rate alternating 60 and 70 every 10 minutes (mean 65, SD about 5),
/// ending at the returned time.
fn history(engine: &Engine, state: &mut PatientState) -> i64 {
    let mut t = 0;
    for i in 0..288 {
        t = i * 10 * MIN;
        let v = if i % 2 == 0 { 60.0 } else { 70.0 };
        let f = engine.on_reading(state, &r(HR, v, t));
        assert!(f.iter().all(|f| f.rule_id != BASELINE_RULE_ID), "{f:?}");
    }
    t
}

/// Feeds `v` every 5 minutes for an hour after `h`; returns the baseline findings.
fn feed(engine: &Engine, state: &mut PatientState, h: i64, v: f64) -> Vec<(i64, Finding)> {
    let mut out = Vec::new();
    for i in 1..=12 {
        let t = h + i * 5 * MIN;
        for f in engine.on_reading(state, &r(HR, v, t)) {
            if f.rule_id == BASELINE_RULE_ID {
                out.push((t - h, f));
            }
        }
    }
    out
}

#[test]
fn a_deviation_alerts_only_once_every_sample_of_the_last_30_minutes_is_beyond_3_sd() {
    let engine = Engine::default();
    let mut state = PatientState::new();
    let h = history(&engine, &mut state);
    let found = feed(&engine, &mut state, h, 81.0);
    // Not while a normal sample is in the window; first at 30 minutes.
    let (first, f) = found.first().expect("sustained deviation");
    assert_eq!(*first, 30 * MIN);
    assert_eq!(f.severity, Severity::Warning);
    assert_eq!(f.metric, Some(m(HR)));
    assert_eq!(f.value, Some(81.0));
    assert!(f.message.contains("above"), "{}", f.message);
}

#[test]
fn a_value_inside_3_sd_never_alerts() {
    let engine = Engine::default();
    let mut state = PatientState::new();
    let h = history(&engine, &mut state);
    // 79 is about 2.8 SD above 65; 81 (above) is about 3.2.
    assert!(feed(&engine, &mut state, h, 79.0).is_empty());
}

#[test]
fn a_low_deviation_alerts_and_one_normal_sample_in_the_window_prevents_it() {
    let engine = Engine::default();
    let mut state = PatientState::new();
    let h = history(&engine, &mut state);
    let mut found = Vec::new();
    for i in 1..=6 {
        let v = if i == 4 { 64.0 } else { 45.0 };
        found.extend(
            engine
                .on_reading(&mut state, &r(HR, v, h + i * 5 * MIN))
                .into_iter()
                .filter(|f| f.rule_id == BASELINE_RULE_ID),
        );
    }
    assert!(found.is_empty(), "{found:?}");
    let low = feed(&engine, &mut state, h + 30 * MIN, 45.0);
    assert!(
        low.first()
            .is_some_and(|(_, f)| f.message.contains("below"))
    );
}

#[test]
fn no_baseline_is_used_before_it_has_enough_samples() {
    let engine = Engine::default();
    let mut state = PatientState::new();
    // 19 samples over about 3 hours (the default needs 20).
    for i in 0..19 {
        engine.on_reading(&mut state, &r(HR, 60.0 + (i % 2) as f64, i * 10 * MIN));
    }
    assert!(feed(&engine, &mut state, 6 * 3600, 150.0).is_empty());
    // Untrustworthy samples neither build a baseline nor deviate.
    let mut state = PatientState::new();
    for i in 0..300 {
        let mut reading = r(HR, 60.0, i * 10 * MIN);
        reading.flags = Flags::QUESTIONABLE;
        engine.on_reading(&mut state, &reading);
    }
    assert!(state.baseline_bins(m(HR)).is_empty());
}

#[test]
fn baseline_settings_are_validated() {
    let bad = BaselineSettings {
        k: 0.0,
        ..BaselineSettings::default()
    };
    assert!(matches!(
        Engine::default().with_baseline(bad),
        Err(RulesError::OutOfRange {
            field: "baseline.k",
            ..
        })
    ));
    let ok = BaselineSettings {
        min_samples: 5,
        ..BaselineSettings::default()
    };
    assert!(Engine::default().with_baseline(ok).is_ok());
}

fn weights(series: &[(i64, f64)]) -> Vec<Finding> {
    let engine = Engine::default();
    let mut state = PatientState::new();
    let mut out = Vec::new();
    for (secs, kg) in series {
        out.extend(
            engine
                .on_reading(&mut state, &r(WEIGHT, *kg, *secs))
                .into_iter()
                .filter(|f| f.rule_id == WEIGHT_GAIN_RULE_ID),
        );
    }
    out
}

#[test]
fn a_gain_of_more_than_2_kg_in_3_days_alerts() {
    let f = weights(&[(0, 80.0), (DAY, 80.6), (2 * DAY, 81.4), (3 * DAY, 82.1)]);
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0].severity, Severity::Warning);
    assert_eq!(f[0].value, Some(82.1));
    assert!(f[0].message.contains("2.1 kg"), "{}", f[0].message);
}

#[test]
fn exactly_2_kg_or_a_gain_spread_over_more_than_3_days_does_not_alert() {
    assert!(weights(&[(0, 80.0), (DAY, 81.0), (3 * DAY, 82.0)]).is_empty());
    // 2.5 kg over 4 days: the lowest weight of the last 3 days is 81.
    assert!(weights(&[(0, 80.0), (DAY + 1, 81.0), (4 * DAY, 82.5)]).is_empty());
    // A drop and a regain within 3 days counts from the lowest point.
    assert_eq!(weights(&[(0, 80.0), (DAY, 79.0), (2 * DAY, 81.5)]).len(), 1);
}

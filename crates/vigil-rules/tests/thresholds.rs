//! Threshold rules against the published numbers, on both sides of every threshold.

use vigil_model::{Flags, Metric, Timestamp};
use vigil_rules::thresholds::{RULE_IDS, evaluate_all};
use vigil_rules::{Finding, RulesError, Sample, Severity, ThresholdOverrides, Thresholds};

const T0: i64 = 1_700_000_000_000;

fn m(code: &str) -> Metric {
    code.parse().expect("registry code")
}

fn at(s: i64) -> Timestamp {
    Timestamp(T0 + s * 1000)
}

fn s(code: &str, v: f64, secs: i64) -> Sample {
    Sample::new(m(code), v, at(secs))
}

fn ids(findings: &[Finding]) -> Vec<&str> {
    findings.iter().map(|f| f.rule_id.as_str()).collect()
}

fn spot(code: &str, v: f64) -> Vec<String> {
    evaluate_all(&Thresholds::default(), &[s(code, v, 0)])
        .into_iter()
        .map(|f| f.rule_id)
        .collect()
}

#[test]
fn glucose_levels_follow_ada_on_both_sides_of_each_threshold() {
    let g = "2339-0";
    assert_eq!(spot(g, 53.0), ["hypoglycaemia-level-2"]);
    assert_eq!(spot(g, 54.0), ["hypoglycaemia-level-1"]);
    assert_eq!(spot(g, 69.0), ["hypoglycaemia-level-1"]);
    assert!(spot(g, 70.0).is_empty());
    assert!(spot(g, 120.0).is_empty());
    assert!(spot(g, 180.0).is_empty());
    assert_eq!(spot(g, 181.0), ["hyperglycaemia-level-1"]);
    assert_eq!(spot(g, 250.0), ["hyperglycaemia-level-1"]);
    assert_eq!(spot(g, 251.0), ["hyperglycaemia-level-2"]);
}

#[test]
fn glucose_aliases_and_mmol_conversions_reach_the_same_rules() {
    // 41653-7 (capillary, by glucometer) is an alias of the canonical glucose metric.
    assert_eq!(spot("41653-7", 53.0), ["hypoglycaemia-level-2"]);
    let mmol = |v: f64| m("2339-0").to_canonical(v, "mmol/L").expect("mmol/L");
    assert_eq!(spot("2339-0", mmol(2.9)), ["hypoglycaemia-level-2"]);
    assert_eq!(spot("2339-0", mmol(3.8)), ["hypoglycaemia-level-1"]);
    assert!(spot("2339-0", mmol(3.9)).is_empty());
}

#[test]
fn glucose_severities_escalate_with_level() {
    let sev = |v: f64| evaluate_all(&Thresholds::default(), &[s("2339-0", v, 0)])[0].severity;
    assert_eq!(sev(50.0), Severity::Critical);
    assert_eq!(sev(60.0), Severity::Warning);
    assert_eq!(sev(200.0), Severity::Info);
    assert_eq!(sev(300.0), Severity::Warning);
}

#[test]
fn hypertensive_crisis_is_systolic_above_180_or_diastolic_above_120() {
    let bp = |sys: f64, dia: f64| {
        ids(&evaluate_all(
            &Thresholds::default(),
            &[s("8480-6", sys, 0), s("8462-4", dia, 0)],
        ))
        .join(",")
    };
    assert_eq!(bp(180.0, 120.0), "");
    assert_eq!(bp(181.0, 80.0), "hypertensive-crisis");
    assert_eq!(bp(130.0, 121.0), "hypertensive-crisis");
    assert_eq!(bp(200.0, 130.0), "hypertensive-crisis");
    let f = evaluate_all(
        &Thresholds::default(),
        &[s("8480-6", 200.0, 0), s("8462-4", 130.0, 0)],
    );
    assert_eq!(f[0].severity, Severity::Critical);
    assert!(f[0].message.contains("systolic") && f[0].message.contains("diastolic"));
}

#[test]
fn only_the_latest_blood_pressure_measurement_counts() {
    let f = evaluate_all(
        &Thresholds::default(),
        &[s("8480-6", 200.0, 0), s("8480-6", 140.0, 60)],
    );
    assert!(f.is_empty(), "{f:?}");
}

#[test]
fn fever_starts_at_38_0_compared_at_one_decimal() {
    let t = "8310-5";
    assert!(spot(t, 37.9).is_empty());
    assert!(spot(t, 37.94).is_empty());
    assert_eq!(spot(t, 37.95), ["fever"]);
    assert_eq!(spot(t, 38.0), ["fever"]);
    assert_eq!(spot(t, 40.0), ["fever"]);
    let rule = Thresholds::default()
        .rules()
        .into_iter()
        .find(|r| r.id == "fever")
        .expect("fever rule");
    assert!(rule.citation.contains("UNVERIFIED"));
}

fn series(code: &str, points: &[(i64, f64)]) -> Vec<Sample> {
    points.iter().map(|&(t, v)| s(code, v, t)).collect()
}

#[test]
fn desaturation_needs_60_s_of_samples_at_or_below_91() {
    let spo2 = "59408-5";
    let d = Thresholds::default();
    let low = series(spo2, &[(0, 91.0), (30, 90.0), (60, 89.0)]);
    let f = evaluate_all(&d, &low);
    assert_eq!(ids(&f), ["spo2-desaturation"]);
    assert_eq!(f[0].time, at(60));
    assert_eq!(f[0].severity, Severity::Critical);

    let at_92 = series(spo2, &[(0, 92.0), (30, 92.0), (60, 92.0)]);
    assert!(evaluate_all(&d, &at_92).is_empty());

    let too_short = series(spo2, &[(0, 95.0), (10, 90.0), (59, 90.0)]);
    assert!(evaluate_all(&d, &too_short).is_empty());

    let interrupted = series(spo2, &[(0, 90.0), (30, 94.0), (60, 90.0)]);
    assert!(evaluate_all(&d, &interrupted).is_empty());

    let recovered = series(spo2, &[(0, 90.0), (30, 90.0), (60, 90.0), (61, 96.0)]);
    assert!(evaluate_all(&d, &recovered).is_empty());
}

#[test]
fn a_single_low_sample_is_never_sustained() {
    let d = Thresholds::default();
    assert!(evaluate_all(&d, &[s("59408-5", 80.0, 0)]).is_empty());
    assert!(evaluate_all(&d, &[s("8867-4", 30.0, 0)]).is_empty());
}

#[test]
fn two_spot_checks_far_apart_are_not_a_sustained_desaturation() {
    let f = evaluate_all(
        &Thresholds::default(),
        &series("59408-5", &[(0, 88.0), (3600, 88.0)]),
    );
    assert!(f.is_empty(), "{f:?}");
}

#[test]
fn untrustworthy_samples_neither_trigger_nor_interrupt_a_sustained_rule() {
    let d = Thresholds::default();
    let spo2 = m("59408-5");
    let bad = |v: f64, t: i64| {
        Sample::new(spo2, v, at(t)).with_flags(Flags::MOTION_ARTIFACT | Flags::QUESTIONABLE)
    };
    let only_bad = [bad(80.0, 0), bad(80.0, 30), bad(80.0, 60)];
    assert!(evaluate_all(&d, &only_bad).is_empty());

    let mut with_glitch = series("59408-5", &[(0, 90.0), (30, 90.0), (60, 90.0)]);
    with_glitch.insert(1, bad(99.0, 15));
    with_glitch.push(bad(99.0, 61));
    assert_eq!(ids(&evaluate_all(&d, &with_glitch)), ["spo2-desaturation"]);

    let invalid_flag = Sample::new(spo2, 80.0, at(90)).with_flags(Flags::INVALID);
    let mut v = series("59408-5", &[(0, 95.0), (30, 95.0)]);
    v.push(invalid_flag);
    assert!(evaluate_all(&d, &v).is_empty());
}

#[test]
fn samples_may_arrive_in_any_order() {
    let d = Thresholds::default();
    let v = series("59408-5", &[(60, 90.0), (0, 90.0), (30, 90.0)]);
    let f = evaluate_all(&d, &v);
    assert_eq!(ids(&f), ["spo2-desaturation"]);
    assert_eq!(f[0].time, at(60));
}

#[test]
fn bradycardia_is_below_50_sustained() {
    let d = Thresholds::default();
    let hr = "8867-4";
    let f = evaluate_all(&d, &series(hr, &[(0, 49.0), (30, 45.0), (60, 49.0)]));
    assert_eq!(ids(&f), ["bradycardia"]);
    assert!(evaluate_all(&d, &series(hr, &[(0, 50.0), (30, 50.0), (60, 50.0)])).is_empty());
}

#[test]
fn tachycardia_is_above_100_sustained_for_300_s() {
    let d = Thresholds::default();
    let hr = "8867-4";
    let run = |v: f64, until: i64| {
        let pts: Vec<(i64, f64)> = (0..=until / 60).map(|i| (i * 60, v)).collect();
        evaluate_all(&d, &series(hr, &pts))
    };
    assert_eq!(ids(&run(101.0, 300)), ["tachycardia"]);
    assert!(run(100.0, 300).is_empty());
    assert!(run(101.0, 240).is_empty());
}

#[test]
fn overrides_replace_only_the_fields_they_give() {
    let o: ThresholdOverrides = serde_json::from_str(
        r#"{"fever_at_or_above_cel": 38.3, "desaturation_at_or_below_pct": 87, "desaturation_for_s": 120}"#,
    )
    .expect("overrides json");
    let t = Thresholds::default().merged(&o).expect("valid");
    assert_eq!(t.fever_at_or_above_cel, 38.3);
    assert_eq!(t.hypoglycaemia_level1_below_mg_dl, 70.0);
    assert!(evaluate_all(&t, &[s("8310-5", 38.2, 0)]).is_empty());
    assert_eq!(ids(&evaluate_all(&t, &[s("8310-5", 38.3, 0)])), ["fever"]);
    let sixty = series("59408-5", &[(0, 87.0), (30, 87.0), (60, 87.0)]);
    assert!(evaluate_all(&t, &sixty).is_empty(), "needs 120 s now");
    let long = series("59408-5", &[(0, 87.0), (60, 87.0), (120, 87.0)]);
    assert_eq!(ids(&evaluate_all(&t, &long)), ["spo2-desaturation"]);
    let at_88 = series("59408-5", &[(0, 88.0), (60, 88.0), (120, 88.0)]);
    assert!(evaluate_all(&t, &at_88).is_empty());
}

#[test]
fn a_clinician_can_disable_a_rule_by_id() {
    let o = ThresholdOverrides {
        disabled: Some(["fever".to_owned()].into()),
        ..Default::default()
    };
    let t = Thresholds::default().merged(&o).expect("valid");
    assert!(evaluate_all(&t, &[s("8310-5", 39.0, 0)]).is_empty());
    assert_eq!(t.rules().len(), RULE_IDS.len() - 1);
}

#[test]
fn invalid_overrides_are_rejected_with_the_reason() {
    let bad = |o: ThresholdOverrides| Thresholds::default().merged(&o).expect_err("invalid");
    assert!(matches!(
        bad(ThresholdOverrides {
            fever_at_or_above_cel: Some(f64::NAN),
            ..Default::default()
        }),
        RulesError::OutOfRange {
            field: "fever_at_or_above_cel",
            ..
        }
    ));
    assert!(matches!(
        bad(ThresholdOverrides {
            hypoglycaemia_level2_below_mg_dl: Some(80.0),
            ..Default::default()
        }),
        RulesError::Inconsistent(_)
    ));
    assert!(matches!(
        bad(ThresholdOverrides {
            sustained_min_samples: Some(1),
            ..Default::default()
        }),
        RulesError::OutOfRange {
            field: "sustained_min_samples",
            ..
        }
    ));
    assert!(matches!(
        bad(ThresholdOverrides {
            disabled: Some(["feverish".to_owned()].into()),
            ..Default::default()
        }),
        RulesError::UnknownRule(_)
    ));
    assert!(
        serde_json::from_str::<ThresholdOverrides>(r#"{"fever_above": 38.5}"#).is_err(),
        "a misspelt field must not be silently ignored"
    );
}

#[test]
fn every_rule_names_its_guideline_and_the_defaults_are_valid() {
    let d = Thresholds::default();
    d.validate().expect("defaults are valid");
    let rules = d.rules();
    let got: Vec<&str> = rules.iter().map(|r| r.id).collect();
    assert_eq!(got, RULE_IDS);
    for r in &rules {
        assert!(!r.citation.is_empty(), "{}", r.id);
        assert!(!r.criteria.is_empty(), "{}", r.id);
    }
    let cite = |id: &str| {
        rules
            .iter()
            .find(|r| r.id == id)
            .map(|r| r.citation)
            .unwrap_or_default()
    };
    assert!(cite("hypoglycaemia-level-1").contains("ADA"));
    assert!(cite("hypertensive-crisis").contains("ACC/AHA"));
    assert!(cite("bradycardia").contains("ACLS"));
    assert!(cite("spo2-desaturation").contains("NEWS2"));
}

#[test]
fn nothing_is_found_in_an_empty_or_unusable_window() {
    let d = Thresholds::default();
    assert!(evaluate_all(&d, &[]).is_empty());
    assert!(
        evaluate_all(
            &d,
            &[s("2339-0", f64::NAN, 0), s("8310-5", f64::INFINITY, 0)]
        )
        .is_empty()
    );
}

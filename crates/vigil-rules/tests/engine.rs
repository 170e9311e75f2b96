//! The engine facade: state, pruning, NEWS2 alerts and threshold findings per reading.

use vigil_model::{Component, DeviceId, Flags, Metric, Reading, Timestamp};
use vigil_rules::engine::NEWS2_RULE_ID;
use vigil_rules::{
    Acvpu, Assessment, Engine, PatientConfig, PatientState, Risk, Severity, Spo2Scale, Thresholds,
};

const T0: i64 = 1_700_000_000_000;

fn m(code: &str) -> Metric {
    code.parse().expect("registry code")
}

fn at(s: i64) -> Timestamp {
    Timestamp(T0 + s * 1000)
}

fn r(code: &str, v: f64, secs: i64) -> Reading {
    Reading::quantity(DeviceId::new("dev-1").expect("id"), m(code), v, at(secs))
}

fn bp(sys: f64, dia: f64, secs: i64) -> Reading {
    Reading::panel(
        DeviceId::new("cuff-1").expect("id"),
        m("85354-9"),
        vec![
            Component {
                metric: m("8480-6"),
                value: sys,
            },
            Component {
                metric: m("8462-4"),
                value: dia,
            },
        ],
        at(secs),
    )
}

/// A complete, normal NEWS2 set at time 0 (ACVPU alert, on air).
fn normal_state(engine: &Engine) -> PatientState {
    let mut st = PatientState::new();
    engine.on_assessment(&mut st, Assessment::Consciousness(Acvpu::Alert), at(0));
    engine.on_assessment(&mut st, Assessment::SupplementalOxygen(false), at(0));
    for reading in [
        r("9279-1", 16.0, 0),
        r("59408-5", 97.0, 0),
        r("8867-4", 70.0, 0),
        r("8310-5", 37.0, 0),
        bp(120.0, 80.0, 0),
    ] {
        assert!(engine.on_reading(&mut st, &reading).is_empty());
    }
    st
}

#[test]
fn a_normal_complete_set_produces_no_findings_but_a_score() {
    let e = Engine::default();
    let st = normal_state(&e);
    let n = e.news2(&st, at(0)).expect("complete");
    assert_eq!((n.total, n.risk), (0, Risk::Low));
}

#[test]
fn a_single_red_score_raises_a_news2_warning() {
    let e = Engine::default();
    let mut st = normal_state(&e);
    let f = e.on_reading(&mut st, &r("9279-1", 26.0, 10));
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0].rule_id, NEWS2_RULE_ID);
    assert_eq!(f[0].severity, Severity::Warning);
    assert_eq!(f[0].time, at(10));
    let n = f[0].news2.as_ref().expect("score attached");
    assert_eq!((n.total, n.risk), (3, Risk::LowMedium));
    assert!(f[0].message.contains("red score: respiration rate"));
}

#[test]
fn a_low_score_without_a_red_parameter_raises_nothing() {
    let e = Engine::default();
    let mut st = normal_state(&e);
    assert!(e.on_reading(&mut st, &r("9279-1", 22.0, 10)).is_empty());
    assert_eq!(e.news2(&st, at(10)).expect("complete").total, 2);
}

#[test]
fn a_high_score_raises_a_critical_news2_finding() {
    let e = Engine::default();
    let mut st = normal_state(&e);
    e.on_reading(&mut st, &r("9279-1", 26.0, 10));
    e.on_reading(&mut st, &r("8867-4", 135.0, 20));
    let f = e.on_reading(&mut st, &bp(85.0, 50.0, 30));
    let news = f
        .iter()
        .find(|f| f.rule_id == NEWS2_RULE_ID)
        .expect("news2");
    assert_eq!(news.severity, Severity::Critical);
    assert_eq!(news.news2.as_ref().map(|n| n.risk), Some(Risk::High));
}

#[test]
fn an_incomplete_set_never_raises_a_news2_finding_but_thresholds_still_fire() {
    let e = Engine::default();
    let mut st = PatientState::new();
    let f = e.on_reading(&mut st, &r("9279-1", 40.0, 0));
    assert!(f.is_empty());
    let f = e.on_reading(&mut st, &r("8310-5", 39.5, 5));
    assert_eq!(
        f.iter().map(|f| f.rule_id.as_str()).collect::<Vec<_>>(),
        ["fever"]
    );
    let missing = e.news2(&st, at(5)).expect_err("incomplete").missing;
    assert_eq!(missing.len(), 5);
}

#[test]
fn a_reading_that_completes_the_set_via_assessment_raises_news2() {
    let e = Engine::default();
    let mut st = PatientState::new();
    for reading in [
        r("9279-1", 16.0, 0),
        r("59408-5", 97.0, 0),
        r("8867-4", 70.0, 0),
        r("8310-5", 37.0, 0),
        bp(120.0, 80.0, 0),
        r("3151-8", 0.0, 0),
    ] {
        assert!(e.on_reading(&mut st, &reading).is_empty());
    }
    let f = e.on_assessment(&mut st, Assessment::Consciousness(Acvpu::Voice), at(5));
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].news2.as_ref().map(|n| n.consciousness), Some(3));
}

#[test]
fn untrustworthy_readings_are_not_stored_and_raise_nothing() {
    let e = Engine::default();
    let mut st = normal_state(&e);
    let before = st.clone();
    let mut bad = r("2339-0", 30.0, 10);
    bad.flags = Flags::QUESTIONABLE;
    assert!(e.on_reading(&mut st, &bad).is_empty());
    let mut bad_rr = r("9279-1", 40.0, 10);
    bad_rr.flags = Flags::CALIBRATING;
    assert!(e.on_reading(&mut st, &bad_rr).is_empty());
    assert_eq!(st, before);
}

#[test]
fn only_rules_that_use_the_new_reading_are_evaluated() {
    let e = Engine::default();
    let mut st = PatientState::new();
    assert_eq!(e.on_reading(&mut st, &r("8310-5", 39.0, 0)).len(), 1);
    assert!(
        e.on_reading(&mut st, &r("2339-0", 100.0, 10)).is_empty(),
        "fever is not repeated"
    );
}

#[test]
fn a_sustained_desaturation_fires_once_the_duration_is_covered() {
    let e = Engine::default();
    let mut st = PatientState::new();
    let mut fired = Vec::new();
    for t in (0..=90).step_by(15) {
        let f = e.on_reading(&mut st, &r("59408-5", 89.0, t));
        if f.iter().any(|f| f.rule_id == "spo2-desaturation") {
            fired.push(t);
        }
    }
    assert_eq!(fired, [60, 75, 90]);
}

#[test]
fn a_late_reading_is_judged_at_its_own_time() {
    let e = Engine::default();
    let mut st = PatientState::new();
    e.on_reading(&mut st, &r("2339-0", 110.0, 600));
    let f = e.on_reading(&mut st, &r("2339-0", 50.0, 300));
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].rule_id, "hypoglycaemia-level-2");
    assert_eq!(f[0].time, at(300));
    assert_eq!(st.samples(m("2339-0")).len(), 2);
    assert_eq!(
        st.samples(m("2339-0"))[1].time,
        at(600),
        "kept in time order"
    );
}

#[test]
fn state_is_pruned_to_the_retention_window() {
    let e = Engine::default();
    assert_eq!(e.retention_ms(), 3_600_000);
    let mut st = PatientState::new();
    e.on_reading(&mut st, &r("8867-4", 70.0, 0));
    e.on_reading(&mut st, &r("8867-4", 71.0, 3600));
    assert_eq!(st.len(), 2);
    e.on_reading(&mut st, &r("59408-5", 97.0, 3601));
    assert_eq!(st.samples(m("8867-4")).len(), 1);
    assert_eq!(st.newest(), Some(at(3601)));
}

#[test]
fn state_round_trips_through_json() {
    let e = Engine::default();
    let st = normal_state(&e);
    let json = serde_json::to_string(&st).expect("json");
    assert!(json.contains("\"59408-5\""));
    let back: PatientState = serde_json::from_str(&json).expect("back");
    assert_eq!(back, st);
}

#[test]
fn patient_config_applies_scale_2_and_threshold_overrides() {
    let config: PatientConfig = serde_json::from_str(
        r#"{"news2": {"scale": 2}, "thresholds": {"desaturation_at_or_below_pct": 85}}"#,
    )
    .expect("config json");
    let e = Engine::new(&Thresholds::default(), &config).expect("valid config");
    assert_eq!(e.news2_settings().scale, Spo2Scale::Scale2);
    let mut st = normal_state(&e);
    let mut all = Vec::new();
    for t in [10, 40, 70] {
        all.extend(e.on_reading(&mut st, &r("59408-5", 89.0, t)));
    }
    assert!(all.is_empty(), "89 % is in range on scale 2: {all:?}");
    assert_eq!(e.news2(&st, at(70)).expect("complete").spo2, 0);
}

#[test]
fn an_invalid_patient_config_is_refused_up_front() {
    let config = PatientConfig {
        thresholds: vigil_rules::ThresholdOverrides {
            hyperglycaemia_level2_above_mg_dl: Some(150.0),
            ..Default::default()
        },
        ..Default::default()
    };
    assert!(Engine::new(&Thresholds::default(), &config).is_err());
}

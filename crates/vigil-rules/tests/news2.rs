//! NEWS2 against the shared vectors and every band edge of the RCP 2017 Chart 1.

use proptest::prelude::*;
use vigil_model::{Component, DeviceId, Flags, Metric, Reading, Timestamp};
use vigil_rules::news2::{inputs_from_readings, inputs_from_samples};
use vigil_rules::{
    Acvpu, Assessments, Inputs, Monitoring, News2Settings, Observed, Parameter, Risk, Sample,
    Spo2Scale, score,
};

const VECTORS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/vectors/news2.json"
);

/// All parameters scoring 0 on scale 1, on air.
fn normal() -> Inputs {
    Inputs {
        respiration_rate: Some(16.0),
        spo2: Some(97.0),
        scale: Spo2Scale::Scale1,
        supplemental_oxygen: Some(false),
        systolic_bp: Some(120.0),
        pulse: Some(70.0),
        consciousness: Some(Acvpu::Alert),
        temperature: Some(37.0),
    }
}

fn m(code: &str) -> Metric {
    code.parse().expect("registry code")
}

#[test]
fn every_shared_vector_scores_its_published_total_and_risk() {
    let text = std::fs::read_to_string(VECTORS)
        .unwrap_or_else(|e| panic!("NEWS2 vectors must be present at {VECTORS}: {e}"));
    let doc: serde_json::Value = serde_json::from_str(&text).expect("vectors are JSON");
    let cases = doc["cases"].as_array().expect("cases array");
    assert!(
        cases.len() >= 9,
        "expected at least 9 cases, got {}",
        cases.len()
    );
    for c in cases {
        let id = c["id"].as_str().expect("id");
        let num = |k: &str| {
            c[k].as_f64()
                .unwrap_or_else(|| panic!("{id}: {k} is a number"))
        };
        let scale = match c["scale"].as_u64() {
            Some(1) => Spo2Scale::Scale1,
            Some(2) => Spo2Scale::Scale2,
            other => panic!("{id}: scale {other:?}"),
        };
        let inputs = Inputs {
            respiration_rate: Some(num("rr")),
            spo2: Some(num("spo2")),
            scale,
            supplemental_oxygen: Some(c["oxygen"].as_bool().expect("oxygen")),
            systolic_bp: Some(num("sbp")),
            pulse: Some(num("pulse")),
            consciousness: Some(
                c["acvpu"]
                    .as_str()
                    .expect("acvpu")
                    .parse()
                    .expect("ACVPU letter"),
            ),
            temperature: Some(num("temp")),
        };
        let n = score(&inputs).unwrap_or_else(|e| panic!("{id}: {e}"));
        assert_eq!(
            u64::from(n.total),
            c["total"].as_u64().expect("total"),
            "{id}"
        );
        let risk = serde_json::to_value(n.risk).expect("risk json");
        assert_eq!(risk, c["risk"], "{id}");
    }
}

fn score_with(f: impl FnOnce(&mut Inputs)) -> vigil_rules::News2 {
    let mut i = normal();
    f(&mut i);
    score(&i).expect("complete set")
}

#[test]
fn respiration_rate_bands_match_chart_1_on_both_sides_of_every_edge() {
    for (rr, want) in [
        (0.0, 3),
        (8.0, 3),
        (9.0, 1),
        (11.0, 1),
        (12.0, 0),
        (20.0, 0),
        (21.0, 2),
        (24.0, 2),
        (25.0, 3),
        (60.0, 3),
    ] {
        let n = score_with(|i| i.respiration_rate = Some(rr));
        assert_eq!(n.rr, want, "rr {rr}");
        assert_eq!(n.total, want, "rr {rr} total");
    }
}

#[test]
fn spo2_scale_1_bands_do_not_depend_on_oxygen() {
    for oxygen in [false, true] {
        for (s, want) in [
            (70.0, 3),
            (91.0, 3),
            (92.0, 2),
            (93.0, 2),
            (94.0, 1),
            (95.0, 1),
            (96.0, 0),
            (100.0, 0),
        ] {
            let n = score_with(|i| {
                i.spo2 = Some(s);
                i.supplemental_oxygen = Some(oxygen);
            });
            assert_eq!(n.spo2, want, "scale 1 spo2 {s} oxygen {oxygen}");
            assert_eq!(n.air_or_oxygen, if oxygen { 2 } else { 0 });
            assert_eq!(n.total, want + n.air_or_oxygen);
        }
    }
}

#[test]
fn spo2_scale_2_scores_high_saturations_only_on_oxygen() {
    let cases = [
        (70.0, 3, 3),
        (83.0, 3, 3),
        (84.0, 2, 2),
        (85.0, 2, 2),
        (86.0, 1, 1),
        (87.0, 1, 1),
        (88.0, 0, 0),
        (92.0, 0, 0),
        (93.0, 0, 1),
        (94.0, 0, 1),
        (95.0, 0, 2),
        (96.0, 0, 2),
        (97.0, 0, 3),
        (100.0, 0, 3),
    ];
    for (s, on_air, on_oxygen) in cases {
        for (oxygen, want) in [(false, on_air), (true, on_oxygen)] {
            let n = score_with(|i| {
                i.scale = Spo2Scale::Scale2;
                i.spo2 = Some(s);
                i.supplemental_oxygen = Some(oxygen);
            });
            assert_eq!(n.spo2, want, "scale 2 spo2 {s} oxygen {oxygen}");
            assert_eq!(n.scale, Spo2Scale::Scale2);
        }
    }
}

#[test]
fn systolic_bp_bands_match_chart_1_on_both_sides_of_every_edge() {
    for (sbp, want) in [
        (60.0, 3),
        (90.0, 3),
        (91.0, 2),
        (100.0, 2),
        (101.0, 1),
        (110.0, 1),
        (111.0, 0),
        (219.0, 0),
        (220.0, 3),
        (260.0, 3),
    ] {
        assert_eq!(
            score_with(|i| i.systolic_bp = Some(sbp)).sbp,
            want,
            "sbp {sbp}"
        );
    }
}

#[test]
fn pulse_bands_match_chart_1_on_both_sides_of_every_edge() {
    for (p, want) in [
        (30.0, 3),
        (40.0, 3),
        (41.0, 1),
        (50.0, 1),
        (51.0, 0),
        (90.0, 0),
        (91.0, 1),
        (110.0, 1),
        (111.0, 2),
        (130.0, 2),
        (131.0, 3),
        (180.0, 3),
    ] {
        assert_eq!(score_with(|i| i.pulse = Some(p)).pulse, want, "pulse {p}");
    }
}

#[test]
fn temperature_bands_match_chart_1_at_one_decimal() {
    for (t, want) in [
        (33.0, 3),
        (35.0, 3),
        (35.1, 1),
        (36.0, 1),
        (36.1, 0),
        (38.0, 0),
        (38.1, 1),
        (39.0, 1),
        (39.1, 2),
        (41.0, 2),
    ] {
        assert_eq!(
            score_with(|i| i.temperature = Some(t)).temp,
            want,
            "temp {t}"
        );
    }
}

#[test]
fn temperature_is_rounded_half_up_to_one_decimal_before_banding() {
    for (t, want) in [
        (35.04, 3),
        (35.05, 1),
        (36.04, 1),
        (36.05, 0),
        (38.04, 0),
        (38.05, 1),
        (39.04, 1),
        (39.05, 2),
    ] {
        assert_eq!(
            score_with(|i| i.temperature = Some(t)).temp,
            want,
            "temp {t}"
        );
    }
}

#[test]
fn whole_number_parameters_are_rounded_half_up_before_banding() {
    assert_eq!(score_with(|i| i.respiration_rate = Some(8.49)).rr, 3);
    assert_eq!(score_with(|i| i.respiration_rate = Some(8.5)).rr, 1);
    assert_eq!(score_with(|i| i.spo2 = Some(91.4)).spo2, 3);
    assert_eq!(score_with(|i| i.spo2 = Some(91.5)).spo2, 2);
    assert_eq!(score_with(|i| i.systolic_bp = Some(219.5)).sbp, 3);
    assert_eq!(score_with(|i| i.pulse = Some(90.5)).pulse, 1);
}

#[test]
fn any_acvpu_other_than_alert_scores_3() {
    for (c, want) in [
        (Acvpu::Alert, 0),
        (Acvpu::Confusion, 3),
        (Acvpu::Voice, 3),
        (Acvpu::Pain, 3),
        (Acvpu::Unresponsive, 3),
    ] {
        assert_eq!(
            score_with(|i| i.consciousness = Some(c)).consciousness,
            want
        );
    }
}

#[test]
fn supplemental_oxygen_scores_2_on_either_scale() {
    for scale in [Spo2Scale::Scale1, Spo2Scale::Scale2] {
        let n = score_with(|i| {
            i.scale = scale;
            i.spo2 = Some(90.0);
            i.supplemental_oxygen = Some(true);
        });
        assert_eq!(n.air_or_oxygen, 2);
    }
}

#[test]
fn risk_bands_and_responses_follow_charts_2_and_4() {
    let zero = score(&normal()).expect("complete");
    assert_eq!((zero.total, zero.risk), (0, Risk::Low));
    assert_eq!(zero.monitoring, Monitoring::TwelveHourly);
    assert!(zero.response.contains("routine"));

    let four = score_with(|i| {
        i.respiration_rate = Some(22.0); // 2
        i.pulse = Some(95.0); // 1
        i.temperature = Some(38.5); // 1
    });
    assert_eq!((four.total, four.risk), (4, Risk::Low));
    assert_eq!(four.monitoring, Monitoring::FourToSixHourly);
    assert!(four.response.contains("registered nurse"));
    assert!(!four.warrants_alert());

    let red = score_with(|i| i.pulse = Some(131.0));
    assert_eq!((red.total, red.risk), (3, Risk::LowMedium));
    assert!(red.red_score() && red.warrants_alert());
    assert_eq!(red.monitoring, Monitoring::Hourly);
    assert!(red.response.contains("urgent assessment by a clinician"));

    let five = score_with(|i| {
        i.respiration_rate = Some(22.0); // 2
        i.systolic_bp = Some(95.0); // 2
        i.pulse = Some(95.0); // 1
    });
    assert_eq!((five.total, five.risk), (5, Risk::Medium));
    assert_eq!(five.monitoring, Monitoring::Hourly);
    assert!(five.response.contains("Key threshold for urgent response"));

    let six_red = score_with(|i| {
        i.consciousness = Some(Acvpu::Voice); // 3
        i.respiration_rate = Some(22.0); // 2
        i.pulse = Some(95.0); // 1
    });
    assert_eq!((six_red.total, six_red.risk), (6, Risk::Medium));

    let seven = score_with(|i| {
        i.respiration_rate = Some(26.0); // 3
        i.systolic_bp = Some(95.0); // 2
        i.pulse = Some(115.0); // 2
    });
    assert_eq!((seven.total, seven.risk), (7, Risk::High));
    assert_eq!(seven.monitoring, Monitoring::Continuous);
    assert!(seven.response.contains("critical care competencies"));
}

#[test]
fn risk_serializes_as_the_chart_names() {
    let names: Vec<String> = [Risk::Low, Risk::LowMedium, Risk::Medium, Risk::High]
        .iter()
        .map(|r| serde_json::to_string(r).expect("json"))
        .collect();
    assert_eq!(
        names,
        [r#""low""#, r#""low-medium""#, r#""medium""#, r#""high""#]
    );
    let n = score(&normal()).expect("complete");
    let j = serde_json::to_value(&n).expect("json");
    for k in [
        "rr",
        "spo2",
        "air_or_oxygen",
        "sbp",
        "pulse",
        "consciousness",
        "temp",
    ] {
        assert_eq!(j[k], 0, "{k}");
    }
    assert_eq!(j["scale"], 1);
    let back: vigil_rules::News2 = serde_json::from_value(j).expect("back");
    assert_eq!(back, n);
}

#[test]
fn an_empty_set_is_incomplete_and_names_all_seven_parameters() {
    let e = score(&Inputs::default()).expect_err("nothing measured");
    assert_eq!(e.missing, Parameter::ALL.to_vec());
    assert!(e.to_string().contains("respiration rate"));
}

#[test]
fn a_set_missing_one_parameter_is_never_scored_even_when_others_are_abnormal() {
    for p in Parameter::ALL {
        let mut i = normal();
        i.respiration_rate = Some(30.0);
        match p {
            Parameter::RespirationRate => i.respiration_rate = None,
            Parameter::Spo2 => i.spo2 = None,
            Parameter::AirOrOxygen => i.supplemental_oxygen = None,
            Parameter::SystolicBp => i.systolic_bp = None,
            Parameter::Pulse => i.pulse = None,
            Parameter::Consciousness => i.consciousness = None,
            Parameter::Temperature => i.temperature = None,
        }
        let e = score(&i).expect_err("incomplete");
        assert_eq!(e.missing, vec![p]);
    }
}

#[test]
fn non_finite_or_negative_values_count_as_missing() {
    let mut i = normal();
    i.spo2 = Some(f64::NAN);
    i.pulse = Some(f64::INFINITY);
    i.temperature = Some(-1.0);
    let e = score(&i).expect_err("unusable values");
    assert_eq!(
        e.missing,
        vec![Parameter::Spo2, Parameter::Pulse, Parameter::Temperature]
    );
}

#[test]
fn acvpu_and_scale_parse_strictly() {
    assert_eq!("v".parse::<Acvpu>(), Ok(Acvpu::Voice));
    assert_eq!("Unresponsive".parse::<Acvpu>(), Ok(Acvpu::Unresponsive));
    assert!("X".parse::<Acvpu>().is_err());
    assert!(serde_json::from_str::<Spo2Scale>("3").is_err());
    assert_eq!(
        serde_json::from_str::<Spo2Scale>("2").ok(),
        Some(Spo2Scale::Scale2)
    );
}

// ---- building inputs from readings ----

const T0: i64 = 1_700_000_000_000;

fn at(s: i64) -> Timestamp {
    Timestamp(T0 + s * 1000)
}

fn reading(code: &str, v: f64, t: Timestamp) -> Reading {
    Reading::quantity(DeviceId::new("dev-1").expect("id"), m(code), v, t)
}

fn full_set(t: Timestamp) -> Vec<Reading> {
    vec![
        reading("9279-1", 16.0, t),
        reading("59408-5", 97.0, t),
        reading("8867-4", 70.0, t),
        reading("8310-5", 37.0, t),
        Reading::panel(
            DeviceId::new("cuff").expect("id"),
            m("85354-9"),
            vec![
                Component {
                    metric: m("8480-6"),
                    value: 120.0,
                },
                Component {
                    metric: m("8462-4"),
                    value: 80.0,
                },
            ],
            t,
        ),
        reading("3151-8", 0.0, t),
    ]
}

fn alert_at(t: Timestamp) -> Assessments {
    Assessments {
        consciousness: Some(Observed {
            value: Acvpu::Alert,
            time: t,
        }),
        supplemental_oxygen: None,
    }
}

#[test]
fn inputs_come_from_the_latest_trustworthy_reading_of_each_parameter() {
    let mut rs = full_set(at(0));
    rs.push(reading("59408-5", 93.0, at(60)));
    let mut bad = reading("59408-5", 80.0, at(120));
    bad.flags = Flags::QUESTIONABLE;
    rs.push(bad);
    let mut later_bad_pulse = reading("8867-4", 150.0, at(90));
    later_bad_pulse.flags = Flags::MEASUREMENT_ONGOING;
    rs.push(later_bad_pulse);
    let i = inputs_from_readings(&rs, at(130), &News2Settings::default(), &alert_at(at(0)));
    assert_eq!(i.spo2, Some(93.0));
    assert_eq!(i.pulse, Some(70.0));
    assert_eq!(i.systolic_bp, Some(120.0));
    assert_eq!(i.supplemental_oxygen, Some(false));
    let n = score(&i).expect("complete");
    assert_eq!(n.spo2, 2);
}

#[test]
fn readings_outside_the_window_or_after_the_evaluation_time_are_ignored() {
    let settings = News2Settings {
        scale: Spo2Scale::Scale1,
        window_s: 600,
    };
    let mut rs = full_set(at(0));
    rs.push(reading("8867-4", 140.0, at(2000)));
    let i = inputs_from_readings(&rs, at(601), &settings, &alert_at(at(0)));
    let e = score(&i).expect_err("everything is 601 s old");
    assert_eq!(e.missing, Parameter::ALL.to_vec());
    let i = inputs_from_readings(&rs, at(600), &settings, &alert_at(at(0)));
    let n = score(&i).expect("exactly at the window edge");
    assert_eq!(n.pulse, 0, "the reading after `at` is not used");
}

#[test]
fn oxygen_flow_above_zero_means_on_oxygen_and_the_later_source_wins() {
    let settings = News2Settings::default();
    let mut rs = full_set(at(0));
    rs.push(reading("3151-8", 2.0, at(10)));
    let i = inputs_from_readings(&rs, at(20), &settings, &alert_at(at(0)));
    assert_eq!(i.supplemental_oxygen, Some(true));

    let nurse_says_air = Assessments {
        supplemental_oxygen: Some(Observed {
            value: false,
            time: at(15),
        }),
        ..alert_at(at(0))
    };
    let i = inputs_from_readings(&rs, at(20), &settings, &nurse_says_air);
    assert_eq!(i.supplemental_oxygen, Some(false));

    let same_time_air = Assessments {
        supplemental_oxygen: Some(Observed {
            value: false,
            time: at(10),
        }),
        ..alert_at(at(0))
    };
    let i = inputs_from_readings(&rs, at(20), &settings, &same_time_air);
    assert_eq!(i.supplemental_oxygen, Some(true), "a tie scores on oxygen");
}

#[test]
fn without_a_flow_meter_or_an_assessment_air_or_oxygen_is_missing() {
    let rs: Vec<Reading> = full_set(at(0))
        .into_iter()
        .filter(|r| r.metric != m("3151-8"))
        .collect();
    let i = inputs_from_readings(&rs, at(1), &News2Settings::default(), &alert_at(at(0)));
    let e = score(&i).expect_err("no oxygen information");
    assert_eq!(e.missing, vec![Parameter::AirOrOxygen]);
    let i = inputs_from_readings(
        &rs,
        at(1),
        &News2Settings::default(),
        &Assessments::default(),
    );
    assert_eq!(
        score(&i).expect_err("no ACVPU either").missing,
        vec![Parameter::AirOrOxygen, Parameter::Consciousness]
    );
}

#[test]
fn the_patient_scale_setting_is_applied_to_inputs_built_from_samples() {
    let samples: Vec<Sample> = full_set(at(0))
        .iter()
        .flat_map(Sample::from_reading)
        .chain([Sample::from((m("59408-5"), 90.0, at(5), Flags::empty()))])
        .collect();
    let settings = News2Settings {
        scale: Spo2Scale::Scale2,
        window_s: 3600,
    };
    let i = inputs_from_samples(&samples, at(10), &settings, &alert_at(at(0)));
    let n = score(&i).expect("complete");
    assert_eq!((n.spo2, n.total, n.risk), (0, 0, Risk::Low));
}

// ---- properties ----

fn any_inputs() -> impl Strategy<Value = Inputs> {
    let acvpu = prop_oneof![
        Just(Acvpu::Alert),
        Just(Acvpu::Confusion),
        Just(Acvpu::Voice),
        Just(Acvpu::Pain),
        Just(Acvpu::Unresponsive)
    ];
    (
        (
            proptest::option::weighted(0.9, 0.0f64..70.0),
            proptest::option::weighted(0.9, 50.0f64..100.0),
            any::<bool>(),
            proptest::option::weighted(0.9, any::<bool>()),
        ),
        (
            proptest::option::weighted(0.9, 40.0f64..280.0),
            proptest::option::weighted(0.9, 20.0f64..220.0),
            proptest::option::weighted(0.9, acvpu),
            proptest::option::weighted(0.9, 30.0f64..43.0),
        ),
    )
        .prop_map(|((rr, spo2, s2, o2), (sbp, pulse, c, temp))| Inputs {
            respiration_rate: rr,
            spo2,
            scale: if s2 {
                Spo2Scale::Scale2
            } else {
                Spo2Scale::Scale1
            },
            supplemental_oxygen: o2,
            systolic_bp: sbp,
            pulse,
            consciousness: c,
            temperature: temp,
        })
}

proptest! {
    #[test]
    fn a_score_is_the_sum_of_its_parts_and_its_risk_follows_the_total(i in any_inputs()) {
        match score(&i) {
            Ok(n) => {
                let sum: u8 = n.parameters().iter().map(|(_, s)| s).sum();
                prop_assert_eq!(n.total, sum);
                prop_assert!(n.total <= 20);
                let want = match n.total {
                    7.. => Risk::High,
                    5..=6 => Risk::Medium,
                    _ if n.red_score() => Risk::LowMedium,
                    _ => Risk::Low,
                };
                prop_assert_eq!(n.risk, want);
            }
            Err(e) => {
                prop_assert!(!e.missing.is_empty());
                let complete = i.respiration_rate.is_some() && i.spo2.is_some()
                    && i.supplemental_oxygen.is_some() && i.systolic_bp.is_some()
                    && i.pulse.is_some() && i.consciousness.is_some()
                    && i.temperature.is_some();
                prop_assert!(!complete);
            }
        }
    }
}

//! Each scenario produces its clinical or technical signature.

use crate::{HOUR, MINUTE, SECOND, events, plus, series, t0};
use std::time::Duration;
use vigil_model::{DeviceKind, EventKind, Flags, Record, Timestamp};
use vigil_sim::{Cohort, Scenario, SimConfig, SimError, parse_scenario};

/// A cohort starting at 06:00 UTC (local time = UTC).
fn cohort(seed: u64, patients: usize) -> Cohort {
    Cohort::new(SimConfig::new(seed, patients, plus(t0(), 6 * HOUR))).expect("cohort")
}

fn advance(c: &mut Cohort, until: Timestamp) -> Vec<Record> {
    let mut out = Vec::new();
    c.advance(until, &mut out);
    out
}

fn within(s: &[(Timestamp, f64)], from: Timestamp, to: Timestamp) -> Vec<f64> {
    s.iter()
        .filter(|(t, _)| *t >= from && *t <= to)
        .map(|(_, v)| *v)
        .collect()
}

fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::MIN, f64::max)
}
fn min(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::MAX, f64::min)
}
fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// NEWS2 (RCP 2017), scale 1, on air, alert.
fn news2(rr: f64, spo2: f64, sbp: f64, pulse: f64, temp: f64) -> u32 {
    let rr = match rr as i64 {
        ..=8 => 3,
        9..=11 => 1,
        12..=20 => 0,
        21..=24 => 2,
        _ => 3,
    };
    let spo2 = match spo2 as i64 {
        ..=91 => 3,
        92..=93 => 2,
        94..=95 => 1,
        _ => 0,
    };
    let sbp = match sbp as i64 {
        ..=90 => 3,
        91..=100 => 2,
        101..=110 => 1,
        111..=219 => 0,
        _ => 3,
    };
    let pulse = match pulse as i64 {
        ..=40 => 3,
        41..=50 => 1,
        51..=90 => 0,
        91..=110 => 1,
        111..=130 => 2,
        _ => 3,
    };
    let t = (temp * 10.0).round() as i64;
    let temp = match t {
        ..=350 => 3,
        351..=360 => 1,
        361..=380 => 0,
        381..=390 => 1,
        _ => 2,
    };
    rr + spo2 + sbp + pulse + temp
}

fn latest(s: &[(Timestamp, f64)], t: Timestamp) -> Option<f64> {
    s.iter().rev().find(|(x, _)| *x <= t).map(|(_, v)| *v)
}

#[test]
fn news2_helper_matches_published_vectors() {
    assert_eq!(news2(15.0, 97.0, 120.0, 70.0, 37.0), 0);
    assert_eq!(news2(21.0, 97.0, 120.0, 95.0, 38.5), 4);
    assert_eq!(news2(4.0, 80.0, 80.0, 35.0, 34.0), 15);
}

#[test]
fn sepsis_deteriorates_to_news2_of_seven_within_its_duration() {
    for (seed, hours) in [(3, 6), (4, 3)] {
        let mut c = cohort(seed, 3);
        let s = c.config().start;
        let dur = Duration::from_secs(hours * 3600);
        let at = c
            .inject(1, Scenario::Sepsis { duration: dur }, plus(s, 30 * MINUTE))
            .expect("inject");
        let end = plus(at, hours as i64 * HOUR);
        let out = advance(&mut c, end);
        let hr = series(&out, "p-0002-wear", "8867-4");
        let spo2 = series(&out, "p-0002-wear", "59408-5");
        let rr = series(&out, "p-0002-wear", "9279-1");
        let temp = series(&out, "p-0002-temp", "8310-5");
        let sbp = series(&out, "p-0002-bp", "8480-6");
        let before = within(&hr, s, at);
        assert!(
            mean(&before) < 95.0,
            "a normal heart rate before: {}",
            mean(&before)
        );
        let during = |x: &[(Timestamp, f64)]| within(x, at, end);
        assert!(max(&during(&hr)) > 110.0, "HR {}", max(&during(&hr)));
        assert!(max(&during(&rr)) >= 25.0, "RR {:?}", during(&rr));
        assert!(max(&during(&temp)) >= 38.5, "temp {:?}", during(&temp));
        assert!(min(&during(&sbp)) <= 100.0, "SBP {:?}", during(&sbp));
        assert!(min(&during(&spo2)) <= 93.0, "SpO2 {}", min(&during(&spo2)));
        // Observation rounds escalate to every 30 minutes.
        assert!(
            during(&sbp).len() >= 2 * hours as usize - 1,
            "{:?}",
            during(&sbp)
        );
        // A full observation set scoring NEWS2 >= 7 exists before the end.
        let best = temp
            .iter()
            .filter(|(t, _)| *t >= at && *t <= end)
            .filter_map(|&(t, tv)| {
                Some(news2(
                    latest(&rr, t)?,
                    latest(&spo2, t)?,
                    latest(&sbp, t)?,
                    latest(&hr, t)?,
                    tv,
                ))
            })
            .max()
            .unwrap_or(0);
        assert!(best >= 7, "best NEWS2 {best} within {hours} h");
        // Other patients stay well.
        let other = within(&series(&out, "p-0001-wear", "59408-5"), at, end);
        assert!(min(&other) >= 90.0);
    }
}

#[test]
fn desaturation_dips_to_about_85_percent_for_minutes_then_recovers() {
    let mut c = cohort(8, 2);
    let s = c.config().start;
    let at = c
        .inject(0, Scenario::desaturation(), plus(s, 40 * MINUTE))
        .expect("inject");
    let out = advance(&mut c, plus(at, HOUR));
    let spo2 = series(&out, "p-0001-wear", "59408-5");
    let before = within(&spo2, plus(at, -10 * MINUTE), plus(at, -SECOND));
    let plateau = within(&spo2, plus(at, 2 * MINUTE), plus(at, 6 * MINUTE));
    let after = within(&spo2, plus(at, 10 * MINUTE), plus(at, 30 * MINUTE));
    assert!(min(&before) >= 92.0, "{}", min(&before));
    assert!(
        max(&plateau) <= 88.0 && min(&plateau) >= 81.0,
        "{plateau:?}"
    );
    assert!((mean(&plateau) - 85.0).abs() < 1.0, "{}", mean(&plateau));
    assert!(min(&after) >= 92.0);
}

#[test]
fn hypoglycaemia_reads_below_54_at_the_next_checks() {
    let mut c = cohort(13, 6);
    let diabetic = (0..6)
        .find(|&i| c.profile(i).is_some_and(|p| p.diabetic))
        .expect("a diabetic");
    let other = (0..6)
        .find(|&i| c.profile(i).is_some_and(|p| !p.diabetic))
        .expect("a non-diabetic");
    let s = c.config().start;
    assert!(matches!(
        c.inject(other, Scenario::hypoglycaemia(), s),
        Err(SimError::MissingDevice {
            kind: DeviceKind::GlucoseMeter,
            ..
        })
    ));
    let at = c
        .inject(diabetic, Scenario::hypoglycaemia(), plus(s, 4 * HOUR))
        .expect("inject");
    let end = plus(at, 2 * HOUR);
    let out = advance(&mut c, plus(s, 18 * HOUR));
    let dev = format!("p-{:04}-gluc", diabetic + 1);
    let g = series(&out, &dev, "2339-0");
    let during = within(&g, at, end);
    assert!(during.len() >= 2, "{g:?}");
    assert!(during.iter().all(|&v| v < 54.0), "{during:?}");
    let later = within(&g, plus(end, SECOND), plus(s, 18 * HOUR));
    assert!(
        !later.is_empty() && later.iter().all(|&v| v >= 70.0),
        "{later:?}"
    );
    let first = g.iter().find(|(t, _)| *t >= at).expect("a check");
    assert_eq!(
        first.0,
        plus(at, 5 * MINUTE),
        "a symptomatic check 5 min in"
    );
}

#[test]
fn a_fall_sends_one_event_a_heart_rate_spike_and_no_steps_while_down() {
    let mut c = cohort(21, 2);
    let s = c.config().start;
    // 10:00:17.250 rounds up to the next whole second.
    let requested = plus(s, 4 * HOUR + 17 * SECOND + 250);
    let at = c.inject(1, Scenario::fall(), requested).expect("inject");
    assert_eq!(at, plus(s, 4 * HOUR + 18 * SECOND));
    let out = advance(&mut c, plus(at, HOUR));
    let falls: Vec<_> = events(&out, "p-0002-wear", "fall").collect();
    assert_eq!(falls.len(), 1);
    assert_eq!(falls[0].time, at);
    assert!(
        matches!(falls[0].kind, EventKind::Fall { confidence: Some(c) } if (0.8..=1.0).contains(&c))
    );
    assert_eq!(
        out.iter()
            .filter(|r| matches!(r, Record::Event(e) if e.kind.name() == "fall"))
            .count(),
        1,
        "only the patient who fell"
    );
    let hr = series(&out, "p-0002-wear", "8867-4");
    let before = mean(&within(&hr, plus(at, -5 * MINUTE), plus(at, -SECOND)));
    let spike = max(&within(&hr, at, plus(at, MINUTE)));
    assert!(spike >= before + 20.0, "spike {spike} vs {before}");
    let settled = mean(&within(&hr, plus(at, 40 * MINUTE), plus(at, 60 * MINUTE)));
    assert!(settled < spike - 15.0);
    let steps = within(
        &series(&out, "p-0002-wear", "55423-8"),
        plus(at, MINUTE),
        plus(at, 15 * MINUTE),
    );
    assert!(
        steps.len() >= 13 && steps.iter().all(|&v| v == 0.0),
        "{steps:?}"
    );
}

#[test]
fn inactivity_means_no_steps_and_no_motion_for_hours() {
    let mut c = cohort(17, 4);
    let i = (0..4)
        .find(|&i| c.device_of(i, DeviceKind::MotionSensor).is_some())
        .expect("a patient with a motion sensor");
    let s = c.config().start;
    // 09:00 to 13:00, when people are up and about.
    let at = c
        .inject(i, Scenario::inactivity(), plus(s, 3 * HOUR))
        .expect("inject");
    let end = plus(at, 4 * HOUR);
    let out = advance(&mut c, plus(s, 14 * HOUR));
    let id = format!("p-{:04}", i + 1);
    let steps = series(&out, &format!("{id}-wear"), "55423-8");
    let quiet = within(&steps, plus(at, MINUTE), end);
    assert!(quiet.len() >= 239 && quiet.iter().all(|&v| v == 0.0));
    let after: f64 = within(&steps, plus(end, MINUTE), plus(s, 14 * HOUR))
        .iter()
        .sum();
    assert!(after > 100.0, "activity resumes: {after} steps");
    let motion: Vec<Timestamp> = events(&out, &format!("{id}-motion"), "motion")
        .map(|e| e.time)
        .collect();
    assert!(motion.iter().all(|t| *t < at || *t > end), "{motion:?}");
    assert!(motion.iter().any(|t| *t > end), "motion resumes");
}

#[test]
fn a_dying_battery_reports_down_to_5_percent_then_the_device_goes_silent() {
    let mut c = cohort(23, 2);
    let s = c.config().start;
    let at = c
        .inject(0, Scenario::battery_death(), plus(s, 30 * MINUTE))
        .expect("inject");
    assert!(matches!(
        c.inject(0, Scenario::battery_death(), plus(s, HOUR)),
        Err(SimError::InvalidScenario(_))
    ));
    let end = plus(at, 2 * HOUR);
    let out = advance(&mut c, plus(s, 16 * HOUR));
    let levels: Vec<(Timestamp, f64)> = events(&out, "p-0001-wear", "battery")
        .filter_map(|e| match e.kind {
            EventKind::Battery { percent } => Some((e.time, percent)),
            _ => None,
        })
        .filter(|(t, _)| *t >= at)
        .collect();
    assert_eq!(levels.len(), 13, "every 10 minutes for 2 hours: {levels:?}");
    assert!(levels.windows(2).all(|w| w[1].1 < w[0].1), "{levels:?}");
    assert_eq!(levels.last().copied(), Some((end, 5.0)));
    let from_wearable: Vec<&Record> = out
        .iter()
        .filter(|r| r.device().as_str() == "p-0001-wear")
        .collect();
    assert!(from_wearable.iter().all(|r| r.time() <= end));
    assert!(from_wearable.iter().any(|r| matches!(r,
        Record::Reading(x) if x.flags.contains(Flags::LOW_BATTERY))));
    // The patient's other devices and the other patient's wearable carry on.
    assert!(
        out.iter()
            .any(|r| r.device().as_str() == "p-0001-bp" && r.time() > end)
    );
    assert!(
        out.iter()
            .any(|r| r.device().as_str() == "p-0002-wear" && r.time() > end)
    );
    assert!(matches!(
        c.inject(
            1,
            Scenario::BatteryDeath {
                device: DeviceKind::SmartBed,
                duration: Duration::from_secs(60),
            },
            c.now()
        ),
        Err(SimError::MissingDevice { .. })
    ));
}

#[test]
fn scenarios_are_injected_from_their_text_form() {
    let mut c = cohort(1, 4);
    let s = c.config().start;
    let spec = parse_scenario("sepsis:p-0003@+10m").expect("parse");
    assert_eq!(c.inject_spec(&spec), Ok(plus(s, 10 * MINUTE)));
    let late = parse_scenario("fall:p-0001").expect("now");
    let _ = advance(&mut c, plus(s, 500));
    assert_eq!(c.inject_spec(&late), Ok(plus(s, SECOND)));
    let missing = parse_scenario("fall:p-0099@+1m").expect("parse");
    assert!(matches!(
        c.inject_spec(&missing),
        Err(SimError::NoSuchPatient(_))
    ));
    assert!(matches!(
        c.inject(9, Scenario::fall(), s),
        Err(SimError::NoSuchPatient(_))
    ));
    assert!(matches!(
        c.inject(
            0,
            Scenario::Fall {
                down: Duration::ZERO
            },
            s
        ),
        Err(SimError::InvalidScenario(_))
    ));
    assert!(matches!(
        c.inject(0, Scenario::fall(), Timestamp(i64::MAX)),
        Err(SimError::InvalidScenario(_))
    ));
    // A time in the past starts the scenario at the next second.
    assert_eq!(
        c.inject(1, Scenario::fall(), Timestamp(s.0 - HOUR)),
        Ok(plus(s, SECOND))
    );
}

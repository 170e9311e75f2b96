//! The load generator yields exactly the requested rate.

use crate::{SECOND, plus};
use std::time::Duration;
use vigil_model::{Record, Timestamp, validate_record};
use vigil_sim::{LoadSpec, SimError};

#[test]
fn every_second_holds_exactly_the_requested_number_of_readings() {
    for (patients, rate, ms) in [
        (1, 1, 10_000),
        (7, 100, 5_000),
        (50, 1_000, 3_000),
        (1_000, 25_000, 2_000),
        (3, 7, 1_500),
        (4, 1_001, 2_000),
    ] {
        let spec = LoadSpec::new(patients, rate, Duration::from_millis(ms));
        let expected = rate * ms / 1000;
        assert_eq!(spec.total(), expected);
        let g = spec.generator().expect("generator");
        assert_eq!(g.len() as u64, expected);
        let times: Vec<Timestamp> = g.map(|r| r.time()).collect();
        assert_eq!(times.len() as u64, expected, "{patients} {rate} {ms}");
        assert!(times.windows(2).all(|w| w[0] <= w[1]));
        let start = spec.start;
        assert!(
            times
                .iter()
                .all(|t| *t > start && t.0 <= start.0 + ms as i64)
        );
        for k in 0..(ms as i64 / SECOND) {
            let n = times
                .iter()
                .filter(|t| t.0 > start.0 + k * SECOND && t.0 <= start.0 + (k + 1) * SECOND)
                .count();
            assert_eq!(n as u64, rate, "second {k} of {patients}/{rate}");
        }
    }
}

#[test]
fn load_readings_are_valid_round_robin_and_deterministic() {
    let spec = LoadSpec {
        seed: 77,
        ..LoadSpec::new(10, 500, Duration::from_secs(20))
    };
    let g = spec.generator().expect("generator");
    assert_eq!(g.devices().len(), 10);
    assert_eq!(g.assignments().len(), 10);
    assert_eq!(g.patients()[0].id.as_str(), "lp-0001");
    let all: Vec<Record> = g.collect();
    let now = plus(spec.start, 20 * SECOND);
    let mut kinds = [0usize; 2];
    for (i, r) in all.iter().enumerate() {
        assert_eq!(validate_record(r, now, 0), Ok(()));
        assert_eq!(r.device().as_str(), format!("lp-{:04}-wear", i % 10 + 1));
        let Record::Reading(x) = r else {
            panic!("a reading")
        };
        let v = x.value.expect("value");
        match x.metric.key() {
            "heart-rate" => {
                kinds[0] += 1;
                assert!((40.0..=120.0).contains(&v), "{v}");
            }
            "spo2" => {
                kinds[1] += 1;
                assert!((90.0..=100.0).contains(&v), "{v}");
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(kinds, [5000, 5000]);
    let again: Vec<Record> = spec.generator().expect("again").collect();
    assert_eq!(all, again);
    let other: Vec<Record> = LoadSpec {
        seed: 78,
        ..spec.clone()
    }
    .generator()
    .expect("other")
    .collect();
    assert_ne!(all, other);
}

#[test]
fn load_driven_by_time_matches_the_iterator() {
    let spec = LoadSpec::new(3, 333, Duration::from_millis(4_500));
    let all: Vec<Record> = spec.generator().expect("generator").collect();
    let mut g = spec.generator().expect("generator");
    let mut by_time = Vec::new();
    let mut t = spec.start;
    while g.remaining() > 0 {
        t = plus(t, 137);
        let n = g.advance(t, &mut by_time);
        assert!(by_time[by_time.len() - n..].iter().all(|r| r.time() <= t));
    }
    assert_eq!(by_time, all);
    assert_eq!(g.emitted(), spec.total());
}

#[test]
fn load_without_patients_is_refused() {
    assert!(matches!(
        LoadSpec::new(0, 10, Duration::from_secs(1)).generator(),
        Err(SimError::InvalidConfig(_))
    ));
    let idle = LoadSpec::new(0, 0, Duration::from_secs(1));
    assert_eq!(idle.generator().expect("idle").count(), 0);
}

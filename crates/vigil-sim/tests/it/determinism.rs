//! Same seed, same records: across runs, across ways of splitting time, and pinned across
//! releases.

use crate::{HOUR, MINUTE, plus, t0};
use std::time::Duration;
use vigil_model::{DeviceKind, Record, Timestamp};
use vigil_sim::{Cohort, Scenario, SimConfig, parse_scenario};

fn cohort(seed: u64, patients: usize) -> Cohort {
    Cohort::new(SimConfig::new(seed, patients, plus(t0(), 6 * HOUR))).expect("cohort")
}

/// A cohort with one of each scenario, so that their code paths are covered too.
fn busy(seed: u64) -> Cohort {
    let mut c = cohort(seed, 5);
    let s = c.config().start;
    let diabetic = (0..5)
        .find(|&i| c.profile(i).is_some_and(|p| p.diabetic))
        .expect("a diabetic among 5");
    c.inject(0, Scenario::sepsis(), plus(s, 20 * MINUTE))
        .expect("sepsis");
    c.inject(1, Scenario::fall(), plus(s, 31 * MINUTE + 250))
        .expect("fall");
    c.inject(2, Scenario::desaturation(), plus(s, 45 * MINUTE))
        .expect("desat");
    c.inject(3, Scenario::inactivity(), plus(s, 10 * MINUTE))
        .expect("inactivity");
    c.inject(diabetic, Scenario::hypoglycaemia(), plus(s, HOUR))
        .expect("hypo");
    c.inject(
        4,
        Scenario::BatteryDeath {
            device: DeviceKind::Wearable,
            duration: Duration::from_secs(3600),
        },
        plus(s, 15 * MINUTE),
    )
    .expect("battery");
    c
}

fn run(mut c: Cohort, until: Timestamp) -> Vec<Record> {
    let mut out = Vec::new();
    c.advance(until, &mut out);
    out
}

#[test]
fn the_same_seed_gives_the_same_records_and_another_seed_differs() {
    let until = plus(t0(), 8 * HOUR);
    let a = run(busy(11), until);
    let b = run(busy(11), until);
    assert!(a.len() > 60_000, "{}", a.len());
    assert_eq!(a, b);
    let c = run(busy(12), until);
    assert_ne!(a, c);
    // Different seeds draw different people too.
    assert_ne!(cohort(11, 5).patients(), cohort(12, 5).patients());
}

#[test]
fn splitting_time_into_many_calls_gives_the_same_records_as_one_call() {
    let until = plus(t0(), 8 * HOUR + 500);
    let whole = run(busy(5), until);

    let mut c = busy(5);
    let mut pieces = Vec::new();
    let mut t = c.now();
    // Irregular steps: sub-second, odd seconds, minutes, plus repeated and backward times.
    let steps = [
        1, 999, 1, 37_000, 250, 61_000, 3_600_000, 7, 1_000, 59_999, 900_123,
    ];
    let mut i = 0;
    while t < until {
        t = plus(t, steps[i % steps.len()]).min(until);
        c.advance(t, &mut pieces);
        c.advance(plus(t, -5_000), &mut pieces);
        c.advance(t, &mut pieces);
        i += 1;
    }
    assert_eq!(c.now(), until);
    assert_eq!(pieces.len(), whole.len());
    assert!(pieces == whole, "split output differs from one-call output");
}

#[test]
fn a_scenario_changes_nothing_before_it_starts() {
    let start = plus(t0(), 6 * HOUR);
    let until = plus(start, 3 * HOUR);
    let plain = run(cohort(9, 4), until);
    let mut c = cohort(9, 4);
    let at = c
        .inject(1, Scenario::sepsis(), plus(start, 90 * MINUTE))
        .expect("sepsis");
    c.inject(2, Scenario::fall(), plus(start, 2 * HOUR))
        .expect("fall");
    let with = run(c, until);
    let before =
        |v: &[Record]| -> Vec<Record> { v.iter().filter(|r| r.time() < at).cloned().collect() };
    assert_eq!(before(&plain), before(&with));
    assert_ne!(plain, with);
}

#[test]
fn a_patient_is_the_same_person_whatever_the_size_of_the_cohort() {
    let until = plus(t0(), 7 * HOUR);
    let mine = |v: Vec<Record>| -> Vec<Record> {
        v.into_iter()
            .filter(|r| r.device().as_str().starts_with("p-0002-"))
            .collect()
    };
    let small = cohort(21, 3);
    let large = cohort(21, 9);
    assert_eq!(small.patients()[1], large.patients()[1]);
    assert_eq!(small.profile(1), large.profile(1));
    assert_eq!(mine(run(small, until)), mine(run(large, until)));
}

/// FNV-1a over the parts of records that matter.
fn fingerprint(records: &[Record]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    for r in records {
        eat(&r.time().0.to_le_bytes());
        eat(r.device().as_str().as_bytes());
        match r {
            Record::Reading(x) => {
                eat(x.metric.loinc().as_bytes());
                eat(&x.value.unwrap_or(-1.0).to_bits().to_le_bytes());
                for c in &x.components {
                    eat(&c.value.to_bits().to_le_bytes());
                }
                eat(&x.flags.0.to_le_bytes());
            }
            Record::Event(e) => {
                eat(e.kind.name().as_bytes());
                if let vigil_model::EventKind::Battery { percent } = e.kind {
                    eat(&percent.to_bits().to_le_bytes());
                }
            }
        }
    }
    h
}

/// The simulator's output for a seed is part of its contract (demos, recorded fixtures and
/// benchmarks depend on it). Changing the model must change this constant deliberately,
/// with a note in the changelog.
#[test]
fn output_for_a_seed_is_pinned_across_releases() {
    let mut c = busy(42);
    let spec = parse_scenario("desat/3m/82:p-0004@+2h").expect("spec");
    c.inject_spec(&spec).expect("inject");
    let out = run(c, plus(t0(), 9 * HOUR));
    let first: Vec<String> = out
        .iter()
        .take(4)
        .map(|r| match r {
            Record::Reading(x) => format!("{} {} {}", x.device, x.metric, x.value.unwrap_or(-1.0)),
            Record::Event(e) => format!("{} {}", e.device, e.kind.name()),
        })
        .collect();
    assert_eq!(
        (out.len(), fingerprint(&out), first),
        (
            96_297,
            1_229_049_927_255_779_728,
            vec![
                "p-0001-wear 8867-4 64".to_owned(),
                "p-0001-wear 59408-5 96".to_owned(),
                "p-0002-wear 8867-4 61".to_owned(),
                "p-0002-wear 59408-5 97".to_owned(),
            ]
        ),
        "pinned output changed"
    );
}

//! Integration tests of the simulator, in one binary (one link on two cores).

mod day;
mod determinism;
mod load;
mod scenarios;

use vigil_model::{Metric, Record, Timestamp};

pub const SECOND: i64 = 1000;
pub const MINUTE: i64 = 60 * SECOND;
pub const HOUR: i64 = 60 * MINUTE;

/// 2024-05-01T00:00:00Z.
pub fn t0() -> Timestamp {
    Timestamp(1_714_521_600_000)
}

pub fn plus(t: Timestamp, ms: i64) -> Timestamp {
    t.saturating_add_millis(ms)
}

pub fn metric(code: &str) -> Metric {
    code.parse().expect("metric in the registry")
}

/// Values of one metric (or panel component) from one device, with their times.
pub fn series(records: &[Record], device: &str, code: &str) -> Vec<(Timestamp, f64)> {
    let m = metric(code);
    records
        .iter()
        .filter_map(|r| match r {
            Record::Reading(x) if x.device.as_str() == device => x.value_of(m).map(|v| (x.time, v)),
            _ => None,
        })
        .collect()
}

/// Events of one kind from one device.
pub fn events<'a>(
    records: &'a [Record],
    device: &'a str,
    name: &'a str,
) -> impl Iterator<Item = &'a vigil_model::Event> + 'a {
    records.iter().filter_map(move |r| match r {
        Record::Event(e) if e.device.as_str() == device && e.kind.name() == name => Some(e),
        _ => None,
    })
}

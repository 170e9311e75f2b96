//! Throughput of the load generator and of the cohort simulation.
//!
//! `cargo bench -p vigil-sim` prints nanoseconds per record; no external harness.

use std::hint::black_box;
use std::time::{Duration, Instant};
use vigil_model::Timestamp;
use vigil_sim::{Cohort, LoadSpec, SimConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Load generator: 1,000 wearables at 500,000 readings/s for 10 s of device time.
    let spec = LoadSpec::new(1_000, 500_000, Duration::from_secs(10));
    let mut g = spec.generator()?;
    let mut batch = Vec::with_capacity(spec.rate_per_second as usize);
    let begin = Instant::now();
    let mut n = 0u64;
    let mut t = spec.start;
    while g.remaining() > 0 {
        t = t.saturating_add_millis(1000);
        batch.clear();
        n += g.advance(t, &mut batch) as u64;
        black_box(&batch);
    }
    let el = begin.elapsed();
    println!(
        "load generator: {n} readings in {:.3} s = {:.1} ns/reading ({:.2} M readings/s)",
        el.as_secs_f64(),
        el.as_nanos() as f64 / n as f64,
        n as f64 / el.as_secs_f64() / 1e6
    );

    // Cohort: 100 patients for one simulated hour.
    let start = Timestamp::parse("2024-05-01T06:00:00Z")?;
    let mut cohort = Cohort::new(SimConfig::new(1, 100, start))?;
    let mut out = Vec::new();
    let begin = Instant::now();
    let mut n = 0usize;
    for minute in 1..=60 {
        out.clear();
        cohort.advance(start.saturating_add_millis(minute * 60_000), &mut out);
        n += out.len();
        black_box(&out);
    }
    let el = begin.elapsed();
    println!(
        "cohort: {n} records (100 patients, 1 h) in {:.3} s = {:.1} ns/record, {:.0}x real time",
        el.as_secs_f64(),
        el.as_nanos() as f64 / n as f64,
        3600.0 / el.as_secs_f64()
    );
    Ok(())
}

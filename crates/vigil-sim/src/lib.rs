//! Vigil's simulator: the demo, the load generator and the test-data source at once.
//!
//! A [`Cohort`] is a set of synthetic patients (`p-0001` ...), each with a wearable, a
//! blood-pressure cuff, a weight scale, a thermometer, and for some a glucose meter, a spot
//! pulse oximeter and a home motion sensor. Each patient has individual baselines and a latent
//! physiological state (heart rate, SpO2, respiratory rate, blood pressure, temperature) that
//! evolves second by second with circadian rhythm, sleep, activity and Ornstein-Uhlenbeck
//! noise; devices measure it on realistic schedules with realistic noise and quantization.
//! [`Scenario`]s (sepsis, desaturation, hypoglycaemia, fall, inactivity, battery death) are
//! injected per patient at a time, programmatically or from text ([`parse_scenario`]).
//! [`LoadSpec`] produces wearable readings at an exact rate for throughput benchmarks.
//!
//! The crate is pure: no I/O, no clock, no threads, no async. The caller drives it by time
//! with [`Cohort::advance`], and the output depends only on the seed, the configuration and
//! the injected scenarios: the same seed gives the same records on every platform and, by
//! design, in every release (the random generator and the transcendental functions are
//! implemented here rather than borrowed, and a test pins the output).
//!
//! ```
//! use vigil_model::{Record, Timestamp, validate_record};
//! use vigil_sim::{Cohort, Scenario, SimConfig, parse_scenario};
//!
//! let start = Timestamp::parse("2024-05-01T06:00:00Z").expect("time");
//! let mut cohort = Cohort::new(SimConfig::new(7, 3, start))?;
//! cohort.inject(0, Scenario::fall(), start.saturating_add_millis(90_000))?;
//! cohort.inject_spec(&parse_scenario("sepsis/4h:p-0002@+10m")?)?;
//!
//! let mut out = Vec::new();
//! cohort.advance(start.saturating_add_millis(3_600_000), &mut out);
//! assert!(out.iter().all(|r| validate_record(r, cohort.now(), 0).is_ok()));
//! assert!(out.iter().any(|r| matches!(r, Record::Event(e) if e.kind.name() == "fall")));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod cohort;
mod error;
mod load;
mod math;
mod names;
mod patient;
pub mod scenario;

pub use cohort::{Cohort, PatientProfile, SimConfig, Vitals};
pub use error::SimError;
pub use load::{LoadGen, LoadSpec};
pub use scenario::{
    Scenario, ScenarioParseError, ScenarioSpec, ScenarioTime, format_duration, parse_duration,
    parse_scenario,
};

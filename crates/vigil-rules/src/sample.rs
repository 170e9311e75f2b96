//! Samples: the single numbers rules look at, and the shared comparison helpers.

use serde::{Deserialize, Serialize};
use std::sync::LazyLock;
use vigil_model::{Flags, Metric, Reading, Timestamp};

/// One value of one metric at one time, with the quality flags of the reading it came from.
///
/// A [`Reading`] with a single value gives one sample; a panel (blood pressure) gives one
/// sample per component; a data-absent reading gives none (see [`Sample::from_reading`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// The metric, serialized as its LOINC code.
    pub metric: Metric,
    /// The value in the metric's canonical UCUM unit.
    pub value: f64,
    /// Device time of the measurement.
    pub time: Timestamp,
    #[serde(default)]
    pub flags: Flags,
}

impl Sample {
    /// A sample with no quality flags.
    pub fn new(metric: Metric, value: f64, time: Timestamp) -> Self {
        Self {
            metric,
            value,
            time,
            flags: Flags::empty(),
        }
    }

    /// The same sample with `flags`.
    pub fn with_flags(self, flags: Flags) -> Self {
        Self { flags, ..self }
    }

    /// Whether a rule may act on this sample: its flags are [`Flags::trustworthy`] and its
    /// value is a finite number.
    pub fn usable(&self) -> bool {
        self.flags.trustworthy() && self.value.is_finite()
    }

    /// The samples a reading carries: its own value, then each panel component (with the
    /// reading's time and flags). A data-absent reading carries none.
    pub fn from_reading(reading: &Reading) -> Vec<Sample> {
        let own = reading
            .value
            .map(|v| Sample::new(reading.metric, v, reading.time));
        let parts = reading
            .components
            .iter()
            .map(|c| Sample::new(c.metric, c.value, reading.time));
        own.into_iter()
            .chain(parts)
            .map(|s| s.with_flags(reading.flags))
            .collect()
    }
}

impl From<(Metric, f64, Timestamp, Flags)> for Sample {
    fn from((metric, value, time, flags): (Metric, f64, Timestamp, Flags)) -> Self {
        Self {
            metric,
            value,
            time,
            flags,
        }
    }
}

/// The metrics the rules use, resolved once from the model's registry by LOINC code.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Known {
    pub resp_rate: Metric,
    pub spo2: Metric,
    pub heart_rate: Metric,
    pub body_temp: Metric,
    pub systolic: Metric,
    pub diastolic: Metric,
    pub glucose: Metric,
    pub o2_flow: Metric,
    pub body_weight: Metric,
}

static KNOWN: LazyLock<Known> = LazyLock::new(|| {
    let m = |code: &str| -> Metric {
        // These codes are compiled into this crate and into the model's registry.toml; the
        // test `every_metric_the_rules_use_is_in_the_registry` guards them, so a failure here
        // is a build defect, never an input error.
        #[allow(clippy::expect_used)]
        code.parse()
            .expect("LOINC code used by vigil-rules is in the registry")
    };
    Known {
        resp_rate: m("9279-1"),
        spo2: m("59408-5"),
        heart_rate: m("8867-4"),
        body_temp: m("8310-5"),
        systolic: m("8480-6"),
        diastolic: m("8462-4"),
        glucose: m("2339-0"),
        o2_flow: m("3151-8"),
        body_weight: m("29463-7"),
    }
});

pub(crate) fn known() -> &'static Known {
    &KNOWN
}

/// `v` rounded half-up to `decimals` places, as an integer count of those places
/// (`38.05` at 1 decimal is `381`). The tiny bias makes values written with exactly a
/// trailing 5 round up even when their binary form is a hair below it.
pub(crate) fn scaled(v: f64, decimals: u8) -> i64 {
    let factor = 10f64.powi(i32::from(decimals));
    // Callers pass finite values; `as` saturates, so even a huge value cannot wrap.
    (v * factor + 1e-9).round() as i64
}

/// `v` rounded half-up to `decimals` places (the value [`scaled`] counts, as a number).
pub(crate) fn rounded(v: f64, decimals: u8) -> f64 {
    scaled(v, decimals) as f64 / 10f64.powi(i32::from(decimals))
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_model::{Component, DeviceId};

    #[test]
    fn every_metric_the_rules_use_is_in_the_registry() {
        for code in [
            "9279-1", "59408-5", "8867-4", "8310-5", "8480-6", "8462-4", "2339-0", "3151-8",
            "29463-7",
        ] {
            assert!(code.parse::<Metric>().is_ok(), "{code} missing");
        }
        assert_eq!(known().o2_flow.key(), "inhaled-o2-flow");
    }

    #[test]
    fn rounding_is_half_up_at_the_stated_resolution() {
        assert_eq!(scaled(38.05, 1), 381);
        assert_eq!(scaled(38.04, 1), 380);
        assert_eq!(scaled(35.0, 1), 350);
        assert_eq!(scaled(8.5, 0), 9);
        assert_eq!(scaled(8.49, 0), 8);
        assert_eq!(rounded(37.95, 1), 38.0);
        assert_eq!(rounded(38.3, 1), 38.3);
    }

    #[test]
    fn a_panel_reading_gives_one_sample_per_component_with_its_flags() {
        let k = known();
        let bp: Metric = "85354-9".parse().expect("bp");
        let mut r = Reading::panel(
            DeviceId::new("cuff-1").expect("id"),
            bp,
            vec![
                Component {
                    metric: k.systolic,
                    value: 150.0,
                },
                Component {
                    metric: k.diastolic,
                    value: 95.0,
                },
            ],
            Timestamp(5),
        );
        r.flags = Flags::LOW_BATTERY;
        let s = Sample::from_reading(&r);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].metric, k.systolic);
        assert_eq!(s[1].value, 95.0);
        assert!(
            s.iter()
                .all(|s| s.flags == Flags::LOW_BATTERY && s.usable())
        );
        let absent = Reading::absent(
            DeviceId::new("ox").expect("id"),
            k.spo2,
            vigil_model::DataAbsentReason::NotANumber,
            Timestamp(5),
        );
        assert!(Sample::from_reading(&absent).is_empty());
    }
}

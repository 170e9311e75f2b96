//! Readings: coded measurements with their times, quality flags and source.

use crate::{DeviceId, Event, Metric, PatientId, Timestamp};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// Where a reading entered Vigil.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Simulator,
    Ble,
    Hl7,
    Template,
    Mqtt,
    Manual,
    #[default]
    Other,
}

/// Why a reading carries no number (FHIR R4 `data-absent-reason` codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DataAbsentReason {
    Unknown,
    Masked,
    NotApplicable,
    Unsupported,
    Error,
    NotANumber,
    NegativeInfinity,
    PositiveInfinity,
    NotPerformed,
}

impl DataAbsentReason {
    pub fn code(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Masked => "masked",
            Self::NotApplicable => "not-applicable",
            Self::Unsupported => "unsupported",
            Self::Error => "error",
            Self::NotANumber => "not-a-number",
            Self::NegativeInfinity => "negative-infinity",
            Self::PositiveInfinity => "positive-infinity",
            Self::NotPerformed => "not-performed",
        }
    }
    pub const ALL: [Self; 9] = [
        Self::Unknown,
        Self::Masked,
        Self::NotApplicable,
        Self::Unsupported,
        Self::Error,
        Self::NotANumber,
        Self::NegativeInfinity,
        Self::PositiveInfinity,
        Self::NotPerformed,
    ];
}

/// Quality and status flags of one reading. A reading flagged `INVALID` or `QUESTIONABLE`
/// is stored and shown, but must never raise an alert by itself.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Flags(pub u16);

impl Flags {
    pub const QUESTIONABLE: Self = Self(1);
    pub const INVALID: Self = Self(1 << 1);
    pub const EARLY_ESTIMATE: Self = Self(1 << 2);
    pub const CALIBRATING: Self = Self(1 << 3);
    pub const DEVICE_CLOCK_UNSET: Self = Self(1 << 4);
    pub const LOW_BATTERY: Self = Self(1 << 5);
    pub const LOW_PERFUSION: Self = Self(1 << 6);
    pub const MOTION_ARTIFACT: Self = Self(1 << 7);
    pub const MEASUREMENT_ONGOING: Self = Self(1 << 8);
    pub const DEVICE_FAULT: Self = Self(1 << 9);
    pub const DOWNSAMPLED: Self = Self(1 << 10);
    pub const CLOCK_SUSPECT: Self = Self(1 << 11);

    const NAMES: [(&'static str, Self); 12] = [
        ("questionable", Self::QUESTIONABLE),
        ("invalid", Self::INVALID),
        ("early_estimate", Self::EARLY_ESTIMATE),
        ("calibrating", Self::CALIBRATING),
        ("device_clock_unset", Self::DEVICE_CLOCK_UNSET),
        ("low_battery", Self::LOW_BATTERY),
        ("low_perfusion", Self::LOW_PERFUSION),
        ("motion_artifact", Self::MOTION_ARTIFACT),
        ("measurement_ongoing", Self::MEASUREMENT_ONGOING),
        ("device_fault", Self::DEVICE_FAULT),
        ("downsampled", Self::DOWNSAMPLED),
        ("clock_suspect", Self::CLOCK_SUSPECT),
    ];

    pub const fn empty() -> Self {
        Self(0)
    }
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }
    pub const fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }
    pub fn insert(&mut self, other: Self) {
        self.0 |= other.0;
    }
    /// Whether a rule may act on this reading.
    pub const fn trustworthy(self) -> bool {
        self.0
            & (Self::QUESTIONABLE.0
                | Self::INVALID.0
                | Self::DEVICE_FAULT.0
                | Self::MEASUREMENT_ONGOING.0
                | Self::CALIBRATING.0)
            == 0
    }
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        Self::NAMES
            .into_iter()
            .filter(move |(_, f)| self.contains(*f))
            .map(|(n, _)| n)
    }
    pub fn from_name(name: &str) -> Option<Self> {
        Self::NAMES
            .into_iter()
            .find(|(n, _)| *n == name)
            .map(|(_, f)| f)
    }
}

impl std::ops::BitOr for Flags {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        self.union(rhs)
    }
}

impl fmt::Debug for Flags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}

impl Serialize for Flags {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_seq(self.names())
        } else {
            s.serialize_u16(self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Flags {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let names = Vec::<String>::deserialize(d)?;
            let mut f = Flags::empty();
            for n in names {
                f.insert(Flags::from_name(&n).ok_or_else(|| {
                    serde::de::Error::custom(format!("unknown reading flag {n:?}"))
                })?);
            }
            Ok(f)
        } else {
            u16::deserialize(d).map(Flags)
        }
    }
}

/// One component of a panel reading (systolic of a blood pressure, for example).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Component {
    pub metric: Metric,
    pub value: f64,
}

/// A coded measurement from one device at one time.
///
/// Exactly one of `value`, `components` (for panels such as blood pressure) or `absent` (a
/// data-absent reason, for special values that carry no number) is given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    pub device: DeviceId,
    /// The metric, written as its LOINC code.
    #[serde(rename = "code")]
    pub metric: Metric,
    #[serde(default)]
    pub value: Option<f64>,
    #[serde(default)]
    pub components: Vec<Component>,
    #[serde(default)]
    pub absent: Option<DataAbsentReason>,
    /// Device time: when the measurement was taken, by the device's clock.
    pub time: Timestamp,
    /// Gateway receive time.
    #[serde(default)]
    pub received: Option<Timestamp>,
    #[serde(default)]
    pub flags: Flags,
    #[serde(default)]
    pub source: Source,
    /// Patient named by the source itself (HL7 PID), when it names one. The hub still
    /// attributes by assignment when the device has one.
    #[serde(default)]
    pub patient: Option<PatientId>,
}

impl Reading {
    /// A single-valued reading in the metric's canonical unit.
    pub fn quantity(device: DeviceId, metric: Metric, value: f64, time: Timestamp) -> Self {
        Self {
            device,
            metric,
            value: Some(value),
            components: Vec::new(),
            absent: None,
            time,
            received: None,
            flags: Flags::empty(),
            source: Source::Other,
            patient: None,
        }
    }

    /// A panel reading (components in the panel's canonical units).
    pub fn panel(
        device: DeviceId,
        metric: Metric,
        components: Vec<Component>,
        time: Timestamp,
    ) -> Self {
        Self {
            value: None,
            components,
            ..Self::quantity(device, metric, 0.0, time)
        }
    }

    /// A reading whose value is absent for a reason (NaN, NRes, ...).
    pub fn absent(
        device: DeviceId,
        metric: Metric,
        reason: DataAbsentReason,
        time: Timestamp,
    ) -> Self {
        Self {
            value: None,
            absent: Some(reason),
            ..Self::quantity(device, metric, 0.0, time)
        }
    }

    /// The value of one component, or of the reading itself when `metric` is its own.
    pub fn value_of(&self, metric: Metric) -> Option<f64> {
        if metric == self.metric {
            return self.value;
        }
        self.components
            .iter()
            .find(|c| c.metric == metric)
            .map(|c| c.value)
    }
}

/// What a gateway stores in its outbox and sends to the hub.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Record {
    Reading(Reading),
    Event(Event),
}

impl Record {
    pub fn device(&self) -> &DeviceId {
        match self {
            Self::Reading(r) => &r.device,
            Self::Event(e) => &e.device,
        }
    }
    pub fn time(&self) -> Timestamp {
        match self {
            Self::Reading(r) => r.time,
            Self::Event(e) => e.time,
        }
    }
    pub fn received(&self) -> Option<Timestamp> {
        match self {
            Self::Reading(r) => r.received,
            Self::Event(e) => e.received,
        }
    }
    pub fn set_received(&mut self, t: Timestamp) {
        match self {
            Self::Reading(r) => r.received = Some(t),
            Self::Event(e) => e.received = Some(t),
        }
    }
    /// Continuous high-rate stream samples may be thinned when storage is short; spot
    /// readings and events never are.
    pub fn is_stream_sample(&self) -> bool {
        matches!(self, Self::Reading(r) if r.metric.def().stream)
    }
}

/// Why a record is not acceptable. Each has a stable code for APIs and quarantine.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum ReadingError {
    #[error("{metric} value {value} is outside the possible range {lo}..={hi} {unit}")]
    ImpossibleValue {
        metric: String,
        value: f64,
        lo: f64,
        hi: f64,
        unit: String,
    },
    #[error("value is not a finite number")]
    NotFinite,
    #[error("reading has no value, no components and no data-absent reason")]
    NoValue,
    #[error("reading gives more than one of value, components and data-absent reason")]
    AmbiguousValue,
    #[error("component {component} does not belong to panel {panel}")]
    ForeignComponent { component: String, panel: String },
    #[error("time {time} is {ahead_s} s ahead of the receiver's clock")]
    FutureTime { time: Timestamp, ahead_s: i64 },
    #[error("time {0} is before 1990")]
    AncientTime(Timestamp),
}

impl ReadingError {
    /// A stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::ImpossibleValue { .. } => "impossible_value",
            Self::NotFinite => "not_finite",
            Self::NoValue => "no_value",
            Self::AmbiguousValue => "ambiguous_value",
            Self::ForeignComponent { .. } => "foreign_component",
            Self::FutureTime { .. } => "future_time",
            Self::AncientTime(_) => "ancient_time",
        }
    }
}

/// 1990-01-01T00:00:00Z: no medical device reading in Vigil predates it.
const EPOCH_1990_MS: i64 = 631_152_000_000;

fn check_value(metric: Metric, v: f64) -> Result<(), ReadingError> {
    if !v.is_finite() {
        return Err(ReadingError::NotFinite);
    }
    if !metric.possible(v) {
        let [lo, hi] = metric.def().range;
        return Err(ReadingError::ImpossibleValue {
            metric: metric.key().to_owned(),
            value: v,
            lo,
            hi,
            unit: metric.ucum().to_owned(),
        });
    }
    Ok(())
}

/// Checks a record against the registry's possible ranges and the receiver's clock.
/// `max_future_ms` is how far ahead of `now` a device time may be (clock skew allowance).
pub fn validate_record(
    rec: &Record,
    now: Timestamp,
    max_future_ms: i64,
) -> Result<(), ReadingError> {
    let t = rec.time();
    if t.0 > now.0.saturating_add(max_future_ms) {
        return Err(ReadingError::FutureTime {
            time: t,
            ahead_s: (t.0 - now.0) / 1000,
        });
    }
    if t.0 < EPOCH_1990_MS {
        return Err(ReadingError::AncientTime(t));
    }
    let Record::Reading(r) = rec else {
        return Ok(());
    };
    let forms = usize::from(r.value.is_some())
        + usize::from(!r.components.is_empty())
        + usize::from(r.absent.is_some());
    match forms {
        0 => return Err(ReadingError::NoValue),
        1 => {}
        _ => return Err(ReadingError::AmbiguousValue),
    }
    if let Some(v) = r.value {
        check_value(r.metric, v)?;
    }
    for c in &r.components {
        if !r.metric.components().contains(&c.metric) {
            return Err(ReadingError::ForeignComponent {
                component: c.metric.loinc().to_owned(),
                panel: r.metric.loinc().to_owned(),
            });
        }
        check_value(c.metric, c.value)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev() -> DeviceId {
        DeviceId::new("ox-1").expect("id")
    }
    fn m(code: &str) -> Metric {
        code.parse().expect("code")
    }
    const NOW: Timestamp = Timestamp(1_700_000_000_000);

    #[test]
    fn impossible_values_are_rejected_with_their_range() {
        let r = Record::Reading(Reading::quantity(dev(), m("spo2"), 140.0, NOW));
        let e = validate_record(&r, NOW, 0).expect_err("140 % SpO2");
        assert_eq!(e.code(), "impossible_value");
        let w = Record::Reading(Reading::quantity(dev(), m("body-weight"), -2.0, NOW));
        assert_eq!(
            validate_record(&w, NOW, 0).map_err(|e| e.code()),
            Err("impossible_value")
        );
        let ok = Record::Reading(Reading::quantity(dev(), m("spo2"), 97.0, NOW));
        assert_eq!(validate_record(&ok, NOW, 0), Ok(()));
    }

    #[test]
    fn times_far_in_the_future_are_rejected() {
        let r = Record::Reading(Reading::quantity(
            dev(),
            m("8867-4"),
            70.0,
            Timestamp(NOW.0 + 3_600_000),
        ));
        assert_eq!(
            validate_record(&r, NOW, 300_000).map_err(|e| e.code()),
            Err("future_time")
        );
        assert_eq!(validate_record(&r, NOW, 7_200_000), Ok(()));
    }

    #[test]
    fn panels_accept_only_their_own_components() {
        let bp = m("85354-9");
        let good = Reading::panel(
            dev(),
            bp,
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
            NOW,
        );
        assert_eq!(
            validate_record(&Record::Reading(good.clone()), NOW, 0),
            Ok(())
        );
        assert_eq!(good.value_of(m("8462-4")), Some(80.0));
        let bad = Reading::panel(
            dev(),
            bp,
            vec![Component {
                metric: m("8867-4"),
                value: 70.0,
            }],
            NOW,
        );
        assert_eq!(
            validate_record(&Record::Reading(bad), NOW, 0).map_err(|e| e.code()),
            Err("foreign_component")
        );
    }

    #[test]
    fn a_reading_needs_exactly_one_value_form() {
        let mut r = Reading::quantity(dev(), m("8867-4"), 70.0, NOW);
        r.absent = Some(DataAbsentReason::NotANumber);
        assert_eq!(
            validate_record(&Record::Reading(r.clone()), NOW, 0).map_err(|e| e.code()),
            Err("ambiguous_value")
        );
        r.value = None;
        assert_eq!(validate_record(&Record::Reading(r.clone()), NOW, 0), Ok(()));
        r.absent = None;
        assert_eq!(
            validate_record(&Record::Reading(r), NOW, 0).map_err(|e| e.code()),
            Err("no_value")
        );
    }

    #[test]
    fn questionable_readings_are_not_trustworthy() {
        assert!(Flags::empty().trustworthy());
        assert!(Flags::LOW_BATTERY.trustworthy());
        assert!(!Flags::QUESTIONABLE.trustworthy());
        assert!(!(Flags::INVALID | Flags::LOW_BATTERY).trustworthy());
    }

    #[test]
    fn json_form_is_readable() {
        let mut r = Reading::quantity(dev(), m("spo2"), 97.0, Timestamp(1_000));
        r.flags = Flags::QUESTIONABLE;
        let j = serde_json::to_value(Record::Reading(r.clone())).expect("json");
        assert_eq!(j["reading"]["code"], "59408-5");
        assert_eq!(j["reading"]["time"], "1970-01-01T00:00:01Z");
        assert_eq!(j["reading"]["flags"][0], "questionable");
        let back: Record = serde_json::from_value(j).expect("back");
        assert_eq!(back, Record::Reading(r));
    }

    mod prop {
        use super::*;
        use crate::{Event, EventKind};
        use proptest::prelude::*;

        fn metric() -> impl Strategy<Value = Metric> {
            let all: Vec<Metric> = crate::registry().all().collect();
            proptest::sample::select(all)
        }

        fn record() -> impl Strategy<Value = Record> {
            let reading = (
                metric(),
                proptest::option::of(-1e6f64..1e6),
                0i64..253_402_300_799_999,
                any::<u16>(),
                proptest::option::of(0i64..253_402_300_799_999),
            )
                .prop_map(|(metric, value, t, flags, rx)| {
                    let mut r = Reading::quantity(
                        DeviceId::new("dev-1").expect("id"),
                        metric,
                        0.0,
                        Timestamp(t),
                    );
                    r.value = value;
                    r.flags = Flags(flags & 0x0FFF);
                    r.received = rx.map(Timestamp);
                    Record::Reading(r)
                });
            let event =
                (0i64..253_402_300_799_999, any::<bool>(), ".{0,20}").prop_map(|(t, b, s)| {
                    Record::Event(Event {
                        device: DeviceId::new("dev-2").expect("id"),
                        time: Timestamp(t),
                        received: None,
                        kind: if b {
                            EventKind::Fall {
                                confidence: Some(0.5),
                            }
                        } else {
                            EventKind::StockLevel {
                                item: s,
                                quantity: 3.0,
                                location: None,
                            }
                        },
                        source: Source::Simulator,
                        patient: None,
                    })
                });
            prop_oneof![reading, event]
        }

        proptest! {
            #[test]
            fn postcard_and_json_round_trip(r in record()) {
                let bin = postcard::to_stdvec(&r).expect("encode");
                let back: Record = postcard::from_bytes(&bin).expect("decode");
                prop_assert_eq!(&back, &r);
                let json = serde_json::to_string(&r).expect("json");
                let back: Record = serde_json::from_str(&json).expect("json back");
                prop_assert_eq!(back, r);
            }
        }
    }
}

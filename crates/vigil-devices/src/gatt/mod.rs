//! Bluetooth SIG GATT health characteristics, byte-exact (layouts from the GATT Specification
//! Supplement). Each characteristic has a pure `decode_XXXX(bytes, ctx)` named after its
//! 16-bit UUID, and [`decode`] dispatches by UUID.
//!
//! A [`Decoded`] holds the characteristic's fields under their specification names (a JSON
//! object: `heart_rate_bpm`, `systolic`, `timestamp {year, ...}`, status objects of named
//! booleans with the raw word beside them as `<name>_raw`) and canonical readings.
//!
//! Rules shared by every characteristic:
//!
//! - Strict on layout: a payload shorter than the characteristic's minimum, a field cut short,
//!   bytes after the last field the flags announce, and reserved bits set in the flags byte
//!   (which could announce fields this decoder does not know) are errors naming the
//!   characteristic and the byte offset.
//! - Lenient on information: reserved values of informational enumerations (temperature type,
//!   sample location, pulse-rate range) decode to `"reserved"`, and reserved status bits are
//!   kept in the `_raw` word only.
//! - Time: a complete, valid timestamp in the payload is the reading time, read as UTC. A
//!   timestamp with an unknown (zero) or impossible part falls back to the receive time and
//!   flags the reading `CLOCK_SUSPECT`; a payload without a timestamp uses the receive time.
//! - Special SFLOAT/FLOAT values become readings with `absent` set and no value.
//! - Status bits become reading flags as each module documents; a flag that makes a reading
//!   not [`trustworthy`](vigil_model::Flags::trustworthy) is chosen only where the bit says
//!   the value itself is unreliable.

mod blood_pressure;
mod glucose;
mod heart_rate;
mod plx;
mod temperature;
mod weight;

pub use blood_pressure::{decode_2a35, decode_2a36};
pub use glucose::decode_2a18;
pub use heart_rate::decode_2a37;
pub use plx::{decode_2a5e, decode_2a5f};
pub use temperature::decode_2a1c;
pub use weight::decode_2a9d;

use crate::ieee11073::{Decimal, Numeric, decode_float, decode_sfloat};
use crate::{DecodeContext, DecodeError, Decoded, Decoder};
use serde_json::{Map, Value};
use std::fmt;
use vigil_model::{DataAbsentReason, Flags, Metric, Reading, Source, Timestamp, UnitError};

/// The GATT health characteristics this module decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Characteristic {
    HeartRateMeasurement,
    TemperatureMeasurement,
    BloodPressureMeasurement,
    IntermediateCuffPressure,
    PlxSpotCheckMeasurement,
    PlxContinuousMeasurement,
    GlucoseMeasurement,
    WeightMeasurement,
}

impl Characteristic {
    pub const ALL: [Self; 8] = [
        Self::HeartRateMeasurement,
        Self::TemperatureMeasurement,
        Self::BloodPressureMeasurement,
        Self::IntermediateCuffPressure,
        Self::PlxSpotCheckMeasurement,
        Self::PlxContinuousMeasurement,
        Self::GlucoseMeasurement,
        Self::WeightMeasurement,
    ];

    /// The 16-bit Bluetooth SIG UUID.
    pub const fn uuid(self) -> u16 {
        match self {
            Self::HeartRateMeasurement => 0x2A37,
            Self::TemperatureMeasurement => 0x2A1C,
            Self::BloodPressureMeasurement => 0x2A35,
            Self::IntermediateCuffPressure => 0x2A36,
            Self::PlxSpotCheckMeasurement => 0x2A5E,
            Self::PlxContinuousMeasurement => 0x2A5F,
            Self::GlucoseMeasurement => 0x2A18,
            Self::WeightMeasurement => 0x2A9D,
        }
    }

    /// The Bluetooth SIG name.
    pub const fn name(self) -> &'static str {
        match self {
            Self::HeartRateMeasurement => "Heart Rate Measurement",
            Self::TemperatureMeasurement => "Temperature Measurement",
            Self::BloodPressureMeasurement => "Blood Pressure Measurement",
            Self::IntermediateCuffPressure => "Intermediate Cuff Pressure",
            Self::PlxSpotCheckMeasurement => "PLX Spot-Check Measurement",
            Self::PlxContinuousMeasurement => "PLX Continuous Measurement",
            Self::GlucoseMeasurement => "Glucose Measurement",
            Self::WeightMeasurement => "Weight Measurement",
        }
    }

    pub fn from_uuid(uuid: u16) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.uuid() == uuid)
    }

    /// The format name of this characteristic for [`crate::decoder_for`]: `ble:2A37`.
    pub fn format(self) -> String {
        format!("ble:{:04X}", self.uuid())
    }
}

impl fmt::Display for Characteristic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (0x{:04X})", self.name(), self.uuid())
    }
}

/// Why a GATT payload was rejected.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum GattError {
    #[error("{characteristic}: payload is {len} bytes, shorter than the {min}-byte minimum")]
    TooShort {
        characteristic: Characteristic,
        len: usize,
        min: usize,
    },
    #[error(
        "{characteristic}: field {field} at byte offset {offset} needs {needed} bytes, only {available} remain"
    )]
    Truncated {
        characteristic: Characteristic,
        field: &'static str,
        offset: usize,
        needed: usize,
        available: usize,
    },
    #[error(
        "{characteristic}: reserved flag bits {bits:#04x} are set in the flags byte at offset 0"
    )]
    ReservedFlags {
        characteristic: Characteristic,
        bits: u8,
    },
    #[error(
        "{characteristic}: {count} unexpected bytes at byte offset {offset}, after the last field the flags announce"
    )]
    TrailingBytes {
        characteristic: Characteristic,
        offset: usize,
        count: usize,
    },
    #[error("characteristic 0x{0:04X} is not a supported health characteristic")]
    Unsupported(u16),
    #[error("{characteristic}: {source}")]
    Unit {
        characteristic: Characteristic,
        #[source]
        source: UnitError,
    },
    #[error("the code registry has no metric {0:?}")]
    Registry(&'static str),
}

/// Decodes one notification or indication of the characteristic with this UUID.
pub fn decode(uuid: u16, bytes: &[u8], ctx: &DecodeContext) -> Result<Decoded, GattError> {
    match Characteristic::from_uuid(uuid) {
        Some(Characteristic::HeartRateMeasurement) => decode_2a37(bytes, ctx),
        Some(Characteristic::TemperatureMeasurement) => decode_2a1c(bytes, ctx),
        Some(Characteristic::BloodPressureMeasurement) => decode_2a35(bytes, ctx),
        Some(Characteristic::IntermediateCuffPressure) => decode_2a36(bytes, ctx),
        Some(Characteristic::PlxSpotCheckMeasurement) => decode_2a5e(bytes, ctx),
        Some(Characteristic::PlxContinuousMeasurement) => decode_2a5f(bytes, ctx),
        Some(Characteristic::GlucoseMeasurement) => decode_2a18(bytes, ctx),
        Some(Characteristic::WeightMeasurement) => decode_2a9d(bytes, ctx),
        None => Err(GattError::Unsupported(uuid)),
    }
}

/// The [`Decoder`] of one characteristic.
#[derive(Debug, Clone)]
pub struct GattDecoder {
    characteristic: Characteristic,
    format: String,
}

impl GattDecoder {
    pub fn new(characteristic: Characteristic) -> Self {
        Self {
            characteristic,
            format: characteristic.format(),
        }
    }
}

impl Decoder for GattDecoder {
    fn format(&self) -> &str {
        &self.format
    }
    fn decode(&self, input: &[u8], ctx: &DecodeContext) -> Result<Vec<Decoded>, DecodeError> {
        Ok(vec![decode(self.characteristic.uuid(), input, ctx)?])
    }
}

/// Registry names: `ble:2A37` and the other supported characteristics.
pub(crate) fn format_names() -> Vec<String> {
    Characteristic::ALL.iter().map(|c| c.format()).collect()
}

/// Registry factory: `rest` is the UUID after `ble:` (`2a37`, `0x2a37`).
pub(crate) fn decoder_for(rest: &str) -> Option<Box<dyn Decoder>> {
    let hex = rest.strip_prefix("0x").unwrap_or(rest);
    if hex.is_empty() || hex.len() > 4 {
        return None;
    }
    let uuid = u16::from_str_radix(hex, 16).ok()?;
    let c = Characteristic::from_uuid(uuid)?;
    Some(Box::new(GattDecoder::new(c)))
}

/// A read position in a payload; every read is checked.
pub(crate) struct Cursor<'a> {
    ch: Characteristic,
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    /// Starts a payload, rejecting one shorter than `min` bytes.
    pub(crate) fn new(ch: Characteristic, bytes: &'a [u8], min: usize) -> Result<Self, GattError> {
        if bytes.len() < min {
            return Err(GattError::TooShort {
                characteristic: ch,
                len: bytes.len(),
                min,
            });
        }
        Ok(Self { ch, bytes, pos: 0 })
    }

    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len().saturating_sub(self.pos)
    }

    fn take<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], GattError> {
        let slice = self
            .bytes
            .get(self.pos..)
            .and_then(|rest| rest.get(..N))
            .and_then(|s| <[u8; N]>::try_from(s).ok());
        match slice {
            Some(a) => {
                self.pos += N;
                Ok(a)
            }
            None => Err(GattError::Truncated {
                characteristic: self.ch,
                field,
                offset: self.pos,
                needed: N,
                available: self.remaining(),
            }),
        }
    }

    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, GattError> {
        self.take::<1>(field).map(|[b]| b)
    }
    pub(crate) fn u16(&mut self, field: &'static str) -> Result<u16, GattError> {
        self.take::<2>(field).map(u16::from_le_bytes)
    }
    pub(crate) fn i16(&mut self, field: &'static str) -> Result<i16, GattError> {
        self.take::<2>(field).map(i16::from_le_bytes)
    }
    pub(crate) fn u24(&mut self, field: &'static str) -> Result<u32, GattError> {
        self.take::<3>(field)
            .map(|[a, b, c]| u32::from_le_bytes([a, b, c, 0]))
    }
    pub(crate) fn sfloat(&mut self, field: &'static str) -> Result<Numeric, GattError> {
        self.u16(field).map(decode_sfloat)
    }
    pub(crate) fn float(&mut self, field: &'static str) -> Result<Numeric, GattError> {
        self.take::<4>(field)
            .map(|b| decode_float(u32::from_le_bytes(b)))
    }
    pub(crate) fn date_time(&mut self, field: &'static str) -> Result<DateTime, GattError> {
        let [y0, y1, month, day, hour, minute, second] = self.take::<7>(field)?;
        Ok(DateTime {
            year: u16::from_le_bytes([y0, y1]),
            month,
            day,
            hour,
            minute,
            second,
        })
    }

    /// Rejects reserved bits of the flags byte (bits outside `known`).
    pub(crate) fn check_flags(&self, flags: u8, known: u8) -> Result<(), GattError> {
        let bits = flags & !known;
        if bits == 0 {
            Ok(())
        } else {
            Err(GattError::ReservedFlags {
                characteristic: self.ch,
                bits,
            })
        }
    }

    /// Rejects bytes after the last announced field.
    pub(crate) fn finish(self) -> Result<(), GattError> {
        match self.remaining() {
            0 => Ok(()),
            count => Err(GattError::TrailingBytes {
                characteristic: self.ch,
                offset: self.pos,
                count,
            }),
        }
    }
}

/// The Bluetooth Date Time characteristic (0x2A08): zero year, month or day means unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateTime {
    pub year: u16,
    pub month: u8,
    pub day: u8,
    pub hour: u8,
    pub minute: u8,
    pub second: u8,
}

impl DateTime {
    /// `{year, month, day, hour, minute, second}` with `null` for unknown parts.
    pub fn to_json(self) -> Value {
        let known = |v: u16| {
            if v == 0 { Value::Null } else { Value::from(v) }
        };
        let mut m = Map::new();
        m.insert("year".into(), known(self.year));
        m.insert("month".into(), known(u16::from(self.month)));
        m.insert("day".into(), known(u16::from(self.day)));
        m.insert("hour".into(), Value::from(self.hour));
        m.insert("minute".into(), Value::from(self.minute));
        m.insert("second".into(), Value::from(self.second));
        Value::Object(m)
    }

    /// The instant, read as UTC, when every part is known and valid.
    pub fn to_timestamp(self) -> Option<Timestamp> {
        if !(1582..=9999).contains(&self.year) {
            return None;
        }
        let month = time::Month::try_from(self.month).ok()?;
        let date = time::Date::from_calendar_date(i32::from(self.year), month, self.day).ok()?;
        let t = time::Time::from_hms(self.hour, self.minute, self.second).ok()?;
        let secs = time::PrimitiveDateTime::new(date, t)
            .assume_utc()
            .unix_timestamp();
        Some(Timestamp::from_millis(secs.saturating_mul(1000)))
    }

    /// Adds whole minutes (the glucose time offset).
    pub(crate) fn timestamp_plus_minutes(self, minutes: i16) -> Option<Timestamp> {
        self.to_timestamp()
            .map(|t| t.saturating_add_millis(i64::from(minutes) * 60_000))
    }
}

/// The reading time for an optional payload time (see the module rules).
pub(crate) fn reading_time(
    payload: Option<Option<Timestamp>>,
    ctx: &DecodeContext,
    flags: &mut Flags,
) -> Timestamp {
    match payload {
        Some(Some(t)) => t,
        Some(None) => {
            flags.insert(Flags::CLOCK_SUSPECT);
            ctx.received
        }
        None => ctx.received,
    }
}

/// A named bit of a status word and the reading flags it sets.
pub(crate) struct Bit {
    pub bit: u8,
    pub name: &'static str,
    pub flags: Flags,
}

pub(crate) const fn bit(bit: u8, name: &'static str, flags: Flags) -> Bit {
    Bit { bit, name, flags }
}

/// The named bits of `raw` as a JSON object of booleans, and the reading flags they set.
pub(crate) fn status_bits(raw: u32, table: &[Bit]) -> (Value, Flags) {
    let mut m = Map::new();
    let mut flags = Flags::empty();
    for b in table {
        let set = raw.checked_shr(u32::from(b.bit)).unwrap_or(0) & 1 == 1;
        m.insert(b.name.into(), Value::Bool(set));
        if set {
            flags.insert(b.flags);
        }
    }
    (Value::Object(m), flags)
}

/// A field value: the number, or the standard's name of the special value.
pub(crate) fn numeric_json(n: Numeric) -> Value {
    match n {
        Numeric::Number(d) => Value::from(d.to_f64()),
        Numeric::Special(s) => Value::from(s.name()),
    }
}

pub(crate) fn metric(key: &'static str) -> Result<Metric, GattError> {
    vigil_model::registry()
        .lookup(key)
        .ok_or(GattError::Registry(key))
}

/// Builds the readings of one payload: one device, time and set of flags.
pub(crate) struct Emit<'c> {
    pub ch: Characteristic,
    pub ctx: &'c DecodeContext,
    pub time: Timestamp,
    pub flags: Flags,
}

impl Emit<'_> {
    fn finish(&self, mut r: Reading) -> Reading {
        r.flags = self.flags;
        r.source = Source::Ble;
        r.received = Some(self.ctx.received);
        r
    }

    fn canonical(&self, metric: Metric, v: f64, unit: &str) -> Result<f64, GattError> {
        metric
            .to_canonical(v, unit)
            .map_err(|source| GattError::Unit {
                characteristic: self.ch,
                source,
            })
    }

    /// A single-valued reading from a value in `unit`, or an absent one.
    pub fn value(
        &self,
        key: &'static str,
        value: Result<Decimal, DataAbsentReason>,
        unit: &str,
    ) -> Result<Reading, GattError> {
        let m = metric(key)?;
        let dev = self.ctx.device.clone();
        let r = match value {
            Ok(d) => Reading::quantity(dev, m, self.canonical(m, d.to_f64(), unit)?, self.time),
            Err(reason) => Reading::absent(dev, m, reason, self.time),
        };
        Ok(self.finish(r))
    }

    /// A panel reading from its components in `unit`. Components with special values are
    /// left out; with none left, the panel is absent for the first component's reason.
    pub fn panel(
        &self,
        key: &'static str,
        components: &[(&'static str, Numeric)],
        unit: &str,
    ) -> Result<Reading, GattError> {
        let panel = metric(key)?;
        let mut parts = Vec::new();
        let mut reason = None;
        for (ckey, n) in components {
            let m = metric(ckey)?;
            match n.decimal() {
                Ok(d) => parts.push(vigil_model::Component {
                    metric: m,
                    value: self.canonical(m, d.to_f64(), unit)?,
                }),
                Err(why) => {
                    reason.get_or_insert(why);
                }
            }
        }
        let dev = self.ctx.device.clone();
        let r = if parts.is_empty() {
            let why = reason.unwrap_or(DataAbsentReason::Unknown);
            Reading::absent(dev, panel, why, self.time)
        } else {
            Reading::panel(dev, panel, parts, self.time)
        };
        Ok(self.finish(r))
    }
}

/// Assembles a [`Decoded`] for a characteristic.
pub(crate) fn decoded(
    ch: Characteristic,
    fields: Map<String, Value>,
    readings: Vec<Reading>,
) -> Decoded {
    Decoded {
        format: ch.format(),
        fields: Value::Object(fields),
        readings,
        events: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn date_times_with_unknown_or_impossible_parts_have_no_instant() {
        let ok = DateTime {
            year: 2012,
            month: 12,
            day: 5,
            hour: 11,
            minute: 50,
            second: 27,
        };
        assert_eq!(
            ok.to_timestamp().map(Timestamp::to_rfc3339).as_deref(),
            Some("2012-12-05T11:50:27Z")
        );
        for bad in [
            DateTime { year: 0, ..ok },
            DateTime { month: 0, ..ok },
            DateTime { month: 13, ..ok },
            DateTime {
                day: 31,
                month: 2,
                ..ok
            },
            DateTime { hour: 24, ..ok },
            DateTime { second: 60, ..ok },
        ] {
            assert_eq!(bad.to_timestamp(), None, "{bad:?}");
        }
    }

    #[test]
    fn unknown_uuids_are_refused_by_name() {
        let ctx = DecodeContext::new(
            vigil_model::DeviceId::new("d").expect("id"),
            Timestamp::from_secs(1_700_000_000),
        );
        let e = decode(0x2A00, &[0, 1], &ctx).expect_err("not a health characteristic");
        assert_eq!(
            e.to_string(),
            "characteristic 0x2A00 is not a supported health characteristic"
        );
    }
}

//! Instants as milliseconds since the Unix epoch, UTC.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// A UTC instant with millisecond precision.
///
/// Human-readable formats (JSON, TOML) carry it as RFC 3339 text; compact binary formats as
/// an `i64` of milliseconds since the Unix epoch. JSON input may also give the integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub i64);

/// Text that is not an RFC 3339 instant.
#[derive(Debug, thiserror::Error)]
#[error("not an RFC 3339 time: {0:?}")]
pub struct TimeParseError(pub String);

impl Timestamp {
    /// The current time from the system clock.
    pub fn now() -> Self {
        let now = OffsetDateTime::now_utc();
        Self((now.unix_timestamp_nanos() / 1_000_000) as i64)
    }

    pub const fn from_millis(ms: i64) -> Self {
        Self(ms)
    }

    pub const fn millis(self) -> i64 {
        self.0
    }

    pub const fn from_secs(s: i64) -> Self {
        Self(s * 1000)
    }

    /// Parses RFC 3339 (`2024-05-01T12:00:00Z`, offsets allowed).
    pub fn parse(s: &str) -> Result<Self, TimeParseError> {
        let t =
            OffsetDateTime::parse(s.trim(), &Rfc3339).map_err(|_| TimeParseError(s.to_owned()))?;
        Ok(Self((t.unix_timestamp_nanos() / 1_000_000) as i64))
    }

    pub fn to_offset_date_time(self) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0) * 1_000_000)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }

    /// RFC 3339 text in UTC with milliseconds when they are not zero.
    pub fn to_rfc3339(self) -> String {
        let t = self.to_offset_date_time();
        let (y, mo, d) = (t.year(), u8::from(t.month()), t.day());
        let (h, mi, s, ms) = (t.hour(), t.minute(), t.second(), t.millisecond());
        if ms == 0 {
            format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
        } else {
            format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ms:03}Z")
        }
    }

    pub fn saturating_add_millis(self, ms: i64) -> Self {
        Self(self.0.saturating_add(ms))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&self.to_rfc3339())
        } else {
            s.serialize_i64(self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Timestamp;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an RFC 3339 time or milliseconds since the Unix epoch")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Timestamp, E> {
                Timestamp::parse(v).map_err(E::custom)
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Timestamp, E> {
                Ok(Timestamp(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Timestamp, E> {
                i64::try_from(v)
                    .map(Timestamp)
                    .map_err(|_| E::custom("time out of range"))
            }
        }
        if d.is_human_readable() {
            d.deserialize_any(V)
        } else {
            d.deserialize_i64(V)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trip_keeps_milliseconds() {
        let t = Timestamp::parse("2019-12-06T11:34:52.250Z").expect("parse");
        assert_eq!(t.millis(), 1_575_632_092_250);
        assert_eq!(t.to_rfc3339(), "2019-12-06T11:34:52.250Z");
        assert_eq!(
            Timestamp::parse("2019-12-06T12:34:52+01:00")
                .expect("offset")
                .millis(),
            1_575_632_092_000
        );
    }

    #[test]
    fn json_accepts_text_and_integer() {
        let a: Timestamp = serde_json::from_str("\"1970-01-01T00:00:01Z\"").expect("text");
        let b: Timestamp = serde_json::from_str("1000").expect("int");
        assert_eq!(a, b);
        assert!(serde_json::from_str::<Timestamp>("\"yesterday\"").is_err());
    }
}

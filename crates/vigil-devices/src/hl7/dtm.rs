//! HL7 v2 DTM (date/time): `YYYY[MM[DD[HH[MM[SS[.S[S[S[S]]]]]]]]][+/-ZZZZ]`.

use time::{Date, Month, PrimitiveDateTime, Time, UtcOffset};
use vigil_model::Timestamp;

/// Parses a DTM to an instant. At least the day must be given (a reading needs that much);
/// missing hours, minutes and seconds are zero. A time without an offset is read as UTC: PCD-01
/// senders are expected to send the offset, and the gateway cannot know the sender's zone.
pub fn parse_dtm(s: &str) -> Option<Timestamp> {
    let s = s.trim();
    let (main, offset) = match s.find(['+', '-']) {
        Some(i) => (s.get(..i)?, Some(s.get(i..)?)),
        None => (s, None),
    };
    let (digits, fraction) = match main.split_once('.') {
        Some((d, f)) => (d, Some(f)),
        None => (main, None),
    };
    if !digits.bytes().all(|b| b.is_ascii_digit()) || !matches!(digits.len(), 8 | 10 | 12 | 14) {
        return None;
    }
    let num = |from: usize, len: usize| -> Option<u32> {
        match digits.get(from..from + len) {
            Some(p) => p.parse().ok(),
            None => Some(0),
        }
    };
    let year = i32::try_from(num(0, 4)?).ok()?;
    let month = Month::try_from(u8::try_from(num(4, 2)?).ok()?).ok()?;
    let day = u8::try_from(num(6, 2)?).ok()?;
    let hour = u8::try_from(num(8, 2)?).ok()?;
    let minute = u8::try_from(num(10, 2)?).ok()?;
    let second = u8::try_from(num(12, 2)?).ok()?;
    let millis = match fraction {
        None => 0,
        Some(f) if digits.len() == 14 && (1..=4).contains(&f.len()) => {
            if !f.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let padded = format!("{f:0<3}");
            padded.get(..3)?.parse::<u16>().ok()?
        }
        Some(_) => return None,
    };
    let date = Date::from_calendar_date(year, month, day).ok()?;
    let t = Time::from_hms_milli(hour, minute, second, millis).ok()?;
    let offset = match offset {
        None => UtcOffset::UTC,
        Some(o) => {
            let (sign, rest) = o.split_at_checked(1)?;
            if rest.len() != 4 || !rest.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let h: i8 = rest.get(..2)?.parse().ok()?;
            let m: i8 = rest.get(2..)?.parse().ok()?;
            if h > 14 || m > 59 {
                return None;
            }
            let k = if sign == "-" { -1 } else { 1 };
            UtcOffset::from_hms(k * h, k * m, 0).ok()?
        }
    };
    let odt = PrimitiveDateTime::new(date, t).assume_offset(offset);
    Some(Timestamp::from_millis(
        i64::try_from(odt.unix_timestamp_nanos() / 1_000_000).ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Option<String> {
        parse_dtm(s).map(Timestamp::to_rfc3339)
    }

    #[test]
    fn times_without_offset_are_utc_and_offsets_are_applied() {
        assert_eq!(t("20191206113452").as_deref(), Some("2019-12-06T11:34:52Z"));
        assert_eq!(
            t("20191206123452+0100").as_deref(),
            Some("2019-12-06T11:34:52Z")
        );
        assert_eq!(
            t("20191206063452-0500").as_deref(),
            Some("2019-12-06T11:34:52Z")
        );
        assert_eq!(
            t("20191206113452.25").as_deref(),
            Some("2019-12-06T11:34:52.250Z")
        );
        assert_eq!(t("201912061134").as_deref(), Some("2019-12-06T11:34:00Z"));
        assert_eq!(t("20191206").as_deref(), Some("2019-12-06T00:00:00Z"));
    }

    #[test]
    fn malformed_or_imprecise_times_are_refused() {
        for bad in [
            "",
            "2019",
            "201912",
            "20191306113452",
            "20191206253452",
            "2019120611345",
            "20191206113452+01",
            "2019120611x452",
            "20191206113452.",
            "20191206113452+1500",
            "20191206+0100x",
        ] {
            assert_eq!(parse_dtm(bad), None, "{bad:?}");
        }
    }
}

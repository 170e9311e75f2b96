//! IEEE 11073-20601 numbers: SFLOAT (16-bit: 4-bit signed exponent, 12-bit signed mantissa)
//! and FLOAT (32-bit: 8-bit signed exponent, 24-bit signed mantissa), value = mantissa ×
//! 10^exponent. Both travel little-endian inside GATT payloads.
//!
//! The special values (NaN, NRes, ±INFINITY and the reserved word) are the exact words the
//! standard lists, with exponent 0; they decode to [`Special`] and so to a FHIR data-absent
//! reason, never to a number. A mantissa that equals a special pattern under a non-zero
//! exponent is an ordinary number (the Bluetooth SIG and Nordic decoders agree).
//!
//! Numbers keep their decimal form ([`Decimal`]) so that `0xF065` is exactly 10.1: the
//! conversion to `f64` yields the `f64` nearest to the decimal value.

use vigil_model::DataAbsentReason;

/// A special IEEE 11073 value, which carries no number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Special {
    /// Not a number (invalid result).
    NaN,
    /// Not at this resolution.
    NRes,
    PositiveInfinity,
    NegativeInfinity,
    /// Reserved for future use.
    Reserved,
}

impl Special {
    pub const ALL: [Self; 5] = [
        Self::NaN,
        Self::NRes,
        Self::PositiveInfinity,
        Self::NegativeInfinity,
        Self::Reserved,
    ];

    /// The FHIR `data-absent-reason` a reading with this value carries.
    pub const fn absent_reason(self) -> DataAbsentReason {
        match self {
            Self::NaN => DataAbsentReason::NotANumber,
            Self::PositiveInfinity => DataAbsentReason::PositiveInfinity,
            Self::NegativeInfinity => DataAbsentReason::NegativeInfinity,
            Self::NRes | Self::Reserved => DataAbsentReason::Error,
        }
    }

    /// The name the standard gives the value (used in decoded field objects).
    pub const fn name(self) -> &'static str {
        match self {
            Self::NaN => "NaN",
            Self::NRes => "NRes",
            Self::PositiveInfinity => "+INFINITY",
            Self::NegativeInfinity => "-INFINITY",
            Self::Reserved => "reserved",
        }
    }

    const fn sfloat_word(self) -> u16 {
        match self {
            Self::NaN => 0x07FF,
            Self::NRes => 0x0800,
            Self::PositiveInfinity => 0x07FE,
            Self::NegativeInfinity => 0x0802,
            Self::Reserved => 0x0801,
        }
    }

    const fn float_word(self) -> u32 {
        match self {
            Self::NaN => 0x007F_FFFF,
            Self::NRes => 0x0080_0000,
            Self::PositiveInfinity => 0x007F_FFFE,
            Self::NegativeInfinity => 0x0080_0002,
            Self::Reserved => 0x0080_0001,
        }
    }
}

/// A decimal number `mantissa × 10^exponent`, exactly as the device sent it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Decimal {
    pub mantissa: i32,
    pub exponent: i16,
}

/// Powers of ten that `f64` holds exactly.
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

impl Decimal {
    pub const fn new(mantissa: i32, exponent: i16) -> Self {
        Self { mantissa, exponent }
    }

    /// The `f64` nearest to the decimal value (10.1 for `101 × 10^-1`).
    pub fn to_f64(self) -> f64 {
        let m = f64::from(self.mantissa);
        let e = self.exponent;
        // |mantissa| < 2^53 and 10^k exact for k <= 22: one correctly rounded operation.
        if let Some(p) = POW10.get(usize::from(e.unsigned_abs())) {
            return if e >= 0 { m * p } else { m / p };
        }
        // Beyond the exact powers: let the correctly rounded decimal parser do it.
        format!("{}e{}", self.mantissa, e)
            .parse()
            .unwrap_or_else(|_| m * 10f64.powi(i32::from(e)))
    }

    /// The same quantity with the decimal point moved: `scaled(3)` multiplies by 1000
    /// exactly (kg/L to mg/dL is `scaled(5)`).
    pub const fn scaled(self, pow10: i16) -> Self {
        Self {
            mantissa: self.mantissa,
            exponent: self.exponent.saturating_add(pow10),
        }
    }
}

/// A decoded IEEE 11073 number: a decimal or a special value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Numeric {
    Number(Decimal),
    Special(Special),
}

impl Numeric {
    /// The value as `f64`, or `None` for a special value.
    pub fn to_f64(self) -> Option<f64> {
        match self {
            Self::Number(d) => Some(d.to_f64()),
            Self::Special(_) => None,
        }
    }

    /// The decimal, or the data-absent reason of a special value.
    pub fn decimal(self) -> Result<Decimal, DataAbsentReason> {
        match self {
            Self::Number(d) => Ok(d),
            Self::Special(s) => Err(s.absent_reason()),
        }
    }

    /// Moves the decimal point of a number; special values stay as they are.
    pub const fn scaled(self, pow10: i16) -> Self {
        match self {
            Self::Number(d) => Self::Number(d.scaled(pow10)),
            Self::Special(s) => Self::Special(s),
        }
    }
}

/// A value that has no IEEE 11073 encoding.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
pub enum EncodeError {
    #[error("mantissa {mantissa} does not fit in {bits} signed bits")]
    Mantissa { mantissa: i32, bits: u8 },
    #[error("exponent {exponent} does not fit in {bits} signed bits")]
    Exponent { exponent: i16, bits: u8 },
    #[error("{mantissa}e{exponent} has the bit pattern of a special value")]
    CollidesWithSpecial { mantissa: i32, exponent: i16 },
    #[error("{0} is too large for this format")]
    OutOfRange(f64),
}

/// Sign-extends the low `bits` bits of `v`.
const fn sign_extend(v: u32, bits: u32) -> i32 {
    let shift = 32 - bits;
    ((v << shift) as i32) >> shift
}

/// Decodes an SFLOAT word (already assembled from its little-endian bytes).
pub const fn decode_sfloat(word: u16) -> Numeric {
    match word {
        0x07FF => Numeric::Special(Special::NaN),
        0x0800 => Numeric::Special(Special::NRes),
        0x07FE => Numeric::Special(Special::PositiveInfinity),
        0x0802 => Numeric::Special(Special::NegativeInfinity),
        0x0801 => Numeric::Special(Special::Reserved),
        _ => Numeric::Number(Decimal {
            mantissa: sign_extend(word as u32 & 0x0FFF, 12),
            exponent: sign_extend(word as u32 >> 12, 4) as i16,
        }),
    }
}

/// Decodes a FLOAT word (already assembled from its little-endian bytes).
pub const fn decode_float(word: u32) -> Numeric {
    match word {
        0x007F_FFFF => Numeric::Special(Special::NaN),
        0x0080_0000 => Numeric::Special(Special::NRes),
        0x007F_FFFE => Numeric::Special(Special::PositiveInfinity),
        0x0080_0002 => Numeric::Special(Special::NegativeInfinity),
        0x0080_0001 => Numeric::Special(Special::Reserved),
        _ => Numeric::Number(Decimal {
            mantissa: sign_extend(word & 0x00FF_FFFF, 24),
            exponent: (word >> 24) as u8 as i8 as i16,
        }),
    }
}

/// Encodes a number or special value as an SFLOAT word. Decimals must fit the 12-bit
/// mantissa and 4-bit exponent exactly (no rounding) and must not collide with a special word.
pub fn encode_sfloat(n: Numeric) -> Result<u16, EncodeError> {
    let d = match n {
        Numeric::Special(s) => return Ok(s.sfloat_word()),
        Numeric::Number(d) => d,
    };
    if !(-2048..=2047).contains(&d.mantissa) {
        return Err(EncodeError::Mantissa {
            mantissa: d.mantissa,
            bits: 12,
        });
    }
    if !(-8..=7).contains(&d.exponent) {
        return Err(EncodeError::Exponent {
            exponent: d.exponent,
            bits: 4,
        });
    }
    let word = (((d.exponent as u16) & 0x0F) << 12) | ((d.mantissa as u16) & 0x0FFF);
    if matches!(decode_sfloat(word), Numeric::Special(_)) {
        return Err(EncodeError::CollidesWithSpecial {
            mantissa: d.mantissa,
            exponent: d.exponent,
        });
    }
    Ok(word)
}

/// Encodes a number or special value as a FLOAT word (exact, like [`encode_sfloat`]).
pub fn encode_float(n: Numeric) -> Result<u32, EncodeError> {
    let d = match n {
        Numeric::Special(s) => return Ok(s.float_word()),
        Numeric::Number(d) => d,
    };
    if !(-0x80_0000..=0x7F_FFFF).contains(&d.mantissa) {
        return Err(EncodeError::Mantissa {
            mantissa: d.mantissa,
            bits: 24,
        });
    }
    let Ok(exponent) = i8::try_from(d.exponent) else {
        return Err(EncodeError::Exponent {
            exponent: d.exponent,
            bits: 8,
        });
    };
    let word = (u32::from(exponent as u8) << 24) | ((d.mantissa as u32) & 0x00FF_FFFF);
    if matches!(decode_float(word), Numeric::Special(_)) {
        return Err(EncodeError::CollidesWithSpecial {
            mantissa: d.mantissa,
            exponent: d.exponent,
        });
    }
    Ok(word)
}

/// The decimal with the smallest exponent in `exponents` whose rounded mantissa fits
/// `max_mantissa` in magnitude and encodes (the most precise representation of `v`).
fn nearest_decimal(
    v: f64,
    exponents: std::ops::RangeInclusive<i16>,
    max_mantissa: f64,
    encodes: impl Fn(Numeric) -> bool,
) -> Option<Decimal> {
    exponents.into_iter().find_map(|e| {
        let scaled = if e <= 0 {
            v * 10f64.powi(-i32::from(e))
        } else {
            v / 10f64.powi(i32::from(e))
        };
        let m = scaled.round();
        if !m.is_finite() || m.abs() > max_mantissa {
            return None;
        }
        let d = Decimal::new(m as i32, e);
        encodes(Numeric::Number(d)).then_some(d)
    })
}

/// Encodes an `f64` as an SFLOAT word with as many decimals as fit (rounding the last one).
/// NaN and the infinities become their special words.
pub fn sfloat_from_f64(v: f64) -> Result<u16, EncodeError> {
    if v.is_nan() {
        return encode_sfloat(Numeric::Special(Special::NaN));
    }
    if v.is_infinite() {
        let s = if v > 0.0 {
            Special::PositiveInfinity
        } else {
            Special::NegativeInfinity
        };
        return encode_sfloat(Numeric::Special(s));
    }
    let d = nearest_decimal(v, -8..=7, 2048.0, |n| encode_sfloat(n).is_ok())
        .ok_or(EncodeError::OutOfRange(v))?;
    encode_sfloat(Numeric::Number(d))
}

/// Encodes an `f64` as a FLOAT word with as many decimals as fit (rounding the last one).
pub fn float_from_f64(v: f64) -> Result<u32, EncodeError> {
    if v.is_nan() {
        return encode_float(Numeric::Special(Special::NaN));
    }
    if v.is_infinite() {
        let s = if v > 0.0 {
            Special::PositiveInfinity
        } else {
            Special::NegativeInfinity
        };
        return encode_float(Numeric::Special(s));
    }
    // Start near the value's magnitude: a 24-bit mantissa holds about 7 digits.
    let magnitude = if v == 0.0 {
        0
    } else {
        v.abs().log10().floor() as i32
    };
    let lo = (magnitude - 7).clamp(-128, 127) as i16;
    let d = nearest_decimal(v, lo..=127, 8_388_608.0, |n| encode_float(n).is_ok())
        .ok_or(EncodeError::OutOfRange(v))?;
    encode_float(Numeric::Number(d))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn num(n: Numeric) -> f64 {
        n.to_f64().expect("a number")
    }

    #[test]
    fn decimal_exponents_decode_to_the_nearest_f64() {
        assert_eq!(num(decode_sfloat(0xF065)), 10.1);
        assert_eq!(num(decode_sfloat(0xB076)), 0.00118);
        assert_eq!(num(decode_float(0xFE12_D687)), 12345.67);
        assert_eq!(num(decode_float(0xFE00_0EB0)), 37.6);
        assert_eq!(Decimal::new(118, -5).scaled(5).to_f64(), 118.0);
        // Far beyond the exact powers of ten the parser path is used.
        assert_eq!(Decimal::new(1, -100).to_f64(), 1e-100);
        assert_eq!(Decimal::new(-7, 127).to_f64(), -7e127);
    }

    #[test]
    fn special_words_are_not_numbers() {
        for s in Special::ALL {
            assert_eq!(decode_sfloat(s.sfloat_word()), Numeric::Special(s));
            assert_eq!(decode_float(s.float_word()), Numeric::Special(s));
            assert_eq!(encode_sfloat(Numeric::Special(s)), Ok(s.sfloat_word()));
            assert_eq!(encode_float(Numeric::Special(s)), Ok(s.float_word()));
        }
        // The special mantissas under a non-zero exponent are ordinary numbers.
        assert_eq!(num(decode_sfloat(0x17FF)), 20470.0);
    }

    #[test]
    fn encoding_refuses_what_does_not_fit() {
        let e = encode_sfloat(Numeric::Number(Decimal::new(2047, 0)));
        assert!(matches!(e, Err(EncodeError::CollidesWithSpecial { .. })));
        let e = encode_sfloat(Numeric::Number(Decimal::new(4096, 0)));
        assert!(matches!(e, Err(EncodeError::Mantissa { .. })));
        let e = encode_sfloat(Numeric::Number(Decimal::new(1, 8)));
        assert!(matches!(e, Err(EncodeError::Exponent { .. })));
        assert!(sfloat_from_f64(1e30).is_err());
        assert_eq!(sfloat_from_f64(f64::NAN), Ok(0x07FF));
        assert_eq!(float_from_f64(f64::NEG_INFINITY), Ok(0x0080_0002));
    }

    #[test]
    fn every_sfloat_word_decodes_and_every_finite_word_round_trips() {
        for word in 0..=u16::MAX {
            let n = decode_sfloat(word);
            if let Numeric::Number(d) = n {
                assert_eq!(encode_sfloat(n), Ok(word), "{word:#06x}");
                let v = d.to_f64();
                assert!(v.is_finite());
                let again = sfloat_from_f64(v).expect("re-encode");
                assert_eq!(num(decode_sfloat(again)), v, "{word:#06x}");
            }
        }
    }

    proptest! {
        #[test]
        fn every_sfloat_word_decodes_without_panic(word in any::<u16>()) {
            let _ = decode_sfloat(word).to_f64();
        }

        #[test]
        fn finite_sfloat_words_round_trip(word in any::<u16>()) {
            let n = decode_sfloat(word);
            if matches!(n, Numeric::Number(_)) {
                prop_assert_eq!(encode_sfloat(n), Ok(word));
            }
        }

        #[test]
        fn finite_float_words_round_trip_by_word_and_by_value(word in any::<u32>()) {
            let n = decode_float(word);
            if let Numeric::Number(d) = n {
                prop_assert_eq!(encode_float(n), Ok(word));
                let v = d.to_f64();
                prop_assert!(v.is_finite());
                let again = float_from_f64(v).expect("re-encode");
                prop_assert_eq!(num(decode_float(again)), v);
            }
        }

        #[test]
        fn f64_values_encode_within_half_a_last_digit(v in -2000.0f64..2000.0) {
            let w = sfloat_from_f64(v).expect("in range");
            let back = num(decode_sfloat(w));
            let Numeric::Number(d) = decode_sfloat(w) else { unreachable!() };
            prop_assert!((back - v).abs() <= 0.5 * 10f64.powi(i32::from(d.exponent)) + 1e-9);
        }
    }
}

//! Temperature Measurement (0x2A1C).
//!
//! Flags: bit 0 Fahrenheit (else Celsius); bit 1 time stamp present; bit 2 temperature type
//! present; bits 3-7 reserved. The value is an IEEE 11073 FLOAT.
//!
//! Reading: body temperature 8310-5 in Cel (converted from [degF]). The measurement site
//! (temperature type) is kept as a field; it does not change the code.

use super::{Characteristic, Cursor, Emit, GattError, decoded, numeric_json, reading_time};
use crate::{DecodeContext, Decoded};
use serde_json::{Map, Value};
use vigil_model::Flags;

const CH: Characteristic = Characteristic::TemperatureMeasurement;

fn temperature_type(t: u8) -> &'static str {
    match t {
        1 => "armpit",
        2 => "body",
        3 => "ear",
        4 => "finger",
        5 => "gastro_intestinal_tract",
        6 => "mouth",
        7 => "rectum",
        8 => "toe",
        9 => "tympanum",
        _ => "reserved",
    }
}

/// Decodes a Temperature Measurement payload.
pub fn decode_2a1c(bytes: &[u8], ctx: &DecodeContext) -> Result<Decoded, GattError> {
    let mut c = Cursor::new(CH, bytes, 5)?;
    let flags = c.u8("flags")?;
    c.check_flags(flags, 0x07)?;
    let value = c.float("temperature")?;
    let unit = if flags & 0x01 != 0 { "[degF]" } else { "Cel" };
    let mut f = Map::new();
    f.insert("temperature".into(), numeric_json(value));
    f.insert("unit".into(), Value::from(unit));
    let mut stamp = None;
    if flags & 0x02 != 0 {
        let dt = c.date_time("timestamp")?;
        f.insert("timestamp".into(), dt.to_json());
        stamp = Some(dt.to_timestamp());
    }
    if flags & 0x04 != 0 {
        let t = c.u8("temperature_type")?;
        f.insert("temperature_type".into(), Value::from(temperature_type(t)));
    }
    c.finish()?;

    let mut rflags = Flags::empty();
    let time = reading_time(stamp, ctx, &mut rflags);
    let emit = Emit {
        ch: CH,
        ctx,
        time,
        flags: rflags,
    };
    let reading = emit.value("body-temp", value.decimal(), unit)?;
    Ok(decoded(CH, f, vec![reading]))
}

//! Weight Measurement (0x2A9D).
//!
//! Flags: bit 0 imperial (lb and in; else kg and m); bit 1 time stamp present; bit 2 user ID
//! present; bit 3 BMI and height present; bits 4-7 reserved. Payload: weight (UINT16, 0.005 kg
//! or 0.01 lb; 0xFFFF = measurement unsuccessful), time stamp, user ID (UINT8, 255 = unknown),
//! BMI (UINT16, 0.1 kg/m2) and height (UINT16, 0.001 m or 0.1 in).
//!
//! Readings: body weight 29463-7 in kg (from lb when imperial; an unsuccessful measurement is
//! an absent reading with reason `error`), and with BMI and height present, BMI 39156-5 in
//! kg/m2 and body height 8302-2 in cm.

use super::{Characteristic, Cursor, Emit, GattError, decoded, reading_time};
use crate::ieee11073::Decimal;
use crate::{DecodeContext, Decoded};
use serde_json::{Map, Value};
use vigil_model::{DataAbsentReason, Flags};

const CH: Characteristic = Characteristic::WeightMeasurement;

/// Decodes a Weight Measurement payload.
pub fn decode_2a9d(bytes: &[u8], ctx: &DecodeContext) -> Result<Decoded, GattError> {
    let mut c = Cursor::new(CH, bytes, 3)?;
    let flags = c.u8("flags")?;
    c.check_flags(flags, 0x0F)?;
    let imperial = flags & 0x01 != 0;
    let raw = c.u16("weight")?;
    // 0.005 kg = 5 × 10^-3 kg; 0.01 lb = 1 × 10^-2 lb: exact decimals.
    let weight = match raw {
        0xFFFF => Err(DataAbsentReason::Error),
        w if imperial => Ok(Decimal::new(i32::from(w), -2)),
        w => Ok(Decimal::new(i32::from(w) * 5, -3)),
    };
    let mut f = Map::new();
    f.insert(
        "weight".into(),
        match weight {
            Ok(d) => Value::from(d.to_f64()),
            Err(_) => Value::from("measurement_unsuccessful"),
        },
    );
    f.insert(
        "unit".into(),
        Value::from(if imperial { "lb" } else { "kg" }),
    );
    let mut stamp = None;
    if flags & 0x02 != 0 {
        let dt = c.date_time("timestamp")?;
        f.insert("timestamp".into(), dt.to_json());
        stamp = Some(dt.to_timestamp());
    }
    if flags & 0x04 != 0 {
        f.insert("user_id".into(), Value::from(c.u8("user_id")?));
    }
    let mut bmi_height = None;
    if flags & 0x08 != 0 {
        let bmi = Decimal::new(i32::from(c.u16("bmi")?), -1);
        let height_raw = i32::from(c.u16("height")?);
        let height = if imperial {
            Decimal::new(height_raw, -1)
        } else {
            Decimal::new(height_raw, -3)
        };
        f.insert("bmi".into(), Value::from(bmi.to_f64()));
        f.insert("height".into(), Value::from(height.to_f64()));
        f.insert(
            "height_unit".into(),
            Value::from(if imperial { "in" } else { "m" }),
        );
        bmi_height = Some((bmi, height));
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
    let mut readings = vec![emit.value(
        "body-weight",
        weight,
        if imperial { "[lb_av]" } else { "kg" },
    )?];
    if let Some((bmi, height)) = bmi_height {
        readings.push(emit.value("bmi", Ok(bmi), "kg/m2")?);
        // m to cm is an exact decimal shift; inches go through the registry factor.
        let (h, unit) = if imperial {
            (height, "[in_i]")
        } else {
            (height.scaled(2), "cm")
        };
        readings.push(emit.value("body-height", Ok(h), unit)?);
    }
    Ok(decoded(CH, f, readings))
}

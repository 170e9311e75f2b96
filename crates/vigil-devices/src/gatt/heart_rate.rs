//! Heart Rate Measurement (0x2A37).
//!
//! Flags: bit 0 heart rate is UINT16 (else UINT8); bits 1-2 sensor contact (0b0x not
//! supported, 0b10 supported but not detected, 0b11 detected); bit 3 energy expended (UINT16,
//! kJ) present; bit 4 RR intervals (UINT16 each, 1/1024 s) fill the rest; bits 5-7 reserved.
//!
//! Reading: heart rate 8867-4 in /min, at the receive time (the characteristic carries no
//! time). A sensor that reports its contact as not detected makes the value `QUESTIONABLE`:
//! such straps send whatever the last estimate was, or 0.

use super::{Characteristic, Cursor, Emit, GattError, decoded};
use crate::ieee11073::Decimal;
use crate::{DecodeContext, Decoded};
use serde_json::{Map, Value};
use vigil_model::Flags;

const CH: Characteristic = Characteristic::HeartRateMeasurement;

/// Decodes a Heart Rate Measurement payload.
pub fn decode_2a37(bytes: &[u8], ctx: &DecodeContext) -> Result<Decoded, GattError> {
    let mut c = Cursor::new(CH, bytes, 2)?;
    let flags = c.u8("flags")?;
    c.check_flags(flags, 0x1F)?;
    let hr = if flags & 0x01 != 0 {
        c.u16("heart_rate_bpm")?
    } else {
        u16::from(c.u8("heart_rate_bpm")?)
    };
    let contact = match (flags >> 1) & 0x03 {
        0b10 => "not_detected",
        0b11 => "detected",
        _ => "unsupported",
    };
    let mut f = Map::new();
    f.insert("heart_rate_bpm".into(), Value::from(hr));
    f.insert("sensor_contact".into(), Value::from(contact));
    if flags & 0x08 != 0 {
        f.insert(
            "energy_expended_kj".into(),
            Value::from(c.u16("energy_expended_kj")?),
        );
    }
    if flags & 0x10 != 0 {
        let mut rr = vec![c.u16("rr_intervals_1024th_s")?];
        while c.remaining() > 0 {
            rr.push(c.u16("rr_intervals_1024th_s")?);
        }
        f.insert("rr_intervals_1024th_s".into(), Value::from(rr));
    }
    c.finish()?;

    let emit = Emit {
        ch: CH,
        ctx,
        time: ctx.received,
        flags: if contact == "not_detected" {
            Flags::QUESTIONABLE
        } else {
            Flags::empty()
        },
    };
    let reading = emit.value("heart-rate", Ok(Decimal::new(i32::from(hr), 0)), "/min")?;
    Ok(decoded(CH, f, vec![reading]))
}

//! Blood Pressure Measurement (0x2A35) and Intermediate Cuff Pressure (0x2A36).
//!
//! Flags: bit 0 kPa (else mmHg); bit 1 time stamp present; bit 2 pulse rate present; bit 3
//! user ID present; bit 4 measurement status present; bits 5-7 reserved. Then three SFLOATs
//! (systolic, diastolic, mean arterial; for 0x2A36 the first is the current cuff pressure and
//! the other two are unused), the optional time stamp, pulse rate (SFLOAT), user ID (UINT8,
//! 255 = unknown user) and measurement status (UINT16).
//!
//! Readings of 0x2A35: one blood-pressure panel 85354-9 with components 8480-6, 8462-4 and
//! 8478-0 in mm[Hg] (converted from kPa), leaving out components with special values, and a
//! heart rate 8867-4 when the pulse rate is present. 0x2A36 yields no reading: a cuff
//! pressure during inflation is not a blood pressure.
//!
//! Status to flags (our choice): body movement → `MOTION_ARTIFACT` (informational: the value
//! may still alert, as a hypertensive reading during movement should not be silenced); cuff
//! fit too loose and improper measurement position → `QUESTIONABLE` (technique errors known to
//! bias the value). Irregular pulse and the pulse-rate range are clinical findings, not quality
//! problems: they stay fields only.

use super::{
    Bit, Characteristic, Cursor, Emit, GattError, bit, decoded, numeric_json, reading_time,
    status_bits,
};
use crate::{DecodeContext, Decoded};
use serde_json::{Map, Value};
use vigil_model::Flags;

const STATUS: [Bit; 4] = [
    bit(0, "body_movement", Flags::MOTION_ARTIFACT),
    bit(1, "cuff_too_loose", Flags::QUESTIONABLE),
    bit(2, "irregular_pulse", Flags::empty()),
    bit(5, "improper_position", Flags::QUESTIONABLE),
];

/// Decodes a Blood Pressure Measurement payload.
pub fn decode_2a35(bytes: &[u8], ctx: &DecodeContext) -> Result<Decoded, GattError> {
    decode_bp(Characteristic::BloodPressureMeasurement, bytes, ctx)
}

/// Decodes an Intermediate Cuff Pressure payload (fields only, no reading).
pub fn decode_2a36(bytes: &[u8], ctx: &DecodeContext) -> Result<Decoded, GattError> {
    decode_bp(Characteristic::IntermediateCuffPressure, bytes, ctx)
}

fn decode_bp(ch: Characteristic, bytes: &[u8], ctx: &DecodeContext) -> Result<Decoded, GattError> {
    let intermediate = ch == Characteristic::IntermediateCuffPressure;
    let mut c = Cursor::new(ch, bytes, 7)?;
    let flags = c.u8("flags")?;
    c.check_flags(flags, 0x1F)?;
    let kpa = flags & 0x01 != 0;
    let first = c.sfloat(if intermediate {
        "current_cuff_pressure"
    } else {
        "systolic"
    })?;
    let diastolic = c.sfloat("diastolic")?;
    let mean = c.sfloat("mean_arterial")?;
    let mut f = Map::new();
    f.insert("unit".into(), Value::from(if kpa { "kPa" } else { "mmHg" }));
    if intermediate {
        f.insert("current_cuff_pressure".into(), numeric_json(first));
    } else {
        f.insert("systolic".into(), numeric_json(first));
        f.insert("diastolic".into(), numeric_json(diastolic));
        f.insert("mean_arterial".into(), numeric_json(mean));
    }
    let mut stamp = None;
    if flags & 0x02 != 0 {
        let dt = c.date_time("timestamp")?;
        f.insert("timestamp".into(), dt.to_json());
        stamp = Some(dt.to_timestamp());
    }
    let mut pulse = None;
    if flags & 0x04 != 0 {
        let p = c.sfloat("pulse_rate_bpm")?;
        f.insert("pulse_rate_bpm".into(), numeric_json(p));
        pulse = Some(p);
    }
    if flags & 0x08 != 0 {
        f.insert("user_id".into(), Value::from(c.u8("user_id")?));
    }
    let mut rflags = Flags::empty();
    if flags & 0x10 != 0 {
        let raw = c.u16("status")?;
        let (mut status, set) = status_bits(u32::from(raw), &STATUS);
        let range = match (raw >> 3) & 0x03 {
            0 => "within",
            1 => "exceeds_upper_limit",
            2 => "below_lower_limit",
            _ => "reserved",
        };
        if let Value::Object(m) = &mut status {
            m.insert("pulse_rate_range".into(), Value::from(range));
        }
        f.insert("status".into(), status);
        f.insert("status_raw".into(), Value::from(raw));
        rflags.insert(set);
    }
    c.finish()?;

    if intermediate {
        return Ok(decoded(ch, f, Vec::new()));
    }
    let time = reading_time(stamp, ctx, &mut rflags);
    let emit = Emit {
        ch,
        ctx,
        time,
        flags: rflags,
    };
    let unit = if kpa { "kPa" } else { "mm[Hg]" };
    let mut readings = vec![emit.panel(
        "bp",
        &[
            ("bp-systolic", first),
            ("bp-diastolic", diastolic),
            ("bp-mean", mean),
        ],
        unit,
    )?];
    if let Some(p) = pulse {
        readings.push(emit.value("heart-rate", p.decimal(), "/min")?);
    }
    Ok(decoded(ch, f, readings))
}

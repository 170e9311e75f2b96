//! Glucose Measurement (0x2A18).
//!
//! Flags: bit 0 time offset present; bit 1 concentration, type and sample location present;
//! bit 2 concentration unit mol/L (else kg/L); bit 3 sensor status annunciation present; bit 4
//! context information follows (in a separate Glucose Measurement Context notification);
//! bits 5-7 reserved. Payload: sequence number (UINT16), base time (7 bytes), time offset
//! (SINT16, minutes), concentration (SFLOAT) with type (low nibble) and sample location (high
//! nibble) in one byte, sensor status annunciation (UINT16).
//!
//! Reading: glucose 2339-0 in mg/dL, converted exactly from kg/L (× 10^5) or from mol/L
//! (× 10^3 to mmol/L, then the registry factor), at base time + time offset. A payload
//! without a concentration yields no reading, and so does a control-solution test (type or
//! sample location "control solution"): it measures the solution, not the patient.
//!
//! Status to flags (our choice): battery low → `LOW_BATTERY`; sensor malfunction and general
//! device fault → `DEVICE_FAULT`; sample size insufficient, strip insertion error, strip type
//! incorrect, sensor read interrupted → `INVALID`; sensor temperature too high or too low →
//! `QUESTIONABLE`; time fault → `CLOCK_SUSPECT`. "Result higher/lower than the device can
//! process" sets no flag: the true value lies beyond the reported bound in the same direction,
//! so a HI or LO reading must still be able to alert.

use super::{
    Bit, Characteristic, Cursor, Emit, GattError, bit, decoded, numeric_json, reading_time,
    status_bits,
};
use crate::{DecodeContext, Decoded};
use serde_json::{Map, Value};
use vigil_model::Flags;

const CH: Characteristic = Characteristic::GlucoseMeasurement;

const STATUS: [Bit; 12] = [
    bit(0, "battery_low", Flags::LOW_BATTERY),
    bit(1, "sensor_malfunction", Flags::DEVICE_FAULT),
    bit(2, "sample_size_insufficient", Flags::INVALID),
    bit(3, "strip_insertion_error", Flags::INVALID),
    bit(4, "strip_type_incorrect", Flags::INVALID),
    bit(5, "result_too_high", Flags::empty()),
    bit(6, "result_too_low", Flags::empty()),
    bit(7, "temperature_too_high", Flags::QUESTIONABLE),
    bit(8, "temperature_too_low", Flags::QUESTIONABLE),
    bit(9, "read_interrupted", Flags::INVALID),
    bit(10, "general_device_fault", Flags::DEVICE_FAULT),
    bit(11, "time_fault", Flags::CLOCK_SUSPECT),
];

fn sample_type(t: u8) -> &'static str {
    match t {
        1 => "capillary_whole_blood",
        2 => "capillary_plasma",
        3 => "venous_whole_blood",
        4 => "venous_plasma",
        5 => "arterial_whole_blood",
        6 => "arterial_plasma",
        7 => "undetermined_whole_blood",
        8 => "undetermined_plasma",
        9 => "interstitial_fluid",
        10 => "control_solution",
        _ => "reserved",
    }
}

fn sample_location(l: u8) -> &'static str {
    match l {
        1 => "finger",
        2 => "alternate_site_test",
        3 => "earlobe",
        4 => "control_solution",
        15 => "not_available",
        _ => "reserved",
    }
}

/// Decodes a Glucose Measurement payload.
pub fn decode_2a18(bytes: &[u8], ctx: &DecodeContext) -> Result<Decoded, GattError> {
    let mut c = Cursor::new(CH, bytes, 10)?;
    let flags = c.u8("flags")?;
    c.check_flags(flags, 0x1F)?;
    let mut f = Map::new();
    f.insert("sequence".into(), Value::from(c.u16("sequence")?));
    let base = c.date_time("base_time")?;
    f.insert("base_time".into(), base.to_json());
    let mut offset = 0;
    if flags & 0x01 != 0 {
        offset = c.i16("time_offset_min")?;
        f.insert("time_offset_min".into(), Value::from(offset));
    }
    let mol = flags & 0x04 != 0;
    let mut concentration = None;
    let mut control = false;
    if flags & 0x02 != 0 {
        let n = c.sfloat("concentration")?;
        let ts = c.u8("type_sample_location")?;
        let (kind, location) = (sample_type(ts & 0x0F), sample_location(ts >> 4));
        control = kind == "control_solution" || location == "control_solution";
        f.insert("concentration".into(), numeric_json(n));
        f.insert(
            "concentration_unit".into(),
            Value::from(if mol { "mol/L" } else { "kg/L" }),
        );
        f.insert("type".into(), Value::from(kind));
        f.insert("sample_location".into(), Value::from(location));
        concentration = Some(n);
    }
    let mut rflags = Flags::empty();
    if flags & 0x08 != 0 {
        let raw = c.u16("status")?;
        let (obj, set) = status_bits(u32::from(raw), &STATUS);
        f.insert("status".into(), obj);
        f.insert("status_raw".into(), Value::from(raw));
        rflags.insert(set);
    }
    f.insert("context_follows".into(), Value::Bool(flags & 0x10 != 0));
    c.finish()?;

    let mut readings = Vec::new();
    if let (Some(n), false) = (concentration, control) {
        let time = reading_time(Some(base.timestamp_plus_minutes(offset)), ctx, &mut rflags);
        let emit = Emit {
            ch: CH,
            ctx,
            time,
            flags: rflags,
        };
        // kg/L × 10^5 = mg/dL; mol/L × 10^3 = mmol/L. Exact decimal shifts.
        let (value, unit) = if mol {
            (n.scaled(3), "mmol/L")
        } else {
            (n.scaled(5), "mg/dL")
        };
        readings.push(emit.value("glucose", value.decimal(), unit)?);
    }
    Ok(decoded(CH, f, readings))
}

//! Pulse oximetry: PLX Spot-Check Measurement (0x2A5E) and PLX Continuous Measurement
//! (0x2A5F).
//!
//! Spot-check flags: bit 0 time stamp present; bit 1 measurement status present; bit 2 device
//! and sensor status present; bit 3 pulse amplitude index present; bit 4 device clock is not
//! set; bits 5-7 reserved. Payload: SpO2 and pulse rate (SFLOAT each), then the optional
//! fields in that order (measurement status UINT16, device and sensor status UINT24, pulse
//! amplitude index SFLOAT).
//!
//! Continuous flags: bit 0 SpO2PR-Fast present; bit 1 SpO2PR-Slow present; bit 2 measurement
//! status; bit 3 device and sensor status; bit 4 pulse amplitude index; bits 5-7 reserved.
//! Payload: SpO2PR-Normal, then the optional fields in that order.
//!
//! Readings: SpO2 59408-5 (%), pulse rate 8867-4 (/min) and, when present, the pulse
//! amplitude index as perfusion index 61006-3 (%). The fast and slow averages of the
//! continuous characteristic are fields only (one SpO2 per notification, not three).
//!
//! Status to flags (our choice): questionable measurement, questionable pulse, signal
//! problems (processing irregularity, inadequate, poor, erratic, non-pulsatile signal, sensor
//! interference, sensor displaced, unknown sensor) → `QUESTIONABLE`; invalid measurement,
//! measurement unavailable, data for demonstration or testing, sensor unconnected or
//! disconnected → `INVALID`; early estimated data → `EARLY_ESTIMATE`; calibration ongoing →
//! `CALIBRATING`; equipment or sensor malfunction → `DEVICE_FAULT`; low perfusion →
//! `LOW_PERFUSION`; signal analysis ongoing → `MEASUREMENT_ONGOING`. "Measurement ongoing"
//! means the value is not final for a spot check (`MEASUREMENT_ONGOING`), but is the normal
//! state of a continuous stream, where it sets no flag. "Device clock is not set" sets
//! `DEVICE_CLOCK_UNSET` and the reading takes the receive time instead of the device's.

use super::{
    Bit, Characteristic, Cursor, Emit, GattError, bit, decoded, numeric_json, reading_time,
    status_bits,
};
use crate::ieee11073::Numeric;
use crate::{DecodeContext, Decoded};
use serde_json::{Map, Value};
use vigil_model::Flags;

const MEASUREMENT_STATUS: [Bit; 11] = [
    bit(5, "measurement_ongoing", Flags::MEASUREMENT_ONGOING),
    bit(6, "early_estimated_data", Flags::EARLY_ESTIMATE),
    bit(7, "validated_data", Flags::empty()),
    bit(8, "fully_qualified_data", Flags::empty()),
    bit(9, "data_from_measurement_storage", Flags::empty()),
    bit(10, "data_for_demonstration", Flags::INVALID),
    bit(11, "data_for_testing", Flags::INVALID),
    bit(12, "calibration_ongoing", Flags::CALIBRATING),
    bit(13, "measurement_unavailable", Flags::INVALID),
    bit(14, "questionable_measurement", Flags::QUESTIONABLE),
    bit(15, "invalid_measurement", Flags::INVALID),
];

const DEVICE_SENSOR_STATUS: [Bit; 16] = [
    bit(0, "extended_display_update_ongoing", Flags::empty()),
    bit(1, "equipment_malfunction", Flags::DEVICE_FAULT),
    bit(2, "signal_processing_irregularity", Flags::QUESTIONABLE),
    bit(3, "inadequate_signal", Flags::QUESTIONABLE),
    bit(4, "poor_signal", Flags::QUESTIONABLE),
    bit(5, "low_perfusion", Flags::LOW_PERFUSION),
    bit(6, "erratic_signal", Flags::QUESTIONABLE),
    bit(7, "nonpulsatile_signal", Flags::QUESTIONABLE),
    bit(8, "questionable_pulse", Flags::QUESTIONABLE),
    bit(9, "signal_analysis_ongoing", Flags::MEASUREMENT_ONGOING),
    bit(10, "sensor_interference", Flags::QUESTIONABLE),
    bit(11, "sensor_unconnected_to_user", Flags::INVALID),
    bit(12, "unknown_sensor_connected", Flags::QUESTIONABLE),
    bit(13, "sensor_displaced", Flags::QUESTIONABLE),
    bit(14, "sensor_malfunctioning", Flags::DEVICE_FAULT),
    bit(15, "sensor_disconnected", Flags::INVALID),
];

/// The status words and index that both characteristics may append.
fn tail(
    c: &mut Cursor<'_>,
    f: &mut Map<String, Value>,
    [status, sensor, pai]: [bool; 3],
    continuous: bool,
) -> Result<(Flags, Option<Numeric>), GattError> {
    let mut flags = Flags::empty();
    if status {
        let raw = c.u16("measurement_status")?;
        let (obj, mut set) = status_bits(u32::from(raw), &MEASUREMENT_STATUS);
        if continuous {
            set = Flags(set.0 & !Flags::MEASUREMENT_ONGOING.0);
            // Signal analysis may still set MEASUREMENT_ONGOING below.
        }
        f.insert("measurement_status".into(), obj);
        f.insert("measurement_status_raw".into(), Value::from(raw));
        flags.insert(set);
    }
    if sensor {
        let raw = c.u24("device_sensor_status")?;
        let (obj, set) = status_bits(raw, &DEVICE_SENSOR_STATUS);
        f.insert("device_sensor_status".into(), obj);
        f.insert("device_sensor_status_raw".into(), Value::from(raw));
        flags.insert(set);
    }
    let mut index = None;
    if pai {
        let p = c.sfloat("pulse_amplitude_index_percent")?;
        f.insert("pulse_amplitude_index_percent".into(), numeric_json(p));
        index = Some(p);
    }
    Ok((flags, index))
}

fn readings(
    emit: &Emit<'_>,
    spo2: Numeric,
    pulse: Numeric,
    pai: Option<Numeric>,
) -> Result<Vec<vigil_model::Reading>, GattError> {
    let mut out = vec![
        emit.value("spo2", spo2.decimal(), "%")?,
        emit.value("heart-rate", pulse.decimal(), "/min")?,
    ];
    if let Some(p) = pai {
        out.push(emit.value("perfusion-index", p.decimal(), "%")?);
    }
    Ok(out)
}

/// Decodes a PLX Spot-Check Measurement payload.
pub fn decode_2a5e(bytes: &[u8], ctx: &DecodeContext) -> Result<Decoded, GattError> {
    const CH: Characteristic = Characteristic::PlxSpotCheckMeasurement;
    let mut c = Cursor::new(CH, bytes, 5)?;
    let flags = c.u8("flags")?;
    c.check_flags(flags, 0x1F)?;
    let spo2 = c.sfloat("spo2_percent")?;
    let pulse = c.sfloat("pulse_rate_bpm")?;
    let mut f = Map::new();
    f.insert("spo2_percent".into(), numeric_json(spo2));
    f.insert("pulse_rate_bpm".into(), numeric_json(pulse));
    let mut stamp = None;
    if flags & 0x01 != 0 {
        let dt = c.date_time("timestamp")?;
        f.insert("timestamp".into(), dt.to_json());
        stamp = Some(dt.to_timestamp());
    }
    let present = [flags & 0x02 != 0, flags & 0x04 != 0, flags & 0x08 != 0];
    let (mut rflags, pai) = tail(&mut c, &mut f, present, false)?;
    let clock_unset = flags & 0x10 != 0;
    f.insert("device_clock_not_set".into(), Value::Bool(clock_unset));
    c.finish()?;

    if clock_unset {
        rflags.insert(Flags::DEVICE_CLOCK_UNSET);
        stamp = None;
    }
    let time = reading_time(stamp, ctx, &mut rflags);
    let emit = Emit {
        ch: CH,
        ctx,
        time,
        flags: rflags,
    };
    Ok(decoded(CH, f, readings(&emit, spo2, pulse, pai)?))
}

/// Decodes a PLX Continuous Measurement payload.
pub fn decode_2a5f(bytes: &[u8], ctx: &DecodeContext) -> Result<Decoded, GattError> {
    const CH: Characteristic = Characteristic::PlxContinuousMeasurement;
    let mut c = Cursor::new(CH, bytes, 5)?;
    let flags = c.u8("flags")?;
    c.check_flags(flags, 0x1F)?;
    let spo2 = c.sfloat("spo2_percent")?;
    let pulse = c.sfloat("pulse_rate_bpm")?;
    let mut f = Map::new();
    f.insert("spo2_percent".into(), numeric_json(spo2));
    f.insert("pulse_rate_bpm".into(), numeric_json(pulse));
    if flags & 0x01 != 0 {
        let s = c.sfloat("spo2_fast_percent")?;
        let p = c.sfloat("pulse_rate_fast_bpm")?;
        f.insert("spo2_fast_percent".into(), numeric_json(s));
        f.insert("pulse_rate_fast_bpm".into(), numeric_json(p));
    }
    if flags & 0x02 != 0 {
        let s = c.sfloat("spo2_slow_percent")?;
        let p = c.sfloat("pulse_rate_slow_bpm")?;
        f.insert("spo2_slow_percent".into(), numeric_json(s));
        f.insert("pulse_rate_slow_bpm".into(), numeric_json(p));
    }
    let present = [flags & 0x04 != 0, flags & 0x08 != 0, flags & 0x10 != 0];
    let (rflags, pai) = tail(&mut c, &mut f, present, true)?;
    c.finish()?;

    let emit = Emit {
        ch: CH,
        ctx,
        time: ctx.received,
        flags: rflags,
    };
    Ok(decoded(CH, f, readings(&emit, spo2, pulse, pai)?))
}

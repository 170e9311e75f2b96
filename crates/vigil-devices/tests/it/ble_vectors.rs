//! shared/vectors/ble-gatt.json: every vector decodes to every field of its "expect" object
//! (or, for "invalid" vectors, is rejected), and its readings are the canonical ones.

use crate::{RECEIVED, ctx, vector_file};
use serde_json::{Map, Value};
use vigil_devices::Decoded;
use vigil_devices::gatt::{self, GattError};
use vigil_model::{DataAbsentReason, Flags, Reading, Record, Source, Timestamp, validate_record};

/// Compares an "expect" value with the decoded one; returns the differences.
///
/// Objects: every expected key must match; a decoded key the vector does not list must not be
/// `true` (an unclaimed flag). Numbers compare as f64, exactly. An expected number where the
/// decoder gives an object of named status bits compares with the raw word, `<key>_raw`.
fn diff(path: &str, expected: &Value, actual: &Value, out: &mut Vec<String>) {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => diff_object(path, e, a, out),
        (Value::Number(e), Value::Number(a)) if e.as_f64() == a.as_f64() => {}
        (e, a) if e == a => {}
        (e, a) => out.push(format!("{path}: expected {e}, decoded {a}")),
    }
}

fn diff_object(path: &str, e: &Map<String, Value>, a: &Map<String, Value>, out: &mut Vec<String>) {
    for (k, ev) in e {
        let p = format!("{path}.{k}");
        match a.get(k) {
            None => out.push(format!("{p}: expected {ev}, not decoded")),
            Some(Value::Object(_)) if ev.is_number() => {
                let raw = a.get(&format!("{k}_raw")).unwrap_or(&Value::Null);
                diff(&format!("{p}_raw"), ev, raw, out);
            }
            Some(av) => diff(&p, ev, av, out),
        }
    }
    for (k, av) in a {
        if !e.contains_key(k) && av == &Value::Bool(true) {
            out.push(format!(
                "{path}.{k}: decoded true, the vector does not claim it"
            ));
        }
    }
}

fn vectors() -> Vec<Value> {
    vector_file("ble-gatt.json")["vectors"]
        .as_array()
        .expect("vectors")
        .clone()
}

fn decode_vector(v: &Value) -> Result<Decoded, GattError> {
    let uuid = u16::from_str_radix(v["uuid"].as_str().expect("uuid"), 16).expect("hex uuid");
    let bytes = hex::decode(v["hex"].as_str().expect("hex")).expect("hex payload");
    gatt::decode(uuid, &bytes, &ctx())
}

fn decode_id(id: &str) -> Decoded {
    let v = vectors()
        .into_iter()
        .find(|v| v["id"] == id)
        .unwrap_or_else(|| panic!("vector {id} is missing"));
    decode_vector(&v).unwrap_or_else(|e| panic!("{id}: {e}"))
}

fn at(time: &str) -> Timestamp {
    Timestamp::parse(time).expect("time")
}

fn value(r: &Reading, loinc: &str) -> f64 {
    r.value_of(loinc.parse().expect("code"))
        .unwrap_or_else(|| panic!("{loinc} has no value in {r:?}"))
}

fn only<'a>(d: &'a Decoded, loinc: &str) -> &'a Reading {
    let mut it = d.readings.iter().filter(|r| r.metric.loinc() == loinc);
    let r = it.next().unwrap_or_else(|| panic!("no {loinc} reading"));
    assert!(it.next().is_none(), "more than one {loinc} reading");
    assert_eq!(r.source, Source::Ble);
    assert_eq!(r.received, Some(RECEIVED));
    r
}

#[test]
fn every_valid_vector_decodes_every_expected_field() {
    let mut failures = Vec::new();
    let mut valid = 0;
    for v in vectors() {
        let id = v["id"].as_str().expect("id");
        if v.get("invalid").is_some() {
            continue;
        }
        valid += 1;
        match decode_vector(&v) {
            Ok(d) => {
                assert_eq!(
                    d.format,
                    format!("ble:{}", v["uuid"].as_str().expect("uuid"))
                );
                diff(id, &v["expect"], &d.fields, &mut failures);
                assert!(!d.readings.is_empty(), "{id} gave no reading");
            }
            Err(e) => failures.push(format!("{id}: rejected: {e}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(valid, 17);
}

#[test]
fn every_invalid_vector_is_rejected_with_a_clear_error() {
    let mut invalid = 0;
    for v in vectors() {
        if v.get("invalid").is_none() {
            continue;
        }
        invalid += 1;
        let e = decode_vector(&v).expect_err("invalid vector must be rejected");
        let msg = e.to_string();
        let uuid = v["uuid"].as_str().expect("uuid");
        assert!(msg.contains(&format!("(0x{uuid})")), "{msg}");
        if v["id"] == "B4" {
            assert_eq!(
                msg,
                "Blood Pressure Measurement (0x2A35): payload is 6 bytes, shorter than the 7-byte minimum"
            );
        }
    }
    assert!(invalid >= 1);
}

#[test]
fn heart_rate_readings_take_the_receive_time_and_contact_loss_is_questionable() {
    let h1 = decode_id("H1");
    let r = only(&h1, "8867-4");
    assert_eq!(
        (r.value, r.time, r.flags),
        (Some(85.0), RECEIVED, Flags::empty())
    );
    let h2 = decode_id("H2");
    let r = only(&h2, "8867-4");
    assert_eq!(r.value, Some(255.0));
    assert!(!r.flags.trustworthy(), "no skin contact: {:?}", r.flags);
    assert_eq!(only(&decode_id("H4"), "8867-4").value, Some(257.0));
}

#[test]
fn blood_pressure_is_one_panel_in_mmhg_with_the_pulse_rate_beside_it() {
    let b1 = decode_id("B1");
    let bp = only(&b1, "85354-9");
    assert_eq!(value(bp, "8480-6"), 138.0);
    assert_eq!(value(bp, "8462-4"), 88.0);
    assert_eq!(value(bp, "8478-0"), 120.0);
    assert_eq!(bp.value, None);
    // Year 0 means unknown: the receive time stands in and the clock is suspect.
    assert_eq!(bp.time, RECEIVED);
    assert!(bp.flags.contains(Flags::CLOCK_SUSPECT));
    assert!(bp.flags.contains(Flags::MOTION_ARTIFACT));
    assert!(
        bp.flags.contains(Flags::QUESTIONABLE),
        "cuff too loose, position"
    );
    assert_eq!(only(&b1, "8867-4").value, Some(60.0));

    let b2 = decode_id("B2");
    let bp = only(&b2, "85354-9");
    let mmhg = 7.500615758456563;
    assert!((value(bp, "8480-6") - 18.9 * mmhg).abs() < 1e-9);
    assert!((value(bp, "8462-4") - 11.0 * mmhg).abs() < 1e-9);
    assert!((value(bp, "8478-0") - 15.9 * mmhg).abs() < 1e-9);
    assert_eq!(bp.flags, Flags::QUESTIONABLE);
}

#[test]
fn temperature_uses_the_payload_time_as_utc() {
    let t1 = decode_id("T1");
    let r = only(&t1, "8310-5");
    assert_eq!(r.value, Some(37.6));
    assert_eq!(r.time, at("2012-12-05T11:50:27Z"));
    assert_eq!(r.flags, Flags::empty());
}

#[test]
fn glucose_is_converted_to_mg_per_dl_at_base_time_plus_offset() {
    let g1 = decode_id("G1");
    let r = only(&g1, "2339-0");
    // 30 kg/L (a test value) = 3 000 000 mg/dL, exactly.
    assert_eq!(r.value, Some(3_000_000.0));
    assert_eq!(r.time, at("2019-02-27T11:05:30Z"));
    assert!(r.flags.contains(Flags::LOW_BATTERY));
    assert!(r.flags.contains(Flags::INVALID), "sample size insufficient");
    assert!(r.flags.contains(Flags::QUESTIONABLE), "temperature too low");
    // The decoder does not judge plausibility; validation downstream does.
    let e = validate_record(&Record::Reading(r.clone()), RECEIVED, 0).expect_err("impossible");
    assert_eq!(e.code(), "impossible_value");
}

#[test]
fn pulse_oximetry_flags_make_questionable_readings_untrustworthy() {
    let p1 = decode_id("P1");
    assert_eq!(only(&p1, "59408-5").value, Some(100.0));
    assert_eq!(only(&p1, "8867-4").value, Some(90.0));

    let p3 = decode_id("P3");
    let spo2 = only(&p3, "59408-5");
    assert_eq!(spo2.value, Some(95.0));
    assert!(spo2.flags.trustworthy(), "ongoing is normal for continuous");
    assert_eq!(only(&p3, "61006-3").value, Some(8.7));

    let p5 = decode_id("P5");
    let spo2 = only(&p5, "59408-5");
    assert_eq!(spo2.value, Some(94.0));
    assert_eq!(spo2.time, at("2024-11-29T23:08:57Z"));
    assert!(!spo2.flags.trustworthy());
    for f in [
        Flags::QUESTIONABLE,
        Flags::MEASUREMENT_ONGOING,
        Flags::DEVICE_FAULT,
        Flags::LOW_PERFUSION,
    ] {
        assert!(spo2.flags.contains(f), "{:?}", spo2.flags);
    }
    assert_eq!(only(&p5, "8867-4").value, Some(147.0));
    assert_eq!(only(&p5, "61006-3").value, Some(8.7));
}

#[test]
fn weight_height_and_bmi_are_canonical() {
    let w1 = decode_id("W1");
    assert_eq!(only(&w1, "29463-7").value, Some(70.0));
    let w3 = decode_id("W3");
    assert_eq!(only(&w3, "29463-7").time, at("2023-12-25T14:30:45Z"));
    let w4 = decode_id("W4");
    assert_eq!(only(&w4, "29463-7").value, Some(70.0));
    assert_eq!(only(&w4, "39156-5").value, Some(24.5));
    assert_eq!(only(&w4, "8302-2").value, Some(175.0));
}

#[test]
fn every_valid_vector_yields_records_the_model_accepts_or_flags_as_impossible() {
    for v in vectors() {
        if v.get("invalid").is_some() {
            continue;
        }
        let d = decode_vector(&v).expect("valid");
        for rec in d.into_records() {
            match validate_record(&rec, RECEIVED, 0) {
                Ok(()) => {}
                Err(e) if v["id"] == "G1" && e.code() == "impossible_value" => {}
                Err(e) => panic!("{}: {e}", v["id"]),
            }
        }
    }
}

#[test]
fn special_sfloat_values_become_absent_readings() {
    // PLX continuous: SpO2 NaN, pulse rate +INF.
    let d = gatt::decode(0x2A5F, &[0x00, 0xFF, 0x07, 0xFE, 0x07], &ctx()).expect("decode");
    let spo2 = only(&d, "59408-5");
    assert_eq!(
        (spo2.value, spo2.absent),
        (None, Some(DataAbsentReason::NotANumber))
    );
    let pr = only(&d, "8867-4");
    assert_eq!(pr.absent, Some(DataAbsentReason::PositiveInfinity));
    assert_eq!(d.fields["spo2_percent"], "NaN");
    // Blood pressure with a NaN mean: the panel leaves the component out.
    let d = gatt::decode(0x2A35, &[0x00, 120, 0, 80, 0, 0xFF, 0x07], &ctx()).expect("decode");
    let bp = only(&d, "85354-9");
    assert_eq!(bp.components.len(), 2);
    assert_eq!(bp.value_of("8478-0".parse().expect("code")), None);
    // All components special: the panel is absent.
    let d =
        gatt::decode(0x2A35, &[0x00, 0x00, 0x08, 0xFF, 0x07, 0xFF, 0x07], &ctx()).expect("decode");
    assert_eq!(only(&d, "85354-9").absent, Some(DataAbsentReason::Error));
    // Weight 0xFFFF: measurement unsuccessful.
    let d = gatt::decode(0x2A9D, &[0x00, 0xFF, 0xFF], &ctx()).expect("decode");
    assert_eq!(only(&d, "29463-7").absent, Some(DataAbsentReason::Error));
}

#[test]
fn truncated_payloads_name_the_field_and_its_byte_offset() {
    // Heart rate: UINT16 format announced, one byte given.
    let e = gatt::decode(0x2A37, &[0x01, 0x55], &ctx()).expect_err("truncated");
    assert_eq!(
        e.to_string(),
        "Heart Rate Measurement (0x2A37): field heart_rate_bpm at byte offset 1 needs 2 bytes, only 1 remain"
    );
    // RR intervals: an odd byte left over.
    let e = gatt::decode(0x2A37, &[0x10, 0x55, 0x01, 0x02, 0x03], &ctx()).expect_err("odd");
    assert!(matches!(e, GattError::Truncated { offset: 4, .. }), "{e}");
    // Every valid vector cut anywhere short of its end is an error, never a panic.
    for v in vectors() {
        if v.get("invalid").is_some() {
            continue;
        }
        let uuid = u16::from_str_radix(v["uuid"].as_str().expect("uuid"), 16).expect("uuid");
        let bytes = hex::decode(v["hex"].as_str().expect("hex")).expect("hex");
        for cut in 0..bytes.len() {
            let prefix = bytes.get(..cut).expect("prefix");
            if let Ok(d) = gatt::decode(uuid, prefix, &ctx()) {
                // Only the heart rate's RR list may end early at a whole interval.
                assert_eq!(uuid, 0x2A37, "{} cut at {cut} decoded: {d:?}", v["id"]);
            }
        }
    }
}

#[test]
fn reserved_flag_bits_and_trailing_bytes_are_rejected() {
    let e = gatt::decode(0x2A37, &[0x20, 0x55], &ctx()).expect_err("reserved");
    assert_eq!(
        e.to_string(),
        "Heart Rate Measurement (0x2A37): reserved flag bits 0x20 are set in the flags byte at offset 0"
    );
    let e = gatt::decode(0x2A9D, &[0x00, 0xB0, 0x36, 0x00], &ctx()).expect_err("trailing");
    assert_eq!(
        e,
        GattError::TrailingBytes {
            characteristic: gatt::Characteristic::WeightMeasurement,
            offset: 3,
            count: 1
        }
    );
    let e = gatt::decode(0x2A1C, &[0x08, 0, 0, 0, 0], &ctx()).expect_err("reserved");
    assert!(matches!(e, GattError::ReservedFlags { bits: 0x08, .. }));
}

#[test]
fn intermediate_cuff_pressure_is_decoded_but_is_no_blood_pressure_reading() {
    let d =
        gatt::decode(0x2A36, &[0x00, 0x64, 0x00, 0xFF, 0x07, 0xFF, 0x07], &ctx()).expect("decode");
    assert_eq!(d.fields["current_cuff_pressure"], 100.0);
    assert!(d.readings.is_empty());
}

#[test]
fn fahrenheit_temperatures_and_imperial_weights_are_converted() {
    // 98.6 degF as FLOAT 986e-1, temperature type ear.
    let d = gatt::decode(0x2A1C, &[0x05, 0xDA, 0x03, 0x00, 0xFF, 0x03], &ctx()).expect("decode");
    assert_eq!(d.fields["unit"], "[degF]");
    assert_eq!(d.fields["temperature_type"], "ear");
    assert!((only(&d, "8310-5").value.expect("value") - 37.0).abs() < 1e-9);
    // 154.32 lb.
    let d = gatt::decode(0x2A9D, &[0x01, 0x48, 0x3C], &ctx()).expect("decode");
    assert_eq!(d.fields["weight"], 154.32);
    let kg = only(&d, "29463-7").value.expect("value");
    assert!((kg - 154.32 * 0.45359237).abs() < 1e-9);
}

#[test]
fn a_spot_check_from_a_device_with_an_unset_clock_takes_the_receive_time() {
    let mut bytes = hex::decode("0FACF3BEF5E8070B1D170839204022000066E3").expect("hex");
    if let Some(flags) = bytes.first_mut() {
        *flags |= 0x10;
    }
    let d = gatt::decode(0x2A5E, &bytes, &ctx()).expect("decode");
    assert_eq!(d.fields["device_clock_not_set"], true);
    let r = only(&d, "59408-5");
    assert_eq!(r.time, RECEIVED);
    assert!(r.flags.contains(Flags::DEVICE_CLOCK_UNSET));
}

#[test]
fn control_solution_glucose_tests_are_no_patient_reading() {
    // G1 with type "control solution" (10) instead of capillary plasma.
    let mut bytes = hex::decode("1B0100E307021B0B0A1EFBFF1E00120501").expect("hex");
    if let Some(b) = bytes.get_mut(14) {
        *b = 0x1A;
    }
    let d = gatt::decode(0x2A18, &bytes, &ctx()).expect("decode");
    assert_eq!(d.fields["type"], "control_solution");
    assert!(d.readings.is_empty());
}

#[test]
fn the_field_comparison_catches_wrong_values_and_unclaimed_flags() {
    let decoded = serde_json::json!({
        "a": 1.5, "s": {"x": true, "y": false}, "s_raw": 1, "t": {"year": null}
    });
    let mut out = Vec::new();
    diff(
        "v",
        &serde_json::json!({"a": 1.5, "s": {"x": true}, "t": {"year": null}}),
        &decoded,
        &mut out,
    );
    assert!(out.is_empty(), "{out:?}");
    diff(
        "v",
        &serde_json::json!({"a": 2, "s": 1, "b": 0}),
        &decoded,
        &mut out,
    );
    assert_eq!(
        out,
        [
            "v.a: expected 2, decoded 1.5",
            "v.b: expected 0, not decoded"
        ]
    );
    out.clear();
    diff(
        "v",
        &serde_json::json!({"s": {"y": false}}),
        &decoded,
        &mut out,
    );
    assert_eq!(out, ["v.s.x: decoded true, the vector does not claim it"]);
}

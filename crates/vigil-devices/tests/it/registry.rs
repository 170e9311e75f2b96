//! The decoder registry: names to decoders, and GATT decoders behind it.

use crate::ctx;
use vigil_devices::{DecodeError, decoder_for, formats};

#[test]
fn ble_names_select_the_characteristic_decoder() {
    let d = decoder_for("ble:2A37").expect("heart rate");
    let out = d.decode(&[0x00, 0x48], &ctx()).expect("decode");
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].fields["heart_rate_bpm"], 72);
    let e = d.decode(&[0x00], &ctx()).expect_err("short");
    assert!(matches!(e, DecodeError::Gatt(_)));
}

#[test]
fn the_format_list_names_every_supported_characteristic_and_hl7() {
    let f = formats();
    for name in [
        "ble:2A37", "ble:2A1C", "ble:2A35", "ble:2A36", "ble:2A5E", "ble:2A5F", "ble:2A18",
        "ble:2A9D", "hl7",
    ] {
        assert!(f.iter().any(|x| x == name), "{name}");
    }
    assert_eq!(f.len(), 9);
}

#[test]
fn hl7_input_without_a_message_is_an_error() {
    let d = decoder_for("hl7").expect("hl7");
    assert!(matches!(
        d.decode(b"  \r\n", &ctx()),
        Err(DecodeError::Empty { .. })
    ));
    let e = d
        .decode(b"MSH|^~\\&|A||||||ADT^A01|1|P|2.6\r", &ctx())
        .expect_err("adt");
    assert_eq!(
        e.to_string(),
        "HL7 message 0 of the input: MSH-9 message type \"ADT^A01\" is not ORU^R01"
    );
}

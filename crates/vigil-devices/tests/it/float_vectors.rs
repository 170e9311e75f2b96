//! shared/vectors/ieee11073-float.json: every word decodes to the value (and exponent) given,
//! encodes back to the same word, and special words carry their data-absent reason.

use crate::vector_file;
use serde_json::Value;
use vigil_devices::ieee11073::{Numeric, decode_float, decode_sfloat, encode_float, encode_sfloat};

fn word(v: &Value) -> u32 {
    let s = v.as_str().expect("word is a string");
    u32::from_str_radix(s.trim_start_matches("0x"), 16).expect("hex word")
}

#[test]
fn every_sfloat_and_float_vector_decodes_exactly_and_encodes_back() {
    let doc = vector_file("ieee11073-float.json");
    let mut checked = 0;
    for (kind, list) in [("sfloat", &doc["sfloat"]), ("float", &doc["float"])] {
        let list = list.as_array().expect("vector list");
        assert!(!list.is_empty());
        for v in list {
            let w = word(&v["word"]);
            let (n, back) = if kind == "sfloat" {
                let w16 = u16::try_from(w).expect("16-bit word");
                let n = decode_sfloat(w16);
                (n, encode_sfloat(n).map(u32::from))
            } else {
                let n = decode_float(w);
                (n, encode_float(n))
            };
            let Numeric::Number(d) = n else {
                panic!("{kind} {w:#x} decoded to {n:?}");
            };
            let expected = v["value"].as_f64().expect("value");
            assert_eq!(d.to_f64(), expected, "{kind} {w:#x}");
            if let Some(e) = v.get("exponent").and_then(Value::as_i64) {
                assert_eq!(i64::from(d.exponent), e, "{kind} {w:#x} exponent");
            }
            assert_eq!(back, Ok(w), "{kind} {w:#x} encodes back");
            checked += 1;
        }
    }
    assert_eq!(checked, 21);
}

#[test]
fn special_values_decode_to_their_data_absent_reason_never_a_number() {
    let doc = vector_file("ieee11073-float.json");
    let list = doc["special"].as_array().expect("specials");
    assert_eq!(list.len(), 5);
    for v in list {
        let reason = v["data_absent_reason"].as_str().expect("reason");
        let s = decode_sfloat(u16::try_from(word(&v["sfloat"])).expect("16-bit"));
        let f = decode_float(word(&v["float"]));
        for n in [s, f] {
            assert_eq!(n.to_f64(), None, "{}", v["meaning"]);
            let got = n.decimal().expect_err("special").code();
            assert_eq!(got, reason, "{}", v["meaning"]);
        }
    }
}

//! SFLOAT and FLOAT words: decode never panics, finite words encode back to themselves.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil_devices::ieee11073::{
    Numeric, decode_float, decode_sfloat, encode_float, encode_sfloat, float_from_f64,
    sfloat_from_f64,
};

fuzz_target!(|data: [u8; 4]| {
    let s = u16::from_le_bytes([data[0], data[1]]);
    let n = decode_sfloat(s);
    if matches!(n, Numeric::Number(_)) {
        assert_eq!(encode_sfloat(n), Ok(s));
    }
    let f = u32::from_le_bytes(data);
    let n = decode_float(f);
    if matches!(n, Numeric::Number(_)) {
        assert_eq!(encode_float(n), Ok(f));
    }
    let v = f32::from_le_bytes(data);
    let _ = sfloat_from_f64(f64::from(v));
    let _ = float_from_f64(f64::from(v));
});

//! The MLLP de-framer on arbitrary bytes fed in arbitrary chunks: never panics, never yields
//! a message over its limit, and a framed message after any noise still comes through.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil_devices::mllp::{MllpDecoder, frame};

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, rest)) = data.split_first() else {
        return;
    };
    let mut d = MllpDecoder::with_max_len(256);
    for part in rest.chunks(usize::from(chunk).max(1)) {
        d.push(part);
        while let Some(m) = d.next_message() {
            if let Ok(m) = m {
                assert!(m.len() <= 256);
            }
        }
    }
    let _ = d.finish();
    d.push(&frame("MSH|ok\r"));
    let mut last = None;
    while let Some(m) = d.next_message() {
        last = Some(m);
    }
    assert_eq!(last, Some(Ok(b"MSH|ok\r".to_vec())));
});

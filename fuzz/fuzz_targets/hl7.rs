//! The ORU^R01 parser on arbitrary text (lossily decoded bytes): never panics, and every
//! observation points at a reading that exists.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil_devices::DecodeContext;
use vigil_devices::hl7::parse_oru_with;
use vigil_model::{DeviceId, Timestamp};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok(device) = DeviceId::new("fuzz") else {
        return;
    };
    let ctx = DecodeContext::new(device, Timestamp::from_secs(1_700_000_000));
    if let Ok(m) = parse_oru_with(&text, &ctx) {
        for o in &m.observations {
            assert!(o.reading < m.readings.len());
        }
    }
});

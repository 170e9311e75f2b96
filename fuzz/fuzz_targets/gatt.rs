//! Every GATT health characteristic on arbitrary bytes: the first byte picks the
//! characteristic, the rest is the payload. Decoding must never panic, and every reading must
//! carry exactly one of a value, components or a data-absent reason.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil_devices::DecodeContext;
use vigil_devices::gatt::{self, Characteristic};
use vigil_model::{DeviceId, Timestamp};

fuzz_target!(|data: &[u8]| {
    let Some((&pick, payload)) = data.split_first() else {
        return;
    };
    let Ok(device) = DeviceId::new("fuzz") else {
        return;
    };
    let ctx = DecodeContext::new(device, Timestamp::from_secs(1_700_000_000));
    let all = Characteristic::ALL;
    let c = all[usize::from(pick) % all.len()];
    if let Ok(d) = gatt::decode(c.uuid(), payload, &ctx) {
        for r in d.readings {
            let forms = usize::from(r.value.is_some())
                + usize::from(!r.components.is_empty())
                + usize::from(r.absent.is_some());
            assert_eq!(forms, 1, "{r:?}");
        }
    }
});

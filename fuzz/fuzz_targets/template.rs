//! Vendor JSON through the IoMT-connector templates: arbitrary payloads against the shipped
//! example templates, and arbitrary template text; never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil_devices::DecodeContext;
use vigil_devices::templates::TemplateSet;
use vigil_model::{DeviceId, Timestamp};

const CONTENT: &str = include_str!("../../crates/vigil-devices/templates/fitbit/devicecontent.json");
const FHIR: &str = include_str!("../../crates/vigil-devices/templates/fitbit/fhirmapping.json");

fuzz_target!(|data: &[u8]| {
    let Ok(device) = DeviceId::new("fuzz") else {
        return;
    };
    let ctx = DecodeContext::new(device, Timestamp::from_secs(1_700_000_000));
    if let Ok(set) = TemplateSet::from_json(CONTENT, Some(FHIR)) {
        let _ = set.decode(data, &ctx);
    }
    // The same bytes as a template.
    let text = String::from_utf8_lossy(data);
    if let Ok(set) = TemplateSet::from_json(&text, None) {
        let _ = set.decode(br#"{"value": 1, "time": "2024-01-01T00:00:00Z"}"#, &ctx);
    }
});

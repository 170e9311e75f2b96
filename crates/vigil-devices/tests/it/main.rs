//! Integration tests of vigil-devices: the published vectors in ../shared/vectors, the
//! decoder registry, and robustness against arbitrary input. One test binary (link time).

mod ble_vectors;
mod float_vectors;
mod hl7_vectors;
mod registry;
mod robustness;
mod templates;

use vigil_devices::DecodeContext;
use vigil_model::{DeviceId, Timestamp};

/// A vector file from shared/ (beside the repository). Missing files fail the test.
pub fn vector_file(name: &str) -> serde_json::Value {
    let text = read_shared(name);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name} is not JSON: {e}"))
}

pub fn read_shared(name: &str) -> String {
    let path = format!(
        "{}/../../../shared/vectors/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("test vectors {path} must be present: {e}"))
}

/// The receive time every test decodes with: 2025-01-02T03:04:05Z.
pub const RECEIVED: Timestamp = Timestamp(1_735_787_045_000);

pub fn ctx() -> DecodeContext {
    DecodeContext::new(DeviceId::new("dev-1").expect("id"), RECEIVED)
}

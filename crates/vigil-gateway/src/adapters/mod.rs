//! Device adapters: sources that speak a device protocol and feed the outbox.
//!
//! - [`mllp`]: HL7 v2 ORU^R01 over MLLP (TCP). Each message is answered with an HL7 ACK:
//!   `AA` only after its readings are committed to the outbox, `AE` when the message was
//!   understood but could not be stored, `AR` when it is not an acceptable message.
//! - [`mqtt`]: device messages from an MQTT broker (`{prefix}/{device_id}/{format}`), QoS 1,
//!   persistent session, each message acknowledged (PUBACK) only after its records are
//!   committed to the outbox, or after its raw payload is kept in the local [`quarantine`]
//!   when it cannot be decoded.
//!
//! - `ble` (feature `ble`): Bluetooth LE health devices through `vigil-ble`'s live driver.
//!
//! Adapters follow the gateway's rule: a source is acknowledged only after the commit.

#[cfg(feature = "ble")]
pub mod ble;
pub mod mllp;
pub mod mqtt;
pub mod quarantine;

pub use mllp::{MllpConfig, MllpStatus};
pub use mqtt::{MqttConfig, MqttStatus};
pub use quarantine::{Quarantine, QuarantineEntry, QuarantineError};

use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Live counters of the adapters, shared by the adapters and the health endpoint.
#[derive(Debug, Default)]
pub struct AdapterState {
    pub(crate) mllp: Option<Arc<mllp::MllpCounters>>,
    pub(crate) mqtt: Option<Arc<mqtt::MqttCounters>>,
}

/// A snapshot of the adapters' counters (the `adapters` section of `/health`).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct AdaptersStatus {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mllp: Option<MllpStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mqtt: Option<MqttStatus>,
}

impl AdapterState {
    pub fn snapshot(&self) -> AdaptersStatus {
        AdaptersStatus {
            mllp: self.mllp.as_ref().map(|c| c.snapshot()),
            mqtt: self.mqtt.as_ref().map(|c| c.snapshot()),
        }
    }
}

/// Resolves once stop is requested (never holds the watch guard across an await).
pub(crate) async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await.map(|_| ());
}

/// Sleeps for `d`; true when stop was requested before or meanwhile.
pub(crate) async fn sleep_or_stop(stop: &watch::Receiver<bool>, d: Duration) -> bool {
    if *stop.borrow() {
        return true;
    }
    let mut rx = stop.clone();
    tokio::select! {
        _ = tokio::time::sleep(d) => *stop.borrow(),
        _ = stopped(&mut rx) => true,
    }
}

/// Exponential backoff with full jitter: a random delay in `[min, min(max, min * 2^failures)]`.
pub(crate) fn backoff(min_ms: u64, max_ms: u64, failures: u32) -> Duration {
    let min = min_ms.max(1);
    let cap = min
        .saturating_mul(1u64 << failures.min(20))
        .min(max_ms.max(min));
    Duration::from_millis(rand::random_range(min..=cap))
}

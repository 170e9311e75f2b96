//! Vigil's Bluetooth LE adapter for the gateway.
//!
//! This crate owns the gateway's conversation with BLE health devices, split so that the
//! whole byte path is testable without a radio:
//!
//! - [`session`]: the pure [`BleSession`] state machine. It decides which advertising peers
//!   to connect (those offering Heart Rate 0x180D, Health Thermometer 0x1809, Blood Pressure
//!   0x1810, Pulse Oximeter 0x1822, Glucose 0x1808 or Weight Scale 0x181D), which measurement
//!   characteristics to subscribe and whether by notification or indication, maps a device
//!   address to a Vigil [`DeviceId`](vigil_model::DeviceId) (`ble-a0b1c2d3e4f5`), turns each
//!   notification into canonical [`Record`](vigil_model::Record)s through
//!   [`vigil_devices::gatt::decode`], rejects what does not decode as a [`Rejected`] that keeps
//!   the raw bytes for quarantine, and computes the reconnect backoff.
//! - [`recorded`]: a JSON-lines format of recorded radio events and its replay through a
//!   session; the recordings under `recordings/` are built from the published payloads of
//!   `shared/vectors/ble-gatt.json`.
//! - `live` (feature `live`, off by default): the btleplug driver that scans, connects,
//!   subscribes and feeds a session, handing records to a `live::Sink`. Without the feature
//!   the crate needs no system library.
//!
//! This crate must never:
//!
//! - acknowledge or drop a decoded notification before the sink returned `Ok` (the gateway's
//!   outbox owns durability; a record the sink refused is retried, never discarded);
//! - turn bytes that do not decode into a record, or discard them: they are a [`Rejected`]
//!   with address, characteristic and payload;
//! - panic on anything a device or a recording sends, or when no adapter is present;
//! - read the clock or do I/O outside `live` (the caller gives every receive time);
//! - log readings or values above debug level.
//!
//! ```
//! use vigil_ble::{BleSession, Outcome, Recording};
//! use vigil_model::Timestamp;
//!
//! let recording = Recording::parse(concat!(
//!     r#"{"t_ms":0,"event":"discovered","address":"A0:B1:C2:D3:E4:F5","services":["180D"]}"#, "\n",
//!     r#"{"t_ms":800,"event":"connected","address":"A0:B1:C2:D3:E4:F5","services":[]}"#, "\n",
//!     r#"{"t_ms":1000,"event":"notification","address":"A0:B1:C2:D3:E4:F5","uuid":"2A37","hex":"0048"}"#,
//! ))?;
//! let mut session = BleSession::default();
//! let replay = recording.replay(&mut session, Timestamp::from_secs(1_795_000_000));
//! let records = replay.records();
//! assert_eq!(records.len(), 1);
//! assert_eq!(records[0].device().as_str(), "ble-a0b1c2d3e4f5");
//! assert!(matches!(replay.decisions()[0], Outcome::Connect { .. }));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod recorded;
pub mod session;

#[cfg(feature = "live")]
pub mod live;

pub use recorded::{Recording, RecordingError, Replay};
pub use session::{
    BleAddress, BleEvent, BleSession, Delivery, Ignored, Outcome, ReconnectPolicy, RejectReason,
    Rejected, Subscription,
};

//! Vigil's canonical model.
//!
//! This crate owns the shapes every other crate agrees on: [`Patient`], [`Device`],
//! [`Assignment`] (device-to-patient with a validity period), [`Reading`] (a coded measurement),
//! [`Event`] (a discrete occurrence such as a fall or a medication ingestion) and the code
//! [`registry`] that maps LOINC, UCUM and IEEE 11073 MDC codes to Vigil's metrics.
//!
//! It performs no I/O and must never learn about transports, storage or HTTP.

pub mod entity;
pub mod event;
pub mod reading;
pub mod registry;
pub mod time;

pub use entity::{Assignment, Device, DeviceId, DeviceKind, Patient, PatientId, resolve_patient};
pub use event::{Event, EventKind};
pub use reading::{
    Component, DataAbsentReason, Flags, Reading, ReadingError, Record, Source, validate_record,
};
pub use registry::{Metric, MetricDef, UnitError, registry};
pub use time::Timestamp;

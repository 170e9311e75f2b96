//! Vigil's device decoders: bytes in, canonical readings out.
//!
//! This crate owns the formats devices speak and their translation into the canonical model of
//! [`vigil_model`]:
//!
//! - [`ieee11073`]: IEEE 11073-20601 SFLOAT and FLOAT numbers (decode and encode), with special
//!   values turned into data-absent reasons, never into numbers;
//! - [`gatt`]: the Bluetooth SIG GATT health characteristics (heart rate, temperature, blood
//!   pressure, cuff pressure, pulse oximetry, glucose, weight), byte-exact;
//! - [`hl7`]: HL7 v2 ORU^R01 observation messages of the IHE PCD-01 profile, and ACKs;
//! - [`mllp`]: MLLP framing and an incremental de-framer;
//! - the [`Decoder`] trait and its registry [`decoder_for`], which the gateway uses to pick a
//!   decoder by format name (`ble:2A37`, `hl7`).
//!
//! Every decoder is a pure function. This crate must never perform I/O (no sockets, files,
//! clocks or environment), never panic on input bytes, never turn a special or missing value
//! into a number (an empty HL7 value is no reading, a NaN SFLOAT is a reading with a
//! data-absent reason), and never apply clinical judgement beyond mapping device status bits
//! to reading [`Flags`](vigil_model::Flags). Plausibility ranges are checked downstream with
//! [`vigil_model::validate_record`].
//!
//! ```
//! use vigil_devices::{DecodeContext, decoder_for};
//! use vigil_model::{DeviceId, Timestamp};
//!
//! let ctx = DecodeContext::new(DeviceId::new("strap-7")?, Timestamp::from_secs(1_700_000_000));
//! let decoder = decoder_for("ble:2A37").expect("a known format");
//! let decoded = decoder.decode(&[0x00, 0x48], &ctx)?;
//! assert_eq!(decoded[0].fields["heart_rate_bpm"], 72);
//! assert_eq!(decoded[0].readings[0].metric.loinc(), "8867-4");
//! assert_eq!(decoded[0].readings[0].value, Some(72.0));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod gatt;
pub mod hl7;
pub mod ieee11073;
pub mod mllp;
pub mod templates;

use serde::Serialize;
use std::fmt;
use vigil_model::{DeviceId, Event, Reading, Record, Timestamp};

/// What the caller knows about one payload that the payload itself may not say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeContext {
    /// The device the payload came from (readings carry it).
    pub device: DeviceId,
    /// When the gateway received the payload. It becomes each reading's `received`, and its
    /// `time` when the payload carries no usable time of its own.
    pub received: Timestamp,
}

impl DecodeContext {
    pub fn new(device: DeviceId, received: Timestamp) -> Self {
        Self { device, received }
    }
}

/// One decoded payload: its fields as the format names them, and the canonical records.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decoded {
    /// The format name, as accepted by [`decoder_for`] (`ble:2A37`, `hl7`).
    pub format: String,
    /// The payload's fields under their specification names, as a JSON object.
    pub fields: serde_json::Value,
    /// Canonical readings (LOINC metric, canonical UCUM unit, device, time, flags).
    pub readings: Vec<Reading>,
    /// Canonical events (none of the current formats produce any).
    pub events: Vec<Event>,
}

impl Decoded {
    /// The readings and events as outbox records, readings first.
    pub fn into_records(self) -> Vec<Record> {
        self.readings
            .into_iter()
            .map(Record::Reading)
            .chain(self.events.into_iter().map(Record::Event))
            .collect()
    }
}

/// Why an input could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error(transparent)]
    Gatt(#[from] gatt::GattError),
    #[error(transparent)]
    Hl7(#[from] hl7::Hl7Error),
    #[error("HL7 message {index} of the input: {source}")]
    Hl7Message {
        index: usize,
        #[source]
        source: hl7::Hl7Error,
    },
    #[error(transparent)]
    Mllp(#[from] mllp::MllpError),
    #[error("{format}: the input holds no message")]
    Empty { format: String },
    /// The error of a format that has no variant of its own.
    #[error("{format}: {source}")]
    Format {
        format: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// A device format the gateway can decode. Implementations are stateless and pure.
pub trait Decoder: Send + Sync + fmt::Debug {
    /// The format name this decoder was found under (`ble:2A37`, `hl7`).
    fn format(&self) -> &str;
    /// Decodes one input (one GATT notification, or one or more HL7 messages).
    fn decode(&self, input: &[u8], ctx: &DecodeContext) -> Result<Vec<Decoded>, DecodeError>;
}

/// One registered format family.
struct Format {
    /// Name prefix, lower case (`ble:`, `hl7`).
    prefix: &'static str,
    /// Builds a decoder from the rest of the name after the prefix.
    make: fn(&str) -> Option<Box<dyn Decoder>>,
    /// Every full name the family accepts, in canonical spelling.
    names: fn() -> Vec<String>,
}

/// The format registry. Adding a format is one module and one line here.
const FORMATS: &[Format] = &[
    Format {
        prefix: "ble:",
        make: gatt::decoder_for,
        names: gatt::format_names,
    },
    Format {
        prefix: "hl7",
        make: hl7::decoder_for,
        names: hl7::format_names,
    },
    Format {
        prefix: "template:",
        make: templates::decoder_for,
        names: templates::format_names,
    },
];

/// The decoder for a format name: `ble:XXXX` with a supported GATT characteristic UUID (hex,
/// any case, optional `0x`), or `hl7`. Names are case-insensitive.
pub fn decoder_for(format: &str) -> Option<Box<dyn Decoder>> {
    let name = format.trim().to_ascii_lowercase();
    FORMATS
        .iter()
        .find_map(|f| name.strip_prefix(f.prefix).and_then(f.make))
}

/// Every format name [`decoder_for`] accepts, in canonical spelling.
pub fn formats() -> Vec<String> {
    FORMATS.iter().flat_map(|f| (f.names)()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_format_has_a_decoder_under_its_own_name() {
        for f in formats() {
            let d = decoder_for(&f).unwrap_or_else(|| panic!("no decoder for {f}"));
            assert_eq!(d.format(), f);
        }
        assert_eq!(
            decoder_for(" BLE:0x2a37 ").map(|d| d.format().to_owned()),
            Some("ble:2A37".to_owned())
        );
        assert!(decoder_for("ble:2A00").is_none());
        assert!(decoder_for("hl7x").is_none());
        assert!(decoder_for("mqtt").is_none());
    }
}

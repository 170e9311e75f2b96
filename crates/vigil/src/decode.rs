//! `vigil decode`: decode one device payload and print the canonical readings as JSON, the
//! way an integration engineer debugs a device.

use crate::InputError;
use clap::Args;
use serde_json::{Value, json};
use std::io::Read;
use vigil_devices::{DecodeContext, decoder_for, formats};
use vigil_model::{DeviceId, Timestamp};

#[derive(Debug, Args)]
pub struct DecodeArgs {
    /// Payload format: ble:2A37, ble:2A1C, ble:2A35, ble:2A36, ble:2A5E, ble:2A5F, ble:2A18,
    /// ble:2A9D or hl7.
    #[arg(long)]
    format: String,
    /// Hex bytes, a file, or - for standard input.
    input: String,
    /// Device id to attribute the readings to.
    #[arg(long, default_value = "decode-cli")]
    device: String,
}

fn input_bytes(arg: &str) -> Result<Vec<u8>, InputError> {
    let raw = if arg == "-" {
        let mut b = Vec::new();
        std::io::stdin()
            .read_to_end(&mut b)
            .map_err(|e| InputError(format!("cannot read standard input: {e}")))?;
        b
    } else if std::path::Path::new(arg).is_file() {
        std::fs::read(arg).map_err(|e| InputError(format!("cannot read {arg}: {e}")))?
    } else {
        arg.as_bytes().to_vec()
    };
    Ok(raw)
}

/// Hex text (spaces, colons and a 0x prefix allowed) to bytes.
fn hex_bytes(text: &[u8]) -> Result<Vec<u8>, InputError> {
    let s = String::from_utf8_lossy(text);
    let s = s.trim().trim_start_matches("0x");
    let clean: String = s
        .chars()
        .filter(|c| !c.is_whitespace() && *c != ':' && *c != '-')
        .collect();
    hex::decode(&clean).map_err(|e| InputError(format!("input is not hex bytes: {e}")))
}

pub fn run(a: DecodeArgs) -> anyhow::Result<()> {
    let decoder = decoder_for(&a.format).ok_or_else(|| {
        InputError(format!(
            "unknown format {:?}; one of {}",
            a.format,
            formats().join(", ")
        ))
    })?;
    let device = DeviceId::new(a.device.as_str()).map_err(|e| InputError(e.to_string()))?;
    let raw = input_bytes(&a.input)?;
    let bytes = if a.format.to_ascii_lowercase().starts_with("ble:") {
        hex_bytes(&raw)?
    } else {
        raw
    };
    let ctx = DecodeContext {
        device,
        received: Timestamp::now(),
    };
    let decoded = decoder
        .decode(&bytes, &ctx)
        .map_err(|e| InputError(e.to_string()))?;
    let mut out = Vec::new();
    for d in &decoded {
        for r in &d.readings {
            let mut o = json!({
                "loinc": r.metric.loinc(),
                "display": r.metric.display(),
                "unit": r.metric.ucum(),
                "time": r.time,
                "device": r.device,
                "flags": r.flags,
                "fields": d.fields,
            });
            if let Some(v) = r.value {
                o["value"] = json!(v);
            }
            if !r.components.is_empty() {
                o["components"] = r
                    .components
                    .iter()
                    .map(|c| json!({"loinc": c.metric.loinc(), "value": c.value, "unit": c.metric.ucum()}))
                    .collect::<Value>();
            }
            if let Some(reason) = r.absent {
                o["data_absent_reason"] = json!(reason.code());
            }
            out.push(o);
        }
        for e in &d.events {
            out.push(json!({"event": e, "fields": d.fields}));
        }
        if d.readings.is_empty() && d.events.is_empty() {
            out.push(json!({"fields": d.fields, "note": "this payload carries no reading"}));
        }
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

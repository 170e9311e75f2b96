//! Declarative mappings for vendor JSON: the device-content and FHIR mapping templates of the
//! IoMT FHIR Connector for Azure (Azure Health Data Services MedTech service), loaded unchanged.
//!
//! - [`ContentTemplate`]: `CollectionContent` of `JsonPathContent`, `IotJsonPathContent`,
//!   `IotCentralJsonPathContent` and `CalculatedContent` (JSONPath or JMESPath per
//!   expression). [`ContentTemplate::evaluate`] turns a payload into [`Measurement`]s exactly as
//!   the connector's normalization does (one per match of a `typeMatchExpression`, values as
//!   text); a measurement whose required value, device id or time is missing is
//!   [`Dropped`] with the reason; a payload no template matches is
//!   [`TemplateError::NoMatch`].
//! - [`FhirTemplate`]: `CollectionFhir` of `CodeValueFhir`; codes are resolved against
//!   [`vigil_model::registry`] at load time, with warnings for unknown codes and for codes that
//!   contradict the value's name (the connector's samples code diastolic pressure as 8867-4).
//! - [`TemplateSet`]: the two together; measurements become canonical readings or
//!   [`Unmapped`] entries with the reason.
//! - [`TemplateStore`]: a template file or directory that reloads itself when its files
//!   change, keeping the last good version when a change does not load.
//! - The decoder format `template:PATH` (see [`crate::decoder_for`]).
//!
//! JSONPath is the Newtonsoft.Json dialect the connector uses: `@name` means `@.name`,
//! dotted names may contain `-`, and `$..[?(...)]` also tests the root. It is rewritten to
//! RFC 9535 and evaluated with `serde_json_path`. JMESPath is evaluated with `jmespath`, with
//! the connector's functions `add`, `subtract`, `multiply`, `divide`, `insertString`,
//! `fromUnixTimestamp` and `fromUnixTimestampMs`.
//!
//! Unlike the rest of this crate, [`TemplateSet::load`] and [`TemplateStore`] read files: the
//! templates are configuration. Payloads are still decoded without I/O.

mod content;
mod expr;
mod fhir;
mod store;

pub use content::{ContentKind, ContentTemplate, MeasurementTemplate, ValueTemplate};
pub use expr::Language;
pub use fhir::{
    Code, CodeValueMapping, ComponentMapping, FhirTemplate, ValueMapping, convert, suggested_metric,
};
pub use store::{Reload, TemplateDecoder, TemplateStore, open_decoder};
pub(crate) use store::{decoder_for, format_names};

use crate::DecodeContext;
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Display;
use std::path::{Path, PathBuf};
use vigil_model::{Reading, Timestamp};

/// One normalized measurement, as the connector's normalization stage emits it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Measurement {
    #[serde(rename = "type")]
    pub type_name: String,
    pub device_id: String,
    /// Occurrence time (UTC).
    pub time: Timestamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patient_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encounter_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// Named values as text (the connector keeps them as strings).
    pub values: BTreeMap<String, String>,
}

/// A matched part of the payload that yielded no measurement, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Dropped {
    #[serde(rename = "type")]
    pub type_name: String,
    pub reason: String,
}

/// The measurements of one payload and the matches that were dropped.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Normalized {
    pub measurements: Vec<Measurement>,
    pub dropped: Vec<Dropped>,
}

/// A measurement (or one of its values) that became no reading, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unmapped {
    #[serde(rename = "type")]
    pub type_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value_name: Option<String>,
    pub reason: String,
}

/// Everything one payload decoded into.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TemplateOutput {
    pub measurements: Vec<Measurement>,
    pub dropped: Vec<Dropped>,
    #[serde(skip)]
    pub readings: Vec<Reading>,
    pub unmapped: Vec<Unmapped>,
}

/// Why templates did not load or a payload did not decode.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("template {at}: {reason}")]
    Invalid { at: String, reason: String },
    #[error("template file {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("template file {}: {reason}", path.display())]
    File { path: PathBuf, reason: String },
    #[error("template: payload is not JSON: {0}")]
    Payload(#[source] serde_json::Error),
    #[error(
        "template: the payload matches none of the {} templates (typeName {}): no \
         typeMatchExpression selects any part of it",
        template_types.len(),
        template_types.join(", ")
    )]
    NoMatch { template_types: Vec<String> },
    #[error("template {type_name}: {reason}")]
    Expression { type_name: String, reason: String },
    #[error("template: every match was dropped: {}", reasons.join("; "))]
    AllDropped { reasons: Vec<String> },
}

impl TemplateError {
    pub(crate) fn invalid(at: impl Into<String>, reason: impl Display) -> Self {
        Self::Invalid {
            at: at.into(),
            reason: reason.to_string(),
        }
    }
}

/// A device-content template with its optional FHIR mapping template.
#[derive(Debug, Clone, Default)]
pub struct TemplateSet {
    pub content: ContentTemplate,
    pub fhir: Option<FhirTemplate>,
    /// Load-time warnings (unknown codes, codes that contradict the value's name).
    pub warnings: Vec<String>,
    /// The files it was loaded from.
    pub sources: Vec<PathBuf>,
}

/// Parses template or payload JSON, ignoring a UTF-8 byte order mark.
pub fn parse_json(bytes: &[u8]) -> Result<Value, serde_json::Error> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    serde_json::from_slice(bytes)
}

const CONTENT_TYPES: [&str; 5] = [
    "CollectionContent",
    "JsonPathContent",
    "IotJsonPathContent",
    "IotCentralJsonPathContent",
    "CalculatedContent",
];
const FHIR_TYPES: [&str; 2] = ["CollectionFhir", "CodeValueFhir"];

impl TemplateSet {
    /// A set from template JSON texts.
    pub fn from_json(content: &str, fhir: Option<&str>) -> Result<Self, TemplateError> {
        let c = parse_json(content.as_bytes()).map_err(|e| TemplateError::invalid("", e))?;
        let mut set = Self {
            content: ContentTemplate::from_value(&c)?,
            ..Self::default()
        };
        if let Some(f) = fhir {
            let f = parse_json(f.as_bytes()).map_err(|e| TemplateError::invalid("", e))?;
            let (fhir, warnings) = FhirTemplate::from_value(&f)?;
            set.fhir = Some(fhir);
            set.warnings = warnings;
        }
        Ok(set)
    }

    /// Loads a template file or directory. A directory contributes every `*.json` file in it
    /// (name order); a file named `*devicecontent.json` brings its sibling
    /// `*fhirmapping.json` when there is one. Each file is classified by its `templateType`.
    pub fn load(path: &Path) -> Result<Self, TemplateError> {
        let files = store::template_files(path)?;
        let mut set = Self::default();
        let mut fhir: Option<FhirTemplate> = None;
        for file in &files {
            let bytes = std::fs::read(file).map_err(|source| TemplateError::Io {
                path: file.clone(),
                source,
            })?;
            let v = parse_json(&bytes).map_err(|e| TemplateError::File {
                path: file.clone(),
                reason: format!("not JSON: {e}"),
            })?;
            let ty = v
                .get("templateType")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let in_file = |e: TemplateError| TemplateError::File {
                path: file.clone(),
                reason: e.to_string(),
            };
            if CONTENT_TYPES.iter().any(|t| t.eq_ignore_ascii_case(ty)) {
                let c = ContentTemplate::from_value(&v).map_err(in_file)?;
                set.content.templates.extend(c.templates);
            } else if FHIR_TYPES.iter().any(|t| t.eq_ignore_ascii_case(ty)) {
                let (f, warnings) = FhirTemplate::from_value(&v).map_err(in_file)?;
                set.warnings.extend(
                    warnings
                        .into_iter()
                        .map(|w| format!("{}: {w}", file.display())),
                );
                fhir.get_or_insert_with(FhirTemplate::default)
                    .mappings
                    .extend(f.mappings);
            } else {
                return Err(TemplateError::File {
                    path: file.clone(),
                    reason: format!("unknown templateType {ty:?}"),
                });
            }
        }
        if set.content.templates.is_empty() {
            return Err(TemplateError::File {
                path: path.to_owned(),
                reason: "holds no device-content template".to_owned(),
            });
        }
        set.fhir = fhir;
        set.sources = files;
        Ok(set)
    }

    /// The measurements of a payload (see [`ContentTemplate::evaluate`]).
    pub fn normalize(&self, payload: &Value) -> Result<Normalized, TemplateError> {
        self.content.evaluate(payload)
    }

    /// Canonical readings of measurements, and what could not be mapped.
    pub fn readings(
        &self,
        measurements: &[Measurement],
        ctx: &DecodeContext,
    ) -> (Vec<Reading>, Vec<Unmapped>) {
        let mut readings = Vec::new();
        let mut unmapped = Vec::new();
        for m in measurements {
            match &self.fhir {
                Some(f) => f.readings(m, ctx, &mut readings, &mut unmapped),
                None => unmapped.push(Unmapped {
                    type_name: m.type_name.clone(),
                    value_name: None,
                    reason: "no FHIR mapping template loaded".to_owned(),
                }),
            }
        }
        (readings, unmapped)
    }

    /// Decodes one payload: measurements, readings, dropped matches and unmapped values. An
    /// error when no template matches or when every match was dropped.
    pub fn decode(
        &self,
        payload: &[u8],
        ctx: &DecodeContext,
    ) -> Result<TemplateOutput, TemplateError> {
        let v = parse_json(payload).map_err(TemplateError::Payload)?;
        let n = self.normalize(&v)?;
        if n.measurements.is_empty() {
            return Err(TemplateError::AllDropped {
                reasons: n
                    .dropped
                    .iter()
                    .map(|d| format!("{}: {}", d.type_name, d.reason))
                    .collect(),
            });
        }
        let (readings, unmapped) = self.readings(&n.measurements, ctx);
        Ok(TemplateOutput {
            measurements: n.measurements,
            dropped: n.dropped,
            readings,
            unmapped,
        })
    }
}

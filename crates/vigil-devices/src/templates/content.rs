//! Device-content templates: `CollectionContent` of `JsonPathContent`, `IotJsonPathContent`,
//! `IotCentralJsonPathContent` and `CalculatedContent`, and their evaluation into
//! [`Measurement`]s exactly as the connector's normalization stage does it.

use super::expr::{Expr, Language};
use super::{Dropped, Measurement, Normalized, TemplateError};
use serde::{Deserialize, Deserializer};
use serde_json::Value;
use std::collections::BTreeMap;
use vigil_model::Timestamp;

/// How a content template evaluates its expressions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentKind {
    /// `JsonPathContent`: expressions are evaluated on the matched token.
    JsonPath,
    /// `IotJsonPathContent`: as `JsonPath`, with the device from
    /// `$.SystemProperties.iothub-connection-device-id` and the time from
    /// `$.SystemProperties.iothub-enqueuedtime`.
    IotJsonPath,
    /// `IotCentralJsonPathContent`: as `JsonPath`, with the device from `$.deviceId` and the
    /// time from `$.enqueuedTime`.
    IotCentralJsonPath,
    /// `CalculatedContent`: expressions are evaluated on the whole payload with the matched
    /// token added as `matchedToken`; JSONPath or JMESPath per expression.
    Calculated,
}

impl ContentKind {
    pub fn template_type(self) -> &'static str {
        match self {
            Self::JsonPath => "JsonPathContent",
            Self::IotJsonPath => "IotJsonPathContent",
            Self::IotCentralJsonPath => "IotCentralJsonPathContent",
            Self::Calculated => "CalculatedContent",
        }
    }
    fn parse(s: &str) -> Option<Self> {
        [
            Self::JsonPath,
            Self::IotJsonPath,
            Self::IotCentralJsonPath,
            Self::Calculated,
        ]
        .into_iter()
        .find(|k| k.template_type().eq_ignore_ascii_case(s))
    }
}

/// One value a template extracts.
#[derive(Debug, Clone)]
pub struct ValueTemplate {
    pub name: String,
    pub required: bool,
    expr: Expr,
}

/// One measurement template (one `typeName`).
#[derive(Debug, Clone)]
pub struct MeasurementTemplate {
    pub kind: ContentKind,
    pub type_name: String,
    type_match: Expr,
    device_id: Expr,
    timestamp: Expr,
    patient_id: Option<Expr>,
    encounter_id: Option<Expr>,
    correlation_id: Option<Expr>,
    pub values: Vec<ValueTemplate>,
}

/// A loaded device-content template: the measurement templates in file order.
#[derive(Debug, Clone, Default)]
pub struct ContentTemplate {
    pub templates: Vec<MeasurementTemplate>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawContainer {
    template_type: String,
    template: Value,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawExpr {
    Text(String),
    Full {
        value: String,
        #[serde(default)]
        language: Option<String>,
    },
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawValue {
    value_name: String,
    value_expression: RawExpr,
    #[serde(default, deserialize_with = "bool_or_text")]
    required: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawContent {
    type_name: String,
    type_match_expression: RawExpr,
    #[serde(default)]
    device_id_expression: Option<RawExpr>,
    #[serde(default)]
    timestamp_expression: Option<RawExpr>,
    #[serde(default)]
    patient_id_expression: Option<RawExpr>,
    #[serde(default)]
    encounter_id_expression: Option<RawExpr>,
    #[serde(default)]
    correlation_id_expression: Option<RawExpr>,
    #[serde(default)]
    default_expression_language: Option<String>,
    #[serde(default)]
    values: Vec<RawValue>,
}

/// `"required": true` and `"required": "true"` both occur in the connector's files.
fn bool_or_text<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    match Value::deserialize(d)? {
        Value::Bool(b) => Ok(b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Ok(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Ok(false),
        Value::Null => Ok(false),
        other => Err(serde::de::Error::custom(format!(
            "required must be true or false, not {other}"
        ))),
    }
}

impl ContentTemplate {
    /// Loads a `CollectionContent` or a single content template from its JSON value.
    pub fn from_value(v: &Value) -> Result<Self, TemplateError> {
        let container = RawContainer::deserialize(v).map_err(|e| TemplateError::invalid("", e))?;
        let mut templates = Vec::new();
        if container
            .template_type
            .eq_ignore_ascii_case("CollectionContent")
        {
            let Value::Array(items) = &container.template else {
                return Err(TemplateError::invalid(
                    "CollectionContent",
                    "template must be an array",
                ));
            };
            for (i, item) in items.iter().enumerate() {
                let inner = RawContainer::deserialize(item)
                    .map_err(|e| TemplateError::invalid(format!("template[{i}]"), e))?;
                templates.push(one(&inner, &format!("template[{i}]"))?);
            }
        } else {
            templates.push(one(&container, "template")?);
        }
        Ok(Self { templates })
    }

    /// The type names of the templates, in order.
    pub fn type_names(&self) -> Vec<String> {
        self.templates.iter().map(|t| t.type_name.clone()).collect()
    }

    /// Every measurement the payload yields, template by template and match by match; a
    /// [`TemplateError::NoMatch`] when no template matches any part of it.
    pub fn evaluate(&self, payload: &Value) -> Result<Normalized, TemplateError> {
        let mut out = Normalized::default();
        let mut matched = false;
        for t in &self.templates {
            let tokens =
                t.type_match
                    .select_all(payload)
                    .map_err(|reason| TemplateError::Expression {
                        type_name: t.type_name.clone(),
                        reason,
                    })?;
            // The connector adds each match to a copy of the payload; one copy per template
            // with `matchedToken` replaced per match is the same and linear in the matches.
            let mut calculated =
                (t.kind == ContentKind::Calculated && !tokens.is_empty()).then(|| match payload {
                    Value::Object(map) => map.clone(),
                    other => {
                        let mut map = serde_json::Map::new();
                        map.insert("Body".to_owned(), other.clone());
                        map
                    }
                });
            for token in tokens {
                matched = true;
                let result = match calculated.take() {
                    Some(mut map) => {
                        map.insert("matchedToken".to_owned(), token);
                        let scope = Value::Object(map);
                        let r = t.measurement(&scope);
                        if let Value::Object(map) = scope {
                            calculated = Some(map);
                        }
                        r
                    }
                    None => t.measurement(&token),
                };
                match result {
                    Ok(m) => out.measurements.push(m),
                    Err(reason) => out.dropped.push(Dropped {
                        type_name: t.type_name.clone(),
                        reason,
                    }),
                }
            }
        }
        if matched {
            Ok(out)
        } else {
            Err(TemplateError::NoMatch {
                template_types: self.type_names(),
            })
        }
    }
}

fn one(c: &RawContainer, at: &str) -> Result<MeasurementTemplate, TemplateError> {
    let kind = ContentKind::parse(&c.template_type).ok_or_else(|| {
        TemplateError::invalid(
            at,
            format!(
                "unsupported templateType {:?} (expected JsonPathContent, IotJsonPathContent, \
                 IotCentralJsonPathContent or CalculatedContent)",
                c.template_type
            ),
        )
    })?;
    let raw = RawContent::deserialize(&c.template)
        .map_err(|e| TemplateError::invalid(format!("{at} ({})", c.template_type), e))?;
    let at = format!("{at} ({})", raw.type_name);
    let default_lang = match (&kind, &raw.default_expression_language) {
        (ContentKind::Calculated, Some(l)) => Language::parse(l).ok_or_else(|| {
            TemplateError::invalid(&at, format!("unknown defaultExpressionLanguage {l:?}"))
        })?,
        _ => Language::JsonPath,
    };
    let compile = |r: &RawExpr, field: &str| -> Result<Expr, TemplateError> {
        let (src, lang) = match r {
            RawExpr::Text(s) => (s.as_str(), default_lang),
            RawExpr::Full { value, language } => {
                let lang = match language {
                    None => default_lang,
                    Some(l) => Language::parse(l).ok_or_else(|| {
                        TemplateError::invalid(&at, format!("{field}: unknown language {l:?}"))
                    })?,
                };
                if kind != ContentKind::Calculated && lang != Language::JsonPath {
                    return Err(TemplateError::invalid(
                        &at,
                        format!("{field}: {} supports JsonPath only", kind.template_type()),
                    ));
                }
                (value.as_str(), lang)
            }
        };
        if src.trim().is_empty() {
            return Err(TemplateError::invalid(&at, format!("{field} is empty")));
        }
        Expr::compile(src, lang).map_err(|e| TemplateError::invalid(&at, format!("{field}: {e}")))
    };
    let opt = |r: &Option<RawExpr>, field: &str| -> Result<Option<Expr>, TemplateError> {
        match r {
            None => Ok(None),
            Some(RawExpr::Text(s)) if s.trim().is_empty() => Ok(None),
            Some(r) => compile(r, field).map(Some),
        }
    };
    let fixed =
        |p: &str| Expr::compile(p, Language::JsonPath).map_err(|e| TemplateError::invalid(&at, e));
    let required = |r: &Option<RawExpr>, field: &str| -> Result<Expr, TemplateError> {
        opt(r, field)?.ok_or_else(|| TemplateError::invalid(&at, format!("{field} is required")))
    };
    let (device_id, timestamp) = match kind {
        ContentKind::IotJsonPath => (
            fixed("$.SystemProperties.iothub-connection-device-id")?,
            fixed("$.SystemProperties.iothub-enqueuedtime")?,
        ),
        ContentKind::IotCentralJsonPath => (fixed("$.deviceId")?, fixed("$.enqueuedTime")?),
        _ => (
            required(&raw.device_id_expression, "deviceIdExpression")?,
            required(&raw.timestamp_expression, "timestampExpression")?,
        ),
    };
    if raw.type_name.trim().is_empty() {
        return Err(TemplateError::invalid(&at, "typeName is empty"));
    }
    let mut values = Vec::with_capacity(raw.values.len());
    for v in &raw.values {
        if v.value_name.trim().is_empty() {
            return Err(TemplateError::invalid(&at, "a valueName is empty"));
        }
        values.push(ValueTemplate {
            name: v.value_name.clone(),
            required: v.required,
            expr: compile(&v.value_expression, &format!("value {}", v.value_name))?,
        });
    }
    Ok(MeasurementTemplate {
        kind,
        type_name: raw.type_name.clone(),
        type_match: compile(&raw.type_match_expression, "typeMatchExpression")?,
        device_id,
        timestamp,
        patient_id: opt(&raw.patient_id_expression, "patientIdExpression")?,
        encounter_id: opt(&raw.encounter_id_expression, "encounterIdExpression")?,
        correlation_id: opt(&raw.correlation_id_expression, "correlationIdExpression")?,
        values,
    })
}

impl MeasurementTemplate {
    /// The measurement of one matched token, or why there is none.
    /// The measurement of one match; `scope` is what its expressions are evaluated on (the
    /// matched token, or for `CalculatedContent` the payload with `matchedToken` added).
    fn measurement(&self, scope: &Value) -> Result<Measurement, String> {
        let text = |e: &Expr, what: &str, required: bool| -> Result<Option<String>, String> {
            match e.select_one(scope) {
                Ok(Some(v)) => Ok(Some(value_text(&v))),
                Ok(None) if required => Err(format!(
                    "required {what} missing: {:?} selects nothing",
                    e.source()
                )),
                Ok(None) => Ok(None),
                Err(reason) => Err(format!("{what}: {reason}")),
            }
        };
        let device_id = text(&self.device_id, "device id", true)?.unwrap_or_default();
        let time_value = self
            .timestamp
            .select_one(scope)
            .map_err(|r| format!("timestamp: {r}"))?
            .ok_or_else(|| {
                format!(
                    "required timestamp missing: {:?} selects nothing",
                    self.timestamp.source()
                )
            })?;
        let time = parse_time(&time_value)?;
        let patient_id = match &self.patient_id {
            Some(e) => text(e, "patient id", false)?,
            None => None,
        };
        let encounter_id = match &self.encounter_id {
            Some(e) => text(e, "encounter id", false)?,
            None => None,
        };
        let correlation_id = match &self.correlation_id {
            Some(e) => text(e, "correlation id", true)?,
            None => None,
        };
        let mut values = BTreeMap::new();
        for v in &self.values {
            if let Some(t) = text(&v.expr, &format!("value {}", v.name), v.required)? {
                values.insert(v.name.clone(), t);
            }
        }
        Ok(Measurement {
            type_name: self.type_name.clone(),
            device_id,
            time,
            patient_id,
            encounter_id,
            correlation_id,
            values,
        })
    }
}

/// A token as the connector's `Value<string>()` renders it: strings as they are, numbers in
/// their shortest round-trip form, booleans as `true`/`false`, objects and arrays as JSON.
fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A device time: RFC 3339 (any number of fraction digits), or ISO 8601 without an offset,
/// read as UTC as the connector does.
pub(crate) fn parse_time(v: &Value) -> Result<Timestamp, String> {
    let Value::String(s) = v else {
        return Err(format!(
            "timestamp {v} is not a date-time text (for Unix times use a JmesPath expression \
             with fromUnixTimestamp)"
        ));
    };
    let s = s.trim();
    if let Ok(t) = Timestamp::parse(s) {
        return Ok(t);
    }
    use time::format_description::well_known::Iso8601;
    if let Ok(t) = time::OffsetDateTime::parse(s, &Iso8601::DEFAULT) {
        return Ok(Timestamp::from_millis(
            (t.unix_timestamp_nanos() / 1_000_000) as i64,
        ));
    }
    if let Ok(t) = time::PrimitiveDateTime::parse(s, &Iso8601::DEFAULT) {
        return Ok(Timestamp::from_millis(
            (t.assume_utc().unix_timestamp_nanos() / 1_000_000) as i64,
        ));
    }
    let with_t = s.replacen(' ', "T", 1);
    if with_t != s
        && let Ok(t) = time::PrimitiveDateTime::parse(&with_t, &Iso8601::DEFAULT)
    {
        return Ok(Timestamp::from_millis(
            (t.assume_utc().unix_timestamp_nanos() / 1_000_000) as i64,
        ));
    }
    Err(format!("timestamp {s:?} is not an ISO 8601 date-time"))
}

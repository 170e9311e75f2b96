//! FHIR mapping templates (`CollectionFhir` of `CodeValueFhir`): the codes the connector gives
//! each `typeName` and `valueName`, resolved against Vigil's registry at load time.

use super::{Measurement, TemplateError, Unmapped};
use crate::DecodeContext;
use serde::Deserialize;
use serde_json::Value;
use vigil_model::{Component, DeviceId, Metric, PatientId, Reading, Source, registry};

const LOINC: &str = "http://loinc.org";

/// One code of a mapping.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Code {
    pub code: String,
    #[serde(default)]
    pub system: Option<String>,
    #[serde(default)]
    pub display: Option<String>,
}

/// How one named value is mapped.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ValueMapping {
    pub value_name: String,
    /// `SampledData`, `Quantity`, `String` or `CodeableConcept`.
    #[serde(default)]
    pub value_type: Option<String>,
    /// The unit the payload gives the value in (as the template spells it).
    #[serde(default)]
    pub unit: Option<String>,
}

impl ValueMapping {
    fn numeric(&self) -> bool {
        self.value_type.as_deref().is_none_or(|t| {
            t.eq_ignore_ascii_case("SampledData") || t.eq_ignore_ascii_case("Quantity")
        })
    }
}

/// A component of a panel mapping.
#[derive(Debug, Clone)]
pub struct ComponentMapping {
    pub codes: Vec<Code>,
    /// The registry metric of the first LOINC code the registry knows, or why there is none.
    pub metric: Result<Metric, String>,
    pub value: ValueMapping,
}

/// One `CodeValueFhir` template.
#[derive(Debug, Clone)]
pub struct CodeValueMapping {
    pub type_name: String,
    pub codes: Vec<Code>,
    pub metric: Result<Metric, String>,
    pub value: Option<ValueMapping>,
    pub components: Vec<ComponentMapping>,
}

/// A loaded FHIR mapping template.
#[derive(Debug, Clone, Default)]
pub struct FhirTemplate {
    pub mappings: Vec<CodeValueMapping>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawContainer {
    template_type: String,
    template: Value,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawCodeValue {
    type_name: String,
    #[serde(default)]
    codes: Vec<Code>,
    #[serde(default)]
    value: Option<ValueMapping>,
    #[serde(default)]
    components: Vec<RawComponent>,
}

#[derive(Deserialize)]
struct RawComponent {
    #[serde(default)]
    codes: Vec<Code>,
    value: ValueMapping,
}

impl FhirTemplate {
    /// Loads a `CollectionFhir` or a single `CodeValueFhir`; the warnings say which codes
    /// the registry does not know and which look wrong for the value they code.
    pub fn from_value(v: &Value) -> Result<(Self, Vec<String>), TemplateError> {
        let c = RawContainer::deserialize(v).map_err(|e| TemplateError::invalid("", e))?;
        let items: Vec<(String, RawContainer)> =
            if c.template_type.eq_ignore_ascii_case("CollectionFhir") {
                let Value::Array(items) = c.template else {
                    return Err(TemplateError::invalid(
                        "CollectionFhir",
                        "template must be an array",
                    ));
                };
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| {
                        RawContainer::deserialize(item)
                            .map(|r| (format!("template[{i}]"), r))
                            .map_err(|e| TemplateError::invalid(format!("template[{i}]"), e))
                    })
                    .collect::<Result<_, _>>()?
            } else {
                vec![("template".to_owned(), c)]
            };
        let mut mappings = Vec::new();
        let mut warnings = Vec::new();
        for (at, item) in items {
            if !item.template_type.eq_ignore_ascii_case("CodeValueFhir") {
                return Err(TemplateError::invalid(
                    at,
                    format!(
                        "unsupported FHIR templateType {:?} (expected CodeValueFhir)",
                        item.template_type
                    ),
                ));
            }
            let raw = RawCodeValue::deserialize(&item.template)
                .map_err(|e| TemplateError::invalid(&at, e))?;
            let m = CodeValueMapping {
                metric: resolve(&raw.codes),
                components: raw
                    .components
                    .into_iter()
                    .map(|c| ComponentMapping {
                        metric: resolve(&c.codes),
                        codes: c.codes,
                        value: c.value,
                    })
                    .collect(),
                type_name: raw.type_name,
                codes: raw.codes,
                value: raw.value,
            };
            warnings.extend(check(&m));
            mappings.push(m);
        }
        Ok((Self { mappings }, warnings))
    }

    /// The mapping of a type name.
    pub fn mapping(&self, type_name: &str) -> Option<&CodeValueMapping> {
        self.mappings.iter().find(|m| m.type_name == type_name)
    }

    /// Canonical readings of one measurement; what could not be mapped, with the reason.
    pub fn readings(
        &self,
        m: &Measurement,
        ctx: &DecodeContext,
        readings: &mut Vec<Reading>,
        unmapped: &mut Vec<Unmapped>,
    ) {
        let miss = |value_name: Option<&str>, reason: String| Unmapped {
            type_name: m.type_name.clone(),
            value_name: value_name.map(str::to_owned),
            reason,
        };
        let Some(map) = self.mapping(&m.type_name) else {
            unmapped.push(miss(
                None,
                format!("no FHIR mapping for typeName {:?}", m.type_name),
            ));
            return;
        };
        let device = match DeviceId::new(m.device_id.as_str()) {
            Ok(d) => d,
            Err(e) => {
                unmapped.push(miss(None, format!("device id: {e}")));
                return;
            }
        };
        let patient = m.patient_id.as_deref().and_then(|p| PatientId::new(p).ok());
        let finish = |mut r: Reading| {
            r.received = Some(ctx.received);
            r.source = Source::Template;
            r.patient = patient.clone();
            r
        };
        if let Some(v) = &map.value {
            match number(m, v, &map.metric) {
                Ok(None) => {}
                Ok(Some((metric, _))) if metric.is_panel() => unmapped.push(miss(
                    Some(&v.value_name),
                    format!(
                        "{} is a panel: map its values as components",
                        metric.loinc()
                    ),
                )),
                Ok(Some((metric, value))) => readings.push(finish(Reading::quantity(
                    device.clone(),
                    metric,
                    value,
                    m.time,
                ))),
                Err(reason) => unmapped.push(miss(Some(&v.value_name), reason)),
            }
        }
        if map.components.is_empty() {
            return;
        }
        let panel = map.metric.as_ref().ok().copied().filter(|p| p.is_panel());
        let mut parts = Vec::new();
        for c in &map.components {
            if !m.values.contains_key(&c.value.value_name) {
                continue;
            }
            if let (Some(p), Ok(cm)) = (panel, &c.metric)
                && !p.components().contains(cm)
            {
                unmapped.push(miss(
                    Some(&c.value.value_name),
                    format!(
                        "component {} ({}) does not belong to panel {} ({})",
                        cm.loinc(),
                        cm.display(),
                        p.loinc(),
                        p.display()
                    ),
                ));
                continue;
            }
            match number(m, &c.value, &c.metric) {
                Ok(None) => {}
                Ok(Some((metric, value))) if panel.is_some() => {
                    parts.push(Component { metric, value });
                }
                Ok(Some((metric, value))) => readings.push(finish(Reading::quantity(
                    device.clone(),
                    metric,
                    value,
                    m.time,
                ))),
                Err(reason) => unmapped.push(miss(Some(&c.value.value_name), reason)),
            }
        }
        if let Some(p) = panel
            && !parts.is_empty()
        {
            readings.push(finish(Reading::panel(device, p, parts, m.time)));
        }
    }
}

/// The canonical number of one mapped value: `Ok(None)` when the measurement lacks it.
fn number(
    m: &Measurement,
    v: &ValueMapping,
    metric: &Result<Metric, String>,
) -> Result<Option<(Metric, f64)>, String> {
    let Some(text) = m.values.get(&v.value_name) else {
        return Ok(None);
    };
    if !v.numeric() {
        return Err(format!(
            "valueType {} is not a numeric reading",
            v.value_type.as_deref().unwrap_or_default()
        ));
    }
    let metric = metric.clone()?;
    let x: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("value {text:?} is not a number"))?;
    if !x.is_finite() {
        return Err(format!("value {text:?} is not a finite number"));
    }
    let x = convert(metric, x, v.unit.as_deref().unwrap_or_default())?;
    Ok(Some((metric, x)))
}

/// Converts a value in a template's unit (often not UCUM: `count/min`, `mmHg`, `degC`) into
/// the metric's canonical unit.
pub fn convert(metric: Metric, value: f64, unit: &str) -> Result<f64, String> {
    let unit = unit.trim();
    let ucum = ucum_alias(unit).unwrap_or(unit);
    if ucum == "{count}" && metric.ucum().starts_with('{') {
        return Ok(value);
    }
    metric.to_canonical(value, ucum).map_err(|e| e.to_string())
}

fn ucum_alias(unit: &str) -> Option<&'static str> {
    const TABLE: &[(&str, &[&str])] = &[
        (
            "/min",
            &[
                "count/min",
                "{count}/min",
                "bpm",
                "beats/min",
                "{beats}/min",
                "{beat}/min",
                "breaths/min",
                "{breaths}/min",
                "{breath}/min",
                "1/min",
                "min-1",
            ],
        ),
        ("%", &["percent", "pct"]),
        ("Cel", &["degC", "°C", "C", "celsius"]),
        ("[degF]", &["degF", "°F", "F", "fahrenheit"]),
        ("mm[Hg]", &["mmHg", "mm Hg", "mmhg"]),
        ("{count}", &["count", "{count}", "steps", "{steps}", "1"]),
        ("[lb_av]", &["lb", "lbs", "pound", "pounds"]),
        ("[in_i]", &["in", "inch", "inches"]),
        ("kg", &["kilogram", "kilograms"]),
        ("m", &["meter", "meters", "metre", "metres"]),
        ("L/min", &["l/min", "lpm"]),
        ("L", &["l", "liter", "litre"]),
        ("mg/dL", &["mg/dl"]),
        ("mmol/L", &["mmol/l"]),
    ];
    TABLE
        .iter()
        .find(|(_, aliases)| aliases.contains(&unit))
        .map(|(u, _)| *u)
}

/// The metric of the first LOINC code the registry knows.
fn resolve(codes: &[Code]) -> Result<Metric, String> {
    let loinc: Vec<&str> = codes
        .iter()
        .filter(|c| {
            c.system
                .as_deref()
                .is_none_or(|s| s.trim().trim_end_matches('/').eq_ignore_ascii_case(LOINC))
        })
        .map(|c| c.code.trim())
        .collect();
    if loinc.is_empty() {
        let all: Vec<&str> = codes.iter().map(|c| c.code.as_str()).collect();
        return Err(format!("no LOINC code (codes: {})", all.join(", ")));
    }
    loinc
        .iter()
        .find_map(|code| {
            registry()
                .lookup(code)
                .filter(|m| m.loinc() == *code || m.def().aliases.iter().any(|a| a == code))
        })
        .ok_or_else(|| format!("LOINC {} not in Vigil's registry", loinc.join(", ")))
}

/// The metric a value name suggests (a small synonym table per registry key).
pub fn suggested_metric(value_name: &str) -> Option<Metric> {
    const SYNONYMS: &[(&str, &[&str])] = &[
        (
            "heart-rate",
            &["hr", "heartrate", "pulse", "pulserate", "bpm", "pr"],
        ),
        (
            "spo2",
            &["spo2", "oxygensaturation", "o2sat", "sao2", "saturation"],
        ),
        (
            "resp-rate",
            &[
                "rr",
                "resprate",
                "respiratoryrate",
                "respirationrate",
                "breathingrate",
            ],
        ),
        (
            "body-temp",
            &["temp", "temperature", "bodytemp", "bodytemperature"],
        ),
        (
            "bp-systolic",
            &[
                "systolic",
                "sys",
                "sbp",
                "systolicbp",
                "bpsystolic",
                "systolicbloodpressure",
            ],
        ),
        (
            "bp-diastolic",
            &[
                "diastolic",
                "dia",
                "dbp",
                "diastolicbp",
                "bpdiastolic",
                "diastolicbloodpressure",
            ],
        ),
        (
            "bp-mean",
            &["mean", "map", "meanarterialpressure", "meanbp", "bpmean"],
        ),
        ("glucose", &["glucose", "bloodglucose", "bg"]),
        ("body-weight", &["weight", "bodyweight", "bodymass", "mass"]),
        ("body-height", &["height", "bodyheight"]),
        ("bmi", &["bmi", "bodymassindex"]),
        ("fev1", &["fev1"]),
        ("fvc", &["fvc"]),
        ("pef", &["pef", "peakflow", "peakexpiratoryflow"]),
        ("steps", &["steps", "stepcount", "step"]),
        ("perfusion-index", &["pi", "perfusionindex"]),
        ("inhaled-o2-flow", &["o2flow", "oxygenflow"]),
    ];
    let norm: String = value_name
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    SYNONYMS
        .iter()
        .find(|(_, names)| names.contains(&norm.as_str()))
        .and_then(|(key, _)| registry().lookup(key))
}

fn check(m: &CodeValueMapping) -> Vec<String> {
    let mut w = Vec::new();
    let t = &m.type_name;
    let check_value = |v: &ValueMapping, metric: &Result<Metric, String>, w: &mut Vec<String>| {
        if !v.numeric() {
            w.push(format!(
                "typeName {t}: valueName {} has valueType {}: not a numeric reading, its \
                 measurements are reported as unmapped",
                v.value_name,
                v.value_type.as_deref().unwrap_or_default()
            ));
            return;
        }
        match metric {
            Err(reason) => w.push(format!(
                "typeName {t}: valueName {}: {reason}; its measurements are reported as unmapped",
                v.value_name
            )),
            Ok(metric) => {
                let suggested = suggested_metric(&v.value_name).filter(|s| s != metric);
                if let Some(s) = suggested {
                    w.push(format!(
                        "typeName {t}: valueName {} coded {} ({}), but the name suggests {} ({})",
                        v.value_name,
                        metric.loinc(),
                        metric.display(),
                        s.loinc(),
                        s.display()
                    ));
                }
                // A unit that does not fit a miscoded value is that mistake again: not repeated.
                if let (None, Some(u)) = (suggested, v.unit.as_deref())
                    && let Err(e) = convert(*metric, 1.0, u)
                {
                    w.push(format!("typeName {t}: valueName {}: {e}", v.value_name));
                }
            }
        }
    };
    if let Some(v) = &m.value {
        check_value(v, &m.metric, &mut w);
    }
    if !m.components.is_empty() {
        let panel = match &m.metric {
            Ok(p) if p.is_panel() => Some(*p),
            Ok(_) => None,
            Err(reason) => {
                w.push(format!("typeName {t}: panel code: {reason}"));
                None
            }
        };
        for c in &m.components {
            check_value(&c.value, &c.metric, &mut w);
            if let (Some(p), Ok(cm)) = (panel, &c.metric)
                && !p.components().contains(cm)
            {
                w.push(format!(
                    "typeName {t}: component {} ({}) is not part of panel {} ({}); that \
                         value is reported as unmapped",
                    cm.loinc(),
                    cm.display(),
                    p.loinc(),
                    p.display()
                ));
            }
        }
    }
    w
}

//! The code registry: Vigil's metrics, their LOINC codes, UCUM units, IEEE 11073 MDC
//! equivalents, possible ranges and accepted alternate units.
//!
//! The table itself is data (`registry.toml` beside this crate's manifest), parsed once.
//! A [`Metric`] is a small copyable handle into it that serializes as its LOINC code.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::HashMap;
use std::fmt;
use std::sync::LazyLock;

const REGISTRY_TOML: &str = include_str!("../registry.toml");

/// An accepted alternate unit: `canonical = (value + offset) * factor`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct AltUnit {
    pub ucum: String,
    #[serde(default)]
    pub offset: f64,
    pub factor: f64,
}

/// One row of the registry.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct MetricDef {
    pub key: String,
    pub loinc: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    pub display: String,
    pub ucum: String,
    #[serde(default)]
    pub mdc: Vec<u32>,
    pub range: [f64; 2],
    #[serde(default)]
    pub vital_sign: bool,
    #[serde(default)]
    pub components: Vec<String>,
    #[serde(default)]
    pub alt_units: Vec<AltUnit>,
    #[serde(default)]
    pub stream: bool,
}

#[derive(Debug, Deserialize)]
struct RegistryFile {
    metric: Vec<MetricDef>,
}

/// The loaded registry with its look-up indexes.
#[derive(Debug)]
pub struct Registry {
    defs: Vec<MetricDef>,
    by_code: HashMap<String, u16>,
    by_mdc: HashMap<u32, u16>,
    components: Vec<Vec<Metric>>,
}

static REGISTRY: LazyLock<Registry> = LazyLock::new(|| {
    // The table is compiled into the binary and checked by this crate's tests, so a parse
    // failure here is a build defect rather than an input error.
    #[allow(clippy::expect_used)]
    let file: RegistryFile = toml::from_str(REGISTRY_TOML).expect("registry.toml is valid");
    Registry::new(file.metric)
});

/// The process-wide code registry.
pub fn registry() -> &'static Registry {
    &REGISTRY
}

impl Registry {
    fn new(defs: Vec<MetricDef>) -> Self {
        let mut by_code = HashMap::new();
        let mut by_mdc = HashMap::new();
        for (i, d) in defs.iter().enumerate() {
            let i = i as u16;
            by_code.insert(d.key.clone(), i);
            by_code.insert(d.loinc.clone(), i);
            for a in &d.aliases {
                by_code.insert(a.clone(), i);
            }
            for m in &d.mdc {
                by_mdc.insert(*m, i);
            }
        }
        let components = defs
            .iter()
            .map(|d| {
                d.components
                    .iter()
                    .filter_map(|k| by_code.get(k).map(|&i| Metric(i)))
                    .collect()
            })
            .collect();
        Self {
            defs,
            by_code,
            by_mdc,
            components,
        }
    }

    /// Every metric, in table order.
    pub fn all(&self) -> impl Iterator<Item = Metric> + '_ {
        (0..self.defs.len() as u16).map(Metric)
    }

    /// A metric by Vigil key, primary LOINC code or LOINC alias.
    pub fn lookup(&self, code: &str) -> Option<Metric> {
        let code = code.strip_prefix("http://loinc.org|").unwrap_or(code);
        self.by_code.get(code).map(|&i| Metric(i))
    }

    /// A metric by IEEE 11073 MDC code (many MDC codes map to one metric).
    pub fn by_mdc(&self, mdc: u32) -> Option<Metric> {
        self.by_mdc.get(&mdc).map(|&i| Metric(i))
    }
}

/// A handle to one registry row. Serializes as the metric's primary LOINC code.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Metric(u16);

/// A value in a unit the metric does not accept.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("unit {unit:?} is not accepted for {metric} (expected {expected:?})")]
pub struct UnitError {
    pub metric: String,
    pub unit: String,
    pub expected: String,
}

impl Metric {
    pub fn def(self) -> &'static MetricDef {
        &registry().defs[usize::from(self.0)]
    }
    pub fn loinc(self) -> &'static str {
        &self.def().loinc
    }
    pub fn key(self) -> &'static str {
        &self.def().key
    }
    pub fn ucum(self) -> &'static str {
        &self.def().ucum
    }
    pub fn display(self) -> &'static str {
        &self.def().display
    }
    /// Component metrics of a panel (systolic, diastolic, mean for blood pressure).
    pub fn components(self) -> &'static [Metric] {
        &registry().components[usize::from(self.0)]
    }
    pub fn is_panel(self) -> bool {
        !self.components().is_empty()
    }
    /// The physically possible range in the canonical unit.
    pub fn possible(self, v: f64) -> bool {
        let [lo, hi] = self.def().range;
        v.is_finite() && v >= lo && v <= hi
    }
    /// Converts a value given in `unit` into the metric's canonical UCUM unit.
    pub fn to_canonical(self, value: f64, unit: &str) -> Result<f64, UnitError> {
        let d = self.def();
        if unit == d.ucum || unit.is_empty() {
            return Ok(value);
        }
        d.alt_units
            .iter()
            .find(|a| a.ucum == unit)
            .map(|a| (value + a.offset) * a.factor)
            .ok_or_else(|| UnitError {
                metric: d.key.clone(),
                unit: unit.to_owned(),
                expected: d.ucum.clone(),
            })
    }
    /// Converts a canonical value into an alternate unit (the inverse of [`Self::to_canonical`]).
    pub fn from_canonical(self, value: f64, unit: &str) -> Result<f64, UnitError> {
        let d = self.def();
        if unit == d.ucum {
            return Ok(value);
        }
        d.alt_units
            .iter()
            .find(|a| a.ucum == unit)
            .map(|a| value / a.factor - a.offset)
            .ok_or_else(|| UnitError {
                metric: d.key.clone(),
                unit: unit.to_owned(),
                expected: d.ucum.clone(),
            })
    }
    /// A stable small integer for compact storage: the row index. Stores persist the LOINC
    /// code beside it and must not rely on the index across registry versions.
    pub fn index(self) -> u16 {
        self.0
    }
}

impl fmt::Debug for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Metric({} {})", self.key(), self.loinc())
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.loinc())
    }
}

impl std::str::FromStr for Metric {
    type Err = UnknownCode;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        registry()
            .lookup(s)
            .ok_or_else(|| UnknownCode(s.to_owned()))
    }
}

/// A code that is not in the registry.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("code {0:?} is not in the registry")]
pub struct UnknownCode(pub String);

impl Serialize for Metric {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.loinc())
    }
}

impl<'de> Deserialize<'de> for Metric {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<str>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(code: &str) -> Metric {
        code.parse().expect("known code")
    }

    #[test]
    fn every_row_has_a_unique_key_loinc_and_mdc() {
        let r = registry();
        let mut seen = std::collections::HashSet::new();
        for metric in r.all() {
            let d = metric.def();
            assert!(seen.insert(d.key.clone()), "duplicate key {}", d.key);
            assert!(seen.insert(d.loinc.clone()), "duplicate loinc {}", d.loinc);
            for a in &d.aliases {
                assert!(seen.insert(a.clone()), "duplicate alias {a}");
            }
            assert!(d.range[0] < d.range[1], "{} has an empty range", d.key);
            for c in &d.components {
                assert!(
                    r.lookup(c).is_some(),
                    "{} names unknown component {c}",
                    d.key
                );
            }
        }
        let mut mdc = std::collections::HashSet::new();
        for metric in r.all() {
            for code in &metric.def().mdc {
                assert!(mdc.insert(*code), "MDC {code} mapped twice");
            }
        }
    }

    #[test]
    fn mdc_codes_map_many_to_one_as_the_phd_ig_says() {
        // PHD IG: 149546 and 149530 both map to 8867-4.
        let r = registry();
        assert_eq!(r.by_mdc(149546).map(Metric::loinc), Some("8867-4"));
        assert_eq!(r.by_mdc(149530).map(Metric::loinc), Some("8867-4"));
        assert_eq!(r.by_mdc(150456).map(Metric::loinc), Some("59408-5"));
        // 150324 is MDC_SAT_O2_ART, a known mislabel; it is not SpO2 by pulse oximetry.
        assert_eq!(r.by_mdc(150324), None);
        // MDC code structure: partition 2 * 65536 + term.
        assert_eq!(2 * 65536 + 19384, 150456);
    }

    #[test]
    fn aliases_and_keys_resolve_to_the_primary_code() {
        assert_eq!(m("2708-6"), m("59408-5"));
        assert_eq!(m("spo2").loinc(), "59408-5");
        assert_eq!(m("http://loinc.org|8867-4").key(), "heart-rate");
        assert!("8867-5".parse::<Metric>().is_err());
    }

    #[test]
    fn blood_pressure_is_a_panel_of_systolic_diastolic_mean() {
        let bp = m("85354-9");
        let c: Vec<&str> = bp.components().iter().map(|c| c.loinc()).collect();
        assert_eq!(c, ["8480-6", "8462-4", "8478-0"]);
    }

    #[test]
    fn unit_conversions_match_published_factors() {
        let close = |a: f64, b: f64| (a - b).abs() < 1e-6;
        // 98.6 degF = 37 Cel.
        assert!(close(
            m("body-temp").to_canonical(98.6, "[degF]").expect("degF"),
            37.0
        ));
        // ADA: 70 mg/dL is given as 3.9 mmol/L; 54 mg/dL as 3.0 mmol/L.
        assert!((m("glucose").to_canonical(3.9, "mmol/L").expect("mmol") - 70.0).abs() < 0.5);
        assert!((m("glucose").to_canonical(3.0, "mmol/L").expect("mmol") - 54.0).abs() < 0.5);
        // 1 lb = 0.45359237 kg exactly; 1 in = 2.54 cm exactly.
        assert!(close(
            m("body-weight").to_canonical(100.0, "[lb_av]").expect("lb"),
            45.359237
        ));
        assert!(close(
            m("body-height").to_canonical(10.0, "[in_i]").expect("in"),
            25.4
        ));
        // 16 kPa is 120 mmHg (1 mmHg = 133.322 Pa).
        assert!((m("8480-6").to_canonical(16.0, "kPa").expect("kPa") - 120.01).abs() < 0.01);
        assert!(m("8867-4").to_canonical(70.0, "kg").is_err());
        let back = m("body-temp")
            .from_canonical(37.0, "[degF]")
            .expect("inverse");
        assert!(close(back, 98.6));
    }

    #[test]
    fn possible_ranges_reject_impossible_values() {
        assert!(!m("spo2").possible(140.0));
        assert!(m("spo2").possible(97.0));
        assert!(!m("body-weight").possible(-3.0));
        assert!(!m("heart-rate").possible(f64::NAN));
    }
}

//! Clinical and technical scenarios injected into one simulated patient, and the text syntax a
//! command line uses to name them.
//!
//! # Syntax
//!
//! ```text
//! SPEC     = NAME *( "/" MODIFIER ) ":" PATIENT [ "@" TIME ]
//! NAME     = sepsis | desaturation | hypoglycaemia | fall | inactivity | battery-death
//!            (aliases: desat, hypoglycemia, hypo, battery)
//! MODIFIER = DURATION   the scenario's duration (for fall: how long the patient stays down)
//!          | NUMBER     desaturation only: the SpO2 nadir in %, 50 to 95
//!          | DEVICE     battery-death only: wearable, bp, scale, glucose, thermometer,
//!                       oximeter, motion (or the model's kebab-case kind, e.g. weight-scale)
//! PATIENT  = a patient id (p-0003) or its 1-based number (3)
//! TIME     = "+" DURATION   after the cohort's start
//!          | an RFC 3339 instant (2024-05-01T12:00:00Z)
//!          | now            the simulator's current time (also when "@TIME" is left out)
//! DURATION = 1*( INTEGER UNIT ), UNIT = ms | s | m | h | d     e.g. 90s, 10m, 1h30m
//! ```
//!
//! Examples: `sepsis:p-0003@+10m`, `sepsis/4h:3@+1h`, `desat/5m/82:p-0001`,
//! `battery-death/90m/glucose:p-0002@2024-05-01T12:00:00Z`, `fall:p-0004@now`.
//!
//! A [`ScenarioSpec`] prints back in the same syntax, with every default made explicit.

use crate::error::SimError;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;
use vigil_model::{DeviceKind, PatientId, Timestamp};

const MINUTE: u64 = 60;
const HOUR: u64 = 3600;

/// Something that happens to one patient from a start time on.
#[derive(Debug, Clone, PartialEq)]
pub enum Scenario {
    /// Gradual deterioration: HR, respiratory rate and temperature rise, systolic pressure and
    /// SpO2 fall, reaching HR > 110, RR >= 25, temperature >= 38.5 °C, SBP <= 100 mmHg and
    /// SpO2 <= 93 % (a NEWS2 of 7 or more) before `duration` has passed, and staying there.
    /// The care team escalates to half-hourly observation rounds while it lasts.
    Sepsis { duration: Duration },
    /// SpO2 falls to about `nadir` % (ramping over 90 s), stays there, and recovers by the
    /// end of `duration`; the heart rate rises a little.
    Desaturation { duration: Duration, nadir: f64 },
    /// Blood glucose below 54 mg/dL (ADA level 2) for `duration`: a symptomatic check 5 min
    /// after the start, a re-check at 20 min, and every scheduled check within the duration.
    /// Needs a glucose meter.
    Hypoglycaemia { duration: Duration },
    /// A fall event from the wearable, a heart-rate spike decaying over minutes, and no steps
    /// while the patient stays `down`.
    Fall { down: Duration },
    /// No steps and no motion events for `duration`.
    Inactivity { duration: Duration },
    /// The device's battery drains to 5 % over `duration`, reported every 10 minutes; then
    /// the device sends nothing more.
    BatteryDeath {
        device: DeviceKind,
        duration: Duration,
    },
}

impl Scenario {
    /// Sepsis reaching NEWS2 >= 7 within 6 hours.
    pub fn sepsis() -> Self {
        Self::Sepsis {
            duration: Duration::from_secs(6 * HOUR),
        }
    }
    /// An 8-minute desaturation to 85 %.
    pub fn desaturation() -> Self {
        Self::Desaturation {
            duration: Duration::from_secs(8 * MINUTE),
            nadir: 85.0,
        }
    }
    /// A 2-hour hypoglycaemia.
    pub fn hypoglycaemia() -> Self {
        Self::Hypoglycaemia {
            duration: Duration::from_secs(2 * HOUR),
        }
    }
    /// A fall after which the patient stays down for 15 minutes.
    pub fn fall() -> Self {
        Self::Fall {
            down: Duration::from_secs(15 * MINUTE),
        }
    }
    /// Four hours without movement.
    pub fn inactivity() -> Self {
        Self::Inactivity {
            duration: Duration::from_secs(4 * HOUR),
        }
    }
    /// The wearable's battery dies over 2 hours.
    pub fn battery_death() -> Self {
        Self::BatteryDeath {
            device: DeviceKind::Wearable,
            duration: Duration::from_secs(2 * HOUR),
        }
    }

    /// The scenario's name in the text syntax (`sepsis`, `battery-death`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Sepsis { .. } => "sepsis",
            Self::Desaturation { .. } => "desaturation",
            Self::Hypoglycaemia { .. } => "hypoglycaemia",
            Self::Fall { .. } => "fall",
            Self::Inactivity { .. } => "inactivity",
            Self::BatteryDeath { .. } => "battery-death",
        }
    }

    /// The scenario's duration (for a fall, how long the patient stays down).
    pub fn duration(&self) -> Duration {
        match self {
            Self::Sepsis { duration }
            | Self::Desaturation { duration, .. }
            | Self::Hypoglycaemia { duration }
            | Self::Inactivity { duration }
            | Self::BatteryDeath { duration, .. } => *duration,
            Self::Fall { down } => *down,
        }
    }

    /// Checks the parameters: durations from 1 s to 30 days, a nadir from 50 to 95 %.
    pub fn validate(&self) -> Result<(), SimError> {
        let d = self.duration();
        if d < Duration::from_secs(1) || d > Duration::from_secs(30 * 24 * HOUR) {
            return Err(SimError::InvalidScenario(format!(
                "{}: duration {} is outside 1s..30d",
                self.name(),
                format_duration(d)
            )));
        }
        if let Self::Desaturation { nadir, .. } = self
            && !(50.0..=95.0).contains(nadir)
        {
            return Err(SimError::InvalidScenario(format!(
                "desaturation: nadir {nadir} % is outside 50..95"
            )));
        }
        Ok(())
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.name(), format_duration(self.duration()))?;
        match self {
            Self::Desaturation { nadir, .. } => write!(f, "/{nadir}"),
            Self::BatteryDeath { device, .. } => write!(f, "/{}", device_name(*device)),
            _ => Ok(()),
        }
    }
}

/// When an injected scenario starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScenarioTime {
    /// The simulator's current time when the scenario is injected.
    Now,
    /// This long after the cohort's start.
    AfterStart(Duration),
    /// At this instant.
    At(Timestamp),
}

impl ScenarioTime {
    /// The instant, given the cohort's start and the simulator's current time.
    pub fn resolve(self, start: Timestamp, now: Timestamp) -> Timestamp {
        match self {
            Self::Now => now,
            Self::AfterStart(d) => {
                start.saturating_add_millis(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            }
            Self::At(t) => t,
        }
    }
}

impl fmt::Display for ScenarioTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Now => f.write_str("now"),
            Self::AfterStart(d) => write!(f, "+{}", format_duration(*d)),
            Self::At(t) => write!(f, "{t}"),
        }
    }
}

/// A parsed scenario request: what, to whom, when.
#[derive(Debug, Clone, PartialEq)]
pub struct ScenarioSpec {
    pub scenario: Scenario,
    pub patient: PatientId,
    pub at: ScenarioTime,
}

impl fmt::Display for ScenarioSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}@{}", self.scenario, self.patient, self.at)
    }
}

impl FromStr for ScenarioSpec {
    type Err = ScenarioParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_scenario(s)
    }
}

/// Why a scenario text was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScenarioParseError {
    #[error("empty scenario; syntax: NAME[/MODIFIER...]:PATIENT[@TIME], e.g. sepsis:p-0003@+10m")]
    Empty,
    #[error("{0:?} names no patient; syntax: NAME[/MODIFIER...]:PATIENT[@TIME]")]
    MissingPatient(String),
    #[error(
        "unknown scenario {0:?}; expected sepsis, desaturation, hypoglycaemia, fall, inactivity or battery-death"
    )]
    UnknownScenario(String),
    #[error("invalid duration {0:?}: use integers with units ms, s, m, h, d (e.g. 90s, 1h30m)")]
    InvalidDuration(String),
    #[error("modifier {modifier:?} does not apply to {scenario}")]
    InvalidModifier {
        scenario: &'static str,
        modifier: String,
    },
    #[error("invalid patient {0:?}: give an id such as p-0003 or a number such as 3")]
    InvalidPatient(String),
    #[error("invalid time {0:?}: use +DURATION, an RFC 3339 instant or now")]
    InvalidTime(String),
    #[error("invalid scenario parameter: {0}")]
    InvalidParameter(String),
}

/// Parses `NAME[/MODIFIER...]:PATIENT[@TIME]` (see the [module documentation](self)).
pub fn parse_scenario(text: &str) -> Result<ScenarioSpec, ScenarioParseError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(ScenarioParseError::Empty);
    }
    let (head, tail) = text
        .split_once(':')
        .ok_or_else(|| ScenarioParseError::MissingPatient(text.to_owned()))?;
    let (patient, at) = match tail.split_once('@') {
        Some((p, t)) => (p.trim(), parse_time(t.trim())?),
        None => (tail.trim(), ScenarioTime::Now),
    };
    if patient.is_empty() {
        return Err(ScenarioParseError::MissingPatient(text.to_owned()));
    }
    let patient = parse_patient(patient)?;
    let mut parts = head.split('/');
    let name = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
    let mut scenario = match name.as_str() {
        "sepsis" => Scenario::sepsis(),
        "desaturation" | "desat" => Scenario::desaturation(),
        "hypoglycaemia" | "hypoglycemia" | "hypo" => Scenario::hypoglycaemia(),
        "fall" => Scenario::fall(),
        "inactivity" => Scenario::inactivity(),
        "battery-death" | "battery" => Scenario::battery_death(),
        _ => return Err(ScenarioParseError::UnknownScenario(name)),
    };
    for m in parts {
        apply_modifier(&mut scenario, m.trim())?;
    }
    scenario
        .validate()
        .map_err(|e| ScenarioParseError::InvalidParameter(e.to_string()))?;
    Ok(ScenarioSpec {
        scenario,
        patient,
        at,
    })
}

fn apply_modifier(s: &mut Scenario, m: &str) -> Result<(), ScenarioParseError> {
    let name = s.name();
    let bad = || ScenarioParseError::InvalidModifier {
        scenario: name,
        modifier: m.to_owned(),
    };
    if m.starts_with(|c: char| c.is_ascii_digit()) {
        if let Ok(d) = parse_duration(m) {
            match s {
                Scenario::Sepsis { duration }
                | Scenario::Desaturation { duration, .. }
                | Scenario::Hypoglycaemia { duration }
                | Scenario::Inactivity { duration }
                | Scenario::BatteryDeath { duration, .. } => *duration = d,
                Scenario::Fall { down } => *down = d,
            }
            return Ok(());
        }
        if let Scenario::Desaturation { nadir, .. } = s {
            let v: f64 = m.parse().map_err(|_| bad())?;
            *nadir = v;
            return Ok(());
        }
        return Err(bad());
    }
    if let Scenario::BatteryDeath { device, .. } = s {
        *device = parse_device(m).ok_or_else(bad)?;
        return Ok(());
    }
    Err(bad())
}

fn parse_device(m: &str) -> Option<DeviceKind> {
    Some(match m.to_ascii_lowercase().as_str() {
        "wearable" | "wear" => DeviceKind::Wearable,
        "bp" | "cuff" | "blood-pressure-monitor" => DeviceKind::BloodPressureMonitor,
        "scale" | "weight-scale" => DeviceKind::WeightScale,
        "glucose" | "gluc" | "glucose-meter" => DeviceKind::GlucoseMeter,
        "thermometer" | "temp" => DeviceKind::Thermometer,
        "oximeter" | "ox" | "pulse-oximeter" => DeviceKind::PulseOximeter,
        "motion" | "motion-sensor" => DeviceKind::MotionSensor,
        _ => return None,
    })
}

fn device_name(k: DeviceKind) -> &'static str {
    match k {
        DeviceKind::Wearable => "wearable",
        DeviceKind::BloodPressureMonitor => "bp",
        DeviceKind::WeightScale => "scale",
        DeviceKind::GlucoseMeter => "glucose",
        DeviceKind::Thermometer => "thermometer",
        DeviceKind::PulseOximeter => "oximeter",
        DeviceKind::MotionSensor => "motion",
        _ => "other",
    }
}

fn parse_patient(p: &str) -> Result<PatientId, ScenarioParseError> {
    if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) {
        let n: usize = p
            .parse()
            .map_err(|_| ScenarioParseError::InvalidPatient(p.to_owned()))?;
        if n == 0 {
            return Err(ScenarioParseError::InvalidPatient(p.to_owned()));
        }
        return PatientId::new(crate::cohort::patient_id_text(n - 1))
            .map_err(|_| ScenarioParseError::InvalidPatient(p.to_owned()));
    }
    PatientId::new(p).map_err(|_| ScenarioParseError::InvalidPatient(p.to_owned()))
}

fn parse_time(t: &str) -> Result<ScenarioTime, ScenarioParseError> {
    if t.eq_ignore_ascii_case("now") {
        return Ok(ScenarioTime::Now);
    }
    if let Some(rest) = t.strip_prefix('+') {
        return parse_duration(rest)
            .map(ScenarioTime::AfterStart)
            .map_err(|_| ScenarioParseError::InvalidTime(t.to_owned()));
    }
    Timestamp::parse(t)
        .map(ScenarioTime::At)
        .map_err(|_| ScenarioParseError::InvalidTime(t.to_owned()))
}

/// Parses a duration such as `90s`, `10m`, `1h30m`, `2d` or `250ms`.
pub fn parse_duration(text: &str) -> Result<Duration, ScenarioParseError> {
    let err = || ScenarioParseError::InvalidDuration(text.to_owned());
    let b = text.trim().as_bytes();
    if b.is_empty() {
        return Err(err());
    }
    let mut ms: u64 = 0;
    let mut i = 0;
    while i < b.len() {
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start || i - start > 12 {
            return Err(err());
        }
        let n: u64 = std::str::from_utf8(&b[start..i])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(err)?;
        let unit_start = i;
        while i < b.len() && b[i].is_ascii_alphabetic() {
            i += 1;
        }
        let factor = match &b[unit_start..i] {
            b"ms" => 1,
            b"s" => 1000,
            b"m" => 60_000,
            b"h" => 3_600_000,
            b"d" => 86_400_000,
            _ => return Err(err()),
        };
        ms = n
            .checked_mul(factor)
            .and_then(|v| ms.checked_add(v))
            .ok_or_else(err)?;
    }
    Ok(Duration::from_millis(ms))
}

/// Formats a duration in the syntax [`parse_duration`] reads (`1h30m`, `0s`).
pub fn format_duration(d: Duration) -> String {
    let mut ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    if ms == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
        ("ms", 1),
    ] {
        if ms >= size {
            out.push_str(&(ms / size).to_string());
            out.push_str(unit);
            ms %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_documented_examples_parse() {
        let s = parse_scenario("sepsis:p-0003@+10m").expect("sepsis");
        assert_eq!(s.scenario, Scenario::sepsis());
        assert_eq!(s.patient.as_str(), "p-0003");
        assert_eq!(s.at, ScenarioTime::AfterStart(Duration::from_secs(600)));

        let s = parse_scenario("sepsis/4h:3@+1h").expect("number");
        assert_eq!(s.patient.as_str(), "p-0003");
        assert_eq!(s.scenario.duration(), Duration::from_secs(4 * 3600));

        let s = parse_scenario("desat/5m/82:p-0001").expect("desat");
        assert_eq!(
            s.scenario,
            Scenario::Desaturation {
                duration: Duration::from_secs(300),
                nadir: 82.0
            }
        );
        assert_eq!(s.at, ScenarioTime::Now);

        let s = parse_scenario("battery-death/90m/glucose:p-0002@2024-05-01T12:00:00Z")
            .expect("battery");
        assert_eq!(
            s.scenario,
            Scenario::BatteryDeath {
                device: DeviceKind::GlucoseMeter,
                duration: Duration::from_secs(5400)
            }
        );
        assert_eq!(
            s.at,
            ScenarioTime::At(Timestamp::parse("2024-05-01T12:00:00Z").expect("t"))
        );
        assert_eq!(
            parse_scenario("fall:p-0004@now").expect("fall").scenario,
            Scenario::fall()
        );
        assert_eq!(
            parse_scenario(" Hypo : 7 ").expect("hypo").scenario,
            Scenario::hypoglycaemia()
        );
    }

    #[test]
    fn malformed_texts_are_refused_with_a_reason() {
        let e = |s: &str| parse_scenario(s).expect_err(s);
        assert_eq!(e(""), ScenarioParseError::Empty);
        assert!(matches!(e("sepsis"), ScenarioParseError::MissingPatient(_)));
        assert!(matches!(
            e("sepsis:"),
            ScenarioParseError::MissingPatient(_)
        ));
        assert!(matches!(
            e("stroke:p-0001"),
            ScenarioParseError::UnknownScenario(_)
        ));
        assert!(matches!(
            e("sepsis:p-0001@+10x"),
            ScenarioParseError::InvalidTime(_)
        ));
        assert!(matches!(
            e("sepsis:p-0001@yesterday"),
            ScenarioParseError::InvalidTime(_)
        ));
        assert!(matches!(
            e("sepsis:../etc"),
            ScenarioParseError::InvalidPatient(_)
        ));
        assert!(matches!(
            e("sepsis:0"),
            ScenarioParseError::InvalidPatient(_)
        ));
        assert!(matches!(
            e("sepsis/85:p-0001"),
            ScenarioParseError::InvalidModifier { .. }
        ));
        assert!(matches!(
            e("fall/wearable:p-0001"),
            ScenarioParseError::InvalidModifier { .. }
        ));
        assert!(matches!(
            e("desat/99:p-0001"),
            ScenarioParseError::InvalidParameter(_)
        ));
        assert!(matches!(
            e("sepsis/0s:p-0001"),
            ScenarioParseError::InvalidParameter(_)
        ));
        assert!(matches!(
            e("battery/toaster:p-0001"),
            ScenarioParseError::InvalidModifier { .. }
        ));
    }

    #[test]
    fn durations_parse_and_format() {
        let d = |s: &str| parse_duration(s).expect(s);
        assert_eq!(d("90s"), Duration::from_secs(90));
        assert_eq!(d("1h30m"), Duration::from_secs(5400));
        assert_eq!(d("250ms"), Duration::from_millis(250));
        assert_eq!(d("2d"), Duration::from_secs(172_800));
        for bad in ["", "10", "h", "1.5h", "-1h", "1h 30m", "99999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(format_duration(Duration::ZERO), "0s");
        assert_eq!(
            format_duration(Duration::from_millis(86_400_250)),
            "1d250ms"
        );
    }

    fn scenario() -> impl Strategy<Value = Scenario> {
        let dur = (1u64..30 * 86_400).prop_map(Duration::from_secs);
        let kind = proptest::sample::select(vec![
            DeviceKind::Wearable,
            DeviceKind::BloodPressureMonitor,
            DeviceKind::WeightScale,
            DeviceKind::GlucoseMeter,
            DeviceKind::Thermometer,
            DeviceKind::PulseOximeter,
            DeviceKind::MotionSensor,
        ]);
        prop_oneof![
            dur.clone()
                .prop_map(|duration| Scenario::Sepsis { duration }),
            (dur.clone(), 50u32..=95).prop_map(|(duration, n)| Scenario::Desaturation {
                duration,
                nadir: f64::from(n)
            }),
            dur.clone()
                .prop_map(|duration| Scenario::Hypoglycaemia { duration }),
            dur.clone().prop_map(|down| Scenario::Fall { down }),
            dur.clone()
                .prop_map(|duration| Scenario::Inactivity { duration }),
            (dur, kind).prop_map(|(duration, device)| Scenario::BatteryDeath { device, duration }),
        ]
    }

    proptest! {
        #[test]
        fn a_spec_prints_in_the_syntax_it_is_parsed_from(
            sc in scenario(),
            n in 1usize..10_000,
            at in prop_oneof![
                Just(ScenarioTime::Now),
                (0u64..1_000_000).prop_map(|s| ScenarioTime::AfterStart(Duration::from_secs(s))),
                (631_152_000_000i64..4_102_444_800_000).prop_map(|ms| ScenarioTime::At(Timestamp(ms))),
            ],
        ) {
            let spec = ScenarioSpec {
                scenario: sc,
                patient: PatientId::new(crate::cohort::patient_id_text(n - 1)).expect("id"),
                at,
            };
            let text = spec.to_string();
            prop_assert_eq!(parse_scenario(&text).expect("parse back"), spec);
        }

        #[test]
        fn arbitrary_text_never_panics(s in ".{0,40}") {
            let _ = parse_scenario(&s);
            let _ = parse_duration(&s);
        }
    }
}

//! Patients, devices and the assignments that bind a device to a patient for a period.

use crate::Timestamp;
use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;

/// Identifier text that is not acceptable as an id.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("invalid id {0:?}: use 1 to 64 characters of letters, digits, '.', '_', ':', '-'")]
pub struct InvalidId(pub String);

fn check_id(s: &str) -> Result<(), InvalidId> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(InvalidId(s.to_owned()))
    }
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn new(s: impl Into<String>) -> Result<Self, InvalidId> {
                let s = s.into();
                check_id(&s)?;
                Ok(Self(s))
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }
        impl std::str::FromStr for $name {
            type Err = InvalidId;
            fn from_str(s: &str) -> Result<Self, InvalidId> {
                Self::new(s)
            }
        }
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::new(s).map_err(serde::de::Error::custom)
            }
        }
    };
}

id_type!(
    /// A patient's Vigil id.
    PatientId
);
id_type!(
    /// A device's Vigil id: stable across readings (often its serial number or MAC).
    DeviceId
);

/// A person whose data Vigil holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Patient {
    pub id: PatientId,
    #[serde(default)]
    pub name: Option<String>,
    /// `YYYY-MM-DD`.
    #[serde(default)]
    pub birth_date: Option<String>,
}

/// What a device is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum DeviceKind {
    PulseOximeter,
    Thermometer,
    BloodPressureMonitor,
    GlucoseMeter,
    WeightScale,
    Spirometer,
    Wearable,
    Inhaler,
    IngestibleSensor,
    FallSensor,
    SmartBed,
    MotionSensor,
    DoorSensor,
    AssetTag,
    SupplyShelf,
    BedsideMonitor,
    #[default]
    Other,
}

/// A device known to Vigil, with the identifiers its maker gives it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Device {
    pub id: DeviceId,
    #[serde(default)]
    pub kind: DeviceKind,
    #[serde(default)]
    pub serial: Option<String>,
    #[serde(default)]
    pub mac: Option<String>,
    #[serde(default)]
    pub eui64: Option<String>,
    #[serde(default)]
    pub manufacturer: Option<String>,
    #[serde(default)]
    pub model: Option<String>,
    /// The gateway the device is enrolled to, when it reports through one.
    #[serde(default)]
    pub gateway: Option<String>,
}

/// The device belongs to the patient from `from` (inclusive) until `to` (exclusive; open when
/// `None`). Readings are attributed by the assignment valid at the reading's own time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assignment {
    pub device: DeviceId,
    pub patient: PatientId,
    pub from: Timestamp,
    #[serde(default)]
    pub to: Option<Timestamp>,
}

impl Assignment {
    pub fn covers(&self, t: Timestamp) -> bool {
        self.from <= t && self.to.is_none_or(|to| t < to)
    }
}

/// The patient a device's reading at `t` belongs to. Where periods overlap, the assignment
/// that started last wins (a newer assignment supersedes an older open-ended one).
pub fn resolve_patient<'a>(
    assignments: impl IntoIterator<Item = &'a Assignment>,
    device: &DeviceId,
    t: Timestamp,
) -> Option<&'a PatientId> {
    assignments
        .into_iter()
        .filter(|a| &a.device == device && a.covers(t))
        .max_by_key(|a| a.from)
        .map(|a| &a.patient)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(dev: &str, pat: &str, from: i64, to: Option<i64>) -> Assignment {
        Assignment {
            device: DeviceId::new(dev).expect("id"),
            patient: PatientId::new(pat).expect("id"),
            from: Timestamp(from),
            to: to.map(Timestamp),
        }
    }

    #[test]
    fn a_device_that_moves_between_patients_is_attributed_by_reading_time() {
        let list = [
            a("cuff-1", "alice", 0, Some(100)),
            a("cuff-1", "bob", 100, None),
        ];
        let d = DeviceId::new("cuff-1").expect("id");
        assert_eq!(
            resolve_patient(&list, &d, Timestamp(99)).map(PatientId::as_str),
            Some("alice")
        );
        assert_eq!(
            resolve_patient(&list, &d, Timestamp(100)).map(PatientId::as_str),
            Some("bob")
        );
        assert_eq!(resolve_patient(&list, &d, Timestamp(-1)), None);
        let other = DeviceId::new("cuff-2").expect("id");
        assert_eq!(resolve_patient(&list, &other, Timestamp(50)), None);
    }

    #[test]
    fn a_newer_assignment_supersedes_an_open_ended_one() {
        let list = [a("w", "alice", 0, None), a("w", "bob", 50, None)];
        let d = DeviceId::new("w").expect("id");
        assert_eq!(
            resolve_patient(&list, &d, Timestamp(60)).map(PatientId::as_str),
            Some("bob")
        );
        assert_eq!(
            resolve_patient(&list, &d, Timestamp(10)).map(PatientId::as_str),
            Some("alice")
        );
    }

    #[test]
    fn ids_reject_path_and_markup_characters() {
        assert!(PatientId::new("p-001").is_ok());
        assert!(PatientId::new("../etc").is_err());
        assert!(PatientId::new("").is_err());
        assert!(DeviceId::new("a".repeat(65)).is_err());
        assert!(serde_json::from_str::<PatientId>("\"<script>\"").is_err());
    }
}

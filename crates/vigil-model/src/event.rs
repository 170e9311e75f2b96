//! Discrete occurrences reported by devices: falls, medication ingestion, inhaler actuations,
//! bed, motion and door sensors, asset sightings, stock levels and device status.

use crate::{DeviceId, PatientId, Source, Timestamp};
use serde::{Deserialize, Serialize};

/// What happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Fall {
        /// Detector confidence in 0..=1 when the detector gives one.
        confidence: Option<f64>,
    },
    MedicationIngestion {
        medication: String,
        /// The scheduled dose this ingestion answers, when known.
        dose: Option<String>,
    },
    InhalerActuation {
        medication: Option<String>,
        rescue: bool,
        /// Peak inspiratory flow during the actuation, L/min (technique).
        peak_inspiratory_flow: Option<f64>,
    },
    BedOccupancy {
        occupied: bool,
    },
    BedExit,
    Motion {
        location: Option<String>,
    },
    Door {
        open: bool,
        location: Option<String>,
    },
    AssetSighting {
        asset: String,
        rssi: Option<i16>,
        location: Option<String>,
    },
    StockLevel {
        item: String,
        quantity: f64,
        location: Option<String>,
    },
    Battery {
        percent: f64,
    },
    /// An alert a gateway raised itself (edge rule), synced to the hub with the time of the
    /// reading that triggered it. `rule` is the rule engine's rule id, so the hub keeps one
    /// alert per patient and rule whichever side saw the condition first.
    Alert {
        rule: String,
        severity: String,
        message: String,
        value: Option<f64>,
    },
}

impl EventKind {
    /// A short stable name (`fall`, `medication_ingestion`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Fall { .. } => "fall",
            Self::MedicationIngestion { .. } => "medication_ingestion",
            Self::InhalerActuation { .. } => "inhaler_actuation",
            Self::BedOccupancy { .. } => "bed_occupancy",
            Self::BedExit => "bed_exit",
            Self::Motion { .. } => "motion",
            Self::Door { .. } => "door",
            Self::AssetSighting { .. } => "asset_sighting",
            Self::StockLevel { .. } => "stock_level",
            Self::Battery { .. } => "battery",
            Self::Alert { .. } => "alert",
        }
    }
}

/// A device-reported event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub device: DeviceId,
    /// Device time of the event.
    pub time: Timestamp,
    /// Gateway receive time.
    #[serde(default)]
    pub received: Option<Timestamp>,
    pub kind: EventKind,
    #[serde(default)]
    pub source: Source,
    /// Patient named by the source itself, when it names one.
    #[serde(default)]
    pub patient: Option<PatientId>,
}

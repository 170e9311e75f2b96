//! The simulator's errors.

use vigil_model::entity::InvalidId;
use vigil_model::{DeviceKind, PatientId};

/// Why a cohort, a scenario injection or a load specification was refused.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum SimError {
    /// A configuration value is out of its range.
    #[error("invalid simulator configuration: {0}")]
    InvalidConfig(String),
    /// The patient index or id names no patient of the cohort.
    #[error("no patient {0} in the cohort")]
    NoSuchPatient(String),
    /// The scenario needs a device the patient does not have (a glucose meter for
    /// hypoglycaemia, for example).
    #[error("patient {patient} has no {kind:?} device")]
    MissingDevice {
        patient: PatientId,
        kind: DeviceKind,
    },
    /// A scenario parameter is out of its range.
    #[error("invalid scenario: {0}")]
    InvalidScenario(String),
    /// A generated identifier was refused by the model (too many patients for the id width).
    #[error(transparent)]
    Id(#[from] InvalidId),
}

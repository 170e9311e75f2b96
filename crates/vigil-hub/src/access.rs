//! Least-privilege access to patient data: one place decides who may read or change what.
//!
//! Roles `admin` and `integration` see every patient. Clinicians and nurses see the patients
//! whose care team lists them as primary or backup, and a patient they hold a running
//! break-glass grant for; caregivers only the patients whose active consent names them (the
//! care team's `caregivers` list is a contact list and grants no access); a `patient`
//! token only the patient whose id equals the token's name. A patient outside the caller's
//! scope answers 404 (its existence is not revealed); a write the caller's role may not do
//! answers 403.

use crate::auth::User;
use crate::{ApiError, AppState};
use std::collections::BTreeSet;
use vigil_model::{PatientId, Timestamp};
use vigil_store::CareTeam;

/// Which patients a caller may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Visibility {
    All,
    Only(BTreeSet<PatientId>),
}

impl Visibility {
    pub fn contains(&self, p: &PatientId) -> bool {
        match self {
            Self::All => true,
            Self::Only(set) => set.contains(p),
        }
    }
}

fn sees_all(u: &User) -> bool {
    matches!(u.role.as_str(), "admin" | "integration")
}

/// Whether `team` lists `u` in a way that grants access to the patient.
fn on_team(u: &User, team: &CareTeam) -> bool {
    let listed = |l: &[String]| l.iter().any(|n| n == &u.name);
    match u.role.as_str() {
        "clinician" | "nurse" => listed(&team.primary) || listed(&team.backup),
        _ => false,
    }
}

/// Whether `u` is a clinician or nurse on `patient`'s care team (break-glass is for those
/// who are not).
pub async fn on_care_team(st: &AppState, u: &User, patient: &PatientId) -> Result<bool, ApiError> {
    Ok(on_team(u, &st.store.care_team(patient).await?))
}

fn not_found(patient: &PatientId) -> ApiError {
    ApiError::NotFound(format!("patient {patient}"))
}

/// Whether `u` may see `patient` at all (without checking that the patient exists).
async fn in_scope(st: &AppState, u: &User, patient: &PatientId) -> Result<bool, ApiError> {
    if sees_all(u) {
        return Ok(true);
    }
    match u.role.as_str() {
        "patient" => Ok(patient.as_str() == u.name),
        "clinician" | "nurse" => {
            if on_team(u, &st.store.care_team(patient).await?) {
                return Ok(true);
            }
            // Outside the care team only through a running break-glass grant, whose reason
            // goes into this request's audit entries.
            let now = Timestamp::now();
            let grant = st
                .store
                .break_glass_log(Some(patient), 1000)
                .await?
                .into_iter()
                .find(|g| g.user == u.name && g.from <= now && now < g.until);
            match grant {
                Some(g) => {
                    crate::audit::break_glass(&g.reason);
                    Ok(true)
                }
                None => Ok(false),
            }
        }
        "caregiver" => Ok(st
            .store
            .consented_patients(&u.name, Timestamp::now())
            .await?
            .contains(patient)),
        _ => Ok(false),
    }
}

/// Read access to one patient's data: 404 when out of scope.
pub async fn can_read_patient(
    st: &AppState,
    u: &User,
    patient: &PatientId,
) -> Result<(), ApiError> {
    crate::audit::note(u, patient, crate::audit::Action::Read);
    if in_scope(st, u, patient).await? {
        Ok(())
    } else {
        Err(not_found(patient))
    }
}

/// Write access to one patient's clinical data (acknowledging and resolving alerts,
/// assessments, rule settings, care team): 404 when out of scope, 403 when the role may
/// read but not write.
pub async fn can_write_patient(
    st: &AppState,
    u: &User,
    patient: &PatientId,
) -> Result<(), ApiError> {
    crate::audit::note(u, patient, crate::audit::Action::Write);
    can_read_patient(st, u, patient).await?;
    match u.role.as_str() {
        "admin" | "integration" | "clinician" | "nurse" => Ok(()),
        _ => Err(ApiError::Forbidden),
    }
}

/// The patients a list endpoint may show `u`.
pub async fn visible_patients(st: &AppState, u: &User) -> Result<Visibility, ApiError> {
    if sees_all(u) {
        crate::audit::note_list(u, None);
        return Ok(Visibility::All);
    }
    let mut set = BTreeSet::new();
    match u.role.as_str() {
        "patient" => {
            if let Ok(id) = PatientId::new(u.name.as_str())
                && st.store.patient(&id).await?.is_some()
            {
                set.insert(id);
            }
        }
        "clinician" | "nurse" => {
            for s in st.store.patients().await? {
                let id = s.patient.id;
                if on_team(u, &st.store.care_team(&id).await?) {
                    set.insert(id);
                }
            }
            set.extend(
                st.store
                    .break_glass_patients(&u.name, Timestamp::now())
                    .await?,
            );
        }
        "caregiver" => {
            set.extend(
                st.store
                    .consented_patients(&u.name, Timestamp::now())
                    .await?,
            );
        }
        _ => {}
    }
    crate::audit::note_list(u, Some(set.len()));
    Ok(Visibility::Only(set))
}

/// Operational routes (devices, assignments, quarantine, gateways, stats): admin or
/// integration only.
pub fn require_operator(u: &User) -> Result<(), ApiError> {
    if sees_all(u) {
        Ok(())
    } else {
        Err(ApiError::Forbidden)
    }
}

/// Who may record, list and revoke a patient's consents: the patient themself and admins.
/// Others answer 404 when the patient is outside their scope, else 403.
pub async fn can_manage_consent(
    st: &AppState,
    u: &User,
    patient: &PatientId,
) -> Result<(), ApiError> {
    if u.role == "admin" || (u.role == "patient" && u.name == patient.as_str()) {
        return Ok(());
    }
    can_read_patient(st, u, patient).await?;
    Err(ApiError::Forbidden)
}

/// Who may export a patient's whole record (right of access): the patient themself and
/// admins. Others answer 404 when the patient is outside their scope, else 403.
pub async fn can_export_patient(
    st: &AppState,
    u: &User,
    patient: &PatientId,
) -> Result<(), ApiError> {
    can_manage_consent(st, u, patient).await
}

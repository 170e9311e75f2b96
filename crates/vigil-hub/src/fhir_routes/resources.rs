//! RiskAssessment (NEWS2), Flag (alerts), MedicationAdministration, SupplyRequest and
//! Location (events), and `Patient/{id}/$everything`.
//!
//! NEWS2 RiskAssessments are computed when asked for, from the stored readings: one per
//! device time at which a NEWS2 input was measured, scored from the latest usable value of
//! each parameter in the NEWS2 window before it (the rule engine's own window logic), with the
//! patient's SpO2 scale and the ACVPU and air-or-oxygen assessments the hub holds. An
//! incomplete set is not a NEWS2 score and yields no RiskAssessment.

use super::observation::{Filter, date_range, observation_bundle, patient_param, required_patient};
use super::{
    FhirError, MAX_MATCHES, Params, page, page_links, paging, params, reject_unknown,
    require_patient, searchset, user,
};
use crate::AppState;
use crate::auth::User;
use crate::error::ApiError;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use std::collections::HashMap;
use vigil_fhir::{IssueType, Resource};
use vigil_model::{EventKind, Metric, PatientId, Timestamp};
use vigil_rules::{Assessments, News2, News2Settings, Sample};
use vigil_store::{AlertFilter, AlertStatus, ReadingQuery, StoredEvent};

/// Longest date range a RiskAssessment search scores (a week of 1 Hz inputs).
const MAX_RISK_RANGE_MS: i64 = 7 * 86_400_000;
/// Range scored without a `date` parameter: the last day of data.
const DEFAULT_RISK_RANGE_MS: i64 = 86_400_000;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/RiskAssessment", get(search_risk))
        .route("/RiskAssessment/{id}", get(read_risk))
        .route("/Flag", get(search_flags))
        .route("/Flag/{id}", get(read_flag))
        .route("/MedicationAdministration", get(search_medication))
        .route("/MedicationAdministration/{id}", get(read_medication))
        .route("/SupplyRequest", get(search_supply))
        .route("/SupplyRequest/{id}", get(read_supply))
        .route("/Location", get(search_locations))
        .route("/Location/{id}", get(read_location))
        .route("/Patient/{id}/$everything", get(everything))
}

/// The patients a search covers: the one it names (404 when out of scope) or every patient
/// the caller may see.
pub(super) async fn patients_in_scope(
    st: &AppState,
    u: &User,
    named: Option<String>,
) -> Result<Vec<PatientId>, FhirError> {
    if let Some(id) = named {
        return Ok(vec![require_patient(st, u, &id).await?.id]);
    }
    let visible = crate::access::visible_patients(st, u).await?;
    Ok(st
        .store
        .patients()
        .await?
        .into_iter()
        .map(|s| s.patient.id)
        .filter(|p| visible.contains(p))
        .collect())
}

// ---------------------------------------------------------------------------------------------
// RiskAssessment
// ---------------------------------------------------------------------------------------------

/// The patient's NEWS2 settings (SpO2 scale, window) from their rule settings.
async fn news2_settings(st: &AppState, patient: &PatientId) -> Result<News2Settings, FhirError> {
    let settings = st
        .store
        .rule_settings(patient)
        .await?
        .and_then(|v| serde_json::from_value::<crate::alerts::RuleSettings>(v).ok())
        .and_then(|s| s.engine().ok())
        .map(|e| *e.news2_settings());
    Ok(settings.unwrap_or_default())
}

/// The samples a stored reading carries (its value and panel components), as the rule engine
/// splits a reading.
fn samples_of(r: &vigil_store::StoredReading) -> impl Iterator<Item = Sample> + '_ {
    r.value
        .map(|v| Sample::new(r.metric, v, r.time))
        .into_iter()
        .chain(
            r.components
                .iter()
                .map(|c| Sample::new(c.metric, c.value, r.time)),
        )
        .map(|s| s.with_flags(r.flags))
}

/// NEWS2 of `patient` at every device time in `[from, to]` at which an input was measured,
/// oldest first; `None` ends default to the last day of data.
pub(super) async fn news2_series(
    st: &AppState,
    patient: &PatientId,
    from: Option<Timestamp>,
    to: Option<Timestamp>,
) -> Result<Vec<(Timestamp, News2)>, FhirError> {
    let inputs = vigil_rules::news2::input_metrics();
    let carries =
        |m: Metric| inputs.contains(&m) || m.components().iter().any(|c| inputs.contains(c));
    let latest: Vec<_> = st
        .store
        .latest(patient)
        .await?
        .into_iter()
        .filter(|r| carries(r.metric))
        .collect();
    let stored: Vec<Metric> = latest.iter().map(|r| r.metric).collect();
    let newest = latest.iter().map(|r| r.time).max();
    let Some(to) = to.or(newest) else {
        return Ok(Vec::new());
    };
    let from = from.unwrap_or(to.saturating_add_millis(-DEFAULT_RISK_RANGE_MS));
    if to.0.saturating_sub(from.0) > MAX_RISK_RANGE_MS {
        return Err(FhirError::new(
            StatusCode::BAD_REQUEST,
            IssueType::TooCostly,
            "a RiskAssessment search covers at most 7 days; narrow date",
        ));
    }
    if from > to {
        return Ok(Vec::new());
    }
    let settings = news2_settings(st, patient).await?;
    let assessments: Assessments = st.alerts.assessments(patient);
    let window_ms = i64::from(settings.window_s) * 1000;
    let mut samples: Vec<Sample> = Vec::new();
    for m in stored {
        let rows = st
            .store
            .readings(ReadingQuery {
                patient: patient.clone(),
                metric: Some(m),
                from: Some(from.saturating_add_millis(-window_ms)),
                to: Some(to),
                limit: usize::MAX,
                descending: false,
            })
            .await?;
        samples.extend(
            rows.iter()
                .flat_map(samples_of)
                .filter(|s| inputs.contains(&s.metric)),
        );
    }
    samples.sort_by_key(|s| s.time);
    let mut latest: HashMap<Metric, Sample> = HashMap::new();
    let mut out = Vec::new();
    let mut i = 0;
    while i < samples.len() {
        let t = samples[i].time;
        while i < samples.len() && samples[i].time == t {
            let s = samples[i];
            if s.usable() {
                latest.insert(s.metric, s);
            }
            i += 1;
        }
        if t < from || t > to {
            continue;
        }
        let held: Vec<Sample> = latest.values().copied().collect();
        let inputs = vigil_rules::news2::inputs_from_samples(&held, t, &settings, &assessments);
        if let Ok(n) = vigil_rules::news2::score(&inputs) {
            out.push((t, n));
        }
        if out.len() >= MAX_MATCHES {
            break;
        }
    }
    Ok(out)
}

async fn search_risk(
    State(st): State<AppState>,
    u: Result<User, ApiError>,
    headers: HeaderMap,
    q: Params,
) -> Result<Response, FhirError> {
    let u = user(u)?;
    let p = params(q)?;
    reject_unknown(
        &p,
        &[
            "patient",
            "patient:Patient",
            "subject",
            "subject:Patient",
            "date",
            "_count",
            "_offset",
            "_summary",
        ],
    )?;
    let pg = paging(&p)?;
    let (from, to) = date_range(&p, "date")?;
    let patient = require_patient(&st, &u, &required_patient(&p, "RiskAssessment")?).await?;
    let series = news2_series(&st, &patient.id, from, to).await?;
    // Only the page is mapped.
    let total = series.len();
    let entries = series
        .iter()
        .skip(pg.offset)
        .take(pg.count)
        .map(|(t, n)| Resource::RiskAssessment(vigil_fhir::risk_assessment(&patient.id, n, *t)))
        .collect();
    let more = !pg.summary_count && pg.offset.saturating_add(pg.count) < total;
    let links = page_links(&headers, "RiskAssessment", &p, &pg, more, &[]);
    Ok(searchset(entries, Some(total), links, &pg))
}

async fn read_risk(
    State(st): State<AppState>,
    u: Result<User, ApiError>,
    Path(id): Path<String>,
) -> Result<Response, FhirError> {
    let u = user(u)?;
    let missing = || FhirError::not_found(format!("RiskAssessment/{id} is not known"));
    let key = vigil_fhir::RiskKey::parse(&id).ok_or_else(missing)?;
    let patient = st
        .store
        .patients()
        .await?
        .into_iter()
        .map(|s| s.patient.id)
        .find(|p| vigil_fhir::patient_id(p).starts_with(&key.patient))
        .ok_or_else(missing)?;
    crate::access::can_read_patient(&st, &u, &patient)
        .await
        .map_err(|_| missing())?;
    let series = news2_series(&st, &patient, Some(key.time), Some(key.time)).await?;
    let (t, n) = series.first().ok_or_else(missing)?;
    Ok(super::ok(Resource::RiskAssessment(
        vigil_fhir::risk_assessment(&patient, n, *t),
    )))
}

// ---------------------------------------------------------------------------------------------
// Flag
// ---------------------------------------------------------------------------------------------

async fn search_flags(
    State(st): State<AppState>,
    u: Result<User, ApiError>,
    headers: HeaderMap,
    q: Params,
) -> Result<Response, FhirError> {
    let u = user(u)?;
    let p = params(q)?;
    reject_unknown(
        &p,
        &[
            "patient",
            "patient:Patient",
            "subject",
            "subject:Patient",
            "status",
            "_count",
            "_offset",
            "_summary",
        ],
    )?;
    let pg = paging(&p)?;
    let mut status: Option<bool> = None;
    for (_, v) in p.iter().filter(|(k, _)| k == "status") {
        status = Some(match v.as_str() {
            "active" => true,
            "inactive" => false,
            other => {
                return Err(FhirError::bad(format!(
                    "status must be active or inactive, got {other:?}"
                )));
            }
        });
    }
    let mut all = Vec::new();
    for patient in patients_in_scope(&st, &u, patient_param(&p)?).await? {
        let alerts = st
            .store
            .alerts(AlertFilter {
                status: (status == Some(false)).then_some(AlertStatus::Resolved),
                active: status == Some(true),
                patient: Some(patient),
                limit: MAX_MATCHES,
            })
            .await?;
        all.extend(alerts.iter().map(|a| Resource::Flag(vigil_fhir::flag(a))));
    }
    Ok(page(all, &pg, &headers, "Flag", &p))
}

async fn read_flag(
    State(st): State<AppState>,
    u: Result<User, ApiError>,
    Path(id): Path<String>,
) -> Result<Response, FhirError> {
    let u = user(u)?;
    let missing = || FhirError::not_found(format!("Flag/{id} is not known"));
    for patient in patients_in_scope(&st, &u, None).await? {
        let alerts = st
            .store
            .alerts(AlertFilter {
                patient: Some(patient),
                limit: MAX_MATCHES,
                ..AlertFilter::default()
            })
            .await?;
        if let Some(f) = alerts
            .iter()
            .map(vigil_fhir::flag)
            .find(|f| f.id.as_deref() == Some(id.as_str()))
        {
            return Ok(super::ok(Resource::Flag(f)));
        }
    }
    Err(missing())
}

// ---------------------------------------------------------------------------------------------
// Events: MedicationAdministration, SupplyRequest, Location
// ---------------------------------------------------------------------------------------------

/// Every stored event of the patients, newest first.
async fn events_of(st: &AppState, patients: &[PatientId]) -> Result<Vec<StoredEvent>, FhirError> {
    let mut out = Vec::new();
    for p in patients {
        out.extend(st.store.events(p, None, None, MAX_MATCHES).await?);
    }
    Ok(out)
}

pub(super) fn medication(e: &StoredEvent) -> Option<Resource> {
    vigil_fhir::medication_administration(&e.patient, &e.event)
        .ok()
        .map(Resource::MedicationAdministration)
}

/// A SupplyRequest for a stock level at or below the reorder level: enough to bring the item
/// back to the par level.
pub(super) fn supply(st: &AppState, e: &StoredEvent) -> Option<Resource> {
    let EventKind::StockLevel { quantity, .. } = &e.event.kind else {
        return None;
    };
    let c = &st.config;
    if !quantity.is_finite() || *quantity > c.supply_reorder_level {
        return None;
    }
    let requested = (c.supply_par_level - quantity).max(1.0);
    vigil_fhir::supply_request(&e.event, requested)
        .ok()
        .map(Resource::SupplyRequest)
}

/// The location an event names, if any.
fn place(e: &StoredEvent) -> Option<&str> {
    match &e.event.kind {
        EventKind::AssetSighting { location, .. }
        | EventKind::StockLevel { location, .. }
        | EventKind::Motion { location }
        | EventKind::Door { location, .. } => location.as_deref().filter(|l| !l.trim().is_empty()),
        _ => None,
    }
}

pub(super) fn locations(events: &[StoredEvent]) -> Vec<Resource> {
    let names: std::collections::BTreeSet<&str> = events.iter().filter_map(place).collect();
    names
        .into_iter()
        .map(|n| Resource::Location(vigil_fhir::location(n)))
        .collect()
}

/// The location of each tracked asset's latest sighting, by asset id (a Vigil device id when
/// the asset is an enrolled device).
pub(super) async fn device_locations(st: &AppState) -> Result<HashMap<String, String>, FhirError> {
    let patients: Vec<PatientId> = st
        .store
        .patients()
        .await?
        .into_iter()
        .map(|s| s.patient.id)
        .collect();
    let mut latest: HashMap<String, (Timestamp, String)> = HashMap::new();
    for e in events_of(st, &patients).await? {
        if let EventKind::AssetSighting {
            asset,
            location: Some(l),
            ..
        } = &e.event.kind
        {
            let slot = latest
                .entry(asset.clone())
                .or_insert((e.event.time, l.clone()));
            if e.event.time > slot.0 {
                *slot = (e.event.time, l.clone());
            }
        }
    }
    Ok(latest.into_iter().map(|(k, (_, l))| (k, l)).collect())
}

async fn event_search(
    st: AppState,
    u: Result<User, ApiError>,
    headers: HeaderMap,
    q: Params,
    ty: &str,
    map: impl Fn(&AppState, &StoredEvent) -> Option<Resource>,
) -> Result<Response, FhirError> {
    let u = user(u)?;
    let p = params(q)?;
    reject_unknown(
        &p,
        &[
            "patient",
            "patient:Patient",
            "subject",
            "subject:Patient",
            "_count",
            "_offset",
            "_summary",
        ],
    )?;
    let pg = paging(&p)?;
    let patients = patients_in_scope(&st, &u, patient_param(&p)?).await?;
    let all = events_of(&st, &patients)
        .await?
        .iter()
        .filter_map(|e| map(&st, e))
        .collect();
    Ok(page(all, &pg, &headers, ty, &p))
}

async fn event_read(
    st: AppState,
    u: Result<User, ApiError>,
    id: String,
    ty: &str,
    map: impl Fn(&AppState, &StoredEvent) -> Option<Resource>,
) -> Result<Response, FhirError> {
    let u = user(u)?;
    let patients = patients_in_scope(&st, &u, None).await?;
    events_of(&st, &patients)
        .await?
        .iter()
        .filter_map(|e| map(&st, e))
        .find(|r| r.id() == Some(id.as_str()))
        .map(super::ok)
        .ok_or_else(|| FhirError::not_found(format!("{ty}/{id} is not known")))
}

async fn search_medication(
    State(st): State<AppState>,
    u: Result<User, ApiError>,
    headers: HeaderMap,
    q: Params,
) -> Result<Response, FhirError> {
    event_search(st, u, headers, q, "MedicationAdministration", |_, e| {
        medication(e)
    })
    .await
}

async fn read_medication(
    State(st): State<AppState>,
    u: Result<User, ApiError>,
    Path(id): Path<String>,
) -> Result<Response, FhirError> {
    event_read(st, u, id, "MedicationAdministration", |_, e| medication(e)).await
}

async fn search_supply(
    State(st): State<AppState>,
    u: Result<User, ApiError>,
    headers: HeaderMap,
    q: Params,
) -> Result<Response, FhirError> {
    event_search(st, u, headers, q, "SupplyRequest", supply).await
}

async fn read_supply(
    State(st): State<AppState>,
    u: Result<User, ApiError>,
    Path(id): Path<String>,
) -> Result<Response, FhirError> {
    event_read(st, u, id, "SupplyRequest", supply).await
}

async fn search_locations(
    State(st): State<AppState>,
    u: Result<User, ApiError>,
    headers: HeaderMap,
    q: Params,
) -> Result<Response, FhirError> {
    let u = user(u)?;
    let p = params(q)?;
    reject_unknown(&p, &["name", "_count", "_offset", "_summary"])?;
    let pg = paging(&p)?;
    let name = p
        .iter()
        .rev()
        .find(|(k, _)| k == "name")
        .map(|(_, v)| v.clone());
    let patients = patients_in_scope(&st, &u, None).await?;
    let mut all = locations(&events_of(&st, &patients).await?);
    if let Some(n) = name {
        all.retain(|r| matches!(r, Resource::Location(l) if l.name.as_deref() == Some(n.as_str())));
    }
    Ok(page(all, &pg, &headers, "Location", &p))
}

async fn read_location(
    State(st): State<AppState>,
    u: Result<User, ApiError>,
    Path(id): Path<String>,
) -> Result<Response, FhirError> {
    let u = user(u)?;
    let patients = patients_in_scope(&st, &u, None).await?;
    locations(&events_of(&st, &patients).await?)
        .into_iter()
        .find(|r| r.id() == Some(id.as_str()))
        .map(super::ok)
        .ok_or_else(|| FhirError::not_found(format!("Location/{id} is not known")))
}

// ---------------------------------------------------------------------------------------------
// $everything
// ---------------------------------------------------------------------------------------------

/// Everything about one patient that is stored, not derived: the Patient, the Devices
/// assigned to them, their Flags, MedicationAdministrations, SupplyRequests and Locations,
/// then every Observation (oldest first). Paged with `_count`; NEWS2 RiskAssessments are
/// computed per query and are searched for separately.
pub(super) async fn patient_compartment(
    st: &AppState,
    patient: &vigil_model::Patient,
) -> Result<Vec<Resource>, FhirError> {
    let mut lead = vec![Resource::Patient(vigil_fhir::patient(patient))];
    let assigned: std::collections::BTreeSet<String> = st
        .store
        .assignments(None)
        .await?
        .into_iter()
        .filter(|a| a.patient == patient.id)
        .map(|a| a.device.as_str().to_owned())
        .collect();
    let places = device_locations(st).await?;
    for d in st.store.devices().await? {
        if assigned.contains(d.id.as_str()) {
            lead.push(Resource::Device(super::device_at(&d, &places)));
        }
    }
    let alerts = st
        .store
        .alerts(AlertFilter {
            patient: Some(patient.id.clone()),
            limit: MAX_MATCHES,
            ..AlertFilter::default()
        })
        .await?;
    lead.extend(alerts.iter().map(|a| Resource::Flag(vigil_fhir::flag(a))));
    let events = events_of(st, std::slice::from_ref(&patient.id)).await?;
    lead.extend(events.iter().filter_map(medication));
    lead.extend(events.iter().filter_map(|e| supply(st, e)));
    lead.extend(locations(&events));
    Ok(lead)
}

async fn everything(
    State(st): State<AppState>,
    u: Result<User, ApiError>,
    headers: HeaderMap,
    Path(id): Path<String>,
    q: Params,
) -> Result<Response, FhirError> {
    let u = user(u)?;
    let p = params(q)?;
    reject_unknown(&p, &["_count", "_offset", "_cursor", "_summary"])?;
    let pg = paging(&p)?;
    let cursor = p
        .iter()
        .rev()
        .find(|(k, _)| k == "_cursor")
        .map(|(_, v)| v.clone());
    let patient = require_patient(&st, &u, &id).await?;
    let lead = patient_compartment(&st, &patient).await?;
    let path = format!("Patient/{id}/$everything");
    observation_bundle(
        &st,
        &headers,
        &path,
        &p,
        &pg,
        &Filter::all(patient.id.clone()),
        cursor.as_deref(),
        &lead,
    )
    .await
}

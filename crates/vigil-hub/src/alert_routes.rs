//! Alert routes: list, acknowledge, resolve, the live stream of transitions (Server-Sent
//! Events), care teams, the on-call list and the notification queue.

use crate::access::{self, Visibility};
use crate::alerts::{RuleSettings, SettingsError};
use crate::auth::User;
use crate::routes::{ApiJson, ApiQuery, list_limit, patient_id, status_param};
use crate::{ApiError, AppState};
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::{get, post};
use axum::{Json, body::Bytes};
use futures_util::Stream;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use tokio::sync::broadcast::error::RecvError;
use vigil_model::Timestamp;
use vigil_store::{AlertFilter, AlertStatus, AlertTransition, CareTeam, Store};

/// Transitions fetched from storage per page of a stream.
const PAGE: usize = 500;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/alerts", get(list_alerts))
        .route("/api/v1/alerts/stream", get(stream))
        .route("/api/v1/alerts/{id}", get(get_alert))
        .route("/api/v1/alerts/{id}/acknowledge", post(acknowledge))
        .route("/api/v1/alerts/{id}/resolve", post(resolve))
        .route(
            "/api/v1/patients/{id}/care-team",
            get(get_care_team).put(put_care_team),
        )
        .route("/api/v1/patients/{id}/assessments", post(assess))
        .route(
            "/api/v1/patients/{id}/rule-settings",
            get(get_rule_settings).put(put_rule_settings),
        )
        .route("/api/v1/on-call", get(get_on_call).put(put_on_call))
        .route("/api/v1/notifications", get(list_notifications))
        .route("/api/v1/notifications/dead", get(dead_notifications))
}

fn alert_id(s: &str) -> Result<i64, ApiError> {
    s.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| ApiError::bad("invalid_id", format!("{s:?} is not an alert id")))
}

/// A JSON body that may be empty (then the type's default).
fn optional_json<T: DeserializeOwned + Default>(
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct.starts_with("application/json") {
        return Err(ApiError::UnsupportedMediaType {
            expected: "application/json",
        });
    }
    if body.len() > 64 * 1024 {
        return Err(ApiError::PayloadTooLarge { limit: 64 * 1024 });
    }
    serde_json::from_slice(body).map_err(|e| ApiError::bad("invalid_json", e.to_string()))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AlertParams {
    status: Option<String>,
    patient: Option<String>,
    limit: Option<usize>,
}

async fn list_alerts(
    State(st): State<AppState>,
    u: User,
    ApiQuery(q): ApiQuery<AlertParams>,
) -> Result<Json<Value>, ApiError> {
    let visible = access::visible_patients(&st, &u).await?;
    let mut filter = AlertFilter {
        limit: list_limit(q.limit),
        ..AlertFilter::default()
    };
    match status_param(
        q.status.as_deref(),
        &[
            "open",
            "acknowledged",
            "escalated",
            "resolved",
            "active",
            "all",
        ],
        "all",
    )? {
        "all" => {}
        "active" => filter.active = true,
        s => filter.status = AlertStatus::parse(s),
    }
    filter.patient = q.patient.as_deref().map(patient_id).transpose()?;
    let alerts = match (&visible, &filter.patient) {
        (Visibility::All, _) => st.store.alerts(filter).await?,
        // An invisible patient has no alerts as far as this caller can tell.
        (Visibility::Only(set), Some(p)) if !set.contains(p) => Vec::new(),
        (Visibility::Only(_), Some(_)) => st.store.alerts(filter).await?,
        (Visibility::Only(set), None) => {
            // Per visible patient, then merged newest first (the store's order).
            let mut all = Vec::new();
            for p in set {
                let f = AlertFilter {
                    patient: Some(p.clone()),
                    ..filter.clone()
                };
                all.extend(st.store.alerts(f).await?);
            }
            all.sort_by_key(|a| std::cmp::Reverse(a.id));
            all.truncate(filter.limit);
            all
        }
    };
    Ok(Json(json!({ "count": alerts.len(), "alerts": alerts })))
}

async fn get_alert(
    State(st): State<AppState>,
    u: User,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = alert_id(&id)?;
    let alert = st
        .store
        .alert(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("alert {id}")))?;
    alert_access(&st, &u, id, &alert.patient, false).await?;
    let transitions = st.store.transitions_of(id).await?;
    Ok(Json(json!({ "alert": alert, "transitions": transitions })))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AckBody {
    silence_minutes: Option<u32>,
}

async fn acknowledge(
    State(st): State<AppState>,
    u: User,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let id = alert_id(&id)?;
    check_alert_write(&st, &u, id).await?;
    u.require_clinical()?;
    let b: AckBody = optional_json(&headers, &body)?;
    let now = Timestamp::now();
    let silence_until = match b.silence_minutes {
        None => None,
        Some(m @ 1..=1440) => Some(now.saturating_add_millis(i64::from(m) * 60_000)),
        Some(_) => {
            return Err(ApiError::bad(
                "invalid_silence",
                "silence_minutes must be between 1 and 1440",
            ));
        }
    };
    let (alert, t) = st
        .store
        .acknowledge_alert(id, &u.name, now, silence_until)
        .await?;
    st.alerts.transitioned(&t);
    Ok(Json(json!({ "alert": alert, "transition": t })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResolveBody {
    note: String,
}

async fn resolve(
    State(st): State<AppState>,
    u: User,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<ResolveBody>,
) -> Result<Json<Value>, ApiError> {
    let id = alert_id(&id)?;
    check_alert_write(&st, &u, id).await?;
    u.require_clinical()?;
    let note = b.note.trim();
    if note.is_empty() || note.len() > 4000 {
        return Err(ApiError::bad(
            "invalid_note",
            "a resolution needs a note of 1 to 4000 bytes",
        ));
    }
    let (alert, t) = st
        .store
        .resolve_alert(id, &u.name, Timestamp::now(), Some(note.to_owned()))
        .await?;
    st.alerts.resolved(&t);
    Ok(Json(json!({ "alert": alert, "transition": t })))
}

/// Access to an alert through its patient: an alert of a patient out of scope is "not found".
async fn alert_access(
    st: &AppState,
    u: &User,
    id: i64,
    patient: &vigil_model::PatientId,
    write: bool,
) -> Result<(), ApiError> {
    let r = if write {
        access::can_write_patient(st, u, patient).await
    } else {
        access::can_read_patient(st, u, patient).await
    };
    match r {
        Err(ApiError::NotFound(_)) => Err(ApiError::NotFound(format!("alert {id}"))),
        other => other,
    }
}

/// Write access to an existing alert (a missing alert is left to the store to report).
async fn check_alert_write(st: &AppState, u: &User, id: i64) -> Result<(), ApiError> {
    match st.store.alert(id).await? {
        Some(a) => alert_access(st, u, id, &a.patient, true).await,
        None => Err(ApiError::NotFound(format!("alert {id}"))),
    }
}

/// One stream's position: transitions are read from storage after `last`; the broadcast
/// channel only says when to look again, so nothing committed is ever skipped.
struct Feed {
    store: Arc<dyn Store>,
    rx: tokio::sync::broadcast::Receiver<i64>,
    last: i64,
    buf: VecDeque<AlertTransition>,
    fetch: bool,
    st: AppState,
    user: User,
}

fn sse_event(t: &AlertTransition) -> Event {
    Event::default()
        .id(t.id.to_string())
        .event("alert")
        .json_data(t)
        .unwrap_or_else(|_| Event::default().comment("unencodable transition"))
}

async fn next_event(mut f: Feed) -> Option<(Result<Event, Infallible>, Feed)> {
    loop {
        if let Some(t) = f.buf.pop_front() {
            if t.id <= f.last {
                continue;
            }
            f.last = t.id;
            // Only transitions of patients the caller may see (checked per event, so a
            // care-team change takes effect on a running stream).
            match access::can_read_patient(&f.st, &f.user, &t.patient).await {
                Ok(()) => return Some((Ok(sse_event(&t)), f)),
                Err(ApiError::NotFound(_) | ApiError::Forbidden) => continue,
                Err(_) => {
                    tracing::warn!("alert stream could not check access");
                    return None;
                }
            }
        }
        if f.fetch {
            f.fetch = false;
            match f.store.alert_transitions(f.last, PAGE).await {
                Ok(list) => {
                    f.fetch = list.len() == PAGE;
                    f.buf.extend(list);
                    continue;
                }
                Err(e) => {
                    // End the stream; the client reconnects with Last-Event-ID.
                    tracing::warn!(error = %e, "alert stream could not read transitions");
                    return None;
                }
            }
        }
        match f.rx.recv().await {
            Ok(id) if id <= f.last => {}
            Ok(_) | Err(RecvError::Lagged(_)) => f.fetch = true,
            Err(RecvError::Closed) => return None,
        }
    }
}

async fn stream(
    State(st): State<AppState>,
    u: User,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    crate::audit::note_stream(&u);
    // Subscribe before reading the position, so nothing falls between the two.
    let rx = st.alerts.subscribe();
    let (last, fetch) = match headers.get("last-event-id") {
        Some(v) => {
            let id = v
                .to_str()
                .ok()
                .and_then(|s| s.trim().parse::<i64>().ok())
                .filter(|id| *id >= 0)
                .ok_or_else(|| {
                    ApiError::bad(
                        "invalid_last_event_id",
                        "Last-Event-ID must be a transition id",
                    )
                })?;
            (id, true)
        }
        None => (st.store.latest_transition_id().await?, false),
    };
    let feed = Feed {
        store: st.store.clone(),
        rx,
        last,
        buf: VecDeque::new(),
        fetch,
        st: st.clone(),
        user: u,
    };
    Ok(Sse::new(futures_util::stream::unfold(feed, next_event)).keep_alive(KeepAlive::default()))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AssessmentBody {
    /// ACVPU letter or word.
    consciousness: Option<String>,
    supplemental_oxygen: Option<bool>,
    /// RFC 3339; now when absent.
    time: Option<String>,
}

async fn assess(
    State(st): State<AppState>,
    u: User,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<AssessmentBody>,
) -> Result<Json<Value>, ApiError> {
    let id = patient_id(&id)?;
    access::can_write_patient(&st, &u, &id).await?;
    u.require_clinical()?;
    if st.store.patient(&id).await?.is_none() {
        return Err(ApiError::NotFound(format!("patient {id}")));
    }
    let mut list = Vec::new();
    if let Some(c) = b.consciousness.as_deref() {
        let level = c
            .parse::<vigil_rules::Acvpu>()
            .map_err(|e| ApiError::bad("invalid_acvpu", e.to_string()))?;
        list.push(vigil_rules::Assessment::Consciousness(level));
    }
    if let Some(o) = b.supplemental_oxygen {
        list.push(vigil_rules::Assessment::SupplementalOxygen(o));
    }
    if list.is_empty() {
        return Err(ApiError::bad(
            "invalid_assessment",
            "give consciousness, supplemental_oxygen or both",
        ));
    }
    let now = Timestamp::now();
    let time = crate::routes::parse_time("time", b.time.as_deref())?.unwrap_or(now);
    if time.0
        > now
            .0
            .saturating_add(st.config.max_future_s.saturating_mul(1000))
    {
        return Err(ApiError::bad(
            "future_time",
            "the assessment time is in the future",
        ));
    }
    let rules = st
        .alerts
        .on_assessment(st.store.as_ref(), &st.config, &id, list, time)
        .await?;
    Ok(Json(
        json!({ "patient": id, "time": time, "alerting_rules": rules }),
    ))
}

async fn get_care_team(
    State(st): State<AppState>,
    u: User,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = patient_id(&id)?;
    access::can_read_patient(&st, &u, &id).await?;
    if st.store.patient(&id).await?.is_none() {
        return Err(ApiError::NotFound(format!("patient {id}")));
    }
    let team = st.store.care_team(&id).await?;
    Ok(Json(json!({ "patient": id, "care_team": team })))
}

async fn put_care_team(
    State(st): State<AppState>,
    u: User,
    Path(id): Path<String>,
    ApiJson(team): ApiJson<CareTeam>,
) -> Result<Json<Value>, ApiError> {
    let id = patient_id(&id)?;
    access::can_write_patient(&st, &u, &id).await?;
    match u.role.as_str() {
        "admin" | "integration" | "clinician" => {}
        _ => return Err(ApiError::Forbidden),
    }
    let total = team.primary.len() + team.backup.len() + team.caregivers.len();
    if total > 100 {
        return Err(ApiError::bad(
            "invalid_care_team",
            "a care team has at most 100 members",
        ));
    }
    st.store.set_care_team(&id, team.clone()).await?;
    Ok(Json(json!({ "patient": id, "care_team": team })))
}

fn require_settings_role(u: &User) -> Result<(), ApiError> {
    match u.role.as_str() {
        "admin" | "clinician" => Ok(()),
        _ => Err(ApiError::Forbidden),
    }
}

async fn get_rule_settings(
    State(st): State<AppState>,
    u: User,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = patient_id(&id)?;
    access::can_read_patient(&st, &u, &id).await?;
    require_settings_role(&u)?;
    if st.store.patient(&id).await?.is_none() {
        return Err(ApiError::NotFound(format!("patient {id}")));
    }
    let (settings, effective) = st.alerts.settings(st.store.as_ref(), &id).await?;
    Ok(Json(json!({
        "patient": id,
        "spo2_scale": settings.spo2_scale.unwrap_or(1),
        "thresholds": settings.thresholds,
        "baseline": settings.baseline.unwrap_or_default(),
        "effective_thresholds": effective,
    })))
}

async fn put_rule_settings(
    State(st): State<AppState>,
    u: User,
    Path(id): Path<String>,
    ApiJson(settings): ApiJson<RuleSettings>,
) -> Result<Json<Value>, ApiError> {
    let id = patient_id(&id)?;
    access::can_write_patient(&st, &u, &id).await?;
    require_settings_role(&u)?;
    match st
        .alerts
        .set_settings(st.store.as_ref(), &id, &settings)
        .await
    {
        Ok(()) => {}
        Err(SettingsError::Rules(e)) => {
            return Err(ApiError::bad("invalid_rule_settings", e.to_string()));
        }
        Err(SettingsError::Store(e)) => return Err(e.into()),
    }
    tracing::info!(actor = %u.name, "rule settings changed");
    let (settings, effective) = st.alerts.settings(st.store.as_ref(), &id).await?;
    Ok(Json(json!({
        "patient": id,
        "spo2_scale": settings.spo2_scale.unwrap_or(1),
        "thresholds": settings.thresholds,
        "baseline": settings.baseline.unwrap_or_default(),
        "effective_thresholds": effective,
    })))
}

#[derive(Debug, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct OnCall {
    users: Vec<String>,
}

async fn get_on_call(State(st): State<AppState>, _u: User) -> Result<Json<OnCall>, ApiError> {
    Ok(Json(OnCall {
        users: st.store.on_call().await?,
    }))
}

async fn put_on_call(
    State(st): State<AppState>,
    u: User,
    ApiJson(b): ApiJson<OnCall>,
) -> Result<Json<OnCall>, ApiError> {
    u.require_admin()?;
    if b.users.len() > 100 {
        return Err(ApiError::bad(
            "invalid_on_call",
            "the on-call list has at most 100 users",
        ));
    }
    st.store.set_on_call(b.users.clone()).await?;
    Ok(Json(b))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NotificationParams {
    status: Option<String>,
    limit: Option<usize>,
}

async fn list_notifications(
    State(st): State<AppState>,
    u: User,
    ApiQuery(q): ApiQuery<NotificationParams>,
) -> Result<Json<Value>, ApiError> {
    u.require_admin()?;
    let status = match status_param(
        q.status.as_deref(),
        &["pending", "delivered", "dead", "all"],
        "all",
    )? {
        "all" => None,
        s => Some(s),
    };
    let limit = list_limit(q.limit);
    let list = st.store.notifications(status, limit).await?;
    Ok(Json(json!({ "count": list.len(), "notifications": list })))
}

async fn dead_notifications(State(st): State<AppState>, u: User) -> Result<Json<Value>, ApiError> {
    u.require_admin()?;
    let list = st.store.notifications(Some("dead"), 1000).await?;
    Ok(Json(json!({ "count": list.len(), "notifications": list })))
}

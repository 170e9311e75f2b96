//! Privacy routes: patient consent for caregivers, break-glass access, device enrolment
//! revocation, the patient's full export (right of access), erasure with a tombstone, and
//! the retention sweep.

use crate::access;
use crate::auth::User;
use crate::routes::{ApiJson, ApiQuery, parse_time, patient_id};
use crate::{ApiError, AppState};
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::sync::Arc;
use vigil_model::{DeviceId, Timestamp};
use vigil_store::privacy::{NewConsent, RetentionCuts};
use vigil_store::{AlertFilter, Store};

/// Shortest accepted break-glass reason, in characters.
pub const MIN_REASON_CHARS: usize = 10;
const MAX_REASON_BYTES: usize = 2000;
const DAY_MS: i64 = 86_400_000;

/// Retention periods in days per kind of data; 0 keeps that kind forever.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// Readings, by device time; a stored chunk (one patient, metric and hour) goes once its
    /// newest reading is older than the period.
    pub readings_days: u64,
    /// Events, by device time.
    pub events_days: u64,
    /// Resolved alerts, by resolution time, with their transitions and notifications.
    pub alerts_days: u64,
    /// Quarantine entries, by hub receive time.
    pub quarantine_days: u64,
    /// Delivered and dead notifications, by creation time.
    pub notifications_days: u64,
    /// How often the sweep runs, in seconds (0 disables it).
    pub sweep_every_s: u64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            readings_days: 0,
            events_days: 0,
            alerts_days: 0,
            quarantine_days: 0,
            notifications_days: 0,
            sweep_every_s: 3600,
        }
    }
}

impl RetentionConfig {
    /// The cut-offs at `now`.
    pub fn cuts(&self, now: Timestamp) -> RetentionCuts {
        let cut = |days: u64| {
            (days > 0).then(|| {
                let ms = i64::try_from(days)
                    .unwrap_or(i64::MAX)
                    .saturating_mul(DAY_MS);
                Timestamp(now.0.saturating_sub(ms))
            })
        };
        RetentionCuts {
            readings: cut(self.readings_days),
            events: cut(self.events_days),
            alerts: cut(self.alerts_days),
            quarantine: cut(self.quarantine_days),
            notifications: cut(self.notifications_days),
        }
    }

    fn any(&self) -> bool {
        self.cuts(Timestamp(0)) != RetentionCuts::default()
    }
}

/// Starts the periodic retention sweep when a period is configured.
pub fn spawn_retention(state: &AppState) -> Option<tokio::task::JoinHandle<()>> {
    let config = state.config.retention.clone();
    if config.sweep_every_s == 0 || !config.any() {
        return None;
    }
    let store = state.store.clone();
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(config.sweep_every_s));
        loop {
            tick.tick().await;
            match store.sweep_retention(config.cuts(Timestamp::now())).await {
                Ok(out) if out.is_empty() => {}
                Ok(out) => tracing::debug!(
                    chunks = out.chunks,
                    readings = out.readings,
                    events = out.events,
                    alerts = out.alerts,
                    transitions = out.transitions,
                    quarantine = out.quarantine,
                    notifications = out.notifications,
                    "retention sweep"
                ),
                Err(e) => tracing::warn!(error = %e, "retention sweep failed"),
            }
        }
    }))
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/patients/{id}", delete(erase_patient))
        .route(
            "/api/v1/patients/{id}/consents",
            get(list_consents).post(grant_consent),
        )
        .route(
            "/api/v1/patients/{id}/consents/{grantee}",
            delete(revoke_consent),
        )
        .route("/api/v1/patients/{id}/break-glass", post(break_glass))
        .route("/api/v1/patients/{id}/export", get(export_patient))
        .route("/api/v1/break-glass", get(list_break_glass))
        .route("/api/v1/erasures", get(list_erasures))
        .route("/api/v1/devices/{id}", delete(revoke_device))
        .route("/api/v1/devices/{id}/revoke", post(revoke_device))
        .route("/api/v1/device-revocations", get(list_revocations))
}

fn device_id(s: &str) -> Result<DeviceId, ApiError> {
    DeviceId::new(s).map_err(|e| ApiError::bad("invalid_id", e.to_string()))
}

fn user_name(what: &str, s: &str) -> Result<(), ApiError> {
    if s.trim().is_empty() || s.len() > 128 || s.chars().any(char::is_control) {
        return Err(ApiError::bad(
            "invalid_user",
            format!("{what} must be a user name of 1 to 128 bytes"),
        ));
    }
    Ok(())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConsentBody {
    grantee: String,
    scope: Option<String>,
    expires: Option<String>,
}

async fn grant_consent(
    State(st): State<AppState>,
    u: User,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<ConsentBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let id = patient_id(&id)?;
    access::can_manage_consent(&st, &u, &id).await?;
    user_name("grantee", &b.grantee)?;
    let scope = b.scope.unwrap_or_else(|| "read".to_owned());
    if scope != "read" {
        return Err(ApiError::bad(
            "invalid_scope",
            format!("scope must be \"read\", got {scope:?}"),
        ));
    }
    let now = Timestamp::now();
    let expires = parse_time("expires", b.expires.as_deref())?;
    if expires.is_some_and(|e| e <= now) {
        return Err(ApiError::bad(
            "invalid_time",
            "expires must be in the future",
        ));
    }
    let c = st
        .store
        .grant_consent(
            &id,
            NewConsent {
                grantee: b.grantee,
                scope,
                granted_by: u.name.clone(),
                expires,
            },
            now,
        )
        .await?;
    Ok((StatusCode::CREATED, Json(json!(c))))
}

async fn list_consents(
    State(st): State<AppState>,
    u: User,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = patient_id(&id)?;
    access::can_manage_consent(&st, &u, &id).await?;
    let now = Timestamp::now();
    let list: Vec<Value> = st
        .store
        .consents(&id)
        .await?
        .into_iter()
        .map(|c| {
            let active = c.active_at(now);
            let mut v = json!(c);
            v["active"] = json!(active);
            v
        })
        .collect();
    Ok(Json(
        json!({ "patient": id, "count": list.len(), "consents": list }),
    ))
}

async fn revoke_consent(
    State(st): State<AppState>,
    u: User,
    Path((id, grantee)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let id = patient_id(&id)?;
    access::can_manage_consent(&st, &u, &id).await?;
    user_name("grantee", &grantee)?;
    let c = st
        .store
        .revoke_consent(&id, &grantee, &u.name, Timestamp::now())
        .await?;
    Ok(Json(json!(c)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReasonBody {
    reason: Option<String>,
}

fn reason_of(b: ReasonBody, min_chars: usize) -> Result<String, ApiError> {
    let reason = b.reason.unwrap_or_default().trim().to_owned();
    if reason.chars().count() < min_chars || reason.len() > MAX_REASON_BYTES {
        return Err(ApiError::bad(
            "reason_required",
            format!(
                "a reason of at least {min_chars} characters (at most {MAX_REASON_BYTES} bytes) is required"
            ),
        ));
    }
    Ok(reason)
}

async fn break_glass(
    State(st): State<AppState>,
    u: User,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<ReasonBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let id = patient_id(&id)?;
    // Asking for break-glass is itself audited, granted or not, with its reason.
    crate::audit::note(&u, &id, crate::audit::Action::Read);
    if let Some(r) = b.reason.as_deref() {
        crate::audit::break_glass(r);
    }
    if !matches!(u.role.as_str(), "clinician" | "nurse") {
        return Err(ApiError::Forbidden);
    }
    let reason = reason_of(b, MIN_REASON_CHARS)?;
    if st.store.patient(&id).await?.is_none() {
        return Err(ApiError::NotFound(format!("patient {id}")));
    }
    if access::on_care_team(&st, &u, &id).await? {
        return Err(ApiError::Conflict(
            "you are on this patient's care team; break-glass is not needed".into(),
        ));
    }
    let from = Timestamp::now();
    let minutes = st.config.break_glass_minutes;
    let until = from.saturating_add_millis((minutes * 60_000.0) as i64);
    let g = st
        .store
        .record_break_glass(&id, &u.name, &u.role, &reason, from, until)
        .await?;
    tracing::warn!(
        user = %u.name,
        role = %u.role,
        break_glass = g.id,
        "break-glass access to a patient record"
    );
    report_to_admins(&st, &g).await?;
    Ok((StatusCode::CREATED, Json(json!(g))))
}

/// Queues a break-glass report to every admin (in-app inbox, e-mail when configured) and to
/// every webhook.
async fn report_to_admins(
    st: &AppState,
    g: &vigil_store::privacy::BreakGlass,
) -> Result<(), ApiError> {
    let payload = json!({
        "event": "break-glass",
        "rule_id": "break-glass",
        "break_glass": g.id,
        "patient": g.patient,
        "user": g.user,
        "role": g.role,
        "reason": g.reason,
        "from": g.from,
        "until": g.until,
    });
    let mut list = Vec::new();
    let mut add = |channel: &str, target: &str| {
        list.push(vigil_store::NewNotification {
            alert_id: None,
            channel: channel.to_owned(),
            target: target.to_owned(),
            payload: payload.clone(),
        });
    };
    for admin in st.store.admin_users().await? {
        add("user", &admin);
        if st.config.smtp.is_some() && st.config.emails.contains_key(&admin) {
            add("email", &admin);
        }
    }
    for w in &st.config.webhooks {
        add("webhook", &w.name);
    }
    if !list.is_empty() {
        st.store.enqueue_notifications(list, g.from).await?;
    }
    Ok(())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BreakGlassParams {
    patient: Option<String>,
    limit: Option<usize>,
}

async fn list_break_glass(
    State(st): State<AppState>,
    u: User,
    ApiQuery(q): ApiQuery<BreakGlassParams>,
) -> Result<Json<Value>, ApiError> {
    if u.role != "admin" {
        return Err(ApiError::Forbidden);
    }
    let patient = q.patient.as_deref().map(patient_id).transpose()?;
    let limit = q.limit.unwrap_or(1000).clamp(1, 100_000);
    let now = Timestamp::now();
    let list: Vec<Value> = st
        .store
        .break_glass_log(patient.as_ref(), limit)
        .await?
        .into_iter()
        .map(|g| {
            let active = g.from <= now && now < g.until;
            let mut v = json!(g);
            v["active"] = json!(active);
            v
        })
        .collect();
    Ok(Json(json!({ "count": list.len(), "break_glass": list })))
}

async fn revoke_device(
    State(st): State<AppState>,
    u: User,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    u.require_admin()?;
    let id = device_id(&id)?;
    let r = st
        .store
        .revoke_device(&id, &u.name, Timestamp::now())
        .await?;
    Ok(Json(json!(r)))
}

async fn list_revocations(State(st): State<AppState>, u: User) -> Result<Json<Value>, ApiError> {
    access::require_operator(&u)?;
    let list = st.store.device_revocations().await?;
    Ok(Json(json!({ "count": list.len(), "revocations": list })))
}

async fn erase_patient(
    State(st): State<AppState>,
    u: User,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<ReasonBody>,
) -> Result<Json<Value>, ApiError> {
    let id = patient_id(&id)?;
    crate::audit::note(&u, &id, crate::audit::Action::Write);
    if u.role != "admin" {
        // Out of scope stays indistinguishable from absent.
        access::can_read_patient(&st, &u, &id).await?;
        return Err(ApiError::Forbidden);
    }
    let reason = reason_of(b, 1)?;
    let t = st
        .store
        .erase_patient(&id, &u.name, &reason, Timestamp::now())
        .await?;
    tracing::info!(tombstone = t.id, by = %u.name, "patient erased");
    tracing::debug!(counts = ?t.counts, "erasure counts");
    Ok(Json(json!(t)))
}

async fn list_erasures(State(st): State<AppState>, u: User) -> Result<Json<Value>, ApiError> {
    if u.role != "admin" {
        return Err(ApiError::Forbidden);
    }
    let list = st.store.tombstones().await?;
    Ok(Json(json!({ "count": list.len(), "erasures": list })))
}

/// (metric, hour) groups of readings per export page.
const EXPORT_GROUPS: usize = 64;

async fn export_patient(
    State(st): State<AppState>,
    u: User,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = patient_id(&id)?;
    access::can_export_patient(&st, &u, &id).await?;
    let patient = st
        .store
        .patient(&id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("patient {id}")))?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(4);
    let store = st.store.clone();
    tokio::spawn(async move {
        match write_export(store, &patient, &tx).await {
            Ok(()) => {}
            Err(ExportError::Closed) => tracing::debug!("export abandoned by the client"),
            Err(e) => {
                // The status line is sent: abort the body so the client sees an incomplete
                // transfer rather than a short document.
                tracing::warn!(error = %e, "patient export failed");
                let _ = tx.send(Err(std::io::Error::other("export failed"))).await;
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-ndjson"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        axum::body::Body::from_stream(stream),
    )
        .into_response())
}

/// Why an export stopped.
#[derive(Debug, thiserror::Error)]
enum ExportError {
    #[error(transparent)]
    Store(#[from] vigil_store::StoreError),
    #[error("the client went away")]
    Closed,
    #[error("encoding: {0}")]
    Encode(String),
}

/// Lines of one export, sent as they are produced.
struct Lines<'a> {
    tx: &'a tokio::sync::mpsc::Sender<Result<bytes::Bytes, std::io::Error>>,
    buf: Vec<u8>,
    counts: std::collections::BTreeMap<&'static str, u64>,
}

impl Lines<'_> {
    /// Writes `v` (a JSON object) as one line, `type` first, without an intermediate tree.
    async fn push<T: Serialize>(&mut self, kind: &'static str, v: &T) -> Result<(), ExportError> {
        let start = self.buf.len();
        self.buf
            .extend_from_slice(format!("{{\"type\":\"{kind}\"").as_bytes());
        let body_at = self.buf.len();
        serde_json::to_writer(&mut self.buf, v).map_err(|e| ExportError::Encode(e.to_string()))?;
        // `{...}` after the type: drop its `{`, joining with a comma unless it is empty.
        match self.buf.get(body_at..body_at + 2) {
            Some(b"{}") => {
                self.buf.truncate(body_at);
                self.buf.push(b'}');
            }
            Some([b'{', _]) => self.buf[body_at] = b',',
            _ => {
                self.buf.truncate(start);
                return Err(ExportError::Encode(format!(
                    "a {kind} is not a JSON object"
                )));
            }
        }
        self.buf.push(b'\n');
        *self.counts.entry(kind).or_default() += 1;
        if self.buf.len() >= 64 * 1024 {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), ExportError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = bytes::Bytes::from(std::mem::take(&mut self.buf));
        self.tx
            .send(Ok(chunk))
            .await
            .map_err(|_| ExportError::Closed)
    }
}

/// The export as NDJSON: one object per line with a `type` (`patient`, `device`,
/// `assignment`, `reading`, `event`, `alert` with its transitions, `consent`,
/// `break_glass`), then a `summary` with the count of each type.
async fn write_export(
    store: Arc<dyn Store>,
    patient: &vigil_model::Patient,
    tx: &tokio::sync::mpsc::Sender<Result<bytes::Bytes, std::io::Error>>,
) -> Result<(), ExportError> {
    let id = &patient.id;
    let mut out = Lines {
        tx,
        buf: Vec::new(),
        counts: Default::default(),
    };
    out.push("patient", patient).await?;
    let assignments: Vec<_> = store
        .assignments(None)
        .await?
        .into_iter()
        .filter(|a| &a.patient == id)
        .collect();
    let devices: std::collections::BTreeSet<&DeviceId> =
        assignments.iter().map(|a| &a.device).collect();
    for d in store.devices().await? {
        if devices.contains(&d.id) {
            out.push("device", &d).await?;
        }
    }
    for a in &assignments {
        out.push("assignment", a).await?;
    }
    let mut after = None;
    loop {
        let page = store.export_readings(id, after, EXPORT_GROUPS).await?;
        for r in &page.readings {
            out.push("reading", r).await?;
        }
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    let events = store.events(id, None, None, i64::MAX as usize).await?;
    for e in events.iter().rev() {
        out.push("event", e).await?;
    }
    let alerts = store
        .alerts(AlertFilter {
            patient: Some(id.clone()),
            limit: usize::MAX,
            ..Default::default()
        })
        .await?;
    for a in alerts.iter().rev() {
        let transitions = store.transitions_of(a.id).await?;
        let mut v = json!(a);
        v["transitions"] = json!(transitions);
        out.push("alert", &v).await?;
    }
    for c in store.consents(id).await? {
        out.push("consent", &c).await?;
    }
    for g in store.break_glass_log(Some(id), usize::MAX).await? {
        out.push("break_glass", &g).await?;
    }
    let counts = json!(out.counts);
    out.push("summary", &json!({ "patient": id, "counts": counts }))
        .await?;
    out.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_cuts_follow_the_configured_days_and_zero_keeps_forever() {
        let c = RetentionConfig {
            readings_days: 2,
            quarantine_days: 30,
            ..Default::default()
        };
        let now = Timestamp(100 * DAY_MS);
        let cuts = c.cuts(now);
        assert_eq!(cuts.readings, Some(Timestamp(98 * DAY_MS)));
        assert_eq!(cuts.quarantine, Some(Timestamp(70 * DAY_MS)));
        assert_eq!(cuts.events, None);
        assert_eq!(cuts.alerts, None);
        assert_eq!(cuts.notifications, None);
        assert!(c.any());
        assert!(!RetentionConfig::default().any());
    }

    #[tokio::test]
    async fn export_lines_put_the_type_first_and_refuse_non_objects() {
        let (tx, mut rx) = tokio::sync::mpsc::channel(4);
        let mut out = Lines {
            tx: &tx,
            buf: Vec::new(),
            counts: Default::default(),
        };
        out.push("a", &json!({"x": 1, "y": "z"}))
            .await
            .expect("object");
        out.push("b", &json!({})).await.expect("empty object");
        assert!(out.push("c", &json!([1, 2])).await.is_err());
        assert!(out.push("c", &json!(3)).await.is_err());
        out.flush().await.expect("flush");
        let text = rx.recv().await.expect("chunk").expect("bytes");
        let lines: Vec<Value> = std::str::from_utf8(&text)
            .expect("utf8")
            .lines()
            .map(|l| serde_json::from_str(l).expect("json line"))
            .collect();
        assert_eq!(
            lines,
            [json!({"type": "a", "x": 1, "y": "z"}), json!({"type": "b"})]
        );
        assert!(
            std::str::from_utf8(&text)
                .expect("utf8")
                .starts_with("{\"type\":\"a\",")
        );
    }
}

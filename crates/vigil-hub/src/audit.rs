//! Audit of every read and write of patient data.
//!
//! A middleware on the whole router opens a per-request scope (a task-local: the handler runs
//! inside the middleware's future) holding when, from where (the peer address; the
//! `X-Forwarded-For` address only when the peer is a configured trusted proxy), which resource
//! (method, path and query) and why (`X-Purpose-Of-Use`, default `treatment`; break-glass
//! access sets emergency treatment and its reason through [`break_glass`]). The access
//! functions of [`crate::access`] note who touched which patient; gateway ingest notes one
//! entry per batch with its record count. After the handler answered, the middleware appends
//! one entry per (who, patient, action) with the HTTP status, all entries of the request in
//! one transaction, before the answer leaves: denied accesses are recorded as failures, and a
//! request whose audit cannot be written answers 500 instead of its data.
//!
//! A list (patients, alerts, FHIR searches) is one entry with patient `*` and the size of the
//! caller's scope in `detail` (`visible=all` or `visible=N`), not one entry per patient
//! listed: that would cost a row per patient on every dashboard refresh. A write implies a
//! read of the same patient in the same request, so it is recorded once, as the write.
//!
//! Routes: `GET /api/v1/audit` (admin only; `after`, `limit`, `patient`) and
//! `GET /fhir/r4/AuditEvent` (admin only; `patient`, `_count`, `after`).

use crate::auth::User;
use crate::{ApiError, AppState};
use axum::Router;
use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, extract::rejection::QueryRejection};
use serde::Deserialize;
use serde_json::{Value, json};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use vigil_fhir::{IssueType, Resource, Severity};
use vigil_model::{PatientId, Timestamp};
use vigil_store::audit::{ANY_PATIENT, AuditQuery, NewAuditEntry};

/// The header that says why a request accesses patient data.
pub const PURPOSE_HEADER: &str = "x-purpose-of-use";
/// Longest `resource` recorded (method, path and query), in bytes.
const MAX_RESOURCE: usize = 512;
/// Longest break-glass reason recorded, in bytes.
const MAX_REASON: usize = 500;

/// Purpose names accepted in `X-Purpose-Of-Use`, besides the codes themselves.
const PURPOSE_NAMES: [(&str, &str); 7] = [
    ("treatment", "TREAT"),
    ("emergency", "ETREAT"),
    ("operations", "HOPERAT"),
    ("payment", "HPAYMT"),
    ("research", "HRESCH"),
    ("public-health", "PUBHLTH"),
    ("patient-request", "PATRQT"),
];

/// What a caller did to a patient's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Read,
    Write,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Read,
    Write,
    Search,
    Ingest,
}

#[derive(Debug, Clone)]
struct Note {
    actor: String,
    role: String,
    patient: String,
    kind: Kind,
    detail: String,
}

#[derive(Debug, Default)]
struct Scope {
    notes: Vec<Note>,
    /// Break-glass reason: the purpose becomes emergency treatment.
    break_glass: Option<String>,
}

tokio::task_local! {
    static SCOPE: Arc<Mutex<Scope>>;
}

fn lock(s: &Mutex<Scope>) -> MutexGuard<'_, Scope> {
    match s.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// Runs `f` on the current request's scope; nothing outside a request (background tasks,
/// the body of a streaming answer).
fn with_scope(f: impl FnOnce(&mut Scope)) {
    let _ = SCOPE.try_with(|s| f(&mut lock(s)));
}

fn push(n: Note) {
    with_scope(|s| s.notes.push(n));
}

/// Records that `u` accesses `patient` in this request (called by [`crate::access`]).
pub fn note(u: &User, patient: &PatientId, action: Action) {
    push(Note {
        actor: u.name.clone(),
        role: u.role.clone(),
        patient: patient.as_str().to_owned(),
        kind: match action {
            Action::Read => Kind::Read,
            Action::Write => Kind::Write,
        },
        detail: String::new(),
    });
}

/// Records a list over the patients `u` may see: `visible` patients, or all when `None`.
pub fn note_list(u: &User, visible: Option<usize>) {
    push(Note {
        actor: u.name.clone(),
        role: u.role.clone(),
        patient: ANY_PATIENT.to_owned(),
        kind: Kind::Search,
        detail: match visible {
            None => "visible=all".to_owned(),
            Some(n) => format!("visible={n}"),
        },
    });
}

/// Records that `u` opens the alert stream (its events are filtered per patient, unaudited).
pub fn note_stream(u: &User) {
    push(Note {
        actor: u.name.clone(),
        role: u.role.clone(),
        patient: ANY_PATIENT.to_owned(),
        kind: Kind::Search,
        detail: "alert stream".to_owned(),
    });
}

/// Records a gateway batch of `records` records (one entry per batch, not per reading).
pub fn note_ingest(gateway: &str, records: usize) {
    push(Note {
        actor: gateway.to_owned(),
        role: "gateway".to_owned(),
        patient: ANY_PATIENT.to_owned(),
        kind: Kind::Ingest,
        detail: format!("records={records}"),
    });
}

/// Records that this request's access came through break-glass with `reason`: its entries
/// get purpose `ETREAT` (emergency treatment) and the reason.
pub fn break_glass(reason: &str) {
    let reason = truncate(reason.trim(), MAX_REASON).to_owned();
    with_scope(|s| s.break_glass = Some(reason));
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The purpose code of a request: `X-Purpose-Of-Use` by name or code, `TREAT` without one.
fn purpose_of(headers: &HeaderMap) -> Result<&'static str, ApiError> {
    let Some(v) = headers.get(PURPOSE_HEADER) else {
        return Ok("TREAT");
    };
    let v = v.to_str().unwrap_or("").trim();
    PURPOSE_NAMES
        .iter()
        .find(|(name, code)| v.eq_ignore_ascii_case(name) || v.eq_ignore_ascii_case(code))
        .map(|(_, code)| *code)
        .ok_or_else(|| {
            let names: Vec<&str> = PURPOSE_NAMES.iter().map(|(n, _)| *n).collect();
            ApiError::bad(
                "invalid_purpose",
                format!(
                    "{PURPOSE_HEADER} must be one of {} (or its HL7 v3 ActReason code)",
                    names.join(", ")
                ),
            )
        })
}

/// The client's address: the peer, or, when the peer is a trusted proxy, the nearest
/// address in `X-Forwarded-For` that is not a trusted proxy.
fn source_of(req: &Request, trusted: &[IpAddr]) -> String {
    let Some(ConnectInfo(peer)) = req.extensions().get::<ConnectInfo<SocketAddr>>() else {
        return "unknown".to_owned();
    };
    let mut ip = peer.ip();
    if trusted.contains(&ip) {
        let forwarded: Vec<&str> = req
            .headers()
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .collect();
        for hop in forwarded.iter().rev() {
            match hop.trim().parse::<IpAddr>() {
                Ok(a) => {
                    ip = a;
                    if !trusted.contains(&a) {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
    }
    ip.to_string()
}

fn resource_of(method: &Method, uri: &Uri) -> String {
    let s = match uri.query() {
        Some(q) => format!("{method} {}?{q}", uri.path()),
        None => format!("{method} {}", uri.path()),
    };
    truncate(&s, MAX_RESOURCE).to_owned()
}

fn is_fhir(uri: &Uri) -> bool {
    uri.path().starts_with("/fhir/")
}

fn fhir_error(status: StatusCode, code: IssueType, diagnostics: &str) -> Response {
    let oo = vigil_fhir::operation_outcome(Severity::Error, code, diagnostics);
    match serde_json::to_string(&Resource::OperationOutcome(oo)) {
        Ok(body) => (
            status,
            [(header::CONTENT_TYPE, "application/fhir+json")],
            body,
        )
            .into_response(),
        Err(_) => status.into_response(),
    }
}

/// An error in the dialect of the route: OperationOutcome under `/fhir`, problem otherwise.
fn reject(fhir: bool, e: ApiError) -> Response {
    if !fhir {
        return e.into_response();
    }
    let code = match &e {
        ApiError::Unauthorized => IssueType::Login,
        ApiError::Forbidden => IssueType::Forbidden,
        ApiError::BadRequest { .. } => IssueType::Invalid,
        _ => IssueType::Exception,
    };
    let diagnostics = match &e {
        ApiError::Internal(msg) => {
            tracing::error!(error = %msg, "internal error");
            "the hub could not complete the request; it has been logged".to_owned()
        }
        other => other.to_string(),
    };
    fhir_error(e.status(), code, &diagnostics)
}

fn action_name(kind: Kind, method: &Method) -> &'static str {
    match kind {
        Kind::Read => "read",
        Kind::Search => "search-type",
        Kind::Ingest => "create",
        Kind::Write => match *method {
            Method::POST => "create",
            Method::PUT => "update",
            Method::PATCH => "patch",
            Method::DELETE => "delete",
            _ => "read",
        },
    }
}

/// Where one request was made from and for what.
struct Context {
    time: Timestamp,
    source: String,
    purpose: &'static str,
    method: Method,
    resource: String,
}

/// One entry per (who, patient, action); a write subsumes a read of the same patient.
fn entries(scope: Scope, cx: &Context, status: u16) -> Vec<NewAuditEntry> {
    let notes = scope.notes;
    let mut out: Vec<NewAuditEntry> = Vec::with_capacity(notes.len());
    let (purpose, reason) = match &scope.break_glass {
        Some(r) => ("ETREAT", Some(format!("break-glass: {r}"))),
        None => (cx.purpose, None),
    };
    for (i, n) in notes.iter().enumerate() {
        let dup = notes[..i].iter().any(|m| {
            m.actor == n.actor && m.patient == n.patient && m.kind == n.kind && m.detail == n.detail
        });
        let subsumed = n.kind == Kind::Read
            && notes
                .iter()
                .any(|m| m.kind == Kind::Write && m.actor == n.actor && m.patient == n.patient);
        if dup || subsumed {
            continue;
        }
        let detail = match (&reason, n.detail.is_empty()) {
            (Some(r), true) => r.clone(),
            (Some(r), false) => format!("{}; {r}", n.detail),
            (None, _) => n.detail.clone(),
        };
        out.push(NewAuditEntry {
            time: cx.time,
            actor: n.actor.clone(),
            role: n.role.clone(),
            patient: n.patient.clone(),
            action: action_name(n.kind, &cx.method).to_owned(),
            resource: cx.resource.clone(),
            source: cx.source.clone(),
            purpose: purpose.to_owned(),
            outcome: status,
            detail,
        });
    }
    out
}

/// The audit middleware (see the module docs).
pub async fn middleware(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let fhir = is_fhir(req.uri());
    let purpose = match purpose_of(req.headers()) {
        Ok(p) => p,
        Err(e) => return reject(fhir, e),
    };
    let cx = Context {
        time: Timestamp::now(),
        source: source_of(&req, &st.config.audit_trusted_proxies),
        purpose,
        method: req.method().clone(),
        resource: resource_of(req.method(), req.uri()),
    };
    let scope = Arc::new(Mutex::new(Scope::default()));
    let resp = SCOPE.scope(scope.clone(), next.run(req)).await;
    let scope = std::mem::take(&mut *lock(&scope));
    if scope.notes.is_empty() {
        return resp;
    }
    let list = entries(scope, &cx, resp.status().as_u16());
    match st.store.append_audit(list).await {
        Ok(_) => resp,
        // Fail closed: no patient data leaves without its audit entry.
        Err(e) => reject(
            fhir,
            ApiError::Internal(format!("audit append failed: {e}")),
        ),
    }
}

/// The audit routes, merged into the hub's router.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/audit", get(list))
        .route("/fhir/r4/AuditEvent", get(search_audit_events))
}

fn require_admin(u: &User) -> Result<(), ApiError> {
    if u.role == "admin" {
        Ok(())
    } else {
        Err(ApiError::Forbidden)
    }
}

/// Reading the audit log is itself audited (it names patients).
fn note_audit_read(u: &User, patient: Option<&str>) {
    push(Note {
        actor: u.name.clone(),
        role: u.role.clone(),
        patient: patient.unwrap_or(ANY_PATIENT).to_owned(),
        kind: Kind::Search,
        detail: "audit log".to_owned(),
    });
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams {
    after: Option<u64>,
    limit: Option<usize>,
    patient: Option<String>,
}

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 10_000;

fn check_patient(p: Option<String>) -> Result<Option<String>, ApiError> {
    p.map(|p| {
        PatientId::new(p.as_str())
            .map(|_| p)
            .map_err(|e| ApiError::bad("invalid_id", e.to_string()))
    })
    .transpose()
}

async fn list(
    State(st): State<AppState>,
    u: User,
    q: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::bad("invalid_query", e.body_text()))?;
    let patient = check_patient(q.patient)?;
    // Noted before the role check: a refused attempt to read the log is recorded too.
    note_audit_read(&u, patient.as_deref());
    require_admin(&u)?;
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::bad(
            "invalid_limit",
            format!("limit must be between 1 and {MAX_LIMIT}"),
        ));
    }
    let entries = st
        .store
        .audit_entries(AuditQuery {
            after: q.after.unwrap_or(0),
            limit,
            patient,
        })
        .await?;
    let next = (entries.len() == limit).then(|| entries.last().map(|e| e.seq));
    Ok(Json(json!({
        "count": entries.len(),
        "entries": entries,
        "next_after": next.flatten(),
    })))
}

async fn search_audit_events(
    State(st): State<AppState>,
    headers: HeaderMap,
    u: Result<User, ApiError>,
    q: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Response {
    match fhir_search(&st, &headers, u, q).await {
        Ok(v) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/fhir+json")],
            v.to_string(),
        )
            .into_response(),
        Err(e) => reject(true, e),
    }
}

async fn fhir_search(
    st: &AppState,
    headers: &HeaderMap,
    u: Result<User, ApiError>,
    q: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Value, ApiError> {
    let u = u?;
    note_audit_read(&u, None);
    require_admin(&u)?;
    let Query(params) = q.map_err(|e| ApiError::bad("invalid_query", e.body_text()))?;
    let (mut patient, mut count, mut after) = (None, DEFAULT_LIMIT, 0u64);
    for (k, v) in &params {
        let bad = |what: &str| ApiError::bad("invalid_query", format!("{k}: {what}, got {v:?}"));
        match k.as_str() {
            "patient" => patient = Some(v.strip_prefix("Patient/").unwrap_or(v).to_owned()),
            "_count" => {
                count = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_LIMIT).contains(n))
                    .ok_or_else(|| bad(&format!("must be between 1 and {MAX_LIMIT}")))?;
            }
            "after" => {
                after = v
                    .parse()
                    .map_err(|_| bad("must be an entry sequence number"))?
            }
            _ => {
                return Err(ApiError::bad(
                    "invalid_query",
                    format!("unsupported search parameter {k:?} (patient, _count, after)"),
                ));
            }
        }
    }
    let patient = check_patient(patient)?;
    let entries = st
        .store
        .audit_entries(AuditQuery {
            after,
            limit: count,
            patient: patient.clone(),
        })
        .await?;
    let base = crate::fhir_routes::base(headers);
    let query = |after: u64| {
        let mut s = format!("{base}/AuditEvent?_count={count}&after={after}");
        if let Some(p) = &patient {
            s.push_str(&format!("&patient={p}"));
        }
        s
    };
    let mut links = vec![json!({"relation": "self", "url": query(after)})];
    if entries.len() == count
        && let Some(last) = entries.last()
    {
        links.push(json!({"relation": "next", "url": query(last.seq)}));
    }
    let entry: Vec<Value> = entries
        .iter()
        .map(|e| {
            let r = vigil_fhir::audit_event::audit_event(e);
            json!({
                "fullUrl": format!("{base}/AuditEvent/{}", r["id"].as_str().unwrap_or_default()),
                "resource": r,
                "search": {"mode": "match"},
            })
        })
        .collect();
    Ok(json!({
        "resourceType": "Bundle",
        "type": "searchset",
        "link": links,
        "entry": entry,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_fhir::audit_event::PURPOSES;

    fn user(name: &str) -> User {
        User {
            name: name.into(),
            role: "clinician".into(),
        }
    }

    fn cx(method: Method) -> Context {
        Context {
            time: Timestamp(1),
            source: "127.0.0.1".into(),
            purpose: "TREAT",
            method,
            resource: "x".into(),
        }
    }

    #[test]
    fn a_write_subsumes_the_read_of_the_same_patient_and_duplicates_collapse() {
        let p = PatientId::new("pat-1").expect("id");
        let q = PatientId::new("pat-2").expect("id");
        let s = Arc::new(Mutex::new(Scope::default()));
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("rt");
        rt.block_on(SCOPE.scope(s.clone(), async {
            note(&user("a"), &p, Action::Read);
            note(&user("a"), &p, Action::Write);
            note(&user("a"), &q, Action::Read);
            note(&user("a"), &q, Action::Read);
        }));
        let scope = std::mem::take(&mut *lock(&s));
        let e = entries(scope, &cx(Method::PUT), 200);
        let got: Vec<(&str, &str)> = e
            .iter()
            .map(|e| (e.patient.as_str(), e.action.as_str()))
            .collect();
        assert_eq!(got, [("pat-1", "update"), ("pat-2", "read")]);
    }

    #[test]
    fn notes_outside_a_request_are_ignored_and_break_glass_sets_the_purpose() {
        note(
            &user("a"),
            &PatientId::new("pat-1").expect("id"),
            Action::Read,
        );
        let s = Arc::new(Mutex::new(Scope::default()));
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("rt");
        rt.block_on(SCOPE.scope(s.clone(), async {
            note_list(&user("a"), Some(3));
            break_glass("cardiac arrest in bay 4");
        }));
        let scope = std::mem::take(&mut *lock(&s));
        let e = entries(scope, &cx(Method::GET), 200);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].purpose, "ETREAT");
        assert_eq!(e[0].action, "search-type");
        assert_eq!(
            e[0].detail,
            "visible=3; break-glass: cardiac arrest in bay 4"
        );
    }

    #[test]
    fn purpose_header_by_name_or_code_and_unknown_is_an_error() {
        let mut h = HeaderMap::new();
        assert_eq!(purpose_of(&h).ok(), Some("TREAT"));
        h.insert(PURPOSE_HEADER, "Research".parse().expect("value"));
        assert_eq!(purpose_of(&h).ok(), Some("HRESCH"));
        h.insert(PURPOSE_HEADER, "etreat".parse().expect("value"));
        assert_eq!(purpose_of(&h).ok(), Some("ETREAT"));
        h.insert(PURPOSE_HEADER, "curiosity".parse().expect("value"));
        assert_eq!(
            purpose_of(&h).map_err(|e| e.code()).err(),
            Some("invalid_purpose")
        );
        // The codes accepted are exactly those the FHIR export can display.
        for (_, code) in PURPOSE_NAMES {
            assert!(PURPOSES.iter().any(|(c, _)| *c == code), "{code}");
        }
    }

    #[test]
    fn the_audit_routes_mount_beside_the_nested_fhir_router() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = vigil_store::sqlite::SqliteStore::open(dir.path().join("hub.db")).expect("db");
        // Axum panics here on overlapping routes.
        let _ = crate::router(AppState::new(Arc::new(store), crate::HubConfig::default()));
    }

    #[test]
    fn forwarded_for_only_from_trusted_proxies() {
        let proxy: IpAddr = "10.0.0.1".parse().expect("ip");
        let mk = |peer: &str| {
            let mut r = Request::new(axum::body::Body::empty());
            r.headers_mut().insert(
                "x-forwarded-for",
                "203.0.113.9, 10.0.0.1".parse().expect("value"),
            );
            r.extensions_mut().insert(ConnectInfo(
                format!("{peer}:5000").parse::<SocketAddr>().expect("addr"),
            ));
            r
        };
        assert_eq!(source_of(&mk("10.0.0.1"), &[proxy]), "203.0.113.9");
        assert_eq!(source_of(&mk("192.0.2.7"), &[proxy]), "192.0.2.7");
        assert_eq!(source_of(&mk("10.0.0.1"), &[]), "10.0.0.1");
        assert_eq!(
            source_of(&Request::new(axum::body::Body::empty()), &[proxy]),
            "unknown"
        );
    }
}

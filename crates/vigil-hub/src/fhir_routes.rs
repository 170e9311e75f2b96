//! A read-only FHIR R4 REST surface under `/fhir/r4` (`application/fhir+json`).
//!
//! Resources come from `vigil_fhir`'s mappings; ids are its deterministic FHIR ids, and a
//! Patient may also be addressed by its Vigil id. Every error is an OperationOutcome.
//!
//! Access: the same API bearer token as `/api/v1` ([`User`]); patient data goes through
//! [`crate::access`] (a patient out of scope is 404, like an unknown one). Devices are listed
//! to any valid token.

use crate::AppState;
use crate::auth::User;
use crate::error::ApiError;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use vigil_fhir::{Bundle, BundleLink, Resource};
use vigil_fhir::{IssueType, Severity};
use vigil_model::{Metric, PatientId, Timestamp};
use vigil_store::{ReadingQuery, StoredReading};

const FHIR_JSON: &str = "application/fhir+json";
/// Default and largest page size of a search.
const DEFAULT_COUNT: usize = 50;
const MAX_COUNT: usize = 1000;
/// Most matches a search considers (paging is by offset over them).
const MAX_MATCHES: usize = 100_000;
/// Largest `max` of `$lastn`.
const MAX_LASTN: usize = 1000;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/", axum::routing::post(crate::fhir_inbound::transaction))
        .route("/metadata", get(metadata))
        .route("/Patient", get(search_patients))
        .route("/Patient/{id}", get(read_patient))
        .route("/Device", get(search_devices))
        .route("/Device/{id}", get(read_device))
        .route("/Observation", get(search_observations))
        .route("/Observation/$lastn", get(lastn))
        .fallback(|| async {
            FhirError::new(
                StatusCode::NOT_FOUND,
                IssueType::NotSupported,
                "no such FHIR interaction",
            )
        })
}

/// An error answered as an OperationOutcome.
#[derive(Debug)]
pub(crate) struct FhirError {
    status: StatusCode,
    code: IssueType,
    diagnostics: String,
}

impl FhirError {
    fn new(status: StatusCode, code: IssueType, diagnostics: impl Into<String>) -> Self {
        Self {
            status,
            code,
            diagnostics: diagnostics.into(),
        }
    }

    fn bad(diagnostics: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, IssueType::Invalid, diagnostics)
    }

    fn not_found(diagnostics: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, IssueType::NotFound, diagnostics)
    }
}

impl From<ApiError> for FhirError {
    fn from(e: ApiError) -> Self {
        let code = match &e {
            ApiError::Unauthorized => IssueType::Login,
            ApiError::Forbidden => IssueType::Forbidden,
            ApiError::NotFound(_) => IssueType::NotFound,
            ApiError::BadRequest { .. } => IssueType::Invalid,
            ApiError::Internal(_) => IssueType::Exception,
            _ => IssueType::Processing,
        };
        let diagnostics = match &e {
            ApiError::Internal(msg) => {
                tracing::error!(error = %msg, "internal error");
                "the hub could not complete the request; it has been logged".to_owned()
            }
            other => other.to_string(),
        };
        Self::new(e.status(), code, diagnostics)
    }
}

impl From<vigil_store::StoreError> for FhirError {
    fn from(e: vigil_store::StoreError) -> Self {
        ApiError::from(e).into()
    }
}

impl IntoResponse for FhirError {
    fn into_response(self) -> Response {
        let oo = vigil_fhir::operation_outcome(Severity::Error, self.code, &self.diagnostics);
        let mut resp = fhir(self.status, &Resource::OperationOutcome(oo));
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

fn fhir(status: StatusCode, body: &impl serde::Serialize) -> Response {
    match serde_json::to_string(body) {
        Ok(s) => (status, [(header::CONTENT_TYPE, FHIR_JSON)], s).into_response(),
        Err(e) => FhirError::from(ApiError::Internal(e.to_string())).into_response(),
    }
}

fn ok(r: Resource) -> Response {
    fhir(StatusCode::OK, &r)
}

/// The authenticated user, or an OperationOutcome.
fn user(u: Result<User, ApiError>) -> Result<User, FhirError> {
    u.map_err(FhirError::from)
}

type Params = Result<Query<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>;

fn params(q: Params) -> Result<Vec<(String, String)>, FhirError> {
    q.map(|Query(v)| v)
        .map_err(|e| FhirError::bad(format!("invalid query string: {}", e.body_text())))
}

/// Base URL of this FHIR endpoint as the client addressed it.
fn base(headers: &HeaderMap) -> String {
    match headers.get(header::HOST).and_then(|h| h.to_str().ok()) {
        Some(h) if h.bytes().all(|b| b.is_ascii_graphic()) => format!("http://{h}/fhir/r4"),
        _ => "/fhir/r4".to_owned(),
    }
}

fn pct(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn query_string(p: &[(String, String)]) -> String {
    p.iter()
        .map(|(k, v)| format!("{}={}", pct(k), pct(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn link(relation: &str, url: String) -> BundleLink {
    BundleLink {
        relation: relation.to_owned(),
        url,
    }
}

// ---------------------------------------------------------------------------------------------
// metadata
// ---------------------------------------------------------------------------------------------

async fn metadata(headers: HeaderMap) -> Response {
    let param =
        |name: &str, ty: &str, doc: &str| json!({"name": name, "type": ty, "documentation": doc});
    let body = json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-11-24",
        "kind": "instance",
        "software": {"name": "Vigil hub", "version": env!("CARGO_PKG_VERSION")},
        "implementation": {"description": "Vigil hub FHIR R4 read-only surface", "url": base(&headers)},
        "fhirVersion": "4.0.1",
        "format": [FHIR_JSON, "json"],
        "rest": [{
            "mode": "server",
            "security": {"description": "Bearer API token, as for /api/v1"},
            "resource": [
                {
                    "type": "Patient",
                    "interaction": [{"code": "read"}, {"code": "search-type"}],
                    "searchParam": [param("_count", "number", "page size"), param("_offset", "number", "opaque page cursor")],
                },
                {
                    "type": "Device",
                    "interaction": [{"code": "read"}, {"code": "search-type"}],
                    "searchParam": [param("_count", "number", "page size"), param("_offset", "number", "opaque page cursor")],
                },
                {
                    "type": "Observation",
                    "profile": vigil_fhir::VITAL_SIGNS_PROFILE,
                    "interaction": [{"code": "search-type"}],
                    "searchParam": [
                        param("patient", "reference", "required: Patient id (FHIR or Vigil)"),
                        param("subject", "reference", "Patient/<id>, alternative to patient"),
                        param("code", "token", "LOINC or MDC code, optionally system|code"),
                        param("date", "date", "effective time with prefix eq, lt, le, gt or ge; repeatable"),
                        param("_count", "number", "page size"),
                        param("_sort", "string", "date or -date"),
                        param("_offset", "number", "opaque page cursor"),
                    ],
                    "operation": [{"name": "lastn", "definition": "http://hl7.org/fhir/OperationDefinition/Observation-lastn"}],
                },
            ],
        }],
    });
    fhir(StatusCode::OK, &body)
}

// ---------------------------------------------------------------------------------------------
// Patient and Device
// ---------------------------------------------------------------------------------------------

/// Resolves a patient by its FHIR id or its Vigil id; `None` when unknown.
async fn find_patient(st: &AppState, id: &str) -> Result<Option<vigil_model::Patient>, FhirError> {
    if let Ok(pid) = PatientId::new(id)
        && let Some(p) = st.store.patient(&pid).await?
    {
        return Ok(Some(p));
    }
    Ok(st
        .store
        .patients()
        .await?
        .into_iter()
        .map(|s| s.patient)
        .find(|p| vigil_fhir::patient_id(&p.id) == id))
}

/// A patient the caller may read, or 404 (unknown and out of scope look the same).
async fn require_patient(
    st: &AppState,
    u: &User,
    id: &str,
) -> Result<vigil_model::Patient, FhirError> {
    let missing = || FhirError::not_found(format!("Patient/{id} is not known"));
    let p = find_patient(st, id).await?.ok_or_else(missing)?;
    crate::access::can_read_patient(st, u, &p.id)
        .await
        .map_err(|e| match e {
            ApiError::NotFound(_) => missing(),
            other => other.into(),
        })?;
    Ok(p)
}

async fn read_patient(
    State(st): State<AppState>,
    u: Result<User, ApiError>,
    Path(id): Path<String>,
) -> Result<Response, FhirError> {
    let u = user(u)?;
    let p = require_patient(&st, &u, &id).await?;
    Ok(ok(Resource::Patient(vigil_fhir::patient(&p))))
}

async fn read_device(
    State(st): State<AppState>,
    u: Result<User, ApiError>,
    Path(id): Path<String>,
) -> Result<Response, FhirError> {
    user(u)?;
    let d = st
        .store
        .devices()
        .await?
        .into_iter()
        .find(|d| vigil_fhir::device_id(&d.id) == id || d.id.as_str() == id)
        .ok_or_else(|| FhirError::not_found(format!("Device/{id} is not known")))?;
    Ok(ok(Resource::Device(vigil_fhir::device(&d))))
}

/// `_count` and `_offset` of a search, plus the parameters to repeat in page links.
struct Paging {
    count: usize,
    offset: usize,
}

fn parse_usize(name: &str, v: &str) -> Result<usize, FhirError> {
    v.trim()
        .parse::<usize>()
        .map_err(|_| FhirError::bad(format!("{name} must be a non-negative integer, got {v:?}")))
}

fn paging(p: &[(String, String)]) -> Result<Paging, FhirError> {
    let mut out = Paging {
        count: DEFAULT_COUNT,
        offset: 0,
    };
    for (k, v) in p {
        match k.as_str() {
            "_count" => {
                let c = parse_usize("_count", v)?;
                if c == 0 || c > MAX_COUNT {
                    return Err(FhirError::bad(format!(
                        "_count must be between 1 and {MAX_COUNT}"
                    )));
                }
                out.count = c;
            }
            "_offset" => out.offset = parse_usize("_offset", v)?,
            _ => {}
        }
    }
    Ok(out)
}

/// One page of `all` as a searchset with `self` and (when more remain) `next` links.
fn page(
    all: Vec<Resource>,
    pg: &Paging,
    headers: &HeaderMap,
    ty: &str,
    p: &[(String, String)],
) -> Response {
    let total = all.len();
    let keep: Vec<(String, String)> = p.iter().filter(|(k, _)| k != "_offset").cloned().collect();
    let url = |offset: usize| {
        let mut q = keep.clone();
        q.push(("_offset".to_owned(), offset.to_string()));
        format!("{}/{ty}?{}", base(headers), query_string(&q))
    };
    let mut links = vec![link("self", url(pg.offset))];
    let end = pg.offset.saturating_add(pg.count);
    if end < total {
        links.push(link("next", url(end)));
    }
    let entries = all.into_iter().skip(pg.offset).take(pg.count).collect();
    ok(Resource::Bundle(Bundle::searchset(
        entries,
        Some(total as u64),
        links,
    )))
}

fn reject_unknown(p: &[(String, String)], allowed: &[&str]) -> Result<(), FhirError> {
    match p.iter().find(|(k, _)| !allowed.contains(&k.as_str())) {
        Some((k, _)) => Err(FhirError::new(
            StatusCode::BAD_REQUEST,
            IssueType::NotSupported,
            format!("search parameter {k:?} is not supported"),
        )),
        None => Ok(()),
    }
}

async fn search_patients(
    State(st): State<AppState>,
    u: Result<User, ApiError>,
    headers: HeaderMap,
    q: Params,
) -> Result<Response, FhirError> {
    let u = user(u)?;
    let p = params(q)?;
    reject_unknown(&p, &["_count", "_offset"])?;
    let pg = paging(&p)?;
    let visible = crate::access::visible_patients(&st, &u).await?;
    let all = st
        .store
        .patients()
        .await?
        .iter()
        .filter(|s| visible.contains(&s.patient.id))
        .map(|s| Resource::Patient(vigil_fhir::patient(&s.patient)))
        .collect();
    Ok(page(all, &pg, &headers, "Patient", &p))
}

async fn search_devices(
    State(st): State<AppState>,
    u: Result<User, ApiError>,
    headers: HeaderMap,
    q: Params,
) -> Result<Response, FhirError> {
    user(u)?;
    let p = params(q)?;
    reject_unknown(&p, &["_count", "_offset"])?;
    let pg = paging(&p)?;
    let all = st
        .store
        .devices()
        .await?
        .iter()
        .map(|d| Resource::Device(vigil_fhir::device(d)))
        .collect();
    Ok(page(all, &pg, &headers, "Device", &p))
}

// ---------------------------------------------------------------------------------------------
// Observation
// ---------------------------------------------------------------------------------------------

/// The patient of `patient=<id>` or `subject=Patient/<id>` (exactly one).
fn patient_param(p: &[(String, String)]) -> Result<String, FhirError> {
    let mut found: Option<String> = None;
    for (k, v) in p {
        let id = match k.as_str() {
            "patient" => v.strip_prefix("Patient/").unwrap_or(v),
            "subject" | "subject:Patient" => v.strip_prefix("Patient/").unwrap_or(v),
            _ => continue,
        };
        if id.is_empty() {
            return Err(FhirError::bad(format!("{k} must name a patient")));
        }
        if found.replace(id.to_owned()).is_some() {
            return Err(FhirError::bad(
                "give one patient (patient or subject), once",
            ));
        }
    }
    found.ok_or_else(|| {
        FhirError::new(
            StatusCode::BAD_REQUEST,
            IssueType::Required,
            "Observation search needs patient=<id> or subject=Patient/<id>",
        )
    })
}

/// `code=[system|]code`: `Ok(None)` without the parameter, `Ok(Some(None))` for a code Vigil
/// does not know (matches nothing).
fn code_param(p: &[(String, String)]) -> Result<Option<Option<Metric>>, FhirError> {
    let mut out = None;
    for (k, v) in p.iter().filter(|(k, _)| k == "code") {
        if out.is_some() {
            return Err(FhirError::bad(format!("{k} may be given once")));
        }
        let (system, code) = match v.split_once('|') {
            Some((s, c)) => (Some(s), c),
            None => (None, v.as_str()),
        };
        if code.is_empty() || code.contains(',') {
            return Err(FhirError::bad(format!(
                "code must be one [system|]code, got {v:?}"
            )));
        }
        let known_system = matches!(
            system,
            None | Some("") | Some(vigil_fhir::system::LOINC) | Some(vigil_fhir::system::MDC)
        );
        out = Some(if known_system {
            code.parse::<Metric>().ok()
        } else {
            None
        });
    }
    Ok(out)
}

/// The inclusive device-time range of the `date` parameters (millisecond precision).
fn date_range(p: &[(String, String)]) -> Result<(Option<Timestamp>, Option<Timestamp>), FhirError> {
    let mut lows = Vec::new();
    let mut highs = Vec::new();
    for (_, v) in p.iter().filter(|(k, _)| k == "date") {
        let (prefix, rest) = match v.get(..2) {
            Some(pre) if pre.bytes().all(|b| b.is_ascii_lowercase()) => (pre, &v[2..]),
            _ => ("eq", v.as_str()),
        };
        let t = Timestamp::parse(rest)
            .map_err(|_| {
                FhirError::bad(format!(
                    "date must be a prefix (eq, lt, le, gt, ge) and an RFC 3339 time, got {v:?}"
                ))
            })?
            .millis();
        match prefix {
            "eq" => {
                lows.push(t);
                highs.push(t);
            }
            "ge" => lows.push(t),
            "gt" => lows.push(t.saturating_add(1)),
            "le" => highs.push(t),
            "lt" => highs.push(t.saturating_sub(1)),
            other => {
                return Err(FhirError::bad(format!(
                    "date prefix {other:?} is not supported (eq, lt, le, gt, ge)"
                )));
            }
        }
    }
    let from = lows.into_iter().max().map(Timestamp);
    let to = highs.into_iter().min().map(Timestamp);
    Ok((from, to))
}

fn sort_param(p: &[(String, String)]) -> Result<bool, FhirError> {
    let mut descending = false;
    for (_, v) in p.iter().filter(|(k, _)| k == "_sort") {
        descending = match v.as_str() {
            "date" => false,
            "-date" => true,
            other => {
                return Err(FhirError::bad(format!(
                    "_sort must be date or -date, got {other:?}"
                )));
            }
        };
    }
    Ok(descending)
}

fn observations(pid: &PatientId, rows: &[StoredReading]) -> Vec<Resource> {
    rows.iter()
        .map(|r| Resource::Observation(vigil_fhir::observation(pid, r)))
        .collect()
}

async fn search_observations(
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
            "subject",
            "subject:Patient",
            "code",
            "date",
            "_count",
            "_offset",
            "_sort",
        ],
    )?;
    let pg = paging(&p)?;
    let (from, to) = date_range(&p)?;
    let descending = sort_param(&p)?;
    let code = code_param(&p)?;
    let patient = require_patient(&st, &u, &patient_param(&p)?).await?;
    let empty_range = matches!((from, to), (Some(f), Some(t)) if f > t);
    let rows = match code {
        Some(None) => Vec::new(),
        _ if empty_range => Vec::new(),
        metric => {
            st.store
                .readings(ReadingQuery {
                    patient: patient.id.clone(),
                    metric: metric.flatten(),
                    from,
                    to,
                    limit: MAX_MATCHES,
                    descending,
                })
                .await?
        }
    };
    Ok(page(
        observations(&patient.id, &rows),
        &pg,
        &headers,
        "Observation",
        &p,
    ))
}

async fn lastn(
    State(st): State<AppState>,
    u: Result<User, ApiError>,
    headers: HeaderMap,
    q: Params,
) -> Result<Response, FhirError> {
    let u = user(u)?;
    let p = params(q)?;
    reject_unknown(
        &p,
        &["patient", "subject", "subject:Patient", "code", "max"],
    )?;
    let max = match p.iter().rev().find(|(k, _)| k == "max") {
        Some((_, v)) => parse_usize("max", v)?,
        None => 1,
    };
    if max == 0 || max > MAX_LASTN {
        return Err(FhirError::bad(format!(
            "max must be between 1 and {MAX_LASTN}"
        )));
    }
    let code = code_param(&p)?;
    let patient = require_patient(&st, &u, &patient_param(&p)?).await?;
    let mut latest = st.store.latest(&patient.id).await?;
    match code {
        Some(Some(m)) => latest.retain(|r| r.metric == m),
        Some(None) => latest.clear(),
        None => {}
    }
    latest.sort_by_key(|r| r.metric.loinc());
    let rows = if max == 1 {
        latest
    } else {
        let mut rows = Vec::new();
        for r in &latest {
            rows.extend(
                st.store
                    .readings(ReadingQuery {
                        patient: patient.id.clone(),
                        metric: Some(r.metric),
                        from: None,
                        to: None,
                        limit: max,
                        descending: true,
                    })
                    .await?,
            );
        }
        rows
    };
    let total = rows.len() as u64;
    let url = format!("{}/Observation/$lastn?{}", base(&headers), query_string(&p));
    Ok(ok(Resource::Bundle(Bundle::searchset(
        observations(&patient.id, &rows),
        Some(total),
        vec![link("self", url)],
    ))))
}

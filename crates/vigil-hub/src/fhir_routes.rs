//! A read-only FHIR R4 REST surface under `/fhir/r4` (`application/fhir+json`).
//!
//! Resources come from `vigil_fhir`'s mappings; ids are its deterministic FHIR ids, and a
//! Patient may also be addressed by its Vigil id. Every error is an OperationOutcome.
//!
//! | resource | from | module |
//! |---|---|---|
//! | Patient, Device | the registry (a Device carries the location its latest sighting names) | here |
//! | Observation | stored readings | [`observation`] |
//! | RiskAssessment | NEWS2 computed from stored readings | [`resources`] |
//! | Flag | stored alerts | [`resources`] |
//! | MedicationAdministration, SupplyRequest, Location | stored events | [`resources`] |
//! | `$everything`, `$export` | all of the above | [`resources`], [`export`] |
//!
//! Access: the same API bearer token as `/api/v1` ([`User`]); patient data goes through
//! [`crate::access`] (a patient out of scope is 404, like an unknown one, and is left out of
//! searches). Devices are listed to any valid token.

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
use vigil_model::PatientId;

mod export;
mod observation;
mod resources;

const FHIR_JSON: &str = "application/fhir+json";
/// Default and largest page size of a search.
const DEFAULT_COUNT: usize = 50;
const MAX_COUNT: usize = 1000;
/// Most matches a search of a derived or in-memory list considers.
const MAX_MATCHES: usize = 100_000;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/", axum::routing::post(crate::fhir_inbound::transaction))
        .route("/metadata", get(metadata))
        .route("/Patient", get(search_patients))
        .route("/Patient/{id}", get(read_patient))
        .route("/Device", get(search_devices))
        .route("/Device/{id}", get(read_device))
        .merge(observation::routes())
        .merge(resources::routes())
        .merge(export::routes())
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
    pub(crate) fn new(status: StatusCode, code: IssueType, diagnostics: impl Into<String>) -> Self {
        Self {
            status,
            code,
            diagnostics: diagnostics.into(),
        }
    }

    pub(crate) fn bad(diagnostics: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, IssueType::Invalid, diagnostics)
    }

    pub(crate) fn not_found(diagnostics: impl Into<String>) -> Self {
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
/// The FHIR base URL as the client reached it: its Host, and https when the request came
/// over TLS (or through a TLS-terminating proxy that says so in `X-Forwarded-Proto`).
pub(crate) fn base(headers: &HeaderMap) -> String {
    let scheme = match headers
        .get("x-forwarded-proto")
        .and_then(|h| h.to_str().ok())
    {
        Some(p) if p.eq_ignore_ascii_case("https") => "https",
        _ => "http",
    };
    match headers.get(header::HOST).and_then(|h| h.to_str().ok()) {
        Some(h) if h.bytes().all(|b| b.is_ascii_graphic()) => format!("{scheme}://{h}/fhir/r4"),
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
    let paging = || {
        vec![
            param("_count", "number", "page size (1-1000, default 50)"),
            param(
                "_offset",
                "number",
                "opaque page position (from page links)",
            ),
            param("_summary", "token", "count: the total only"),
        ]
    };
    let patient_params = |required: bool| {
        let doc = if required {
            "required: Patient id (FHIR or Vigil), with or without Patient/"
        } else {
            "Patient id (FHIR or Vigil), with or without Patient/"
        };
        vec![
            param("patient", "reference", doc),
            param("subject", "reference", "alias of patient"),
        ]
    };
    let with = |mut a: Vec<serde_json::Value>, b: Vec<serde_json::Value>| {
        a.extend(b);
        a
    };
    let read_search = || json!([{"code": "read"}, {"code": "search-type"}]);
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
            "security": {"description": "Bearer API token, as for /api/v1; a clinician sees only the patients of their care teams"},
            "resource": [
                {
                    "type": "Patient",
                    "interaction": read_search(),
                    "searchParam": paging(),
                    "operation": [
                        {"name": "everything", "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything"},
                        {"name": "export", "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/patient-export"},
                    ],
                },
                {
                    "type": "Device",
                    "interaction": read_search(),
                    "searchParam": paging(),
                },
                {
                    "type": "Observation",
                    "profile": vigil_fhir::VITAL_SIGNS_PROFILE,
                    "interaction": read_search(),
                    "searchParam": with(with(patient_params(true), vec![
                        param("code", "token", "LOINC or MDC code, optionally system|code"),
                        param("category", "token", "vital-signs, optionally system|code"),
                        param("date", "date", "effective (device) time with prefix eq, lt, le, gt or ge; repeatable"),
                        param("_lastUpdated", "date", "hub receive time with prefix eq, lt, le, gt or ge; repeatable"),
                        param("_sort", "string", "date or -date"),
                    ]), paging()),
                    "operation": [{"name": "lastn", "definition": "http://hl7.org/fhir/OperationDefinition/Observation-lastn"}],
                },
                {
                    "type": "RiskAssessment",
                    "interaction": read_search(),
                    "searchParam": with(with(patient_params(true), vec![
                        param("date", "date", "occurrence time with prefix eq, lt, le, gt or ge; default the last 24 h of data"),
                    ]), paging()),
                },
                {
                    "type": "Flag",
                    "interaction": read_search(),
                    "searchParam": with(with(patient_params(false), vec![
                        param("status", "token", "active or inactive"),
                    ]), paging()),
                },
                {
                    "type": "MedicationAdministration",
                    "interaction": read_search(),
                    "searchParam": with(patient_params(false), paging()),
                },
                {
                    "type": "SupplyRequest",
                    "interaction": read_search(),
                    "searchParam": with(patient_params(false), paging()),
                },
                {
                    "type": "Location",
                    "interaction": read_search(),
                    "searchParam": with(vec![param("name", "string", "exact location name")], paging()),
                },
            ],
            "interaction": [
                {"code": "transaction", "documentation": "POST a transaction Bundle of conditional creates and updates (integration and admin tokens)"},
            ],
            "operation": [
                {"name": "export", "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export"},
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
    let places = resources::device_locations(&st).await?;
    Ok(ok(Resource::Device(device_at(&d, &places))))
}

/// A device with the location of its latest sighting, when it is tracked equipment.
fn device_at(
    d: &vigil_model::Device,
    places: &std::collections::HashMap<String, String>,
) -> vigil_fhir::Device {
    let mut out = vigil_fhir::device(d);
    out.location = places
        .get(d.id.as_str())
        .map(|name| vigil_fhir::Reference::to("Location", &vigil_fhir::location_id(name)));
    out
}

/// `_count`, `_offset` and `_summary` of a search.
struct Paging {
    count: usize,
    offset: usize,
    /// `_summary=count`: the total only, no entries.
    summary_count: bool,
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
        summary_count: false,
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
            "_summary" => {
                out.summary_count = match v.as_str() {
                    "count" => true,
                    "false" => false,
                    other => {
                        return Err(FhirError::bad(format!(
                            "_summary must be count or false, got {other:?}"
                        )));
                    }
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

/// The page links of a search at `offset`: `self`, `previous` when not on the first page and
/// `next` (with `next_extra`, e.g. a cursor) when `more`.
fn page_links(
    headers: &HeaderMap,
    path: &str,
    p: &[(String, String)],
    pg: &Paging,
    more: bool,
    next_extra: &[(String, String)],
) -> Vec<BundleLink> {
    let keep: Vec<(String, String)> = p
        .iter()
        .filter(|(k, _)| k != "_offset" && k != "_cursor")
        .cloned()
        .collect();
    let url = |offset: usize, extra: &[(String, String)]| {
        let mut q = keep.clone();
        q.push(("_offset".to_owned(), offset.to_string()));
        q.extend_from_slice(extra);
        format!("{}/{path}?{}", base(headers), query_string(&q))
    };
    let mut links = vec![link("self", url(pg.offset, &[]))];
    if pg.offset > 0 {
        links.push(link(
            "previous",
            url(pg.offset.saturating_sub(pg.count), &[]),
        ));
    }
    if more {
        links.push(link(
            "next",
            url(pg.offset.saturating_add(pg.count), next_extra),
        ));
    }
    links
}

/// A searchset Bundle with `_summary=count` honoured (the total and no entries).
fn searchset(
    entries: Vec<Resource>,
    total: Option<usize>,
    links: Vec<BundleLink>,
    pg: &Paging,
) -> Response {
    let entries = if pg.summary_count {
        Vec::new()
    } else {
        entries
    };
    ok(Resource::Bundle(Bundle::searchset(
        entries,
        total.map(|t| t as u64),
        links,
    )))
}

/// One page of `all` as a searchset with `self`, `previous` and `next` links.
fn page(
    all: Vec<Resource>,
    pg: &Paging,
    headers: &HeaderMap,
    path: &str,
    p: &[(String, String)],
) -> Response {
    let total = all.len();
    let more = !pg.summary_count && pg.offset.saturating_add(pg.count) < total;
    let links = if pg.summary_count {
        vec![link(
            "self",
            format!("{}/{path}?{}", base(headers), query_string(p)),
        )]
    } else {
        page_links(headers, path, p, pg, more, &[])
    };
    let entries = all.into_iter().skip(pg.offset).take(pg.count).collect();
    searchset(entries, Some(total), links, pg)
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
    reject_unknown(&p, &["_count", "_offset", "_summary"])?;
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
    reject_unknown(&p, &["_count", "_offset", "_summary"])?;
    let pg = paging(&p)?;
    let places = resources::device_locations(&st).await?;
    let all = st
        .store
        .devices()
        .await?
        .iter()
        .map(|d| Resource::Device(device_at(d, &places)))
        .collect();
    Ok(page(all, &pg, &headers, "Device", &p))
}

/// Stored readings of `pid` as Observations.
fn observations_of(pid: &PatientId, rows: &[vigil_store::StoredReading]) -> Vec<Resource> {
    rows.iter()
        .map(|r| Resource::Observation(vigil_fhir::observation(pid, r)))
        .collect()
}

//! FHIR Bulk Data export (`$export`), the asynchronous request pattern kept simple.
//!
//! `GET /$export` (admin and integration only) or `GET /Patient/$export` (the patients the
//! caller may see) with `Prefer: respond-async` answers 202 with a `Content-Location` status
//! URL and starts a job that writes one NDJSON file per resource type under the hub's export
//! directory, a resource at a time (Observations a page of readings at a time), never the
//! whole export in memory. The status URL answers 202 (with `X-Progress`) while the job runs
//! and 200 with the output manifest when it is done; `DELETE` removes the job and its files.
//! Status and files are served only to the user who started the job, and files are streamed.
//!
//! `_type` limits the resource types; `_since` keeps resources the hub received or changed
//! at or after the instant (Observations and events by hub receive time, Flags by their
//! latest change); Patients and Devices carry no such time and are always included.

use super::observation::{Filter, page_of};
use super::resources::{locations, medication, supply};
use super::{FhirError, Params, base, params, reject_unknown, user};
use crate::AppState;
use crate::auth::User;
use crate::error::ApiError;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vigil_fhir::{IssueType, Resource};
use vigil_model::{PatientId, Timestamp};
use vigil_store::{AlertFilter, StoredEvent};

/// Resource types an export can hold, in the order they are written.
const TYPES: [&str; 7] = [
    "Patient",
    "Device",
    "Observation",
    "Flag",
    "MedicationAdministration",
    "SupplyRequest",
    "Location",
];
const NDJSON: &str = "application/fhir+ndjson";
/// Readings per step of an Observation export.
const STEP: usize = 10_000;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/$export", get(system_export))
        .route("/Patient/$export", get(patient_export))
        .route("/$export-status/{job}", get(status).delete(cancel))
        .route("/$export-file/{job}/{file}", get(file))
}

#[derive(Debug, Clone)]
struct Output {
    ty: &'static str,
    count: u64,
}

#[derive(Debug, Clone)]
enum Phase {
    Running { written: u64 },
    Done(Vec<Output>),
    Failed(String),
}

#[derive(Debug, Clone)]
struct Job {
    owner: (String, String),
    dir: PathBuf,
    base: String,
    request: String,
    transaction_time: Timestamp,
    state: Phase,
}

type Jobs = Mutex<HashMap<String, Job>>;

fn jobs() -> &'static Jobs {
    static JOBS: OnceLock<Jobs> = OnceLock::new();
    JOBS.get_or_init(Default::default)
}

fn with_jobs<T>(f: impl FnOnce(&mut HashMap<String, Job>) -> T) -> T {
    let mut g = jobs()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    f(&mut g)
}

fn export_root(st: &AppState) -> PathBuf {
    st.config
        .export_dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join("vigil-fhir-export"))
}

/// What to export: the types and `_since`.
struct Request {
    types: Vec<&'static str>,
    since: Option<Timestamp>,
}

fn request_of(p: &[(String, String)]) -> Result<Request, FhirError> {
    reject_unknown(p, &["_type", "_since", "_outputFormat"])?;
    let mut types: Vec<&'static str> = Vec::new();
    let mut since = None;
    for (k, v) in p {
        match k.as_str() {
            "_type" => {
                for t in v.split(',').map(str::trim) {
                    let known = TYPES.iter().find(|x| **x == t).ok_or_else(|| {
                        FhirError::new(
                            StatusCode::BAD_REQUEST,
                            IssueType::NotSupported,
                            format!(
                                "_type {t:?} is not exported (supported: {})",
                                TYPES.join(", ")
                            ),
                        )
                    })?;
                    if !types.contains(known) {
                        types.push(known);
                    }
                }
            }
            "_since" => {
                since = Some(Timestamp::parse(v).map_err(|_| {
                    FhirError::bad(format!("_since must be a FHIR instant, got {v:?}"))
                })?);
            }
            "_outputFormat"
                if !matches!(
                    v.as_str(),
                    "application/fhir+ndjson" | "application/ndjson" | "ndjson"
                ) =>
            {
                return Err(FhirError::bad(format!(
                    "_outputFormat {v:?} is not supported (application/fhir+ndjson)"
                )));
            }
            _ => {}
        }
    }
    if types.is_empty() {
        types = TYPES.to_vec();
    } else {
        types.sort_by_key(|t| TYPES.iter().position(|x| x == t));
    }
    Ok(Request { types, since })
}

fn require_async(headers: &HeaderMap) -> Result<(), FhirError> {
    let ok = headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|p| p.trim() == "respond-async"));
    if ok {
        Ok(())
    } else {
        Err(FhirError::bad(
            "$export is asynchronous: send the header Prefer: respond-async",
        ))
    }
}

async fn system_export(
    State(st): State<AppState>,
    u: Result<User, ApiError>,
    headers: HeaderMap,
    q: Params,
) -> Result<Response, FhirError> {
    let u = user(u)?;
    crate::access::require_operator(&u)?;
    let p = params(q)?;
    let req = request_of(&p)?;
    require_async(&headers)?;
    let patients = super::resources::patients_in_scope(&st, &u, None).await?;
    start(st, u, headers, "$export", &p, req, patients).await
}

async fn patient_export(
    State(st): State<AppState>,
    u: Result<User, ApiError>,
    headers: HeaderMap,
    q: Params,
) -> Result<Response, FhirError> {
    let u = user(u)?;
    let p = params(q)?;
    let req = request_of(&p)?;
    require_async(&headers)?;
    let patients = super::resources::patients_in_scope(&st, &u, None).await?;
    start(st, u, headers, "Patient/$export", &p, req, patients).await
}

async fn start(
    st: AppState,
    u: User,
    headers: HeaderMap,
    path: &str,
    p: &[(String, String)],
    req: Request,
    patients: Vec<PatientId>,
) -> Result<Response, FhirError> {
    let id = hex::encode(rand::random::<[u8; 16]>());
    let dir = export_root(&st).join(&id);
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| ApiError::Internal(format!("export directory: {e}")))?;
    let base = base(&headers);
    let job = Job {
        owner: (u.name.clone(), u.role.clone()),
        dir: dir.clone(),
        base: base.clone(),
        request: format!("{base}/{path}?{}", super::query_string(p)),
        transaction_time: Timestamp::now(),
        state: Phase::Running { written: 0 },
    };
    with_jobs(|j| j.insert(id.clone(), job));
    tracing::info!(job = %id, patients = patients.len(), "FHIR export started");
    let job_id = id.clone();
    tokio::spawn(async move {
        let state = match write_all(&st, &job_id, &dir, &req, &patients).await {
            Ok(out) => Phase::Done(out),
            Err(e) => {
                tracing::warn!(job = %job_id, error = %e, "FHIR export failed");
                Phase::Failed(e.to_string())
            }
        };
        with_jobs(|j| {
            if let Some(job) = j.get_mut(&job_id) {
                job.state = state;
            }
        });
    });
    let status_url = format!("{base}/$export-status/{id}");
    let mut resp = StatusCode::ACCEPTED.into_response();
    if let Ok(v) = HeaderValue::from_str(&status_url) {
        resp.headers_mut().insert(header::CONTENT_LOCATION, v);
    }
    Ok(resp)
}

/// Errors of an export job.
#[derive(Debug, thiserror::Error)]
enum ExportError {
    #[error("cannot write the export: {0}")]
    Io(#[from] std::io::Error),
    #[error("cannot read the store: {0}")]
    Store(String),
    #[error("cannot serialize a resource: {0}")]
    Json(#[from] serde_json::Error),
}

impl From<FhirError> for ExportError {
    fn from(e: FhirError) -> Self {
        Self::Store(e.diagnostics)
    }
}

impl From<vigil_store::StoreError> for ExportError {
    fn from(e: vigil_store::StoreError) -> Self {
        Self::Store(e.to_string())
    }
}

/// One NDJSON file being written.
struct Sink {
    w: tokio::io::BufWriter<tokio::fs::File>,
    count: u64,
}

impl Sink {
    async fn create(dir: &std::path::Path, ty: &str) -> Result<Self, ExportError> {
        let f = tokio::fs::File::create(dir.join(format!("{ty}.ndjson"))).await?;
        Ok(Self {
            w: tokio::io::BufWriter::with_capacity(1 << 16, f),
            count: 0,
        })
    }

    async fn put(&mut self, r: &Resource) -> Result<(), ExportError> {
        let mut line = serde_json::to_vec(r)?;
        line.push(b'\n');
        self.w.write_all(&line).await?;
        self.count += 1;
        Ok(())
    }

    async fn finish(mut self) -> Result<u64, ExportError> {
        self.w.flush().await?;
        self.w.get_mut().sync_all().await?;
        Ok(self.count)
    }
}

fn progress(job: &str, n: u64) {
    with_jobs(|j| {
        if let Some(Phase::Running { written }) = j.get_mut(job).map(|x| &mut x.state) {
            *written = n;
        }
    });
}

async fn write_all(
    st: &AppState,
    job: &str,
    dir: &std::path::Path,
    req: &Request,
    patients: &[PatientId],
) -> Result<Vec<Output>, ExportError> {
    let since = req.since;
    let mut events: Vec<StoredEvent> = Vec::new();
    if req.types.iter().any(|t| {
        matches!(
            *t,
            "MedicationAdministration" | "SupplyRequest" | "Location"
        )
    }) {
        for p in patients {
            events.extend(
                st.store
                    .events(p, None, None, super::MAX_MATCHES)
                    .await?
                    .into_iter()
                    .filter(|e| since.is_none_or(|s| e.hub_received >= s)),
            );
        }
    }
    let mut out = Vec::new();
    let mut written = 0u64;
    for &ty in &req.types {
        let mut sink = Sink::create(dir, ty).await?;
        match ty {
            "Patient" => {
                for p in patients {
                    if let Some(pat) = st.store.patient(p).await? {
                        sink.put(&Resource::Patient(vigil_fhir::patient(&pat)))
                            .await?;
                    }
                }
            }
            "Device" => {
                let assigned: std::collections::BTreeSet<String> = st
                    .store
                    .assignments(None)
                    .await?
                    .into_iter()
                    .filter(|a| patients.contains(&a.patient))
                    .map(|a| a.device.as_str().to_owned())
                    .collect();
                let places = super::resources::device_locations(st).await?;
                for d in st.store.devices().await? {
                    if assigned.contains(d.id.as_str()) {
                        sink.put(&Resource::Device(super::device_at(&d, &places)))
                            .await?;
                    }
                }
            }
            "Observation" => {
                for p in patients {
                    let mut f = Filter::all(p.clone());
                    f.updated_from = since;
                    let mut cursor: Option<String> = None;
                    loop {
                        let (w, next) = page_of(st, &f, cursor.as_deref(), 0, STEP).await?;
                        for r in &w.rows {
                            sink.put(&Resource::Observation(vigil_fhir::observation(p, r)))
                                .await?;
                        }
                        progress(job, written + sink.count);
                        match next {
                            Some(c) => cursor = Some(c),
                            None => break,
                        }
                    }
                }
            }
            "Flag" => {
                for p in patients {
                    let alerts = st
                        .store
                        .alerts(AlertFilter {
                            patient: Some(p.clone()),
                            limit: super::MAX_MATCHES,
                            ..AlertFilter::default()
                        })
                        .await?;
                    for a in alerts {
                        let changed = [
                            Some(a.created),
                            a.acknowledged_at,
                            a.resolved_at,
                            a.escalated_at,
                        ]
                        .into_iter()
                        .flatten()
                        .max()
                        .unwrap_or(a.created);
                        if since.is_none_or(|s| changed >= s) {
                            sink.put(&Resource::Flag(vigil_fhir::flag(&a))).await?;
                        }
                    }
                }
            }
            "MedicationAdministration" => {
                for r in events.iter().filter_map(medication) {
                    sink.put(&r).await?;
                }
            }
            "SupplyRequest" => {
                for r in events.iter().filter_map(|e| supply(st, e)) {
                    sink.put(&r).await?;
                }
            }
            _ => {
                for r in locations(&events) {
                    sink.put(&r).await?;
                }
            }
        }
        let count = sink.finish().await?;
        written += count;
        progress(job, written);
        out.push(Output { ty, count });
    }
    Ok(out)
}

/// The job `id` if `u` started it (otherwise it does not exist for them).
fn owned(id: &str, u: &User) -> Result<Job, FhirError> {
    with_jobs(|j| j.get(id).cloned())
        .filter(|j| j.owner == (u.name.clone(), u.role.clone()))
        .ok_or_else(|| FhirError::not_found(format!("export {id} is not known")))
}

async fn status(u: Result<User, ApiError>, Path(id): Path<String>) -> Result<Response, FhirError> {
    let u = user(u)?;
    let job = owned(&id, &u)?;
    match job.state {
        Phase::Running { written } => {
            let mut resp = StatusCode::ACCEPTED.into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("{written} resources written")) {
                resp.headers_mut().insert("x-progress", v);
            }
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            Ok(resp)
        }
        Phase::Failed(msg) => Err(FhirError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            IssueType::Exception,
            format!("the export failed: {msg}"),
        )),
        Phase::Done(outputs) => {
            let output: Vec<serde_json::Value> = outputs
                .iter()
                .filter(|o| o.count > 0)
                .map(|o| {
                    json!({
                        "type": o.ty,
                        "url": format!("{}/$export-file/{id}/{}.ndjson", job.base, o.ty),
                        "count": o.count,
                    })
                })
                .collect();
            let body = json!({
                "transactionTime": job.transaction_time.to_rfc3339(),
                "request": job.request,
                "requiresAccessToken": true,
                "output": output,
                "error": [],
            });
            Ok((
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                body.to_string(),
            )
                .into_response())
        }
    }
}

async fn cancel(u: Result<User, ApiError>, Path(id): Path<String>) -> Result<Response, FhirError> {
    let u = user(u)?;
    let job = owned(&id, &u)?;
    with_jobs(|j| j.remove(&id));
    if let Err(e) = tokio::fs::remove_dir_all(&job.dir).await {
        tracing::warn!(job = %id, error = %e, "cannot remove export files");
    }
    Ok(StatusCode::ACCEPTED.into_response())
}

async fn file(
    u: Result<User, ApiError>,
    Path((id, name)): Path<(String, String)>,
) -> Result<Response, FhirError> {
    let u = user(u)?;
    let job = owned(&id, &u)?;
    let missing = || FhirError::not_found(format!("export file {name} is not known"));
    let ty = name.strip_suffix(".ndjson").ok_or_else(missing)?;
    if !TYPES.contains(&ty) || !matches!(job.state, Phase::Done(_)) {
        return Err(missing());
    }
    let f = tokio::fs::File::open(job.dir.join(&name))
        .await
        .map_err(|_| missing())?;
    let stream = futures_util::stream::unfold(f, |mut f| async move {
        let mut buf = vec![0u8; 1 << 16];
        match f.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(bytes::Bytes::from(buf)), f))
            }
            Err(e) => Some((Err(e), f)),
        }
    });
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, NDJSON)],
        Body::from_stream(stream),
    )
        .into_response())
}

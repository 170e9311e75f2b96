//! HTTP routes.

use crate::access;
use crate::auth::{self, Gateway, User};
use crate::{ApiError, AppState, HubMetrics};
use axum::extract::{FromRequest, FromRequestParts, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::sync::atomic::Ordering;
use vigil_model::{Assignment, Device, DeviceId, Metric, Patient, PatientId, Timestamp};
use vigil_store::{IncomingRecord, IngestBatch, ReadingQuery, StoredReading};
use vigil_sync::{Ack, Batch};

/// Largest JSON body accepted on the API.
const MAX_JSON: usize = 1 << 20;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/api/v1/ingest", post(ingest))
        .route("/api/v1/patients", get(list_patients).post(create_patient))
        .route("/api/v1/patients/{id}", get(get_patient))
        .route("/api/v1/patients/{id}/readings", get(patient_readings))
        .route("/api/v1/patients/{id}/events", get(patient_events))
        .route("/api/v1/devices", get(list_devices).post(create_device))
        .route(
            "/api/v1/assignments",
            get(list_assignments).post(create_assignment),
        )
        .route("/api/v1/quarantine", get(list_quarantine))
        .route("/api/v1/quarantine/reprocess", post(reprocess))
        .route("/api/v1/gateways", get(list_gateways).post(create_gateway))
        .route("/api/v1/gateways/{id}", delete(revoke_gateway))
        .route("/api/v1/stats", get(stats))
        .route("/api/v1/openapi.yaml", get(openapi))
        .merge(crate::alert_routes::routes())
        .merge(crate::privacy_routes::routes())
        .merge(crate::users::routes())
        .merge(crate::ehr_push::routes())
        .merge(crate::audit::routes())
        .nest("/fhir/r4", crate::fhir_routes::router())
        .fallback(|| async { ApiError::NotFound("route".into()) })
        .method_not_allowed_fallback(|| async {
            ApiError::bad("method_not_allowed", "method not allowed on this route")
        })
        .layer(axum::extract::DefaultBodyLimit::max(
            vigil_sync::MAX_COMPRESSED,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::audit::middleware,
        ))
        .with_state(state)
}

/// JSON body extractor whose rejections are problem documents.
pub(crate) struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let len = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if len.is_some_and(|l| l > MAX_JSON) {
            return Err(ApiError::PayloadTooLarge { limit: MAX_JSON });
        }
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Self(v)),
            Err(rej) if rej.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Err(ApiError::PayloadTooLarge { limit: MAX_JSON })
            }
            Err(rej) if rej.status() == StatusCode::UNSUPPORTED_MEDIA_TYPE => {
                Err(ApiError::UnsupportedMediaType {
                    expected: "application/json",
                })
            }
            Err(rej) => Err(ApiError::bad("invalid_json", rej.body_text())),
        }
    }
}

/// The `status` query value of a list route: `default` when absent, otherwise one of
/// `allowed` (a 400 `invalid_status` problem naming them when it is not).
pub(crate) fn status_param<'a>(
    value: Option<&'a str>,
    allowed: &[&'static str],
    default: &'static str,
) -> Result<&'a str, ApiError> {
    match value {
        None => Ok(default),
        Some(s) if allowed.contains(&s) => Ok(s),
        Some(s) => Err(ApiError::bad(
            "invalid_status",
            format!("status must be one of {}, got {s:?}", allowed.join(", ")),
        )),
    }
}

/// The `limit` query value of a list route: 100 when absent, kept within 1..=10,000.
pub(crate) fn list_limit(value: Option<usize>) -> usize {
    value.unwrap_or(100).clamp(1, 10_000)
}

/// Query extractor whose rejections are problem documents.
pub(crate) struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;
    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Self(q.0))
            .map_err(|rej| ApiError::bad("invalid_query", rej.body_text()))
    }
}

pub(crate) fn patient_id(s: &str) -> Result<PatientId, ApiError> {
    PatientId::new(s).map_err(|e| ApiError::bad("invalid_id", e.to_string()))
}

pub(crate) fn parse_time(name: &str, s: Option<&str>) -> Result<Option<Timestamp>, ApiError> {
    s.map(|s| {
        Timestamp::parse(s).map_err(|_| {
            ApiError::bad(
                "invalid_time",
                format!("{name} must be an RFC 3339 time, got {s:?}"),
            )
        })
    })
    .transpose()
}

/// The API's OpenAPI description, kept complete by a test over the route table.
pub const OPENAPI: &str = include_str!("../openapi.yaml");

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/yaml")], OPENAPI).into_response()
}

async fn health() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

async fn metrics(State(st): State<AppState>) -> Result<Response, ApiError> {
    let m = &st.metrics;
    let s = st.store.stats().await?;
    let l = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    let mut body = format!(
        "# TYPE vigil_hub_batches_total counter\nvigil_hub_batches_total {}\n\
         # TYPE vigil_hub_batches_rejected_total counter\nvigil_hub_batches_rejected_total {}\n\
         # TYPE vigil_hub_records_stored_total counter\nvigil_hub_records_stored_total {}\n\
         # TYPE vigil_hub_records_quarantined_total counter\nvigil_hub_records_quarantined_total {}\n\
         # TYPE vigil_hub_records_duplicate_total counter\nvigil_hub_records_duplicate_total {}\n\
         # TYPE vigil_hub_ingest_seconds_total counter\nvigil_hub_ingest_seconds_total {}\n\
         # TYPE vigil_store_readings gauge\nvigil_store_readings {}\n\
         # TYPE vigil_store_chunks gauge\nvigil_store_chunks {}\n\
         # TYPE vigil_store_chunk_bytes gauge\nvigil_store_chunk_bytes {}\n\
         # TYPE vigil_store_file_bytes gauge\nvigil_store_file_bytes {}\n\
         # TYPE vigil_store_quarantine_open gauge\nvigil_store_quarantine_open {}\n\
         # TYPE vigil_hub_alert_queue gauge\nvigil_hub_alert_queue {}\n",
        l(&m.batches),
        l(&m.batches_rejected),
        l(&m.records_stored),
        l(&m.records_quarantined),
        l(&m.records_duplicate),
        l(&m.ingest_micros) as f64 / 1e6,
        s.readings,
        s.chunks,
        s.chunk_bytes,
        s.file_bytes,
        s.quarantined_open,
        st.alerts.pending(),
    );
    body.push_str(&crate::ehr_push::metrics(&st).await?);
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response())
}

async fn ingest(
    State(st): State<AppState>,
    gw: Gateway,
    peer: Option<axum::Extension<crate::tls::TlsPeer>>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Json<Ack>, ApiError> {
    crate::tls::require_gateway(peer.as_deref(), &gw.id)?;
    let started = std::time::Instant::now();
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if ct != vigil_sync::CONTENT_TYPE {
        HubMetrics::add(&st.metrics.batches_rejected, 1);
        return Err(ApiError::UnsupportedMediaType {
            expected: vigil_sync::CONTENT_TYPE,
        });
    }
    let body = axum::body::to_bytes(body, vigil_sync::MAX_COMPRESSED)
        .await
        .map_err(|_| {
            HubMetrics::add(&st.metrics.batches_rejected, 1);
            ApiError::PayloadTooLarge {
                limit: vigil_sync::MAX_COMPRESSED,
            }
        })?;
    let decoded = tokio::task::spawn_blocking(move || {
        Batch::decode(&body).map(|b| {
            let records = b
                .records
                .into_iter()
                .map(|w| IncomingRecord {
                    seq: w.seq,
                    record: vigil_sync::decode_record(&w.payload).map_err(|e| (e, w.payload)),
                })
                .collect::<Vec<_>>();
            (b.epoch, b.after, records)
        })
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    let (epoch, after, records) = decoded.map_err(|e| {
        HubMetrics::add(&st.metrics.batches_rejected, 1);
        ApiError::bad("invalid_batch", e.to_string())
    })?;
    crate::audit::note_ingest(&gw.id, records.len());
    let mut out = st
        .store
        .ingest(IngestBatch {
            gateway: gw.id.clone(),
            epoch,
            after,
            records,
            hub_received: Timestamp::now(),
            max_future_ms: st.config.max_future_s.saturating_mul(1000),
        })
        .await?;
    // The batch is committed: the rules run behind the acknowledgement, in batch order.
    st.alerts.submit(std::mem::take(&mut out.accepted));
    let m = &st.metrics;
    HubMetrics::add(&m.batches, 1);
    HubMetrics::add(&m.records_stored, out.stored as u64);
    HubMetrics::add(&m.records_quarantined, out.quarantined as u64);
    HubMetrics::add(&m.records_duplicate, out.duplicates as u64);
    HubMetrics::add(&m.ingest_micros, started.elapsed().as_micros() as u64);
    tracing::debug!(
        gateway = %gw.id,
        stored = out.stored,
        quarantined = out.quarantined,
        duplicates = out.duplicates,
        cursor = out.cursor,
        "batch ingested"
    );
    Ok(Json(Ack {
        cursor: out.cursor,
        stored: out.stored,
        quarantined: out.quarantined,
        duplicates: out.duplicates,
    }))
}

/// A reading as the API shows it: codes, display names and units spelled out.
fn reading_view(r: &StoredReading) -> Value {
    let mut v = json!({
        "code": r.metric.loinc(),
        "system": "http://loinc.org",
        "display": r.metric.display(),
        "unit": r.metric.ucum(),
        "time": r.time,
        "received": r.received,
        "hub_received": r.hub_received,
        "device": r.device,
        "source": r.source,
        "flags": r.flags,
    });
    if let Some(x) = r.value {
        v["value"] = json!(x);
    }
    if !r.components.is_empty() {
        v["components"] = r
            .components
            .iter()
            .map(|c| json!({"code": c.metric.loinc(), "display": c.metric.display(), "value": c.value, "unit": c.metric.ucum()}))
            .collect();
    }
    if let Some(a) = r.absent {
        v["data_absent_reason"] = json!(a.code());
    }
    v
}

async fn list_patients(State(st): State<AppState>, u: User) -> Result<Json<Value>, ApiError> {
    let visible = access::visible_patients(&st, &u).await?;
    let list = st.store.patients().await?;
    let patients: Vec<Value> = list
        .iter()
        .filter(|s| visible.contains(&s.patient.id))
        .map(|s| {
            json!({
                "id": s.patient.id,
                "name": s.patient.name,
                "birth_date": s.patient.birth_date,
                "latest": s.latest.iter().map(reading_view).collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(Json(
        json!({ "patients": patients, "count": patients.len() }),
    ))
}

async fn create_patient(
    State(st): State<AppState>,
    u: User,
    ApiJson(p): ApiJson<Patient>,
) -> Result<(StatusCode, Json<Patient>), ApiError> {
    crate::audit::note(&u, &p.id, crate::audit::Action::Write);
    u.require_admin()?;
    st.store.upsert_patient(p.clone()).await?;
    Ok((StatusCode::CREATED, Json(p)))
}

async fn get_patient(
    State(st): State<AppState>,
    u: User,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = patient_id(&id)?;
    access::can_read_patient(&st, &u, &id).await?;
    let p = st
        .store
        .patient(&id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("patient {id}")))?;
    let latest = st.store.latest(&id).await?;
    Ok(Json(json!({
        "id": p.id,
        "name": p.name,
        "birth_date": p.birth_date,
        "latest": latest.iter().map(reading_view).collect::<Vec<_>>(),
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadingsParams {
    code: Option<String>,
    from: Option<String>,
    to: Option<String>,
    limit: Option<usize>,
    order: Option<String>,
}

async fn patient_readings(
    State(st): State<AppState>,
    u: User,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<ReadingsParams>,
) -> Result<Json<Value>, ApiError> {
    let id = patient_id(&id)?;
    access::can_read_patient(&st, &u, &id).await?;
    let metric = q
        .code
        .as_deref()
        .map(|c| {
            c.parse::<Metric>().map_err(|_| {
                ApiError::bad("unknown_code", format!("code {c:?} is not in the registry"))
            })
        })
        .transpose()?;
    let from = parse_time("from", q.from.as_deref())?;
    let to = parse_time("to", q.to.as_deref())?;
    let limit = q.limit.unwrap_or(1000);
    if limit == 0 || limit > 100_000 {
        return Err(ApiError::bad(
            "invalid_limit",
            "limit must be between 1 and 100000",
        ));
    }
    let descending = match q.order.as_deref() {
        None | Some("asc") => false,
        Some("desc") => true,
        Some(o) => {
            return Err(ApiError::bad(
                "invalid_order",
                format!("order must be asc or desc, got {o:?}"),
            ));
        }
    };
    let rows = st
        .store
        .readings(ReadingQuery {
            patient: id.clone(),
            metric,
            from,
            to,
            limit,
            descending,
        })
        .await?;
    Ok(Json(json!({
        "patient": id,
        "count": rows.len(),
        "readings": rows.iter().map(reading_view).collect::<Vec<_>>(),
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RangeParams {
    from: Option<String>,
    to: Option<String>,
    limit: Option<usize>,
}

async fn patient_events(
    State(st): State<AppState>,
    u: User,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<RangeParams>,
) -> Result<Json<Value>, ApiError> {
    let id = patient_id(&id)?;
    access::can_read_patient(&st, &u, &id).await?;
    let from = parse_time("from", q.from.as_deref())?;
    let to = parse_time("to", q.to.as_deref())?;
    let limit = q.limit.unwrap_or(1000).clamp(1, 100_000);
    let events = st.store.events(&id, from, to, limit).await?;
    Ok(Json(
        json!({ "patient": id, "count": events.len(), "events": events }),
    ))
}

async fn list_devices(State(st): State<AppState>, u: User) -> Result<Json<Value>, ApiError> {
    access::require_operator(&u)?;
    let d = st.store.devices().await?;
    Ok(Json(json!({ "count": d.len(), "devices": d })))
}

async fn create_device(
    State(st): State<AppState>,
    u: User,
    ApiJson(d): ApiJson<Device>,
) -> Result<(StatusCode, Json<Device>), ApiError> {
    u.require_admin()?;
    st.store.upsert_device(d.clone()).await?;
    Ok((StatusCode::CREATED, Json(d)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AssignmentParams {
    device: Option<String>,
}

async fn list_assignments(
    State(st): State<AppState>,
    u: User,
    ApiQuery(q): ApiQuery<AssignmentParams>,
) -> Result<Json<Value>, ApiError> {
    access::require_operator(&u)?;
    let device = q
        .device
        .map(|d| DeviceId::new(d).map_err(|e| ApiError::bad("invalid_id", e.to_string())))
        .transpose()?;
    let a = st.store.assignments(device.as_ref()).await?;
    Ok(Json(json!({ "count": a.len(), "assignments": a })))
}

async fn create_assignment(
    State(st): State<AppState>,
    u: User,
    ApiJson(a): ApiJson<Assignment>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    crate::audit::note(&u, &a.patient, crate::audit::Action::Write);
    u.require_admin()?;
    let r = st.store.assign(a.clone()).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "assignment": a, "reprocessed": r })),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct QuarantineParams {
    status: Option<String>,
    limit: Option<usize>,
}

async fn list_quarantine(
    State(st): State<AppState>,
    u: User,
    ApiQuery(q): ApiQuery<QuarantineParams>,
) -> Result<Json<Value>, ApiError> {
    access::require_operator(&u)?;
    let open_only = status_param(q.status.as_deref(), &["open", "all"], "open")? == "open";
    let limit = list_limit(q.limit);
    let entries = st.store.quarantine(limit, open_only).await?;
    Ok(Json(json!({ "count": entries.len(), "entries": entries })))
}

async fn reprocess(State(st): State<AppState>, u: User) -> Result<Json<Value>, ApiError> {
    u.require_admin()?;
    let r = st.store.reprocess_quarantine().await?;
    Ok(Json(json!(r)))
}

async fn list_gateways(State(st): State<AppState>, u: User) -> Result<Json<Value>, ApiError> {
    u.require_admin()?;
    let g = st.store.gateways().await?;
    Ok(Json(json!({ "count": g.len(), "gateways": g })))
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct NewGateway {
    id: String,
}

async fn create_gateway(
    State(st): State<AppState>,
    u: User,
    ApiJson(g): ApiJson<NewGateway>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    u.require_admin()?;
    DeviceId::new(g.id.as_str()).map_err(|e| ApiError::bad("invalid_id", e.to_string()))?;
    let token = auth::new_token(auth::GATEWAY_PREFIX);
    st.store
        .create_gateway(&g.id, &auth::hash_token(&token))
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(
            json!({ "id": g.id, "token": token, "note": "the token is shown once; the hub keeps only its hash" }),
        ),
    ))
}

async fn revoke_gateway(
    State(st): State<AppState>,
    u: User,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    u.require_admin()?;
    st.store.revoke_gateway(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn stats(State(st): State<AppState>, u: User) -> Result<Json<Value>, ApiError> {
    access::require_operator(&u)?;
    let s = st.store.stats().await?;
    let per = if s.readings > 0 {
        Some(s.file_bytes as f64 / s.readings as f64)
    } else {
        None
    };
    Ok(Json(json!({
        "store": s,
        "bytes_per_reading_file": per,
        "bytes_per_reading_chunks": (s.readings > 0).then(|| s.chunk_bytes as f64 / s.readings as f64),
    })))
}

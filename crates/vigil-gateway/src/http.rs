//! The gateway's loopback endpoint for local sources, health and metrics.

use crate::SyncState;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;
use vigil_model::{Record, Timestamp};
use vigil_outbox::OutboxError;

#[derive(Clone, Debug)]
pub struct SourceState {
    pub outbox: crate::edge::Intake,
    pub status: Arc<SyncState>,
    pub id: String,
    pub adapters: Arc<crate::adapters::AdapterState>,
}

pub fn router(state: SourceState) -> Router {
    Router::new()
        .route("/v1/records", post(records))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .layer(axum::extract::DefaultBodyLimit::max(8 << 20))
        .with_state(state)
}

fn problem(status: StatusCode, code: &str, detail: String) -> Response {
    let body = json!({"type": format!("urn:vigil:problem:{code}"), "title": status.canonical_reason(), "status": status.as_u16(), "detail": detail, "code": code});
    let mut r = (status, body.to_string()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/problem+json"),
    );
    r
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Body {
    List(Vec<Record>),
    Wrapped { records: Vec<Record> },
}

async fn records(State(st): State<SourceState>, body: axum::body::Bytes) -> Response {
    let parsed: Result<Body, _> = serde_json::from_slice(&body);
    let mut records = match parsed {
        Ok(Body::List(r)) | Ok(Body::Wrapped { records: r }) => r,
        Err(e) => return problem(StatusCode::BAD_REQUEST, "invalid_json", e.to_string()),
    };
    if records.len() > vigil_sync::MAX_RECORDS {
        return problem(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_records",
            format!("at most {} records per request", vigil_sync::MAX_RECORDS),
        );
    }
    // The gateway receive time is the gateway's own clock, whatever the source claims.
    let now = Timestamp::now();
    for r in &mut records {
        r.set_received(now);
    }
    match st.outbox.append(records).await {
        Ok(receipt) => Json(json!({
            "accepted": receipt.accepted,
            "first_seq": receipt.first_seq,
            "last_seq": receipt.last_seq,
        }))
        .into_response(),
        Err(OutboxError::Full { bytes, max }) => {
            let mut r = problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "outbox_full",
                format!("outbox holds {bytes} of {max} bytes; keep the data and retry"),
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
            r
        }
        Err(e) => problem(
            StatusCode::INTERNAL_SERVER_ERROR,
            "outbox_error",
            e.to_string(),
        ),
    }
}

async fn health(State(st): State<SourceState>) -> Response {
    let o = st.outbox.stats();
    let now = Timestamp::now().millis();
    Json(json!({
        "gateway": st.id,
        "status": "ok",
        "outbox": {
            "depth": o.depth,
            "bytes": o.bytes,
            "max_bytes": o.max_bytes,
            "oldest_unsent_age_s": o.oldest_unsent_ms.map(|t| (now - t).max(0) as f64 / 1000.0),
            "confirmed_seq": o.confirmed_seq,
            "last_seq": o.last_seq,
            "thinned_total": o.thinned_total,
            "refused_total": o.refused_total,
            "corrupt": o.corrupt,
        },
        "hub": st.status.snapshot(),
        "adapters": st.adapters.snapshot(),
        "edge": st.outbox.edge_status(),
    }))
    .into_response()
}

async fn metrics(State(st): State<SourceState>) -> Response {
    let o = st.outbox.stats();
    let s = st.status.snapshot();
    let now = Timestamp::now().millis();
    let age = o
        .oldest_unsent_ms
        .map_or(0.0, |t| (now - t).max(0) as f64 / 1000.0);
    let body = format!(
        "# TYPE vigil_gateway_outbox_depth gauge\nvigil_gateway_outbox_depth {}\n\
         # TYPE vigil_gateway_outbox_bytes gauge\nvigil_gateway_outbox_bytes {}\n\
         # TYPE vigil_gateway_outbox_oldest_unsent_age_seconds gauge\nvigil_gateway_outbox_oldest_unsent_age_seconds {age}\n\
         # TYPE vigil_gateway_outbox_appended_total counter\nvigil_gateway_outbox_appended_total {}\n\
         # TYPE vigil_gateway_outbox_thinned_total counter\nvigil_gateway_outbox_thinned_total {}\n\
         # TYPE vigil_gateway_outbox_refused_total counter\nvigil_gateway_outbox_refused_total {}\n\
         # TYPE vigil_gateway_outbox_corrupt gauge\nvigil_gateway_outbox_corrupt {}\n\
         # TYPE vigil_gateway_sync_connected gauge\nvigil_gateway_sync_connected {}\n\
         # TYPE vigil_gateway_sync_failures_total counter\nvigil_gateway_sync_failures_total {}\n\
         # TYPE vigil_gateway_sync_records_confirmed_total counter\nvigil_gateway_sync_records_confirmed_total {}\n",
        o.depth,
        o.bytes,
        o.appended_total,
        o.thinned_total,
        o.refused_total,
        o.corrupt,
        u8::from(s.connected),
        s.failures,
        s.records_confirmed,
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

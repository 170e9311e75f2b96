//! Vigil's hub.
//!
//! Owns the HTTP surface: authenticated, idempotent ingest of gateway batches
//! (`POST /api/v1/ingest`, see `vigil_sync`), the JSON API under `/api/v1` (patients with their
//! latest values, readings by metric and time range, devices, assignments, quarantine,
//! gateways), `/health` and `/metrics`. Storage is any [`vigil_store::Store`].
//!
//! The hub never logs patient identifiers or values at info level, never returns internal
//! error details to a client, and answers every error as a JSON problem document.

pub mod auth;
mod error;
mod routes;

pub use error::ApiError;
pub use routes::router;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use vigil_store::Store;

/// Hub settings.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HubConfig {
    /// How far ahead of the hub's clock a device time may be before the record is
    /// quarantined as `future_time`, in seconds.
    pub max_future_s: i64,
    /// How often small chunks are merged, in seconds (0 disables).
    pub compact_every_s: u64,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            max_future_s: 300,
            compact_every_s: 60,
        }
    }
}

/// Ingest counters for `/metrics`.
#[derive(Debug, Default)]
pub struct HubMetrics {
    pub batches: AtomicU64,
    pub records_stored: AtomicU64,
    pub records_quarantined: AtomicU64,
    pub records_duplicate: AtomicU64,
    pub batches_rejected: AtomicU64,
    pub ingest_micros: AtomicU64,
}

impl HubMetrics {
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }
}

/// Shared state of the HTTP handlers.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub config: Arc<HubConfig>,
    pub metrics: Arc<HubMetrics>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("config", &self.config)
            .finish()
    }
}

impl AppState {
    pub fn new(store: Arc<dyn Store>, config: HubConfig) -> Self {
        Self {
            store,
            config: Arc::new(config),
            metrics: Arc::new(HubMetrics::default()),
        }
    }
}

/// Serves the hub on `listener` until `shutdown` completes, with background compaction.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let compactor = (state.config.compact_every_s > 0).then(|| {
        let store = state.store.clone();
        let every = std::time::Duration::from_secs(state.config.compact_every_s);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                match store.compact().await {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(merged = n, "chunks compacted"),
                    Err(e) => tracing::warn!(error = %e, "compaction failed"),
                }
            }
        })
    });
    let result = axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await;
    if let Some(c) = compactor {
        c.abort();
    }
    result
}

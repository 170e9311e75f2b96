//! Vigil's edge gateway.
//!
//! Sources (the simulator in process, or any local program through `POST /v1/records` on the
//! gateway's loopback HTTP port) hand records to the gateway; the gateway commits them to its
//! durable [`vigil_outbox::Outbox`] and only then acknowledges the source. A sync task sends
//! the outbox to the hub in compressed batches, in sequence order, and deletes only what the
//! hub confirmed. While the hub is unreachable it backs off exponentially with full jitter and
//! resumes by itself; being offline for days is normal.
//!
//! The gateway never deletes an unconfirmed record except by the outbox's documented bound
//! policy, and never acknowledges a source before the commit.

mod http;
mod sync;

pub use http::router as source_router;
pub use sync::{SyncState, SyncStatus};

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use vigil_outbox::{Outbox, OutboxConfig, OutboxError};

/// Gateway settings.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    /// A name for logs and health output.
    pub id: String,
    /// The hub's base URL, e.g. `http://127.0.0.1:8080`.
    pub hub_url: String,
    /// The gateway's bearer token for the hub (prefer `VIGIL_GATEWAY__TOKEN` or a token file).
    #[serde(skip_serializing)]
    pub token: String,
    /// The outbox database file.
    pub outbox_path: PathBuf,
    /// Bound on unsent data in the outbox, in bytes.
    pub outbox_max_bytes: u64,
    /// Most records per batch to the hub.
    pub batch_max_records: usize,
    /// Loopback address for local sources (`POST /v1/records`) and `/health`; empty disables.
    pub listen: Option<SocketAddr>,
    pub backoff_min_ms: u64,
    pub backoff_max_ms: u64,
    pub request_timeout_ms: u64,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            id: "gateway".into(),
            hub_url: "http://127.0.0.1:8080".into(),
            token: String::new(),
            outbox_path: PathBuf::from("gateway/outbox.db"),
            outbox_max_bytes: 2 << 30,
            batch_max_records: 10_000,
            listen: None,
            backoff_min_ms: 200,
            backoff_max_ms: 30_000,
            request_timeout_ms: 30_000,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("invalid configuration: {0}")]
    Config(String),
}

/// A running gateway.
#[derive(Debug)]
pub struct Gateway {
    outbox: Outbox,
    status: Arc<SyncState>,
    stop: watch::Sender<bool>,
    sync: Option<JoinHandle<()>>,
    http: Option<JoinHandle<()>>,
    local_addr: Option<SocketAddr>,
}

impl Gateway {
    /// Opens the outbox and starts the sync task and the local source endpoint.
    pub async fn start(cfg: GatewayConfig) -> Result<Self, GatewayError> {
        if cfg.token.is_empty() {
            return Err(GatewayError::Config("gateway token is empty".into()));
        }
        if cfg.batch_max_records == 0 || cfg.batch_max_records > vigil_sync::MAX_RECORDS {
            return Err(GatewayError::Config(format!(
                "batch_max_records must be 1..={}",
                vigil_sync::MAX_RECORDS
            )));
        }
        let mut ocfg = OutboxConfig::new(&cfg.outbox_path);
        ocfg.max_bytes = cfg.outbox_max_bytes;
        let outbox = tokio::task::spawn_blocking(move || Outbox::open(ocfg))
            .await
            .map_err(|e| GatewayError::Config(e.to_string()))??;
        let status = Arc::new(SyncState::default());
        let (stop, stop_rx) = watch::channel(false);
        let sync = tokio::spawn(sync::run(
            cfg.clone(),
            outbox.clone(),
            status.clone(),
            stop_rx.clone(),
        ));
        let (http, local_addr) = match cfg.listen {
            None => (None, None),
            Some(addr) => {
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|source| GatewayError::Listen { addr, source })?;
                let local = listener.local_addr().ok();
                let app = http::router(http::SourceState {
                    outbox: outbox.clone(),
                    status: status.clone(),
                    id: cfg.id.clone(),
                });
                let mut rx = stop_rx.clone();
                let h = tokio::spawn(async move {
                    let shutdown = async move {
                        let _ = rx.wait_for(|s| *s).await;
                    };
                    if let Err(e) = axum::serve(listener, app)
                        .with_graceful_shutdown(shutdown)
                        .await
                    {
                        tracing::error!(error = %e, "gateway source endpoint failed");
                    }
                });
                (Some(h), local)
            }
        };
        Ok(Self {
            outbox,
            status,
            stop,
            sync: Some(sync),
            http,
            local_addr,
        })
    }

    /// The outbox, for in-process sources.
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// The bound address of the local source endpoint.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    pub fn status(&self) -> SyncStatus {
        self.status.snapshot()
    }

    /// Stops sources, gives the sync task `drain` to send what is left, and closes the outbox.
    /// Whatever is not confirmed by then stays in the outbox for the next start.
    pub async fn shutdown(mut self, drain: std::time::Duration) {
        if let Some(h) = self.http.take() {
            let _ = self.stop.send(true);
            let _ = h.await;
        }
        let deadline = tokio::time::Instant::now() + drain;
        while tokio::time::Instant::now() < deadline {
            let s = self.outbox.stats();
            if s.depth == 0 || !self.status.snapshot().connected {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let _ = self.stop.send(true);
        if let Some(h) = self.sync.take() {
            let _ = h.await;
        }
        let ob = self.outbox.clone();
        let _ = tokio::task::spawn_blocking(move || ob.close()).await;
    }
}

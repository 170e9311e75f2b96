//! Vigil's edge gateway.
//!
//! Sources (the simulator in process, or any local program through `POST /v1/records` on the
//! gateway's loopback HTTP port) hand records to the gateway; the gateway commits them to its
//! durable [`vigil_outbox::Outbox`] and only then acknowledges the source. A sync task sends
//! the outbox to the hub in compressed batches, in sequence order, and deletes only what the
//! hub confirmed. While the hub is unreachable it backs off exponentially with full jitter and
//! resumes by itself; being offline for days is normal.
//!
//! Device adapters ([`adapters`]) feed the same outbox under the same rule: HL7 v2 over MLLP
//! (`mllp`), and device messages over MQTT (`mqtt`).
//!
//! The gateway never deletes an unconfirmed record except by the outbox's documented bound
//! policy, and never acknowledges a source before the commit.

pub mod adapters;
pub mod edge;
mod http;
mod sync;

pub use adapters::{AdaptersStatus, MllpConfig, MllpStatus, MqttConfig, MqttStatus};
pub use edge::{AlarmAction, EdgeConfig, EdgeError, EdgeStatus, Intake};
pub use http::router as source_router;
pub use sync::{SyncState, SyncStatus};

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use vigil_outbox::{Outbox, OutboxConfig, OutboxError, SecretKey};

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
    /// HL7 v2 over MLLP listener; absent disables.
    pub mllp: Option<MllpConfig>,
    /// MQTT device ingress; absent disables.
    pub mqtt: Option<MqttConfig>,
    /// Bluetooth LE health devices (needs a build with the `ble` feature); absent disables.
    pub ble: Option<BleSettings>,
    /// Edge rules: critical alarms raised locally, with or without the hub; absent disables.
    pub edge: Option<EdgeConfig>,
    /// With an `https://` hub URL: the CA certificate(s) (PEM) that sign the hub's
    /// certificate; when set, only these are trusted (not the system's roots).
    pub hub_ca_file: Option<PathBuf>,
    /// Client certificate (PEM) presented to the hub for mutual TLS; needs `client_key_file`.
    pub client_cert_file: Option<PathBuf>,
    /// The private key (PEM) of `client_cert_file`.
    pub client_key_file: Option<PathBuf>,
    /// The outbox encryption key: 32 bytes raw, hex or base64, readable by its owner only.
    /// Absent: `outbox.key` beside the outbox, created with a new key when neither exists.
    pub outbox_key_file: Option<PathBuf>,
}

/// Settings of the Bluetooth adapter (`[gateway.ble]`).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BleSettings {
    /// Which Bluetooth adapter (0: the first, `hci0` on Linux).
    pub adapter: usize,
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
            mllp: None,
            mqtt: None,
            ble: None,
            edge: None,
            hub_ca_file: None,
            client_cert_file: None,
            client_key_file: None,
            outbox_key_file: None,
        }
    }
}

impl GatewayConfig {
    /// An HTTP client builder for talking to the hub with this gateway's TLS settings.
    pub fn hub_client_builder(&self) -> Result<reqwest::ClientBuilder, GatewayError> {
        let identity = match (&self.client_cert_file, &self.client_key_file) {
            (Some(c), Some(k)) => Some((c.as_path(), k.as_path())),
            (None, None) => None,
            _ => {
                return Err(GatewayError::Config(
                    "client_cert_file and client_key_file go together".into(),
                ));
            }
        };
        hub_client_builder(self.hub_ca_file.as_deref(), identity)
    }
}

/// An HTTP client builder for the hub: trusts only the CA in `hub_ca_file` when given (else
/// the system's roots) and presents `identity` (certificate, key) for mutual TLS when given.
/// Every client of the hub (the gateway's sync, the CLI, the benchmarks) is built here.
pub fn hub_client_builder(
    hub_ca_file: Option<&std::path::Path>,
    identity: Option<(&std::path::Path, &std::path::Path)>,
) -> Result<reqwest::ClientBuilder, GatewayError> {
    vigil_tls::install_default_provider();
    let tls = |e: vigil_tls::TlsError| GatewayError::Config(e.to_string());
    let mut b = reqwest::Client::builder();
    if let Some(ca) = hub_ca_file {
        let pem = vigil_tls::read_ca_pem(ca).map_err(tls)?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| GatewayError::Config(format!("{}: {e}", ca.display())))?;
        b = b.tls_certs_only(certs);
    }
    if let Some((cert, key)) = identity {
        let pem = vigil_tls::read_identity_pem(cert, key).map_err(tls)?;
        let id = reqwest::Identity::from_pem(&pem)
            .map_err(|e| GatewayError::Config(format!("{}: {e}", cert.display())))?;
        b = b.identity(id);
    }
    Ok(b)
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
    #[error(transparent)]
    Quarantine(#[from] adapters::QuarantineError),
    #[error(transparent)]
    Edge(#[from] EdgeError),
    #[error("outbox key: {0}")]
    Key(#[from] vigil_outbox::KeyError),
    #[error(
        "outbox {outbox} is encrypted but its key file {key} does not exist; give the key with outbox_key_file"
    )]
    KeyMissing { outbox: PathBuf, key: PathBuf },
}

impl GatewayConfig {
    /// Where the outbox key is read from: `outbox_key_file`, or `outbox.key` beside the outbox.
    pub fn outbox_key_path(&self) -> PathBuf {
        self.outbox_key_file
            .clone()
            .unwrap_or_else(|| self.outbox_path.with_extension("key"))
    }
}

/// Loads the outbox key. A configured key file must exist. The default key file beside the
/// outbox is created (mode 0600) only together with a new outbox; an outbox whose key file is
/// gone is never given a new key.
pub fn load_outbox_key(cfg: &GatewayConfig) -> Result<SecretKey, GatewayError> {
    let path = cfg.outbox_key_path();
    if cfg.outbox_key_file.is_some() {
        return Ok(SecretKey::load(&path)?);
    }
    if !path.exists() && cfg.outbox_path.exists() {
        return Err(GatewayError::KeyMissing {
            outbox: cfg.outbox_path.clone(),
            key: path,
        });
    }
    let (key, created) = SecretKey::load_or_create(&path)?;
    if created {
        tracing::warn!(
            key = %path.display(),
            "new outbox key created beside the outbox: it protects a stolen disk only when moved elsewhere (see outbox_key_file)"
        );
    }
    Ok(key)
}

/// A running gateway.
#[derive(Debug)]
pub struct Gateway {
    outbox: Intake,
    edge: Option<edge::EdgeTask>,
    status: Arc<SyncState>,
    stop: watch::Sender<bool>,
    sync: Option<JoinHandle<()>>,
    http: Option<JoinHandle<()>>,
    local_addr: Option<SocketAddr>,
    adapters: Arc<adapters::AdapterState>,
    adapters_stop: watch::Sender<bool>,
    adapter_tasks: Vec<JoinHandle<()>>,
    mllp_addr: Option<SocketAddr>,
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
        let key = load_outbox_key(&cfg)?;
        let mut ocfg = OutboxConfig::new(&cfg.outbox_path, key);
        ocfg.max_bytes = cfg.outbox_max_bytes;
        let outbox = tokio::task::spawn_blocking(move || Outbox::open(ocfg))
            .await
            .map_err(|e| GatewayError::Config(e.to_string()))??;
        // Every source appends through the intake, so the edge rules see every record.
        let (intake, edge_task) = match &cfg.edge {
            None => (Intake::plain(outbox.clone()), None),
            Some(e) => match edge::start(e, &cfg.id, outbox.clone()) {
                Ok((i, t)) => (i, Some(t)),
                Err(err) => {
                    let ob = outbox.clone();
                    let _ = tokio::task::spawn_blocking(move || ob.close()).await;
                    return Err(err.into());
                }
            },
        };
        let status = Arc::new(SyncState::default());
        let (stop, stop_rx) = watch::channel(false);
        // Device adapters stop before the sync task drains: their own stop signal.
        let (adapters_stop, adapters_rx) = watch::channel(false);
        let mut adapter_state = adapters::AdapterState::default();
        let mut adapter_tasks = Vec::new();
        let started = start_adapters(
            &cfg,
            &intake,
            &mut adapter_state,
            &mut adapter_tasks,
            &adapters_rx,
        )
        .await;
        let mllp_addr = match started {
            Ok(addr) => addr,
            Err(e) => {
                let _ = adapters_stop.send(true);
                for h in adapter_tasks {
                    let _ = h.await;
                }
                if let Some(t) = edge_task {
                    t.shutdown().await;
                }
                let ob = outbox.clone();
                let _ = tokio::task::spawn_blocking(move || ob.close()).await;
                return Err(e);
            }
        };
        let adapter_state = Arc::new(adapter_state);
        let client = match cfg.hub_client_builder().and_then(|b| {
            b.timeout(std::time::Duration::from_millis(cfg.request_timeout_ms))
                .connect_timeout(std::time::Duration::from_millis(
                    cfg.request_timeout_ms.min(5_000),
                ))
                .build()
                .map_err(|e| GatewayError::Config(format!("HTTP client: {e}")))
        }) {
            Ok(c) => c,
            Err(e) => {
                let _ = adapters_stop.send(true);
                for h in adapter_tasks {
                    let _ = h.await;
                }
                if let Some(t) = edge_task {
                    t.shutdown().await;
                }
                let ob = outbox.clone();
                let _ = tokio::task::spawn_blocking(move || ob.close()).await;
                return Err(e);
            }
        };
        let sync = tokio::spawn(sync::run(
            client,
            cfg.clone(),
            outbox.clone(),
            status.clone(),
            stop_rx.clone(),
        ));
        let (http, local_addr) = match cfg.listen {
            None => (None, None),
            Some(addr) => {
                let listener = match tokio::net::TcpListener::bind(addr).await {
                    Ok(l) => l,
                    Err(source) => {
                        let _ = adapters_stop.send(true);
                        return Err(GatewayError::Listen { addr, source });
                    }
                };
                let local = listener.local_addr().ok();
                let app = http::router(http::SourceState {
                    outbox: intake.clone(),
                    status: status.clone(),
                    id: cfg.id.clone(),
                    adapters: adapter_state.clone(),
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
            outbox: intake,
            edge: edge_task,
            status,
            stop,
            sync: Some(sync),
            http,
            local_addr,
            adapters: adapter_state,
            adapters_stop,
            adapter_tasks,
            mllp_addr,
        })
    }

    /// Where in-process sources append records: the outbox (it dereferences to the
    /// [`Outbox`]), with the edge rules run on every committed record.
    pub fn outbox(&self) -> &Intake {
        &self.outbox
    }

    /// Counters of the edge rules, when enabled (also on `/health` under `edge`).
    pub fn edge(&self) -> Option<EdgeStatus> {
        self.outbox.edge_status()
    }

    /// The bound address of the local source endpoint.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    pub fn status(&self) -> SyncStatus {
        self.status.snapshot()
    }

    /// The bound address of the HL7 MLLP listener, when enabled.
    pub fn mllp_addr(&self) -> Option<SocketAddr> {
        self.mllp_addr
    }

    /// Counters of the device adapters (also on `/health` under `adapters`).
    pub fn adapters(&self) -> AdaptersStatus {
        self.adapters.snapshot()
    }

    /// Stops sources, gives the sync task `drain` to send what is left, and closes the outbox.
    /// Whatever is not confirmed by then stays in the outbox for the next start.
    pub async fn shutdown(mut self, drain: std::time::Duration) {
        // Device adapters first: each finishes the message in hand (commit, then its ACK).
        let _ = self.adapters_stop.send(true);
        for h in self.adapter_tasks.drain(..) {
            let _ = h.await;
        }
        if let Some(h) = self.http.take() {
            let _ = self.stop.send(true);
            let _ = h.await;
        }
        // Every source has stopped: raise and record the alarms already found.
        if let Some(t) = self.edge.take() {
            t.shutdown().await;
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

/// Starts the configured device adapters; the MLLP listener's bound address.
async fn start_adapters(
    cfg: &GatewayConfig,
    outbox: &Intake,
    state: &mut adapters::AdapterState,
    tasks: &mut Vec<JoinHandle<()>>,
    stop: &watch::Receiver<bool>,
) -> Result<Option<SocketAddr>, GatewayError> {
    let mut mllp_addr = None;
    if let Some(m) = &cfg.mllp {
        let addr = m.listen;
        let (h, local) = adapters::mllp::start(m.clone(), outbox.clone(), state, stop.clone())
            .await
            .map_err(|source| GatewayError::Listen { addr, source })?;
        tasks.push(h);
        mllp_addr = Some(local);
    }
    if let Some(_b) = &cfg.ble {
        #[cfg(feature = "ble")]
        {
            let path = cfg
                .outbox_path
                .parent()
                .unwrap_or(std::path::Path::new("."))
                .join("quarantine.db");
            let quarantine = tokio::task::spawn_blocking(move || {
                adapters::Quarantine::open(path, adapters::Quarantine::DEFAULT_MAX_BYTES)
            })
            .await
            .map_err(|e| GatewayError::Config(e.to_string()))??;
            let b = adapters::ble::BleConfig {
                adapter: _b.adapter,
            };
            tasks.push(adapters::ble::start(
                b,
                outbox.clone(),
                quarantine,
                stop.clone(),
            ));
        }
        #[cfg(not(feature = "ble"))]
        return Err(GatewayError::Config(
            "this build has no Bluetooth support: build with `--features ble`".into(),
        ));
    }
    if let Some(m) = &cfg.mqtt {
        let path = m.quarantine_path.clone().unwrap_or_else(|| {
            cfg.outbox_path
                .parent()
                .unwrap_or(std::path::Path::new("."))
                .join("quarantine.db")
        });
        let max = m.quarantine_max_bytes;
        let quarantine = tokio::task::spawn_blocking(move || adapters::Quarantine::open(path, max))
            .await
            .map_err(|e| GatewayError::Config(e.to_string()))??;
        let h = adapters::mqtt::start(
            m.clone(),
            &cfg.id,
            outbox.clone(),
            quarantine,
            state,
            stop.clone(),
        )
        .map_err(GatewayError::Config)?;
        tasks.push(h);
    }
    Ok(mllp_addr)
}

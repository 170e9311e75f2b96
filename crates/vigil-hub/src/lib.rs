//! Vigil's hub.
//!
//! Owns the HTTP surface: authenticated, idempotent ingest of gateway batches
//! (`POST /api/v1/ingest`, see `vigil_sync`), the JSON API under `/api/v1` (patients with their
//! latest values, readings by metric and time range, devices, assignments, quarantine,
//! gateways), `/health` and `/metrics`. Storage is any [`vigil_store::Store`].
//!
//! The hub never logs patient identifiers or values at info level, never returns internal
//! error details to a client, and answers every error as a JSON problem document.

pub mod access;
mod alert_routes;
pub mod alerts;
pub mod audit;
pub mod auth;
pub mod ehr_push;
mod error;
mod fhir_inbound;
mod fhir_routes;
pub mod notify;
pub mod oauth;
#[cfg(feature = "oidc")]
mod oidc;
pub mod privacy_routes;
mod routes;
pub mod session;
pub mod tls;
mod users;

pub use error::ApiError;
pub use routes::{OPENAPI as OPENAPI_YAML, router};

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
    /// An alert resolves itself (actor `system`) once the engine has evaluated its rule for
    /// this long (device time) after its latest finding without finding it again, in seconds.
    pub alert_quiet_s: u64,
    /// An alert nobody acknowledged this long after it was recorded escalates to the
    /// patient's backup clinicians, a period later to on-call, and is re-notified every
    /// period after that, in seconds.
    pub escalate_after_s: u64,
    /// Delivery attempts of a notification before it is dead-lettered.
    pub notify_max_attempts: u32,
    /// First retry delay of a failed notification, doubled per attempt (at most an hour), ms.
    pub notify_backoff_ms: u64,
    /// Webhooks that receive every alert notification (`[[hub.webhooks]]`).
    pub webhooks: Vec<notify::WebhookConfig>,
    /// SMTP relay for e-mail notifications (`[hub.smtp]`); none disables e-mail.
    pub smtp: Option<notify::SmtpConfig>,
    /// E-mail address per user name (`[hub.emails]`).
    pub emails: std::collections::BTreeMap<String, String>,
    /// Expected interval between data per device kind (kebab-case kind name, e.g.
    /// `wearable`, `blood-pressure-monitor`), in seconds, over the built-in table
    /// (see [`alerts::default_cadence_s`]). 0 stops tracking that kind.
    pub cadence_s: std::collections::BTreeMap<String, u64>,
    /// A patient's device with nothing received (hub receive time) for `stale_factor` ×
    /// its cadence raises `stale-data`. 0 disables the check.
    pub stale_factor: u32,
    /// How often the stale-data check runs, in milliseconds.
    pub stale_check_ms: u64,
    /// A battery event below this percentage raises `low-battery`.
    pub battery_low_percent: f64,
    /// A later battery event at or above this percentage resolves `low-battery`.
    pub battery_ok_percent: f64,
    /// How long a break-glass grant lasts, in minutes (fractions allowed).
    pub break_glass_minutes: f64,
    /// Retention periods per kind of data (`[hub.retention]`).
    pub retention: privacy_routes::RetentionConfig,
    /// A browser session unused this long expires, in seconds.
    pub session_idle_s: u64,
    /// A browser session expires this long after login however it is used, in seconds.
    pub session_max_s: u64,
    /// Failed logins in a row that lock an account.
    pub login_max_failures: u32,
    /// First lock period of an account, doubled per repeated lockout (at most a day), s.
    pub login_lockout_s: u64,
    /// Failed logins one source address may make per minute before it is refused (429).
    pub login_ip_failures_per_min: u32,
    /// Sign-in through an OpenID Connect identity provider (`[hub.oidc]`; needs a build with
    /// the `oidc` feature).
    pub oidc: Option<session::OidcConfig>,
    /// External FHIR servers that receive new Observations and alert Flags (`[[hub.ehr]]`).
    pub ehr: Vec<ehr_push::EhrTarget>,
    /// A stock-level event at or below this quantity is a FHIR SupplyRequest.
    pub supply_reorder_level: f64,
    /// A SupplyRequest asks for enough to bring the item back to this quantity.
    pub supply_par_level: f64,
    /// Where FHIR bulk exports (`$export`) are written; the binary sets `<data_dir>/fhir-export`.
    /// None: a `vigil-fhir-export` directory under the system's temporary directory.
    pub export_dir: Option<std::path::PathBuf>,
    /// Proxies whose `X-Forwarded-For` names the client in the audit log (`[]`: none; the
    /// peer address is recorded).
    pub audit_trusted_proxies: Vec<std::net::IpAddr>,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            max_future_s: 300,
            compact_every_s: 60,
            alert_quiet_s: 300,
            escalate_after_s: 900,
            notify_max_attempts: 8,
            notify_backoff_ms: 1000,
            webhooks: Vec::new(),
            smtp: None,
            emails: std::collections::BTreeMap::new(),
            cadence_s: std::collections::BTreeMap::new(),
            stale_factor: 3,
            stale_check_ms: 5000,
            battery_low_percent: 20.0,
            battery_ok_percent: 30.0,
            break_glass_minutes: 60.0,
            retention: privacy_routes::RetentionConfig::default(),
            session_idle_s: 1800,
            session_max_s: 43_200,
            login_max_failures: 5,
            login_lockout_s: 900,
            login_ip_failures_per_min: 30,
            oidc: None,
            ehr: Vec::new(),
            supply_reorder_level: 5.0,
            supply_par_level: 20.0,
            export_dir: None,
            audit_trusted_proxies: Vec::new(),
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
    pub alerts: Arc<alerts::Alerting>,
    pub logins: Arc<session::LoginGuard>,
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
            alerts: Arc::new(alerts::Alerting::default()),
            logins: Arc::new(session::LoginGuard::default()),
        }
    }
}

/// Serves the hub over plain HTTP on `listener` until `shutdown` completes, with background
/// compaction.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, None, state, shutdown).await
}

/// Serves the hub over HTTPS (`tls`, see [`tls`]) on `listener` until `shutdown` completes.
pub async fn serve_tls(
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, Some(tls), state, shutdown).await
}

async fn serve_with(
    listener: tokio::net::TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    vigil_tls::install_default_provider();
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
    let escalator = (state.config.escalate_after_s > 0).then(|| {
        let (store, alerts, config) = (
            state.store.clone(),
            state.alerts.clone(),
            state.config.clone(),
        );
        // Check a few times per period, at most once a second and at least every 30 s.
        let every = std::time::Duration::from_millis(
            (config.escalate_after_s.saturating_mul(1000) / 4).clamp(250, 30_000),
        );
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                if let Err(e) = alerts.escalate(store.as_ref(), &config).await {
                    tracing::warn!(error = %e, "escalation pass failed");
                }
            }
        })
    });
    let stale = (state.config.stale_factor > 0).then(|| {
        let (store, alerts, config) = (
            state.store.clone(),
            state.alerts.clone(),
            state.config.clone(),
        );
        let every = std::time::Duration::from_millis(config.stale_check_ms.max(50));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                if let Err(e) = alerts.check_stale(store.as_ref(), &config).await {
                    tracing::warn!(error = %e, "stale-data pass failed");
                }
            }
        })
    });
    let retention = privacy_routes::spawn_retention(&state);
    let evaluator = tokio::spawn(
        state
            .alerts
            .clone()
            .run(state.store.clone(), state.config.clone()),
    );
    let notifier = {
        let (store, config) = (state.store.clone(), state.config.clone());
        tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(10))
                .build()
                .unwrap_or_default();
            let mut tick = tokio::time::interval(std::time::Duration::from_millis(200));
            loop {
                tick.tick().await;
                if let Err(e) = notify::drain(&http, store.as_ref(), &config).await {
                    tracing::warn!(error = %e, "notification pass failed");
                }
            }
        })
    };
    let pusher = tokio::spawn(ehr_push::run(state.clone()));
    let app = router(state);
    let result = match tls {
        None => {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
            )
            .with_graceful_shutdown(shutdown)
            .await
        }
        Some(config) => {
            let app = app.layer(axum::middleware::from_fn(tls::tls_layer));
            axum::serve(
                tls::TlsListener::new(listener, config)?,
                app.into_make_service_with_connect_info::<tls::Peer>(),
            )
            .with_graceful_shutdown(shutdown)
            .await
        }
    };
    for task in [
        compactor,
        escalator,
        stale,
        retention,
        Some(notifier),
        Some(evaluator),
    ]
    .into_iter()
    .flatten()
    {
        task.abort();
    }
    pusher.abort();
    result
}

//! EHR push: new Observations and alert Flags to external FHIR servers as transaction
//! Bundles.
//!
//! Each configured target (`[[hub.ehr]]`) has a worker that reads the next batch after the
//! target's durable cursors (the push journal for readings, the alert transitions for alerts;
//! see `vigil_store::push`), maps it with `vigil_fhir` (Observations as conditional creates on
//! their deterministic identifier, Flags as `PUT Flag/{id}`), posts it to the target's base
//! URL, and moves the cursor only once the target answered a transaction-response for every
//! entry. A resend after any crash is therefore harmless: the target finds the resources by
//! identifier (or id) and creates nothing twice.
//!
//! Failures are retried with exponential backoff and full jitter up to the target's
//! `max_backoff_ms`, honouring `Retry-After` on 429 and 503. A 4xx other than 401, 408 and
//! 429 means the target will never accept the batch: it is dead-lettered (listed on
//! `GET /api/v1/ehr`, logged at warn without patient data) and the worker goes on. With
//! OAuth2 client credentials the worker gets a token from the target's token endpoint,
//! caches it until it expires and fetches a new one once when the target answers 401.

use crate::access;
use crate::auth::User;
use crate::oauth::{ClientAuth, TokenSource};
use crate::routes::ApiQuery;
use crate::{ApiError, AppState};
use axum::extract::State;
use axum::http::header;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use vigil_fhir::{Bundle, Resource};
use vigil_model::Timestamp;
use vigil_store::push::{InboundFilter, PushDeadLetter, PushStream, PushTargetSpec};
use vigil_store::{Store, StoreError};

/// How often an idle worker looks for new data.
const POLL: Duration = Duration::from_millis(250);
/// First retry delay.
const BACKOFF_MIN: Duration = Duration::from_millis(250);
/// Longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);
const FHIR_JSON: &str = "application/fhir+json";

/// OAuth2 client credentials for a target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuth2Config {
    pub token_url: String,
    pub client_id: String,
    /// A file holding the client secret (trailing whitespace ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_file: Option<PathBuf>,
    /// The name of an environment variable holding the client secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_env: Option<String>,
    /// `basic` (HTTP Basic, the default) or `body` (in the form).
    #[serde(default)]
    pub auth: ClientAuth,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

impl OAuth2Config {
    /// Reads the client secret from its file or environment variable.
    pub fn secret(&self) -> Result<String, String> {
        let s = match (&self.client_secret_file, &self.client_secret_env) {
            (Some(f), None) => std::fs::read_to_string(f)
                .map_err(|e| format!("cannot read client_secret_file {}: {e}", f.display()))?,
            (None, Some(v)) => std::env::var(v)
                .map_err(|_| format!("environment variable {v} (client_secret_env) is not set"))?,
            _ => {
                return Err(
                    "exactly one of client_secret_file and client_secret_env is required".into(),
                );
            }
        };
        let s = s.trim_end().to_owned();
        if s.is_empty() {
            return Err("the client secret is empty".into());
        }
        Ok(s)
    }
}

fn default_resources() -> Vec<PushStream> {
    vec![PushStream::Observations, PushStream::Alerts]
}
fn default_batch_size() -> usize {
    200
}
fn default_max_backoff_ms() -> u64 {
    60_000
}
fn default_timeout_ms() -> u64 {
    30_000
}

/// An external FHIR R4 server that receives what the hub stores (`[[hub.ehr]]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EhrTarget {
    /// Names the target's cursor: renaming a target starts it afresh.
    pub name: String,
    /// The FHIR base URL; transaction Bundles are POSTed to it.
    pub url: String,
    /// What to push: `observations`, `alerts`.
    #[serde(default = "default_resources")]
    pub resources: Vec<PushStream>,
    /// Resources per Bundle (a larger stored chunk is sent as several Bundles).
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Longest delay between retries, in milliseconds.
    #[serde(default = "default_max_backoff_ms")]
    pub max_backoff_ms: u64,
    /// Request timeout, in milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth2: Option<OAuth2Config>,
    /// For `https://` targets: the CA certificate(s) (PEM) that sign the target's and the
    /// token endpoint's certificates; when set only these are trusted, otherwise the
    /// system's roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<std::path::PathBuf>,
}

/// Whether `u` is an absolute http:// or https:// URL.
fn http_url(u: &str) -> Result<(), String> {
    if !(u.starts_with("http://") || u.starts_with("https://")) || reqwest::Url::parse(u).is_err() {
        return Err(format!("must be an http:// or https:// URL, got {u:?}"));
    }
    Ok(())
}

/// The HTTP client of one target (TLS with the system's roots, or only `ca_file`'s CAs).
fn target_client(t: &EhrTarget) -> Result<reqwest::Client, String> {
    vigil_tls::install_default_provider();
    let mut b = reqwest::Client::builder().timeout(Duration::from_millis(t.timeout_ms));
    if let Some(ca) = &t.ca_file {
        let pem = vigil_tls::read_ca_pem(ca).map_err(|e| e.to_string())?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("{}: {e}", ca.display()))?;
        b = b.tls_certs_only(certs);
    }
    b.build().map_err(|e| e.to_string())
}

/// Checks the targets at start: names, URLs, limits and that secrets can be read.
pub fn validate(targets: &[EhrTarget]) -> Result<(), String> {
    let mut names = HashSet::new();
    for t in targets {
        let n = &t.name;
        if n.is_empty()
            || n.len() > 64
            || !n
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err(format!(
                "hub.ehr name {n:?} must be 1-64 letters, digits, '-', '_' or '.'"
            ));
        }
        if !names.insert(n.as_str()) {
            return Err(format!("hub.ehr name {n:?} is used twice"));
        }
        http_url(&t.url).map_err(|e| format!("hub.ehr {n}: url {e}"))?;
        if t.resources.is_empty() {
            return Err(format!("hub.ehr {n}: resources must not be empty"));
        }
        if t.resources.iter().collect::<HashSet<_>>().len() != t.resources.len() {
            return Err(format!("hub.ehr {n}: resources lists one twice"));
        }
        if !(1..=5000).contains(&t.batch_size) {
            return Err(format!("hub.ehr {n}: batch_size must be 1 to 5000"));
        }
        if t.max_backoff_ms < 100 {
            return Err(format!("hub.ehr {n}: max_backoff_ms must be at least 100"));
        }
        if t.timeout_ms < 100 {
            return Err(format!("hub.ehr {n}: timeout_ms must be at least 100"));
        }
        target_client(t).map_err(|e| format!("hub.ehr {n}: ca_file {e}"))?;
        if let Some(o) = &t.oauth2 {
            http_url(&o.token_url).map_err(|e| format!("hub.ehr {n}: oauth2.token_url {e}"))?;
            if o.client_id.is_empty() {
                return Err(format!("hub.ehr {n}: oauth2.client_id must not be empty"));
            }
            o.secret()
                .map_err(|e| format!("hub.ehr {n}: oauth2: {e}"))?;
        }
    }
    Ok(())
}

/// Why one post failed.
#[derive(Debug, thiserror::Error)]
enum PushError {
    /// Worth retrying: the target is down, busy, or refused the credentials.
    #[error("{msg}")]
    Retry {
        msg: String,
        retry_after: Option<Duration>,
    },
    /// The target will never accept this batch.
    #[error("{0}")]
    Poison(String),
    #[error("storage: {0}")]
    Store(#[from] StoreError),
}

impl PushError {
    fn retry(msg: impl Into<String>) -> Self {
        Self::Retry {
            msg: msg.into(),
            retry_after: None,
        }
    }
}

/// Exponential backoff with full jitter.
#[derive(Debug)]
struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    fn new(max: Duration) -> Self {
        Self {
            next: BACKOFF_MIN.min(max),
            max,
        }
    }
    fn reset(&mut self) {
        self.next = BACKOFF_MIN.min(self.max);
    }
    fn delay(&mut self) -> Duration {
        let cap = self.next;
        self.next = (self.next * 2).min(self.max);
        let ms = cap.as_millis().max(1) as u64;
        Duration::from_millis(rand::random_range(ms / 2..=ms))
    }
}

fn retry_after(h: &reqwest::header::HeaderMap) -> Option<Duration> {
    let s = h.get(header::RETRY_AFTER)?.to_str().ok()?;
    let secs: u64 = s.trim().parse().ok()?;
    Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER))
}

/// One target's worker.
struct Worker {
    store: Arc<dyn Store>,
    target: EhrTarget,
    http: reqwest::Client,
    tokens: Option<TokenSource>,
}

impl Worker {
    /// Posts one transaction Bundle and checks the answer covers every entry.
    async fn post(&self, bundle: &Bundle) -> Result<(), PushError> {
        let body = serde_json::to_vec(&Resource::Bundle(bundle.clone()))
            .map_err(|e| PushError::Poison(format!("cannot encode the bundle: {e}")))?;
        let mut refreshed = false;
        loop {
            let mut req = self
                .http
                .post(&self.target.url)
                .header(header::CONTENT_TYPE, FHIR_JSON)
                .header(header::ACCEPT, FHIR_JSON)
                .body(body.clone());
            if let Some(t) = &self.tokens {
                let token = t
                    .token()
                    .await
                    .map_err(|e| PushError::retry(e.to_string()))?;
                req = req.bearer_auth(token);
            }
            let resp = req.send().await.map_err(|e| {
                PushError::retry(format!("target unreachable: {}", e.without_url()))
            })?;
            let status = resp.status();
            if status.is_success() {
                let v: Value = resp.json().await.map_err(|_| {
                    PushError::retry(format!("target answered {status} without a JSON Bundle"))
                })?;
                let entries = v["entry"].as_array().map_or(0, Vec::len);
                if v["resourceType"] != "Bundle"
                    || v["type"] != "transaction-response"
                    || entries != bundle.entry.len()
                {
                    return Err(PushError::retry(format!(
                        "target answered {status} but not with a transaction-response for each of the {} entries",
                        bundle.entry.len()
                    )));
                }
                return Ok(());
            }
            let code = status.as_u16();
            if code == 401 && self.tokens.is_some() && !refreshed {
                refreshed = true;
                if let Some(t) = &self.tokens {
                    t.invalidate().await;
                }
                continue;
            }
            let after = retry_after(resp.headers());
            // Only the OperationOutcome's issue code: diagnostics may quote patient data.
            let issue = resp
                .json::<Value>()
                .await
                .ok()
                .and_then(|v| v["issue"][0]["code"].as_str().map(str::to_owned))
                .map(|c| format!(" ({c})"))
                .unwrap_or_default();
            let msg = format!("target answered {status}{issue}");
            return Err(match code {
                401 | 408 | 429 => PushError::Retry {
                    msg,
                    retry_after: after.filter(|_| code == 429),
                },
                400..=499 => PushError::Poison(msg),
                _ => PushError::Retry {
                    msg,
                    retry_after: after.filter(|_| code == 503),
                },
            });
        }
    }

    /// Posts `resources` in Bundles of `batch_size`.
    async fn post_all(&self, resources: Vec<Resource>) -> Result<(), PushError> {
        let mut it = resources.into_iter().peekable();
        while it.peek().is_some() {
            let part: Vec<Resource> = it.by_ref().take(self.target.batch_size).collect();
            self.post(&Bundle::transaction(part)).await?;
        }
        Ok(())
    }

    /// Handles the outcome of posting a batch covering (`from`, `to`] of `stream`.
    async fn settle(
        &self,
        stream: PushStream,
        from: i64,
        to: i64,
        count: u64,
        result: Result<(), PushError>,
    ) -> Result<(), PushError> {
        let name = &self.target.name;
        match result {
            Ok(()) => {
                self.store
                    .push_advanced(name, stream, to, count, Timestamp::now())
                    .await?;
                tracing::debug!(target_name = %name, stream = stream.as_str(), resources = count, "pushed to EHR");
                Ok(())
            }
            Err(PushError::Poison(error)) => {
                tracing::warn!(
                    target_name = %name,
                    stream = stream.as_str(),
                    resources = count,
                    %error,
                    "EHR target refused a batch; dead-lettered"
                );
                self.store
                    .push_dead_letter(
                        PushDeadLetter {
                            id: 0,
                            target: name.clone(),
                            stream,
                            from,
                            to,
                            resources: count,
                            error,
                            created: Timestamp::now(),
                        },
                        Timestamp::now(),
                    )
                    .await?;
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    async fn push_observations(&self, cursor: i64) -> Result<bool, PushError> {
        let entries = self
            .store
            .push_journal(cursor, self.target.batch_size)
            .await?;
        let Some(last) = entries.last().map(|e| e.seq) else {
            return Ok(false);
        };
        let resources: Vec<Resource> = entries
            .iter()
            .flat_map(|e| {
                e.readings
                    .iter()
                    .map(|r| Resource::Observation(vigil_fhir::observation(&e.patient, r)))
            })
            .collect();
        let n = resources.len() as u64;
        let result = self.post_all(resources).await;
        self.settle(PushStream::Observations, cursor, last, n, result)
            .await?;
        self.store.prune_push_journal().await?;
        Ok(true)
    }

    async fn push_alerts(&self, cursor: i64) -> Result<bool, PushError> {
        let transitions = self
            .store
            .alert_transitions(cursor, self.target.batch_size)
            .await?;
        let Some(last) = transitions.last().map(|t| t.id) else {
            return Ok(false);
        };
        // The Flag carries the alert's current state; PUT makes a resend harmless.
        let mut seen = HashSet::new();
        let mut resources = Vec::new();
        for t in &transitions {
            if seen.insert(t.alert_id)
                && let Some(a) = self.store.alert(t.alert_id).await?
            {
                resources.push(Resource::Flag(vigil_fhir::flag(&a)));
            }
        }
        let n = resources.len() as u64;
        let result = self.post_all(resources).await;
        self.settle(PushStream::Alerts, cursor, last, n, result)
            .await?;
        Ok(true)
    }

    /// Pushes the next batch of each stream; whether anything was pushed.
    async fn step(&self) -> Result<bool, PushError> {
        let state = self
            .store
            .push_target(&self.target.name)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("push target {}", self.target.name)))?;
        let mut any = false;
        for s in &self.target.resources {
            any |= match s {
                PushStream::Observations => {
                    self.push_observations(state.observation_cursor).await?
                }
                PushStream::Alerts => self.push_alerts(state.alert_cursor).await?,
            };
        }
        Ok(any)
    }

    async fn run(self) {
        let mut backoff = Backoff::new(Duration::from_millis(self.target.max_backoff_ms));
        loop {
            match self.step().await {
                Ok(true) => backoff.reset(),
                Ok(false) => {
                    backoff.reset();
                    tokio::time::sleep(POLL).await;
                }
                Err(e) => {
                    let wait = match &e {
                        PushError::Retry {
                            retry_after: Some(d),
                            ..
                        } => *d,
                        _ => backoff.delay(),
                    };
                    let msg = e.to_string();
                    tracing::warn!(target_name = %self.target.name, error = %msg, retry_in_ms = wait.as_millis() as u64, "EHR push failed");
                    if let Err(e) = self
                        .store
                        .push_failed(&self.target.name, &msg, Timestamp::now())
                        .await
                    {
                        tracing::warn!(error = %e, "cannot record an EHR push failure");
                    }
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

/// Registers the configured targets with the store and runs one worker per target until
/// aborted. Without targets it only stops the journal (and empties it).
pub async fn run(state: AppState) {
    let targets = state.config.ehr.clone();
    let specs = targets
        .iter()
        .map(|t| PushTargetSpec {
            name: t.name.clone(),
            observations: t.resources.contains(&PushStream::Observations),
            alerts: t.resources.contains(&PushStream::Alerts),
        })
        .collect::<Vec<_>>();
    let mut delay = BACKOFF_MIN;
    while let Err(e) = state.store.configure_push_targets(specs.clone()).await {
        tracing::warn!(error = %e, "cannot register EHR push targets; retrying");
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(30));
    }
    if let Err(e) = state.store.prune_push_journal().await {
        tracing::warn!(error = %e, "cannot prune the push journal");
    }
    let mut set = tokio::task::JoinSet::new();
    for t in targets {
        let http = match target_client(&t) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(target_name = %t.name, error = %e, "cannot build an HTTP client; target not pushed");
                continue;
            }
        };
        let tokens = match &t.oauth2 {
            None => None,
            Some(o) => match o.secret() {
                Ok(secret) => Some(TokenSource::new(
                    http.clone(),
                    o.token_url.clone(),
                    o.client_id.clone(),
                    secret,
                    o.auth,
                    o.scope.clone(),
                )),
                Err(e) => {
                    tracing::error!(target_name = %t.name, error = %e, "EHR target not pushed");
                    let _ = state.store.push_failed(&t.name, &e, Timestamp::now()).await;
                    continue;
                }
            },
        };
        tracing::info!(target_name = %t.name, "EHR push started");
        set.spawn(
            Worker {
                store: state.store.clone(),
                target: t,
                http,
                tokens,
            }
            .run(),
        );
    }
    while set.join_next().await.is_some() {}
}

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/ehr", get(status))
        .route("/api/v1/ehr/inbound", get(inbound))
        .merge(crate::oauth::routes())
}

/// Per-target lines for `/metrics` (durable counts, so they survive restarts).
pub(crate) async fn metrics(st: &AppState) -> Result<String, ApiError> {
    use std::fmt::Write;
    if st.config.ehr.is_empty() {
        return Ok(String::new());
    }
    let head = st.store.push_journal_head().await?;
    let transitions = st.store.latest_transition_id().await?;
    let mut out = String::from(
        "# TYPE vigil_hub_ehr_pushed_total counter\n\
         # TYPE vigil_hub_ehr_dead_lettered_total counter\n\
         # TYPE vigil_hub_ehr_failed_attempts gauge\n\
         # TYPE vigil_hub_ehr_lag gauge\n",
    );
    for s in st.store.push_targets().await?.iter().filter(|s| s.active) {
        // Target names are validated to [A-Za-z0-9._-]: safe as label values.
        let n = &s.name;
        let obs_lag = if s.observations {
            (head - s.observation_cursor).max(0)
        } else {
            0
        };
        let alert_lag = if s.alerts {
            (transitions - s.alert_cursor).max(0)
        } else {
            0
        };
        let _ = write!(
            out,
            "vigil_hub_ehr_pushed_total{{target=\"{n}\"}} {}\n\
             vigil_hub_ehr_dead_lettered_total{{target=\"{n}\"}} {}\n\
             vigil_hub_ehr_failed_attempts{{target=\"{n}\"}} {}\n\
             vigil_hub_ehr_lag{{target=\"{n}\",stream=\"observations\"}} {obs_lag}\n\
             vigil_hub_ehr_lag{{target=\"{n}\",stream=\"alerts\"}} {alert_lag}\n",
            s.pushed, s.dead_lettered, s.attempts
        );
    }
    Ok(out)
}

/// Each configured target's cursors, lag, failures and dead letters.
async fn status(State(st): State<AppState>, u: User) -> Result<Json<Value>, ApiError> {
    access::require_operator(&u)?;
    let head = st.store.push_journal_head().await?;
    let transitions = st.store.latest_transition_id().await?;
    let mut out = Vec::new();
    for t in &st.config.ehr {
        let s = st.store.push_target(&t.name).await?;
        let letters = st.store.push_dead_letters(Some(&t.name), 20).await?;
        let v = match s {
            None => {
                json!({"name": t.name, "url": t.url, "resources": t.resources, "state": "starting"})
            }
            Some(s) => json!({
                "name": t.name,
                "url": t.url,
                "resources": t.resources,
                "cursor": {"observations": s.observation_cursor, "alerts": s.alert_cursor},
                "lag": {
                    "observations": if s.observations { (head - s.observation_cursor).max(0) } else { 0 },
                    "alerts": if s.alerts { (transitions - s.alert_cursor).max(0) } else { 0 },
                },
                "attempts": s.attempts,
                "last_error": s.last_error,
                "last_error_at": s.last_error_at,
                "last_success_at": s.last_success_at,
                "pushed": s.pushed,
                "dead_lettered": s.dead_lettered,
                "dead_letters": letters,
            }),
        };
        out.push(v);
    }
    Ok(Json(json!({"count": out.len(), "targets": out})))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InboundParams {
    #[serde(rename = "type")]
    resource_type: Option<String>,
    /// `system|value`
    identifier: Option<String>,
    limit: Option<usize>,
}

/// FHIR resources other systems pushed to this hub (`POST /fhir/r4`).
async fn inbound(
    State(st): State<AppState>,
    u: User,
    ApiQuery(q): ApiQuery<InboundParams>,
) -> Result<Json<Value>, ApiError> {
    access::require_operator(&u)?;
    let identifier = q
        .identifier
        .map(|i| match i.split_once('|') {
            Some((s, v)) if !s.is_empty() && !v.is_empty() => Ok((s.to_owned(), v.to_owned())),
            _ => Err(ApiError::bad(
                "invalid_identifier",
                "identifier must be system|value",
            )),
        })
        .transpose()?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=10_000).contains(&limit) {
        return Err(ApiError::bad(
            "invalid_limit",
            "limit must be between 1 and 10000",
        ));
    }
    let (list, total) = st
        .store
        .inbound_resources(InboundFilter {
            resource_type: q.resource_type,
            identifier,
            limit,
        })
        .await?;
    Ok(Json(
        json!({"total": total, "count": list.len(), "resources": list}),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> EhrTarget {
        serde_json::from_value(json!({"name": "ehr", "url": "http://127.0.0.1:9/fhir"}))
            .expect("target")
    }

    #[test]
    fn a_minimal_target_takes_defaults_and_bad_ones_are_refused_at_start() {
        let t = target();
        assert_eq!(t.resources, [PushStream::Observations, PushStream::Alerts]);
        assert!(validate(std::slice::from_ref(&t)).is_ok());
        assert!(validate(&[t.clone(), t.clone()]).is_err(), "duplicate name");
        let mut bad = t.clone();
        bad.url = "ftp://x".into();
        assert!(validate(&[bad]).is_err());
        let mut good = t.clone();
        good.url = "https://ehr.example.org/fhir".into();
        validate(&[good]).expect("https targets are reached over TLS");
        let mut bad = t.clone();
        bad.url = "ftp://ehr.example.org/fhir".into();
        assert!(validate(&[bad]).is_err());
        let mut bad = t.clone();
        bad.ca_file = Some("/nonexistent/ehr-ca.pem".into());
        let e = validate(&[bad]).expect_err("a CA file that cannot be read");
        assert!(e.contains("ca_file"), "{e}");
        let mut bad = t.clone();
        bad.batch_size = 0;
        assert!(validate(&[bad]).is_err());
        let mut bad = t.clone();
        bad.resources.clear();
        assert!(validate(&[bad]).is_err());
        let mut bad = t.clone();
        bad.oauth2 = Some(OAuth2Config {
            token_url: "http://127.0.0.1:9/oauth2/token".into(),
            client_id: "c".into(),
            client_secret_file: Some("/nonexistent/secret".into()),
            client_secret_env: None,
            auth: ClientAuth::Basic,
            scope: None,
        });
        let e = validate(&[bad]).expect_err("unreadable secret");
        assert!(e.contains("client_secret_file"), "{e}");
        assert!(
            serde_json::from_value::<EhrTarget>(
                json!({"name": "e", "url": "http://h", "resources": ["labs"]})
            )
            .is_err()
        );
    }

    /// A loopback FHIR server that answers each request with the next scripted answer, and
    /// a token endpoint that counts the tokens it issued.
    async fn scripted(
        answers: Vec<(u16, Option<&'static str>, Value)>,
    ) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        use axum::response::IntoResponse;
        use std::sync::atomic::{AtomicUsize, Ordering};
        let answers = Arc::new(std::sync::Mutex::new(answers.into_iter()));
        let tokens = Arc::new(AtomicUsize::new(0));
        let issued = tokens.clone();
        let app = Router::new()
            .route(
                "/fhir",
                axum::routing::post(move || {
                    let next = answers.lock().ok().and_then(|mut a| a.next());
                    async move {
                        let (status, retry_after, body) =
                            next.unwrap_or((500, None, Value::Null));
                        let mut r = (
                            axum::http::StatusCode::from_u16(status).unwrap_or_default(),
                            body.to_string(),
                        )
                            .into_response();
                        if let Some(ra) = retry_after {
                            r.headers_mut().insert(
                                header::RETRY_AFTER,
                                axum::http::HeaderValue::from_static(ra),
                            );
                        }
                        r
                    }
                }),
            )
            .route(
                "/token",
                axum::routing::post(move || {
                    let n = issued.fetch_add(1, Ordering::SeqCst);
                    async move {
                        Json(json!({"access_token": format!("t{n}"), "token_type": "Bearer", "expires_in": 900}))
                    }
                }),
            );
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = l.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(l, app).await });
        (format!("http://{addr}"), tokens)
    }

    fn worker(base: &str, oauth: bool) -> (tempfile::TempDir, Worker) {
        let dir = tempfile::tempdir().expect("dir");
        let store = vigil_store::sqlite::SqliteStore::open(dir.path().join("hub.db")).expect("db");
        let mut target = target();
        target.url = format!("{base}/fhir");
        vigil_tls::install_default_provider();
        let http = reqwest::Client::new();
        let tokens = oauth.then(|| {
            TokenSource::new(
                http.clone(),
                format!("{base}/token"),
                "c".into(),
                "s".into(),
                ClientAuth::Basic,
                None,
            )
        });
        let w = Worker {
            store: Arc::new(store),
            target,
            http,
            tokens,
        };
        (dir, w)
    }

    fn one_flag_bundle() -> Bundle {
        Bundle::transaction(vec![Resource::Flag(vigil_fhir::Flag {
            id: Some("f1".into()),
            status: "active".into(),
            ..Default::default()
        })])
    }

    fn response(entries: usize) -> Value {
        json!({"resourceType": "Bundle", "type": "transaction-response",
               "entry": vec![json!({"response": {"status": "200 OK"}}); entries]})
    }

    #[tokio::test]
    async fn answers_are_classified_retry_after_honoured_and_4xx_poison() {
        let oo = json!({"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "processing", "diagnostics": "patient p-1 unknown"}]});
        let (base, _) = scripted(vec![
            (503, Some("7"), Value::Null),
            (429, Some("3"), Value::Null),
            (500, Some("9"), Value::Null),
            (408, None, Value::Null),
            (422, None, oo),
            (200, None, response(0)),
            (200, None, response(1)),
        ])
        .await;
        let (_d, w) = worker(&base, false);
        let b = one_flag_bundle();
        let retry = |r: Result<(), PushError>| match r {
            Err(PushError::Retry { retry_after, msg }) => (retry_after, msg),
            other => panic!("a retry, got {other:?}"),
        };
        assert_eq!(retry(w.post(&b).await).0, Some(Duration::from_secs(7)));
        assert_eq!(retry(w.post(&b).await).0, Some(Duration::from_secs(3)));
        assert_eq!(
            retry(w.post(&b).await).0,
            None,
            "Retry-After only on 429 and 503"
        );
        assert_eq!(retry(w.post(&b).await).0, None);
        match w.post(&b).await {
            Err(PushError::Poison(msg)) => {
                assert!(msg.contains("422") && msg.contains("(processing)"), "{msg}");
                assert!(!msg.contains("p-1"), "diagnostics are not kept: {msg}");
            }
            other => panic!("poison, got {other:?}"),
        }
        assert!(retry(w.post(&b).await).1.contains("transaction-response"));
        assert!(w.post(&b).await.is_ok());
    }

    #[tokio::test]
    async fn a_401_fetches_a_new_token_once_then_counts_as_a_failure() {
        let (base, issued) = scripted(vec![
            (401, None, Value::Null),
            (200, None, response(1)),
            (401, None, Value::Null),
            (401, None, Value::Null),
        ])
        .await;
        let (_d, w) = worker(&base, true);
        let b = one_flag_bundle();
        assert!(w.post(&b).await.is_ok());
        assert_eq!(issued.load(std::sync::atomic::Ordering::SeqCst), 2);
        assert!(matches!(w.post(&b).await, Err(PushError::Retry { .. })));
        assert_eq!(issued.load(std::sync::atomic::Ordering::SeqCst), 3);
    }

    #[test]
    fn backoff_grows_to_its_cap_with_jitter_below_it() {
        let mut b = Backoff::new(Duration::from_secs(2));
        let delays: Vec<Duration> = (0..10).map(|_| b.delay()).collect();
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(2)));
        assert!(delays[9] >= Duration::from_secs(1), "{delays:?}");
        b.reset();
        assert!(b.delay() <= BACKOFF_MIN);
    }
}

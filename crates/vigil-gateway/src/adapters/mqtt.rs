//! MQTT device ingress (MQTT 3.1.1, rumqttc).
//!
//! # Topics
//!
//! Devices (or their bridges) publish to `{topic_prefix}/{device_id}/{format}`, prefix
//! `vigil/devices` by default:
//!
//! - `json`: a canonical [`Record`] (`{"reading": {...}}` or `{"event": {...}}`), an array of
//!   them, or `{"records": [...]}` as on `POST /v1/records`. A record's `device` must equal the
//!   topic's device id; when absent it is filled from the topic. `source` defaults to `mqtt`.
//! - any format name of [`vigil_devices::decoder_for`], with `:` written as `_` or
//!   percent-encoded (`%3A`): `vigil/devices/strap-7/ble_2A37` carries the raw bytes of one
//!   GATT notification, `vigil/devices/monitor-3/hl7` one or more HL7 ORU^R01 messages.
//!
//! The gateway stamps every record with its own receive time.
//!
//! # Delivery
//!
//! The adapter subscribes with QoS 1 in a persistent session (`clean_session = false`, a
//! stable client id), so the broker keeps messages published while the gateway is down. Acks
//! are manual: a message is acknowledged (PUBACK) only after its records are committed to the
//! outbox, or, when it cannot be decoded, after its raw payload is committed to the local
//! [`Quarantine`](super::Quarantine) with the topic, the reason and the time (the outbox holds
//! canonical records only, and an unacknowledged message would be redelivered forever).
//! While the outbox refuses (full) or fails, the message is retried with backoff and not
//! acknowledged, so the broker keeps it: backpressure, no loss. PUBACKs go out in the order
//! the messages arrived, as MQTT requires.
//!
//! rumqttc does not re-subscribe after a reconnect: the adapter subscribes again on every
//! ConnAck. A message received on a connection that has since dropped is committed but not
//! acknowledged on the new connection; the broker redelivers it (DUP) on session resume and
//! the adapter recognises the redelivery (same packet id, topic and payload as a message it
//! committed) and acknowledges it without committing it twice. A crash of the gateway after the
//! commit and before the PUBACK reaches the broker can still store a message twice (the
//! outbox has no idempotency key yet): between receipt and commit a crash loses nothing.
//!
//! The connection is supervised forever: reconnects back off exponentially with full jitter.

use crate::adapters::{AdapterState, Quarantine, backoff, sleep_or_stop};
use rumqttc::{
    AsyncClient, Event, MqttOptions, Outgoing, Packet, Publish, QoS, SubscribeReasonCode,
};
use serde_json::Value;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use vigil_devices::templates::TemplateStore;
use vigil_devices::{DecodeContext, decoder_for};
use vigil_model::{DeviceId, Record, Timestamp};

/// Settings of the MQTT device ingress (`[gateway.mqtt]`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MqttConfig {
    /// The broker, `host:port` (`[::1]:1883` for IPv6).
    pub broker: String,
    /// The MQTT client id; it names the persistent session, so keep it stable. Empty: derived
    /// from the gateway id (`vigil-gw-{id}`).
    pub client_id: String,
    /// Topic prefix; the adapter subscribes to `{topic_prefix}/+/+`.
    pub topic_prefix: String,
    pub username: Option<String>,
    /// Prefer `VIGIL_GATEWAY__MQTT__PASSWORD` or a password file.
    #[serde(skip_serializing)]
    pub password: Option<String>,
    pub keep_alive_s: u64,
    pub reconnect_min_ms: u64,
    pub reconnect_max_ms: u64,
    /// Largest MQTT packet accepted, in bytes.
    pub max_packet_bytes: usize,
    /// Most messages committed in one outbox transaction.
    pub batch_max_messages: usize,
    /// The quarantine of undecodable messages; default `quarantine.db` next to the outbox.
    pub quarantine_path: Option<PathBuf>,
    /// Payload bytes the quarantine keeps; past it, entries keep metadata only.
    pub quarantine_max_bytes: u64,
    /// Vendor JSON template sets by name (a template file or directory each, reloaded when
    /// they change): `{topic_prefix}/{device}/template_{name}` decodes with set `name`. A
    /// topic can only name a configured set, never a path.
    pub templates: std::collections::BTreeMap<String, PathBuf>,
    /// Test hook: on the first message received, drop the connection, the worker and the
    /// message without committing or acknowledging it, as a crash between receipt and commit.
    #[doc(hidden)]
    #[serde(skip)]
    pub crash_before_commit: bool,
    /// Test hook: on the first message received, abort the whole process before the commit
    /// (set by the `vigil` binary from `VIGIL_FAULT=mqtt-abort-before-commit`).
    #[doc(hidden)]
    #[serde(skip)]
    pub abort_process_before_commit: bool,
    /// Test hook: wait this long between the commit and the PUBACKs of a batch.
    #[doc(hidden)]
    #[serde(skip)]
    pub delay_before_ack_ms: u64,
}

impl Default for MqttConfig {
    fn default() -> Self {
        Self {
            broker: "127.0.0.1:1883".into(),
            client_id: String::new(),
            topic_prefix: "vigil/devices".into(),
            username: None,
            password: None,
            keep_alive_s: 30,
            reconnect_min_ms: 200,
            reconnect_max_ms: 30_000,
            max_packet_bytes: 4 << 20,
            batch_max_messages: 256,
            quarantine_path: None,
            quarantine_max_bytes: Quarantine::DEFAULT_MAX_BYTES,
            templates: Default::default(),
            crash_before_commit: false,
            abort_process_before_commit: false,
            delay_before_ack_ms: 0,
        }
    }
}

impl MqttConfig {
    /// The client id in use: `client_id`, or `vigil-gw-{gateway_id}`.
    pub fn effective_client_id(&self, gateway_id: &str) -> String {
        if self.client_id.is_empty() {
            format!("vigil-gw-{gateway_id}")
        } else {
            self.client_id.clone()
        }
    }

    /// Host and port of `broker`.
    fn host_port(&self) -> Result<(String, u16), String> {
        let (host, port) = self
            .broker
            .rsplit_once(':')
            .ok_or_else(|| format!("mqtt.broker {:?} is not host:port", self.broker))?;
        let port = port
            .parse::<u16>()
            .map_err(|_| format!("mqtt.broker {:?} has no valid port", self.broker))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(format!("mqtt.broker {:?} has no host", self.broker));
        }
        Ok((host.to_owned(), port))
    }

    fn check(&self) -> Result<(), String> {
        self.host_port()?;
        let p = &self.topic_prefix;
        if p.is_empty() || p.contains(['+', '#', '\0']) || p.starts_with('/') || p.ends_with('/') {
            return Err(format!(
                "mqtt.topic_prefix {p:?} must be a topic without wildcards or outer slashes"
            ));
        }
        if self.max_packet_bytes < 1024 || self.batch_max_messages == 0 {
            return Err("mqtt.max_packet_bytes must be >= 1024 and batch_max_messages >= 1".into());
        }
        Ok(())
    }
}

/// Counters of the MQTT adapter.
#[derive(Debug, Default)]
pub(crate) struct MqttCounters {
    broker: String,
    client_id: String,
    connected: AtomicBool,
    subscribed: AtomicBool,
    /// Bumped on every ConnAck and every connection error: tags messages with their connection.
    generation: AtomicU64,
    connects_total: AtomicU64,
    connection_errors_total: AtomicU64,
    subscriptions_total: AtomicU64,
    messages_total: AtomicU64,
    committed_total: AtomicU64,
    records_total: AtomicU64,
    quarantined_total: AtomicU64,
    redeliveries_total: AtomicU64,
    last_error: Mutex<Option<String>>,
}

/// A snapshot of the MQTT adapter's counters.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MqttStatus {
    pub broker: String,
    pub client_id: String,
    pub connected: bool,
    /// The subscription is confirmed on the current connection.
    pub subscribed: bool,
    pub connects_total: u64,
    pub connection_errors_total: u64,
    /// SubAcks received (one per connection when all is well).
    pub subscriptions_total: u64,
    pub messages_total: u64,
    /// Messages whose records were committed to the outbox.
    pub committed_total: u64,
    pub records_total: u64,
    /// Messages kept in the local quarantine.
    pub quarantined_total: u64,
    /// Redeliveries of messages already committed, acknowledged without a second commit.
    pub redeliveries_total: u64,
    pub last_error: Option<String>,
}

impl MqttCounters {
    pub(crate) fn snapshot(&self) -> MqttStatus {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        MqttStatus {
            broker: self.broker.clone(),
            client_id: self.client_id.clone(),
            connected: self.connected.load(Ordering::Relaxed),
            subscribed: self.subscribed.load(Ordering::Relaxed),
            connects_total: l(&self.connects_total),
            connection_errors_total: l(&self.connection_errors_total),
            subscriptions_total: l(&self.subscriptions_total),
            messages_total: l(&self.messages_total),
            committed_total: l(&self.committed_total),
            records_total: l(&self.records_total),
            quarantined_total: l(&self.quarantined_total),
            redeliveries_total: l(&self.redeliveries_total),
            last_error: self.last_error.lock().ok().and_then(|e| e.clone()),
        }
    }

    fn error(&self, msg: String) {
        if let Ok(mut e) = self.last_error.lock() {
            *e = Some(msg);
        }
    }
}

/// Starts the adapter. Returns its task; it runs until `stop` turns true.
pub(crate) fn start(
    cfg: MqttConfig,
    gateway_id: &str,
    outbox: crate::edge::Intake,
    quarantine: Quarantine,
    state: &mut AdapterState,
    stop: watch::Receiver<bool>,
) -> Result<JoinHandle<()>, String> {
    cfg.check()?;
    let (host, port) = cfg.host_port()?;
    let client_id = cfg.effective_client_id(gateway_id);
    let mut opts = MqttOptions::new(client_id.clone(), host, port);
    opts.set_clean_session(false)
        .set_manual_acks(true)
        .set_keep_alive(Duration::from_secs(cfg.keep_alive_s.max(5)))
        .set_max_packet_size(cfg.max_packet_bytes, cfg.max_packet_bytes);
    if let Some(user) = &cfg.username {
        opts.set_credentials(user.clone(), cfg.password.clone().unwrap_or_default());
    }
    let counters = Arc::new(MqttCounters {
        broker: cfg.broker.clone(),
        client_id,
        ..MqttCounters::default()
    });
    state.mqtt = Some(counters.clone());
    let mut templates = Templates::new();
    for (name, path) in &cfg.templates {
        let store = TemplateStore::open(path, Duration::from_secs(2))
            .map_err(|e| format!("template set {name:?}: {e}"))?;
        for w in store.warnings() {
            tracing::warn!(set = %name, warning = %w, "template warning");
        }
        templates.insert(name.to_ascii_lowercase(), store);
    }
    let ingest = Arc::new(Ingest {
        templates,
        filter: format!("{}/+/+", cfg.topic_prefix),
        cfg,
        outbox,
        quarantine,
        counters,
    });
    Ok(tokio::spawn(run(ingest, opts, stop)))
}

/// What the event loop and the worker share.
#[derive(Debug)]
struct Ingest {
    cfg: MqttConfig,
    templates: Templates,
    filter: String,
    outbox: crate::edge::Intake,
    quarantine: Quarantine,
    counters: Arc<MqttCounters>,
}

/// Configured template sets by lower-case name.
pub(crate) type Templates = std::collections::HashMap<String, TemplateStore>;

/// A message and the connection generation it arrived on.
type Received = (Publish, u64);

/// Longest a stopping adapter waits for the message in hand and its PUBACK.
const DRAIN: Duration = Duration::from_secs(5);

async fn run(ingest: Arc<Ingest>, opts: MqttOptions, stop: watch::Receiver<bool>) {
    let c = ingest.counters.clone();
    let (client, mut eventloop) = AsyncClient::new(opts, 1024);
    let (tx, rx) = mpsc::unbounded_channel::<Received>();
    let mut worker = tokio::spawn(work(ingest.clone(), client.clone(), rx, stop.clone()));
    let mut failures = 0u32;
    let mut stop_rx = stop.clone();
    tracing::info!(broker = %ingest.cfg.broker, client_id = %c.client_id, "MQTT adapter started");
    loop {
        let ev = tokio::select! {
            _ = super::stopped(&mut stop_rx) => break,
            ev = eventloop.poll() => ev,
        };
        match ev {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                failures = 0;
                c.generation.fetch_add(1, Ordering::AcqRel);
                c.connected.store(true, Ordering::Relaxed);
                c.connects_total.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    session_present = ack.session_present,
                    "MQTT connected; subscribing to {}",
                    ingest.filter
                );
                // rumqttc does not re-subscribe after a reconnect: do it on every ConnAck.
                // try_subscribe: never block the event loop on its own request channel.
                if let Err(e) = client.try_subscribe(ingest.filter.clone(), QoS::AtLeastOnce) {
                    c.error(format!("subscribe request failed: {e}"));
                    tracing::error!(error = %e, "MQTT subscribe request failed");
                }
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                if ack
                    .return_codes
                    .iter()
                    .any(|r| matches!(r, SubscribeReasonCode::Failure))
                {
                    c.error(format!(
                        "broker refused the subscription to {}",
                        ingest.filter
                    ));
                    tracing::error!(filter = %ingest.filter, "MQTT subscription refused");
                } else {
                    c.subscribed.store(true, Ordering::Relaxed);
                    c.subscriptions_total.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                c.messages_total.fetch_add(1, Ordering::Relaxed);
                if ingest.cfg.abort_process_before_commit {
                    eprintln!("fault injection: aborting the gateway between receipt and commit");
                    std::process::abort();
                }
                if ingest.cfg.crash_before_commit {
                    tracing::warn!("MQTT fault injection: dropping the adapter before the commit");
                    c.error("fault injection: crashed before commit".into());
                    c.connected.store(false, Ordering::Relaxed);
                    worker.abort();
                    return; // drops the event loop (the connection) without any PUBACK
                }
                let generation = c.generation.load(Ordering::Acquire);
                if tx.send((p, generation)).is_err() {
                    break;
                }
            }
            Ok(_) => {}
            Err(e) => {
                c.generation.fetch_add(1, Ordering::AcqRel);
                c.connected.store(false, Ordering::Relaxed);
                c.subscribed.store(false, Ordering::Relaxed);
                c.connection_errors_total.fetch_add(1, Ordering::Relaxed);
                c.error(format!("connection: {e}"));
                tracing::warn!(error = %e, failures, "MQTT connection failed; retrying");
                let d = backoff(
                    ingest.cfg.reconnect_min_ms,
                    ingest.cfg.reconnect_max_ms,
                    failures,
                );
                failures = failures.saturating_add(1);
                if sleep_or_stop(&stop, d).await {
                    break;
                }
            }
        }
    }
    // Stopping: the worker finishes the batch in hand; keep polling so its PUBACKs go out.
    drop(tx);
    let deadline = tokio::time::sleep(DRAIN);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = &mut worker => break,
            _ = &mut deadline => { worker.abort(); break; }
            ev = eventloop.poll() => if ev.is_err() { worker.abort(); break; },
        }
    }
    if c.connected.load(Ordering::Relaxed) && client.try_disconnect().is_ok() {
        let flush = async {
            while let Ok(ev) = eventloop.poll().await {
                if matches!(ev, Event::Outgoing(Outgoing::Disconnect)) {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), flush).await;
    }
    c.connected.store(false, Ordering::Relaxed);
    c.subscribed.store(false, Ordering::Relaxed);
    tracing::info!("MQTT adapter stopped");
}

/// What to do with one message of a batch.
enum Plan {
    /// Its records are in the batch's append.
    Commit,
    Quarantine(String),
    /// A redelivery of a message already committed.
    Redelivered,
}

fn message_key(p: &Publish) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    p.topic.hash(&mut h);
    p.payload.hash(&mut h);
    h.finish()
}

/// Decodes, commits and acknowledges messages in arrival order, a batch at a time.
async fn work(
    ingest: Arc<Ingest>,
    client: AsyncClient,
    mut rx: mpsc::UnboundedReceiver<Received>,
    stop: watch::Receiver<bool>,
) {
    let c = &ingest.counters;
    // Packet id -> key of the last message committed under it.
    let mut committed: HashMap<u16, u64> = HashMap::new();
    let mut stop_rx = stop.clone();
    loop {
        let first = tokio::select! {
            m = rx.recv() => m,
            _ = super::stopped(&mut stop_rx) => None,
        };
        let Some(first) = first else { return };
        let mut batch = vec![first];
        while batch.len() < ingest.cfg.batch_max_messages {
            match rx.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        let now = Timestamp::now();
        let mut records = Vec::new();
        let mut plans = Vec::with_capacity(batch.len());
        for (p, _) in &batch {
            let key = message_key(p);
            if p.dup && committed.get(&p.pkid) == Some(&key) {
                plans.push(Plan::Redelivered);
                continue;
            }
            match decode(
                &ingest.cfg.topic_prefix,
                &ingest.templates,
                &p.topic,
                &p.payload,
                now,
            ) {
                Ok(recs) => {
                    plans.push(Plan::Commit);
                    records.extend(recs);
                    committed.insert(p.pkid, key);
                }
                Err(reason) => {
                    committed.remove(&p.pkid);
                    plans.push(Plan::Quarantine(reason));
                }
            }
        }
        // Quarantine first, then the records, each committed before any PUBACK.
        for ((p, _), plan) in batch.iter().zip(&plans) {
            if let Plan::Quarantine(reason) = plan {
                let mut failures = 0;
                loop {
                    match ingest
                        .quarantine
                        .put("mqtt", &p.topic, reason, &p.payload, now)
                        .await
                    {
                        Ok(_) => break,
                        Err(e) => {
                            c.error(format!("quarantine: {e}"));
                            tracing::error!(error = %e, "MQTT: quarantine write failed; retrying");
                            failures += 1;
                            if sleep_or_stop(&stop, backoff(200, 30_000, failures)).await {
                                return;
                            }
                        }
                    }
                }
                // The code only: details (JSON errors) may quote field values.
                let code = reason.split(':').next().unwrap_or_default();
                tracing::warn!(topic = %p.topic, reason = code, "MQTT message quarantined");
                tracing::debug!(topic = %p.topic, reason = %reason, "MQTT quarantine detail");
            }
        }
        if !records.is_empty() {
            let n = records.len() as u64;
            let mut failures = 0;
            loop {
                match ingest.outbox.append(records.clone()).await {
                    Ok(_) => break,
                    Err(e) => {
                        c.error(format!("outbox: {e}"));
                        tracing::warn!(error = %e, "MQTT: outbox append refused; retrying, not acknowledging");
                        failures += 1;
                        if sleep_or_stop(&stop, backoff(200, 30_000, failures)).await {
                            return;
                        }
                    }
                }
            }
            c.records_total.fetch_add(n, Ordering::Relaxed);
        }
        if ingest.cfg.delay_before_ack_ms > 0
            && sleep_or_stop(&stop, Duration::from_millis(ingest.cfg.delay_before_ack_ms)).await
        {
            return;
        }
        for ((p, generation), plan) in batch.iter().zip(plans) {
            match plan {
                Plan::Commit => c.committed_total.fetch_add(1, Ordering::Relaxed),
                Plan::Quarantine(_) => c.quarantined_total.fetch_add(1, Ordering::Relaxed),
                Plan::Redelivered => c.redeliveries_total.fetch_add(1, Ordering::Relaxed),
            };
            // A message from a connection that has dropped is not acknowledged on the new
            // one: the broker redelivers it there, and that copy is acknowledged.
            if *generation != c.generation.load(Ordering::Acquire) {
                continue;
            }
            if client.ack(p).await.is_err() {
                return;
            }
        }
    }
}

/// Decodes one message into records, or says why it cannot be (`code: detail`).
pub(crate) fn decode(
    prefix: &str,
    templates: &Templates,
    topic: &str,
    payload: &[u8],
    now: Timestamp,
) -> Result<Vec<Record>, String> {
    let rest = topic
        .strip_prefix(prefix)
        .and_then(|r| r.strip_prefix('/'))
        .ok_or_else(|| format!("bad_topic: not under {prefix}/"))?;
    let mut parts = rest.split('/');
    let (Some(device), Some(format), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err("bad_topic: expected {prefix}/{device_id}/{format}".into());
    };
    let device = percent_decode(device).ok_or("bad_topic: bad percent-encoding")?;
    let device = DeviceId::new(device).map_err(|e| format!("invalid_device: {e}"))?;
    let format = percent_decode(format)
        .ok_or("bad_topic: bad percent-encoding")?
        .replace('_', ":")
        .to_ascii_lowercase();
    let mut records = if format == "json" {
        decode_json(payload, &device)?
    } else if let Some(name) = format.strip_prefix("template") {
        // Only configured sets: a topic must never make the gateway read a path it names.
        let name = name.trim_start_matches(':');
        let store = templates
            .get(name)
            .ok_or_else(|| format!("unknown_format: no template set {name:?} is configured"))?;
        let ctx = DecodeContext::new(device, now);
        let out = store
            .current()
            .decode(payload, &ctx)
            .map_err(|e| format!("undecodable: {e}"))?;
        if out.readings.is_empty() {
            return Err(format!(
                "unmapped: the template matched but mapped no value to a known code ({} unmapped)",
                out.unmapped.len()
            ));
        }
        out.readings.into_iter().map(Record::Reading).collect()
    } else {
        let decoder = decoder_for(&format).ok_or_else(|| format!("unknown_format: {format:?}"))?;
        let ctx = DecodeContext::new(device, now);
        decoder
            .decode(payload, &ctx)
            .map_err(|e| format!("undecodable: {e}"))?
            .into_iter()
            .flat_map(|d| d.into_records())
            .collect()
    };
    if records.len() > vigil_sync::MAX_RECORDS {
        return Err(format!(
            "too_many_records: at most {} per message",
            vigil_sync::MAX_RECORDS
        ));
    }
    for r in &mut records {
        r.set_received(now);
    }
    Ok(records)
}

fn decode_json(payload: &[u8], device: &DeviceId) -> Result<Vec<Record>, String> {
    let v: Value = serde_json::from_slice(payload).map_err(|e| format!("invalid_json: {e}"))?;
    let items = match v {
        Value::Array(a) => a,
        Value::Object(mut m) if m.len() == 1 && m.contains_key("records") => {
            match m.remove("records") {
                Some(Value::Array(a)) => a,
                _ => return Err("invalid_json: records must be an array".into()),
            }
        }
        obj @ Value::Object(_) => vec![obj],
        _ => return Err("invalid_json: expected a record or an array of records".into()),
    };
    items
        .into_iter()
        .map(|mut item| {
            if let Value::Object(outer) = &mut item {
                for inner in outer.values_mut() {
                    let Value::Object(inner) = inner else {
                        continue;
                    };
                    match inner.get("device") {
                        None | Some(Value::Null) => {
                            inner.insert("device".into(), Value::from(device.as_str()));
                        }
                        Some(Value::String(d)) if d == device.as_str() => {}
                        Some(_) => {
                            return Err(
                                "device_mismatch: a record names another device than its topic"
                                    .to_owned(),
                            );
                        }
                    }
                    inner.entry("source").or_insert_with(|| Value::from("mqtt"));
                }
            }
            serde_json::from_value::<Record>(item).map_err(|e| format!("invalid_record: {e}"))
        })
        .collect()
}

/// `%XX` decoding; `None` for a malformed escape or non-UTF-8 result.
fn percent_decode(s: &str) -> Option<String> {
    if !s.contains('%') {
        return Some(s.to_owned());
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(c);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "vigil/devices";

    #[test]
    fn topics_name_only_configured_template_sets_never_paths() {
        let now = Timestamp::from_secs(1_700_000_000);
        let dir = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../vigil-devices/templates/fitbit"
        );
        let mut sets = Templates::new();
        sets.insert(
            "fitbit".into(),
            TemplateStore::open(dir, Duration::from_secs(60)).expect("shipped templates load"),
        );
        for t in [
            "vigil/devices/w-1/template_%2Fetc%2Fpasswd",
            "vigil/devices/w-1/template%3A..%2F..%2Fsecrets",
            "vigil/devices/w-1/template_unknown",
        ] {
            let e = decode(P, &sets, t, b"{}", now).expect_err("must not read paths");
            assert!(e.starts_with("unknown_format"), "{t}: {e}");
        }
        let e = decode(
            P,
            &sets,
            "vigil/devices/w-1/template_fitbit",
            b"{\"nothing\": 1}",
            now,
        )
        .expect_err("no match");
        assert!(e.starts_with("undecodable"), "{e}");
    }

    #[test]
    fn topics_name_device_and_format() {
        let now = Timestamp::from_secs(1_700_000_000);
        for t in [
            "vigil/devices/strap-7/ble_2A37",
            "vigil/devices/strap-7/ble%3A2A37",
            "vigil/devices/strap-7/BLE%3a2a37",
        ] {
            let r = decode(P, &Templates::new(), t, &[0x00, 0x48], now).expect("decodes");
            assert_eq!(r.len(), 1, "{t}");
            assert_eq!(r[0].device().as_str(), "strap-7");
            assert_eq!(r[0].received(), Some(now));
        }
        let err =
            |t: &str, p: &[u8]| decode(P, &Templates::new(), t, p, now).expect_err("must fail");
        assert!(err("vigil/devices/strap-7", b"").starts_with("bad_topic"));
        assert!(err("vigil/devices/a/b/c", b"").starts_with("bad_topic"));
        assert!(err("other/strap-7/json", b"{}").starts_with("bad_topic"));
        assert!(err("vigil/devices/strap-7/ble%zz", b"").starts_with("bad_topic"));
        assert!(err("vigil/devices/bad id/json", b"{}").starts_with("invalid_device"));
        assert!(err("vigil/devices/strap-7/cbor", b"").starts_with("unknown_format"));
        assert!(err("vigil/devices/strap-7/ble_2A37", b"").starts_with("undecodable"));
    }

    #[test]
    fn json_records_take_the_topic_device() {
        let now = Timestamp::from_secs(1_700_000_100);
        let one = br#"{"reading":{"code":"8867-4","value":72,"time":"2024-05-01T12:00:00Z"}}"#;
        let r = decode(P, &Templates::new(), "vigil/devices/d-1/json", one, now).expect("decodes");
        assert_eq!(r[0].device().as_str(), "d-1");
        assert_eq!(r[0].received(), Some(now));
        let Record::Reading(reading) = &r[0] else {
            panic!("a reading")
        };
        assert_eq!(reading.source, vigil_model::Source::Mqtt);
        let many = br#"[{"reading":{"device":"d-1","code":"8867-4","value":72,"time":"2024-05-01T12:00:00Z"}},
                        {"reading":{"code":"8867-4","value":73,"time":"2024-05-01T12:00:01Z"}}]"#;
        assert_eq!(
            decode(P, &Templates::new(), "vigil/devices/d-1/json", many, now).map(|r| r.len()),
            Ok(2)
        );
        let wrapped = br#"{"records":[{"reading":{"code":"8867-4","value":72,"time":"2024-05-01T12:00:00Z"}}]}"#;
        assert_eq!(
            decode(P, &Templates::new(), "vigil/devices/d-1/json", wrapped, now).map(|r| r.len()),
            Ok(1)
        );
        let other = br#"{"reading":{"device":"d-2","code":"8867-4","value":72,"time":"2024-05-01T12:00:00Z"}}"#;
        assert!(
            decode(P, &Templates::new(), "vigil/devices/d-1/json", other, now)
                .expect_err("mismatch")
                .starts_with("device_mismatch")
        );
        assert!(
            decode(
                P,
                &Templates::new(),
                "vigil/devices/d-1/json",
                b"{not json",
                now
            )
            .expect_err("bad")
            .starts_with("invalid_json")
        );
        assert!(
            decode(
                P,
                &Templates::new(),
                "vigil/devices/d-1/json",
                br#"{"reading":{"code":"8867-4"}}"#,
                now
            )
            .expect_err("bad")
            .starts_with("invalid_record")
        );
    }

    #[test]
    fn config_is_checked() {
        let ok = MqttConfig::default();
        assert!(ok.check().is_ok());
        assert_eq!(ok.effective_client_id("gw-1"), "vigil-gw-gw-1");
        let bad = |f: fn(&mut MqttConfig)| {
            let mut c = MqttConfig::default();
            f(&mut c);
            c.check().is_err()
        };
        assert!(bad(|c| c.broker = "localhost".into()));
        assert!(bad(|c| c.broker = ":1883".into()));
        assert!(bad(|c| c.topic_prefix = "vigil/#".into()));
        assert!(bad(|c| c.topic_prefix = "vigil/".into()));
        let v6 = MqttConfig {
            broker: "[::1]:1883".into(),
            ..MqttConfig::default()
        };
        assert_eq!(v6.host_port(), Ok(("::1".to_owned(), 1883)));
    }
}

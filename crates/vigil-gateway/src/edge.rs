//! Edge rules: critical alarms raised by the gateway itself, with or without the hub.
//!
//! Every record a source hands to the gateway enters through [`Intake::append`]: the local
//! HTTP endpoint, the MLLP and MQTT adapters, Bluetooth and in-process sources (the demo's
//! `gateway.outbox().append`). After the outbox has committed a batch, and only then, the
//! gateway looks at its readings and events:
//!
//! - the **critical** threshold rules of [`vigil_rules`] (level 2 hypoglycaemia, hypertensive
//!   crisis, sustained desaturation, and any other rule of severity critical) over a small
//!   per-device window of recent trustworthy samples; readings that are not
//!   [`trustworthy`](vigil_model::Flags::trustworthy) are never added to the window, so they
//!   neither raise nor clear an alarm;
//! - falls ([`EventKind::Fall`]), as critical events (rule id [`FALL_RULE_ID`]).
//!
//! A finding raises one **local alarm** per (device, rule) until the condition clears (a new
//! trustworthy sample for which the rule no longer holds); a fall alarms again only after
//! [`EdgeConfig::fall_repeat_s`] of device time. The alarm goes to every configured
//! [`AlarmAction`] (a line on stderr, an MQTT message on the local broker, an HTTP POST to a
//! local URL) at once, and an [`EventKind::Alert`] with the triggering reading's device time
//! is appended to the outbox, so it reaches the hub with its original time whenever the link
//! returns.
//!
//! The debounce state lives in memory: after a restart a condition that still holds alarms
//! once more.

use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use vigil_model::{DeviceId, Event, EventKind, PatientId, Record, Source, Timestamp};
use vigil_outbox::{Outbox, OutboxError, Receipt};
use vigil_rules::{Rule, Sample, Severity, Thresholds};

/// The rule id of a fall alarm.
pub const FALL_RULE_ID: &str = "fall";

/// Default MQTT alarm topic; `{device}` is replaced by the device id.
pub const DEFAULT_ALARM_TOPIC: &str = "vigil/alarms/{device}";

/// Settings of the edge rules (`[gateway.edge]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EdgeConfig {
    /// Where a local alarm goes: `console`, `mqtt://host:port/topic` (`{device}` in the topic
    /// is replaced by the device id), `http://host:port/path` (a JSON POST).
    pub actions: Vec<AlarmAction>,
    /// The threshold values; only the rules of severity critical run at the edge.
    pub thresholds: Thresholds,
    /// Whether falls raise an alarm.
    pub falls: bool,
    /// A second fall of the same device alarms only this long (device time) after the first.
    pub fall_repeat_s: u64,
    /// Most recent samples kept per device.
    pub window_max_samples: usize,
    /// Most devices tracked at once (the least recently seen is forgotten beyond it).
    pub max_devices: usize,
    /// Timeout of one webhook POST.
    pub webhook_timeout_ms: u64,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        Self {
            actions: vec![AlarmAction::Console],
            thresholds: Thresholds::default(),
            falls: true,
            fall_repeat_s: 60,
            window_max_samples: 1024,
            max_devices: 10_000,
            webhook_timeout_ms: 2_000,
        }
    }
}

impl EdgeConfig {
    pub fn validate(&self) -> Result<(), EdgeError> {
        self.thresholds
            .validate()
            .map_err(|e| EdgeError::Config(format!("edge thresholds: {e}")))?;
        if self.window_max_samples < 2 {
            return Err(EdgeError::Config(
                "edge.window_max_samples must be at least 2".into(),
            ));
        }
        if self.max_devices == 0 {
            return Err(EdgeError::Config(
                "edge.max_devices must be positive".into(),
            ));
        }
        if self.webhook_timeout_ms == 0 {
            return Err(EdgeError::Config(
                "edge.webhook_timeout_ms must be positive".into(),
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EdgeError {
    #[error(
        "invalid alarm action {0:?}: use console, mqtt://host:port/topic or http://host:port/path"
    )]
    Action(String),
    #[error("invalid edge configuration: {0}")]
    Config(String),
}

/// One way to raise a local alarm. Written as text in configuration and on the command line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum AlarmAction {
    /// One line on stderr.
    Console,
    /// A JSON message (QoS 1) on an MQTT broker, for a speaker, a light, a nurse call bridge.
    Mqtt {
        /// `host:port`.
        broker: String,
        /// The topic; `{device}` is replaced by the device id.
        topic: String,
    },
    /// An HTTP POST of the JSON alarm to a local URL.
    Webhook { url: String },
}

impl FromStr for AlarmAction {
    type Err = EdgeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || EdgeError::Action(s.to_owned());
        let t = s.trim();
        if t == "console" {
            return Ok(Self::Console);
        }
        if let Some(rest) = t.strip_prefix("mqtt://") {
            let (authority, topic) = rest.split_once('/').unwrap_or((rest, ""));
            let topic = if topic.is_empty() {
                DEFAULT_ALARM_TOPIC
            } else {
                topic
            };
            if topic.contains(['+', '#', '\0']) || authority.is_empty() {
                return Err(bad());
            }
            let broker = if authority.ends_with(']') || !authority.contains(':') {
                format!("{authority}:1883")
            } else {
                authority.to_owned()
            };
            split_host_port(&broker).ok_or_else(bad)?;
            return Ok(Self::Mqtt {
                broker,
                topic: topic.to_owned(),
            });
        }
        if let Some(rest) = t.strip_prefix("http://") {
            if rest.is_empty() || rest.starts_with('/') || t.contains(char::is_whitespace) {
                return Err(bad());
            }
            return Ok(Self::Webhook { url: t.to_owned() });
        }
        Err(bad())
    }
}

impl TryFrom<String> for AlarmAction {
    type Error = EdgeError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<AlarmAction> for String {
    fn from(a: AlarmAction) -> Self {
        a.to_string()
    }
}

impl fmt::Display for AlarmAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Console => f.write_str("console"),
            Self::Mqtt { broker, topic } => write!(f, "mqtt://{broker}/{topic}"),
            Self::Webhook { url } => f.write_str(url),
        }
    }
}

/// `host:port` (`[v6]:port`) into its parts.
fn split_host_port(s: &str) -> Option<(String, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return None;
    }
    Some((host.to_owned(), port))
}

/// A local alarm: what the actions receive and what becomes the outbox's alert event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alarm {
    pub device: DeviceId,
    pub rule: String,
    pub severity: Severity,
    pub message: String,
    /// Device time of the triggering reading or event.
    pub time: Timestamp,
    pub value: Option<f64>,
    #[serde(skip)]
    pub source: Source,
    #[serde(skip)]
    pub patient: Option<PatientId>,
}

impl Alarm {
    /// The event appended to the outbox for the hub.
    pub fn to_event(&self, received: Timestamp) -> Event {
        Event {
            device: self.device.clone(),
            time: self.time,
            received: Some(received),
            kind: EventKind::Alert {
                rule: self.rule.clone(),
                severity: severity_name(self.severity).to_owned(),
                message: self.message.clone(),
                value: self.value,
            },
            source: self.source,
            patient: self.patient.clone(),
        }
    }
}

fn severity_name(s: Severity) -> &'static str {
    match s {
        Severity::Info => "info",
        Severity::Warning => "warning",
        Severity::Critical => "critical",
    }
}

/// What one committed record gives the edge rules (extracted before the commit, fed after).
#[derive(Debug, Clone)]
pub(crate) enum Observation {
    Samples {
        device: DeviceId,
        source: Source,
        patient: Option<PatientId>,
        samples: Vec<Sample>,
    },
    Fall {
        device: DeviceId,
        source: Source,
        patient: Option<PatientId>,
        time: Timestamp,
        confidence: Option<f64>,
    },
}

#[derive(Debug, Default)]
struct DeviceState {
    /// Usable samples, sorted by time.
    samples: Vec<Sample>,
    /// Rules currently alarmed (not yet cleared).
    active: HashSet<&'static str>,
    last_fall: Option<Timestamp>,
    touched: u64,
}

/// The pure part: windows, rule evaluation and debounce. No I/O, no clock.
#[derive(Debug)]
pub struct EdgeRules {
    rules: Vec<Rule>,
    falls: bool,
    fall_repeat_ms: i64,
    span_ms: i64,
    max_samples: usize,
    max_devices: usize,
    devices: HashMap<DeviceId, DeviceState>,
    tick: u64,
}

impl EdgeRules {
    pub fn new(cfg: &EdgeConfig) -> Self {
        let rules: Vec<Rule> = cfg
            .thresholds
            .rules()
            .into_iter()
            .filter(|r| r.severity == Severity::Critical)
            .collect();
        let longest = rules
            .iter()
            .filter_map(|r| r.persistence.map(|p| p.duration_ms))
            .max()
            .unwrap_or(0);
        Self {
            rules,
            falls: cfg.falls,
            fall_repeat_ms: i64::try_from(cfg.fall_repeat_s.saturating_mul(1000))
                .unwrap_or(i64::MAX),
            // Twice the longest persistence: a sustained rule needs samples back to one at
            // least that old, and the gaps between them.
            span_ms: longest.saturating_mul(2).max(60_000),
            max_samples: cfg.window_max_samples.max(2),
            max_devices: cfg.max_devices.max(1),
            devices: HashMap::new(),
            tick: 0,
        }
    }

    /// The ids of the rules that run at the edge.
    pub fn rule_ids(&self) -> Vec<&'static str> {
        self.rules.iter().map(|r| r.id).collect()
    }

    /// What the edge rules need from `records` (usable samples and falls).
    pub(crate) fn extract(&self, records: &[Record]) -> Vec<Observation> {
        records
            .iter()
            .filter_map(|rec| match rec {
                Record::Reading(r) => {
                    let samples: Vec<Sample> = Sample::from_reading(r)
                        .into_iter()
                        .filter(|s| s.usable() && self.rules.iter().any(|rule| rule.uses(s.metric)))
                        .collect();
                    (!samples.is_empty()).then(|| Observation::Samples {
                        device: r.device.clone(),
                        source: r.source,
                        patient: r.patient.clone(),
                        samples,
                    })
                }
                Record::Event(e) => match e.kind {
                    EventKind::Fall { confidence } if self.falls => Some(Observation::Fall {
                        device: e.device.clone(),
                        source: e.source,
                        patient: e.patient.clone(),
                        time: e.time,
                        confidence,
                    }),
                    _ => None,
                },
            })
            .collect()
    }

    /// Feeds committed records; the alarms to raise now.
    pub fn observe(&mut self, records: &[Record]) -> Vec<Alarm> {
        let obs = self.extract(records);
        self.feed(obs)
    }

    pub(crate) fn feed(&mut self, obs: Vec<Observation>) -> Vec<Alarm> {
        let mut alarms = Vec::new();
        for o in obs {
            match o {
                Observation::Samples {
                    device,
                    source,
                    patient,
                    samples,
                } => self.feed_samples(device, source, patient, samples, &mut alarms),
                Observation::Fall {
                    device,
                    source,
                    patient,
                    time,
                    confidence,
                } => {
                    let repeat = self.fall_repeat_ms;
                    let st = self.device(&device);
                    let due = st
                        .last_fall
                        .is_none_or(|t| time.0.saturating_sub(t.0).saturating_abs() >= repeat);
                    if due {
                        st.last_fall = Some(time);
                        alarms.push(Alarm {
                            device,
                            rule: FALL_RULE_ID.to_owned(),
                            severity: Severity::Critical,
                            message: "Fall detected".into(),
                            time,
                            value: confidence,
                            source,
                            patient,
                        });
                    }
                }
            }
        }
        alarms
    }

    fn feed_samples(
        &mut self,
        device: DeviceId,
        source: Source,
        patient: Option<PatientId>,
        samples: Vec<Sample>,
        alarms: &mut Vec<Alarm>,
    ) {
        let (span, max) = (self.span_ms, self.max_samples);
        let rules = std::mem::take(&mut self.rules);
        let st = self.device(&device);
        for s in &samples {
            if st
                .samples
                .iter()
                .any(|o| o.metric == s.metric && o.time == s.time && o.value == s.value)
            {
                continue;
            }
            let at = st.samples.partition_point(|o| o.time <= s.time);
            st.samples.insert(at, *s);
        }
        if let Some(last) = st.samples.last().map(|s| s.time) {
            let keep_from = last.0.saturating_sub(span);
            st.samples.retain(|s| s.time.0 >= keep_from);
        }
        if st.samples.len() > max {
            let excess = st.samples.len() - max;
            st.samples.drain(..excess);
        }
        for rule in rules
            .iter()
            .filter(|r| samples.iter().any(|s| r.uses(s.metric)))
        {
            match rule.evaluate(&st.samples) {
                Some(f) => {
                    if st.active.insert(rule.id) {
                        alarms.push(Alarm {
                            device: device.clone(),
                            rule: f.rule_id,
                            severity: f.severity,
                            message: f.message,
                            time: f.time,
                            value: f.value,
                            source,
                            patient: patient.clone(),
                        });
                    }
                }
                None => {
                    st.active.remove(rule.id);
                }
            }
        }
        self.rules = rules;
    }

    fn device(&mut self, device: &DeviceId) -> &mut DeviceState {
        self.tick += 1;
        if !self.devices.contains_key(device) && self.devices.len() >= self.max_devices {
            let oldest = self
                .devices
                .iter()
                .min_by_key(|(_, s)| s.touched)
                .map(|(d, _)| d.clone());
            if let Some(d) = oldest {
                self.devices.remove(&d);
            }
        }
        let tick = self.tick;
        let st = self.devices.entry(device.clone()).or_default();
        st.touched = tick;
        st
    }
}

/// Counters of the edge rules (on `/health` under `edge`).
#[derive(Debug, Default)]
pub struct EdgeCounters {
    pub alarms_total: AtomicU64,
    pub alerts_appended_total: AtomicU64,
    pub action_failures_total: AtomicU64,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct EdgeStatus {
    pub alarms_total: u64,
    pub alerts_appended_total: u64,
    pub action_failures_total: u64,
}

impl EdgeCounters {
    pub fn snapshot(&self) -> EdgeStatus {
        EdgeStatus {
            alarms_total: self.alarms_total.load(Ordering::Relaxed),
            alerts_appended_total: self.alerts_appended_total.load(Ordering::Relaxed),
            action_failures_total: self.action_failures_total.load(Ordering::Relaxed),
        }
    }
}

#[derive(Debug)]
struct EdgeShared {
    rules: Mutex<EdgeRules>,
    tx: mpsc::UnboundedSender<Alarm>,
    counters: Arc<EdgeCounters>,
}

/// Where every source hands records to the gateway: the outbox commit, then the edge rules.
///
/// It dereferences to the [`Outbox`] for everything else (stats, reads).
#[derive(Debug, Clone)]
pub struct Intake {
    outbox: Outbox,
    edge: Option<Arc<EdgeShared>>,
}

impl Intake {
    /// An intake without edge rules.
    pub fn plain(outbox: Outbox) -> Self {
        Self { outbox, edge: None }
    }

    /// Commits `records` to the outbox; once committed, runs the edge rules on them. Alarms
    /// are raised by the edge task, never on the caller's time.
    pub async fn append(&self, records: Vec<Record>) -> Result<Receipt, OutboxError> {
        let Some(edge) = &self.edge else {
            return self.outbox.append(records).await;
        };
        let obs = match edge.rules.lock() {
            Ok(r) => r.extract(&records),
            Err(p) => p.into_inner().extract(&records),
        };
        let receipt = self.outbox.append(records).await?;
        if !obs.is_empty() {
            let alarms = match edge.rules.lock() {
                Ok(mut r) => r.feed(obs),
                Err(p) => p.into_inner().feed(obs),
            };
            for a in alarms {
                edge.counters.alarms_total.fetch_add(1, Ordering::Relaxed);
                // The receiver lives as long as the gateway; after shutdown nothing is sent.
                let _ = edge.tx.send(a);
            }
        }
        Ok(receipt)
    }

    /// The edge counters, when edge rules run.
    pub fn edge_status(&self) -> Option<EdgeStatus> {
        self.edge.as_ref().map(|e| e.counters.snapshot())
    }
}

impl std::ops::Deref for Intake {
    type Target = Outbox;
    fn deref(&self) -> &Outbox {
        &self.outbox
    }
}

/// The running edge task.
#[derive(Debug)]
pub(crate) struct EdgeTask {
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
    publishers_stop: watch::Sender<bool>,
    publishers: Vec<JoinHandle<()>>,
}

impl EdgeTask {
    /// Stops the task after it has raised and appended every alarm already found.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(h) = self.task.take() {
            let _ = h.await;
        }
        let _ = self.publishers_stop.send(true);
        for h in self.publishers.drain(..) {
            let _ = h.await;
        }
    }
}

/// Starts the edge rules: the intake every source uses, and the task that raises alarms.
pub(crate) fn start(
    cfg: &EdgeConfig,
    gateway_id: &str,
    outbox: Outbox,
) -> Result<(Intake, EdgeTask), EdgeError> {
    cfg.validate()?;
    let rules = EdgeRules::new(cfg);
    let (tx, rx) = mpsc::unbounded_channel();
    let (stop, stop_rx) = watch::channel(false);
    let (publishers_stop, publishers_rx) = watch::channel(false);
    let counters = Arc::new(EdgeCounters::default());
    let mut publishers = Vec::new();
    let mut sinks = Vec::new();
    for (i, a) in cfg.actions.iter().enumerate() {
        match a {
            AlarmAction::Console => sinks.push(Sink::Console),
            AlarmAction::Mqtt { broker, topic } => {
                let (host, port) =
                    split_host_port(broker).ok_or_else(|| EdgeError::Action(a.to_string()))?;
                let mut opts =
                    rumqttc::MqttOptions::new(format!("vigil-alarm-{gateway_id}-{i}"), host, port);
                opts.set_keep_alive(Duration::from_secs(30));
                opts.set_clean_session(true);
                let (client, eventloop) = rumqttc::AsyncClient::new(opts, 256);
                publishers.push(tokio::spawn(mqtt_loop(eventloop, publishers_rx.clone())));
                sinks.push(Sink::Mqtt {
                    client,
                    topic: topic.clone(),
                });
            }
            AlarmAction::Webhook { url } => {
                vigil_tls::install_default_provider();
                let client = reqwest::Client::builder()
                    .timeout(Duration::from_millis(cfg.webhook_timeout_ms))
                    .build()
                    .map_err(|e| EdgeError::Config(format!("webhook client: {e}")))?;
                sinks.push(Sink::Webhook {
                    client,
                    url: url.clone(),
                });
            }
        }
    }
    tracing::info!(
        rules = ?rules.rule_ids(),
        falls = cfg.falls,
        actions = cfg.actions.len(),
        "edge rules enabled"
    );
    let shared = Arc::new(EdgeShared {
        rules: Mutex::new(rules),
        tx,
        counters: counters.clone(),
    });
    let task = tokio::spawn(run(rx, stop_rx, Arc::new(sinks), outbox.clone(), counters));
    Ok((
        Intake {
            outbox,
            edge: Some(shared),
        },
        EdgeTask {
            stop,
            task: Some(task),
            publishers_stop,
            publishers,
        },
    ))
}

#[derive(Debug)]
enum Sink {
    Console,
    Mqtt {
        client: rumqttc::AsyncClient,
        topic: String,
    },
    Webhook {
        client: reqwest::Client,
        url: String,
    },
}

/// Keeps the alarm publisher's broker connection, reconnecting after a pause.
async fn mqtt_loop(mut eventloop: rumqttc::EventLoop, mut stop: watch::Receiver<bool>) {
    let mut failures = 0u32;
    loop {
        let mut pause = None;
        tokio::select! {
            ev = eventloop.poll() => match ev {
                Ok(_) => failures = 0,
                Err(e) => {
                    failures = failures.saturating_add(1);
                    if failures == 1 {
                        tracing::warn!(error = %e, "edge alarm MQTT connection failed; retrying");
                    }
                    pause = Some(Duration::from_millis(
                        200u64.saturating_mul(u64::from(failures.min(25))),
                    ));
                }
            },
            _ = stopped(&mut stop) => {
                // Give alarms already handed over a moment to leave.
                let _ = tokio::time::timeout(Duration::from_millis(300), async {
                    while eventloop.poll().await.is_ok() {
                        if eventloop.state.inflight() == 0 && eventloop.pending.is_empty() {
                            break;
                        }
                    }
                })
                .await;
                return;
            }
        }
        if let Some(p) = pause {
            tokio::select! {
                _ = tokio::time::sleep(p) => {}
                _ = stopped(&mut stop) => return,
            }
        }
    }
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

async fn run(
    mut rx: mpsc::UnboundedReceiver<Alarm>,
    mut stop: watch::Receiver<bool>,
    sinks: Arc<Vec<Sink>>,
    outbox: Outbox,
    counters: Arc<EdgeCounters>,
) {
    loop {
        let alarm = tokio::select! {
            a = rx.recv() => a,
            _ = stopped(&mut stop) => None,
        };
        let Some(alarm) = alarm else { break };
        handle(alarm, &sinks, &outbox, &counters, Some(&stop)).await;
    }
    // Alarms found before the stop are still raised and recorded.
    while let Ok(alarm) = rx.try_recv() {
        handle(alarm, &sinks, &outbox, &counters, None).await;
    }
}

async fn handle(
    alarm: Alarm,
    sinks: &Arc<Vec<Sink>>,
    outbox: &Outbox,
    counters: &Arc<EdgeCounters>,
    stop: Option<&watch::Receiver<bool>>,
) {
    // No patient identifiers or values at info level: the rule and the device only.
    tracing::warn!(device = %alarm.device, rule = %alarm.rule, "edge alarm raised");
    raise(&alarm, sinks, counters);
    let event = Record::Event(alarm.to_event(Timestamp::now()));
    let mut failures = 0u32;
    loop {
        match outbox.append(vec![event.clone()]).await {
            Ok(_) => {
                counters
                    .alerts_appended_total
                    .fetch_add(1, Ordering::Relaxed);
                return;
            }
            Err(e) => {
                failures += 1;
                tracing::error!(error = %e, rule = %alarm.rule, "edge alert not stored in the outbox; retrying");
                let stopping = stop.is_none_or(|s| *s.borrow());
                if failures >= 10 || (stopping && failures >= 3) {
                    tracing::error!(rule = %alarm.rule, "edge alert dropped after repeated outbox failures");
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100u64 << failures.min(6))).await;
            }
        }
    }
}

/// Sends the alarm to every action without waiting for slow ones.
fn raise(alarm: &Alarm, sinks: &Arc<Vec<Sink>>, counters: &Arc<EdgeCounters>) {
    let payload = match serde_json::to_vec(&AlarmMessage::from(alarm)) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(error = %e, "edge alarm not serializable");
            return;
        }
    };
    for (i, sink) in sinks.iter().enumerate() {
        match sink {
            Sink::Console => {
                // The alarm itself, for whoever watches this console: rule and device, no values.
                eprintln!(
                    "ALARM {} rule={} device={} time={}",
                    severity_name(alarm.severity).to_uppercase(),
                    alarm.rule,
                    alarm.device,
                    alarm.time
                );
            }
            Sink::Mqtt { client, topic } => {
                let topic = topic.replace("{device}", alarm.device.as_str());
                if let Err(e) =
                    client.try_publish(topic, rumqttc::QoS::AtLeastOnce, false, payload.clone())
                {
                    counters
                        .action_failures_total
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::error!(error = %e, "edge alarm MQTT publish failed");
                }
            }
            Sink::Webhook { .. } => {
                let sinks = sinks.clone();
                let counters = counters.clone();
                let payload = payload.clone();
                tokio::spawn(async move {
                    let Some(Sink::Webhook { client, url }) = sinks.get(i) else {
                        return;
                    };
                    let res = client
                        .post(url)
                        .header(reqwest::header::CONTENT_TYPE, "application/json")
                        .body(payload)
                        .send()
                        .await;
                    let failed = match res {
                        Ok(r) if r.status().is_success() => None,
                        Ok(r) => Some(format!("status {}", r.status())),
                        Err(e) => Some(e.to_string()),
                    };
                    if let Some(why) = failed {
                        counters
                            .action_failures_total
                            .fetch_add(1, Ordering::Relaxed);
                        tracing::error!(error = %why, "edge alarm webhook failed");
                    }
                });
            }
        }
    }
}

/// The JSON an MQTT or webhook action receives.
#[derive(Debug, Serialize)]
struct AlarmMessage<'a> {
    device: &'a DeviceId,
    rule: &'a str,
    severity: &'static str,
    message: &'a str,
    time: Timestamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<f64>,
}

impl<'a> From<&'a Alarm> for AlarmMessage<'a> {
    fn from(a: &'a Alarm) -> Self {
        Self {
            device: &a.device,
            rule: &a.rule,
            severity: severity_name(a.severity),
            message: &a.message,
            time: a.time,
            value: a.value,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_model::{Component, Flags, Metric, Reading};

    fn metric(code: &str) -> Metric {
        code.parse().expect("metric")
    }

    fn dev(id: &str) -> DeviceId {
        DeviceId::new(id).expect("id")
    }

    fn glucose(v: f64, t: i64) -> Record {
        Record::Reading(Reading::quantity(
            dev("cgm-1"),
            metric("2339-0"),
            v,
            Timestamp(t),
        ))
    }

    fn spo2(v: f64, t: i64) -> Record {
        Record::Reading(Reading::quantity(
            dev("ox-1"),
            metric("59408-5"),
            v,
            Timestamp(t),
        ))
    }

    fn fall(t: i64) -> Record {
        Record::Event(Event {
            device: dev("pendant-1"),
            time: Timestamp(t),
            received: None,
            kind: EventKind::Fall {
                confidence: Some(0.9),
            },
            source: Source::Mqtt,
            patient: None,
        })
    }

    fn rules() -> EdgeRules {
        EdgeRules::new(&EdgeConfig::default())
    }

    #[test]
    fn only_critical_rules_run_at_the_edge() {
        let r = rules();
        let ids = r.rule_ids();
        assert!(ids.contains(&"hypoglycaemia-level-2"));
        assert!(ids.contains(&"hypertensive-crisis"));
        assert!(ids.contains(&"spo2-desaturation"));
        for warning in [
            "hypoglycaemia-level-1",
            "tachycardia",
            "bradycardia",
            "fever",
        ] {
            assert!(!ids.contains(&warning), "{warning} is not critical");
        }
        let mut r = rules();
        // Level 1 hypoglycaemia (a warning) and fever do not alarm at the edge.
        assert!(r.observe(&[glucose(60.0, 1_000)]).is_empty());
        let temp = Record::Reading(Reading::quantity(
            dev("thermo"),
            metric("8310-5"),
            39.5,
            Timestamp(1_000),
        ));
        assert!(r.observe(&[temp]).is_empty());
    }

    #[test]
    fn a_disabled_critical_rule_does_not_alarm() {
        let mut cfg = EdgeConfig::default();
        cfg.thresholds
            .disabled
            .insert("hypoglycaemia-level-2".into());
        let mut r = EdgeRules::new(&cfg);
        assert!(r.observe(&[glucose(40.0, 1_000)]).is_empty());
    }

    #[test]
    fn one_alarm_per_device_and_rule_until_the_condition_clears() {
        let mut r = rules();
        let a = r.observe(&[glucose(45.0, 1_000)]);
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].rule, "hypoglycaemia-level-2");
        assert_eq!(a[0].time, Timestamp(1_000));
        assert_eq!(a[0].value, Some(45.0));
        assert_eq!(a[0].severity, Severity::Critical);
        // Still low: no storm.
        for t in 2..100 {
            assert!(r.observe(&[glucose(44.0, t * 1_000)]).is_empty());
        }
        // Cleared, then low again: a new alarm.
        assert!(r.observe(&[glucose(100.0, 200_000)]).is_empty());
        let again = r.observe(&[glucose(48.0, 201_000)]);
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].time, Timestamp(201_000));
        // Another device alarms on its own.
        let other = Record::Reading(Reading::quantity(
            dev("cgm-2"),
            metric("2339-0"),
            40.0,
            Timestamp(201_000),
        ));
        assert_eq!(r.observe(&[other]).len(), 1);
    }

    #[test]
    fn untrustworthy_readings_neither_alarm_nor_clear() {
        let mut r = rules();
        let mut bad = Reading::quantity(dev("cgm-1"), metric("2339-0"), 40.0, Timestamp(1_000));
        bad.flags = Flags::QUESTIONABLE;
        assert!(r.observe(&[Record::Reading(bad.clone())]).is_empty());
        bad.flags = Flags::CALIBRATING;
        assert!(r.observe(&[Record::Reading(bad)]).is_empty());
        assert_eq!(r.observe(&[glucose(45.0, 2_000)]).len(), 1);
        let mut fine = Reading::quantity(dev("cgm-1"), metric("2339-0"), 120.0, Timestamp(3_000));
        fine.flags = Flags::INVALID;
        assert!(r.observe(&[Record::Reading(fine)]).is_empty());
        // The invalid normal value did not clear the alarm: no second alarm.
        assert!(r.observe(&[glucose(45.0, 4_000)]).is_empty());
    }

    #[test]
    fn desaturation_alarms_once_after_its_persistence_window() {
        let mut r = rules();
        let mut fired = Vec::new();
        for s in 0..=90 {
            for a in r.observe(&[spo2(82.0, 1_000_000 + s * 1_000)]) {
                fired.push((s, a));
            }
        }
        assert_eq!(fired.len(), 1, "{fired:?}");
        let (s, a) = &fired[0];
        assert_eq!(*s, 60);
        assert_eq!(a.rule, "spo2-desaturation");
        assert_eq!(a.time, Timestamp(1_060_000));
        // Recovery clears; a new desaturation needs its own 60 s.
        assert!(r.observe(&[spo2(97.0, 1_100_000)]).is_empty());
        assert!(r.observe(&[spo2(85.0, 1_101_000)]).is_empty());
    }

    #[test]
    fn blood_pressure_crisis_from_a_panel() {
        let mut r = rules();
        let bp = Reading::panel(
            dev("cuff-1"),
            metric("85354-9"),
            vec![
                Component {
                    metric: metric("8480-6"),
                    value: 195.0,
                },
                Component {
                    metric: metric("8462-4"),
                    value: 100.0,
                },
            ],
            Timestamp(5_000),
        );
        let a = r.observe(&[Record::Reading(bp)]);
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].rule, "hypertensive-crisis");
    }

    #[test]
    fn falls_alarm_with_a_repeat_interval() {
        let mut r = rules();
        let a = r.observe(&[fall(10_000)]);
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].rule, FALL_RULE_ID);
        assert_eq!(a[0].time, Timestamp(10_000));
        assert_eq!(a[0].source, Source::Mqtt);
        assert!(r.observe(&[fall(30_000)]).is_empty());
        assert_eq!(r.observe(&[fall(70_000)]).len(), 1);
        let cfg = EdgeConfig {
            falls: false,
            ..EdgeConfig::default()
        };
        assert!(EdgeRules::new(&cfg).observe(&[fall(1)]).is_empty());
    }

    #[test]
    fn alert_events_keep_the_reading_time() {
        let mut r = rules();
        let a = r.observe(&[glucose(45.0, 1_234)]).remove(0);
        let e = a.to_event(Timestamp(99_999));
        assert_eq!(e.time, Timestamp(1_234));
        assert_eq!(e.received, Some(Timestamp(99_999)));
        let EventKind::Alert {
            rule,
            severity,
            value,
            ..
        } = e.kind
        else {
            panic!("not an alert");
        };
        assert_eq!(rule, "hypoglycaemia-level-2");
        assert_eq!(severity, "critical");
        assert_eq!(value, Some(45.0));
    }

    #[test]
    fn the_window_is_bounded() {
        let cfg = EdgeConfig {
            window_max_samples: 10,
            max_devices: 2,
            ..EdgeConfig::default()
        };
        let mut r = EdgeRules::new(&cfg);
        for s in 0..100 {
            r.observe(&[spo2(97.0, s * 100)]);
        }
        assert!(r.devices.values().all(|d| d.samples.len() <= 10));
        r.observe(&[glucose(100.0, 1)]);
        r.observe(&[Record::Reading(Reading::quantity(
            dev("cgm-3"),
            metric("2339-0"),
            100.0,
            Timestamp(1),
        ))]);
        assert_eq!(r.devices.len(), 2);
        assert!(!r.devices.contains_key(&dev("ox-1")));
    }

    #[test]
    fn alarm_actions_parse_and_round_trip() {
        assert_eq!("console".parse(), Ok(AlarmAction::Console));
        assert_eq!(
            "mqtt://127.0.0.1:1883/ward/alarms/{device}".parse(),
            Ok(AlarmAction::Mqtt {
                broker: "127.0.0.1:1883".into(),
                topic: "ward/alarms/{device}".into()
            })
        );
        assert_eq!(
            "mqtt://localhost".parse(),
            Ok(AlarmAction::Mqtt {
                broker: "localhost:1883".into(),
                topic: DEFAULT_ALARM_TOPIC.into()
            })
        );
        assert_eq!(
            "http://127.0.0.1:9000/alarm".parse(),
            Ok(AlarmAction::Webhook {
                url: "http://127.0.0.1:9000/alarm".into()
            })
        );
        for bad in [
            "",
            "siren",
            "mqtt://host:1883/a/#",
            "mqtt://host:x/t",
            "mqtt:///t",
            "https://x/y",
            "http://",
        ] {
            assert!(bad.parse::<AlarmAction>().is_err(), "{bad}");
        }
        for a in [
            "console",
            "mqtt://127.0.0.1:1883/vigil/alarms/{device}",
            "http://127.0.0.1:1/x",
        ] {
            let p: AlarmAction = a.parse().expect("parse");
            assert_eq!(p.to_string(), a);
        }
        let cfg: EdgeConfig = serde_json::from_str(
            r#"{"actions": ["console", "http://127.0.0.1:1/x"], "fall_repeat_s": 5}"#,
        )
        .expect("config");
        assert_eq!(cfg.actions.len(), 2);
        assert!(serde_json::from_str::<EdgeConfig>(r#"{"action": []}"#).is_err());
        assert!(serde_json::from_str::<EdgeConfig>(r#"{"actions": ["beep"]}"#).is_err());
    }
}

//! From accepted records to alerts: the per-patient rule engine, edge alerts, auto-resolve,
//! escalation and the broadcast of alert transitions to live streams.
//!
//! Rule state is kept in memory per patient (it rebuilds from new readings after a restart).
//! Findings are level-triggered; the store keeps one active alert per (patient, rule), so
//! every finding and every edge alert for the same patient and rule joins it.

use crate::HubConfig;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{broadcast, mpsc};
use vigil_model::{DeviceId, DeviceKind, EventKind, Metric, PatientId, Timestamp};
use vigil_rules::baseline;
use vigil_rules::engine::NEWS2_RULE_ID;
use vigil_rules::{
    Assessment, Engine, Finding, News2Settings, PatientConfig, PatientState, RulesError, Sample,
    Severity, Spo2Scale, ThresholdOverrides, Thresholds,
};
use vigil_store::{
    Accepted, Alert, AlertFilter, AlertSignal, AlertSource, AlertStatus, AlertTransition,
    NewNotification, Store, StoreError,
};

type Key = (PatientId, String);

/// Rule id of the alert raised when a patient's device sends nothing for too long.
pub const STALE_DATA_RULE_ID: &str = "stale-data";
/// Rule id of the alert raised by a low battery event.
pub const LOW_BATTERY_RULE_ID: &str = "low-battery";

/// The built-in expected interval between data of a device kind, in seconds: continuous
/// wearables and monitors stream at about 1 Hz and are expected every 60 s; spot devices
/// per their usual schedule. `None`: not tracked.
pub fn default_cadence_s(kind: DeviceKind) -> Option<u64> {
    match kind {
        DeviceKind::Wearable | DeviceKind::PulseOximeter | DeviceKind::BedsideMonitor => Some(60),
        DeviceKind::BloodPressureMonitor | DeviceKind::Thermometer => Some(12 * 3600),
        DeviceKind::WeightScale => Some(24 * 3600),
        DeviceKind::GlucoseMeter => Some(8 * 3600),
        _ => None,
    }
}

/// The expected interval of `kind` under `config` (its `cadence_s` over the built-in table).
pub fn cadence_s(config: &HubConfig, kind: DeviceKind) -> Option<u64> {
    let name = serde_json::to_value(kind).ok();
    let configured = name
        .as_ref()
        .and_then(|v| v.as_str())
        .and_then(|n| config.cadence_s.get(n).copied());
    configured
        .or_else(|| default_cadence_s(kind))
        .filter(|c| *c > 0)
}

/// The stale limit of `kind` in milliseconds, if tracked.
fn stale_limit_ms(config: &HubConfig, kind: DeviceKind) -> Option<i64> {
    let c = cadence_s(config, kind)?;
    let ms = c
        .saturating_mul(u64::from(config.stale_factor))
        .saturating_mul(1000);
    (config.stale_factor > 0).then(|| i64::try_from(ms).unwrap_or(i64::MAX))
}

/// What a clinician sets for one patient's rules: the NEWS2 SpO2 scale and threshold
/// overrides. Stored as this JSON document (see `Store::set_rule_settings`).
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuleSettings {
    /// NEWS2 SpO2 scale, 1 (default) or 2.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spo2_scale: Option<u8>,
    pub thresholds: ThresholdOverrides,
    /// Personal-baseline settings; none keeps the defaults.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<vigil_rules::BaselineSettings>,
}

impl RuleSettings {
    /// The patient's engine: guideline defaults with these settings, validated.
    pub fn engine(&self) -> Result<Engine, RulesError> {
        let scale = self
            .spo2_scale
            .map_or(Ok(Spo2Scale::Scale1), Spo2Scale::try_from)?;
        Engine::new(
            &Thresholds::default(),
            &PatientConfig {
                news2: News2Settings {
                    scale,
                    ..News2Settings::default()
                },
                thresholds: self.thresholds.clone(),
            },
        )?
        .with_baseline(self.baseline.unwrap_or_default())
    }
}

/// The hub's alerting state.
pub struct Alerting {
    engine: Engine,
    /// Engines of patients with their own settings; others use `engine`.
    engines: Mutex<HashMap<PatientId, Engine>>,
    /// Hub receive time of the latest record per (patient, device).
    seen: Mutex<HashMap<(PatientId, DeviceId), Timestamp>>,
    /// Device kinds, refreshed by each stale-data pass.
    kinds: Mutex<HashMap<DeviceId, DeviceKind>>,
    states: Mutex<HashMap<PatientId, PatientState>>,
    /// Active alerts by (patient, rule): (alert id, device time of the latest finding).
    active: Mutex<HashMap<Key, (i64, Timestamp)>>,
    loaded: tokio::sync::OnceCell<()>,
    tx: broadcast::Sender<i64>,
    work: mpsc::UnboundedSender<Vec<Accepted>>,
    worker: Mutex<Option<mpsc::UnboundedReceiver<Vec<Accepted>>>>,
    /// Batches queued or being evaluated.
    pending: AtomicU64,
}

impl std::fmt::Debug for Alerting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Alerting").finish_non_exhaustive()
    }
}

impl Default for Alerting {
    fn default() -> Self {
        let (work, worker) = mpsc::unbounded_channel();
        Self {
            work,
            worker: Mutex::new(Some(worker)),
            pending: AtomicU64::new(0),
            engine: Engine::default(),
            engines: Mutex::new(HashMap::new()),
            seen: Mutex::new(HashMap::new()),
            kinds: Mutex::new(HashMap::new()),
            states: Mutex::new(HashMap::new()),
            active: Mutex::new(HashMap::new()),
            loaded: tokio::sync::OnceCell::new(),
            tx: broadcast::channel(1024).0,
        }
    }
}

/// What one batch asks of the store, computed under the engine lock.
#[derive(Default)]
struct Plan {
    signals: Vec<AlertSignal>,
    /// Latest device time each (patient, rule) was evaluated without a finding.
    clear: HashMap<Key, Timestamp>,
    /// Alerts to resolve at once (the condition is gone), with the time it went.
    resolve: HashMap<Key, Timestamp>,
}

impl Plan {
    fn signal(&mut self, s: AlertSignal) {
        if let Some(e) = self
            .signals
            .iter_mut()
            .find(|e| e.patient == s.patient && e.rule_id == s.rule_id)
        {
            if s.time < e.time {
                e.time = s.time;
                e.source = s.source;
            }
            if s.seen >= e.seen {
                e.seen = s.seen;
                e.message = s.message;
                e.value = s.value;
                e.severity = s.severity;
            }
        } else {
            self.signals.push(s);
        }
    }
}

fn signal_of(patient: &PatientId, f: Finding) -> AlertSignal {
    let severity = match f.severity {
        Severity::Info => "info",
        Severity::Warning => "warning",
        Severity::Critical => "critical",
    };
    AlertSignal {
        patient: patient.clone(),
        rule_id: f.rule_id,
        severity: severity.to_owned(),
        message: f.message,
        value: f.value,
        time: f.time,
        seen: f.time,
        source: AlertSource::Hub,
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Alerting {
    /// Queues a committed batch's accepted records for evaluation by the worker (see
    /// [`Alerting::run`]), so rules never delay the gateway's acknowledgement.
    pub fn submit(&self, accepted: Vec<Accepted>) {
        // Every accepted record counts: it shows its device is sending (stale-data).
        if !accepted.is_empty() {
            self.pending.fetch_add(1, Ordering::SeqCst);
            if self.work.send(accepted).is_err() {
                self.pending.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }

    /// The evaluation worker: takes queued batches in order (merging what has piled up) and
    /// runs them through [`Alerting::on_accepted`]. Runs once per hub; a second call returns
    /// at once.
    pub async fn run(self: Arc<Self>, store: Arc<dyn Store>, config: Arc<HubConfig>) {
        let Some(mut rx) = lock(&self.worker).take() else {
            return;
        };
        while let Some(mut batch) = rx.recv().await {
            let mut merged = 1;
            while batch.len() < 200_000 {
                match rx.try_recv() {
                    Ok(more) => {
                        batch.extend(more);
                        merged += 1;
                    }
                    Err(_) => break,
                }
            }
            if let Err(e) = self.on_accepted(store.as_ref(), &config, batch).await {
                tracing::warn!(error = %e, "alert evaluation failed");
            }
            self.pending.fetch_sub(merged, Ordering::SeqCst);
        }
    }

    /// Batches waiting for (or in) evaluation.
    pub fn pending(&self) -> u64 {
        self.pending.load(Ordering::SeqCst)
    }

    /// Wakes live streams: a transition with this id (or lower) is committed.
    pub fn subscribe(&self) -> broadcast::Receiver<i64> {
        self.tx.subscribe()
    }

    fn publish(&self, t: &AlertTransition) {
        let _ = self.tx.send(t.id);
    }

    async fn ensure_loaded(&self, store: &dyn Store) -> Result<(), StoreError> {
        self.loaded
            .get_or_try_init(|| async {
                let list = store
                    .alerts(AlertFilter {
                        active: true,
                        limit: usize::MAX >> 1,
                        ..AlertFilter::default()
                    })
                    .await?;
                {
                    let mut active = lock(&self.active);
                    for a in list {
                        active.insert((a.patient, a.rule_id), (a.id, a.last_seen));
                    }
                }
                let settings = store.all_rule_settings().await?;
                let mut engines = lock(&self.engines);
                for (p, v) in settings {
                    match serde_json::from_value::<RuleSettings>(v)
                        .map_err(|e| e.to_string())
                        .and_then(|s| s.engine().map_err(|e| e.to_string()))
                    {
                        Ok(engine) => {
                            engines.insert(p, engine);
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "stored rule settings ignored: invalid");
                        }
                    }
                }
                Ok(())
            })
            .await
            .map(|_| ())
    }

    /// Validates and stores a patient's rule settings and applies them to new readings.
    pub async fn set_settings(
        &self,
        store: &dyn Store,
        patient: &PatientId,
        settings: &RuleSettings,
    ) -> Result<(), SettingsError> {
        let engine = settings.engine()?;
        self.ensure_loaded(store).await?;
        let value =
            serde_json::to_value(settings).map_err(|e| StoreError::Invalid(e.to_string()))?;
        store
            .set_rule_settings(patient, value, Timestamp::now())
            .await?;
        lock(&self.engines).insert(patient.clone(), engine);
        Ok(())
    }

    /// A patient's rule settings (defaults when none were set) and the thresholds in effect.
    pub async fn settings(
        &self,
        store: &dyn Store,
        patient: &PatientId,
    ) -> Result<(RuleSettings, Thresholds), StoreError> {
        let settings = match store.rule_settings(patient).await? {
            Some(v) => serde_json::from_value(v)
                .map_err(|_| StoreError::Corrupt("rule settings".into()))?,
            None => RuleSettings::default(),
        };
        let effective = settings
            .engine()
            .map(|e| e.thresholds().clone())
            .unwrap_or_default();
        Ok((settings, effective))
    }

    fn plan(&self, config: &HubConfig, accepted: &[Accepted], now: Timestamp) -> Plan {
        let mut plan = Plan::default();
        self.track_arrivals(config, accepted, now, &mut plan);
        let mut states = lock(&self.states);
        let engines = lock(&self.engines);
        for acc in accepted {
            match acc {
                Accepted::Reading(p, r) => {
                    let metrics: Vec<Metric> = Sample::from_reading(r)
                        .into_iter()
                        .filter(Sample::usable)
                        .map(|s| s.metric)
                        .collect();
                    if metrics.is_empty() {
                        continue;
                    }
                    let engine = engines.get(p).unwrap_or(&self.engine);
                    let state = states.entry(p.clone()).or_default();
                    let findings = engine.on_reading(state, r);
                    let mut evaluated: Vec<&str> = engine
                        .rules()
                        .iter()
                        .filter(|rule| metrics.iter().any(|m| rule.uses(*m)))
                        .map(|rule| rule.id)
                        .collect();
                    if vigil_rules::news2::input_metrics()
                        .iter()
                        .any(|m| metrics.contains(m))
                    {
                        evaluated.push(NEWS2_RULE_ID);
                    }
                    if baseline::baseline_metrics()
                        .iter()
                        .any(|m| metrics.contains(m))
                    {
                        evaluated.push(baseline::BASELINE_RULE_ID);
                    }
                    if metrics.contains(&baseline::weight_metric()) {
                        evaluated.push(baseline::WEIGHT_GAIN_RULE_ID);
                    }
                    for rule in evaluated {
                        if findings.iter().any(|f| f.rule_id == rule) {
                            continue;
                        }
                        let key = (p.clone(), rule.to_owned());
                        let alerting = plan
                            .signals
                            .iter()
                            .any(|s| s.patient == *p && s.rule_id == rule)
                            || lock(&self.active).contains_key(&key);
                        // Only an evaluation that could clear an alert counts, and an
                        // incomplete NEWS2 (a parameter missing) clears nothing.
                        if !alerting
                            || (rule == NEWS2_RULE_ID && engine.news2(state, r.time).is_err())
                        {
                            continue;
                        }
                        let e = plan.clear.entry(key).or_insert(r.time);
                        *e = (*e).max(r.time);
                    }
                    for f in findings {
                        plan.signal(signal_of(p, f));
                    }
                }
                Accepted::Event(p, e) => {
                    if let EventKind::Battery { percent } = e.kind {
                        self.battery(config, &mut plan, p, &e.device, percent, e.time);
                    }
                    if let EventKind::Alert {
                        rule,
                        severity,
                        message,
                        value,
                    } = &e.kind
                    {
                        plan.signal(AlertSignal {
                            patient: p.clone(),
                            rule_id: rule.clone(),
                            severity: severity.clone(),
                            message: message.clone(),
                            value: *value,
                            time: e.time,
                            seen: e.time,
                            source: AlertSource::Edge,
                        });
                    }
                }
            }
        }
        plan
    }

    /// Runs the rules over a batch's accepted records and opens, joins or resolves alerts.
    pub async fn on_accepted(
        self: &Arc<Self>,
        store: &dyn Store,
        config: &HubConfig,
        accepted: Vec<Accepted>,
    ) -> Result<(), StoreError> {
        if accepted.is_empty() {
            return Ok(());
        }
        self.ensure_loaded(store).await?;
        let me = self.clone();
        let cfg = config.clone();
        let now = Timestamp::now();
        let plan = tokio::task::spawn_blocking(move || me.plan(&cfg, &accepted, now))
            .await
            .map_err(|e| StoreError::Engine(e.to_string()))?;
        self.apply(store, config, plan).await
    }

    /// Notes the hub receive time of each record's device and plans the resolution of
    /// `stale-data` for patients whose every tracked device is now fresh.
    fn track_arrivals(
        &self,
        config: &HubConfig,
        accepted: &[Accepted],
        now: Timestamp,
        plan: &mut Plan,
    ) {
        let mut seen = lock(&self.seen);
        let mut patients: Vec<&PatientId> = Vec::new();
        for acc in accepted {
            let (p, d) = match acc {
                Accepted::Reading(p, r) => (p, &r.device),
                Accepted::Event(p, e) => (p, &e.device),
            };
            seen.insert((p.clone(), d.clone()), now);
            if !patients.contains(&p) {
                patients.push(p);
            }
        }
        let kinds = lock(&self.kinds);
        let active = lock(&self.active);
        for p in patients {
            let key = (p.clone(), STALE_DATA_RULE_ID.to_owned());
            if !active.contains_key(&key) {
                continue;
            }
            let still_stale = seen.iter().any(|((q, d), at)| {
                q == p
                    && kinds
                        .get(d)
                        .and_then(|k| stale_limit_ms(config, *k))
                        .is_some_and(|limit| now.0.saturating_sub(at.0) > limit)
            });
            if !still_stale {
                plan.resolve.insert(key, now);
            }
        }
    }

    /// A battery event: below the low mark raises `low-battery`, at or above the ok mark
    /// resolves it.
    fn battery(
        &self,
        config: &HubConfig,
        plan: &mut Plan,
        p: &PatientId,
        device: &DeviceId,
        percent: f64,
        time: Timestamp,
    ) {
        if !percent.is_finite() {
            return;
        }
        let key = (p.clone(), LOW_BATTERY_RULE_ID.to_owned());
        if percent < config.battery_low_percent {
            plan.resolve.remove(&key);
            plan.signal(AlertSignal {
                patient: p.clone(),
                rule_id: LOW_BATTERY_RULE_ID.to_owned(),
                severity: "warning".to_owned(),
                message: format!(
                    "battery of device {device} at {percent:.0} % (below {:.0} %)",
                    config.battery_low_percent
                ),
                value: Some(percent),
                time,
                seen: time,
                source: AlertSource::Hub,
            });
        } else if percent >= config.battery_ok_percent {
            plan.signals
                .retain(|s| !(s.patient == *p && s.rule_id == LOW_BATTERY_RULE_ID));
            if lock(&self.active).contains_key(&key) {
                let e = plan.resolve.entry(key).or_insert(time);
                *e = (*e).max(time);
            }
        }
    }

    /// One stale-data pass: raises `stale-data` for each patient with a tracked device that
    /// sent nothing (hub receive time) for `stale_factor` × its cadence, and resolves it for
    /// patients whose devices are all fresh again.
    pub async fn check_stale(
        &self,
        store: &dyn Store,
        config: &HubConfig,
    ) -> Result<(), StoreError> {
        if config.stale_factor == 0 {
            return Ok(());
        }
        self.ensure_loaded(store).await?;
        let devices = store.devices().await?;
        {
            let mut kinds = lock(&self.kinds);
            for d in devices {
                kinds.insert(d.id, d.kind);
            }
        }
        let now = Timestamp::now();
        // Track exactly the current assignments: a device that moved to another patient no
        // longer counts for the old one, and a device assigned (or known at a hub start)
        // without sending since is judged from the first pass that saw it.
        let current: std::collections::HashSet<(PatientId, DeviceId)> = store
            .assignments(None)
            .await?
            .into_iter()
            .filter(|a| a.from <= now && a.to.is_none_or(|to| to > now))
            .map(|a| (a.patient, a.device))
            .collect();
        {
            let mut seen = lock(&self.seen);
            seen.retain(|k, _| current.contains(k));
            for k in current {
                seen.entry(k).or_insert(now);
            }
        }
        // Per patient: the stale devices, with their silence and cadence.
        let mut stale: HashMap<PatientId, Vec<(DeviceId, i64, u64)>> = HashMap::new();
        let mut tracked: Vec<PatientId> = Vec::new();
        {
            let seen = lock(&self.seen);
            let kinds = lock(&self.kinds);
            for ((p, d), at) in seen.iter() {
                let Some(kind) = kinds.get(d).copied() else {
                    continue;
                };
                let (Some(limit), Some(cadence)) =
                    (stale_limit_ms(config, kind), cadence_s(config, kind))
                else {
                    continue;
                };
                if !tracked.contains(p) {
                    tracked.push(p.clone());
                }
                let silent = now.0.saturating_sub(at.0);
                if silent > limit {
                    stale
                        .entry(p.clone())
                        .or_default()
                        .push((d.clone(), silent / 1000, cadence));
                }
            }
        }
        let mut plan = Plan::default();
        {
            let active = lock(&self.active);
            for p in tracked {
                let key = (p.clone(), STALE_DATA_RULE_ID.to_owned());
                match stale.get_mut(&p) {
                    Some(list) if !active.contains_key(&key) => {
                        list.sort();
                        let what: Vec<String> = list
                            .iter()
                            .map(|(d, s, c)| {
                                format!("device {d}: nothing for {s} s (expected every {c} s)")
                            })
                            .collect();
                        plan.signal(AlertSignal {
                            patient: p,
                            rule_id: STALE_DATA_RULE_ID.to_owned(),
                            severity: "warning".to_owned(),
                            message: format!("no data: {}", what.join("; ")),
                            value: None,
                            time: now,
                            seen: now,
                            source: AlertSource::Hub,
                        });
                    }
                    Some(_) => {}
                    None if active.contains_key(&key) => {
                        plan.resolve.insert(key, now);
                    }
                    None => {}
                }
            }
        }
        self.apply(store, config, plan).await
    }

    /// The NEWS2 assessments (ACVPU, air or oxygen) held for a patient: the latest of each
    /// kind recorded since the hub started.
    pub fn assessments(&self, patient: &PatientId) -> vigil_rules::Assessments {
        lock(&self.states)
            .get(patient)
            .map(|s| *s.assessments())
            .unwrap_or_default()
    }

    /// Records a person's NEWS2 assessment (ACVPU, air or oxygen) for a patient and opens or
    /// joins the NEWS2 alert it completes. Assessments are held in memory with the readings.
    pub async fn on_assessment(
        self: &Arc<Self>,
        store: &dyn Store,
        config: &HubConfig,
        patient: &PatientId,
        assessments: Vec<Assessment>,
        time: Timestamp,
    ) -> Result<Vec<String>, StoreError> {
        self.ensure_loaded(store).await?;
        let mut plan = Plan::default();
        {
            let mut states = lock(&self.states);
            let engines = lock(&self.engines);
            let engine = engines.get(patient).unwrap_or(&self.engine);
            let state = states.entry(patient.clone()).or_default();
            for a in assessments {
                for f in engine.on_assessment(state, a, time) {
                    plan.signal(signal_of(patient, f));
                }
            }
        }
        let rules = plan.signals.iter().map(|s| s.rule_id.clone()).collect();
        self.apply(store, config, plan).await?;
        Ok(rules)
    }

    async fn apply(
        &self,
        store: &dyn Store,
        config: &HubConfig,
        plan: Plan,
    ) -> Result<(), StoreError> {
        let now = Timestamp::now();
        for s in plan.signals {
            let key = (s.patient.clone(), s.rule_id.clone());
            let raised = store.raise_alert(s, now).await?;
            if raised.alert.status.is_active() {
                lock(&self.active).insert(key, (raised.alert.id, raised.alert.last_seen));
            }
            if let Some(t) = raised.opened {
                tracing::info!(alert = t.alert_id, rule = %t.rule_id, "alert opened");
                let team = store.care_team(&raised.alert.patient).await?;
                notify(
                    store,
                    config,
                    &raised.alert,
                    &team.primary,
                    "opened",
                    0,
                    now,
                )
                .await?;
                self.publish(&t);
            }
        }
        for (key, at) in plan.resolve {
            let Some((id, _)) = lock(&self.active).remove(&key) else {
                continue;
            };
            match store.resolve_alert(id, "system", at, None).await {
                Ok((_, t)) => {
                    tracing::info!(alert = id, rule = %key.1, "alert resolved: condition gone");
                    self.publish(&t);
                }
                Err(StoreError::Conflict(_)) => {}
                Err(e) => return Err(e),
            }
        }
        let quiet_ms = i64::try_from(config.alert_quiet_s)
            .unwrap_or(i64::MAX)
            .saturating_mul(1000);
        for (key, at) in plan.clear {
            let Some((id, last_seen)) = lock(&self.active).get(&key).copied() else {
                continue;
            };
            if at.0.saturating_sub(last_seen.0) < quiet_ms {
                continue;
            }
            lock(&self.active).remove(&key);
            match store.resolve_alert(id, "system", at, None).await {
                Ok((_, t)) => {
                    tracing::info!(alert = id, "alert resolved: condition cleared");
                    self.publish(&t);
                }
                Err(StoreError::Conflict(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Records a clinician's resolution.
    pub fn resolved(&self, t: &AlertTransition) {
        lock(&self.active).remove(&(t.patient.clone(), t.rule_id.clone()));
        self.publish(t);
    }

    /// Publishes a transition made elsewhere (acknowledgement).
    pub fn transitioned(&self, t: &AlertTransition) {
        self.publish(t);
    }

    /// One pass of escalation: unacknowledged alerts `escalate_after_s` after they were
    /// recorded go to the backup clinicians (level 1), a period later to on-call (level 2),
    /// and are notified again every period while nobody acknowledges them. Acknowledged
    /// alerts whose silence ran out (and that have not resolved) reopen, notifying the
    /// primary clinicians, and their escalation starts over.
    pub async fn escalate(&self, store: &dyn Store, config: &HubConfig) -> Result<(), StoreError> {
        let period = i64::try_from(config.escalate_after_s)
            .unwrap_or(i64::MAX)
            .saturating_mul(1000);
        let now = Timestamp::now();
        let mut due = Vec::new();
        for status in [AlertStatus::Open, AlertStatus::Escalated] {
            due.extend(
                store
                    .alerts(AlertFilter {
                        status: Some(status),
                        limit: 10_000,
                        ..AlertFilter::default()
                    })
                    .await?,
            );
        }
        let silenced = store
            .alerts(AlertFilter {
                status: Some(AlertStatus::Acknowledged),
                limit: 10_000,
                ..AlertFilter::default()
            })
            .await?;
        for a in silenced {
            if a.silence_until.is_none_or(|s| s > now) {
                continue;
            }
            let (a, t) = match store.reopen_alert(a.id, now).await {
                Ok(x) => x,
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(e),
            };
            tracing::info!(alert = a.id, "alert reopened: silence expired");
            let team = store.care_team(&a.patient).await?;
            notify(store, config, &a, &team.primary, "silence_expired", 0, now).await?;
            self.publish(&t);
        }
        for a in due {
            let since = a.escalated_at.unwrap_or(a.created);
            if now.0.saturating_sub(since.0) < period {
                continue;
            }
            let team = store.care_team(&a.patient).await?;
            let on_call = store.on_call().await?;
            match a.escalation_level {
                0 => {
                    let (_, t) = match store.escalate_alert(a.id, 1, now).await {
                        Ok(x) => x,
                        Err(StoreError::Conflict(_)) => continue,
                        Err(e) => return Err(e),
                    };
                    tracing::info!(alert = a.id, level = 1, "alert escalated");
                    let targets = if team.backup.is_empty() {
                        &on_call
                    } else {
                        &team.backup
                    };
                    notify(store, config, &a, targets, "escalated", 1, now).await?;
                    self.publish(&t);
                }
                1 => {
                    let (_, t) = match store.escalate_alert(a.id, 2, now).await {
                        Ok(x) => x,
                        Err(StoreError::Conflict(_)) => continue,
                        Err(e) => return Err(e),
                    };
                    tracing::info!(alert = a.id, level = 2, "alert escalated");
                    notify(store, config, &a, &on_call, "escalated", 2, now).await?;
                    self.publish(&t);
                }
                level => {
                    store.mark_alert_notified(a.id, now).await?;
                    let mut targets = team.backup.clone();
                    targets.extend(on_call.iter().cloned());
                    notify(store, config, &a, &targets, "reminder", level, now).await?;
                }
            }
        }
        Ok(())
    }
}

/// Why rule settings were not applied.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error(transparent)]
    Rules(#[from] RulesError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Queues the notifications of one alert event: one in-app (`user`) and, when the user has
/// an address and SMTP is configured, one `email` per user, and one per configured webhook.
/// Payloads name the alert, patient and rule, never the patient's values.
async fn notify(
    store: &dyn Store,
    config: &HubConfig,
    alert: &Alert,
    users: &[String],
    what: &str,
    level: u32,
    now: Timestamp,
) -> Result<(), StoreError> {
    let payload = serde_json::json!({
        "alert": alert.id,
        "patient": alert.patient,
        "rule_id": alert.rule_id,
        "severity": alert.severity,
        "event": what,
        "escalation_level": level,
        "users": users,
    });
    let mut list = Vec::new();
    let mut add = |channel: &str, target: &str| {
        list.push(NewNotification {
            alert_id: Some(alert.id),
            channel: channel.to_owned(),
            target: target.to_owned(),
            payload: payload.clone(),
        });
    };
    for u in users {
        add("user", u);
        if config.smtp.is_some() && config.emails.contains_key(u) {
            add("email", u);
        }
    }
    for w in &config.webhooks {
        add("webhook", &w.name);
    }
    if list.is_empty() {
        return Ok(());
    }
    store.enqueue_notifications(list, now).await
}

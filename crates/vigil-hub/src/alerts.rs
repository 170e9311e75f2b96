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
use vigil_model::{EventKind, Metric, PatientId, Timestamp};
use vigil_rules::engine::NEWS2_RULE_ID;
use vigil_rules::{Assessment, Engine, Finding, PatientState, Sample, Severity};
use vigil_store::{
    Accepted, Alert, AlertFilter, AlertSignal, AlertSource, AlertStatus, AlertTransition,
    NewNotification, Store, StoreError,
};

type Key = (PatientId, String);

/// The hub's alerting state.
pub struct Alerting {
    engine: Engine,
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
        let relevant = accepted.iter().any(|a| match a {
            Accepted::Reading(..) => true,
            Accepted::Event(_, e) => matches!(e.kind, EventKind::Alert { .. }),
        });
        if relevant {
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
                let mut active = lock(&self.active);
                for a in list {
                    active.insert((a.patient, a.rule_id), (a.id, a.last_seen));
                }
                Ok(())
            })
            .await
            .map(|_| ())
    }

    fn plan(&self, accepted: &[Accepted]) -> Plan {
        let mut plan = Plan::default();
        let mut states = lock(&self.states);
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
                    let state = states.entry(p.clone()).or_default();
                    let findings = self.engine.on_reading(state, r);
                    let mut evaluated: Vec<&str> = self
                        .engine
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
                            || (rule == NEWS2_RULE_ID && self.engine.news2(state, r.time).is_err())
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
        let plan = tokio::task::spawn_blocking(move || me.plan(&accepted))
            .await
            .map_err(|e| StoreError::Engine(e.to_string()))?;
        self.apply(store, config, plan).await
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
            let state = states.entry(patient.clone()).or_default();
            for a in assessments {
                for f in self.engine.on_assessment(state, a, time) {
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

//! `vigil sim`: simulated patients (or a synthetic load) sent to a gateway's local endpoint.

use crate::InputError;
use anyhow::{Context, bail};
use clap::Args;
use serde_json::json;
use std::time::{Duration, Instant};
use vigil_model::{Record, Timestamp};
use vigil_sim::{Cohort, LoadSpec, ScenarioSpec, SimConfig};

#[derive(Debug, Args)]
pub struct SimArgs {
    /// The gateway's local endpoint.
    #[arg(long, default_value = "http://127.0.0.1:7070")]
    gateway: String,
    #[arg(long, default_value_t = 20)]
    patients: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Load-generator mode: this many readings per second over all patients.
    #[arg(long)]
    rate: Option<u64>,
    /// Stop after this long (load mode: the span of device time generated; default 10s).
    #[arg(long = "for", value_parser = crate::parse_duration)]
    run_for: Option<Duration>,
    /// Load mode: send as fast as the gateway accepts instead of in real time.
    #[arg(long)]
    fast: bool,
    /// Cohort mode: simulated history sent first, e.g. 1h.
    #[arg(long, default_value = "0s", value_parser = crate::parse_duration)]
    history: Duration,
    /// Inject a scenario: NAME:PATIENT[@TIME], e.g. sepsis:p-0003@+10m (repeatable).
    #[arg(long = "scenario")]
    scenarios: Vec<String>,
    /// Enrol the simulated patients and devices at this hub first.
    #[arg(long)]
    enrol_at: Option<String>,
    /// API token for --enrol-at.
    #[arg(long, env = "VIGIL_API_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Records per request to the gateway.
    #[arg(long, default_value_t = 5000)]
    batch: usize,
}

struct Sender {
    client: reqwest::Client,
    url: String,
    sent: u64,
}

impl Sender {
    async fn send(&mut self, records: &[Record]) -> anyhow::Result<()> {
        for chunk in records.chunks(5000) {
            let mut delay = Duration::from_millis(200);
            loop {
                let resp = self
                    .client
                    .post(&self.url)
                    .json(chunk)
                    .send()
                    .await
                    .with_context(|| format!("gateway at {} is unreachable", self.url))?;
                let status = resp.status();
                if status.is_success() {
                    self.sent += chunk.len() as u64;
                    break;
                }
                if status.as_u16() == 503 {
                    // Outbox full: keep the data and retry later.
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(10));
                    continue;
                }
                let body = resp.text().await.unwrap_or_default();
                bail!("gateway answered {status}: {body}");
            }
        }
        Ok(())
    }
}

async fn enrol(
    hub: &str,
    token: &str,
    patients: &[vigil_model::Patient],
    devices: &[vigil_model::Device],
    assignments: &[vigil_model::Assignment],
) -> anyhow::Result<()> {
    let c = reqwest::Client::new();
    let base = hub.trim_end_matches('/');
    let post = |path: &str, body: serde_json::Value| {
        c.post(format!("{base}{path}"))
            .bearer_auth(token)
            .json(&body)
            .send()
    };
    for p in patients {
        let r = post("/api/v1/patients", json!(p)).await?;
        if !r.status().is_success() {
            bail!("enrolling patient {} failed: {}", p.id, r.status());
        }
    }
    for d in devices {
        let r = post("/api/v1/devices", json!(d)).await?;
        if !r.status().is_success() {
            bail!("enrolling device {} failed: {}", d.id, r.status());
        }
    }
    for a in assignments {
        let r = post("/api/v1/assignments", json!(a)).await?;
        if !r.status().is_success() {
            bail!("assigning device {} failed: {}", a.device, r.status());
        }
    }
    Ok(())
}

pub async fn run(a: SimArgs) -> anyhow::Result<()> {
    if a.batch == 0 || a.batch > vigil_sync::MAX_RECORDS {
        return Err(InputError("--batch must be between 1 and 100000".into()).into());
    }
    let mut sender = Sender {
        client: reqwest::Client::new(),
        url: format!("{}/v1/records", a.gateway.trim_end_matches('/')),
        sent: 0,
    };
    let started = Instant::now();
    if let Some(rate) = a.rate {
        let duration = a.run_for.unwrap_or(Duration::from_secs(10));
        let mut spec = LoadSpec::new(a.patients, rate, duration);
        spec.seed = a.seed;
        let now = Timestamp::now();
        spec.start = if a.fast {
            Timestamp(now.0 - duration.as_millis() as i64)
        } else {
            now
        };
        let mut g = spec.generator().map_err(|e| InputError(e.to_string()))?;
        if let Some(hub) = &a.enrol_at {
            let token = a
                .token
                .as_deref()
                .ok_or_else(|| InputError("--enrol-at needs --token".into()))?;
            enrol(hub, token, g.patients(), g.devices(), g.assignments()).await?;
        }
        let mut out = Vec::with_capacity(a.batch);
        if a.fast {
            while g.remaining() > 0 {
                out.clear();
                out.extend(g.by_ref().take(a.batch));
                sender.send(&out).await?;
            }
        } else {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            while g.remaining() > 0 {
                tick.tick().await;
                out.clear();
                g.advance(Timestamp::now(), &mut out);
                sender.send(&out).await?;
            }
        }
    } else {
        let now = Timestamp::now();
        let start = Timestamp(now.0 - a.history.as_millis() as i64);
        let mut cohort = Cohort::new(SimConfig::new(a.seed, a.patients, start))
            .map_err(|e| InputError(e.to_string()))?;
        if let Some(hub) = &a.enrol_at {
            let token = a
                .token
                .as_deref()
                .ok_or_else(|| InputError("--enrol-at needs --token".into()))?;
            enrol(
                hub,
                token,
                cohort.patients(),
                cohort.devices(),
                cohort.assignments(),
            )
            .await?;
        }
        for s in &a.scenarios {
            let spec: ScenarioSpec = s
                .parse()
                .map_err(|e: vigil_sim::ScenarioParseError| InputError(e.to_string()))?;
            cohort
                .inject_spec(&spec)
                .map_err(|e| InputError(e.to_string()))?;
        }
        let deadline = a.run_for.map(|d| tokio::time::Instant::now() + d);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut out = Vec::new();
        let stop = crate::stop_signal();
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => break,
                _ = tick.tick() => {}
            }
            let now = Timestamp::now();
            while cohort.now() < now {
                let step = Timestamp((cohort.now().0 + 600_000).min(now.0));
                cohort.advance(step, &mut out);
                sender.send(&out).await?;
                out.clear();
            }
            if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                break;
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({"sent": sender.sent, "seconds": secs, "per_second": sender.sent as f64 / secs.max(1e-9)})
    );
    Ok(())
}

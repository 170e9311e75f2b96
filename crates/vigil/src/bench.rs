//! `vigil bench`: end-to-end throughput, storage cost and memory, each beside a baseline of
//! the raw storage engine measured in the same run on the same data.
//!
//! Stages:
//! 1. raw SQLite: one row per reading (patient, code, time, value) with and without a
//!    (patient, code, time) index, 1,000 rows per transaction, WAL, synchronous=FULL;
//! 2. the gateway outbox, in a child process (so its resident memory is its own): appends
//!    from several concurrent sources, group commit, fsync;
//! 3. the sync path: a real `vigil hub` and a real `vigil gateway` process drain the filled
//!    outbox over loopback HTTP into hub storage; then the store is compacted and measured;
//!    with `--tls`, again from a second outbox over HTTPS with client certificates.

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use vigil_model::{Record, Timestamp};
use vigil_sim::LoadSpec;
use vigil_store::Store;

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    stage: Option<Stage>,
    /// Readings to move through each stage.
    #[arg(long, default_value_t = 1_000_000)]
    readings: u64,
    /// Simulated wearables (each sends heart rate and SpO2).
    #[arg(long, default_value_t = 500)]
    patients: usize,
    /// Working directory (a temporary one by default).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Measure the sync stage a second time over TLS with client certificates.
    #[arg(long)]
    tls: bool,
}

#[derive(Debug, Subcommand)]
enum Stage {
    /// FHIR read latency ($lastn, a 7-day Observation search, paging through a day) for one
    /// patient with a long 1 Hz history, beside /health and in-process store baselines.
    Fhir {
        /// Days of 1 Hz heart rate to load (365: 31.5 M readings).
        #[arg(long, default_value_t = 365)]
        days: u32,
        /// Timed calls per figure.
        #[arg(long, default_value_t = 200)]
        calls: usize,
    },
    /// Alert latency: from sending a critical reading to the hub until its alert arrives on
    /// the live event stream, under a background load of ordinary readings.
    Alerts {
        /// Background readings per second (heart rate and SpO2 from wearables).
        #[arg(long, default_value_t = 10_000)]
        background_rate: u64,
        /// Critical readings to time (each for its own patient, so each opens an alert).
        #[arg(long, default_value_t = 200)]
        probes: usize,
        /// Gap between probes, milliseconds.
        #[arg(long, default_value_t = 50)]
        probe_every_ms: u64,
    },
    /// Fill an outbox and report its accept rate and peak memory (used by `vigil bench`).
    #[command(hide = true)]
    Outbox {
        #[arg(long)]
        path: PathBuf,
        #[arg(long)]
        readings: u64,
        #[arg(long)]
        patients: usize,
        /// Concurrent sources.
        #[arg(long, default_value_t = 4)]
        sources: usize,
        /// Records per append.
        #[arg(long, default_value_t = 1000)]
        batch: usize,
    },
}

#[derive(Debug, Serialize, Deserialize)]
struct OutboxReport {
    readings: u64,
    seconds: f64,
    per_second: f64,
    peak_rss_kib: u64,
    commits: u64,
}

fn spec(readings: u64, patients: usize) -> LoadSpec {
    // 1 Hz heart rate and 1 Hz SpO2 per wearable: 2 readings per patient per second.
    let rate = (patients as u64 * 2).max(1);
    let secs = readings.div_ceil(rate);
    let mut s = LoadSpec::new(patients, rate, Duration::from_secs(secs));
    s.start = Timestamp(Timestamp::now().0 - secs as i64 * 1000 - 60_000);
    s.seed = 7;
    s
}

/// Peak resident memory of a process, from /proc (Linux).
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn raw_sqlite(
    dir: &Path,
    readings: &[(i64, i64, i64, f64)],
    index: bool,
) -> anyhow::Result<(f64, f64)> {
    let path = dir.join(if index {
        "raw-indexed.db"
    } else {
        "raw-plain.db"
    });
    let _ = std::fs::remove_file(&path);
    let mut c = rusqlite_conn(&path)?;
    c.execute_batch("CREATE TABLE r(patient INTEGER, code INTEGER, ts INTEGER, value REAL)")?;
    if index {
        c.execute_batch("CREATE INDEX r_pct ON r(patient, code, ts)")?;
    }
    let t = Instant::now();
    for chunk in readings.chunks(1000) {
        let tx = c.transaction()?;
        {
            let mut s = tx.prepare_cached("INSERT INTO r VALUES (?1, ?2, ?3, ?4)")?;
            for (p, code, ts, v) in chunk {
                s.execute(rusqlite::params![p, code, ts, v])?;
            }
        }
        tx.commit()?;
    }
    let secs = t.elapsed().as_secs_f64();
    drop(c);
    let bytes = std::fs::metadata(&path)?.len() as f64;
    Ok((readings.len() as f64 / secs, bytes / readings.len() as f64))
}

fn rusqlite_conn(path: &Path) -> anyhow::Result<rusqlite::Connection> {
    let c = rusqlite::Connection::open(path)?;
    c.pragma_update(None, "journal_mode", "WAL")?;
    c.pragma_update(None, "synchronous", "FULL")?;
    Ok(c)
}

async fn outbox_stage(
    path: PathBuf,
    readings: u64,
    patients: usize,
    sources: usize,
    batch: usize,
) -> anyhow::Result<()> {
    // The key where the gateway looks by default, so the sync stage opens the same outbox.
    let (key, _) = vigil_outbox::SecretKey::load_or_create(&path.with_extension("key"))?;
    let ob = vigil_outbox::Outbox::open(vigil_outbox::OutboxConfig {
        path,
        max_bytes: 16 << 30,
        key,
    })?;
    let mut lg = spec(readings, patients).generator()?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<Record>>(sources * 2);
    let rx = std::sync::Arc::new(tokio::sync::Mutex::new(rx));
    let t = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..sources {
        let (ob, rx) = (ob.clone(), rx.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let next = rx.lock().await.recv().await;
                let Some(recs) = next else {
                    return Ok::<_, vigil_outbox::OutboxError>(());
                };
                ob.append(recs).await?;
            }
        }));
    }
    let mut n = 0u64;
    while lg.remaining() > 0 {
        let recs: Vec<Record> = lg.by_ref().take(batch).collect();
        n += recs.len() as u64;
        if tx.send(recs).await.is_err() {
            break;
        }
    }
    drop(tx);
    for w in workers {
        w.await??;
    }
    let secs = t.elapsed().as_secs_f64();
    let commits = ob.stats().commits_total;
    ob.close();
    let report = OutboxReport {
        readings: n,
        seconds: secs,
        per_second: n as f64 / secs,
        peak_rss_kib: peak_rss_kib(std::process::id()),
        commits,
    };
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

pub(crate) async fn spawn_announcing(
    cmd: &mut tokio::process::Command,
    prefix: &str,
) -> anyhow::Result<(tokio::process::Child, String)> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(l) = lines.next_line().await? {
            if let Some(rest) = l.strip_prefix(prefix) {
                return Ok::<_, std::io::Error>(Some(rest.trim().to_owned()));
            }
        }
        Ok(None)
    })
    .await
    .context("process did not start in 30 s")??
    .context("process exited before announcing its address")?;
    Ok((child, line))
}

/// (stored, quarantined) records at the hub, from its metrics.
async fn stored(client: &reqwest::Client, hub: &str) -> anyhow::Result<(u64, u64)> {
    let text = client
        .get(format!("{hub}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    let counter = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    Ok((
        counter("vigil_hub_records_stored_total "),
        counter("vigil_hub_records_quarantined_total "),
    ))
}

pub async fn run(a: BenchArgs) -> anyhow::Result<()> {
    match a.stage {
        Some(Stage::Outbox {
            path,
            readings,
            patients,
            sources,
            batch,
        }) => {
            return outbox_stage(path, readings, patients, sources, batch).await;
        }
        Some(Stage::Fhir { days, calls }) => {
            return crate::bench_fhir::run(
                crate::bench_fhir::FhirBench { days, calls },
                a.dir.as_deref(),
            )
            .await;
        }
        Some(Stage::Alerts {
            background_rate,
            probes,
            probe_every_ms,
        }) => {
            return alerts_stage(a.dir.as_deref(), background_rate, probes, probe_every_ms).await;
        }
        None => {}
    }
    let tmp = tempfile_dir(a.dir.as_deref())?;
    let dir = tmp.path().to_owned();
    let exe = std::env::current_exe()?;
    let n = a.readings;
    eprintln!(
        "vigil bench: {n} readings from {} wearables in {}",
        a.patients,
        dir.display()
    );

    // 1. The raw engine, same data.
    let mut lg = spec(n, a.patients).generator()?;
    let rows: Vec<(i64, i64, i64, f64)> = lg
        .by_ref()
        .map(|r| match r {
            Record::Reading(r) => {
                let p = r
                    .device
                    .as_str()
                    .bytes()
                    .fold(0i64, |h, b| h.wrapping_mul(31).wrapping_add(i64::from(b)));
                (
                    p,
                    i64::from(r.metric.index()),
                    r.time.0,
                    r.value.unwrap_or(0.0),
                )
            }
            Record::Event(_) => (0, 0, 0, 0.0),
        })
        .collect();
    let (raw_plain_rate, raw_plain_bytes) = raw_sqlite(&dir, &rows, false)?;
    let (raw_idx_rate, raw_idx_bytes) = raw_sqlite(&dir, &rows, true)?;
    drop(rows);
    eprintln!(
        "  raw SQLite: {raw_plain_rate:.0} rows/s without index, {raw_idx_rate:.0} rows/s with index"
    );

    // 2. The outbox, in its own process.
    let outbox = dir.join("outbox.db");
    let ob = fill_outbox(&exe, &outbox, n, a.patients).await?;
    eprintln!(
        "  outbox: {:.0} readings/s, {} commits, peak RSS {} KiB",
        ob.per_second, ob.commits, ob.peak_rss_kib
    );

    // 3. Sync: real hub and gateway processes over loopback.
    let SyncRun {
        rate: sync_rate,
        secs: sync_secs,
        hub_rss,
        gw_rss,
        hub_dir,
    } = sync_stage(&exe, &dir, &outbox, n, a.patients, false).await?;
    eprintln!("  sync outbox -> hub: {sync_rate:.0} readings/s");
    // The same again over TLS with mutual authentication, from a second filled outbox.
    let sync_tls = if a.tls {
        let outbox = dir.join("outbox-tls.db");
        fill_outbox(&exe, &outbox, n, a.patients).await?;
        let t = sync_stage(&exe, &dir, &outbox, n, a.patients, true).await?;
        eprintln!(
            "  sync outbox -> hub over TLS (mutual): {:.0} readings/s, {:.2} of plain HTTP",
            t.rate,
            t.rate / sync_rate
        );
        json!({
            "readings_per_s": t.rate,
            "seconds": t.secs,
            "ratio_to_plain_http": t.rate / sync_rate,
            "hub_peak_rss_mib": t.hub_rss as f64 / 1024.0,
            "gateway_peak_rss_mib": t.gw_rss as f64 / 1024.0,
        })
    } else {
        serde_json::Value::Null
    };

    let store = vigil_store::sqlite::SqliteStore::open(hub_dir.join("hub.db"))?;
    let before = store.stats().await?;
    while store.compact().await? > 0 {}
    let s = store.stats().await?;
    if s.readings != n {
        bail!("hub holds {} readings, expected {n}", s.readings);
    }
    let report = json!({
        "readings": n,
        "wearables": a.patients,
        "raw_sqlite": {
            "rows_per_s_no_index": raw_plain_rate,
            "rows_per_s_indexed": raw_idx_rate,
            "bytes_per_row_no_index": raw_plain_bytes,
            "bytes_per_row_indexed": raw_idx_bytes,
        },
        "outbox": {
            "readings_per_s": ob.per_second,
            "commits": ob.commits,
            "peak_rss_mib": ob.peak_rss_kib as f64 / 1024.0,
            "ratio_to_raw_no_index": ob.per_second / raw_plain_rate,
        },
        "sync": {
            "readings_per_s": sync_rate,
            "seconds": sync_secs,
            "ratio_to_raw_indexed": sync_rate / raw_idx_rate,
            "ratio_to_raw_no_index": sync_rate / raw_plain_rate,
            "hub_peak_rss_mib": hub_rss as f64 / 1024.0,
            "gateway_peak_rss_mib": gw_rss as f64 / 1024.0,
        },
        "sync_tls": sync_tls,
        "storage": {
            "bytes_per_reading_file": s.file_bytes as f64 / n as f64,
            "bytes_per_reading_chunks": s.chunk_bytes as f64 / n as f64,
            "bytes_per_reading_file_before_compaction": before.file_bytes as f64 / n as f64,
            "chunks": s.chunks,
            "ratio_to_raw_indexed": (s.file_bytes as f64 / n as f64) / raw_idx_bytes,
        },
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

/// Stage 2 in a child process: fills the outbox at `path`.
async fn fill_outbox(
    exe: &Path,
    path: &Path,
    n: u64,
    patients: usize,
) -> anyhow::Result<OutboxReport> {
    let out = tokio::process::Command::new(exe)
        .args(["bench", "outbox", "--path"])
        .arg(path)
        .args([
            "--readings",
            &n.to_string(),
            "--patients",
            &patients.to_string(),
        ])
        .stderr(Stdio::inherit())
        .output()
        .await?;
    if !out.status.success() {
        bail!("outbox stage failed");
    }
    serde_json::from_slice(&out.stdout).context("outbox stage report")
}

/// One sync measurement: a fresh hub, a gateway draining `outbox` into it.
#[derive(Debug)]
struct SyncRun {
    rate: f64,
    secs: f64,
    hub_rss: u64,
    gw_rss: u64,
    hub_dir: PathBuf,
}

/// Stage 3: real hub and gateway processes over loopback, plain HTTP or TLS with client
/// certificates.
async fn sync_stage(
    exe: &Path,
    dir: &Path,
    outbox: &Path,
    n: u64,
    patients: usize,
    tls: bool,
) -> anyhow::Result<SyncRun> {
    let hub_dir = dir.join(if tls { "hub-tls" } else { "hub" });
    let token = {
        let store = vigil_store::sqlite::SqliteStore::open(hub_dir.join("hub.db"))?;
        let token = vigil_hub::auth::new_token(vigil_hub::auth::GATEWAY_PREFIX);
        store
            .create_gateway("bench-gw", &vigil_hub::auth::hash_token(&token))
            .await?;
        let g = spec(n, patients).generator()?;
        for p in g.patients() {
            store.upsert_patient(p.clone()).await?;
        }
        for d in g.devices() {
            store.upsert_device(d.clone()).await?;
        }
        // Assign from the epoch: the outbox stage drew its device times from its own clock.
        for x in g.assignments() {
            store
                .assign(vigil_model::Assignment {
                    from: Timestamp(0),
                    ..x.clone()
                })
                .await?;
        }
        token
    };
    let token_file = dir.join("gateway.token");
    std::fs::write(&token_file, &token)?;
    let mut hub_cmd = tokio::process::Command::new(exe);
    hub_cmd
        .args([
            "--log",
            "warn",
            "hub",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(&hub_dir)
        .env("VIGIL_HUB__COMPACT_EVERY_S", "0");
    let mut gw_cmd = tokio::process::Command::new(exe);
    // Over TLS: the hub requires a client certificate from the site's CA (mutual TLS).
    let client = if tls {
        let pki_dir = dir.join("pki");
        let (pki, _) = vigil_tls::pki::ensure(&pki_dir, &[])?;
        let (cert, key) = vigil_tls::pki::issue_gateway(&pki_dir, "bench-gw")?;
        hub_cmd
            .env("VIGIL_HUB__TLS__CERT_FILE", &pki.hub_cert)
            .env("VIGIL_HUB__TLS__KEY_FILE", &pki.hub_key)
            .env("VIGIL_HUB__TLS__CLIENT_CA_FILE", &pki.ca_cert)
            .env("VIGIL_HUB__TLS__CLIENT_AUTH", "required");
        gw_cmd
            .env("VIGIL_GATEWAY__HUB_CA_FILE", &pki.ca_cert)
            .env("VIGIL_GATEWAY__CLIENT_CERT_FILE", &cert)
            .env("VIGIL_GATEWAY__CLIENT_KEY_FILE", &key);
        vigil_gateway::hub_client_builder(Some(&pki.ca_cert), Some((&cert, &key)))?.build()?
    } else {
        vigil_gateway::hub_client_builder(None, None)?.build()?
    };
    let (mut hub, hub_addr) = spawn_announcing(&mut hub_cmd, "hub listening on ").await?;
    let t = Instant::now();
    let mut gw = gw_cmd
        .args([
            "--log",
            "warn",
            "gateway",
            "--hub-url",
            &hub_addr,
            "--token-file",
        ])
        .arg(&token_file)
        .arg("--outbox")
        .arg(outbox)
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(1800);
    loop {
        let (ok, quarantined) = stored(&client, &hub_addr).await?;
        if quarantined > 0 {
            bail!("the hub quarantined {quarantined} benchmark readings");
        }
        if ok >= n {
            break;
        }
        if Instant::now() > deadline {
            bail!("sync did not finish in 30 minutes");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let sync_secs = t.elapsed().as_secs_f64();
    let sync_rate = n as f64 / sync_secs;
    let (hub_rss, gw_rss) = (
        hub.id().map_or(0, peak_rss_kib),
        gw.id().map_or(0, peak_rss_kib),
    );
    let _ = gw.kill().await;
    let _ = hub.kill().await;
    let _ = gw.wait().await;
    let _ = hub.wait().await;
    Ok(SyncRun {
        rate: sync_rate,
        secs: sync_secs,
        hub_rss,
        gw_rss,
        hub_dir,
    })
}

/// A working directory that is removed afterwards unless the user named one.
pub(crate) enum WorkDir {
    Temp(tempfile::TempDir),
    Kept(PathBuf),
}

impl WorkDir {
    pub(crate) fn path(&self) -> &Path {
        match self {
            Self::Temp(t) => t.path(),
            Self::Kept(p) => p,
        }
    }
}

pub(crate) fn tempfile_dir(dir: Option<&Path>) -> anyhow::Result<WorkDir> {
    Ok(match dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            WorkDir::Kept(d.to_owned())
        }
        None => WorkDir::Temp(tempfile::tempdir()?),
    })
}

/// Sends records to the hub as a gateway would: one batch, in sequence.
struct Sender {
    client: reqwest::Client,
    url: String,
    token: String,
    epoch: u64,
    seq: u64,
}

impl Sender {
    async fn send(&mut self, records: &[Record]) -> anyhow::Result<()> {
        let after = self.seq;
        let wire = records
            .iter()
            .map(|r| {
                self.seq += 1;
                Ok(vigil_sync::WireRecord {
                    seq: self.seq,
                    payload: postcard::to_stdvec(r)?,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let body = vigil_sync::Batch {
            version: vigil_sync::VERSION,
            epoch: self.epoch,
            after,
            records: wire,
        }
        .encode();
        let r = self
            .client
            .post(&self.url)
            .bearer_auth(&self.token)
            .header("content-type", vigil_sync::CONTENT_TYPE)
            .body(body)
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("hub answered {}", r.status());
        }
        Ok(())
    }
}

pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn alerts_stage(
    dir: Option<&Path>,
    background_rate: u64,
    probes: usize,
    probe_every_ms: u64,
) -> anyhow::Result<()> {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};
    use vigil_model::{
        Assignment, Device, DeviceId, DeviceKind, Metric, Patient, PatientId, Reading, Source,
    };

    let tmp = tempfile_dir(dir)?;
    let hub_dir = tmp.path().join("hub");
    let exe = std::env::current_exe()?;
    let wearables = (background_rate / 2).max(1) as usize;
    let run_secs = 5 + (probes as u64 * probe_every_ms).div_ceil(1000) + 5;
    let mut bg = LoadSpec::new(wearables, background_rate, Duration::from_secs(run_secs));
    bg.start = Timestamp::now();
    let mut bg = bg.generator()?;
    let (admin, bg_token, probe_token) = {
        let store = vigil_store::sqlite::SqliteStore::open(hub_dir.join("hub.db"))?;
        let admin = vigil_hub::auth::new_token(vigil_hub::auth::API_PREFIX);
        let now = Timestamp::now();
        store
            .create_api_token(
                &vigil_hub::auth::hash_token(&admin),
                vigil_store::ApiToken {
                    name: "bench".into(),
                    role: "admin".into(),
                    created: now,
                    expires: None,
                    revoked: false,
                },
            )
            .await?;
        let bg_token = vigil_hub::auth::new_token(vigil_hub::auth::GATEWAY_PREFIX);
        store
            .create_gateway("bench-background", &vigil_hub::auth::hash_token(&bg_token))
            .await?;
        let probe_token = vigil_hub::auth::new_token(vigil_hub::auth::GATEWAY_PREFIX);
        store
            .create_gateway("bench-probe", &vigil_hub::auth::hash_token(&probe_token))
            .await?;
        for p in bg.patients() {
            store.upsert_patient(p.clone()).await?;
        }
        for d in bg.devices() {
            store.upsert_device(d.clone()).await?;
        }
        for x in bg.assignments() {
            store
                .assign(Assignment {
                    from: Timestamp(0),
                    ..x.clone()
                })
                .await?;
        }
        for i in 0..probes {
            let pid = PatientId::new(format!("ap-{i:04}"))?;
            let did = DeviceId::new(format!("ap-{i:04}-glu"))?;
            store
                .upsert_patient(Patient {
                    id: pid.clone(),
                    name: None,
                    birth_date: None,
                })
                .await?;
            store
                .upsert_device(Device {
                    id: did.clone(),
                    kind: DeviceKind::GlucoseMeter,
                    serial: None,
                    mac: None,
                    eui64: None,
                    manufacturer: None,
                    model: None,
                    gateway: None,
                })
                .await?;
            store
                .assign(Assignment {
                    device: did,
                    patient: pid,
                    from: Timestamp(0),
                    to: None,
                })
                .await?;
        }
        (admin, bg_token, probe_token)
    };
    let (mut hub, hub_url) = spawn_announcing(
        tokio::process::Command::new(&exe)
            .args([
                "--log",
                "warn",
                "hub",
                "--listen",
                "127.0.0.1:0",
                "--data-dir",
            ])
            .arg(&hub_dir)
            .env("VIGIL_HUB__ESCALATE_AFTER_S", "0")
            .env("VIGIL_HUB__COMPACT_EVERY_S", "0"),
        "hub listening on ",
    )
    .await?;
    let client = vigil_gateway::hub_client_builder(None, None)?.build()?;
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let got: Arc<Mutex<Vec<f64>>> = Arc::default();

    // The live stream, as a dashboard reads it.
    let mut stream = client
        .get(format!("{hub_url}/api/v1/alerts/stream"))
        .bearer_auth(&admin)
        .send()
        .await?;
    if !stream.status().is_success() {
        bail!("alert stream answered {}", stream.status());
    }
    let reader = {
        let (sent, got) = (sent.clone(), got.clone());
        tokio::spawn(async move {
            let mut buf = String::new();
            while let Ok(Some(chunk)) = stream.chunk().await {
                buf.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = buf.find("\n\n") {
                    let event: String = buf.drain(..end + 2).collect();
                    let at = Instant::now();
                    for line in event.lines() {
                        let Some(data) = line.strip_prefix("data:") else {
                            continue;
                        };
                        let Ok(v) = serde_json::from_str::<serde_json::Value>(data.trim()) else {
                            continue;
                        };
                        if v["to"] != "open" {
                            continue;
                        }
                        let patient = v["patient"].as_str().unwrap_or_default().to_owned();
                        let start = sent.lock().ok().and_then(|m| m.get(&patient).copied());
                        if let (Some(start), Ok(mut g)) = (start, got.lock()) {
                            g.push(at.duration_since(start).as_secs_f64() * 1000.0);
                        }
                    }
                }
            }
        })
    };

    // Background load, paced in 100 ms slices.
    let background = {
        let mut s = Sender {
            client: client.clone(),
            url: format!("{hub_url}/api/v1/ingest"),
            token: bg_token,
            epoch: 1,
            seq: 0,
        };
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            let mut out = Vec::new();
            let mut n = 0u64;
            while bg.remaining() > 0 {
                tick.tick().await;
                out.clear();
                bg.advance(Timestamp::now(), &mut out);
                if !out.is_empty() {
                    s.send(&out).await?;
                    n += out.len() as u64;
                }
            }
            Ok::<u64, anyhow::Error>(n)
        })
    };

    tokio::time::sleep(Duration::from_secs(3)).await;
    let glucose: Metric = "2339-0".parse().map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut probe = Sender {
        client: client.clone(),
        url: format!("{hub_url}/api/v1/ingest"),
        token: probe_token,
        epoch: 2,
        seq: 0,
    };
    let t0 = Instant::now();
    for i in 0..probes {
        let mut r = Reading::quantity(
            DeviceId::new(format!("ap-{i:04}-glu"))?,
            glucose,
            45.0,
            Timestamp::now(),
        );
        r.source = Source::Simulator;
        if let Ok(mut m) = sent.lock() {
            m.insert(format!("ap-{i:04}"), Instant::now());
        }
        probe.send(&[Record::Reading(r)]).await?;
        tokio::time::sleep(Duration::from_millis(probe_every_ms)).await;
    }
    let probe_secs = t0.elapsed().as_secs_f64();
    let deadline = Instant::now() + Duration::from_secs(30);
    while got.lock().map(|g| g.len()).unwrap_or(0) < probes && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let background_sent = background.await??;
    reader.abort();
    let hub_rss = hub.id().map_or(0, peak_rss_kib);
    let _ = hub.kill().await;
    let mut lat = got.lock().map(|g| g.clone()).unwrap_or_default();
    lat.sort_by(f64::total_cmp);
    let report = json!({
        "background_readings_per_s": background_rate,
        "background_readings_sent": background_sent,
        "probes": probes,
        "probe_window_s": probe_secs,
        "alerts_received": lat.len(),
        "latency_ms": {
            "p50": percentile(&lat, 0.50),
            "p99": percentile(&lat, 0.99),
            "max": lat.last().copied().unwrap_or(f64::NAN),
        },
        "hub_peak_rss_mib": hub_rss as f64 / 1024.0,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    if lat.len() < probes {
        bail!("only {} of {probes} alerts reached the stream", lat.len());
    }
    Ok(())
}

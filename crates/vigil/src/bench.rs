//! `vigil bench`: end-to-end throughput, storage cost and memory, each beside a baseline of
//! the raw storage engine measured in the same run on the same data.
//!
//! Stages:
//! 1. raw SQLite: one row per reading (patient, code, time, value) with and without a
//!    (patient, code, time) index, 1,000 rows per transaction, WAL, synchronous=FULL;
//! 2. the gateway outbox, in a child process (so its resident memory is its own): appends
//!    from several concurrent sources, group commit, fsync;
//! 3. the sync path: a real `vigil hub` and a real `vigil gateway` process drain the filled
//!    outbox over loopback HTTP into hub storage; then the store is compacted and measured.

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
}

#[derive(Debug, Subcommand)]
enum Stage {
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
    let ob = vigil_outbox::Outbox::open(vigil_outbox::OutboxConfig {
        path,
        max_bytes: 16 << 30,
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

async fn spawn_announcing(
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
    if let Some(Stage::Outbox {
        path,
        readings,
        patients,
        sources,
        batch,
    }) = a.stage
    {
        return outbox_stage(path, readings, patients, sources, batch).await;
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
    let out = tokio::process::Command::new(&exe)
        .args(["bench", "outbox", "--path"])
        .arg(&outbox)
        .args([
            "--readings",
            &n.to_string(),
            "--patients",
            &a.patients.to_string(),
        ])
        .stderr(Stdio::inherit())
        .output()
        .await?;
    if !out.status.success() {
        bail!("outbox stage failed");
    }
    let ob: OutboxReport = serde_json::from_slice(&out.stdout).context("outbox stage report")?;
    eprintln!(
        "  outbox: {:.0} readings/s, {} commits, peak RSS {} KiB",
        ob.per_second, ob.commits, ob.peak_rss_kib
    );

    // 3. Sync: real hub and gateway processes over loopback.
    let hub_dir = dir.join("hub");
    let token = {
        let store = vigil_store::sqlite::SqliteStore::open(hub_dir.join("hub.db"))?;
        let token = vigil_hub::auth::new_token(vigil_hub::auth::GATEWAY_PREFIX);
        store
            .create_gateway("bench-gw", &vigil_hub::auth::hash_token(&token))
            .await?;
        let g = spec(n, a.patients).generator()?;
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
    let (mut hub, hub_addr) = spawn_announcing(
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
            .env("VIGIL_HUB__COMPACT_EVERY_S", "0"),
        "hub listening on ",
    )
    .await?;
    let client = reqwest::Client::new();
    let t = Instant::now();
    let mut gw = tokio::process::Command::new(&exe)
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
        .arg(&outbox)
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
    eprintln!("  sync outbox -> hub: {sync_rate:.0} readings/s");

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

/// A working directory that is removed afterwards unless the user named one.
enum WorkDir {
    Temp(tempfile::TempDir),
    Kept(PathBuf),
}

impl WorkDir {
    fn path(&self) -> &Path {
        match self {
            Self::Temp(t) => t.path(),
            Self::Kept(p) => p,
        }
    }
}

fn tempfile_dir(dir: Option<&Path>) -> anyhow::Result<WorkDir> {
    Ok(match dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            WorkDir::Kept(d.to_owned())
        }
        None => WorkDir::Temp(tempfile::tempdir()?),
    })
}

//! The sync task: outbox -> hub, in order, resumable, with backoff.

use crate::GatewayConfig;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use vigil_outbox::Outbox;
use vigil_sync::{Ack, Batch, WireRecord};

/// Live sync state for health endpoints.
#[derive(Debug, Default)]
pub struct SyncState {
    connected: AtomicBool,
    batches_sent: AtomicU64,
    records_confirmed: AtomicU64,
    failures: AtomicU64,
    hub_cursor: AtomicU64,
    last_error: Mutex<Option<String>>,
}

/// A snapshot of [`SyncState`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct SyncStatus {
    pub connected: bool,
    pub batches_sent: u64,
    pub records_confirmed: u64,
    pub failures: u64,
    pub hub_cursor: u64,
    pub last_error: Option<String>,
}

impl SyncState {
    pub fn snapshot(&self) -> SyncStatus {
        SyncStatus {
            connected: self.connected.load(Ordering::Relaxed),
            batches_sent: self.batches_sent.load(Ordering::Relaxed),
            records_confirmed: self.records_confirmed.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            hub_cursor: self.hub_cursor.load(Ordering::Relaxed),
            last_error: self.last_error.lock().ok().and_then(|e| e.clone()),
        }
    }
    fn fail(&self, msg: String) {
        self.connected.store(false, Ordering::Relaxed);
        self.failures.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut e) = self.last_error.lock() {
            *e = Some(msg);
        }
    }
}

enum Outcome {
    Acked(Ack),
    Behind(u64),
    Retry(String),
}

async fn send(client: &reqwest::Client, cfg: &GatewayConfig, body: Vec<u8>) -> Outcome {
    let url = format!("{}/api/v1/ingest", cfg.hub_url.trim_end_matches('/'));
    let resp = client
        .post(url)
        .bearer_auth(&cfg.token)
        .header(reqwest::header::CONTENT_TYPE, vigil_sync::CONTENT_TYPE)
        .body(body)
        .send()
        .await;
    let resp = match resp {
        Ok(r) => r,
        Err(e) => return Outcome::Retry(format!("hub unreachable: {e}")),
    };
    let status = resp.status();
    let bytes = match resp.bytes().await {
        Ok(b) => b,
        Err(e) => return Outcome::Retry(format!("reading hub answer: {e}")),
    };
    if status.is_success() {
        return match serde_json::from_slice::<Ack>(&bytes) {
            Ok(a) => Outcome::Acked(a),
            Err(e) => Outcome::Retry(format!("hub answer is not an ack: {e}")),
        };
    }
    if status.as_u16() == 409
        && let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes)
        && let Some(c) = v.get("cursor").and_then(serde_json::Value::as_u64)
    {
        return Outcome::Behind(c);
    }
    let detail = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| v.get("detail").and_then(|d| d.as_str()).map(str::to_owned))
        .unwrap_or_default();
    Outcome::Retry(format!("hub answered {status}: {detail}"))
}

fn backoff(cfg: &GatewayConfig, failures: u32) -> Duration {
    // Full jitter: uniform in [min, min(max, min * 2^failures)].
    let cap = cfg
        .backoff_min_ms
        .saturating_mul(1u64 << failures.min(20))
        .min(cfg.backoff_max_ms)
        .max(cfg.backoff_min_ms);
    Duration::from_millis(rand::random_range(cfg.backoff_min_ms..=cap))
}

/// Runs until `stop` turns true.
pub(crate) async fn run(
    client: reqwest::Client,
    cfg: GatewayConfig,
    outbox: Outbox,
    state: std::sync::Arc<SyncState>,
    stop: watch::Receiver<bool>,
) {
    // What the hub is believed to hold. Starts at what it last confirmed.
    let mut after = outbox.confirmed();
    let mut failures = 0u32;
    let epoch = outbox.epoch();
    // The next batch, read (and decrypted, encoded, compressed) while the current one is in
    // flight, for the position the hub will hold once it acknowledges the current one. It is
    // used only when the hub's answer moves the cursor exactly there; otherwise it is dropped
    // and the batch is read again from wherever the cursor is.
    let mut prefetched: Option<(u64, JoinHandle<ReadBatch>)> = None;
    loop {
        if *stop.borrow() {
            return;
        }
        let task = match prefetched.take() {
            Some((from, task)) if from == after => task,
            // A blocking read cannot be cancelled; its result is simply not used.
            _ => start_read(&outbox, epoch, after, cfg.batch_max_records),
        };
        let read = task.await;
        let (n, last, body) = match read {
            Ok(Ok(x)) => x,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "reading the outbox failed");
                if sleep_or_stop(&stop, Duration::from_secs(1)).await {
                    return;
                }
                continue;
            }
            Err(e) => {
                tracing::error!(error = %e, "outbox reader task failed");
                return;
            }
        };
        if let Some(next) = last.filter(|_| n > 0) {
            prefetched = Some((
                next,
                start_read(&outbox, epoch, next, cfg.batch_max_records),
            ));
        }
        if n == 0 && state.connected.load(Ordering::Relaxed) {
            // Idle: wait for new records.
            if sleep_or_stop(&stop, Duration::from_millis(50)).await {
                return;
            }
            continue;
        }
        // An empty batch while disconnected is a probe that also learns the hub's cursor.
        match send(&client, &cfg, body).await {
            Outcome::Acked(ack) => {
                failures = 0;
                state.connected.store(true, Ordering::Relaxed);
                state.batches_sent.fetch_add(1, Ordering::Relaxed);
                state.hub_cursor.store(ack.cursor, Ordering::Relaxed);
                if ack.cursor > after {
                    if let Err(e) = outbox.confirm(ack.cursor).await {
                        tracing::error!(error = %e, "confirming in the outbox failed");
                        continue;
                    }
                    state
                        .records_confirmed
                        .fetch_add((ack.stored + ack.quarantined) as u64, Ordering::Relaxed);
                    after = ack.cursor;
                }
                if ack.quarantined > 0 {
                    tracing::warn!(
                        quarantined = ack.quarantined,
                        "hub quarantined records of this batch"
                    );
                }
            }
            Outcome::Behind(cursor) => {
                tracing::error!(
                    hub_cursor = cursor,
                    gateway_confirmed = after,
                    "hub holds less than it confirmed earlier (restored from backup?); resending from its cursor"
                );
                after = cursor;
            }
            Outcome::Retry(msg) => {
                if state.connected.load(Ordering::Relaxed) || failures == 0 {
                    tracing::warn!(error = %msg, "sync to hub failed; backing off");
                }
                state.fail(msg);
                failures = failures.saturating_add(1);
                if sleep_or_stop(&stop, backoff(&cfg, failures)).await {
                    return;
                }
            }
        }
    }
}

/// A batch read from the outbox: its record count, last sequence number and encoded body.
type ReadBatch = Result<(usize, Option<u64>, Vec<u8>), vigil_outbox::OutboxError>;

/// Starts reading the records after `after` (at most `max`) and encoding them as one batch.
fn start_read(outbox: &Outbox, epoch: u64, after: u64, max: usize) -> JoinHandle<ReadBatch> {
    let ob = outbox.clone();
    tokio::task::spawn_blocking(move || {
        let pending = ob.read_after(after, max, vigil_sync::MAX_DECOMPRESSED / 2)?;
        let batch = Batch {
            version: vigil_sync::VERSION,
            epoch,
            after,
            records: pending
                .into_iter()
                .map(|p| WireRecord {
                    seq: p.seq,
                    payload: p.payload,
                })
                .collect(),
        };
        Ok((
            batch.records.len(),
            batch.records.last().map(|r| r.seq),
            batch.encode(),
        ))
    })
}

/// Sleeps for `d`; true when stop was requested meanwhile.
async fn sleep_or_stop(stop: &watch::Receiver<bool>, d: Duration) -> bool {
    let mut rx = stop.clone();
    tokio::select! {
        _ = tokio::time::sleep(d) => *stop.borrow(),
        _ = rx.wait_for(|s| *s) => true,
    }
}

//! The gateway-local quarantine of device messages that could not be decoded.
//!
//! The outbox holds canonical records only. A device message that does not decode (unknown
//! format, malformed payload, a device id that contradicts its topic) must still be
//! acknowledged, or the broker would redeliver it forever and block the messages behind it,
//! but its raw bytes must not be lost. It is written here first, committed (SQLite, WAL,
//! `synchronous=FULL`), and only then acknowledged.
//!
//! The file is `quarantine.db` next to the outbox unless configured otherwise; one table
//! `quarantine(id, received_ms, adapter, topic, reason, payload_len, payload)`. Inspect it with
//! any SQLite client. Its payload bytes are bounded: past `max_bytes` of stored payloads, new
//! entries keep their topic, reason, time and length but not the payload (`payload` NULL), so
//! a device sending garbage at a high rate cannot fill the disk.

use rusqlite::{Connection, params};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use vigil_model::Timestamp;

#[derive(Debug, thiserror::Error)]
pub enum QuarantineError {
    #[error("quarantine storage error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("quarantine is unavailable")]
    Closed,
}

/// One quarantined message.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct QuarantineEntry {
    pub id: i64,
    pub received: Timestamp,
    /// The adapter that received it (`mqtt`).
    pub adapter: String,
    /// Where it came from (the MQTT topic).
    pub topic: String,
    /// Why it was not decoded.
    pub reason: String,
    pub payload_len: u64,
    /// The raw payload; `None` when the quarantine was at its bound.
    pub payload: Option<Vec<u8>>,
}

#[derive(Debug)]
struct Store {
    conn: Connection,
    /// Payload bytes stored so far.
    stored: u64,
}

/// Handle to the quarantine file. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Quarantine {
    conn: Arc<Mutex<Store>>,
    path: PathBuf,
    max_bytes: u64,
}

impl Quarantine {
    /// The default bound on stored payload bytes: 256 MiB.
    pub const DEFAULT_MAX_BYTES: u64 = 256 << 20;

    /// Opens (creating when absent) the quarantine at `path`. Blocking.
    pub fn open(path: impl AsRef<Path>, max_bytes: u64) -> Result<Self, QuarantineError> {
        let path = path.as_ref().to_owned();
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let conn = Connection::open(&path)?;
        conn.busy_timeout(std::time::Duration::from_secs(30))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS quarantine(
                 id INTEGER PRIMARY KEY AUTOINCREMENT,
                 received_ms INTEGER NOT NULL,
                 adapter TEXT NOT NULL,
                 topic TEXT NOT NULL,
                 reason TEXT NOT NULL,
                 payload_len INTEGER NOT NULL,
                 payload BLOB);",
        )?;
        let stored: i64 = conn.query_row(
            "SELECT coalesce(sum(length(payload)), 0) FROM quarantine",
            [],
            |r| r.get(0),
        )?;
        Ok(Self {
            conn: Arc::new(Mutex::new(Store {
                conn,
                stored: stored as u64,
            })),
            path,
            max_bytes,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stores one message durably (committed when this returns). Blocking.
    pub fn put_blocking(
        &self,
        adapter: &str,
        topic: &str,
        reason: &str,
        payload: &[u8],
        received: Timestamp,
    ) -> Result<i64, QuarantineError> {
        let mut store = self.conn.lock().map_err(|_| QuarantineError::Closed)?;
        let keep = store.stored.saturating_add(payload.len() as u64) <= self.max_bytes;
        store.conn.execute(
            "INSERT INTO quarantine(received_ms, adapter, topic, reason, payload_len, payload)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                received.millis(),
                adapter,
                topic,
                reason,
                payload.len() as i64,
                keep.then_some(payload)
            ],
        )?;
        if keep {
            store.stored += payload.len() as u64;
        }
        Ok(store.conn.last_insert_rowid())
    }

    /// [`Self::put_blocking`] from async code.
    pub async fn put(
        &self,
        adapter: &str,
        topic: &str,
        reason: &str,
        payload: &[u8],
        received: Timestamp,
    ) -> Result<i64, QuarantineError> {
        let q = self.clone();
        let (adapter, topic, reason, payload) = (
            adapter.to_owned(),
            topic.to_owned(),
            reason.to_owned(),
            payload.to_vec(),
        );
        tokio::task::spawn_blocking(move || {
            q.put_blocking(&adapter, &topic, &reason, &payload, received)
        })
        .await
        .map_err(|_| QuarantineError::Closed)?
    }

    /// Every entry, oldest first. Blocking.
    pub fn entries(&self) -> Result<Vec<QuarantineEntry>, QuarantineError> {
        let store = self.conn.lock().map_err(|_| QuarantineError::Closed)?;
        let mut stmt = store.conn.prepare(
            "SELECT id, received_ms, adapter, topic, reason, payload_len, payload
             FROM quarantine ORDER BY id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(QuarantineEntry {
                id: r.get(0)?,
                received: Timestamp::from_millis(r.get(1)?),
                adapter: r.get(2)?,
                topic: r.get(3)?,
                reason: r.get(4)?,
                payload_len: r.get::<_, i64>(5)? as u64,
                payload: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

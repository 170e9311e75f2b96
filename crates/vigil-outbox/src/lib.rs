//! The gateway's durable outbox.
//!
//! Every record a source hands to the gateway is written here first: SQLite in WAL mode with
//! `synchronous=FULL`, many appends per transaction (group commit), and only then is the
//! source acknowledged. Records get a per-outbox monotonic sequence number that the hub uses to
//! deduplicate; a record leaves the outbox only when the hub has confirmed it as stored.
//!
//! The outbox is bounded (`max_bytes`). When the bound is reached it applies a documented
//! policy: the oldest unsent continuous stream samples (1 Hz heart rate, SpO2, ...) are thinned
//! to half their rate, repeatedly if needed; spot readings and events are never dropped. When
//! only spot readings and events remain, new stream samples are refused (not acknowledged, so
//! the source keeps them) while spot readings and events may still use a reserve of 10 % above
//! the bound; past that every append is refused with [`OutboxError::Full`] (backpressure).
//!
//! Records are encrypted at rest ([`crypt`]): each payload is sealed with XChaCha20-Poly1305
//! under the outbox key, bound to its row (epoch, seq, stream flag, receive time). In clear the
//! file holds only the bookkeeping the outbox needs: sequence numbers, the stream flag (for
//! thinning), the gateway receive time (for thinning order and the oldest-unsent gauge),
//! payload sizes, the epoch and counters. Patient ids, device ids, metrics and values live
//! only inside the sealed payloads. A key check value (a sealed known marker) in the file
//! makes opening with the wrong key fail at once; a record that fails authentication is
//! moved to a quarantine table and reported, never decoded.
//!
//! This crate must never acknowledge anything before its transaction has committed, and never
//! delete an unconfirmed record except by the thinning policy above.

pub mod crypt;

pub use crypt::{KeyError, SecretKey};

use crypt::{RecordCipher, RowBinding, SEAL_OVERHEAD};
use rusqlite::{Connection, OptionalExtension, params};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use tokio::sync::{mpsc, oneshot};
use vigil_model::{Record, Timestamp};

/// Bytes counted per row on top of its payload (rowid, columns, b-tree cell).
const ROW_OVERHEAD: u64 = 24;
/// How many records one transaction takes at most.
const GROUP_MAX: usize = 50_000;

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("outbox storage error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("outbox transaction failed: {0}")]
    Transaction(String),
    #[error("outbox is full ({bytes} of {max} bytes); the source must keep its data and retry")]
    Full { bytes: u64, max: u64 },
    #[error("record could not be encoded: {0}")]
    Encode(#[from] postcard::Error),
    #[error("the outbox writer has stopped")]
    Closed,
    #[error("outbox {path} was encrypted with another key; give the key it was created with")]
    WrongKey { path: PathBuf },
    #[error(
        "outbox {path} is not encrypted (written by an older version); encrypt it first with `vigil admin outbox-encrypt --outbox {path} --key-file FILE`"
    )]
    NotEncrypted { path: PathBuf },
    #[error("outbox {path} is already encrypted")]
    AlreadyEncrypted { path: PathBuf },
    #[error("outbox {path} does not exist")]
    Missing { path: PathBuf },
    #[error("record could not be encrypted: {0}")]
    Seal(#[from] crypt::SealError),
}

/// Outbox settings.
#[derive(Debug, Clone)]
pub struct OutboxConfig {
    pub path: PathBuf,
    /// Bound on the bytes of unsent records (sealed payload plus a fixed per-row overhead).
    pub max_bytes: u64,
    /// The key every record is sealed under.
    pub key: SecretKey,
}

impl OutboxConfig {
    pub fn new(path: impl AsRef<Path>, key: SecretKey) -> Self {
        Self {
            path: path.as_ref().to_owned(),
            max_bytes: 1 << 30,
            key,
        }
    }
}

/// What an append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Receipt {
    /// Sequence numbers given to the accepted records (inclusive), when any were accepted.
    pub first_seq: u64,
    pub last_seq: u64,
    pub accepted: usize,
}

/// One unsent record: its sequence number and its encoded form (decrypted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub seq: u64,
    pub payload: Vec<u8>,
}

/// Counters and gauges for health endpoints and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OutboxStats {
    /// Unsent records.
    pub depth: u64,
    /// Bytes of unsent records as counted against the bound.
    pub bytes: u64,
    pub max_bytes: u64,
    /// Gateway receive time of the oldest unsent record.
    pub oldest_unsent_ms: Option<i64>,
    pub confirmed_seq: u64,
    pub last_seq: u64,
    pub appended_total: u64,
    pub thinned_total: u64,
    pub refused_total: u64,
    pub commits_total: u64,
    /// Records that failed authentication (altered on disk) and sit in quarantine.
    pub corrupt: u64,
}

#[derive(Debug, Default)]
struct Shared {
    depth: AtomicU64,
    bytes: AtomicU64,
    oldest_unsent_ms: AtomicU64, // i64 bits; u64::MAX when empty
    confirmed: AtomicU64,
    last_seq: AtomicU64,
    appended_total: AtomicU64,
    thinned_total: AtomicU64,
    refused_total: AtomicU64,
    commits_total: AtomicU64,
    corrupt: AtomicU64,
}

enum Cmd {
    Append(Vec<Record>, oneshot::Sender<Result<Receipt, OutboxError>>),
    Confirm(u64, oneshot::Sender<Result<(), OutboxError>>),
    /// Moves records that failed authentication out of the outbox.
    Quarantine(Vec<u64>),
}

/// Handle to an open outbox. Cheap to clone; the writer thread stops when the last handle
/// is dropped or [`Outbox::close`] is called.
#[derive(Clone, Debug)]
pub struct Outbox {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    tx: Mutex<Option<mpsc::UnboundedSender<Cmd>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    reader: Mutex<Connection>,
    cipher: RecordCipher,
    shared: Arc<Shared>,
    epoch: u64,
    max_bytes: u64,
}

impl std::fmt::Debug for Cmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cmd::Append(r, _) => write!(f, "Append({})", r.len()),
            Cmd::Confirm(s, _) => write!(f, "Confirm({s})"),
            Cmd::Quarantine(s) => write!(f, "Quarantine({})", s.len()),
        }
    }
}

fn open_conn(path: &Path) -> Result<Connection, rusqlite::Error> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(30))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // FULL: a committed transaction survives power loss (NORMAL may lose the last ones in WAL mode).
    conn.pragma_update(None, "synchronous", "FULL")?;
    Ok(conn)
}

fn meta_get(conn: &Connection, key: &str) -> Result<Option<i64>, rusqlite::Error> {
    conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
        .optional()
}

fn meta_set(conn: &Connection, key: &str, v: i64) -> Result<(), rusqlite::Error> {
    conn.execute(
        "INSERT INTO meta(key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        params![key, v],
    )?;
    Ok(())
}

impl Outbox {
    /// Opens (creating when absent) the outbox at `cfg.path` and starts its writer thread.
    /// Fails with [`OutboxError::WrongKey`] when the file was created under another key and
    /// with [`OutboxError::NotEncrypted`] for an outbox written before encryption existed.
    pub fn open(cfg: OutboxConfig) -> Result<Self, OutboxError> {
        if let Some(dir) = cfg.path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let cipher = RecordCipher::new(&cfg.key);
        let mut conn = open_conn(&cfg.path)?;
        let epoch = init_or_check(&mut conn, &cfg.path, &cipher)?;
        let next_seq = meta_get(&conn, "next_seq")?.unwrap_or(1) as u64;
        let confirmed = meta_get(&conn, "confirmed")?.unwrap_or(0) as u64;
        let (depth, bytes): (i64, i64) = conn.query_row(
            "SELECT count(*), coalesce(sum(length(payload)), 0) FROM outbox",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let shared = Arc::new(Shared::default());
        shared.depth.store(depth as u64, Ordering::Relaxed);
        shared.bytes.store(
            bytes as u64 + depth as u64 * ROW_OVERHEAD,
            Ordering::Relaxed,
        );
        shared.confirmed.store(confirmed, Ordering::Relaxed);
        shared.last_seq.store(next_seq - 1, Ordering::Relaxed);
        let corrupt: i64 = conn.query_row("SELECT count(*) FROM quarantine", [], |r| r.get(0))?;
        shared.corrupt.store(corrupt as u64, Ordering::Relaxed);
        refresh_oldest(&conn, &shared)?;

        let reader = open_conn(&cfg.path)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let mut writer = Writer {
            conn,
            cipher: cipher.clone(),
            epoch,
            shared: shared.clone(),
            next_seq,
            max_bytes: cfg.max_bytes,
        };
        let handle = std::thread::Builder::new()
            .name("outbox-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|_| OutboxError::Closed)?;
        Ok(Self {
            inner: Arc::new(Inner {
                tx: Mutex::new(Some(tx)),
                writer: Mutex::new(Some(handle)),
                reader: Mutex::new(reader),
                cipher,
                shared,
                epoch,
                max_bytes: cfg.max_bytes,
            }),
        })
    }

    fn send(&self, cmd: Cmd) -> Result<(), OutboxError> {
        let guard = self.inner.tx.lock().map_err(|_| OutboxError::Closed)?;
        guard
            .as_ref()
            .ok_or(OutboxError::Closed)?
            .send(cmd)
            .map_err(|_| OutboxError::Closed)
    }

    /// Appends records durably. Returns once they are committed to disk; the caller may then
    /// acknowledge its source. Records without a gateway receive time get the current time.
    pub async fn append(&self, records: Vec<Record>) -> Result<Receipt, OutboxError> {
        let (tx, rx) = oneshot::channel();
        self.send(Cmd::Append(records, tx))?;
        rx.await.map_err(|_| OutboxError::Closed)?
    }

    /// [`Self::append`] for synchronous callers (not from inside an async runtime).
    pub fn append_blocking(&self, records: Vec<Record>) -> Result<Receipt, OutboxError> {
        let (tx, rx) = oneshot::channel();
        self.send(Cmd::Append(records, tx))?;
        rx.blocking_recv().map_err(|_| OutboxError::Closed)?
    }

    /// Deletes every record up to and including `seq`: the hub has confirmed them as stored.
    pub async fn confirm(&self, seq: u64) -> Result<(), OutboxError> {
        let (tx, rx) = oneshot::channel();
        self.send(Cmd::Confirm(seq, tx))?;
        rx.await.map_err(|_| OutboxError::Closed)?
    }

    /// [`Self::confirm`] for synchronous callers.
    pub fn confirm_blocking(&self, seq: u64) -> Result<(), OutboxError> {
        let (tx, rx) = oneshot::channel();
        self.send(Cmd::Confirm(seq, tx))?;
        rx.blocking_recv().map_err(|_| OutboxError::Closed)?
    }

    /// Unsent records after `after`, oldest first, at most `max_records` and about
    /// `max_bytes` of payload, decrypted. A record that fails authentication is not returned:
    /// it is logged (by sequence number only), moved to quarantine and counted in
    /// [`OutboxStats::corrupt`]. Blocking: call from a blocking context.
    pub fn read_after(
        &self,
        after: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<Pending>, OutboxError> {
        let mut out = Vec::new();
        let mut corrupt = Vec::new();
        {
            let conn = self.inner.reader.lock().map_err(|_| OutboxError::Closed)?;
            let mut stmt = conn.prepare_cached(
                "SELECT seq, stream, received, payload FROM outbox WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )?;
            let mut rows = stmt.query(params![after as i64, max_records as i64])?;
            let mut bytes = 0usize;
            while let Some(row) = rows.next()? {
                let seq = row.get::<_, i64>(0)? as u64;
                let binding = RowBinding {
                    epoch: self.inner.epoch,
                    seq,
                    stream: row.get(1)?,
                    received: row.get(2)?,
                };
                let sealed = row.get_ref(3)?.as_blob().map_err(rusqlite::Error::from)?;
                bytes += sealed.len();
                match self.inner.cipher.open(&binding, sealed) {
                    Ok(payload) => out.push(Pending { seq, payload }),
                    Err(_) => corrupt.push(seq),
                }
                if bytes >= max_bytes {
                    break;
                }
            }
        }
        if !corrupt.is_empty() {
            tracing::error!(
                count = corrupt.len(),
                first_seq = corrupt[0],
                "outbox records failed authentication (altered on disk); moved to quarantine"
            );
            // Best effort: a closed writer leaves them in place, and the next read reports
            // them again.
            let _ = self.send(Cmd::Quarantine(corrupt));
        }
        Ok(out)
    }

    /// Encrypts, in place, an outbox written before encryption existed, under `key`; then
    /// rewrites the file (VACUUM) so no clear payload remains in its pages or its WAL.
    /// Returns how many records were encrypted. The outbox must not be open elsewhere.
    pub fn encrypt_existing(path: &Path, key: &SecretKey) -> Result<u64, OutboxError> {
        if !path.exists() {
            return Err(OutboxError::Missing {
                path: path.to_owned(),
            });
        }
        let mut conn = open_conn(path)?;
        conn.pragma_update(None, "secure_delete", "ON")?;
        let state = file_state(&conn)?;
        match state {
            FileState::Encrypted => {
                return Err(OutboxError::AlreadyEncrypted {
                    path: path.to_owned(),
                });
            }
            FileState::New => {
                return Err(OutboxError::Missing {
                    path: path.to_owned(),
                });
            }
            FileState::Plain => {}
        }
        let cipher = RecordCipher::new(key);
        let tx = conn.transaction()?;
        tx.execute_batch(CRYPT_SCHEMA)?;
        let epoch = match meta_get(&tx, "epoch")? {
            Some(e) => e as u64,
            None => {
                let e = rand::random::<u64>() >> 1;
                meta_set(&tx, "epoch", e as i64)?;
                e
            }
        };
        let mut n = 0u64;
        {
            let mut sel = tx.prepare("SELECT seq, stream, received, payload FROM outbox")?;
            let rows: Vec<(i64, bool, i64, Vec<u8>)> = sel
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                .collect::<Result<_, _>>()?;
            let mut upd = tx.prepare("UPDATE outbox SET payload = ?2 WHERE seq = ?1")?;
            for (seq, stream, received, payload) in rows {
                let binding = RowBinding {
                    epoch,
                    seq: seq as u64,
                    stream,
                    received,
                };
                upd.execute(params![seq, cipher.seal(&binding, &payload)?])?;
                n += 1;
            }
        }
        tx.execute(
            "INSERT INTO keycheck(id, kcv) VALUES (1, ?1)",
            [cipher.key_check(epoch)?],
        )?;
        tx.commit()?;
        conn.execute_batch("VACUUM; PRAGMA wal_checkpoint(TRUNCATE);")?;
        Ok(n)
    }

    /// Decodes a stored payload.
    pub fn decode(payload: &[u8]) -> Result<Record, postcard::Error> {
        postcard::from_bytes(payload)
    }

    /// This outbox's sequence space (see the crate docs).
    pub fn epoch(&self) -> u64 {
        self.inner.epoch
    }

    /// The highest sequence number the hub has confirmed.
    pub fn confirmed(&self) -> u64 {
        self.inner.shared.confirmed.load(Ordering::Acquire)
    }

    pub fn stats(&self) -> OutboxStats {
        let s = &self.inner.shared;
        let oldest = s.oldest_unsent_ms.load(Ordering::Relaxed);
        OutboxStats {
            depth: s.depth.load(Ordering::Relaxed),
            bytes: s.bytes.load(Ordering::Relaxed),
            max_bytes: self.inner.max_bytes,
            oldest_unsent_ms: (oldest != u64::MAX).then_some(oldest as i64),
            confirmed_seq: s.confirmed.load(Ordering::Relaxed),
            last_seq: s.last_seq.load(Ordering::Relaxed),
            appended_total: s.appended_total.load(Ordering::Relaxed),
            thinned_total: s.thinned_total.load(Ordering::Relaxed),
            refused_total: s.refused_total.load(Ordering::Relaxed),
            commits_total: s.commits_total.load(Ordering::Relaxed),
            corrupt: s.corrupt.load(Ordering::Relaxed),
        }
    }

    /// Stops the writer after it has committed everything already handed to it.
    pub fn close(&self) {
        if let Ok(mut tx) = self.inner.tx.lock() {
            tx.take();
        }
        if let Ok(mut w) = self.inner.writer.lock()
            && let Some(h) = w.take()
        {
            let _ = h.join();
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Ok(mut tx) = self.tx.lock() {
            tx.take();
        }
        if let Ok(mut w) = self.writer.lock()
            && let Some(h) = w.take()
        {
            let _ = h.join();
        }
    }
}

/// The tables of an encrypted outbox besides `outbox` and `meta`.
const CRYPT_SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS keycheck(id INTEGER PRIMARY KEY CHECK (id = 1), kcv BLOB NOT NULL);
    CREATE TABLE IF NOT EXISTS quarantine(
        seq INTEGER PRIMARY KEY,
        stream INTEGER NOT NULL,
        received INTEGER NOT NULL,
        payload BLOB NOT NULL,
        quarantined INTEGER NOT NULL);";

enum FileState {
    /// No outbox in the file yet.
    New,
    /// An outbox without a key check: written before encryption.
    Plain,
    Encrypted,
}

fn table_exists(conn: &Connection, name: &str) -> Result<bool, rusqlite::Error> {
    conn.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
        [name],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n > 0)
}

fn file_state(conn: &Connection) -> Result<FileState, rusqlite::Error> {
    if !table_exists(conn, "outbox")? {
        return Ok(FileState::New);
    }
    let has_kcv = table_exists(conn, "keycheck")?
        && conn.query_row("SELECT count(*) FROM keycheck", [], |r| r.get::<_, i64>(0))? > 0;
    Ok(if has_kcv {
        FileState::Encrypted
    } else {
        FileState::Plain
    })
}

/// Creates a new encrypted outbox in one transaction (tables, epoch, key check), or checks
/// an existing one against the key. Returns the epoch.
fn init_or_check(
    conn: &mut Connection,
    path: &Path,
    cipher: &RecordCipher,
) -> Result<u64, OutboxError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    match file_state(&tx)? {
        FileState::Plain => Err(OutboxError::NotEncrypted {
            path: path.to_owned(),
        }),
        FileState::Encrypted => {
            let epoch = meta_get(&tx, "epoch")?.unwrap_or(0) as u64;
            let kcv: Vec<u8> =
                tx.query_row("SELECT kcv FROM keycheck WHERE id = 1", [], |r| r.get(0))?;
            if !cipher.verify_key_check(epoch, &kcv) {
                return Err(OutboxError::WrongKey {
                    path: path.to_owned(),
                });
            }
            // An outbox from before the quarantine table existed gets it.
            tx.execute_batch(CRYPT_SCHEMA)?;
            tx.commit()?;
            Ok(epoch)
        }
        FileState::New => {
            tx.execute_batch(
                "CREATE TABLE IF NOT EXISTS outbox(
                     seq INTEGER PRIMARY KEY,
                     stream INTEGER NOT NULL,
                     received INTEGER NOT NULL,
                     payload BLOB NOT NULL);
                 CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL);",
            )?;
            tx.execute_batch(CRYPT_SCHEMA)?;
            // The epoch names this outbox's sequence space: a new outbox file starts a new
            // one, so the hub never mistakes restarted sequence numbers for duplicates.
            let epoch = rand::random::<u64>() >> 1; // fits an SQLite INTEGER
            meta_set(&tx, "epoch", epoch as i64)?;
            tx.execute(
                "INSERT INTO keycheck(id, kcv) VALUES (1, ?1)",
                [cipher.key_check(epoch)?],
            )?;
            tx.commit()?;
            Ok(epoch)
        }
    }
}

fn refresh_oldest(conn: &Connection, shared: &Shared) -> Result<(), rusqlite::Error> {
    let oldest: Option<i64> = conn
        .query_row(
            "SELECT received FROM outbox ORDER BY seq LIMIT 1",
            [],
            |r| r.get(0),
        )
        .optional()?;
    shared
        .oldest_unsent_ms
        .store(oldest.map_or(u64::MAX, |v| v as u64), Ordering::Relaxed);
    Ok(())
}

/// Where the writer answers one append.
type Reply = oneshot::Sender<Result<Receipt, OutboxError>>;

struct Writer {
    conn: Connection,
    cipher: RecordCipher,
    epoch: u64,
    shared: Arc<Shared>,
    next_seq: u64,
    max_bytes: u64,
}

struct Encoded {
    stream: bool,
    received: i64,
    payload: Vec<u8>,
}

impl Writer {
    fn run(&mut self, mut rx: mpsc::UnboundedReceiver<Cmd>) {
        while let Some(first) = rx.blocking_recv() {
            let mut cmds = vec![first];
            let mut n = 0usize;
            while n < GROUP_MAX {
                match rx.try_recv() {
                    Ok(c) => {
                        if let Cmd::Append(r, _) = &c {
                            n += r.len();
                        }
                        cmds.push(c);
                    }
                    Err(_) => break,
                }
            }
            self.group(cmds);
        }
    }

    /// One transaction for a group of commands; replies only after commit.
    fn group(&mut self, cmds: Vec<Cmd>) {
        let now = Timestamp::now();
        let mut replies_append = Vec::new();
        let mut replies_confirm = Vec::new();
        let mut work: Vec<(Vec<Encoded>, Option<Reply>)> = Vec::new();
        let mut confirm_to: Option<u64> = None;
        let mut quarantine: Vec<u64> = Vec::new();
        for cmd in cmds {
            match cmd {
                Cmd::Append(records, reply) => {
                    let enc: Result<Vec<Encoded>, _> = records
                        .into_iter()
                        .map(|mut r| {
                            if r.received().is_none() {
                                r.set_received(now);
                            }
                            let stream = r.is_stream_sample();
                            let received = r.received().map_or(now.millis(), Timestamp::millis);
                            postcard::to_stdvec(&r).map(|payload| Encoded {
                                stream,
                                received,
                                payload,
                            })
                        })
                        .collect();
                    match enc {
                        Ok(e) => work.push((e, Some(reply))),
                        Err(e) => {
                            let _ = reply.send(Err(OutboxError::Encode(e)));
                        }
                    }
                }
                Cmd::Confirm(seq, reply) => {
                    confirm_to = Some(confirm_to.map_or(seq, |c| c.max(seq)));
                    replies_confirm.push(reply);
                }
                Cmd::Quarantine(seqs) => quarantine.extend(seqs),
            }
        }
        let result = self.transaction(&mut work, confirm_to, &quarantine);
        match result {
            Ok(receipts) => {
                for ((_, reply), receipt) in work.iter_mut().zip(receipts) {
                    if let Some(reply) = reply.take() {
                        replies_append.push((reply, receipt));
                    }
                }
                for (reply, receipt) in replies_append {
                    let _ = reply.send(receipt);
                }
                for reply in replies_confirm {
                    let _ = reply.send(Ok(()));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "outbox transaction failed");
                for (_, reply) in work.iter_mut() {
                    if let Some(reply) = reply.take() {
                        let _ = reply.send(Err(OutboxError::Transaction(e.to_string())));
                    }
                }
                for reply in replies_confirm {
                    let _ = reply.send(Err(OutboxError::Transaction(e.to_string())));
                }
            }
        }
    }

    fn transaction(
        &mut self,
        work: &mut [(Vec<Encoded>, Option<Reply>)],
        confirm_to: Option<u64>,
        quarantine: &[u64],
    ) -> Result<Vec<Result<Receipt, OutboxError>>, rusqlite::Error> {
        let tx = self.conn.transaction()?;
        let mut bytes = self.shared.bytes.load(Ordering::Relaxed);
        let mut depth = self.shared.depth.load(Ordering::Relaxed);
        let mut confirmed = self.shared.confirmed.load(Ordering::Relaxed);
        let mut thinned = 0u64;
        let mut refused = 0u64;
        let mut quarantined = 0u64;
        if !quarantine.is_empty() {
            let now = Timestamp::now().millis();
            let mut copy = tx.prepare_cached(
                "INSERT OR IGNORE INTO quarantine(seq, stream, received, payload, quarantined)
                 SELECT seq, stream, received, payload, ?2 FROM outbox WHERE seq = ?1",
            )?;
            let mut del =
                tx.prepare_cached("DELETE FROM outbox WHERE seq = ?1 RETURNING length(payload)")?;
            for &seq in quarantine {
                copy.execute(params![seq as i64, now])?;
                let len: Option<i64> = del.query_row([seq as i64], |r| r.get(0)).optional()?;
                if let Some(len) = len {
                    quarantined += 1;
                    depth = depth.saturating_sub(1);
                    bytes = bytes.saturating_sub(len as u64 + ROW_OVERHEAD);
                }
            }
        }
        if let Some(upto) = confirm_to
            && upto > confirmed
        {
            let (n, b): (i64, i64) = tx.query_row(
                "SELECT count(*), coalesce(sum(length(payload)), 0) FROM outbox WHERE seq <= ?1",
                [upto as i64],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            tx.execute("DELETE FROM outbox WHERE seq <= ?1", [upto as i64])?;
            depth -= n as u64;
            bytes -= b as u64 + n as u64 * ROW_OVERHEAD;
            confirmed = upto;
            meta_set(&tx, "confirmed", confirmed as i64)?;
        }
        let mut receipts = Vec::with_capacity(work.len());
        let mut next_seq = self.next_seq;
        let mut appended = 0u64;
        {
            let mut ins = tx.prepare_cached(
                "INSERT INTO outbox(seq, stream, received, payload) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for (records, _) in work.iter() {
                let need: u64 = records
                    .iter()
                    .map(|e| (e.payload.len() + SEAL_OVERHEAD) as u64 + ROW_OVERHEAD)
                    .sum();
                if bytes + need > self.max_bytes {
                    let (n, b) = thin(&tx, bytes + need - self.max_bytes)?;
                    thinned += n;
                    depth -= n;
                    bytes -= b;
                }
                let has_stream = records.iter().any(|e| e.stream);
                let over = bytes + need > self.max_bytes;
                let reserve = self.max_bytes + self.max_bytes / 10;
                if (over && has_stream) || bytes + need > reserve {
                    refused += records.len() as u64;
                    receipts.push(Err(OutboxError::Full {
                        bytes,
                        max: self.max_bytes,
                    }));
                    continue;
                }
                let first = next_seq;
                let sealed = seal_all(&self.cipher, self.epoch, first, records)
                    .map_err(|err| rusqlite::Error::ToSqlConversionFailure(Box::new(err)))?;
                for (e, sealed) in records.iter().zip(sealed) {
                    ins.execute(params![next_seq as i64, e.stream, e.received, sealed])?;
                    next_seq += 1;
                }
                bytes += need;
                depth += records.len() as u64;
                appended += records.len() as u64;
                receipts.push(Ok(Receipt {
                    first_seq: first,
                    last_seq: next_seq.saturating_sub(1),
                    accepted: records.len(),
                }));
            }
        }
        if next_seq != self.next_seq {
            meta_set(&tx, "next_seq", next_seq as i64)?;
        }
        tx.commit()?;
        self.next_seq = next_seq;
        let s = &self.shared;
        s.bytes.store(bytes, Ordering::Relaxed);
        s.depth.store(depth, Ordering::Relaxed);
        s.confirmed.store(confirmed, Ordering::Release);
        s.last_seq.store(next_seq - 1, Ordering::Relaxed);
        s.appended_total.fetch_add(appended, Ordering::Relaxed);
        s.thinned_total.fetch_add(thinned, Ordering::Relaxed);
        s.refused_total.fetch_add(refused, Ordering::Relaxed);
        s.commits_total.fetch_add(1, Ordering::Relaxed);
        s.corrupt.fetch_add(quarantined, Ordering::Relaxed);
        if thinned > 0 {
            tracing::warn!(
                thinned,
                "outbox at its bound: oldest stream samples thinned"
            );
        }
        if refused > 0 {
            tracing::warn!(refused, "outbox full: records refused");
        }
        refresh_oldest(&self.conn, s)?;
        Ok(receipts)
    }
}

/// Runs shorter than this are sealed on the writer thread alone.
const SEAL_PARALLEL_MIN: usize = 256;

/// Seals records that get consecutive sequence numbers from `first`. Sealing is the writer's
/// largest cost, so long runs are split over the available cores (scoped threads, joined
/// before anything is inserted).
fn seal_all(
    cipher: &RecordCipher,
    epoch: u64,
    first: u64,
    records: &[Encoded],
) -> Result<Vec<Vec<u8>>, crypt::SealError> {
    let seal_one = |i: usize, e: &Encoded| {
        cipher.seal(
            &RowBinding {
                epoch,
                seq: first + i as u64,
                stream: e.stream,
                received: e.received,
            },
            &e.payload,
        )
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
    if threads < 2 || records.len() < SEAL_PARALLEL_MIN {
        return records
            .iter()
            .enumerate()
            .map(|(i, e)| seal_one(i, e))
            .collect();
    }
    let per = records.len().div_ceil(threads);
    std::thread::scope(|s| {
        let parts: Vec<_> = records
            .chunks(per)
            .enumerate()
            .map(|(c, chunk)| {
                s.spawn(move || {
                    chunk
                        .iter()
                        .enumerate()
                        .map(|(i, e)| seal_one(c * per + i, e))
                        .collect::<Result<Vec<_>, _>>()
                })
            })
            .collect();
        let mut out = Vec::with_capacity(records.len());
        for p in parts {
            out.extend(p.join().map_err(|_| crypt::SealError)??);
        }
        Ok(out)
    })
}

/// Thins the oldest unsent stream samples to half their rate until about `need` bytes are
/// free. Returns (rows removed, bytes freed).
fn thin(tx: &rusqlite::Transaction<'_>, need: u64) -> Result<(u64, u64), rusqlite::Error> {
    let mut removed = 0u64;
    let mut freed = 0u64;
    // Each pass removes every other stream sample among the oldest ones; a pass that frees
    // nothing means only spot readings and events are left.
    let window = 20_000i64;
    loop {
        let mut stmt = tx.prepare_cached(
            "SELECT seq, length(payload) FROM outbox WHERE stream = 1 ORDER BY seq LIMIT ?1",
        )?;
        let rows: Vec<(i64, i64)> = stmt
            .query_map([window], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        if rows.len() < 2 {
            return Ok((removed, freed));
        }
        let mut del = tx.prepare_cached("DELETE FROM outbox WHERE seq = ?1")?;
        for (seq, len) in rows.iter().skip(1).step_by(2) {
            del.execute([seq])?;
            removed += 1;
            freed += *len as u64 + ROW_OVERHEAD;
            if freed >= need {
                return Ok((removed, freed));
            }
        }
    }
}

#[cfg(test)]
mod tests;

//! The audit log in the SQLite backend: an append-only table in the hub's database (triggers
//! refuse UPDATE and DELETE), the audit key and the checkpoint in two files beside it.
//!
//! - `<database>-audit.key`: 32 random bytes (hex), created with mode 0600 when the database
//!   is created; seals every entry and the checkpoint (see [`crate::audit`]).
//! - `<database>-audit.head`: the checkpoint `seq hash mac` of the newest entry, replaced
//!   (write, fsync, rename) after every append while the writer lock is held, so it never
//!   runs ahead of what committed.
//!
//! Appends take the writer connection like every other write: the entries of one request are
//! one transaction.

use crate::StoreError;
use crate::audit::{
    AuditEntry, AuditHead, AuditQuery, AuditStore, AuditViolation, ChainVerifier, Checkpoint,
    GENESIS, HASH_LEN, NewAuditEntry, StoredAuditRow, entry_hash, entry_mac, head_mac,
};
use crate::sqlite::SqliteStore;
use async_trait::async_trait;
use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, params};
use std::io::Write;
use std::path::{Path, PathBuf};
use vigil_model::Timestamp;

pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS audit(seq INTEGER PRIMARY KEY, t INTEGER NOT NULL, actor TEXT NOT NULL, role TEXT NOT NULL, patient TEXT NOT NULL, action TEXT NOT NULL, resource TEXT NOT NULL, source TEXT NOT NULL, purpose TEXT NOT NULL, outcome INTEGER NOT NULL, detail TEXT NOT NULL, prev_hash BLOB NOT NULL, hash BLOB NOT NULL, mac BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS audit_patient ON audit(patient, seq);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
";

const COLS: &str = "seq, t, actor, role, patient, action, resource, source, purpose, outcome, detail, prev_hash, hash, mac";

/// The audit key file of the database at `db`.
pub fn key_path(db: &Path) -> PathBuf {
    sibling(db, "-audit.key")
}

/// The checkpoint file of the database at `db`.
pub fn checkpoint_path(db: &Path) -> PathBuf {
    sibling(db, "-audit.head")
}

fn sibling(db: &Path, suffix: &str) -> PathBuf {
    let mut name = db.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    db.with_file_name(name)
}

fn io(what: &str, path: &Path, e: std::io::Error) -> StoreError {
    StoreError::Engine(format!("{what} {}: {e}", path.display()))
}

/// Creates the audit table and, for a database without audit entries, the audit key.
pub(crate) fn init(conn: &Connection, db: &Path) -> Result<(), StoreError> {
    conn.execute_batch(SCHEMA)?;
    let key = key_path(db);
    if key.exists() {
        return read_key(db).map(|_| ());
    }
    let n: i64 = conn.query_row("SELECT count(*) FROM audit", [], |r| r.get(0))?;
    if n > 0 {
        return Err(StoreError::Corrupt(format!(
            "the audit log holds {n} entries but its key {} is missing",
            key.display()
        )));
    }
    let bytes: [u8; HASH_LEN] = rand::random();
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(&key).map_err(|e| io("cannot create", &key, e))?;
    f.write_all(hex::encode(bytes).as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| io("cannot write", &key, e))
}

/// After a restore of the database at `db` from a backup: writes the audit key the backup
/// carried (mode 0600, replacing any key there) and a checkpoint at the restored log's head,
/// so `vigil audit verify` checks the restored chain. A restore is a deliberate rollback:
/// entries after the backup are gone, and the new checkpoint says so by pointing at the
/// backup's head.
pub fn restore_sidecars(db: &Path, key_hex: &str) -> Result<(), StoreError> {
    let key = match hex::decode(key_hex.trim()) {
        Ok(k) if k.len() == HASH_LEN => k,
        _ => {
            return Err(StoreError::Corrupt(
                "the backup's audit key is malformed".into(),
            ));
        }
    };
    let path = key_path(db);
    let tmp = sibling(db, "-audit.key.tmp");
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let write = || -> std::io::Result<()> {
        let mut f = opts.open(&tmp)?;
        f.write_all(hex::encode(&key).as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)
    };
    write().map_err(|e| io("cannot write", &path, e))?;
    let conn = open_read_only(db)?;
    if !has_table(&conn)? {
        return Ok(());
    }
    let (seq, hash) = head(&conn)?;
    if seq == 0 {
        return Ok(());
    }
    write_checkpoint(db, &key, &AuditHead { seq, hash })
}

/// The audit key of the database at `db`.
pub fn read_key(db: &Path) -> Result<Vec<u8>, StoreError> {
    let path = key_path(db);
    let text = std::fs::read_to_string(&path).map_err(|e| io("cannot read", &path, e))?;
    match hex::decode(text.trim()) {
        Ok(k) if k.len() == HASH_LEN => Ok(k),
        _ => Err(StoreError::Corrupt(format!(
            "{} is not a 32-byte hex key",
            path.display()
        ))),
    }
}

/// The checkpoint of the database at `db`, none when there is no checkpoint file.
pub fn read_checkpoint(db: &Path) -> Result<Option<Checkpoint>, StoreError> {
    let path = checkpoint_path(db);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io("cannot read", &path, e)),
    };
    let bad = || StoreError::Corrupt(format!("{} is not an audit checkpoint", path.display()));
    let mut parts = text.split_whitespace();
    let (Some(seq), Some(hash), Some(mac), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    let seq = seq.parse::<u64>().map_err(|_| bad())?;
    let hash: [u8; HASH_LEN] = hex::decode(hash)
        .ok()
        .and_then(|h| h.try_into().ok())
        .ok_or_else(bad)?;
    let mac = hex::decode(mac).map_err(|_| bad())?;
    Ok(Some(Checkpoint {
        head: AuditHead { seq, hash },
        mac,
    }))
}

fn write_checkpoint(db: &Path, key: &[u8], head: &AuditHead) -> Result<(), StoreError> {
    let path = checkpoint_path(db);
    let tmp = sibling(db, "-audit.head.tmp");
    let line = format!(
        "{} {} {}\n",
        head.seq,
        hex::encode(head.hash),
        hex::encode(head_mac(key, head))
    );
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(line.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)
    };
    write().map_err(|e| io("cannot write", &path, e))
}

fn head(c: &Connection) -> Result<(u64, [u8; HASH_LEN]), StoreError> {
    let row: Option<(i64, Vec<u8>)> = c
        .query_row(
            "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    match row {
        None => Ok((0, GENESIS)),
        Some((seq, hash)) => {
            let hash = hash.try_into().map_err(|_| {
                StoreError::Corrupt(format!("audit entry {seq} has a malformed hash"))
            })?;
            Ok((seq as u64, hash))
        }
    }
}

fn row(r: &Row<'_>) -> Result<StoredAuditRow, rusqlite::Error> {
    Ok(StoredAuditRow {
        seq: r.get::<_, i64>(0)? as u64,
        entry: NewAuditEntry {
            time: Timestamp(r.get(1)?),
            actor: r.get(2)?,
            role: r.get(3)?,
            patient: r.get(4)?,
            action: r.get(5)?,
            resource: r.get(6)?,
            source: r.get(7)?,
            purpose: r.get(8)?,
            outcome: r.get(9)?,
            detail: r.get(10)?,
        },
        prev_hash: r.get(11)?,
        hash: r.get(12)?,
        mac: r.get(13)?,
    })
}

fn append(
    conn: &mut Connection,
    db: &Path,
    entries: &[NewAuditEntry],
) -> Result<Option<AuditHead>, StoreError> {
    let key = read_key(db)?;
    let tx = conn.transaction()?;
    let (mut seq, mut prev) = head(&tx)?;
    {
        let mut ins = tx.prepare_cached(&format!(
            "INSERT INTO audit({COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"
        ))?;
        for e in entries {
            seq += 1;
            let hash = entry_hash(seq, e, &prev);
            ins.execute(params![
                seq as i64,
                e.time.0,
                e.actor,
                e.role,
                e.patient,
                e.action,
                e.resource,
                e.source,
                e.purpose,
                e.outcome,
                e.detail,
                prev.as_slice(),
                hash.as_slice(),
                entry_mac(&key, &hash).as_slice(),
            ])?;
            prev = hash;
        }
    }
    tx.commit()?;
    if seq == 0 {
        return Ok(None);
    }
    let head = AuditHead { seq, hash: prev };
    write_checkpoint(db, &key, &head)?;
    Ok(Some(head))
}

fn query(c: &Connection, q: &AuditQuery) -> Result<Vec<AuditEntry>, StoreError> {
    let limit = q.limit.min(i64::MAX as usize) as i64;
    let after = q.after.min(i64::MAX as u64) as i64;
    let map = |r: StoredAuditRow| AuditEntry {
        seq: r.seq,
        entry: r.entry,
        prev_hash: hex::encode(r.prev_hash),
        hash: hex::encode(r.hash),
    };
    let rows = match &q.patient {
        Some(p) => c
            .prepare_cached(&format!(
                "SELECT {COLS} FROM audit WHERE patient = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3"
            ))?
            .query_map(params![p, after, limit], row)?
            .collect::<Result<Vec<_>, _>>()?,
        None => c
            .prepare_cached(&format!(
                "SELECT {COLS} FROM audit WHERE seq > ?1 ORDER BY seq LIMIT ?2"
            ))?
            .query_map(params![after, limit], row)?
            .collect::<Result<Vec<_>, _>>()?,
    };
    Ok(rows.into_iter().map(map).collect())
}

#[async_trait]
impl AuditStore for SqliteStore {
    async fn append_audit(
        &self,
        entries: Vec<NewAuditEntry>,
    ) -> Result<Option<AuditHead>, StoreError> {
        self.blocking(move |inner| {
            let mut conn = inner
                .writer
                .lock()
                .map_err(|_| StoreError::Engine("a storage lock was poisoned by a panic".into()))?;
            append(&mut conn, &inner.path, &entries)
        })
        .await
    }

    async fn audit_entries(&self, q: AuditQuery) -> Result<Vec<AuditEntry>, StoreError> {
        self.blocking(move |inner| inner.read(|c| query(c, &q)))
            .await
    }
}

/// Why a log could not be verified.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The log was changed: the first defect.
    #[error("{0}")]
    Violation(#[from] AuditViolation),
    /// The log could not be read (missing database, key or unreadable checkpoint).
    #[error("{0}")]
    Unreadable(#[from] StoreError),
}

impl From<rusqlite::Error> for VerifyError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Unreadable(e.into())
    }
}

/// What a successful verification saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    pub entries: u64,
    pub head: Option<AuditHead>,
}

fn open_read_only(db: &Path) -> Result<Connection, StoreError> {
    if !db.is_file() {
        return Err(StoreError::NotFound(format!(
            "hub database {}",
            db.display()
        )));
    }
    Ok(Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?)
}

fn has_table(c: &Connection) -> Result<bool, StoreError> {
    Ok(c.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'audit'",
        [],
        |r| r.get::<_, i64>(0),
    )? > 0)
}

/// Verifies the whole audit log of the hub database at `db` (read only; safe while the hub
/// runs): the chain, every entry's seal and the checkpoint.
pub fn verify_file(db: &Path) -> Result<Verified, VerifyError> {
    let mut conn = open_read_only(db)?;
    // The checkpoint first: it is written after its entries commit, so the snapshot read
    // next holds at least what it records.
    let checkpoint = read_checkpoint(db)?;
    let key = read_key(db)?;
    let tx = conn.transaction()?;
    let mut v = ChainVerifier::new(&key, checkpoint);
    let mut entries = 0u64;
    if has_table(&tx)? {
        let mut stmt = tx.prepare(&format!("SELECT {COLS} FROM audit ORDER BY seq"))?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            v.push(&row(r)?)?;
            entries += 1;
        }
    }
    let head = v.finish()?;
    Ok(Verified { entries, head })
}

/// Entries of the audit log of the hub database at `db` (read only), oldest first.
pub fn read_file(db: &Path, q: &AuditQuery) -> Result<Vec<AuditEntry>, StoreError> {
    let conn = open_read_only(db)?;
    if !has_table(&conn)? {
        return Ok(Vec::new());
    }
    query(&conn, q)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::ANY_PATIENT;

    fn entry(patient: &str, outcome: u16) -> NewAuditEntry {
        NewAuditEntry {
            time: Timestamp::now(),
            actor: "dr-a".into(),
            role: "clinician".into(),
            patient: patient.into(),
            action: "read".into(),
            resource: format!("GET /api/v1/patients/{patient}"),
            source: "127.0.0.1".into(),
            purpose: "TREAT".into(),
            outcome,
            detail: String::new(),
        }
    }

    #[tokio::test]
    async fn appends_chain_across_transactions_and_survive_reopening() {
        let dir = tempfile::tempdir().expect("tmp");
        let db = dir.path().join("hub.db");
        let store = SqliteStore::open(&db).expect("open");
        let h1 = store
            .append_audit(vec![entry("pat-1", 200), entry("pat-2", 404)])
            .await
            .expect("append");
        assert_eq!(h1.map(|h| h.seq), Some(2));
        drop(store);
        let store = SqliteStore::open(&db).expect("reopen");
        store
            .append_audit(vec![entry(ANY_PATIENT, 200)])
            .await
            .expect("append");
        let v = verify_file(&db).expect("verifies");
        assert_eq!(v.entries, 3);
        let all = store
            .audit_entries(AuditQuery {
                after: 0,
                limit: 10,
                patient: None,
            })
            .await
            .expect("list");
        assert_eq!(all.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(all[1].prev_hash, all[0].hash);
        assert_eq!(
            v.head.map(|h| hex::encode(h.hash)),
            Some(all[2].hash.clone())
        );
        let p2 = store
            .audit_entries(AuditQuery {
                after: 0,
                limit: 10,
                patient: Some("pat-2".into()),
            })
            .await
            .expect("list");
        assert_eq!(p2.len(), 1);
        assert_eq!(p2[0].entry.outcome, 404);
        // The triggers refuse changes through SQL.
        let c = Connection::open(&db).expect("open");
        assert!(c.execute("UPDATE audit SET actor = 'x'", []).is_err());
        assert!(c.execute("DELETE FROM audit WHERE seq = 3", []).is_err());
    }

    #[test]
    fn a_missing_key_with_entries_is_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        let db = dir.path().join("hub.db");
        let rt = tokio::runtime::Runtime::new().expect("rt");
        let store = SqliteStore::open(&db).expect("open");
        rt.block_on(store.append_audit(vec![entry("pat-1", 200)]))
            .expect("append");
        drop(store);
        std::fs::remove_file(key_path(&db)).expect("rm key");
        assert!(SqliteStore::open(&db).is_err());
        assert!(matches!(verify_file(&db), Err(VerifyError::Unreadable(_))));
    }
}

//! Keys and encrypted backups: `vigil admin outbox-key | backup-key | outbox-encrypt | backup
//! | restore`.
//!
//! A backup is a consistent copy of the hub database (`VACUUM INTO` from a read-only
//! connection, so the hub keeps running) encrypted as a stream: XChaCha20-Poly1305 in the
//! STREAM construction (chunks of 64 KiB, each sealed with a counter and a last-chunk flag in
//! its nonce), so reordered, dropped, truncated or altered chunks all fail. File layout:
//!
//! ```text
//! "VIGILBAK" | version (1) | chunk size log2 (1) | key id (8) | nonce prefix (19) | chunks...
//! ```
//!
//! The whole 37-byte header is the associated data of every chunk. The key id (the start of a
//! SHA-256 of the key) only tells "another key" apart from "altered file" in messages.

use crate::InputError;
use crate::config::Config;
use crate::run::announce;
use anyhow::{Context, bail};
use chacha20poly1305::XChaCha20Poly1305;
use chacha20poly1305::aead::stream::{DecryptorBE32, EncryptorBE32};
use chacha20poly1305::aead::{KeyInit, Payload};
use clap::Subcommand;
use rand::RngCore;
use sha2::Digest;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use vigil_outbox::{KeyError, Outbox, SecretKey};

const MAGIC: &[u8; 8] = b"VIGILBAK";
/// Table of the backup copy holding files that live beside the database (the audit key);
/// dropped again by the restore.
const SIDECAR: &str = "vigil_backup_sidecar";
const VERSION: u8 = 1;
const CHUNK_LOG2: u8 = 16;
const CHUNK: usize = 1 << CHUNK_LOG2;
const TAG: usize = 16;
const PREFIX: usize = 19;
const HEADER: usize = 8 + 1 + 1 + 8 + PREFIX;

#[derive(Debug, Subcommand)]
pub enum CryptCmd {
    /// Create a new outbox encryption key file (32 random bytes as hex, mode 0600).
    OutboxKey {
        /// The key file to create; an existing file is never overwritten.
        #[arg(long)]
        out: PathBuf,
    },
    /// Create a new backup encryption key file (keep it apart from the outbox key).
    BackupKey {
        #[arg(long)]
        out: PathBuf,
    },
    /// Encrypt, in place, a gateway outbox written before encryption (gateway stopped).
    OutboxEncrypt {
        #[arg(long)]
        outbox: PathBuf,
        #[arg(long)]
        key_file: PathBuf,
    },
    /// Write an encrypted, consistent copy of the hub database; the hub may keep running.
    Backup {
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// The backup file (written to a temporary file, synced, then renamed).
        #[arg(long)]
        out: PathBuf,
        #[arg(long)]
        key_file: PathBuf,
    },
    /// Decrypt and verify a backup into a hub data directory (hub stopped).
    Restore {
        #[arg(long = "in")]
        input: PathBuf,
        #[arg(long)]
        key_file: PathBuf,
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Replace an existing hub database.
        #[arg(long)]
        force: bool,
    },
}

/// Gateway start errors caused by what the operator gave (key files, a foreign outbox) are
/// input errors: exit code 2.
pub fn gateway_start_error(e: vigil_gateway::GatewayError) -> anyhow::Error {
    use vigil_gateway::GatewayError as G;
    use vigil_outbox::OutboxError as O;
    match e {
        G::Key(_)
        | G::KeyMissing { .. }
        | G::Outbox(O::WrongKey { .. } | O::NotEncrypted { .. }) => {
            InputError(e.to_string()).into()
        }
        other => other.into(),
    }
}

fn load_key(path: &Path) -> anyhow::Result<SecretKey> {
    SecretKey::load(path).map_err(|e| InputError(e.to_string()).into())
}

fn new_key(out: &Path) -> anyhow::Result<()> {
    let key = SecretKey::generate()?;
    key.write_new(out).map_err(|e| match e {
        KeyError::Write { .. } => anyhow::Error::from(InputError(e.to_string())),
        other => other.into(),
    })?;
    announce(&format!("key written to {}", out.display()));
    Ok(())
}

pub async fn run(cmd: CryptCmd, cfg: &Config) -> anyhow::Result<()> {
    match cmd {
        CryptCmd::OutboxKey { out } | CryptCmd::BackupKey { out } => new_key(&out),
        CryptCmd::OutboxEncrypt { outbox, key_file } => {
            let key = load_key(&key_file)?;
            let n = tokio::task::spawn_blocking(move || Outbox::encrypt_existing(&outbox, &key))
                .await?
                .map_err(|e| InputError(e.to_string()))?;
            announce(&format!("outbox encrypted: {n} records"));
            Ok(())
        }
        CryptCmd::Backup {
            data_dir,
            out,
            key_file,
        } => {
            let key = load_key(&key_file)?;
            let db = data_dir
                .unwrap_or_else(|| cfg.data_dir.clone())
                .join(&cfg.hub.database);
            let n = tokio::task::spawn_blocking(move || backup(&db, &out, &key)).await??;
            announce(&format!("backup written: {n} bytes of database"));
            Ok(())
        }
        CryptCmd::Restore {
            input,
            key_file,
            data_dir,
            force,
        } => {
            let key = load_key(&key_file)?;
            let dir = data_dir.unwrap_or_else(|| cfg.data_dir.clone());
            let db = dir.join(&cfg.hub.database);
            if db.exists() && !force {
                return Err(InputError(format!(
                    "{} exists; give --force to replace it (stop the hub first)",
                    db.display()
                ))
                .into());
            }
            if !input.is_file() {
                return Err(InputError(format!("no backup file {}", input.display())).into());
            }
            let n = tokio::task::spawn_blocking(move || restore(&input, &key, &db)).await??;
            announce(&format!("restored: {n} bytes of database"));
            Ok(())
        }
    }
}

fn key_id(key: &SecretKey) -> [u8; 8] {
    let mut h = sha2::Sha256::new();
    h.update(b"vigil backup key id v1");
    h.update(key.as_bytes());
    let d = h.finalize();
    let mut id = [0u8; 8];
    id.copy_from_slice(&d[..8]);
    id
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn progress(len: u64, what: &str) -> indicatif::ProgressBar {
    // Draws on stderr, and not at all when stderr is not a terminal.
    let bar = indicatif::ProgressBar::new(len);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{msg} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec})",
    ) {
        bar.set_style(style);
    }
    bar.set_message(what.to_owned());
    bar
}

/// Encrypts `plain` into `out` (header, then chunks). Returns the plaintext length.
pub fn encrypt_stream(
    mut plain: impl Read,
    out: &mut impl Write,
    key: &SecretKey,
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<u64> {
    let mut header = [0u8; HEADER];
    header[..8].copy_from_slice(MAGIC);
    header[8] = VERSION;
    header[9] = CHUNK_LOG2;
    header[10..18].copy_from_slice(&key_id(key));
    rand::rng().fill_bytes(&mut header[18..]);
    out.write_all(&header)?;
    let aead = XChaCha20Poly1305::new(key.as_bytes().into());
    let mut enc = EncryptorBE32::from_aead(aead, header[18..].into());
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    loop {
        let n = read_full(&mut plain, &mut buf)?;
        total += n as u64;
        bar.inc(n as u64);
        let payload = Payload {
            msg: &buf[..n],
            aad: &header,
        };
        if n < CHUNK {
            let ct = enc
                .encrypt_last(payload)
                .map_err(|_| anyhow::anyhow!("encryption failed"))?;
            out.write_all(&ct)?;
            return Ok(total);
        }
        let ct = enc
            .encrypt_next(payload)
            .map_err(|_| anyhow::anyhow!("encryption failed"))?;
        out.write_all(&ct)?;
    }
}

/// Decrypts and verifies a backup from `input` into `out`. Any altered, missing or extra
/// byte fails; what was written to `out` must then be discarded.
pub fn decrypt_stream(
    mut input: impl Read,
    out: &mut impl Write,
    key: &SecretKey,
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<u64> {
    let mut header = [0u8; HEADER];
    if read_full(&mut input, &mut header)? < HEADER || &header[..8] != MAGIC {
        bail!("not a Vigil backup file");
    }
    if header[8] != VERSION || header[9] != CHUNK_LOG2 {
        bail!("unsupported backup format version {}", header[8]);
    }
    if header[10..18] != key_id(key) {
        bail!("the backup was made with another key");
    }
    let aead = XChaCha20Poly1305::new(key.as_bytes().into());
    let mut dec = DecryptorBE32::from_aead(aead, header[18..].into());
    let mut buf = vec![0u8; CHUNK + TAG];
    let mut total = 0u64;
    let mut chunk = 0u64;
    loop {
        let n = read_full(&mut input, &mut buf)?;
        bar.inc(n as u64);
        let payload = Payload {
            msg: &buf[..n],
            aad: &header,
        };
        let corrupt = || {
            anyhow::anyhow!("the backup is corrupt or altered (chunk {chunk} fails authentication)")
        };
        if n < CHUNK + TAG {
            let plain = dec.decrypt_last(payload).map_err(|_| corrupt())?;
            out.write_all(&plain)?;
            return Ok(total + plain.len() as u64);
        }
        let plain = dec.decrypt_next(payload).map_err(|_| corrupt())?;
        out.write_all(&plain)?;
        total += plain.len() as u64;
        chunk += 1;
    }
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> std::io::Result<()> {
    Ok(())
}

fn parent_of(p: &Path) -> PathBuf {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    }
}

fn backup(db: &Path, out: &Path, key: &SecretKey) -> anyhow::Result<u64> {
    if !db.is_file() {
        return Err(InputError(format!("no hub database at {}", db.display())).into());
    }
    let dir = parent_of(db);
    // The clear copy lives next to the database it copies (same protection), in a private
    // directory removed on every path out.
    let tmp = tempfile::Builder::new()
        .prefix(".backup-")
        .tempdir_in(&dir)
        .with_context(|| format!("cannot create a temporary directory in {}", dir.display()))?;
    let copy = tmp.path().join("hub.db");
    {
        let conn = rusqlite::Connection::open_with_flags(
            db,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .with_context(|| format!("cannot open {}", db.display()))?;
        conn.busy_timeout(std::time::Duration::from_secs(60))?;
        let target = copy
            .to_str()
            .context("temporary path is not valid UTF-8")?
            .to_owned();
        conn.execute("VACUUM INTO ?1", [target])
            .context("consistent copy of the hub database failed")?;
    }
    // The audit log verifies only with its key, which lives beside the database: the copy
    // carries it (inside the encrypted backup) for the restore to put back.
    let audit_key = vigil_store::sqlite_audit::key_path(db);
    if audit_key.exists() {
        let hex = std::fs::read_to_string(&audit_key)
            .with_context(|| format!("cannot read {}", audit_key.display()))?;
        let conn = rusqlite::Connection::open(&copy)?;
        conn.execute_batch(&format!(
            "CREATE TABLE {SIDECAR}(name TEXT PRIMARY KEY, value TEXT NOT NULL)"
        ))?;
        conn.execute(
            &format!("INSERT INTO {SIDECAR}(name, value) VALUES ('audit.key', ?1)"),
            [hex.trim()],
        )?;
    }
    let plain = std::fs::File::open(&copy)?;
    let len = plain.metadata()?.len();
    let out_dir = parent_of(out);
    let mut file = tempfile::Builder::new()
        .prefix(".vigil-backup-")
        .tempfile_in(&out_dir)
        .with_context(|| format!("cannot write in {}", out_dir.display()))?;
    let bar = progress(len, "encrypting");
    let n = {
        let mut w = std::io::BufWriter::new(file.as_file_mut());
        let n = encrypt_stream(std::io::BufReader::new(plain), &mut w, key, &bar)?;
        w.flush()?;
        n
    };
    bar.finish_and_clear();
    file.as_file().sync_all()?;
    file.persist(out)
        .with_context(|| format!("cannot write {}", out.display()))?;
    sync_dir(&out_dir)?;
    Ok(n)
}

fn restore(input: &Path, key: &SecretKey, db: &Path) -> anyhow::Result<u64> {
    let dir = parent_of(db);
    let created = !dir.exists();
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let result = restore_into(input, key, db, &dir);
    if result.is_err() && created {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

fn restore_into(input: &Path, key: &SecretKey, db: &Path, dir: &Path) -> anyhow::Result<u64> {
    let f =
        std::fs::File::open(input).with_context(|| format!("cannot read {}", input.display()))?;
    let bar = progress(f.metadata()?.len(), "decrypting");
    // Temporary file in the target directory: removed unless everything checks out.
    let mut tmp = tempfile::Builder::new()
        .prefix(".restore-")
        .tempfile_in(dir)?;
    let n = {
        let mut w = std::io::BufWriter::new(tmp.as_file_mut());
        let n = decrypt_stream(std::io::BufReader::new(f), &mut w, key, &bar)?;
        w.flush()?;
        n
    };
    bar.finish_and_clear();
    tmp.as_file().sync_all()?;
    {
        let conn = rusqlite::Connection::open_with_flags(
            tmp.path(),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )?;
        let check: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .context("the restored file is not an SQLite database")?;
        if check != "ok" {
            bail!("the restored database fails its integrity check: {check}");
        }
    }
    let audit_key: Option<String> = {
        let conn = rusqlite::Connection::open(tmp.path())?;
        let has: i64 = conn.query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
            [SIDECAR],
            |r| r.get(0),
        )?;
        if has > 0 {
            let key = conn
                .query_row(
                    &format!("SELECT value FROM {SIDECAR} WHERE name = 'audit.key'"),
                    [],
                    |r| r.get(0),
                )
                .ok();
            conn.execute_batch(&format!("DROP TABLE {SIDECAR}"))?;
            key
        } else {
            None
        }
    };
    // A replaced database must not meet the old one's write-ahead log.
    for suffix in ["-wal", "-shm"] {
        let mut p = db.as_os_str().to_owned();
        p.push(suffix);
        match std::fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("cannot remove {}", Path::new(&p).display()));
            }
        }
    }
    tmp.persist(db)
        .with_context(|| format!("cannot write {}", db.display()))?;
    if let Some(key) = audit_key {
        vigil_store::sqlite_audit::restore_sidecars(db, &key)
            .context("cannot put back the audit key and checkpoint")?;
    }
    sync_dir(dir)?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> SecretKey {
        SecretKey::from_bytes([b; 32])
    }

    fn seal(data: &[u8], k: &SecretKey) -> Vec<u8> {
        let mut out = Vec::new();
        encrypt_stream(data, &mut out, k, &indicatif::ProgressBar::hidden()).expect("encrypt");
        out
    }

    fn open(data: &[u8], k: &SecretKey) -> anyhow::Result<Vec<u8>> {
        let mut out = Vec::new();
        decrypt_stream(data, &mut out, k, &indicatif::ProgressBar::hidden())?;
        Ok(out)
    }

    #[test]
    fn streams_of_every_size_round_trip_and_any_flipped_byte_fails() {
        let k = key(5);
        for len in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK] {
            let plain: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let sealed = seal(&plain, &k);
            assert_eq!(open(&sealed, &k).expect("open"), plain, "len {len}");
            // Every position in the header and a spread of positions in the chunks.
            let step = (sealed.len() / 40).max(1);
            for i in (0..HEADER).chain((HEADER..sealed.len()).step_by(step)) {
                let mut bad = sealed.clone();
                bad[i] ^= 0x40;
                assert!(open(&bad, &k).is_err(), "len {len}: flip at {i} accepted");
            }
            assert!(open(&sealed[..sealed.len() - 1], &k).is_err(), "truncated");
            let mut longer = sealed.clone();
            longer.push(0);
            assert!(open(&longer, &k).is_err(), "extended");
        }
    }

    #[test]
    fn a_whole_chunk_cut_off_the_end_fails() {
        let k = key(5);
        let plain = vec![7u8; 2 * CHUNK + 10];
        let sealed = seal(&plain, &k);
        let cut = &sealed[..HEADER + 2 * (CHUNK + TAG)];
        assert!(open(cut, &k).is_err());
    }

    #[test]
    fn another_key_is_named_as_such() {
        let sealed = seal(b"data", &key(1));
        let err = open(&sealed, &key(2)).expect_err("wrong key");
        assert!(err.to_string().contains("another key"), "{err}");
    }
}

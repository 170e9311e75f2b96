//! Encryption at rest: 256-bit keys, key files, and the authenticated encryption of outbox
//! records (XChaCha20-Poly1305).
//!
//! A sealed record is `nonce (24 bytes) || ciphertext || tag (16 bytes)`. The nonce is drawn
//! at random for every record: XChaCha20's 192-bit nonce makes random nonces safe for any
//! number of records under one key, and unlike a nonce derived from (epoch, seq) it stays
//! unique when a file is restored from a snapshot and the same sequence numbers are written
//! again with other contents. The associated data binds the ciphertext to its row: the
//! outbox epoch, the sequence number, the stream flag and the receive time, so a row moved,
//! copied to another position or given other bookkeeping values fails to open.

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};
use rand::{RngCore, TryRngCore};
use std::path::{Path, PathBuf};

/// Bytes a sealed record carries on top of its plaintext: nonce and tag.
pub const SEAL_OVERHEAD: usize = NONCE_LEN + TAG_LEN;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
/// The plaintext of the key check value stored in each encrypted outbox.
const CHECK_MARKER: &[u8] = b"vigil outbox key check v1";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key file {path} cannot be read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "key file {path} is readable by group or others (mode {mode:o}); restrict it with chmod 600"
    )]
    Permissions { path: PathBuf, mode: u32 },
    #[error(
        "key file {path} holds no key: expected 32 raw bytes, 64 hex digits or base64 of 32 bytes"
    )]
    Format { path: PathBuf },
    #[error("key file {path} cannot be written: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the system random generator failed: {0}")]
    Random(String),
}

/// A 256-bit secret key. Its `Debug` output never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretKey([u8; 32]);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

impl SecretKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// A new key from the operating system's random generator.
    pub fn generate() -> Result<Self, KeyError> {
        let mut k = [0u8; 32];
        rand::rngs::OsRng
            .try_fill_bytes(&mut k)
            .map_err(|e| KeyError::Random(e.to_string()))?;
        Ok(Self(k))
    }

    /// Parses key file contents: 32 raw bytes, or 64 hex digits, or standard base64 of 32
    /// bytes (surrounding whitespace ignored for the text forms).
    pub fn parse(data: &[u8]) -> Option<Self> {
        if let Ok(text) = std::str::from_utf8(data) {
            let t = text.trim();
            if t.len() == 64
                && let Ok(v) = hex::decode(t)
                && let Ok(k) = <[u8; 32]>::try_from(v.as_slice())
            {
                return Some(Self(k));
            }
            if t.len() == 44
                && let Some(v) = base64_decode(t)
                && let Ok(k) = <[u8; 32]>::try_from(v.as_slice())
            {
                return Some(Self(k));
            }
        }
        <[u8; 32]>::try_from(data).ok().map(Self)
    }

    /// Reads a key file. The file must not be readable by group or others.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let read = |source| KeyError::Read {
            path: path.to_owned(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(read)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(KeyError::Permissions {
                    path: path.to_owned(),
                    mode,
                });
            }
        }
        #[cfg(not(unix))]
        let _ = meta;
        let data = std::fs::read(path).map_err(read)?;
        Self::parse(&data).ok_or_else(|| KeyError::Format {
            path: path.to_owned(),
        })
    }

    /// Writes this key as hex to a new file with mode 0600; never overwrites a file.
    pub fn write_new(&self, path: &Path) -> Result<(), KeyError> {
        use std::io::Write;
        let write = |source| KeyError::Write {
            path: path.to_owned(),
            source,
        };
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(path).map_err(write)?;
        f.write_all(format!("{}\n", hex::encode(self.0)).as_bytes())
            .map_err(write)?;
        f.sync_all().map_err(write)?;
        Ok(())
    }

    /// Loads the key at `path`, or creates one there (mode 0600) when no file exists.
    /// Returns the key and whether it was created.
    pub fn load_or_create(path: &Path) -> Result<(Self, bool), KeyError> {
        if path.exists() {
            return Ok((Self::load(path)?, false));
        }
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let k = Self::generate()?;
        k.write_new(path)?;
        Ok((k, true))
    }
}

/// Decodes standard base64 with padding; `None` for anything else.
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    fn val(c: u8) -> Option<u32> {
        match c {
            b'A'..=b'Z' => Some(u32::from(c - b'A')),
            b'a'..=b'z' => Some(u32::from(c - b'a') + 26),
            b'0'..=b'9' => Some(u32::from(c - b'0') + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        }
    }
    let b = s.as_bytes();
    if !b.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(b.len() / 4 * 3);
    for (i, chunk) in b.chunks(4).enumerate() {
        let last = i == b.len() / 4 - 1;
        let pad = chunk.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && !last) {
            return None;
        }
        let mut n = 0u32;
        for &c in &chunk[..4 - pad] {
            n = (n << 6) | val(c)?;
        }
        n <<= 6 * pad as u32;
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    Some(out)
}

/// Seals and opens outbox records under one key.
#[derive(Clone)]
pub struct RecordCipher {
    aead: XChaCha20Poly1305,
}

impl std::fmt::Debug for RecordCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RecordCipher(..)")
    }
}

/// What a sealed record is bound to: its row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowBinding {
    pub epoch: u64,
    pub seq: u64,
    pub stream: bool,
    pub received: i64,
}

impl RowBinding {
    fn aad(&self) -> [u8; 32] {
        let mut a = [0u8; 32];
        a[..6].copy_from_slice(b"vgob1r");
        a[6] = 0;
        a[7] = u8::from(self.stream);
        a[8..16].copy_from_slice(&self.epoch.to_le_bytes());
        a[16..24].copy_from_slice(&self.seq.to_le_bytes());
        a[24..32].copy_from_slice(&self.received.to_le_bytes());
        a
    }
}

/// A value could not be sealed (only for messages beyond the cipher's 256 GiB limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("value too large to encrypt")]
pub struct SealError;

/// A sealed value failed authentication: wrong key, or changed bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("authentication failed (wrong key or altered data)")]
pub struct OpenError;

impl RecordCipher {
    pub fn new(key: &SecretKey) -> Self {
        Self {
            aead: XChaCha20Poly1305::new(key.as_bytes().into()),
        }
    }

    fn seal_with(&self, aad: &[u8], plain: &[u8]) -> Result<Vec<u8>, SealError> {
        let mut out = Vec::with_capacity(plain.len() + SEAL_OVERHEAD);
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plain);
        let tag = self
            .aead
            .encrypt_in_place_detached(XNonce::from_slice(&nonce), aad, &mut out[NONCE_LEN..])
            .map_err(|_| SealError)?;
        out.extend_from_slice(&tag);
        Ok(out)
    }

    fn open_with(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
        if sealed.len() < SEAL_OVERHEAD {
            return Err(OpenError);
        }
        let (nonce, rest) = sealed.split_at(NONCE_LEN);
        let (ct, tag) = rest.split_at(rest.len() - TAG_LEN);
        let mut buf = ct.to_vec();
        self.aead
            .decrypt_in_place_detached(
                XNonce::from_slice(nonce),
                aad,
                &mut buf,
                Tag::from_slice(tag),
            )
            .map_err(|_| OpenError)?;
        Ok(buf)
    }

    /// Seals one record's encoded form for its row.
    pub fn seal(&self, row: &RowBinding, plain: &[u8]) -> Result<Vec<u8>, SealError> {
        self.seal_with(&row.aad(), plain)
    }

    /// Opens a sealed record; fails unless it was sealed under this key for this row.
    pub fn open(&self, row: &RowBinding, sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
        self.open_with(&row.aad(), sealed)
    }

    fn check_aad(epoch: u64) -> [u8; 16] {
        let mut a = [0u8; 16];
        a[..8].copy_from_slice(b"vgob1kcv");
        a[8..].copy_from_slice(&epoch.to_le_bytes());
        a
    }

    /// The key check value stored in an outbox: a sealed known marker.
    pub fn key_check(&self, epoch: u64) -> Result<Vec<u8>, SealError> {
        self.seal_with(&Self::check_aad(epoch), CHECK_MARKER)
    }

    /// Whether `kcv` was made by [`Self::key_check`] under this key for this epoch.
    pub fn verify_key_check(&self, epoch: u64, kcv: &[u8]) -> bool {
        self.open_with(&Self::check_aad(epoch), kcv)
            .is_ok_and(|m| m == CHECK_MARKER)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(b: u8) -> SecretKey {
        SecretKey::from_bytes([b; 32])
    }

    fn row(epoch: u64, seq: u64, stream: bool, received: i64) -> RowBinding {
        RowBinding {
            epoch,
            seq,
            stream,
            received,
        }
    }

    proptest! {
        #[test]
        fn seal_then_open_round_trips(
            k in any::<[u8; 32]>(),
            plain in proptest::collection::vec(any::<u8>(), 0..512),
            epoch in any::<u64>(), seq in any::<u64>(), stream in any::<bool>(), received in any::<i64>(),
        ) {
            let c = RecordCipher::new(&SecretKey::from_bytes(k));
            let r = row(epoch, seq, stream, received);
            let sealed = c.seal(&r, &plain).expect("seal");
            prop_assert_eq!(sealed.len(), plain.len() + SEAL_OVERHEAD);
            prop_assert_eq!(c.open(&r, &sealed), Ok(plain));
        }

        #[test]
        fn any_changed_byte_of_nonce_ciphertext_or_tag_fails(
            plain in proptest::collection::vec(any::<u8>(), 0..256),
            pos in any::<prop::sample::Index>(),
            flip in 1u8..=255,
        ) {
            let c = RecordCipher::new(&key(7));
            let r = row(1, 2, true, 3);
            let mut sealed = c.seal(&r, &plain).expect("seal");
            let i = pos.index(sealed.len());
            sealed[i] ^= flip;
            prop_assert_eq!(c.open(&r, &sealed), Err(OpenError));
        }

        #[test]
        fn any_other_row_fails(
            plain in proptest::collection::vec(any::<u8>(), 0..64),
            epoch in any::<u64>(), seq in any::<u64>(), stream in any::<bool>(), received in any::<i64>(),
            which in 0usize..4, delta in 1u64..u64::MAX,
        ) {
            let c = RecordCipher::new(&key(9));
            let r = row(epoch, seq, stream, received);
            let sealed = c.seal(&r, &plain).expect("seal");
            let mut other = r;
            match which {
                0 => other.epoch = epoch.wrapping_add(delta),
                1 => other.seq = seq.wrapping_add(delta),
                2 => other.stream = !stream,
                _ => other.received = received.wrapping_add(delta as i64 | 1),
            }
            prop_assert_eq!(c.open(&other, &sealed), Err(OpenError));
        }

        #[test]
        fn truncated_or_extended_fails(
            plain in proptest::collection::vec(any::<u8>(), 0..64),
            cut in 1usize..80, extra in any::<u8>(),
        ) {
            let c = RecordCipher::new(&key(1));
            let r = row(1, 1, false, 1);
            let sealed = c.seal(&r, &plain).expect("seal");
            let short = &sealed[..sealed.len().saturating_sub(cut)];
            prop_assert_eq!(c.open(&r, short), Err(OpenError));
            let mut long = sealed.clone();
            long.push(extra);
            prop_assert_eq!(c.open(&r, &long), Err(OpenError));
        }

        #[test]
        fn key_files_in_every_form_parse_to_the_same_key(k in any::<[u8; 32]>()) {
            let want = SecretKey::from_bytes(k);
            prop_assert_eq!(SecretKey::parse(&k), Some(want.clone()));
            prop_assert_eq!(SecretKey::parse(format!(" {}\n", hex::encode(k)).as_bytes()), Some(want.clone()));
            prop_assert_eq!(SecretKey::parse(b64(&k).as_bytes()), Some(want));
        }
    }

    /// Reference base64 encoder for the parser test.
    fn b64(data: &[u8]) -> String {
        const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut s = String::new();
        for c in data.chunks(3) {
            let n = (u32::from(c[0]) << 16)
                | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
                | u32::from(*c.get(2).unwrap_or(&0));
            for i in 0..4 {
                if i <= c.len() {
                    s.push(A[(n >> (18 - 6 * i)) as usize & 63] as char);
                } else {
                    s.push('=');
                }
            }
        }
        s
    }

    #[test]
    fn the_key_check_tells_keys_apart() {
        let a = RecordCipher::new(&key(1));
        let b = RecordCipher::new(&key(2));
        let kcv = a.key_check(42).expect("seal");
        assert!(a.verify_key_check(42, &kcv));
        assert!(!b.verify_key_check(42, &kcv));
        assert!(!a.verify_key_check(43, &kcv), "bound to the epoch");
    }

    #[test]
    fn the_same_record_seals_differently_each_time() {
        let c = RecordCipher::new(&key(3));
        let r = row(1, 1, false, 0);
        assert_ne!(
            c.seal(&r, b"same").expect("seal"),
            c.seal(&r, b"same").expect("seal")
        );
    }

    #[test]
    fn short_and_malformed_key_files_are_refused() {
        assert_eq!(SecretKey::parse(&[0u8; 31]), None);
        assert_eq!(SecretKey::parse(&[0u8; 33]), None);
        assert_eq!(SecretKey::parse("zz".repeat(32).as_bytes()), None);
        assert_eq!(SecretKey::parse(b"AAAA"), None);
    }

    #[cfg(unix)]
    #[test]
    fn key_files_are_created_private_and_open_ones_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("k");
        let (k, created) = SecretKey::load_or_create(&p).expect("create");
        assert!(created);
        let mode = std::fs::metadata(&p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(SecretKey::load(&p).expect("load"), k);
        assert!(matches!(k.write_new(&p), Err(KeyError::Write { .. })));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        let err = SecretKey::load(&p).expect_err("group readable");
        assert!(matches!(err, KeyError::Permissions { mode: 0o640, .. }));
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }
}

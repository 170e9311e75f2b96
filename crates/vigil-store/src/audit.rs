//! The tamper-evident audit log of access to patient data: types, the canonical encoding that
//! is hashed, chain verification and the storage trait.
//!
//! Every entry carries the SHA-256 of the previous entry (`prev_hash`) and its own `hash`, a
//! SHA-256 over a canonical encoding of all its fields followed by `prev_hash`. A change to
//! any field, a deleted, inserted or moved entry breaks the chain from that entry on. Each
//! entry is also sealed with an HMAC-SHA256 of its hash under the hub's audit key (`mac`), so
//! an entry forged by someone who can write the database but does not hold the key is
//! detected even when its chain hashes are right. The newest entry (the head) is written after
//! every append, sealed with the same key, to a checkpoint file outside the database: deleting
//! entries at the end of the log leaves the checkpoint pointing past the end.
//!
//! The canonical encoding (version 1): the ASCII tag `vigil-audit/1`, then `seq` (u64),
//! `time` (i64, ms since the Unix epoch) and `outcome` (u16), big-endian, then the strings
//! `actor`, `role`, `patient`, `action`, `resource`, `source`, `purpose`, `detail`, each as
//! its UTF-8 length (u32, big-endian) followed by its bytes, then the 32 bytes of `prev_hash`.
//! Length prefixes make the encoding injective: no two different entries encode alike.

use crate::StoreError;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use vigil_model::Timestamp;

/// Length of hashes, MACs and the audit key, in bytes.
pub const HASH_LEN: usize = 32;
/// `prev_hash` of the first entry.
pub const GENESIS: [u8; HASH_LEN] = [0; HASH_LEN];
/// The patient of an entry that covers several patients (a list, a gateway batch).
pub const ANY_PATIENT: &str = "*";

const TAG: &[u8] = b"vigil-audit/1";

/// What an entry records, before the log numbers and chains it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewAuditEntry {
    /// When the access happened.
    pub time: Timestamp,
    /// Who: a user name or a gateway id.
    pub actor: String,
    /// The actor's role (`admin`, `clinician`, ..., `gateway`).
    pub role: String,
    /// Which patient, or [`ANY_PATIENT`].
    pub patient: String,
    /// The REST interaction: `read`, `search-type`, `create`, `update`, `delete`.
    pub action: String,
    /// Which resource: method and path (with the query, shortened) of the request.
    pub resource: String,
    /// From where: the client's network address.
    pub source: String,
    /// Why: a purpose of use code (HL7 v3 ActReason, e.g. `TREAT`, `ETREAT`).
    pub purpose: String,
    /// The HTTP status of the answer (a denied access is 403 or 404).
    pub outcome: u16,
    /// Counts and reasons: `visible=12`, `records=1000`, a break-glass reason.
    pub detail: String,
}

/// A stored entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub seq: u64,
    #[serde(flatten)]
    pub entry: NewAuditEntry,
    /// Hex SHA-256 of the previous entry.
    pub prev_hash: String,
    /// Hex SHA-256 of this entry (see the module docs).
    pub hash: String,
}

/// The newest entry of the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditHead {
    pub seq: u64,
    pub hash: [u8; HASH_LEN],
}

/// The canonical encoding of an entry at `seq` after `prev` (see the module docs).
pub fn canonical(seq: u64, e: &NewAuditEntry, prev: &[u8; HASH_LEN]) -> Vec<u8> {
    let strings = [
        &e.actor,
        &e.role,
        &e.patient,
        &e.action,
        &e.resource,
        &e.source,
        &e.purpose,
        &e.detail,
    ];
    let len: usize = strings.iter().map(|s| 4 + s.len()).sum();
    let mut out = Vec::with_capacity(TAG.len() + 18 + len + HASH_LEN);
    out.extend_from_slice(TAG);
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(&e.time.0.to_be_bytes());
    out.extend_from_slice(&e.outcome.to_be_bytes());
    for s in strings {
        // Fields are bounded far below 4 GiB by the hub; saturate rather than wrap.
        let n = u32::try_from(s.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&n.to_be_bytes());
        out.extend_from_slice(s.as_bytes());
    }
    out.extend_from_slice(prev);
    out
}

/// The hash of an entry at `seq` after `prev`.
pub fn entry_hash(seq: u64, e: &NewAuditEntry, prev: &[u8; HASH_LEN]) -> [u8; HASH_LEN] {
    Sha256::digest(canonical(seq, e, prev)).into()
}

/// HMAC-SHA256 (RFC 2104).
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; HASH_LEN] {
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..HASH_LEN].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(k.map(|b| b ^ 0x36));
    inner.update(message);
    let mut outer = Sha256::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

/// The seal of an entry's hash under the audit key.
pub fn entry_mac(key: &[u8], hash: &[u8; HASH_LEN]) -> [u8; HASH_LEN] {
    let mut m = b"vigil-audit-entry/1".to_vec();
    m.extend_from_slice(hash);
    hmac_sha256(key, &m)
}

/// The seal of a checkpoint (head sequence and hash) under the audit key.
pub fn head_mac(key: &[u8], head: &AuditHead) -> [u8; HASH_LEN] {
    let mut m = b"vigil-audit-head/1".to_vec();
    m.extend_from_slice(&head.seq.to_be_bytes());
    m.extend_from_slice(&head.hash);
    hmac_sha256(key, &m)
}

/// Compares two MACs in time independent of where they differ.
pub fn mac_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The first defect verification found. Every variant names the first bad sequence number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuditViolation {
    #[error("entry {seq} is missing (deleted)")]
    Missing { seq: u64 },
    #[error("entry {seq} does not match its hash (changed or moved)")]
    Changed { seq: u64 },
    #[error("entry {seq} does not follow entry {} (chain broken: inserted, reordered or deleted)", seq - 1)]
    Unlinked { seq: u64 },
    #[error("entry {seq} is not sealed by this hub's audit key (forged or inserted)")]
    Forged { seq: u64 },
    #[error(
        "entry {seq} is missing: the log ends at entry {last} but the checkpoint records entry {checkpoint} (tail deleted)"
    )]
    Truncated {
        seq: u64,
        last: u64,
        checkpoint: u64,
    },
    #[error("entry {seq} differs from the checkpoint (rewritten)")]
    CheckpointMismatch { seq: u64 },
    #[error("the checkpoint is not sealed by this hub's audit key (forged)")]
    CheckpointForged,
    #[error("the checkpoint is missing while the log holds {entries} entries (first entry 1)")]
    CheckpointMissing { entries: u64 },
}

impl AuditViolation {
    /// The first bad sequence number, when the defect is in an entry.
    pub fn seq(&self) -> Option<u64> {
        match self {
            Self::Missing { seq }
            | Self::Changed { seq }
            | Self::Unlinked { seq }
            | Self::Forged { seq }
            | Self::Truncated { seq, .. }
            | Self::CheckpointMismatch { seq } => Some(*seq),
            Self::CheckpointForged => None,
            Self::CheckpointMissing { .. } => Some(1),
        }
    }
}

/// A stored entry as verification reads it: the fields, and the raw stored hashes and seal.
#[derive(Debug, Clone)]
pub struct StoredAuditRow {
    pub seq: u64,
    pub entry: NewAuditEntry,
    pub prev_hash: Vec<u8>,
    pub hash: Vec<u8>,
    pub mac: Vec<u8>,
}

/// A checkpoint as read from its file: the head and its seal.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub head: AuditHead,
    pub mac: Vec<u8>,
}

/// Walks the chain incrementally: feed rows in `seq` order, then [`ChainVerifier::finish`].
#[derive(Debug)]
pub struct ChainVerifier<'k> {
    key: &'k [u8],
    checkpoint: Option<Checkpoint>,
    expected: u64,
    prev: [u8; HASH_LEN],
    at_checkpoint: Option<[u8; HASH_LEN]>,
}

impl<'k> ChainVerifier<'k> {
    pub fn new(key: &'k [u8], checkpoint: Option<Checkpoint>) -> Self {
        Self {
            key,
            checkpoint,
            expected: 1,
            prev: GENESIS,
            at_checkpoint: None,
        }
    }

    /// Checks the next row.
    pub fn push(&mut self, row: &StoredAuditRow) -> Result<(), AuditViolation> {
        let seq = self.expected;
        if row.seq != seq {
            // Rows come in ascending order of a unique key: a larger one means a gap.
            return Err(AuditViolation::Missing { seq });
        }
        let prev: [u8; HASH_LEN] = row.prev_hash.as_slice().try_into().unwrap_or([0xff; 32]);
        let hash = entry_hash(seq, &row.entry, &prev);
        if hash.as_slice() != row.hash.as_slice() {
            return Err(AuditViolation::Changed { seq });
        }
        if prev != self.prev || row.prev_hash.len() != HASH_LEN {
            return Err(AuditViolation::Unlinked { seq });
        }
        if !mac_eq(&entry_mac(self.key, &hash), &row.mac) {
            return Err(AuditViolation::Forged { seq });
        }
        if self.checkpoint.as_ref().is_some_and(|c| c.head.seq == seq) {
            self.at_checkpoint = Some(hash);
        }
        self.prev = hash;
        self.expected = seq + 1;
        Ok(())
    }

    /// Checks the end of the log against the checkpoint; the verified head.
    pub fn finish(self) -> Result<Option<AuditHead>, AuditViolation> {
        let last = self.expected - 1;
        let head = (last > 0).then_some(AuditHead {
            seq: last,
            hash: self.prev,
        });
        let Some(cp) = self.checkpoint else {
            return match last {
                0 => Ok(None),
                entries => Err(AuditViolation::CheckpointMissing { entries }),
            };
        };
        if !mac_eq(&head_mac(self.key, &cp.head), &cp.mac) {
            return Err(AuditViolation::CheckpointForged);
        }
        if cp.head.seq > last {
            return Err(AuditViolation::Truncated {
                seq: last + 1,
                last,
                checkpoint: cp.head.seq,
            });
        }
        if cp.head.seq > 0 && self.at_checkpoint != Some(cp.head.hash) {
            return Err(AuditViolation::CheckpointMismatch { seq: cp.head.seq });
        }
        Ok(head)
    }
}

/// A page of the log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditQuery {
    /// Entries with a sequence number greater than this.
    pub after: u64,
    pub limit: usize,
    /// Only entries of this patient (entries of [`ANY_PATIENT`] are not included).
    pub patient: Option<String>,
}

/// The audit log of a hub.
#[async_trait]
pub trait AuditStore {
    /// Appends entries in order, in one transaction, and moves the checkpoint to the new
    /// head. The new head (none when `entries` is empty and the log is empty).
    async fn append_audit(
        &self,
        entries: Vec<NewAuditEntry>,
    ) -> Result<Option<AuditHead>, StoreError>;
    /// Entries matching the query, oldest first.
    async fn audit_entries(&self, q: AuditQuery) -> Result<Vec<AuditEntry>, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> NewAuditEntry {
        NewAuditEntry {
            time: Timestamp(1_700_000_000_123),
            actor: "dr-a".into(),
            role: "clinician".into(),
            patient: "pat-1".into(),
            action: "read".into(),
            resource: "GET /api/v1/patients/pat-1".into(),
            source: "127.0.0.1".into(),
            purpose: "TREAT".into(),
            outcome: 200,
            detail: String::new(),
        }
    }

    #[test]
    fn canonical_encoding_is_fixed() {
        let e = NewAuditEntry {
            time: Timestamp(1),
            actor: "a".into(),
            role: "r".into(),
            patient: "p".into(),
            action: "read".into(),
            resource: "x".into(),
            source: "s".into(),
            purpose: "TREAT".into(),
            outcome: 200,
            detail: String::new(),
        };
        let mut want = b"vigil-audit/1".to_vec();
        want.extend_from_slice(&7u64.to_be_bytes());
        want.extend_from_slice(&1i64.to_be_bytes());
        want.extend_from_slice(&200u16.to_be_bytes());
        for s in ["a", "r", "p", "read", "x", "s", "TREAT", ""] {
            want.extend_from_slice(&(s.len() as u32).to_be_bytes());
            want.extend_from_slice(s.as_bytes());
        }
        want.extend_from_slice(&[9u8; 32]);
        assert_eq!(canonical(7, &e, &[9; 32]), want);
        // The hash of this encoding, computed independently (Python hashlib): a change of
        // the format breaks every stored log, so it must be seen here first.
        assert_eq!(
            hex::encode(entry_hash(7, &e, &[9; 32])),
            "f24cfb3d6fe43366d135af0b7ceb23b83c4cad7d3c19b7c626c8957a1cbb5423"
        );
    }

    #[test]
    fn every_field_and_the_link_change_the_hash() {
        let base = entry();
        let h = entry_hash(1, &base, &GENESIS);
        let variants: [fn(&mut NewAuditEntry); 10] = [
            |e| e.time.0 += 1,
            |e| e.actor.push('x'),
            |e| e.role = "admin".into(),
            |e| e.patient = "pat-2".into(),
            |e| e.action = "update".into(),
            |e| e.resource.push('/'),
            |e| e.source = "10.0.0.1".into(),
            |e| e.purpose = "ETREAT".into(),
            |e| e.outcome = 404,
            |e| e.detail = "x".into(),
        ];
        for (i, change) in variants.iter().enumerate() {
            let mut e = base.clone();
            change(&mut e);
            assert_ne!(entry_hash(1, &e, &GENESIS), h, "field {i} is not hashed");
        }
        assert_ne!(entry_hash(2, &base, &GENESIS), h, "seq is not hashed");
        assert_ne!(entry_hash(1, &base, &[1; 32]), h, "prev_hash is not hashed");
    }

    #[test]
    fn field_boundaries_cannot_be_shifted() {
        // Without length prefixes "ab"+"c" and "a"+"bc" would encode alike.
        let mut a = entry();
        a.actor = "ab".into();
        a.role = "c".into();
        let mut b = entry();
        b.actor = "a".into();
        b.role = "bc".into();
        assert_ne!(canonical(1, &a, &GENESIS), canonical(1, &b, &GENESIS));
    }

    #[test]
    fn hmac_matches_rfc_4231() {
        assert_eq!(
            hex::encode(hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            hex::encode(hmac_sha256(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    fn chain(key: &[u8], n: u64) -> (Vec<StoredAuditRow>, Checkpoint) {
        let mut prev = GENESIS;
        let mut rows = Vec::new();
        for seq in 1..=n {
            let mut e = entry();
            e.time.0 += seq as i64;
            let hash = entry_hash(seq, &e, &prev);
            rows.push(StoredAuditRow {
                seq,
                entry: e,
                prev_hash: prev.to_vec(),
                hash: hash.to_vec(),
                mac: entry_mac(key, &hash).to_vec(),
            });
            prev = hash;
        }
        let head = AuditHead { seq: n, hash: prev };
        let mac = head_mac(key, &head).to_vec();
        (rows, Checkpoint { head, mac })
    }

    fn verify(
        key: &[u8],
        rows: &[StoredAuditRow],
        cp: Option<Checkpoint>,
    ) -> Result<Option<AuditHead>, AuditViolation> {
        let mut v = ChainVerifier::new(key, cp);
        for r in rows {
            v.push(r)?;
        }
        v.finish()
    }

    #[test]
    fn an_intact_chain_verifies_and_each_defect_names_its_entry() {
        let key = [7u8; 32];
        let (rows, cp) = chain(&key, 5);
        let head = verify(&key, &rows, Some(cp.clone())).expect("intact");
        assert_eq!(head.map(|h| h.seq), Some(5));

        let mut changed = rows.clone();
        changed[2].entry.outcome = 200 + 1;
        assert_eq!(
            verify(&key, &changed, Some(cp.clone())),
            Err(AuditViolation::Changed { seq: 3 })
        );

        let mut deleted = rows.clone();
        deleted.remove(1);
        assert_eq!(
            verify(&key, &deleted, Some(cp.clone())),
            Err(AuditViolation::Missing { seq: 2 })
        );

        let truncated = rows[..3].to_vec();
        assert_eq!(
            verify(&key, &truncated, Some(cp.clone())),
            Err(AuditViolation::Truncated {
                seq: 4,
                last: 3,
                checkpoint: 5
            })
        );

        // A row re-hashed by someone without the key: the chain holds, the seal does not.
        let mut forged = rows.clone();
        forged[4].entry.actor = "intruder".into();
        let prev: [u8; 32] = forged[4].prev_hash.as_slice().try_into().expect("32");
        forged[4].hash = entry_hash(5, &forged[4].entry, &prev).to_vec();
        assert_eq!(
            verify(&key, &forged, None),
            Err(AuditViolation::Forged { seq: 5 })
        );

        let other_key = [8u8; 32];
        assert_eq!(
            verify(&other_key, &rows, Some(cp.clone())),
            Err(AuditViolation::Forged { seq: 1 })
        );
        assert_eq!(
            verify(&key, &rows, None),
            Err(AuditViolation::CheckpointMissing { entries: 5 })
        );
        assert_eq!(verify(&key, &[], None), Ok(None));
    }
}

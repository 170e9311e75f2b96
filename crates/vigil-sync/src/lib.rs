//! The gateway-to-hub sync protocol.
//!
//! A gateway sends `POST /api/v1/ingest` with `Content-Type: application/vnd.vigil.batch+zstd`
//! and its bearer token. The body is a zstd-compressed postcard [`Batch`]: the outbox epoch,
//! the sequence number the gateway believes the hub has stored up to (`after`), and records in
//! sequence order, each kept as the outbox stored it so that one undecodable record is
//! quarantined alone instead of failing the batch.
//!
//! The hub answers `200` with an [`Ack`] naming its cursor: everything up to it is stored or
//! quarantined and the gateway may delete it. `409` with a cursor means the hub holds less than
//! the gateway believed; the gateway resends from there. Any other answer is retried with
//! exponential backoff and jitter. Sequence numbers only grow within an epoch, so resending is
//! always safe: the hub skips what its cursor already covers.

use serde::{Deserialize, Serialize};

/// The media type of a batch body.
pub const CONTENT_TYPE: &str = "application/vnd.vigil.batch+zstd";
/// Wire format version.
pub const VERSION: u8 = 1;
/// Largest compressed body the hub accepts.
pub const MAX_COMPRESSED: usize = 16 << 20;
/// Largest decompressed body the hub accepts (guards against decompression bombs).
pub const MAX_DECOMPRESSED: usize = 128 << 20;
/// Most records in one batch.
pub const MAX_RECORDS: usize = 100_000;

/// One outbox record on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireRecord {
    pub seq: u64,
    /// A postcard-encoded [`vigil_model::Record`].
    pub payload: Vec<u8>,
}

/// A batch of outbox records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    pub version: u8,
    pub epoch: u64,
    pub after: u64,
    pub records: Vec<WireRecord>,
}

/// The hub's answer to a stored batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Ack {
    pub cursor: u64,
    pub stored: usize,
    pub quarantined: usize,
    pub duplicates: usize,
}

/// A body that is not an acceptable batch.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum WireError {
    #[error("batch body is not valid zstd or exceeds {MAX_DECOMPRESSED} bytes once decompressed")]
    Decompress,
    #[error("batch body is not a valid batch: {0}")]
    Decode(String),
    #[error("batch wire version {0} is not supported (expected {VERSION})")]
    Version(u8),
    #[error("batch has {0} records; at most {MAX_RECORDS} are accepted")]
    TooManyRecords(usize),
    #[error("batch sequence numbers must be strictly increasing and greater than `after`")]
    Sequence,
}

impl Batch {
    /// Compresses the batch for sending.
    pub fn encode(&self) -> Vec<u8> {
        let plain = postcard::to_stdvec(self).unwrap_or_default();
        zstd::bulk::compress(&plain, 1).unwrap_or_default()
    }

    /// Decodes and checks a received body.
    pub fn decode(body: &[u8]) -> Result<Self, WireError> {
        let plain =
            zstd::bulk::decompress(body, MAX_DECOMPRESSED).map_err(|_| WireError::Decompress)?;
        let b: Batch =
            postcard::from_bytes(&plain).map_err(|e| WireError::Decode(e.to_string()))?;
        if b.version != VERSION {
            return Err(WireError::Version(b.version));
        }
        if b.records.len() > MAX_RECORDS {
            return Err(WireError::TooManyRecords(b.records.len()));
        }
        let mut prev = b.after;
        for r in &b.records {
            if r.seq <= prev {
                return Err(WireError::Sequence);
            }
            prev = r.seq;
        }
        Ok(b)
    }
}

/// Decodes one record's payload.
pub fn decode_record(payload: &[u8]) -> Result<vigil_model::Record, String> {
    postcard::from_bytes(payload).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn decreasing_sequences_and_bombs_are_rejected() {
        let b = Batch {
            version: VERSION,
            epoch: 1,
            after: 5,
            records: vec![WireRecord {
                seq: 5,
                payload: vec![],
            }],
        };
        assert_eq!(Batch::decode(&b.encode()), Err(WireError::Sequence));
        let b = Batch { version: 9, ..b };
        assert_eq!(Batch::decode(&b.encode()), Err(WireError::Version(9)));
        assert_eq!(Batch::decode(b"garbage"), Err(WireError::Decompress));
        let bomb = zstd::bulk::compress(&vec![0u8; MAX_DECOMPRESSED + 1], 19).expect("compress");
        assert_eq!(Batch::decode(&bomb), Err(WireError::Decompress));
    }

    proptest! {
        #[test]
        fn batches_round_trip(epoch in any::<u64>(), after in 0u64..1000, sizes in proptest::collection::vec(0usize..64, 0..50)) {
            let records = sizes.iter().enumerate().map(|(i, n)| WireRecord { seq: after + 1 + i as u64 * 3, payload: vec![7; *n] }).collect();
            let b = Batch { version: VERSION, epoch, after, records };
            prop_assert_eq!(Batch::decode(&b.encode()), Ok(b));
        }

        #[test]
        fn random_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Batch::decode(&body);
            let _ = Batch::decode(&zstd::bulk::compress(&body, 1).expect("compress"));
        }
    }
}

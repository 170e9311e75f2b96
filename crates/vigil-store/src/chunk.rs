//! The compressed chunk: all readings of one patient and one metric within one time window.
//!
//! Readings are stored column by column (device time, gateway receive time, hub receive time,
//! device, flags, value form, decimal exponent, mantissa), each column delta- and
//! varint-encoded, then the whole chunk is compressed with zstd. Clinical values are decimals
//! with few digits (72 bpm, 37.2 Cel, 5.4 mmol/L), so a value is stored as a decimal mantissa
//! and exponent whenever that round-trips exactly, and as raw IEEE 754 bits otherwise.
//! Decoding returns exactly what was encoded.

use vigil_model::{Component, DataAbsentReason, DeviceId, Flags, Metric, Source, Timestamp};

const VERSION: u8 = 1;
const RAW_EXP: u8 = 255;
const MAX_DECIMALS: u8 = 6;
const FORM_COMPONENTS: u8 = 16;
const ZSTD_LEVEL: i32 = 3;

/// One reading as the hub stores it (the patient and metric are the chunk's).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StoredReading {
    #[serde(rename = "code")]
    pub metric: Metric,
    pub device: DeviceId,
    /// Device time.
    pub time: Timestamp,
    /// Gateway receive time.
    pub received: Option<Timestamp>,
    /// Hub receive time.
    pub hub_received: Timestamp,
    pub value: Option<f64>,
    pub components: Vec<Component>,
    pub absent: Option<DataAbsentReason>,
    pub flags: Flags,
    pub source: Source,
}

impl StoredReading {
    /// The same observation: same device, metric and device time, and the same value,
    /// components, data-absent reason and flags. Receive times may differ (a source that
    /// delivers at least once sends the same observation again later).
    pub fn same_observation(&self, other: &Self) -> bool {
        self.time == other.time
            && self.metric == other.metric
            && self.device == other.device
            && self.value.map(f64::to_bits) == other.value.map(f64::to_bits)
            && self.absent == other.absent
            && self.flags == other.flags
            && self.components.len() == other.components.len()
            && self
                .components
                .iter()
                .zip(&other.components)
                .all(|(a, b)| a.metric == b.metric && a.value.to_bits() == b.value.to_bits())
    }
}

/// Sorts by device time and removes repeated observations (see
/// [`StoredReading::same_observation`]), keeping the earliest arrival of each.
pub fn dedup_identical(v: &mut Vec<StoredReading>) {
    v.sort_by(|a, b| {
        (a.time, a.metric, a.device.as_str(), a.hub_received).cmp(&(
            b.time,
            b.metric,
            b.device.as_str(),
            b.hub_received,
        ))
    });
    let mut out: Vec<StoredReading> = Vec::with_capacity(v.len());
    for r in v.drain(..) {
        // Repeats are adjacent unless another reading of the same instant sits between;
        // look back over the readings of this instant.
        let dup = out
            .iter()
            .rev()
            .take_while(|o| o.time == r.time)
            .any(|o| o.same_observation(&r));
        if !dup {
            out.push(r);
        }
    }
    *v = out;
}

/// A chunk that cannot be decoded (storage corruption or a newer format).
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ChunkError {
    #[error("chunk is truncated at {0}")]
    Truncated(&'static str),
    #[error("chunk format version {0} is not supported")]
    Version(u8),
    #[error("chunk is not valid zstd: {0}")]
    Compression(String),
    #[error("chunk field {0} is out of range")]
    Range(&'static str),
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn varint(&mut self, what: &'static str) -> Result<u64, ChunkError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self.buf.get(self.pos).ok_or(ChunkError::Truncated(what))?;
            self.pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(ChunkError::Range(what))
    }
    fn byte(&mut self, what: &'static str) -> Result<u8, ChunkError> {
        let b = *self.buf.get(self.pos).ok_or(ChunkError::Truncated(what))?;
        self.pos += 1;
        Ok(b)
    }
    fn bytes(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], ChunkError> {
        let end = self.pos.checked_add(n).ok_or(ChunkError::Range(what))?;
        let s = self
            .buf
            .get(self.pos..end)
            .ok_or(ChunkError::Truncated(what))?;
        self.pos = end;
        Ok(s)
    }
    fn column(&mut self, what: &'static str) -> Result<Cursor<'a>, ChunkError> {
        let n = self.varint(what)? as usize;
        Ok(Cursor {
            buf: self.bytes(n, what)?,
            pos: 0,
        })
    }
}

/// The decimal form of `v`: (mantissa, decimals) such that `mantissa / 10^decimals == v`
/// exactly in IEEE arithmetic.
fn decimal(v: f64) -> Option<(i64, u8)> {
    if !v.is_finite() || (v == 0.0 && v.is_sign_negative()) {
        return None;
    }
    let mut scale = 1.0f64;
    for k in 0..=MAX_DECIMALS {
        let s = v * scale;
        if s.abs() < 9.0e15 {
            let m = s.round();
            if m / scale == v {
                return Some((m as i64, k));
            }
        }
        scale *= 10.0;
    }
    None
}

fn pow10(k: u8) -> f64 {
    10f64.powi(i32::from(k))
}

#[derive(Default)]
struct ValueColumns {
    exp: Vec<u8>,
    mant: Vec<u8>,
    raw: Vec<u8>,
    prev: [(u8, i64); 8],
}

impl ValueColumns {
    fn put(&mut self, slot: usize, v: f64) {
        let slot = slot.min(7);
        match decimal(v) {
            Some((m, k)) => {
                self.exp.push(k);
                let (pk, pm) = self.prev[slot];
                let d = if pk == k { m.wrapping_sub(pm) } else { m };
                put_varint(&mut self.mant, zigzag(d));
                self.prev[slot] = (k, m);
            }
            None => {
                self.exp.push(RAW_EXP);
                self.raw.extend_from_slice(&v.to_bits().to_le_bytes());
            }
        }
    }
}

struct ValueReader<'a> {
    exp: Cursor<'a>,
    mant: Cursor<'a>,
    raw: Cursor<'a>,
    prev: [(u8, i64); 8],
}

impl ValueReader<'_> {
    fn get(&mut self, slot: usize) -> Result<f64, ChunkError> {
        let slot = slot.min(7);
        let k = self.exp.byte("exponent")?;
        if k == RAW_EXP {
            let b = self.raw.bytes(8, "raw value")?;
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            return Ok(f64::from_bits(u64::from_le_bytes(a)));
        }
        if k > MAX_DECIMALS {
            return Err(ChunkError::Range("exponent"));
        }
        let d = unzigzag(self.mant.varint("mantissa")?);
        let (pk, pm) = self.prev[slot];
        let m = if pk == k { pm.wrapping_add(d) } else { d };
        self.prev[slot] = (k, m);
        Ok(m as f64 / pow10(k))
    }
}

fn source_code(s: Source) -> u8 {
    match s {
        Source::Simulator => 0,
        Source::Ble => 1,
        Source::Hl7 => 2,
        Source::Template => 3,
        Source::Mqtt => 4,
        Source::Manual => 5,
        Source::Other => 6,
    }
}

fn source_from(c: u8) -> Result<Source, ChunkError> {
    Ok(match c {
        0 => Source::Simulator,
        1 => Source::Ble,
        2 => Source::Hl7,
        3 => Source::Template,
        4 => Source::Mqtt,
        5 => Source::Manual,
        6 => Source::Other,
        _ => return Err(ChunkError::Range("source")),
    })
}

/// Encodes readings of one metric (all `r.metric == metric`) into a compressed chunk.
/// Readings are stored in the order given; callers sort by time for best compression.
pub fn encode(metric: Metric, readings: &[StoredReading]) -> Vec<u8> {
    let comps = metric.components();
    let mut dict: Vec<(&DeviceId, Source)> = Vec::new();
    let mut time = Vec::with_capacity(readings.len() * 2);
    let mut rx = Vec::with_capacity(readings.len() * 2);
    let mut hub = Vec::with_capacity(readings.len());
    let mut dev = Vec::with_capacity(readings.len());
    let mut flags = Vec::with_capacity(readings.len());
    let mut form = Vec::with_capacity(readings.len());
    let mut values = ValueColumns::default();
    let (mut pt, mut ph) = (0i64, 0i64);
    for r in readings {
        put_varint(&mut time, zigzag(r.time.0.wrapping_sub(pt)));
        pt = r.time.0;
        match r.received {
            None => put_varint(&mut rx, 0),
            Some(t) => put_varint(&mut rx, zigzag(t.0.wrapping_sub(r.time.0)).wrapping_add(1)),
        }
        put_varint(&mut hub, zigzag(r.hub_received.0.wrapping_sub(ph)));
        ph = r.hub_received.0;
        let key = (&r.device, r.source);
        let idx = match dict.iter().position(|d| d.0 == key.0 && d.1 == key.1) {
            Some(i) => i,
            None => {
                dict.push(key);
                dict.len() - 1
            }
        };
        put_varint(&mut dev, idx as u64);
        put_varint(&mut flags, u64::from(r.flags.0));
        if let Some(reason) = r.absent {
            let i = DataAbsentReason::ALL
                .iter()
                .position(|a| *a == reason)
                .unwrap_or(0);
            form.push(1 + i as u8);
        } else if !r.components.is_empty() {
            let mut mask = 0u8;
            for c in &r.components {
                if let Some(i) = comps.iter().position(|m| *m == c.metric) {
                    mask |= 1 << i.min(6);
                }
            }
            form.push(FORM_COMPONENTS);
            form.push(mask);
            for (i, m) in comps.iter().enumerate() {
                if mask & (1 << i.min(6)) != 0
                    && let Some(c) = r.components.iter().find(|c| c.metric == *m)
                {
                    values.put(i + 1, c.value);
                }
            }
        } else {
            form.push(0);
            values.put(0, r.value.unwrap_or(f64::NAN));
        }
    }
    let mut out = Vec::with_capacity(readings.len() * 8 + 64);
    out.push(VERSION);
    put_varint(&mut out, readings.len() as u64);
    put_varint(&mut out, dict.len() as u64);
    for (d, s) in &dict {
        put_varint(&mut out, d.as_str().len() as u64);
        out.extend_from_slice(d.as_str().as_bytes());
        out.push(source_code(*s));
    }
    for col in [
        &time,
        &rx,
        &hub,
        &dev,
        &flags,
        &form,
        &values.exp,
        &values.mant,
        &values.raw,
    ] {
        put_varint(&mut out, col.len() as u64);
        out.extend_from_slice(col);
    }
    // Compressing an in-memory buffer only fails on allocation failure.
    zstd::bulk::compress(&out, ZSTD_LEVEL).unwrap_or_else(|_| {
        let mut v = vec![0u8];
        v.extend_from_slice(&out);
        v
    })
}

/// Upper bound on a decoded chunk: protects against corrupt length fields.
const MAX_DECODED: usize = 64 << 20;

/// Decodes a chunk written by [`encode`].
pub fn decode(metric: Metric, data: &[u8]) -> Result<Vec<StoredReading>, ChunkError> {
    let plain = zstd::bulk::decompress(data, MAX_DECODED)
        .map_err(|e| ChunkError::Compression(e.to_string()))?;
    let mut c = Cursor {
        buf: &plain,
        pos: 0,
    };
    let v = c.byte("version")?;
    if v != VERSION {
        return Err(ChunkError::Version(v));
    }
    let n = c.varint("count")? as usize;
    let nd = c.varint("dictionary")? as usize;
    if n > MAX_DECODED || nd > n.max(1) {
        return Err(ChunkError::Range("count"));
    }
    let mut dict = Vec::with_capacity(nd);
    for _ in 0..nd {
        let len = c.varint("device")? as usize;
        let s = std::str::from_utf8(c.bytes(len, "device")?)
            .map_err(|_| ChunkError::Range("device"))?;
        let d = DeviceId::new(s).map_err(|_| ChunkError::Range("device"))?;
        let src = source_from(c.byte("source")?)?;
        dict.push((d, src));
    }
    let mut time = c.column("time")?;
    let mut rx = c.column("received")?;
    let mut hub = c.column("hub_received")?;
    let mut dev = c.column("device")?;
    let mut flags = c.column("flags")?;
    let mut form = c.column("form")?;
    let mut values = ValueReader {
        exp: c.column("exponent")?,
        mant: c.column("mantissa")?,
        raw: c.column("raw")?,
        prev: [(0, 0); 8],
    };
    let comps = metric.components();
    let mut out = Vec::with_capacity(n);
    let (mut pt, mut ph) = (0i64, 0i64);
    for _ in 0..n {
        pt = pt.wrapping_add(unzigzag(time.varint("time")?));
        let r = rx.varint("received")?;
        let received = (r != 0).then(|| Timestamp(pt.wrapping_add(unzigzag(r - 1))));
        ph = ph.wrapping_add(unzigzag(hub.varint("hub_received")?));
        let di = dev.varint("device")? as usize;
        let (device, source) = dict.get(di).ok_or(ChunkError::Range("device"))?.clone();
        let fl = u16::try_from(flags.varint("flags")?).map_err(|_| ChunkError::Range("flags"))?;
        let f = form.byte("form")?;
        let (mut value, mut components, mut absent) = (None, Vec::new(), None);
        match f {
            0 => value = Some(values.get(0)?),
            FORM_COMPONENTS => {
                let mask = form.byte("component mask")?;
                for (i, m) in comps.iter().enumerate() {
                    if mask & (1 << i.min(6)) != 0 {
                        components.push(Component {
                            metric: *m,
                            value: values.get(i + 1)?,
                        });
                    }
                }
            }
            x => {
                absent = Some(
                    *DataAbsentReason::ALL
                        .get(usize::from(x) - 1)
                        .ok_or(ChunkError::Range("form"))?,
                )
            }
        }
        out.push(StoredReading {
            metric,
            device,
            time: Timestamp(pt),
            received,
            hub_received: Timestamp(ph),
            value,
            components,
            absent,
            flags: Flags(fl),
            source,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn m(code: &str) -> Metric {
        code.parse().expect("code")
    }

    fn base(metric: Metric, t: i64) -> StoredReading {
        StoredReading {
            metric,
            device: DeviceId::new("wear-1").expect("id"),
            time: Timestamp(t),
            received: Some(Timestamp(t + 150)),
            hub_received: Timestamp(t + 900),
            value: Some(72.0),
            components: vec![],
            absent: None,
            flags: Flags::empty(),
            source: Source::Simulator,
        }
    }

    #[test]
    fn decimals_are_found_exactly() {
        assert_eq!(decimal(72.0), Some((72, 0)));
        assert_eq!(decimal(37.2), Some((372, 1)));
        assert_eq!(decimal(0.00118), Some((118, 5)));
        assert_eq!(decimal(-1234.0), Some((-1234, 0)));
        assert_eq!(decimal(0.1 + 0.2), None);
        assert_eq!(decimal(f64::NAN), None);
    }

    #[test]
    fn an_hour_of_1hz_heart_rate_compresses_below_four_bytes_per_reading() {
        let hr = m("8867-4");
        let mut v = Vec::new();
        let mut x = 70.0;
        for i in 0..3600i64 {
            let mut r = base(hr, 1_700_000_000_000 + i * 1000);
            x += ((i * 7919 % 5) - 2) as f64;
            x = x.clamp(50.0, 120.0);
            r.value = Some(x);
            r.received = Some(Timestamp(r.time.0 + 100 + (i * 31 % 200)));
            r.hub_received = Timestamp(1_700_000_000_000 + (i / 500) * 500_000);
            v.push(r);
        }
        let data = encode(hr, &v);
        let per = data.len() as f64 / v.len() as f64;
        assert!(per < 4.0, "{per} bytes per reading");
        assert_eq!(decode(hr, &data).expect("decode"), v);
    }

    #[test]
    fn panels_and_absent_values_round_trip() {
        let bp = m("85354-9");
        let mut a = base(bp, 1000);
        a.value = None;
        a.components = vec![
            Component {
                metric: m("8480-6"),
                value: 120.0,
            },
            Component {
                metric: m("8462-4"),
                value: 80.0,
            },
        ];
        let mut b = base(bp, 2000);
        b.value = None;
        b.absent = Some(DataAbsentReason::NotANumber);
        b.flags = Flags::QUESTIONABLE;
        b.received = None;
        let v = vec![a, b];
        assert_eq!(decode(bp, &encode(bp, &v)).expect("decode"), v);
    }

    #[test]
    fn corrupt_chunks_are_errors_not_panics() {
        let hr = m("8867-4");
        let data = encode(hr, &[base(hr, 5)]);
        assert!(decode(hr, &data[..data.len() / 2]).is_err());
        assert!(decode(hr, b"not zstd").is_err());
        let bogus = zstd::bulk::compress(&[1, 200, 1], 1).expect("compress");
        assert!(decode(hr, &bogus).is_err());
    }

    fn reading() -> impl Strategy<Value = StoredReading> {
        (
            any::<i64>(),
            proptest::option::of(any::<i64>()),
            any::<i64>(),
            prop_oneof![
                any::<f64>().prop_map(Some),
                (-100_000i64..100_000).prop_map(|v| Some(v as f64 / 10.0))
            ],
            any::<u16>(),
            0usize..3,
        )
            .prop_map(|(t, rx, hub, value, flags, dev)| StoredReading {
                metric: "8867-4".parse().expect("hr"),
                device: DeviceId::new(format!("d{dev}")).expect("id"),
                time: Timestamp(t),
                received: rx.map(Timestamp),
                hub_received: Timestamp(hub),
                value,
                components: vec![],
                absent: None,
                flags: Flags(flags),
                source: Source::Ble,
            })
    }

    proptest! {
        #[test]
        fn any_readings_round_trip_bit_exactly(v in proptest::collection::vec(reading(), 0..200)) {
            let hr: Metric = "8867-4".parse().expect("hr");
            let back = decode(hr, &encode(hr, &v)).expect("decode");
            prop_assert_eq!(back.len(), v.len());
            for (a, b) in back.iter().zip(&v) {
                prop_assert_eq!(a.value.map(f64::to_bits), b.value.map(f64::to_bits));
                prop_assert_eq!((a.time, a.received, a.hub_received, a.flags, &a.device), (b.time, b.received, b.hub_received, b.flags, &b.device));
            }
        }

        #[test]
        fn random_bytes_never_panic_the_decoder(data in proptest::collection::vec(any::<u8>(), 0..256)) {
            let hr: Metric = "8867-4".parse().expect("hr");
            let _ = decode(hr, &data);
            let packed = zstd::bulk::compress(&data, 1).expect("compress");
            let _ = decode(hr, &packed);
        }
    }
}

//! The embedded SQLite backend.
//!
//! One writer connection (WAL, `synchronous=FULL`: the hub confirms a batch to the gateway,
//! which then deletes it, so a committed batch must survive power loss) and a small pool of
//! reader connections. Patients, devices and assignments are cached in memory for
//! attribution at ingest and updated on every write through this store.

use crate::alert::{
    Alert, AlertFilter, AlertSignal, AlertTransition, CareTeam, NewNotification, Notification,
    Raised,
};
use crate::chunk::{self, StoredReading};
use crate::sqlite_alerts as alerts;
use crate::{
    Accepted, ApiToken, GatewayInfo, IngestBatch, IngestOutcome, PatientSummary, QuarantineEntry,
    ReadingQuery, ReprocessOutcome, Store, StoreError, StoreStats, StoredEvent,
};
use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use vigil_model::{
    Assignment, Device, DeviceId, Event, Metric, Patient, PatientId, Reading, Record, Timestamp,
    registry, resolve_patient, validate_record,
};

/// Readings are clustered in chunks of one patient, one metric and one hour.
pub const WINDOW_MS: i64 = 3_600_000;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS patient(pk INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, name TEXT, birth_date TEXT, created INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS device(id TEXT PRIMARY KEY, gateway TEXT, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS assignment(id INTEGER PRIMARY KEY, device TEXT NOT NULL, patient TEXT NOT NULL, valid_from INTEGER NOT NULL, valid_to INTEGER);
CREATE INDEX IF NOT EXISTS assignment_device ON assignment(device);
CREATE TABLE IF NOT EXISTS code(id INTEGER PRIMARY KEY, loinc TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS chunk(id INTEGER PRIMARY KEY, patient INTEGER NOT NULL, metric INTEGER NOT NULL, win INTEGER NOT NULL, t_min INTEGER NOT NULL, t_max INTEGER NOT NULL, n INTEGER NOT NULL, data BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS chunk_series ON chunk(patient, metric, win);
CREATE TABLE IF NOT EXISTS latest(patient INTEGER NOT NULL, metric INTEGER NOT NULL, t INTEGER NOT NULL, data BLOB NOT NULL, PRIMARY KEY(patient, metric)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS event(id INTEGER PRIMARY KEY, patient INTEGER NOT NULL, t INTEGER NOT NULL, hub_received INTEGER NOT NULL, kind TEXT NOT NULL, body BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS event_patient_t ON event(patient, t);
CREATE TABLE IF NOT EXISTS quarantine(id INTEGER PRIMARY KEY, received INTEGER NOT NULL, gateway TEXT NOT NULL, device TEXT, reason_code TEXT NOT NULL, reason TEXT NOT NULL, payload BLOB NOT NULL, decoded INTEGER NOT NULL, status TEXT NOT NULL DEFAULT 'open');
CREATE INDEX IF NOT EXISTS quarantine_status ON quarantine(status, id);
CREATE TABLE IF NOT EXISTS gateway(id TEXT PRIMARY KEY, token_hash BLOB NOT NULL UNIQUE, created INTEGER NOT NULL, revoked INTEGER NOT NULL DEFAULT 0, last_seen INTEGER);
CREATE TABLE IF NOT EXISTS cursor(gateway TEXT NOT NULL, epoch INTEGER NOT NULL, seq INTEGER NOT NULL, updated INTEGER NOT NULL, PRIMARY KEY(gateway, epoch)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS api_token(hash BLOB PRIMARY KEY, name TEXT NOT NULL, role TEXT NOT NULL, created INTEGER NOT NULL, expires INTEGER, revoked INTEGER NOT NULL DEFAULT 0);
";

#[derive(Debug, Default)]
pub(crate) struct Cache {
    patients: HashMap<PatientId, i64>,
    devices: HashMap<DeviceId, Option<String>>,
    assignments: HashMap<DeviceId, Vec<Assignment>>,
    metric_ids: HashMap<Metric, i64>,
    metrics_by_id: HashMap<i64, Metric>,
}

/// The embedded SQLite store.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
    cache: RwLock<Cache>,
}

fn open_conn(path: &Path) -> Result<Connection, rusqlite::Error> {
    let c = Connection::open(path)?;
    c.busy_timeout(std::time::Duration::from_secs(30))?;
    c.pragma_update(None, "journal_mode", "WAL")?;
    c.pragma_update(None, "synchronous", "FULL")?;
    Ok(c)
}

fn engine<E: std::fmt::Display>(e: E) -> StoreError {
    StoreError::Engine(e.to_string())
}

fn poisoned<T>(_: T) -> StoreError {
    StoreError::Engine("a storage lock was poisoned by a panic".into())
}

fn window(t: Timestamp) -> i64 {
    t.0.div_euclid(WINDOW_MS)
}

impl SqliteStore {
    /// Opens (creating when absent) the database at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref().to_owned();
        if let Some(d) = path.parent() {
            let _ = std::fs::create_dir_all(d);
        }
        let conn = open_conn(&path)?;
        conn.execute_batch(SCHEMA)?;
        conn.execute_batch(alerts::SCHEMA)?;
        conn.execute_batch(crate::sqlite_push::SCHEMA)?;
        let cache = load_cache(&conn)?;
        Ok(Self {
            inner: Arc::new(Inner {
                path,
                writer: Mutex::new(conn),
                readers: Mutex::new(Vec::new()),
                cache: RwLock::new(cache),
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    pub(crate) async fn blocking<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(engine)?
    }
}

impl Inner {
    pub(crate) fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let conn = self.readers.lock().map_err(poisoned)?.pop();
        let conn = match conn {
            Some(c) => c,
            None => open_conn(&self.path)?,
        };
        let out = f(&conn);
        if let Ok(mut pool) = self.readers.lock()
            && pool.len() < 8
        {
            pool.push(conn);
        }
        out
    }

    pub(crate) fn write<T>(
        &self,
        f: impl FnOnce(&Transaction<'_>, &mut Cache) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = self.writer.lock().map_err(poisoned)?;
        let mut cache = self.cache.write().map_err(poisoned)?;
        let result = conn.transaction().map_err(StoreError::from).and_then(|tx| {
            let out = f(&tx, &mut cache)?;
            tx.commit()?;
            Ok(out)
        });
        if result.is_err() {
            // A failed transaction may have touched the cache: rebuild it from what committed.
            *cache = load_cache(&conn)?;
        }
        result
    }
}

fn load_cache(conn: &Connection) -> Result<Cache, StoreError> {
    let mut cache = Cache::default();
    for m in registry().all() {
        conn.execute("INSERT OR IGNORE INTO code(loinc) VALUES (?1)", [m.loinc()])?;
        let id: i64 = conn.query_row("SELECT id FROM code WHERE loinc = ?1", [m.loinc()], |r| {
            r.get(0)
        })?;
        cache.metric_ids.insert(m, id);
        cache.metrics_by_id.insert(id, m);
    }
    let mut s = conn.prepare("SELECT pk, id FROM patient")?;
    let rows = s.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?;
    for row in rows {
        let (pk, id) = row?;
        if let Ok(id) = PatientId::new(id) {
            cache.patients.insert(id, pk);
        }
    }
    let mut s = conn.prepare("SELECT id, gateway FROM device")?;
    let rows = s.query_map([], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?))
    })?;
    for row in rows {
        let (id, gw) = row?;
        if let Ok(id) = DeviceId::new(id) {
            cache.devices.insert(id, gw);
        }
    }
    for a in load_assignments(conn, None)? {
        cache
            .assignments
            .entry(a.device.clone())
            .or_default()
            .push(a);
    }
    Ok(cache)
}

fn load_assignments(
    conn: &Connection,
    device: Option<&str>,
) -> Result<Vec<Assignment>, StoreError> {
    let mut s = conn.prepare_cached(
        "SELECT device, patient, valid_from, valid_to FROM assignment WHERE ?1 IS NULL OR device = ?1 ORDER BY id",
    )?;
    let rows = s.query_map([device], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
            r.get::<_, Option<i64>>(3)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (d, p, from, to) = row?;
        out.push(Assignment {
            device: DeviceId::new(d).map_err(|e| StoreError::Corrupt(e.to_string()))?,
            patient: PatientId::new(p).map_err(|e| StoreError::Corrupt(e.to_string()))?,
            from: Timestamp(from),
            to: to.map(Timestamp),
        });
    }
    Ok(out)
}

/// Why a record cannot be attributed, as (code, message).
type Reject = (&'static str, String);

fn attribute(cache: &Cache, gateway: &str, rec: &Record) -> Result<(PatientId, i64), Reject> {
    let device = rec.device();
    let Some(enrolled_to) = cache.devices.get(device) else {
        return Err(("unknown_device", format!("device {device} is not enrolled")));
    };
    if let Some(g) = enrolled_to
        && g != gateway
    {
        return Err((
            "wrong_gateway",
            format!("device {device} is enrolled to another gateway"),
        ));
    }
    let t = rec.time();
    let patient = cache
        .assignments
        .get(device)
        .and_then(|list| resolve_patient(list, device, t))
        .or(match rec {
            Record::Reading(r) => r.patient.as_ref(),
            Record::Event(e) => e.patient.as_ref(),
        });
    let Some(patient) = patient else {
        return Err((
            "unassigned_device",
            format!("device {device} has no patient assignment at {t}"),
        ));
    };
    match cache.patients.get(patient) {
        Some(pk) => Ok((patient.clone(), *pk)),
        None => Err((
            "unknown_patient",
            format!("patient {patient} is not enrolled"),
        )),
    }
}

/// A record on its way to the quarantine.
struct Quarantined<'a> {
    gateway: &'a str,
    device: Option<&'a str>,
    code: &'a str,
    reason: &'a str,
    payload: &'a [u8],
    /// Whether `payload` is a postcard-encoded record (else raw undecodable bytes).
    decoded: bool,
}

fn quarantine_insert(
    tx: &Transaction<'_>,
    received: Timestamp,
    q: Quarantined<'_>,
) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO quarantine(received, gateway, device, reason_code, reason, payload, decoded) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![received.0, q.gateway, q.device, q.code, q.reason, q.payload, q.decoded])?;
    Ok(())
}

fn stored_from(r: &Reading, hub_received: Timestamp) -> StoredReading {
    StoredReading {
        metric: r.metric,
        device: r.device.clone(),
        time: r.time,
        received: r.received,
        hub_received,
        value: r.value,
        components: r.components.clone(),
        absent: r.absent,
        flags: r.flags,
        source: r.source,
    }
}

/// Series writes of one transaction, grouped by (patient, metric, window).
#[derive(Default)]
struct SeriesWriter {
    groups: HashMap<(i64, Metric, i64), Vec<StoredReading>>,
}

impl SeriesWriter {
    fn push(&mut self, pk: i64, r: StoredReading) {
        self.groups
            .entry((pk, r.metric, window(r.time)))
            .or_default()
            .push(r);
    }

    fn flush(self, tx: &Transaction<'_>, cache: &Cache) -> Result<(), StoreError> {
        let mut ins = tx.prepare_cached(
            "INSERT INTO chunk(patient, metric, win, t_min, t_max, n, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?;
        let mut latest = tx.prepare_cached(
            "INSERT INTO latest(patient, metric, t, data) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(patient, metric) DO UPDATE SET t = excluded.t, data = excluded.data
             WHERE excluded.t >= latest.t",
        )?;
        for ((pk, metric, win), mut rs) in self.groups {
            let mid = *cache
                .metric_ids
                .get(&metric)
                .ok_or_else(|| StoreError::Corrupt(format!("metric {metric} has no id")))?;
            rs.sort_by_key(|r| r.time);
            let (Some(first), Some(last)) = (rs.first(), rs.last()) else {
                continue;
            };
            let data = chunk::encode(metric, &rs);
            ins.execute(params![
                pk,
                mid,
                win,
                first.time.0,
                last.time.0,
                rs.len() as i64,
                data
            ])?;
            crate::sqlite_push::journal_chunk(tx, pk, mid, rs.len(), &data)?;
            let body = postcard::to_stdvec(last).map_err(engine)?;
            latest.execute(params![pk, mid, last.time.0, body])?;
        }
        Ok(())
    }
}

fn insert_event(
    tx: &Transaction<'_>,
    pk: i64,
    e: &Event,
    hub: Timestamp,
) -> Result<(), StoreError> {
    let body = postcard::to_stdvec(e).map_err(engine)?;
    tx.prepare_cached(
        "INSERT INTO event(patient, t, hub_received, kind, body) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![pk, e.time.0, hub.0, e.kind.name(), body])?;
    Ok(())
}

fn ingest_tx(
    tx: &Transaction<'_>,
    cache: &mut Cache,
    batch: IngestBatch,
) -> Result<IngestOutcome, StoreError> {
    let cursor: u64 = tx
        .query_row(
            "SELECT seq FROM cursor WHERE gateway = ?1 AND epoch = ?2",
            params![batch.gateway, batch.epoch as i64],
            |r| r.get::<_, i64>(0),
        )
        .optional()?
        .unwrap_or(0) as u64;
    if batch.after > cursor {
        return Err(StoreError::CursorAhead {
            claimed: batch.after,
            cursor,
        });
    }
    let mut out = IngestOutcome::default();
    let mut series = SeriesWriter::default();
    let mut max_seq = cursor;
    let hub = batch.hub_received;
    for inc in batch.records {
        if inc.seq <= cursor {
            out.duplicates += 1;
            continue;
        }
        max_seq = max_seq.max(inc.seq);
        let rec = match inc.record {
            Ok(r) => r,
            Err((reason, raw)) => {
                quarantine_insert(
                    tx,
                    hub,
                    Quarantined {
                        gateway: &batch.gateway,
                        device: None,
                        code: "undecodable",
                        reason: &reason,
                        payload: &raw,
                        decoded: false,
                    },
                )?;
                out.quarantined += 1;
                continue;
            }
        };
        let verdict = validate_record(&rec, hub, batch.max_future_ms)
            .map_err(|e| (e.code(), e.to_string()))
            .and_then(|()| attribute(cache, &batch.gateway, &rec));
        match verdict {
            Err((code, reason)) => {
                let payload = postcard::to_stdvec(&rec).map_err(engine)?;
                quarantine_insert(
                    tx,
                    hub,
                    Quarantined {
                        gateway: &batch.gateway,
                        device: Some(rec.device().as_str()),
                        code,
                        reason: &reason,
                        payload: &payload,
                        decoded: true,
                    },
                )?;
                out.quarantined += 1;
            }
            Ok((patient, pk)) => {
                out.stored += 1;
                match rec {
                    Record::Reading(r) => {
                        series.push(pk, stored_from(&r, hub));
                        out.accepted.push(Accepted::Reading(patient, r));
                    }
                    Record::Event(e) => {
                        insert_event(tx, pk, &e, hub)?;
                        out.accepted.push(Accepted::Event(patient, e));
                    }
                }
            }
        }
    }
    series.flush(tx, cache)?;
    tx.prepare_cached(
        "INSERT INTO cursor(gateway, epoch, seq, updated) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(gateway, epoch) DO UPDATE SET seq = excluded.seq, updated = excluded.updated",
    )?
    .execute(params![
        batch.gateway,
        batch.epoch as i64,
        max_seq as i64,
        hub.0
    ])?;
    tx.prepare_cached("UPDATE gateway SET last_seen = ?2 WHERE id = ?1")?
        .execute(params![batch.gateway, hub.0])?;
    out.cursor = max_seq;
    Ok(out)
}

/// Re-attributes open quarantine entries that failed only for want of enrolment.
fn reprocess_tx(tx: &Transaction<'_>, cache: &mut Cache) -> Result<ReprocessOutcome, StoreError> {
    let rows: Vec<(i64, String, i64, Vec<u8>)> = {
        let mut s = tx.prepare_cached(
            "SELECT id, gateway, received, payload FROM quarantine WHERE status = 'open' AND decoded = 1
             AND reason_code IN ('unknown_device', 'unassigned_device', 'unknown_patient', 'wrong_gateway') ORDER BY id",
        )?;
        let rows = s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
        rows.collect::<Result<_, _>>()?
    };
    let mut out = ReprocessOutcome {
        examined: rows.len(),
        ..Default::default()
    };
    let mut series = SeriesWriter::default();
    for (id, gateway, received, payload) in rows {
        let Ok(rec) = postcard::from_bytes::<Record>(&payload) else {
            out.still_quarantined += 1;
            continue;
        };
        match attribute(cache, &gateway, &rec) {
            Ok((_, pk)) => {
                match &rec {
                    Record::Reading(r) => series.push(pk, stored_from(r, Timestamp(received))),
                    Record::Event(e) => insert_event(tx, pk, e, Timestamp(received))?,
                }
                tx.prepare_cached("UPDATE quarantine SET status = 'reprocessed' WHERE id = ?1")?
                    .execute([id])?;
                out.stored += 1;
            }
            Err(_) => out.still_quarantined += 1,
        }
    }
    series.flush(tx, cache)?;
    Ok(out)
}

fn decode_latest(data: &[u8]) -> Result<StoredReading, StoreError> {
    postcard::from_bytes(data).map_err(|e| StoreError::Corrupt(e.to_string()))
}

#[async_trait]
impl Store for SqliteStore {
    async fn ingest(&self, batch: IngestBatch) -> Result<IngestOutcome, StoreError> {
        self.blocking(move |inner| inner.write(|tx, cache| ingest_tx(tx, cache, batch)))
            .await
    }

    async fn upsert_patient(&self, p: Patient) -> Result<(), StoreError> {
        self.blocking(move |inner| {
            inner.write(|tx, cache| {
                tx.execute(
                    "INSERT INTO patient(id, name, birth_date, created) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT(id) DO UPDATE SET name = excluded.name, birth_date = excluded.birth_date",
                    params![p.id.as_str(), p.name, p.birth_date, Timestamp::now().0],
                )?;
                let pk: i64 = tx.query_row(
                    "SELECT pk FROM patient WHERE id = ?1",
                    [p.id.as_str()],
                    |r| r.get(0),
                )?;
                cache.patients.insert(p.id.clone(), pk);
                Ok(())
            })
        })
        .await
    }

    async fn patient(&self, id: &PatientId) -> Result<Option<Patient>, StoreError> {
        let id = id.clone();
        self.blocking(move |inner| {
            inner.read(|c| {
                c.query_row(
                    "SELECT name, birth_date FROM patient WHERE id = ?1",
                    [id.as_str()],
                    |r| {
                        Ok(Patient {
                            id: id.clone(),
                            name: r.get(0)?,
                            birth_date: r.get(1)?,
                        })
                    },
                )
                .optional()
                .map_err(Into::into)
            })
        })
        .await
    }

    async fn patients(&self) -> Result<Vec<PatientSummary>, StoreError> {
        self.blocking(move |inner| {
            let metrics = inner.cache.read().map_err(poisoned)?.metrics_by_id.clone();
            inner.read(|c| {
                let mut out: Vec<(i64, PatientSummary)> = Vec::new();
                let mut s =
                    c.prepare_cached("SELECT pk, id, name, birth_date FROM patient ORDER BY id")?;
                let rows = s.query_map([], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get(2)?,
                        r.get(3)?,
                    ))
                })?;
                for row in rows {
                    let (pk, id, name, birth_date) = row?;
                    let id = PatientId::new(id).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                    out.push((
                        pk,
                        PatientSummary {
                            patient: Patient {
                                id,
                                name,
                                birth_date,
                            },
                            latest: Vec::new(),
                        },
                    ));
                }
                let index: HashMap<i64, usize> = out
                    .iter()
                    .enumerate()
                    .map(|(i, (pk, _))| (*pk, i))
                    .collect();
                let mut s = c.prepare_cached("SELECT patient, metric, data FROM latest")?;
                let rows = s.query_map([], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, Vec<u8>>(2)?,
                    ))
                })?;
                for row in rows {
                    let (pk, mid, data) = row?;
                    if let (Some(&i), Some(_)) = (index.get(&pk), metrics.get(&mid)) {
                        out[i].1.latest.push(decode_latest(&data)?);
                    }
                }
                Ok(out
                    .into_iter()
                    .map(|(_, mut s)| {
                        s.latest.sort_by_key(|r| r.metric);
                        s
                    })
                    .collect())
            })
        })
        .await
    }

    async fn latest(&self, id: &PatientId) -> Result<Vec<StoredReading>, StoreError> {
        let id = id.clone();
        self.blocking(move |inner| {
            let Some(pk) = inner
                .cache
                .read()
                .map_err(poisoned)?
                .patients
                .get(&id)
                .copied()
            else {
                return Err(StoreError::NotFound(format!("patient {id}")));
            };
            inner.read(|c| {
                let mut s = c.prepare_cached("SELECT data FROM latest WHERE patient = ?1")?;
                let rows = s.query_map([pk], |r| r.get::<_, Vec<u8>>(0))?;
                let mut out = Vec::new();
                for row in rows {
                    out.push(decode_latest(&row?)?);
                }
                out.sort_by_key(|r| r.metric);
                Ok(out)
            })
        })
        .await
    }

    async fn upsert_device(&self, d: Device) -> Result<(), StoreError> {
        self.blocking(move |inner| {
            inner.write(|tx, cache| {
                let body = serde_json::to_string(&d).map_err(engine)?;
                tx.execute(
                    "INSERT INTO device(id, gateway, body) VALUES (?1, ?2, ?3)
                     ON CONFLICT(id) DO UPDATE SET gateway = excluded.gateway, body = excluded.body",
                    params![d.id.as_str(), d.gateway, body],
                )?;
                cache.devices.insert(d.id.clone(), d.gateway.clone());
                Ok(())
            })
        })
        .await?;
        self.reprocess_quarantine().await.map(|_| ())
    }

    async fn devices(&self) -> Result<Vec<Device>, StoreError> {
        self.blocking(|inner| {
            inner.read(|c| {
                let mut s = c.prepare_cached("SELECT body FROM device ORDER BY id")?;
                let rows = s.query_map([], |r| r.get::<_, String>(0))?;
                let mut out = Vec::new();
                for row in rows {
                    out.push(
                        serde_json::from_str(&row?)
                            .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                    );
                }
                Ok(out)
            })
        })
        .await
    }

    async fn assign(&self, a: Assignment) -> Result<ReprocessOutcome, StoreError> {
        self.blocking(move |inner| {
            inner.write(|tx, cache| {
                if !cache.devices.contains_key(&a.device) {
                    return Err(StoreError::NotFound(format!("device {}", a.device)));
                }
                if !cache.patients.contains_key(&a.patient) {
                    return Err(StoreError::NotFound(format!("patient {}", a.patient)));
                }
                if a.to.is_some_and(|to| to <= a.from) {
                    return Err(StoreError::Invalid("assignment ends before it starts".into()));
                }
                tx.execute(
                    "INSERT INTO assignment(device, patient, valid_from, valid_to) VALUES (?1, ?2, ?3, ?4)",
                    params![a.device.as_str(), a.patient.as_str(), a.from.0, a.to.map(|t| t.0)],
                )?;
                cache.assignments.entry(a.device.clone()).or_default().push(a);
                reprocess_tx(tx, cache)
            })
        })
        .await
    }

    async fn assignments(&self, device: Option<&DeviceId>) -> Result<Vec<Assignment>, StoreError> {
        let device = device.map(|d| d.as_str().to_owned());
        self.blocking(move |inner| inner.read(|c| load_assignments(c, device.as_deref())))
            .await
    }

    async fn readings(&self, q: ReadingQuery) -> Result<Vec<StoredReading>, StoreError> {
        self.blocking(move |inner| {
            let (pk, mids) = {
                let cache = inner.cache.read().map_err(poisoned)?;
                let Some(pk) = cache.patients.get(&q.patient).copied() else {
                    return Err(StoreError::NotFound(format!("patient {}", q.patient)));
                };
                let mids: Vec<(i64, Metric)> = match q.metric {
                    Some(m) => cache.metric_ids.get(&m).map(|id| vec![(*id, m)]).unwrap_or_default(),
                    None => cache.metric_ids.iter().map(|(m, id)| (*id, *m)).collect(),
                };
                (pk, mids)
            };
            let from = q.from.unwrap_or(Timestamp(i64::MIN));
            let to = q.to.unwrap_or(Timestamp(i64::MAX));
            inner.read(|c| {
                let sql = if q.descending {
                    "SELECT win, data FROM chunk WHERE patient = ?1 AND metric = ?2 AND win BETWEEN ?3 AND ?4 AND t_max >= ?5 AND t_min <= ?6 ORDER BY win DESC"
                } else {
                    "SELECT win, data FROM chunk WHERE patient = ?1 AND metric = ?2 AND win BETWEEN ?3 AND ?4 AND t_max >= ?5 AND t_min <= ?6 ORDER BY win"
                };
                let mut all = Vec::new();
                for (mid, metric) in mids {
                    let mut s = c.prepare_cached(sql)?;
                    let mut rows = s.query(params![pk, mid, window(from), window(to), from.0, to.0])?;
                    let mut got: Vec<StoredReading> = Vec::new();
                    let mut current_win = None;
                    while let Some(row) = rows.next()? {
                        let win: i64 = row.get(0)?;
                        if current_win != Some(win) && got.len() >= q.limit {
                            break;
                        }
                        current_win = Some(win);
                        let data: Vec<u8> = row.get(1)?;
                        got.extend(
                            chunk::decode(metric, &data)?
                                .into_iter()
                                .filter(|r| r.time >= from && r.time <= to),
                        );
                    }
                    all.extend(got);
                }
                chunk::dedup_identical(&mut all);
                if q.descending {
                    all.reverse();
                }
                all.truncate(q.limit);
                Ok(all)
            })
        })
        .await
    }

    async fn events(
        &self,
        patient: &PatientId,
        from: Option<Timestamp>,
        to: Option<Timestamp>,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let patient = patient.clone();
        self.blocking(move |inner| {
            let Some(pk) = inner.cache.read().map_err(poisoned)?.patients.get(&patient).copied() else {
                return Err(StoreError::NotFound(format!("patient {patient}")));
            };
            inner.read(|c| {
                let mut s = c.prepare_cached(
                    "SELECT hub_received, body FROM event WHERE patient = ?1 AND t >= ?2 AND t <= ?3 ORDER BY t DESC LIMIT ?4",
                )?;
                let rows = s.query_map(
                    params![pk, from.map_or(i64::MIN, |t| t.0), to.map_or(i64::MAX, |t| t.0), limit as i64],
                    |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)),
                )?;
                let mut out = Vec::new();
                for row in rows {
                    let (hub, body) = row?;
                    let event: Event = postcard::from_bytes(&body).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                    out.push(StoredEvent { patient: patient.clone(), hub_received: Timestamp(hub), event });
                }
                Ok(out)
            })
        })
        .await
    }

    async fn quarantine(
        &self,
        limit: usize,
        open_only: bool,
    ) -> Result<Vec<QuarantineEntry>, StoreError> {
        self.blocking(move |inner| {
            inner.read(|c| {
                let mut s = c.prepare_cached(
                    "SELECT id, received, gateway, device, reason_code, reason, payload, decoded, status FROM quarantine
                     WHERE (?1 = 0 OR status = 'open') ORDER BY id DESC LIMIT ?2",
                )?;
                let rows = s.query_map(params![open_only, limit as i64], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, Option<String>>(3)?,
                        r.get::<_, String>(4)?,
                        r.get::<_, String>(5)?,
                        r.get::<_, Vec<u8>>(6)?,
                        r.get::<_, bool>(7)?,
                        r.get::<_, String>(8)?,
                    ))
                })?;
                let mut out = Vec::new();
                for row in rows {
                    let (id, received, gateway, device, reason_code, reason, payload, decoded, status) = row?;
                    let record = if decoded {
                        postcard::from_bytes::<Record>(&payload)
                            .ok()
                            .and_then(|r| serde_json::to_value(r).ok())
                    } else {
                        None
                    };
                    out.push(QuarantineEntry {
                        id,
                        received: Timestamp(received),
                        gateway,
                        device,
                        reason_code,
                        reason,
                        record,
                        status,
                    });
                }
                Ok(out)
            })
        })
        .await
    }

    async fn reprocess_quarantine(&self) -> Result<ReprocessOutcome, StoreError> {
        self.blocking(|inner| inner.write(reprocess_tx)).await
    }

    async fn create_gateway(&self, id: &str, token_hash: &[u8]) -> Result<(), StoreError> {
        let (id, hash) = (id.to_owned(), token_hash.to_vec());
        self.blocking(move |inner| {
            inner.write(|tx, _| {
                let n = tx.execute(
                    "INSERT INTO gateway(id, token_hash, created) VALUES (?1, ?2, ?3) ON CONFLICT(id) DO NOTHING",
                    params![id, hash, Timestamp::now().0],
                )?;
                if n == 0 {
                    return Err(StoreError::Conflict(format!("gateway {id} exists")));
                }
                Ok(())
            })
        })
        .await
    }

    async fn gateway_by_token(&self, token_hash: &[u8]) -> Result<Option<GatewayInfo>, StoreError> {
        let hash = token_hash.to_vec();
        self.blocking(move |inner| {
            inner.read(|c| {
                c.prepare_cached(
                    "SELECT id, created, revoked, last_seen FROM gateway WHERE token_hash = ?1 AND revoked = 0",
                )?
                .query_row([hash], |r| {
                    Ok(GatewayInfo {
                        id: r.get(0)?,
                        created: Timestamp(r.get(1)?),
                        revoked: r.get(2)?,
                        last_seen: r.get::<_, Option<i64>>(3)?.map(Timestamp),
                    })
                })
                .optional()
                .map_err(Into::into)
            })
        })
        .await
    }

    async fn gateways(&self) -> Result<Vec<GatewayInfo>, StoreError> {
        self.blocking(|inner| {
            inner.read(|c| {
                let mut s = c.prepare_cached(
                    "SELECT id, created, revoked, last_seen FROM gateway ORDER BY id",
                )?;
                let rows = s.query_map([], |r| {
                    Ok(GatewayInfo {
                        id: r.get(0)?,
                        created: Timestamp(r.get(1)?),
                        revoked: r.get(2)?,
                        last_seen: r.get::<_, Option<i64>>(3)?.map(Timestamp),
                    })
                })?;
                rows.collect::<Result<_, _>>().map_err(Into::into)
            })
        })
        .await
    }

    async fn revoke_gateway(&self, id: &str) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.blocking(move |inner| {
            inner.write(|tx, _| {
                if tx.execute("UPDATE gateway SET revoked = 1 WHERE id = ?1", [&id])? == 0 {
                    return Err(StoreError::NotFound(format!("gateway {id}")));
                }
                Ok(())
            })
        })
        .await
    }

    async fn create_api_token(&self, token_hash: &[u8], t: ApiToken) -> Result<(), StoreError> {
        let hash = token_hash.to_vec();
        self.blocking(move |inner| {
            inner.write(|tx, _| {
                tx.execute(
                    "INSERT INTO api_token(hash, name, role, created, expires, revoked) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![hash, t.name, t.role, t.created.0, t.expires.map(|e| e.0), t.revoked],
                )?;
                Ok(())
            })
        })
        .await
    }

    async fn api_token(&self, token_hash: &[u8]) -> Result<Option<ApiToken>, StoreError> {
        let hash = token_hash.to_vec();
        self.blocking(move |inner| {
            inner.read(|c| {
                c.prepare_cached(
                    "SELECT name, role, created, expires, revoked FROM api_token WHERE hash = ?1",
                )?
                .query_row([hash], |r| {
                    Ok(ApiToken {
                        name: r.get(0)?,
                        role: r.get(1)?,
                        created: Timestamp(r.get(2)?),
                        expires: r.get::<_, Option<i64>>(3)?.map(Timestamp),
                        revoked: r.get(4)?,
                    })
                })
                .optional()
                .map_err(Into::into)
            })
        })
        .await
    }

    async fn compact(&self) -> Result<u64, StoreError> {
        self.blocking(|inner| {
            let current = window(Timestamp::now());
            inner.write(|tx, cache| {
                let groups: Vec<(i64, i64, i64)> = {
                    let mut s = tx.prepare_cached(
                        "SELECT patient, metric, win FROM chunk GROUP BY patient, metric, win
                         HAVING count(*) > 1 AND (win < ?1 OR count(*) >= 16) LIMIT 500",
                    )?;
                    let rows = s.query_map([current], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
                    rows.collect::<Result<_, _>>()?
                };
                let mut removed = 0u64;
                for (pk, mid, win) in groups {
                    let Some(metric) = cache.metrics_by_id.get(&mid).copied() else {
                        continue;
                    };
                    let rows: Vec<(i64, Vec<u8>)> = {
                        let mut s = tx.prepare_cached(
                            "SELECT id, data FROM chunk WHERE patient = ?1 AND metric = ?2 AND win = ?3",
                        )?;
                        let rows = s.query_map(params![pk, mid, win], |r| Ok((r.get(0)?, r.get(1)?)))?;
                        rows.collect::<Result<_, _>>()?
                    };
                    let mut all = Vec::new();
                    for (_, data) in &rows {
                        all.extend(chunk::decode(metric, data)?);
                    }
                    chunk::dedup_identical(&mut all);
                    let (Some(first), Some(last)) = (all.first(), all.last()) else {
                        continue;
                    };
                    let data = chunk::encode(metric, &all);
                    tx.prepare_cached(
                        "INSERT INTO chunk(patient, metric, win, t_min, t_max, n, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    )?
                    .execute(params![pk, mid, win, first.time.0, last.time.0, all.len() as i64, data])?;
                    let mut del = tx.prepare_cached("DELETE FROM chunk WHERE id = ?1")?;
                    for (id, _) in &rows {
                        del.execute([id])?;
                    }
                    removed += rows.len() as u64 - 1;
                }
                Ok(removed)
            })
        })
        .await
    }

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        self.blocking(|inner| {
            inner.read(|c| {
                let (readings, chunks, chunk_bytes): (i64, i64, i64) = c.query_row(
                    "SELECT coalesce(sum(n), 0), count(*), coalesce(sum(length(data)), 0) FROM chunk",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )?;
                let events: i64 = c.query_row("SELECT count(*) FROM event", [], |r| r.get(0))?;
                let q: i64 = c.query_row("SELECT count(*) FROM quarantine WHERE status = 'open'", [], |r| r.get(0))?;
                let pages: i64 = c.query_row("PRAGMA page_count", [], |r| r.get(0))?;
                let free: i64 = c.query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
                let size: i64 = c.query_row("PRAGMA page_size", [], |r| r.get(0))?;
                Ok(StoreStats {
                    readings: readings as u64,
                    chunks: chunks as u64,
                    chunk_bytes: chunk_bytes as u64,
                    events: events as u64,
                    quarantined_open: q as u64,
                    file_bytes: ((pages - free) * size) as u64,
                })
            })
        })
        .await
    }

    async fn raise_alert(&self, signal: AlertSignal, now: Timestamp) -> Result<Raised, StoreError> {
        self.blocking(move |inner| inner.write(|tx, _| alerts::raise(tx, &signal, now)))
            .await
    }

    async fn alert(&self, id: i64) -> Result<Option<Alert>, StoreError> {
        self.blocking(move |inner| inner.read(|c| alerts::get_alert(c, id)))
            .await
    }

    async fn alerts(&self, filter: AlertFilter) -> Result<Vec<Alert>, StoreError> {
        self.blocking(move |inner| inner.read(|c| alerts::list(c, &filter)))
            .await
    }

    async fn acknowledge_alert(
        &self,
        id: i64,
        actor: &str,
        at: Timestamp,
        silence_until: Option<Timestamp>,
    ) -> Result<(Alert, AlertTransition), StoreError> {
        let actor = actor.to_owned();
        self.blocking(move |inner| {
            inner.write(|tx, _| alerts::acknowledge(tx, id, &actor, at, silence_until))
        })
        .await
    }

    async fn resolve_alert(
        &self,
        id: i64,
        actor: &str,
        at: Timestamp,
        note: Option<String>,
    ) -> Result<(Alert, AlertTransition), StoreError> {
        let actor = actor.to_owned();
        self.blocking(move |inner| {
            inner.write(|tx, _| alerts::resolve(tx, id, &actor, at, note.as_deref()))
        })
        .await
    }

    async fn escalate_alert(
        &self,
        id: i64,
        level: u32,
        at: Timestamp,
    ) -> Result<(Alert, AlertTransition), StoreError> {
        self.blocking(move |inner| inner.write(|tx, _| alerts::escalate(tx, id, level, at)))
            .await
    }

    async fn reopen_alert(
        &self,
        id: i64,
        at: Timestamp,
    ) -> Result<(Alert, AlertTransition), StoreError> {
        self.blocking(move |inner| inner.write(|tx, _| alerts::reopen(tx, id, at)))
            .await
    }

    async fn mark_alert_notified(&self, id: i64, at: Timestamp) -> Result<(), StoreError> {
        self.blocking(move |inner| inner.write(|tx, _| alerts::mark_notified(tx, id, at)))
            .await
    }

    async fn alert_transitions(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<AlertTransition>, StoreError> {
        self.blocking(move |inner| inner.read(|c| alerts::transitions(c, after, limit)))
            .await
    }

    async fn latest_transition_id(&self) -> Result<i64, StoreError> {
        self.blocking(|inner| inner.read(alerts::latest_transition_id))
            .await
    }

    async fn transitions_of(&self, alert: i64) -> Result<Vec<AlertTransition>, StoreError> {
        self.blocking(move |inner| inner.read(|c| alerts::transitions_of(c, alert)))
            .await
    }

    async fn set_care_team(&self, patient: &PatientId, team: CareTeam) -> Result<(), StoreError> {
        let patient = patient.clone();
        self.blocking(move |inner| inner.write(|tx, _| alerts::set_care_team(tx, &patient, &team)))
            .await
    }

    async fn care_team(&self, patient: &PatientId) -> Result<CareTeam, StoreError> {
        let patient = patient.clone();
        self.blocking(move |inner| inner.read(|c| alerts::care_team(c, &patient)))
            .await
    }

    async fn set_rule_settings(
        &self,
        patient: &PatientId,
        settings: serde_json::Value,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let patient = patient.clone();
        self.blocking(move |inner| {
            inner.write(|tx, _| alerts::set_rule_settings(tx, &patient, &settings, now))
        })
        .await
    }

    async fn rule_settings(
        &self,
        patient: &PatientId,
    ) -> Result<Option<serde_json::Value>, StoreError> {
        let patient = patient.clone();
        self.blocking(move |inner| inner.read(|c| alerts::rule_settings(c, &patient)))
            .await
    }

    async fn all_rule_settings(&self) -> Result<Vec<(PatientId, serde_json::Value)>, StoreError> {
        self.blocking(move |inner| inner.read(alerts::all_rule_settings))
            .await
    }

    async fn set_on_call(&self, users: Vec<String>) -> Result<(), StoreError> {
        self.blocking(move |inner| inner.write(|tx, _| alerts::set_on_call(tx, &users)))
            .await
    }

    async fn on_call(&self) -> Result<Vec<String>, StoreError> {
        self.blocking(|inner| inner.read(alerts::on_call)).await
    }

    async fn enqueue_notifications(
        &self,
        list: Vec<NewNotification>,
        at: Timestamp,
    ) -> Result<(), StoreError> {
        self.blocking(move |inner| inner.write(|tx, _| alerts::enqueue(tx, &list, at)))
            .await
    }

    async fn due_notifications(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<Notification>, StoreError> {
        self.blocking(move |inner| inner.read(|c| alerts::due(c, now, limit)))
            .await
    }

    async fn notification_delivered(&self, id: i64) -> Result<(), StoreError> {
        self.blocking(move |inner| inner.write(|tx, _| alerts::delivered(tx, id)))
            .await
    }

    async fn notification_failed(
        &self,
        id: i64,
        error: &str,
        retry_at: Option<Timestamp>,
    ) -> Result<(), StoreError> {
        let error = error.to_owned();
        self.blocking(move |inner| inner.write(|tx, _| alerts::failed(tx, id, &error, retry_at)))
            .await
    }

    async fn notifications(
        &self,
        status: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Notification>, StoreError> {
        let status = status.map(str::to_owned);
        self.blocking(move |inner| {
            inner.read(|c| alerts::notifications(c, status.as_deref(), limit))
        })
        .await
    }
}

//! SQL of EHR push state, inbound FHIR resources and OAuth2 clients for the SQLite backend.

use crate::StoreError;
use crate::chunk;
use crate::push::{
    InboundFilter, InboundResource, InboundResult, InboundWrite, JournalEntry, OAuthClient,
    PushDeadLetter, PushStore, PushStream, PushTargetSpec, PushTargetState,
};
use crate::sqlite::SqliteStore;
use async_trait::async_trait;
use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OptionalExtension, Row, Transaction, params, params_from_iter};
use vigil_model::{Metric, PatientId, Timestamp};

pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS push_target(name TEXT PRIMARY KEY, active INTEGER NOT NULL, observations INTEGER NOT NULL, alerts INTEGER NOT NULL, obs_cursor INTEGER NOT NULL, alert_cursor INTEGER NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT, last_error_at INTEGER, last_success_at INTEGER, pushed INTEGER NOT NULL DEFAULT 0, dead_lettered INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS push_journal(seq INTEGER PRIMARY KEY AUTOINCREMENT, patient INTEGER NOT NULL, metric INTEGER NOT NULL, n INTEGER NOT NULL, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS push_dead_letter(id INTEGER PRIMARY KEY, target TEXT NOT NULL, stream TEXT NOT NULL, from_pos INTEGER NOT NULL, to_pos INTEGER NOT NULL, resources INTEGER NOT NULL, error TEXT NOT NULL, created INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS fhir_inbound(pk INTEGER PRIMARY KEY, type TEXT NOT NULL, id TEXT NOT NULL, version INTEGER NOT NULL, system TEXT, value TEXT, body TEXT NOT NULL, received INTEGER NOT NULL, UNIQUE(type, id));
CREATE INDEX IF NOT EXISTS fhir_inbound_identifier ON fhir_inbound(type, system, value);
CREATE TABLE IF NOT EXISTS oauth_client(id TEXT PRIMARY KEY, secret_hash TEXT NOT NULL, role TEXT NOT NULL, created INTEGER NOT NULL) WITHOUT ROWID;
";

/// Appends a chunk just written by an ingest or re-processing transaction to the push
/// journal, in the same transaction, while a target takes observations.
pub(crate) fn journal_chunk(
    tx: &Transaction<'_>,
    patient_pk: i64,
    metric_id: i64,
    n: usize,
    data: &[u8],
) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO push_journal(patient, metric, n, data) SELECT ?1, ?2, ?3, ?4
         WHERE EXISTS (SELECT 1 FROM push_target WHERE active = 1 AND observations = 1)",
    )?
    .execute(params![patient_pk, metric_id, n as i64, data])?;
    Ok(())
}

fn journal_head(c: &Connection) -> Result<i64, StoreError> {
    // The AUTOINCREMENT counter: never reused, even after the journal is pruned.
    Ok(c.query_row(
        "SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'push_journal'), 0)",
        [],
        |r| r.get(0),
    )?)
}

const TARGET_COLS: &str = "name, active, observations, alerts, obs_cursor, alert_cursor, attempts, last_error, last_error_at, last_success_at, pushed, dead_lettered";

fn target_row(r: &Row<'_>) -> Result<PushTargetState, rusqlite::Error> {
    Ok(PushTargetState {
        name: r.get(0)?,
        active: r.get(1)?,
        observations: r.get(2)?,
        alerts: r.get(3)?,
        observation_cursor: r.get(4)?,
        alert_cursor: r.get(5)?,
        attempts: r.get::<_, i64>(6)?.clamp(0, i64::from(u32::MAX)) as u32,
        last_error: r.get(7)?,
        last_error_at: r.get::<_, Option<i64>>(8)?.map(Timestamp),
        last_success_at: r.get::<_, Option<i64>>(9)?.map(Timestamp),
        pushed: r.get::<_, i64>(10)?.max(0) as u64,
        dead_lettered: r.get::<_, i64>(11)?.max(0) as u64,
    })
}

fn letter_row(r: &Row<'_>) -> Result<PushDeadLetter, rusqlite::Error> {
    let stream: String = r.get(2)?;
    Ok(PushDeadLetter {
        id: r.get(0)?,
        target: r.get(1)?,
        stream: PushStream::parse(&stream).ok_or_else(|| {
            rusqlite::Error::FromSqlConversionFailure(
                2,
                rusqlite::types::Type::Text,
                format!("invalid stored push stream {stream:?}").into(),
            )
        })?,
        from: r.get(3)?,
        to: r.get(4)?,
        resources: r.get::<_, i64>(5)?.max(0) as u64,
        error: r.get(6)?,
        created: Timestamp(r.get(7)?),
    })
}

fn inbound_row(r: &Row<'_>) -> Result<InboundResource, rusqlite::Error> {
    let body: String = r.get(6)?;
    Ok(InboundResource {
        resource_type: r.get(0)?,
        id: r.get(1)?,
        version: r.get(2)?,
        identifier_system: r.get(3)?,
        identifier_value: r.get(4)?,
        received: Timestamp(r.get(5)?),
        resource: serde_json::from_str(&body).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(6, rusqlite::types::Type::Text, e.into())
        })?,
    })
}

fn inbound_tx(
    tx: &Transaction<'_>,
    writes: Vec<InboundWrite>,
    now: Timestamp,
) -> Result<Vec<InboundResult>, StoreError> {
    let mut out = Vec::with_capacity(writes.len());
    for w in writes {
        match w {
            InboundWrite::CreateIfNone {
                resource_type,
                id,
                system,
                value,
                mut body,
            } => {
                let found: Option<(String, i64)> = tx
                    .prepare_cached(
                        "SELECT id, version FROM fhir_inbound WHERE type = ?1 AND system = ?2 AND value = ?3 ORDER BY pk LIMIT 1",
                    )?
                    .query_row(params![resource_type, system, value], |r| {
                        Ok((r.get(0)?, r.get(1)?))
                    })
                    .optional()?;
                if let Some((id, version)) = found {
                    out.push(InboundResult {
                        resource_type,
                        id,
                        version,
                        created: false,
                    });
                    continue;
                }
                let taken = |id: &str| -> Result<bool, StoreError> {
                    Ok(tx
                        .prepare_cached("SELECT 1 FROM fhir_inbound WHERE type = ?1 AND id = ?2")?
                        .exists(params![resource_type, id])?)
                };
                let id = match id {
                    Some(id) if !taken(&id)? => id,
                    _ => {
                        let next: i64 = tx.query_row(
                            "SELECT coalesce(max(pk), 0) + 1 FROM fhir_inbound",
                            [],
                            |r| r.get(0),
                        )?;
                        format!("in-{next}")
                    }
                };
                if let Some(o) = body.as_object_mut() {
                    o.insert("id".to_owned(), serde_json::Value::String(id.clone()));
                }
                tx.prepare_cached(
                    "INSERT INTO fhir_inbound(type, id, version, system, value, body, received) VALUES (?1, ?2, 1, ?3, ?4, ?5, ?6)",
                )?
                .execute(params![resource_type, id, system, value, body.to_string(), now.0])?;
                out.push(InboundResult {
                    resource_type,
                    id,
                    version: 1,
                    created: true,
                });
            }
            InboundWrite::Put {
                resource_type,
                id,
                identifier,
                body,
            } => {
                let (system, value) = identifier.unzip();
                let version: Option<i64> = tx
                    .prepare_cached("SELECT version FROM fhir_inbound WHERE type = ?1 AND id = ?2")?
                    .query_row(params![resource_type, id], |r| r.get(0))
                    .optional()?;
                let (version, created) = match version {
                    Some(v) => {
                        tx.prepare_cached(
                            "UPDATE fhir_inbound SET version = ?3, system = ?4, value = ?5, body = ?6, received = ?7 WHERE type = ?1 AND id = ?2",
                        )?
                        .execute(params![resource_type, id, v + 1, system, value, body.to_string(), now.0])?;
                        (v + 1, false)
                    }
                    None => {
                        tx.prepare_cached(
                            "INSERT INTO fhir_inbound(type, id, version, system, value, body, received) VALUES (?1, ?2, 1, ?3, ?4, ?5, ?6)",
                        )?
                        .execute(params![resource_type, id, system, value, body.to_string(), now.0])?;
                        (1, true)
                    }
                };
                out.push(InboundResult {
                    resource_type,
                    id,
                    version,
                    created,
                });
            }
        }
    }
    Ok(out)
}

fn journal_after(
    c: &Connection,
    after: i64,
    max_readings: usize,
) -> Result<Vec<JournalEntry>, StoreError> {
    let mut s = c.prepare_cached(
        "SELECT j.seq, p.id, k.loinc, j.data FROM push_journal j
         JOIN patient p ON p.pk = j.patient JOIN code k ON k.id = j.metric
         WHERE j.seq > ?1 ORDER BY j.seq LIMIT 10000",
    )?;
    let mut rows = s.query([after])?;
    let mut out = Vec::new();
    let mut total = 0usize;
    while let Some(r) = rows.next()? {
        if !out.is_empty() && total >= max_readings {
            break;
        }
        let seq: i64 = r.get(0)?;
        let patient: String = r.get(1)?;
        let loinc: String = r.get(2)?;
        let data: Vec<u8> = r.get(3)?;
        let patient = PatientId::new(patient)
            .map_err(|e| StoreError::Corrupt(format!("push journal {seq}: {e}")))?;
        let metric: Metric = loinc
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("push journal {seq}: metric {loinc}")))?;
        let readings = chunk::decode(metric, &data)?;
        total += readings.len();
        out.push(JournalEntry {
            seq,
            patient,
            readings,
        });
    }
    Ok(out)
}

#[async_trait]
impl PushStore for SqliteStore {
    async fn configure_push_targets(&self, targets: Vec<PushTargetSpec>) -> Result<(), StoreError> {
        self.blocking(move |inner| {
            inner.write(|tx, _| {
                tx.execute("UPDATE push_target SET active = 0", [])?;
                let head = journal_head(tx)?;
                let transitions: i64 = tx.query_row(
                    "SELECT coalesce(max(id), 0) FROM alert_transition",
                    [],
                    |r| r.get(0),
                )?;
                for t in targets {
                    tx.prepare_cached(
                        "INSERT INTO push_target(name, active, observations, alerts, obs_cursor, alert_cursor) VALUES (?1, 1, ?2, ?3, ?4, ?5)
                         ON CONFLICT(name) DO UPDATE SET active = 1, observations = excluded.observations, alerts = excluded.alerts",
                    )?
                    .execute(params![t.name, t.observations, t.alerts, head, transitions])?;
                }
                Ok(())
            })
        })
        .await
    }

    async fn push_target(&self, name: &str) -> Result<Option<PushTargetState>, StoreError> {
        let name = name.to_owned();
        self.blocking(move |inner| {
            inner.read(|c| {
                Ok(c.prepare_cached(&format!(
                    "SELECT {TARGET_COLS} FROM push_target WHERE name = ?1"
                ))?
                .query_row([name], target_row)
                .optional()?)
            })
        })
        .await
    }

    async fn push_targets(&self) -> Result<Vec<PushTargetState>, StoreError> {
        self.blocking(|inner| {
            inner.read(|c| {
                let mut s = c.prepare_cached(&format!(
                    "SELECT {TARGET_COLS} FROM push_target ORDER BY name"
                ))?;
                let rows = s.query_map([], target_row)?;
                Ok(rows.collect::<Result<_, _>>()?)
            })
        })
        .await
    }

    async fn push_journal(
        &self,
        after: i64,
        max_readings: usize,
    ) -> Result<Vec<JournalEntry>, StoreError> {
        self.blocking(move |inner| inner.read(|c| journal_after(c, after, max_readings)))
            .await
    }

    async fn push_journal_head(&self) -> Result<i64, StoreError> {
        self.blocking(|inner| inner.read(journal_head)).await
    }

    async fn push_advanced(
        &self,
        target: &str,
        stream: PushStream,
        to: i64,
        resources: u64,
        at: Timestamp,
    ) -> Result<(), StoreError> {
        let target = target.to_owned();
        self.blocking(move |inner| {
            inner.write(|tx, _| {
                let col = match stream {
                    PushStream::Observations => "obs_cursor",
                    PushStream::Alerts => "alert_cursor",
                };
                let n = tx.execute(
                    &format!(
                        "UPDATE push_target SET {col} = max({col}, ?2), attempts = 0, last_success_at = ?3, pushed = pushed + ?4 WHERE name = ?1"
                    ),
                    params![target, to, at.0, resources as i64],
                )?;
                if n == 0 {
                    return Err(StoreError::NotFound(format!("push target {target}")));
                }
                Ok(())
            })
        })
        .await
    }

    async fn push_failed(
        &self,
        target: &str,
        error: &str,
        at: Timestamp,
    ) -> Result<(), StoreError> {
        let (target, error) = (target.to_owned(), error.to_owned());
        self.blocking(move |inner| {
            inner.write(|tx, _| {
                tx.execute(
                    "UPDATE push_target SET attempts = attempts + 1, last_error = ?2, last_error_at = ?3 WHERE name = ?1",
                    params![target, error, at.0],
                )?;
                Ok(())
            })
        })
        .await
    }

    async fn push_dead_letter(
        &self,
        letter: PushDeadLetter,
        at: Timestamp,
    ) -> Result<(), StoreError> {
        self.blocking(move |inner| {
            inner.write(|tx, _| {
                tx.execute(
                    "INSERT INTO push_dead_letter(target, stream, from_pos, to_pos, resources, error, created) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    params![
                        letter.target,
                        letter.stream.as_str(),
                        letter.from,
                        letter.to,
                        letter.resources as i64,
                        letter.error,
                        at.0
                    ],
                )?;
                let col = match letter.stream {
                    PushStream::Observations => "obs_cursor",
                    PushStream::Alerts => "alert_cursor",
                };
                tx.execute(
                    &format!(
                        "UPDATE push_target SET {col} = max({col}, ?2), attempts = 0, dead_lettered = dead_lettered + 1, last_error = ?3, last_error_at = ?4 WHERE name = ?1"
                    ),
                    params![letter.target, letter.to, letter.error, at.0],
                )?;
                Ok(())
            })
        })
        .await
    }

    async fn push_dead_letters(
        &self,
        target: Option<&str>,
        limit: usize,
    ) -> Result<Vec<PushDeadLetter>, StoreError> {
        let target = target.map(str::to_owned);
        self.blocking(move |inner| {
            inner.read(|c| {
                let mut s = c.prepare_cached(
                    "SELECT id, target, stream, from_pos, to_pos, resources, error, created FROM push_dead_letter
                     WHERE ?1 IS NULL OR target = ?1 ORDER BY id DESC LIMIT ?2",
                )?;
                let rows = s.query_map(
                    params![target, i64::try_from(limit).unwrap_or(i64::MAX)],
                    letter_row,
                )?;
                Ok(rows.collect::<Result<_, _>>()?)
            })
        })
        .await
    }

    async fn prune_push_journal(&self) -> Result<u64, StoreError> {
        self.blocking(|inner| {
            inner.write(|tx, _| {
                let n = tx.execute(
                    "DELETE FROM push_journal WHERE seq <= coalesce(
                        (SELECT min(obs_cursor) FROM push_target WHERE active = 1 AND observations = 1),
                        (SELECT max(seq) FROM push_journal))",
                    [],
                )?;
                Ok(n as u64)
            })
        })
        .await
    }

    async fn inbound_transaction(
        &self,
        writes: Vec<InboundWrite>,
        now: Timestamp,
    ) -> Result<Vec<InboundResult>, StoreError> {
        self.blocking(move |inner| inner.write(|tx, _| inbound_tx(tx, writes, now)))
            .await
    }

    async fn inbound_resources(
        &self,
        filter: InboundFilter,
    ) -> Result<(Vec<InboundResource>, u64), StoreError> {
        self.blocking(move |inner| {
            inner.read(|c| {
                let mut cond = Vec::new();
                let mut args: Vec<SqlValue> = Vec::new();
                if let Some(t) = filter.resource_type {
                    args.push(SqlValue::Text(t));
                    cond.push(format!("type = ?{}", args.len()));
                }
                if let Some((system, value)) = filter.identifier {
                    args.push(SqlValue::Text(system));
                    cond.push(format!("system = ?{}", args.len()));
                    args.push(SqlValue::Text(value));
                    cond.push(format!("value = ?{}", args.len()));
                }
                let filter_sql = if cond.is_empty() {
                    String::new()
                } else {
                    format!("WHERE {}", cond.join(" AND "))
                };
                let total: i64 = c.query_row(
                    &format!("SELECT count(*) FROM fhir_inbound {filter_sql}"),
                    params_from_iter(args.iter()),
                    |r| r.get(0),
                )?;
                args.push(SqlValue::Integer(
                    i64::try_from(filter.limit).unwrap_or(i64::MAX),
                ));
                let mut s = c.prepare(&format!(
                    "SELECT type, id, version, system, value, received, body FROM fhir_inbound {filter_sql} ORDER BY pk DESC LIMIT ?{}",
                    args.len()
                ))?;
                let rows = s.query_map(params_from_iter(args.iter()), inbound_row)?;
                Ok((rows.collect::<Result<_, _>>()?, total.max(0) as u64))
            })
        })
        .await
    }

    async fn put_oauth_client(&self, client: OAuthClient) -> Result<(), StoreError> {
        self.blocking(move |inner| {
            inner.write(|tx, _| {
                tx.execute(
                    "INSERT INTO oauth_client(id, secret_hash, role, created) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT(id) DO UPDATE SET secret_hash = excluded.secret_hash, role = excluded.role, created = excluded.created",
                    params![client.id, client.secret_hash, client.role, client.created.0],
                )?;
                Ok(())
            })
        })
        .await
    }

    async fn oauth_client(&self, id: &str) -> Result<Option<OAuthClient>, StoreError> {
        let id = id.to_owned();
        self.blocking(move |inner| {
            inner.read(|c| {
                Ok(c.prepare_cached(
                    "SELECT id, secret_hash, role, created FROM oauth_client WHERE id = ?1",
                )?
                .query_row([id], |r| {
                    Ok(OAuthClient {
                        id: r.get(0)?,
                        secret_hash: r.get(1)?,
                        role: r.get(2)?,
                        created: Timestamp(r.get(3)?),
                    })
                })
                .optional()?)
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{IncomingRecord, IngestBatch, Store};
    use vigil_model::{Assignment, Device, DeviceId, DeviceKind, Patient, Reading, Record};

    fn store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = SqliteStore::open(dir.path().join("hub.db")).expect("open");
        (dir, s)
    }

    async fn enrol(s: &SqliteStore) {
        let p: Patient = serde_json::from_value(serde_json::json!({"id": "p-1"})).expect("p");
        s.upsert_patient(p).await.expect("patient");
        let d: Device =
            serde_json::from_value(serde_json::json!({"id": "d-1", "kind": "wearable"}))
                .expect("d");
        assert_eq!(d.kind, DeviceKind::Wearable);
        s.upsert_device(d).await.expect("device");
        let a: Assignment = serde_json::from_value(serde_json::json!(
            {"device": "d-1", "patient": "p-1", "from": "2000-01-01T00:00:00Z"}
        ))
        .expect("a");
        s.assign(a).await.expect("assign");
    }

    async fn ingest(s: &SqliteStore, after: u64, n: u64) {
        let metric: Metric = "8867-4".parse().expect("hr");
        let now = Timestamp::now();
        let records = (after + 1..=after + n)
            .map(|seq| IncomingRecord {
                seq,
                record: Ok(Record::Reading(Reading::quantity(
                    DeviceId::new("d-1").expect("id"),
                    metric,
                    60.0 + seq as f64,
                    Timestamp(now.0 - 100_000 + seq as i64 * 1000),
                ))),
            })
            .collect();
        s.ingest(IngestBatch {
            gateway: "gw".into(),
            epoch: 1,
            after,
            records,
            hub_received: now,
            max_future_ms: 300_000,
        })
        .await
        .expect("ingest");
    }

    fn target(name: &str) -> PushTargetSpec {
        PushTargetSpec {
            name: name.into(),
            observations: true,
            alerts: true,
        }
    }

    #[tokio::test]
    async fn the_journal_holds_what_was_stored_after_a_target_exists_until_every_target_passed_it()
    {
        let (_d, s) = store();
        enrol(&s).await;
        ingest(&s, 0, 3).await;
        // No target yet: nothing is journaled.
        assert_eq!(s.push_journal_head().await.expect("head"), 0);
        s.configure_push_targets(vec![target("a"), target("b")])
            .await
            .expect("configure");
        ingest(&s, 3, 4).await;
        ingest(&s, 7, 2).await;
        // Compaction merges chunks; the journal keeps its own copy.
        s.compact().await.expect("compact");
        let all = s.push_journal(0, 1000).await.expect("journal");
        assert_eq!(all.len(), 2);
        assert_eq!(
            all.iter().map(|e| e.readings.len()).sum::<usize>(),
            6,
            "only readings stored after the targets were configured"
        );
        assert_eq!(all[0].patient.as_str(), "p-1");
        // Batching stops once the limit is reached, but always returns one entry.
        assert_eq!(s.push_journal(0, 1).await.expect("j").len(), 1);
        let first = all[0].seq;
        let last = all[1].seq;
        let now = Timestamp::now();
        s.push_advanced("a", PushStream::Observations, last, 6, now)
            .await
            .expect("advance");
        s.push_advanced("b", PushStream::Observations, first, 4, now)
            .await
            .expect("advance");
        assert_eq!(s.prune_push_journal().await.expect("prune"), 1);
        let left = s.push_journal(0, 1000).await.expect("journal");
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].seq, last);
        // A cursor never moves back.
        s.push_advanced("b", PushStream::Observations, 0, 0, now)
            .await
            .expect("advance");
        let b = s.push_target("b").await.expect("b").expect("exists");
        assert_eq!(b.observation_cursor, first);
        assert_eq!(b.pushed, 4);
        // A dead letter moves the cursor and is listed.
        s.push_dead_letter(
            PushDeadLetter {
                id: 0,
                target: "b".into(),
                stream: PushStream::Observations,
                from: first,
                to: last,
                resources: 2,
                error: "422".into(),
                created: now,
            },
            now,
        )
        .await
        .expect("dead letter");
        let b = s.push_target("b").await.expect("b").expect("exists");
        assert_eq!((b.observation_cursor, b.dead_lettered), (last, 1));
        assert_eq!(
            s.push_dead_letters(Some("b"), 10).await.expect("dl").len(),
            1
        );
        assert_eq!(s.prune_push_journal().await.expect("prune"), 1);
        // Sequences are never reused after pruning.
        ingest(&s, 9, 1).await;
        let j = s.push_journal(last, 10).await.expect("journal");
        assert_eq!(j.len(), 1);
        assert!(j[0].seq > last);
        // Without targets the journal stops growing and empties.
        s.configure_push_targets(Vec::new()).await.expect("none");
        ingest(&s, 10, 1).await;
        s.prune_push_journal().await.expect("prune");
        assert!(s.push_journal(0, 10).await.expect("j").is_empty());
    }

    #[tokio::test]
    async fn readings_stored_by_reprocessing_the_quarantine_are_journaled_too() {
        let (_d, s) = store();
        s.configure_push_targets(vec![target("a")])
            .await
            .expect("configure");
        // Not enrolled yet: quarantined, nothing to push.
        ingest(&s, 0, 5).await;
        assert!(s.push_journal(0, 100).await.expect("j").is_empty());
        // Enrolment re-processes the quarantine: the readings are stored now, and pushed.
        enrol(&s).await;
        let j = s.push_journal(0, 100).await.expect("j");
        assert_eq!(j.iter().map(|e| e.readings.len()).sum::<usize>(), 5);
    }

    #[tokio::test]
    async fn conditional_create_finds_the_existing_resource_and_put_replaces_it() {
        let (_d, s) = store();
        let now = Timestamp::now();
        let obs = |v: f64| InboundWrite::CreateIfNone {
            resource_type: "Observation".into(),
            id: Some("o1".into()),
            system: "urn:vigil:observation".into(),
            value: "o1".into(),
            body: serde_json::json!({"resourceType": "Observation", "id": "o1", "v": v}),
        };
        let flag = |status: &str| InboundWrite::Put {
            resource_type: "Flag".into(),
            id: "f1".into(),
            identifier: Some(("urn:vigil:alert".into(), "f1".into())),
            body: serde_json::json!({"resourceType": "Flag", "id": "f1", "status": status}),
        };
        let r = s
            .inbound_transaction(vec![obs(1.0), obs(2.0), flag("active")], now)
            .await
            .expect("tx");
        assert_eq!(
            r.iter().map(|r| r.created).collect::<Vec<_>>(),
            [true, false, true]
        );
        let r = s
            .inbound_transaction(vec![obs(3.0), flag("inactive")], now)
            .await
            .expect("tx");
        assert!(!r[0].created);
        assert_eq!((r[1].created, r[1].version), (false, 2));
        let (list, total) = s
            .inbound_resources(InboundFilter {
                limit: 10,
                ..InboundFilter::default()
            })
            .await
            .expect("list");
        assert_eq!((list.len(), total), (2, 2));
        let (obs, n) = s
            .inbound_resources(InboundFilter {
                resource_type: Some("Observation".into()),
                identifier: Some(("urn:vigil:observation".into(), "o1".into())),
                limit: 10,
            })
            .await
            .expect("list");
        assert_eq!(n, 1);
        assert_eq!(obs[0].resource["v"], 1.0, "the first one is kept");
        let (flags, _) = s
            .inbound_resources(InboundFilter {
                resource_type: Some("Flag".into()),
                identifier: None,
                limit: 10,
            })
            .await
            .expect("list");
        assert_eq!(flags[0].resource["status"], "inactive");
    }
}

//! SQL of consents, break-glass records, device revocations, erasure and retention for the
//! SQLite backend.

use crate::StoreError;
use crate::chunk::{self, StoredReading};
use crate::privacy::{
    BreakGlass, Consent, DeviceRevocation, ErasureCounts, ExportCursor, NewConsent, PrivacyStore,
    ReadingPage, RetentionCuts, RetentionOutcome, Tombstone,
};
use crate::sqlite::{Cache, SqliteStore, engine, poisoned};
use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Row, params};
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use vigil_model::{DeviceId, PatientId, Timestamp};

pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS consent(id INTEGER PRIMARY KEY, patient TEXT NOT NULL, grantee TEXT NOT NULL, scope TEXT NOT NULL, granted_by TEXT NOT NULL, granted_at INTEGER NOT NULL, expires INTEGER, revoked_at INTEGER, revoked_by TEXT);
CREATE UNIQUE INDEX IF NOT EXISTS consent_active ON consent(patient, grantee) WHERE revoked_at IS NULL;
CREATE INDEX IF NOT EXISTS consent_grantee ON consent(grantee) WHERE revoked_at IS NULL;
CREATE TABLE IF NOT EXISTS break_glass(id INTEGER PRIMARY KEY, user TEXT NOT NULL, role TEXT NOT NULL, patient TEXT NOT NULL, reason TEXT NOT NULL, t_from INTEGER NOT NULL, t_until INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS break_glass_user ON break_glass(user, t_until);
CREATE INDEX IF NOT EXISTS break_glass_patient ON break_glass(patient);
CREATE TABLE IF NOT EXISTS device_revocation(device TEXT PRIMARY KEY, revoked_by TEXT NOT NULL, revoked_at INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS erasure(id INTEGER PRIMARY KEY, patient_hash TEXT NOT NULL, erased_by TEXT NOT NULL, erased_at INTEGER NOT NULL, reason TEXT NOT NULL, counts TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS privacy_meta(key TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;
";

/// Creates the tables, the hub's erasure salt, and (once) turns the caregivers listed in care
/// teams before consent existed into consents, so nobody loses access on upgrade.
pub(crate) fn init(conn: &Connection) -> Result<(), StoreError> {
    conn.execute_batch(SCHEMA)?;
    let salt: [u8; 32] = rand::random();
    conn.execute(
        "INSERT OR IGNORE INTO privacy_meta(key, value) VALUES ('erasure_salt', ?1)",
        [salt.as_slice()],
    )?;
    let migrated = conn.execute(
        "INSERT OR IGNORE INTO privacy_meta(key, value) VALUES ('caregivers_migrated', x'01')",
        [],
    )?;
    if migrated == 1 {
        conn.execute(
            "INSERT OR IGNORE INTO consent(patient, grantee, scope, granted_by, granted_at)
             SELECT DISTINCT patient, user, 'read', 'care-team', ?1 FROM care_team WHERE role = 'caregiver'",
            [Timestamp::now().0],
        )?;
    }
    Ok(())
}

/// The revoked devices, for the ingest cache.
pub(crate) fn revoked_devices(conn: &Connection) -> Result<HashSet<DeviceId>, StoreError> {
    let mut s = conn.prepare("SELECT device FROM device_revocation")?;
    let rows = s.query_map([], |r| r.get::<_, String>(0))?;
    let mut out = HashSet::new();
    for row in rows {
        if let Ok(d) = DeviceId::new(row?) {
            out.insert(d);
        }
    }
    Ok(out)
}

fn corrupt(what: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        0,
        rusqlite::types::Type::Text,
        format!("invalid stored {what}").into(),
    )
}

const CONSENT_COLS: &str =
    "id, patient, grantee, scope, granted_by, granted_at, expires, revoked_at, revoked_by";

fn consent_row(r: &Row<'_>) -> Result<Consent, rusqlite::Error> {
    Ok(Consent {
        id: r.get(0)?,
        patient: PatientId::new(r.get::<_, String>(1)?).map_err(|_| corrupt("patient id"))?,
        grantee: r.get(2)?,
        scope: r.get(3)?,
        granted_by: r.get(4)?,
        granted_at: Timestamp(r.get(5)?),
        expires: r.get::<_, Option<i64>>(6)?.map(Timestamp),
        revoked_at: r.get::<_, Option<i64>>(7)?.map(Timestamp),
        revoked_by: r.get(8)?,
    })
}

fn break_glass_row(r: &Row<'_>) -> Result<BreakGlass, rusqlite::Error> {
    Ok(BreakGlass {
        id: r.get(0)?,
        user: r.get(1)?,
        role: r.get(2)?,
        patient: r.get(3)?,
        reason: r.get(4)?,
        from: Timestamp(r.get(5)?),
        until: Timestamp(r.get(6)?),
    })
}

fn patient_pk(c: &Connection, patient: &PatientId) -> Result<i64, StoreError> {
    c.query_row(
        "SELECT pk FROM patient WHERE id = ?1",
        [patient.as_str()],
        |r| r.get(0),
    )
    .optional()?
    .ok_or_else(|| StoreError::NotFound(format!("patient {patient}")))
}

fn check_name(what: &str, s: &str) -> Result<(), StoreError> {
    if s.trim().is_empty() || s.len() > 128 {
        return Err(StoreError::Invalid(format!(
            "{what} must be 1 to 128 bytes"
        )));
    }
    Ok(())
}

fn count(n: usize) -> u64 {
    n as u64
}

/// Deletes the transitions of the alerts `filter` selects. Transitions are append-only for
/// everyone else: the guard trigger is lifted only inside this transaction and restored
/// before it commits.
fn delete_transitions(
    c: &Connection,
    filter: &str,
    arg: &dyn rusqlite::ToSql,
) -> Result<u64, StoreError> {
    let guard = crate::sqlite_alerts::SCHEMA
        .lines()
        .find(|l| l.contains("TRIGGER IF NOT EXISTS alert_transition_no_delete"))
        .ok_or_else(|| StoreError::Corrupt("the transition guard is not defined".into()))?;
    c.execute_batch("DROP TRIGGER IF EXISTS alert_transition_no_delete;")?;
    let n = c.execute(
        &format!(
            "DELETE FROM alert_transition WHERE alert IN (SELECT id FROM alert WHERE {filter})"
        ),
        [arg],
    )?;
    c.execute_batch(guard)?;
    Ok(count(n))
}

fn salt(c: &Connection) -> Result<Vec<u8>, StoreError> {
    c.query_row(
        "SELECT value FROM privacy_meta WHERE key = 'erasure_salt'",
        [],
        |r| r.get(0),
    )
    .map_err(Into::into)
}

fn erase_tx(
    c: &Connection,
    cache: &mut Cache,
    patient: &PatientId,
    by: &str,
    reason: &str,
    now: Timestamp,
) -> Result<Tombstone, StoreError> {
    let p = patient.as_str();
    let pk = patient_pk(c, patient)?;
    let mut h = Sha256::new();
    h.update(salt(c)?);
    h.update(p.as_bytes());
    let hash = hex::encode(h.finalize());
    let mut n = ErasureCounts::default();
    let (readings, chunks): (i64, i64) = c.query_row(
        "SELECT coalesce(sum(n), 0), count(*) FROM chunk WHERE patient = ?1",
        [pk],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    n.readings = readings as u64;
    n.chunks = chunks as u64;
    c.execute("DELETE FROM chunk WHERE patient = ?1", [pk])?;
    n.latest = count(c.execute("DELETE FROM latest WHERE patient = ?1", [pk])?);
    n.push_journal = count(c.execute("DELETE FROM push_journal WHERE patient = ?1", [pk])?);
    n.events = count(c.execute("DELETE FROM event WHERE patient = ?1", [pk])?);
    n.notifications = count(c.execute(
        "DELETE FROM notification WHERE alert IN (SELECT id FROM alert WHERE patient = ?1)
         OR (json_valid(payload) AND json_extract(payload, '$.patient') = ?1)",
        [p],
    )?);
    n.transitions = delete_transitions(c, "patient = ?1", &p)?;
    n.alerts = count(c.execute("DELETE FROM alert WHERE patient = ?1", [p])?);
    n.consents = count(c.execute("DELETE FROM consent WHERE patient = ?1", [p])?);
    n.break_glass_pseudonymised = count(c.execute(
        "UPDATE break_glass SET patient = ?2 WHERE patient = ?1",
        params![p, format!("erased:{hash}")],
    )?);
    n.care_team = count(c.execute("DELETE FROM care_team WHERE patient = ?1", [p])?);
    n.rule_settings = count(c.execute("DELETE FROM rule_settings WHERE patient = ?1", [p])?);
    let devices: Vec<String> = {
        let mut s = c.prepare("SELECT DISTINCT device FROM assignment WHERE patient = ?1")?;
        let rows = s.query_map([p], |r| r.get(0))?;
        rows.collect::<Result<_, _>>()?
    };
    for d in &devices {
        n.quarantine += count(c.execute("DELETE FROM quarantine WHERE device = ?1", [d])?);
        if let Ok(id) = DeviceId::new(d.as_str())
            && let Some(list) = cache.assignments.get_mut(&id)
        {
            list.retain(|a| &a.patient != patient);
        }
    }
    n.assignments = count(c.execute("DELETE FROM assignment WHERE patient = ?1", [p])?);
    n.patient_tokens_revoked = count(c.execute(
        "UPDATE api_token SET revoked = 1 WHERE role = 'patient' AND name = ?1 AND revoked = 0",
        [p],
    )?);
    c.execute("DELETE FROM patient WHERE pk = ?1", [pk])?;
    cache.patients.remove(patient);
    let counts = serde_json::to_string(&n).map_err(engine)?;
    c.execute(
        "INSERT INTO erasure(patient_hash, erased_by, erased_at, reason, counts) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![hash, by, now.0, reason, counts],
    )?;
    Ok(Tombstone {
        id: c.last_insert_rowid(),
        patient_hash: hash,
        erased_by: by.to_owned(),
        erased_at: now,
        reason: reason.to_owned(),
        counts: n,
    })
}

fn sweep_tx(c: &Connection, cuts: RetentionCuts) -> Result<RetentionOutcome, StoreError> {
    let mut out = RetentionOutcome::default();
    if let Some(cut) = cuts.readings {
        let (readings, chunks): (i64, i64) = c.query_row(
            "SELECT coalesce(sum(n), 0), count(*) FROM chunk WHERE t_max < ?1",
            [cut.0],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        c.execute("DELETE FROM chunk WHERE t_max < ?1", [cut.0])?;
        out.readings = readings as u64;
        out.chunks = chunks as u64;
        out.latest = count(c.execute("DELETE FROM latest WHERE t < ?1", [cut.0])?);
    }
    if let Some(cut) = cuts.events {
        out.events = count(c.execute("DELETE FROM event WHERE t < ?1", [cut.0])?);
    }
    if let Some(cut) = cuts.alerts {
        let filter = "status = 'resolved' AND resolved_at < ?1";
        out.notifications += count(c.execute(
            &format!(
                "DELETE FROM notification WHERE alert IN (SELECT id FROM alert WHERE {filter})"
            ),
            [cut.0],
        )?);
        out.transitions = delete_transitions(c, filter, &cut.0)?;
        out.alerts = count(c.execute(&format!("DELETE FROM alert WHERE {filter}"), [cut.0])?);
    }
    if let Some(cut) = cuts.quarantine {
        out.quarantine = count(c.execute("DELETE FROM quarantine WHERE received < ?1", [cut.0])?);
    }
    if let Some(cut) = cuts.notifications {
        out.notifications += count(c.execute(
            "DELETE FROM notification WHERE created < ?1 AND status != 'pending'",
            [cut.0],
        )?);
    }
    Ok(out)
}

fn export_page(
    c: &Connection,
    metrics: &std::collections::HashMap<i64, vigil_model::Metric>,
    pk: i64,
    after: Option<ExportCursor>,
    max_groups: usize,
) -> Result<ReadingPage, StoreError> {
    let (am, aw) = after.unwrap_or((i64::MIN, i64::MIN));
    let limit = i64::try_from(max_groups.max(1)).unwrap_or(i64::MAX);
    let groups: Vec<(i64, i64)> = {
        let mut s = c.prepare_cached(
            "SELECT DISTINCT metric, win FROM chunk WHERE patient = ?1 AND (metric > ?2 OR (metric = ?2 AND win > ?3))
             ORDER BY metric, win LIMIT ?4",
        )?;
        let rows = s.query_map(params![pk, am, aw, limit], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect::<Result<_, _>>()?
    };
    let mut readings: Vec<StoredReading> = Vec::new();
    let mut s =
        c.prepare_cached("SELECT data FROM chunk WHERE patient = ?1 AND metric = ?2 AND win = ?3")?;
    for (mid, win) in &groups {
        let metric = metrics
            .get(mid)
            .copied()
            .ok_or_else(|| StoreError::Corrupt(format!("metric id {mid} is unknown")))?;
        let mut group = Vec::new();
        let rows = s.query_map(params![pk, mid, win], |r| r.get::<_, Vec<u8>>(0))?;
        for data in rows {
            group.extend(chunk::decode(metric, &data?)?);
        }
        chunk::dedup_identical(&mut group);
        readings.extend(group);
    }
    let next = if groups.len() as i64 == limit {
        groups.last().copied()
    } else {
        None
    };
    Ok(ReadingPage { readings, next })
}

#[async_trait]
impl PrivacyStore for SqliteStore {
    async fn grant_consent(
        &self,
        patient: &PatientId,
        consent: NewConsent,
        now: Timestamp,
    ) -> Result<Consent, StoreError> {
        check_name("grantee", &consent.grantee)?;
        check_name("scope", &consent.scope)?;
        let patient = patient.clone();
        self.blocking(move |inner| {
            inner.write(|tx, _| {
                patient_pk(tx, &patient)?;
                tx.execute(
                    "UPDATE consent SET revoked_at = ?3, revoked_by = ?4 WHERE patient = ?1 AND grantee = ?2 AND revoked_at IS NULL",
                    params![patient.as_str(), consent.grantee, now.0, consent.granted_by],
                )?;
                tx.execute(
                    "INSERT INTO consent(patient, grantee, scope, granted_by, granted_at, expires) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![
                        patient.as_str(),
                        consent.grantee,
                        consent.scope,
                        consent.granted_by,
                        now.0,
                        consent.expires.map(|e| e.0)
                    ],
                )?;
                tx.query_row(
                    &format!("SELECT {CONSENT_COLS} FROM consent WHERE id = ?1"),
                    [tx.last_insert_rowid()],
                    consent_row,
                )
                .map_err(Into::into)
            })
        })
        .await
    }

    async fn consents(&self, patient: &PatientId) -> Result<Vec<Consent>, StoreError> {
        let patient = patient.clone();
        self.blocking(move |inner| {
            inner.read(|c| {
                patient_pk(c, &patient)?;
                let mut s = c.prepare_cached(&format!(
                    "SELECT {CONSENT_COLS} FROM consent WHERE patient = ?1 ORDER BY id DESC"
                ))?;
                let rows = s.query_map([patient.as_str()], consent_row)?;
                rows.collect::<Result<_, _>>().map_err(Into::into)
            })
        })
        .await
    }

    async fn revoke_consent(
        &self,
        patient: &PatientId,
        grantee: &str,
        by: &str,
        now: Timestamp,
    ) -> Result<Consent, StoreError> {
        let (patient, grantee, by) = (patient.clone(), grantee.to_owned(), by.to_owned());
        self.blocking(move |inner| {
            inner.write(|tx, _| {
                let id: i64 = tx
                    .query_row(
                        "SELECT id FROM consent WHERE patient = ?1 AND grantee = ?2 AND revoked_at IS NULL",
                        params![patient.as_str(), grantee],
                        |r| r.get(0),
                    )
                    .optional()?
                    .ok_or_else(|| StoreError::NotFound(format!("consent for {grantee}")))?;
                tx.execute(
                    "UPDATE consent SET revoked_at = ?2, revoked_by = ?3 WHERE id = ?1",
                    params![id, now.0, by],
                )?;
                tx.query_row(
                    &format!("SELECT {CONSENT_COLS} FROM consent WHERE id = ?1"),
                    [id],
                    consent_row,
                )
                .map_err(Into::into)
            })
        })
        .await
    }

    async fn consented_patients(
        &self,
        grantee: &str,
        now: Timestamp,
    ) -> Result<Vec<PatientId>, StoreError> {
        let grantee = grantee.to_owned();
        self.blocking(move |inner| {
            inner.read(|c| {
                let mut s = c.prepare_cached(
                    "SELECT patient FROM consent WHERE grantee = ?1 AND revoked_at IS NULL AND (expires IS NULL OR expires > ?2)",
                )?;
                let rows = s.query_map(params![grantee, now.0], |r| r.get::<_, String>(0))?;
                let mut out = Vec::new();
                for row in rows {
                    out.push(PatientId::new(row?).map_err(|e| StoreError::Corrupt(e.to_string()))?);
                }
                Ok(out)
            })
        })
        .await
    }

    async fn record_break_glass(
        &self,
        patient: &PatientId,
        user: &str,
        role: &str,
        reason: &str,
        from: Timestamp,
        until: Timestamp,
    ) -> Result<BreakGlass, StoreError> {
        let (patient, user, role, reason) = (
            patient.clone(),
            user.to_owned(),
            role.to_owned(),
            reason.to_owned(),
        );
        self.blocking(move |inner| {
            inner.write(|tx, _| {
                patient_pk(tx, &patient)?;
                tx.execute(
                    "INSERT INTO break_glass(user, role, patient, reason, t_from, t_until) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![user, role, patient.as_str(), reason, from.0, until.0],
                )?;
                Ok(BreakGlass {
                    id: tx.last_insert_rowid(),
                    user,
                    role,
                    patient: patient.as_str().to_owned(),
                    reason,
                    from,
                    until,
                })
            })
        })
        .await
    }

    async fn break_glass_log(
        &self,
        patient: Option<&PatientId>,
        limit: usize,
    ) -> Result<Vec<BreakGlass>, StoreError> {
        let patient = patient.map(|p| p.as_str().to_owned());
        self.blocking(move |inner| {
            inner.read(|c| {
                let mut s = c.prepare_cached(
                    "SELECT id, user, role, patient, reason, t_from, t_until FROM break_glass
                     WHERE ?1 IS NULL OR patient = ?1 ORDER BY id DESC LIMIT ?2",
                )?;
                let rows = s.query_map(
                    params![patient, i64::try_from(limit).unwrap_or(i64::MAX)],
                    break_glass_row,
                )?;
                rows.collect::<Result<_, _>>().map_err(Into::into)
            })
        })
        .await
    }

    async fn break_glass_patients(
        &self,
        user: &str,
        now: Timestamp,
    ) -> Result<Vec<PatientId>, StoreError> {
        let user = user.to_owned();
        self.blocking(move |inner| {
            inner.read(|c| {
                let mut s = c.prepare_cached(
                    "SELECT DISTINCT patient FROM break_glass WHERE user = ?1 AND t_from <= ?2 AND t_until > ?2",
                )?;
                let rows = s.query_map(params![user, now.0], |r| r.get::<_, String>(0))?;
                let mut out = Vec::new();
                for row in rows {
                    if let Ok(p) = PatientId::new(row?) {
                        out.push(p);
                    }
                }
                Ok(out)
            })
        })
        .await
    }

    async fn revoke_device(
        &self,
        device: &DeviceId,
        by: &str,
        now: Timestamp,
    ) -> Result<DeviceRevocation, StoreError> {
        let (device, by) = (device.clone(), by.to_owned());
        self.blocking(move |inner| {
            inner.write(|tx, cache| {
                if !cache.devices.contains_key(&device) {
                    return Err(StoreError::NotFound(format!("device {device}")));
                }
                let n = tx.execute(
                    "INSERT INTO device_revocation(device, revoked_by, revoked_at) VALUES (?1, ?2, ?3) ON CONFLICT(device) DO NOTHING",
                    params![device.as_str(), by, now.0],
                )?;
                if n == 0 {
                    return Err(StoreError::Conflict(format!("device {device} is already revoked")));
                }
                // The writer lock is held: no batch is attributed between the commit and this.
                cache.revoked.insert(device.clone());
                Ok(DeviceRevocation {
                    device,
                    revoked_by: by,
                    revoked_at: now,
                })
            })
        })
        .await
    }

    async fn device_revocations(&self) -> Result<Vec<DeviceRevocation>, StoreError> {
        self.blocking(|inner| {
            inner.read(|c| {
                let mut s = c.prepare_cached(
                    "SELECT device, revoked_by, revoked_at FROM device_revocation ORDER BY revoked_at, device",
                )?;
                let rows = s.query_map([], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?))
                })?;
                let mut out = Vec::new();
                for row in rows {
                    let (d, by, at) = row?;
                    out.push(DeviceRevocation {
                        device: DeviceId::new(d).map_err(|e| StoreError::Corrupt(e.to_string()))?,
                        revoked_by: by,
                        revoked_at: Timestamp(at),
                    });
                }
                Ok(out)
            })
        })
        .await
    }

    async fn export_readings(
        &self,
        patient: &PatientId,
        after: Option<ExportCursor>,
        max_groups: usize,
    ) -> Result<ReadingPage, StoreError> {
        let patient = patient.clone();
        self.blocking(move |inner| {
            let (pk, metrics) = {
                let cache = inner.cache.read().map_err(poisoned)?;
                let pk = cache
                    .patients
                    .get(&patient)
                    .copied()
                    .ok_or_else(|| StoreError::NotFound(format!("patient {patient}")))?;
                (pk, cache.metrics_by_id.clone())
            };
            inner.read(|c| export_page(c, &metrics, pk, after, max_groups))
        })
        .await
    }

    async fn erase_patient(
        &self,
        patient: &PatientId,
        by: &str,
        reason: &str,
        now: Timestamp,
    ) -> Result<Tombstone, StoreError> {
        check_name("user", by)?;
        if reason.trim().is_empty() || reason.len() > 2000 {
            return Err(StoreError::Invalid("reason must be 1 to 2000 bytes".into()));
        }
        let (patient, by, reason) = (patient.clone(), by.to_owned(), reason.to_owned());
        self.blocking(move |inner| {
            let t = inner.write(|tx, cache| {
                // Deleted cells and freed pages are overwritten with zeros, not left in free
                // pages; only for this transaction.
                tx.pragma_update(None, "secure_delete", true)?;
                let out = erase_tx(tx, cache, &patient, &by, &reason, now);
                tx.pragma_update(None, "secure_delete", false)?;
                out
            })?;
            // Copy the zeroed pages into the database file and empty the WAL, which may still
            // hold older page images. Best effort: a busy reader delays it to the next
            // automatic checkpoint.
            let _ = inner.read(|c| {
                c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
                    .map_err(StoreError::from)
            });
            Ok(t)
        })
        .await
    }

    async fn tombstones(&self) -> Result<Vec<Tombstone>, StoreError> {
        self.blocking(|inner| {
            inner.read(|c| {
                let mut s = c.prepare_cached(
                    "SELECT id, patient_hash, erased_by, erased_at, reason, counts FROM erasure ORDER BY id",
                )?;
                let rows = s.query_map([], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, i64>(3)?,
                        r.get::<_, String>(4)?,
                        r.get::<_, String>(5)?,
                    ))
                })?;
                let mut out = Vec::new();
                for row in rows {
                    let (id, patient_hash, erased_by, at, reason, counts) = row?;
                    out.push(Tombstone {
                        id,
                        patient_hash,
                        erased_by,
                        erased_at: Timestamp(at),
                        reason,
                        counts: serde_json::from_str(&counts)
                            .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                    });
                }
                Ok(out)
            })
        })
        .await
    }

    async fn sweep_retention(&self, cuts: RetentionCuts) -> Result<RetentionOutcome, StoreError> {
        self.blocking(move |inner| inner.write(|tx, _| sweep_tx(tx, cuts)))
            .await
    }

    async fn admin_users(&self) -> Result<Vec<String>, StoreError> {
        self.blocking(|inner| {
            inner.read(|c| {
                let now = Timestamp::now().0;
                let mut s = c.prepare_cached(
                    "SELECT DISTINCT name FROM api_token WHERE role = 'admin' AND revoked = 0 AND (expires IS NULL OR expires > ?1) ORDER BY name",
                )?;
                let rows = s.query_map([now], |r| r.get::<_, String>(0))?;
                rows.collect::<Result<_, _>>().map_err(Into::into)
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AlertSignal, AlertSource, CareTeam, Store};
    use vigil_model::Patient;

    const DAY_MS: i64 = 86_400_000;

    fn pid(s: &str) -> PatientId {
        PatientId::new(s).expect("id")
    }

    async fn with_patients(path: &std::path::Path, ids: &[&str]) -> SqliteStore {
        let s = SqliteStore::open(path).expect("open");
        for id in ids {
            s.upsert_patient(Patient {
                id: pid(id),
                name: None,
                birth_date: None,
            })
            .await
            .expect("patient");
        }
        s
    }

    #[tokio::test]
    async fn caregivers_listed_before_consent_existed_keep_access_as_consents() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("hub.db");
        let s = with_patients(&path, &["p1"]).await;
        let team = CareTeam {
            caregivers: vec!["carer".into()],
            ..Default::default()
        };
        s.set_care_team(&pid("p1"), team).await.expect("team");
        // On a database that has consents, the care team list grants nothing.
        let now = Timestamp::now();
        assert!(
            s.consented_patients("carer", now)
                .await
                .expect("q")
                .is_empty()
        );
        drop(s);
        // A database from before consents existed: the list becomes consents once.
        let c = Connection::open(&path).expect("raw");
        c.execute(
            "DELETE FROM privacy_meta WHERE key = 'caregivers_migrated'",
            [],
        )
        .expect("forget");
        drop(c);
        let s = SqliteStore::open(&path).expect("reopen");
        assert_eq!(
            s.consented_patients("carer", now).await.expect("q"),
            [pid("p1")]
        );
        let list = s.consents(&pid("p1")).await.expect("list");
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].granted_by, "care-team");
        drop(s);
        let s = SqliteStore::open(&path).expect("reopen");
        assert_eq!(s.consents(&pid("p1")).await.expect("list").len(), 1);
    }

    #[tokio::test]
    async fn a_consent_ends_when_it_expires_or_is_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = with_patients(&dir.path().join("hub.db"), &["p1"]).await;
        let now = Timestamp(1_800_000_000_000);
        let c = |expires| NewConsent {
            grantee: "carer".into(),
            scope: "read".into(),
            granted_by: "p1".into(),
            expires,
        };
        s.grant_consent(&pid("p1"), c(Some(now.saturating_add_millis(1000))), now)
            .await
            .expect("grant");
        assert_eq!(
            s.consented_patients("carer", now).await.expect("q").len(),
            1
        );
        let later = now.saturating_add_millis(2000);
        assert!(
            s.consented_patients("carer", later)
                .await
                .expect("q")
                .is_empty()
        );
        s.grant_consent(&pid("p1"), c(None), later)
            .await
            .expect("again");
        let list = s.consents(&pid("p1")).await.expect("list");
        assert_eq!(list.len(), 2);
        assert_eq!(list.iter().filter(|c| c.active_at(later)).count(), 1);
        assert!(matches!(
            s.grant_consent(&pid("nobody"), c(None), now).await,
            Err(StoreError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn erasure_lifts_the_transition_guard_only_for_itself() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("hub.db");
        let s = with_patients(&path, &["p1", "p2"]).await;
        let now = Timestamp::now();
        for p in ["p1", "p2"] {
            s.raise_alert(
                AlertSignal {
                    patient: pid(p),
                    rule_id: "glucose-low".into(),
                    severity: "critical".into(),
                    message: "low".into(),
                    value: Some(2.0),
                    time: now,
                    seen: now,
                    source: AlertSource::Hub,
                },
                now,
            )
            .await
            .expect("raise");
        }
        let t = s
            .erase_patient(&pid("p1"), "admin", "request", now)
            .await
            .expect("erase");
        assert_eq!((t.counts.alerts, t.counts.transitions), (1, 1));
        assert!(s.patient(&pid("p1")).await.expect("q").is_none());
        assert_eq!(s.alert_transitions(0, 100).await.expect("q").len(), 1);
        let c = Connection::open(&path).expect("raw");
        assert!(
            c.execute("DELETE FROM alert_transition", []).is_err(),
            "transitions stay append-only"
        );
        let tombs = s.tombstones().await.expect("tombstones");
        assert_eq!(tombs.len(), 1);
        assert_ne!(tombs[0].patient_hash, "p1");
    }

    #[tokio::test]
    async fn retention_deletes_each_kind_older_than_its_cut_and_keeps_a_straddling_hour() {
        use crate::{IncomingRecord, IngestBatch, NewNotification};
        use vigil_model::{Assignment, Device, DeviceKind, Metric, Reading, Record};
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("hub.db");
        let s = with_patients(&path, &["p1"]).await;
        let dev = DeviceId::new("d1").expect("id");
        s.upsert_device(Device {
            id: dev.clone(),
            kind: DeviceKind::Wearable,
            serial: None,
            mac: None,
            eui64: None,
            manufacturer: None,
            model: None,
            gateway: None,
        })
        .await
        .expect("device");
        s.assign(Assignment {
            device: dev.clone(),
            patient: pid("p1"),
            from: Timestamp(0),
            to: None,
        })
        .await
        .expect("assign");
        let hour = crate::sqlite::WINDOW_MS;
        // The cut falls in the middle of an hour window.
        let cut = Timestamp(1_800_000_000_000 / hour * hour + hour / 2);
        let hr: Metric = "8867-4".parse().expect("metric");
        let at = |ms: i64| Timestamp(cut.0 + ms);
        let mut records = Vec::new();
        // Two hours before the cut's hour: gone. The cut's hour holds one reading on each
        // side: kept whole. After it: kept.
        for (i, t) in [-2 * hour, -2 * hour + 1000, -60_000, 60_000, hour]
            .into_iter()
            .enumerate()
        {
            records.push(IncomingRecord {
                seq: i as u64 + 1,
                record: Ok(Record::Reading(Reading::quantity(
                    dev.clone(),
                    hr,
                    70.0,
                    at(t),
                ))),
            });
        }
        let batch = |after, records, hub_received| IngestBatch {
            gateway: "gw".into(),
            epoch: 1,
            after,
            records,
            hub_received,
            max_future_ms: 300_000,
        };
        let out = s
            .ingest(batch(0, records, at(2 * hour)))
            .await
            .expect("ingest");
        assert_eq!((out.stored, out.quarantined), (5, 0));
        let bad = vec![IncomingRecord {
            seq: 6,
            record: Err(("undecodable".into(), vec![1, 2, 3])),
        }];
        let out = s.ingest(batch(5, bad, at(-DAY_MS))).await.expect("ingest");
        assert_eq!(out.quarantined, 1);
        let signal = |t: Timestamp| AlertSignal {
            patient: pid("p1"),
            rule_id: format!("rule-{}", t.0),
            severity: "warning".into(),
            message: "m".into(),
            value: None,
            time: t,
            seen: t,
            source: AlertSource::Hub,
        };
        let old = s
            .raise_alert(signal(at(-DAY_MS)), at(-DAY_MS))
            .await
            .expect("raise");
        s.resolve_alert(old.alert.id, "dr", at(-DAY_MS), None)
            .await
            .expect("resolve");
        let open = s
            .raise_alert(signal(at(-DAY_MS + 1)), at(-DAY_MS))
            .await
            .expect("raise");
        let note = |alert| NewNotification {
            alert_id: alert,
            channel: "user".into(),
            target: "dr".into(),
            payload: serde_json::json!({}),
        };
        s.enqueue_notifications(
            vec![
                note(Some(old.alert.id)),
                note(Some(open.alert.id)),
                note(None),
            ],
            at(-DAY_MS),
        )
        .await
        .expect("enqueue");
        let queued = s.notifications(None, 10).await.expect("list");
        let report = queued
            .iter()
            .find(|n| n.alert_id.is_none())
            .expect("report");
        s.notification_delivered(report.id)
            .await
            .expect("delivered");

        let all = RetentionCuts {
            readings: Some(cut),
            events: Some(cut),
            alerts: Some(cut),
            quarantine: Some(cut),
            notifications: Some(cut),
        };
        let swept = s.sweep_retention(all).await.expect("sweep");
        assert_eq!((swept.chunks, swept.readings), (1, 2), "{swept:?}");
        assert_eq!((swept.alerts, swept.transitions), (1, 2), "{swept:?}");
        assert_eq!(swept.notifications, 2, "{swept:?}");
        assert_eq!(swept.quarantine, 1, "{swept:?}");
        assert_eq!(swept.latest, 0, "the newest reading is after the cut");
        let left = s
            .readings(crate::ReadingQuery {
                patient: pid("p1"),
                metric: None,
                from: None,
                to: None,
                limit: 100,
                descending: false,
            })
            .await
            .expect("readings");
        let times: Vec<i64> = left.iter().map(|r| r.time.0 - cut.0).collect();
        assert_eq!(times, [-60_000, 60_000, hour]);
        assert!(s.alert(old.alert.id).await.expect("q").is_none());
        assert!(
            s.alert(open.alert.id).await.expect("q").is_some(),
            "active alerts stay"
        );
        // The deleted alert's notification went with it, the delivered one by age; the
        // pending one of the active alert stays.
        let notes = s.notifications(None, 10).await.expect("list");
        assert_eq!(notes.len(), 1);
        assert_eq!(notes[0].alert_id, Some(open.alert.id));
        assert!(s.quarantine(10, false).await.expect("q").is_empty());
        // A second sweep finds nothing.
        assert!(s.sweep_retention(all).await.expect("sweep").is_empty());
        let c = Connection::open(&path).expect("raw");
        assert!(c.execute("DELETE FROM alert_transition", []).is_err());
    }
}

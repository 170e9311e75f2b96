//! SQL of alerts, care teams and notifications for the SQLite backend.

use crate::StoreError;
use crate::alert::{
    Alert, AlertFilter, AlertSignal, AlertSource, AlertStatus, AlertTransition, CareTeam,
    NewNotification, Notification, Raised,
};
use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OptionalExtension, Row, params, params_from_iter};
use vigil_model::{PatientId, Timestamp};

pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS alert(id INTEGER PRIMARY KEY, patient TEXT NOT NULL, rule_id TEXT NOT NULL, severity TEXT NOT NULL, message TEXT NOT NULL, value REAL, source TEXT NOT NULL, status TEXT NOT NULL, opened_at INTEGER NOT NULL, last_seen INTEGER NOT NULL, created INTEGER NOT NULL, ack_by TEXT, ack_at INTEGER, silence_until INTEGER, resolved_by TEXT, resolved_at INTEGER, note TEXT, level INTEGER NOT NULL DEFAULT 0, escalated_at INTEGER);
CREATE UNIQUE INDEX IF NOT EXISTS alert_active ON alert(patient, rule_id) WHERE status != 'resolved';
CREATE INDEX IF NOT EXISTS alert_status ON alert(status, id);
CREATE INDEX IF NOT EXISTS alert_patient_rule ON alert(patient, rule_id, opened_at);
CREATE TABLE IF NOT EXISTS alert_transition(id INTEGER PRIMARY KEY AUTOINCREMENT, alert INTEGER NOT NULL, from_status TEXT, to_status TEXT NOT NULL, actor TEXT NOT NULL, t INTEGER NOT NULL, note TEXT, level INTEGER NOT NULL);
CREATE TRIGGER IF NOT EXISTS alert_transition_no_update BEFORE UPDATE ON alert_transition BEGIN SELECT RAISE(ABORT, 'alert transitions are append-only'); END;
CREATE TRIGGER IF NOT EXISTS alert_transition_no_delete BEFORE DELETE ON alert_transition BEGIN SELECT RAISE(ABORT, 'alert transitions are append-only'); END;
CREATE TABLE IF NOT EXISTS care_team(patient TEXT NOT NULL, role TEXT NOT NULL, pos INTEGER NOT NULL, user TEXT NOT NULL, PRIMARY KEY(patient, role, pos)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS on_call(pos INTEGER PRIMARY KEY, user TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS notification(id INTEGER PRIMARY KEY, alert INTEGER, channel TEXT NOT NULL, target TEXT NOT NULL, payload TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, next_attempt_at INTEGER NOT NULL, status TEXT NOT NULL DEFAULT 'pending', last_error TEXT, created INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS notification_due ON notification(status, next_attempt_at);
CREATE TABLE IF NOT EXISTS rule_settings(patient TEXT PRIMARY KEY, body TEXT NOT NULL, updated INTEGER NOT NULL) WITHOUT ROWID;
";

const ALERT_COLS: &str = "id, patient, rule_id, severity, message, value, source, status, opened_at, last_seen, created, ack_by, ack_at, silence_until, resolved_by, resolved_at, note, level, escalated_at";

fn corrupt(what: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        0,
        rusqlite::types::Type::Text,
        format!("invalid stored {what}").into(),
    )
}

fn status_of(s: &str) -> Result<AlertStatus, rusqlite::Error> {
    AlertStatus::parse(s).ok_or_else(|| corrupt("alert status"))
}

fn alert_row(r: &Row<'_>) -> Result<Alert, rusqlite::Error> {
    let ts = |i: usize| r.get::<_, Option<i64>>(i).map(|v| v.map(Timestamp));
    Ok(Alert {
        id: r.get(0)?,
        patient: PatientId::new(r.get::<_, String>(1)?).map_err(|_| corrupt("patient id"))?,
        rule_id: r.get(2)?,
        severity: r.get(3)?,
        message: r.get(4)?,
        value: r.get(5)?,
        source: AlertSource::parse(&r.get::<_, String>(6)?)
            .ok_or_else(|| corrupt("alert source"))?,
        status: status_of(&r.get::<_, String>(7)?)?,
        opened_at: Timestamp(r.get(8)?),
        last_seen: Timestamp(r.get(9)?),
        created: Timestamp(r.get(10)?),
        acknowledged_by: r.get(11)?,
        acknowledged_at: ts(12)?,
        silence_until: ts(13)?,
        resolved_by: r.get(14)?,
        resolved_at: ts(15)?,
        note: r.get(16)?,
        escalation_level: r.get(17)?,
        escalated_at: ts(18)?,
    })
}

const TRANSITION_SELECT: &str = "SELECT t.id, t.alert, a.patient, a.rule_id, t.from_status, t.to_status, t.actor, t.t, t.note, t.level FROM alert_transition t JOIN alert a ON a.id = t.alert";

fn transition_row(r: &Row<'_>) -> Result<AlertTransition, rusqlite::Error> {
    Ok(AlertTransition {
        id: r.get(0)?,
        alert_id: r.get(1)?,
        patient: PatientId::new(r.get::<_, String>(2)?).map_err(|_| corrupt("patient id"))?,
        rule_id: r.get(3)?,
        from: r
            .get::<_, Option<String>>(4)?
            .map(|s| status_of(&s))
            .transpose()?,
        to: status_of(&r.get::<_, String>(5)?)?,
        actor: r.get(6)?,
        time: Timestamp(r.get(7)?),
        note: r.get(8)?,
        escalation_level: r.get(9)?,
    })
}

fn severity_rank(s: &str) -> u8 {
    match s {
        "critical" => 3,
        "warning" => 2,
        "info" => 1,
        _ => 0,
    }
}

pub(crate) fn get_alert(c: &Connection, id: i64) -> Result<Option<Alert>, StoreError> {
    c.prepare_cached(&format!("SELECT {ALERT_COLS} FROM alert WHERE id = ?1"))?
        .query_row([id], alert_row)
        .optional()
        .map_err(Into::into)
}

fn must_alert(c: &Connection, id: i64) -> Result<Alert, StoreError> {
    get_alert(c, id)?.ok_or_else(|| StoreError::NotFound(format!("alert {id}")))
}

fn get_transition(c: &Connection, id: i64) -> Result<AlertTransition, StoreError> {
    c.prepare_cached(&format!("{TRANSITION_SELECT} WHERE t.id = ?1"))?
        .query_row([id], transition_row)
        .map_err(Into::into)
}

fn add_transition(
    c: &Connection,
    alert: i64,
    (from, to): (Option<AlertStatus>, AlertStatus),
    actor: &str,
    at: Timestamp,
    note: Option<&str>,
    level: u32,
) -> Result<AlertTransition, StoreError> {
    c.execute(
        "INSERT INTO alert_transition(alert, from_status, to_status, actor, t, note, level) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![alert, from.map(AlertStatus::as_str), to.as_str(), actor, at.0, note, level],
    )?;
    get_transition(c, c.last_insert_rowid())
}

pub(crate) fn raise(c: &Connection, s: &AlertSignal, now: Timestamp) -> Result<Raised, StoreError> {
    if s.rule_id.is_empty() || s.rule_id.len() > 128 {
        return Err(StoreError::Invalid(
            "rule id must be 1 to 128 bytes".to_owned(),
        ));
    }
    let seen = s.seen.max(s.time);
    let active: Option<Alert> = c
        .prepare_cached(&format!(
            "SELECT {ALERT_COLS} FROM alert WHERE patient = ?1 AND rule_id = ?2 AND status != 'resolved'"
        ))?
        .query_row(params![s.patient.as_str(), s.rule_id], alert_row)
        .optional()?;
    if let Some(a) = active {
        let newer = seen >= a.last_seen;
        let severity = if severity_rank(&s.severity) > severity_rank(&a.severity) {
            s.severity.clone()
        } else {
            a.severity.clone()
        };
        let (message, value) = if newer {
            (s.message.clone(), s.value)
        } else {
            (a.message.clone(), a.value)
        };
        let (opened_at, source) = if s.time < a.opened_at {
            (s.time, s.source)
        } else {
            (a.opened_at, a.source)
        };
        c.execute(
            "UPDATE alert SET severity = ?2, message = ?3, value = ?4, opened_at = ?5, source = ?6, last_seen = max(last_seen, ?7) WHERE id = ?1",
            params![a.id, severity, message, value, opened_at.0, source.as_str(), seen.0],
        )?;
        return Ok(Raised {
            alert: must_alert(c, a.id)?,
            opened: None,
        });
    }
    // A signal from within a resolved alert's span (an edge alert synced after the hub saw
    // and resolved the same condition) belongs to that alert.
    let covering: Option<Alert> = c
        .prepare_cached(&format!(
            "SELECT {ALERT_COLS} FROM alert WHERE patient = ?1 AND rule_id = ?2 AND status = 'resolved' AND opened_at <= ?3 AND resolved_at >= ?3 ORDER BY id DESC LIMIT 1"
        ))?
        .query_row(params![s.patient.as_str(), s.rule_id, s.time.0], alert_row)
        .optional()?;
    if let Some(a) = covering {
        return Ok(Raised {
            alert: a,
            opened: None,
        });
    }
    c.execute(
        "INSERT INTO alert(patient, rule_id, severity, message, value, source, status, opened_at, last_seen, created) VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'open', ?7, ?8, ?9)",
        params![s.patient.as_str(), s.rule_id, s.severity, s.message, s.value, s.source.as_str(), s.time.0, seen.0, now.0],
    )?;
    let id = c.last_insert_rowid();
    let actor = match s.source {
        AlertSource::Hub => "system",
        AlertSource::Edge => "edge",
    };
    let t = add_transition(c, id, (None, AlertStatus::Open), actor, s.time, None, 0)?;
    Ok(Raised {
        alert: must_alert(c, id)?,
        opened: Some(t),
    })
}

pub(crate) fn list(c: &Connection, f: &AlertFilter) -> Result<Vec<Alert>, StoreError> {
    let mut sql = format!("SELECT {ALERT_COLS} FROM alert WHERE 1 = 1");
    let mut args: Vec<SqlValue> = Vec::new();
    if let Some(st) = f.status {
        sql.push_str(" AND status = ?");
        args.push(SqlValue::Text(st.as_str().to_owned()));
    } else if f.active {
        sql.push_str(" AND status != 'resolved'");
    }
    if let Some(p) = &f.patient {
        sql.push_str(" AND patient = ?");
        args.push(SqlValue::Text(p.as_str().to_owned()));
    }
    sql.push_str(" ORDER BY id DESC LIMIT ?");
    args.push(SqlValue::Integer(
        i64::try_from(f.limit.max(1)).unwrap_or(i64::MAX),
    ));
    let mut s = c.prepare(&sql)?;
    let rows = s.query_map(params_from_iter(args), alert_row)?;
    rows.collect::<Result<_, _>>().map_err(Into::into)
}

pub(crate) fn acknowledge(
    c: &Connection,
    id: i64,
    actor: &str,
    at: Timestamp,
    silence_until: Option<Timestamp>,
) -> Result<(Alert, AlertTransition), StoreError> {
    let a = must_alert(c, id)?;
    if !a.status.is_active() {
        return Err(StoreError::Conflict(format!("alert {id} is resolved")));
    }
    c.execute(
        "UPDATE alert SET status = 'acknowledged', ack_by = ?2, ack_at = ?3, silence_until = ?4 WHERE id = ?1",
        params![id, actor, at.0, silence_until.map(|t| t.0)],
    )?;
    let t = add_transition(
        c,
        id,
        (Some(a.status), AlertStatus::Acknowledged),
        actor,
        at,
        None,
        a.escalation_level,
    )?;
    Ok((must_alert(c, id)?, t))
}

pub(crate) fn resolve(
    c: &Connection,
    id: i64,
    actor: &str,
    at: Timestamp,
    note: Option<&str>,
) -> Result<(Alert, AlertTransition), StoreError> {
    let a = must_alert(c, id)?;
    if !a.status.is_active() {
        return Err(StoreError::Conflict(format!(
            "alert {id} is already resolved"
        )));
    }
    c.execute(
        "UPDATE alert SET status = 'resolved', resolved_by = ?2, resolved_at = ?3, note = ?4 WHERE id = ?1",
        params![id, actor, at.0, note],
    )?;
    let t = add_transition(
        c,
        id,
        (Some(a.status), AlertStatus::Resolved),
        actor,
        at,
        note,
        a.escalation_level,
    )?;
    Ok((must_alert(c, id)?, t))
}

pub(crate) fn escalate(
    c: &Connection,
    id: i64,
    level: u32,
    at: Timestamp,
) -> Result<(Alert, AlertTransition), StoreError> {
    let a = must_alert(c, id)?;
    if !matches!(a.status, AlertStatus::Open | AlertStatus::Escalated) {
        return Err(StoreError::Conflict(format!(
            "alert {id} is {}",
            a.status.as_str()
        )));
    }
    c.execute(
        "UPDATE alert SET status = 'escalated', level = ?2, escalated_at = ?3 WHERE id = ?1",
        params![id, level, at.0],
    )?;
    let t = add_transition(
        c,
        id,
        (Some(a.status), AlertStatus::Escalated),
        "system",
        at,
        None,
        level,
    )?;
    Ok((must_alert(c, id)?, t))
}

pub(crate) fn reopen(
    c: &Connection,
    id: i64,
    at: Timestamp,
) -> Result<(Alert, AlertTransition), StoreError> {
    let a = must_alert(c, id)?;
    if a.status != AlertStatus::Acknowledged {
        return Err(StoreError::Conflict(format!(
            "alert {id} is {}",
            a.status.as_str()
        )));
    }
    c.execute(
        "UPDATE alert SET status = 'open', level = 0, escalated_at = ?2, silence_until = NULL WHERE id = ?1",
        params![id, at.0],
    )?;
    let t = add_transition(
        c,
        id,
        (Some(a.status), AlertStatus::Open),
        "system",
        at,
        Some("silence expired"),
        0,
    )?;
    Ok((must_alert(c, id)?, t))
}

pub(crate) fn mark_notified(c: &Connection, id: i64, at: Timestamp) -> Result<(), StoreError> {
    if c.execute(
        "UPDATE alert SET escalated_at = ?2 WHERE id = ?1",
        params![id, at.0],
    )? == 0
    {
        return Err(StoreError::NotFound(format!("alert {id}")));
    }
    Ok(())
}

pub(crate) fn transitions(
    c: &Connection,
    after: i64,
    limit: usize,
) -> Result<Vec<AlertTransition>, StoreError> {
    let mut s = c.prepare_cached(&format!(
        "{TRANSITION_SELECT} WHERE t.id > ?1 ORDER BY t.id LIMIT ?2"
    ))?;
    let rows = s.query_map(
        params![after, i64::try_from(limit).unwrap_or(i64::MAX)],
        transition_row,
    )?;
    rows.collect::<Result<_, _>>().map_err(Into::into)
}

pub(crate) fn latest_transition_id(c: &Connection) -> Result<i64, StoreError> {
    c.query_row(
        "SELECT coalesce(max(id), 0) FROM alert_transition",
        [],
        |r| r.get(0),
    )
    .map_err(Into::into)
}

pub(crate) fn transitions_of(
    c: &Connection,
    alert: i64,
) -> Result<Vec<AlertTransition>, StoreError> {
    let mut s = c.prepare_cached(&format!(
        "{TRANSITION_SELECT} WHERE t.alert = ?1 ORDER BY t.id"
    ))?;
    let rows = s.query_map([alert], transition_row)?;
    rows.collect::<Result<_, _>>().map_err(Into::into)
}

const ROLES: [&str; 3] = ["primary", "backup", "caregiver"];

fn check_user(u: &str) -> Result<(), StoreError> {
    if u.trim().is_empty() || u.len() > 128 {
        return Err(StoreError::Invalid(
            "user names must be 1 to 128 bytes".to_owned(),
        ));
    }
    Ok(())
}

pub(crate) fn set_care_team(
    c: &Connection,
    patient: &PatientId,
    team: &CareTeam,
) -> Result<(), StoreError> {
    let exists: Option<i64> = c
        .query_row(
            "SELECT pk FROM patient WHERE id = ?1",
            [patient.as_str()],
            |r| r.get(0),
        )
        .optional()?;
    if exists.is_none() {
        return Err(StoreError::NotFound(format!("patient {patient}")));
    }
    c.execute(
        "DELETE FROM care_team WHERE patient = ?1",
        [patient.as_str()],
    )?;
    for (role, users) in ROLES
        .iter()
        .zip([&team.primary, &team.backup, &team.caregivers])
    {
        for (pos, u) in users.iter().enumerate() {
            check_user(u)?;
            c.execute(
                "INSERT OR IGNORE INTO care_team(patient, role, pos, user) VALUES (?1, ?2, ?3, ?4)",
                params![
                    patient.as_str(),
                    role,
                    i64::try_from(pos).unwrap_or(i64::MAX),
                    u
                ],
            )?;
        }
    }
    Ok(())
}

pub(crate) fn set_rule_settings(
    c: &Connection,
    patient: &PatientId,
    settings: &serde_json::Value,
    now: Timestamp,
) -> Result<(), StoreError> {
    let exists: Option<i64> = c
        .query_row(
            "SELECT pk FROM patient WHERE id = ?1",
            [patient.as_str()],
            |r| r.get(0),
        )
        .optional()?;
    if exists.is_none() {
        return Err(StoreError::NotFound(format!("patient {patient}")));
    }
    let body = serde_json::to_string(settings).map_err(|e| StoreError::Invalid(e.to_string()))?;
    c.execute(
        "INSERT INTO rule_settings(patient, body, updated) VALUES (?1, ?2, ?3) \
         ON CONFLICT(patient) DO UPDATE SET body = excluded.body, updated = excluded.updated",
        params![patient.as_str(), body, now.0],
    )?;
    Ok(())
}

fn settings_of(body: &str) -> Result<serde_json::Value, StoreError> {
    serde_json::from_str(body).map_err(|_| StoreError::Corrupt("rule settings".into()))
}

pub(crate) fn rule_settings(
    c: &Connection,
    patient: &PatientId,
) -> Result<Option<serde_json::Value>, StoreError> {
    let body: Option<String> = c
        .query_row(
            "SELECT body FROM rule_settings WHERE patient = ?1",
            [patient.as_str()],
            |r| r.get(0),
        )
        .optional()?;
    body.as_deref().map(settings_of).transpose()
}

pub(crate) fn all_rule_settings(
    c: &Connection,
) -> Result<Vec<(PatientId, serde_json::Value)>, StoreError> {
    let mut s = c.prepare_cached("SELECT patient, body FROM rule_settings ORDER BY patient")?;
    let rows = s.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
    let mut out = Vec::new();
    for row in rows {
        let (p, body) = row?;
        let p =
            PatientId::new(p).map_err(|_| StoreError::Corrupt("rule settings patient".into()))?;
        out.push((p, settings_of(&body)?));
    }
    Ok(out)
}

pub(crate) fn care_team(c: &Connection, patient: &PatientId) -> Result<CareTeam, StoreError> {
    let mut s =
        c.prepare_cached("SELECT role, user FROM care_team WHERE patient = ?1 ORDER BY role, pos")?;
    let rows = s.query_map([patient.as_str()], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
    })?;
    let mut team = CareTeam::default();
    for row in rows {
        let (role, user) = row?;
        match role.as_str() {
            "primary" => team.primary.push(user),
            "backup" => team.backup.push(user),
            _ => team.caregivers.push(user),
        }
    }
    Ok(team)
}

pub(crate) fn set_on_call(c: &Connection, users: &[String]) -> Result<(), StoreError> {
    c.execute("DELETE FROM on_call", [])?;
    for (pos, u) in users.iter().enumerate() {
        check_user(u)?;
        c.execute(
            "INSERT INTO on_call(pos, user) VALUES (?1, ?2)",
            params![i64::try_from(pos).unwrap_or(i64::MAX), u],
        )?;
    }
    Ok(())
}

pub(crate) fn on_call(c: &Connection) -> Result<Vec<String>, StoreError> {
    let mut s = c.prepare_cached("SELECT user FROM on_call ORDER BY pos")?;
    let rows = s.query_map([], |r| r.get::<_, String>(0))?;
    rows.collect::<Result<_, _>>().map_err(Into::into)
}

const NOTIFICATION_COLS: &str =
    "id, alert, channel, target, payload, attempts, next_attempt_at, status, last_error, created";

fn notification_row(r: &Row<'_>) -> Result<Notification, rusqlite::Error> {
    let payload: String = r.get(4)?;
    Ok(Notification {
        id: r.get(0)?,
        alert_id: r.get(1)?,
        channel: r.get(2)?,
        target: r.get(3)?,
        payload: serde_json::from_str(&payload).map_err(|_| corrupt("notification payload"))?,
        attempts: r.get(5)?,
        next_attempt_at: Timestamp(r.get(6)?),
        status: r.get(7)?,
        last_error: r.get(8)?,
        created: Timestamp(r.get(9)?),
    })
}

pub(crate) fn enqueue(
    c: &Connection,
    list: &[NewNotification],
    at: Timestamp,
) -> Result<(), StoreError> {
    for n in list {
        c.execute(
            "INSERT INTO notification(alert, channel, target, payload, next_attempt_at, created) VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
            params![n.alert_id, n.channel, n.target, n.payload.to_string(), at.0],
        )?;
    }
    Ok(())
}

pub(crate) fn due(
    c: &Connection,
    now: Timestamp,
    limit: usize,
) -> Result<Vec<Notification>, StoreError> {
    let mut s = c.prepare_cached(&format!(
        "SELECT {NOTIFICATION_COLS} FROM notification WHERE status = 'pending' AND next_attempt_at <= ?1 ORDER BY next_attempt_at, id LIMIT ?2"
    ))?;
    let rows = s.query_map(
        params![now.0, i64::try_from(limit).unwrap_or(i64::MAX)],
        notification_row,
    )?;
    rows.collect::<Result<_, _>>().map_err(Into::into)
}

pub(crate) fn delivered(c: &Connection, id: i64) -> Result<(), StoreError> {
    if c.execute(
        "UPDATE notification SET status = 'delivered', attempts = attempts + 1, last_error = NULL WHERE id = ?1",
        [id],
    )? == 0
    {
        return Err(StoreError::NotFound(format!("notification {id}")));
    }
    Ok(())
}

pub(crate) fn failed(
    c: &Connection,
    id: i64,
    error: &str,
    retry_at: Option<Timestamp>,
) -> Result<(), StoreError> {
    let n = match retry_at {
        Some(t) => c.execute(
            "UPDATE notification SET attempts = attempts + 1, last_error = ?2, next_attempt_at = ?3 WHERE id = ?1",
            params![id, error, t.0],
        )?,
        None => c.execute(
            "UPDATE notification SET attempts = attempts + 1, last_error = ?2, status = 'dead' WHERE id = ?1",
            params![id, error],
        )?,
    };
    if n == 0 {
        return Err(StoreError::NotFound(format!("notification {id}")));
    }
    Ok(())
}

pub(crate) fn notifications(
    c: &Connection,
    status: Option<&str>,
    limit: usize,
) -> Result<Vec<Notification>, StoreError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut s = c.prepare_cached(&format!(
        "SELECT {NOTIFICATION_COLS} FROM notification WHERE ?1 IS NULL OR status = ?1 ORDER BY id DESC LIMIT ?2"
    ))?;
    let rows = s.query_map(params![status, limit], notification_row)?;
    rows.collect::<Result<_, _>>().map_err(Into::into)
}

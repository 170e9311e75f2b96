//! The tamper-evident audit log end to end: a real hub records who read or wrote which
//! patient's data, from where and why, denied attempts included; `vigil audit verify` passes on
//! the untouched log and names the first bad entry after an attacker edits the database file
//! directly (triggers dropped): a changed field, a deleted middle entry, deleted last entries,
//! two entries swapped, an entry appended with a correct chain hash but no key.

use crate::harness::{self, Site};
use reqwest::{Method, StatusCode};
use rusqlite::{Connection, params};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use vigil_model::{DeviceId, Metric, Reading, Record, Source, Timestamp};
use vigil_store::audit::{NewAuditEntry, entry_hash};

async fn send(
    c: &reqwest::Client,
    method: Method,
    url: String,
    token: &str,
    purpose: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = c.request(method, url).bearer_auth(token);
    if let Some(p) = purpose {
        req = req.header("X-Purpose-Of-Use", p);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.expect("hub reachable");
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn verify(dir: &Path) -> (i32, String, String) {
    let out = harness::vigil()
        .args(["--log", "warn", "audit", "verify", "--data-dir"])
        .arg(dir)
        .output()
        .expect("run vigil audit verify");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A copy of the hub's database, audit key and checkpoint, for one attack.
fn copy_site(from: &Path) -> tempfile::TempDir {
    let to = tempfile::tempdir().expect("tmp");
    for f in ["hub.db", "hub.db-audit.key", "hub.db-audit.head"] {
        std::fs::copy(from.join(f), to.path().join(f)).expect("copy");
    }
    to
}

/// Opens the copied database as an attacker would: without the append-only triggers.
fn attacker(dir: &Path) -> Connection {
    let c = Connection::open(dir.join("hub.db")).expect("open db");
    c.execute_batch("DROP TRIGGER audit_no_update; DROP TRIGGER audit_no_delete;")
        .expect("drop triggers");
    c
}

fn assert_detected(dir: &Path, seq: u64, what: &str) {
    let (code, stdout, stderr) = verify(dir);
    assert_eq!(code, 1, "{what} not detected: {stdout} {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line on stderr: {stderr}");
    assert!(
        lines[0].contains(&format!("entry {seq} ")),
        "{what}: the first bad entry is {seq}: {stderr}"
    );
}

fn glucose(device: &str, v: f64, t: Timestamp) -> Record {
    let metric: Metric = "2339-0".parse().expect("glucose");
    let mut r = Reading::quantity(DeviceId::new(device).expect("id"), metric, v, t);
    r.source = Source::Manual;
    Record::Reading(r)
}

fn python_validator() -> (String, PathBuf) {
    let python = std::env::var("VIGIL_PYTHON").unwrap_or_else(|_| {
        panic!(
            "VIGIL_PYTHON is not set: run ./scripts/test, which prepares the fhir.resources \
             validator and names its python"
        )
    });
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../vigil-fhir/tests/validate.py");
    (python, script)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_access_is_audited_and_any_change_to_the_log_is_detected() {
    let site = Site::new();
    let hub = harness::spawn_hub(&site.hub_dir(), "127.0.0.1:0");
    let u = hub.url.clone();
    let c = harness::client();
    let admin = site.admin.clone();
    for (p, d, team) in [
        ("pat-a", "dev-a", json!({"primary": ["dr-in"]})),
        ("pat-b", "dev-b", json!({"primary": ["dr-b"]})),
    ] {
        for (path, body) in [
            ("patients", json!({"id": p})),
            ("devices", json!({"id": d, "kind": "wearable"})),
            (
                "assignments",
                json!({"device": d, "patient": p, "from": "2000-01-01T00:00:00Z"}),
            ),
        ] {
            let (s, v) = send(
                &c,
                Method::POST,
                format!("{u}/api/v1/{path}"),
                &admin,
                None,
                Some(body),
            )
            .await;
            assert_eq!(s, StatusCode::CREATED, "{v}");
        }
        let (s, v) = send(
            &c,
            Method::PUT,
            format!("{u}/api/v1/patients/{p}/care-team"),
            &admin,
            None,
            Some(team),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    let dr = site.token("dr-in", "clinician");

    // A read in scope, for emergency treatment; a read outside the care team (IDOR); a
    // purpose the hub does not know; a list.
    let (s, _) = send(
        &c,
        Method::GET,
        format!("{u}/api/v1/patients/pat-a"),
        &dr,
        Some("emergency"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = send(
        &c,
        Method::GET,
        format!("{u}/api/v1/patients/pat-b/readings"),
        &dr,
        None,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, v) = send(
        &c,
        Method::GET,
        format!("{u}/api/v1/patients/pat-a"),
        &dr,
        Some("curiosity"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(v["code"], "invalid_purpose");
    let (s, _) = send(
        &c,
        Method::GET,
        format!("{u}/api/v1/patients"),
        &dr,
        None,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    // The audit log is for administrators.
    let (s, _) = send(
        &c,
        Method::GET,
        format!("{u}/api/v1/audit"),
        &dr,
        None,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    // Gateway ingest: one entry per batch with its record count, not one per reading.
    let gw = harness::spawn_gateway(&u, &site.gateway_token_file, &site.outbox(), 1000);
    let t = Timestamp::now().saturating_add_millis(-60_000);
    let readings: Vec<Record> = (0..5)
        .map(|i| {
            glucose(
                "dev-a",
                100.0 + f64::from(i),
                t.saturating_add_millis(i64::from(i) * 1000),
            )
        })
        .collect();
    harness::feed(&c, &gw.url, &readings).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let ingested = loop {
        let (s, v) = send(
            &c,
            Method::GET,
            format!("{u}/api/v1/audit?limit=10000"),
            &admin,
            None,
            None,
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let batches: Vec<Value> = v["entries"]
            .as_array()
            .expect("entries")
            .iter()
            .filter(|e| e["role"] == "gateway")
            .cloned()
            .collect();
        let records: u64 = batches
            .iter()
            .map(|e| {
                e["detail"]
                    .as_str()
                    .and_then(|d| d.strip_prefix("records="))
                    .and_then(|n| n.parse::<u64>().ok())
                    .expect("records=N")
            })
            .sum();
        if records >= 5 {
            break batches;
        }
        assert!(
            Instant::now() < deadline,
            "the batch is audited in time: {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    drop(gw);
    assert!(ingested.len() <= 5, "one entry per batch: {ingested:?}");
    for e in &ingested {
        assert_eq!(e["actor"], "gw-test");
        assert_eq!(e["patient"], "*");
        assert_eq!(e["action"], "create");
        assert_eq!(e["resource"], "POST /api/v1/ingest");
        assert_eq!(e["outcome"], 200);
    }

    let (s, v) = send(
        &c,
        Method::GET,
        format!("{u}/api/v1/audit?patient=pat-a"),
        &admin,
        None,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let a = v["entries"].as_array().expect("entries");
    let read = a
        .iter()
        .find(|e| e["actor"] == "dr-in" && e["action"] == "read")
        .unwrap_or_else(|| panic!("dr-in's read of pat-a is audited: {v}"));
    assert_eq!(read["role"], "clinician");
    assert_eq!(read["resource"], "GET /api/v1/patients/pat-a");
    assert_eq!(read["source"], "127.0.0.1");
    assert_eq!(read["purpose"], "ETREAT");
    assert_eq!(read["outcome"], 200);
    // The admin's creation of the patient is a write.
    assert!(
        a.iter()
            .any(|e| e["actor"] == "test-admin" && e["action"] == "create"),
        "{v}"
    );
    // The request with an unknown purpose was refused before it touched anything.
    assert_eq!(a.iter().filter(|e| e["actor"] == "dr-in").count(), 1, "{v}");

    let (_, v) = send(
        &c,
        Method::GET,
        format!("{u}/api/v1/audit?patient=pat-b"),
        &admin,
        None,
        None,
    )
    .await;
    let denied = v["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .find(|e| e["actor"] == "dr-in")
        .unwrap_or_else(|| panic!("the denied attempt on pat-b is audited: {v}"))
        .clone();
    assert_eq!(denied["outcome"], 404);
    assert_eq!(denied["resource"], "GET /api/v1/patients/pat-b/readings");
    assert_eq!(denied["purpose"], "TREAT");
    let denied_seq = denied["seq"].as_u64().expect("seq");

    let (_, v) = send(
        &c,
        Method::GET,
        format!("{u}/api/v1/audit"),
        &admin,
        None,
        None,
    )
    .await;
    let list = v["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .find(|e| e["actor"] == "dr-in" && e["action"] == "search-type")
        .unwrap_or_else(|| panic!("dr-in's patient list is audited: {v}"));
    assert_eq!(list["patient"], "*");
    assert_eq!(list["detail"], "visible=1");
    let refused = v["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .find(|e| e["actor"] == "dr-in" && e["resource"] == "GET /api/v1/audit")
        .unwrap_or_else(|| panic!("dr-in's refused read of the audit log is audited: {v}"));
    assert_eq!(refused["outcome"], 403);

    // The same log over FHIR, and the patient-scoped search.
    let r = c
        .get(format!("{u}/fhir/r4/AuditEvent?patient=pat-b&_count=5"))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("fhir");
    assert_eq!(r.status(), 200);
    let bundle: Value = r.json().await.expect("bundle");
    assert_eq!(bundle["resourceType"], "Bundle");
    let ev = &bundle["entry"][0]["resource"];
    assert_eq!(ev["resourceType"], "AuditEvent");
    let r = c
        .get(format!("{u}/fhir/r4/AuditEvent"))
        .bearer_auth(&dr)
        .send()
        .await
        .expect("fhir");
    assert_eq!(r.status(), 403);
    let oo: Value = r.json().await.expect("outcome");
    assert_eq!(oo["resourceType"], "OperationOutcome");

    // Bad queries are clear errors: problem documents on the API, OperationOutcomes on FHIR.
    for (q, code) in [
        ("limit=0", "invalid_limit"),
        ("after=x", "invalid_query"),
        ("patient=bad%20id", "invalid_id"),
    ] {
        let (s, v) = send(
            &c,
            Method::GET,
            format!("{u}/api/v1/audit?{q}"),
            &admin,
            None,
            None,
        )
        .await;
        assert_eq!(
            (s, v["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some(code)),
            "{q}: {v}"
        );
    }
    for q in ["_count=0", "after=-1", "subtype=read"] {
        let r = c
            .get(format!("{u}/fhir/r4/AuditEvent?{q}"))
            .bearer_auth(&admin)
            .send()
            .await
            .expect("fhir");
        assert_eq!(r.status(), 400, "{q}");
        let oo: Value = r.json().await.expect("outcome");
        assert_eq!(oo["resourceType"], "OperationOutcome", "{q}");
    }

    // The untouched log verifies, while the hub runs.
    let dir = site.hub_dir();
    let (code, stdout, stderr) = verify(&dir);
    assert_eq!(code, 0, "{stderr}");
    let line = stdout.trim();
    assert!(
        line.starts_with("audit: ") && line.contains(" entries verified, head "),
        "{line}"
    );
    let n: u64 = line
        .trim_start_matches("audit: ")
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .expect("count");
    assert!(n > denied_seq, "{line}");

    // Export as FHIR AuditEvents, validated by fhir.resources.
    let export = tempfile::tempdir().expect("tmp");
    let ndjson = export.path().join("audit.ndjson");
    let out = harness::vigil()
        .args([
            "--log",
            "warn",
            "audit",
            "export",
            "--format",
            "fhir",
            "--data-dir",
        ])
        .arg(&dir)
        .arg("--output")
        .arg(&ndjson)
        .output()
        .expect("export");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&ndjson).expect("ndjson");
    let events: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON resource per line"))
        .collect();
    assert!(events.len() as u64 >= n, "{} of {n}", events.len());
    let resources = export.path().join("resources");
    std::fs::create_dir(&resources).expect("dir");
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["resourceType"], "AuditEvent");
        std::fs::write(resources.join(format!("audit-{i:04}.json")), e.to_string()).expect("write");
    }
    let denied_ev = events
        .iter()
        .find(|e| {
            e["outcomeDesc"]
                .as_str()
                .is_some_and(|d| d.contains(&format!("audit entry {denied_seq},")))
        })
        .expect("the denied attempt is exported");
    assert_eq!(denied_ev["outcome"], "4");
    assert_eq!(denied_ev["subtype"][0]["code"], "read");
    assert_eq!(denied_ev["agent"][0]["network"]["address"], "127.0.0.1");
    let (python, script) = python_validator();
    let out = std::process::Command::new(&python)
        .arg(&script)
        .arg(&resources)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    assert!(
        out.status.success(),
        "fhir.resources rejected exported AuditEvents:\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );

    // The stored entries, with their chain, as JSON lines.
    let out = harness::vigil()
        .args([
            "--log",
            "warn",
            "audit",
            "export",
            "--format",
            "json",
            "--patient",
            "pat-b",
            "--data-dir",
        ])
        .arg(&dir)
        .output()
        .expect("export json");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one entry per line"))
        .collect();
    assert!(
        rows.iter()
            .all(|r| r["patient"] == "pat-b" && r["hash"].as_str().is_some_and(|h| h.len() == 64))
    );
    assert!(rows.iter().any(|r| r["seq"] == denied_seq));

    // No database where one is named: a usage error (exit 2), one line.
    let empty = tempfile::tempdir().expect("tmp");
    let (code, _, stderr) = verify(empty.path());
    assert_eq!((code, stderr.lines().count()), (2, 1), "{stderr}");

    // The attacks, each on its own copy of the stopped hub's files.
    drop(hub);
    Connection::open(dir.join("hub.db"))
        .and_then(|c| c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);"))
        .expect("checkpoint the WAL");
    let total: u64 = Connection::open(dir.join("hub.db"))
        .and_then(|c| c.query_row("SELECT max(seq) FROM audit", [], |r| r.get::<_, i64>(0)))
        .expect("count") as u64;
    assert!(total >= 5);
    let (code, _, stderr) = verify(&dir);
    assert_eq!(code, 0, "{stderr}");

    // A changed field: the denied attempt rewritten as a success.
    let d = copy_site(&dir);
    attacker(d.path())
        .execute(
            "UPDATE audit SET outcome = 200 WHERE seq = ?1",
            [denied_seq as i64],
        )
        .expect("update");
    assert_detected(d.path(), denied_seq, "a changed outcome");

    // A deleted entry in the middle.
    let d = copy_site(&dir);
    attacker(d.path())
        .execute("DELETE FROM audit WHERE seq = 2", [])
        .expect("delete");
    assert_detected(d.path(), 2, "a deleted middle entry");

    // The last entries deleted: the chain itself is intact, the checkpoint is not.
    let d = copy_site(&dir);
    attacker(d.path())
        .execute("DELETE FROM audit WHERE seq > ?1", [(total - 2) as i64])
        .expect("delete tail");
    assert_detected(d.path(), total - 1, "deleted last entries");

    // Two entries swapped (all their fields, hashes included).
    let d = copy_site(&dir);
    let a = attacker(d.path());
    a.execute_batch(
        "UPDATE audit SET seq = -3 WHERE seq = 3; UPDATE audit SET seq = 3 WHERE seq = 4; UPDATE audit SET seq = 4 WHERE seq = -3;",
    )
    .expect("swap");
    drop(a);
    assert_detected(d.path(), 3, "two swapped entries");

    // An entry appended by someone who knows the format but not the key: its chain hash is
    // right, its seal is not.
    let d = copy_site(&dir);
    let a = attacker(d.path());
    let (prev,): (Vec<u8>,) = a
        .query_row(
            "SELECT hash FROM audit WHERE seq = ?1",
            [total as i64],
            |r| Ok((r.get(0)?,)),
        )
        .expect("head");
    let prev: [u8; 32] = prev.try_into().expect("32 bytes");
    let forged = NewAuditEntry {
        time: Timestamp::now(),
        actor: "dr-in".into(),
        role: "clinician".into(),
        patient: "pat-b".into(),
        action: "read".into(),
        resource: "GET /api/v1/patients/pat-b".into(),
        source: "127.0.0.1".into(),
        purpose: "TREAT".into(),
        outcome: 200,
        detail: String::new(),
    };
    let seq = total + 1;
    let hash = entry_hash(seq, &forged, &prev);
    a.execute(
        "INSERT INTO audit(seq, t, actor, role, patient, action, resource, source, purpose, outcome, detail, prev_hash, hash, mac) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
        params![
            seq as i64,
            forged.time.0,
            forged.actor,
            forged.role,
            forged.patient,
            forged.action,
            forged.resource,
            forged.source,
            forged.purpose,
            forged.outcome,
            forged.detail,
            prev.as_slice(),
            hash.as_slice(),
            [0u8; 32].as_slice(),
        ],
    )
    .expect("insert");
    drop(a);
    assert_detected(d.path(), seq, "an inserted entry");
}

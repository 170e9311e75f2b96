//! Privacy operations end to end on a real hub and gateway: device enrolment revocation,
//! the patient's full export, erasure with a tombstone, and retention.

use crate::harness::{self, Proc, Site};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};
use vigil_model::{DeviceId, Event, EventKind, Metric, Reading, Record, Source, Timestamp};

const MINUTE: i64 = 60_000;
const DAY: i64 = 86_400_000;

fn reading(device: &str, loinc: &str, v: f64, t: Timestamp) -> Record {
    let metric: Metric = loinc.parse().expect("metric");
    let mut r = Reading::quantity(DeviceId::new(device).expect("id"), metric, v, t);
    r.source = Source::Manual;
    Record::Reading(r)
}

fn heart_rate(device: &str, v: f64, t: Timestamp) -> Record {
    reading(device, "8867-4", v, t)
}

fn bed_exit(device: &str, t: Timestamp) -> Record {
    Record::Event(Event {
        device: DeviceId::new(device).expect("id"),
        time: t,
        received: None,
        kind: EventKind::BedExit,
        source: Source::Manual,
        patient: None,
    })
}

fn ago(ms: i64) -> Timestamp {
    Timestamp::now().saturating_add_millis(-ms)
}

async fn send(
    c: &reqwest::Client,
    method: Method,
    url: String,
    token: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = c.request(method, url).bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.expect("hub reachable");
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Enrols a patient with one device (reporting through `gateway`) assigned to them.
async fn enrol(
    c: &reqwest::Client,
    hub: &str,
    admin: &str,
    patient: Value,
    device: &str,
    gateway: &str,
) {
    let pid = patient["id"].as_str().expect("id").to_owned();
    for (path, body) in [
        ("patients", patient),
        (
            "devices",
            json!({"id": device, "kind": "wearable", "gateway": gateway}),
        ),
        (
            "assignments",
            json!({"device": device, "patient": pid, "from": "2000-01-01T00:00:00Z"}),
        ),
    ] {
        let (s, v) = send(
            c,
            Method::POST,
            format!("{hub}/api/v1/{path}"),
            admin,
            Some(body),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }
}

/// Polls `f` until it gives `Some`, for at most 30 s.
async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "{what} in time");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn quarantine(c: &reqwest::Client, hub: &str, admin: &str) -> Vec<Value> {
    let (s, v) = send(
        c,
        Method::GET,
        format!("{hub}/api/v1/quarantine?status=all&limit=10000"),
        admin,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["entries"].as_array().cloned().unwrap_or_default()
}

fn reasons_of(entries: &[Value], device: &str) -> Vec<String> {
    let mut r: Vec<String> = entries
        .iter()
        .filter(|e| e["device"] == device)
        .filter_map(|e| e["reason_code"].as_str().map(str::to_owned))
        .collect();
    r.sort();
    r
}

struct Hub {
    site: Site,
    hub: Proc,
    gw: Proc,
    c: reqwest::Client,
}

fn start(env: &[(&str, &str)]) -> Hub {
    let site = Site::new();
    let hub = harness::spawn_hub_with(&site.hub_dir(), "127.0.0.1:0", env);
    let gw = harness::spawn_gateway(&hub.url, &site.gateway_token_file, &site.outbox(), 100);
    Hub {
        site,
        hub,
        gw,
        c: harness::client(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_device_is_quarantined_at_once_and_its_stored_data_stays() {
    let h = start(&[]);
    let clinician = h.site.token("dr-r", "clinician");
    let (c, u, admin) = (&h.c, h.hub.url.as_str(), h.site.admin.as_str());
    enrol(c, u, admin, json!({"id": "pat-r"}), "dev-r", "gw-test").await;
    enrol(c, u, admin, json!({"id": "pat-o"}), "dev-o", "gw-other").await;
    let t = ago(10 * MINUTE);
    let first: Vec<Record> = (0..3)
        .map(|i| {
            heart_rate(
                "dev-r",
                70.0 + f64::from(i),
                t.saturating_add_millis(i64::from(i) * 1000),
            )
        })
        .collect();
    harness::feed(c, &h.gw.url, &first).await;
    let got = harness::wait_for_readings(c, u, admin, 3, Duration::from_secs(30)).await;
    assert_eq!(got, 3);

    for (tok, id, want) in [
        (clinician.as_str(), "dev-r", 403),
        (admin, "dev-unknown", 404),
        (admin, "not a device id!", 400),
    ] {
        let (s, v) = send(
            c,
            Method::DELETE,
            format!("{u}/api/v1/devices/{id}"),
            tok,
            None,
        )
        .await;
        assert_eq!(s.as_u16(), want, "revoke {id}: {v}");
    }
    let (s, v) = send(
        c,
        Method::DELETE,
        format!("{u}/api/v1/devices/dev-r"),
        admin,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["device"], "dev-r");
    let (s, v) = send(
        c,
        Method::POST,
        format!("{u}/api/v1/devices/dev-r/revoke"),
        admin,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT, "revoking twice: {v}");
    let (_, list) = send(
        c,
        Method::GET,
        format!("{u}/api/v1/device-revocations"),
        admin,
        None,
    )
    .await;
    assert_eq!(list["count"], 1, "{list}");

    // Later readings of the revoked device, and one of a device enrolled to another gateway.
    let later = vec![
        heart_rate("dev-r", 80.0, t.saturating_add_millis(10_000)),
        heart_rate("dev-r", 81.0, t.saturating_add_millis(11_000)),
        heart_rate("dev-o", 60.0, t.saturating_add_millis(12_000)),
    ];
    harness::feed(c, &h.gw.url, &later).await;
    let entries = eventually("three quarantined records", || async {
        let q = quarantine(c, u, admin).await;
        (q.len() >= 3).then_some(q)
    })
    .await;
    assert_eq!(entries.len(), 3, "{entries:?}");
    assert_eq!(
        reasons_of(&entries, "dev-r"),
        ["revoked_device", "revoked_device"]
    );
    assert_eq!(reasons_of(&entries, "dev-o"), ["wrong_gateway"]);
    // What was stored before the revocation stays, nothing after it was added.
    let (_, r) = send(
        c,
        Method::GET,
        format!("{u}/api/v1/patients/pat-r/readings"),
        admin,
        None,
    )
    .await;
    assert_eq!(r["count"], 3, "{r}");
    assert_eq!(harness::stored_readings(c, u, admin).await, Some(3));
    // The enrolment stays revoked after a restart (kept in storage, not only in memory).
    drop(h.gw);
    let hub_dir = h.site.hub_dir();
    let mut hub = h.hub;
    hub.kill9();
    let hub = harness::spawn_hub(&hub_dir, "127.0.0.1:0");
    let u = hub.url.as_str();
    let gw = harness::spawn_gateway(u, &h.site.gateway_token_file, &h.site.outbox(), 100);
    harness::feed(
        c,
        &gw.url,
        &[heart_rate("dev-r", 82.0, t.saturating_add_millis(13_000))],
    )
    .await;
    let entries = eventually("the post-restart record quarantined", || async {
        let q = quarantine(c, u, admin).await;
        (q.len() >= 4).then_some(q)
    })
    .await;
    assert_eq!(reasons_of(&entries, "dev-r").len(), 3, "{entries:?}");
    assert_eq!(harness::stored_readings(c, u, admin).await, Some(3));

    // A revoked gateway's token is refused at once.
    let (s, v) = send(
        c,
        Method::DELETE,
        format!("{u}/api/v1/gateways/gw-test"),
        admin,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
    let r = c
        .post(format!("{u}/api/v1/ingest"))
        .bearer_auth(h.site.gateway_token())
        .header("content-type", vigil_sync::CONTENT_TYPE)
        .body(Vec::new())
        .send()
        .await
        .expect("hub reachable");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

fn ndjson(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).expect("every line is a JSON object"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_export_holds_exactly_what_is_stored_about_the_patient() {
    let h = start(&[]);
    let patient = h.site.token("pat-e", "patient");
    let dr = h.site.token("dr-x", "clinician");
    let (c, u, admin) = (&h.c, h.hub.url.as_str(), h.site.admin.as_str());
    enrol(
        c,
        u,
        admin,
        json!({"id": "pat-e", "name": "Erin Export"}),
        "dev-e",
        "gw-test",
    )
    .await;
    enrol(
        c,
        u,
        admin,
        json!({"id": "pat-other"}),
        "dev-other",
        "gw-test",
    )
    .await;
    // 150 heart rates 40 minutes apart (100 hours: more hour windows than one export page),
    // a low glucose that opens an alert, three events; and another patient's data.
    let start_t = ago(110 * 60 * MINUTE);
    let mut records: Vec<Record> = (0..150)
        .map(|i| {
            heart_rate(
                "dev-e",
                60.0 + f64::from(i % 30),
                start_t.saturating_add_millis(i64::from(i) * 40 * MINUTE),
            )
        })
        .collect();
    records.push(reading("dev-e", "2339-0", 42.0, ago(5 * MINUTE)));
    for i in 0..3 {
        records.push(bed_exit("dev-e", ago((30 + i) * MINUTE)));
    }
    for i in 0..5 {
        records.push(heart_rate("dev-other", 70.0, ago((10 + i) * MINUTE)));
    }
    records.push(bed_exit("dev-other", ago(MINUTE)));
    harness::feed(c, &h.gw.url, &records).await;
    let got = harness::wait_for_readings(c, u, admin, 156, Duration::from_secs(30)).await;
    assert_eq!(got, 156);
    let alerts = eventually("an alert for pat-e", || async {
        let (_, v) = send(
            c,
            Method::GET,
            format!("{u}/api/v1/alerts?patient=pat-e"),
            admin,
            None,
        )
        .await;
        let list = v["alerts"].as_array().cloned().unwrap_or_default();
        (!list.is_empty()).then_some(list)
    })
    .await;
    let (s, v) = send(
        c,
        Method::POST,
        format!("{u}/api/v1/patients/pat-e/consents"),
        &patient,
        Some(json!({"grantee": "carer-e", "expires": "2099-01-01T00:00:00Z"})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, v) = send(
        c,
        Method::POST,
        format!("{u}/api/v1/patients/pat-e/break-glass"),
        &dr,
        Some(json!({"reason": "covering the ward overnight"})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");

    let r = c
        .get(format!("{u}/api/v1/patients/pat-e/export"))
        .bearer_auth(&patient)
        .send()
        .await
        .expect("export");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/x-ndjson")
    );
    let text = r.text().await.expect("body");
    assert!(
        !text.contains("pat-other") && !text.contains("dev-other"),
        "nobody else's data"
    );
    let lines = ndjson(&text);
    let mut tally: BTreeMap<String, u64> = BTreeMap::new();
    for l in &lines {
        *tally
            .entry(l["type"].as_str().expect("type").to_owned())
            .or_default() += 1;
    }
    let summary = lines.last().expect("lines");
    assert_eq!(summary["type"], "summary", "the summary comes last");
    tally.remove("summary");
    let counts: BTreeMap<String, u64> =
        serde_json::from_value(summary["counts"].clone()).expect("counts");
    assert_eq!(counts, tally, "the summary counts what was sent");
    let want: BTreeMap<String, u64> = [
        ("patient", 1),
        ("device", 1),
        ("assignment", 1),
        ("reading", 151),
        ("event", 3),
        ("alert", alerts.len() as u64),
        ("consent", 1),
        ("break_glass", 1),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    assert_eq!(tally, want, "{summary}");
    // Every reading fed is there once, with its value.
    let fed: BTreeSet<(String, String)> = records
        .iter()
        .filter_map(|r| match r {
            Record::Reading(x) if x.device.as_str() == "dev-e" => Some((
                serde_json::to_value(x.time).expect("time").to_string(),
                x.value.expect("value").to_string(),
            )),
            _ => None,
        })
        .collect();
    let exported: BTreeSet<(String, String)> = lines
        .iter()
        .filter(|l| l["type"] == "reading")
        .map(|l| {
            (
                l["time"].to_string(),
                l["value"].as_f64().expect("value").to_string(),
            )
        })
        .collect();
    assert_eq!(exported, fed);
    let patient_line = &lines[0];
    assert_eq!(patient_line["type"], "patient");
    assert_eq!(patient_line["name"], "Erin Export");
    let alert_line = lines.iter().find(|l| l["type"] == "alert").expect("alert");
    assert!(
        alert_line["transitions"]
            .as_array()
            .is_some_and(|t| !t.is_empty()),
        "{alert_line}"
    );
    // The admin gets the same document.
    let r = c
        .get(format!("{u}/api/v1/patients/pat-e/export"))
        .bearer_auth(admin)
        .send()
        .await
        .expect("export");
    let admin_lines = ndjson(&r.text().await.expect("body"));
    assert_eq!(admin_lines.len(), lines.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasure_removes_the_patient_and_leaves_only_a_tombstone() {
    let h = start(&[]);
    let patient = h.site.token("pat-z", "patient");
    let dr = h.site.token("dr-z", "clinician");
    let (c, u, admin) = (&h.c, h.hub.url.as_str(), h.site.admin.as_str());
    const NAME: &str = "Zebulon Quuxworth";
    enrol(
        c,
        u,
        admin,
        json!({"id": "pat-z", "name": NAME}),
        "dev-z",
        "gw-test",
    )
    .await;
    enrol(c, u, admin, json!({"id": "pat-k"}), "dev-k", "gw-test").await;
    let (s, v) = send(
        c,
        Method::PUT,
        format!("{u}/api/v1/patients/pat-z/care-team"),
        admin,
        Some(json!({"primary": ["dr-z"]})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let t = ago(60 * MINUTE);
    let mut records: Vec<Record> = (0..20)
        .map(|i| {
            heart_rate(
                "dev-z",
                70.0,
                t.saturating_add_millis(i64::from(i) * MINUTE),
            )
        })
        .collect();
    records.push(reading("dev-z", "2339-0", 42.0, ago(5 * MINUTE)));
    records.push(bed_exit("dev-z", ago(4 * MINUTE)));
    records.push(bed_exit("dev-z", ago(3 * MINUTE)));
    // Impossible: quarantined with the device's id.
    records.push(heart_rate("dev-z", 900.0, ago(2 * MINUTE)));
    for i in 0..4 {
        records.push(heart_rate(
            "dev-k",
            65.0,
            t.saturating_add_millis(i64::from(i) * MINUTE),
        ));
    }
    harness::feed(c, &h.gw.url, &records).await;
    assert_eq!(
        harness::wait_for_readings(c, u, admin, 25, Duration::from_secs(30)).await,
        25
    );
    eventually("an alert for pat-z", || async {
        let (_, v) = send(
            c,
            Method::GET,
            format!("{u}/api/v1/alerts?patient=pat-z"),
            admin,
            None,
        )
        .await;
        (v["count"].as_u64() > Some(0)).then_some(())
    })
    .await;
    let (s, v) = send(
        c,
        Method::POST,
        format!("{u}/api/v1/patients/pat-z/consents"),
        &patient,
        Some(json!({"grantee": "carer-z"})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(
        reasons_of(&quarantine(c, u, admin).await, "dev-z"),
        ["impossible_value"]
    );

    let reason = Some(json!({"reason": "patient request under GDPR art. 17"}));
    for (who, tok, body, want) in [
        ("clinician", dr.as_str(), reason.clone(), 403),
        ("the patient", patient.as_str(), reason.clone(), 403),
        ("admin without reason", admin, Some(json!({})), 400),
        (
            "admin with a blank reason",
            admin,
            Some(json!({"reason": " "})),
            400,
        ),
    ] {
        let (s, v) = send(
            c,
            Method::DELETE,
            format!("{u}/api/v1/patients/pat-z"),
            tok,
            body,
        )
        .await;
        assert_eq!(s.as_u16(), want, "{who}: {v}");
    }
    let (s, tomb) = send(
        c,
        Method::DELETE,
        format!("{u}/api/v1/patients/pat-z"),
        admin,
        reason.clone(),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{tomb}");
    let n = &tomb["counts"];
    assert_eq!(n["readings"], 21, "{tomb}");
    assert_eq!(n["events"], 2, "{tomb}");
    assert_eq!(n["consents"], 1, "{tomb}");
    assert_eq!(n["assignments"], 1, "{tomb}");
    assert_eq!(n["quarantine"], 1, "{tomb}");
    assert_eq!(n["care_team"], 1, "{tomb}");
    assert_eq!(n["patient_tokens_revoked"], 1, "{tomb}");
    assert!(
        n["alerts"].as_u64() >= Some(1) && n["transitions"].as_u64() >= Some(1),
        "{tomb}"
    );
    let hash = tomb["patient_hash"].as_str().expect("hash");
    assert_eq!(hash.len(), 64);
    assert!(hash.bytes().all(|b| b.is_ascii_hexdigit()));
    let (s, v) = send(
        c,
        Method::DELETE,
        format!("{u}/api/v1/patients/pat-z"),
        admin,
        reason,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "erased twice: {v}");

    // Nothing of the patient answers any more; the other patient is untouched.
    for path in [
        "",
        "/readings",
        "/events",
        "/export",
        "/consents",
        "/care-team",
    ] {
        let (s, v) = send(
            c,
            Method::GET,
            format!("{u}/api/v1/patients/pat-z{path}"),
            admin,
            None,
        )
        .await;
        assert_eq!(s, StatusCode::NOT_FOUND, "GET pat-z{path}: {v}");
    }
    let (s, _) = send(
        c,
        Method::GET,
        format!("{u}/api/v1/patients/pat-z"),
        &patient,
        None,
    )
    .await;
    assert_eq!(
        s,
        StatusCode::UNAUTHORIZED,
        "the patient's token is revoked"
    );
    let (_, v) = send(
        c,
        Method::GET,
        format!("{u}/api/v1/alerts?patient=pat-z"),
        admin,
        None,
    )
    .await;
    assert_eq!(v["count"], 0, "{v}");
    let (_, v) = send(
        c,
        Method::GET,
        format!("{u}/api/v1/assignments?device=dev-z"),
        admin,
        None,
    )
    .await;
    assert_eq!(v["count"], 0, "{v}");
    assert!(reasons_of(&quarantine(c, u, admin).await, "dev-z").is_empty());
    assert_eq!(harness::stored_readings(c, u, admin).await, Some(4));
    let (_, v) = send(
        c,
        Method::GET,
        format!("{u}/api/v1/patients/pat-k/readings"),
        admin,
        None,
    )
    .await;
    assert_eq!(v["count"], 4, "{v}");
    let (s, list) = send(c, Method::GET, format!("{u}/api/v1/erasures"), admin, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list["count"], 1);
    assert_eq!(list["erasures"][0]["patient_hash"], hash);
    assert!(!list.to_string().contains("pat-z"), "{list}");
    let (s, _) = send(c, Method::GET, format!("{u}/api/v1/erasures"), &dr, None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // The name is gone from the database file and its write-ahead log, free pages included.
    for f in ["hub.db", "hub.db-wal"] {
        if let Ok(bytes) = std::fs::read(h.site.hub_dir().join(f)) {
            assert!(
                !bytes.windows(NAME.len()).any(|w| w == NAME.as_bytes()),
                "{f} still holds the erased name"
            );
        }
    }

    // Old data of the device arriving again is quarantined; it does not bring the patient back.
    harness::feed(c, &h.gw.url, &[heart_rate("dev-z", 71.0, t)]).await;
    let entries = eventually("the re-sent reading quarantined", || async {
        let q = quarantine(c, u, admin).await;
        let r = reasons_of(&q, "dev-z");
        (!r.is_empty()).then_some(r)
    })
    .await;
    assert_eq!(entries, ["unassigned_device"]);
    let (s, _) = send(
        c,
        Method::GET,
        format!("{u}/api/v1/patients/pat-z"),
        admin,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(harness::stored_readings(c, u, admin).await, Some(4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_removes_data_older_than_its_period_on_a_running_hub() {
    let h = start(&[
        ("VIGIL_HUB__RETENTION__READINGS_DAYS", "5"),
        ("VIGIL_HUB__RETENTION__EVENTS_DAYS", "5"),
        ("VIGIL_HUB__RETENTION__SWEEP_EVERY_S", "1"),
    ]);
    let (c, u, admin) = (&h.c, h.hub.url.as_str(), h.site.admin.as_str());
    enrol(c, u, admin, json!({"id": "pat-t"}), "dev-t", "gw-test").await;
    let old = ago(10 * DAY);
    let recent = ago(60 * MINUTE);
    let mut records: Vec<Record> = (0..10)
        .map(|i| {
            heart_rate(
                "dev-t",
                70.0,
                old.saturating_add_millis(i64::from(i) * MINUTE),
            )
        })
        .collect();
    records.extend((0..5).map(|i| {
        heart_rate(
            "dev-t",
            72.0,
            recent.saturating_add_millis(i64::from(i) * MINUTE),
        )
    }));
    records.push(bed_exit("dev-t", old));
    records.push(bed_exit("dev-t", old.saturating_add_millis(MINUTE)));
    records.push(bed_exit("dev-t", recent));
    harness::feed(c, &h.gw.url, &records).await;
    // Everything was stored (the counter only grows), then the sweep removed the old part.
    eventually("all 18 records stored", || async {
        let m = c
            .get(format!("{u}/metrics"))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        m.contains("vigil_hub_records_stored_total 18\n")
            .then_some(())
    })
    .await;
    let (readings, events) = eventually("the sweep", || async {
        let (_, r) = send(
            c,
            Method::GET,
            format!("{u}/api/v1/patients/pat-t/readings"),
            admin,
            None,
        )
        .await;
        let (_, e) = send(
            c,
            Method::GET,
            format!("{u}/api/v1/patients/pat-t/events"),
            admin,
            None,
        )
        .await;
        (r["count"] == 5 && e["count"] == 1).then_some((r, e))
    })
    .await;
    let cut = ago(5 * DAY);
    for r in readings["readings"].as_array().expect("readings") {
        let t = Timestamp::parse(r["time"].as_str().expect("time")).expect("time");
        assert!(t > cut, "{r}");
    }
    let t = Timestamp::parse(events["events"][0]["time"].as_str().expect("time")).expect("time");
    assert!(t > cut);
    assert_eq!(harness::stored_readings(c, u, admin).await, Some(5));
}

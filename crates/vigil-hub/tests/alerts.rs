//! Alerts through the hub's HTTP surface, in process: ingest opens and joins alerts, edge
//! alerts join them, clearing readings resolve them, the stream resumes from Last-Event-ID,
//! and unacknowledged alerts escalate.

use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use vigil_hub::auth::{API_PREFIX, GATEWAY_PREFIX, hash_token, new_token};
use vigil_hub::{AppState, HubConfig};
use vigil_model::{
    Assignment, Device, DeviceId, DeviceKind, Event, EventKind, Metric, Patient, PatientId,
    Reading, Record, Source, Timestamp,
};
use vigil_store::sqlite::SqliteStore;
use vigil_store::{ApiToken, Store};
use vigil_sync::{Batch, WireRecord};

struct Hub {
    _dir: tempfile::TempDir,
    url: String,
    gateway: String,
    admin: String,
    doctor: String,
    seq: u64,
    http: reqwest::Client,
}

async fn start(config: HubConfig) -> Hub {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(dir.path().join("hub.db")).expect("store");
    for (p, d) in [("p1", "w1"), ("p2", "w2")] {
        store
            .upsert_patient(Patient {
                id: PatientId::new(p).expect("id"),
                name: None,
                birth_date: None,
            })
            .await
            .expect("patient");
        store
            .upsert_device(Device {
                id: DeviceId::new(d).expect("id"),
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
        store
            .assign(Assignment {
                device: DeviceId::new(d).expect("id"),
                patient: PatientId::new(p).expect("id"),
                from: Timestamp(0),
                to: None,
            })
            .await
            .expect("assign");
    }
    let gateway = new_token(GATEWAY_PREFIX);
    store
        .create_gateway("gw", &hash_token(&gateway))
        .await
        .expect("gateway");
    let mut tokens = Vec::new();
    for (name, role) in [("admin", "admin"), ("dr-a", "clinician")] {
        let t = new_token(API_PREFIX);
        store
            .create_api_token(
                &hash_token(&t),
                ApiToken {
                    name: name.into(),
                    role: role.into(),
                    created: Timestamp::now(),
                    expires: None,
                    revoked: false,
                },
            )
            .await
            .expect("token");
        tokens.push(t);
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let state = AppState::new(Arc::new(store), config);
    tokio::spawn(vigil_hub::serve(listener, state, std::future::pending()));
    vigil_tls::install_default_provider();
    Hub {
        _dir: dir,
        url,
        gateway,
        doctor: tokens.pop().expect("doctor"),
        admin: tokens.pop().expect("admin"),
        seq: 0,
        http: reqwest::Client::new(),
    }
}

fn glucose(device: &str, v: f64, t: Timestamp) -> Record {
    let metric: Metric = "2339-0".parse().expect("glucose");
    let mut r = Reading::quantity(DeviceId::new(device).expect("id"), metric, v, t);
    r.received = Some(t);
    r.source = Source::Simulator;
    Record::Reading(r)
}

fn edge_alert(device: &str, rule: &str, t: Timestamp) -> Record {
    Record::Event(Event {
        device: DeviceId::new(device).expect("id"),
        time: t,
        received: Some(t),
        kind: EventKind::Alert {
            rule: rule.into(),
            severity: "critical".into(),
            message: "edge rule".into(),
            value: Some(40.0),
        },
        source: Source::Other,
        patient: None,
    })
}

impl Hub {
    async fn ingest(&mut self, records: Vec<Record>) {
        let after = self.seq;
        let records = records
            .into_iter()
            .map(|r| {
                self.seq += 1;
                WireRecord {
                    seq: self.seq,
                    payload: postcard::to_stdvec(&r).expect("encode"),
                }
            })
            .collect();
        let body = Batch {
            version: vigil_sync::VERSION,
            epoch: 1,
            after,
            records,
        }
        .encode();
        let resp = self
            .http
            .post(format!("{}/api/v1/ingest", self.url))
            .bearer_auth(&self.gateway)
            .header("content-type", vigil_sync::CONTENT_TYPE)
            .body(body)
            .send()
            .await
            .expect("ingest");
        assert_eq!(resp.status(), 200, "{:?}", resp.text().await);
        self.settle().await;
    }

    /// Waits until the hub has evaluated everything it acknowledged.
    async fn settle(&self) {
        for _ in 0..200 {
            let m = self
                .http
                .get(format!("{}/metrics", self.url))
                .send()
                .await
                .expect("metrics")
                .text()
                .await
                .expect("text");
            if m.contains("vigil_hub_alert_queue 0\n") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("alert evaluation did not catch up");
    }

    async fn get(&self, path: &str) -> Value {
        let resp = self
            .http
            .get(format!("{}{path}", self.url))
            .bearer_auth(&self.admin)
            .send()
            .await
            .expect("get");
        assert_eq!(resp.status(), 200);
        resp.json().await.expect("json")
    }

    async fn post(&self, path: &str, token: &str, body: Value) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.url))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .expect("post")
    }
}

fn config(escalate_after_s: u64) -> HubConfig {
    HubConfig {
        alert_quiet_s: 60,
        escalate_after_s,
        compact_every_s: 0,
        ..HubConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn findings_and_edge_alerts_share_one_alert_that_resolves_when_the_condition_clears() {
    let mut hub = start(config(0)).await;
    let t0 = Timestamp::now().saturating_add_millis(-600_000);
    let at = |s: i64| t0.saturating_add_millis(s * 1000);
    hub.ingest(vec![glucose("w1", 40.0, at(30))]).await;
    hub.ingest(vec![glucose("w1", 45.0, at(60))]).await;
    // The gateway's own alert, from a reading before the hub's first: same alert, its time.
    hub.ingest(vec![edge_alert("w1", "hypoglycaemia-level-2", at(0))])
        .await;
    let open = hub.get("/api/v1/alerts?status=open").await;
    assert_eq!(open["count"], 1, "{open}");
    let a = &open["alerts"][0];
    assert_eq!(a["rule_id"], "hypoglycaemia-level-2");
    assert_eq!(a["severity"], "critical");
    assert_eq!(a["source"], "edge");
    assert_eq!(a["opened_at"], json!(at(0)));
    assert_eq!(a["last_seen"], json!(at(60)));
    let id = a["id"].as_i64().expect("id");
    // Normal glucose 30 s later: not yet quiet long enough.
    hub.ingest(vec![glucose("w1", 100.0, at(90))]).await;
    assert_eq!(hub.get("/api/v1/alerts?status=open").await["count"], 1);
    // 60 s after the last finding: resolved by the system.
    hub.ingest(vec![glucose("w1", 100.0, at(120))]).await;
    let got = hub.get(&format!("/api/v1/alerts/{id}")).await;
    assert_eq!(got["alert"]["status"], "resolved", "{got}");
    assert_eq!(got["alert"]["resolved_by"], "system");
    let steps: Vec<&str> = got["transitions"]
        .as_array()
        .expect("transitions")
        .iter()
        .map(|t| t["to"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(steps, ["open", "resolved"]);
    // A late edge alert from inside the resolved span opens nothing new.
    hub.ingest(vec![edge_alert("w1", "hypoglycaemia-level-2", at(50))])
        .await;
    assert_eq!(hub.get("/api/v1/alerts").await["count"], 1);
    // The edge alert and the reading that triggered it in one batch: one alert.
    hub.ingest(vec![
        glucose("w2", 41.0, at(10)),
        edge_alert("w2", "hypoglycaemia-level-2", at(10)),
    ])
    .await;
    let p2 = hub.get("/api/v1/alerts?patient=p2").await;
    assert_eq!(p2["count"], 1, "{p2}");
    assert_eq!(p2["alerts"][0]["opened_at"], json!(at(10)));
}

/// Reads SSE frames until `n` events with ids have arrived.
async fn read_events(resp: &mut reqwest::Response, n: usize) -> Vec<(i64, Value)> {
    let mut buf = String::new();
    let mut out = Vec::new();
    while out.len() < n {
        let chunk = tokio::time::timeout(Duration::from_secs(10), resp.chunk())
            .await
            .expect("an event in time")
            .expect("stream")
            .expect("open stream");
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let frame: String = buf.drain(..end + 2).collect();
            let mut id = None;
            let mut data = None;
            for line in frame.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    id = v.trim().parse::<i64>().ok();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data = serde_json::from_str::<Value>(v.trim()).ok();
                }
            }
            if let (Some(id), Some(data)) = (id, data) {
                out.push((id, data));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_resumes_from_last_event_id_and_escalation_spares_acknowledged_alerts() {
    let mut hub = start(config(1)).await;
    let put = hub
        .http
        .put(format!("{}/api/v1/patients/p2/care-team", hub.url))
        .bearer_auth(&hub.admin)
        .json(&json!({"primary": ["dr-a"], "backup": ["dr-b"]}))
        .send()
        .await
        .expect("care team");
    assert_eq!(put.status(), 200);
    // The doctor who acknowledges p1's alert is on p1's care team.
    let put = hub
        .put(
            "/api/v1/patients/p1/care-team",
            &hub.admin,
            json!({"primary": ["dr-a"]}),
        )
        .await;
    assert_eq!(put.status(), 200);
    let t = Timestamp::now().saturating_add_millis(-5_000);
    hub.ingest(vec![glucose("w1", 40.0, t), glucose("w2", 40.0, t)])
        .await;
    let open = hub.get("/api/v1/alerts?status=open&patient=p1").await;
    let p1 = open["alerts"][0]["id"].as_i64().expect("p1 alert");
    let ack = hub
        .post(
            &format!("/api/v1/alerts/{p1}/acknowledge"),
            &hub.doctor,
            json!({"silence_minutes": 30}),
        )
        .await;
    assert_eq!(ack.status(), 200);
    // A client that saw nothing yet replays everything from storage, in order.
    let mut resp = hub
        .http
        .get(format!("{}/api/v1/alerts/stream", hub.url))
        .bearer_auth(&hub.admin)
        .header("last-event-id", "0")
        .send()
        .await
        .expect("stream");
    assert_eq!(resp.status(), 200);
    let first = read_events(&mut resp, 3).await;
    let ids: Vec<i64> = first.iter().map(|(id, _)| *id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    assert_eq!(first[2].1["to"], "acknowledged");
    assert_eq!(first[2].1["actor"], "dr-a");
    // Then live: p2's alert, unacknowledged, escalates to its backup clinician.
    let live = read_events(&mut resp, 1).await;
    assert_eq!(live[0].1["to"], "escalated", "{live:?}");
    assert_eq!(live[0].1["patient"], "p2");
    assert_eq!(live[0].1["escalation_level"], 1);
    // A period later, still unacknowledged: on-call (level 2).
    let on_call = hub
        .http
        .put(format!("{}/api/v1/on-call", hub.url))
        .bearer_auth(&hub.admin)
        .json(&json!({"users": ["night-doc"]}))
        .send()
        .await
        .expect("on call");
    assert_eq!(on_call.status(), 200);
    let live = read_events(&mut resp, 1).await;
    assert_eq!(live[0].1["to"], "escalated", "{live:?}");
    assert_eq!(live[0].1["escalation_level"], 2);
    drop(resp);
    let notes = hub.get("/api/v1/notifications").await;
    let targets: Vec<(&str, &str)> = notes["notifications"]
        .as_array()
        .expect("list")
        .iter()
        .map(|n| {
            (
                n["target"].as_str().unwrap_or_default(),
                n["payload"]["event"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert!(targets.contains(&("dr-a", "opened")), "{targets:?}");
    assert!(targets.contains(&("dr-b", "escalated")), "{targets:?}");
    assert!(targets.contains(&("night-doc", "escalated")), "{targets:?}");
    // The acknowledged alert never escalated.
    let a1 = hub.get(&format!("/api/v1/alerts/{p1}")).await;
    assert_eq!(a1["alert"]["status"], "acknowledged");
    assert_eq!(a1["alert"]["escalation_level"], 0);
    // Resuming from the last id seen replays only what came after it.
    let mut again = hub
        .http
        .get(format!("{}/api/v1/alerts/stream", hub.url))
        .bearer_auth(&hub.admin)
        .header("last-event-id", ids[1].to_string())
        .send()
        .await
        .expect("stream");
    let resumed = read_events(&mut again, 3).await;
    assert_eq!(resumed[0].0, ids[2]);
    assert_eq!(resumed[1].1["escalation_level"], 1);
    assert_eq!(resumed[2].1["escalation_level"], 2);
    // Still unacknowledged: reminders every period, without new transitions.
    let mut reminded = false;
    for _ in 0..50 {
        let n = hub.get("/api/v1/notifications?status=all").await;
        reminded = n["notifications"]
            .as_array()
            .expect("list")
            .iter()
            .any(|n| n["payload"]["event"] == "reminder" && n["target"] == "night-doc");
        if reminded {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(reminded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_errors_are_problem_documents() {
    let mut hub = start(config(0)).await;
    // The doctor looks after p1, so the errors below are about the requests, not access.
    let put = hub
        .put(
            "/api/v1/patients/p1/care-team",
            &hub.admin,
            json!({"primary": ["dr-a"]}),
        )
        .await;
    assert_eq!(put.status(), 200);
    let t = Timestamp::now().saturating_add_millis(-5_000);
    hub.ingest(vec![glucose("w1", 40.0, t)]).await;
    let id = hub.get("/api/v1/alerts").await["alerts"][0]["id"]
        .as_i64()
        .expect("id");
    let cases = [
        (format!("/api/v1/alerts/{id}/resolve"), json!({}), 400),
        (
            format!("/api/v1/alerts/{id}/resolve"),
            json!({"note": " "}),
            400,
        ),
        (
            format!("/api/v1/alerts/{id}/acknowledge"),
            json!({"silence_minutes": 0}),
            400,
        ),
        ("/api/v1/alerts/999/acknowledge".into(), json!({}), 404),
        ("/api/v1/alerts/x/acknowledge".into(), json!({}), 400),
    ];
    for (path, body, status) in cases {
        let r = hub.post(&path, &hub.doctor, body).await;
        assert_eq!(r.status(), status, "{path}");
        assert_eq!(
            r.headers()["content-type"],
            "application/problem+json",
            "{path}"
        );
    }
    let ok = hub
        .post(
            &format!("/api/v1/alerts/{id}/resolve"),
            &hub.doctor,
            json!({"note": "treated"}),
        )
        .await;
    assert_eq!(ok.status(), 200);
    let again = hub
        .post(
            &format!("/api/v1/alerts/{id}/resolve"),
            &hub.doctor,
            json!({"note": "twice"}),
        )
        .await;
    assert_eq!(again.status(), 409);
    let bad = hub
        .http
        .get(format!("{}/api/v1/alerts/stream", hub.url))
        .bearer_auth(&hub.admin)
        .header("last-event-id", "nope")
        .send()
        .await
        .expect("stream");
    assert_eq!(bad.status(), 400);
    let unknown = hub
        .http
        .put(format!("{}/api/v1/patients/nobody/care-team", hub.url))
        .bearer_auth(&hub.admin)
        .json(&json!({"primary": ["dr-a"]}))
        .send()
        .await
        .expect("care team");
    assert_eq!(unknown.status(), 404);
}

/// A local SMTP sink: accepts one message per connection and hands over the transcript.
async fn smtp_sink() -> (String, tokio::sync::mpsc::UnboundedReceiver<String>) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut r = BufReader::new(sock);
                let mut transcript = String::new();
                let _ = r.get_mut().write_all(b"220 sink ESMTP\r\n").await;
                let mut in_data = false;
                loop {
                    let mut line = String::new();
                    match r.read_line(&mut line).await {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                    transcript.push_str(&line);
                    let answer: &[u8] = if in_data {
                        if line == ".\r\n" {
                            in_data = false;
                            b"250 queued\r\n"
                        } else {
                            continue;
                        }
                    } else {
                        let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
                        match verb.as_str() {
                            "EHLO" => b"250-sink\r\n250 8BITMIME\r\n",
                            "DATA" => {
                                in_data = true;
                                b"354 end with .\r\n"
                            }
                            "QUIT" => {
                                let _ = r.get_mut().write_all(b"221 bye\r\n").await;
                                break;
                            }
                            _ => b"250 OK\r\n",
                        }
                    };
                    if r.get_mut().write_all(answer).await.is_err() {
                        break;
                    }
                }
                let _ = tx.send(transcript);
            });
        }
    });
    (addr, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_reach_signed_webhooks_and_email_and_failures_are_dead_lettered() {
    use axum::http::{HeaderMap, StatusCode};
    use std::sync::atomic::{AtomicUsize, Ordering};
    // A webhook receiver that fails its first call, to exercise the retry.
    let (hook_tx, mut hook_rx) = tokio::sync::mpsc::unbounded_channel::<(String, String)>();
    let calls = Arc::new(AtomicUsize::new(0));
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let (hook_tx, calls) = (hook_tx.clone(), calls.clone());
            async move {
                if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                    return StatusCode::INTERNAL_SERVER_ERROR;
                }
                let sig = headers
                    .get("x-vigil-signature")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                let _ = hook_tx.send((sig, body));
                StatusCode::NO_CONTENT
            }
        }),
    );
    let hook_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let hook_url = format!("http://{}/hook", hook_listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(hook_listener, app).await });
    // A port nothing listens on, for the dead letter.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let dead_url = format!("http://{}/hook", closed.local_addr().expect("addr"));
    drop(closed);
    let (smtp, mut mail_rx) = smtp_sink().await;
    let mut hub = start(HubConfig {
        notify_max_attempts: 3,
        notify_backoff_ms: 20,
        webhooks: vec![
            vigil_hub::notify::WebhookConfig {
                name: "ops".into(),
                url: hook_url,
                secret: "s3cret".into(),
            },
            vigil_hub::notify::WebhookConfig {
                name: "gone".into(),
                url: dead_url,
                secret: "x".into(),
            },
        ],
        smtp: Some(vigil_hub::notify::SmtpConfig {
            server: smtp,
            from: "vigil@hub.example".into(),
        }),
        emails: [("dr-a".to_owned(), "dr-a@example.org".to_owned())].into(),
        ..config(0)
    })
    .await;
    let put = hub
        .http
        .put(format!("{}/api/v1/patients/p1/care-team", hub.url))
        .bearer_auth(&hub.admin)
        .json(&json!({"primary": ["dr-a"]}))
        .send()
        .await
        .expect("care team");
    assert_eq!(put.status(), 200);
    hub.ingest(vec![glucose(
        "w1",
        40.0,
        Timestamp::now().saturating_add_millis(-5_000),
    )])
    .await;
    let (sig, body) = tokio::time::timeout(Duration::from_secs(10), hook_rx.recv())
        .await
        .expect("webhook in time")
        .expect("webhook");
    assert_eq!(sig, vigil_hub::notify::signature("s3cret", body.as_bytes()));
    let payload: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(payload["event"], "opened");
    assert_eq!(payload["rule_id"], "hypoglycaemia-level-2");
    let mail = tokio::time::timeout(Duration::from_secs(10), mail_rx.recv())
        .await
        .expect("mail in time")
        .expect("mail");
    assert!(mail.contains("RCPT TO:<dr-a@example.org>"), "{mail}");
    assert!(mail.contains("Subject: Vigil alert"), "{mail}");
    let mut dead = Value::Null;
    for _ in 0..100 {
        dead = hub.get("/api/v1/notifications/dead").await;
        if dead["count"] == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(dead["count"], 1, "{dead}");
    assert_eq!(dead["notifications"][0]["target"], "gone");
    assert_eq!(dead["notifications"][0]["attempts"], 3);
    let delivered = hub.get("/api/v1/notifications?status=delivered").await;
    let ops = delivered["notifications"]
        .as_array()
        .expect("list")
        .iter()
        .find(|n| n["target"] == "ops")
        .cloned()
        .expect("ops delivered");
    assert_eq!(ops["attempts"], 2);
}

fn reading(device: &str, loinc: &str, v: f64, t: Timestamp) -> Record {
    let metric: Metric = loinc.parse().expect("code");
    let mut r = Reading::quantity(DeviceId::new(device).expect("id"), metric, v, t);
    r.received = Some(t);
    r.source = Source::Simulator;
    Record::Reading(r)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nurses_assessment_completes_a_high_news2_and_opens_a_news2_alert() {
    let mut hub = start(config(0)).await;
    // Only the patient's care team may record assessments.
    let put = hub
        .put(
            "/api/v1/patients/p1/care-team",
            &hub.admin,
            json!({"primary": ["dr-a"]}),
        )
        .await;
    assert_eq!(put.status(), 200);
    let t = Timestamp::now().saturating_add_millis(-60_000);
    hub.ingest(vec![
        reading("w1", "9279-1", 26.0, t),
        reading("w1", "59408-5", 90.0, t),
        reading("w1", "8480-6", 88.0, t),
        reading("w1", "8867-4", 135.0, t),
        reading("w1", "8310-5", 39.5, t),
    ])
    .await;
    // Without consciousness the score is incomplete: no NEWS2 alert yet.
    let before = hub.get("/api/v1/alerts?patient=p1").await;
    assert!(
        before["alerts"]
            .as_array()
            .expect("list")
            .iter()
            .all(|a| a["rule_id"] != "news2"),
        "{before}"
    );
    let r = hub
        .post(
            "/api/v1/patients/p1/assessments",
            &hub.doctor,
            json!({"consciousness": "A", "supplemental_oxygen": false, "time": t}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["alerting_rules"], json!(["news2"]));
    let open = hub.get("/api/v1/alerts?status=open&patient=p1").await;
    let news2 = open["alerts"]
        .as_array()
        .expect("list")
        .iter()
        .find(|a| a["rule_id"] == "news2")
        .cloned()
        .expect("a NEWS2 alert");
    assert_eq!(news2["severity"], "critical");
    assert_eq!(news2["opened_at"], json!(t));
    assert!(news2["value"].as_f64().is_some_and(|v| v >= 7.0), "{news2}");
    let bad = hub
        .post(
            "/api/v1/patients/p1/assessments",
            &hub.doctor,
            json!({"consciousness": "sleepy"}),
        )
        .await;
    assert_eq!(bad.status(), 400);
}

impl Hub {
    async fn put(&self, path: &str, token: &str, body: Value) -> reqwest::Response {
        self.http
            .put(format!("{}{path}", self.url))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .expect("put")
    }

    async fn open_rules(&self, patient: &str) -> Vec<String> {
        let v = self
            .get(&format!("/api/v1/alerts?status=open&patient={patient}"))
            .await;
        v["alerts"]
            .as_array()
            .expect("alerts")
            .iter()
            .map(|a| a["rule_id"].as_str().unwrap_or_default().to_owned())
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_patient_rule_settings_change_what_alerts_and_bad_settings_are_problems() {
    let mut hub = start(config(0)).await;
    // Only p1's care team may change p1's rule settings.
    let put = hub
        .put(
            "/api/v1/patients/p1/care-team",
            &hub.admin,
            json!({"primary": ["dr-a"]}),
        )
        .await;
    assert_eq!(put.status(), 200);
    let t0 = Timestamp::now().saturating_add_millis(-600_000);
    let at = |s: i64| t0.saturating_add_millis(s * 1000);
    let get = hub.get("/api/v1/patients/p1/rule-settings").await;
    assert_eq!(get["spo2_scale"], 1, "{get}");
    assert_eq!(
        get["effective_thresholds"]["hypoglycaemia_level1_below_mg_dl"],
        70.0
    );
    // p1: hypoglycaemia raised to 90 mg/dL; p2: lowered to 60 mg/dL.
    let resp = hub
        .put(
            "/api/v1/patients/p1/rule-settings",
            &hub.doctor,
            json!({"spo2_scale": 2, "thresholds": {"hypoglycaemia_level1_below_mg_dl": 90.0}}),
        )
        .await;
    assert_eq!(resp.status(), 200, "{:?}", resp.text().await);
    let resp = hub
        .put(
            "/api/v1/patients/p2/rule-settings",
            &hub.admin,
            json!({"thresholds": {"hypoglycaemia_level1_below_mg_dl": 60.0}}),
        )
        .await;
    assert_eq!(resp.status(), 200, "{:?}", resp.text().await);
    let got = hub.get("/api/v1/patients/p1/rule-settings").await;
    assert_eq!(got["spo2_scale"], 2, "{got}");
    assert_eq!(
        got["effective_thresholds"]["hypoglycaemia_level1_below_mg_dl"],
        90.0
    );
    // 80 mg/dL: normal by default (>= 70), low for p1 (< 90).
    hub.ingest(vec![glucose("w1", 80.0, at(0))]).await;
    assert_eq!(hub.open_rules("p1").await, ["hypoglycaemia-level-1"]);
    // 65 mg/dL: low by default (< 70), normal for p2 (>= 60).
    hub.ingest(vec![glucose("w2", 65.0, at(0))]).await;
    assert!(hub.open_rules("p2").await.is_empty());

    // Bad input: problem documents with the rule engine's reason.
    for (body, needle) in [
        (json!({"spo2_scale": 3}), "SpO2 scale 3"),
        (
            json!({"thresholds": {"hypoglycaemia_level1_below_mg_dl": 50.0}}),
            "hypoglycaemia level 2 must be below level 1",
        ),
        (json!({"baseline": {"k": 0.0}}), "baseline.k"),
    ] {
        let resp = hub
            .put("/api/v1/patients/p1/rule-settings", &hub.doctor, body)
            .await;
        assert_eq!(resp.status(), 400);
        assert_eq!(resp.headers()["content-type"], "application/problem+json");
        let p: Value = resp.json().await.expect("problem");
        assert_eq!(p["code"], "invalid_rule_settings", "{p}");
        assert!(
            p["detail"].as_str().unwrap_or_default().contains(needle),
            "{p}"
        );
    }
    let resp = hub
        .put(
            "/api/v1/patients/p1/rule-settings",
            &hub.doctor,
            json!({"bogus": 1}),
        )
        .await;
    assert_eq!(resp.status(), 400);
    let resp = hub
        .put(
            "/api/v1/patients/nobody/rule-settings",
            &hub.doctor,
            json!({}),
        )
        .await;
    assert_eq!(resp.status(), 404);
    // The rejected settings left p1's in place.
    let got = hub.get("/api/v1/patients/p1/rule-settings").await;
    assert_eq!(got["spo2_scale"], 2, "{got}");
}

fn battery(device: &str, percent: f64, t: Timestamp) -> Record {
    Record::Event(Event {
        device: DeviceId::new(device).expect("id"),
        time: t,
        received: Some(t),
        kind: EventKind::Battery { percent },
        source: Source::Other,
        patient: None,
    })
}

impl Hub {
    async fn wait_for_rules(&self, patient: &str, want: &[&str]) {
        for _ in 0..300 {
            if self.open_rules(patient).await == want {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!(
            "open alerts of {patient}: {:?}, wanted {want:?}",
            self.open_rules(patient).await
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_devices_raise_stale_data_and_low_batteries_raise_low_battery() {
    let mut cfg = config(0);
    cfg.cadence_s.insert("wearable".into(), 1);
    cfg.stale_factor = 2;
    cfg.stale_check_ms = 100;
    let mut hub = start(cfg).await;
    let t0 = Timestamp::now().saturating_add_millis(-600_000);
    let at = |s: i64| t0.saturating_add_millis(s * 1000);
    hub.ingest(vec![
        glucose("w1", 100.0, at(0)),
        glucose("w2", 100.0, at(0)),
    ])
    .await;
    // w2 keeps sending; w1 falls silent for more than 2 × 1 s.
    for i in 1..=4 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        hub.ingest(vec![glucose("w2", 100.0, at(i))]).await;
    }
    hub.wait_for_rules("p1", &["stale-data"]).await;
    assert!(hub.open_rules("p2").await.is_empty());
    let open = hub.get("/api/v1/alerts?status=open&patient=p1").await;
    assert_eq!(open["alerts"][0]["severity"], "warning", "{open}");
    assert!(
        open["alerts"][0]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("device w1"),
        "{open}"
    );
    // Data again: resolved by the system.
    hub.ingest(vec![glucose("w1", 100.0, at(10))]).await;
    hub.wait_for_rules("p1", &[]).await;
    let all = hub.get("/api/v1/alerts?patient=p1").await;
    assert_eq!(all["alerts"][0]["resolved_by"], "system", "{all}");

    // Battery: 15 % opens, 25 % keeps it open, 35 % resolves.
    hub.ingest(vec![battery("w2", 15.0, at(20))]).await;
    hub.wait_for_rules("p2", &["low-battery"]).await;
    hub.ingest(vec![battery("w2", 25.0, at(21))]).await;
    hub.wait_for_rules("p2", &["low-battery"]).await;
    hub.ingest(vec![battery("w2", 35.0, at(22))]).await;
    hub.wait_for_rules("p2", &[]).await;
    // 19.9 % is low, 20 % is not.
    hub.ingest(vec![battery("w2", 20.0, at(23))]).await;
    assert!(hub.open_rules("p2").await.is_empty());
    hub.ingest(vec![battery("w2", 19.9, at(24))]).await;
    hub.wait_for_rules("p2", &["low-battery"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heart_failure_weight_gain_opens_a_weight_gain_alert() {
    let mut hub = start(config(0)).await;
    let t0 = Timestamp::now().saturating_add_millis(-5 * 86_400_000);
    let day = |d: i64| t0.saturating_add_millis(d * 86_400_000);
    let weight = |v: f64, t: Timestamp| {
        let metric: Metric = "29463-7".parse().expect("weight");
        let mut r = Reading::quantity(DeviceId::new("w1").expect("id"), metric, v, t);
        r.received = Some(t);
        r.source = Source::Simulator;
        Record::Reading(r)
    };
    hub.ingest(vec![
        weight(80.0, day(0)),
        weight(81.0, day(1)),
        weight(82.0, day(3)),
    ])
    .await;
    assert!(hub.open_rules("p1").await.is_empty());
    hub.ingest(vec![weight(83.5, day(4))]).await;
    assert_eq!(hub.open_rules("p1").await, ["weight-gain"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_assigned_device_silent_since_the_hub_started_raises_stale_data() {
    let mut cfg = config(0);
    cfg.cadence_s.insert("wearable".into(), 1);
    cfg.stale_factor = 2;
    cfg.stale_check_ms = 100;
    // Spot-device kinds keep their long built-in cadence: nothing else alerts.
    assert_eq!(
        vigil_hub::alerts::cadence_s(&cfg, vigil_model::DeviceKind::GlucoseMeter),
        Some(8 * 3600)
    );
    let hub = start(cfg).await;
    hub.wait_for_rules("p1", &["stale-data"]).await;
    hub.wait_for_rules("p2", &["stale-data"]).await;
}

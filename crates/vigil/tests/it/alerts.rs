//! Alerts end to end with real processes: readings through a gateway reach the hub's rule
//! engine, an SSE client sees the alerts, an acknowledged alert never escalates and an
//! unacknowledged one escalates to the patient's backup clinician.

use crate::harness::{self, Proc, Site};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;
use vigil_model::{DeviceId, Metric, Reading, Record, Source, Timestamp};

/// The hub with a 2 s escalation period, set through the environment like an operator would.
fn spawn_hub(site: &Site) -> Proc {
    let mut child = harness::vigil()
        .args([
            "--log",
            "warn",
            "hub",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(site.hub_dir())
        .env("VIGIL_HUB__ESCALATE_AFTER_S", "2")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn hub");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if !sent && let Some(rest) = line.strip_prefix("hub listening on ") {
                let _ = tx.send(rest.trim().to_owned());
                sent = true;
            }
        }
    });
    let url = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("hub announces its address");
    Proc { child, url }
}

fn glucose(device: &str, v: f64, t: Timestamp) -> Record {
    let metric: Metric = "2339-0".parse().expect("glucose");
    let mut r = Reading::quantity(DeviceId::new(device).expect("id"), metric, v, t);
    r.source = Source::Manual;
    Record::Reading(r)
}

async fn send(
    c: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    token: &str,
    body: Value,
) -> Value {
    let r = c
        .request(method, url)
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("hub reachable");
    let status = r.status();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "{status}: {v}");
    v
}

/// SSE frames as (id, data).
struct Events {
    resp: reqwest::Response,
    buf: String,
}

impl Events {
    async fn next(&mut self) -> (i64, Value) {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let frame: String = self.buf.drain(..end + 2).collect();
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
                    return (id, data);
                }
                continue;
            }
            let chunk = tokio::time::timeout(Duration::from_secs(30), self.resp.chunk())
                .await
                .expect("an alert event in time")
                .expect("stream")
                .expect("stream open");
            self.buf.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn critical_readings_alert_a_live_client_and_only_the_unacknowledged_alert_escalates() {
    let site = Site::new();
    let dr_a = site.token("dr-a", "clinician");
    let hub = spawn_hub(&site);
    let gw = harness::spawn_gateway(&hub.url, &site.gateway_token_file, &site.outbox(), 100);
    let c = harness::client();
    let admin = site.admin.clone();
    for (p, d) in [("p-acked", "d-acked"), ("p-left", "d-left")] {
        send(
            &c,
            reqwest::Method::POST,
            format!("{}/api/v1/patients", hub.url),
            &admin,
            json!({"id": p}),
        )
        .await;
        send(
            &c,
            reqwest::Method::POST,
            format!("{}/api/v1/devices", hub.url),
            &admin,
            json!({"id": d, "kind": "wearable"}),
        )
        .await;
        send(
            &c,
            reqwest::Method::POST,
            format!("{}/api/v1/assignments", hub.url),
            &admin,
            json!({"device": d, "patient": p, "from": "2000-01-01T00:00:00Z"}),
        )
        .await;
        send(
            &c,
            reqwest::Method::PUT,
            format!("{}/api/v1/patients/{p}/care-team", hub.url),
            &admin,
            json!({"primary": ["dr-a"], "backup": ["dr-b"]}),
        )
        .await;
    }
    // A live client, connected before anything happens.
    let sse = reqwest::Client::new()
        .get(format!("{}/api/v1/alerts/stream", hub.url))
        .bearer_auth(&dr_a)
        .send()
        .await
        .expect("stream");
    assert_eq!(sse.status(), 200);
    let mut events = Events {
        resp: sse,
        buf: String::new(),
    };
    let t = Timestamp::now().saturating_add_millis(-10_000);
    harness::feed(
        &c,
        &gw.url,
        &[glucose("d-acked", 42.0, t), glucose("d-left", 41.0, t)],
    )
    .await;
    let mut opened = std::collections::HashMap::new();
    while opened.len() < 2 {
        let (_, e) = events.next().await;
        assert_eq!(e["to"], "open", "{e}");
        assert_eq!(e["rule_id"], "hypoglycaemia-level-2");
        opened.insert(
            e["patient"].as_str().unwrap_or_default().to_owned(),
            e["alert_id"].as_i64().expect("alert id"),
        );
    }
    let acked = opened["p-acked"];
    let left = opened["p-left"];
    send(
        &c,
        reqwest::Method::POST,
        format!("{}/api/v1/alerts/{acked}/acknowledge", hub.url),
        &dr_a,
        json!({}),
    )
    .await;
    let (_, e) = events.next().await;
    assert_eq!(
        (e["alert_id"].as_i64(), e["to"].as_str()),
        (Some(acked), Some("acknowledged"))
    );
    assert_eq!(e["actor"], "dr-a");
    // Only the other patient's alert escalates, to level 1 (backup clinicians).
    let (_, e) = events.next().await;
    assert_eq!(
        (e["alert_id"].as_i64(), e["to"].as_str()),
        (Some(left), Some("escalated")),
        "{e}"
    );
    assert_eq!(e["escalation_level"], 1);
    let a = send(
        &c,
        reqwest::Method::GET,
        format!("{}/api/v1/alerts/{acked}", hub.url),
        &admin,
        Value::Null,
    )
    .await;
    assert_eq!(a["alert"]["status"], "acknowledged");
    assert_eq!(a["alert"]["escalation_level"], 0);
    let n = send(
        &c,
        reqwest::Method::GET,
        format!("{}/api/v1/notifications", hub.url),
        &admin,
        Value::Null,
    )
    .await;
    let escalations: Vec<(&str, i64)> = n["notifications"]
        .as_array()
        .expect("list")
        .iter()
        .filter(|n| n["payload"]["event"] == "escalated")
        .map(|n| {
            (
                n["target"].as_str().unwrap_or_default(),
                n["alert_id"].as_i64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(escalations, [("dr-b", left)], "{n}");
}

//! Alerts end to end with real processes: readings through a gateway reach the hub's rule
//! engine, an SSE client sees the alerts, an acknowledged alert never escalates and an
//! unacknowledged one escalates to the patient's backup clinician.

use crate::harness::{self, Site};
use serde_json::{Value, json};
use vigil_model::{DeviceId, Metric, Reading, Record, Source, Timestamp};

fn glucose(device: &str, v: f64, t: Timestamp) -> Record {
    let metric: Metric = "2339-0".parse().expect("glucose");
    let mut r = Reading::quantity(DeviceId::new(device).expect("id"), metric, v, t);
    r.source = Source::Manual;
    Record::Reading(r)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn critical_readings_alert_a_live_client_and_only_the_unacknowledged_alert_escalates() {
    let site = Site::new();
    let dr_a = site.token("dr-a", "clinician");
    let hub = harness::spawn_hub_with(
        &site.hub_dir(),
        "127.0.0.1:0",
        &[("VIGIL_HUB__ESCALATE_AFTER_S", "2")],
    );
    let gw = harness::spawn_gateway(&hub.url, &site.gateway_token_file, &site.outbox(), 100);
    let c = harness::client();
    let admin = site.admin.clone();
    for (p, d) in [("p-acked", "d-acked"), ("p-left", "d-left")] {
        harness::call(
            &c,
            reqwest::Method::POST,
            format!("{}/api/v1/patients", hub.url),
            &admin,
            json!({"id": p}),
        )
        .await;
        harness::call(
            &c,
            reqwest::Method::POST,
            format!("{}/api/v1/devices", hub.url),
            &admin,
            json!({"id": d, "kind": "wearable"}),
        )
        .await;
        harness::call(
            &c,
            reqwest::Method::POST,
            format!("{}/api/v1/assignments", hub.url),
            &admin,
            json!({"device": d, "patient": p, "from": "2000-01-01T00:00:00Z"}),
        )
        .await;
        harness::call(
            &c,
            reqwest::Method::PUT,
            format!("{}/api/v1/patients/{p}/care-team", hub.url),
            &admin,
            json!({"primary": ["dr-a"], "backup": ["dr-b"]}),
        )
        .await;
    }
    // A live client, connected before anything happens.
    let mut events = harness::AlertStream::open(&hub.url, &dr_a).await;
    let t = Timestamp::now().saturating_add_millis(-10_000);
    harness::feed(
        &c,
        &gw.url,
        &[glucose("d-acked", 42.0, t), glucose("d-left", 41.0, t)],
    )
    .await;
    let mut opened = std::collections::HashMap::new();
    while opened.len() < 2 {
        let e = events.next().await;
        assert_eq!(e["to"], "open", "{e}");
        assert_eq!(e["rule_id"], "hypoglycaemia-level-2");
        opened.insert(
            e["patient"].as_str().unwrap_or_default().to_owned(),
            e["alert_id"].as_i64().expect("alert id"),
        );
    }
    let acked = opened["p-acked"];
    let left = opened["p-left"];
    harness::call(
        &c,
        reqwest::Method::POST,
        format!("{}/api/v1/alerts/{acked}/acknowledge", hub.url),
        &dr_a,
        json!({}),
    )
    .await;
    let e = events.next().await;
    assert_eq!(
        (e["alert_id"].as_i64(), e["to"].as_str()),
        (Some(acked), Some("acknowledged"))
    );
    assert_eq!(e["actor"], "dr-a");
    // Only the other patient's alert escalates, to level 1 (backup clinicians).
    let e = events.next().await;
    assert_eq!(
        (e["alert_id"].as_i64(), e["to"].as_str()),
        (Some(left), Some("escalated")),
        "{e}"
    );
    assert_eq!(e["escalation_level"], 1);
    let a = harness::call(
        &c,
        reqwest::Method::GET,
        format!("{}/api/v1/alerts/{acked}", hub.url),
        &admin,
        Value::Null,
    )
    .await;
    assert_eq!(a["alert"]["status"], "acknowledged");
    assert_eq!(a["alert"]["escalation_level"], 0);
    let n = harness::call(
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

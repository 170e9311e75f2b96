//! Clinical scenarios end to end with real processes: a simulated sepsis reaches a NEWS2 high
//! alert that a clinician acknowledges before it escalates, and an edge alarm raised with the
//! hub down becomes exactly one hub alert with the reading's original time.

use crate::harness::{self, Proc, Site};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use vigil_model::{DeviceId, Metric, Reading, Record, Source, Timestamp};
use vigil_sim::{Cohort, Scenario, SimConfig};

const MINUTE_MS: i64 = 60_000;

/// A hub escalating unacknowledged alerts after `escalate_after_s`, set like an operator would.
fn spawn_hub(site: &Site, listen: &str, escalate_after_s: u64) -> Proc {
    let escalate = escalate_after_s.to_string();
    harness::spawn_hub_with(
        &site.hub_dir(),
        listen,
        &[("VIGIL_HUB__ESCALATE_AFTER_S", &escalate)],
    )
}

async fn alert_queue(c: &reqwest::Client, hub: &str) -> Option<u64> {
    let text = c
        .get(format!("{hub}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("vigil_hub_alert_queue "))
        .and_then(|v| v.trim().parse().ok())
}

/// Waits until the gateway's outbox is empty and the hub has evaluated everything it holds.
async fn wait_settled(c: &reqwest::Client, hub: &str, gateway: &str, limit: Duration) {
    let start = Instant::now();
    loop {
        let h = harness::gateway_health(c, gateway).await;
        if h["outbox"]["depth"] == 0 && alert_queue(c, hub).await == Some(0) {
            return;
        }
        assert!(start.elapsed() < limit, "not settled in {limit:?}: {h}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn alerts_of(c: &reqwest::Client, hub: &str, admin: &str, patient: &str) -> Vec<Value> {
    let v = harness::call(
        c,
        reqwest::Method::GET,
        format!("{hub}/api/v1/alerts?status=all&patient={patient}"),
        admin,
        Value::Null,
    )
    .await;
    v["alerts"].as_array().expect("alerts").clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_simulated_deterioration_reaches_a_news2_high_alert_that_a_clinician_acknowledges_without_escalation()
 {
    const ESCALATE_AFTER_S: u64 = 3;
    let site = Site::new();
    let dr_a = site.token("dr-a", "clinician");
    let hub = spawn_hub(&site, "127.0.0.1:0", ESCALATE_AFTER_S);
    let gw = harness::spawn_gateway(&hub.url, &site.gateway_token_file, &site.outbox(), 500);
    let c = harness::client();
    let admin = site.admin.clone();

    // Two simulated patients, 45 minutes ago; sepsis for the first one, fully developed
    // after 20 minutes, so the first observation round (30 minutes in) finds it.
    let now = Timestamp::now().0;
    let start = Timestamp((now - 45 * MINUTE_MS).div_euclid(1000) * 1000);
    let mut cohort = Cohort::new(SimConfig::new(11, 2, start)).expect("cohort");
    let onset = cohort
        .inject(
            0,
            Scenario::Sepsis {
                duration: Duration::from_secs(20 * 60),
            },
            start.saturating_add_millis(MINUTE_MS),
        )
        .expect("inject sepsis");
    let round = onset.saturating_add_millis(30 * MINUTE_MS);
    let mut records = Vec::new();
    cohort.advance(round.saturating_add_millis(4 * MINUTE_MS), &mut records);
    assert!(cohort.now().0 < now, "all simulated data is in the past");
    let septic = cohort.patients()[0].id.to_string();
    let well = cohort.patients()[1].id.to_string();

    // Enrol the cohort through the API.
    for p in cohort.patients() {
        let v = serde_json::to_value(p).expect("patient");
        harness::call(
            &c,
            reqwest::Method::POST,
            format!("{}/api/v1/patients", hub.url),
            &admin,
            v,
        )
        .await;
    }
    for d in cohort.devices() {
        let v = serde_json::to_value(d).expect("device");
        harness::call(
            &c,
            reqwest::Method::POST,
            format!("{}/api/v1/devices", hub.url),
            &admin,
            v,
        )
        .await;
    }
    for a in cohort.assignments() {
        let v = serde_json::to_value(a).expect("assignment");
        harness::call(
            &c,
            reqwest::Method::POST,
            format!("{}/api/v1/assignments", hub.url),
            &admin,
            v,
        )
        .await;
    }
    for p in [&septic, &well] {
        harness::call(
            &c,
            reqwest::Method::PUT,
            format!("{}/api/v1/patients/{p}/care-team", hub.url),
            &admin,
            json!({"primary": ["dr-a"], "backup": ["dr-b"]}),
        )
        .await;
        // The nurse on the round: alert, on air. Nothing to score yet: no readings.
        let r = harness::call(
            &c,
            reqwest::Method::POST,
            format!("{}/api/v1/patients/{p}/assessments", hub.url),
            &dr_a,
            json!({"consciousness": "A", "supplemental_oxygen": false, "time": round.to_rfc3339()}),
        )
        .await;
        assert_eq!(r["alerting_rules"], json!([]), "{r}");
    }

    // A live client, connected before any data flows.
    let mut events = harness::AlertStream::open(&hub.url, &dr_a).await;
    let time = |r: &Record| match r {
        Record::Reading(r) => r.time,
        Record::Event(e) => e.time,
    };
    assert!(
        records.windows(2).all(|w| time(&w[0]) <= time(&w[1])),
        "in time order"
    );
    harness::feed(&c, &gw.url, &records).await;

    // Escalations of the other (unacknowledged) alerts show the escalation pass is running.
    let mut others_escalated = 0;
    let deadline = Instant::now() + Duration::from_secs(40);
    let news2 = loop {
        let e = events
            .next_before(deadline)
            .await
            .expect("a news2 open transition for the septic patient in time");
        if e["to"] == "escalated" {
            others_escalated += 1;
        }
        if e["to"] == "open" && e["rule_id"] == "news2" {
            assert_eq!(e["patient"], septic, "only the septic patient: {e}");
            break e["alert_id"].as_i64().expect("alert id");
        }
    };
    let a = harness::call(
        &c,
        reqwest::Method::GET,
        format!("{}/api/v1/alerts/{news2}", hub.url),
        &admin,
        Value::Null,
    )
    .await;
    assert_eq!(a["alert"]["severity"], "critical", "{a}");
    let message = a["alert"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("high risk"), "{a}");
    assert!(a["alert"]["value"].as_f64().unwrap_or(0.0) >= 7.0, "{a}");

    let r = harness::call(
        &c,
        reqwest::Method::POST,
        format!("{}/api/v1/alerts/{news2}/acknowledge", hub.url),
        &dr_a,
        json!({}),
    )
    .await;
    assert_eq!(r["alert"]["status"], "acknowledged", "{r}");
    assert_eq!(
        r["alert"]["escalation_level"], 0,
        "acknowledged before escalation: {r}"
    );

    // Well past the escalation period: the acknowledged alert never escalates.
    let quiet_until = Instant::now() + Duration::from_secs(ESCALATE_AFTER_S * 2 + 1);
    let mut acked = false;
    while let Some(e) = events.next_before(quiet_until).await {
        if e["alert_id"] != news2 {
            if e["to"] == "escalated" {
                others_escalated += 1;
            }
            continue;
        }
        match e["to"].as_str() {
            Some("acknowledged") => {
                assert_eq!(e["actor"], "dr-a", "{e}");
                acked = true;
            }
            _ => panic!("the acknowledged alert changed again: {e}"),
        }
    }
    assert!(acked, "the stream carried the acknowledgement");
    assert!(
        others_escalated > 0,
        "the septic patient's unacknowledged threshold alerts escalated meanwhile"
    );
    let a = harness::call(
        &c,
        reqwest::Method::GET,
        format!("{}/api/v1/alerts/{news2}", hub.url),
        &admin,
        Value::Null,
    )
    .await;
    assert_eq!(a["alert"]["status"], "acknowledged", "{a}");
    assert_eq!(a["alert"]["escalation_level"], 0, "{a}");
    let n = harness::call(
        &c,
        reqwest::Method::GET,
        format!("{}/api/v1/notifications", hub.url),
        &admin,
        Value::Null,
    )
    .await;
    let escalated: Vec<&Value> = n["notifications"]
        .as_array()
        .expect("list")
        .iter()
        .filter(|x| x["alert_id"] == news2 && x["payload"]["event"] == "escalated")
        .collect();
    assert!(escalated.is_empty(), "{escalated:?}");

    // Everything delivered and evaluated: the patient without the scenario has no NEWS2 alert.
    wait_settled(&c, &hub.url, &gw.url, Duration::from_secs(30)).await;
    let other: Vec<Value> = alerts_of(&c, &hub.url, &admin, &well)
        .await
        .into_iter()
        .filter(|a| a["rule_id"] == "news2")
        .collect();
    assert!(other.is_empty(), "{other:?}");
    let mine: Vec<Value> = alerts_of(&c, &hub.url, &admin, &septic)
        .await
        .into_iter()
        .filter(|a| a["rule_id"] == "news2")
        .collect();
    assert_eq!(mine.len(), 1, "{mine:?}");
    eprintln!(
        "DEBUG septic {:#?}",
        alerts_of(&c, &hub.url, &admin, &septic).await
    );
    eprintln!(
        "DEBUG well {:#?}",
        alerts_of(&c, &hub.url, &admin, &well).await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_hub_unreachable_an_edge_alarm_fires_and_after_reconnect_exactly_one_hub_alert_exists_with_the_original_time()
 {
    let site = Site::new();
    let port = harness::free_port();
    let listen = format!("127.0.0.1:{port}");
    let hub_url = format!("http://{listen}");
    let c = harness::client();
    let (patient, device) = ("p-hypo", "d-glucose");
    {
        let hub = spawn_hub(&site, &listen, 300);
        for (path, body) in [
            ("patients", json!({"id": patient})),
            ("devices", json!({"id": device, "kind": "glucose-meter"})),
            (
                "assignments",
                json!({"device": device, "patient": patient, "from": "2000-01-01T00:00:00Z"}),
            ),
        ] {
            harness::call(
                &c,
                reqwest::Method::POST,
                format!("{}/api/v1/{path}", hub.url),
                &site.admin,
                body,
            )
            .await;
        }
    }

    let topic = harness::unique("vigil-scenario-alarm");
    let mut alarms = harness::mqtt_subscriber(&topic).await;
    let mut cmd = harness::vigil();
    cmd.args([
        "--log",
        "warn",
        "gateway",
        "--hub-url",
        &hub_url,
        "--listen",
        "127.0.0.1:0",
        "--token-file",
    ])
    .arg(&site.gateway_token_file)
    .arg("--outbox")
    .arg(site.outbox())
    .args(["--edge-alarm", &format!("mqtt://127.0.0.1:1883/{topic}")])
    .env("VIGIL_GATEWAY__BACKOFF_MIN_MS", "50")
    .env("VIGIL_GATEWAY__BACKOFF_MAX_MS", "500");
    let gw = harness::spawn_announcing(cmd, "gateway listening on ");
    // Give the alarm publisher its broker connection.
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Glucose 45 mg/dL measured ten minutes ago (whole milliseconds survive every hop).
    let t = Timestamp(Timestamp::now().0 - 10 * MINUTE_MS);
    let glucose: Metric = "2339-0".parse().expect("glucose");
    let mut r = Reading::quantity(DeviceId::new(device).expect("id"), glucose, 45.0, t);
    r.source = Source::Manual;
    let sent = Instant::now();
    harness::feed(&c, &gw.url, &[Record::Reading(r)]).await;
    let (at, _topic, body) = tokio::time::timeout(Duration::from_secs(1), alarms.recv())
        .await
        .expect("local alarm within 1 s with no hub")
        .expect("subscriber alive");
    assert!(at.duration_since(sent) < Duration::from_secs(1));
    assert_eq!(body["rule"], "hypoglycaemia-level-2", "{body}");
    let h = harness::gateway_health(&c, &gw.url).await;
    assert_eq!(h["hub"]["connected"], false, "{h}");

    // The hub comes back on its address; the outbox drains.
    let hub = spawn_hub(&site, &listen, 300);
    wait_settled(&c, &hub.url, &gw.url, Duration::from_secs(30)).await;
    let alerts = alerts_of(&c, &hub.url, &site.admin, patient).await;
    let hypo: Vec<&Value> = alerts
        .iter()
        .filter(|a| a["rule_id"] == "hypoglycaemia-level-2")
        .collect();
    assert_eq!(hypo.len(), 1, "exactly one alert: {alerts:?}");
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    let opened = hypo[0]["opened_at"].as_str().expect("opened_at");
    assert_eq!(
        Timestamp::parse(opened).expect("time"),
        t,
        "the alert keeps the device time: {}",
        hypo[0]
    );
    let id = hypo[0]["id"].as_i64().expect("id");
    let a = harness::call(
        &c,
        reqwest::Method::GET,
        format!("{}/api/v1/alerts/{id}", hub.url),
        &site.admin,
        Value::Null,
    )
    .await;
    let opens = a["transitions"]
        .as_array()
        .expect("transitions")
        .iter()
        .filter(|t| t["to"] == "open")
        .count();
    assert_eq!(opens, 1, "{a}");
    // No reading or alert arrives late, twice.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(alerts_of(&c, &hub.url, &site.admin, patient).await.len(), 1);
}

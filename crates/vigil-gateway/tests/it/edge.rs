//! Edge rules with no hub reachable: a critical reading from every kind of source raises the
//! local alarm (a webhook receiver run here, an MQTT subscriber on the real Mosquitto) within
//! one second, once per condition, and the outbox holds the alert with the reading's time.

use crate::{gateway, records, unique, wait_until};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use vigil_gateway::{AlarmAction, EdgeConfig, MqttConfig};
use vigil_model::{EventKind, Record, Timestamp};

/// A local HTTP receiver: every POST body, with the instant it arrived.
async fn webhook() -> (String, mpsc::UnboundedReceiver<(Instant, Value)>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/alarm",
        axum::routing::post(move |body: axum::body::Bytes| {
            let tx = tx.clone();
            async move {
                let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let _ = tx.send((Instant::now(), v));
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind webhook");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}/alarm"), rx)
}

/// An MQTT subscriber on `filter`: every message, with the instant it arrived. Returns once
/// the broker confirmed the subscription.
async fn subscriber(filter: &str) -> mpsc::UnboundedReceiver<(Instant, String, Value)> {
    let mut o = MqttOptions::new(unique("edge-sub"), "127.0.0.1", 1883);
    o.set_keep_alive(Duration::from_secs(5));
    let (client, mut el) = AsyncClient::new(o, 64);
    client
        .subscribe(filter, QoS::AtLeastOnce)
        .await
        .expect("queue subscribe");
    let (tx, rx) = mpsc::unbounded_channel();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let _client = client;
        let mut ready = Some(ready_tx);
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    if let Some(r) = ready.take() {
                        let _ = r.send(());
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let v: Value = serde_json::from_slice(&p.payload).unwrap_or(Value::Null);
                    let _ = tx.send((Instant::now(), p.topic.clone(), v));
                }
                Ok(_) => {}
                Err(e) => panic!("MQTT broker at 127.0.0.1:1883 unreachable: {e}"),
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(10), ready_rx)
        .await
        .expect("subscription confirmed (is Mosquitto running?)")
        .expect("subscriber alive");
    rx
}

fn alerts(recs: &[Record]) -> Vec<(String, String, Timestamp, Option<f64>)> {
    recs.iter()
        .filter_map(|r| match r {
            Record::Event(e) => match &e.kind {
                EventKind::Alert { rule, value, .. } => {
                    Some((e.device.to_string(), rule.clone(), e.time, *value))
                }
                _ => None,
            },
            Record::Reading(_) => None,
        })
        .collect()
}

#[tokio::test]
async fn critical_readings_alarm_locally_within_a_second_without_the_hub() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (hook_url, mut hooks) = webhook().await;
    let alarm_root = unique("edge-alarms");
    let mut mqtt_alarms = subscriber(&format!("{alarm_root}/#")).await;
    let prefix = unique("edge-devices");
    let edge = EdgeConfig {
        actions: vec![
            AlarmAction::Console,
            format!("mqtt://127.0.0.1:1883/{alarm_root}/{{device}}")
                .parse()
                .expect("mqtt action"),
            hook_url.parse().expect("webhook action"),
        ],
        ..EdgeConfig::default()
    };
    let mqtt_in = MqttConfig {
        broker: "127.0.0.1:1883".into(),
        client_id: unique("edge-gw"),
        topic_prefix: prefix.clone(),
        reconnect_min_ms: 50,
        reconnect_max_ms: 500,
        ..MqttConfig::default()
    };
    let gw = gateway(dir.path(), None, Some(mqtt_in), |c| {
        c.listen = Some("127.0.0.1:0".parse().expect("addr"));
        c.edge = Some(edge);
    })
    .await;
    let base = format!("http://{}", gw.local_addr().expect("listening"));
    vigil_tls::install_default_provider();
    let http = reqwest::Client::new();

    // 1. Local HTTP source: glucose 45 mg/dL, a reading taken an hour ago.
    let t = "2026-01-01T08:00:00Z";
    let reading_time = Timestamp::parse(t).expect("time");
    let sent = Instant::now();
    let r = http
        .post(format!("{base}/v1/records"))
        .json(&json!([{"reading": {"device": "cgm-7", "code": "2339-0", "value": 45, "time": t}}]))
        .send()
        .await
        .expect("post");
    assert!(r.status().is_success(), "{}", r.status());
    let (at, body) = tokio::time::timeout(Duration::from_secs(1), hooks.recv())
        .await
        .expect("webhook alarm within 1 s")
        .expect("webhook alive");
    assert!(at.duration_since(sent) < Duration::from_secs(1));
    assert_eq!(body["rule"], "hypoglycaemia-level-2");
    assert_eq!(body["device"], "cgm-7");
    assert_eq!(body["severity"], "critical");
    assert_eq!(body["value"], 45.0);
    let (at, topic, body) = tokio::time::timeout(Duration::from_secs(1), mqtt_alarms.recv())
        .await
        .expect("MQTT alarm within 1 s")
        .expect("subscriber alive");
    assert!(at.duration_since(sent) < Duration::from_secs(1));
    assert_eq!(topic, format!("{alarm_root}/cgm-7"));
    assert_eq!(body["rule"], "hypoglycaemia-level-2");

    // Still low, a minute later, and an untrustworthy value: no second alarm.
    let r = http
        .post(format!("{base}/v1/records"))
        .json(&json!([
            {"reading": {"device": "cgm-7", "code": "2339-0", "value": 44, "time": "2026-01-01T08:01:00Z"}},
            {"reading": {"device": "cgm-8", "code": "2339-0", "value": 30, "time": t, "flags": ["questionable"]}},
        ]))
        .send()
        .await
        .expect("post");
    assert!(r.status().is_success(), "{}", r.status());

    // 2. MQTT device ingress: a fall.
    let mut o = MqttOptions::new(unique("edge-pub"), "127.0.0.1", 1883);
    o.set_keep_alive(Duration::from_secs(5));
    let (pubc, mut el) = AsyncClient::new(o, 16);
    let pub_loop = tokio::spawn(async move { while el.poll().await.is_ok() {} });
    let ok = wait_until(Duration::from_secs(10), async || {
        gw.adapters().mqtt.is_some_and(|s| s.subscribed)
    })
    .await;
    assert!(ok, "gateway MQTT ingress subscribed");
    let fall_time = "2026-01-01T08:05:00Z";
    let sent = Instant::now();
    pubc.publish(
        format!("{prefix}/pendant-2/json"),
        QoS::AtLeastOnce,
        false,
        serde_json::to_vec(
            &json!({"event": {"time": fall_time, "kind": {"fall": {"confidence": 0.8}}}}),
        )
        .expect("json"),
    )
    .await
    .expect("publish");
    let (at, body) = tokio::time::timeout(Duration::from_secs(1), hooks.recv())
        .await
        .expect("fall alarm within 1 s")
        .expect("webhook alive");
    assert!(at.duration_since(sent) < Duration::from_secs(1));
    assert_eq!(body["rule"], "fall");
    assert_eq!(body["device"], "pendant-2");

    // 3. In-process source (the demo's path): SpO2 82 % at 1 Hz for 61 s.
    let spo2: vigil_model::Metric = "59408-5".parse().expect("metric");
    let start = Timestamp::parse("2026-01-01T09:00:00Z").expect("time");
    let batch: Vec<Record> = (0..=61)
        .map(|s| {
            Record::Reading(vigil_model::Reading::quantity(
                vigil_model::DeviceId::new("ox-3").expect("id"),
                spo2,
                82.0,
                Timestamp(start.0 + s * 1000),
            ))
        })
        .collect();
    gw.outbox().append(batch).await.expect("append");
    let (_, body) = tokio::time::timeout(Duration::from_secs(1), hooks.recv())
        .await
        .expect("desaturation alarm within 1 s")
        .expect("webhook alive");
    assert_eq!(body["rule"], "spo2-desaturation");
    assert_eq!(body["device"], "ox-3");

    // No more alarms than the three conditions.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(hooks.try_recv().is_err(), "an extra alarm");

    // The outbox holds one alert per condition, with the triggering reading's device time.
    let ok = wait_until(Duration::from_secs(2), async || {
        alerts(&records(&gw).await).len() >= 3
    })
    .await;
    assert!(ok, "alerts in the outbox");
    let got = alerts(&records(&gw).await);
    assert_eq!(got.len(), 3, "{got:?}");
    assert!(got.contains(&(
        "cgm-7".into(),
        "hypoglycaemia-level-2".into(),
        reading_time,
        Some(45.0)
    )));
    assert!(got.contains(&(
        "pendant-2".into(),
        "fall".into(),
        Timestamp::parse(fall_time).expect("time"),
        Some(0.8)
    )));
    assert!(got.contains(&(
        "ox-3".into(),
        "spo2-desaturation".into(),
        Timestamp(start.0 + 60_000),
        Some(82.0)
    )));
    let edge = gw.edge().expect("edge status");
    assert_eq!(edge.alarms_total, 3);
    assert_eq!(edge.alerts_appended_total, 3);
    assert_eq!(edge.action_failures_total, 0);
    assert!(!gw.status().connected, "no hub in this test");

    pub_loop.abort();
    gw.shutdown(Duration::from_millis(100)).await;
}

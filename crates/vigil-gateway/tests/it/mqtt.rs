//! MQTT device ingress against the real Mosquitto at 127.0.0.1:1883.

use crate::{gateway, records, unique, wait_until};
use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
use std::time::Duration;
use vigil_gateway::adapters::Quarantine;
use vigil_gateway::{Gateway, MqttConfig, MqttStatus};
use vigil_model::{Record, Timestamp};

const BROKER: &str = "127.0.0.1:1883";

fn mqtt_cfg(client_id: &str, prefix: &str) -> MqttConfig {
    MqttConfig {
        broker: BROKER.into(),
        client_id: client_id.into(),
        topic_prefix: prefix.into(),
        reconnect_min_ms: 50,
        reconnect_max_ms: 500,
        ..MqttConfig::default()
    }
}

fn status(gw: &Gateway) -> MqttStatus {
    gw.adapters().mqtt.expect("mqtt adapter status")
}

/// Waits until the adapter's subscription is confirmed `n` times in total.
async fn wait_subscribed(gw: &Gateway, n: u64) {
    let ok = wait_until(Duration::from_secs(10), async || {
        let s = status(gw);
        s.subscribed && s.subscriptions_total >= n
    })
    .await;
    assert!(
        ok,
        "adapter not subscribed to the broker at {BROKER} (is Mosquitto running?): {:?}",
        status(gw)
    );
}

/// A client that connects, runs `f` with it and waits for `acks` PUBACKs, then disconnects.
async fn with_client(client_id: &str, clean: bool, acks: usize, msgs: Vec<(String, Vec<u8>)>) {
    let mut o = MqttOptions::new(client_id, "127.0.0.1", 1883);
    o.set_clean_session(clean)
        .set_keep_alive(Duration::from_secs(5));
    let (client, mut el) = AsyncClient::new(o, 256);
    for (topic, payload) in msgs {
        client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .expect("queue publish");
    }
    let mut connected = false;
    let mut acked = 0;
    let done = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => connected = true,
                Ok(Event::Incoming(Packet::PubAck(_))) => acked += 1,
                Ok(_) => {}
                Err(e) => panic!("MQTT broker at {BROKER} unreachable or refused: {e}"),
            }
            if connected && acked >= acks {
                break;
            }
        }
    })
    .await;
    assert!(
        done.is_ok(),
        "publisher timed out (connected {connected}, acked {acked})"
    );
    client.disconnect().await.expect("disconnect");
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while let Ok(ev) = el.poll().await {
            if matches!(ev, Event::Outgoing(Outgoing::Disconnect)) {
                break;
            }
        }
    })
    .await;
}

async fn publish(msgs: Vec<(String, Vec<u8>)>) {
    let n = msgs.len();
    with_client(&unique("vigil-test-pub"), true, n, msgs).await;
}

/// Ends the broker session of `client_id` (clean session connect), so tests leave nothing.
async fn purge_session(client_id: &str) {
    with_client(client_id, true, 0, Vec::new()).await;
}

fn json_reading(device: Option<&str>, value: f64, time: &str) -> Vec<u8> {
    let mut r = serde_json::json!({"reading": {"code": "8867-4", "value": value, "time": time}});
    if let Some(d) = device {
        r["reading"]["device"] = d.into();
    }
    r.to_string().into_bytes()
}

fn heart_rates(recs: &[Record], device: &str) -> Vec<f64> {
    recs.iter()
        .filter(|r| r.device().as_str() == device)
        .filter_map(|r| match r {
            Record::Reading(r) => r.value,
            Record::Event(_) => None,
        })
        .collect()
}

#[tokio::test]
async fn mqtt_json_and_ble_messages_reach_the_outbox_and_bad_ones_the_quarantine() {
    let dir = tempfile::tempdir().expect("tmp");
    let id = unique("vigil-test-gw");
    let prefix = unique("vigil-test/devices");
    let gw = gateway(dir.path(), None, Some(mqtt_cfg(&id, &prefix)), |c| {
        c.listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
    })
    .await;
    wait_subscribed(&gw, 1).await;

    let t = |d: &str, f: &str| format!("{prefix}/{d}/{f}");
    let many = format!(
        "[{},{}]",
        String::from_utf8(json_reading(Some("d-json"), 61.0, "2024-05-01T12:00:01Z"))
            .expect("utf8"),
        String::from_utf8(json_reading(None, 62.0, "2024-05-01T12:00:02Z")).expect("utf8"),
    );
    publish(vec![
        (
            t("d-json", "json"),
            json_reading(None, 60.0, "2024-05-01T12:00:00Z"),
        ),
        (t("d-json", "json"), many.into_bytes()),
        // Raw GATT heart rate notifications: flags 0, 72 and 73 bpm.
        (t("strap-7", "ble_2A37"), vec![0x00, 0x48]),
        (t("strap-7", "ble%3A2A37"), vec![0x00, 0x49]),
        // Undecodable: quarantined, acknowledged, and they block nothing behind them.
        (t("strap-7", "ble_2A37"), vec![0xFF]),
        (
            t("d-json", "json"),
            json_reading(Some("someone-else"), 1.0, "2024-05-01T12:00:00Z"),
        ),
        (t("strap-7", "cbor"), vec![1, 2, 3]),
        (t("strap-7", "ble_2A37"), vec![0x00, 0x4A]),
    ])
    .await;

    let ok = wait_until(Duration::from_secs(10), async || {
        let s = status(&gw);
        s.committed_total == 5 && s.quarantined_total == 3
    })
    .await;
    assert!(ok, "all messages handled: {:?}", status(&gw));
    let recs = records(&gw).await;
    assert_eq!(recs.len(), 6);
    assert_eq!(heart_rates(&recs, "d-json"), [60.0, 61.0, 62.0]);
    assert_eq!(heart_rates(&recs, "strap-7"), [72.0, 73.0, 74.0]);
    assert!(recs.iter().all(|r| r.received().is_some()));

    let q = Quarantine::open(dir.path().join("quarantine.db"), u64::MAX).expect("quarantine");
    let entries = q.entries().expect("entries");
    assert_eq!(entries.len(), 3);
    assert_eq!(entries[0].topic, t("strap-7", "ble_2A37"));
    assert_eq!(entries[0].payload.as_deref(), Some(&[0xFF][..]));
    assert!(
        entries[0].reason.starts_with("undecodable"),
        "{:?}",
        entries[0]
    );
    assert!(entries[1].reason.starts_with("device_mismatch"));
    assert!(entries[2].reason.starts_with("unknown_format"));
    assert!(entries.iter().all(|e| e.adapter == "mqtt"));

    // The counters are on /health.
    let url = format!("http://{}/health", gw.local_addr().expect("http"));
    let j: serde_json::Value = reqwest::get(&url)
        .await
        .expect("health")
        .json()
        .await
        .expect("json");
    assert_eq!(j["adapters"]["mqtt"]["connected"], true);
    assert_eq!(j["adapters"]["mqtt"]["committed_total"], 5);
    assert_eq!(j["adapters"]["mqtt"]["quarantined_total"], 3);

    // Everything was acknowledged: a new instance with the same session gets nothing again.
    gw.shutdown(Duration::ZERO).await;
    let gw = gateway(dir.path(), None, Some(mqtt_cfg(&id, &prefix)), |_| {}).await;
    wait_subscribed(&gw, 1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(status(&gw).messages_total, 0, "nothing redelivered");
    assert_eq!(records(&gw).await.len(), 6);
    gw.shutdown(Duration::ZERO).await;
    purge_session(&id).await;
}

#[tokio::test]
async fn mqtt_crash_between_receipt_and_commit_redelivers_exactly_once() {
    let dir = tempfile::tempdir().expect("tmp");
    let id = unique("vigil-test-gw");
    let prefix = unique("vigil-test/devices");
    let topic = format!("{prefix}/bed-3/json");

    // The first instance "crashes" right after receiving the message: no commit, no PUBACK.
    let crashing = MqttConfig {
        crash_before_commit: true,
        ..mqtt_cfg(&id, &prefix)
    };
    let gw = gateway(dir.path(), None, Some(crashing), |_| {}).await;
    wait_subscribed(&gw, 1).await;
    publish(vec![(
        topic.clone(),
        json_reading(None, 88.0, "2024-05-01T08:00:00Z"),
    )])
    .await;
    let crashed = wait_until(Duration::from_secs(10), async || {
        status(&gw)
            .last_error
            .is_some_and(|e| e.contains("fault injection"))
    })
    .await;
    assert!(
        crashed,
        "the adapter received the message: {:?}",
        status(&gw)
    );
    assert!(
        records(&gw).await.is_empty(),
        "nothing committed before the crash"
    );
    gw.shutdown(Duration::ZERO).await;

    // While the gateway is down, another message is published: the session keeps it.
    publish(vec![(
        topic.clone(),
        json_reading(None, 89.0, "2024-05-01T08:00:01Z"),
    )])
    .await;

    let gw = gateway(dir.path(), None, Some(mqtt_cfg(&id, &prefix)), |_| {}).await;
    let ok = wait_until(Duration::from_secs(10), async || {
        status(&gw).committed_total >= 2
    })
    .await;
    assert!(
        ok,
        "both messages delivered after the restart: {:?}",
        status(&gw)
    );
    // Give any duplicate a chance to show up.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let recs = records(&gw).await;
    let at = |t: &str| {
        let t = Timestamp::parse(t).expect("time");
        recs.iter()
            .filter(|r| r.device().as_str() == "bed-3" && r.time() == t)
            .count()
    };
    assert_eq!(
        at("2024-05-01T08:00:00Z"),
        1,
        "the crashed message, exactly once"
    );
    assert_eq!(
        at("2024-05-01T08:00:01Z"),
        1,
        "the offline message, exactly once"
    );
    assert_eq!(recs.len(), 2);
    gw.shutdown(Duration::ZERO).await;

    // And once acknowledged, it is not delivered a third time.
    let gw = gateway(dir.path(), None, Some(mqtt_cfg(&id, &prefix)), |_| {}).await;
    wait_subscribed(&gw, 1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(status(&gw).messages_total, 0);
    assert_eq!(records(&gw).await.len(), 2);
    gw.shutdown(Duration::ZERO).await;
    purge_session(&id).await;
}

#[tokio::test]
async fn mqtt_reconnects_and_resubscribes_after_the_broker_drops_it() {
    let dir = tempfile::tempdir().expect("tmp");
    let id = unique("vigil-test-gw");
    let prefix = unique("vigil-test/devices");
    let gw = gateway(dir.path(), None, Some(mqtt_cfg(&id, &prefix)), |_| {}).await;
    wait_subscribed(&gw, 1).await;

    // A second client with the same id makes the broker drop the adapter; its clean session
    // also discards the adapter's session, subscription included.
    purge_session(&id).await;
    let ok = wait_until(Duration::from_secs(10), async || {
        let s = status(&gw);
        s.connection_errors_total >= 1 && s.connects_total >= 2 && s.subscribed
    })
    .await;
    assert!(ok, "reconnected and subscribed again: {:?}", status(&gw));
    let s = status(&gw);
    assert!(s.subscriptions_total >= 2, "{s:?}");
    assert!(s.last_error.is_some(), "{s:?}");

    publish(vec![(
        format!("{prefix}/strap-9/ble_2A37"),
        vec![0x00, 0x50],
    )])
    .await;
    let ok = wait_until(Duration::from_secs(10), async || {
        status(&gw).committed_total == 1
    })
    .await;
    assert!(
        ok,
        "a message after the reconnect arrives: {:?}",
        status(&gw)
    );
    assert_eq!(heart_rates(&records(&gw).await, "strap-9"), [80.0]);
    gw.shutdown(Duration::ZERO).await;
    purge_session(&id).await;
}

#[tokio::test]
async fn mqtt_bad_configuration_is_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = vigil_gateway::GatewayConfig {
        token: "t".into(),
        outbox_path: dir.path().join("outbox.db"),
        mqtt: Some(MqttConfig {
            topic_prefix: "vigil/#".into(),
            ..MqttConfig::default()
        }),
        ..vigil_gateway::GatewayConfig::default()
    };
    let err = Gateway::start(cfg).await.expect_err("refused");
    assert!(err.to_string().contains("topic_prefix"), "{err}");
}

/// Takes over the session of `client_id` (clean_session = false, so it survives), receives
/// whatever the broker resends without acknowledging it, and leaves.
async fn take_over_session(client_id: &str) -> usize {
    let mut o = MqttOptions::new(client_id, "127.0.0.1", 1883);
    o.set_clean_session(false)
        .set_manual_acks(true)
        .set_keep_alive(Duration::from_secs(5));
    let (client, mut el) = AsyncClient::new(o, 16);
    let mut received = 0;
    let mut connected = false;
    let _ = tokio::time::timeout(Duration::from_millis(400), async {
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => connected = true,
                Ok(Event::Incoming(Packet::Publish(_))) => received += 1,
                Ok(_) => {}
                // The adapter reconnecting takes the session back: expected.
                Err(_) if connected => break,
                Err(e) => panic!("MQTT broker at {BROKER} unreachable or refused: {e}"),
            }
        }
    })
    .await;
    assert!(connected, "took over the session");
    client.disconnect().await.expect("disconnect");
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while let Ok(ev) = el.poll().await {
            if matches!(ev, Event::Outgoing(Outgoing::Disconnect)) {
                break;
            }
        }
    })
    .await;
    received
}

#[tokio::test]
async fn mqtt_connection_lost_between_commit_and_puback_stores_once() {
    let dir = tempfile::tempdir().expect("tmp");
    let id = unique("vigil-test-gw");
    let prefix = unique("vigil-test/devices");
    let slow_ack = MqttConfig {
        delay_before_ack_ms: 1_000,
        ..mqtt_cfg(&id, &prefix)
    };
    let gw = gateway(dir.path(), None, Some(slow_ack), |_| {}).await;
    wait_subscribed(&gw, 1).await;
    publish(vec![(
        format!("{prefix}/bed-5/json"),
        json_reading(None, 77.0, "2024-05-01T09:00:00Z"),
    )])
    .await;
    let committed = wait_until(Duration::from_secs(10), async || {
        records(&gw).await.len() == 1
    })
    .await;
    assert!(committed, "committed: {:?}", status(&gw));
    // Committed, PUBACK not yet sent: the connection is taken away. The broker resends the
    // message to the intruder (unacknowledged) and, after the adapter reconnects, to it.
    assert_eq!(
        take_over_session(&id).await,
        1,
        "the message was still unacknowledged"
    );
    let ok = wait_until(Duration::from_secs(15), async || {
        status(&gw).redeliveries_total >= 1
    })
    .await;
    assert!(ok, "the redelivery was recognised: {:?}", status(&gw));
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(records(&gw).await.len(), 1, "stored once");
    gw.shutdown(Duration::ZERO).await;

    // The redelivered copy was acknowledged: nothing comes again.
    let gw = gateway(dir.path(), None, Some(mqtt_cfg(&id, &prefix)), |_| {}).await;
    wait_subscribed(&gw, 1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(status(&gw).messages_total, 0);
    assert_eq!(records(&gw).await.len(), 1);
    gw.shutdown(Duration::ZERO).await;
    purge_session(&id).await;
}

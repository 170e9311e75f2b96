//! MQTT device ingress through the real Mosquitto (127.0.0.1:1883) with the gateway process
//! killed between receipt and commit: after a restart the message arrives exactly once.

use crate::harness::*;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::process::Stdio;
use std::time::{Duration, Instant};

async fn publish_one(topic: &str, payload: Vec<u8>) {
    let id = format!("vigil-it-pub-{}-{}", std::process::id(), rand_suffix());
    let mut o = MqttOptions::new(id, "127.0.0.1", 1883);
    o.set_keep_alive(Duration::from_secs(5));
    let (client, mut el) = AsyncClient::new(o, 16);
    client
        .publish(topic, QoS::AtLeastOnce, false, payload)
        .await
        .expect("queue publish");
    let acked = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => return,
                Ok(_) => {}
                Err(e) => panic!("Mosquitto at 127.0.0.1:1883 is unreachable: {e}"),
            }
        }
    })
    .await;
    assert!(acked.is_ok(), "the broker acknowledged the publish");
    let _ = client.disconnect().await;
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

fn spawn_mqtt_gateway(
    site: &Site,
    client_id: &str,
    prefix: &str,
    fault: bool,
) -> std::process::Child {
    let mut cmd = vigil();
    cmd.args([
        "--log",
        "warn",
        "gateway",
        "--hub-url",
        "http://127.0.0.1:9",
        "--mqtt-broker",
        "127.0.0.1:1883",
        "--mqtt-client-id",
        client_id,
        "--listen",
        "127.0.0.1:0",
        "--token-file",
    ])
    .arg(&site.gateway_token_file)
    .arg("--outbox")
    .arg(site.outbox())
    .env("VIGIL_GATEWAY__MQTT__TOPIC_PREFIX", prefix)
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    if fault {
        cmd.env("VIGIL_FAULT", "mqtt-abort-before-commit");
    }
    cmd.spawn().expect("spawn gateway")
}

fn outbox_depth(site: &Site) -> u64 {
    let key = vigil_outbox::SecretKey::load(&site.outbox().with_extension("key")).expect("key");
    let ob = vigil_outbox::Outbox::open(vigil_outbox::OutboxConfig::new(site.outbox(), key))
        .expect("outbox");
    let d = ob.stats().depth;
    ob.close();
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_killed_between_mqtt_receipt_and_commit_gets_the_message_once_after_restart() {
    let site = Site::new();
    let tag = rand_suffix();
    let prefix = format!("vigil-it-{tag}/devices");
    let client_id = format!("vigil-it-gw-{tag}");

    // First run: subscribes (persistent session), then dies on the first message.
    let mut gw = spawn_mqtt_gateway(&site, &client_id, &prefix, true);
    tokio::time::sleep(Duration::from_secs(2)).await; // connect and subscribe
    let payload = serde_json::json!({"reading": {"code": "8867-4", "value": 64, "time": "2024-05-01T10:00:00Z"}});
    publish_one(
        &format!("{prefix}/strap-9/json"),
        payload.to_string().into_bytes(),
    )
    .await;
    let start = Instant::now();
    let status = loop {
        if let Some(s) = gw.try_wait().expect("wait") {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "the gateway did not receive the message"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        !status.success(),
        "the gateway was killed, not stopped: {status}"
    );
    assert_eq!(
        outbox_depth(&site),
        0,
        "nothing was committed before the kill"
    );

    // Restart without the fault: the broker redelivers the unacknowledged message.
    let mut gw = spawn_mqtt_gateway(&site, &client_id, &prefix, false);
    let start = Instant::now();
    let mut depth = 0;
    while start.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        depth = outbox_depth(&site);
        if depth > 0 {
            break;
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let final_depth = outbox_depth(&site);
    let _ = gw.kill();
    let _ = gw.wait();
    assert_eq!(
        (depth, final_depth),
        (1, 1),
        "the message arrived exactly once"
    );
    // Leave no persistent session behind on the broker.
    let mut o = MqttOptions::new(client_id, "127.0.0.1", 1883);
    o.set_clean_session(true);
    let (c, mut el) = AsyncClient::new(o, 4);
    let _ = tokio::time::timeout(Duration::from_secs(3), async {
        while let Ok(ev) = el.poll().await {
            if matches!(ev, Event::Incoming(Packet::ConnAck(_))) {
                break;
            }
        }
    })
    .await;
    let _ = c.disconnect().await;
}

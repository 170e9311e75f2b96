//! Integration tests of the gateway's device adapters, over real sockets (MLLP) and the real
//! Mosquitto broker at 127.0.0.1:1883 (MQTT; the tests fail, never skip, when it is down).

mod edge;
mod mllp;
mod mqtt;

use std::path::Path;
use std::time::Duration;
use vigil_gateway::{Gateway, GatewayConfig, MllpConfig, MqttConfig};
use vigil_model::Record;

/// A gateway whose hub is unreachable, so the outbox keeps everything for inspection.
pub async fn gateway(
    dir: &Path,
    mllp: Option<MllpConfig>,
    mqtt: Option<MqttConfig>,
    tweak: impl FnOnce(&mut GatewayConfig),
) -> Gateway {
    let mut cfg = GatewayConfig {
        id: "gw-test".into(),
        hub_url: "http://127.0.0.1:9".into(),
        token: "test-token".into(),
        outbox_path: dir.join("outbox.db"),
        mllp,
        mqtt,
        backoff_min_ms: 1_000,
        ..GatewayConfig::default()
    };
    tweak(&mut cfg);
    Gateway::start(cfg).await.expect("gateway starts")
}

/// Every record in the outbox, in sequence order.
pub async fn records(gw: &Gateway) -> Vec<Record> {
    let ob = gw.outbox().clone();
    tokio::task::spawn_blocking(move || {
        ob.read_after(0, 1_000_000, usize::MAX)
            .expect("outbox read")
            .into_iter()
            .map(|p| vigil_outbox::Outbox::decode(&p.payload).expect("record"))
            .collect()
    })
    .await
    .expect("join")
}

/// Polls `f` until it is true or `limit` passes; false on timeout.
pub async fn wait_until(limit: Duration, mut f: impl AsyncFnMut() -> bool) -> bool {
    let end = tokio::time::Instant::now() + limit;
    loop {
        if f().await {
            return true;
        }
        if tokio::time::Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A name no other test run uses (broker sessions and topics outlive a test process).
pub fn unique(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{tag}-{}-{nanos}", std::process::id())
}

//! Gateway-to-hub sync through real processes: exact counts, crashes on either side, outages.

use crate::harness::*;
use std::time::Duration;
use vigil_model::Record;
use vigil_sync::{Batch, WireRecord};

const LONG: Duration = Duration::from_secs(240);

#[tokio::test]
async fn gateway_to_hub_sync_of_100000_readings_is_exact() {
    let site = Site::new();
    let hub = spawn_hub(&site.hub_dir(), "127.0.0.1:0");
    let c = client();
    let mut g = load(100_000, 10);
    enrol(&c, &hub.url, &site.admin, &g).await;
    let gw = spawn_gateway(&hub.url, &site.gateway_token_file, &site.outbox(), 10_000);
    let records: Vec<Record> = g.by_ref().collect();
    assert_eq!(records.len(), 100_000);
    feed(&c, &gw.url, &records).await;
    let got = wait_for_readings(&c, &hub.url, &site.admin, 100_000, LONG).await;
    assert_eq!(got, 100_000);
    // Nothing arrives late or twice.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        stored_readings(&c, &hub.url, &site.admin).await,
        Some(100_000)
    );
    // The gateway empties its outbox once the last acknowledgement is in.
    let mut health = gateway_health(&c, &gw.url).await;
    for _ in 0..300 {
        if health["outbox"]["depth"] == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        health = gateway_health(&c, &gw.url).await;
    }
    assert_eq!(health["outbox"]["depth"], 0, "{health}");
    assert_eq!(health["hub"]["connected"], true);
    // One patient's data is all there, in order.
    let p = &g.patients()[3].id;
    let r: serde_json::Value = c
        .get(format!(
            "{}/api/v1/patients/{p}/readings?limit=100000",
            hub.url
        ))
        .bearer_auth(&site.admin)
        .send()
        .await
        .expect("readings")
        .json()
        .await
        .expect("json");
    assert_eq!(r["count"], 10_000);
}

#[tokio::test]
async fn kill_9_of_the_gateway_mid_sync_then_restart_stores_every_reading_once() {
    let site = Site::new();
    let hub = spawn_hub(&site.hub_dir(), "127.0.0.1:0");
    let c = client();
    let mut g = load(100_000, 10);
    enrol(&c, &hub.url, &site.admin, &g).await;
    let mut gw = spawn_gateway(&hub.url, &site.gateway_token_file, &site.outbox(), 400);
    let records: Vec<Record> = g.by_ref().collect();
    feed(&c, &gw.url, &records).await;
    // Every record is acknowledged, so it is on disk. Kill the gateway mid-sync.
    let at_kill = wait_for_readings(&c, &hub.url, &site.admin, 5_000, LONG).await;
    gw.kill9();
    assert!(
        (5_000..100_000).contains(&at_kill),
        "killed mid-sync at {at_kill}"
    );
    let _gw = spawn_gateway(&hub.url, &site.gateway_token_file, &site.outbox(), 10_000);
    assert_eq!(
        wait_for_readings(&c, &hub.url, &site.admin, 100_000, LONG).await,
        100_000
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        stored_readings(&c, &hub.url, &site.admin).await,
        Some(100_000)
    );
}

#[tokio::test]
async fn kill_9_of_the_hub_mid_ingest_then_restart_stores_every_reading_once() {
    let site = Site::new();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut hub = spawn_hub(&site.hub_dir(), &listen);
    let c = client();
    let mut g = load(100_000, 10);
    enrol(&c, &hub.url, &site.admin, &g).await;
    let gw = spawn_gateway(&hub.url, &site.gateway_token_file, &site.outbox(), 400);
    let records: Vec<Record> = g.by_ref().collect();
    feed(&c, &gw.url, &records).await;
    let at_kill = wait_for_readings(&c, &hub.url, &site.admin, 5_000, LONG).await;
    hub.kill9();
    assert!(
        (5_000..100_000).contains(&at_kill),
        "killed mid-ingest at {at_kill}"
    );
    tokio::time::sleep(Duration::from_millis(700)).await;
    let hub = spawn_hub(&site.hub_dir(), &listen);
    assert_eq!(
        wait_for_readings(&c, &hub.url, &site.admin, 100_000, LONG).await,
        100_000
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        stored_readings(&c, &hub.url, &site.admin).await,
        Some(100_000)
    );
    let h = gateway_health(&c, &gw.url).await;
    assert!(
        h["hub"]["failures"].as_u64().unwrap_or(0) > 0,
        "the gateway saw the hub go away: {h}"
    );
}

#[tokio::test]
async fn with_the_hub_down_the_gateway_keeps_readings_and_catches_up_by_itself() {
    let site = Site::new();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let hub_url = format!("http://{listen}");
    // Enrol while the hub is briefly up, then stop it.
    let c = client();
    let mut g = load(20_000, 10);
    {
        let hub = spawn_hub(&site.hub_dir(), &listen);
        enrol(&c, &hub.url, &site.admin, &g).await;
    }
    let gw = spawn_gateway(&hub_url, &site.gateway_token_file, &site.outbox(), 5_000);
    let records: Vec<Record> = g.by_ref().collect();
    feed(&c, &gw.url, &records).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let h = gateway_health(&c, &gw.url).await;
    assert_eq!(h["outbox"]["depth"], 20_000, "{h}");
    assert_eq!(h["hub"]["connected"], false);
    assert!(h["hub"]["failures"].as_u64().unwrap_or(0) >= 2, "{h}");
    assert!(
        h["outbox"]["oldest_unsent_age_s"].as_f64().unwrap_or(0.0) >= 1.5,
        "{h}"
    );
    let metrics = c
        .get(format!("{}/metrics", gw.url))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("vigil_gateway_outbox_depth 20000"),
        "{metrics}"
    );
    // The hub comes back: the gateway catches up without any help.
    let hub = spawn_hub(&site.hub_dir(), &listen);
    assert_eq!(
        wait_for_readings(&c, &hub.url, &site.admin, 20_000, LONG).await,
        20_000
    );
    let mut depth = u64::MAX;
    for _ in 0..100 {
        depth = gateway_health(&c, &gw.url).await["outbox"]["depth"]
            .as_u64()
            .unwrap_or(u64::MAX);
        if depth == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(depth, 0, "the outbox is emptied once the hub confirmed");
}

#[tokio::test]
async fn the_same_batch_sent_twice_is_stored_once() {
    let site = Site::new();
    let hub = spawn_hub(&site.hub_dir(), "127.0.0.1:0");
    let c = client();
    let mut g = load(1_000, 5);
    enrol(&c, &hub.url, &site.admin, &g).await;
    let records: Vec<WireRecord> = g
        .by_ref()
        .enumerate()
        .map(|(i, r)| WireRecord {
            seq: i as u64 + 1,
            payload: postcard::to_stdvec(&r).expect("encode"),
        })
        .collect();
    let body = Batch {
        version: vigil_sync::VERSION,
        epoch: 42,
        after: 0,
        records,
    }
    .encode();
    let send = || {
        c.post(format!("{}/api/v1/ingest", hub.url))
            .bearer_auth(site.gateway_token())
            .header("content-type", vigil_sync::CONTENT_TYPE)
            .body(body.clone())
            .send()
    };
    let first: serde_json::Value = send().await.expect("send").json().await.expect("ack");
    assert_eq!(
        (first["stored"].as_u64(), first["cursor"].as_u64()),
        (Some(1_000), Some(1_000))
    );
    let second: serde_json::Value = send().await.expect("send").json().await.expect("ack");
    assert_eq!(
        (second["stored"].as_u64(), second["duplicates"].as_u64()),
        (Some(0), Some(1_000))
    );
    assert_eq!(
        stored_readings(&c, &hub.url, &site.admin).await,
        Some(1_000)
    );
}

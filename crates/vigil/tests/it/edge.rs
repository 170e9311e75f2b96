//! Edge rules through real processes: a gateway started with `--edge-alarm` and no hub raises
//! the local alarm (on the real Mosquitto) within a second of a critical reading, keeps the
//! alert in its outbox, and delivers it with its original time once the hub is up.

use crate::harness::*;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};
use vigil_model::{Reading, Record, Timestamp};
use vigil_sim::LoadSpec;

/// A gateway process with edge alarms; its address once it announces it.
fn spawn_edge_gateway(hub_url: &str, token_file: &Path, outbox: &Path, alarms: &[&str]) -> Proc {
    let mut cmd = vigil();
    cmd.args([
        "--log",
        "warn",
        "gateway",
        "--hub-url",
        hub_url,
        "--listen",
        "127.0.0.1:0",
        "--token-file",
    ])
    .arg(token_file)
    .arg("--outbox")
    .arg(outbox)
    .env("VIGIL_GATEWAY__BACKOFF_MIN_MS", "50")
    .env("VIGIL_GATEWAY__BACKOFF_MAX_MS", "500");
    for a in alarms {
        cmd.args(["--edge-alarm", a]);
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn vigil");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if !sent && let Some(rest) = line.strip_prefix("gateway listening on ") {
                let _ = tx.send(rest.trim().to_owned());
                sent = true;
            }
        }
    });
    let url = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("gateway announces its address");
    Proc { child, url }
}

#[tokio::test]
async fn edge_alarm_fires_offline_and_the_alert_reaches_the_hub_with_its_time() {
    let site = Site::new();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let hub_url = format!("http://{listen}");
    let c = client();
    // One wearable assigned to one patient since 2024-01-01; enrol while the hub is up.
    let g = LoadSpec::new(1, 2, Duration::from_secs(1))
        .generator()
        .expect("load");
    {
        let hub = spawn_hub(&site.hub_dir(), &listen);
        enrol(&c, &hub.url, &site.admin, &g).await;
    }
    let device = g.devices()[0].id.clone();
    let patient = g.patients()[0].id.clone();

    let root = unique("edge-it-alarms");
    let mut alarms = mqtt_subscriber(&format!("{root}/#")).await;
    let action = format!("mqtt://127.0.0.1:1883/{root}/{{device}}");
    let gw = spawn_edge_gateway(
        &hub_url,
        &site.gateway_token_file,
        &site.outbox(),
        &["console", &action],
    );
    // Give the alarm publisher its broker connection.
    tokio::time::sleep(Duration::from_millis(300)).await;

    // SpO2 82 % at 1 Hz for 61 s, an hour into 2024: past the 60 s persistence window.
    let spo2: vigil_model::Metric = "59408-5".parse().expect("metric");
    let start = Timestamp(1_704_067_200_000 + 3_600_000);
    let records: Vec<Record> = (0..=61)
        .map(|s| {
            Record::Reading(Reading::quantity(
                device.clone(),
                spo2,
                82.0,
                Timestamp(start.0 + s * 1000),
            ))
        })
        .collect();
    let sent = Instant::now();
    feed(&c, &gw.url, &records).await;
    let (at, topic, body) = tokio::time::timeout(Duration::from_secs(1), alarms.recv())
        .await
        .expect("local alarm within 1 s with no hub")
        .expect("subscriber alive");
    assert!(at.duration_since(sent) < Duration::from_secs(1));
    assert_eq!(topic, format!("{root}/{device}"));
    assert_eq!(body["rule"], "spo2-desaturation");
    assert_eq!(body["severity"], "critical");
    // Still desaturated: no second alarm.
    let more: Vec<Record> = (62..=70)
        .map(|s| {
            Record::Reading(Reading::quantity(
                device.clone(),
                spo2,
                81.0,
                Timestamp(start.0 + s * 1000),
            ))
        })
        .collect();
    feed(&c, &gw.url, &more).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(alarms.try_recv().is_err(), "one alarm per condition");

    let mut h = gateway_health(&c, &gw.url).await;
    for _ in 0..50 {
        if h["edge"]["alerts_appended_total"] == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        h = gateway_health(&c, &gw.url).await;
    }
    assert_eq!(h["edge"]["alarms_total"], 1, "{h}");
    assert_eq!(h["edge"]["alerts_appended_total"], 1, "{h}");
    assert_eq!(h["outbox"]["depth"], 62 + 9 + 1, "{h}");
    assert_eq!(h["hub"]["connected"], false, "{h}");

    // The hub comes back: readings and the alert arrive, the alert with the reading's time.
    let hub = spawn_hub(&site.hub_dir(), &listen);
    assert_eq!(
        wait_for_readings(&c, &hub.url, &site.admin, 71, Duration::from_secs(60)).await,
        71
    );
    let mut alert = None;
    for _ in 0..100 {
        let r: serde_json::Value = c
            .get(format!("{}/api/v1/patients/{patient}/events", hub.url))
            .bearer_auth(&site.admin)
            .send()
            .await
            .expect("events")
            .json()
            .await
            .expect("json");
        alert = r["events"]
            .as_array()
            .and_then(|a| {
                a.iter()
                    .find(|e| e.to_string().contains("spo2-desaturation"))
            })
            .cloned();
        if alert.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let alert = alert.expect("the edge alert is stored at the hub");
    let text = alert.to_string();
    let time = Timestamp(start.0 + 60_000).to_rfc3339();
    assert!(
        text.contains(&time),
        "alert keeps the reading time {time}: {alert}"
    );
    assert!(text.contains(&device.to_string()), "{alert}");
}

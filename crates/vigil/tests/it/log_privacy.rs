//! Logs are read by operators, shipped to log stores and pasted into tickets: at info level
//! they must carry no patient identifiers. This runs a hub and a gateway at info level
//! through ingest, an alert, quarantine, API and FHIR reads and refused requests, capturing
//! everything both processes print, and looks for the patient's id, name and birth date.

use crate::harness::{Proc, Site, call, client, feed, vigil};
use reqwest::Method;
use serde_json::json;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use vigil_model::{DeviceId, Reading, Record, Timestamp};

const PATIENT: &str = "pt-logcheck-4417";
const NAME: &str = "Imogen Logcheck";
const BIRTH: &str = "1941-02-03";
const DEVICE: &str = "ox-logcheck-1";

/// Spawns `cmd` with stderr captured into `log`; returns once stdout announces `prefix`.
fn spawn_logged(mut cmd: Command, prefix: &str, log: &Path) -> Proc {
    let file = std::fs::File::create(log).expect("log file");
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::from(file))
        .spawn()
        .expect("spawn vigil");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    let prefix = prefix.to_owned();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if !sent && let Some(rest) = line.strip_prefix(&prefix) {
                let _ = tx.send(rest.trim().to_owned());
                sent = true;
            }
        }
    });
    let url = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("process announces its address");
    Proc { child, url }
}

fn reading(metric: &str, value: f64, t: Timestamp) -> Record {
    let device = DeviceId::new(DEVICE).expect("device id");
    Record::Reading(Reading::quantity(
        device,
        metric.parse().expect("metric"),
        value,
        t,
    ))
}

#[tokio::test(flavor = "multi_thread")]
async fn info_logs_carry_no_patient_identifiers() {
    let site = Site::new();
    let logs = tempfile::tempdir().expect("tempdir");
    let hub_log = logs.path().join("hub.log");
    let gw_log = logs.path().join("gateway.log");
    let clinician = site.token("dr-logs", "clinician");
    let stranger = site.token("dr-elsewhere", "clinician");

    let mut cmd = vigil();
    cmd.args([
        "--log",
        "info",
        "hub",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
    ])
    .arg(site.hub_dir())
    .env("VIGIL_HUB__ESCALATE_AFTER_S", "1");
    let hub = spawn_logged(cmd, "hub listening on ", &hub_log);
    let c = client();
    let h = &hub.url;
    call(
        &c,
        Method::POST,
        format!("{h}/api/v1/patients"),
        &site.admin,
        json!({"id": PATIENT, "name": NAME, "birth_date": BIRTH}),
    )
    .await;
    call(
        &c,
        Method::POST,
        format!("{h}/api/v1/devices"),
        &site.admin,
        json!({"id": DEVICE, "kind": "pulse-oximeter", "gateway": "gw-test"}),
    )
    .await;
    call(
        &c,
        Method::POST,
        format!("{h}/api/v1/assignments"),
        &site.admin,
        json!({"device": DEVICE, "patient": PATIENT, "from": 0}),
    )
    .await;
    call(
        &c,
        Method::PUT,
        format!("{h}/api/v1/patients/{PATIENT}/care-team"),
        &site.admin,
        json!({"primary": ["dr-logs"], "backup": ["dr-backup"], "caregivers": []}),
    )
    .await;

    let mut cmd = vigil();
    cmd.args([
        "--log",
        "info",
        "gateway",
        "--hub-url",
        h,
        "--listen",
        "127.0.0.1:0",
    ])
    .arg("--token-file")
    .arg(&site.gateway_token_file)
    .arg("--outbox")
    .arg(site.outbox())
    .env("VIGIL_GATEWAY__BACKOFF_MIN_MS", "50")
    .env("VIGIL_GATEWAY__BACKOFF_MAX_MS", "500");
    let gw = spawn_logged(cmd, "gateway listening on ", &gw_log);

    // Normal values, SpO2 at 84 % sustained over 70 s (an alert that escalates), and an
    // impossible value (quarantined at the hub).
    let now = Timestamp::now().0;
    let records = vec![
        reading("spo2", 97.0, Timestamp(now - 90_000)),
        reading("heart-rate", 72.0, Timestamp(now - 90_000)),
        reading("spo2", 84.0, Timestamp(now - 75_000)),
        reading("spo2", 84.0, Timestamp(now - 40_000)),
        reading("spo2", 84.0, Timestamp(now - 5_000)),
        reading("spo2", 140.0, Timestamp(now - 1_000)),
    ];
    feed(&c, &gw.url, &records).await;

    // Wait until the alert exists and has escalated at least once.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v = call(
            &c,
            Method::GET,
            format!("{h}/api/v1/alerts?patient={PATIENT}"),
            &site.admin,
            serde_json::Value::Null,
        )
        .await;
        let escalated = v["alerts"].as_array().is_some_and(|a| {
            a.iter()
                .any(|x| x["escalation_level"].as_u64().unwrap_or(0) >= 1)
        });
        if escalated {
            break;
        }
        assert!(Instant::now() < deadline, "no escalated alert: {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Reads, including FHIR, by the right clinician; refused reads by another one and by
    // nobody; malformed requests naming the patient.
    for path in [
        format!("/api/v1/patients/{PATIENT}"),
        format!("/api/v1/patients/{PATIENT}/readings?code=spo2"),
        format!("/fhir/r4/Patient/{PATIENT}"),
        format!("/fhir/r4/Observation?patient={PATIENT}"),
    ] {
        call(
            &c,
            Method::GET,
            format!("{h}{path}"),
            &clinician,
            serde_json::Value::Null,
        )
        .await;
        let r = c
            .get(format!("{h}{path}"))
            .bearer_auth(&stranger)
            .send()
            .await
            .expect("hub reachable");
        assert!(r.status().is_client_error(), "{path}: {}", r.status());
        let r = c
            .get(format!("{h}{path}"))
            .send()
            .await
            .expect("hub reachable");
        assert_eq!(r.status(), 401, "{path}");
    }
    let r = c
        .get(format!(
            "{h}/api/v1/patients/{PATIENT}/readings?from=yesterday-{PATIENT}"
        ))
        .bearer_auth(&clinician)
        .send()
        .await
        .expect("hub reachable");
    assert_eq!(r.status(), 400);

    // Quarantine holds the impossible value (so that path ran).
    let q = call(
        &c,
        Method::GET,
        format!("{h}/api/v1/quarantine"),
        &site.admin,
        serde_json::Value::Null,
    )
    .await;
    assert!(q["count"].as_u64().unwrap_or(0) >= 1, "{q}");

    drop(gw);
    drop(hub);
    let hub_text = std::fs::read_to_string(&hub_log).expect("hub log");
    let gw_text = std::fs::read_to_string(&gw_log).expect("gateway log");
    // The capture really was at info level and really captured the processes' logs.
    assert!(
        hub_text.contains("INFO "),
        "hub log has no info lines:\n{hub_text}"
    );
    assert!(
        gw_text.contains("INFO "),
        "gateway log has no info lines:\n{gw_text}"
    );
    for (who, text) in [("hub", &hub_text), ("gateway", &gw_text)] {
        for secret in [PATIENT, NAME, BIRTH] {
            let lines: Vec<_> = text.lines().filter(|l| l.contains(secret)).collect();
            assert!(
                lines.is_empty(),
                "the {who} log names {secret:?} at info level:\n{}",
                lines.join("\n")
            );
        }
    }
}

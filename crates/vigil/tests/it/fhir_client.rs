//! A FHIR client library Vigil did not write (fhirpy, from PyPI) reads a hub fed by the
//! simulator through a real gateway: every patient and their latest vitals, which must match
//! the hub's own /api/v1 answers.

use crate::harness::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fhirpy_reads_every_patient_and_their_latest_vitals() {
    let python = std::env::var("VIGIL_PYTHON").expect(
        "VIGIL_PYTHON must name a Python with fhirpy (scripts/test sets it up: \
         target/fhir-validator/bin/python)",
    );
    let site = Site::new();
    let hub = spawn_hub(&site.hub_dir(), "127.0.0.1:0");
    let gateway = spawn_gateway(&hub.url, &site.gateway_token_file, &site.outbox(), 500);
    let c = client();
    let patients = 5;
    let n = 3000;
    let g = load(n, patients);
    enrol(&c, &hub.url, &site.admin, &g).await;
    let records: Vec<_> = g.collect();
    feed(&c, &gateway.url, &records).await;
    let stored = wait_for_readings(&c, &hub.url, &site.admin, n, Duration::from_secs(60)).await;
    assert_eq!(stored, n, "every simulated reading reached the hub");

    // The hub's own view: each patient's latest value per code.
    let api: Value = call(
        &c,
        reqwest::Method::GET,
        format!("{}/api/v1/patients", hub.url),
        &site.admin,
        Value::Null,
    )
    .await;
    let mut expected: BTreeMap<(String, String), (String, f64)> = BTreeMap::new();
    for p in api["patients"].as_array().expect("patients") {
        for r in p["latest"].as_array().expect("latest") {
            expected.insert(
                (
                    p["id"].as_str().expect("id").to_owned(),
                    r["code"].as_str().expect("code").to_owned(),
                ),
                (
                    r["time"].as_str().expect("time").to_owned(),
                    r["value"].as_f64().expect("value"),
                ),
            );
        }
    }
    assert_eq!(api["count"], patients);
    assert_eq!(
        expected.len(),
        2 * patients,
        "heart rate and SpO2 per patient"
    );

    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../vigil-fhir/tests/fhirpy_client.py");
    let out = std::process::Command::new(&python)
        .arg(&script)
        .arg(format!("{}/fhir/r4", hub.url))
        .arg(&site.admin)
        .output()
        .expect("run the fhirpy client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "fhirpy client failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    let count = lines
        .iter()
        .find(|l| l["kind"] == "patients")
        .expect("patient count line");
    assert_eq!(
        count["count"], patients,
        "fhirpy paged through every patient"
    );
    let mut lastn: BTreeMap<(String, String), (String, f64)> = BTreeMap::new();
    let mut searched = 0;
    for l in &lines {
        let key = (
            l["patient"].as_str().unwrap_or_default().to_owned(),
            l["code"].as_str().unwrap_or_default().to_owned(),
        );
        let got = (
            l["time"].as_str().unwrap_or_default().to_owned(),
            l["value"].as_f64().unwrap_or(f64::NAN),
        );
        match l["kind"].as_str() {
            Some("lastn") => {
                assert!(lastn.insert(key, got).is_none(), "one latest per code");
            }
            Some("search") => {
                assert_eq!(expected.get(&key), Some(&got), "latest heart rate {key:?}");
                searched += 1;
            }
            _ => {}
        }
    }
    assert_eq!(lastn, expected, "$lastn through fhirpy matches /api/v1");
    assert_eq!(searched, patients);
}

/// The same client against `vigil demo` as a user starts it (HTTPS with its own CA): a
/// clinician of the demo's care teams reads every simulated patient and their latest vitals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fhirpy_reads_the_demos_patients_and_latest_vitals() {
    let python = std::env::var("VIGIL_PYTHON").expect(
        "VIGIL_PYTHON must name a Python with fhirpy (scripts/test sets it up: \
         target/fhir-validator/bin/python)",
    );
    let dir = tempfile::tempdir().expect("dir");
    let patients = 4;
    let mut cmd = vigil();
    cmd.args([
        "--log",
        "warn",
        "demo",
        "--port",
        "0",
        "--patients",
        &patients.to_string(),
        "--history",
        "10m",
        "--data-dir",
    ])
    .arg(dir.path());
    let demo = spawn_announcing(cmd, "Vigil demo: hub ");
    let hub = demo
        .url
        .split_whitespace()
        .next()
        .expect("hub url")
        .to_owned();
    assert!(hub.starts_with("https://"), "{hub}");
    let ca = dir.path().join("pki").join("ca.pem");
    let creds: Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("demo-credentials.json")).expect("credentials"),
    )
    .expect("json");
    let clinician = creds["users"]
        .as_array()
        .expect("users")
        .iter()
        .find(|u| u["role"] == "clinician")
        .and_then(|u| u["token"].as_str())
        .expect("a clinician token")
        .to_owned();

    // Wait until the demo's history reached the hub: every patient has heart rate and SpO2.
    let c = tls_client(&ca, None);
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let ids: Vec<String> = loop {
        let v: Value = call(
            &c,
            reqwest::Method::GET,
            format!("{hub}/api/v1/patients"),
            &clinician,
            Value::Null,
        )
        .await;
        let list = v["patients"].as_array().cloned().unwrap_or_default();
        let ready = list.len() == patients
            && list.iter().all(|p| {
                let codes: Vec<&str> = p["latest"]
                    .as_array()
                    .map(|l| l.iter().filter_map(|r| r["code"].as_str()).collect())
                    .unwrap_or_default();
                codes.contains(&"8867-4") && codes.contains(&"59408-5")
            });
        if ready {
            break list
                .iter()
                .filter_map(|p| p["id"].as_str().map(str::to_owned))
                .collect();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "demo data not synced: {v}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../vigil-fhir/tests/fhirpy_client.py");
    let out = std::process::Command::new(&python)
        .arg(&script)
        .arg(format!("{hub}/fhir/r4"))
        .arg(&clinician)
        // fhirpy's HTTP stack (requests) trusts the demo's CA through this.
        .env("REQUESTS_CA_BUNDLE", &ca)
        .output()
        .expect("run the fhirpy client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "fhirpy client failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    let count = lines
        .iter()
        .find(|l| l["kind"] == "patients")
        .expect("patient count line");
    assert_eq!(count["count"], patients, "{stdout}");
    for id in &ids {
        let vitals: BTreeMap<&str, f64> = lines
            .iter()
            .filter(|l| l["kind"] == "lastn" && l["patient"] == id.as_str())
            .filter_map(|l| Some((l["code"].as_str()?, l["value"].as_f64()?)))
            .collect();
        let hr = vitals.get("8867-4").copied().expect("latest heart rate");
        let spo2 = vitals.get("59408-5").copied().expect("latest SpO2");
        assert!((20.0..=250.0).contains(&hr), "{id}: heart rate {hr}");
        assert!((50.0..=100.0).contains(&spo2), "{id}: SpO2 {spo2}");
        assert!(
            lines
                .iter()
                .any(|l| l["kind"] == "search" && l["patient"] == id.as_str()),
            "{id}: latest heart rate by sorted search"
        );
    }
    drop(demo);
}

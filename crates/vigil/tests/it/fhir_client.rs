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

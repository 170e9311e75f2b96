//! The FHIR R4 surface at /fhir/r4: CapabilityStatement, Patient read, Observation search with
//! date prefixes, paging and sorting, $lastn, and OperationOutcome errors.

use crate::harness::*;
use serde_json::{Value, json};
use vigil_model::{DeviceId, Metric, Reading, Record, Timestamp};
use vigil_sync::{Batch, WireRecord};

const N: i64 = 10;
const STEP_MS: i64 = 60_000;

struct Fixture {
    _site: Site,
    hub: Proc,
    admin: String,
    c: reqwest::Client,
    /// Device time of the first reading (every N readings per code, STEP_MS apart).
    t0: i64,
}

impl Fixture {
    async fn get(&self, path_and_query: &str) -> reqwest::Response {
        self.c
            .get(format!("{}/fhir/r4{path_and_query}", self.hub.url))
            .bearer_auth(&self.admin)
            .send()
            .await
            .expect("send")
    }

    async fn ok(&self, path_and_query: &str) -> Value {
        let r = self.get(path_and_query).await;
        assert_eq!(r.status().as_u16(), 200, "{path_and_query}");
        assert_eq!(
            r.headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("application/fhir+json")
        );
        r.json().await.expect("json")
    }

    fn at(&self, i: i64) -> String {
        Timestamp(self.t0 + i * STEP_MS).to_rfc3339()
    }
}

/// A hub with patient p-fhir wearing d-fhir: N heart rates (70, 71, ...) and N SpO2 values.
async fn fixture() -> Fixture {
    let site = Site::new();
    let hub = spawn_hub(&site.hub_dir(), "127.0.0.1:0");
    let c = client();
    let admin = site.admin.clone();
    for (path, body) in [
        (
            "patients",
            json!({"id": "p-fhir", "name": "Ada Fhir", "birth_date": "1950-02-03"}),
        ),
        ("devices", json!({"id": "d-fhir", "kind": "pulse-oximeter"})),
        (
            "assignments",
            json!({"device": "d-fhir", "patient": "p-fhir", "from": "2020-01-01T00:00:00Z"}),
        ),
    ] {
        let r = c
            .post(format!("{}/api/v1/{path}", hub.url))
            .bearer_auth(&admin)
            .json(&body)
            .send()
            .await
            .expect("post");
        assert_eq!(r.status().as_u16(), 201, "{path}");
    }
    let t0 = (Timestamp::now().0 / 1000 - 3600) * 1000;
    let dev = DeviceId::new("d-fhir").expect("id");
    let hr: Metric = "8867-4".parse().expect("hr");
    let spo2: Metric = "59408-5".parse().expect("spo2");
    let mut records = Vec::new();
    for i in 0..N {
        let t = Timestamp(t0 + i * STEP_MS);
        records.push(Record::Reading(Reading::quantity(
            dev.clone(),
            hr,
            70.0 + i as f64,
            t,
        )));
        records.push(Record::Reading(Reading::quantity(
            dev.clone(),
            spo2,
            90.0 + i as f64 / 2.0,
            t,
        )));
    }
    let wire = records
        .iter()
        .enumerate()
        .map(|(i, r)| WireRecord {
            seq: i as u64 + 1,
            payload: postcard::to_stdvec(r).expect("encode"),
        })
        .collect();
    let body = Batch {
        version: vigil_sync::VERSION,
        epoch: 1,
        after: 0,
        records: wire,
    }
    .encode();
    let ack: Value = c
        .post(format!("{}/api/v1/ingest", hub.url))
        .bearer_auth(site.gateway_token())
        .header("content-type", vigil_sync::CONTENT_TYPE)
        .body(body)
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("ack");
    assert_eq!(ack["stored"], 2 * N, "{ack}");
    Fixture {
        _site: site,
        hub,
        admin,
        c,
        t0,
    }
}

fn times(bundle: &Value) -> Vec<String> {
    bundle["entry"]
        .as_array()
        .map(|e| {
            e.iter()
                .filter_map(|x| x["resource"]["effectiveDateTime"].as_str())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

fn next(bundle: &Value) -> Option<String> {
    bundle["link"]
        .as_array()?
        .iter()
        .find(|l| l["relation"] == "next")
        .and_then(|l| l["url"].as_str())
        .map(str::to_owned)
}

async fn outcome(r: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(r.status().as_u16(), status);
    assert_eq!(
        r.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/fhir+json")
    );
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["resourceType"], "OperationOutcome", "{body}");
    assert_eq!(body["issue"][0]["severity"], "error", "{body}");
    assert_eq!(body["issue"][0]["code"], code, "{body}");
    body
}

#[tokio::test]
async fn fhir_metadata_and_patient_read() {
    let f = fixture().await;
    let cs = f.ok("/metadata").await;
    assert_eq!(cs["resourceType"], "CapabilityStatement");
    assert_eq!(cs["fhirVersion"], "4.0.1");
    let types: Vec<&str> = cs["rest"][0]["resource"]
        .as_array()
        .expect("resources")
        .iter()
        .filter_map(|r| r["type"].as_str())
        .collect();
    assert_eq!(types, ["Patient", "Device", "Observation"]);

    let by_vigil_id = f.ok("/Patient/p-fhir").await;
    assert_eq!(by_vigil_id["resourceType"], "Patient");
    assert_eq!(by_vigil_id["birthDate"], "1950-02-03");
    let fhir_id = by_vigil_id["id"].as_str().expect("id").to_owned();
    let by_fhir_id = f.ok(&format!("/Patient/{fhir_id}")).await;
    assert_eq!(by_fhir_id, by_vigil_id);

    let all = f.ok("/Patient").await;
    assert_eq!(all["type"], "searchset");
    assert_eq!(all["total"], 1);
    let dev = f.ok("/Device/d-fhir").await;
    assert_eq!(dev["resourceType"], "Device");
    assert_eq!(f.ok("/Device").await["total"], 1);

    // Without a token: 401 as an OperationOutcome.
    let r =
        f.c.get(format!("{}/fhir/r4/Patient/p-fhir", f.hub.url))
            .send()
            .await
            .expect("send");
    outcome(r, 401, "login").await;
}

#[tokio::test]
async fn fhir_observation_search_by_patient_code_and_date_prefixes() {
    let f = fixture().await;
    let all = f.ok("/Observation?patient=p-fhir&_count=1000").await;
    assert_eq!(all["total"], 2 * N);
    assert!(next(&all).is_none());

    // ge and lt boundaries are exact: [t2, t5) is readings 2, 3, 4.
    let q = format!(
        "/Observation?subject=Patient/p-fhir&code=http://loinc.org|8867-4&date=ge{}&date=lt{}",
        f.at(2),
        f.at(5)
    );
    let b = f.ok(&q).await;
    assert_eq!(b["total"], 3, "{b}");
    assert_eq!(times(&b), [f.at(2), f.at(3), f.at(4)]);
    for e in b["entry"].as_array().expect("entries") {
        assert_eq!(e["resource"]["code"]["coding"][0]["code"], "8867-4");
    }
    // gt and le move both ends by one.
    let b = f
        .ok(&format!(
            "/Observation?patient=p-fhir&code=8867-4&date=gt{}&date=le{}",
            f.at(2),
            f.at(5)
        ))
        .await;
    assert_eq!(times(&b), [f.at(3), f.at(4), f.at(5)]);
    // eq is the exact instant.
    let b = f
        .ok(&format!(
            "/Observation?patient=p-fhir&code=8867-4&date=eq{}",
            f.at(7)
        ))
        .await;
    assert_eq!(times(&b), [f.at(7)]);
    assert_eq!(b["entry"][0]["resource"]["valueQuantity"]["value"], 77.0);
    // A code Vigil does not know matches nothing.
    let b = f.ok("/Observation?patient=p-fhir&code=0000-0").await;
    assert_eq!(b["total"], 0);
}

#[tokio::test]
async fn fhir_observation_paging_and_sort() {
    let f = fixture().await;
    let mut url = format!(
        "{}/fhir/r4/Observation?patient=p-fhir&code=8867-4&_count=3&_sort=-date",
        f.hub.url
    );
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let r =
            f.c.get(&url)
                .bearer_auth(&f.admin)
                .send()
                .await
                .expect("send");
        assert_eq!(r.status().as_u16(), 200);
        let b: Value = r.json().await.expect("json");
        assert_eq!(b["total"], N);
        let page = times(&b);
        assert!(page.len() <= 3);
        seen.extend(page);
        pages += 1;
        match next(&b) {
            Some(n) => url = n,
            None => break,
        }
        assert!(pages < 10, "paging does not end");
    }
    assert_eq!(pages, 4);
    let expected: Vec<String> = (0..N).rev().map(|i| f.at(i)).collect();
    assert_eq!(seen, expected, "every result once, newest first");

    let asc = f
        .ok("/Observation?patient=p-fhir&code=8867-4&_sort=date")
        .await;
    let expected: Vec<String> = (0..N).map(|i| f.at(i)).collect();
    assert_eq!(times(&asc), expected);
}

#[tokio::test]
async fn fhir_lastn() {
    let f = fixture().await;
    let b = f.ok("/Observation/$lastn?patient=p-fhir").await;
    assert_eq!(b["total"], 2, "{b}");
    assert_eq!(times(&b), [f.at(N - 1), f.at(N - 1)]);
    let b = f.ok("/Observation/$lastn?patient=p-fhir&max=3").await;
    assert_eq!(b["total"], 6, "{b}");
    let mut per_code: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for e in b["entry"].as_array().expect("entries") {
        let code = e["resource"]["code"]["coding"][0]["code"]
            .as_str()
            .expect("code")
            .to_owned();
        let t = e["resource"]["effectiveDateTime"]
            .as_str()
            .expect("time")
            .to_owned();
        per_code.entry(code).or_default().push(t);
    }
    let newest3 = vec![f.at(N - 1), f.at(N - 2), f.at(N - 3)];
    assert_eq!(per_code.get("8867-4"), Some(&newest3));
    assert_eq!(per_code.get("59408-5"), Some(&newest3));
}

#[tokio::test]
async fn fhir_errors_are_operation_outcomes() {
    let f = fixture().await;
    outcome(
        f.get("/Observation?patient=p-fhir&date=ge2024-13-99T00:00:00Z")
            .await,
        400,
        "invalid",
    )
    .await;
    outcome(
        f.get("/Observation?patient=p-fhir&date=ap2024-01-01T00:00:00Z")
            .await,
        400,
        "invalid",
    )
    .await;
    outcome(f.get("/Observation?patient=nobody").await, 404, "not-found").await;
    outcome(f.get("/Patient/nobody").await, 404, "not-found").await;
    outcome(
        f.get("/Observation/$lastn?patient=nobody").await,
        404,
        "not-found",
    )
    .await;
    outcome(f.get("/Observation").await, 400, "required").await;
}

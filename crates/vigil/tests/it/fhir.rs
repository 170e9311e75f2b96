//! The FHIR R4 surface at /fhir/r4: CapabilityStatement, Patient read, Observation read and
//! search semantics (date prefixes at their boundaries, paging forwards and back without loss
//! or repeat, sorting, `_summary=count`, `_lastUpdated`, `category`), $lastn, and
//! OperationOutcome errors. The other resource types are in fhir_resources.rs.

use crate::harness::*;
use serde_json::{Value, json};
use vigil_model::{DeviceId, Metric, Reading, Record, Timestamp};
use vigil_sync::{Batch, WireRecord};

pub const N: i64 = 10;
pub const STEP_MS: i64 = 60_000;

pub struct Fixture {
    pub site: Site,
    pub hub: Proc,
    pub admin: String,
    pub c: reqwest::Client,
    /// Device time of the first reading (every N readings per code, STEP_MS apart).
    pub t0: i64,
    /// Records sent so far (the gateway's sequence).
    pub sent: u64,
}

impl Fixture {
    /// Sends `records` as the next gateway batch; returns how many the hub stored.
    pub async fn ingest(&mut self, records: &[Record]) -> u64 {
        let wire = records
            .iter()
            .enumerate()
            .map(|(i, r)| WireRecord {
                seq: self.sent + i as u64 + 1,
                payload: postcard::to_stdvec(r).expect("encode"),
            })
            .collect();
        let body = Batch {
            version: vigil_sync::VERSION,
            epoch: 1,
            after: self.sent,
            records: wire,
        }
        .encode();
        let ack: Value = self
            .c
            .post(format!("{}/api/v1/ingest", self.hub.url))
            .bearer_auth(self.site.gateway_token())
            .header("content-type", vigil_sync::CONTENT_TYPE)
            .body(body)
            .send()
            .await
            .expect("send")
            .json()
            .await
            .expect("ack");
        self.sent += records.len() as u64;
        ack["stored"].as_u64().expect("stored count")
    }

    pub async fn get_as(&self, token: &str, path_and_query: &str) -> reqwest::Response {
        self.c
            .get(format!("{}/fhir/r4{path_and_query}", self.hub.url))
            .bearer_auth(token)
            .send()
            .await
            .expect("send")
    }

    pub async fn get(&self, path_and_query: &str) -> reqwest::Response {
        self.c
            .get(format!("{}/fhir/r4{path_and_query}", self.hub.url))
            .bearer_auth(&self.admin)
            .send()
            .await
            .expect("send")
    }

    pub async fn ok(&self, path_and_query: &str) -> Value {
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

    pub fn at(&self, i: i64) -> String {
        Timestamp(self.t0 + i * STEP_MS).to_rfc3339()
    }
}

/// A hub with patient p-fhir wearing d-fhir: N heart rates (70, 71, ...) and N SpO2 values.
pub async fn fixture() -> Fixture {
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
    let mut f = Fixture {
        site,
        hub,
        admin,
        c,
        t0,
        sent: 0,
    };
    assert_eq!(f.ingest(&records).await, 2 * N as u64);
    f
}

pub fn times(bundle: &Value) -> Vec<String> {
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

/// The URL of the page link `relation`.
pub fn link(bundle: &Value, relation: &str) -> Option<String> {
    bundle["link"]
        .as_array()?
        .iter()
        .find(|l| l["relation"] == relation)
        .and_then(|l| l["url"].as_str())
        .map(str::to_owned)
}

fn next(bundle: &Value) -> Option<String> {
    bundle["link"]
        .as_array()?
        .iter()
        .find(|l| l["relation"] == "next")
        .and_then(|l| l["url"].as_str())
        .map(str::to_owned)
}

pub async fn outcome(r: reqwest::Response, status: u16, code: &str) -> Value {
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
    assert_eq!(
        types,
        [
            "Patient",
            "Device",
            "Observation",
            "RiskAssessment",
            "Flag",
            "MedicationAdministration",
            "SupplyRequest",
            "Location"
        ]
    );

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
        // The total is given once known without counting: on the last page.
        if next(&b).is_none() {
            assert_eq!(b["total"], N);
        }
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

/// Follows `relation` links from `first` to the end; every page's times in order.
async fn walk_links(f: &Fixture, first: Value, relation: &str) -> Vec<Vec<String>> {
    let mut pages = vec![times(&first)];
    let mut b = first;
    while let Some(url) = link(&b, relation) {
        let r =
            f.c.get(&url)
                .bearer_auth(&f.admin)
                .send()
                .await
                .expect("send");
        assert_eq!(r.status().as_u16(), 200, "{url}");
        b = r.json().await.expect("json");
        pages.push(times(&b));
        assert!(pages.len() < 50, "paging does not end");
    }
    pages
}

#[tokio::test]
async fn fhir_search_pages_forward_and_back_without_loss_or_repeat() {
    let f = fixture().await;
    for (sort, expected) in [
        ("date", (0..N).map(|i| f.at(i)).collect::<Vec<_>>()),
        ("-date", (0..N).rev().map(|i| f.at(i)).collect::<Vec<_>>()),
    ] {
        let first = f
            .ok(&format!(
                "/Observation?patient=p-fhir&code=8867-4&_count=4&_sort={sort}"
            ))
            .await;
        assert!(link(&first, "previous").is_none(), "no previous on page 1");
        assert!(link(&first, "self").is_some());
        let forward = walk_links(&f, first, "next").await;
        assert_eq!(forward.len(), 3, "{sort}: 4 + 4 + 2");
        let seen: Vec<String> = forward.iter().flatten().cloned().collect();
        assert_eq!(seen, expected, "{sort}: every result once, in order");

        // From the last page back to the first through previous links.
        let last_url =
            format!("/Observation?patient=p-fhir&code=8867-4&_count=4&_sort={sort}&_offset=8");
        let last = f.ok(&last_url).await;
        assert!(link(&last, "next").is_none());
        assert_eq!(last["total"], N, "the last page knows the total");
        let back = walk_links(&f, last, "previous").await;
        let mut pages: Vec<Vec<String>> = back.into_iter().rev().collect();
        assert_eq!(pages.len(), 3);
        let seen: Vec<String> = pages.drain(..).flatten().collect();
        assert_eq!(
            seen, expected,
            "{sort}: previous links cover the same results"
        );
    }
}

#[tokio::test]
async fn fhir_date_prefixes_at_their_boundaries_and_partial_dates() {
    let f = fixture().await;
    let hr = |q: String| format!("/Observation?patient=p-fhir&code=8867-4&_count=100{q}");
    // Each prefix against an instant that is exactly a reading's time (seconds precision
    // stands for the whole second).
    let cases: [(&str, i64, Vec<i64>); 5] = [
        ("eq", 4, vec![4]),
        ("lt", 4, (0..4).collect()),
        ("le", 4, (0..5).collect()),
        ("gt", 4, (5..N).collect()),
        ("ge", 4, (4..N).collect()),
    ];
    for (prefix, i, want) in cases {
        let b = f.ok(&hr(format!("&date={prefix}{}", f.at(i)))).await;
        let expected: Vec<String> = want.iter().map(|j| f.at(*j)).collect();
        assert_eq!(times(&b), expected, "{prefix}{}", f.at(i));
        assert_eq!(b["total"], expected.len(), "{prefix}");
    }
    // One millisecond either side of a reading with millisecond precision.
    let t4 = f.t0 + 4 * STEP_MS;
    let ms = |t: i64| Timestamp(t).to_rfc3339();
    assert_eq!(
        times(&f.ok(&hr(format!("&date=gt{}", ms(t4 - 1)))).await).first(),
        Some(&f.at(4))
    );
    assert_eq!(
        times(&f.ok(&hr(format!("&date=lt{}", ms(t4 + 1)))).await).last(),
        Some(&f.at(4))
    );
    assert_eq!(
        times(&f.ok(&hr(format!("&date=eq{}", ms(t4 + 1)))).await).len(),
        0,
        "an instant with milliseconds is that millisecond"
    );
    // A day is the whole day: every reading of the fixture is within one or two days.
    let day = |i: i64| f.at(i)[..10].to_owned();
    let days: std::collections::BTreeSet<String> = [day(0), day(N - 1)].into_iter().collect();
    let mut in_day = 0;
    for d in &days {
        in_day += times(&f.ok(&hr(format!("&date=eq{d}"))).await).len();
    }
    assert_eq!(in_day, N as usize);
    let year = &f.at(0)[..4];
    let b = f.ok(&hr(format!("&date=lt{year}"))).await;
    assert_eq!(b["total"], 0, "nothing before the start of this year");
    let b = f.ok(&hr(format!("&date=ge{year}-01"))).await;
    assert!(b["total"].as_u64().is_some_and(|t| t >= 1));
}

#[tokio::test]
async fn fhir_summary_count_last_updated_category_and_read_by_id() {
    let mut f = fixture().await;
    let count = f.ok("/Observation?patient=p-fhir&_summary=count").await;
    assert_eq!(count["type"], "searchset");
    assert_eq!(count["total"], 2 * N);
    assert!(count.get("entry").is_none(), "{count}");
    let count = f
        .ok("/Observation?patient=p-fhir&code=8867-4&_summary=count")
        .await;
    assert_eq!(count["total"], N);

    // A second batch received later: _lastUpdated (hub receive time) separates the two.
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let between = Timestamp::now();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let dev = DeviceId::new("d-fhir").expect("id");
    let hr: Metric = "8867-4".parse().expect("hr");
    let late: Vec<Record> = (0..3)
        .map(|i| {
            Record::Reading(Reading::quantity(
                dev.clone(),
                hr,
                100.0 + i as f64,
                Timestamp(f.t0 + (N + i) * STEP_MS),
            ))
        })
        .collect();
    assert_eq!(f.ingest(&late).await, 3);
    let b = f
        .ok(&format!(
            "/Observation?patient=p-fhir&_lastUpdated=ge{}&_count=100",
            between.to_rfc3339()
        ))
        .await;
    assert_eq!(b["total"], 3, "{b}");
    let b = f
        .ok(&format!(
            "/Observation?patient=p-fhir&_lastUpdated=lt{}&_count=100",
            between.to_rfc3339()
        ))
        .await;
    assert_eq!(b["total"], 2 * N);
    for e in b["entry"].as_array().expect("entries") {
        assert!(e["resource"]["meta"]["lastUpdated"].is_string());
    }

    // category: heart rate and SpO2 are vital signs; nothing is in another category.
    let vs = f
        .ok("/Observation?patient=p-fhir&category=http://terminology.hl7.org/CodeSystem/observation-category|vital-signs&_summary=count")
        .await;
    assert_eq!(vs["total"], 2 * N + 3);
    let lab = f
        .ok("/Observation?patient=p-fhir&category=laboratory")
        .await;
    assert_eq!(lab["total"], 0);

    // Every Observation id resolves back to its reading.
    let page = f.ok("/Observation?patient=p-fhir&_count=5").await;
    for e in page["entry"].as_array().expect("entries") {
        let id = e["resource"]["id"].as_str().expect("id");
        let read = f.ok(&format!("/Observation/{id}")).await;
        assert_eq!(read, e["resource"]);
    }
    outcome(
        f.get("/Observation/0123456789abcdef.8867-4.0.01234567")
            .await,
        404,
        "not-found",
    )
    .await;
    outcome(f.get("/Observation/not-an-id").await, 404, "not-found").await;
}

#[tokio::test]
async fn fhir_unknown_parameters_and_ids_are_operation_outcomes() {
    let f = fixture().await;
    for q in [
        "/Observation?patient=p-fhir&colour=red",
        "/Patient?name=x",
        "/Device?type=x",
        "/Flag?foo=1",
        "/MedicationAdministration?bar=1",
        "/SupplyRequest?baz=1",
        "/Location?qux=1",
        "/RiskAssessment?patient=p-fhir&x=1",
        "/Patient/p-fhir/$everything?x=1",
    ] {
        outcome(f.get(q).await, 400, "not-supported").await;
    }
    for q in [
        "/Observation?patient=p-fhir&_summary=text",
        "/Observation?patient=p-fhir&_count=0",
        "/Observation?patient=p-fhir&_cursor=garbage",
        "/Observation?patient=p-fhir&_sort=value",
        "/Flag?status=maybe",
    ] {
        outcome(f.get(q).await, 400, "invalid").await;
    }
    for path in [
        "/Device/nope",
        "/Flag/nope",
        "/RiskAssessment/nope",
        "/RiskAssessment/news2.0123456789abcdef.0",
        "/MedicationAdministration/nope",
        "/SupplyRequest/nope",
        "/Location/nope",
        "/Patient/nope/$everything",
    ] {
        outcome(f.get(path).await, 404, "not-found").await;
    }
    outcome(f.get("/RiskAssessment").await, 400, "required").await;
}

#[tokio::test]
async fn fhir_reingesting_a_reading_keeps_one_observation_with_the_same_id() {
    let mut f = fixture().await;
    let q = format!("/Observation?patient=p-fhir&code=8867-4&date=eq{}", f.at(3));
    let before = f.ok(&q).await;
    assert_eq!(before["total"], 1);
    // The same reading again, as a source that delivers at least once would resend it.
    let again = Record::Reading(Reading::quantity(
        DeviceId::new("d-fhir").expect("id"),
        "8867-4".parse().expect("hr"),
        73.0,
        Timestamp(f.t0 + 3 * STEP_MS),
    ));
    f.ingest(&[again]).await;
    let after = f.ok(&q).await;
    assert_eq!(after["total"], 1, "{after}");
    assert_eq!(
        after["entry"][0]["resource"]["id"],
        before["entry"][0]["resource"]["id"]
    );
    assert_eq!(
        after["entry"][0]["resource"]["identifier"],
        before["entry"][0]["resource"]["identifier"]
    );
    let all = f.ok("/Observation?patient=p-fhir&_summary=count").await;
    assert_eq!(all["total"], 2 * N);
}

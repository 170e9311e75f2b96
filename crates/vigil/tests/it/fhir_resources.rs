//! FHIR resources beyond Patient and Observation, from a running hub: NEWS2 RiskAssessments
//! with their per-parameter basis, Flags from alerts, MedicationAdministrations,
//! SupplyRequests and Locations from events, `$everything`, bulk `$export`, authorization
//! for each of them, and every resource type the routes return validated by fhir.resources.

use crate::fhir::{Fixture, N, STEP_MS, fixture, outcome};
use crate::harness::*;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use vigil_model::{DeviceId, Event, EventKind, Metric, Reading, Record, Source, Timestamp};

/// The fixture plus the rest of a NEWS2 set at readings 5..N, a consciousness and air
/// assessment, medication and inhaler events, stock levels, an asset sighting and an edge
/// alert. Returns once the alert is stored.
async fn rich() -> Fixture {
    let mut f = fixture().await;
    call(
        &f.c,
        reqwest::Method::POST,
        format!("{}/api/v1/devices", f.hub.url),
        &f.admin,
        json!({"id": "d-pump", "kind": "other"}),
    )
    .await;
    let dev = DeviceId::new("d-fhir").expect("id");
    let m = |code: &str| -> Metric { code.parse().expect("metric") };
    let t0 = f.t0;
    let at = |i: i64| Timestamp(t0 + i * STEP_MS);
    let mut records = Vec::new();
    for i in 5..N {
        for (code, v) in [("9279-1", 16.0), ("8480-6", 120.0), ("8310-5", 37.0)] {
            records.push(Record::Reading(Reading::quantity(
                dev.clone(),
                m(code),
                v,
                at(i),
            )));
        }
    }
    let event = |i: i64, kind: EventKind| {
        Record::Event(Event {
            device: dev.clone(),
            time: at(i).saturating_add_millis(500),
            received: None,
            kind,
            source: Source::default(),
            patient: None,
        })
    };
    records.extend([
        event(
            1,
            EventKind::MedicationIngestion {
                medication: "metformin 500 mg".to_owned(),
                dose: Some("morning".to_owned()),
            },
        ),
        event(
            2,
            EventKind::InhalerActuation {
                medication: Some("salbutamol".to_owned()),
                rescue: true,
                peak_inspiratory_flow: Some(45.0),
            },
        ),
        event(
            3,
            EventKind::StockLevel {
                item: "glucose test strips".to_owned(),
                quantity: 3.0,
                location: Some("ward-3".to_owned()),
            },
        ),
        event(
            3,
            EventKind::StockLevel {
                item: "saline 500 mL".to_owned(),
                quantity: 50.0,
                location: Some("ward-3".to_owned()),
            },
        ),
        event(
            4,
            EventKind::AssetSighting {
                asset: "d-pump".to_owned(),
                rssi: Some(-60),
                location: Some("ward-4 bay 2".to_owned()),
            },
        ),
        event(
            6,
            EventKind::Alert {
                rule: "spo2-low".to_owned(),
                severity: "warning".to_owned(),
                message: "SpO2 low".to_owned(),
                value: Some(93.0),
            },
        ),
    ]);
    let n = records.len() as u64;
    assert_eq!(f.ingest(&records).await, n);
    call(
        &f.c,
        reqwest::Method::POST,
        format!("{}/api/v1/patients/p-fhir/assessments", f.hub.url),
        &f.admin,
        json!({"consciousness": "A", "supplemental_oxygen": false, "time": at(0).to_rfc3339()}),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    // Settled: the edge alert is stored and the hub has evaluated everything it holds (its
    // own rules may raise more alerts from the same readings).
    loop {
        let flags = entries(&f.ok("/Flag?patient=p-fhir").await);
        if flags
            .iter()
            .any(|x| x["code"]["coding"][0]["code"] == "spo2-low")
            && alert_queue(&f).await == Some(0)
        {
            break;
        }
        assert!(Instant::now() < deadline, "the edge alert is stored");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    f
}

async fn alert_queue(f: &Fixture) -> Option<u64> {
    let text =
        f.c.get(format!("{}/metrics", f.hub.url))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("vigil_hub_alert_queue "))
        .and_then(|v| v.trim().parse().ok())
}

fn entries(b: &Value) -> Vec<Value> {
    b["entry"]
        .as_array()
        .map(|e| e.iter().map(|x| x["resource"].clone()).collect())
        .unwrap_or_default()
}

fn id(r: &Value) -> String {
    r["id"].as_str().expect("id").to_owned()
}

#[tokio::test]
async fn fhir_news2_risk_assessments_flags_and_event_resources() {
    let f = rich().await;

    // NEWS2 at each time an input was measured with a complete set: readings 5..N.
    let ra = f.ok("/RiskAssessment?patient=p-fhir").await;
    assert_eq!(ra["total"], N - 5, "{ra}");
    let first = &entries(&ra)[0];
    assert_eq!(first["occurrenceDateTime"], f.at(5));
    // SpO2 92.5 % rounds to 93: scale 1 scores 2; everything else scores 0.
    let basis: BTreeMap<String, i64> = first["contained"]
        .as_array()
        .expect("contained")
        .iter()
        .map(|o| {
            (
                o["code"]["coding"][0]["code"]
                    .as_str()
                    .expect("code")
                    .to_owned(),
                o["valueInteger"].as_i64().expect("score"),
            )
        })
        .collect();
    assert_eq!(basis.len(), 8, "aggregate and seven parameters: {basis:?}");
    assert_eq!(basis["total"], 2);
    assert_eq!(basis["spo2"], 2);
    assert_eq!(
        basis["rr"] + basis["sbp"] + basis["pulse"] + basis["temp"],
        0
    );
    assert_eq!(first["basis"].as_array().map(Vec::len), Some(8));
    assert_eq!(
        first["prediction"][0]["qualitativeRisk"]["coding"][0]["code"],
        "low"
    );
    assert_eq!(
        &f.ok(&format!("/RiskAssessment/{}", id(first))).await,
        first
    );
    let narrow = f
        .ok(&format!(
            "/RiskAssessment?subject=Patient/p-fhir&date=ge{}",
            f.at(8)
        ))
        .await;
    assert_eq!(narrow["total"], 2);

    // Alerts are Flags; status follows the alert's lifecycle.
    let flags: Vec<Value> = entries(&f.ok("/Flag?patient=p-fhir&status=active").await)
        .into_iter()
        .filter(|x| x["code"]["coding"][0]["code"] == "spo2-low")
        .collect();
    assert_eq!(flags.len(), 1);
    assert_eq!(flags[0]["status"], "active");
    assert_eq!(flags[0]["code"]["coding"][0]["code"], "spo2-low");
    // status splits the alerts by lifecycle (the hub's own rules may have resolved some).
    let all = f.ok("/Flag?patient=p-fhir").await;
    let mut split = 0;
    for status in ["active", "inactive"] {
        let b = f.ok(&format!("/Flag?patient=p-fhir&status={status}")).await;
        for x in entries(&b) {
            assert_eq!(x["status"], status);
        }
        split += b["total"].as_u64().expect("total");
    }
    assert_eq!(Some(split), all["total"].as_u64());
    assert_eq!(&f.ok(&format!("/Flag/{}", id(&flags[0]))).await, &flags[0]);

    // Medication events.
    let meds = entries(&f.ok("/MedicationAdministration?patient=p-fhir").await);
    let mut names: Vec<&str> = meds
        .iter()
        .filter_map(|m| m["medicationCodeableConcept"]["text"].as_str())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["metformin 500 mg", "salbutamol"]);
    for m in &meds {
        assert_eq!(
            &f.ok(&format!("/MedicationAdministration/{}", id(m))).await,
            m
        );
    }

    // Only the low stock level is a SupplyRequest, for enough to reach the par level.
    let supply = entries(&f.ok("/SupplyRequest?patient=p-fhir").await);
    assert_eq!(supply.len(), 1, "{supply:?}");
    assert_eq!(
        supply[0]["itemCodeableConcept"]["text"],
        "glucose test strips"
    );
    assert_eq!(supply[0]["quantity"]["value"], 17.0);
    let ward3 = supply[0]["deliverTo"]["reference"]
        .as_str()
        .expect("deliverTo")
        .to_owned();
    assert_eq!(
        &f.ok(&format!("/SupplyRequest/{}", id(&supply[0]))).await,
        &supply[0]
    );

    // Locations named by events, and the tracked pump's location.
    let locs = entries(&f.ok("/Location").await);
    let mut names: Vec<&str> = locs.iter().filter_map(|l| l["name"].as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["ward-3", "ward-4 bay 2"]);
    let w3 = f.ok(&format!("/{ward3}")).await;
    assert_eq!(w3["name"], "ward-3");
    let by_name = f.ok("/Location?name=ward-4%20bay%202").await;
    assert_eq!(by_name["total"], 1);
    let pump = f.ok("/Device/d-pump").await;
    assert_eq!(
        pump["location"]["reference"],
        format!("Location/{}", id(&entries(&by_name)[0]))
    );

    // $everything: the patient, their device, flag, events, locations, then observations,
    // paged without loss.
    let mut url = format!("{}/fhir/r4/Patient/p-fhir/$everything?_count=7", f.hub.url);
    let mut all = Vec::new();
    loop {
        let b: Value =
            f.c.get(&url)
                .bearer_auth(&f.admin)
                .send()
                .await
                .expect("send")
                .json()
                .await
                .expect("json");
        assert_eq!(b["type"], "searchset", "{b}");
        all.extend(entries(&b));
        match crate::fhir::link(&b, "next") {
            Some(n) => url = n,
            None => {
                assert_eq!(b["total"].as_u64(), Some(all.len() as u64));
                break;
            }
        }
        assert!(all.len() < 500, "paging ends");
    }
    let mut by_type: BTreeMap<String, usize> = BTreeMap::new();
    for r in &all {
        *by_type
            .entry(r["resourceType"].as_str().expect("type").to_owned())
            .or_default() += 1;
    }
    let obs = (2 * N + 3 * (N - 5)) as usize;
    let expected: BTreeMap<String, usize> = [
        ("Patient", 1),
        ("Device", 1),
        (
            "Flag",
            f.ok("/Flag?patient=p-fhir").await["total"]
                .as_u64()
                .expect("total") as usize,
        ),
        ("MedicationAdministration", 2),
        ("SupplyRequest", 1),
        ("Location", 2),
        ("Observation", obs),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    assert_eq!(by_type, expected);
    let ids: std::collections::BTreeSet<String> = all.iter().map(id).collect();
    assert_eq!(ids.len(), all.len(), "no resource twice");
}

/// Starts an export and waits for its manifest.
async fn export(f: &Fixture, token: &str, path: &str) -> Value {
    let r =
        f.c.get(format!("{}/fhir/r4{path}", f.hub.url))
            .bearer_auth(token)
            .header("prefer", "respond-async")
            .send()
            .await
            .expect("send");
    assert_eq!(r.status().as_u16(), 202, "{path}");
    let status = r
        .headers()
        .get("content-location")
        .and_then(|v| v.to_str().ok())
        .expect("Content-Location")
        .to_owned();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r =
            f.c.get(&status)
                .bearer_auth(token)
                .send()
                .await
                .expect("send");
        match r.status().as_u16() {
            202 => {}
            200 => {
                let mut m: Value = r.json().await.expect("manifest");
                m["_status_url"] = json!(status);
                return m;
            }
            other => panic!(
                "export status {other}: {}",
                r.text().await.unwrap_or_default()
            ),
        }
        assert!(Instant::now() < deadline, "the export finishes");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Each output file's resources, by type.
async fn outputs(f: &Fixture, token: &str, manifest: &Value) -> BTreeMap<String, Vec<Value>> {
    let mut out = BTreeMap::new();
    for o in manifest["output"].as_array().expect("output") {
        let r =
            f.c.get(o["url"].as_str().expect("url"))
                .bearer_auth(token)
                .send()
                .await
                .expect("send");
        assert_eq!(r.status().as_u16(), 200);
        assert_eq!(
            r.headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("application/fhir+ndjson")
        );
        let text = r.text().await.expect("body");
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("one resource per line"))
            .collect();
        assert_eq!(o["count"].as_u64(), Some(lines.len() as u64));
        out.insert(o["type"].as_str().expect("type").to_owned(), lines);
    }
    out
}

#[tokio::test]
async fn fhir_bulk_export_writes_ndjson_per_type_for_its_owner_only() {
    let f = rich().await;
    let flags = f.ok("/Flag?patient=p-fhir").await["total"]
        .as_u64()
        .expect("total") as usize;
    assert!(flags >= 1);
    // Synchronous requests are refused.
    outcome(f.get("/$export").await, 400, "invalid").await;
    let m = export(&f, &f.admin, "/$export").await;
    assert_eq!(m["requiresAccessToken"], true);
    let files = outputs(&f, &f.admin, &m).await;
    let counts: BTreeMap<&str, usize> = files.iter().map(|(k, v)| (k.as_str(), v.len())).collect();
    let obs = (2 * N + 3 * (N - 5)) as usize;
    assert_eq!(
        counts,
        BTreeMap::from([
            ("Device", 1),
            ("Flag", flags),
            ("Location", 2),
            ("MedicationAdministration", 2),
            ("Observation", obs),
            ("Patient", 1),
            ("SupplyRequest", 1),
        ])
    );
    let ids: std::collections::BTreeSet<String> = files["Observation"].iter().map(id).collect();
    assert_eq!(ids.len(), obs, "every reading once");

    // _type and _since.
    let m = export(&f, &f.admin, "/$export?_type=Observation,Patient").await;
    let types: Vec<&str> = m["output"]
        .as_array()
        .expect("output")
        .iter()
        .filter_map(|o| o["type"].as_str())
        .collect();
    assert_eq!(types, ["Patient", "Observation"]);
    let later = Timestamp::now()
        .saturating_add_millis(3_600_000)
        .to_rfc3339();
    let m = export(
        &f,
        &f.admin,
        &format!("/$export?_type=Observation&_since={later}"),
    )
    .await;
    assert_eq!(m["output"].as_array().map(Vec::len), Some(0), "{m}");
    outcome(
        f.c.get(format!("{}/fhir/r4/$export?_type=Condition", f.hub.url))
            .bearer_auth(&f.admin)
            .header("prefer", "respond-async")
            .send()
            .await
            .expect("send"),
        400,
        "not-supported",
    )
    .await;

    // Another user (even an admin) cannot read the status or the files.
    let m = export(&f, &f.admin, "/$export?_type=Patient").await;
    let other = f.site.token("other-admin", "admin");
    let status = m["_status_url"].as_str().expect("status");
    let r =
        f.c.get(status)
            .bearer_auth(&other)
            .send()
            .await
            .expect("send");
    outcome(r, 404, "not-found").await;
    let file = m["output"][0]["url"].as_str().expect("url");
    let r =
        f.c.get(file)
            .bearer_auth(&other)
            .send()
            .await
            .expect("send");
    outcome(r, 404, "not-found").await;
    let r = f.c.get(file).send().await.expect("send");
    outcome(r, 401, "login").await;
}

#[tokio::test]
async fn fhir_clinicians_see_only_their_care_team_on_every_resource() {
    let f = rich().await;
    let outsider = f.site.token("dr-out", "clinician");
    let insider = f.site.token("dr-in", "clinician");
    call(
        &f.c,
        reqwest::Method::PUT,
        format!("{}/api/v1/patients/p-fhir/care-team", f.hub.url),
        &f.admin,
        json!({"primary": ["dr-in"]}),
    )
    .await;
    let ra = entries(&f.ok("/RiskAssessment?patient=p-fhir").await);
    let flag = entries(&f.ok("/Flag").await);
    let med = entries(&f.ok("/MedicationAdministration").await);
    let sup = entries(&f.ok("/SupplyRequest").await);
    let loc = entries(&f.ok("/Location").await);
    let obs = entries(&f.ok("/Observation?patient=p-fhir&_count=1").await);
    let reads = [
        "/Patient/p-fhir".to_owned(),
        format!("/Observation/{}", id(&obs[0])),
        format!("/RiskAssessment/{}", id(&ra[0])),
        format!("/Flag/{}", id(&flag[0])),
        format!("/MedicationAdministration/{}", id(&med[0])),
        format!("/SupplyRequest/{}", id(&sup[0])),
        format!("/Location/{}", id(&loc[0])),
        "/Patient/p-fhir/$everything".to_owned(),
    ];
    let by_patient = [
        "/Observation?patient=p-fhir",
        "/Observation/$lastn?patient=p-fhir",
        "/RiskAssessment?patient=p-fhir",
        "/Flag?patient=p-fhir",
        "/MedicationAdministration?subject=Patient/p-fhir",
        "/SupplyRequest?patient=p-fhir",
    ];
    let lists = [
        "/Patient",
        "/Flag",
        "/MedicationAdministration",
        "/SupplyRequest",
        "/Location",
    ];
    for path in reads.iter().map(String::as_str).chain(by_patient) {
        outcome(f.get_as(&outsider, path).await, 404, "not-found").await;
        let r = f.get_as(&insider, path).await;
        assert_eq!(r.status().as_u16(), 200, "{path} for the care team");
    }
    for path in lists {
        let r = f.get_as(&outsider, path).await;
        assert_eq!(r.status().as_u16(), 200, "{path}");
        let b: Value = r.json().await.expect("json");
        assert_eq!(
            b["total"], 0,
            "{path} shows nothing outside the care team: {b}"
        );
        let b: Value = f.get_as(&insider, path).await.json().await.expect("json");
        assert!(b["total"].as_u64().is_some_and(|t| t >= 1), "{path}: {b}");
    }
    // Bulk export: the system export is for admin and integration; a clinician's patient
    // export holds their care team's patients only.
    let r =
        f.c.get(format!("{}/fhir/r4/$export", f.hub.url))
            .bearer_auth(&outsider)
            .header("prefer", "respond-async")
            .send()
            .await
            .expect("send");
    outcome(r, 403, "forbidden").await;
    let m = export(&f, &outsider, "/Patient/$export").await;
    assert_eq!(m["output"].as_array().map(Vec::len), Some(0), "{m}");
    let m = export(&f, &insider, "/Patient/$export?_type=Patient").await;
    let files = outputs(&f, &insider, &m).await;
    assert_eq!(files["Patient"].len(), 1);
}

/// Writes `body` as `<name>.json` for the validator.
fn keep(dir: &std::path::Path, name: &str, body: &Value) {
    std::fs::write(
        dir.join(format!("{name}.json")),
        serde_json::to_vec_pretty(body).expect("json"),
    )
    .expect("write");
}

#[tokio::test]
async fn fhir_every_resource_type_the_routes_return_is_valid_for_fhir_resources() {
    let python = std::env::var("VIGIL_PYTHON").expect(
        "VIGIL_PYTHON must name a Python with fhir.resources (scripts/test sets it up: \
         target/fhir-validator/bin/python)",
    );
    let f = rich().await;
    let dir = tempfile::tempdir().expect("dir");
    let d = dir.path();
    let obs = entries(&f.ok("/Observation?patient=p-fhir&_count=2").await);
    let ra = entries(&f.ok("/RiskAssessment?patient=p-fhir").await);
    let flag = entries(&f.ok("/Flag").await);
    let med = entries(&f.ok("/MedicationAdministration").await);
    let sup = entries(&f.ok("/SupplyRequest").await);
    let loc = entries(&f.ok("/Location").await);
    let mut captured: Vec<(String, Value)> = Vec::new();
    for (name, path) in [
        ("capability-statement", "/metadata".to_owned()),
        ("patient", "/Patient/p-fhir".to_owned()),
        ("patient-bundle", "/Patient".to_owned()),
        ("device", "/Device/d-pump".to_owned()),
        ("device-bundle", "/Device".to_owned()),
        ("observation", format!("/Observation/{}", id(&obs[0]))),
        (
            "observation-bundle",
            "/Observation?patient=p-fhir&_count=3".to_owned(),
        ),
        (
            "observation-count",
            "/Observation?patient=p-fhir&_summary=count".to_owned(),
        ),
        (
            "lastn",
            "/Observation/$lastn?patient=p-fhir&max=2".to_owned(),
        ),
        ("risk-assessment", format!("/RiskAssessment/{}", id(&ra[0]))),
        (
            "risk-assessment-bundle",
            "/RiskAssessment?patient=p-fhir".to_owned(),
        ),
        ("flag", format!("/Flag/{}", id(&flag[0]))),
        ("flag-bundle", "/Flag".to_owned()),
        (
            "medication-administration",
            format!("/MedicationAdministration/{}", id(&med[0])),
        ),
        (
            "medication-administration-bundle",
            "/MedicationAdministration".to_owned(),
        ),
        ("supply-request", format!("/SupplyRequest/{}", id(&sup[0]))),
        ("supply-request-bundle", "/SupplyRequest".to_owned()),
        ("location", format!("/Location/{}", id(&loc[0]))),
        ("location-bundle", "/Location".to_owned()),
        (
            "everything",
            "/Patient/p-fhir/$everything?_count=20".to_owned(),
        ),
    ] {
        captured.push((name.to_owned(), f.ok(&path).await));
    }
    let r = f.get("/Patient/nobody").await;
    captured.push((
        "operation-outcome".to_owned(),
        outcome(r, 404, "not-found").await,
    ));
    // One resource of each type from the bulk export.
    let m = export(&f, &f.admin, "/$export").await;
    for (ty, lines) in outputs(&f, &f.admin, &m).await {
        captured.push((format!("export-{ty}"), lines[0].clone()));
    }
    let mut types = std::collections::BTreeSet::new();
    for (name, body) in &captured {
        types.insert(body["resourceType"].as_str().expect("type").to_owned());
        for e in entries(body) {
            types.insert(e["resourceType"].as_str().expect("type").to_owned());
        }
        keep(d, name, body);
    }
    let expected: std::collections::BTreeSet<String> = [
        "Bundle",
        "CapabilityStatement",
        "Device",
        "Flag",
        "Location",
        "MedicationAdministration",
        "Observation",
        "OperationOutcome",
        "Patient",
        "RiskAssessment",
        "SupplyRequest",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert_eq!(types, expected, "every type the routes return is validated");
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../vigil-fhir/tests/validate.py");
    let out = std::process::Command::new(&python)
        .arg(&script)
        .arg(d)
        .output()
        .expect("run the validator");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "fhir.resources rejected what the hub returned:\n{stderr}\n{stdout}"
    );
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("ok ")).count(),
        captured.len(),
        "{stdout}"
    );
}

//! Bad input gets a clear error; device data is quarantined with its reason; nothing accepted
//! before it is lost.

use crate::harness::*;
use serde_json::{Value, json};
use vigil_model::{DeviceId, Metric, Reading, Record, Timestamp};
use vigil_sync::{Batch, WireRecord};

async fn problem(r: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(r.status().as_u16(), status);
    assert_eq!(
        r.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/problem+json")
    );
    let body: Value = r.json().await.expect("problem json");
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["status"], status);
    assert!(body["detail"].as_str().is_some_and(|d| !d.is_empty()));
    body
}

fn reading(device: &str, code: &str, value: f64, t: Timestamp) -> Record {
    let m: Metric = code.parse().expect("code");
    Record::Reading(Reading::quantity(
        DeviceId::new(device).expect("id"),
        m,
        value,
        t,
    ))
}

#[tokio::test]
async fn ingest_rejects_bad_credentials_media_types_and_bodies_with_problems() {
    let site = Site::new();
    let hub = spawn_hub(&site.hub_dir(), "127.0.0.1:0");
    let c = client();
    let url = format!("{}/api/v1/ingest", hub.url);
    let good = Batch {
        version: vigil_sync::VERSION,
        epoch: 1,
        after: 0,
        records: vec![],
    }
    .encode();
    let post = |token: Option<&str>, ct: &str, body: Vec<u8>| {
        let mut r = c
            .post(&url)
            .header("content-type", ct.to_owned())
            .body(body);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send()
    };
    let ct = vigil_sync::CONTENT_TYPE;
    problem(
        post(None, ct, good.clone()).await.expect("send"),
        401,
        "unauthorized",
    )
    .await;
    problem(
        post(Some("vgt_0000"), ct, good.clone())
            .await
            .expect("send"),
        401,
        "unauthorized",
    )
    .await;
    // An API token is not a gateway credential.
    problem(
        post(Some(&site.admin), ct, good.clone())
            .await
            .expect("send"),
        401,
        "unauthorized",
    )
    .await;
    let gt = site.gateway_token();
    problem(
        post(Some(&gt), "application/json", good.clone())
            .await
            .expect("send"),
        415,
        "unsupported_media_type",
    )
    .await;
    problem(
        post(Some(&gt), ct, b"not a batch".to_vec())
            .await
            .expect("send"),
        400,
        "invalid_batch",
    )
    .await;
    let garbage = zstd_garbage();
    problem(
        post(Some(&gt), ct, garbage).await.expect("send"),
        400,
        "invalid_batch",
    )
    .await;
    problem(
        post(Some(&gt), ct, vec![0u8; vigil_sync::MAX_COMPRESSED + 1])
            .await
            .expect("send"),
        413,
        "payload_too_large",
    )
    .await;
    // The empty batch is fine and reports the cursor.
    let ack: Value = post(Some(&gt), ct, good)
        .await
        .expect("send")
        .json()
        .await
        .expect("ack");
    assert_eq!(ack["cursor"], 0);
}

fn zstd_garbage() -> Vec<u8> {
    // Valid zstd framing around bytes that are not a batch.
    let plain = vec![0xffu8; 64];
    let mut out = Vec::new();
    // A raw zstd frame: magic, frame header descriptor (single segment, 1-byte size), size,
    // one raw last block.
    out.extend_from_slice(&[0x28, 0xb5, 0x2f, 0xfd, 0x20, plain.len() as u8]);
    let block_header = ((plain.len() as u32) << 3) | 1; // last block, raw
    out.extend_from_slice(&block_header.to_le_bytes()[..3]);
    out.extend_from_slice(&plain);
    out
}

#[tokio::test]
async fn impossible_values_future_times_and_unknown_devices_are_quarantined_while_good_readings_are_kept()
 {
    let site = Site::new();
    let hub = spawn_hub(&site.hub_dir(), "127.0.0.1:0");
    let c = client();
    let mut g = load(10, 1);
    enrol(&c, &hub.url, &site.admin, &g).await;
    let dev = g.devices()[0].id.as_str().to_owned();
    let now = Timestamp::now();
    let mut records: Vec<Record> = g.by_ref().collect();
    records.push(reading(&dev, "59408-5", 140.0, now)); // SpO2 of 140 %
    records.push(reading(&dev, "29463-7", -3.0, now)); // negative weight
    records.push(reading(&dev, "8867-4", 70.0, Timestamp(now.0 + 86_400_000))); // a day ahead
    records.push(reading("unknown-dev", "8867-4", 70.0, now));
    let wire: Vec<WireRecord> = records
        .iter()
        .enumerate()
        .map(|(i, r)| WireRecord {
            seq: i as u64 + 1,
            payload: postcard::to_stdvec(r).expect("encode"),
        })
        .chain(std::iter::once(WireRecord {
            seq: 100,
            payload: vec![0xff, 0xff, 0xff],
        }))
        .collect();
    let body = Batch {
        version: vigil_sync::VERSION,
        epoch: 9,
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
    assert_eq!(ack["stored"], 10, "{ack}");
    assert_eq!(ack["quarantined"], 5, "{ack}");
    assert_eq!(ack["cursor"], 100);
    let q: Value = c
        .get(format!("{}/api/v1/quarantine", hub.url))
        .bearer_auth(&site.admin)
        .send()
        .await
        .expect("quarantine")
        .json()
        .await
        .expect("json");
    let mut codes: Vec<&str> = q["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|e| e["reason_code"].as_str())
        .collect();
    codes.sort();
    assert_eq!(
        codes,
        [
            "future_time",
            "impossible_value",
            "impossible_value",
            "undecodable",
            "unknown_device"
        ]
    );
    let spo2 = q["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .find(|e| e["reason"].as_str().is_some_and(|r| r.contains("spo2")))
        .expect("spo2 entry");
    assert_eq!(spo2["record"]["reading"]["value"], 140.0);
    assert_eq!(stored_readings(&c, &hub.url, &site.admin).await, Some(10));

    // Enrolling and assigning the unknown device re-processes its quarantined reading.
    let p = &g.patients()[0].id;
    let r = c
        .post(format!("{}/api/v1/devices", hub.url))
        .bearer_auth(&site.admin)
        .json(&json!({"id": "unknown-dev", "kind": "pulse-oximeter"}))
        .send()
        .await
        .expect("device");
    assert_eq!(r.status(), 201);
    let r: Value = c
        .post(format!("{}/api/v1/assignments", hub.url))
        .bearer_auth(&site.admin)
        .json(&json!({"device": "unknown-dev", "patient": p, "from": "2020-01-01T00:00:00Z"}))
        .send()
        .await
        .expect("assign")
        .json()
        .await
        .expect("json");
    assert_eq!(r["reprocessed"]["stored"], 1, "{r}");
    assert_eq!(stored_readings(&c, &hub.url, &site.admin).await, Some(11));
}

#[tokio::test]
async fn the_json_api_answers_bad_requests_with_problems() {
    let site = Site::new();
    let hub = spawn_hub(&site.hub_dir(), "127.0.0.1:0");
    let c = client();
    let h = &hub.url;
    let a = &site.admin;
    problem(
        c.get(format!("{h}/api/v1/patients"))
            .send()
            .await
            .expect("send"),
        401,
        "unauthorized",
    )
    .await;
    problem(
        c.get(format!("{h}/api/v1/patients"))
            .bearer_auth("vat_revoked_or_made_up")
            .send()
            .await
            .expect("send"),
        401,
        "unauthorized",
    )
    .await;
    problem(
        c.post(format!("{h}/api/v1/patients"))
            .bearer_auth(a)
            .header("content-type", "application/json")
            .body("{not json")
            .send()
            .await
            .expect("send"),
        400,
        "invalid_json",
    )
    .await;
    problem(
        c.post(format!("{h}/api/v1/patients"))
            .bearer_auth(a)
            .json(&json!({"id": "../../etc"}))
            .send()
            .await
            .expect("send"),
        400,
        "invalid_json",
    )
    .await;
    problem(
        c.get(format!("{h}/api/v1/patients/nobody"))
            .bearer_auth(a)
            .send()
            .await
            .expect("send"),
        404,
        "not_found",
    )
    .await;
    let r = c
        .post(format!("{h}/api/v1/patients"))
        .bearer_auth(a)
        .json(&json!({"id": "p-1"}))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 201);
    problem(
        c.get(format!("{h}/api/v1/patients/p-1/readings?code=0000-0"))
            .bearer_auth(a)
            .send()
            .await
            .expect("send"),
        400,
        "unknown_code",
    )
    .await;
    problem(
        c.get(format!("{h}/api/v1/patients/p-1/readings?from=yesterday"))
            .bearer_auth(a)
            .send()
            .await
            .expect("send"),
        400,
        "invalid_time",
    )
    .await;
    problem(
        c.get(format!("{h}/api/v1/patients/p-1/readings?limit=0"))
            .bearer_auth(a)
            .send()
            .await
            .expect("send"),
        400,
        "invalid_limit",
    )
    .await;
    problem(
        c.get(format!("{h}/api/v1/patients/p-1/readings?bogus=1"))
            .bearer_auth(a)
            .send()
            .await
            .expect("send"),
        400,
        "invalid_query",
    )
    .await;
    problem(
        c.post(format!("{h}/api/v1/assignments"))
            .bearer_auth(a)
            .json(&json!({"device": "nope", "patient": "p-1", "from": "2024-01-01T00:00:00Z"}))
            .send()
            .await
            .expect("send"),
        404,
        "not_found",
    )
    .await;
    problem(
        c.get(format!("{h}/no/such/route"))
            .send()
            .await
            .expect("send"),
        404,
        "not_found",
    )
    .await;
    problem(
        c.post(format!("{h}/api/v1/patients"))
            .bearer_auth(a)
            .header("content-type", "application/json")
            .body(vec![b' '; 2 << 20])
            .send()
            .await
            .expect("send"),
        413,
        "payload_too_large",
    )
    .await;
}

#[tokio::test]
async fn the_gateway_answers_malformed_source_data_with_problems() {
    let site = Site::new();
    let gw = spawn_gateway(
        "http://127.0.0.1:9",
        &site.gateway_token_file,
        &site.outbox(),
        100,
    );
    let c = client();
    let r = c
        .post(format!("{}/v1/records", gw.url))
        .header("content-type", "application/json")
        .body("[{\"reading\": 5}]")
        .send()
        .await
        .expect("send");
    problem(r, 400, "invalid_json").await;
    let r = c
        .post(format!("{}/v1/records", gw.url))
        .json(&json!([{"reading": {"device": "d1", "code": "8867-4", "value": 70, "time": "2024-01-01T00:00:00Z"}}]))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    assert_eq!(gateway_health(&c, &gw.url).await["outbox"]["depth"], 1);
}

//! Least-privilege access end to end: a real hub, real tokens of every role, each against a
//! patient in its scope (A) and one outside it (B). Out of scope answers 404 (existence is not
//! revealed), a write the role may not do 403, a bad or expired token 401.

use crate::harness::{self, Proc, Site};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use vigil_model::{DeviceId, Metric, Reading, Record, Source, Timestamp};

const A: &str = "pat-a";
const B: &str = "pat-b";

fn glucose(device: &str, v: f64, t: Timestamp) -> Record {
    let metric: Metric = "2339-0".parse().expect("glucose");
    let mut r = Reading::quantity(DeviceId::new(device).expect("id"), metric, v, t);
    r.source = Source::Manual;
    Record::Reading(r)
}

async fn call(
    c: &reqwest::Client,
    method: Method,
    url: String,
    token: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = c.request(method, url).bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.expect("hub reachable");
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

struct World {
    _site: Site,
    hub: Proc,
    _gw: Proc,
    c: reqwest::Client,
    admin: String,
    alert: std::collections::HashMap<&'static str, i64>,
}

/// Two patients with a reading, an alert each; A's care team is dr-in (primary), nurse-in
/// (backup) and carer-a (caregiver, with A's consent); B's is dr-b only.
async fn world(site: Site, hub: Proc) -> World {
    let gw = harness::spawn_gateway(&hub.url, &site.gateway_token_file, &site.outbox(), 100);
    let c = harness::client();
    let admin = site.admin.clone();
    let u = &hub.url;
    for (p, d, team) in [
        (
            A,
            "dev-a",
            json!({"primary": ["dr-in"], "backup": ["nurse-in"], "caregivers": ["carer-a"]}),
        ),
        (B, "dev-b", json!({"primary": ["dr-b"]})),
    ] {
        for (path, body) in [
            ("patients", json!({"id": p})),
            ("devices", json!({"id": d, "kind": "wearable"})),
            (
                "assignments",
                json!({"device": d, "patient": p, "from": "2000-01-01T00:00:00Z"}),
            ),
        ] {
            let (s, v) = call(
                &c,
                Method::POST,
                format!("{u}/api/v1/{path}"),
                &admin,
                Some(body),
            )
            .await;
            assert_eq!(s, StatusCode::CREATED, "{v}");
        }
        let (s, v) = call(
            &c,
            Method::PUT,
            format!("{u}/api/v1/patients/{p}/care-team"),
            &admin,
            Some(team),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    // Caregivers see a patient by the patient's consent, which an admin may record on the
    // patient's behalf; being listed as caregiver on the care team grants nothing.
    let (s, v) = call(
        &c,
        Method::POST,
        format!("{u}/api/v1/patients/{A}/consents"),
        &admin,
        Some(json!({"grantee": "carer-a"})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let t = Timestamp::now().saturating_add_millis(-10_000);
    harness::feed(
        &c,
        &gw.url,
        &[glucose("dev-a", 42.0, t), glucose("dev-b", 41.0, t)],
    )
    .await;
    let mut alert = std::collections::HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while alert.len() < 2 {
        assert!(Instant::now() < deadline, "alerts in time");
        let (_, v) = call(&c, Method::GET, format!("{u}/api/v1/alerts"), &admin, None).await;
        for a in v["alerts"].as_array().cloned().unwrap_or_default() {
            for p in [A, B] {
                if a["patient"] == p {
                    alert.insert(p, a["id"].as_i64().expect("id"));
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    World {
        _site: site,
        hub,
        _gw: gw,
        c,
        admin,
        alert,
    }
}

/// Expected status of (patient A, patient B) per route for one caller.
struct Row {
    who: &'static str,
    read: (u16, u16),
    ack: (u16, u16),
    team_put: (u16, u16),
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_role_sees_only_its_patients_and_writes_only_what_its_role_allows() {
    let site = Site::new();
    let tokens = [
        ("admin", site.admin.clone()),
        ("clinician-on-team", site.token("dr-in", "clinician")),
        ("clinician-off-team", site.token("dr-out", "clinician")),
        ("nurse-on-team", site.token("nurse-in", "nurse")),
        ("caregiver-of-a", site.token("carer-a", "caregiver")),
        ("patient-a", site.token(A, "patient")),
    ];
    let hub = harness::spawn_hub(&site.hub_dir(), "127.0.0.1:0");
    let w = world(site, hub).await;
    let u = &w.hub.url;
    let rows = [
        Row {
            who: "admin",
            read: (200, 200),
            ack: (200, 200),
            team_put: (200, 200),
        },
        Row {
            who: "clinician-on-team",
            read: (200, 404),
            ack: (200, 404),
            team_put: (200, 404),
        },
        Row {
            who: "clinician-off-team",
            read: (404, 404),
            ack: (404, 404),
            team_put: (404, 404),
        },
        Row {
            who: "nurse-on-team",
            read: (200, 404),
            ack: (200, 404),
            team_put: (403, 404),
        },
        Row {
            who: "caregiver-of-a",
            read: (200, 404),
            ack: (403, 404),
            team_put: (403, 404),
        },
        Row {
            who: "patient-a",
            read: (200, 404),
            ack: (403, 404),
            team_put: (403, 404),
        },
    ];
    for row in &rows {
        let tok = &tokens.iter().find(|(n, _)| *n == row.who).expect("token").1;
        for (p, want_read, want_ack, want_put) in [
            (A, row.read.0, row.ack.0, row.team_put.0),
            (B, row.read.1, row.ack.1, row.team_put.1),
        ] {
            for path in ["", "/readings", "/events", "/care-team"] {
                let (s, v) = call(
                    &w.c,
                    Method::GET,
                    format!("{u}/api/v1/patients/{p}{path}"),
                    tok,
                    None,
                )
                .await;
                assert_eq!(s.as_u16(), want_read, "{} GET {p}{path}: {v}", row.who);
                if s == StatusCode::NOT_FOUND {
                    assert_eq!(v["code"], "not_found", "{v}");
                }
            }
            let id = w.alert[p];
            let (s, v) = call(
                &w.c,
                Method::GET,
                format!("{u}/api/v1/alerts/{id}"),
                tok,
                None,
            )
            .await;
            assert_eq!(s.as_u16(), want_read, "{} GET alert of {p}: {v}", row.who);
            let (s, v) = call(
                &w.c,
                Method::POST,
                format!("{u}/api/v1/alerts/{id}/acknowledge"),
                tok,
                None,
            )
            .await;
            // An alert already acknowledged by an earlier row answers 409 to a later one.
            let s = if s == StatusCode::CONFLICT {
                200
            } else {
                s.as_u16()
            };
            assert_eq!(s, want_ack, "{} acknowledge alert of {p}: {v}", row.who);
            // Writes back the same team, so later rows see the world unchanged.
            let (_, team) = call(
                &w.c,
                Method::GET,
                format!("{u}/api/v1/patients/{p}/care-team"),
                &w.admin,
                None,
            )
            .await;
            let (s, v) = call(
                &w.c,
                Method::PUT,
                format!("{u}/api/v1/patients/{p}/care-team"),
                tok,
                Some(team["care_team"].clone()),
            )
            .await;
            assert_eq!(
                s.as_u16(),
                want_put,
                "{} PUT care team of {p}: {v}",
                row.who
            );
        }
        // Lists show only the patients (and their alerts) in scope.
        let (s, v) = call(&w.c, Method::GET, format!("{u}/api/v1/patients"), tok, None).await;
        assert_eq!(s, StatusCode::OK);
        let ids: Vec<&str> = v["patients"]
            .as_array()
            .map(|a| a.iter().filter_map(|p| p["id"].as_str()).collect())
            .unwrap_or_default();
        let (_, al) = call(&w.c, Method::GET, format!("{u}/api/v1/alerts"), tok, None).await;
        let alert_patients: std::collections::BTreeSet<&str> = al["alerts"]
            .as_array()
            .map(|a| a.iter().filter_map(|x| x["patient"].as_str()).collect())
            .unwrap_or_default();
        let mut want: Vec<&str> = Vec::new();
        if row.read.0 == 200 {
            want.push(A);
        }
        if row.read.1 == 200 {
            want.push(B);
        }
        assert_eq!(ids, want, "{} patient list", row.who);
        assert_eq!(
            alert_patients.into_iter().collect::<Vec<_>>(),
            want,
            "{} alert list",
            row.who
        );
        let (s, _) = call(
            &w.c,
            Method::GET,
            format!("{u}/api/v1/alerts?patient={B}"),
            tok,
            None,
        )
        .await;
        assert_eq!(s, StatusCode::OK);
        // Operational routes are for admin and integration only.
        for path in ["quarantine", "devices", "assignments", "gateways", "stats"] {
            let (s, v) = call(&w.c, Method::GET, format!("{u}/api/v1/{path}"), tok, None).await;
            let want = if row.who == "admin" { 200 } else { 403 };
            assert_eq!(s.as_u16(), want, "{} GET {path}: {v}", row.who);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idor_attempts_on_another_patient_answer_not_found() {
    let site = Site::new();
    let patient_a = site.token(A, "patient");
    let carer_a = site.token("carer-a", "caregiver");
    let hub = harness::spawn_hub(&site.hub_dir(), "127.0.0.1:0");
    let w = world(site, hub).await;
    let u = &w.hub.url;
    for tok in [&patient_a, &carer_a] {
        for path in ["readings", "events", "care-team", "rule-settings"] {
            let (s, v) = call(
                &w.c,
                Method::GET,
                format!("{u}/api/v1/patients/{B}/{path}"),
                tok,
                None,
            )
            .await;
            assert_eq!(s, StatusCode::NOT_FOUND, "{path}: {v}");
            assert_eq!(v["code"], "not_found");
        }
        // The same answer as for a patient that does not exist.
        let (s, v) = call(
            &w.c,
            Method::GET,
            format!("{u}/api/v1/patients/nobody/readings"),
            tok,
            None,
        )
        .await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
        let (s, v) = call(
            &w.c,
            Method::POST,
            format!("{u}/api/v1/patients/{B}/assessments"),
            tok,
            Some(json!({"consciousness": "A"})),
        )
        .await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
        let b = w.alert[B];
        let (s, v) = call(
            &w.c,
            Method::POST,
            format!("{u}/api/v1/alerts/{b}/resolve"),
            tok,
            Some(json!({"note": "not mine"})),
        )
        .await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_and_unknown_tokens_are_unauthorized() {
    let site = Site::new();
    let expiring = site.token_with("dr-in", "clinician", &["--expires-in", "1s"]);
    let hub = harness::spawn_hub(&site.hub_dir(), "127.0.0.1:0");
    let c = harness::client();
    let u = &hub.url;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let unknown = format!("vat_{}", "0".repeat(64));
    for tok in [expiring.as_str(), unknown.as_str(), "not-a-token"] {
        for path in ["patients", &format!("patients/{A}/readings"), "alerts"] {
            let (s, v) = call(&c, Method::GET, format!("{u}/api/v1/{path}"), tok, None).await;
            assert_eq!(s, StatusCode::UNAUTHORIZED, "{path}: {v}");
            assert_eq!(v["code"], "unauthorized");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_alert_stream_carries_only_transitions_of_visible_patients() {
    let site = Site::new();
    let dr_in = site.token("dr-in", "clinician");
    let hub = harness::spawn_hub(&site.hub_dir(), "127.0.0.1:0");
    let w = world(site, hub).await;
    // Replay from the start: both patients have an open alert in storage.
    vigil_tls::install_default_provider();
    let mut resp = reqwest::Client::new()
        .get(format!("{}/api/v1/alerts/stream", w.hub.url))
        .bearer_auth(&dr_in)
        .header("last-event-id", "0")
        .send()
        .await
        .expect("stream");
    assert_eq!(resp.status(), StatusCode::OK);
    let mut text = String::new();
    let until = Instant::now() + Duration::from_millis(1500);
    while let Some(left) = until.checked_duration_since(Instant::now()) {
        match tokio::time::timeout(left, resp.chunk()).await {
            Ok(Ok(Some(c))) => text.push_str(&String::from_utf8_lossy(&c)),
            _ => break,
        }
    }
    let patients: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
        .filter_map(|v| v["patient"].as_str().map(str::to_owned))
        .collect();
    assert!(!patients.is_empty(), "A's transitions arrive: {text}");
    assert!(patients.iter().all(|p| p == A), "only A: {patients:?}");
}

async fn status_of(w: &World, method: Method, path: &str, tok: &str, body: Option<Value>) -> u16 {
    let (s, _) = call(&w.c, method, format!("{}{path}", w.hub.url), tok, body).await;
    s.as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consent_export_and_break_glass_follow_the_role_matrix() {
    let site = Site::new();
    let patient_a = site.token(A, "patient");
    let patient_b = site.token(B, "patient");
    let carer_x = site.token("carer-x", "caregiver");
    let carer_a = site.token("carer-a", "caregiver");
    let dr_in = site.token("dr-in", "clinician");
    let dr_out = site.token("dr-out", "clinician");
    let nurse_out = site.token("nurse-out", "nurse");
    // A break-glass grant lasts 3 s on this hub.
    let hub = harness::spawn_hub_with(
        &site.hub_dir(),
        "127.0.0.1:0",
        &[("VIGIL_HUB__BREAK_GLASS_MINUTES", "0.05")],
    );
    let w = world(site, hub).await;
    let admin = w.admin.clone();
    let pa = format!("/api/v1/patients/{A}");

    // Export (right of access): the patient themself and admins.
    for (who, tok, want) in [
        ("patient-b", &patient_b, 404),
        ("caregiver with consent", &carer_a, 403),
        ("clinician on team", &dr_in, 403),
        ("clinician off team", &dr_out, 404),
        ("patient-a", &patient_a, 200),
        ("admin", &admin, 200),
    ] {
        let got = status_of(&w, Method::GET, &format!("{pa}/export"), tok, None).await;
        assert_eq!(got, want, "{who} export of A");
    }

    // Consent: a caregiver without it sees nothing; with it reads, never writes; revoked, at once
    // nothing again.
    for path in ["", "/readings", "/events"] {
        let got = status_of(&w, Method::GET, &format!("{pa}{path}"), &carer_x, None).await;
        assert_eq!(got, 404, "caregiver without consent GET A{path}");
    }
    let consent = Some(json!({"grantee": "carer-x"}));
    for (who, tok, want) in [
        ("patient-b", &patient_b, 404),
        ("caregiver", &carer_a, 403),
        ("clinician on team", &dr_in, 403),
    ] {
        let got = status_of(
            &w,
            Method::POST,
            &format!("{pa}/consents"),
            tok,
            consent.clone(),
        )
        .await;
        assert_eq!(got, want, "{who} records consent for A");
    }
    for bad in [
        json!({"grantee": ""}),
        json!({"grantee": "carer-x", "scope": "write"}),
        json!({"grantee": "carer-x", "expires": "2001-01-01T00:00:00Z"}),
        json!({"grantee": "carer-x", "expires": "tomorrow"}),
    ] {
        let (s, v) = call(
            &w.c,
            Method::POST,
            format!("{}{pa}/consents", w.hub.url),
            &patient_a,
            Some(bad.clone()),
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {v}");
        assert!(v["code"].is_string(), "{v}");
    }
    let got = status_of(
        &w,
        Method::POST,
        &format!("{pa}/consents"),
        &patient_a,
        consent,
    )
    .await;
    assert_eq!(got, 201, "patient A grants carer-x");
    for path in ["", "/readings", "/events", "/care-team"] {
        let got = status_of(&w, Method::GET, &format!("{pa}{path}"), &carer_x, None).await;
        assert_eq!(got, 200, "caregiver with consent GET A{path}");
    }
    let got = status_of(
        &w,
        Method::GET,
        &format!("/api/v1/patients/{B}"),
        &carer_x,
        None,
    )
    .await;
    assert_eq!(got, 404, "consent for A opens nothing of B");
    let (_, list) = call(
        &w.c,
        Method::GET,
        format!("{}/api/v1/patients", w.hub.url),
        &carer_x,
        None,
    )
    .await;
    assert_eq!(list["count"], 1, "{list}");
    assert_eq!(list["patients"][0]["id"], A);
    let alert_a = w.alert[A];
    let got = status_of(
        &w,
        Method::POST,
        &format!("/api/v1/alerts/{alert_a}/resolve"),
        &carer_x,
        Some(json!({"note": "fine"})),
    )
    .await;
    assert_eq!(got, 403, "caregivers read only");
    let (s, consents) = call(
        &w.c,
        Method::GET,
        format!("{}{pa}/consents", w.hub.url),
        &patient_a,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let active: Vec<&str> = consents["consents"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|c| c["active"] == true)
                .filter_map(|c| c["grantee"].as_str())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(active, ["carer-x", "carer-a"], "{consents}");
    let got = status_of(&w, Method::GET, &format!("{pa}/consents"), &patient_b, None).await;
    assert_eq!(got, 404, "B lists A's consents");
    let got = status_of(
        &w,
        Method::DELETE,
        &format!("{pa}/consents/carer-x"),
        &patient_a,
        None,
    )
    .await;
    assert_eq!(got, 200, "patient A revokes");
    for path in ["", "/readings"] {
        let got = status_of(&w, Method::GET, &format!("{pa}{path}"), &carer_x, None).await;
        assert_eq!(got, 404, "caregiver after revocation GET A{path}");
    }
    let got = status_of(
        &w,
        Method::DELETE,
        &format!("{pa}/consents/carer-x"),
        &patient_a,
        None,
    )
    .await;
    assert_eq!(got, 404, "nothing left to revoke");

    // Break-glass: clinicians and nurses outside the team, with a reason, for a limited time.
    for tok in [&dr_out, &nurse_out] {
        let got = status_of(&w, Method::GET, &pa, tok, None).await;
        assert_eq!(got, 404, "outside the team without break-glass");
    }
    let reason = Some(json!({"reason": "unconscious in A&E, no team reachable"}));
    for (who, tok, want) in [
        ("patient", &patient_a, 403),
        ("caregiver", &carer_a, 403),
        ("admin", &admin, 403),
        ("clinician on team", &dr_in, 409),
    ] {
        let got = status_of(
            &w,
            Method::POST,
            &format!("{pa}/break-glass"),
            tok,
            reason.clone(),
        )
        .await;
        assert_eq!(got, want, "{who} breaks glass");
    }
    for bad in [json!({}), json!({"reason": "   because  "})] {
        let (s, v) = call(
            &w.c,
            Method::POST,
            format!("{}{pa}/break-glass", w.hub.url),
            &dr_out,
            Some(bad),
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
        assert_eq!(v["code"], "reason_required");
    }
    let got = status_of(
        &w,
        Method::POST,
        "/api/v1/patients/nobody/break-glass",
        &dr_out,
        reason.clone(),
    )
    .await;
    assert_eq!(got, 404);
    let (s, grant) = call(
        &w.c,
        Method::POST,
        format!("{}{pa}/break-glass", w.hub.url),
        &dr_out,
        reason,
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{grant}");
    let until = Timestamp::parse(grant["until"].as_str().expect("until")).expect("time");
    for path in ["", "/readings", "/events"] {
        let got = status_of(&w, Method::GET, &format!("{pa}{path}"), &dr_out, None).await;
        // The grant may only have run out if the hub's clock passed `until`.
        if Timestamp::now() < until {
            assert_eq!(got, 200, "clinician with break-glass GET A{path}");
        }
    }
    let got = status_of(
        &w,
        Method::GET,
        &format!("/api/v1/patients/{B}"),
        &dr_out,
        None,
    )
    .await;
    assert_eq!(got, 404, "break-glass for A opens nothing of B");
    let got = status_of(&w, Method::GET, &pa, &nurse_out, None).await;
    assert_eq!(got, 404, "another user's break-glass grants nothing");
    // The audit log holds the break-glass reads with purpose emergency treatment and the reason.
    let (_, audit) = call(
        &w.c,
        Method::GET,
        format!("{}/api/v1/audit?patient={A}&limit=10000", w.hub.url),
        &admin,
        None,
    )
    .await;
    let glass_reads = audit["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter(|e| {
            e["actor"] == "dr-out"
                && e["purpose"] == "ETREAT"
                && e["outcome"] == 200
                && e["detail"]
                    .as_str()
                    .is_some_and(|d| d.contains("unconscious in A&E, no team reachable"))
        })
        .count();
    assert!(glass_reads >= 1, "no audited break-glass read: {audit}");
    // Reported to admins: the log (admin only) and a queued notification per admin.
    let got = status_of(&w, Method::GET, "/api/v1/break-glass", &dr_out, None).await;
    assert_eq!(got, 403);
    let (_, log) = call(
        &w.c,
        Method::GET,
        format!("{}/api/v1/break-glass", w.hub.url),
        &admin,
        None,
    )
    .await;
    assert_eq!(log["count"], 1, "{log}");
    assert_eq!(log["break_glass"][0]["user"], "dr-out");
    assert_eq!(log["break_glass"][0]["patient"], A);
    assert_eq!(
        log["break_glass"][0]["reason"],
        "unconscious in A&E, no team reachable"
    );
    let (_, notes) = call(
        &w.c,
        Method::GET,
        format!("{}/api/v1/notifications", w.hub.url),
        &admin,
        None,
    )
    .await;
    let reported: Vec<&Value> = notes["notifications"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|n| n["payload"]["event"] == "break-glass")
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(reported.len(), 1, "{notes}");
    assert_eq!(reported[0]["target"], "test-admin");
    assert_eq!(reported[0]["channel"], "user");
    // Then the grant runs out and the record is closed again.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = status_of(&w, Method::GET, &pa, &dr_out, None).await;
        if got == 404 {
            assert!(
                Timestamp::now() >= until,
                "closed only once the grant ran out"
            );
            break;
        }
        assert_eq!(got, 200);
        assert!(Instant::now() < deadline, "break-glass grant ends");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, list) = call(
        &w.c,
        Method::GET,
        format!("{}/api/v1/patients", w.hub.url),
        &dr_out,
        None,
    )
    .await;
    assert_eq!(list["count"], 0, "{list}");
}

/// A cookie-authenticated call (with the session's CSRF token).
async fn browse(
    c: &reqwest::Client,
    method: Method,
    url: String,
    b: &harness::Browser,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = c
        .request(method, url)
        .header(reqwest::header::COOKIE, &b.cookie)
        .header("X-CSRF-Token", &b.csrf);
    if let Some(v) = body {
        req = req.json(&v);
    }
    let r = req.send().await.expect("hub reachable");
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_in_people_get_the_scope_of_their_role_and_care_team() {
    const PW: &str = "a long enough passphrase";
    let site = Site::new();
    site.user("nurse-in", "nurse", PW);
    site.user("carer-a", "caregiver", PW);
    site.user(A, "patient", PW);
    site.user("dr-out", "clinician", PW);
    let hub = harness::spawn_hub(&site.hub_dir(), "127.0.0.1:0");
    let w = world(site, hub).await;
    let u = &w.hub.url;
    // (user, reads A, reads B, acknowledges A)
    for (who, read_a, ack_a) in [
        ("nurse-in", 200, 200),
        ("carer-a", 200, 403),
        (A, 200, 403),
        ("dr-out", 404, 404),
    ] {
        let b = harness::sign_in(&w.c, u, who, PW).await;
        for (p, want) in [(A, read_a), (B, 404)] {
            for path in [
                format!("{u}/api/v1/patients/{p}"),
                format!("{u}/api/v1/patients/{p}/readings"),
                format!("{u}/fhir/r4/Patient/{p}"),
            ] {
                let (s, v) = browse(&w.c, Method::GET, path.clone(), &b, None).await;
                assert_eq!(s.as_u16(), want, "{who} GET {path}: {v}");
            }
        }
        // IDOR with a session: B's alert is not there for anyone of A's team.
        let alert_b = w.alert[B];
        let (s, v) = browse(
            &w.c,
            Method::POST,
            format!("{u}/api/v1/alerts/{alert_b}/resolve"),
            &b,
            Some(json!({"note": "not mine"})),
        )
        .await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{who}: {v}");
        let alert_a = w.alert[A];
        let (s, v) = browse(
            &w.c,
            Method::POST,
            format!("{u}/api/v1/alerts/{alert_a}/acknowledge"),
            &b,
            None,
        )
        .await;
        let s = if s == StatusCode::CONFLICT {
            200
        } else {
            s.as_u16()
        };
        assert_eq!(s, ack_a, "{who} acknowledges A's alert: {v}");
        // Administration stays with the admin role.
        let (s, _) = browse(&w.c, Method::GET, format!("{u}/api/v1/gateways"), &b, None).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{who}");
    }
}

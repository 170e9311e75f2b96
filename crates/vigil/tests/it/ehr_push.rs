//! EHR push through real processes: hub A pushes new Observations and alert Flags to hub B,
//! which acts as the EHR (FHIR transaction endpoint, OAuth2 token endpoint), across a wrong
//! client secret, kill -9 of B mid-stream, an outage of B and kill -9 of A mid-stream.

use crate::harness::*;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};
use vigil_model::{DeviceId, Metric, Reading, Record, Source, Timestamp};

const LONG: Duration = Duration::from_secs(240);

fn spawn_hub_config(data_dir: &Path, port: u16, config: &Path) -> Proc {
    let mut cmd = vigil();
    cmd.args(["--log", "warn", "--config"])
        .arg(config)
        .args([
            "hub",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(data_dir);
    spawn_announcing(cmd, "hub listening on ")
}

fn create_client(site: &Site, id: &str) -> String {
    let out = vigil()
        .args(["admin", "create-client", id, "--data-dir"])
        .arg(site.hub_dir())
        .output()
        .expect("run vigil admin create-client");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf8")
        .trim()
        .to_owned()
}

/// Every inbound resource of `ty` at `hub` (total and the resources), `None` while the hub
/// is down.
async fn inbound(
    c: &reqwest::Client,
    hub: &str,
    admin: &str,
    ty: &str,
) -> Option<(u64, Vec<Value>)> {
    let r = c
        .get(format!("{hub}/api/v1/ehr/inbound?type={ty}&limit=10000"))
        .bearer_auth(admin)
        .send()
        .await
        .ok()?;
    let v: Value = r.json().await.ok()?;
    let list = v["resources"].as_array()?.clone();
    Some((v["total"].as_u64()?, list))
}

/// Waits until `hub` holds at least `n` inbound resources of `ty`; what it holds.
async fn wait_inbound(c: &reqwest::Client, hub: &str, admin: &str, ty: &str, n: u64) -> u64 {
    let start = Instant::now();
    let mut last = 0;
    while start.elapsed() < LONG {
        if let Some((total, _)) = inbound(c, hub, admin, ty).await {
            last = total;
            if total >= n {
                return total;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    last
}

async fn ehr_status(c: &reqwest::Client, hub: &str, admin: &str) -> Value {
    call(
        c,
        reqwest::Method::GET,
        format!("{hub}/api/v1/ehr"),
        admin,
        Value::Null,
    )
    .await["targets"][0]
        .clone()
}

/// Waits until the target's status satisfies `ok`; the last status seen.
async fn wait_status(
    c: &reqwest::Client,
    hub: &str,
    admin: &str,
    ok: impl Fn(&Value) -> bool,
) -> Value {
    let start = Instant::now();
    let mut s = Value::Null;
    while start.elapsed() < LONG {
        s = ehr_status(c, hub, admin).await;
        if ok(&s) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    s
}

/// Asserts `hub` holds exactly `n` resources of `ty`, each identifier once.
async fn assert_exactly(c: &reqwest::Client, hub: &str, admin: &str, ty: &str, n: u64) {
    let (total, list) = inbound(c, hub, admin, ty).await.expect("inbound listing");
    assert_eq!(total, n, "{ty} count");
    let ids: HashSet<(String, String)> = list
        .iter()
        .map(|r| {
            (
                r["identifier_system"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                r["identifier_value"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect();
    assert_eq!(ids.len() as u64, n, "{ty}: an identifier stored twice");
    assert!(
        list.iter().all(|r| r["resource"]["resourceType"] == ty),
        "{ty}: every stored resource is what it says"
    );
}

fn glucose(device: &DeviceId, v: f64, t: Timestamp) -> Record {
    let metric: Metric = "2339-0".parse().expect("glucose");
    let mut r = Reading::quantity(device.clone(), metric, v, t);
    r.source = Source::Manual;
    Record::Reading(r)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_a_pushes_every_observation_and_alert_to_hub_b_exactly_once_across_crashes() {
    let a = Site::new();
    let b = Site::new();
    let (port_a, port_b) = (free_port(), free_port());
    let c = client();
    let secret = create_client(&b, "hub-a");
    let secret_file = a.hub_dir().join("ehr-secret");
    std::fs::write(&secret_file, "vcs_not-the-secret\n").expect("secret file");
    let config = a.hub_dir().join("vigil.toml");
    std::fs::write(
        &config,
        format!(
            "[[hub.ehr]]\nname = \"hub-b\"\nurl = \"http://127.0.0.1:{port_b}/fhir/r4\"\n\
             batch_size = 40\nmax_backoff_ms = 1000\n\
             [hub.ehr.oauth2]\ntoken_url = \"http://127.0.0.1:{port_b}/oauth2/token\"\n\
             client_id = \"hub-a\"\nclient_secret_file = \"{}\"\n",
            secret_file.display()
        ),
    )
    .expect("config");
    let mut hub_b = spawn_hub(&b.hub_dir(), &format!("127.0.0.1:{port_b}"));
    let mut hub_a = spawn_hub_config(&a.hub_dir(), port_a, &config);
    let mut g = load(2_400, 4);
    enrol(&c, &hub_a.url, &a.admin, &g).await;
    let records: Vec<Record> = g.by_ref().collect();
    assert_eq!(records.len(), 2_400);
    let gw = spawn_gateway(&hub_a.url, &a.gateway_token_file, &a.outbox(), 100);
    let mut fed = 0u64;

    // 1. A wrong client secret: A keeps the data and shows why nothing arrives.
    let quarter = &records[..600];
    feed(&c, &gw.url, quarter).await;
    fed += 600;
    assert_eq!(
        wait_for_readings(&c, &hub_a.url, &a.admin, fed, LONG).await,
        fed
    );
    let s = wait_status(&c, &hub_a.url, &a.admin, |s| {
        s["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("invalid_client"))
    })
    .await;
    assert!(
        s["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("invalid_client")),
        "{s}"
    );
    assert!(s["lag"]["observations"].as_i64().unwrap_or(0) > 0, "{s}");
    assert_eq!(
        inbound(&c, &hub_b.url, &b.admin, "Observation")
            .await
            .map(|x| x.0),
        Some(0)
    );

    // 2. kill -9 of A with unpushed data; the secret fixed; A restarted catches up.
    hub_a.kill9();
    std::fs::write(&secret_file, format!("{secret}\n")).expect("secret file");
    hub_a = spawn_hub_config(&a.hub_dir(), port_a, &config);
    assert_eq!(
        wait_inbound(&c, &hub_b.url, &b.admin, "Observation", fed).await,
        fed
    );

    // An alert: a critical glucose reading raises one on A, which B receives as a Flag.
    let device = g.devices()[0].id.clone();
    feed(
        &c,
        &gw.url,
        &[glucose(
            &device,
            42.0,
            Timestamp::now().saturating_add_millis(-5_000),
        )],
    )
    .await;
    fed += 1;
    assert!(wait_inbound(&c, &hub_b.url, &b.admin, "Flag", 1).await >= 1);

    // 3. kill -9 of B mid-stream, then restart: B catches up.
    feed(&c, &gw.url, &records[600..1200]).await;
    fed += 600;
    let before = fed - 600;
    let at_kill = wait_inbound(&c, &hub_b.url, &b.admin, "Observation", before + 40).await;
    hub_b.kill9();
    assert!(at_kill > before, "B was receiving when killed ({at_kill})");
    hub_b = spawn_hub(&b.hub_dir(), &format!("127.0.0.1:{port_b}"));
    assert_eq!(
        wait_inbound(&c, &hub_b.url, &b.admin, "Observation", fed).await,
        fed
    );

    // 4. B down while A stores more: A shows the failure, B catches up once back.
    hub_b.kill9();
    feed(&c, &gw.url, &records[1200..1800]).await;
    fed += 600;
    assert_eq!(
        wait_for_readings(&c, &hub_a.url, &a.admin, fed, LONG).await,
        fed
    );
    let s = wait_status(&c, &hub_a.url, &a.admin, |s| {
        s["attempts"].as_u64().unwrap_or(0) > 0
    })
    .await;
    assert!(
        s["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("unreachable")),
        "{s}"
    );
    hub_b = spawn_hub(&b.hub_dir(), &format!("127.0.0.1:{port_b}"));
    assert_eq!(
        wait_inbound(&c, &hub_b.url, &b.admin, "Observation", fed).await,
        fed
    );

    // 5. kill -9 of A mid-stream, then restart: A resends what B did not confirm.
    feed(&c, &gw.url, &records[1800..]).await;
    fed += 600;
    let before = fed - 600;
    let at_kill = wait_inbound(&c, &hub_b.url, &b.admin, "Observation", before + 40).await;
    hub_a.kill9();
    assert!(at_kill > before, "A was pushing when killed ({at_kill})");
    hub_a = spawn_hub_config(&a.hub_dir(), port_a, &config);
    assert_eq!(
        wait_inbound(&c, &hub_b.url, &b.admin, "Observation", fed).await,
        fed
    );

    // Everything once: every Observation and one Flag per alert of A, and A's cursors at the end.
    let s = wait_status(&c, &hub_a.url, &a.admin, |s| {
        s["lag"]["observations"] == 0 && s["lag"]["alerts"] == 0
    })
    .await;
    assert_eq!(s["lag"], json!({"observations": 0, "alerts": 0}), "{s}");
    assert_eq!(s["dead_lettered"], 0, "{s}");
    let alerts = call(
        &c,
        reqwest::Method::GET,
        format!("{}/api/v1/alerts?status=all&limit=10000", hub_a.url),
        &a.admin,
        Value::Null,
    )
    .await;
    let n_alerts = alerts["count"].as_u64().expect("alert count");
    assert!(n_alerts >= 1);
    assert_eq!(
        wait_inbound(&c, &hub_b.url, &b.admin, "Flag", n_alerts).await,
        n_alerts
    );
    // Nothing arrives late or twice.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_exactly(&c, &hub_b.url, &b.admin, "Observation", fed).await;
    assert_exactly(&c, &hub_b.url, &b.admin, "Flag", n_alerts).await;
    let (_, flags) = inbound(&c, &hub_b.url, &b.admin, "Flag")
        .await
        .expect("flags");
    assert!(
        flags
            .iter()
            .any(|f| f["resource"]["code"]["coding"][0]["code"] == "hypoglycaemia-level-2"),
        "the glucose alert arrived as a Flag"
    );
}

/// Validates FHIR JSON documents with `fhir.resources` (vigil-fhir's `tests/validate.py`;
/// `VIGIL_PYTHON` names the interpreter, as `scripts/test` sets it).
fn assert_valid_fhir(docs: &[(&str, &Value)]) {
    let dir = tempfile::tempdir().expect("dir");
    for (name, v) in docs {
        std::fs::write(dir.path().join(format!("{name}.json")), v.to_string()).expect("write");
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../vigil-fhir/tests/validate.py");
    let python = std::env::var("VIGIL_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let out = std::process::Command::new(&python)
        .arg(&script)
        .arg(dir.path())
        .output()
        .expect("run python (see crates/vigil-fhir/requirements.txt)");
    assert_eq!(
        out.status.code(),
        Some(0),
        "fhir.resources: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn post_bundle(
    c: &reqwest::Client,
    hub: &str,
    token: Option<&str>,
    ct: &str,
    body: String,
) -> (u16, Value) {
    let mut req = c
        .post(format!("{hub}/fhir/r4"))
        .header("content-type", ct)
        .body(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.expect("hub reachable");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn token_request(c: &reqwest::Client, hub: &str, body: &str) -> (u16, Value) {
    let r = c
        .post(format!("{hub}/oauth2/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.to_owned())
        .send()
        .await
        .expect("hub reachable");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fhir_transaction_and_token_endpoints_answer_bad_input_with_clear_errors() {
    let site = Site::new();
    let secret = create_client(&site, "svc");
    let nurse = site.token("nurse-x", "nurse");
    let hub = spawn_hub(&site.hub_dir(), "127.0.0.1:0");
    let c = client();
    let fhir = "application/fhir+json";
    let obs = json!({
        "resourceType": "Bundle", "type": "transaction",
        "entry": [{
            "fullUrl": "urn:uuid:0a1b2c3d-0000-0000-0000-000000000001",
            "resource": {"resourceType": "Observation", "id": "o1", "status": "final",
                "identifier": [{"system": "urn:test", "value": "o1"}],
                "code": {"text": "heart rate"}},
            "request": {"method": "POST", "url": "Observation", "ifNoneExist": "identifier=urn:test|o1"}
        }]
    });

    // Credentials: none, a role that may not write, then a service's OAuth2 token.
    let (s, v) = post_bundle(&c, &hub.url, None, fhir, obs.to_string()).await;
    assert_eq!(
        (s, v["resourceType"].as_str()),
        (401, Some("OperationOutcome"))
    );
    let (s, v) = post_bundle(&c, &hub.url, Some(&nurse), fhir, obs.to_string()).await;
    assert_eq!(
        (s, v["issue"][0]["code"].as_str()),
        (403, Some("forbidden"))
    );

    let (s, v) = token_request(
        &c,
        &hub.url,
        "grant_type=password&client_id=svc&client_secret=x",
    )
    .await;
    assert_eq!(
        (s, v["error"].as_str()),
        (400, Some("unsupported_grant_type"))
    );
    let (s, v) = token_request(
        &c,
        &hub.url,
        "grant_type=client_credentials&client_id=svc&client_secret=wrong",
    )
    .await;
    assert_eq!((s, v["error"].as_str()), (401, Some("invalid_client")));
    let (s, v) = token_request(
        &c,
        &hub.url,
        "grant_type=client_credentials&client_id=nobody&client_secret=x",
    )
    .await;
    assert_eq!((s, v["error"].as_str()), (401, Some("invalid_client")));
    let (s, v) = token_request(
        &c,
        &hub.url,
        "grant_type=client_credentials&grant_type=client_credentials",
    )
    .await;
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_request")));
    // HTTP Basic, the default client authentication.
    let r = c
        .post(format!("{}/oauth2/token", hub.url))
        .basic_auth("svc", Some(&secret))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("grant_type=client_credentials")
        .send()
        .await
        .expect("token");
    assert_eq!(r.status(), 200);
    let t: Value = r.json().await.expect("json");
    assert_eq!(t["token_type"], "Bearer");
    assert_eq!(t["expires_in"], 900);
    let token = t["access_token"].as_str().expect("token").to_owned();

    // Created once, found the second time.
    let (s, v) = post_bundle(&c, &hub.url, Some(&token), fhir, obs.to_string()).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["type"], "transaction-response");
    let (_, refused) = post_bundle(&c, &hub.url, None, fhir, obs.to_string()).await;
    assert_valid_fhir(&[("response", &v), ("outcome", &refused)]);
    assert_eq!(v["entry"][0]["response"]["status"], "201 Created");
    assert_eq!(
        v["entry"][0]["response"]["location"],
        "Observation/o1/_history/1"
    );
    let (s, v) = post_bundle(&c, &hub.url, Some(&token), fhir, obs.to_string()).await;
    assert_eq!(
        (s, v["entry"][0]["response"]["status"].as_str()),
        (200, Some("200 OK"))
    );
    let listed = call(
        &c,
        reqwest::Method::GET,
        format!(
            "{}/api/v1/ehr/inbound?type=Observation&identifier=urn:test|o1",
            hub.url
        ),
        &token,
        Value::Null,
    )
    .await;
    assert_eq!(listed["total"], 1);

    // Malformed (400), unsupported (422), wrong media type (415): OperationOutcomes.
    let cases = [
        ("{not json".to_owned(), 400),
        (json!({"resourceType": "Patient"}).to_string(), 400),
        (
            json!({"resourceType": "Bundle", "type": "batch"}).to_string(),
            422,
        ),
        (
            json!({"resourceType": "Bundle", "type": "transaction", "entry": {}}).to_string(),
            400,
        ),
        (
            {
                let mut b = obs.clone();
                b["entry"][0]["request"]["method"] = json!("DELETE");
                b.to_string()
            },
            422,
        ),
        (
            {
                let mut b = obs.clone();
                b["entry"][0]["request"]["ifNoneExist"] = json!("_id=o1");
                b.to_string()
            },
            422,
        ),
    ];
    for (body, want) in cases {
        let (s, v) = post_bundle(&c, &hub.url, Some(&token), fhir, body.clone()).await;
        assert_eq!(s, want, "{body}: {v}");
        assert_eq!(v["resourceType"], "OperationOutcome", "{body}");
    }
    let (s, v) = post_bundle(&c, &hub.url, Some(&token), "text/plain", obs.to_string()).await;
    assert_eq!(
        (s, v["resourceType"].as_str()),
        (415, Some("OperationOutcome"))
    );
    // Nothing of the refused bundles was stored.
    let all = call(
        &c,
        reqwest::Method::GET,
        format!("{}/api/v1/ehr/inbound", hub.url),
        &site.admin,
        Value::Null,
    )
    .await;
    assert_eq!(all["total"], 1);

    // The status route is for operators.
    let r = c
        .get(format!("{}/api/v1/ehr", hub.url))
        .bearer_auth(&nurse)
        .send()
        .await
        .expect("status");
    assert_eq!(r.status(), 403);
    let v = call(
        &c,
        reqwest::Method::GET,
        format!("{}/api/v1/ehr", hub.url),
        &site.admin,
        Value::Null,
    )
    .await;
    assert_eq!(v["count"], 0);

    // Bad client registrations: exit code 2, one line.
    for args in [["bad id!", "integration"], ["svc2", "clinician"]] {
        let out = vigil()
            .args([
                "admin",
                "create-client",
                args[0],
                "--role",
                args[1],
                "--data-dir",
            ])
            .arg(site.hub_dir())
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stderr).trim().lines().count(),
            1
        );
    }
    // Registering a client again replaces its secret: the old one stops working.
    let renewed = create_client(&site, "svc");
    assert_ne!(renewed, secret);
    let (s, _) = token_request(
        &c,
        &hub.url,
        &format!("grant_type=client_credentials&client_id=svc&client_secret={secret}"),
    )
    .await;
    assert_eq!(s, 401);
    let (s, v) = token_request(
        &c,
        &hub.url,
        &format!("grant_type=client_credentials&client_id=svc&client_secret={renewed}"),
    )
    .await;
    assert_eq!(s, 200, "client_secret_post works too: {v}");

    // A bad target is refused at start: exit code 2, one line.
    let cfg = site.hub_dir().join("bad.toml");
    std::fs::write(&cfg, "[[hub.ehr]]\nname = \"x\"\nurl = \"ftp://ehr\"\n").expect("cfg");
    let out = vigil()
        .args(["--config"])
        .arg(&cfg)
        .args(["hub", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(site.hub_dir())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("hub.ehr x: url"), "{err}");
}

#[test]
fn the_readme_ehr_example_loads_and_needs_its_secret() {
    let readme = include_str!("../../../../README.md");
    let section = &readme[readme.find("## Pushing to an EHR").expect("section")..];
    let start = section.find("```toml\n").expect("a toml block") + 8;
    let len = section[start..].find("```").expect("end of the block");
    let d = tempfile::tempdir().expect("dir");
    let f = d.path().join("vigil.toml");
    std::fs::write(&f, &section[start..start + len]).expect("write");
    let run = |secret: Option<&str>| {
        let mut cmd = vigil();
        cmd.arg("--config")
            .arg(&f)
            .args(["admin", "create-token", "--name", "ops", "--data-dir"])
            .arg(d.path())
            .env_remove("VIGIL_EHR_SECRET");
        if let Some(s) = secret {
            cmd.env("VIGIL_EHR_SECRET", s);
        }
        cmd.output().expect("run vigil")
    };
    let ok = run(Some("s3cret"));
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let missing = run(None);
    assert_eq!(missing.status.code(), Some(2));
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(err.contains("VIGIL_EHR_SECRET"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_the_target_refuses_is_dead_lettered_and_shown_and_the_worker_goes_on() {
    let a = Site::new();
    let b = Site::new();
    let port_b = free_port();
    let c = client();
    let hub_b = spawn_hub(&b.hub_dir(), &format!("127.0.0.1:{port_b}"));
    // A wrong base URL: the target answers 400 (no such method on that route) to every
    // Bundle, so nothing can ever succeed.
    let config = a.hub_dir().join("vigil.toml");
    std::fs::write(
        &config,
        format!(
            "[[hub.ehr]]\nname = \"misconfigured\"\nurl = \"http://127.0.0.1:{port_b}/fhir/r4/metadata\"\n\
             resources = [\"observations\"]\nbatch_size = 25\nmax_backoff_ms = 500\n"
        ),
    )
    .expect("config");
    let hub_a = spawn_hub_config(&a.hub_dir(), free_port(), &config);
    let mut g = load(100, 2);
    enrol(&c, &hub_a.url, &a.admin, &g).await;
    let records: Vec<Record> = g.by_ref().collect();
    let gw = spawn_gateway(&hub_a.url, &a.gateway_token_file, &a.outbox(), 50);
    feed(&c, &gw.url, &records).await;
    assert_eq!(
        wait_for_readings(&c, &hub_a.url, &a.admin, 100, LONG).await,
        100
    );
    let s = wait_status(&c, &hub_a.url, &a.admin, |s| {
        s["lag"]["observations"] == 0 && s["dead_lettered"].as_u64().unwrap_or(0) > 0
    })
    .await;
    assert_eq!(s["lag"]["observations"], 0, "{s}");
    assert_eq!(s["pushed"], 0, "{s}");
    let letters = s["dead_letters"].as_array().expect("dead letters");
    assert_eq!(
        letters.len() as u64,
        s["dead_lettered"].as_u64().expect("n")
    );
    let refused: u64 = letters
        .iter()
        .map(|l| l["resources"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(
        refused, 100,
        "every reading is accounted for in a dead letter: {s}"
    );
    assert!(
        letters
            .iter()
            .all(|l| l["error"].as_str().is_some_and(|e| e.contains("400"))),
        "{s}"
    );
    assert_eq!(
        inbound(&c, &hub_b.url, &b.admin, "Observation")
            .await
            .map(|x| x.0),
        Some(0)
    );
    let metrics = c
        .get(format!("{}/metrics", hub_a.url))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let line = format!(
        "vigil_hub_ehr_dead_lettered_total{{target=\"misconfigured\"}} {}",
        s["dead_lettered"]
    );
    assert!(metrics.contains(&line), "{metrics}");
    assert!(
        metrics.contains("vigil_hub_ehr_lag{target=\"misconfigured\",stream=\"observations\"} 0"),
        "{metrics}"
    );
}

/// Pushing to an `https://` EHR: hub B serves TLS with a certificate from a local CA that hub
/// A trusts through `ca_file` (for the FHIR endpoint and the token endpoint alike); a target
/// whose CA is not trusted gets nothing and shows the certificate error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_ehr_signed_by_a_configured_ca_receives_everything() {
    let a = Site::new();
    let b = Site::new();
    let (port_a, port_b) = (free_port(), free_port());
    let pki = b.hub_dir().join("pki");
    let out = vigil()
        .args(["admin", "pki", "init", "--dir"])
        .arg(&pki)
        .output()
        .expect("run vigil admin pki init");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let secret = create_client(&b, "hub-a");
    let secret_file = a.hub_dir().join("ehr-secret");
    std::fs::write(&secret_file, format!("{secret}\n")).expect("secret file");
    // A second target with the same URL but no CA of ours: the system roots do not know it.
    let config = a.hub_dir().join("vigil.toml");
    std::fs::write(
        &config,
        format!(
            "[[hub.ehr]]\nname = \"hub-b\"\nurl = \"https://localhost:{port_b}/fhir/r4\"\n\
             ca_file = \"{ca}\"\nbatch_size = 50\nmax_backoff_ms = 500\n\
             [hub.ehr.oauth2]\ntoken_url = \"https://localhost:{port_b}/oauth2/token\"\n\
             client_id = \"hub-a\"\nclient_secret_file = \"{secret}\"\n\
             [[hub.ehr]]\nname = \"untrusted\"\nurl = \"https://localhost:{port_b}/fhir/r4\"\n\
             max_backoff_ms = 500\n",
            ca = pki.join("ca.pem").display(),
            secret = secret_file.display()
        ),
    )
    .expect("config");
    let s = |p: &Path| p.to_str().expect("utf8 path").to_owned();
    let (cert, key) = (s(&pki.join("hub.pem")), s(&pki.join("hub-key.pem")));
    let hub_b = spawn_hub_with(
        &b.hub_dir(),
        &format!("127.0.0.1:{port_b}"),
        &[
            ("VIGIL_HUB__TLS__CERT_FILE", cert.as_str()),
            ("VIGIL_HUB__TLS__KEY_FILE", key.as_str()),
        ],
    );
    assert!(hub_b.url.starts_with("https://"), "{}", hub_b.url);
    let hub_a = spawn_hub_config(&a.hub_dir(), port_a, &config);
    let c = client();
    let cb = tls_client(&pki.join("ca.pem"), None);

    let mut g = load(300, 2);
    enrol(&c, &hub_a.url, &a.admin, &g).await;
    let records: Vec<Record> = g.by_ref().collect();
    let gw = spawn_gateway(&hub_a.url, &a.gateway_token_file, &a.outbox(), 100);
    feed(&c, &gw.url, &records).await;
    let n = records.len() as u64;
    assert_eq!(
        wait_for_readings(&c, &hub_a.url, &a.admin, n, LONG).await,
        n
    );
    assert_eq!(
        wait_inbound(&cb, &hub_b.url, &b.admin, "Observation", n).await,
        n
    );
    assert_exactly(&cb, &hub_b.url, &b.admin, "Observation", n).await;

    // A's status: the trusted target caught up, the untrusted one holds everything back
    // and says why.
    let start = Instant::now();
    let (trusted, untrusted) = loop {
        let status = call(
            &c,
            reqwest::Method::GET,
            format!("{}/api/v1/ehr", hub_a.url),
            &a.admin,
            Value::Null,
        )
        .await;
        let targets = status["targets"].as_array().expect("targets").clone();
        let by = |name: &str| {
            targets
                .iter()
                .find(|t| t["name"] == name)
                .cloned()
                .expect("target status")
        };
        let (t, u) = (by("hub-b"), by("untrusted"));
        let done = t["lag"]["observations"] == 0
            && u["last_error"].as_str().is_some_and(|e| !e.is_empty());
        if done || start.elapsed() > LONG {
            break (t, u);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(trusted["lag"]["observations"], 0, "{trusted}");
    assert!(
        untrusted["lag"]["observations"].as_i64().unwrap_or(0) > 0,
        "{untrusted}"
    );
    assert!(
        untrusted["last_error"]
            .as_str()
            .is_some_and(|e| !e.is_empty()),
        "{untrusted}"
    );
}

//! The hub's JSON API fuzzed from its own OpenAPI description by schemathesis (PyPI), an
//! implementation the project did not write: thousands of generated requests, valid and
//! invalid, with an admin's and a clinician's token; no answer may be a 5xx.

use crate::harness::{Site, client, enrol, load, spawn_hub};
use std::path::Path;
use std::process::Command;

/// Runs schemathesis against `hub` as `token`; panics with its output when it reports a
/// failure or cannot run.
fn schemathesis(python: &str, spec: &Path, hub: &str, token: &str, workdir: &Path) {
    let mut cmd = Command::new(python);
    cmd.current_dir(workdir)
        .args(["-m", "schemathesis.cli", "run"])
        .arg(spec)
        .args(["--url", hub])
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .args(["--checks", "not_a_server_error"])
        // The alert stream never ends by design; it is exercised by the alert tests.
        .args(["--exclude-path", "/api/v1/alerts/stream"])
        .args(["--max-examples", "30", "--generation-database", "none"])
        .args(["--no-color", "--request-timeout", "20"])
        .env("NO_COLOR", "1");
    if let Ok(seed) = std::env::var("VIGIL_FUZZ_SEED") {
        cmd.args(["--seed", &seed]);
    }
    let out = cmd.output().expect("run schemathesis with VIGIL_PYTHON");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "schemathesis found failures:\n{text}");
    // Guard against a run that tested nothing (a broken spec or URL still exits 0 for some
    // versions when no operation is selected).
    let generated = text
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_suffix(" passed")
                .and_then(|l| l.split(" generated, ").nth(1))
        })
        .and_then(|n| n.trim().parse::<u64>().ok());
    assert!(
        generated.is_some_and(|n| n >= 500),
        "schemathesis generated too few cases:\n{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn api_fuzzed_from_openapi_answers_no_5xx() {
    let python = std::env::var("VIGIL_PYTHON")
        .expect("VIGIL_PYTHON must point at a Python with schemathesis (scripts/test sets it up)");
    let spec = Path::new(env!("CARGO_MANIFEST_DIR")).join("../vigil-hub/openapi.yaml");
    let site = Site::new();
    let clinician = site.token("dr-fuzz", "clinician");
    let hub = spawn_hub(&site.hub_dir(), "127.0.0.1:0");
    let c = client();
    // Some data, so generated requests reach more than the "not found" paths.
    let g = load(100, 3);
    enrol(&c, &hub.url, &site.admin, &g).await;
    let first = g.patients()[0].id.clone();
    let r = c
        .put(format!("{}/api/v1/patients/{first}/care-team", hub.url))
        .bearer_auth(&site.admin)
        .json(&serde_json::json!({"primary": ["dr-fuzz"], "backup": [], "caregivers": []}))
        .send()
        .await
        .expect("hub reachable");
    assert!(r.status().is_success(), "care team: {}", r.status());

    // The served description is the one under test.
    let served = c
        .get(format!("{}/api/v1/openapi.yaml", hub.url))
        .send()
        .await
        .expect("hub reachable")
        .text()
        .await
        .expect("body");
    assert_eq!(served, std::fs::read_to_string(&spec).expect("spec"));

    let work = tempfile::tempdir().expect("tempdir");
    schemathesis(&python, &spec, &hub.url, &site.admin, work.path());
    schemathesis(&python, &spec, &hub.url, &clinician, work.path());
    // The hub is still serving after all of it.
    let r = c
        .get(format!("{}/health", hub.url))
        .send()
        .await
        .expect("hub alive");
    assert_eq!(r.status(), 200);
}

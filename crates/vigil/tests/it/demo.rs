//! `vigil demo`: one command, a restart that continues, Ctrl-C with nothing lost.

use crate::harness::vigil;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;
use vigil_store::Store;

/// Runs the demo; `interrupt_after` sends SIGINT instead of waiting for `--for`.
fn run_demo(dir: &std::path::Path, interrupt_after: Option<Duration>) -> (u64, Vec<String>) {
    let mut cmd = vigil();
    cmd.args([
        "--log",
        "warn",
        "demo",
        "--port",
        "0",
        "--patients",
        "5",
        "--history",
        "30m",
        "--data-dir",
    ])
    .arg(dir);
    if interrupt_after.is_none() {
        cmd.args(["--for", "4s"]);
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("demo");
    if let Some(d) = interrupt_after {
        std::thread::sleep(d);
        let status = std::process::Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .expect("kill -INT");
        assert!(status.success());
    }
    let stdout = child.stdout.take().expect("stdout");
    let lines: Vec<String> = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .collect();
    let status = child.wait().expect("wait");
    assert!(status.success(), "demo exited with {status}: {lines:?}");
    let generated = lines
        .iter()
        .find_map(|l| l.strip_prefix("stopped: "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("summary line");
    (generated, lines)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_starts_restarts_on_its_data_and_loses_nothing_on_ctrl_c() {
    let d = tempfile::tempdir().expect("dir");
    let (first, lines) = run_demo(d.path(), None);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("Vigil demo: hub https://127.0.0.1:")),
        "{lines:?}"
    );
    // The demo made its own CA and says where it is for curl.
    let ca = d.path().join("pki").join("ca.pem");
    assert!(
        lines
            .iter()
            .any(|l| l == &format!("CA certificate: {}", ca.display())),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains(&format!("curl --cacert {}", ca.display()))),
        "{lines:?}"
    );
    let ca_pem = std::fs::read(&ca).expect("CA");
    assert!(
        first > 5 * 1800,
        "30 minutes of history for 5 wearables: {first}"
    );
    let creds: serde_json::Value = serde_json::from_slice(
        &std::fs::read(d.path().join("demo-credentials.json")).expect("credentials"),
    )
    .expect("json");
    assert!(
        creds["api_token"]
            .as_str()
            .is_some_and(|t| t.starts_with("vat_"))
    );
    assert!(creds["users"].as_array().is_some_and(|u| u.len() >= 2));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(d.path().join("demo-credentials.json"))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "credentials are private to their owner");
    }
    // A restart continues the simulation instead of starting over, then Ctrl-C.
    let (second, _) = run_demo(d.path(), Some(Duration::from_secs(4)));
    assert!(
        second < first,
        "the second run continues ({second} new records) rather than regenerating history"
    );
    let creds2: serde_json::Value = serde_json::from_slice(
        &std::fs::read(d.path().join("demo-credentials.json")).expect("credentials"),
    )
    .expect("json");
    assert_eq!(
        creds["api_token"], creds2["api_token"],
        "credentials survive a restart"
    );
    assert_eq!(std::fs::read(&ca).expect("CA"), ca_pem, "the CA is reused");

    // Every generated record is at the hub or still in the gateway outbox.
    let store = vigil_store::sqlite::SqliteStore::open(d.path().join("hub.db")).expect("hub db");
    let s = store.stats().await.expect("stats");
    let key = vigil_outbox::SecretKey::load(&d.path().join("gateway").join("outbox.key"))
        .expect("the demo made an outbox key");
    let outbox = vigil_outbox::Outbox::open(vigil_outbox::OutboxConfig::new(
        d.path().join("gateway").join("outbox.db"),
        key,
    ))
    .expect("outbox");
    let pending = outbox.stats().depth;
    assert_eq!(s.quarantined_open, 0);
    assert_eq!(
        s.readings + s.events + pending,
        first + second,
        "readings {} events {} pending {pending}",
        s.readings,
        s.events
    );
}

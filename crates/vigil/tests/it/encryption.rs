//! Encryption at rest through real processes: the gateway outbox on disk, its keys, and
//! encrypted hub backups restored into a new hub.

use crate::harness::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use vigil_model::{DeviceId, Metric, PatientId, Reading, Record, Timestamp};
use vigil_outbox::{Outbox, OutboxConfig, SecretKey};

const LONG: Duration = Duration::from_secs(240);
const MARK_PATIENT: &str = "MARKPAT-5150";
const MARK_DEVICE: &str = "MARKDEV-8086";
const MARK_VALUE: f64 = 98.765_432_1;

/// Runs a `vigil` command that must end by itself; (exit code, stdout, stderr).
fn run_to_exit(mut cmd: Command) -> (i32, String, String) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn vigil");
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        if Instant::now() > end {
            let _ = child.kill();
            panic!("vigil did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn admin(args: &[&str]) -> Command {
    let mut c = vigil();
    c.arg("admin").args(args);
    c
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf8 path")
}

/// A new key file made by `vigil admin <kind> --out`.
fn new_key(kind: &str, path: &Path) -> PathBuf {
    let (code, out, err) = run_to_exit(admin(&[kind, "--out", path_str(path)]));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("key written"), "{out}");
    path.to_owned()
}

fn gateway_cmd(hub_url: &str, site: &Site, outbox: &Path, key: Option<&Path>) -> Command {
    let mut cmd = vigil();
    cmd.args([
        "--log",
        "warn",
        "gateway",
        "--hub-url",
        hub_url,
        "--listen",
        "127.0.0.1:0",
        "--token-file",
    ])
    .arg(&site.gateway_token_file)
    .arg("--outbox")
    .arg(outbox)
    .env("VIGIL_GATEWAY__BACKOFF_MIN_MS", "50")
    .env("VIGIL_GATEWAY__BACKOFF_MAX_MS", "500");
    if let Some(k) = key {
        cmd.arg("--outbox-key-file").arg(k);
    }
    cmd
}

fn marked(i: i64) -> Record {
    let m: Metric = "8867-4".parse().expect("metric");
    let mut r = Reading::quantity(
        DeviceId::new(MARK_DEVICE).expect("device"),
        m,
        MARK_VALUE,
        Timestamp(Timestamp::now().0 - 3_600_000 + i * 1000),
    );
    r.patient = Some(PatientId::new(MARK_PATIENT).expect("patient"));
    Record::Reading(r)
}

/// Every byte of an SQLite file and its WAL and shared-memory files.
fn raw_bytes(path: &Path) -> Vec<u8> {
    let mut all = Vec::new();
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        if let Ok(b) = std::fs::read(&p) {
            all.extend(b);
        }
    }
    all
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn a_real_gateway_outbox_holds_no_patient_data_in_clear_and_opens_only_with_its_key() {
    let site = Site::new();
    let dir = site.hub_dir();
    let key = new_key("outbox-key", &dir.join("outbox-key"));
    let outbox = site.outbox();
    // No hub listens there: everything stays in the outbox.
    let dead_hub = format!("http://127.0.0.1:{}", free_port());
    let mut gw = spawn_announcing(
        gateway_cmd(&dead_hub, &site, &outbox, Some(&key)),
        "gateway listening on ",
    );
    let records: Vec<Record> = (0..300).map(marked).collect();
    feed(&client(), &gw.url, &records).await;
    // Power cut: the committed records sit in the database and its WAL as the disk has them.
    gw.kill9();
    let raw = raw_bytes(&outbox);
    assert!(raw.len() > 300 * 40, "the outbox files hold the records");
    for m in [
        MARK_PATIENT.as_bytes(),
        MARK_DEVICE.as_bytes(),
        &MARK_VALUE.to_le_bytes(),
        MARK_VALUE.to_string().as_bytes(),
    ] {
        assert!(
            !contains(&raw, m),
            "{:?} is readable in the outbox files",
            String::from_utf8_lossy(m)
        );
    }

    // With the key everything is there (so the absence above means encryption).
    let k = SecretKey::load(&key).expect("key");
    {
        let ob = Outbox::open(OutboxConfig::new(&outbox, k.clone())).expect("open with key");
        let pending = ob.read_after(0, 1000, usize::MAX).expect("read");
        assert_eq!(pending.len(), 300);
        let first = Outbox::decode(&pending[0].payload).expect("decode");
        let Record::Reading(r) = first else {
            panic!("a reading")
        };
        assert_eq!(r.patient.as_ref().map(|p| p.as_str()), Some(MARK_PATIENT));
        assert_eq!(r.device.as_str(), MARK_DEVICE);
        ob.close();
    }

    // Another key: the gateway refuses to start, one line, exit 2.
    let wrong = new_key("outbox-key", &dir.join("other-key"));
    let (code, _, err) = run_to_exit(gateway_cmd(&dead_hub, &site, &outbox, Some(&wrong)));
    assert_eq!(code, 2, "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("another key"), "{err}");

    // No key: the default key file beside the outbox does not exist; no new key is made.
    let (code, _, err) = run_to_exit(gateway_cmd(&dead_hub, &site, &outbox, None));
    assert_eq!(code, 2, "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("key file") && err.contains("does not exist"),
        "{err}"
    );
    assert!(!outbox.with_extension("key").exists());

    // A key file others may read is refused.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let (code, _, err) = run_to_exit(gateway_cmd(&dead_hub, &site, &outbox, Some(&key)));
        assert_eq!(code, 2, "{err}");
        assert!(err.contains("chmod 600"), "{err}");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }

    // A key file is never overwritten.
    let (code, _, err) = run_to_exit(admin(&["outbox-key", "--out", path_str(&key)]));
    assert_eq!(code, 2, "{err}");
    assert_eq!(
        SecretKey::load(&key).expect("key"),
        k,
        "the key is unchanged"
    );
}

#[tokio::test]
async fn an_altered_outbox_record_is_quarantined_and_every_other_one_reaches_the_hub() {
    let site = Site::new();
    let hub = spawn_hub(&site.hub_dir(), "127.0.0.1:0");
    let c = client();
    let mut g = load(200, 2);
    enrol(&c, &hub.url, &site.admin, &g).await;
    let key = new_key("outbox-key", &site.hub_dir().join("outbox-key"));
    let outbox = site.outbox();
    {
        let ob = Outbox::open(OutboxConfig::new(
            &outbox,
            SecretKey::load(&key).expect("key"),
        ))
        .expect("open");
        let r = ob.append(g.by_ref().collect()).await.expect("append");
        assert_eq!((r.first_seq, r.last_seq), (1, 200));
        ob.close();
    }
    {
        let conn = rusqlite::Connection::open(&outbox).expect("raw");
        let mut p: Vec<u8> = conn
            .query_row("SELECT payload FROM outbox WHERE seq = 77", [], |r| {
                r.get(0)
            })
            .expect("row");
        let i = p.len() - 20;
        p[i] ^= 0x80;
        conn.execute("UPDATE outbox SET payload = ?1 WHERE seq = 77", [p])
            .expect("flip");
    }
    let gw = spawn_announcing(
        gateway_cmd(&hub.url, &site, &outbox, Some(&key)),
        "gateway listening on ",
    );
    assert_eq!(
        wait_for_readings(&c, &hub.url, &site.admin, 199, LONG).await,
        199
    );
    let mut health = gateway_health(&c, &gw.url).await;
    let end = Instant::now() + LONG;
    while health["outbox"]["depth"] != 0 && Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(100)).await;
        health = gateway_health(&c, &gw.url).await;
    }
    assert_eq!(health["outbox"]["depth"], 0, "{health}");
    assert_eq!(health["outbox"]["corrupt"], 1, "{health}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        stored_readings(&c, &hub.url, &site.admin).await,
        Some(199),
        "the altered record is never stored as something else"
    );
    let s = stats(&c, &hub.url, &site.admin).await.expect("stats");
    assert_eq!(s["store"]["quarantined_open"], 0, "{s}");
}

fn patients(
    c: &reqwest::Client,
    hub: &str,
    admin: &str,
) -> impl Future<Output = serde_json::Value> {
    let req = c
        .get(format!("{hub}/api/v1/patients"))
        .bearer_auth(admin)
        .send();
    async move {
        let r = req.await.expect("patients");
        assert_eq!(r.status(), 200);
        r.json().await.expect("json")
    }
}

#[tokio::test]
async fn a_backup_of_a_running_hub_restores_into_a_hub_with_the_same_patients_and_readings() {
    let site = Site::new();
    let hub = spawn_hub(&site.hub_dir(), "127.0.0.1:0");
    let c = client();
    let mut g = load(3_000, 3);
    enrol(&c, &hub.url, &site.admin, &g).await;
    let marker = g.patients()[0].id.as_str().to_owned();
    let gw = spawn_gateway(&hub.url, &site.gateway_token_file, &site.outbox(), 500);
    let records: Vec<Record> = g.by_ref().collect();
    feed(&c, &gw.url, &records).await;
    assert_eq!(
        wait_for_readings(&c, &hub.url, &site.admin, 3_000, LONG).await,
        3_000
    );
    let before = patients(&c, &hub.url, &site.admin).await;

    let work = tempfile::tempdir().expect("tempdir");
    let bkey = new_key("backup-key", &work.path().join("backup.key"));
    let backup = work.path().join("hub.vbk");
    // While the hub runs and serves.
    let (code, out, err) = run_to_exit(admin(&[
        "backup",
        "--data-dir",
        path_str(&site.hub_dir()),
        "--out",
        path_str(&backup),
        "--key-file",
        path_str(&bkey),
    ]));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("backup written"), "{out}");
    let sealed = std::fs::read(&backup).expect("backup");
    assert!(!contains(&sealed, marker.as_bytes()), "patient id in clear");
    assert!(
        !contains(&sealed, b"SQLite format 3"),
        "database header in clear"
    );
    assert!(
        std::fs::read_dir(site.hub_dir()).expect("dir").all(|e| !e
            .expect("entry")
            .file_name()
            .to_string_lossy()
            .starts_with(".backup-")),
        "the temporary clear copy is gone"
    );

    let restore = |input: &Path, key: &Path, dir: &Path, force: bool| {
        let mut args = vec![
            "restore",
            "--in",
            path_str(input),
            "--key-file",
            path_str(key),
            "--data-dir",
            path_str(dir),
        ];
        if force {
            args.push("--force");
        }
        run_to_exit(admin(&args))
    };

    // A flipped byte anywhere: exit 1, one line, nothing written.
    for at in [40, sealed.len() / 2, sealed.len() - 3] {
        let mut bad = sealed.clone();
        bad[at] ^= 0x01;
        let bad_file = work.path().join("bad.vbk");
        std::fs::write(&bad_file, &bad).expect("write");
        let target = work.path().join("bad-restore");
        let (code, _, err) = restore(&bad_file, &bkey, &target, false);
        assert_eq!(code, 1, "flip at {at}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains("corrupt or altered"), "{err}");
        assert!(!target.exists(), "nothing written for a flip at {at}");
    }
    // Another key: exit 1.
    let other = new_key("backup-key", &work.path().join("other.key"));
    let target = work.path().join("wrong-key");
    let (code, _, err) = restore(&backup, &other, &target, false);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("another key"), "{err}");
    assert!(!target.exists());

    // The right key into a new directory: a hub there serves the same data.
    let new_dir = work.path().join("restored");
    let (code, out, err) = restore(&backup, &bkey, &new_dir, false);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("restored"), "{out}");
    assert!(
        contains(&raw_bytes(&new_dir.join("hub.db")), marker.as_bytes()),
        "the restored database holds the patient (so its absence above means encryption)"
    );
    // An existing store is kept unless --force.
    let (code, _, err) = restore(&backup, &bkey, &new_dir, false);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--force"), "{err}");
    let (code, _, err) = restore(&backup, &bkey, &new_dir, true);
    assert_eq!(code, 0, "{err}");
    // The restored audit log verifies: the backup carried its key, the restore wrote the
    // checkpoint of the restored chain.
    let v = vigil()
        .args(["audit", "verify", "--data-dir"])
        .arg(&new_dir)
        .output()
        .expect("run vigil audit verify");
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stderr));
    assert!(
        String::from_utf8_lossy(&v.stdout).contains("entries verified"),
        "{}",
        String::from_utf8_lossy(&v.stdout)
    );

    let hub2 = spawn_hub(&new_dir, "127.0.0.1:0");
    assert_eq!(
        stored_readings(&c, &hub2.url, &site.admin).await,
        Some(3_000)
    );
    assert_eq!(patients(&c, &hub2.url, &site.admin).await, before);
    let p = &g.patients()[1].id;
    let count = |url: String| {
        let req = c.get(url).bearer_auth(&site.admin).send();
        async move {
            let v: serde_json::Value = req.await.expect("readings").json().await.expect("json");
            v["count"].clone()
        }
    };
    assert_eq!(
        count(format!(
            "{}/api/v1/patients/{p}/readings?limit=100000",
            hub2.url
        ))
        .await,
        count(format!(
            "{}/api/v1/patients/{p}/readings?limit=100000",
            hub.url
        ))
        .await,
    );
}

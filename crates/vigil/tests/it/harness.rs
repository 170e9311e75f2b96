//! Spawning and talking to real hub and gateway processes.

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use vigil_model::{Record, Timestamp};
use vigil_sim::LoadSpec;

pub fn vigil() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vigil"))
}

/// A child process that is killed when dropped.
pub struct Proc {
    pub child: Child,
    pub url: String,
}

impl Proc {
    /// SIGKILL: no chance to flush or shut down.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Spawns `cmd` and returns once it prints `prefix` followed by its address.
pub fn spawn_announcing(mut cmd: Command, prefix: &str) -> Proc {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn vigil");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    let prefix = prefix.to_owned();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if !sent && let Some(rest) = line.strip_prefix(&prefix) {
                let _ = tx.send(rest.trim().to_owned());
                sent = true;
            }
        }
    });
    let url = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("process announces its address");
    Proc { child, url }
}

pub fn spawn_hub(data_dir: &Path, listen: &str) -> Proc {
    spawn_hub_with(data_dir, listen, &[])
}

/// A hub with settings from the environment, as an operator sets them.
pub fn spawn_hub_with(data_dir: &Path, listen: &str, env: &[(&str, &str)]) -> Proc {
    let mut cmd = vigil();
    cmd.args(["--log", "warn", "hub", "--listen", listen, "--data-dir"])
        .arg(data_dir)
        .envs(env.iter().copied());
    spawn_announcing(cmd, "hub listening on ")
}

/// An authenticated API call that must succeed; its JSON answer (a null body sends none).
pub async fn call(
    c: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    token: &str,
    body: serde_json::Value,
) -> serde_json::Value {
    let mut req = c.request(method, url).bearer_auth(token);
    if !body.is_null() {
        req = req.json(&body);
    }
    let r = req.send().await.expect("hub reachable");
    let status = r.status();
    let v: serde_json::Value = r.json().await.unwrap_or(serde_json::Value::Null);
    assert!(status.is_success(), "{status}: {v}");
    v
}

/// The live alert stream (Server-Sent Events) as a dashboard reads it.
pub struct AlertStream {
    resp: reqwest::Response,
    buf: String,
}

impl AlertStream {
    pub async fn open(hub: &str, token: &str) -> Self {
        vigil_tls::install_default_provider();
        let resp = reqwest::Client::new()
            .get(format!("{hub}/api/v1/alerts/stream"))
            .bearer_auth(token)
            .send()
            .await
            .expect("stream");
        assert_eq!(resp.status(), 200);
        Self {
            resp,
            buf: String::new(),
        }
    }

    /// The next transition, or `None` once `deadline` passes.
    pub async fn next_before(&mut self, deadline: Instant) -> Option<serde_json::Value> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let frame: String = self.buf.drain(..end + 2).collect();
                let data = frame
                    .lines()
                    .find_map(|l| l.strip_prefix("data:"))
                    .and_then(|v| serde_json::from_str::<serde_json::Value>(v.trim()).ok());
                if let Some(data) = data {
                    return Some(data);
                }
                continue;
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            let chunk = match tokio::time::timeout(left, self.resp.chunk()).await {
                Err(_) => return None,
                Ok(r) => r.expect("stream").expect("stream open"),
            };
            self.buf.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// The next transition within 30 s.
    pub async fn next(&mut self) -> serde_json::Value {
        self.next_before(Instant::now() + Duration::from_secs(30))
            .await
            .expect("an alert event in time")
    }
}

pub fn spawn_gateway(hub_url: &str, token_file: &Path, outbox: &Path, batch: usize) -> Proc {
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
    .arg(token_file)
    .arg("--outbox")
    .arg(outbox)
    .env("VIGIL_GATEWAY__BATCH_MAX_RECORDS", batch.to_string())
    .env("VIGIL_GATEWAY__BACKOFF_MIN_MS", "50")
    .env("VIGIL_GATEWAY__BACKOFF_MAX_MS", "500");
    spawn_announcing(cmd, "gateway listening on ")
}

fn admin_output(args: &[&str]) -> String {
    let out = vigil().args(args).output().expect("run vigil admin");
    assert!(
        out.status.success(),
        "vigil {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf8")
        .trim()
        .to_owned()
}

/// A hub data directory with an admin token and a gateway token (written to a file).
pub struct Site {
    pub dir: tempfile::TempDir,
    pub admin: String,
    pub gateway_token_file: PathBuf,
}

impl Site {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().to_str().expect("utf8 path").to_owned();
        let admin = admin_output(&[
            "admin",
            "create-token",
            "--data-dir",
            &d,
            "--name",
            "test-admin",
            "--role",
            "admin",
        ]);
        let gw = admin_output(&[
            "admin",
            "create-gateway",
            "--data-dir",
            &d,
            "--id",
            "gw-test",
        ]);
        let gateway_token_file = dir.path().join("gateway.token");
        std::fs::write(&gateway_token_file, &gw).expect("token file");
        Self {
            dir,
            admin,
            gateway_token_file,
        }
    }
    /// A new API token for `name` with `role` (`extra`: more `admin create-token` flags).
    pub fn token_with(&self, name: &str, role: &str, extra: &[&str]) -> String {
        let d = self.dir.path().to_str().expect("utf8 path");
        let mut args = vec![
            "admin",
            "create-token",
            "--data-dir",
            d,
            "--name",
            name,
            "--role",
            role,
        ];
        args.extend_from_slice(extra);
        admin_output(&args)
    }
    pub fn token(&self, name: &str, role: &str) -> String {
        self.token_with(name, role, &[])
    }
    pub fn hub_dir(&self) -> PathBuf {
        self.dir.path().to_owned()
    }
    pub fn outbox(&self) -> PathBuf {
        self.dir.path().join("gateway").join("outbox.db")
    }
    pub fn gateway_token(&self) -> String {
        std::fs::read_to_string(&self.gateway_token_file).expect("token")
    }
}

/// A name no other test run uses (client ids, topics).
pub fn unique(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{tag}-{}-{nanos}", std::process::id())
}

/// Subscribes to `filter` on Mosquitto; every message with the instant it arrived.
pub async fn mqtt_subscriber(
    filter: &str,
) -> tokio::sync::mpsc::UnboundedReceiver<(Instant, String, serde_json::Value)> {
    let mut o = MqttOptions::new(unique("it-sub"), "127.0.0.1", 1883);
    o.set_keep_alive(Duration::from_secs(5));
    let (client, mut el) = AsyncClient::new(o, 64);
    client
        .subscribe(filter, QoS::AtLeastOnce)
        .await
        .expect("queue subscribe");
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let _client = client;
        let mut ready = Some(ready_tx);
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    if let Some(r) = ready.take() {
                        let _ = r.send(());
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let v = serde_json::from_slice(&p.payload).unwrap_or_default();
                    let _ = tx.send((Instant::now(), p.topic.clone(), v));
                }
                Ok(_) => {}
                Err(e) => panic!("MQTT broker at 127.0.0.1:1883 unreachable: {e}"),
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(10), ready_rx)
        .await
        .expect("subscription confirmed (is Mosquitto running?)")
        .expect("subscriber alive");
    rx
}

/// A free loopback port (bound and released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

pub fn client() -> reqwest::Client {
    vigil_tls::install_default_provider();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// A load of `n` readings from `patients` wearables (heart rate and SpO2), in the past.
pub fn load(n: u64, patients: usize) -> vigil_sim::LoadGen {
    let rate = (patients as u64 * 2).max(1);
    let secs = n.div_ceil(rate);
    let mut spec = LoadSpec::new(patients, rate, Duration::from_secs(secs));
    spec.start = Timestamp(Timestamp::now().0 - secs as i64 * 1000 - 60_000);
    spec.generator().expect("load")
}

/// Enrols the load's patients and devices at the hub through the API.
pub async fn enrol(c: &reqwest::Client, hub: &str, admin: &str, g: &vigil_sim::LoadGen) {
    for p in g.patients() {
        let r = c
            .post(format!("{hub}/api/v1/patients"))
            .bearer_auth(admin)
            .json(p)
            .send()
            .await
            .expect("post");
        assert_eq!(r.status(), 201);
    }
    for d in g.devices() {
        let r = c
            .post(format!("{hub}/api/v1/devices"))
            .bearer_auth(admin)
            .json(d)
            .send()
            .await
            .expect("post");
        assert_eq!(r.status(), 201);
    }
    for a in g.assignments() {
        let r = c
            .post(format!("{hub}/api/v1/assignments"))
            .bearer_auth(admin)
            .json(a)
            .send()
            .await
            .expect("post");
        assert_eq!(r.status(), 201);
    }
}

/// Posts records to a gateway's local endpoint; returns once every one is acknowledged.
pub async fn feed(c: &reqwest::Client, gateway: &str, records: &[Record]) {
    for chunk in records.chunks(5000) {
        let r = c
            .post(format!("{gateway}/v1/records"))
            .json(chunk)
            .send()
            .await
            .expect("gateway reachable");
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    }
}

pub async fn stats(c: &reqwest::Client, hub: &str, admin: &str) -> Option<serde_json::Value> {
    let r = c
        .get(format!("{hub}/api/v1/stats"))
        .bearer_auth(admin)
        .send()
        .await
        .ok()?;
    r.json().await.ok()
}

pub async fn stored_readings(c: &reqwest::Client, hub: &str, admin: &str) -> Option<u64> {
    stats(c, hub, admin)
        .await
        .and_then(|s| s["store"]["readings"].as_u64())
}

/// Waits until the hub holds at least `n` readings; returns what it holds.
pub async fn wait_for_readings(
    c: &reqwest::Client,
    hub: &str,
    admin: &str,
    n: u64,
    limit: Duration,
) -> u64 {
    let start = Instant::now();
    let mut last = 0;
    while start.elapsed() < limit {
        if let Some(got) = stored_readings(c, hub, admin).await {
            last = got;
            if got >= n {
                return got;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    last
}

pub async fn gateway_health(c: &reqwest::Client, gateway: &str) -> serde_json::Value {
    c.get(format!("{gateway}/health"))
        .send()
        .await
        .expect("gateway health")
        .json()
        .await
        .expect("json")
}

impl Site {
    /// Creates a user who signs in with `password` (`vigil admin create-user`, password on
    /// standard input).
    pub fn user(&self, name: &str, role: &str, password: &str) {
        use std::io::Write;
        let d = self.dir.path().to_str().expect("utf8 path");
        let mut child = vigil()
            .args([
                "admin",
                "create-user",
                name,
                "--role",
                role,
                "--data-dir",
                d,
                "--password-stdin",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run vigil admin create-user");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(format!("{password}\n").as_bytes())
            .expect("write password");
        let out = child.wait_with_output().expect("create-user ends");
        assert!(
            out.status.success(),
            "create-user {name} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A browser-style login: the response (its cookie and CSRF token on success).
pub async fn login(
    c: &reqwest::Client,
    hub: &str,
    name: &str,
    password: &str,
) -> reqwest::Response {
    c.post(format!("{hub}/api/v1/auth/login"))
        .json(&serde_json::json!({ "name": name, "password": password }))
        .send()
        .await
        .expect("hub reachable")
}

/// A signed-in browser: its session cookie (`vigil_session=...`) and CSRF token.
#[derive(Debug, Clone)]
pub struct Browser {
    pub cookie: String,
    pub csrf: String,
}

/// Logs in and returns the session; panics unless the login succeeds.
pub async fn sign_in(c: &reqwest::Client, hub: &str, name: &str, password: &str) -> Browser {
    let r = login(c, hub, name, password).await;
    assert_eq!(r.status(), 200, "login of {name}");
    let cookie = r
        .headers()
        .get(reqwest::header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .expect("session cookie")
        .to_owned();
    let body: serde_json::Value = r.json().await.expect("login json");
    let csrf = body["csrf_token"].as_str().expect("csrf token").to_owned();
    Browser { cookie, csrf }
}

/// A gateway process with extra settings from the environment (TLS files and the like).
pub fn spawn_gateway_env(
    hub_url: &str,
    token_file: &Path,
    outbox: &Path,
    env: &[(&str, &Path)],
) -> Proc {
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
    .arg(token_file)
    .arg("--outbox")
    .arg(outbox)
    .env("VIGIL_GATEWAY__BACKOFF_MIN_MS", "50")
    .env("VIGIL_GATEWAY__BACKOFF_MAX_MS", "500")
    .envs(env.iter().copied());
    spawn_announcing(cmd, "gateway listening on ")
}

/// A client of a TLS hub built as the gateway builds its own: trusts only `ca`, presents
/// `identity` (certificate, key) when given.
pub fn tls_client(ca: &Path, identity: Option<(&Path, &Path)>) -> reqwest::Client {
    vigil_gateway::hub_client_builder(Some(ca), identity)
        .expect("TLS files")
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

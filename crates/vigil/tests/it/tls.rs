//! HTTPS between gateways and the hub through real processes: a local CA made by
//! `vigil admin pki`, mutual TLS, HSTS, and what happens to clients that get it wrong.

use crate::harness::*;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use vigil_model::Record;

const HSTS: &str = "max-age=31536000; includeSubDomains";

fn run_ok(args: &[&str]) -> String {
    let out = vigil().args(args).output().expect("run vigil");
    assert!(
        out.status.success(),
        "vigil {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf8")
        .trim()
        .to_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf8 path")
}

/// A hub data directory with its CA, the hub certificate, and client certificates for the
/// gateways `gw-test` and `gw-other` (both registered) and for the test's own API client.
struct TlsSite {
    site: Site,
    pki: PathBuf,
    other_token_file: PathBuf,
}

impl TlsSite {
    fn new() -> Self {
        let site = Site::new();
        let pki = site.hub_dir().join("pki");
        let out = run_ok(&["admin", "pki", "init", "--dir", s(&pki)]);
        assert!(out.contains("ca.pem"), "{out}");
        for id in ["gw-test", "gw-other", "test-client"] {
            run_ok(&["admin", "pki", "gateway", id, "--dir", s(&pki)]);
        }
        let other = run_ok(&[
            "admin",
            "create-gateway",
            "--data-dir",
            s(&site.hub_dir()),
            "--id",
            "gw-other",
        ]);
        let other_token_file = site.hub_dir().join("other.token");
        std::fs::write(&other_token_file, other).expect("token file");
        Self {
            site,
            pki,
            other_token_file,
        }
    }

    fn ca(&self) -> PathBuf {
        self.pki.join("ca.pem")
    }

    fn cert(&self, id: &str) -> (PathBuf, PathBuf) {
        (
            self.pki.join(format!("gateway-{id}.pem")),
            self.pki.join(format!("gateway-{id}-key.pem")),
        )
    }

    /// The hub over TLS with `client_auth` none, optional or required.
    fn hub(&self, client_auth: &str) -> Proc {
        let (cert, key, ca) = (
            self.pki.join("hub.pem"),
            self.pki.join("hub-key.pem"),
            self.ca(),
        );
        let hub = spawn_hub_with(
            &self.site.hub_dir(),
            "127.0.0.1:0",
            &[
                ("VIGIL_HUB__TLS__CERT_FILE", s(&cert)),
                ("VIGIL_HUB__TLS__KEY_FILE", s(&key)),
                ("VIGIL_HUB__TLS__CLIENT_CA_FILE", s(&ca)),
                ("VIGIL_HUB__TLS__CLIENT_AUTH", client_auth),
            ],
        );
        assert!(hub.url.starts_with("https://127.0.0.1:"), "{}", hub.url);
        hub
    }

    /// An API client trusting the site's CA, with a client certificate of its own.
    fn client(&self) -> reqwest::Client {
        let (c, k) = self.cert("test-client");
        tls_client(&self.ca(), Some((&c, &k)))
    }

    /// A gateway process with the token `token_file` and the client certificate of `cert_of`
    /// (none: no client certificate), trusting `ca`.
    fn gateway(
        &self,
        hub: &str,
        token_file: &Path,
        ca: &Path,
        cert: Option<(&Path, &Path)>,
    ) -> Proc {
        let mut env: Vec<(&str, &Path)> = vec![("VIGIL_GATEWAY__HUB_CA_FILE", ca)];
        if let Some((c, k)) = cert {
            env.push(("VIGIL_GATEWAY__CLIENT_CERT_FILE", c));
            env.push(("VIGIL_GATEWAY__CLIENT_KEY_FILE", k));
        }
        spawn_gateway_env(hub, token_file, &self.site.outbox(), &env)
    }
}

/// Waits until the gateway has failed to sync `n` times; its health document.
async fn wait_for_failures(gw: &str, n: u64) -> serde_json::Value {
    let c = client();
    let start = Instant::now();
    loop {
        let h = gateway_health(&c, gw).await;
        if h["hub"]["failures"].as_u64().unwrap_or(0) >= n {
            return h;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "gateway never failed: {h}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_gateway_syncs_to_a_tls_hub_over_mutual_tls_and_every_answer_carries_hsts() {
    let t = TlsSite::new();
    let hub = t.hub("required");
    let c = t.client();
    let mut g = load(3_000, 5);
    enrol(&c, &hub.url, &t.site.admin, &g).await;
    let (cert, key) = t.cert("gw-test");
    let gw = t.gateway(
        &hub.url,
        &t.site.gateway_token_file,
        &t.ca(),
        Some((&cert, &key)),
    );
    let records: Vec<Record> = g.by_ref().collect();
    feed(&client(), &gw.url, &records).await;
    let got = wait_for_readings(&c, &hub.url, &t.site.admin, 3_000, Duration::from_secs(120)).await;
    assert_eq!(got, 3_000);
    let h = gateway_health(&client(), &gw.url).await;
    assert_eq!(h["hub"]["connected"], true, "{h}");
    // HSTS on success and on error answers alike.
    for (path, status) in [("/health", 200), ("/api/v1/no-such-route", 404)] {
        let r = c
            .get(format!("{}{path}", hub.url))
            .send()
            .await
            .expect("hub");
        assert_eq!(r.status(), status);
        assert_eq!(
            r.headers()
                .get("strict-transport-security")
                .and_then(|v| v.to_str().ok()),
            Some(HSTS),
            "{path}"
        );
    }
}

#[tokio::test]
async fn a_client_or_gateway_of_another_ca_fails_the_handshake_and_nothing_is_stored() {
    let t = TlsSite::new();
    let hub = t.hub("required");
    let other = tempfile::tempdir().expect("dir");
    run_ok(&["admin", "pki", "init", "--dir", s(other.path())]);
    run_ok(&[
        "admin",
        "pki",
        "gateway",
        "gw-test",
        "--dir",
        s(other.path()),
    ]);
    let other_ca = other.path().join("ca.pem");
    let (ocert, okey) = (
        other.path().join("gateway-gw-test.pem"),
        other.path().join("gateway-gw-test-key.pem"),
    );
    // A client that trusts another CA does not accept the hub's certificate.
    let (c, k) = t.cert("test-client");
    let e = tls_client(&other_ca, Some((&c, &k)))
        .get(format!("{}/health", hub.url))
        .send()
        .await
        .expect_err("the hub's certificate is not trusted");
    assert!(
        format!("{e:?}").contains("InvalidCertificate(UnknownIssuer)"),
        "{e:?}"
    );
    // A gateway whose client certificate another CA signed is refused by the hub.
    let gw = t.gateway(
        &hub.url,
        &t.site.gateway_token_file,
        &t.ca(),
        Some((&ocert, &okey)),
    );
    let records: Vec<Record> = load(100, 1).collect();
    feed(&client(), &gw.url, &records).await;
    let h = wait_for_failures(&gw.url, 3).await;
    assert_eq!(h["hub"]["connected"], false, "{h}");
    assert_eq!(h["outbox"]["depth"], 100, "{h}");
    assert_eq!(
        stored_readings(&t.client(), &hub.url, &t.site.admin).await,
        Some(0)
    );
}

#[tokio::test]
async fn a_gateway_without_a_client_certificate_is_refused_when_client_auth_is_required() {
    let t = TlsSite::new();
    let hub = t.hub("required");
    let e = tls_client(&t.ca(), None)
        .get(format!("{}/health", hub.url))
        .send()
        .await
        .expect_err("no client certificate");
    assert!(!format!("{e:?}").contains("InvalidCertificate"), "{e:?}");
    let gw = t.gateway(&hub.url, &t.site.gateway_token_file, &t.ca(), None);
    let records: Vec<Record> = load(100, 1).collect();
    feed(&client(), &gw.url, &records).await;
    let h = wait_for_failures(&gw.url, 3).await;
    assert_eq!(h["outbox"]["depth"], 100, "{h}");
    assert_eq!(
        stored_readings(&t.client(), &hub.url, &t.site.admin).await,
        Some(0)
    );
}

#[tokio::test]
async fn a_gateway_certificate_with_another_gateways_token_is_refused() {
    let t = TlsSite::new();
    let hub = t.hub("required");
    let (ocert, okey) = t.cert("gw-other");
    let as_other = tls_client(&t.ca(), Some((&ocert, &okey)));
    let token = t.site.gateway_token();
    let ingest = format!("{}/api/v1/ingest", hub.url);
    // gw-other's certificate with gw-test's token: refused before the body is looked at.
    let r = as_other
        .post(&ingest)
        .bearer_auth(token.trim())
        .body("not a batch")
        .send()
        .await
        .expect("hub");
    assert_eq!(r.status(), 403);
    let v: serde_json::Value = r.json().await.expect("problem document");
    assert_eq!(v["code"], "forbidden", "{v}");
    // The same certificate with its own gateway's token gets past that check (and fails on
    // the body instead).
    let own = std::fs::read_to_string(&t.other_token_file).expect("token");
    let r = as_other
        .post(&ingest)
        .bearer_auth(own.trim())
        .body("not a batch")
        .send()
        .await
        .expect("hub");
    assert_eq!(r.status(), 415);
    // A real gateway holding gw-test's token and gw-other's certificate stores nothing.
    let gw = t.gateway(
        &hub.url,
        &t.site.gateway_token_file,
        &t.ca(),
        Some((&ocert, &okey)),
    );
    let records: Vec<Record> = load(100, 1).collect();
    feed(&client(), &gw.url, &records).await;
    let h = wait_for_failures(&gw.url, 2).await;
    assert!(
        h["hub"]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("403")),
        "{h}"
    );
    assert_eq!(
        stored_readings(&t.client(), &hub.url, &t.site.admin).await,
        Some(0)
    );
}

#[tokio::test]
async fn plain_http_to_the_tls_port_gets_a_clear_error_and_the_hub_keeps_serving() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let t = TlsSite::new();
    let hub = t.hub("optional");
    let addr = hub.url.trim_start_matches("https://").to_owned();
    // A client that connects and says nothing holds up nobody.
    let _idle = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    let r = tokio::time::timeout(
        Duration::from_secs(20),
        client().get(format!("http://{addr}/health")).send(),
    )
    .await
    .expect("an answer, not a hang")
    .expect("an HTTP answer");
    assert_eq!(r.status(), 400);
    let v: serde_json::Value = r.json().await.expect("problem document");
    assert_eq!(v["code"], "https_required", "{v}");
    // Bytes that are neither TLS nor HTTP: the connection is closed.
    let mut raw = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    raw.write_all(&[0u8; 64]).await.expect("write");
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(20), raw.read(&mut buf))
        .await
        .expect("closed, not hung")
        .unwrap_or(0);
    assert_eq!(n, 0);
    // The hub still answers over TLS, and with client_auth optional a client without a
    // certificate gets in (its token decides).
    let r = tls_client(&t.ca(), None)
        .get(format!("{}/api/v1/stats", hub.url))
        .bearer_auth(&t.site.admin)
        .send()
        .await
        .expect("hub");
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("strict-transport-security"));
}

#[tokio::test]
async fn hsts_is_never_sent_over_plain_http() {
    let site = Site::new();
    let hub = spawn_hub(&site.hub_dir(), "127.0.0.1:0");
    assert!(hub.url.starts_with("http://"), "{}", hub.url);
    for path in ["/health", "/api/v1/no-such-route"] {
        let r = client()
            .get(format!("{}{path}", hub.url))
            .send()
            .await
            .expect("hub");
        assert!(
            !r.headers().contains_key("strict-transport-security"),
            "{path}"
        );
    }
}

#[test]
fn a_hub_with_bad_tls_settings_exits_2_with_one_line() {
    let d = tempfile::tempdir().expect("dir");
    let missing = d.path().join("missing.pem");
    for (env, expect) in [
        (
            vec![
                ("VIGIL_HUB__TLS__CERT_FILE", s(&missing)),
                ("VIGIL_HUB__TLS__KEY_FILE", s(&missing)),
            ],
            "missing.pem",
        ),
        (
            vec![
                ("VIGIL_HUB__TLS__CERT_FILE", "hub.pem"),
                ("VIGIL_HUB__TLS__KEY_FILE", "hub-key.pem"),
                ("VIGIL_HUB__TLS__CLIENT_AUTH", "required"),
            ],
            "client_ca_file",
        ),
        (
            vec![
                ("VIGIL_HUB__TLS__CERT_FILE", "hub.pem"),
                ("VIGIL_HUB__TLS__KEY_FILE", "hub-key.pem"),
                ("VIGIL_HUB__TLS__CLIENT_AUTH", "sometimes"),
            ],
            "client_auth",
        ),
    ] {
        let out = vigil()
            .args(["hub", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(d.path())
            .envs(env)
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains(expect), "{err}");
    }
    // The PKI commands check their input the same way.
    let out = vigil()
        .args(["admin", "pki", "gateway", "bad id!", "--dir"])
        .arg(d.path())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    run_ok(&["admin", "pki", "init", "--dir", s(d.path())]);
    let out = vigil()
        .args(["admin", "pki", "init", "--dir"])
        .arg(d.path())
        .output()
        .expect("run");
    assert_eq!(
        out.status.code(),
        Some(2),
        "the CA is never replaced: {out:?}"
    );
}

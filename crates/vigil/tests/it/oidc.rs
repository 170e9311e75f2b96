//! Sign-in through an identity provider (feature `oidc`): a real hub process against an
//! identity provider served by this test on loopback with a freshly generated RSA key. The
//! provider checks PKCE and issues RS256 ID tokens, correct ones and each kind of wrong one.

use crate::harness::{self, Site};
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use reqwest::{StatusCode, header};
use rsa::pkcs1v15::SigningKey;
use rsa::signature::{SignatureEncoding, Signer};
use rsa::traits::PublicKeyParts;
use rsa::{RsaPrivateKey, sha2::Sha256};
use serde_json::{Value, json};
use sha2::Digest;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Good,
    WrongNonce,
    WrongAudience,
    WrongIssuer,
    Expired,
    ForeignKey,
    NoRole,
}

struct Grant {
    nonce: String,
    challenge: String,
    redirect_uri: String,
}

struct Idp {
    base: String,
    key: SigningKey<Sha256>,
    foreign: SigningKey<Sha256>,
    n: String,
    e: String,
    mode: Mutex<Mode>,
    grants: Mutex<HashMap<String, Grant>>,
}

fn keypair() -> (SigningKey<Sha256>, RsaPrivateKey) {
    let k = RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).expect("RSA key");
    (SigningKey::<Sha256>::new(k.clone()), k)
}

impl Idp {
    fn id_token(&self, nonce: &str) -> String {
        let mode = *self.mode.lock().expect("mode");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs() as i64;
        let mut claims = json!({
            "iss": if mode == Mode::WrongIssuer { "http://impostor.invalid" } else { self.base.as_str() },
            "aud": if mode == Mode::WrongAudience { "another-app" } else { "vigil-hub" },
            "sub": "8e2f-1c",
            "preferred_username": "nina",
            "groups": if mode == Mode::NoRole { json!(["staff"]) } else { json!(["staff", "ward_nurses"]) },
            "nonce": if mode == Mode::WrongNonce { "0000" } else { nonce },
            "iat": now,
            "exp": if mode == Mode::Expired { now - 600 } else { now + 300 },
        });
        claims["auth_time"] = json!(now);
        let header = json!({"alg": "RS256", "typ": "JWT", "kid": "k1"});
        let signing_input = format!(
            "{}.{}",
            B64.encode(header.to_string()),
            B64.encode(claims.to_string())
        );
        let key = if mode == Mode::ForeignKey {
            &self.foreign
        } else {
            &self.key
        };
        let sig = key.sign(signing_input.as_bytes()).to_bytes();
        format!("{signing_input}.{}", B64.encode(sig))
    }
}

async fn discovery(State(idp): State<Arc<Idp>>) -> Json<Value> {
    let b = &idp.base;
    Json(json!({
        "issuer": b,
        "authorization_endpoint": format!("{b}/authorize"),
        "token_endpoint": format!("{b}/token"),
        "jwks_uri": format!("{b}/jwks"),
        "response_types_supported": ["code"],
        "id_token_signing_alg_values_supported": ["RS256"],
    }))
}

async fn jwks(State(idp): State<Arc<Idp>>) -> Json<Value> {
    Json(
        json!({"keys": [{"kty": "RSA", "kid": "k1", "alg": "RS256", "use": "sig", "n": idp.n, "e": idp.e}]}),
    )
}

async fn authorize(
    State(idp): State<Arc<Idp>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let ok = q.get("response_type").map(String::as_str) == Some("code")
        && q.get("client_id").map(String::as_str) == Some("vigil-hub")
        && q.get("code_challenge_method").map(String::as_str) == Some("S256")
        && q.get("scope")
            .is_some_and(|s| s.split(' ').any(|x| x == "openid"));
    let (Some(state), Some(nonce), Some(challenge), Some(redirect_uri)) = (
        q.get("state"),
        q.get("nonce"),
        q.get("code_challenge"),
        q.get("redirect_uri"),
    ) else {
        return (StatusCode::BAD_REQUEST, "missing parameters").into_response();
    };
    if !ok {
        return (StatusCode::BAD_REQUEST, "bad request").into_response();
    }
    let mut raw = [0u8; 16];
    rsa::rand_core::RngCore::fill_bytes(&mut rsa::rand_core::OsRng, &mut raw);
    let code = hex::encode(raw);
    idp.grants.lock().expect("grants").insert(
        code.clone(),
        Grant {
            nonce: nonce.clone(),
            challenge: challenge.clone(),
            redirect_uri: redirect_uri.clone(),
        },
    );
    Redirect::to(&format!("{redirect_uri}?code={code}&state={state}")).into_response()
}

async fn token(State(idp): State<Arc<Idp>>, body: String) -> Response {
    let f: HashMap<String, String> = serde_urlencoded::from_str(&body).unwrap_or_default();
    let grant = f
        .get("code")
        .and_then(|c| idp.grants.lock().expect("grants").remove(c));
    let Some(g) = grant else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "invalid_grant"})),
        )
            .into_response();
    };
    let verifier = f.get("code_verifier").cloned().unwrap_or_default();
    let pkce_ok = B64.encode(sha2::Sha256::digest(verifier.as_bytes())) == g.challenge;
    if !pkce_ok
        || f.get("grant_type").map(String::as_str) != Some("authorization_code")
        || f.get("redirect_uri") != Some(&g.redirect_uri)
        || f.get("client_id").map(String::as_str) != Some("vigil-hub")
    {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "invalid_grant"})),
        )
            .into_response();
    }
    Json(json!({
        "access_token": "opaque",
        "token_type": "Bearer",
        "expires_in": 300,
        "id_token": idp.id_token(&g.nonce),
    }))
    .into_response()
}

async fn start_idp() -> Arc<Idp> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let ((key, private), (foreign, _)) = tokio::task::spawn_blocking(|| (keypair(), keypair()))
        .await
        .expect("keys");
    let idp = Arc::new(Idp {
        base,
        n: B64.encode(private.n().to_bytes_be()),
        e: B64.encode(private.e().to_bytes_be()),
        key,
        foreign,
        mode: Mutex::new(Mode::Good),
        grants: Mutex::new(HashMap::new()),
    });
    let app = Router::new()
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/jwks", get(jwks))
        .route("/authorize", get(authorize))
        .route("/token", post(token))
        .with_state(idp.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    idp
}

fn location(r: &reqwest::Response) -> String {
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    r.headers()
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .expect("Location")
        .to_owned()
}

fn set_cookie(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")) && !v.starts_with(&format!("{name}=;")))
        .map(str::to_owned)
}

/// Starts a sign-in at the hub and passes the provider: the callback URL and the flow cookie.
async fn through_provider(c: &reqwest::Client, hub: &str) -> (String, String) {
    let r = c
        .get(format!("{hub}/api/v1/auth/oidc/login"))
        .send()
        .await
        .expect("hub");
    let to_idp = location(&r);
    let flow = set_cookie(&r, "vigil_oidc").expect("flow cookie");
    for a in ["HttpOnly", "Secure", "SameSite=Lax"] {
        assert!(flow.contains(a), "{flow}");
    }
    assert!(to_idp.contains("code_challenge_method=S256") && to_idp.contains("nonce="));
    let r = c.get(&to_idp).send().await.expect("idp");
    let callback = location(&r);
    let pair = flow.split(';').next().expect("pair").to_owned();
    (callback, pair)
}

async fn callback(c: &reqwest::Client, url: &str, cookie: Option<&str>) -> reqwest::Response {
    let mut req = c.get(url);
    if let Some(k) = cookie {
        req = req.header(header::COOKIE, k);
    }
    req.send().await.expect("hub")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_through_the_identity_provider_maps_the_group_to_a_role() {
    let idp = start_idp().await;
    let site = Site::new();
    let port = harness::free_port();
    let redirect = format!("http://127.0.0.1:{port}/api/v1/auth/oidc/callback");
    let hub = harness::spawn_hub_with(
        &site.hub_dir(),
        &format!("127.0.0.1:{port}"),
        &[
            ("VIGIL_HUB__OIDC__ISSUER", idp.base.as_str()),
            ("VIGIL_HUB__OIDC__CLIENT_ID", "vigil-hub"),
            ("VIGIL_HUB__OIDC__REDIRECT_URI", redirect.as_str()),
            ("VIGIL_HUB__OIDC__ROLE_CLAIM", "groups"),
            ("VIGIL_HUB__OIDC__ROLES__WARD_NURSES", "nurse"),
        ],
    );
    let u = &hub.url;
    vigil_tls::install_default_provider();
    let c = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");

    let (url, flow) = through_provider(&c, u).await;
    let r = callback(&c, &url, Some(&flow)).await;
    assert_eq!(r.status(), 200);
    let session = set_cookie(&r, "vigil_session").expect("session cookie");
    assert!(session.contains("SameSite=Strict") && session.contains("HttpOnly"));
    let v: Value = r.json().await.expect("json");
    assert_eq!(
        (&v["user"], &v["role"]),
        (&json!("nina"), &json!("nurse")),
        "{v}"
    );
    let pair = session.split(';').next().expect("pair").to_owned();
    let me: Value = c
        .get(format!("{u}/api/v1/auth/me"))
        .header(header::COOKIE, &pair)
        .send()
        .await
        .expect("hub")
        .json()
        .await
        .expect("json");
    assert_eq!(me, json!({"user": "nina", "role": "nurse"}));

    // A callback is good once, and only in the browser that started it.
    let r = callback(&c, &url, Some(&flow)).await;
    assert_eq!(r.status(), 400);
    let (url, _) = through_provider(&c, u).await;
    let r = callback(&c, &url, None).await;
    assert_eq!(r.status(), 400);
    let (url, _) = through_provider(&c, u).await;
    let (_, other_flow) = through_provider(&c, u).await;
    let r = callback(&c, &url, Some(&other_flow)).await;
    assert_eq!(r.status(), 400);

    // Every kind of bad ID token is refused, and no session is set.
    for (mode, want) in [
        (Mode::WrongNonce, 401),
        (Mode::WrongAudience, 401),
        (Mode::WrongIssuer, 401),
        (Mode::Expired, 401),
        (Mode::ForeignKey, 401),
        (Mode::NoRole, 403),
    ] {
        *idp.mode.lock().expect("mode") = mode;
        let (url, flow) = through_provider(&c, u).await;
        let r = callback(&c, &url, Some(&flow)).await;
        assert_eq!(r.status().as_u16(), want, "{mode:?}");
        assert!(set_cookie(&r, "vigil_session").is_none(), "{mode:?}");
    }

    // A disabled account stays out, whatever the provider says.
    *idp.mode.lock().expect("mode") = Mode::Good;
    let r = c
        .post(format!("{u}/api/v1/users/nina/disable"))
        .bearer_auth(&site.admin)
        .send()
        .await
        .expect("hub");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let (url, flow) = through_provider(&c, u).await;
    assert_eq!(callback(&c, &url, Some(&flow)).await.status(), 401);
    let r = c
        .get(format!("{u}/api/v1/auth/me"))
        .header(header::COOKIE, &pair)
        .send()
        .await
        .expect("hub");
    assert_eq!(r.status(), 401);
}

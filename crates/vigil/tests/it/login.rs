//! People signing in: passwords, session cookies, CSRF, lockout, revocation and API token
//! administration, end to end against a real hub process.

use crate::harness::{self, Browser, Site};
use reqwest::{Method, StatusCode, header};
use serde_json::{Value, json};
use std::time::Duration;

const PW: &str = "a long enough passphrase";

/// A cookie-authenticated request; `csrf` and `origin` headers only when given.
async fn browse(
    c: &reqwest::Client,
    method: Method,
    url: String,
    b: &Browser,
    csrf: Option<&str>,
    origin: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = c.request(method, url).header(header::COOKIE, &b.cookie);
    if let Some(t) = csrf {
        req = req.header("X-CSRF-Token", t);
    }
    if let Some(o) = origin {
        req = req.header(header::ORIGIN, o);
    }
    if let Some(v) = body {
        req = req.json(&v);
    }
    let r = req.send().await.expect("hub reachable");
    let s = r.status();
    (s, r.json().await.unwrap_or(Value::Null))
}

async fn bearer(
    c: &reqwest::Client,
    method: Method,
    url: String,
    token: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = c.request(method, url).bearer_auth(token);
    if let Some(v) = body {
        req = req.json(&v);
    }
    let r = req.send().await.expect("hub reachable");
    let s = r.status();
    (s, r.json().await.unwrap_or(Value::Null))
}

async fn me(c: &reqwest::Client, hub: &str, b: &Browser) -> StatusCode {
    browse(
        c,
        Method::GET,
        format!("{hub}/api/v1/auth/me"),
        b,
        None,
        None,
        None,
    )
    .await
    .0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_sets_a_strict_cookie_and_answers_unknown_users_like_wrong_passwords() {
    let site = Site::new();
    site.user("nurse-ann", "nurse", PW);
    let hub = harness::spawn_hub(&site.hub_dir(), "127.0.0.1:0");
    let c = harness::client();
    let u = &hub.url;

    let r = harness::login(&c, u, "nurse-ann", PW).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()
            .get(header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok()),
        Some("no-store")
    );
    let cookie = r
        .headers()
        .get(header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .expect("set-cookie")
        .to_owned();
    let mut attrs = cookie.split(';').map(str::trim);
    let pair = attrs.next().expect("name=value");
    let sid = pair.strip_prefix("vigil_session=").expect("cookie name");
    assert_eq!(sid.len(), 64, "32 random bytes in hex");
    assert!(sid.bytes().all(|b| b.is_ascii_hexdigit()));
    let attrs: Vec<&str> = attrs.collect();
    for a in [
        "HttpOnly",
        "Secure",
        "SameSite=Strict",
        "Path=/",
        "Max-Age=43200",
    ] {
        assert!(attrs.contains(&a), "{a} missing from {cookie}");
    }
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["user"], "nurse-ann");
    assert_eq!(body["role"], "nurse");
    assert_eq!(body["csrf_token"].as_str().map(str::len), Some(64));
    assert!(body["expires"].is_string(), "{body}");
    let b = Browser {
        cookie: pair.to_owned(),
        csrf: body["csrf_token"].as_str().unwrap_or_default().to_owned(),
    };
    let (s, v) = browse(
        &c,
        Method::GET,
        format!("{u}/api/v1/auth/me"),
        &b,
        None,
        None,
        None,
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(v, json!({"user": "nurse-ann", "role": "nurse"}));

    // Wrong password and unknown user: the same status, problem and header.
    let mut answers = Vec::new();
    for (name, pw) in [
        ("nurse-ann", "not the password at all"),
        ("nobody-here", PW),
        ("not a valid name!", PW),
    ] {
        let r = harness::login(&c, u, name, pw).await;
        let www = r
            .headers()
            .get(header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        assert!(r.headers().get(header::SET_COOKIE).is_none());
        let status = r.status();
        let v: Value = r.json().await.expect("problem");
        assert_eq!(status, 401, "{v}");
        assert_eq!(v["code"], "invalid_credentials");
        answers.push((status, www, v));
    }
    assert!(answers.windows(2).all(|w| w[0] == w[1]), "{answers:?}");

    // The database holds an Argon2id PHC string, never the password, and no session id.
    let db = rusqlite::Connection::open(site.hub_dir().join("hub.db")).expect("open db");
    let hash: String = db
        .query_row(
            "SELECT password_hash FROM app_user WHERE name = 'nurse-ann'",
            [],
            |r| r.get(0),
        )
        .expect("stored hash");
    assert!(
        hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{hash}"
    );
    assert!(!hash.contains(PW));
    let dump: i64 = db
        .query_row(
            "SELECT count(*) FROM user_session WHERE lower(hex(hash)) = ?1 OR lower(hex(csrf_hash)) = ?2",
            [sid, b.csrf.as_str()],
            |r| r.get(0),
        )
        .expect("sessions");
    assert_eq!(dump, 0, "session ids and CSRF tokens are stored hashed");
    let stored: i64 = db
        .query_row(
            "SELECT count(*) FROM user_session WHERE user = 'nurse-ann'",
            [],
            |r| r.get(0),
        )
        .expect("sessions");
    assert_eq!(stored, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_lock_the_account_until_the_period_ends() {
    let site = Site::new();
    site.user("dr-lee", "clinician", PW);
    let hub = harness::spawn_hub_with(
        &site.hub_dir(),
        "127.0.0.1:0",
        &[
            ("VIGIL_HUB__LOGIN_MAX_FAILURES", "3"),
            ("VIGIL_HUB__LOGIN_LOCKOUT_S", "2"),
        ],
    );
    let c = harness::client();
    let u = &hub.url;
    for _ in 0..3 {
        let r = harness::login(&c, u, "dr-lee", "wrong password guess").await;
        assert_eq!(r.status(), 401);
    }
    // Locked: even the right password is refused, with the time to wait.
    let r = harness::login(&c, u, "dr-lee", PW).await;
    assert_eq!(r.status(), StatusCode::LOCKED);
    let wait: u64 = r
        .headers()
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!((1..=2).contains(&wait), "{wait}");
    let v: Value = r.json().await.expect("problem");
    assert_eq!(v["code"], "locked");
    assert_eq!(v["status"], 423);
    // Another user is not affected.
    site.user("dr-kim", "clinician", PW);
    harness::sign_in(&c, u, "dr-kim", PW).await;

    tokio::time::sleep(Duration::from_millis(wait * 1000 + 300)).await;
    harness::sign_in(&c, u, "dr-lee", PW).await;

    // A successful login starts the count again: three more failures lock it again.
    for _ in 0..3 {
        let r = harness::login(&c, u, "dr-lee", "wrong password guess").await;
        assert_eq!(r.status(), 401);
    }
    let r = harness::login(&c, u, "dr-lee", PW).await;
    assert_eq!(r.status(), StatusCode::LOCKED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_source_address_is_limited_in_failed_logins() {
    let site = Site::new();
    site.user("nurse-ray", "nurse", PW);
    let hub = harness::spawn_hub_with(
        &site.hub_dir(),
        "127.0.0.1:0",
        &[("VIGIL_HUB__LOGIN_IP_FAILURES_PER_MIN", "3")],
    );
    let c = harness::client();
    for i in 0..3 {
        let r = harness::login(&c, &hub.url, &format!("guess-{i}"), PW).await;
        assert_eq!(r.status(), 401);
    }
    let r = harness::login(&c, &hub.url, "nurse-ray", PW).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers().get(header::RETRY_AFTER).is_some());
    let v: Value = r.json().await.expect("problem");
    assert_eq!(v["code"], "rate_limited");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_and_admin_revocation_end_sessions_at_once() {
    let site = Site::new();
    site.user("carer-max", "caregiver", PW);
    let hub = harness::spawn_hub(&site.hub_dir(), "127.0.0.1:0");
    let c = harness::client();
    let u = &hub.url;
    let one = harness::sign_in(&c, u, "carer-max", PW).await;
    let two = harness::sign_in(&c, u, "carer-max", PW).await;
    let three = harness::sign_in(&c, u, "carer-max", PW).await;
    assert_ne!(one.cookie, two.cookie);
    for b in [&one, &two, &three] {
        assert_eq!(me(&c, u, b).await, 200);
    }

    let (s, _) = browse(
        &c,
        Method::POST,
        format!("{u}/api/v1/auth/logout"),
        &one,
        Some(&one.csrf),
        None,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(me(&c, u, &one).await, 401);
    assert_eq!(me(&c, u, &two).await, 200);

    let (s, v) = bearer(
        &c,
        Method::DELETE,
        format!("{u}/api/v1/sessions?user=carer-max"),
        &site.admin,
        None,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["revoked"], 2);
    assert_eq!(me(&c, u, &two).await, 401);
    assert_eq!(me(&c, u, &three).await, 401);
    let (s, _) = bearer(
        &c,
        Method::DELETE,
        format!("{u}/api/v1/sessions?user=nobody"),
        &site.admin,
        None,
    )
    .await;
    assert_eq!(s, 404);
    // A caregiver may not revoke anyone's sessions.
    let carer = site.token("carer-max", "caregiver");
    let (s, _) = bearer(
        &c,
        Method::DELETE,
        format!("{u}/api/v1/sessions?user=carer-max"),
        &carer,
        None,
    )
    .await;
    assert_eq!(s, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sessions_expire() {
    let site = Site::new();
    site.user("nurse-ida", "nurse", PW);
    let hub = harness::spawn_hub_with(
        &site.hub_dir(),
        "127.0.0.1:0",
        &[("VIGIL_HUB__SESSION_IDLE_S", "3")],
    );
    let c = harness::client();
    let b = harness::sign_in(&c, &hub.url, "nurse-ida", PW).await;
    assert_eq!(me(&c, &hub.url, &b).await, 200);
    tokio::time::sleep(Duration::from_millis(4500)).await;
    assert_eq!(me(&c, &hub.url, &b).await, 401);
    // A new login works.
    let b = harness::sign_in(&c, &hub.url, "nurse-ida", PW).await;
    assert_eq!(me(&c, &hub.url, &b).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_end_at_their_absolute_limit_however_busy() {
    let site = Site::new();
    site.user("nurse-abe", "nurse", PW);
    let hub = harness::spawn_hub_with(
        &site.hub_dir(),
        "127.0.0.1:0",
        &[("VIGIL_HUB__SESSION_MAX_S", "3")],
    );
    let c = harness::client();
    let r = harness::login(&c, &hub.url, "nurse-abe", PW).await;
    let cookie = r
        .headers()
        .get(header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .expect("cookie")
        .to_owned();
    assert!(cookie.contains("Max-Age=3"), "{cookie}");
    let b = Browser {
        cookie: cookie.split(';').next().expect("pair").to_owned(),
        csrf: String::new(),
    };
    // Used every 300 ms, never idle, and still over once the limit passes.
    assert_eq!(me(&c, &hub.url, &b).await, 200);
    let start = std::time::Instant::now();
    let mut refused = false;
    while start.elapsed() < Duration::from_secs(10) {
        let s = me(&c, &hub.url, &b).await;
        if s == 401 {
            refused = true;
            break;
        }
        assert_eq!(s, 200);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(refused, "the session outlived its absolute limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_authenticated_writes_need_the_csrf_token_and_a_same_origin() {
    let site = Site::new();
    site.user("ops-amy", "admin", PW);
    let hub = harness::spawn_hub(&site.hub_dir(), "127.0.0.1:0");
    let c = harness::client();
    let u = &hub.url;
    let b = harness::sign_in(&c, u, "ops-amy", PW).await;
    let post = |id: &str| (format!("{u}/api/v1/patients"), Some(json!({"id": id})));

    let (url, body) = post("pat-no-token");
    let (s, v) = browse(&c, Method::POST, url, &b, None, None, body).await;
    assert_eq!(
        (s, &v["code"]),
        (StatusCode::FORBIDDEN, &json!("csrf")),
        "{v}"
    );

    let (url, body) = post("pat-wrong-token");
    let wrong = "0".repeat(64);
    let (s, v) = browse(&c, Method::POST, url, &b, Some(&wrong), None, body).await;
    assert_eq!(
        (s, &v["code"]),
        (StatusCode::FORBIDDEN, &json!("csrf")),
        "{v}"
    );

    let (url, body) = post("pat-foreign-origin");
    let (s, v) = browse(
        &c,
        Method::POST,
        url,
        &b,
        Some(&b.csrf),
        Some("https://evil.example"),
        body,
    )
    .await;
    assert_eq!(
        (s, &v["code"]),
        (StatusCode::FORBIDDEN, &json!("csrf")),
        "{v}"
    );

    let (url, body) = post("pat-null-origin");
    let (s, _) = browse(&c, Method::POST, url, &b, Some(&b.csrf), Some("null"), body).await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    // Another session's token does not do either.
    let other = harness::sign_in(&c, u, "ops-amy", PW).await;
    let (url, body) = post("pat-other-token");
    let (s, _) = browse(&c, Method::POST, url, &b, Some(&other.csrf), None, body).await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    let (url, body) = post("pat-same-origin");
    let (s, v) = browse(&c, Method::POST, url, &b, Some(&b.csrf), Some(u), body).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (url, body) = post("pat-no-origin");
    let (s, v) = browse(&c, Method::POST, url, &b, Some(&b.csrf), None, body).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");

    // Bearer tokens are no ambient credential: no CSRF token needed.
    let (s, v) = bearer(
        &c,
        Method::POST,
        format!("{u}/api/v1/patients"),
        &site.admin,
        Some(json!({"id": "pat-bearer"})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");

    // Safe methods need no CSRF token; refused writes left nothing behind.
    let (s, v) = browse(
        &c,
        Method::GET,
        format!("{u}/api/v1/patients"),
        &b,
        None,
        None,
        None,
    )
    .await;
    assert_eq!(s, 200);
    let mut ids: Vec<&str> = v["patients"]
        .as_array()
        .expect("patients")
        .iter()
        .filter_map(|p| p["id"].as_str())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, ["pat-bearer", "pat-no-origin", "pat-same-origin"]);

    // DELETE and logout are state changes too.
    let (s, _) = browse(
        &c,
        Method::DELETE,
        format!("{u}/api/v1/sessions?user=ops-amy"),
        &b,
        None,
        None,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = browse(
        &c,
        Method::POST,
        format!("{u}/api/v1/auth/logout"),
        &b,
        None,
        None,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(me(&c, u, &b).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_tokens_are_issued_listed_and_revoked_at_once() {
    let site = Site::new();
    let hub = harness::spawn_hub(&site.hub_dir(), "127.0.0.1:0");
    let c = harness::client();
    let u = &hub.url;
    let admin = &site.admin;

    let (s, v) = bearer(
        &c,
        Method::POST,
        format!("{u}/api/v1/tokens"),
        admin,
        Some(json!({"name": "lab-feed", "role": "integration", "expires_in_s": 3600})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let token = v["token"].as_str().expect("token shown once").to_owned();
    let id = v["id"].as_str().expect("id").to_owned();
    assert!(token.starts_with("vat_") && id.starts_with("tok_"), "{v}");
    let (s, _) = bearer(
        &c,
        Method::GET,
        format!("{u}/api/v1/patients"),
        &token,
        None,
    )
    .await;
    assert_eq!(s, 200);

    let (s, v) = bearer(&c, Method::GET, format!("{u}/api/v1/tokens"), admin, None).await;
    assert_eq!(s, 200);
    let listed = v["tokens"].as_array().expect("tokens");
    let entry = listed
        .iter()
        .find(|t| t["id"] == id.as_str())
        .expect("listed");
    assert_eq!(
        (&entry["name"], &entry["role"], &entry["revoked"]),
        (&json!("lab-feed"), &json!("integration"), &json!(false))
    );
    assert!(
        !v.to_string().contains(&token[4..]),
        "the list never shows a token"
    );

    // Only the admin role issues or lists credentials (not integration, not clinicians).
    for who in [token.clone(), site.token("dr-x", "clinician")] {
        let (s, _) = bearer(
            &c,
            Method::POST,
            format!("{u}/api/v1/tokens"),
            &who,
            Some(json!({"name": "me-too", "role": "admin"})),
        )
        .await;
        assert_eq!(s, 403);
        let (s, _) = bearer(&c, Method::GET, format!("{u}/api/v1/tokens"), &who, None).await;
        assert_eq!(s, 403);
    }
    for bad in [
        json!({"name": "x", "role": "doctor"}),
        json!({"name": "", "role": "nurse"}),
        json!({"name": "x", "role": "nurse", "expires_in_s": 0}),
        json!({"name": "x", "role": "nurse", "extra": 1}),
    ] {
        let (s, v) = bearer(
            &c,
            Method::POST,
            format!("{u}/api/v1/tokens"),
            admin,
            Some(bad),
        )
        .await;
        assert_eq!(s, 400, "{v}");
    }

    let (s, _) = bearer(
        &c,
        Method::DELETE,
        format!("{u}/api/v1/tokens/{id}"),
        admin,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, v) = bearer(
        &c,
        Method::GET,
        format!("{u}/api/v1/patients"),
        &token,
        None,
    )
    .await;
    assert_eq!(s, 401, "{v}");
    let (s, _) = bearer(
        &c,
        Method::DELETE,
        format!("{u}/api/v1/tokens/tok_0000000000000000"),
        admin,
        None,
    )
    .await;
    assert_eq!(s, 404);
    let (s, _) = bearer(
        &c,
        Method::DELETE,
        format!("{u}/api/v1/tokens/garbage"),
        admin,
        None,
    )
    .await;
    assert_eq!(s, 404);

    // A token issued through the API expires like any other.
    let (s, v) = bearer(
        &c,
        Method::POST,
        format!("{u}/api/v1/tokens"),
        admin,
        Some(json!({"name": "short", "role": "nurse", "expires_in_s": 1})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    let short = v["token"].as_str().expect("token").to_owned();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (s, _) = bearer(
        &c,
        Method::GET,
        format!("{u}/api/v1/patients"),
        &short,
        None,
    )
    .await;
    assert_eq!(s, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_users_tokens_and_sessions_are_refused() {
    let site = Site::new();
    site.user("dr-zed", "clinician", PW);
    let token = site.token("dr-zed", "clinician");
    let hub = harness::spawn_hub(&site.hub_dir(), "127.0.0.1:0");
    let c = harness::client();
    let u = &hub.url;
    let b = harness::sign_in(&c, u, "dr-zed", PW).await;
    assert_eq!(me(&c, u, &b).await, 200);
    let (s, _) = bearer(&c, Method::GET, format!("{u}/api/v1/auth/me"), &token, None).await;
    assert_eq!(s, 200);

    let (s, v) = bearer(
        &c,
        Method::POST,
        format!("{u}/api/v1/users/dr-zed/disable"),
        &site.admin,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
    assert_eq!(me(&c, u, &b).await, 401);
    let (s, _) = bearer(&c, Method::GET, format!("{u}/api/v1/auth/me"), &token, None).await;
    assert_eq!(s, 401);
    let r = harness::login(&c, u, "dr-zed", PW).await;
    assert_eq!(r.status(), 401);

    // A token issued to the name after disabling is refused too.
    let later = site.token("dr-zed", "clinician");
    let (s, _) = bearer(&c, Method::GET, format!("{u}/api/v1/auth/me"), &later, None).await;
    assert_eq!(s, 401);

    let (s, _) = bearer(
        &c,
        Method::POST,
        format!("{u}/api/v1/users/dr-zed/enable"),
        &site.admin,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    harness::sign_in(&c, u, "dr-zed", PW).await;
    // Revocation is not undone by enabling.
    let (s, _) = bearer(&c, Method::GET, format!("{u}/api/v1/auth/me"), &token, None).await;
    assert_eq!(s, 401);
    let (s, _) = bearer(
        &c,
        Method::POST,
        format!("{u}/api/v1/users/nobody/disable"),
        &site.admin,
        None,
    )
    .await;
    assert_eq!(s, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_are_created_by_admins_under_the_password_policy() {
    let site = Site::new();
    let hub = harness::spawn_hub(&site.hub_dir(), "127.0.0.1:0");
    let c = harness::client();
    let u = &hub.url;
    let url = format!("{u}/api/v1/users");
    for (body, code) in [
        (
            json!({"name": "nurse-bo", "role": "nurse", "password": "too short"}),
            "weak_password",
        ),
        (
            json!({"name": "nurse-bo-long", "role": "nurse", "password": "Nurse-Bo-Long"}),
            "weak_password",
        ),
        (
            json!({"name": "nurse-bo", "role": "doctor", "password": PW}),
            "invalid_role",
        ),
        (
            json!({"name": "bad name", "role": "nurse", "password": PW}),
            "invalid_name",
        ),
    ] {
        let (s, v) = bearer(&c, Method::POST, url.clone(), &site.admin, Some(body)).await;
        assert_eq!(
            (s, &v["code"]),
            (StatusCode::BAD_REQUEST, &json!(code)),
            "{v}"
        );
    }
    let (s, v) = bearer(
        &c,
        Method::POST,
        url.clone(),
        &site.admin,
        Some(json!({"name": "nurse-bo", "role": "nurse", "password": PW})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert!(v.get("generated_password").is_none());
    let (s, _) = bearer(
        &c,
        Method::POST,
        url.clone(),
        &site.admin,
        Some(json!({"name": "nurse-bo", "role": "nurse", "password": PW})),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (s, v) = bearer(
        &c,
        Method::POST,
        url.clone(),
        &site.admin,
        Some(json!({"name": "pat-cy", "role": "patient"})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let generated = v["generated_password"]
        .as_str()
        .expect("generated password")
        .to_owned();
    let b = harness::sign_in(&c, u, "pat-cy", &generated).await;
    harness::sign_in(&c, u, "nurse-bo", PW).await;

    let (s, v) = bearer(&c, Method::GET, url.clone(), &site.admin, None).await;
    assert_eq!(s, 200);
    assert_eq!(v["count"], 2);
    assert!(!v.to_string().contains("argon2"), "{v}");

    // No other role manages users, whatever the credential.
    for role in ["clinician", "nurse", "caregiver", "patient", "integration"] {
        let t = site.token(&format!("{role}-x"), role);
        let (s, _) = bearer(&c, Method::GET, url.clone(), &t, None).await;
        assert_eq!(s, 403, "{role} lists users");
        let (s, _) = bearer(
            &c,
            Method::POST,
            url.clone(),
            &t,
            Some(json!({"name": "sneaky", "role": "admin", "password": PW})),
        )
        .await;
        assert_eq!(s, 403, "{role} creates users");
        let (s, _) = bearer(
            &c,
            Method::POST,
            format!("{u}/api/v1/users/nurse-bo/disable"),
            &t,
            None,
        )
        .await;
        assert_eq!(s, 403, "{role} disables users");
    }
    let (s, _) = browse(
        &c,
        Method::POST,
        url.clone(),
        &b,
        Some(&b.csrf),
        None,
        Some(json!({"name": "sneaky", "role": "admin", "password": PW})),
    )
    .await;
    assert_eq!(s, 403, "a patient's session cannot create users");
    let (s, _) = c
        .get(url.clone())
        .send()
        .await
        .map(|r| (r.status(), ()))
        .expect("hub");
    assert_eq!(s, 401);
}

#[test]
fn create_user_refuses_bad_input_with_exit_code_2() {
    let site = Site::new();
    let d = site.hub_dir();
    let d = d.to_str().expect("utf8");
    for args in [
        vec![
            "admin",
            "create-user",
            "amy",
            "--role",
            "doctor",
            "--data-dir",
            d,
        ],
        vec![
            "admin",
            "create-user",
            "bad name",
            "--role",
            "nurse",
            "--data-dir",
            d,
        ],
    ] {
        let out = harness::vigil().args(&args).output().expect("run");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
    // A generated password is printed once and works.
    let out = harness::vigil()
        .args([
            "admin",
            "create-user",
            "amy",
            "--role",
            "nurse",
            "--data-dir",
            d,
        ])
        .output()
        .expect("run");
    assert!(out.status.success());
    let pw = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert_eq!(pw.len(), 32);
    let out = harness::vigil()
        .args([
            "admin",
            "create-user",
            "amy",
            "--role",
            "nurse",
            "--data-dir",
            d,
        ])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2), "a taken name");
    let db = rusqlite::Connection::open(site.hub_dir().join("hub.db")).expect("db");
    let hash: String = db
        .query_row(
            "SELECT password_hash FROM app_user WHERE name = 'amy'",
            [],
            |r| r.get(0),
        )
        .expect("hash");
    assert!(hash.starts_with("$argon2id$") && !hash.contains(&pw));
    drop(db);
    let out = harness::vigil()
        .args(["admin", "disable-user", "amy", "--data-dir", d])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let db = rusqlite::Connection::open(site.hub_dir().join("hub.db")).expect("db");
    let disabled: bool = db
        .query_row(
            "SELECT disabled FROM app_user WHERE name = 'amy'",
            [],
            |r| r.get(0),
        )
        .expect("flag");
    assert!(disabled);
    let out = harness::vigil()
        .args(["admin", "disable-user", "nobody", "--data-dir", d])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2), "an unknown user");
}

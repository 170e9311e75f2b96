//! Passwords, login, browser sessions and CSRF protection.
//!
//! Passwords are hashed with Argon2id (OWASP parameters: 19 MiB, 2 passes, 1 lane) into PHC
//! strings. A login sets an `HttpOnly; Secure; SameSite=Strict` cookie holding 32 random
//! bytes; the hub stores only its SHA-256, with a CSRF token (also stored as SHA-256) that
//! cookie-authenticated state-changing requests must echo in `X-CSRF-Token`. Sessions expire
//! when idle and at an absolute limit, and are revocable one by one or per user.
//!
//! Unknown users and wrong passwords get the same answer after the same work (an Argon2
//! verification against a dummy hash), so the login cannot be used to enumerate names.
//! Failed logins lock the account after a configured number (the lock doubling with each
//! repeated lockout) and are limited per source address.

use crate::routes::ApiJson;
use crate::{ApiError, AppState};
use argon2::{Algorithm, Argon2, Params, PasswordHash, PasswordHasher, PasswordVerifier, Version};
use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;
use vigil_model::Timestamp;
use vigil_store::{LockoutPolicy, NewSession};

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "vigil_session";
/// Header carrying the CSRF token on cookie-authenticated unsafe requests.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// Shortest accepted password, in characters.
pub const MIN_PASSWORD_CHARS: usize = 12;
/// Longest accepted password, in bytes (bounds the work of one login).
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// Argon2 verifications running at once; further logins wait (each takes ~19 MiB).
const CONCURRENT_HASHES: usize = 4;
/// Window of the per-address limiter.
const IP_WINDOW: Duration = Duration::from_secs(60);

/// Whether this build can sign people in through an OpenID Connect provider.
pub const OIDC_BUILT: bool = cfg!(feature = "oidc");

/// An OpenID Connect identity provider (`[hub.oidc]`).
#[derive(Debug, Clone, serde::Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// The issuer URL; its `/.well-known/openid-configuration` is read at the first sign-in.
    pub issuer: String,
    pub client_id: String,
    /// For confidential clients; public clients rely on PKCE alone.
    #[serde(default)]
    pub client_secret: Option<String>,
    /// This hub's `/api/v1/auth/oidc/callback` as the provider knows it.
    pub redirect_uri: String,
    /// The ID token claim holding the role or groups (a string or an array of strings).
    #[serde(default = "default_role_claim")]
    pub role_claim: String,
    /// Claim value -> Vigil role; when empty the claim must name a Vigil role itself.
    #[serde(default)]
    pub roles: std::collections::BTreeMap<String, String>,
    /// The ID token claim used as the user name (`sub` when absent).
    #[serde(default = "default_name_claim")]
    pub name_claim: String,
}

fn default_role_claim() -> String {
    "vigil_role".into()
}

fn default_name_claim() -> String {
    "preferred_username".into()
}

/// A password the policy refuses, or a hashing failure.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("the password must have at least {MIN_PASSWORD_CHARS} characters")]
    TooShort,
    #[error("the password must have at most {MAX_PASSWORD_BYTES} bytes")]
    TooLong,
    #[error("the password must not be the user name")]
    SameAsName,
    #[error("password hashing failed: {0}")]
    Hash(String),
}

fn argon2() -> Argon2<'static> {
    let params = Params::new(19_456, 2, 1, None).unwrap_or(Params::DEFAULT);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Checks the password policy: at least 12 characters, at most 1024 bytes, not the name.
pub fn check_password_policy(name: &str, password: &str) -> Result<(), PasswordError> {
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(PasswordError::TooLong);
    }
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(PasswordError::TooShort);
    }
    if password.trim().eq_ignore_ascii_case(name.trim()) {
        return Err(PasswordError::SameAsName);
    }
    Ok(())
}

/// The Argon2id PHC string of `password` with a fresh random salt (slow: call off the
/// async runtime).
pub fn hash_password(password: &str) -> Result<String, PasswordError> {
    let salt: [u8; 16] = rand::random();
    argon2()
        .hash_password_with_salt(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| PasswordError::Hash(e.to_string()))
}

/// Whether `password` matches the PHC string (constant-time comparison inside Argon2).
pub fn verify_password(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(h) => argon2().verify_password(password.as_bytes(), &h).is_ok(),
        Err(_) => false,
    }
}

/// A random password of 32 hexadecimal characters (128 bits).
pub fn generate_password() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

pub(crate) fn sha256(s: &str) -> Vec<u8> {
    Sha256::digest(s.as_bytes()).to_vec()
}

/// Login throttling shared by the handlers: failures per source address, a bound on
/// concurrent Argon2 work, and the dummy hash unknown users are verified against.
#[derive(Debug)]
pub struct LoginGuard {
    by_ip: Mutex<HashMap<IpAddr, (Instant, u32)>>,
    hashing: tokio::sync::Semaphore,
    dummy: OnceLock<String>,
    #[cfg(feature = "oidc")]
    pub(crate) oidc: crate::oidc::OidcState,
}

impl Default for LoginGuard {
    fn default() -> Self {
        Self {
            by_ip: Mutex::new(HashMap::new()),
            hashing: tokio::sync::Semaphore::new(CONCURRENT_HASHES),
            dummy: OnceLock::new(),
            #[cfg(feature = "oidc")]
            oidc: crate::oidc::OidcState::default(),
        }
    }
}

impl LoginGuard {
    /// Seconds until `ip` may try again, when it used up its failures in this window.
    fn blocked(&self, ip: IpAddr, limit: u32) -> Option<u64> {
        let map = self.by_ip.lock().ok()?;
        let (start, n) = map.get(&ip)?;
        let elapsed = start.elapsed();
        (elapsed < IP_WINDOW && *n >= limit.max(1)).then(|| (IP_WINDOW - elapsed).as_secs().max(1))
    }

    fn failed(&self, ip: IpAddr) {
        let Ok(mut map) = self.by_ip.lock() else {
            return;
        };
        if map.len() > 10_000 {
            map.retain(|_, (start, _)| start.elapsed() < IP_WINDOW);
        }
        let e = map.entry(ip).or_insert((Instant::now(), 0));
        if e.0.elapsed() >= IP_WINDOW {
            *e = (Instant::now(), 0);
        }
        e.1 = e.1.saturating_add(1);
    }

    fn dummy_hash(&self) -> &str {
        self.dummy
            .get_or_init(|| hash_password(&generate_password()).unwrap_or_default())
    }
}

/// The client's address when the hub is served with connection info.
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        Ok(Self(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip()),
        ))
    }
}

/// The session id in the request's cookies, when there is a well-formed one.
pub fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == SESSION_COOKIE)
        .map(|(_, v)| v.trim())
        .filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn is_unsafe(m: &Method) -> bool {
    !matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

/// The authority (`host[:port]`) of an `Origin` header value.
fn origin_authority(origin: &str) -> Option<&str> {
    let rest = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))?;
    (!rest.is_empty() && !rest.contains('/')).then_some(rest)
}

fn check_csrf(parts: &Parts, csrf_hash: &[u8]) -> Result<(), ApiError> {
    let given = parts
        .headers
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or(ApiError::Csrf(
            "a request with a session cookie that changes state needs the X-CSRF-Token header",
        ))?;
    if !bool::from(sha256(given.trim()).as_slice().ct_eq(csrf_hash)) {
        return Err(ApiError::Csrf(
            "the X-CSRF-Token header does not match the session",
        ));
    }
    if let Some(origin) = parts.headers.get(header::ORIGIN) {
        let host = parts
            .headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .or_else(|| parts.uri.authority().map(|a| a.as_str()));
        let same = match (origin.to_str().ok().and_then(origin_authority), host) {
            (Some(o), Some(h)) => o.eq_ignore_ascii_case(h),
            _ => false,
        };
        if !same {
            return Err(ApiError::Csrf("the Origin header does not match the host"));
        }
    }
    Ok(())
}

/// Authenticates a request by its session cookie: the session must be live (not revoked,
/// not idle too long, not past its absolute expiry, its user not disabled), and an unsafe
/// method must carry the session's CSRF token and, when present, a same-host `Origin`.
/// Returns the user's name and role.
pub(crate) async fn authenticate(
    parts: &Parts,
    st: &AppState,
    sid: &str,
) -> Result<(String, String), ApiError> {
    let s = st
        .store
        .session(&sha256(sid))
        .await?
        .ok_or(ApiError::Unauthorized)?;
    let now = Timestamp::now();
    let idle_ms = st.config.session_idle_s.max(1).saturating_mul(1000) as i64;
    if s.revoked
        || s.user_disabled
        || now >= s.expires
        || now.0 >= s.last_seen.0.saturating_add(idle_ms)
    {
        return Err(ApiError::Unauthorized);
    }
    if is_unsafe(&parts.method) {
        check_csrf(parts, &s.csrf_hash)?;
    }
    // Activity is recorded at most every quarter of the idle period (and every minute).
    if now.0 - s.last_seen.0 >= (idle_ms / 4).min(60_000) {
        st.store.touch_session(s.id, now).await?;
    }
    Ok((s.user, s.role))
}

pub(crate) fn routes() -> Router<AppState> {
    let r = Router::new()
        .route("/api/v1/auth/login", post(login))
        .route("/api/v1/auth/logout", post(logout))
        .route("/api/v1/auth/me", get(me));
    #[cfg(feature = "oidc")]
    let r = r.merge(crate::oidc::routes());
    r
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    name: String,
    password: String,
}

fn no_store(resp: &mut Response) {
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

async fn login(
    State(st): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiJson(body): ApiJson<LoginBody>,
) -> Result<Response, ApiError> {
    let cfg = &st.config;
    if let Some(ip) = ip
        && let Some(wait) = st.logins.blocked(ip, cfg.login_ip_failures_per_min)
    {
        return Err(ApiError::RateLimited {
            retry_after_s: wait,
        });
    }
    if body.password.len() > MAX_PASSWORD_BYTES {
        return Err(ApiError::bad(
            "invalid_password",
            PasswordError::TooLong.to_string(),
        ));
    }
    let now = Timestamp::now();
    let account = match vigil_store::users::validate_name(&body.name) {
        Ok(()) => st.store.user(&body.name).await?,
        Err(_) => None,
    };
    if let Some(until) = account.as_ref().and_then(|a| a.locked_until)
        && until > now
    {
        let ms = (until.0 - now.0).max(0) as u64;
        return Err(ApiError::Locked {
            retry_after_s: ms.div_ceil(1000).max(1),
        });
    }
    let stored = account
        .as_ref()
        .filter(|a| !a.disabled)
        .and_then(|a| a.password_hash.clone());
    let ok = {
        let _permit = st
            .logins
            .hashing
            .acquire()
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        let guard = st.logins.clone();
        let password = body.password;
        tokio::task::spawn_blocking(move || match stored {
            Some(h) => verify_password(&password, &h),
            None => {
                // Same work as for a real account, then refuse.
                let _ = verify_password(&password, guard.dummy_hash());
                false
            }
        })
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
    };
    let Some(account) = account.filter(|_| ok) else {
        if let Some(ip) = ip {
            st.logins.failed(ip);
        }
        let policy = LockoutPolicy {
            max_failures: cfg.login_max_failures,
            lock_ms: cfg.login_lockout_s.saturating_mul(1000) as i64,
        };
        if let Some(until) = st.store.login_failed(&body.name, now, policy).await? {
            tracing::warn!(until = %until, "an account was locked after repeated failed logins");
        }
        return Err(ApiError::InvalidCredentials);
    };
    st.store.login_succeeded(&account.name).await?;
    start_session(&st, account.name, account.role, now).await
}

/// Creates a session for `user` and answers with its cookie and CSRF token.
pub(crate) async fn start_session(
    st: &AppState,
    user: String,
    role: String,
    now: Timestamp,
) -> Result<Response, ApiError> {
    let cfg = &st.config;
    let sid = hex::encode(rand::random::<[u8; 32]>());
    let csrf = hex::encode(rand::random::<[u8; 32]>());
    let max_s = cfg.session_max_s.max(1);
    let expires = now.saturating_add_millis(max_s.saturating_mul(1000) as i64);
    st.store
        .create_session(NewSession {
            id_hash: sha256(&sid),
            csrf_hash: sha256(&csrf),
            user: user.clone(),
            created: now,
            expires,
        })
        .await?;
    let cookie = format!(
        "{SESSION_COOKIE}={sid}; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age={max_s}"
    );
    let mut resp = Json(json!({
        "user": user,
        "role": role,
        "csrf_token": csrf,
        "expires": expires,
    }))
    .into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).map_err(|e| ApiError::Internal(e.to_string()))?,
    );
    no_store(&mut resp);
    Ok(resp)
}

async fn logout(
    State(st): State<AppState>,
    _user: crate::auth::User,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let sid = session_cookie(&headers).ok_or_else(|| {
        ApiError::bad(
            "no_session",
            "logout ends a browser session; revoke an API token with DELETE /api/v1/tokens/{id}",
        )
    })?;
    st.store.revoke_session(&sha256(sid)).await?;
    let mut resp = StatusCode::NO_CONTENT.into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "vigil_session=; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age=0",
        ),
    );
    Ok(resp)
}

async fn me(user: crate::auth::User) -> Json<Value> {
    Json(json!({ "user": user.name, "role": user.role }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_argon2id_phc_and_verify() {
        let h = hash_password("correct horse battery").expect("hash");
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(!h.contains("correct horse"));
        assert!(verify_password("correct horse battery", &h));
        assert!(!verify_password("correct horse batterx", &h));
        assert!(!verify_password("anything", "not a phc string"));
    }

    #[test]
    fn password_policy() {
        assert!(matches!(
            check_password_policy("ann", "short"),
            Err(PasswordError::TooShort)
        ));
        assert!(matches!(
            check_password_policy("ann.example.org", "Ann.Example.Org"),
            Err(PasswordError::SameAsName)
        ));
        assert!(matches!(
            check_password_policy("ann", &"x".repeat(2000)),
            Err(PasswordError::TooLong)
        ));
        assert!(check_password_policy("ann", "twelve chars").is_ok());
        assert_eq!(generate_password().len(), 32);
    }

    #[test]
    fn cookie_and_origin_parsing() {
        let mut h = HeaderMap::new();
        let sid = "ab".repeat(32);
        h.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("other=1; {SESSION_COOKIE}={sid}")).expect("value"),
        );
        assert_eq!(session_cookie(&h), Some(sid.as_str()));
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("vigil_session=short"),
        );
        assert_eq!(session_cookie(&h), None);
        assert_eq!(
            origin_authority("https://hub.example:8443"),
            Some("hub.example:8443")
        );
        assert_eq!(origin_authority("null"), None);
        assert_eq!(origin_authority("https://a/b"), None);
    }
}

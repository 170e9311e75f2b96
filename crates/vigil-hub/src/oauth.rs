//! OAuth2 client credentials (RFC 6749 section 4.4), both ways.
//!
//! - The hub's token endpoint, `POST /oauth2/token`, for service accounts (another system
//!   pushing FHIR to this hub): `grant_type=client_credentials` with the client id and secret
//!   in HTTP Basic or in the form body. It issues an ordinary API token (`vat_...`) with the
//!   client's role that expires after [`TOKEN_TTL_S`], so every route accepts it through the
//!   usual bearer check. Client secrets are stored only as Argon2id hashes (OWASP parameters:
//!   19 MiB, 2 passes, 1 lane); failed attempts are rate-limited per client id.
//! - [`TokenSource`]: the client side the EHR push uses to get (and cache) a token from a
//!   target's token endpoint.

use crate::auth::{API_PREFIX, hash_token, new_token};
use crate::{ApiError, AppState};
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, Version};
use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64ct::Encoding;
use serde_json::json;
use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};
use vigil_model::Timestamp;
use vigil_store::ApiToken;

/// Lifetime of an issued access token, in seconds.
pub const TOKEN_TTL_S: i64 = 900;
/// Prefix of client secrets.
pub const SECRET_PREFIX: &str = "vcs_";
/// Failed attempts per client id within [`FAILURE_WINDOW`] before further attempts are
/// refused without checking.
const MAX_FAILURES: u32 = 5;
const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// A well-formed Argon2id hash no secret is known to match, checked for unknown client ids.
const UNKNOWN_CLIENT_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$3jmzB/KNnjKcbmYXmSBRv5Mnd4dK7eFzeyTB4AeI2+4";
/// Largest token request body.
const MAX_FORM: usize = 8 * 1024;

/// OAuth2 failures of this module.
#[derive(Debug, thiserror::Error)]
pub enum OAuthError {
    #[error("cannot hash the client secret: {0}")]
    Hash(String),
    #[error("token endpoint unreachable: {0}")]
    Unreachable(String),
    #[error("token endpoint answered {status}: {error}")]
    Refused { status: u16, error: String },
    #[error("token endpoint answer has no usable access_token")]
    BadAnswer,
}

fn argon2() -> Result<Argon2<'static>, OAuthError> {
    let params = Params::new(19_456, 2, 1, None).map_err(|e| OAuthError::Hash(e.to_string()))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// A new random client secret (256 bits), shown once.
pub fn new_client_secret() -> String {
    new_token(SECRET_PREFIX)
}

/// The PHC string of the Argon2id hash of `secret`, with a random salt.
pub fn hash_secret(secret: &str) -> Result<String, OAuthError> {
    let salt: [u8; 16] = rand::random();
    argon2()?
        .hash_password_with_salt(secret.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| OAuthError::Hash(e.to_string()))
}

/// Whether `secret` matches the stored PHC string.
pub fn verify_secret(secret: &str, phc: &str) -> bool {
    argon2()
        .is_ok_and(|a| PasswordVerifier::<str>::verify_password(&a, secret.as_bytes(), phc).is_ok())
}

// ---------------------------------------------------------------------------------------------
// Form encoding (application/x-www-form-urlencoded)
// ---------------------------------------------------------------------------------------------

/// Percent-encodes everything but the unreserved characters.
pub fn form_encode(pairs: &[(&str, &str)]) -> String {
    let enc = |s: &str| {
        let mut out = String::with_capacity(s.len());
        for b in s.bytes() {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                out.push(b as char);
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
        out
    };
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Decodes one form component (`+` is a space); `None` for bad escapes or non-UTF-8.
pub fn form_decode_component(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// The pairs of a form body; `None` when it does not decode or repeats a parameter
/// (RFC 6749 section 3.2: parameters must not be included more than once).
fn parse_form(body: &str) -> Option<HashMap<String, String>> {
    let mut map = HashMap::new();
    for part in body.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        let (k, v) = (form_decode_component(k)?, form_decode_component(v)?);
        if map.insert(k, v).is_some() {
            return None;
        }
    }
    Some(map)
}

// ---------------------------------------------------------------------------------------------
// Token endpoint
// ---------------------------------------------------------------------------------------------

/// Failed attempts per client id: (count, start of the window). Per process: a restart
/// forgets them, which only ever helps a legitimate client.
static FAILURES: LazyLock<Mutex<HashMap<String, (u32, Instant)>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

fn failures() -> std::sync::MutexGuard<'static, HashMap<String, (u32, Instant)>> {
    FAILURES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Seconds until `client` may try again, when it is locked out.
fn locked_out(client: &str) -> Option<u64> {
    let mut f = failures();
    let (count, since) = *f.get(client)?;
    let elapsed = since.elapsed();
    if elapsed >= FAILURE_WINDOW {
        f.remove(client);
        return None;
    }
    (count >= MAX_FAILURES).then(|| (FAILURE_WINDOW - elapsed).as_secs().max(1))
}

fn record_failure(client: &str) {
    let mut f = failures();
    if f.len() > 10_000 {
        f.retain(|_, (_, since)| since.elapsed() < FAILURE_WINDOW);
    }
    let e = f.entry(client.to_owned()).or_insert((0, Instant::now()));
    if e.1.elapsed() >= FAILURE_WINDOW {
        *e = (0, Instant::now());
    }
    e.0 += 1;
}

/// An RFC 6749 section 5.2 error answer.
fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    let mut r = (
        status,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        json!({"error": error, "error_description": description}).to_string(),
    )
        .into_response();
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"vigil\""),
        );
    }
    r
}

/// Client id and secret from an `Authorization: Basic` header (each form-encoded, RFC 6749
/// section 2.3.1). `Some(Err)` when the header is there but malformed.
fn basic_credentials(headers: &HeaderMap) -> Option<Result<(String, String), ()>> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let parse = || -> Option<(String, String)> {
        let raw = base64ct::Base64::decode_vec(rest.trim()).ok()?;
        let text = String::from_utf8(raw).ok()?;
        let (id, secret) = text.split_once(':')?;
        Some((form_decode_component(id)?, form_decode_component(secret)?))
    };
    Some(parse().ok_or(()))
}

pub(crate) fn routes() -> Router<AppState> {
    Router::new().route("/oauth2/token", post(token))
}

async fn token(State(st): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let media = ct.split(';').next().map(str::trim);
    if media != Some("application/x-www-form-urlencoded") {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "the body must be application/x-www-form-urlencoded",
        );
    }
    let Ok(bytes) = axum::body::to_bytes(body, MAX_FORM).await else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "the request body is too large",
        );
    };
    let Some(form) = std::str::from_utf8(&bytes).ok().and_then(parse_form) else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "the body is not a valid form or repeats a parameter",
        );
    };
    match form.get("grant_type").map(String::as_str) {
        None => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "grant_type is required",
            );
        }
        Some("client_credentials") => {}
        Some(_) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "only grant_type=client_credentials is supported",
            );
        }
    }
    let (id, secret) = match basic_credentials(&headers) {
        Some(Ok(c)) => {
            if form.contains_key("client_secret") {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "use one client authentication method, not both",
                );
            }
            c
        }
        Some(Err(())) => {
            return oauth_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "malformed Basic credentials",
            );
        }
        None => match (form.get("client_id"), form.get("client_secret")) {
            (Some(i), Some(s)) => (i.clone(), s.clone()),
            _ => {
                return oauth_error(
                    StatusCode::UNAUTHORIZED,
                    "invalid_client",
                    "client authentication is required",
                );
            }
        },
    };
    if id.is_empty() || id.len() > 128 || secret.len() > 256 {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "client authentication failed",
        );
    }
    if let Some(wait) = locked_out(&id) {
        let mut r = oauth_error(
            StatusCode::TOO_MANY_REQUESTS,
            "invalid_client",
            "too many failed attempts for this client; try again later",
        );
        if let Ok(v) = HeaderValue::from_str(&wait.to_string()) {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return r;
    }
    let client = match st.store.oauth_client(&id).await {
        Ok(c) => c,
        Err(e) => return ApiError::from(e).into_response(),
    };
    // Verify even for an unknown client (against a fixed hash), so timing does not tell
    // which client ids exist.
    let phc = client
        .as_ref()
        .map_or(UNKNOWN_CLIENT_HASH.to_owned(), |c| c.secret_hash.clone());
    let ok = tokio::task::spawn_blocking(move || verify_secret(&secret, &phc))
        .await
        .unwrap_or(false);
    let Some(client) = client.filter(|_| ok) else {
        record_failure(&id);
        tracing::warn!(client = %id, "OAuth2 client authentication failed");
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "client authentication failed",
        );
    };
    failures().remove(&id);
    let token = new_token(API_PREFIX);
    let now = Timestamp::now();
    let stored = st
        .store
        .create_api_token(
            &hash_token(&token),
            ApiToken {
                name: format!("oauth2:{}", client.id),
                role: client.role,
                created: now,
                expires: Some(now.saturating_add_millis(TOKEN_TTL_S * 1000)),
                revoked: false,
            },
        )
        .await;
    if let Err(e) = stored {
        return ApiError::from(e).into_response();
    }
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
            (header::PRAGMA, "no-cache"),
        ],
        json!({"access_token": token, "token_type": "Bearer", "expires_in": TOKEN_TTL_S})
            .to_string(),
    )
        .into_response()
}

// ---------------------------------------------------------------------------------------------
// Client side
// ---------------------------------------------------------------------------------------------

/// How the client authenticates to a token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// HTTP Basic (`client_secret_basic`), the method every server must support.
    #[default]
    Basic,
    /// `client_id` and `client_secret` in the form body (`client_secret_post`).
    Body,
}

/// Gets access tokens with client credentials and caches each until shortly before it
/// expires.
pub struct TokenSource {
    http: reqwest::Client,
    token_url: String,
    client_id: String,
    secret: String,
    auth: ClientAuth,
    scope: Option<String>,
    cached: tokio::sync::Mutex<Option<(String, Instant)>>,
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSource")
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

impl TokenSource {
    pub fn new(
        http: reqwest::Client,
        token_url: String,
        client_id: String,
        secret: String,
        auth: ClientAuth,
        scope: Option<String>,
    ) -> Self {
        Self {
            http,
            token_url,
            client_id,
            secret,
            auth,
            scope,
            cached: tokio::sync::Mutex::new(None),
        }
    }

    /// A valid token: the cached one, or a new one.
    pub async fn token(&self) -> Result<String, OAuthError> {
        let mut cached = self.cached.lock().await;
        if let Some((t, until)) = cached.as_ref()
            && Instant::now() < *until
        {
            return Ok(t.clone());
        }
        let mut form = vec![("grant_type", "client_credentials")];
        if let Some(s) = &self.scope {
            form.push(("scope", s));
        }
        if self.auth == ClientAuth::Body {
            form.push(("client_id", &self.client_id));
            form.push(("client_secret", &self.secret));
        }
        let mut req = self
            .http
            .post(&self.token_url)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::ACCEPT, "application/json")
            .body(form_encode(&form));
        if self.auth == ClientAuth::Basic {
            let enc = |s: &str| form_encode(&[("", s)]).split_off(1);
            req = req.basic_auth(enc(&self.client_id), Some(enc(&self.secret)));
        }
        let resp = req
            .send()
            .await
            .map_err(|e| OAuthError::Unreachable(e.without_url().to_string()))?;
        let status = resp.status();
        let body: serde_json::Value = resp.json().await.unwrap_or(serde_json::Value::Null);
        if !status.is_success() {
            let error = body["error"]
                .as_str()
                .unwrap_or("no error code")
                .chars()
                .take(64)
                .collect();
            return Err(OAuthError::Refused {
                status: status.as_u16(),
                error,
            });
        }
        let token = body["access_token"]
            .as_str()
            .filter(|t| !t.is_empty())
            .ok_or(OAuthError::BadAnswer)?
            .to_owned();
        let ttl = body["expires_in"].as_u64().unwrap_or(300);
        // Renew a little early (a tenth of the lifetime, at most a minute).
        let margin = (ttl / 10).min(60);
        let until = Instant::now() + Duration::from_secs(ttl.saturating_sub(margin).max(1));
        *cached = Some((token.clone(), until));
        Ok(token)
    }

    /// Forgets the cached token (the target refused it).
    pub async fn invalidate(&self) {
        *self.cached.lock().await = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_verify_against_their_argon2id_hash_only() {
        let s = new_client_secret();
        let h = hash_secret(&s).expect("hash");
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(verify_secret(&s, &h));
        assert!(!verify_secret("vcs_wrong", &h));
        assert!(!verify_secret(&s, "not a phc string"));
        // The stand-in for unknown clients is a real hash (so checking it costs the same).
        assert!(argon2::password_hash::phc::PasswordHash::new(UNKNOWN_CLIENT_HASH).is_ok());
        assert!(!verify_secret(&s, UNKNOWN_CLIENT_HASH));
    }

    #[test]
    fn forms_round_trip_and_repeated_parameters_are_refused() {
        let body = form_encode(&[("grant_type", "client_credentials"), ("x", "a b&c=d%é")]);
        let m = parse_form(&body).expect("form");
        assert_eq!(m["grant_type"], "client_credentials");
        assert_eq!(m["x"], "a b&c=d%é");
        assert_eq!(parse_form("a=1+2").expect("form")["a"], "1 2");
        assert!(parse_form("a=1&a=2").is_none());
        assert!(parse_form("a=%zz").is_none());
    }
}

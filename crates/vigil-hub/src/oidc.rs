//! Sign-in through a hospital identity provider: OpenID Connect authorization code flow with
//! PKCE (S256), a nonce and a state bound to the browser by a short-lived cookie.
//!
//! `GET /api/v1/auth/oidc/login` redirects to the provider; the provider sends the browser
//! back to `GET /api/v1/auth/oidc/callback`, where the hub redeems the code at the token
//! endpoint, checks the ID token (RS256 signature against the provider's JWKS, `iss`, `aud`,
//! `exp`, `nonce`), maps the configured claim to a Vigil role and starts a session exactly as
//! a password login does. The provider's endpoints come from its discovery document.

use crate::routes::ApiQuery;
use crate::session::{OidcConfig, sha256, start_session};
use crate::{ApiError, AppState};
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::Value;
use sha2::Digest;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;
use vigil_model::Timestamp;
use vigil_store::users::ROLES;

/// Cookie binding a sign-in in progress to the browser that started it.
const FLOW_COOKIE: &str = "vigil_oidc";
/// How long a sign-in may take at the provider.
const FLOW_TTL: Duration = Duration::from_secs(600);
/// Sign-ins in progress kept at most (older ones are dropped first).
const MAX_PENDING: usize = 10_000;

/// The provider's endpoints, from its discovery document.
#[derive(Debug, Clone, Deserialize)]
struct Discovery {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
}

#[derive(Debug)]
struct Pending {
    nonce: String,
    verifier: String,
    started: Instant,
}

/// Discovery, keys and sign-ins in progress.
#[derive(Debug)]
pub(crate) struct OidcState {
    http: reqwest::Client,
    discovery: tokio::sync::OnceCell<Discovery>,
    jwks: tokio::sync::RwLock<Option<JwkSet>>,
    pending: Mutex<HashMap<String, Pending>>,
}

impl Default for OidcState {
    fn default() -> Self {
        Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap_or_default(),
            discovery: tokio::sync::OnceCell::new(),
            jwks: tokio::sync::RwLock::new(None),
            pending: Mutex::new(HashMap::new()),
        }
    }
}

fn provider_error(what: &str, e: impl std::fmt::Display) -> ApiError {
    ApiError::Internal(format!("identity provider: {what}: {e}"))
}

impl OidcState {
    async fn discovery(&self, cfg: &OidcConfig) -> Result<&Discovery, ApiError> {
        self.discovery
            .get_or_try_init(|| async {
                let url = format!(
                    "{}/.well-known/openid-configuration",
                    cfg.issuer.trim_end_matches('/')
                );
                let d: Discovery = self
                    .http
                    .get(&url)
                    .send()
                    .await
                    .and_then(|r| r.error_for_status())
                    .map_err(|e| provider_error("discovery", e))?
                    .json()
                    .await
                    .map_err(|e| provider_error("discovery document", e))?;
                if d.issuer != cfg.issuer {
                    return Err(provider_error(
                        "discovery",
                        format!(
                            "issuer {:?} is not the configured {:?}",
                            d.issuer, cfg.issuer
                        ),
                    ));
                }
                Ok(d)
            })
            .await
    }

    /// The provider's key `kid`, fetching the key set again once when it is not known.
    async fn key(&self, d: &Discovery, kid: &str) -> Result<DecodingKey, ApiError> {
        if let Some(set) = self.jwks.read().await.as_ref()
            && let Some(k) = set.find(kid)
        {
            return DecodingKey::from_jwk(k).map_err(|e| provider_error("JWKS key", e));
        }
        let set: JwkSet = self
            .http
            .get(&d.jwks_uri)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| provider_error("JWKS", e))?
            .json()
            .await
            .map_err(|e| provider_error("JWKS document", e))?;
        let key = set
            .find(kid)
            .map(DecodingKey::from_jwk)
            .transpose()
            .map_err(|e| provider_error("JWKS key", e))?;
        *self.jwks.write().await = Some(set);
        key.ok_or(ApiError::InvalidCredentials)
    }

    fn remember(&self, state: String, p: Pending) {
        if let Ok(mut m) = self.pending.lock() {
            m.retain(|_, v| v.started.elapsed() < FLOW_TTL);
            if m.len() >= MAX_PENDING
                && let Some(oldest) = m
                    .iter()
                    .min_by_key(|(_, v)| v.started)
                    .map(|(k, _)| k.clone())
            {
                m.remove(&oldest);
            }
            m.insert(state, p);
        }
    }

    fn take(&self, state: &str) -> Option<Pending> {
        let p = self.pending.lock().ok()?.remove(state)?;
        (p.started.elapsed() < FLOW_TTL).then_some(p)
    }
}

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/auth/oidc/login", get(start))
        .route("/api/v1/auth/oidc/callback", get(callback))
}

fn config(st: &AppState) -> Result<&OidcConfig, ApiError> {
    st.config
        .oidc
        .as_ref()
        .ok_or_else(|| ApiError::NotFound("OIDC sign-in (not configured)".into()))
}

fn pkce_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()))
}

async fn start(State(st): State<AppState>) -> Result<Response, ApiError> {
    let cfg = config(&st)?;
    let oidc = &st.logins.oidc;
    let d = oidc.discovery(cfg).await?;
    let state = hex::encode(rand::random::<[u8; 32]>());
    let nonce = hex::encode(rand::random::<[u8; 32]>());
    let verifier = hex::encode(rand::random::<[u8; 32]>());
    let query = serde_urlencoded::to_string([
        ("response_type", "code"),
        ("client_id", cfg.client_id.as_str()),
        ("redirect_uri", cfg.redirect_uri.as_str()),
        ("scope", "openid profile"),
        ("state", state.as_str()),
        ("nonce", nonce.as_str()),
        ("code_challenge", pkce_challenge(&verifier).as_str()),
        ("code_challenge_method", "S256"),
    ])
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    let sep = if d.authorization_endpoint.contains('?') {
        '&'
    } else {
        '?'
    };
    let location = format!("{}{sep}{query}", d.authorization_endpoint);
    // Lax, not Strict: the provider sends the browser back with a cross-site navigation.
    let cookie = format!(
        "{FLOW_COOKIE}={state}; HttpOnly; Secure; SameSite=Lax; Path=/api/v1/auth/oidc; Max-Age={}",
        FLOW_TTL.as_secs()
    );
    oidc.remember(
        state,
        Pending {
            nonce,
            verifier,
            started: Instant::now(),
        },
    );
    let mut resp = StatusCode::SEE_OTHER.into_response();
    let h = resp.headers_mut();
    h.insert(
        header::LOCATION,
        HeaderValue::from_str(&location).map_err(|e| ApiError::Internal(e.to_string()))?,
    );
    h.insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).map_err(|e| ApiError::Internal(e.to_string()))?,
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

#[derive(Debug, Deserialize)]
struct CallbackParams {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

fn flow_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == FLOW_COOKIE)
        .map(|(_, v)| v.trim())
}

#[derive(Debug, Deserialize)]
struct TokenResponse {
    id_token: String,
}

/// The Vigil role the configured claim grants: the first value that maps to one.
fn role_from(claims: &Value, cfg: &OidcConfig) -> Option<String> {
    let values: Vec<&str> = match &claims[cfg.role_claim.as_str()] {
        Value::String(s) => vec![s.as_str()],
        Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    values.into_iter().find_map(|v| {
        let role = if cfg.roles.is_empty() {
            Some(v)
        } else {
            cfg.roles.get(v).map(String::as_str)
        }?;
        ROLES.contains(&role).then(|| role.to_owned())
    })
}

async fn callback(
    State(st): State<AppState>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<CallbackParams>,
) -> Result<Response, ApiError> {
    let cfg = config(&st)?;
    let oidc = &st.logins.oidc;
    if let Some(e) = q.error {
        let detail = q.error_description.unwrap_or_default();
        tracing::info!(error = %e, "identity provider refused a sign-in");
        return Err(ApiError::bad(
            "oidc_refused",
            format!("the identity provider answered {e}: {detail}"),
        ));
    }
    let (Some(code), Some(state)) = (q.code, q.state) else {
        return Err(ApiError::bad(
            "invalid_callback",
            "the callback needs code and state",
        ));
    };
    let bound = flow_cookie(&headers)
        .is_some_and(|c| bool::from(sha256(c).as_slice().ct_eq(&sha256(&state))));
    let pending = if bound { oidc.take(&state) } else { None };
    let Some(pending) = pending else {
        return Err(ApiError::bad(
            "invalid_state",
            "this sign-in was not started by this browser, was already used, or took too long",
        ));
    };
    let d = oidc.discovery(cfg).await?;
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", cfg.redirect_uri.as_str()),
        ("client_id", cfg.client_id.as_str()),
        ("code_verifier", pending.verifier.as_str()),
    ];
    if let Some(s) = &cfg.client_secret {
        form.push(("client_secret", s.as_str()));
    }
    let body = serde_urlencoded::to_string(&form).map_err(|e| ApiError::Internal(e.to_string()))?;
    let resp = oidc
        .http
        .post(&d.token_endpoint)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .map_err(|e| provider_error("token endpoint", e))?;
    if !resp.status().is_success() {
        tracing::info!(status = %resp.status(), "identity provider refused the code");
        return Err(ApiError::InvalidCredentials);
    }
    let tokens: TokenResponse = resp
        .json()
        .await
        .map_err(|e| provider_error("token response", e))?;
    let header =
        jsonwebtoken::decode_header(&tokens.id_token).map_err(|_| ApiError::InvalidCredentials)?;
    if header.alg != Algorithm::RS256 {
        return Err(ApiError::InvalidCredentials);
    }
    let kid = header.kid.unwrap_or_default();
    let key = oidc.key(d, &kid).await?;
    let mut v = Validation::new(Algorithm::RS256);
    v.set_issuer(&[&d.issuer]);
    v.set_audience(&[&cfg.client_id]);
    v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    let claims = jsonwebtoken::decode::<Value>(&tokens.id_token, &key, &v)
        .map_err(|e| {
            tracing::info!(error = %e, "an ID token was refused");
            ApiError::InvalidCredentials
        })?
        .claims;
    let nonce_ok = claims["nonce"]
        .as_str()
        .is_some_and(|n| bool::from(sha256(n).as_slice().ct_eq(&sha256(&pending.nonce))));
    if !nonce_ok {
        tracing::info!("an ID token with a wrong nonce was refused");
        return Err(ApiError::InvalidCredentials);
    }
    let name = claims[cfg.name_claim.as_str()]
        .as_str()
        .or_else(|| claims["sub"].as_str())
        .unwrap_or_default()
        .to_owned();
    vigil_store::users::validate_name(&name).map_err(|_| ApiError::Forbidden)?;
    let role = role_from(&claims, cfg).ok_or(ApiError::Forbidden)?;
    let now = Timestamp::now();
    let account = st.store.upsert_external_user(&name, &role, now).await?;
    if account.disabled {
        return Err(ApiError::InvalidCredentials);
    }
    let mut resp = start_session(&st, account.name, account.role, now).await?;
    resp.headers_mut().append(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "vigil_oidc=; HttpOnly; Secure; SameSite=Lax; Path=/api/v1/auth/oidc; Max-Age=0",
        ),
    );

    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(roles: &[(&str, &str)]) -> OidcConfig {
        OidcConfig {
            issuer: "https://idp.example".into(),
            client_id: "vigil".into(),
            client_secret: None,
            redirect_uri: "https://hub.example/api/v1/auth/oidc/callback".into(),
            role_claim: "groups".into(),
            roles: roles
                .iter()
                .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
                .collect(),
            name_claim: "preferred_username".into(),
        }
    }

    #[test]
    fn roles_come_from_the_mapped_claim() {
        let c = cfg(&[("ward-nurses", "nurse"), ("it", "root")]);
        let claims = serde_json::json!({"groups": ["staff", "it", "ward-nurses"]});
        assert_eq!(role_from(&claims, &c).as_deref(), Some("nurse"));
        let claims = serde_json::json!({"groups": "staff"});
        assert_eq!(role_from(&claims, &c), None);
        let direct = cfg(&[]);
        let claims = serde_json::json!({"groups": "clinician"});
        assert_eq!(role_from(&claims, &direct).as_deref(), Some("clinician"));
        let claims = serde_json::json!({"groups": "superuser"});
        assert_eq!(role_from(&claims, &direct), None);
    }

    #[test]
    fn pkce_s256_matches_rfc_7636() {
        // RFC 7636 appendix B.
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }
}

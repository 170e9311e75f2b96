//! Credentials. API tokens are 32 random bytes shown once; the hub stores only their
//! SHA-256 (high-entropy tokens need no slow hash: there is nothing to brute-force). People
//! signed in from a browser present a session cookie instead (see [`crate::session`]).

use crate::{ApiError, AppState};
use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};
use vigil_model::Timestamp;

/// Prefix of API tokens for people and services.
pub const API_PREFIX: &str = "vat_";
/// Prefix of gateway tokens.
pub const GATEWAY_PREFIX: &str = "vgt_";

/// A new random token with `prefix`.
pub fn new_token(prefix: &str) -> String {
    let bytes: [u8; 32] = rand::random();
    format!("{prefix}{}", hex::encode(bytes))
}

/// The stored form of a token.
pub fn hash_token(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    let value = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or(ApiError::Unauthorized)?;
    let (scheme, token) = value.split_once(' ').ok_or(ApiError::Unauthorized)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() || token.len() > 256 {
        return Err(ApiError::Unauthorized);
    }
    Ok(token.trim())
}

/// A person or service authenticated by an API token.
#[derive(Debug, Clone)]
pub struct User {
    pub name: String,
    pub role: String,
}

impl FromRequestParts<AppState> for User {
    type Rejection = ApiError;
    /// A bearer API token when an `Authorization` header is present, else a session cookie
    /// (see [`crate::session`]: cookie-authenticated unsafe requests must pass the CSRF check).
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if !parts.headers.contains_key(header::AUTHORIZATION)
            && let Some(sid) = crate::session::session_cookie(&parts.headers)
        {
            let (name, role) = crate::session::authenticate(parts, state, sid).await?;
            return Ok(User { name, role });
        }
        let token = bearer(parts)?;
        if !token.starts_with(API_PREFIX) {
            return Err(ApiError::Unauthorized);
        }
        let t = state
            .store
            .api_token(&hash_token(token))
            .await?
            .ok_or(ApiError::Unauthorized)?;
        if t.revoked || t.expires.is_some_and(|e| e <= Timestamp::now()) {
            return Err(ApiError::Unauthorized);
        }
        // Tokens of a disabled account stop working (disabling also revokes them).
        if state.store.user(&t.name).await?.is_some_and(|u| u.disabled) {
            return Err(ApiError::Unauthorized);
        }
        Ok(User {
            name: t.name,
            role: t.role,
        })
    }
}

impl User {
    /// Administrative writes (enrolment, gateways) need the admin or integration role.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        match self.role.as_str() {
            "admin" | "integration" => Ok(()),
            _ => Err(ApiError::Forbidden),
        }
    }
}

impl User {
    /// Acknowledging and resolving alerts needs a clinical role (or admin).
    pub fn require_clinical(&self) -> Result<(), ApiError> {
        match self.role.as_str() {
            "admin" | "clinician" | "nurse" => Ok(()),
            _ => Err(ApiError::Forbidden),
        }
    }
}

/// A gateway authenticated by its own token.
#[derive(Debug, Clone)]
pub struct Gateway {
    pub id: String,
}

impl FromRequestParts<AppState> for Gateway {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(parts)?;
        if !token.starts_with(GATEWAY_PREFIX) {
            return Err(ApiError::Unauthorized);
        }
        let g = state
            .store
            .gateway_by_token(&hash_token(token))
            .await?
            .ok_or(ApiError::Unauthorized)?;
        Ok(Gateway { id: g.id })
    }
}

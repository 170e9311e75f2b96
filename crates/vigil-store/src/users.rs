//! People who sign in, their browser sessions and the metadata of API tokens.
//!
//! The store keeps only derived secrets: Argon2id PHC strings for passwords and SHA-256
//! digests for session ids, CSRF tokens and API tokens. Lockout bookkeeping (failed attempts,
//! lock period) is updated in one transaction per attempt so concurrent guesses cannot skip it.

use crate::StoreError;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use vigil_model::Timestamp;

/// The roles a person or service may hold.
pub const ROLES: [&str; 6] = [
    "admin",
    "clinician",
    "nurse",
    "caregiver",
    "patient",
    "integration",
];

/// Checks that `role` is one of [`ROLES`].
pub fn validate_role(role: &str) -> Result<(), StoreError> {
    if ROLES.contains(&role) {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!(
            "unknown role {role:?}; one of {}",
            ROLES.join(", ")
        )))
    }
}

/// Checks a user or token name: 1 to 64 of `A-Z a-z 0-9 . _ @ -`.
pub fn validate_name(name: &str) -> Result<(), StoreError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'@' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!(
            "name {name:?} must be 1 to 64 letters, digits or . _ @ -"
        )))
    }
}

/// A person or service account.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct UserAccount {
    pub name: String,
    pub role: String,
    /// Argon2id PHC string; none for accounts that sign in only through an identity provider.
    #[serde(skip_serializing)]
    pub password_hash: Option<String>,
    pub disabled: bool,
    /// Failed logins since the last success or lockout.
    pub failed_attempts: u32,
    pub locked_until: Option<Timestamp>,
    /// Lockouts since the last successful login (the lock period doubles with each).
    pub lockouts: u32,
    pub created: Timestamp,
}

/// How failed logins lock an account.
#[derive(Debug, Clone, Copy)]
pub struct LockoutPolicy {
    /// Failures that lock the account.
    pub max_failures: u32,
    /// First lock period, doubled per repeated lockout (at most a day), ms.
    pub lock_ms: i64,
}

/// A browser session as stored: only digests of its id and CSRF token.
#[derive(Debug, Clone, PartialEq)]
pub struct NewSession {
    pub id_hash: Vec<u8>,
    pub csrf_hash: Vec<u8>,
    pub user: String,
    pub created: Timestamp,
    /// Absolute expiry.
    pub expires: Timestamp,
}

/// A stored session with its user's current role and state.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionInfo {
    pub id: i64,
    pub user: String,
    pub role: String,
    pub user_disabled: bool,
    pub csrf_hash: Vec<u8>,
    pub created: Timestamp,
    pub last_seen: Timestamp,
    pub expires: Timestamp,
    pub revoked: bool,
}

/// An API token's metadata (never the token).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TokenInfo {
    /// `tok_` and the first 8 bytes of the token's SHA-256, in hex.
    pub id: String,
    pub name: String,
    pub role: String,
    pub created: Timestamp,
    pub expires: Option<Timestamp>,
    pub revoked: bool,
}

/// The public id of a token from its stored digest.
pub fn token_id(token_hash: &[u8]) -> String {
    let head = &token_hash[..token_hash.len().min(8)];
    let mut s = String::from("tok_");
    for b in head {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Storage of users, sessions and token metadata.
#[async_trait]
pub trait UserStore {
    /// `Conflict` when the name is taken, `Invalid` for a bad name or role.
    async fn create_user(&self, user: UserAccount) -> Result<(), StoreError>;
    async fn user(&self, name: &str) -> Result<Option<UserAccount>, StoreError>;
    /// An account vouched for by an identity provider: created without a password when
    /// absent, its role set to `role` when present. Returns the account as stored.
    async fn upsert_external_user(
        &self,
        name: &str,
        role: &str,
        now: Timestamp,
    ) -> Result<UserAccount, StoreError>;
    /// Every account, by name.
    async fn users(&self) -> Result<Vec<UserAccount>, StoreError>;
    /// Disables or enables an account. Disabling revokes all its sessions and API tokens.
    /// `NotFound` for an unknown name.
    async fn set_user_disabled(&self, name: &str, disabled: bool) -> Result<(), StoreError>;
    /// Counts a failed login of an existing account; when it reaches the policy's limit the
    /// account is locked and the counter restarts. Returns the lock's end when locked now.
    async fn login_failed(
        &self,
        name: &str,
        now: Timestamp,
        policy: LockoutPolicy,
    ) -> Result<Option<Timestamp>, StoreError>;
    /// Clears the failure counter and lockout history after a successful login.
    async fn login_succeeded(&self, name: &str) -> Result<(), StoreError>;

    /// Stores a session; returns its row id.
    async fn create_session(&self, session: NewSession) -> Result<i64, StoreError>;
    /// The session with this id digest (revoked or expired ones too: the caller decides).
    async fn session(&self, id_hash: &[u8]) -> Result<Option<SessionInfo>, StoreError>;
    /// Records activity on a session (idle expiry counts from here).
    async fn touch_session(&self, id: i64, now: Timestamp) -> Result<(), StoreError>;
    /// Revokes one session; false when no live session has this digest.
    async fn revoke_session(&self, id_hash: &[u8]) -> Result<bool, StoreError>;
    /// Revokes every session of `user`; returns how many were live.
    async fn revoke_user_sessions(&self, user: &str) -> Result<u64, StoreError>;

    /// Metadata of every API token, newest first.
    async fn api_tokens(&self) -> Result<Vec<TokenInfo>, StoreError>;
    /// Revokes the API token with this public id. `NotFound` when there is none.
    async fn revoke_api_token(&self, id: &str) -> Result<(), StoreError>;
}

//! Administration of people and credentials: user accounts, API tokens and sessions.
//! Every route here needs the `admin` role itself (the `integration` service role may not
//! create credentials).

use crate::auth::{self, User};
use crate::routes::{ApiJson, ApiQuery};
use crate::session::{self, check_password_policy, generate_password, hash_password};
use crate::{ApiError, AppState};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use vigil_model::Timestamp;
use vigil_store::users::{validate_name, validate_role};
use vigil_store::{ApiToken, UserAccount};

/// Longest API token lifetime: ten years.
const MAX_TOKEN_LIFETIME_S: u64 = 10 * 366 * 86_400;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/users", get(list_users).post(create_user))
        .route("/api/v1/users/{name}/disable", post(disable_user))
        .route("/api/v1/users/{name}/enable", post(enable_user))
        .route("/api/v1/sessions", delete(revoke_sessions))
        .route("/api/v1/tokens", get(list_tokens).post(create_token))
        .route("/api/v1/tokens/{id}", delete(revoke_token))
        .merge(session::routes())
}

fn require_admin_role(u: &User) -> Result<(), ApiError> {
    if u.role == "admin" {
        Ok(())
    } else {
        Err(ApiError::Forbidden)
    }
}

fn user_view(a: &UserAccount) -> Value {
    json!({
        "name": a.name,
        "role": a.role,
        "disabled": a.disabled,
        "locked_until": a.locked_until,
        "created": a.created,
        "password": a.password_hash.is_some(),
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    name: String,
    role: String,
    /// None: the hub generates one and returns it once.
    password: Option<String>,
}

async fn create_user(
    State(st): State<AppState>,
    u: User,
    ApiJson(n): ApiJson<NewUser>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    require_admin_role(&u)?;
    validate_name(&n.name).map_err(|e| ApiError::bad("invalid_name", e.to_string()))?;
    validate_role(&n.role).map_err(|e| ApiError::bad("invalid_role", e.to_string()))?;
    let generated = n.password.is_none();
    let password = n.password.unwrap_or_else(generate_password);
    check_password_policy(&n.name, &password)
        .map_err(|e| ApiError::bad("weak_password", e.to_string()))?;
    if st.store.user(&n.name).await?.is_some() {
        return Err(ApiError::Conflict(format!("user {} exists", n.name)));
    }
    let pw = password.clone();
    let hash = tokio::task::spawn_blocking(move || hash_password(&pw))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let account = UserAccount {
        name: n.name,
        role: n.role,
        password_hash: Some(hash),
        disabled: false,
        failed_attempts: 0,
        locked_until: None,
        lockouts: 0,
        created: Timestamp::now(),
    };
    st.store.create_user(account.clone()).await?;
    let mut v = user_view(&account);
    if generated {
        v["generated_password"] = json!(password);
    }
    Ok((StatusCode::CREATED, Json(v)))
}

async fn list_users(State(st): State<AppState>, u: User) -> Result<Json<Value>, ApiError> {
    require_admin_role(&u)?;
    let list = st.store.users().await?;
    Ok(Json(json!({
        "count": list.len(),
        "users": list.iter().map(user_view).collect::<Vec<_>>(),
    })))
}

async fn set_disabled(st: &AppState, u: &User, name: &str, disabled: bool) -> Result<(), ApiError> {
    require_admin_role(u)?;
    if disabled && name == u.name {
        return Err(ApiError::Conflict(
            "an administrator cannot disable their own account".into(),
        ));
    }
    st.store.set_user_disabled(name, disabled).await?;
    Ok(())
}

async fn disable_user(
    State(st): State<AppState>,
    u: User,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    set_disabled(&st, &u, &name, true).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn enable_user(
    State(st): State<AppState>,
    u: User,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    set_disabled(&st, &u, &name, false).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SessionParams {
    user: String,
}

async fn revoke_sessions(
    State(st): State<AppState>,
    u: User,
    ApiQuery(q): ApiQuery<SessionParams>,
) -> Result<Json<Value>, ApiError> {
    require_admin_role(&u)?;
    if st.store.user(&q.user).await?.is_none() {
        return Err(ApiError::NotFound(format!("user {}", q.user)));
    }
    let n = st.store.revoke_user_sessions(&q.user).await?;
    Ok(Json(json!({ "user": q.user, "revoked": n })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewToken {
    name: String,
    role: String,
    /// None: the token does not expire.
    expires_in_s: Option<u64>,
}

async fn create_token(
    State(st): State<AppState>,
    u: User,
    ApiJson(n): ApiJson<NewToken>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    require_admin_role(&u)?;
    validate_name(&n.name).map_err(|e| ApiError::bad("invalid_name", e.to_string()))?;
    validate_role(&n.role).map_err(|e| ApiError::bad("invalid_role", e.to_string()))?;
    if let Some(s) = n.expires_in_s
        && (s == 0 || s > MAX_TOKEN_LIFETIME_S)
    {
        return Err(ApiError::bad(
            "invalid_expiry",
            format!("expires_in_s must be between 1 and {MAX_TOKEN_LIFETIME_S}"),
        ));
    }
    if st.store.user(&n.name).await?.is_some_and(|a| a.disabled) {
        return Err(ApiError::Conflict(format!("user {} is disabled", n.name)));
    }
    let token = auth::new_token(auth::API_PREFIX);
    let hash = auth::hash_token(&token);
    let now = Timestamp::now();
    let expires = n
        .expires_in_s
        .map(|s| now.saturating_add_millis(s.saturating_mul(1000) as i64));
    st.store
        .create_api_token(
            &hash,
            ApiToken {
                name: n.name.clone(),
                role: n.role.clone(),
                created: now,
                expires,
                revoked: false,
            },
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "id": vigil_store::token_id(&hash),
            "name": n.name,
            "role": n.role,
            "created": now,
            "expires": expires,
            "token": token,
            "note": "the token is shown once; the hub keeps only its hash",
        })),
    ))
}

async fn list_tokens(State(st): State<AppState>, u: User) -> Result<Json<Value>, ApiError> {
    require_admin_role(&u)?;
    let list = st.store.api_tokens().await?;
    Ok(Json(json!({ "count": list.len(), "tokens": list })))
}

async fn revoke_token(
    State(st): State<AppState>,
    u: User,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    require_admin_role(&u)?;
    st.store.revoke_api_token(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

//! The one error table of the HTTP API: every error has a stable code, an HTTP status and a
//! title, and renders as an RFC 9457 problem document (`application/problem+json`).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use vigil_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("a valid bearer token is required")]
    Unauthorized,
    #[error("this credential may not do that")]
    Forbidden,
    #[error("{0} not found")]
    NotFound(String),
    #[error("{detail}")]
    BadRequest { code: &'static str, detail: String },
    #[error("request body exceeds {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("content type must be {expected}")]
    UnsupportedMediaType { expected: &'static str },
    #[error("{0}")]
    Conflict(String),
    #[error("the hub holds this gateway's data up to sequence {cursor}; resend from there")]
    CursorAhead { cursor: u64 },
    #[error("internal error")]
    Internal(String),
    #[error("unknown user name or wrong password")]
    InvalidCredentials,
    #[error("too many failed logins; the account is locked for {retry_after_s} s")]
    Locked { retry_after_s: u64 },
    #[error("too many failed logins from this address; retry in {retry_after_s} s")]
    RateLimited { retry_after_s: u64 },
    #[error("{0}")]
    Csrf(&'static str),
}

impl ApiError {
    pub fn bad(code: &'static str, detail: impl Into<String>) -> Self {
        Self::BadRequest {
            code,
            detail: detail.into(),
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::NotFound(_) => "not_found",
            Self::BadRequest { code, .. } => code,
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::UnsupportedMediaType { .. } => "unsupported_media_type",
            Self::Conflict(_) => "conflict",
            Self::CursorAhead { .. } => "cursor_ahead",
            Self::Internal(_) => "internal",
            Self::InvalidCredentials => "invalid_credentials",
            Self::Locked { .. } => "locked",
            Self::RateLimited { .. } => "rate_limited",
            Self::Csrf(_) => "csrf",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Conflict(_) | Self::CursorAhead { .. } => StatusCode::CONFLICT,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::InvalidCredentials => StatusCode::UNAUTHORIZED,
            Self::Locked { .. } => StatusCode::LOCKED,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Csrf(_) => StatusCode::FORBIDDEN,
        }
    }

    fn title(&self) -> &'static str {
        match self {
            Self::Unauthorized => "Unauthorized",
            Self::Forbidden => "Forbidden",
            Self::NotFound(_) => "Not found",
            Self::BadRequest { .. } => "Bad request",
            Self::PayloadTooLarge { .. } => "Payload too large",
            Self::UnsupportedMediaType { .. } => "Unsupported media type",
            Self::Conflict(_) => "Conflict",
            Self::CursorAhead { .. } => "Gateway cursor ahead of hub",
            Self::Internal(_) => "Internal error",
            Self::InvalidCredentials => "Invalid credentials",
            Self::Locked { .. } => "Account locked",
            Self::RateLimited { .. } => "Too many requests",
            Self::Csrf(_) => "Cross-site request refused",
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => Self::NotFound(what),
            StoreError::Conflict(what) => Self::Conflict(what),
            StoreError::Invalid(what) => Self::bad("invalid", what),
            StoreError::CursorAhead { cursor, .. } => Self::CursorAhead { cursor },
            other => Self::Internal(other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let detail = match &self {
            // Internal details go to the log, never to the client.
            Self::Internal(msg) => {
                tracing::error!(error = %msg, "internal error");
                "the hub could not complete the request; it has been logged".to_owned()
            }
            other => other.to_string(),
        };
        let mut body = json!({
            "type": format!("urn:vigil:problem:{}", self.code()),
            "title": self.title(),
            "status": status.as_u16(),
            "detail": detail,
            "code": self.code(),
        });
        if let Self::CursorAhead { cursor } = self {
            body["cursor"] = json!(cursor);
        }
        let mut resp = (status, body.to_string()).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Self::Locked { retry_after_s } | Self::RateLimited { retry_after_s } = self {
            body["retry_after_s"] = json!(retry_after_s);
        }
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Self::Locked { retry_after_s } | Self::RateLimited { retry_after_s } = self {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_s));
        }
        resp
    }
}

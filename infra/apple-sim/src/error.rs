//! Error answers: Apple's short plain-text tokens, and JSON errors for the control API.

use std::borrow::Cow;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// An error as Apple's device assignment service answers it: a status and a short token such
/// as `EXPIRED_CURSOR` as the whole body. Apple's exact framing is not documented (depsim
/// JSON-quotes it), so clients should match the token by substring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppleError {
    pub status: StatusCode,
    pub token: Cow<'static, str>,
}

impl AppleError {
    pub const fn new(status: StatusCode, token: &'static str) -> Self {
        Self {
            status,
            token: Cow::Borrowed(token),
        }
    }

    pub const fn bad_request(token: &'static str) -> Self {
        Self::new(StatusCode::BAD_REQUEST, token)
    }

    pub const fn unauthorized() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "UNAUTHORIZED")
    }

    pub const fn forbidden() -> Self {
        Self::new(StatusCode::FORBIDDEN, "FORBIDDEN")
    }

    pub const fn terms_not_signed() -> Self {
        Self::new(StatusCode::FORBIDDEN, "T_C_NOT_SIGNED")
    }

    pub const fn malformed() -> Self {
        Self::bad_request("MALFORMED_REQUEST_BODY")
    }

    pub const fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "NOT_FOUND")
    }
}

impl IntoResponse for AppleError {
    fn into_response(self) -> Response {
        plain_text(self.status, self.token.into_owned())
    }
}

/// A plain-text answer in the charset spelling Apple's clients send.
pub fn plain_text(status: StatusCode, body: String) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain;charset=UTF8"),
        )],
        body,
    )
        .into_response()
}

/// A refused control (`/_sim/*`) request: `{"error": "..."}`.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl IntoResponse for ControlError {
    fn into_response(self) -> Response {
        let status = match &self {
            ControlError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ControlError::NotFound(_) => StatusCode::NOT_FOUND,
            ControlError::Conflict(_) => StatusCode::CONFLICT,
            ControlError::Unexpected(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if let ControlError::Unexpected(error) = &self {
            tracing::error!(error = format!("{error:#}"), "control request failed");
        }
        (
            status,
            axum::Json(serde_json::json!({ "error": self.to_string() })),
        )
            .into_response()
    }
}

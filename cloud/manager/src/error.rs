//! API errors: a stable [`ErrorCode`] and a human message. The HTTP status of each code
//! is decided in one place, [`ErrorCode::status`]; the body is
//! `{"error":{"code":..,"message":..}}`.
//!
//! Internal failures are logged with their cause chain and answered with a generic
//! message: nothing from the database or the crypto layer reaches a client.

use std::borrow::Cow;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use outband_api::{ErrorBody, ErrorDetail};

use crate::keys::KeyError;
use crate::password::PasswordError;
use crate::store::StoreError;
use crate::users::CreateUserError;

/// Stable error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// The request is malformed (bad JSON, field too long, ...).
    InvalidRequest,
    /// A site label is empty, too long, has control characters or surrounding spaces.
    InvalidSite,
    /// Wrong email or password (never says which).
    InvalidCredentials,
    /// Too many failed logins for this account or address.
    TooManyAttempts,
    /// No bearer token.
    Unauthenticated,
    /// The bearer token is invalid, expired or revoked.
    InvalidToken,
    /// The refresh token is unknown, used, expired or revoked.
    InvalidRefreshToken,
    /// Authenticated but not allowed.
    Forbidden,
    /// The current password given to a password change is wrong.
    WrongPassword,
    /// The account has a one-time password: change it first.
    PasswordChangeRequired,
    /// No such route or object (also: an object of another tenant).
    NotFound,
    /// The object exists already (unique name or email).
    Conflict,
    /// The tenant still has users or servers.
    TenantNotEmpty,
    /// Servers are still bound to the gateway.
    GatewayInUse,
    /// Route exists, method does not.
    MethodNotAllowed,
    /// Gateway credentials over plain HTTP on a non-loopback listener.
    InsecureTransport,
    /// Body over the limit.
    PayloadTooLarge,
    /// Overloaded (password hashing saturated); retry later.
    Busy,
    /// Our fault.
    Internal,
}

impl ErrorCode {
    /// The stable string.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::InvalidSite => "invalid_site",
            ErrorCode::InvalidCredentials => "invalid_credentials",
            ErrorCode::TooManyAttempts => "too_many_attempts",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::InvalidToken => "invalid_token",
            ErrorCode::InvalidRefreshToken => "invalid_refresh_token",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::WrongPassword => "wrong_password",
            ErrorCode::PasswordChangeRequired => "password_change_required",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Conflict => "conflict",
            ErrorCode::TenantNotEmpty => "tenant_not_empty",
            ErrorCode::GatewayInUse => "gateway_in_use",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::InsecureTransport => "insecure_transport",
            ErrorCode::Busy => "busy",
            ErrorCode::Internal => "internal",
        }
    }

    /// The HTTP status (the one place this mapping lives).
    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::InvalidRequest | ErrorCode::InvalidSite => StatusCode::BAD_REQUEST,
            ErrorCode::InvalidCredentials
            | ErrorCode::Unauthenticated
            | ErrorCode::InvalidToken
            | ErrorCode::InvalidRefreshToken => StatusCode::UNAUTHORIZED,
            ErrorCode::TooManyAttempts => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::Forbidden
            | ErrorCode::WrongPassword
            | ErrorCode::PasswordChangeRequired
            | ErrorCode::InsecureTransport => StatusCode::FORBIDDEN,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::Conflict | ErrorCode::TenantNotEmpty | ErrorCode::GatewayInUse => {
                StatusCode::CONFLICT
            }
            ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::Busy => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// An error answered to a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// Code.
    pub code: ErrorCode,
    /// Human message (must never contain secrets).
    pub message: Cow<'static, str>,
    /// Seconds for `Retry-After`.
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error with a message.
    pub fn new(code: ErrorCode, message: impl Into<Cow<'static, str>>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// The generic internal error (after logging `cause`).
    pub fn internal(cause: &dyn std::error::Error) -> ApiError {
        tracing::error!(error = %ErrorChain(cause), "internal error");
        ApiError::new(ErrorCode::Internal, "internal error")
    }

    /// `invalid_credentials`, the one answer for every failed login.
    pub fn invalid_credentials() -> ApiError {
        ApiError::new(ErrorCode::InvalidCredentials, "invalid email or password")
    }

    /// `invalid_token`.
    pub fn invalid_token() -> ApiError {
        ApiError::new(
            ErrorCode::InvalidToken,
            "the access token is invalid or expired",
        )
    }

    /// `invalid_refresh_token`.
    pub fn invalid_refresh_token() -> ApiError {
        ApiError::new(
            ErrorCode::InvalidRefreshToken,
            "the refresh token is invalid, expired or revoked",
        )
    }
}

/// Displays an error with its sources, `a: b: c`.
struct ErrorChain<'a>(&'a dyn std::error::Error);

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut src = self.0.source();
        while let Some(e) = src {
            write!(f, ": {e}")?;
            src = e.source();
        }
        Ok(())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::internal(&e)
    }
}

impl From<CreateUserError> for ApiError {
    fn from(e: CreateUserError) -> Self {
        match e {
            CreateUserError::InvalidEmail | CreateUserError::WeakPassword => {
                ApiError::new(ErrorCode::InvalidRequest, e.to_string())
            }
            CreateUserError::Exists => ApiError::new(ErrorCode::Conflict, e.to_string()),
            CreateUserError::Hash(h) => h.into(),
            CreateUserError::Store(s) => s.into(),
        }
    }
}

impl From<KeyError> for ApiError {
    fn from(e: KeyError) -> Self {
        ApiError::internal(&e)
    }
}

impl From<PasswordError> for ApiError {
    fn from(e: PasswordError) -> Self {
        match e {
            PasswordError::Busy => ApiError {
                retry_after: Some(1),
                ..ApiError::new(ErrorCode::Busy, "the server is busy, retry shortly")
            },
            other => ApiError::internal(&other),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.as_str().into(),
                message: self.message.into_owned(),
            },
        };
        let mut resp = (self.code.status(), axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.code.status() == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

//! Extractors whose rejections are [`ApiError`]s (JSON, stable codes, no echo of the
//! input: a rejected body may hold a password).

use std::net::{IpAddr, SocketAddr};

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::{ApiError, ErrorCode};

/// A JSON body.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
            Err(e) => Err(json_rejection(&e)),
        }
    }
}

fn json_rejection(e: &JsonRejection) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::new(ErrorCode::PayloadTooLarge, "request body too large");
    }
    let msg = match e {
        JsonRejection::MissingJsonContentType(_) => "expected Content-Type: application/json",
        JsonRejection::JsonSyntaxError(_) => "request body is not valid JSON",
        JsonRejection::JsonDataError(_) => "request body does not match the expected fields",
        _ => "unreadable request body",
    };
    ApiError::new(ErrorCode::InvalidRequest, msg)
}

/// Query parameters.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(ApiQuery(v)),
            Err(QueryRejection::FailedToDeserializeQueryString(e)) => Err(ApiError::new(
                ErrorCode::InvalidRequest,
                format!("invalid query: {}", e.body_text()),
            )),
            Err(_) => Err(ApiError::new(ErrorCode::InvalidRequest, "invalid query")),
        }
    }
}

/// Longest id accepted in a path; longer ones are `not_found` without a lookup.
pub const MAX_ID_LEN: usize = 64;

/// One id from the path (`/{id}`), at most [`MAX_ID_LEN`] bytes, else `not_found`.
#[derive(Debug)]
pub struct PathId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<String>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(id)) if !id.is_empty() && id.len() <= MAX_ID_LEN => {
                Ok(PathId(id))
            }
            _ => Err(ApiError::new(ErrorCode::NotFound, "no such object")),
        }
    }
}

/// Two ids from the path (`/{a}/.../{b}`), each at most [`MAX_ID_LEN`] bytes, else
/// `not_found`.
#[derive(Debug)]
pub struct PathIds(pub String, pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathIds {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<(String, String)>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path((a, b)))
                if !a.is_empty()
                    && !b.is_empty()
                    && a.len() <= MAX_ID_LEN
                    && b.len() <= MAX_ID_LEN =>
            {
                Ok(PathIds(a, b))
            }
            _ => Err(ApiError::new(ErrorCode::NotFound, "no such object")),
        }
    }
}

/// The peer address of the TCP connection. (Behind a reverse proxy this is the proxy;
/// trusted forwarding headers are not supported yet.)
#[derive(Debug, Clone, Copy)]
pub struct SourceIp(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for SourceIp {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        match parts.extensions.get::<ConnectInfo<SocketAddr>>() {
            Some(ConnectInfo(addr)) => Ok(SourceIp(addr.ip().to_canonical())),
            None => Err(ApiError::new(ErrorCode::Internal, "no peer address")),
        }
    }
}

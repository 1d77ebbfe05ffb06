//! Extractors whose rejections are [`ApiError`]s (JSON, stable codes, no echo of the
//! input: a rejected body may hold a password).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::{ApiError, ErrorCode};
use crate::manager::Manager;
use crate::proxy::{self, Client};
use crate::serve::Transport;

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

/// The request's client as far as it can be trusted ([`crate::proxy`]): the TCP peer,
/// or what a `--trusted-proxy` forwarded; and whether the client's connection was
/// encrypted. Oversized forwarding headers from a trusted proxy are `400`.
#[derive(Debug, Clone, Copy)]
pub struct ClientInfo(pub Client);

impl FromRequestParts<Arc<Manager>> for ClientInfo {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, m: &Arc<Manager>) -> Result<Self, ApiError> {
        if let Some(c) = parts.extensions.get::<ClientInfo>() {
            return Ok(*c);
        }
        let Some(ConnectInfo(peer)) = parts.extensions.get::<ConnectInfo<SocketAddr>>() else {
            return Err(ApiError::new(ErrorCode::Internal, "no peer address"));
        };
        let tls = parts.extensions.get::<Transport>().is_some_and(|t| t.tls);
        let values = |name: &str| -> Vec<Option<&str>> {
            parts
                .headers
                .get_all(name)
                .iter()
                .map(|v| v.to_str().ok())
                .collect()
        };
        let xff = values("x-forwarded-for");
        let xfp = values("x-forwarded-proto");
        let client = proxy::resolve(
            peer.ip(),
            tls,
            xff.iter().copied(),
            xfp.into_iter(),
            &m.config.trusted_proxies,
        )
        .map_err(|e| ApiError::new(ErrorCode::InvalidRequest, e.to_string()))?;
        let info = ClientInfo(client);
        parts.extensions.insert(info);
        Ok(info)
    }
}

/// The client's address ([`ClientInfo`]): what login throttling and the audit log use.
#[derive(Debug, Clone, Copy)]
pub struct SourceIp(pub IpAddr);

impl FromRequestParts<Arc<Manager>> for SourceIp {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, m: &Arc<Manager>) -> Result<Self, ApiError> {
        let ClientInfo(c) = ClientInfo::from_request_parts(parts, m).await?;
        Ok(SourceIp(c.ip))
    }
}

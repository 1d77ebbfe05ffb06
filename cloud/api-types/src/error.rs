//! The error body every failed request returns: `{"error":{"code":..,"message":..}}`.

use serde::{Deserialize, Serialize};

/// Top-level error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// A stable machine-readable code and a human message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorDetail {
    /// Stable code (`invalid_credentials`, `invalid_token`, `too_many_attempts`, ...).
    /// Clients branch on this, never on the message.
    pub code: String,
    /// Human-readable explanation; may change between releases.
    pub message: String,
}

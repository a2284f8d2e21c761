//! The gateway's error, and the one place that maps it to a gRPC status. Upstream details are
//! logged, never sent to callers.

use tonic::{Code, Status};

/// The one message for every track the caller may not see: missing, private and geoblocked
/// tracks are indistinguishable.
pub(crate) const TRACK_NOT_FOUND: &str = "track not found";

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("{field}: {reason}")]
    InvalidArgument { field: &'static str, reason: String },
    #[error("{0}")]
    InvalidMask(String),
    #[error("{0}")]
    Unauthenticated(&'static str),
    #[error("{TRACK_NOT_FOUND}")]
    TrackNotFound,
    #[error("{0}")]
    FailedPrecondition(&'static str),
    #[error("{0}")]
    PermissionDenied(&'static str),
    #[error("{service} did not answer in time")]
    UpstreamDeadline { service: &'static str },
    #[error("{service} failed: {status:?}")]
    Upstream {
        service: &'static str,
        status: Status,
    },
}

impl GatewayError {
    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::InvalidArgument {
            field,
            reason: reason.into(),
        }
    }
}

impl From<GatewayError> for Status {
    fn from(error: GatewayError) -> Self {
        match error {
            GatewayError::InvalidArgument { .. } | GatewayError::InvalidMask(_) => {
                Status::invalid_argument(error.to_string())
            }
            GatewayError::Unauthenticated(message) => Status::unauthenticated(message),
            GatewayError::TrackNotFound => Status::not_found(TRACK_NOT_FOUND),
            GatewayError::FailedPrecondition(message) => Status::failed_precondition(message),
            GatewayError::PermissionDenied(message) => Status::permission_denied(message),
            GatewayError::UpstreamDeadline { service } => {
                tracing::warn!(service, "upstream deadline exceeded");
                Status::deadline_exceeded(format!("{service} did not answer in time"))
            }
            GatewayError::Upstream { service, status } => {
                tracing::warn!(service, code = ?status.code(), message = status.message(), "upstream call failed");
                match status.code() {
                    Code::DeadlineExceeded | Code::Cancelled => {
                        Status::deadline_exceeded(format!("{service} did not answer in time"))
                    }
                    Code::NotFound => Status::not_found(TRACK_NOT_FOUND),
                    _ => Status::unavailable(format!("{service} is unavailable")),
                }
            }
        }
    }
}

/// Checks an id at the edge, naming `field`. Ids are 1 to 64 ASCII letters, digits, `_`, `-`.
pub(crate) fn check_id(field: &'static str, id: &str) -> Result<(), GatewayError> {
    if id.is_empty() {
        return Err(GatewayError::invalid(field, "is required"));
    }
    if id.len() > 64
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(GatewayError::invalid(
            field,
            "must be 1 to 64 ASCII letters, digits, '_' or '-'",
        ));
    }
    Ok(())
}

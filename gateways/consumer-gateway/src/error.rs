//! The gateway's error, and the one place that maps it to a gRPC status. Upstream and internal
//! details are logged, never sent to callers.

use gateway_kit::{Anonymous, InvalidId, UpstreamError, UpstreamFailure};
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
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// A bug of the gateway's own (planning, trimming): not the caller's fault, and not worth
    /// retrying, so never UNAVAILABLE.
    #[error("internal error: {0}")]
    Internal(String),
}

impl GatewayError {
    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::InvalidArgument {
            field,
            reason: reason.into(),
        }
    }
}

impl From<InvalidId> for GatewayError {
    fn from(error: InvalidId) -> Self {
        Self::invalid(error.field, error.reason.to_string())
    }
}

impl From<Anonymous> for GatewayError {
    fn from(_: Anonymous) -> Self {
        Self::Unauthenticated("commands need a signed-in user")
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
            GatewayError::Upstream(UpstreamError { service, failure }) => match failure {
                UpstreamFailure::Timeout => {
                    tracing::warn!(service, "upstream deadline exceeded");
                    Status::deadline_exceeded(format!("{service} did not answer in time"))
                }
                UpstreamFailure::Status(status) => {
                    tracing::warn!(service, code = ?status.code(), message = status.message(), "upstream call failed");
                    match status.code() {
                        Code::NotFound => Status::not_found(TRACK_NOT_FOUND),
                        _ => Status::unavailable(format!("{service} is unavailable")),
                    }
                }
            },
            GatewayError::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                Status::internal("internal error")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_cause_has_its_code_and_details_stay_inside() {
        let cases = [
            (
                GatewayError::invalid("track_id", "is required"),
                Code::InvalidArgument,
            ),
            (GatewayError::TrackNotFound, Code::NotFound),
            (
                UpstreamError::new("tracks", UpstreamFailure::Timeout).into(),
                Code::DeadlineExceeded,
            ),
            (
                UpstreamError::new(
                    "likes",
                    UpstreamFailure::Status(Status::not_found("no such track")),
                )
                .into(),
                Code::NotFound,
            ),
        ];
        for (error, code) in cases {
            assert_eq!(Status::from(error).code(), code);
        }
        let hidden: Status = GatewayError::from(UpstreamError::new(
            "tracks",
            UpstreamFailure::Status(Status::internal("storage error: disk on fire")),
        ))
        .into();
        assert_eq!(hidden.code(), Code::Unavailable);
        assert_eq!(hidden.message(), "tracks is unavailable");
        let internal: Status = GatewayError::Internal("trim: no such field".into()).into();
        assert_eq!(internal.code(), Code::Internal, "a bug is not retryable");
        assert_eq!(internal.message(), "internal error");
    }
}

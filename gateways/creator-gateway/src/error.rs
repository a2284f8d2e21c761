//! The gateway's one error enum, and the one place that maps it to a gRPC status. Upstream
//! details are logged here, never sent to callers, except the foundation services' own
//! `INVALID_ARGUMENT` and `OUT_OF_RANGE` messages, which are about the caller's input and name
//! the offending field first.

use gateway_kit::{Anonymous, InvalidId, UpstreamError, UpstreamFailure};
use tonic::{Code, Status};

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The token carries no `sub`: every creator call acts for a user.
    #[error("the creator gateway needs a signed-in user: the token has no subject")]
    Anonymous,
    /// The request is malformed; `field` names the request field.
    #[error("{field}: {reason}")]
    InvalidArgument { field: &'static str, reason: String },
    /// The track does not exist or is not the caller's: the two are indistinguishable.
    #[error("track {0} not found")]
    TrackNotFound(String),
    /// The upload crossed the configured size cap.
    #[error("audio exceeds the limit of {limit} bytes")]
    AudioTooLarge { limit: u64 },
    /// The caller's upload stream broke off before it ended.
    #[error("the upload stream broke off: {0}")]
    UploadAborted(Status),
    /// An upstream call failed.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// A bug of the gateway's own (a view that cannot be trimmed to its mask, a plan without
    /// its tracks call): not the caller's fault, and not worth retrying.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<InvalidId> for GatewayError {
    fn from(error: InvalidId) -> Self {
        Self::invalid(error.field, error.reason.to_string())
    }
}

impl From<Anonymous> for GatewayError {
    fn from(_: Anonymous) -> Self {
        Self::Anonymous
    }
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
        match &error {
            GatewayError::Anonymous => Status::unauthenticated(error.to_string()),
            GatewayError::InvalidArgument { .. } => Status::invalid_argument(error.to_string()),
            GatewayError::TrackNotFound(_) => Status::not_found(error.to_string()),
            GatewayError::AudioTooLarge { .. } => Status::out_of_range(error.to_string()),
            GatewayError::UploadAborted(status) => {
                tracing::info!(code = ?status.code(), message = status.message(), "upload stream broke off");
                match status.code() {
                    // The chunk was larger than the inbound message limit.
                    Code::ResourceExhausted => Status::resource_exhausted(status.message()),
                    Code::DeadlineExceeded => Status::deadline_exceeded(error.to_string()),
                    _ => Status::cancelled(error.to_string()),
                }
            }
            GatewayError::Upstream(upstream) => upstream_status(upstream),
            GatewayError::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                Status::internal("internal error")
            }
        }
    }
}

fn upstream_status(error: &UpstreamError) -> Status {
    let service = error.service;
    match &error.failure {
        UpstreamFailure::Timeout => {
            tracing::warn!(service, "upstream call passed its deadline");
            Status::deadline_exceeded(format!("the {service} service did not answer in time"))
        }
        UpstreamFailure::Status(status) => match status.code() {
            // The foundation services check the caller's input and name the field first.
            Code::InvalidArgument | Code::OutOfRange | Code::FailedPrecondition => {
                Status::new(status.code(), status.message())
            }
            code => {
                tracing::warn!(
                    service,
                    ?code,
                    message = status.message(),
                    "upstream call failed"
                );
                Status::unavailable(format!("the {service} service is unavailable"))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_cause_has_its_code_and_upstream_details_stay_inside() {
        let cases = [
            (GatewayError::Anonymous, Code::Unauthenticated),
            (
                GatewayError::invalid("track_id", "is required"),
                Code::InvalidArgument,
            ),
            (GatewayError::TrackNotFound("trk_1".into()), Code::NotFound),
            (GatewayError::AudioTooLarge { limit: 10 }, Code::OutOfRange),
            (
                GatewayError::UploadAborted(Status::cancelled("gone")),
                Code::Cancelled,
            ),
            (
                UpstreamError::new("tracks", UpstreamFailure::Timeout).into(),
                Code::DeadlineExceeded,
            ),
            (GatewayError::Internal("no plan".into()), Code::Internal),
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
        assert_eq!(hidden.message(), "the tracks service is unavailable");
        let input: Status = GatewayError::from(UpstreamError::new(
            "tracks",
            UpstreamFailure::Status(Status::invalid_argument("title: is too long")),
        ))
        .into();
        assert_eq!(input.code(), Code::InvalidArgument);
        assert_eq!(input.message(), "title: is too long");
    }
}

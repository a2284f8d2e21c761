//! The error of the foundation services, and the one place that maps it to a gRPC status.
//! Storage details are logged, never sent to callers.

use tonic::{Code, Status};

#[derive(Debug, thiserror::Error)]
pub enum FoundationError {
    #[error("{field}: {reason}")]
    InvalidArgument { field: &'static str, reason: String },
    #[error("{what} {id} not found")]
    NotFound { what: &'static str, id: String },
    #[error("{0}")]
    FailedPrecondition(String),
    /// A caller the server admits, refused this method.
    #[error("{0}")]
    PermissionDenied(&'static str),
    #[error("audio exceeds the limit of {limit} bytes")]
    AudioTooLarge { limit: u64 },
    /// A stream whose peer sent nothing for longer than its idle bound.
    #[error("{what} stalled: nothing arrived for {idle_ms} ms; nothing was stored")]
    Stalled { what: &'static str, idle_ms: u64 },
    #[error("the upstream call failed: {0}")]
    Upstream(#[from] Status),
    #[error("storage error: {0}")]
    Storage(#[from] sqlx::Error),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

impl FoundationError {
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::InvalidArgument {
            field,
            reason: reason.into(),
        }
    }
}

impl From<FoundationError> for Status {
    fn from(error: FoundationError) -> Self {
        match &error {
            FoundationError::InvalidArgument { .. } => Status::invalid_argument(error.to_string()),
            FoundationError::NotFound { .. } => Status::not_found(error.to_string()),
            FoundationError::FailedPrecondition(_) => {
                Status::failed_precondition(error.to_string())
            }
            FoundationError::PermissionDenied(_) => Status::permission_denied(error.to_string()),
            FoundationError::AudioTooLarge { .. } => {
                Status::new(Code::OutOfRange, error.to_string())
            }
            FoundationError::Stalled { .. } => {
                Status::new(Code::DeadlineExceeded, error.to_string())
            }
            FoundationError::Upstream(status) => {
                tracing::warn!(code = ?status.code(), message = status.message(), "upstream call failed");
                Status::unavailable("an upstream service is unavailable")
            }
            FoundationError::Storage(inner) => {
                tracing::error!(error = %inner, "storage error");
                if matches!(inner, sqlx::Error::PoolTimedOut | sqlx::Error::Io(_)) {
                    Status::unavailable("storage is unavailable")
                } else {
                    Status::internal("internal error")
                }
            }
            FoundationError::Corrupt(detail) => {
                tracing::error!(%detail, "corrupt stored data");
                Status::internal("internal error")
            }
        }
    }
}

//! Twirp v7 error codes, their HTTP statuses, and the one-to-one mapping from gRPC codes.

use http::StatusCode;
use tonic::Code;

/// A Twirp v7 error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TwirpCode {
    Canceled,
    Unknown,
    InvalidArgument,
    Malformed,
    DeadlineExceeded,
    NotFound,
    BadRoute,
    AlreadyExists,
    PermissionDenied,
    Unauthenticated,
    ResourceExhausted,
    FailedPrecondition,
    Aborted,
    OutOfRange,
    Unimplemented,
    Internal,
    Unavailable,
    Dataloss,
}

impl TwirpCode {
    /// The code as the error JSON spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Canceled => "canceled",
            Self::Unknown => "unknown",
            Self::InvalidArgument => "invalid_argument",
            Self::Malformed => "malformed",
            Self::DeadlineExceeded => "deadline_exceeded",
            Self::NotFound => "not_found",
            Self::BadRoute => "bad_route",
            Self::AlreadyExists => "already_exists",
            Self::PermissionDenied => "permission_denied",
            Self::Unauthenticated => "unauthenticated",
            Self::ResourceExhausted => "resource_exhausted",
            Self::FailedPrecondition => "failed_precondition",
            Self::Aborted => "aborted",
            Self::OutOfRange => "out_of_range",
            Self::Unimplemented => "unimplemented",
            Self::Internal => "internal",
            Self::Unavailable => "unavailable",
            Self::Dataloss => "dataloss",
        }
    }

    /// The HTTP status of the Twirp v7 specification's table.
    pub fn http_status(self) -> StatusCode {
        let status = match self {
            Self::Canceled | Self::DeadlineExceeded => 408,
            Self::InvalidArgument | Self::Malformed | Self::OutOfRange => 400,
            Self::NotFound | Self::BadRoute => 404,
            Self::AlreadyExists | Self::Aborted => 409,
            Self::PermissionDenied => 403,
            Self::Unauthenticated => 401,
            Self::ResourceExhausted => 429,
            Self::FailedPrecondition => 412,
            Self::Unimplemented => 501,
            Self::Unknown | Self::Internal | Self::Dataloss => 500,
            Self::Unavailable => 503,
        };
        StatusCode::from_u16(status).expect("every status in the table is valid")
    }

    /// The Twirp code of a gRPC code (the two sets match one to one, except that Twirp adds
    /// `malformed` and `bad_route`).
    pub fn from_grpc(code: Code) -> Self {
        match code {
            Code::Ok | Code::Unknown => Self::Unknown,
            Code::Cancelled => Self::Canceled,
            Code::InvalidArgument => Self::InvalidArgument,
            Code::DeadlineExceeded => Self::DeadlineExceeded,
            Code::NotFound => Self::NotFound,
            Code::AlreadyExists => Self::AlreadyExists,
            Code::PermissionDenied => Self::PermissionDenied,
            Code::ResourceExhausted => Self::ResourceExhausted,
            Code::FailedPrecondition => Self::FailedPrecondition,
            Code::Aborted => Self::Aborted,
            Code::OutOfRange => Self::OutOfRange,
            Code::Unimplemented => Self::Unimplemented,
            Code::Internal => Self::Internal,
            Code::Unavailable => Self::Unavailable,
            Code::DataLoss => Self::Dataloss,
            Code::Unauthenticated => Self::Unauthenticated,
        }
    }

    /// The gRPC code reported to metrics for this Twirp code.
    pub fn to_grpc(self) -> Code {
        match self {
            Self::Canceled => Code::Cancelled,
            Self::Unknown => Code::Unknown,
            Self::InvalidArgument | Self::Malformed => Code::InvalidArgument,
            Self::DeadlineExceeded => Code::DeadlineExceeded,
            Self::NotFound => Code::NotFound,
            Self::BadRoute | Self::Unimplemented => Code::Unimplemented,
            Self::AlreadyExists => Code::AlreadyExists,
            Self::PermissionDenied => Code::PermissionDenied,
            Self::Unauthenticated => Code::Unauthenticated,
            Self::ResourceExhausted => Code::ResourceExhausted,
            Self::FailedPrecondition => Code::FailedPrecondition,
            Self::Aborted => Code::Aborted,
            Self::OutOfRange => Code::OutOfRange,
            Self::Internal => Code::Internal,
            Self::Unavailable => Code::Unavailable,
            Self::Dataloss => Code::DataLoss,
        }
    }
}

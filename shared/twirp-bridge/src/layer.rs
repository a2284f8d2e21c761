//! Twirp errors for Twirp calls answered before they reach the Twirp router.
//!
//! The serve loop's own layers (the concurrency limit, fault injection) and tonic's fallback
//! answer a call they refuse in gRPC's trailers-only form: HTTP 200, `content-type:
//! application/grpc`, the outcome in `grpc-status` and `grpc-message`. A Twirp client over
//! HTTP/1.1 reads that as an empty success (or, with the status patched, as a bare status), so
//! [`TwirpErrorLayer`], placed outside those layers, turns every such answer to a Twirp path into
//! the Twirp error JSON of the same status ([`TwirpError::from_status`]) with its HTTP status.
//! gRPC calls and the Twirp router's own responses pass unchanged, so this is the one place
//! where an early refusal becomes a Twirp error.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use http::{HeaderMap, Request, Response, header};
use tonic::Status;

use crate::{PREFIX, TwirpError};

/// Whether `path` is a Twirp route: [`PREFIX`] or below it.
pub fn is_twirp_path(path: &str) -> bool {
    path.strip_prefix(PREFIX)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// The Twirp error response of `status`: the error JSON, the HTTP status of the Twirp table,
/// `content-type: application/json`, and `grpc-status` for the server's RPC metrics.
pub fn error_response(status: &Status) -> Response<tonic::body::Body> {
    TwirpError::from_status(status)
        .into_response()
        .map(tonic::body::Body::new)
}

/// Answers a Twirp call that an inner layer refused in gRPC form with the Twirp error instead.
#[derive(Debug, Clone, Copy, Default)]
pub struct TwirpErrorLayer;

impl<S> tower::Layer<S> for TwirpErrorLayer {
    type Service = TwirpErrorService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TwirpErrorService { inner }
    }
}

#[derive(Debug, Clone)]
pub struct TwirpErrorService<S> {
    inner: S,
}

impl<S, ReqBody> tower::Service<Request<ReqBody>> for TwirpErrorService<S>
where
    S: tower::Service<Request<ReqBody>, Response = Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<tonic::body::Body>;
    type Error = S::Error;
    type Future =
        Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let twirp = is_twirp_path(request.uri().path());
        let future = self.inner.call(request);
        Box::pin(async move {
            let response = future.await?;
            Ok(if twirp { as_twirp(response) } else { response })
        })
    }
}

/// A gRPC trailers-only answer as the Twirp error of its status; anything else unchanged.
fn as_twirp(response: Response<tonic::body::Body>) -> Response<tonic::body::Body> {
    if !is_grpc(response.headers()) {
        return response;
    }
    // `Status::into_http` leaves the status in the extensions; otherwise read the headers.
    let status = response.extensions().get::<Status>().cloned().or_else(|| {
        let mut headers = response.headers().clone();
        // Undecodable details would panic tonic's parser; the Twirp error has no use for them.
        headers.remove("grpc-status-details-bin");
        Status::from_header_map(&headers)
    });
    match status {
        Some(status) => error_response(&status),
        None => response,
    }
}

/// Whether a response is in gRPC's trailers-only form: a gRPC content type and the status in
/// the headers.
fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/grpc"))
        && headers.contains_key("grpc-status")
}

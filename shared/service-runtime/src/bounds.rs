//! Bounds on how long one call may hold the server, whatever its caller does:
//!
//! - A call runs at most `server.call_timeout_ms` (a client-streaming call, such as an upload,
//!   `server.stream_timeout_ms`) until its response starts, whatever `grpc-timeout` it names
//!   or when it names none; then it is answered `DEADLINE_EXCEEDED` and its handler dropped.
//! - A request body that sends nothing for `server.request_idle_timeout_ms` while the server
//!   waits for it fails the read with `DEADLINE_EXCEEDED`: a caller that opens calls and never
//!   sends their messages holds nothing for long.
//!
//! Both free the call's place under the concurrency limits ([`crate::shed`]), which sit inside
//! this layer. 0 turns a bound off.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use tonic::{Status, body::Body as TonicBody};

use crate::metrics::KnownMethods;

/// The bounds of [`BoundsLayer`], read from `[server]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallBounds {
    pub call_timeout: Option<Duration>,
    pub stream_timeout: Option<Duration>,
    pub idle_timeout: Option<Duration>,
}

/// Applies [`CallBounds`]; client-streaming methods are told apart by `known`.
#[derive(Debug, Clone)]
pub struct BoundsLayer {
    bounds: CallBounds,
    known: KnownMethods,
}

impl BoundsLayer {
    pub fn new(bounds: CallBounds, known: KnownMethods) -> Self {
        Self { bounds, known }
    }
}

impl<S> tower::Layer<S> for BoundsLayer {
    type Service = BoundsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BoundsService {
            inner,
            bounds: self.bounds,
            known: self.known.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct BoundsService<S> {
    inner: S,
    bounds: CallBounds,
    known: KnownMethods,
}

impl<S, ResBody> tower::Service<Request<TonicBody>> for BoundsService<S>
where
    S: tower::Service<Request<TonicBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<TonicBody>) -> Self::Future {
        let streaming = self.known.client_streaming(request.uri().path());
        let timeout = if streaming {
            self.bounds.stream_timeout
        } else {
            self.bounds.call_timeout
        };
        let request = match self.bounds.idle_timeout {
            Some(idle) if !request.body().is_end_stream() => request.map(|body| {
                TonicBody::new(Idle {
                    inner: body,
                    idle,
                    timer: None,
                })
            }),
            _ => request,
        };
        let future = self.inner.call(request);
        let Some(timeout) = timeout else {
            return Box::pin(future);
        };
        Box::pin(async move {
            match tokio::time::timeout(timeout, future).await {
                Ok(response) => response,
                Err(_) => Ok(Status::deadline_exceeded(format!(
                    "the call ran past this server's limit of {} ms",
                    timeout.as_millis()
                ))
                .into_http()),
            }
        })
    }
}

/// A request body that fails once it has sent nothing for `idle` while being read.
struct Idle {
    inner: TonicBody,
    idle: Duration,
    /// Armed while a read waits; dropped when a frame arrives.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Body for Idle {
    type Data = bytes::Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.timer = None;
                Poll::Ready(frame)
            }
            Poll::Pending => {
                let idle = this.idle;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        this.timer = None;
                        Poll::Ready(Some(Err(Status::deadline_exceeded(format!(
                            "the request sent nothing for {} ms",
                            idle.as_millis()
                        )))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use tower::{Layer, ServiceExt};

    use super::*;

    fn bounds(call_ms: u64, idle_ms: u64) -> CallBounds {
        CallBounds {
            call_timeout: Some(Duration::from_millis(call_ms)),
            stream_timeout: Some(Duration::from_secs(600)),
            idle_timeout: Some(Duration::from_millis(idle_ms)),
        }
    }

    /// A body that never sends anything.
    struct Stalled;

    impl Body for Stalled {
        type Data = bytes::Bytes;
        type Error = Status;

        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
            Poll::Pending
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_body_fails_its_read_after_the_idle_bound() {
        let service = BoundsLayer::new(bounds(60_000, 100), KnownMethods::default()).layer(
            tower::service_fn(|request: Request<TonicBody>| async move {
                let mut body = request.into_body();
                let read = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
                let error = read.unwrap().unwrap_err();
                Ok::<_, Infallible>(Response::new(error.message().to_owned()))
            }),
        );
        let response = service
            .oneshot(Request::new(TonicBody::new(Stalled)))
            .await
            .unwrap();
        assert_eq!(response.into_body(), "the request sent nothing for 100 ms");
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_past_the_bound_is_deadline_exceeded() {
        let service = BoundsLayer::new(bounds(50, 10_000), KnownMethods::default()).layer(
            tower::service_fn(|_: Request<TonicBody>| async move {
                std::future::pending::<()>().await;
                Ok::<_, Infallible>(Response::new(tonic::body::Body::empty()))
            }),
        );
        let response = service
            .oneshot(Request::new(TonicBody::empty()))
            .await
            .unwrap();
        let status = Status::from_header_map(response.headers()).unwrap();
        assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
    }
}

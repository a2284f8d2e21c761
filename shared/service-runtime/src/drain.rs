//! Request bodies that a call answered before reading are drained in the background, not
//! dropped.
//!
//! Why: h2 0.4.20 charges every small non-final DATA frame against a per-connection budget and
//! refunds it when the application reads the frame. A frame that arrives after the application
//! dropped the request body unread is charged and never refunded, and once the budget is spent
//! the connection is closed with `GOAWAY ENHANCE_YOUR_CALM` ("too_many_data_frames"), failing
//! every call in flight on it. Calls answered from their headers alone do exactly that: shed
//! calls, unauthenticated and rate-limited ones, unknown methods. Measured with 1,000 callers
//! on four connections against a gateway shedding most of them: a connection died after about
//! 20 s and 150,000 shed calls, and its 250 calls in flight failed with UNKNOWN ("stream closed
//! because of a broken pipe"). A drained body keeps the stream receiving, so its frames are
//! read and refunded.
//!
//! The drain is bounded, so that a caller cannot hold a task with a stalled or endless body:
//! at most [`DRAIN_BYTES`] and [`DRAIN_TIME`], then the body is dropped after all.

use std::{
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use http::Request;
use http_body::{Body, Frame, SizeHint};
use tonic::body::Body as TonicBody;

/// The most of an unread body that is drained.
pub const DRAIN_BYTES: usize = 1024 * 1024;
/// The longest an unread body is drained.
pub const DRAIN_TIME: Duration = Duration::from_secs(5);

/// Wraps every request body so that, dropped unread, it is drained.
#[derive(Debug, Clone, Copy, Default)]
pub struct DrainLayer;

impl<S> tower::Layer<S> for DrainLayer {
    type Service = DrainService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        DrainService { inner }
    }
}

#[derive(Debug, Clone)]
pub struct DrainService<S> {
    inner: S,
}

impl<S> tower::Service<Request<TonicBody>> for DrainService<S>
where
    S: tower::Service<Request<TonicBody>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<TonicBody>) -> Self::Future {
        if request.body().is_end_stream() {
            return self.inner.call(request);
        }
        self.inner.call(request.map(|body| {
            TonicBody::new(Draining {
                inner: Some(body),
                ended: false,
            })
        }))
    }
}

/// A request body that drains itself when dropped before its end.
struct Draining {
    inner: Option<TonicBody>,
    ended: bool,
}

impl Body for Draining {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            this.ended = true;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

impl Drop for Draining {
    fn drop(&mut self) {
        let Some(mut body) = self.inner.take() else {
            return;
        };
        if self.ended || body.is_end_stream() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            let drain = async {
                let mut read = 0;
                while read <= DRAIN_BYTES {
                    let frame = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
                    match frame {
                        Some(Ok(frame)) => {
                            read += frame.data_ref().map_or(0, bytes::Bytes::len);
                        }
                        Some(Err(_)) | None => break,
                    }
                }
            };
            drop(tokio::time::timeout(DRAIN_TIME, drain).await);
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };

    use tower::{Layer, ServiceExt};

    use super::*;

    /// A body of `frames` small frames that counts how many were read.
    struct Counted {
        left: usize,
        read: Arc<AtomicUsize>,
    }

    impl Body for Counted {
        type Data = bytes::Bytes;
        type Error = tonic::Status;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
            if self.left == 0 {
                return Poll::Ready(None);
            }
            self.left -= 1;
            self.read.fetch_add(1, Ordering::SeqCst);
            Poll::Ready(Some(Ok(Frame::data(bytes::Bytes::from_static(
                b"0123456789",
            )))))
        }
    }

    #[tokio::test]
    async fn a_body_the_service_dropped_unread_is_read_to_its_end() {
        let read = Arc::new(AtomicUsize::new(0));
        let service = DrainLayer.layer(tower::service_fn(
            |request: Request<TonicBody>| async move {
                drop(request);
                Ok::<_, std::convert::Infallible>(())
            },
        ));
        let body = TonicBody::new(Counted {
            left: 3,
            read: read.clone(),
        });
        service.oneshot(Request::new(body)).await.unwrap();
        test_support::eventually("the unread body is drained", Duration::from_secs(5), || {
            let read = read.load(Ordering::SeqCst);
            async move { read == 3 }
        })
        .await;
    }
}

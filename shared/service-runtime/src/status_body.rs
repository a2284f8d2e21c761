//! The one response body that watches a gRPC call for its status, so that the metrics layer and
//! the tracing layer read the status the same way instead of each keeping a copy of the rules.
//!
//! The status of a call is read where gRPC puts it: in the headers of a trailers-only response,
//! else in the trailers at the end of the body. A body that ends without trailers gives
//! `Unknown` (gRPC treats a missing status as unknown), a body that fails gives `Internal`, and
//! a body dropped before its status passed by (the client went away) gives `Cancelled`. Whoever
//! wraps a response ([`crate::metrics::GrpcMetricsService`], [`crate::otel::TraceService`])
//! hands over an [`OnStatus`] that is told the status exactly once.

use std::{
    pin::Pin,
    task::{Context, Poll, ready},
};

use http::{HeaderMap, Response};
use http_body::{Body, Frame};
use tonic::Code;

/// What to do with the status of a call once it is known. It is told exactly once, and is
/// consumed by it.
pub trait OnStatus {
    /// Takes the status of the call.
    fn on_status(self, code: Code);
}

fn status_code(headers: &HeaderMap) -> Option<Code> {
    headers
        .get("grpc-status")
        .map(|value| Code::from_bytes(value.as_bytes()))
}

pin_project_lite::pin_project! {
    /// A response body that tells its [`OnStatus`] the call's status when the status is known:
    /// when the trailers pass by, when the body ends or fails, or when it is dropped first.
    pub struct StatusBody<B, F>
    where
        F: OnStatus,
    {
        #[pin]
        inner: B,
        pending: Option<F>,
    }

    impl<B, F> PinnedDrop for StatusBody<B, F>
    where
        F: OnStatus,
    {
        fn drop(this: Pin<&mut Self>) {
            if let Some(on_status) = this.project().pending.take() {
                on_status.on_status(Code::Cancelled);
            }
        }
    }
}

impl<B, F> StatusBody<B, F>
where
    F: OnStatus,
{
    /// Wraps the body of `response`. A trailers-only response carries its status in the
    /// headers: `on_status` is then told at once, and the body only passes its frames through.
    pub fn watch(response: Response<B>, on_status: F) -> Response<Self> {
        let (parts, inner) = response.into_parts();
        let pending = match status_code(&parts.headers) {
            Some(code) => {
                on_status.on_status(code);
                None
            }
            None => Some(on_status),
        };
        Response::from_parts(parts, Self { inner, pending })
    }
}

/// An empty body that tells nobody anything: what a layer outside the watching one answers with
/// on its own, as the circuit breaker outside the client metrics does for a call its open
/// circuit refuses (such layers build their answers with `ResBody::default()`).
impl<B, F> Default for StatusBody<B, F>
where
    B: Default,
    F: OnStatus,
{
    fn default() -> Self {
        Self {
            inner: B::default(),
            pending: None,
        }
    }
}

impl<B, F> Body for StatusBody<B, F>
where
    B: Body,
    F: OnStatus,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        let code = match &frame {
            Some(Ok(frame)) => frame
                .trailers_ref()
                .map(|trailers| status_code(trailers).unwrap_or(Code::Unknown)),
            Some(Err(_)) => Some(Code::Internal),
            // The body ended without trailers: gRPC treats a missing status as unknown.
            None => Some(Code::Unknown),
        };
        if let Some(code) = code
            && let Some(on_status) = this.pending.take()
        {
            on_status.on_status(code);
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::{
        collections::VecDeque,
        sync::{Arc, Mutex},
        task::Waker,
    };

    use http::HeaderValue;

    use super::*;

    /// A frame of the test bodies, or the error they fail with.
    type Step = Result<Frame<&'static [u8]>, &'static str>;

    /// A body that yields the frames it was given, each ready at once, then ends.
    #[derive(Default)]
    struct Frames(VecDeque<Step>);

    impl Body for Frames {
        type Data = &'static [u8];
        type Error = &'static str;

        fn poll_frame(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
            Poll::Ready(self.get_mut().0.pop_front())
        }
    }

    /// Remembers every status it is told, in a list its clones share.
    #[derive(Clone, Default)]
    struct Seen(Arc<Mutex<Vec<Code>>>);

    impl Seen {
        fn codes(&self) -> Vec<Code> {
            self.0.lock().unwrap().clone()
        }
    }

    impl OnStatus for Seen {
        fn on_status(self, code: Code) {
            self.0.lock().unwrap().push(code);
        }
    }

    fn trailers(code: &'static str) -> HeaderMap {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static(code));
        trailers
    }

    /// A body with one data frame and then `last`.
    fn data_then(last: Step) -> Frames {
        Frames(VecDeque::from([Ok(Frame::data(&b"x"[..])), last]))
    }

    /// Reads `body` to its end.
    fn drain<B: Body + Unpin>(body: &mut B) {
        let mut cx = Context::from_waker(Waker::noop());
        loop {
            match Pin::new(&mut *body).poll_frame(&mut cx) {
                Poll::Ready(Some(_)) => {}
                Poll::Ready(None) => return,
                Poll::Pending => panic!("the test bodies are always ready"),
            }
        }
    }

    #[test]
    fn a_trailers_only_response_is_told_at_once_and_only_once() {
        let seen = Seen::default();
        let mut response = Response::new(Frames::default());
        response
            .headers_mut()
            .insert("grpc-status", HeaderValue::from_static("5"));
        let mut body = StatusBody::watch(response, seen.clone()).into_body();
        assert_eq!(seen.codes(), [Code::NotFound]);
        drain(&mut body);
        drop(body);
        assert_eq!(seen.codes(), [Code::NotFound]);
    }

    #[test]
    fn the_status_in_the_trailers_is_told_when_they_pass_by() {
        let seen = Seen::default();
        let response = Response::new(data_then(Ok(Frame::trailers(trailers("0")))));
        let mut body = StatusBody::watch(response, seen.clone()).into_body();
        let mut cx = Context::from_waker(Waker::noop());
        assert!(Pin::new(&mut body).poll_frame(&mut cx).is_ready());
        assert!(seen.codes().is_empty(), "a data frame carries no status");
        drain(&mut body);
        drop(body);
        assert_eq!(seen.codes(), [Code::Ok]);
    }

    #[test]
    fn a_missing_status_is_unknown_and_a_failed_body_internal() {
        for (last, code) in [
            (Ok(Frame::trailers(HeaderMap::new())), Code::Unknown),
            (Err("reset"), Code::Internal),
        ] {
            let seen = Seen::default();
            let mut body =
                StatusBody::watch(Response::new(data_then(last)), seen.clone()).into_body();
            drain(&mut body);
            drop(body);
            assert_eq!(seen.codes(), [code]);
        }
        let seen = Seen::default();
        let mut body =
            StatusBody::watch(Response::new(Frames::default()), seen.clone()).into_body();
        drain(&mut body);
        assert_eq!(
            seen.codes(),
            [Code::Unknown],
            "a body that ends without trailers"
        );
    }

    #[test]
    fn a_body_dropped_before_its_status_is_cancelled() {
        let seen = Seen::default();
        let response = Response::new(data_then(Ok(Frame::trailers(trailers("0")))));
        let mut body = StatusBody::watch(response, seen.clone()).into_body();
        let mut cx = Context::from_waker(Waker::noop());
        assert!(Pin::new(&mut body).poll_frame(&mut cx).is_ready());
        drop(body);
        assert_eq!(seen.codes(), [Code::Cancelled]);
    }
}

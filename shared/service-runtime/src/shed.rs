//! Load shedding: at most `server.max_concurrent_requests` calls are handled at once across all
//! connections; a call beyond that is answered at once with `RESOURCE_EXHAUSTED`, never
//! queued, so accepted calls keep their latency and memory stays flat under overload. Health
//! checks and reflection are never shed, so probes tell overload from death.
//!
//! The permit is held until the response headers are ready: the whole call for unary RPCs;
//! for server streams, the time to produce the first response.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use http::{Request, Response};
use tokio::sync::Semaphore;
use tonic::Status;

#[derive(Debug, Clone)]
pub struct ShedLayer {
    permits: Option<Arc<Semaphore>>,
}

impl ShedLayer {
    /// A limit of `max_concurrent` calls; 0 means no limit.
    pub fn new(max_concurrent: usize) -> Self {
        Self {
            permits: (max_concurrent > 0).then(|| Arc::new(Semaphore::new(max_concurrent))),
        }
    }
}

impl<S> tower::Layer<S> for ShedLayer {
    type Service = ShedService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ShedService {
            inner,
            permits: self.permits.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ShedService<S> {
    inner: S,
    permits: Option<Arc<Semaphore>>,
}

fn exempt(path: &str) -> bool {
    path.starts_with("/grpc.health.") || path.starts_with("/grpc.reflection.")
}

impl<S, ReqBody, ResBody> tower::Service<Request<ReqBody>> for ShedService<S>
where
    S: tower::Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future =
        Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let Some(permits) = &self.permits else {
            return Box::pin(self.inner.call(request));
        };
        if exempt(request.uri().path()) {
            return Box::pin(self.inner.call(request));
        }
        match permits.clone().try_acquire_owned() {
            Ok(permit) => {
                let future = self.inner.call(request);
                Box::pin(async move {
                    let response = future.await;
                    drop(permit);
                    response
                })
            }
            Err(_) => {
                tracing::debug!(path = request.uri().path(), "shedding a call");
                let twirp = request.uri().path().starts_with("/twirp/");
                Box::pin(async move {
                    if twirp {
                        // Twirp clients read the HTTP status; a gRPC-style 200 would look like
                        // an empty success to them.
                        let mut response = Response::new(ResBody::default());
                        *response.status_mut() = http::StatusCode::TOO_MANY_REQUESTS;
                        return Ok(response);
                    }
                    Ok(Status::resource_exhausted(
                        "the server is at its concurrency limit; retry with backoff",
                    )
                    .into_http())
                })
            }
        }
    }
}

//! Fault injection for tests and demos: per-method added latency and error rate, from
//! configuration, off by default. Keys are method names (`BatchGetTracks`, matched without
//! regard to case), values say what to inject:
//!
//! ```toml
//! [faults.BatchGetTracks]
//! latency_ms = 20
//! error_rate = 0.1
//! code = "unavailable"
//! ```
//!
//! Method names match without regard to case, because environment variables reach the settings
//! lower-cased (`LIKES_FAULTS__BATCHGETREACTIONS__ERROR_RATE=1`).

use std::{
    collections::BTreeMap,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use http::{Request, Response};
use serde::{Deserialize, Serialize};
use tonic::{Code, Status};

use crate::metrics::split_path;

/// What to inject into one method.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MethodFault {
    /// Added before the call is handled.
    #[serde(default)]
    pub latency_ms: u64,
    /// The share of calls, from 0 to 1, answered with `code` instead of being handled.
    #[serde(default)]
    pub error_rate: f64,
    /// The status code of injected errors.
    #[serde(default = "default_code")]
    pub code: FaultCode,
}

fn default_code() -> FaultCode {
    FaultCode::Unavailable
}

/// Status codes that make sense to inject.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FaultCode {
    Unavailable,
    DeadlineExceeded,
    Internal,
    ResourceExhausted,
    Aborted,
    Unknown,
}

impl From<FaultCode> for Code {
    fn from(code: FaultCode) -> Self {
        match code {
            FaultCode::Unavailable => Code::Unavailable,
            FaultCode::DeadlineExceeded => Code::DeadlineExceeded,
            FaultCode::Internal => Code::Internal,
            FaultCode::ResourceExhausted => Code::ResourceExhausted,
            FaultCode::Aborted => Code::Aborted,
            FaultCode::Unknown => Code::Unknown,
        }
    }
}

/// Faults by method name.
pub type FaultSettings = BTreeMap<String, MethodFault>;

/// Checks the settings, naming the first bad key.
pub fn validate(faults: &FaultSettings) -> Result<(), String> {
    for (method, fault) in faults {
        if !(0.0..=1.0).contains(&fault.error_rate) {
            return Err(format!(
                "faults.{method}.error_rate must be between 0 and 1, got {}",
                fault.error_rate
            ));
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Default)]
pub struct FaultLayer {
    faults: Arc<FaultSettings>,
}

impl FaultLayer {
    pub fn new(faults: FaultSettings) -> Self {
        Self {
            faults: Arc::new(
                faults
                    .into_iter()
                    .map(|(method, fault)| (method.to_ascii_lowercase(), fault))
                    .collect(),
            ),
        }
    }
}

impl<S> tower::Layer<S> for FaultLayer {
    type Service = FaultService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        FaultService {
            inner,
            faults: self.faults.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct FaultService<S> {
    inner: S,
    faults: Arc<FaultSettings>,
}

impl<S, ReqBody, ResBody> tower::Service<Request<ReqBody>> for FaultService<S>
where
    S: tower::Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Send + 'static,
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
        let (_, method) = split_path(request.uri().path());
        // Case-insensitive, because the `config` crate lowercases keys that come from the
        // environment: `LIKES_FAULTS__LIKE__ERROR_RATE` arrives as `faults.like`.
        let fault = self
            .faults
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(method))
            .map(|(_, fault)| fault.clone());
        let Some(fault) = fault else {
            return Box::pin(self.inner.call(request));
        };
        // The ready inner service is used now; its clone takes its place for the next call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            if fault.latency_ms > 0 {
                tokio::time::sleep(Duration::from_millis(fault.latency_ms)).await;
            }
            if fault.error_rate > 0.0 && fastrand::f64() < fault.error_rate {
                tracing::debug!(method = %request.uri().path(), "injecting a fault");
                // In gRPC form whatever the protocol: the serve loop's Twirp layer, outside this
                // one, answers a Twirp call with the Twirp error of the same status.
                return Ok(Status::new(fault.code.into(), "injected fault").into_http());
            }
            inner.call(request).await
        })
    }
}

#[cfg(test)]
mod tests {
    use tower::{Layer, ServiceExt};

    use super::*;

    fn request(path: &str) -> Request<()> {
        Request::builder().uri(path).body(()).unwrap()
    }

    #[tokio::test]
    async fn faults_hit_only_their_method_whatever_the_case_of_the_key() {
        let faults = FaultSettings::from([(
            "batchgettracks".to_owned(),
            MethodFault {
                latency_ms: 0,
                error_rate: 1.0,
                code: FaultCode::ResourceExhausted,
            },
        )]);
        let inner = tower::service_fn(|_: Request<()>| async {
            Ok::<_, std::convert::Infallible>(Response::new(String::from("handled")))
        });
        let service = FaultLayer::new(faults).layer(inner);

        let hit = service
            .clone()
            .oneshot(request(
                "/foundation.tracks.v1.TracksService/BatchGetTracks",
            ))
            .await
            .unwrap();
        assert_eq!(hit.headers()["grpc-status"], "8");
        assert!(hit.body().is_empty());

        let miss = service
            .clone()
            .oneshot(request("/foundation.tracks.v1.TracksService/UpdateTrack"))
            .await
            .unwrap();
        assert_eq!(miss.body(), "handled");
    }

    #[test]
    fn error_rates_outside_zero_to_one_are_rejected_naming_the_key() {
        let faults = FaultSettings::from([(
            "Like".to_owned(),
            MethodFault {
                latency_ms: 0,
                error_rate: 1.5,
                code: FaultCode::Unavailable,
            },
        )]);
        let error = validate(&faults).unwrap_err();
        assert!(error.starts_with("faults.Like.error_rate"), "{error}");
    }
}

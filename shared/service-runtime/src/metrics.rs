//! Prometheus metrics. Every gRPC server gets RED metrics per RPC with the names the Go and Java
//! gRPC ecosystems use, so existing dashboards work:
//! `grpc_server_handled_total{grpc_service,grpc_method,grpc_code}` and
//! `grpc_server_handling_seconds{grpc_service,grpc_method}` (a histogram).
//!
//! The status of a call is read by [`StatusBody`], the same way the tracing layer reads it. A
//! call whose body is dropped before its trailers (the client went away) counts as `Canceled`.
//!
//! A server labels a call by its service and method only when it serves that pair
//! ([`KnownMethods`]); every other path counts as `unknown`/`unknown`, so no caller can grow the
//! label set or write into the exposition by choosing a path.

use std::{
    collections::HashMap,
    pin::Pin,
    sync::{Arc, OnceLock, RwLock},
    task::{Context, Poll},
    time::Instant,
};

use http::{Request, Response};
use http_body::Body;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, histogram::Histogram},
    registry::Registry,
};
use tonic::Code;

use crate::status_body::{OnStatus, StatusBody};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HandledLabels {
    grpc_service: String,
    grpc_method: String,
    grpc_code: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    grpc_service: String,
    grpc_method: String,
}

/// Latency buckets in seconds, from 100 µs to 10 s.
const BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 10.0,
];

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

/// RPC metrics of one side: what a server handled, or what a client's upstream calls did.
/// Clones share the same series.
#[derive(Debug, Clone)]
pub struct GrpcMetrics {
    handled: Family<HandledLabels, Counter>,
    handling: HistogramFamily<MethodLabels>,
    /// The series of each service/method pair called so far, so that a call records without
    /// building labels or finding its series by them. Its names are bounded: a server labels
    /// only the pairs it serves, a client calls only its own.
    methods: Arc<RwLock<Names<Names<Arc<MethodSeries>>>>>,
    /// Client side only: calls refused by an open circuit, by upstream.
    short_circuited: Family<UpstreamLabels, Counter>,
    /// Client side only: times an upstream's circuit opened.
    circuits_opened: Family<UpstreamLabels, Counter>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabels {
    upstream: String,
}

/// A map by service or method name (names the process chose, not callers).
type Names<V> = HashMap<String, V, foldhash::fast::RandomState>;

/// The codes of gRPC, 0 to 16.
const CODES: usize = 17;

/// The series of one service/method pair, found once.
#[derive(Debug)]
struct MethodSeries {
    service: String,
    method: String,
    /// Each series is made in its family when the first call ends (with that code), as a
    /// lookup by labels would: the exposition lists only what happened.
    handling: OnceLock<Histogram>,
    handled: [OnceLock<Counter>; CODES],
    handling_family: HistogramFamily<MethodLabels>,
    handled_family: Family<HandledLabels, Counter>,
}

impl MethodSeries {
    fn record(&self, code: Code, started: Instant) {
        self.handled[code as usize % CODES]
            .get_or_init(|| {
                self.handled_family
                    .get_or_create(&HandledLabels {
                        grpc_service: self.service.clone(),
                        grpc_method: self.method.clone(),
                        grpc_code: code_name(code),
                    })
                    .clone()
            })
            .inc();
        self.handling
            .get_or_init(|| {
                self.handling_family
                    .get_or_create(&MethodLabels {
                        grpc_service: self.service.clone(),
                        grpc_method: self.method.clone(),
                    })
                    .clone()
            })
            .observe(started.elapsed().as_secs_f64());
    }
}

impl GrpcMetrics {
    /// `grpc_server_handled_total` and `grpc_server_handling_seconds`.
    pub fn register(registry: &mut Registry) -> Self {
        Self::register_side(registry, "server", "on the server")
    }

    /// `grpc_client_handled_total` and `grpc_client_handling_seconds`: upstream calls.
    pub fn register_client(registry: &mut Registry) -> Self {
        let metrics = Self::register_side(registry, "client", "by the client (upstream calls)");
        registry.register(
            "grpc_client_short_circuited",
            "Upstream calls refused without being made because the upstream's circuit was open",
            metrics.short_circuited.clone(),
        );
        registry.register(
            "grpc_client_circuit_opened",
            "Times an upstream's circuit opened",
            metrics.circuits_opened.clone(),
        );
        metrics
    }

    /// The counters of `upstream`'s circuit breaker.
    pub fn breaker_counters(&self, upstream: &str) -> crate::breaker::BreakerCounters {
        let labels = UpstreamLabels {
            upstream: upstream.to_owned(),
        };
        crate::breaker::BreakerCounters {
            short_circuited: self.short_circuited.get_or_create(&labels).clone(),
            opened: self.circuits_opened.get_or_create(&labels).clone(),
        }
    }

    fn register_side(registry: &mut Registry, side: &str, whose: &str) -> Self {
        let metrics = Self {
            handled: Family::default(),
            handling: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            methods: Arc::default(),
            short_circuited: Family::default(),
            circuits_opened: Family::default(),
        };
        registry.register(
            format!("grpc_{side}_handled"),
            format!("Total number of RPCs completed {whose}, regardless of success or failure"),
            metrics.handled.clone(),
        );
        registry.register(
            format!("grpc_{side}_handling_seconds"),
            format!("Histogram of response latency (seconds) of RPCs completed {whose}"),
            metrics.handling.clone(),
        );
        metrics
    }

    /// How many calls of `service`/`method` completed with `code` (for tests and explain).
    pub fn handled(&self, service: &str, method: &str, code: Code) -> u64 {
        self.handled
            .get(&HandledLabels {
                grpc_service: service.to_owned(),
                grpc_method: method.to_owned(),
                grpc_code: code_name(code),
            })
            .map_or(0, |counter| counter.get())
    }

    /// The series of `service`/`method`, made at the pair's first call.
    fn series(&self, service: &str, method: &str) -> Arc<MethodSeries> {
        let known = self
            .methods
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(service)
            .and_then(|methods| methods.get(method))
            .cloned();
        if let Some(series) = known {
            return series;
        }
        let mut methods = self
            .methods
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        methods
            .entry(service.to_owned())
            .or_default()
            .entry(method.to_owned())
            .or_insert_with(|| {
                Arc::new(MethodSeries {
                    service: service.to_owned(),
                    method: method.to_owned(),
                    handling: OnceLock::new(),
                    handled: std::array::from_fn(|_| OnceLock::new()),
                    handling_family: self.handling.clone(),
                    handled_family: self.handled.clone(),
                })
            })
            .clone()
    }
}

/// The code names of the Go implementation, which dashboards expect.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

/// Splits `/package.Service/Method` (or its Twirp form `/twirp/package.Service/Method`) into
/// its service and method, so that both protocols count under the same labels.
pub fn split_path(path: &str) -> (&str, &str) {
    let path = path.strip_prefix("/twirp").unwrap_or(path);
    let trimmed = path.strip_prefix('/').unwrap_or(path);
    trimmed.split_once('/').unwrap_or((trimmed, ""))
}

/// The label of every path a server does not serve, service and method alike.
pub const UNKNOWN: &str = "unknown";

/// The service/method pairs a server serves, read from its APIs' descriptor sets: the only
/// names its metrics label calls with.
#[derive(Debug, Clone, Default)]
pub struct KnownMethods(Arc<HashMap<String, HashMap<String, Streaming>>>);

/// Whether a method takes a stream of request messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Streaming {
    client: bool,
}

impl KnownMethods {
    /// Every method of every service in the encoded `FileDescriptorSet`s.
    pub fn from_descriptor_sets(sets: &[&[u8]]) -> Result<Self, prost::DecodeError> {
        use prost::Message;
        let mut known: HashMap<String, HashMap<String, Streaming>> = HashMap::new();
        for set in sets {
            for file in prost_types::FileDescriptorSet::decode(*set)?.file {
                let package = file.package();
                for service in &file.service {
                    let name = if package.is_empty() {
                        service.name().to_owned()
                    } else {
                        format!("{package}.{}", service.name())
                    };
                    known
                        .entry(name)
                        .or_default()
                        .extend(service.method.iter().map(|method| {
                            let streaming = Streaming {
                                client: method.client_streaming(),
                            };
                            (method.name().to_owned(), streaming)
                        }));
                }
            }
        }
        Ok(Self(Arc::new(known)))
    }

    /// The labels of a call to `path`: its service and method when served, else [`UNKNOWN`]
    /// for both.
    pub fn labels<'p>(&self, path: &'p str) -> (&'p str, &'p str) {
        let (service, method) = split_path(path);
        match self.0.get(service) {
            Some(methods) if methods.contains_key(method) => (service, method),
            _ => (UNKNOWN, UNKNOWN),
        }
    }

    /// Whether `path` is a served method that takes a stream of request messages (an upload).
    pub fn client_streaming(&self, path: &str) -> bool {
        let (service, method) = split_path(path);
        self.0
            .get(service)
            .and_then(|methods| methods.get(method))
            .is_some_and(|streaming| streaming.client)
    }
}

/// A tower layer that records [`GrpcMetrics`] for every call, on a server or on a client
/// channel.
#[derive(Debug, Clone)]
pub struct GrpcMetricsLayer {
    metrics: GrpcMetrics,
    /// On a server, the pairs it labels by name; `None` on a client channel, whose calls are
    /// the service's own.
    known: Option<KnownMethods>,
}

impl GrpcMetricsLayer {
    /// The layer of a client channel: every call is labelled by its path.
    pub fn new(metrics: GrpcMetrics) -> Self {
        Self {
            metrics,
            known: None,
        }
    }

    /// The layer of a server: calls to paths outside `known` count as `unknown`.
    pub fn server(metrics: GrpcMetrics, known: KnownMethods) -> Self {
        Self {
            metrics,
            known: Some(known),
        }
    }
}

impl<S> tower::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetricsService {
            inner,
            metrics: self.metrics.clone(),
            known: self.known.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct GrpcMetricsService<S> {
    inner: S,
    metrics: GrpcMetrics,
    known: Option<KnownMethods>,
}

impl<S, ReqBody, ResBody> tower::Service<Request<ReqBody>> for GrpcMetricsService<S>
where
    S: tower::Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: Body,
{
    type Response = Response<StatusBody<ResBody, CallRecord>>;
    type Error = S::Error;
    type Future =
        Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let path = request.uri().path();
        let (service, method) = match &self.known {
            Some(known) => known.labels(path),
            None => split_path(path),
        };
        let call = CallRecord {
            series: self.metrics.series(service, method),
            started: Instant::now(),
        };
        let future = self.inner.call(request);
        // A call whose transport fails before any response is not counted: it has no status.
        Box::pin(async move { Ok(StatusBody::watch(future.await?, call)) })
    }
}

/// A call of [`GrpcMetricsService`] whose status is not known yet, recorded once it is. It is
/// public only because it names the body of the service's responses.
#[derive(Debug)]
pub struct CallRecord {
    series: Arc<MethodSeries>,
    started: Instant,
}

impl OnStatus for CallRecord {
    fn on_status(self, code: Code) {
        self.series.record(code, self.started);
    }
}

/// Renders the registry in the Prometheus text format.
pub fn encode(registry: &Registry) -> String {
    let mut text = String::new();
    if let Err(error) = prometheus_client::encoding::text::encode(&mut text, registry) {
        tracing::error!(%error, "cannot encode metrics");
    }
    text
}

/// Reads the Prometheus page that a service serves on `addr` (plain HTTP/1.0, `/metrics`).
/// For tests and tools.
pub async fn scrape(addr: impl tokio::net::ToSocketAddrs) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    Ok(response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default())
}

/// The samples `name` in a page of the Prometheus text format: each one's labels (unquoted)
/// and value.
fn samples<'t>(
    text: &'t str,
    name: &'t str,
) -> impl Iterator<Item = (Vec<(&'t str, &'t str)>, f64)> + 't {
    text.lines().filter_map(move |line| {
        let rest = line.strip_prefix(name)?;
        let (label_text, value) = match rest.strip_prefix('{') {
            Some(rest) => rest.split_once("} ")?,
            None => ("", rest.strip_prefix(' ')?),
        };
        let labels = label_text
            .split(',')
            .filter_map(|pair| pair.split_once('='))
            .map(|(key, value)| (key, value.trim_matches('"')))
            .collect();
        Some((
            labels,
            value.split_whitespace().next()?.parse::<f64>().ok()?,
        ))
    })
}

/// The value of the sample `name` whose labels include `labels`, summed over the samples that
/// match, in a page of the Prometheus text format (0 when none matches). For tests and tools.
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    samples(text, name)
        .filter(|(found, _)| {
            labels
                .iter()
                .all(|(key, wanted)| found.iter().any(|(k, v)| k == key && v == wanted))
        })
        .map(|(_, value)| value)
        .sum()
}

/// The samples `name`, summed by the value of their label `label` (samples without it are
/// left out), in a page of the Prometheus text format. For tests and tools.
pub fn sample_by(text: &str, name: &str, label: &str) -> std::collections::BTreeMap<String, f64> {
    let mut sums = std::collections::BTreeMap::new();
    for (labels, value) in samples(text, name) {
        if let Some((_, key)) = labels.iter().find(|(key, _)| *key == label) {
            *sums.entry((*key).to_owned()).or_default() += value;
        }
    }
    sums
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_and_twirp_paths_split_alike() {
        let grpc = split_path("/consumer.v1.ConsumerGateway/GetTrack");
        assert_eq!(grpc, ("consumer.v1.ConsumerGateway", "GetTrack"));
        assert_eq!(
            split_path("/twirp/consumer.v1.ConsumerGateway/GetTrack"),
            grpc
        );
    }

    #[test]
    fn only_served_methods_are_labelled_by_name() {
        let known =
            KnownMethods::from_descriptor_sets(&[tonic_health::pb::FILE_DESCRIPTOR_SET]).unwrap();
        assert_eq!(
            known.labels("/grpc.health.v1.Health/Check"),
            ("grpc.health.v1.Health", "Check")
        );
        assert_eq!(
            known.labels("/twirp/grpc.health.v1.Health/Watch"),
            ("grpc.health.v1.Health", "Watch")
        );
        for path in [
            "/grpc.health.v1.Health/Nope",
            "/nope.v1.Nope/Check",
            "/grpc.health.v1.Health/Check\"} 1\nx{a=\"",
            "/",
            "",
        ] {
            assert_eq!(known.labels(path), (UNKNOWN, UNKNOWN), "{path}");
        }
    }

    #[test]
    fn samples_are_found_by_name_and_labels() {
        let text = "# TYPE x counter\n\
                    x_total{a=\"1\",b=\"2\"} 3\n\
                    x_total{a=\"1\",b=\"3\"} 4\n\
                    x_total_other{a=\"1\"} 100\n\
                    y 7\n";
        assert_eq!(sample(text, "x_total", &[("a", "1")]), 7.0);
        assert_eq!(sample(text, "x_total", &[("b", "3")]), 4.0);
        assert_eq!(sample(text, "x_total", &[("b", "9")]), 0.0);
        assert_eq!(sample(text, "y", &[]), 7.0);
        let by_b = sample_by(text, "x_total", "b");
        assert_eq!(by_b.len(), 2);
        assert_eq!((by_b["2"], by_b["3"]), (3.0, 4.0));
        assert!(sample_by(text, "x_total", "c").is_empty());
    }
}

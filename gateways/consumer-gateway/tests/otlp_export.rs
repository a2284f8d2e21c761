//! OTLP export from the real binary: a consumer gateway started with `log.otlp_endpoint`
//! pointing at a collector (here an in-test OTLP/gRPC trace service) exports the spans of the
//! calls it serves, with its service name and the RPC attributes.

use std::{
    net::TcpListener,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use authorization::token::mint_development_token;
use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::any_value::Value,
};
use protos::consumer::v1::{GetTrackRequest, consumer_gateway_client::ConsumerGatewayClient};
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

struct Collector(mpsc::UnboundedSender<ExportTraceServiceRequest>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        drop(self.0.send(request.into_inner()));
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        drop(self.0.kill());
        drop(self.0.wait());
    }
}

fn text(value: Option<&opentelemetry_proto::tonic::common::v1::AnyValue>) -> Option<&str> {
    match value?.value.as_ref()? {
        Value::StringValue(text) => Some(text),
        _ => None,
    }
}

#[tokio::test]
async fn the_binary_exports_its_spans_over_otlp() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a collector port");
    let collector_addr = listener.local_addr().expect("an address");
    let (sender, mut exported) = mpsc::unbounded_channel();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(Collector(sender)))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );

    let grpc = free_port();
    // The upstreams point at a closed port: the call fails, and its spans are exported anyway.
    let closed = format!("http://127.0.0.1:{}", free_port());
    let child = Command::new(env!("CARGO_BIN_EXE_consumer-gateway"))
        .env(
            "CONSUMER_GATEWAY_SERVER__GRPC_ADDR",
            format!("127.0.0.1:{grpc}"),
        )
        .env(
            "CONSUMER_GATEWAY_SERVER__METRICS_ADDR",
            format!("127.0.0.1:{}", free_port()),
        )
        .env(
            "CONSUMER_GATEWAY_LOG__OTLP_ENDPOINT",
            format!("http://{collector_addr}"),
        )
        .env("CONSUMER_GATEWAY_LOG__FILTER", "warn")
        .env("CONSUMER_GATEWAY_UPSTREAMS__TRACKS__URL", &closed)
        .env("CONSUMER_GATEWAY_UPSTREAMS__LIKES__URL", &closed)
        .env("CONSUMER_GATEWAY_UPSTREAMS__FOLLOWS__URL", &closed)
        .env("CONSUMER_GATEWAY_UPSTREAMS__COUNTS__URL", &closed)
        // Export every 100 ms instead of every 5 s.
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("the gateway binary starts");
    let _child = Killed(child);

    let url = format!("http://127.0.0.1:{grpc}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut client = loop {
        if let Ok(client) = ConsumerGatewayClient::connect(url.clone()).await {
            break client;
        }
        assert!(Instant::now() < deadline, "the gateway never listened");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut request = Request::new(GetTrackRequest {
        track_id: "trk_00001".into(),
        read_mask: None,
        secret_token: None,
    });
    let token = mint_development_token(Some("usr_0001"), "US", 600);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ASCII"),
    );
    let status = client
        .get_track(request)
        .await
        .expect_err("no upstream answers");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");

    // Poll the collector until the server span of that call arrives.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let batch = tokio::time::timeout_at(deadline, exported.recv())
            .await
            .expect("the GetTrack span was exported within 30 s")
            .expect("the collector runs");
        for resource_spans in batch.resource_spans {
            let service_name = resource_spans
                .resource
                .as_ref()
                .and_then(|resource| {
                    resource
                        .attributes
                        .iter()
                        .find(|kv| kv.key == "service.name")
                })
                .and_then(|kv| text(kv.value.as_ref()))
                .map(str::to_owned);
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    if span.name != "consumer.v1.ConsumerGateway/GetTrack" {
                        continue;
                    }
                    assert_eq!(service_name.as_deref(), Some("consumer-gateway"));
                    let attribute = |key: &str| {
                        span.attributes
                            .iter()
                            .find(|kv| kv.key == key)
                            .and_then(|kv| text(kv.value.as_ref()))
                            .map(str::to_owned)
                    };
                    assert_eq!(attribute("rpc.system").as_deref(), Some("grpc"));
                    assert_eq!(attribute("rpc.method").as_deref(), Some("GetTrack"));
                    assert_eq!(span.trace_id.len(), 16);
                    return;
                }
            }
        }
    }
}

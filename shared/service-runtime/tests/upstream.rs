//! Upstream channels through the public interface: calls share one connection, made once
//! however many calls arrive before it is up, a lost connection is replaced, and an upstream
//! that cannot be reached fails calls as UNAVAILABLE at once.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use prometheus_client::registry::Registry;
use service_runtime::{
    metrics::GrpcMetrics,
    spawn::Running,
    upstream::{UpstreamChannel, channel},
};
use tokio::{net::TcpListener, task::JoinHandle};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

mod common;

/// A server with only the health service.
async fn start() -> Running {
    common::health_server(Default::default()).await
}

/// A TCP relay in front of a server that counts the connections it accepts and can cut them
/// all, as a restart of the upstream or a failed network path would.
struct Relay {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
    task: JoinHandle<()>,
}

impl Relay {
    async fn to(target: SocketAddr) -> Self {
        Self::on(TcpListener::bind("127.0.0.1:0").await.unwrap(), target)
    }

    /// A relay on `listener`.
    fn on(listener: TcpListener, target: SocketAddr) -> Self {
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let connections = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn({
            let (accepted, connections) = (accepted.clone(), connections.clone());
            async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    accepted.fetch_add(1, Ordering::SeqCst);
                    let connection = tokio::spawn(async move {
                        if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                    connections.lock().unwrap().push(connection);
                }
            }
        });
        Self {
            addr,
            accepted,
            connections,
            task,
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Closes every connection relayed so far.
    fn cut(&self) {
        for connection in self.connections.lock().unwrap().drain(..) {
            connection.abort();
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
        self.cut();
    }
}

fn client(url: String) -> HealthClient<UpstreamChannel> {
    let metrics = GrpcMetrics::register_client(&mut Registry::default());
    HealthClient::new(
        channel(
            "upstreams.test",
            &common::upstream(url, Default::default()),
            &metrics,
        )
        .unwrap(),
    )
}

/// One health check, which must end (either way) within ten seconds.
async fn check(client: &HealthClient<UpstreamChannel>) -> Result<(), tonic::Status> {
    let mut client = client.clone();
    let call = client.check(HealthCheckRequest {
        service: String::new(),
    });
    match tokio::time::timeout(Duration::from_secs(10), call).await {
        Ok(outcome) => outcome.map(drop),
        Err(_) => panic!("a call neither succeeded nor failed in ten seconds"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_share_one_connection_and_a_lost_one_is_replaced() {
    let server = start().await;
    let relay = Relay::to(server.grpc_addr).await;
    let client = client(format!("http://{}", relay.addr));

    // Thirty-two calls arrive before any connection is up: one connect serves them all.
    let calls: Vec<_> = (0..32)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { check(&client).await })
        })
        .collect();
    for call in calls {
        call.await.unwrap().unwrap();
    }
    assert_eq!(relay.accepted(), 1, "calls opened connections of their own");
    check(&client).await.unwrap();
    assert_eq!(relay.accepted(), 1);

    // The connection is lost: a later call is served on a new one.
    relay.cut();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match check(&client).await {
            Ok(()) => break,
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::Unavailable, "{status}");
                assert!(Instant::now() < deadline, "no call got through: {status}");
                tokio::task::yield_now().await;
            }
        }
    }
    assert_eq!(relay.accepted(), 2);
    for _ in 0..8 {
        check(&client).await.unwrap();
    }
    assert_eq!(relay.accepted(), 2, "the new connection is shared too");
    drop(relay);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_cannot_be_reached_fails_calls_as_unavailable() {
    // A port that was just free: nothing listens on it.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let client = client(format!("http://{addr}"));

    let calls: Vec<_> = (0..8)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { check(&client).await })
        })
        .collect();
    for call in calls {
        let status = call.await.unwrap().unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status}");
        assert!(
            status.message().contains("transport error")
                && status.message().contains(&addr.to_string()),
            "{status}"
        );
    }

    // The upstream comes up on that port: the next call connects.
    let server = start().await;
    let relay = Relay::on(TcpListener::bind(addr).await.unwrap(), server.grpc_addr);
    check(&client).await.unwrap();
    assert_eq!(relay.accepted(), 1);
    drop(relay);
    server.stop().await.unwrap();
}

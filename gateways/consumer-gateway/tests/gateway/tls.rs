//! TLS from the BFF to the gateway and mutual TLS from the gateway to the foundation and from
//! likes' relay to counts: queries and commands work end to end over gRPC and Twirp, plaintext
//! and unknown clients are refused, the `health` subcommand follows the TLS settings, and bad
//! files stop the gateway at start-up.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use foundation_kit::db::testing;
use protos::{
    consumer::v1::{
        GetTrackRequest, LikeTrackRequest, consumer_gateway_client::ConsumerGatewayClient,
    },
    foundation::counts::v1::{
        BatchGetTrackCountsRequest, counts_service_client::CountsServiceClient,
    },
};
use service_runtime::{
    Listeners,
    spawn::Running,
    tls::{ClientTlsSettings, ServerTlsSettings},
};
use test_pki::{Ca, Leaf, Pki};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use test_support::eventually;

use crate::fixture::{TRACKS, USERS, as_user, mask};

/// A public track every listener sees.
const TRACK: &str = "trk_00006";

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap()
}

/// A client TLS configuration trusting `ca`, for `localhost`, presenting `identity`.
fn client(ca: &Ca, identity: Option<&Leaf>) -> ClientTlsConfig {
    let config = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read(&ca.file)))
        .domain_name("localhost");
    match identity {
        Some(leaf) => config.identity(Identity::from_pem(read(&leaf.cert), read(&leaf.key))),
        None => config,
    }
}

/// The certificates of one deployment: one CA for the servers, one for the gateway's client
/// certificate, one for the BFFs'.
struct Deployment {
    pki: Pki,
    servers: Ca,
    gateways: Ca,
    bffs: Ca,
}

impl Deployment {
    fn new() -> Self {
        let pki = Pki::new();
        let servers = pki.ca("servers");
        let gateways = pki.ca("gateways");
        let bffs = pki.ca("bffs");
        Self {
            pki,
            servers,
            gateways,
            bffs,
        }
    }

    /// The gateway's settings: `server` on its port, tracks at `tracks_url` over mutual TLS.
    fn gateway_settings(
        &self,
        server: ServerTlsSettings,
        tracks_url: String,
    ) -> consumer_gateway::Settings {
        let mut settings = consumer_gateway::Settings::defaults();
        settings.server.tls = server;
        settings.upstreams.tracks.url = tracks_url;
        settings.upstreams.tracks.tls = self.foundation_client("gateway-client");
        for upstream in [
            &mut settings.upstreams.tracks,
            &mut settings.upstreams.likes,
        ] {
            upstream.timeout_ms = 5000;
            upstream.connect_timeout_ms = 5000;
        }
        settings
    }

    /// A foundation service's `server.tls`: mutual TLS, for clients of the gateways' CA.
    fn foundation_tls(&self, name: &str) -> ServerTlsSettings {
        let leaf = self.pki.leaf(&self.servers, name);
        ServerTlsSettings {
            cert_file: leaf.cert,
            key_file: leaf.key,
            client_ca_file: self.gateways.file.clone(),
        }
    }

    /// A foundation client's `tls`: trusting the servers' CA, with a gateways' certificate.
    fn foundation_client(&self, name: &str) -> ClientTlsSettings {
        let identity = self.pki.leaf(&self.gateways, name);
        ClientTlsSettings {
            ca_file: self.servers.file.clone(),
            cert_file: identity.cert,
            key_file: identity.key,
            domain: "localhost".into(),
        }
    }

    async fn wait_serving(&self, service: &Running) {
        let prober = self.pki.leaf(&self.gateways, "prober");
        service
            .wait_serving_with(
                Some(client(&self.servers, Some(&prober))),
                Instant::now() + Duration::from_secs(30),
            )
            .await
            .unwrap();
    }

    /// Tracks, seeded, requiring client certificates of the gateways' CA.
    async fn tracks(&self) -> Running {
        let mut settings = tracks::Settings::defaults();
        settings.database = testing::sqlite();
        settings.seed.enabled = true;
        settings.seed.users = USERS;
        settings.seed.tracks = TRACKS;
        settings.server.tls = self.foundation_tls("tracks");
        let tracks = Running::ephemeral("tracks", move |l, stop| tracks::run(settings, l, stop))
            .await
            .unwrap();
        self.wait_serving(&tracks).await;
        tracks
    }
}

fn get_track() -> GetTrackRequest {
    GetTrackRequest {
        track_id: TRACK.into(),
        read_mask: mask(&["title"]),
        secret_token: None,
    }
}

/// One GetTrack over gRPC to `gateway` with `tls` (plaintext when `None`).
async fn query(gateway: &Running, tls: Option<ClientTlsConfig>) -> Result<String, String> {
    let endpoint = match tls {
        Some(tls) => Channel::from_shared(format!("https://{}", gateway.grpc_addr))
            .unwrap()
            .tls_config(tls)
            .unwrap(),
        None => Channel::from_shared(gateway.url()).unwrap(),
    }
    .connect_timeout(Duration::from_secs(5))
    .timeout(Duration::from_secs(10));
    let channel = endpoint
        .connect()
        .await
        .map_err(|error| error.to_string())?;
    ConsumerGatewayClient::new(channel)
        .get_track(as_user(get_track(), Some("usr_0059"), "US"))
        .await
        .map(|response| response.into_inner().title)
        .map_err(|status| {
            // A refused handshake shows in the sources of the status.
            let mut text = format!("{:?}: {}", status.code(), status.message());
            let mut source = std::error::Error::source(&status);
            while let Some(cause) = source {
                text.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            text
        })
}

#[tokio::test]
async fn a_tls_gateway_serves_grpc_and_twirp_over_tls_and_reaches_tracks_over_mutual_tls() {
    let d = Deployment::new();
    let tracks = d.tracks().await;
    let leaf = d.pki.leaf(&d.servers, "gateway");
    let settings = d.gateway_settings(
        ServerTlsSettings {
            cert_file: leaf.cert,
            key_file: leaf.key,
            client_ca_file: String::new(),
        },
        format!("https://{}", tracks.grpc_addr),
    );
    let gateway = Running::ephemeral("consumer-gateway", move |l, stop| {
        consumer_gateway::run(settings, l, stop)
    })
    .await
    .unwrap();

    let title = query(&gateway, Some(client(&d.servers, None)))
        .await
        .unwrap();
    assert!(!title.is_empty(), "GetTrack over TLS lost the title");
    let plaintext = query(&gateway, None).await;
    assert!(plaintext.is_err(), "a plaintext client was served");

    // Twirp shares the port: HTTP/1.1 over TLS from a client that offers no ALPN.
    let response = twirp_over_tls(&gateway, &d.servers).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains(&title), "{response}");

    // Tracks refuses a gateway whose client certificate its CA did not issue.
    let stranger = d.pki.ca("strangers");
    let mut settings = d.gateway_settings(
        ServerTlsSettings::default(),
        format!("https://{}", tracks.grpc_addr),
    );
    let identity = d.pki.leaf(&stranger, "stranger");
    settings.upstreams.tracks.tls.cert_file = identity.cert;
    settings.upstreams.tracks.tls.key_file = identity.key;
    let refused = Running::ephemeral("consumer-gateway", move |l, stop| {
        consumer_gateway::run(settings, l, stop)
    })
    .await
    .unwrap();
    let error = query(&refused, None).await.unwrap_err();
    assert!(error.starts_with("Unavailable"), "{error}");
    refused.stop().await.unwrap();
    gateway.stop().await.unwrap();
    tracks.stop().await.unwrap();
}

/// `POST /twirp/consumer.v1.ConsumerGateway/GetTrack` as JSON over HTTP/1.1 and TLS; the raw
/// response.
async fn twirp_over_tls(gateway: &Running, ca: &Ca) -> String {
    use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_file_iter(&ca.file).unwrap() {
        roots.add(certificate.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let stream = tokio::net::TcpStream::connect(gateway.grpc_addr)
        .await
        .unwrap();
    let mut stream = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), stream)
        .await
        .unwrap();
    let token = authorization::token::mint_development_token(Some("usr_0059"), "US", 300);
    let body = format!(r#"{{"trackId":"{TRACK}","readMask":"title"}}"#);
    let request = format!(
        "POST /twirp/consumer.v1.ConsumerGateway/GetTrack HTTP/1.1\r\nHost: localhost\r\n\
         Content-Type: application/json\r\nAuthorization: Bearer {token}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    // The server may close without close_notify once it has answered.
    let _ = stream.read_to_end(&mut response).await;
    String::from_utf8_lossy(&response).into_owned()
}

#[tokio::test]
async fn a_mutual_tls_gateway_serves_only_bffs_with_a_certificate_of_its_client_ca() {
    let d = Deployment::new();
    let tracks = d.tracks().await;
    let leaf = d.pki.leaf(&d.servers, "gateway");
    let server = ServerTlsSettings {
        cert_file: leaf.cert,
        key_file: leaf.key,
        client_ca_file: d.bffs.file.clone(),
    };
    let settings = d.gateway_settings(server.clone(), format!("https://{}", tracks.grpc_addr));
    let gateway = Running::ephemeral("consumer-gateway", move |l, stop| {
        consumer_gateway::run(settings, l, stop)
    })
    .await
    .unwrap();

    let bff = d.pki.leaf(&d.bffs, "web-bff");
    let title = query(&gateway, Some(client(&d.servers, Some(&bff))))
        .await
        .unwrap();
    assert!(!title.is_empty());
    let anonymous = query(&gateway, Some(client(&d.servers, None)))
        .await
        .unwrap_err();
    // The handshake fails at the server: its alert or just the closed connection shows.
    assert!(anonymous.contains("transport error"), "{anonymous}");
    let stranger = d.pki.leaf(&d.gateways, "not-a-bff");
    let stranger = query(&gateway, Some(client(&d.servers, Some(&stranger))))
        .await
        .unwrap_err();
    assert!(stranger.contains("transport error"), "{stranger}");

    // The binary's `health` subcommand, as a container health check runs it: it reads the same
    // settings and needs only the files the server does not have.
    let config = d.pki.write(
        "gateway.toml",
        &format!(
            "[server.tls]\ncert_file = {:?}\nkey_file = {:?}\nclient_ca_file = {:?}\n",
            server.cert_file, server.key_file, server.client_ca_file
        ),
    );
    let addr = gateway.grpc_addr.to_string();
    let health = |extra: Vec<String>| {
        let config = config.clone();
        let addr = addr.clone();
        async move {
            tokio::process::Command::new(env!("CARGO_BIN_EXE_consumer-gateway"))
                .args(["--config", &config, "health", "--addr", &addr])
                .args(extra)
                .output()
                .await
                .unwrap()
        }
    };
    let served = health(vec![
        "--ca-file".into(),
        d.servers.file.clone(),
        "--cert-file".into(),
        bff.cert.clone(),
        "--key-file".into(),
        bff.key.clone(),
    ])
    .await;
    assert!(
        served.status.success(),
        "{}",
        String::from_utf8_lossy(&served.stderr)
    );
    // By default it presents the server's own certificate, which the BFFs' CA did not issue.
    let refused = health(vec!["--ca-file".into(), d.servers.file.clone()]).await;
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.starts_with("unhealthy: ") && stderr.contains("transport error"),
        "{stderr}"
    );

    gateway.stop().await.unwrap();
    tracks.stop().await.unwrap();
}

#[tokio::test]
async fn a_like_reaches_counts_through_the_relay_over_mutual_tls() {
    let d = Deployment::new();
    let tracks = d.tracks().await;
    let mut settings = counts::Settings::defaults();
    settings.database = testing::sqlite();
    settings.server.tls = d.foundation_tls("counts");
    let counts = Running::ephemeral("counts", move |l, stop| counts::run(settings, l, stop))
        .await
        .unwrap();
    d.wait_serving(&counts).await;
    let mut settings = likes::Settings::defaults();
    settings.database = testing::sqlite();
    settings.server.tls = d.foundation_tls("likes");
    settings.outbox.counts_url = format!("https://{}", counts.grpc_addr);
    settings.outbox.tls = d.foundation_client("likes-relay");
    settings.outbox.poll_interval_ms = 20;
    settings.outbox.max_backoff_ms = 200;
    let likes = Running::ephemeral("likes", move |l, stop| likes::run(settings, l, stop))
        .await
        .unwrap();
    d.wait_serving(&likes).await;
    let mut settings = d.gateway_settings(
        ServerTlsSettings::default(),
        format!("https://{}", tracks.grpc_addr),
    );
    settings.upstreams.likes.url = format!("https://{}", likes.grpc_addr);
    settings.upstreams.likes.tls = d.foundation_client("gateway-likes");
    let gateway = Running::ephemeral("consumer-gateway", move |l, stop| {
        consumer_gateway::run(settings, l, stop)
    })
    .await
    .unwrap();

    let changed = ConsumerGatewayClient::connect(gateway.url())
        .await
        .unwrap()
        .like_track(as_user(
            LikeTrackRequest {
                track_id: TRACK.into(),
            },
            Some("usr_0059"),
            "US",
        ))
        .await
        .unwrap()
        .into_inner()
        .changed;
    assert!(changed);

    let prober = d.pki.leaf(&d.gateways, "counts-reader");
    let channel = Channel::from_shared(format!("https://{}", counts.grpc_addr))
        .unwrap()
        .tls_config(client(&d.servers, Some(&prober)))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let reader = CountsServiceClient::new(channel);
    eventually("the like reaching counts", Duration::from_secs(10), || {
        let mut reader = reader.clone();
        async move {
            reader
                .batch_get_track_counts(BatchGetTrackCountsRequest {
                    track_ids: vec![TRACK.into()],
                })
                .await
                .is_ok_and(|response| response.into_inner().counts[0].likes_count == 1)
        }
    })
    .await;
    gateway.stop().await.unwrap();
    likes.stop().await.unwrap();
    counts.stop().await.unwrap();
    tracks.stop().await.unwrap();
}

/// Runs the gateway with `settings` and returns why it failed to start.
async fn startup_error(settings: consumer_gateway::Settings) -> String {
    let listeners = Listeners::ephemeral().await.unwrap();
    let run = consumer_gateway::run(settings, listeners, Box::pin(std::future::pending()));
    match tokio::time::timeout(Duration::from_secs(10), run).await {
        Ok(Err(error)) => error.to_string(),
        Ok(Ok(())) => panic!("the gateway stopped without an error"),
        Err(_) => panic!("the gateway started"),
    }
}

#[tokio::test]
async fn bad_tls_files_stop_the_gateway_at_start_up_naming_the_setting() {
    let d = Deployment::new();
    let leaf = d.pki.leaf(&d.servers, "gateway");
    let good = ServerTlsSettings {
        cert_file: leaf.cert,
        key_file: leaf.key,
        client_ca_file: String::new(),
    };
    let https = "https://127.0.0.1:1".to_owned();

    let mut settings = d.gateway_settings(good.clone(), https.clone());
    settings.server.tls.cert_file = "/nonexistent/gateway.pem".into();
    let error = startup_error(settings).await;
    assert!(
        error.contains("server.tls.cert_file: cannot read \"/nonexistent/gateway.pem\""),
        "{error}"
    );

    let mut settings = d.gateway_settings(good.clone(), https.clone());
    settings.server.tls.key_file = d.servers.file.clone();
    let error = startup_error(settings).await;
    assert!(error.contains("server.tls.key_file: "), "{error}");

    let mut settings = d.gateway_settings(good.clone(), https.clone());
    settings.upstreams.tracks.tls.ca_file = "/nonexistent/ca.pem".into();
    let error = startup_error(settings).await;
    assert!(
        error.contains("upstreams.tracks.tls.ca_file: cannot read"),
        "{error}"
    );

    let mut settings = d.gateway_settings(good, https);
    settings.upstreams.tracks.url = "http://127.0.0.1:1".into();
    let error = startup_error(settings).await;
    assert!(
        error.contains("upstreams.tracks.tls is set but upstreams.tracks.url is not https://"),
        "{error}"
    );
}

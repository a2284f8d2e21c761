//! TLS and mutual TLS through the public interface: the serve loop with `server.tls`, upstream
//! channels with `upstreams.<name>.tls`, and the health check, with certificates made here.

use std::time::Duration;

use prometheus_client::registry::Registry;
use service_runtime::{
    cli::check_health,
    metrics::GrpcMetrics,
    spawn::Running,
    tls::{ClientTlsSettings, ServerTlsSettings, loopback_client},
    upstream::{UpstreamSettings, channel},
};
use test_pki::{Ca, Leaf, Pki};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

mod common;

use common::upstream;

/// A server with only the health service, on `tls`.
async fn start(tls: ServerTlsSettings) -> Running {
    common::health_server(tls).await
}

fn server_tls(leaf: &Leaf, client_ca: Option<&Ca>) -> ServerTlsSettings {
    ServerTlsSettings {
        cert_file: leaf.cert.clone(),
        key_file: leaf.key.clone(),
        client_ca_file: client_ca.map(|ca| ca.file.clone()).unwrap_or_default(),
    }
}

fn client_tls(ca: &Ca, identity: Option<&Leaf>) -> ClientTlsSettings {
    ClientTlsSettings {
        ca_file: ca.file.clone(),
        cert_file: identity.map(|leaf| leaf.cert.clone()).unwrap_or_default(),
        key_file: identity.map(|leaf| leaf.key.clone()).unwrap_or_default(),
        domain: String::new(),
    }
}

/// One health check through an upstream channel of `settings`.
async fn call(settings: &UpstreamSettings) -> Result<(), String> {
    let metrics = GrpcMetrics::register_client(&mut Registry::default());
    let channel = channel("upstreams.test", settings, &metrics)?;
    let mut client = HealthClient::new(channel);
    let call = client.check(HealthCheckRequest {
        service: String::new(),
    });
    match tokio::time::timeout(Duration::from_secs(10), call).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(status)) => Err(status.to_string()),
        Err(_) => panic!("the call neither succeeded nor failed in time"),
    }
}

/// Whether a call failed because the server ended the handshake: its alert (`UnknownCA`,
/// `CertificateRequired`) may arrive or the connection may just close first, but either way the
/// call fails as a transport error, not with a status of the server.
fn refused_by_the_server(error: &str) -> bool {
    error.contains("transport error")
}

fn https(running: &Running) -> String {
    format!("https://{}", running.grpc_addr)
}

#[tokio::test]
async fn a_tls_server_answers_tls_clients_only_and_keeps_metrics_plaintext() {
    let pki = Pki::new();
    let ca = pki.ca("ca");
    let other = pki.ca("other-ca");
    let server = start(server_tls(&pki.leaf(&ca, "server"), None)).await;

    call(&upstream(https(&server), client_tls(&ca, None)))
        .await
        .unwrap();
    // The name checked can be set apart from the url's host.
    let mut named = client_tls(&ca, None);
    named.domain = "localhost".into();
    call(&upstream(https(&server), named)).await.unwrap();

    let plaintext = call(&upstream(server.url(), ClientTlsSettings::default())).await;
    assert!(plaintext.is_err(), "a plaintext client was served");
    let untrusted = call(&upstream(https(&server), client_tls(&other, None)))
        .await
        .unwrap_err();
    assert!(untrusted.contains("UnknownIssuer"), "{untrusted}");
    let mut misnamed = client_tls(&ca, None);
    misnamed.domain = "elsewhere.example".into();
    let misnamed = call(&upstream(https(&server), misnamed)).await.unwrap_err();
    assert!(misnamed.contains("not valid for name"), "{misnamed}");

    assert!(
        server
            .scrape()
            .await
            .unwrap()
            .contains("grpc_server_handled_total"),
        "metrics are served over plain HTTP"
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn mutual_tls_serves_only_clients_with_a_certificate_of_the_client_ca() {
    let pki = Pki::new();
    let ca = pki.ca("ca");
    let clients = pki.ca("client-ca");
    let other = pki.ca("other-ca");
    let server = start(server_tls(&pki.leaf(&ca, "server"), Some(&clients))).await;

    let good = pki.leaf(&clients, "gateway");
    call(&upstream(https(&server), client_tls(&ca, Some(&good))))
        .await
        .unwrap();

    let anonymous = call(&upstream(https(&server), client_tls(&ca, None)))
        .await
        .unwrap_err();
    assert!(refused_by_the_server(&anonymous), "{anonymous}");
    let stranger = pki.leaf(&other, "stranger");
    let stranger = call(&upstream(https(&server), client_tls(&ca, Some(&stranger))))
        .await
        .unwrap_err();
    assert!(refused_by_the_server(&stranger), "{stranger}");
    // A certificate of the server's CA is no client certificate either.
    let sibling = pki.leaf(&ca, "sibling");
    let sibling = call(&upstream(https(&server), client_tls(&ca, Some(&sibling))))
        .await
        .unwrap_err();
    assert!(refused_by_the_server(&sibling), "{sibling}");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn the_health_check_follows_the_server_tls_settings() {
    let pki = Pki::new();
    let ca = pki.ca("ca");
    let timeout = Duration::from_secs(5);

    // TLS with a chain file that holds the issuer: no flags needed.
    let leaf = pki.leaf(&ca, "server");
    let chain = pki.write(
        "chain.pem",
        &format!(
            "{}\n{}",
            std::fs::read_to_string(&leaf.cert).unwrap(),
            std::fs::read_to_string(&ca.file).unwrap()
        ),
    );
    let tls = ServerTlsSettings {
        cert_file: chain,
        ..server_tls(&leaf, None)
    };
    let server = start(tls.clone()).await;
    let config = loopback_client(&tls, None, None, "localhost").unwrap();
    check_health(server.grpc_addr, Some(config), timeout)
        .await
        .unwrap();
    assert!(check_health(server.grpc_addr, None, timeout).await.is_err());
    server
        .wait_serving_with(
            Some(loopback_client(&tls, None, None, "localhost").unwrap()),
            std::time::Instant::now() + timeout,
        )
        .await
        .unwrap();
    server.stop().await.unwrap();

    // Mutual TLS with one CA for servers and clients: the server's own certificate serves as
    // the client's, and the client CA as the trust anchor.
    let tls = server_tls(&leaf, Some(&ca));
    let server = start(tls.clone()).await;
    let config = loopback_client(&tls, None, None, "localhost").unwrap();
    check_health(server.grpc_addr, Some(config), timeout)
        .await
        .unwrap();
    // Explicit files, as the --ca-file, --cert-file and --key-file flags give them.
    let client = pki.leaf(&ca, "prober");
    let config = loopback_client(
        &tls,
        Some(&ca.file),
        Some((&client.cert, &client.key)),
        "localhost",
    )
    .unwrap();
    check_health(server.grpc_addr, Some(config), timeout)
        .await
        .unwrap();
    let error = loopback_client(&tls, Some("/nonexistent/ca.pem"), None, "localhost").unwrap_err();
    assert!(error.starts_with("--ca-file: cannot read"), "{error}");
    server.stop().await.unwrap();
}

/// Starts a server on `tls` and returns why it stopped.
async fn startup_error(tls: ServerTlsSettings) -> String {
    start(tls).await.stop().await.unwrap_err()
}

#[tokio::test]
async fn bad_server_files_fail_start_up_naming_the_setting() {
    let pki = Pki::new();
    let ca = pki.ca("ca");
    let leaf = pki.leaf(&ca, "server");
    let other = pki.leaf(&ca, "other");
    let garbage = pki.write("garbage.pem", "not a certificate\n");
    let good = server_tls(&leaf, Some(&ca));
    let cases = [
        (
            ServerTlsSettings {
                cert_file: "/nonexistent/server.pem".into(),
                ..good.clone()
            },
            "server.tls.cert_file: cannot read \"/nonexistent/server.pem\"",
        ),
        (
            ServerTlsSettings {
                cert_file: garbage.clone(),
                ..good.clone()
            },
            "server.tls.cert_file: ",
        ),
        (
            ServerTlsSettings {
                key_file: "/nonexistent/key.pem".into(),
                ..good.clone()
            },
            "server.tls.key_file: cannot read",
        ),
        (
            ServerTlsSettings {
                key_file: leaf.cert.clone(),
                ..good.clone()
            },
            "server.tls.key_file: ",
        ),
        (
            ServerTlsSettings {
                key_file: other.key.clone(),
                ..good.clone()
            },
            "server.tls.key_file: does not fit server.tls.cert_file",
        ),
        (
            ServerTlsSettings {
                key_file: String::new(),
                ..good.clone()
            },
            "server.tls.key_file is empty",
        ),
        (
            ServerTlsSettings {
                client_ca_file: garbage,
                ..good.clone()
            },
            "server.tls.client_ca_file: ",
        ),
        (
            ServerTlsSettings {
                client_ca_file: "/nonexistent/ca.pem".into(),
                ..good.clone()
            },
            "server.tls.client_ca_file: cannot read",
        ),
        (
            ServerTlsSettings {
                cert_file: String::new(),
                ..good.clone()
            },
            "server.tls.key_file is set but server.tls.cert_file is empty",
        ),
    ];
    for (tls, expected) in cases {
        let error = startup_error(tls.clone()).await;
        assert!(
            error.contains(expected),
            "{tls:?}: expected {expected:?} in {error:?}"
        );
    }
}

#[test]
fn bad_upstream_tls_settings_fail_naming_the_setting() {
    let pki = Pki::new();
    let ca = pki.ca("ca");
    let leaf = pki.leaf(&ca, "gateway");
    let other = pki.leaf(&ca, "other");
    let garbage = pki.write("garbage.pem", "-----BEGIN CERTIFICATE-----\nnot base64!\n");
    let url = "https://127.0.0.1:1".to_owned();
    let good = client_tls(&ca, Some(&leaf));
    let cases = [
        (
            url.clone(),
            ClientTlsSettings::default(),
            "upstreams.test.tls.ca_file is required for an https:// url",
        ),
        (
            url.clone(),
            ClientTlsSettings {
                ca_file: "/nonexistent/ca.pem".into(),
                ..good.clone()
            },
            "upstreams.test.tls.ca_file: cannot read",
        ),
        (
            url.clone(),
            ClientTlsSettings {
                ca_file: garbage,
                ..good.clone()
            },
            "upstreams.test.tls.ca_file: ",
        ),
        (
            url.clone(),
            ClientTlsSettings {
                cert_file: "/nonexistent/cert.pem".into(),
                ..good.clone()
            },
            "upstreams.test.tls.cert_file: cannot read",
        ),
        (
            url.clone(),
            ClientTlsSettings {
                key_file: other.key.clone(),
                ..good.clone()
            },
            "upstreams.test.tls.key_file: does not fit upstreams.test.tls.cert_file",
        ),
        (
            url.clone(),
            ClientTlsSettings {
                key_file: String::new(),
                ..good.clone()
            },
            "upstreams.test.tls.cert_file is set but upstreams.test.tls.key_file is empty",
        ),
        (
            url.clone(),
            ClientTlsSettings {
                domain: "not a name".into(),
                ..good.clone()
            },
            "upstreams.test.tls.domain: ",
        ),
        (
            "http://127.0.0.1:1".to_owned(),
            good.clone(),
            "upstreams.test.tls is set but upstreams.test.url",
        ),
    ];
    let metrics = GrpcMetrics::register_client(&mut Registry::default());
    for (url, tls, expected) in cases {
        let error = channel("upstreams.test", &upstream(url, tls.clone()), &metrics)
            .map(|_| ())
            .unwrap_err();
        assert!(
            error.starts_with(expected),
            "{tls:?}: expected {expected:?} at the start of {error:?}"
        );
    }
    // Good files make a channel, lazily: nothing is listening.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _entered = runtime.enter();
    channel("upstreams.test", &upstream(url, good), &metrics).unwrap();
}

//! The README's gatewayctl examples against the in-process topology: through the library (the
//! same parsing as the binary) and through the real binary.

use std::time::Duration;

use authorization::{AuthSettings, Verifier};
use clap::Parser;
use gatewayctl::Cli;
use serde_json::Value;
use topology::{Options, Topology};

/// Runs one command line (without the program name) against the topology's gateways.
async fn gatewayctl(topology: &Topology, token: &str, args: &[&str]) -> anyhow::Result<String> {
    let consumer = topology.consumer_gateway.url();
    let creator = topology.creator_gateway.url();
    let mut line = vec!["gatewayctl"];
    line.extend_from_slice(args);
    line.extend([
        "--consumer-url",
        &consumer,
        "--creator-url",
        &creator,
        "--token",
        token,
    ]);
    gatewayctl::run(Cli::try_parse_from(line)?).await
}

/// The JSON document at the start of a `call` output (a `degraded:` line may follow).
fn json(output: &str) -> Value {
    let end = output.rfind('}').expect("a JSON object") + 1;
    serde_json::from_str(&output[..end]).unwrap()
}

#[tokio::test]
async fn the_readme_examples_run() {
    let topology = Topology::start(Options {
        seed_users: 200,
        seed_tracks: 300,
        ephemeral: true,
        ..Options::default()
    })
    .await
    .unwrap();
    topology.wait_ready(Duration::from_secs(60)).await.unwrap();

    // export TOKEN=$(gatewayctl token --user usr_0001 --territory US)
    let line = [
        "gatewayctl",
        "token",
        "--user",
        "usr_0001",
        "--territory",
        "US",
    ];
    let token = gatewayctl::run(Cli::try_parse_from(line).unwrap())
        .await
        .unwrap()
        .trim()
        .to_owned();
    let principal = Verifier::new(&AuthSettings::development())
        .unwrap()
        .verify(&token)
        .unwrap();
    assert_eq!(principal.user(), Some("usr_0001"));
    assert_eq!(principal.territory, "US");
    assert_eq!(principal.client, None);

    // gatewayctl token --user usr_0001 --client web-bff
    let line = [
        "gatewayctl",
        "token",
        "--user",
        "usr_0001",
        "--client",
        "web-bff",
    ];
    let issued = gatewayctl::run(Cli::try_parse_from(line).unwrap())
        .await
        .unwrap();
    let principal = Verifier::new(&AuthSettings::development())
        .unwrap()
        .verify(issued.trim())
        .unwrap();
    assert_eq!(principal.client.as_deref(), Some("web-bff"));

    // gatewayctl call consumer GetTrack -d '{"track_id":"trk_00001"}' --mask title,creator.followers_count,stats
    let output = gatewayctl(
        &topology,
        &token,
        &[
            "call",
            "consumer",
            "GetTrack",
            "-d",
            r#"{"track_id":"trk_00001"}"#,
            "--mask",
            "title,creator.followers_count,stats",
        ],
    )
    .await
    .unwrap();
    let track = json(&output);
    assert!(track["title"].is_string(), "{output}");
    assert!(track.get("description").is_none(), "{output}");
    assert!(track["creator"]["followersCount"].is_string(), "{output}");
    assert!(track["stats"]["likesCount"].is_string(), "{output}");
    assert!(!output.contains("degraded"), "{output}");

    // gatewayctl call consumer BatchGetTracks -d '{"trackIds":["trk_00001","trk_00003"]}' --mask title
    let output = gatewayctl(
        &topology,
        &token,
        &[
            "call",
            "consumer",
            "BatchGetTracks",
            "-d",
            r#"{"trackIds":["trk_00001","trk_00003"]}"#,
            "--mask",
            "title",
        ],
    )
    .await
    .unwrap();
    assert_eq!(
        json(&output)["missingIds"],
        serde_json::json!(["trk_00003"])
    );

    // gatewayctl call consumer LikeTrack -d '{"track_id":"trk_00042"}'
    let output = gatewayctl(
        &topology,
        &token,
        &[
            "call",
            "consumer",
            "LikeTrack",
            "-d",
            r#"{"track_id":"trk_00042"}"#,
        ],
    )
    .await
    .unwrap();
    assert!(json(&output).is_object(), "{output}");

    // gatewayctl explain --mask creator.followersCount,stats
    let output = gatewayctl(
        &topology,
        &token,
        &["explain", "--mask", "creator.followersCount,stats"],
    )
    .await
    .unwrap();
    assert!(
        output.starts_with("read mask: creator.followersCount,stats\n"),
        "{output}"
    );
    assert!(output.contains("counts."), "{output}");

    // An invalid mask names the path.
    let error = gatewayctl(
        &topology,
        &token,
        &[
            "call",
            "consumer",
            "GetTrack",
            "-d",
            r#"{"track_id":"trk_00001"}"#,
            "--mask",
            "nope",
        ],
    )
    .await
    .unwrap_err();
    assert!(error.to_string().contains("nope"), "{error}");

    // gatewayctl upload demo.mp3 --title Demo --downloadable
    // gatewayctl download <id> -o copy.mp3
    let dir = tempfile::tempdir().unwrap();
    let audio: Vec<u8> = (0..700_000_u32).map(|i| (i % 251) as u8).collect();
    let file = dir.path().join("demo.mp3");
    std::fs::write(&file, &audio).unwrap();
    let file = file.to_str().unwrap();
    let output = gatewayctl(
        &topology,
        &token,
        &["upload", file, "--title", "Demo", "--downloadable"],
    )
    .await
    .unwrap();
    let uploaded = json(&output);
    assert_eq!(uploaded["title"], "Demo", "{output}");
    assert_eq!(
        uploaded["audio"]["sizeBytes"],
        audio.len().to_string(),
        "{output}"
    );
    let id = uploaded["id"].as_str().unwrap();
    let copy = dir.path().join("copy.mp3");
    let output = gatewayctl(
        &topology,
        &token,
        &["download", id, "-o", copy.to_str().unwrap()],
    )
    .await
    .unwrap();
    assert!(
        output.starts_with(&format!("{} bytes written", audio.len())),
        "{output}"
    );
    assert_eq!(std::fs::read(&copy).unwrap(), audio);

    // gatewayctl call creator ListMyTracks --mask id,title
    let output = gatewayctl(
        &topology,
        &token,
        &["call", "creator", "ListMyTracks", "--mask", "id,title"],
    )
    .await
    .unwrap();
    let listed = json(&output);
    assert!(
        listed["tracks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|track| track["id"] == id),
        "{output}"
    );

    // The real binary, as the README runs it, with the token from the environment.
    let binary = env!("CARGO_BIN_EXE_gatewayctl");
    let consumer = topology.consumer_gateway.url();
    let output = tokio::process::Command::new(binary)
        .args([
            "call",
            "consumer",
            "GetTrack",
            "-d",
            r#"{"track_id":"trk_00001"}"#,
        ])
        .args(["--mask", "title", "--consumer-url", &consumer])
        .env("TOKEN", &token)
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let track = json(&String::from_utf8(output.stdout).unwrap());
    assert_eq!(
        track.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["title"]
    );
    let output = tokio::process::Command::new(binary)
        .args([
            "call",
            "consumer",
            "DownloadTrack",
            "--consumer-url",
            &consumer,
        ])
        .env("TOKEN", &token)
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("gatewayctl download"), "{stderr}");

    // A BFF's read, then the field usage of both gateways from their real metrics pages:
    // gatewayctl usage --metrics http://127.0.0.1:9051/metrics --export usage.json
    let web_bff =
        authorization::token::mint_development_client_token(None, "US", 600, Some("web-bff"));
    gatewayctl(
        &topology,
        &web_bff,
        &[
            "call",
            "consumer",
            "GetTrack",
            "-d",
            r#"{"track_id":"trk_00001"}"#,
            "--mask",
            "title",
        ],
    )
    .await
    .unwrap();
    let export = dir.path().join("usage.json");
    let output = gatewayctl(
        &topology,
        &token,
        &[
            "usage",
            "--metrics",
            &topology.consumer_gateway.metrics_url(),
            "--metrics",
            &topology.creator_gateway.metrics_url(),
            "--export",
            export.to_str().unwrap(),
        ],
    )
    .await
    .unwrap();
    assert!(
        output.starts_with("consumer.v1.Track (1 replica)\n"),
        "{output}"
    );
    assert!(
        output.contains("\ncreator.v1.Track (1 replica)\n"),
        "{output}"
    );
    let snapshot: Value = serde_json::from_str(&std::fs::read_to_string(&export).unwrap()).unwrap();
    let consumer_view = &snapshot["views"]["consumer.v1.Track"];
    assert_eq!(
        consumer_view["web-bff"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["title"],
        "{snapshot}"
    );
    assert_eq!(consumer_view["web-bff"]["title"]["reads"], 1, "{snapshot}");
    let last_read = consumer_view["web-bff"]["title"]["last_read"]
        .as_u64()
        .unwrap();
    let taken_at = snapshot["taken_at"].as_u64().unwrap();
    assert!(
        (taken_at.saturating_sub(60)..=taken_at).contains(&last_read),
        "{snapshot}"
    );
    // The earlier calls carried no client name: the listener's mask paths, leaf by leaf.
    assert!(
        consumer_view["unknown"]["creator.followers_count"]["reads"]
            .as_u64()
            .unwrap()
            >= 1,
        "{snapshot}"
    );
    assert!(
        snapshot["views"]["creator.v1.Track"]["unknown"]["title"]["reads"]
            .as_u64()
            .unwrap()
            >= 1,
        "{snapshot}"
    );

    // With counts down the call still answers, and says what it left out.
    topology.counts.signal_stop();
    let output = gatewayctl(
        &topology,
        &token,
        &[
            "call",
            "consumer",
            "GetTrack",
            "-d",
            // A track whose counters no earlier read brought into the gateway's cache.
            r#"{"track_id":"trk_00002"}"#,
            "--mask",
            "title,stats",
        ],
    )
    .await
    .unwrap();
    assert!(output.contains("degraded: stats"), "{output}");
    topology.stop().await.unwrap();
}

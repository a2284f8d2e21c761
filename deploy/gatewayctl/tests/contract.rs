//! `gatewayctl usage` and `gatewayctl contract` through the command line: descriptor sets made
//! from the gateways' real ones with a field removed or renamed, hand-written usage snapshots,
//! and replicas' metrics pages served from loopback listeners.

use std::{
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use clap::Parser;
use gatewayctl::Cli;
use prost::Message;
use prost_types::{DescriptorProto, FileDescriptorSet};
use serde_json::{Value, json};
use test_support::ServedBody;

/// When the hand-written snapshots were taken: 2026-11-30T00:53:20Z.
const TAKEN_AT: u64 = 1_796_000_000;
const DAY: u64 = 86_400;

async fn gatewayctl(args: &[&str]) -> anyhow::Result<String> {
    let mut line = vec!["gatewayctl"];
    line.extend_from_slice(args);
    gatewayctl::run(Cli::try_parse_from(line)?).await
}

/// The consumer gateway's descriptor set, changed by `edit` on its `consumer.v1` file.
fn consumer_set(edit: impl FnOnce(&mut [DescriptorProto])) -> Vec<u8> {
    let mut set = FileDescriptorSet::decode(protos::descriptors::CONSUMER).unwrap();
    let file = set
        .file
        .iter_mut()
        .find(|file| file.package() == "consumer.v1")
        .unwrap();
    edit(&mut file.message_type);
    set.encode_to_vec()
}

fn message<'a>(messages: &'a mut [DescriptorProto], name: &str) -> &'a mut DescriptorProto {
    messages.iter_mut().find(|m| m.name() == name).unwrap()
}

fn remove_field(messages: &mut [DescriptorProto], in_message: &str, field: &str) {
    let message = message(messages, in_message);
    let before = message.field.len();
    message.field.retain(|f| f.name() != field);
    assert_eq!(message.field.len(), before - 1, "{in_message} has {field}");
}

fn rename_field(messages: &mut [DescriptorProto], in_message: &str, from: &str, to: &str) {
    let field = message(messages, in_message)
        .field
        .iter_mut()
        .find(|f| f.name() == from)
        .unwrap();
    field.name = Some(to.into());
    field.json_name = None;
}

/// A snapshot of the consumer view in format version 1: `reads` is (client, path, reads,
/// last read).
fn snapshot(reads: &[(&str, &str, u64, u64)]) -> Value {
    let mut clients = serde_json::Map::new();
    for (client, path, count, last_read) in reads {
        clients
            .entry(*client)
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .unwrap()
            .insert(
                (*path).into(),
                json!({"reads": count, "last_read": last_read}),
            );
    }
    json!({
        "version": 1,
        "taken_at": TAKEN_AT,
        "sources": ["http://10.0.0.7:9051/metrics"],
        "views": {"consumer.v1.Track": clients},
    })
}

/// The base set, the head set and the snapshot as files; returns their paths.
struct Files {
    _dir: tempfile::TempDir,
    base: PathBuf,
    head: PathBuf,
    usage: PathBuf,
}

fn files(head: Vec<u8>, usage: &Value) -> Files {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.binpb");
    let head_file = dir.path().join("head.binpb");
    let usage_file = dir.path().join("prod.json");
    std::fs::write(&base, protos::descriptors::CONSUMER).unwrap();
    std::fs::write(&head_file, head).unwrap();
    std::fs::write(&usage_file, serde_json::to_string_pretty(usage).unwrap()).unwrap();
    Files {
        _dir: dir,
        base,
        head: head_file,
        usage: usage_file,
    }
}

async fn contract(files: &Files, extra: &[&str]) -> anyhow::Result<String> {
    let mut args = vec![
        "contract",
        "--base",
        path(&files.base),
        "--head",
        path(&files.head),
        "--view",
        "consumer.v1.Track",
        "--usage",
        path(&files.usage),
    ];
    args.extend_from_slice(extra);
    gatewayctl(&args).await
}

fn path(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[tokio::test]
async fn removing_a_path_a_client_read_within_the_window_fails_naming_the_client() {
    let files = files(
        consumer_set(|messages| remove_field(messages, "Track", "title")),
        &snapshot(&[
            ("web-bff", "title", 12, TAKEN_AT - 2 * DAY),
            ("ios-bff", "stats.likes_count", 3, TAKEN_AT),
        ]),
    );
    let error = format!("{:#}", contract(&files, &[]).await.unwrap_err());
    assert!(
        error.contains("consumer.v1.Track path title is removed"),
        "{error}"
    );
    assert!(
        error.contains(
            "client web-bff read it 12 times, last at 2026-11-28T00:53:20Z (2d before the snapshot)"
        ),
        "{error}"
    );
    assert!(error.contains("prod.json"), "{error}");
    assert!(error.contains("within the 30d window"), "{error}");
    // The client that reads only what stays is not blamed.
    assert!(!error.contains("ios-bff"), "{error}");
}

#[tokio::test]
async fn removing_a_path_nobody_read_passes_with_a_note() {
    let files = files(
        consumer_set(|messages| remove_field(messages, "Track", "description")),
        &snapshot(&[("web-bff", "title", 12, TAKEN_AT)]),
    );
    let output = contract(&files, &[]).await.unwrap();
    assert!(
        output.contains(
            "note: consumer.v1.Track path description is removed; no client read it within the 30d window"
        ),
        "{output}"
    );
    assert!(output.contains("contract holds"), "{output}");
}

#[tokio::test]
async fn without_a_snapshot_a_removal_passes_saying_nothing_weighed_it() {
    let files = files(
        consumer_set(|messages| remove_field(messages, "Track", "title")),
        &snapshot(&[]),
    );
    let args = [
        "contract",
        "--base",
        path(&files.base),
        "--head",
        path(&files.head),
        "--view",
        "consumer.v1.Track",
    ];
    let output = gatewayctl(&args).await.unwrap();
    assert!(output.contains("note: no usage snapshot given"), "{output}");
    assert!(
        output.contains(
            "consumer.v1.Track path title is removed; no usage snapshot to weigh it against"
        ),
        "{output}"
    );
}

#[tokio::test]
async fn a_read_older_than_the_window_passes_and_a_longer_window_catches_it() {
    let files = files(
        consumer_set(|messages| remove_field(messages, "Track", "title")),
        &snapshot(&[("web-bff", "title", 12, TAKEN_AT - 45 * DAY)]),
    );
    let output = contract(&files, &[]).await.unwrap();
    assert!(
        output.contains("no client read it within the 30d window (earlier: client web-bff"),
        "{output}"
    );
    let error = format!(
        "{:#}",
        contract(&files, &["--window", "60d"]).await.unwrap_err()
    );
    assert!(error.contains("client web-bff read it 12 times"), "{error}");
    // Hours are a unit too: 45 days are beyond 1000 hours.
    contract(&files, &["--window", "1000h"]).await.unwrap();
}

#[tokio::test]
async fn a_rename_counts_as_a_removal() {
    let files = files(
        consumer_set(|messages| {
            rename_field(messages, "Creator", "followers_count", "follower_count")
        }),
        &snapshot(&[("ios-bff", "creator.followers_count", 7, TAKEN_AT - DAY)]),
    );
    let error = format!("{:#}", contract(&files, &[]).await.unwrap_err());
    assert!(
        error.contains(
            "consumer.v1.Track path creator.followers_count is renamed to creator.follower_count, but client ios-bff read it 7 times"
        ),
        "{error}"
    );
}

#[tokio::test]
async fn reads_of_paths_neither_set_has_warn_of_a_stale_snapshot() {
    let files = files(
        protos::descriptors::CONSUMER.to_vec(),
        &snapshot(&[
            ("web-bff", "title", 12, TAKEN_AT),
            ("web-bff", "play_count", 2, TAKEN_AT),
        ]),
    );
    let output = contract(&files, &[]).await.unwrap();
    assert!(
        output.contains("warning: ")
            && output.contains("path play_count, which neither descriptor set has"),
        "{output}"
    );
    assert!(
        output.contains("consumer.v1.Track: no path removed"),
        "{output}"
    );
}

#[tokio::test]
async fn the_binary_exits_non_zero_and_names_the_reader() {
    let files = files(
        consumer_set(|messages| remove_field(messages, "Creator", "followers_count")),
        &snapshot(&[("web-bff", "creator.followers_count", 4, TAKEN_AT)]),
    );
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_gatewayctl"))
        .args([
            "contract",
            "--base",
            path(&files.base),
            "--head",
            path(&files.head),
        ])
        .args(["--view", "consumer.v1.Track", "--usage", path(&files.usage)])
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("creator.followers_count is removed, but client web-bff read it 4 times"),
        "{stderr}"
    );
}

/// A replica's page as prometheus_client writes it, plus series of other families.
fn page(title_reads: u64, title_last: u64, likes_reads: u64, likes_last: u64) -> String {
    format!(
        "# HELP gateway_view The view this gateway serves.\n\
         # TYPE gateway_view info\n\
         gateway_view_info{{view=\"consumer.v1.Track\"}} 1\n\
         # HELP gateway_field_reads Reads served per client and path.\n\
         # TYPE gateway_field_reads counter\n\
         gateway_field_reads_total{{client=\"web-bff\",path=\"title\"}} {title_reads}\n\
         gateway_field_reads_total{{path=\"stats.likes_count\",client=\"studio \\\"beta\\\"\"}} {likes_reads}\n\
         # TYPE gateway_field_last_read_seconds gauge\n\
         gateway_field_last_read_seconds{{client=\"web-bff\",path=\"title\"}} {title_last}\n\
         gateway_field_last_read_seconds{{path=\"stats.likes_count\",client=\"studio \\\"beta\\\"\"}} {likes_last}\n\
         # TYPE grpc_server_handled counter\n\
         grpc_server_handled_total{{grpc_service=\"consumer.v1.ConsumerGateway\",grpc_method=\"GetTrack\",grpc_code=\"OK\"}} 40\n\
         # EOF\n"
    )
}

#[tokio::test]
async fn usage_sums_the_replicas_and_exports_a_snapshot_the_contract_reads() {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let one = ServedBody::start(page(12, now - 5 * DAY, 1, now - 9 * DAY)).await;
    let two = ServedBody::start(page(5, now - 3 * DAY, 2, now - 40 * DAY)).await;
    let dir = tempfile::tempdir().unwrap();
    let export = dir.path().join("usage.json");
    let output = gatewayctl(&[
        "usage",
        "--metrics",
        &one.url("/metrics"),
        "--metrics",
        &two.url("/metrics"),
        "--export",
        path(&export),
    ])
    .await
    .unwrap();
    assert_eq!((one.requests(), two.requests()), (1, 1));
    assert!(
        output.starts_with("consumer.v1.Track (2 replicas)\n"),
        "{output}"
    );
    let rows: Vec<&str> = output.lines().map(str::trim).collect();
    let row = |path: &str| {
        rows.iter()
            .find(|row| row.split_whitespace().next() == Some(path))
            .map(|row| row.split_whitespace().collect::<Vec<_>>().join(" "))
            .unwrap_or_else(|| panic!("no row {path} in\n{output}"))
    };
    assert_eq!(row("path"), "path studio \"beta\" web-bff");
    assert_eq!(row("title"), "title - 17 (3d ago)");
    assert_eq!(row("stats.likes_count"), "stats.likes_count 3 (9d ago) -");
    // Paths of the view nobody read show too, so that a team sees what it could remove.
    assert_eq!(row("access.downloadable"), "access.downloadable - -");
    assert!(output.contains("usage snapshot written to"), "{output}");

    let snapshot: Value = serde_json::from_str(&std::fs::read_to_string(&export).unwrap()).unwrap();
    assert_eq!(snapshot["version"], 1);
    let taken_at = snapshot["taken_at"].as_u64().unwrap();
    assert!((now..now + 60).contains(&taken_at), "{snapshot}");
    assert_eq!(
        snapshot["views"]["consumer.v1.Track"],
        json!({
            "studio \"beta\"": {"stats.likes_count": {"reads": 3, "last_read": now - 9 * DAY}},
            "web-bff": {"title": {"reads": 17, "last_read": now - 3 * DAY}},
        })
    );
    assert_eq!(
        snapshot["sources"],
        json!([one.url("/metrics"), two.url("/metrics")])
    );

    // The exported snapshot is what the contract check weighs a removal against.
    let dir_sets = tempfile::tempdir().unwrap();
    let base = dir_sets.path().join("base.binpb");
    let head = dir_sets.path().join("head.binpb");
    std::fs::write(&base, protos::descriptors::CONSUMER).unwrap();
    std::fs::write(
        &head,
        consumer_set(|messages| remove_field(messages, "Stats", "likes_count")),
    )
    .unwrap();
    let args = [
        "contract",
        "--base",
        path(&base),
        "--head",
        path(&head),
        "--view",
        "consumer.v1.Track",
        "--usage",
        path(&export),
    ];
    let error = format!("{:#}", gatewayctl(&args).await.unwrap_err());
    assert!(
        error.contains("stats.likes_count is removed, but client studio \"beta\" read it 3 times"),
        "{error}"
    );
}

#[tokio::test]
async fn a_page_that_is_not_a_gateway_s_fails_naming_it() {
    let served = ServedBody::start("gateway_field_reads_total{path=\"title\"} 1\n").await;
    let url = served.url("/metrics");
    let error = format!(
        "{:#}",
        gatewayctl(&["usage", "--metrics", &url]).await.unwrap_err()
    );
    assert!(error.contains(&url), "{error}");
    assert!(error.contains("no gateway_view_info"), "{error}");
}

/// The sets `buf build` writes decode too (they carry buf's own extensions to the files); skips,
/// saying so, where buf is not installed.
#[tokio::test]
async fn sets_built_by_buf_decode_and_compare() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = tempfile::tempdir().unwrap();
    let built = dir.path().join("head.binpb");
    let status = std::process::Command::new("buf")
        .current_dir(&root)
        .args(["build", "proto", "-o", path(&built)])
        .status();
    match status {
        Err(error) => {
            println!("skipping: buf is not installed ({error}); `python3 -m pip install buf-bin`");
            return;
        }
        Ok(status) => assert!(status.success(), "buf build failed"),
    }
    let output = gatewayctl(&["contract", "--base", path(&built), "--head", path(&built)])
        .await
        .unwrap();
    assert!(
        output.contains("consumer.v1.Track: no path removed"),
        "{output}"
    );
    assert!(
        output.contains("creator.v1.Track: no path removed"),
        "{output}"
    );
}

use super::*;

#[test]
fn label_values_are_unescaped_in_any_order() {
    let sample = parse_sample(
        r#"gateway_field_reads_total{path="title",client="web \"beta\"\\bff\nx",replica="a",} 12"#,
    )
    .unwrap();
    assert_eq!(sample.name, "gateway_field_reads_total");
    assert_eq!(sample.labels["client"], "web \"beta\"\\bff\nx");
    assert_eq!(sample.labels["path"], "title");
    assert_eq!(sample.labels["replica"], "a");
    assert_eq!(sample.value, 12.0);

    let sample = parse_sample("up 1.0 1796000000 # {trace_id=\"x\"} 1").unwrap();
    assert!(sample.labels.is_empty());
    assert_eq!(sample.value, 1.0);
    assert!(parse_sample(r#"x{a="b} 1"#).is_err());
    assert!(parse_sample(r#"x{a=b} 1"#).is_err());
    assert!(parse_sample(r#"x{a="b"} one"#).is_err());
}

#[test]
fn a_page_sums_its_series_per_client_and_path_and_skips_other_families() {
    let page = parse_page(
        "# HELP gateway_view The view this gateway serves.\n\
         # TYPE gateway_view info\n\
         gateway_view_info{view=\"consumer.v1.Track\"} 1\n\
         # TYPE gateway_field_reads counter\n\
         gateway_field_reads_total{client=\"web-bff\",path=\"title\",method=\"GetTrack\"} 12\n\
         gateway_field_reads_total{method=\"BatchGetTracks\",path=\"title\",client=\"web-bff\"} 3\n\
         gateway_field_reads_created{client=\"web-bff\",path=\"title\"} 1700000000.0\n\
         gateway_field_reads_total{path=\"stats.likes_count\"} 2\n\
         # TYPE gateway_field_last_read_seconds gauge\n\
         gateway_field_last_read_seconds{client=\"web-bff\",path=\"title\",method=\"GetTrack\"} 1796000000\n\
         gateway_field_last_read_seconds{client=\"web-bff\",path=\"title\",method=\"BatchGetTracks\"} 1795000000\n\
         grpc_server_handled_total{grpc_service=\"x\",grpc_method=\"y\",grpc_code=\"OK\"} 9\n\
         # EOF\n",
    )
    .unwrap();
    let view = &page.usage["consumer.v1.Track"];
    assert_eq!(
        view["web-bff"]["title"],
        PathUsage {
            reads: 15,
            last_read: Some(1_796_000_000)
        }
    );
    assert_eq!(
        view["unknown"]["stats.likes_count"],
        PathUsage {
            reads: 2,
            last_read: None
        }
    );
    assert_eq!(view.len(), 2);
}

#[test]
fn paths_never_read_are_no_usage() {
    // As the gateways expose them: every leaf path of a client it saw, most never read.
    let page = parse_page(
        "gateway_view_info{view=\"consumer.v1.Track\"} 1\n\
         gateway_field_reads_total{client=\"web-bff\",path=\"title\"} 2\n\
         gateway_field_reads_total{client=\"web-bff\",path=\"genre\"} 0\n\
         gateway_field_reads_total{client=\"ios-bff\",path=\"title\"} 0\n\
         gateway_field_last_read_seconds{client=\"web-bff\",path=\"title\"} 1796000000\n\
         gateway_field_last_read_seconds{client=\"web-bff\",path=\"genre\"} 0\n\
         gateway_field_last_read_seconds{client=\"ios-bff\",path=\"title\"} 0\n",
    )
    .unwrap();
    let view = &page.usage["consumer.v1.Track"];
    assert_eq!(view.keys().collect::<Vec<_>>(), ["web-bff"]);
    assert_eq!(view["web-bff"].keys().collect::<Vec<_>>(), ["title"]);
}

#[test]
fn reads_without_a_view_need_exactly_one_view_on_the_page() {
    let error =
        parse_page("gateway_field_reads_total{client=\"a\",path=\"title\"} 1\n").unwrap_err();
    assert!(
        format!("{error:#}").contains("no gateway_view_info"),
        "{error:#}"
    );
    let two = "gateway_view_info{view=\"consumer.v1.Track\"} 1\n\
               gateway_view_info{view=\"creator.v1.Track\"} 1\n";
    let error = parse_page(&format!(
        "{two}gateway_field_reads_total{{client=\"a\",path=\"title\"}} 1\n"
    ))
    .unwrap_err();
    assert!(format!("{error:#}").contains("several"), "{error:#}");
    let page = parse_page(&format!(
        "{two}gateway_field_reads_total{{view=\"creator.v1.Track\",client=\"a\",path=\"title\"}} 1\n"
    ))
    .unwrap();
    assert_eq!(page.usage["creator.v1.Track"]["a"]["title"].reads, 1);
    assert!(page.usage["consumer.v1.Track"].is_empty());
}

#[test]
fn replicas_merge_into_sums_and_the_latest_read() {
    let page = |reads: u64, at: u64| {
        parse_page(&format!(
            "gateway_view_info{{view=\"consumer.v1.Track\"}} 1\n\
             gateway_field_reads_total{{client=\"web-bff\",path=\"title\"}} {reads}\n\
             gateway_field_last_read_seconds{{client=\"web-bff\",path=\"title\"}} {at}\n"
        ))
        .unwrap()
    };
    let urls = ["a".to_owned(), "b".to_owned()];
    let snapshot = merge(&urls, &[page(12, 100), page(5, 300)], 1_000);
    assert_eq!(
        snapshot.views["consumer.v1.Track"]["web-bff"]["title"],
        PathUsage {
            reads: 17,
            last_read: Some(300)
        }
    );
    assert_eq!(snapshot.taken_at, 1_000);
    assert_eq!(Snapshot::parse(&snapshot.to_json()).unwrap(), snapshot);
}

#[test]
fn snapshots_of_another_version_are_refused() {
    let error = Snapshot::parse(r#"{"version":2,"taken_at":1,"views":{}}"#).unwrap_err();
    assert!(error.to_string().contains("version 2"), "{error}");
    assert!(Snapshot::parse(r#"{"taken_at":1,"views":{}}"#).is_err());
    let snapshot = Snapshot::parse(r#"{"version":1,"taken_at":1,"views":{}}"#).unwrap();
    assert!(snapshot.sources.is_empty());
}

#[test]
fn ages_use_the_largest_whole_unit() {
    assert_eq!(ago(1_000, 1_000), "<1m ago");
    assert_eq!(ago(1_000, 2_000), "<1m ago");
    assert_eq!(ago(7_200, 0), "2h ago");
    assert_eq!(ago(86_400 * 3 + 5, 0), "3d ago");
    assert_eq!(ago(600, 0), "10m ago");
}

//! What each BFF client reads and may ask for: field usage per client and path, allowed masks,
//! fanout budgets, the `x-read-mask` header, and what ExplainReadMask says of them.

use authorization::token::mint_development_client_token;
use gateway_kit::governance::{BudgetMode, MaskMode};
use protos::consumer::v1::{
    BatchGetTracksRequest, ExplainReadMaskRequest, GetTrackRequest, ListLikedTracksRequest,
};
use service_runtime::metrics::sample;
use tonic::{Code, Request, metadata::MetadataValue};

use crate::fixture::{Topology, mask};

/// A request of `user` in the US with a development token issued to `client` (none: a token
/// that names no client), and the metadata `headers`.
fn from_client<T>(
    message: T,
    user: Option<&str>,
    client: Option<&str>,
    headers: &[(&'static str, &str)],
) -> Request<T> {
    let mut request = Request::new(message);
    let token = mint_development_client_token(user, "US", 300, client);
    request.metadata_mut().insert(
        "authorization",
        MetadataValue::try_from(format!("Bearer {token}")).unwrap(),
    );
    for (key, value) in headers {
        request
            .metadata_mut()
            .insert(*key, MetadataValue::try_from(*value).unwrap());
    }
    request
}

fn get(track_id: &str, paths: &[&str]) -> GetTrackRequest {
    GetTrackRequest {
        track_id: track_id.into(),
        read_mask: if paths.is_empty() { None } else { mask(paths) },
        secret_token: None,
    }
}

async fn reads(t: &Topology, client: &str, path: &str) -> f64 {
    let text = t.gateway.scrape().await.unwrap();
    sample(
        &text,
        "gateway_field_reads_total",
        &[("client", client), ("path", path)],
    )
}

/// A public track the seed has, as a call of `client` (none: a token naming no client) finds it.
async fn public_track(t: &Topology, client: Option<&str>) -> String {
    for n in 1..=40 {
        let id = format!("trk_{n:05}");
        let response = t
            .client
            .clone()
            .get_track(from_client(get(&id, &["id"]), None, client, &[]))
            .await;
        if response.is_ok() {
            return id;
        }
    }
    panic!("the seed has no track an anonymous US listener may see among the first 40");
}

#[tokio::test]
async fn served_reads_are_counted_per_client_and_leaf_path() {
    let t = Topology::start().await;
    let track = public_track(&t, None).await;
    let mut client = t.client.clone();
    for _ in 0..2 {
        client
            .get_track(from_client(
                get(&track, &["title", "stats"]),
                Some("usr_0001"),
                Some("web-bff"),
                &[],
            ))
            .await
            .unwrap();
    }
    // Without trust, the headers name nothing: the call is the unknown client's.
    client
        .get_track(from_client(
            get(&track, &["genre"]),
            None,
            None,
            &[("x-client-name", "ios-bff")],
        ))
        .await
        .unwrap();
    // A refused read is not counted.
    let status = client
        .get_track(from_client(
            get("trk_99999", &["title"]),
            None,
            Some("web-bff"),
            &[],
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);

    assert_eq!(reads(&t, "web-bff", "title").await, 2.0);
    assert_eq!(reads(&t, "web-bff", "stats.likes_count").await, 2.0);
    assert_eq!(reads(&t, "web-bff", "stats.reposts_count").await, 2.0);
    assert_eq!(reads(&t, "web-bff", "genre").await, 0.0);
    assert_eq!(reads(&t, "unknown", "genre").await, 1.0);
    assert_eq!(reads(&t, "ios-bff", "genre").await, 0.0);
    let text = t.gateway.scrape().await.unwrap();
    assert!(text.contains("gateway_view_info{view=\"consumer.v1.Track\"} 1"));
    assert!(
        !text.contains("ios-bff"),
        "an untrusted header reached the metrics"
    );
    let last = sample(
        &text,
        "gateway_field_last_read_seconds",
        &[("client", "web-bff"), ("path", "title")],
    );
    assert!(last > 1.7e9, "last read at {last}");
}

#[tokio::test]
async fn trusted_headers_name_the_client_and_required_clients_refuse_the_rest() {
    let t = Topology::start_with(|s| {
        s.clients.trust_headers = true;
        s.clients.required = true;
        s.clients.known = vec!["ios-bff".into(), "web-bff".into()];
    })
    .await;
    let track = public_track(&t, Some("web-bff")).await;
    let mut client = t.client.clone();
    client
        .get_track(from_client(
            get(&track, &["title"]),
            None,
            None,
            &[("x-client-name", "ios-bff"), ("x-client-version", "7.1.0")],
        ))
        .await
        .unwrap();
    assert_eq!(reads(&t, "ios-bff", "title").await, 1.0);
    for (client_claim, headers) in [
        (None, &[][..]),
        (None, &[("x-client-name", "made-up-bff")][..]),
        (Some("made-up-bff"), &[][..]),
    ] {
        let status = client
            .get_track(from_client(
                get(&track, &["title"]),
                None,
                client_claim,
                headers,
            ))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
        assert!(status.message().contains("identified BFF clients only"));
    }
    let status = client
        .get_track(from_client(
            get(&track, &["title"]),
            None,
            None,
            &[("x-client-name", "web bff")],
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().starts_with("x-client-name:"), "{status:?}");
}

#[tokio::test]
async fn enforced_allow_lists_refuse_unlisted_masks_before_any_upstream_call() {
    let t = Topology::start_with(|s| {
        s.allowed_masks.mode = MaskMode::Enforce;
        s.allowed_masks.clients = [(
            "web-bff".to_owned(),
            vec!["id".to_owned(), "title,stats".to_owned()],
        )]
        .into_iter()
        .collect();
    })
    .await;
    let track = public_track(&t, Some("web-bff")).await;
    let mut client = t.client.clone();
    // Listed after normalization: order and duplicates do not matter.
    client
        .get_track(from_client(
            get(&track, &["stats.reposts_count", "title", "stats", "title"]),
            None,
            Some("web-bff"),
            &[],
        ))
        .await
        .unwrap();
    let before = t.upstream_snapshot().await;
    for (who, paths, expected) in [
        (
            Some("web-bff"),
            &["title"][..],
            "client \"web-bff\" may not read with the mask \"title\"",
        ),
        (Some("web-bff"), &[][..], "with the mask \"*\""),
        (None, &["id"][..], "client \"unknown\" may not read"),
    ] {
        let status = client
            .get_track(from_client(get(&track, paths), None, who, &[]))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
        assert!(status.message().contains(expected), "{status:?}");
    }
    assert_eq!(
        t.upstream_snapshot().await,
        before,
        "a refused read called upstream"
    );
    let text = t.gateway.scrape().await.unwrap();
    assert_eq!(
        sample(
            &text,
            "gateway_masks_unlisted_total",
            &[("client", "web-bff")]
        ),
        2.0
    );

    // ExplainReadMask says whether the mask is allowed, without refusing.
    let explained = client
        .explain_read_mask(from_client(
            ExplainReadMaskRequest {
                read_mask: mask(&["title"]),
                track_count: 0,
            },
            None,
            Some("web-bff"),
            &[],
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(!explained.mask_allowed);
    assert_eq!(explained.client, "web-bff");
    assert!(
        explained.text.contains("not on the client's list"),
        "{}",
        explained.text
    );
}

#[tokio::test]
async fn logged_allow_lists_serve_and_count_unlisted_masks() {
    let t = Topology::start_with(|s| {
        s.allowed_masks.mode = MaskMode::LogUnknown;
        s.allowed_masks.clients = [("web-bff".to_owned(), vec!["id".to_owned()])]
            .into_iter()
            .collect();
    })
    .await;
    let track = public_track(&t, Some("web-bff")).await;
    let mut client = t.client.clone();
    for paths in [&["id"][..], &["title"], &["title"]] {
        client
            .get_track(from_client(get(&track, paths), None, Some("web-bff"), &[]))
            .await
            .unwrap();
    }
    let text = t.gateway.scrape().await.unwrap();
    assert_eq!(
        sample(
            &text,
            "gateway_masks_unlisted_total",
            &[("client", "web-bff")]
        ),
        2.0
    );
    assert_eq!(reads(&t, "web-bff", "title").await, 2.0);
}

fn batch(ids: u32, paths: &[&str]) -> BatchGetTracksRequest {
    BatchGetTracksRequest {
        track_ids: (1..=ids).map(|n| format!("trk_{n:05}")).collect(),
        read_mask: if paths.is_empty() { None } else { mask(paths) },
    }
}

#[tokio::test]
async fn enforced_budgets_refuse_costly_reads_before_any_upstream_call() {
    let t = Topology::start_with(|s| {
        s.fanout_budget.mode = BudgetMode::Enforce;
        s.fanout_budget.default = 20;
        s.fanout_budget.clients = [("web-bff".to_owned(), 500)].into_iter().collect();
    })
    .await;
    let mut client = t.client.clone();
    // Signed in, the whole view plans five calls: 100 tracks cost 500.
    client
        .batch_get_tracks(from_client(
            batch(100, &[]),
            Some("usr_0001"),
            Some("web-bff"),
            &[],
        ))
        .await
        .unwrap();
    let before = t.upstream_snapshot().await;
    let status = client
        .batch_get_tracks(from_client(batch(5, &[]), Some("usr_0001"), None, &[]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(
        status.message(),
        "this read's planned cost is 25 (5 upstream calls × 5 keys), over the fanout budget of \
         20 of client \"unknown\": ask for fewer fields or fewer tracks"
    );
    // A page costs its size in tracks, plus the call that lists it.
    let status = client
        .list_liked_tracks(from_client(
            ListLikedTracksRequest {
                user_id: "usr_0002".into(),
                page_size: 20,
                page_token: String::new(),
                read_mask: mask(&["title"]),
            },
            None,
            None,
            &[],
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(
        status
            .message()
            .contains("21 (1 upstream calls × 20 keys + 1 to list the page)"),
        "{status:?}"
    );
    assert_eq!(
        t.upstream_snapshot().await,
        before,
        "a refused read called upstream"
    );
    // A cheaper mask fits: the anonymous caller's viewer fields make no call.
    client
        .batch_get_tracks(from_client(batch(5, &["title", "viewer"]), None, None, &[]))
        .await
        .unwrap();
    let text = t.gateway.scrape().await.unwrap();
    assert_eq!(
        sample(
            &text,
            "gateway_request_cost_count",
            &[("client", "unknown")]
        ),
        3.0
    );
    assert_eq!(
        sample(&text, "gateway_over_budget_total", &[("client", "unknown")]),
        2.0
    );

    let explained = client
        .explain_read_mask(from_client(
            ExplainReadMaskRequest {
                read_mask: None,
                track_count: 100,
            },
            Some("usr_0001"),
            Some("web-bff"),
            &[],
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (explained.cost, explained.budget, explained.client.as_str()),
        (500, 500, "web-bff")
    );
    assert!(
        explained
            .text
            .contains("cost: 500 (5 upstream calls × 100 keys)"),
        "{}",
        explained.text
    );
}

#[tokio::test]
async fn measured_budgets_serve_and_count_costly_reads() {
    let t = Topology::start_with(|s| s.fanout_budget.default = 10).await;
    t.client
        .clone()
        .batch_get_tracks(from_client(batch(20, &["title"]), None, None, &[]))
        .await
        .unwrap();
    let text = t.gateway.scrape().await.unwrap();
    assert_eq!(
        sample(&text, "gateway_request_cost_sum", &[("client", "unknown")]),
        20.0
    );
    assert_eq!(
        sample(&text, "gateway_over_budget_total", &[("client", "unknown")]),
        1.0
    );
}

#[tokio::test]
async fn the_read_mask_may_come_from_the_x_read_mask_header() {
    let t = Topology::start().await;
    let track = public_track(&t, None).await;
    let mut client = t.client.clone();
    let from_header = client
        .get_track(from_client(
            get(&track, &[]),
            None,
            None,
            &[("x-read-mask", "title,creator.followersCount")],
        ))
        .await
        .unwrap()
        .into_inner();
    let from_field = client
        .get_track(from_client(
            get(&track, &["title", "creator.followers_count"]),
            None,
            None,
            &[],
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(from_header, from_field);
    assert!(from_header.genre.is_empty() && !from_header.title.is_empty());
    assert_eq!(reads(&t, "unknown", "creator.followers_count").await, 2.0);

    let before = t.upstream_snapshot().await;
    for (paths, header, expected) in [
        (
            &["title"][..],
            "title",
            "x-read-mask: the request sets read_mask too",
        ),
        (
            &[][..],
            "title,nope",
            "x-read-mask: field mask path \"nope\"",
        ),
        (&[][..], "creator.followers_count", "x-read-mask: "),
    ] {
        let status = client
            .get_track(from_client(
                get(&track, paths),
                None,
                None,
                &[("x-read-mask", header)],
            ))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().starts_with(expected), "{status:?}");
    }
    assert_eq!(t.upstream_snapshot().await, before);
}

//! What each creator-side BFF client reads and may ask for: field usage per client and path,
//! allowed masks, the fanout budget of a page, and the `x-read-mask` header.

use authorization::token::mint_development_client_token;
use gateway_kit::{
    AllowedMaskSettings, BudgetSettings,
    governance::{BudgetMode, MaskMode},
};
use protos::creator::v1::{GetTrackRequest, ListMyTracksRequest};
use tonic::{Code, Request};

use crate::support::*;

/// A request of the owner with a development token issued to `client`, and `headers`.
fn from_client<T>(
    message: T,
    client: Option<&str>,
    headers: &[(&'static str, &str)],
) -> Request<T> {
    let mut request = Request::new(message);
    let token = mint_development_client_token(Some(OWNER), "US", 600, client);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    for (key, value) in headers {
        request.metadata_mut().insert(*key, value.parse().unwrap());
    }
    request
}

fn get(track_id: &str, paths: &[&str]) -> GetTrackRequest {
    GetTrackRequest {
        track_id: track_id.into(),
        read_mask: if paths.is_empty() { None } else { mask(paths) },
    }
}

fn page(size: i32, paths: &[&str]) -> ListMyTracksRequest {
    ListMyTracksRequest {
        page_size: size,
        page_token: String::new(),
        read_mask: mask(paths),
    }
}

async fn reads(topology: &Topology, client: &str, path: &str) -> Option<f64> {
    let text = topology.gateway.scrape().await.unwrap();
    sample(
        &text,
        "gateway_field_reads_total",
        &[("client", client), ("path", path)],
    )
}

#[tokio::test]
async fn reads_are_counted_per_client_and_the_mask_may_come_from_the_header() {
    let topology = Topology::start().await;
    let mut client = topology.client().await;
    let track = uploaded(&mut client, "counted").await;
    let from_header = client
        .get_track(from_client(
            get(&track.id, &[]),
            Some("studio-web"),
            &[("x-read-mask", "title,stats.likesCount")],
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(from_header.title, "counted");
    assert!(
        from_header.genre.is_empty(),
        "the header's mask trims the view"
    );
    assert_eq!(from_header.stats.unwrap().likes_count, Some(0));
    client
        .list_my_tracks(from_client(page(10, &["title"]), Some("studio-web"), &[]))
        .await
        .unwrap();
    assert_eq!(reads(&topology, "studio-web", "title").await, Some(2.0));
    assert_eq!(
        reads(&topology, "studio-web", "stats.likes_count").await,
        Some(1.0)
    );
    assert_eq!(reads(&topology, "studio-web", "genre").await, Some(0.0));
    let text = topology.gateway.scrape().await.unwrap();
    assert!(text.contains("gateway_view_info{view=\"creator.v1.Track\"} 1"));

    let status = client
        .get_track(from_client(
            get(&track.id, &["title"]),
            None,
            &[("x-read-mask", "title")],
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status
            .message()
            .starts_with("x-read-mask: the request sets read_mask too"),
        "{status:?}"
    );
}

#[tokio::test]
async fn allow_lists_and_budgets_refuse_before_any_upstream_call() {
    let topology = Topology::start_with(Options {
        allowed_masks: Some(AllowedMaskSettings {
            mode: MaskMode::Enforce,
            clients: [(
                "studio-web".to_owned(),
                vec!["title".to_owned(), "id,title,stats".to_owned()],
            )]
            .into_iter()
            .collect(),
        }),
        fanout_budget: Some(BudgetSettings {
            mode: BudgetMode::Enforce,
            default: 0,
            clients: [("studio-web".to_owned(), 30)].into_iter().collect(),
        }),
        ..Options::default()
    })
    .await;
    let mut client = topology.client().await;
    let track = uploaded(&mut client, "governed").await;
    client
        .get_track(from_client(
            get(&track.id, &["title"]),
            Some("studio-web"),
            &[],
        ))
        .await
        .unwrap();
    // A page of 20 without counts costs 1; with them, 21.
    client
        .list_my_tracks(from_client(
            page(0, &["stats", "id", "title"]),
            Some("studio-web"),
            &[],
        ))
        .await
        .unwrap();
    let before = topology.all_upstream_calls().await;
    let status = client
        .get_track(from_client(
            get(&track.id, &["genre"]),
            Some("studio-web"),
            &[],
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(
        status
            .message()
            .starts_with("client \"studio-web\" may not read with the mask \"genre\""),
        "{status:?}"
    );
    let status = client
        .list_my_tracks(from_client(
            page(30, &["id", "title", "stats"]),
            Some("studio-web"),
            &[],
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(
        status.message().starts_with(
            "this read's planned cost is 31 (1 upstream calls × 30 keys + 1 to list the page), \
             over the fanout budget of 30 of client \"studio-web\""
        ),
        "{status:?}"
    );
    assert_eq!(topology.all_upstream_calls().await, before);
}

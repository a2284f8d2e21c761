//! The one-process topology starts every service seeded and stops them all cleanly.

use std::time::Duration;

use protos::consumer::v1::{GetTrackRequest, consumer_gateway_client::ConsumerGatewayClient};
use protos::foundation::{
    counts::v1::{BatchGetTrackCountsRequest, counts_service_client::CountsServiceClient},
    likes::v1::{ReactionRequest, likes_service_client::LikesServiceClient},
    tracks::v1::{BatchGetTracksRequest, tracks_service_client::TracksServiceClient},
};
use topology::{Options, Topology};

#[tokio::test]
async fn the_topology_comes_up_seeded_and_wired_and_stops_cleanly() {
    let topology = Topology::start(Options {
        seed_users: 100,
        seed_tracks: 200,
        ephemeral: true,
        ..Options::default()
    })
    .await
    .unwrap();
    topology.wait_ready(Duration::from_secs(60)).await.unwrap();

    let mut tracks = TracksServiceClient::connect(topology.tracks.url())
        .await
        .unwrap();
    let seeded = tracks
        .batch_get_tracks(BatchGetTracksRequest {
            ids: vec!["trk_00001".into(), "trk_00200".into()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(seeded.tracks.len(), 2);

    // A like travels from likes through the outbox relay to counts.
    let counts = CountsServiceClient::connect(topology.counts.url())
        .await
        .unwrap();
    let likes_of = |counts: &CountsServiceClient<tonic::transport::Channel>| {
        let mut counts = counts.clone();
        async move {
            counts
                .batch_get_track_counts(BatchGetTrackCountsRequest {
                    track_ids: vec!["trk_00200".into()],
                })
                .await
                .unwrap()
                .into_inner()
                .counts[0]
                .likes_count
        }
    };
    let before = likes_of(&counts).await;
    let mut likes = LikesServiceClient::connect(topology.likes.url())
        .await
        .unwrap();
    let changed = likes
        .like(ReactionRequest {
            user_id: "usr_new".into(),
            track_id: "trk_00200".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .changed;
    assert!(changed);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while likes_of(&counts).await != before + 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the like never reached counts"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(counts);

    // The consumer gateway serves the seeded data to a signed-in listener.
    let mut gateway = ConsumerGatewayClient::connect(topology.consumer_gateway.url())
        .await
        .unwrap();
    let mut request = tonic::Request::new(GetTrackRequest {
        track_id: "trk_00001".into(),
        read_mask: Some(prost_types::FieldMask {
            paths: vec!["title".into(), "stats.likes_count".into()],
        }),
        secret_token: None,
    });
    let token = authorization::token::mint_development_token(Some("usr_0001"), "US", 60);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let track = gateway.get_track(request).await.unwrap().into_inner();
    assert_eq!(track.title, seeded.tracks[0].title);
    assert!(track.stats.unwrap().likes_count.is_some());

    topology.stop().await.unwrap();
}

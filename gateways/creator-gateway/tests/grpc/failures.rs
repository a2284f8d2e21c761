//! Upstream failures: counts failing degrades reads (OK, stats unset, `x-degraded-fields`);
//! tracks failing fails every call closed; deadlines come from the caller's budget and the
//! upstream caps; reads retry once, commands never.

use std::time::Duration;

use protos::creator::v1::{
    DeleteTrackRequest, GetTrackRequest, ListMyTracksRequest, Track, UpdateTrackRequest,
};
use service_runtime::faults::{FaultCode, FaultSettings, MethodFault};
use tonic::Code;

use crate::support::*;

const DEGRADED: &str = "x-degraded-fields";

fn get(track_id: &str, paths: &[&str]) -> GetTrackRequest {
    GetTrackRequest {
        track_id: track_id.into(),
        read_mask: if paths.is_empty() { None } else { mask(paths) },
    }
}

fn degraded<T>(response: &tonic::Response<T>) -> Option<String> {
    response
        .metadata()
        .get(DEGRADED)
        .map(|value| value.to_str().unwrap().to_owned())
}

fn faults(method: &str, fault: MethodFault) -> FaultSettings {
    FaultSettings::from([(method.to_owned(), fault)])
}

#[tokio::test]
async fn counts_down_degrades_stats_and_names_the_missing_paths() {
    let mut topology = Topology::start().await;
    let mut client = topology.client().await;
    let track = uploaded(&mut client, "t").await;
    uploaded(&mut client, "u").await;
    topology.counts.take().unwrap().stop().await.unwrap();

    let all_stats = "stats.downloads_count,stats.likes_count,stats.reposts_count";
    for (paths, expected) in [
        (vec!["title", "stats"], Some(all_stats)),
        (vec![], Some(all_stats)),
        (
            vec!["title", "stats.likes_count"],
            Some("stats.likes_count"),
        ),
        (vec!["title"], None),
    ] {
        let response = client
            .get_track(owner(get(&track.id, &paths)))
            .await
            .unwrap_or_else(|status| panic!("{paths:?}: {status:?}"));
        assert_eq!(degraded(&response).as_deref(), expected, "{paths:?}");
        let view = response.into_inner();
        assert_eq!(view.title, "t", "the rest of the view is served");
        assert_eq!(view.stats, None);
    }

    let page = client
        .list_my_tracks(owner(ListMyTracksRequest::default()))
        .await
        .unwrap();
    assert_eq!(degraded(&page).as_deref(), Some(all_stats));
    let page = page.into_inner();
    assert_eq!(page.tracks.len(), 2);
    assert!(
        page.tracks
            .iter()
            .all(|t| t.stats.is_none() && t.audio.is_some())
    );

    // Commands do not need counts; the view they answer with says what it lacks.
    let updated = client
        .update_track(owner(UpdateTrackRequest {
            track: Some(Track {
                id: track.id.clone(),
                title: "still works".into(),
                ..Track::default()
            }),
            update_mask: mask(&["title"]),
        }))
        .await
        .unwrap();
    assert_eq!(degraded(&updated).as_deref(), Some(all_stats));
    assert_eq!(updated.into_inner().title, "still works");
}

#[tokio::test]
async fn tracks_down_fails_every_call_closed_with_unavailable() {
    let mut topology = Topology::start().await;
    let mut client = topology.client().await;
    let track = uploaded(&mut client, "t").await;
    topology.tracks.take().unwrap().stop().await.unwrap();

    let mut statuses = vec![
        client
            .get_track(owner(get(&track.id, &["title"])))
            .await
            .unwrap_err(),
        client
            .list_my_tracks(owner(ListMyTracksRequest::default()))
            .await
            .unwrap_err(),
        client
            .update_track(owner(UpdateTrackRequest {
                track: Some(Track {
                    id: track.id.clone(),
                    title: "x".into(),
                    ..Track::default()
                }),
                update_mask: mask(&["title"]),
            }))
            .await
            .unwrap_err(),
        client
            .delete_track(owner(DeleteTrackRequest {
                track_id: track.id.clone(),
            }))
            .await
            .unwrap_err(),
    ];
    statuses.push(
        upload_as(&mut client, OWNER, new_track("nowhere"), &audio(100, 1))
            .await
            .unwrap_err(),
    );
    for status in statuses {
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert_eq!(status.message(), "the tracks service is unavailable");
    }
}

#[tokio::test]
async fn deadlines_come_from_the_callers_budget_and_the_upstream_caps() {
    let slow = MethodFault {
        latency_ms: 3000,
        error_rate: 0.0,
        code: FaultCode::Unavailable,
    };
    let topology = Topology::start_with(Options {
        tracks_faults: faults("ListTracksByOwner", slow.clone()),
        counts_faults: faults("BatchGetTrackCounts", slow),
        margin_ms: Some(300),
        tracks_timeout_ms: Some(1000),
        ..Options::default()
    })
    .await;
    let mut client = topology.client().await;
    let track = uploaded(&mut client, "t").await;

    // The caller gives 900 ms: the gateway waits 600 ms (less the margin), then answers
    // itself, before the caller's own timer fires.
    let mut request = owner(ListMyTracksRequest::default());
    request.set_timeout(Duration::from_millis(900));
    let status = client.list_my_tracks(request).await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert_eq!(
        status.message(),
        "the tracks service did not answer in time"
    );

    // With a generous caller, the tracks cap (1 s) ends the call.
    let mut request = owner(ListMyTracksRequest::default());
    request.set_timeout(Duration::from_secs(20));
    let status = client.list_my_tracks(request).await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert_eq!(
        status.message(),
        "the tracks service did not answer in time"
    );

    // Counts slower than its cap (500 ms) degrades the read instead of failing it.
    let response = client
        .get_track(owner(get(&track.id, &["title", "stats.likes_count"])))
        .await
        .unwrap();
    assert_eq!(degraded(&response).as_deref(), Some("stats.likes_count"));
    assert_eq!(response.into_inner().title, "t");
}

#[tokio::test]
async fn reads_retry_once_and_commands_never_retry() {
    let failing = MethodFault {
        latency_ms: 0,
        error_rate: 1.0,
        code: FaultCode::Unavailable,
    };
    let mut tracks_faults = faults("ListTracksByOwner", failing.clone());
    tracks_faults.insert("UpdateTrack".into(), failing.clone());
    tracks_faults.insert("DeleteTrack".into(), failing);
    let topology = Topology::start_with(Options {
        tracks_faults,
        ..Options::default()
    })
    .await;
    let mut client = topology.client().await;
    let track = uploaded(&mut client, "t").await;

    let status = client
        .list_my_tracks(owner(ListMyTracksRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(
        topology
            .upstream_calls(TRACKS_SERVICE, "ListTracksByOwner", "Unavailable")
            .await,
        2,
        "a read is tried twice"
    );

    let status = client
        .update_track(owner(UpdateTrackRequest {
            track: Some(Track {
                id: track.id.clone(),
                title: "x".into(),
                ..Track::default()
            }),
            update_mask: mask(&["title"]),
        }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    let status = client
        .delete_track(owner(DeleteTrackRequest {
            track_id: track.id.clone(),
        }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    for method in ["UpdateTrack", "DeleteTrack"] {
        assert_eq!(
            topology
                .upstream_calls(TRACKS_SERVICE, method, "Unavailable")
                .await,
            1,
            "a command ({method}) is tried once"
        );
    }
    // A failed delete removed no reactions: the likes call comes only after tracks succeeded.
    assert_eq!(
        topology
            .upstream_calls(LIKES_SERVICE, "DeleteTrackReactions", "OK")
            .await,
        0
    );
    // The read checks before the commands were not retried: they succeeded the first time.
    assert_eq!(
        topology
            .upstream_calls(TRACKS_SERVICE, "BatchGetTracks", "OK")
            .await,
        2
    );
}

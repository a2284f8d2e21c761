use super::*;
use crate::test_view::{Upstream, Upstream::*, track, track_spec};

fn planned(paths: &[&str]) -> Vec<Upstream> {
    let spec = track_spec();
    let mask = spec.schema().parse_paths(paths.iter().copied()).unwrap();
    spec.plan(&mask).sources().collect()
}

fn explain(json: &str) -> Explain {
    let spec = track_spec();
    let mask = spec.schema().parse_json(json).unwrap();
    spec.explain(&mask)
}

#[test]
fn authorization_sources_are_always_planned() {
    assert_eq!(planned(&["id"]), [Tracks]);
}

#[test]
fn plans_only_what_the_mask_needs() {
    assert_eq!(
        planned(&["title", "stats.likes_count"]),
        [Tracks, TrackCounts]
    );
    assert_eq!(planned(&["viewer.liked"]), [Tracks, LikeStates]);
    assert_eq!(planned(&["creator.id"]), [Tracks]);
    assert_eq!(planned(&["creator.followers_count"]), [Tracks, UserCounts]);
}

#[test]
fn a_parent_path_plans_what_its_fields_need() {
    assert_eq!(planned(&["creator"]), [Tracks, UserCounts, FollowStates]);
}

#[test]
fn the_whole_view_plans_every_source() {
    let spec = track_spec();
    let plan = spec.plan(&Mask::all());
    assert_eq!(plan.len(), 5);
    assert_eq!(
        plan.stage(Stage::First).collect::<Vec<_>>(),
        [Tracks, TrackCounts, LikeStates]
    );
    assert_eq!(
        plan.stage(Stage::Second).collect::<Vec<_>>(),
        [UserCounts, FollowStates]
    );
    assert!(plan.contains(FollowStates));
    assert_eq!(
        format!("{plan:?}"),
        "[Tracks, TrackCounts, UserCounts, FollowStates, LikeStates]"
    );
}

#[test]
fn owner_keyed_sources_bring_the_owner_source() {
    // Without authorization needing the track, the owner source is planned for stage two.
    let spec = FanoutSpec::builder(track())
        .owner_from(Tracks)
        .field("creator.followers_count", &[UserCounts])
        .field("creator", &[Tracks])
        .field("stats", &[TrackCounts])
        .field("id", &[])
        .field("title", &[])
        .field("description", &[])
        .field("genre", &[])
        .field("duration", &[])
        .field("artwork_url", &[])
        .field("created_at", &[])
        .field("viewer", &[])
        .field("access", &[])
        .field("tags", &[])
        .field("labels", &[])
        .field("collaborators", &[])
        .field("plays_count", &[])
        .build()
        .unwrap();
    let mask = spec
        .schema()
        .parse_paths(["creator.followers_count"])
        .unwrap();
    assert_eq!(
        spec.plan(&mask).sources().collect::<Vec<_>>(),
        [Tracks, UserCounts]
    );
    // Declarations nest: `creator.followers_count` also needs what `creator` needs.
    let explained = spec.explain(&mask);
    assert_eq!(
        explained.calls[0].causes,
        [
            Cause::Path {
                mask_path: "creator.followers_count".to_owned(),
                declared_path: "creator".to_owned()
            },
            Cause::Owner
        ]
    );
    let mask = spec.schema().parse_paths(["stats"]).unwrap();
    assert_eq!(
        spec.plan(&mask).sources().collect::<Vec<_>>(),
        [TrackCounts]
    );
    let mask = spec.schema().parse_paths(["id"]).unwrap();
    assert!(spec.plan(&mask).is_empty());
}

#[test]
fn every_field_must_be_declared() {
    let error = FanoutSpec::builder(track())
        .authorization(&[Tracks])
        .field("creator.id", &[Tracks])
        .field("title", &[Tracks])
        .build()
        .unwrap_err();
    let SpecError::Undeclared { paths } = &error else {
        panic!("unexpected error {error}");
    };
    assert!(paths.contains(&"creator.followers_count".to_owned()));
    assert!(paths.contains(&"stats".to_owned()));
    assert!(!paths.contains(&"title".to_owned()));
    assert!(!paths.contains(&"creator".to_owned()));
    assert!(!paths.contains(&"creator.id".to_owned()));
}

#[test]
fn declarations_are_checked() {
    let invalid = FanoutSpec::<Upstream>::builder(track())
        .field("creator.nickname", &[Tracks])
        .build()
        .unwrap_err();
    assert!(matches!(invalid, SpecError::InvalidPath { path, .. } if path == "creator.nickname"));

    let star = FanoutSpec::<Upstream>::builder(track())
        .field("*", &[Tracks])
        .build()
        .unwrap_err();
    assert!(matches!(star, SpecError::InvalidPath { .. }));

    let twice = FanoutSpec::<Upstream>::builder(track())
        .field("title", &[Tracks])
        .field("title", &[TrackCounts])
        .build()
        .unwrap_err();
    assert_eq!(
        twice,
        SpecError::DuplicatePath {
            path: "title".to_owned()
        }
    );

    let owner_by_owner = FanoutSpec::<Upstream>::builder(track())
        .owner_from(UserCounts)
        .build()
        .unwrap_err();
    assert_eq!(
        owner_by_owner,
        SpecError::OwnerSourceNotFirstStage {
            method: "counts.v1.Counts/BatchGetUserCounts"
        }
    );
}

#[test]
fn owner_keyed_sources_need_an_owner_source() {
    let mut builder = FanoutSpec::builder(track()).field("creator.followers_count", &[UserCounts]);
    for field in [
        "id",
        "title",
        "description",
        "genre",
        "duration",
        "artwork_url",
        "created_at",
        "creator.id",
        "creator.display_name",
        "creator.followed_by_viewer",
        "stats",
        "viewer",
        "access",
        "tags",
        "labels",
        "collaborators",
        "plays_count",
    ] {
        builder = builder.field(field, &[Tracks]);
    }
    assert_eq!(builder.build().unwrap_err(), SpecError::NoOwnerSource);
}

#[test]
fn too_many_sources_are_refused() {
    // Equal sources collapse into one, so build 65 distinct method names.
    let names: Vec<&'static str> = (0..65)
        .map(|index| &*Box::leak(format!("m{index}").into_boxed_str()))
        .collect();
    let mut builder = FanoutSpec::builder(track());
    for name in names {
        builder = builder.authorization(&[NamedSource::new(name, Input::TrackId)]);
    }
    assert_eq!(builder.build().unwrap_err(), SpecError::TooManySources);
}

#[test]
fn degraded_paths_are_the_affected_mask_paths() {
    let spec = track_spec();
    let mask = spec
        .schema()
        .parse_paths(["creator", "stats.likes_count", "title"])
        .unwrap();
    assert_eq!(
        spec.degraded_paths(&mask, &[UserCounts, TrackCounts]),
        ["creator.followers_count", "stats.likes_count"]
    );
    assert_eq!(
        spec.degraded_paths(&Mask::all(), &[FollowStates, LikeStates]),
        ["creator.followed_by_viewer", "viewer"]
    );
    assert!(spec.degraded_paths(&mask, &[LikeStates]).is_empty());
}

#[test]
fn explain_names_each_call_and_its_causes() {
    let explained = explain("creator.followersCount,title");
    assert_eq!(explained.view, "testview.v1.Track");
    assert_eq!(explained.mask, "creator.followers_count,title");
    assert_eq!(explained.calls.len(), 2);
    assert_eq!(explained.calls[0].method, "tracks.v1.Tracks/BatchGetTracks");
    assert_eq!(
        explained.calls[0].causes,
        [
            Cause::Authorization,
            Cause::Path {
                mask_path: "creator.followers_count".to_owned(),
                declared_path: "creator".to_owned()
            },
            Cause::Path {
                mask_path: "title".to_owned(),
                declared_path: "title".to_owned()
            },
            Cause::Owner,
        ]
    );
    assert_eq!(explained.calls[1].stage, Stage::Second);
    assert_eq!(
        explained.skipped,
        [
            "counts.v1.Counts/BatchGetTrackCounts",
            "follows.v1.Follows/BatchGetFollowStates",
            "likes.v1.Likes/BatchGetLikeStates"
        ]
    );
}

#[test]
fn explain_snapshots() {
    insta::assert_snapshot!("explain_id_only", explain("id").to_string());
    insta::assert_snapshot!(
        "explain_title_and_followers",
        explain("creator.followersCount,title").to_string()
    );
    insta::assert_snapshot!("explain_creator", explain("creator").to_string());
    insta::assert_snapshot!(
        "explain_stats_and_viewer",
        explain("stats.likesCount,viewer.liked,viewer.reposted").to_string()
    );
    insta::assert_snapshot!("explain_whole_view", explain("*").to_string());
    insta::assert_debug_snapshot!(
        "explain_structure",
        explain("creator.followedByViewer,stats")
    );
}

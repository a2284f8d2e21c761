//! What a mask costs per request on a Track-shaped view: parsing, validating and normalizing it
//! (path and JSON forms), planning the fanout, and trimming a response.

#[path = "../tests/common/view.rs"]
mod view;

use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use field_mask::{FanoutSpec, Input, NamedSource, ViewSchema};
use prost::Message;
use prost_reflect::DynamicMessage;

const TRACKS: NamedSource = NamedSource::new("tracks.v1.Tracks/BatchGetTracks", Input::TrackId);
const TRACK_COUNTS: NamedSource =
    NamedSource::new("counts.v1.Counts/BatchGetTrackCounts", Input::TrackId);
const LIKE_STATES: NamedSource =
    NamedSource::new("likes.v1.Likes/BatchGetLikeStates", Input::TrackId);
const USER_COUNTS: NamedSource =
    NamedSource::new("counts.v1.Counts/BatchGetUserCounts", Input::Owner);
const FOLLOW_STATES: NamedSource =
    NamedSource::new("follows.v1.Follows/BatchGetFollowStates", Input::Owner);

/// A typical mobile list-item mask, unsorted and with one covered path, as clients send them.
const PATHS: [&str; 8] = [
    "title",
    "creator.followers_count",
    "artwork_url",
    "stats",
    "stats.likes_count",
    "viewer.liked",
    "access.downloadable",
    "creator.id",
];
const JSON: &str = "title,creator.followersCount,artworkUrl,stats,stats.likesCount,viewer.liked,access.downloadable,creator.id";

fn spec(schema: &ViewSchema) -> FanoutSpec<NamedSource> {
    let mut builder = FanoutSpec::builder(schema.clone())
        .authorization(&[TRACKS])
        .owner_from(TRACKS)
        .field("id", &[])
        .field("creator", &[TRACKS])
        .field("creator.followers_count", &[USER_COUNTS])
        .field("creator.followed_by_viewer", &[FOLLOW_STATES])
        .field("stats", &[TRACK_COUNTS])
        .field("plays_count", &[TRACK_COUNTS])
        .field("viewer", &[LIKE_STATES]);
    for field in [
        "title",
        "description",
        "genre",
        "duration",
        "artwork_url",
        "created_at",
        "tags",
        "labels",
        "collaborators",
        "access",
    ] {
        builder = builder.field(field, &[TRACKS]);
    }
    builder
        .build()
        .expect("the bench view declaration is complete")
}

fn masks(c: &mut Criterion) {
    let schema = ViewSchema::new(view::message("Track")).expect("the track view is valid");
    let owned: Vec<String> = PATHS.iter().map(|path| (*path).to_owned()).collect();

    c.bench_function("parse_validate_normalize/paths_8", |b| {
        b.iter_batched(
            || owned.clone(),
            |paths| black_box(schema.parse_paths(paths).expect("valid")),
            BatchSize::SmallInput,
        )
    });
    c.bench_function("parse_validate_normalize/json_8", |b| {
        b.iter(|| black_box(schema.parse_json(black_box(JSON)).expect("valid")))
    });
    c.bench_function("parse_validate_normalize/empty", |b| {
        b.iter(|| black_box(schema.parse_paths(Vec::<String>::new()).expect("valid")))
    });

    let mask = schema.parse_paths(PATHS).expect("valid");
    c.bench_function("to_json/paths_7", |b| b.iter(|| black_box(mask.to_json())));

    let spec = spec(&schema);
    c.bench_function("plan/paths_7", |b| {
        b.iter(|| black_box(spec.plan(black_box(&mask)).len()))
    });
    c.bench_function("explain/paths_7", |b| {
        b.iter(|| black_box(spec.explain(black_box(&mask))))
    });

    let full = view::full_track();
    c.bench_function("trim/dynamic_full_track_paths_7", |b| {
        b.iter_batched(
            || full.clone(),
            |mut message| {
                mask.trim(&mut message);
                black_box(message)
            },
            BatchSize::SmallInput,
        )
    });
    // What a gateway pays to trim a generated message through a DynamicMessage: decode the
    // encoding, trim, encode again.
    let encoded = full.encode_to_vec();
    c.bench_function("trim/encoded_round_trip_paths_7", |b| {
        b.iter(|| {
            let mut message =
                DynamicMessage::decode(schema.descriptor().clone(), black_box(encoded.as_slice()))
                    .expect("decodes");
            mask.trim(&mut message);
            black_box(message.encode_to_vec())
        })
    });
    // The same result as above from the encoding itself, as `ViewSchema::trim_prost` does it.
    c.bench_function("trim/encoded_wire_paths_7", |b| {
        b.iter(|| {
            black_box(
                schema
                    .trim_encoded(&mask, black_box(encoded.as_slice()))
                    .expect("trims"),
            )
        })
    });
}

criterion_group!(benches, masks);
criterion_main!(benches);

//! View assembly of the consumer gateway, without the network: parsing a read mask against the
//! view, the visibility rule, building one track's view from fetched data and trimming it to the
//! mask, a page of 100, and authenticating a call's token (first sight and remembered).
//! `just bench-micro` (or `cargo bench -p consumer-gateway`).

use std::hint::black_box;

use authorization::{AuthSettings, Principal, Verifier, token::mint_development_token};
use consumer_gateway::{Data, TrackView, visible};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use field_mask::IdMap;
use protos::foundation::{
    counts::v1::{TrackCounts, UserCounts},
    likes::v1::Reaction,
    tracks::v1::{Track, Visibility},
};

const MIXED: &str = "id,title,genre,creator.followers_count,creator.followed_by_viewer";

fn track(n: u32) -> Track {
    Track {
        id: format!("trk_{n:05}"),
        owner_id: format!("usr_{:04}", n % 200 + 1),
        title: format!("Track number {n}"),
        description: "A track of the benchmark, with a description of ordinary length.".into(),
        genre: "ambient".into(),
        duration: Some(prost_types::Duration {
            seconds: 215,
            nanos: 0,
        }),
        artwork_url: format!("https://cdn.example.com/artwork/{n}.jpg"),
        create_time: Some(prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 0,
        }),
        visibility: Visibility::Public as i32,
        downloadable: n.is_multiple_of(3),
        ..Track::default()
    }
}

fn mask_of(view: &TrackView, paths: &str) -> field_mask::Mask {
    view.mask(Some(prost_types::FieldMask {
        paths: paths.split(',').map(str::to_owned).collect(),
    }))
    .expect("a valid mask")
}

fn bench(c: &mut Criterion) {
    let view = TrackView::new().expect("the view builds");
    let tracks: Vec<Track> = (1..=100).map(track).collect();
    let reactions: IdMap<String, Reaction> = tracks
        .iter()
        .map(|t| {
            (
                t.id.clone(),
                Reaction {
                    track_id: t.id.clone(),
                    liked: true,
                    reposted: false,
                    ..Default::default()
                },
            )
        })
        .collect();
    let track_counts: IdMap<String, TrackCounts> = tracks
        .iter()
        .map(|t| {
            (
                t.id.clone(),
                TrackCounts {
                    track_id: t.id.clone(),
                    likes_count: 156,
                    reposts_count: 67,
                    downloads_count: 12,
                },
            )
        })
        .collect();
    let following: IdMap<String, bool> =
        tracks.iter().map(|t| (t.owner_id.clone(), true)).collect();
    let user_counts: IdMap<String, UserCounts> = tracks
        .iter()
        .map(|t| {
            (
                t.owner_id.clone(),
                UserCounts {
                    user_id: t.owner_id.clone(),
                    followers_count: 52,
                    following_count: 9,
                },
            )
        })
        .collect();
    let data = Data {
        planned: |_| true,
        signed_in: true,
        reactions: &reactions,
        track_counts: &track_counts,
        following: &following,
        user_counts: &user_counts,
    };
    let full = view.mask(None).expect("the empty mask is the whole view");
    let title = mask_of(&view, "title");
    let mixed = mask_of(&view, MIXED);

    let mut group = c.benchmark_group("mask");
    group.bench_function("parse_title", |b| {
        b.iter(|| {
            view.mask(Some(prost_types::FieldMask {
                paths: vec!["title".into()],
            }))
        })
    });
    group.bench_function("parse_5_paths", |b| {
        b.iter(|| mask_of(&view, black_box(MIXED)))
    });
    group.finish();

    let principal = Principal {
        user_id: Some("usr_0900".into()),
        territory: "US".into(),
        client: None,
    };
    c.bench_function("visible", |b| {
        b.iter(|| visible(black_box(&tracks[0]), &principal, None))
    });

    let mut group = c.benchmark_group("view_of");
    for (name, mask) in [("whole", &full), ("title", &title), ("mixed", &mixed)] {
        group.bench_function(name, |b| b.iter(|| view.view_of(&data, &tracks[0], mask)));
    }
    group.bench_function("page_of_100_whole", |b| {
        b.iter(|| {
            tracks
                .iter()
                .map(|t| view.view_of(&data, t, &full))
                .collect::<Result<Vec<_>, _>>()
        })
    });
    group.bench_function("page_of_100_mixed", |b| {
        b.iter(|| {
            tracks
                .iter()
                .map(|t| view.view_of(&data, t, &mixed))
                .collect::<Result<Vec<_>, _>>()
        })
    });
    group.finish();

    let settings = AuthSettings::development();
    let token = mint_development_token(Some("usr_0900"), "US", 3600);
    let mut group = c.benchmark_group("token");
    group.bench_function("verify_first_sight", |b| {
        b.iter_batched(
            || Verifier::new(&settings).expect("valid settings"),
            |verifier| verifier.verify(&token),
            BatchSize::SmallInput,
        )
    });
    let verifier = Verifier::new(&settings).expect("valid settings");
    group.bench_function("verify_remembered", |b| b.iter(|| verifier.verify(&token)));
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

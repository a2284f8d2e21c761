//! A property test of the consumer gateway's authorization through its public gRPC interface:
//! over tracks of every visibility, geoblocking, deletion and owner, callers of every kind
//! (anonymous, the owner, other users; in and out of the listed territories; with and without
//! secret tokens) and random read masks, no response holds a field outside the mask, a track
//! the caller may not see, or a viewer relation that is not the caller's own, and no response
//! carries a secret token.
//!
//! The tracks, likes and follows are set up once through the foundation services' public APIs;
//! the expected outcome of each case comes from a model of the visibility rule (README, "The consumer gateway") written here, never from
//! the gateway's own rules.

#[allow(dead_code)] // The shared fixture serves several test binaries; this one uses a part.
#[path = "gateway/fixture.rs"]
mod fixture;

use std::collections::{BTreeSet, HashSet};

use fixture::{Topology, as_user};
use proptest::{
    prelude::*,
    sample::{select, subsequence},
    test_runner::{Config, RngAlgorithm, TestRng, TestRunner},
};
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, ReflectMessage, Value};
use protos::{
    consumer::v1::{
        BatchGetTracksRequest, GetTrackRequest, ListLikedTracksRequest, Track as View,
        consumer_gateway_client::ConsumerGatewayClient,
    },
    foundation::{
        follows::v1::{FollowRequest, follows_service_client::FollowsServiceClient},
        likes::v1::{ReactionRequest, likes_service_client::LikesServiceClient},
        tracks::v1::{
            CreateTrackRequest, DeleteTrackRequest, Geoblocking, GeoblockingMode, TrackMetadata,
            UploadCommit, Visibility, create_track_request::Part,
        },
    },
};
use tonic::{Code, transport::Channel};

const OWNERS: [&str; 2] = ["prop_owner_a", "prop_owner_b"];
const LISTENERS: [&str; 2] = ["prop_listener_a", "prop_listener_b"];
const TERRITORIES: [&str; 5] = ["US", "CA", "DE", "FR", "GB"];
/// An id no track has.
const MISSING: &str = "trk_prop_missing";

/// Every path of `consumer.v1.Track`, messages and leaves.
const PATHS: [&str; 19] = [
    "id",
    "title",
    "description",
    "genre",
    "duration",
    "artwork_url",
    "created_at",
    "creator",
    "creator.id",
    "creator.followers_count",
    "creator.followed_by_viewer",
    "stats",
    "stats.likes_count",
    "stats.reposts_count",
    "viewer",
    "viewer.liked",
    "viewer.reposted",
    "access",
    "access.downloadable",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Geo {
    None,
    /// Only CA and US.
    Allow,
    /// Everywhere but DE and FR.
    Block,
}

/// What the test knows about one track it created.
#[derive(Debug, Clone)]
struct Known {
    id: String,
    title: String,
    owner: &'static str,
    public: bool,
    geo: Geo,
    deleted: bool,
    downloadable: bool,
    /// Empty for a public track.
    secret: String,
}

/// Who reacted to what and who follows whom, as set up.
#[derive(Debug, Default)]
struct Relations {
    liked: HashSet<(String, String)>,
    reposted: HashSet<(String, String)>,
    follows: HashSet<(String, String)>,
}

struct World {
    tracks: Vec<Known>,
    relations: Relations,
    client: ConsumerGatewayClient<Channel>,
    descriptor: MessageDescriptor,
}

/// The visibility rule: visible iff (public, or the viewer owns it, or the request carries its secret
/// token) and its geoblocking allows the viewer's territory; the owner always sees their own
/// track; a deleted track is missing for everyone.
fn model_visible(
    track: &Known,
    viewer: Option<&str>,
    territory: &str,
    token: Option<&str>,
) -> bool {
    if track.deleted {
        return false;
    }
    if viewer == Some(track.owner) {
        return true;
    }
    let unlocked = track.public
        || token.is_some_and(|token| !track.secret.is_empty() && token == track.secret);
    let allowed = match track.geo {
        Geo::None => true,
        Geo::Allow => ["CA", "US"].contains(&territory),
        Geo::Block => !["DE", "FR"].contains(&territory),
    };
    unlocked && allowed
}

/// Whether the mask (`None`: the whole view) covers `path`.
fn covers(mask: Option<&[String]>, path: &str) -> bool {
    mask.is_none_or(|paths| {
        paths.iter().any(|masked| {
            path.strip_prefix(masked.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
        })
    })
}

/// Whether the mask names a path strictly inside `path`.
fn enters(mask: Option<&[String]>, path: &str) -> bool {
    mask.is_some_and(|paths| {
        paths.iter().any(|masked| {
            masked
                .strip_prefix(path)
                .is_some_and(|rest| rest.starts_with('.'))
        })
    })
}

/// The set fields of a view message by path; `true` marks a message the walk went into
/// (well-known types such as Duration count as leaves).
fn set_fields(descriptor: &MessageDescriptor, view: &View) -> Vec<(String, bool)> {
    fn walk(message: &DynamicMessage, prefix: &str, out: &mut Vec<(String, bool)>) {
        for (field, value) in message.fields() {
            let path = format!("{prefix}{}", field.name());
            match value {
                Value::Message(inner) if !inner.descriptor().full_name().starts_with("google.") => {
                    out.push((path.clone(), true));
                    walk(inner, &format!("{path}."), out);
                }
                _ => out.push((path, false)),
            }
        }
    }
    let dynamic =
        DynamicMessage::decode(descriptor.clone(), view.encode_to_vec().as_slice()).unwrap();
    let mut out = Vec::new();
    walk(&dynamic, "", &mut out);
    out
}

/// One generated case.
#[derive(Debug, Clone)]
struct Case {
    /// `None` is anonymous; otherwise an owner or a listener.
    viewer: Option<&'static str>,
    territory: &'static str,
    /// Index into the tracks, or their count for the missing id.
    track: usize,
    /// 0: none; 1: the track's own; 2: another track's; 3: a wrong one.
    token: u8,
    /// `None`: unset; otherwise the paths, `[]` meaning the whole view too.
    mask: Option<Vec<&'static str>>,
    batch: Vec<usize>,
    /// Whose likes to list.
    list_of: &'static str,
}

fn cases(tracks: usize) -> impl Strategy<Value = Case> {
    let viewer = select(vec![
        None,
        Some(OWNERS[0]),
        Some(OWNERS[1]),
        Some(LISTENERS[0]),
        Some(LISTENERS[1]),
    ]);
    let mask = prop_oneof![
        1 => Just(None),
        1 => Just(Some(Vec::new())),
        8 => subsequence(PATHS.to_vec(), 1..=5).prop_map(Some),
    ];
    let batch = subsequence((0..=tracks).collect::<Vec<_>>(), 0..=8).prop_shuffle();
    (
        viewer,
        select(TERRITORIES.to_vec()),
        0..=tracks,
        0..4u8,
        mask,
        batch,
        select(vec![LISTENERS[0], LISTENERS[1], OWNERS[0]]),
    )
        .prop_map(
            |(viewer, territory, track, token, mask, batch, list_of)| Case {
                viewer,
                territory,
                track,
                token,
                mask,
                batch,
                list_of,
            },
        )
}

impl World {
    fn id(&self, index: usize) -> String {
        self.tracks
            .get(index)
            .map_or_else(|| MISSING.to_owned(), |track| track.id.clone())
    }

    /// Checks one returned track against what the caller may see of track `expected`.
    fn check_view(
        &self,
        view: &View,
        expected: Option<&Known>,
        case: &Case,
        mask: Option<&[String]>,
    ) {
        let fields = set_fields(&self.descriptor, view);
        for (path, entered) in &fields {
            assert!(
                covers(mask, path) || (*entered && enters(mask, path)),
                "{path} is outside the mask {mask:?}: {view:?}, {case:?}"
            );
        }
        // Not one secret token, of any track, in any field.
        let bytes = view.encode_to_vec();
        for track in self.tracks.iter().filter(|t| !t.secret.is_empty()) {
            assert!(
                !bytes
                    .windows(track.secret.len())
                    .any(|w| w == track.secret.as_bytes()),
                "a secret token leaked: {view:?}"
            );
        }
        let creator = view.creator.clone().unwrap_or_default();
        let viewer = view.viewer.unwrap_or_default();
        let Some(viewer_id) = case.viewer else {
            assert!(
                view.viewer.is_none(),
                "an anonymous caller got viewer fields: {view:?}"
            );
            assert!(
                creator.followed_by_viewer.is_none(),
                "an anonymous caller got creator.followed_by_viewer: {view:?}"
            );
            if let Some(expected) = expected {
                self.check_identity(view, expected, mask);
            }
            return;
        };
        let Some(expected) = expected else {
            // A list page: the track is identified only when the mask has its id.
            return;
        };
        self.check_identity(view, expected, mask);
        // Relations are the caller's own: the owner's or another listener's never show.
        let key = (viewer_id.to_owned(), expected.id.clone());
        if covers(mask, "viewer.liked") {
            assert_eq!(
                viewer.liked,
                Some(self.relations.liked.contains(&key)),
                "viewer.liked for {viewer_id}: {case:?}"
            );
        }
        if covers(mask, "viewer.reposted") {
            assert_eq!(
                viewer.reposted,
                Some(self.relations.reposted.contains(&key)),
                "viewer.reposted for {viewer_id}: {case:?}"
            );
        }
        if covers(mask, "creator.followed_by_viewer") {
            let follows = (viewer_id.to_owned(), expected.owner.to_owned());
            assert_eq!(
                creator.followed_by_viewer,
                Some(self.relations.follows.contains(&follows)),
                "creator.followed_by_viewer for {viewer_id}: {case:?}"
            );
        }
    }

    /// The returned track is the expected one.
    fn check_identity(&self, view: &View, expected: &Known, mask: Option<&[String]>) {
        if covers(mask, "id") {
            assert_eq!(view.id, expected.id);
        }
        if covers(mask, "title") {
            assert_eq!(view.title, expected.title);
        }
        if covers(mask, "creator.id") {
            assert_eq!(
                view.creator.as_ref().map(|c| c.id.as_str()),
                Some(expected.owner)
            );
        }
        if covers(mask, "access.downloadable") {
            assert_eq!(
                view.access.as_ref().is_some_and(|a| a.downloadable),
                expected.downloadable
            );
        }
    }

    async fn check(&self, case: Case) {
        let mut client = self.client.clone();
        let mask_paths: Option<Vec<String>> = case
            .mask
            .as_ref()
            .filter(|paths| !paths.is_empty())
            .map(|paths| paths.iter().map(|p| (*p).to_owned()).collect());
        let mask = mask_paths.as_deref();
        let read_mask = case.mask.as_ref().map(|paths| prost_types::FieldMask {
            paths: paths.iter().map(|p| (*p).to_owned()).collect(),
        });

        // GetTrack, with whatever token the case presents.
        let target = self.tracks.get(case.track);
        let token = match case.token {
            0 => None,
            1 => target.map(|t| t.secret.clone()).filter(|s| !s.is_empty()),
            2 => self
                .tracks
                .iter()
                .find(|t| !t.secret.is_empty() && Some(&t.id) != target.map(|t| &t.id))
                .map(|t| t.secret.clone()),
            _ => Some("sec_not_a_real_token_0000".to_owned()),
        };
        let visible =
            target.is_some_and(|t| model_visible(t, case.viewer, case.territory, token.as_deref()));
        let got = client
            .get_track(as_user(
                GetTrackRequest {
                    track_id: self.id(case.track),
                    read_mask: read_mask.clone(),
                    secret_token: token.clone(),
                },
                case.viewer,
                case.territory,
            ))
            .await;
        match (got, visible) {
            (Ok(view), true) => self.check_view(view.get_ref(), target, &case, mask),
            (Err(status), false) => {
                assert_eq!(status.code(), Code::NotFound, "{status:?}, {case:?}");
                assert_eq!(status.message(), "track not found", "{case:?}");
            }
            (got, visible) => panic!("GetTrack: expected visible={visible}, got {got:?}, {case:?}"),
        }

        // BatchGetTracks never carries a token: the hidden are omitted and listed as missing.
        let ids: Vec<String> = case.batch.iter().map(|&i| self.id(i)).collect();
        let batch = client
            .batch_get_tracks(as_user(
                BatchGetTracksRequest {
                    track_ids: ids.clone(),
                    read_mask: read_mask.clone(),
                },
                case.viewer,
                case.territory,
            ))
            .await
            .unwrap_or_else(|status| panic!("BatchGetTracks: {status:?}, {case:?}"))
            .into_inner();
        let (shown, missing): (Vec<usize>, Vec<usize>) = case.batch.iter().partition(|&&i| {
            self.tracks
                .get(i)
                .is_some_and(|t| model_visible(t, case.viewer, case.territory, None))
        });
        let missing: Vec<String> = missing.into_iter().map(|i| self.id(i)).collect();
        assert_eq!(batch.missing_ids, missing, "{case:?}");
        assert_eq!(batch.tracks.len(), shown.len(), "{case:?}: {batch:?}");
        for (view, index) in batch.tracks.iter().zip(&shown) {
            self.check_view(view, self.tracks.get(*index), &case, mask);
        }

        // ListLikedTracks: only the liked tracks the caller may see, without a token.
        let page = client
            .list_liked_tracks(as_user(
                ListLikedTracksRequest {
                    user_id: case.list_of.to_owned(),
                    page_size: 100,
                    page_token: String::new(),
                    read_mask,
                },
                case.viewer,
                case.territory,
            ))
            .await
            .unwrap_or_else(|status| panic!("ListLikedTracks: {status:?}, {case:?}"))
            .into_inner();
        let expected: BTreeSet<&str> = self
            .tracks
            .iter()
            .filter(|t| {
                self.relations
                    .liked
                    .contains(&(case.list_of.to_owned(), t.id.clone()))
            })
            .filter(|t| model_visible(t, case.viewer, case.territory, None))
            .map(|t| t.id.as_str())
            .collect();
        assert_eq!(page.tracks.len(), expected.len(), "{case:?}: {page:?}");
        assert!(page.next_page_token.is_empty());
        for view in &page.tracks {
            let known = covers(mask, "id")
                .then(|| self.tracks.iter().find(|t| t.id == view.id))
                .flatten();
            if covers(mask, "id") {
                assert!(
                    expected.contains(view.id.as_str()),
                    "{} listed: {case:?}",
                    view.id
                );
            }
            self.check_view(view, known, &case, mask);
        }
    }
}

/// Creates one track through the tracks service's public API and returns it.
async fn create(
    topology: &Topology,
    owner: &'static str,
    title: String,
    public: bool,
    geo: Geo,
    downloadable: bool,
) -> protos::foundation::tracks::v1::Track {
    let (mode, territories) = match geo {
        Geo::None => (GeoblockingMode::None, vec![]),
        Geo::Allow => (GeoblockingMode::AllowList, vec!["CA".into(), "US".into()]),
        Geo::Block => (GeoblockingMode::BlockList, vec!["DE".into(), "FR".into()]),
    };
    let metadata = TrackMetadata {
        owner_id: owner.to_owned(),
        title,
        description: "made by the property test".into(),
        genre: "test".into(),
        duration: Some(prost_types::Duration {
            seconds: 60,
            nanos: 0,
        }),
        artwork_url: "https://example.test/art.png".into(),
        visibility: if public {
            Visibility::Public
        } else {
            Visibility::Private
        } as i32,
        geoblocking: Some(Geoblocking {
            mode: mode as i32,
            territories,
        }),
        downloadable,
    };
    let audio = b"not really audio".to_vec();
    let messages = vec![
        CreateTrackRequest {
            part: Some(Part::Metadata(metadata)),
        },
        CreateTrackRequest {
            part: Some(Part::AudioChunk(audio.clone().into())),
        },
        CreateTrackRequest {
            part: Some(Part::Commit(UploadCommit {
                size_bytes: audio.len() as u64,
                sha256: String::new(),
            })),
        },
    ];
    topology
        .tracks_client
        .clone()
        .create_track(tokio_stream::iter(messages))
        .await
        .unwrap()
        .into_inner()
}

/// The tracks (every visibility × geoblocking × owner × deletion), likes and follows.
async fn world(topology: &Topology) -> World {
    let mut tracks = Vec::new();
    let mut index = 0;
    for public in [true, false] {
        for geo in [Geo::None, Geo::Allow, Geo::Block] {
            for owner in OWNERS {
                for deleted in [false, true] {
                    let title = format!("prop track {index}");
                    let downloadable = index % 2 == 0;
                    let track =
                        create(topology, owner, title.clone(), public, geo, downloadable).await;
                    assert_eq!(track.secret_token.is_empty(), public);
                    tracks.push(Known {
                        id: track.id,
                        title,
                        owner,
                        public,
                        geo,
                        deleted,
                        downloadable,
                        secret: track.secret_token,
                    });
                    index += 1;
                }
            }
        }
    }

    let likes_url = topology.likes.as_ref().unwrap().url();
    let follows_url = topology.follows.as_ref().unwrap().url();
    let mut likes = LikesServiceClient::connect(likes_url).await.unwrap();
    let mut follows = FollowsServiceClient::connect(follows_url).await.unwrap();
    let mut relations = Relations::default();
    // Every user likes and reposts a different pattern of tracks, deleted ones included.
    let users = [LISTENERS[0], LISTENERS[1], OWNERS[0], OWNERS[1]];
    for (u, user) in users.iter().enumerate() {
        for (i, track) in tracks.iter().enumerate() {
            let reaction = ReactionRequest {
                user_id: (*user).to_owned(),
                track_id: track.id.clone(),
            };
            if (i + u) % 2 == 0 {
                likes.like(reaction.clone()).await.unwrap();
                relations
                    .liked
                    .insert(((*user).to_owned(), track.id.clone()));
            }
            if (i + u) % 3 == 0 && *user != track.owner {
                likes.repost(reaction).await.unwrap();
                relations
                    .reposted
                    .insert(((*user).to_owned(), track.id.clone()));
            }
        }
    }
    for (follower, followee) in [
        (LISTENERS[0], OWNERS[0]),
        (LISTENERS[1], OWNERS[1]),
        (OWNERS[0], OWNERS[1]),
    ] {
        follows
            .follow(FollowRequest {
                follower_id: follower.to_owned(),
                followee_id: followee.to_owned(),
            })
            .await
            .unwrap();
        relations
            .follows
            .insert((follower.to_owned(), followee.to_owned()));
    }

    for track in tracks.iter().filter(|t| t.deleted) {
        topology
            .tracks_client
            .clone()
            .delete_track(DeleteTrackRequest {
                track_id: track.id.clone(),
            })
            .await
            .unwrap();
    }

    let descriptor = DescriptorPool::decode(protos::descriptors::CONSUMER)
        .unwrap()
        .get_message_by_name("consumer.v1.Track")
        .unwrap();
    World {
        tracks,
        relations,
        client: topology.client.clone(),
        descriptor,
    }
}

#[test]
fn no_response_holds_what_the_caller_may_not_see() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let topology = runtime.block_on(Topology::start());
    let world = runtime.block_on(world(&topology));

    // A fixed number of cases from a fixed seed: every run checks the same cases.
    let config = Config {
        cases: 256,
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner =
        TestRunner::new_with_rng(config, TestRng::deterministic_rng(RngAlgorithm::ChaCha));
    let result = runner.run(&cases(world.tracks.len()), |case| {
        runtime.block_on(world.check(case));
        Ok(())
    });
    if let Err(failure) = result {
        panic!("{failure}");
    }
    drop(topology);
}

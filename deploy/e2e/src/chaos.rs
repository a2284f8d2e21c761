//! Chaos on the Compose topology: stop, start and kill containers while scenarios run, and
//! check what the contract promises: degraded reads while counts is away and exact counts once
//! it is back, fail-closed reads while tracks is away, and no acknowledged write lost when a
//! service is killed in the middle of writes.

use std::{
    collections::BTreeSet,
    process::Command,
    time::{Duration, Instant},
};

use protos::consumer::v1::{GetTrackRequest, LikeTrackRequest};
use tonic::Code;

use crate::{Endpoints, eventually, mask, scenarios::likes_count, signed, unique};

/// The Compose command of the running topology, e.g.
/// `docker-compose -f /repo/deploy/compose.yaml -p domain-gateways`, from `E2E_COMPOSE`.
#[derive(Debug, Clone)]
pub struct Compose {
    command: Vec<String>,
}

impl Compose {
    pub fn from_env() -> Option<Self> {
        let command: Vec<String> = std::env::var("E2E_COMPOSE")
            .ok()?
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        (!command.is_empty()).then_some(Self { command })
    }

    fn run(&self, args: &[&str]) -> String {
        let output = Command::new(&self.command[0])
            .args(&self.command[1..])
            .args(args)
            .output()
            .unwrap_or_else(|error| panic!("cannot run {:?}: {error}", self.command));
        assert!(
            output.status.success(),
            "{:?} {args:?} failed: {}",
            self.command,
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    pub fn stop(&self, service: &str) {
        self.run(&["stop", "-t", "10", service]);
    }

    pub fn kill(&self, service: &str) {
        self.run(&["kill", service]);
    }

    /// Restarts a running service and waits as [`Compose::start`] does.
    pub fn restart(&self, service: &str) {
        self.stop(service);
        self.start(service);
    }

    /// Starts a stopped service and waits until Docker reports it healthy (or, for a container
    /// without a health check, running).
    pub fn start(&self, service: &str) {
        self.run(&["start", service]);
        let container = self.run(&["ps", "-q", service]);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let output = Command::new("docker")
                .args([
                    "inspect",
                    "--format",
                    "{{if .State.Health}}{{.State.Health.Status}}{{else}}none:{{.State.Status}}{{end}}",
                    &container,
                ])
                .output()
                .expect("docker runs");
            let status = String::from_utf8_lossy(&output.stdout).trim().to_owned();
            if status == "healthy" || status == "none:running" {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{service} did not become healthy"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// What a chaos run measured, for the report.
#[derive(Debug, Default)]
pub struct Figures {
    pub likes_during_counts_outage: usize,
    pub counts_convergence: Duration,
    pub tracks_outage_error_after: Duration,
    pub tracks_recovery: Duration,
    pub writes_acknowledged_around_kill: usize,
    pub writes_attempted_around_kill: usize,
}

/// Public tracks playable in US, used by the chaos scenarios only.
const OUTAGE_TRACKS: [&str; 10] = [
    "trk_00012",
    "trk_00014",
    "trk_00015",
    "trk_00016",
    "trk_00018",
    "trk_00019",
    "trk_00020",
    "trk_00021",
    "trk_00022",
    "trk_00024",
];

/// Counts away: reads stay OK and name the degraded paths; 200 likes during the outage are all
/// counted, exactly, once counts is back.
pub async fn counts_outage(e: &Endpoints, compose: &Compose, figures: &mut Figures) {
    let users: Vec<String> = (0..20).map(|i| unique(&format!("e2e_outage{i}"))).collect();
    let mut before = Vec::new();
    for track in OUTAGE_TRACKS {
        before.push(likes_count(e, track, &users[0]).await.0);
    }
    compose.stop("counts");
    let mut consumer = e.consumer().await;
    // Counters the gateway read within its cache's time to live (`fanout.counts_cache`) may
    // still come from the cache; after it, every read names the degraded paths.
    let likes = eventually(
        "a read that names the degraded counters",
        Duration::from_secs(10),
        || {
            let mut consumer = consumer.clone();
            let user = users[0].clone();
            async move {
                let response = consumer
                    .get_track(signed(
                        GetTrackRequest {
                            track_id: OUTAGE_TRACKS[0].into(),
                            read_mask: None,
                            secret_token: None,
                        },
                        Some(&user),
                        "US",
                    ))
                    .await
                    .expect("reads stay OK while counts is away");
                let degraded = response
                    .metadata()
                    .get("x-degraded-fields")
                    .and_then(|value| value.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                degraded
                    .contains("stats.likes_count")
                    .then(|| response.into_inner().stats.and_then(|s| s.likes_count))
            }
        },
    )
    .await;
    assert_eq!(likes, None);

    for user in &users {
        for track in OUTAGE_TRACKS {
            let like = signed(
                LikeTrackRequest {
                    track_id: track.into(),
                },
                Some(user),
                "US",
            );
            let changed = consumer
                .like_track(like)
                .await
                .expect("likes are accepted")
                .into_inner();
            assert!(changed.changed);
            figures.likes_during_counts_outage += 1;
        }
    }
    let restarted = Instant::now();
    compose.start("counts");
    for (track, before) in OUTAGE_TRACKS.iter().zip(before) {
        eventually("counts to converge", Duration::from_secs(60), || async {
            (likes_count(e, track, &users[0]).await.0 == before + 20).then_some(())
        })
        .await;
    }
    figures.counts_convergence = restarted.elapsed();
}

/// Tracks away: reads fail closed (UNAVAILABLE) within the caller's deadline, and recover once
/// tracks is back.
pub async fn tracks_outage(e: &Endpoints, compose: &Compose, figures: &mut Figures) {
    compose.stop("tracks");
    let mut consumer = e.consumer().await;
    let mut request = signed(
        GetTrackRequest {
            track_id: "trk_00001".into(),
            read_mask: mask(&["title"]),
            secret_token: None,
        },
        None,
        "US",
    );
    request.set_timeout(Duration::from_secs(2));
    let started = Instant::now();
    let status = consumer.get_track(request).await.unwrap_err();
    figures.tracks_outage_error_after = started.elapsed();
    assert!(
        matches!(status.code(), Code::Unavailable | Code::DeadlineExceeded),
        "{status:?}"
    );
    assert!(figures.tracks_outage_error_after < Duration::from_secs(2));
    let restarted = Instant::now();
    compose.start("tracks");
    eventually("reads to recover", Duration::from_secs(60), || {
        let mut consumer = consumer.clone();
        async move {
            let request = signed(
                GetTrackRequest {
                    track_id: "trk_00001".into(),
                    read_mask: mask(&["title"]),
                    secret_token: None,
                },
                None,
                "US",
            );
            consumer.get_track(request).await.ok().map(|_| ())
        }
    })
    .await;
    figures.tracks_recovery = restarted.elapsed();
}

/// Likes killed in the middle of writes: every acknowledged like is still there afterwards, and
/// counts converges to exactly the likes that were stored.
pub async fn kill_mid_writes(e: &Endpoints, compose: &Compose, figures: &mut Figures) {
    let (attempted, acknowledged) = writes_around_a_kill(e, compose, "likes", true).await;
    figures.writes_attempted_around_kill = attempted;
    figures.writes_acknowledged_around_kill = acknowledged;
}

/// 150 likes, `service` (a likes container) killed after the 40th and, with `restart`, started
/// again after the 80th (else started once the likes are done): at least 100 are acknowledged,
/// every acknowledged like is stored, and counts counts every stored like exactly. Returns the
/// likes attempted and acknowledged.
pub async fn writes_around_a_kill(
    e: &Endpoints,
    compose: &Compose,
    service: &str,
    restart: bool,
) -> (usize, usize) {
    const TRACK: &str = "trk_00025";
    let probe = unique("e2e_probe");
    let before = likes_count(e, TRACK, &probe).await.0;
    let users: Vec<String> = (0..150).map(|i| unique(&format!("e2e_kill{i}"))).collect();
    let mut consumer = e.consumer().await;
    let mut acknowledged = BTreeSet::new();
    for (i, user) in users.iter().enumerate() {
        if i == 40 {
            compose.kill(service);
        }
        if i == 80 && restart {
            compose.start(service);
        }
        let mut like = signed(
            LikeTrackRequest {
                track_id: TRACK.into(),
            },
            Some(user),
            "US",
        );
        like.set_timeout(Duration::from_secs(2));
        if consumer.like_track(like).await.is_ok() {
            acknowledged.insert(user.clone());
        }
    }
    if !restart {
        compose.start(service);
    }
    assert!(
        acknowledged.len() >= 100,
        "writes resumed after the kill: {} of {} acknowledged",
        acknowledged.len(),
        users.len()
    );

    // Through the gateway: the Compose topology publishes no foundation port.
    let mut stored = 0;
    for user in &users {
        let liked = likes_count(e, TRACK, user).await.1;
        assert!(
            liked || !acknowledged.contains(user),
            "acknowledged like of {user} was lost"
        );
        stored += u64::from(liked);
    }
    eventually(
        "counts to count every stored like",
        Duration::from_secs(60),
        || async { (likes_count(e, TRACK, &probe).await.0 == before + stored).then_some(()) },
    )
    .await;
    (users.len(), acknowledged.len())
}

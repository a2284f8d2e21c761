//! The end-to-end scenarios against the topology running in this process.

use std::time::Duration;

use e2e::{Endpoints, abuse, scenarios};
use topology::{Options, Topology};

/// A small seeded topology on ephemeral ports, ready, and its endpoints.
async fn started() -> (Topology, Endpoints) {
    let topology = Topology::start(Options {
        seed_users: 200,
        seed_tracks: 300,
        ephemeral: true,
        ..Options::default()
    })
    .await
    .unwrap();
    topology.wait_ready(Duration::from_secs(60)).await.unwrap();
    let endpoints = Endpoints {
        consumer: topology.consumer_gateway.url(),
        creator: topology.creator_gateway.url(),
        tracks: topology.tracks.url(),
        likes: topology.likes.url(),
        follows: topology.follows.url(),
        counts: topology.counts.url(),
    };
    (topology, endpoints)
}

#[tokio::test]
async fn the_scenarios_pass_on_the_in_process_topology() {
    let (topology, endpoints) = started().await;
    scenarios::browse(&endpoints).await;
    scenarios::like_converges(&endpoints).await;
    scenarios::creator_changes_reach_listeners_at_once(&endpoints).await;
    scenarios::twirp_reads(&endpoints).await;
    scenarios::field_usage_is_counted_per_client(
        &endpoints,
        topology.consumer_gateway.metrics_addr,
    )
    .await;
    topology.stop().await.unwrap();
}

#[tokio::test]
async fn the_abuse_scenarios_pass_on_the_in_process_topology() {
    let (topology, endpoints) = started().await;
    abuse::unknown_paths_do_not_grow_the_metrics(
        &endpoints,
        topology.consumer_gateway.metrics_addr,
    )
    .await;
    abuse::page_tokens_are_opaque_and_bound_to_their_caller(&endpoints).await;
    abuse::tokens_with_a_made_up_territory_are_refused(&endpoints).await;
    abuse::reactions_outlive_their_tracks_visibility(&endpoints).await;
    abuse::refusals_hold_no_idempotency_key(&endpoints).await;
    abuse::stalled_calls_hold_nothing_for_long(&endpoints).await;
    topology.stop().await.unwrap();
}

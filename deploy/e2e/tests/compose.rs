//! The end-to-end scenarios, with chaos, against the Compose topology (`just compose-e2e`).
//! Without `E2E_COMPOSE` (the Compose command of a running topology) it says so and skips.

use e2e::{
    Endpoints, abuse,
    chaos::{self, Compose, Figures},
    scenarios,
};

#[tokio::test]
async fn the_scenarios_and_chaos_pass_on_the_compose_topology() {
    let Some(compose) = Compose::from_env() else {
        println!("skipping the Compose scenarios: E2E_COMPOSE is not set (run `just compose-e2e`)");
        return;
    };
    let endpoints = Endpoints::from_env();
    scenarios::browse(&endpoints).await;
    scenarios::like_converges(&endpoints).await;
    scenarios::creator_changes_reach_listeners_at_once(&endpoints).await;
    scenarios::twirp_reads(&endpoints).await;
    let consumer_metrics = std::env::var("E2E_CONSUMER_METRICS")
        .unwrap_or_else(|_| "127.0.0.1:9051".into())
        .parse()
        .expect("E2E_CONSUMER_METRICS is host:port");
    abuse::unknown_paths_do_not_grow_the_metrics(&endpoints, consumer_metrics).await;
    scenarios::field_usage_is_counted_per_client(&endpoints, consumer_metrics).await;
    abuse::page_tokens_are_opaque_and_bound_to_their_caller(&endpoints).await;
    abuse::tokens_with_a_made_up_territory_are_refused(&endpoints).await;
    abuse::reactions_outlive_their_tracks_visibility(&endpoints).await;
    abuse::refusals_hold_no_idempotency_key(&endpoints).await;
    abuse::stalled_calls_hold_nothing_for_long(&endpoints).await;

    let mut figures = Figures::default();
    chaos::counts_outage(&endpoints, &compose, &mut figures).await;
    chaos::tracks_outage(&endpoints, &compose, &mut figures).await;
    chaos::kill_mid_writes(&endpoints, &compose, &mut figures).await;
    println!("chaos figures: {figures:#?}");
}

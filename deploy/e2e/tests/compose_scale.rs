//! The end-to-end scenarios and the scaled chaos against the scaled Compose topology
//! (`just compose-scale-e2e`): both gateways through Envoy, two replicas of each writer on
//! PostgreSQL, events through NATS, idempotency keys in Valkey. Without `E2E_COMPOSE` it says
//! so and skips.

use e2e::{
    Endpoints,
    chaos::Compose,
    scale::{self, ScaleFigures},
    scenarios,
};

#[tokio::test]
async fn the_scenarios_and_chaos_pass_on_the_scaled_compose_topology() {
    let Some(compose) = Compose::from_env() else {
        println!(
            "skipping the scaled Compose scenarios: E2E_COMPOSE is not set (run `just compose-scale-e2e`)"
        );
        return;
    };
    let endpoints = Endpoints::from_env();
    scenarios::browse(&endpoints).await;
    scenarios::like_converges(&endpoints).await;
    scenarios::creator_changes_reach_listeners_at_once(&endpoints).await;
    scenarios::twirp_reads(&endpoints).await;

    let mut figures = ScaleFigures::default();
    scale::keyed_command_at_both_replicas_runs_once(&endpoints).await;
    scale::gateway_replica_killed_under_load(&endpoints, &compose, &mut figures).await;
    scale::writer_replica_killed_mid_writes(&endpoints, &compose, &mut figures).await;
    scale::nats_outage_during_likes(&endpoints, &compose, &mut figures).await;
    scale::postgres_restart(&endpoints, &compose, &mut figures).await;
    println!("scaled chaos figures: {figures:#?}");
}

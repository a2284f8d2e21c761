//! The suite against the in-process topology: every scenario runs without errors, and the
//! upstream calls it reads from the gateways' metrics are the ones each scenario must make.
//! (The phases that restart services and the per-process CPU figures need the services as
//! separate processes, which `just bench` starts.)

use std::time::Duration;

use loadgen::{
    Endpoints,
    report::{Machine, Report},
    suite::{self, SuiteOptions, System},
};
use topology::{Options, Topology};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_runs_and_makes_the_planned_upstream_calls() {
    // Each request makes its own planned calls: none shared between concurrent requests.
    let topology = Topology::start(Options {
        ephemeral: true,
        coalesce: false,
        ..Options::default()
    })
    .await
    .expect("the topology starts");
    topology
        .wait_ready(Duration::from_secs(120))
        .await
        .expect("the topology becomes ready");
    let endpoints = Endpoints {
        consumer: topology.consumer_gateway.url(),
        creator: topology.creator_gateway.url(),
        tracks: topology.tracks.url(),
        likes: topology.likes.url(),
        follows: topology.follows.url(),
        counts: topology.counts.url(),
        consumer_metrics: topology.consumer_gateway.metrics_addr.to_string(),
        creator_metrics: topology.creator_gateway.metrics_addr.to_string(),
        envoy: None,
    };
    let options = SuiteOptions {
        warmup: Duration::from_millis(50),
        duration: Duration::from_millis(300),
        concurrency: 4,
        ..SuiteOptions::quick()
    };
    let mut system = System::InProcess(endpoints);
    let outcome = suite::run(&options, &mut system)
        .await
        .expect("the suite runs");

    let phase = |name: &str| {
        outcome
            .phases
            .iter()
            .find(|phase| phase.name == name)
            .unwrap_or_else(|| panic!("no phase {name}"))
    };
    for phase in &outcome.phases {
        assert_eq!(
            phase.summary.errors, 0,
            "{}: {:?}",
            phase.name, phase.summary
        );
        assert!(phase.summary.ok > 0, "{}", phase.name);
    }
    let calls = |name: &str| phase(name).upstream_calls_per_request;
    assert_eq!(calls("consumer.get_track.title"), Some(1.0));
    assert_eq!(
        phase("consumer.get_track.title")
            .upstream_calls_by_method
            .keys()
            .collect::<Vec<_>>(),
        ["BatchGetTracks"]
    );
    assert_eq!(calls("consumer.get_track.full"), Some(5.0));
    for size in [1, 10, 100] {
        assert_eq!(calls(&format!("consumer.batch_get.{size}")), Some(5.0));
    }
    assert_eq!(calls("tracks.direct"), None);
    // Only this process: CPU of the generator, nothing per service.
    assert!(
        phase("consumer.get_track.full")
            .cpu_us_per_request
            .keys()
            .eq(["loadgen"])
    );
    let batch_target = outcome
        .targets
        .iter()
        .find(|target| target.target.contains("planned upstream calls per request"))
        .expect("the batch target is checked");
    assert!(batch_target.met, "{batch_target:?}");
    // Without coalescing, a batch of 100 makes exactly the calls of one track.
    assert_eq!(
        calls("consumer.batch_get.100"),
        calls("consumer.get_track.full")
    );

    // The realistic workload: every count of callers of the quick run, both views, coalescing
    // on and off (the same gateway here: it cannot restart in this process).
    assert_eq!(
        outcome.realistic.len(),
        2 * 2 * options.realistic_callers.len()
    );
    for row in &outcome.realistic {
        assert_eq!(row.errors, 0, "{row:?}");
        assert!(
            row.upstream_calls_per_request
                .is_some_and(|calls| calls > 0.0),
            "{row:?}"
        );
    }
    // No Envoy in this process: its figures are missing, and the target says why.
    assert!(outcome.envoy.missing.is_some());
    let envoy_target = outcome
        .targets
        .iter()
        .find(|target| target.target.contains("Envoy"))
        .expect("the Envoy target is reported");
    assert!(
        envoy_target.figure.starts_with("missing: "),
        "{envoy_target:?}"
    );

    let report = Report {
        machine: Machine::detect("in-process test"),
        options,
        outcome,
        field_usage: None,
    };
    let markdown = report.to_markdown();
    assert!(
        markdown.contains("| `consumer.batch_get.100` |"),
        "{markdown}"
    );
    assert!(
        markdown.contains("## Realistic workload, coalescing on and off"),
        "{markdown}"
    );
    let json: serde_json::Value = serde_json::from_str(&report.to_json()).expect("valid JSON");
    assert!(
        json["phases"]
            .as_array()
            .is_some_and(|phases| phases.len() >= 15)
    );
    assert!(
        json["machine"]["cores"]
            .as_u64()
            .is_some_and(|cores| cores >= 1)
    );

    topology.stop().await.expect("the topology stops");
}

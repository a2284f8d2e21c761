use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use super::*;

fn calls(max_tokens: f64) -> Calls {
    Calls::new(&CallSettings {
        margin_ms: 20,
        retry: RetrySettings {
            ratio: 0.5,
            max_tokens,
        },
    })
}

fn upstream(cap_ms: u64) -> Upstream<()> {
    Upstream {
        client: (),
        name: "tracks",
        cap: Duration::from_millis(cap_ms),
    }
}

#[test]
fn the_retry_budget_saves_a_share_of_calls_and_caps_its_savings() {
    let budget = RetryBudget::new(&RetrySettings {
        ratio: 0.5,
        max_tokens: 2.0,
    });
    assert!(budget.withdraw() && budget.withdraw(), "it starts full");
    assert!(!budget.withdraw(), "and runs dry");
    budget.deposit();
    assert!(!budget.withdraw(), "half a retry is not a retry");
    budget.deposit();
    assert!(budget.withdraw());
    for _ in 0..100 {
        budget.deposit();
    }
    assert!(budget.withdraw() && budget.withdraw());
    assert!(!budget.withdraw(), "savings are capped");
}

#[tokio::test(start_paused = true)]
async fn sequential_calls_share_one_deadline_and_a_spent_one_starts_nothing() {
    let calls = calls(1.0);
    let upstream = upstream(1000);
    let deadline = Deadline::at(Instant::now() + Duration::from_millis(500));
    let budgets = Arc::new(std::sync::Mutex::new(Vec::new()));
    let slow = |_: (), budget: Duration| {
        let budgets = budgets.clone();
        async move {
            budgets.lock().unwrap().push(budget);
            tokio::time::sleep(Duration::from_millis(300)).await;
            Ok(Response::new(()))
        }
    };
    calls.read(&upstream, deadline, slow).await.unwrap();
    let second = calls.read(&upstream, deadline, slow).await.unwrap_err();
    assert!(matches!(second.failure, UpstreamFailure::Timeout));
    {
        let budgets = budgets.lock().unwrap();
        assert_eq!(budgets[0], Duration::from_millis(500));
        assert_eq!(
            budgets[1],
            Duration::from_millis(200),
            "the second call gets what the first left"
        );
    }
    let started = budgets.lock().unwrap().len();
    let third = calls.read(&upstream, deadline, slow).await.unwrap_err();
    assert!(matches!(third.failure, UpstreamFailure::Timeout));
    assert_eq!(
        budgets.lock().unwrap().len(),
        started,
        "a call with no budget left is not started"
    );
}

#[tokio::test(start_paused = true)]
async fn without_a_callers_deadline_the_cap_bounds_each_call() {
    let calls = calls(1.0);
    let deadline = Deadline::none();
    let error = calls
        .read(&upstream(100), deadline, |_, budget| async move {
            assert_eq!(budget, Duration::from_millis(100));
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok(Response::new(()))
        })
        .await
        .unwrap_err();
    assert!(matches!(error.failure, UpstreamFailure::Timeout));
}

#[tokio::test]
async fn reads_retry_unavailable_once_within_the_budget_and_commands_never() {
    let calls = calls(1.0);
    let upstream = upstream(1000);
    let attempts = AtomicUsize::new(0);
    let unavailable = |_: (), _: Duration| {
        attempts.fetch_add(1, Ordering::SeqCst);
        async { Err::<Response<()>, _>(Status::unavailable("down")) }
    };
    let error = calls
        .read(&upstream, Deadline::none(), unavailable)
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(Code::Unavailable));
    assert_eq!(attempts.load(Ordering::SeqCst), 2, "one retry");
    calls
        .read(&upstream, Deadline::none(), unavailable)
        .await
        .unwrap_err();
    assert_eq!(
        attempts.load(Ordering::SeqCst),
        3,
        "the budget's one token is spent: half a token earned is no retry"
    );
    calls
        .command(&upstream, Deadline::none(), unavailable)
        .await
        .unwrap_err();
    assert_eq!(attempts.load(Ordering::SeqCst), 4, "commands never retry");
}

#[tokio::test]
async fn cancelled_and_deadline_exceeded_answers_are_timeouts_and_others_are_statuses() {
    let calls = calls(0.0);
    let upstream = upstream(1000);
    for (status, timeout) in [
        (Status::cancelled("Timeout expired"), true),
        (Status::deadline_exceeded("late"), true),
        (Status::not_found("no"), false),
        (Status::internal("disk on fire"), false),
    ] {
        let error = calls
            .command(&upstream, Deadline::none(), |_, _| async move {
                Err::<Response<()>, _>(status)
            })
            .await
            .unwrap_err();
        assert_eq!(
            matches!(error.failure, UpstreamFailure::Timeout),
            timeout,
            "{error}"
        );
        assert_eq!(error.service, "tracks");
    }
}

#[tokio::test(start_paused = true)]
async fn the_request_deadline_is_the_inbound_timeout_less_the_margin() {
    let calls = calls(1.0);
    let mut metadata = MetadataMap::new();
    assert_eq!(calls.deadline(&metadata), Deadline::none());
    metadata.insert("grpc-timeout", "100m".parse().unwrap());
    let deadline = calls.deadline(&metadata);
    assert_eq!(deadline.remaining(), Some(Duration::from_millis(80)));
    assert_eq!(
        deadline.budget(Duration::from_millis(50)),
        Duration::from_millis(50)
    );
    metadata.insert("grpc-timeout", "15m".parse().unwrap());
    assert_eq!(
        calls.deadline(&metadata).budget(Duration::from_secs(1)),
        Duration::ZERO,
        "a deadline shorter than the margin leaves nothing"
    );
}

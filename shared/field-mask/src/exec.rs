//! Running planned calls: a stage's calls concurrently under one deadline, and one call per
//! source for a whole batch or page of tracks.
//!
//! The helpers are generic over the call futures and their errors, so the gateways keep their
//! tonic clients and error types to themselves.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::hash::Hash;
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use tokio::time::{Instant, timeout_at};

use crate::plan::{Plan, Source, Stage};

/// Why a planned call gave no value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError<E> {
    /// The call itself failed.
    #[error("upstream call failed: {0}")]
    Failed(E),
    /// The call did not finish by the deadline and was dropped.
    #[error("upstream call passed its deadline")]
    DeadlineExceeded,
    /// The call was dropped unfinished because a call authorization needs had failed, which
    /// fails the whole request.
    #[error("upstream call abandoned after an authorization call failed")]
    Abandoned,
}

/// The deadline for one upstream call: the inbound budget (`grpc-timeout`) less a margin for
/// the gateway's own work, capped by the upstream's configured timeout. Without an inbound
/// budget the cap alone applies.
pub fn upstream_deadline(
    start: Instant,
    inbound: Option<Duration>,
    margin: Duration,
    cap: Duration,
) -> Instant {
    let budget = inbound.map_or(cap, |inbound| inbound.saturating_sub(margin).min(cap));
    start + budget
}

async fn bounded<F, T, E>(deadline: Instant, call: F) -> Result<T, CallError<E>>
where
    F: Future<Output = Result<T, E>>,
{
    match timeout_at(deadline, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(CallError::Failed(error)),
        Err(_) => Err(CallError::DeadlineExceeded),
    }
}

/// Runs `calls` concurrently, each bounded by `deadline`, and returns their results in order.
pub async fn join_with_deadline<I, F, T, E>(
    deadline: Instant,
    calls: I,
) -> Vec<Result<T, CallError<E>>>
where
    I: IntoIterator<Item = F>,
    F: Future<Output = Result<T, E>>,
{
    futures::future::join_all(calls.into_iter().map(|call| bounded(deadline, call))).await
}

/// The results of one stage, one per planned source of the stage, in declaration order.
#[derive(Debug)]
pub struct StageResults<S, T, E> {
    results: Vec<(S, Result<T, CallError<E>>)>,
}

impl<S: Source, T, E> StageResults<S, T, E> {
    /// Removes and returns the result of `source`, if it was planned in this stage.
    pub fn take(&mut self, source: S) -> Option<Result<T, CallError<E>>> {
        let index = self
            .results
            .iter()
            .position(|(known, _)| *known == source)?;
        Some(self.results.remove(index).1)
    }

    /// The sources whose calls gave no value.
    pub fn failed(&self) -> impl Iterator<Item = S> + '_ {
        self.results
            .iter()
            .filter(|(_, result)| result.is_err())
            .map(|(source, _)| *source)
    }

    /// The results left, in declaration order.
    pub fn iter(&self) -> impl Iterator<Item = &(S, Result<T, CallError<E>>)> {
        self.results.iter()
    }

    /// The results left, in declaration order.
    pub fn into_inner(self) -> Vec<(S, Result<T, CallError<E>>)> {
        self.results
    }

    /// How many results are left.
    pub fn len(&self) -> usize {
        self.results.len()
    }

    /// Whether no result is left.
    pub fn is_empty(&self) -> bool {
        self.results.is_empty()
    }
}

/// Runs the planned calls of `stage` concurrently, each bounded by `deadline`.
///
/// `call` starts the call for one source; a single `async move { match source { … } }` block
/// gives every source the same future type, with the output an enum of the sources' data.
/// When a call that authorization needs fails, the request fails closed, so the calls still
/// running are dropped at once and reported as [`CallError::Abandoned`].
pub async fn run_stage<S, F, Fut, T, E>(
    plan: &Plan<'_, S>,
    stage: Stage,
    deadline: Instant,
    call: F,
) -> StageResults<S, T, E>
where
    S: Source,
    F: FnMut(S) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    run_calls(plan, plan.stage(stage), deadline, call).await
}

/// Runs the calls of `sources` (planned sources of one stage, or part of one) concurrently,
/// each bounded by `deadline`, exactly as [`run_stage`] does for a whole stage.
///
/// A gateway uses it to pipeline its stages: the authorization sources alone, so that the
/// second stage can start as soon as they answer, beside the rest of the first stage.
pub async fn run_calls<S, I, F, Fut, T, E>(
    plan: &Plan<'_, S>,
    sources: I,
    deadline: Instant,
    mut call: F,
) -> StageResults<S, T, E>
where
    S: Source,
    I: IntoIterator<Item = S>,
    F: FnMut(S) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let sources: Vec<S> = sources.into_iter().collect();
    let mut slots: Vec<Option<Result<T, CallError<E>>>> = std::iter::repeat_with(|| None)
        .take(sources.len())
        .collect();
    let mut pending: FuturesUnordered<_> = sources
        .iter()
        .enumerate()
        .map(|(index, &source)| {
            // Boxed, so that each call's future exists once on the heap at its own size instead
            // of being held (and moved) by value in every layer above it.
            let future = bounded(deadline, Box::pin(call(source)));
            async move { (index, future.await) }
        })
        .collect();
    while let Some((index, result)) = pending.next().await {
        let fatal = result.is_err() && plan.spec().is_authorization(sources[index]);
        slots[index] = Some(result);
        if fatal {
            break;
        }
    }
    drop(pending);
    let results = sources
        .into_iter()
        .zip(slots)
        .map(|(source, slot)| (source, slot.unwrap_or(Err(CallError::Abandoned))))
        .collect();
    StageResults { results }
}

/// The keys in first-seen order, without duplicates: the request of one batched call.
pub fn unique_keys<K, I>(keys: I) -> Vec<K>
where
    I: IntoIterator<Item = K>,
    K: Eq + Hash + Clone,
{
    let mut seen = HashSet::new();
    keys.into_iter()
        .filter(|key| seen.insert(key.clone()))
        .collect()
}

/// Makes one batched call for the keys of many items, and indexes the answer by key.
///
/// The keys are deduplicated in first-seen order before the call; with no keys there is no
/// call at all. Keys the upstream does not answer for are simply absent from the map.
pub async fn call_batched<K, V, E, I, F, Fut, R>(keys: I, call: F) -> Result<HashMap<K, V>, E>
where
    I: IntoIterator<Item = K>,
    K: Eq + Hash + Clone,
    F: FnOnce(Vec<K>) -> Fut,
    Fut: Future<Output = Result<R, E>>,
    R: IntoIterator<Item = (K, V)>,
{
    let keys = unique_keys(keys);
    if keys.is_empty() {
        return Ok(HashMap::new());
    }
    Ok(call(keys).await?.into_iter().collect())
}

#[cfg(test)]
mod tests;

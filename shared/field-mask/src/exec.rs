//! Running a plan: the whole two-stage fanout of one request, pipelined, failing closed on
//! the authorization calls, with one call per source for a whole batch or page of tracks.
//!
//! The executor is generic over the call futures and their error, so the gateways keep their
//! tonic clients and error types to themselves. It enforces no deadline of its own: every call
//! a gateway starts is bounded by the request's one deadline where the call is made (the
//! gateway kit's upstream caller), so a call's deadline is computed and enforced in one place.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;

use futures::stream::{FuturesUnordered, StreamExt};

use crate::plan::{Input, Plan, Source, Stage};

/// A hash map keyed by ids (track and user ids, the keys of batched calls), on foldhash: ids
/// are not caller-chosen secrets that need SipHash's flooding resistance more than the random
/// seed foldhash keeps (SipHash was a tenth of the coalescing readers' cost, measured there).
pub type IdMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// The results of a plan's calls, one per source that was called, in declaration order.
#[derive(Debug)]
pub struct PlanResults<S, T, E> {
    results: Vec<(S, Result<T, E>)>,
}

impl<S: Source, T, E> PlanResults<S, T, E> {
    /// Removes and returns the result of `source`, if it was called.
    pub fn take(&mut self, source: S) -> Option<Result<T, E>> {
        let index = self
            .results
            .iter()
            .position(|(known, _)| *known == source)?;
        Some(self.results.remove(index).1)
    }

    /// The sources whose calls failed.
    pub fn failed(&self) -> impl Iterator<Item = S> + '_ {
        self.results
            .iter()
            .filter(|(_, result)| result.is_err())
            .map(|(source, _)| *source)
    }

    /// The results left, in declaration order.
    pub fn into_inner(self) -> Vec<(S, Result<T, E>)> {
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

async fn indexed<F: Future>(index: usize, call: Pin<Box<F>>) -> (usize, F::Output) {
    (index, call.await)
}

/// Runs the whole plan for the tracks `track_ids`.
///
/// Every stage-one call starts at once. As soon as the authorization calls have all
/// answered, `authorize` turns their values into the request's authorized value and the owners
/// of the tracks the caller may see, and the stage-two calls start, keyed by those owners,
/// while the rest of stage one may still be running. With no visible owner, stage two makes
/// no call.
///
/// The request fails closed: when an authorization call fails, or `authorize` refuses, the
/// calls still running are dropped at once (a dropped call tells its upstream's circuit
/// breaker nothing) and that error is the outcome. Any other failed call is only reported in
/// the results, for the gateway to degrade the paths it serves.
///
/// `fetch` makes the one batched call of a source for its keys; a single
/// `async move { match source { … } }` block gives every source the same future type, with
/// the output an enum of the sources' data.
pub async fn run_plan<S, T, E, A, F, Fut, Auth>(
    plan: &Plan<'_, S>,
    track_ids: &[String],
    mut fetch: F,
    authorize: Auth,
) -> Result<(A, PlanResults<S, T, E>), E>
where
    S: Source,
    F: FnMut(S, Vec<String>) -> Fut,
    Fut: Future<Output = Result<T, E>>,
    Auth: FnOnce(Vec<(S, T)>) -> Result<(A, Vec<String>), E>,
{
    let sources: Vec<S> = plan.sources().collect();
    let spec = plan.spec();
    let mut slots: Vec<Option<Result<T, E>>> = std::iter::repeat_with(|| None)
        .take(sources.len())
        .collect();
    // Boxed, so that each call's future exists once on the heap at its own size instead of
    // being held (and moved) by value in every layer above it.
    let mut pending: FuturesUnordered<_> = sources
        .iter()
        .enumerate()
        .filter(|(_, source)| source.input().stage() == Stage::First)
        .map(|(index, &source)| indexed(index, Box::pin(fetch(source, track_ids.to_vec()))))
        .collect();

    let mut waiting = sources
        .iter()
        .filter(|source| spec.is_authorization(**source))
        .count();
    while waiting > 0 {
        let Some((index, result)) = pending.next().await else {
            break;
        };
        let authorization = spec.is_authorization(sources[index]);
        match result {
            Err(error) if authorization => return Err(error),
            result => slots[index] = Some(result),
        }
        if authorization {
            waiting -= 1;
        }
    }
    let mut granted = Vec::new();
    for (index, source) in sources.iter().enumerate() {
        if spec.is_authorization(*source)
            && let Some(Ok(value)) = slots[index].take()
        {
            granted.push((*source, value));
        }
    }
    let (authorized, owners) = authorize(granted)?;

    if !owners.is_empty() {
        for (index, &source) in sources.iter().enumerate() {
            if source.input() == Input::Owner {
                pending.push(indexed(index, Box::pin(fetch(source, owners.clone()))));
            }
        }
    }
    while let Some((index, result)) = pending.next().await {
        slots[index] = Some(result);
    }
    let results = sources
        .into_iter()
        .zip(slots)
        .filter_map(|(source, slot)| Some((source, slot?)))
        .collect();
    Ok((authorized, PlanResults { results }))
}

/// The keys in first-seen order, without duplicates: the request of one batched call. No key
/// is copied: duplicates are found by reference, on foldhash as in [`IdMap`], and a list
/// without any comes back as it is.
pub fn unique_keys<K, I>(keys: I) -> Vec<K>
where
    I: IntoIterator<Item = K>,
    K: Eq + Hash,
{
    let keys: Vec<K> = keys.into_iter().collect();
    if keys.len() < 2 {
        return keys;
    }
    let first: Vec<bool> = {
        let mut seen =
            HashSet::with_capacity_and_hasher(keys.len(), foldhash::fast::RandomState::default());
        keys.iter().map(|key| seen.insert(key)).collect()
    };
    if first.iter().all(|first| *first) {
        return keys;
    }
    keys.into_iter()
        .zip(first)
        .filter_map(|(key, first)| first.then_some(key))
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

//! Feeding the learner ([`kairos_router::learn::Learner`]) from outcomes: at once from the
//! in-process hook ([`crate::signals::OutcomeSink`]), and from the durable `outcomes` table at
//! start and every few seconds after, so that every replica routes on every replica's outcomes
//! and a restart loses nothing.
//!
//! Reading is idempotent: an outcome is keyed by (request, metric, model) in the learner, so the
//! overlap between refreshes (10 s, for clock skew between replicas and transactions committing
//! out of order) and outcomes seen both from the hook and from the table count once.

use std::sync::Arc;
use std::time::Duration;

use kairos_router::TaskType;
use kairos_router::embed::{Embedder, dequantize};
use kairos_router::learn::{Learner, ObsKey, Observation};
use kairos_store::{OutcomeRow, Store};

/// Rows read per page when loading.
const PAGE: u32 = 5_000;
/// Re-read this far back on each refresh.
const OVERLAP_MS: i64 = 10_000;

/// The learner's view of a stored outcome.
pub fn observation(o: &OutcomeRow) -> Observation {
    let dim = Embedder::builtin().dim();
    Observation {
        key: ObsKey {
            request_id: o.request_id.clone(),
            metric: o.metric.clone(),
            model: o.model.clone(),
        },
        workspace: o.workspace.clone().unwrap_or_default(),
        task: o.task.as_deref().and_then(TaskType::parse),
        embedding: o.embedding.as_deref().and_then(|e| dequantize(e, dim)),
        score: o.score,
        weight: o.weight,
    }
}

/// Subscribes `learner` to the gateway's outcome hook.
pub fn subscribe(sink: &crate::signals::OutcomeSink, learner: Arc<Learner>) {
    sink.subscribe(Arc::new(move |o: &OutcomeRow| {
        learner.observe(&observation(o));
    }));
}

/// Reads every outcome updated at or after `since_ms` into `learner`; returns the newest
/// `updated_ms` seen (or `since_ms`) and the number of rows read.
pub async fn load(
    store: &Store,
    learner: &Learner,
    since_ms: i64,
) -> Result<(i64, usize), kairos_store::StoreError> {
    let mut cursor = since_ms;
    let mut newest = since_ms;
    let mut total = 0;
    let mut limit = PAGE;
    loop {
        let rows = store.outcomes_since(cursor, limit).await?;
        for r in &rows {
            learner.observe(&observation(r));
            newest = newest.max(r.updated_ms);
        }
        total += rows.len();
        if (rows.len() as u32) < limit {
            return Ok((newest, total));
        }
        let last = rows.last().map_or(cursor, |r| r.updated_ms);
        if last == cursor {
            // A whole page with one timestamp: read a bigger page (the store caps it).
            if limit >= kairos_store::MAX_OUTCOMES_PER_PAGE {
                tracing::warn!(
                    updated_ms = cursor,
                    "more outcomes share one timestamp than a page holds; some were skipped"
                );
                cursor += 1;
            } else {
                limit = (limit * 4).min(kairos_store::MAX_OUTCOMES_PER_PAGE);
            }
        } else {
            cursor = last;
            limit = PAGE;
        }
    }
}

/// Loads the table, then refreshes every `every` until the process ends. Errors are logged and
/// retried at the next tick (routing goes on with what the learner has).
pub async fn run(store: Store, learner: Arc<Learner>, every: Duration) {
    let mut newest = 0i64;
    let mut loaded = false;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let since = if loaded { newest - OVERLAP_MS } else { 0 };
        match load(&store, &learner, since).await {
            Ok((n, rows)) => {
                if !loaded {
                    tracing::info!(outcomes = rows, "learned state loaded");
                }
                loaded = true;
                newest = newest.max(n);
            }
            Err(e) => tracing::warn!(error = %e, "reading outcomes for the learner failed"),
        }
    }
}

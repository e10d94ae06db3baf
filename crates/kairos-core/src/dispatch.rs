//! Stage 6, dispatch: walk a strategy tree ([`Node`]) with retries, fallbacks, health-weighted
//! load balancing and conditions, until one upstream attempt yields a committed answer.
//!
//! Invariants:
//! - Nothing reaches the client until an attempt returns `Ok`, so every failure before that can
//!   move on to another attempt. A streamed attempt with alternatives left is held until its
//!   first content chunk (a preamble followed by an error still falls back); the last
//!   alternative relays its first event at once (no added time to first byte).
//! - Retries happen on the same target, only for retryable failures (see [`crate::retry`]),
//!   within the retry budget and the request deadline; fallbacks move to the next target on the
//!   strategy's triggers, at every nesting level.
//! - Every attempt is recorded (target, status, error kind, latency, retry/fallback) on the
//!   request's ledger row.
//! - Health: each attempt's outcome updates the target's health; ejected or cooling-down targets
//!   are skipped, but when every alternative is unavailable the first one is tried anyway (the
//!   last target is never ejected).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use kairos_api::openai::ChatCompletionRequest;
use serde_json::Value;
use tokio::time::Instant;

use crate::error::{GatewayError, InternalError, UpstreamFailure};
use crate::gateway::{Gateway, Resolved};
use crate::health::{Admission, FailureKind, TargetKey};
use crate::pipeline::Dispatched;
use crate::record::{AttemptRecord, Recorder};
use crate::retry::{FailureClass, FailureInfo, RetryDecision};
use crate::strategy::{Leaf, Node, Timeouts, Triggers};

/// Limits of one attempt.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AttemptLimits {
    pub ttfb: Duration,
    pub idle: Duration,
    pub deadline: Instant,
    /// Hold a stream until its first content chunk (alternatives remain).
    pub hold_for_content: bool,
}

/// The request-wide facts the executor needs.
pub(crate) struct Exec<'a> {
    pub req: &'a ChatCompletionRequest,
    pub deadline: Instant,
    /// Fact lookup for `conditional` strategies.
    pub facts: &'a (dyn Fn(&str) -> Option<Value> + Send + Sync),
}

type BoxFut<'a> = Pin<Box<dyn Future<Output = Result<Dispatched, GatewayError>> + Send + 'a>>;

fn key(r: &Resolved) -> TargetKey {
    TargetKey {
        provider: Arc::from(r.provider.name.as_str()),
        model: Arc::from(r.entry.id.as_str()),
    }
}

/// Does this failure make a fallback/load balancer move on?
fn triggers(t: &Triggers, e: &GatewayError) -> bool {
    match e {
        GatewayError::Upstream(u) => match u {
            UpstreamFailure::Status(s) => {
                if s.kind == kairos_providers::adapter::UpstreamErrorKind::ContextLength {
                    t.context_length
                } else {
                    t.statuses.contains(&s.status)
                }
            }
            UpstreamFailure::Connect { .. } | UpstreamFailure::Io { .. } => t.connect,
            UpstreamFailure::Timeout { .. } | UpstreamFailure::StreamStalled { .. } => t.timeout,
            UpstreamFailure::StreamCut { .. } => t.stream_cut,
            UpstreamFailure::InvalidResponse { .. } | UpstreamFailure::ResponseTooLarge { .. } => {
                t.invalid_response
            }
            UpstreamFailure::CoolingDown { .. } | UpstreamFailure::Ejected { .. } => t.unavailable,
        },
        GatewayError::Internal(InternalError::Unavailable(_)) => t.unavailable,
        GatewayError::Client(_) | GatewayError::Internal(_) => false,
    }
}

/// What health learns from a failure (caller errors teach it nothing).
fn health_kind(e: &GatewayError) -> Option<FailureKind> {
    match e {
        GatewayError::Upstream(u) => Some(match u {
            UpstreamFailure::Status(s) => match s.status {
                429 => FailureKind::RateLimited,
                503 | 529 => FailureKind::Overloaded,
                500..=599 => FailureKind::ServerError,
                _ => return None,
            },
            UpstreamFailure::Connect { .. } | UpstreamFailure::Io { .. } => FailureKind::Connect,
            UpstreamFailure::Timeout { .. } | UpstreamFailure::StreamStalled { .. } => {
                FailureKind::Timeout
            }
            UpstreamFailure::StreamCut { .. } => FailureKind::StreamCut,
            UpstreamFailure::InvalidResponse { .. } | UpstreamFailure::ResponseTooLarge { .. } => {
                FailureKind::InvalidResponse
            }
            UpstreamFailure::CoolingDown { .. } | UpstreamFailure::Ejected { .. } => return None,
        }),
        GatewayError::Client(_) | GatewayError::Internal(_) => None,
    }
}

/// The retry layer's view of a failure.
fn failure_info(e: &GatewayError) -> FailureInfo {
    let (status, class, quota) = match e {
        GatewayError::Upstream(u) => match u {
            UpstreamFailure::Status(s) => (
                Some(s.status),
                FailureClass::Status,
                s.kind == kairos_providers::adapter::UpstreamErrorKind::QuotaExhausted,
            ),
            UpstreamFailure::Connect { .. } => (None, FailureClass::Connect, false),
            // The request was written and may be running (and billed) upstream: resending it
            // to the same target is not safe (test-matrix U9/U10). A fallback to another
            // target is the strategy's decision (`timeout` trigger).
            UpstreamFailure::Timeout { .. } => (None, FailureClass::Ambiguous, false),
            UpstreamFailure::Io { .. } => (None, FailureClass::Ambiguous, false),
            UpstreamFailure::StreamCut { .. }
            | UpstreamFailure::StreamStalled { .. }
            | UpstreamFailure::InvalidResponse { .. }
            | UpstreamFailure::ResponseTooLarge { .. } => {
                (None, FailureClass::AfterFirstByte, false)
            }
            UpstreamFailure::CoolingDown { .. } | UpstreamFailure::Ejected { .. } => {
                (None, FailureClass::NotRetryable, false)
            }
        },
        GatewayError::Client(_) | GatewayError::Internal(_) => {
            (None, FailureClass::NotRetryable, false)
        }
    };
    FailureInfo {
        status,
        class,
        quota_exhausted: quota,
        retry_after: e.retry_after(),
    }
}

fn unavailable(r: &Resolved) -> GatewayError {
    GatewayError::Internal(InternalError::Unavailable(format!(
        "provider `{}` is cooling down or ejected for `{}`",
        r.provider.name, r.entry.id
    )))
}

impl Gateway {
    /// Run `node` for the request. `more_after`: alternatives exist after this node.
    pub(crate) fn exec_node<'a>(
        &'a self,
        rec: &'a mut Recorder,
        x: &'a Exec<'a>,
        node: &'a Node,
        more_after: bool,
        force: bool,
    ) -> BoxFut<'a> {
        Box::pin(async move {
            match node {
                Node::Leaf(leaf) => self.exec_leaf(rec, x, leaf, more_after, force).await,
                Node::Fallback {
                    children,
                    triggers: t,
                } => {
                    let mut last: Option<GatewayError> = None;
                    let mut all_unavailable = true;
                    for (i, child) in children.iter().enumerate() {
                        let more = more_after || i + 1 < children.len();
                        match self.exec_node(rec, x, child, more, false).await {
                            Ok(d) => return Ok(d),
                            Err(e) => {
                                let is_unavailable = matches!(
                                    e,
                                    GatewayError::Internal(InternalError::Unavailable(_))
                                );
                                all_unavailable &= is_unavailable;
                                if !triggers(t, &e) {
                                    return Err(e);
                                }
                                rec.mark_fallback();
                                last = Some(e);
                            }
                        }
                    }
                    // Never leave a request with nothing: if every target was skipped as
                    // unavailable, try the first one anyway.
                    if all_unavailable
                        && !force
                        && let Some(first) = children.first()
                    {
                        return self.exec_node(rec, x, first, more_after, true).await;
                    }
                    Err(last.unwrap_or_else(|| {
                        GatewayError::Internal(InternalError::Unavailable("no target".into()))
                    }))
                }
                Node::LoadBalance {
                    children,
                    triggers: t,
                    fallback_on_failure,
                } => {
                    let mut tried: Vec<usize> = Vec::new();
                    let mut last: Option<GatewayError> = None;
                    let mut all_unavailable = true;
                    while let Some(i) = self.pick(children, &tried) {
                        tried.push(i);
                        let more =
                            more_after || (*fallback_on_failure && tried.len() < children.len());
                        match self.exec_node(rec, x, &children[i].0, more, false).await {
                            Ok(d) => return Ok(d),
                            Err(e) => {
                                all_unavailable &= matches!(
                                    e,
                                    GatewayError::Internal(InternalError::Unavailable(_))
                                );
                                if !*fallback_on_failure || !triggers(t, &e) {
                                    return Err(e);
                                }
                                rec.mark_fallback();
                                last = Some(e);
                            }
                        }
                    }
                    if all_unavailable
                        && !force
                        && let Some((first, _)) = children.first()
                    {
                        return self.exec_node(rec, x, first, more_after, true).await;
                    }
                    Err(last.unwrap_or_else(|| {
                        GatewayError::Internal(InternalError::Unavailable("no target".into()))
                    }))
                }
                Node::Conditional { branches, default } => {
                    let chosen = branches
                        .iter()
                        .find(|(when, _)| crate::strategy::matches(when, x.facts))
                        .map_or(default, |(_, n)| n);
                    self.exec_node(rec, x, chosen, more_after, force).await
                }
            }
        })
    }

    /// Health-weighted random choice among the untried children (configured weight × health).
    fn pick(&self, children: &[(Arc<Node>, f64)], tried: &[usize]) -> Option<usize> {
        let weights: Vec<f64> = children
            .iter()
            .enumerate()
            .map(|(i, (n, w))| {
                if tried.contains(&i) {
                    0.0
                } else {
                    match n.as_ref() {
                        Node::Leaf(l) => w * self.health.weight(&key(&l.resolved)),
                        _ => *w,
                    }
                }
            })
            .collect();
        let total: f64 = weights.iter().sum();
        if total <= 0.0 {
            // Everything left is ejected: the first untried one, if any.
            return (0..children.len()).find(|i| !tried.contains(i));
        }
        let mut x = rand::random::<f64>() * total;
        for (i, w) in weights.iter().enumerate() {
            if *w <= 0.0 {
                continue;
            }
            if x < *w {
                return Some(i);
            }
            x -= w;
        }
        weights.iter().rposition(|w| *w > 0.0)
    }

    /// One target, with retries on it.
    async fn exec_leaf(
        &self,
        rec: &mut Recorder,
        x: &Exec<'_>,
        leaf: &Leaf,
        more_after: bool,
        force: bool,
    ) -> Result<Dispatched, GatewayError> {
        let r = &leaf.resolved;
        let k = key(r);
        let target_name = format!("{}/{}", r.provider.name, r.entry.id);
        if let Some(a) = rec.access()
            && !a.allows(&[&r.entry.id], &r.provider.name)
        {
            // A strategy target this key may not use: skipped like an unavailable one.
            rec.add_attempt(AttemptRecord::skipped(&target_name));
            return Err(if force {
                GatewayError::Client(crate::error::ClientError::ModelNotAllowed {
                    model: r.entry.id.clone(),
                })
            } else {
                unavailable(r)
            });
        }
        // Parameter overrides: copy the request only when there are some.
        let patched;
        let req: &ChatCompletionRequest = if leaf.params.is_empty() {
            x.req
        } else {
            patched = with_params(x.req, &leaf.params)?;
            &patched
        };
        let mut attempt: u32 = 0;
        // A retry's slot in the retry budget, held until the retried attempt is over.
        let mut _retry_slot: Option<crate::retry::RetryGuard> = None;
        // A half-open probe must always be reported; this cancels it if the attempt ends
        // without an upstream verdict (caller error, or the future dropped).
        loop {
            let mut probe = None;
            let mut _last_resort = None;
            match self.health.admit(&k) {
                Admission::Open => {}
                Admission::Probe => {
                    probe = Some(ProbeGuard {
                        reg: &self.health,
                        key: &k,
                        reported: false,
                    })
                }
                // Even the last resort respects a provider's explicit Retry-After.
                Admission::CoolingDown { until } => {
                    rec.add_attempt(AttemptRecord::skipped(&target_name));
                    return Err(GatewayError::Upstream(UpstreamFailure::CoolingDown {
                        provider: r.provider.name.clone(),
                        retry_after: until.saturating_duration_since(Instant::now()),
                    }));
                }
                Admission::Ejected { .. } if !force => {
                    rec.add_attempt(AttemptRecord::skipped(&target_name));
                    return Err(unavailable(r));
                }
                // Every target of the plan is ejected: the last target is never starved, but
                // only one request at a time tries it; the others fail fast (U21).
                Admission::Ejected { until } => match self.health.claim_last_resort(&k) {
                    Some(g) => _last_resort = Some(g),
                    None => {
                        rec.add_attempt(AttemptRecord::skipped(&target_name));
                        return Err(GatewayError::Upstream(UpstreamFailure::Ejected {
                            provider: r.provider.name.clone(),
                            retry_after: until
                                .saturating_duration_since(Instant::now())
                                .max(Duration::from_secs(1)),
                        }));
                    }
                },
            }
            attempt += 1;
            let now = Instant::now();
            if now >= x.deadline {
                return Err(GatewayError::Upstream(UpstreamFailure::Timeout {
                    provider: r.provider.name.clone(),
                }));
            }
            let limits = AttemptLimits {
                ttfb: leaf.timeouts.ttfb.unwrap_or(r.provider.ttfb_timeout),
                idle: leaf.timeouts.idle.unwrap_or(r.provider.stream_idle_timeout),
                deadline: leaf
                    .timeouts
                    .total
                    .map_or(x.deadline, |t| (now + t).min(x.deadline)),
                hold_for_content: more_after,
            };
            let started = std::time::Instant::now();
            let result = self.dispatch_chat(rec, req, r, limits).await;
            let latency = started.elapsed();
            match result {
                Ok(mut d) => {
                    if let Some(p) = probe.as_mut() {
                        p.reported = true;
                    }
                    self.health.record_success(&k, latency);
                    rec.add_attempt(AttemptRecord::ok(&target_name, latency));
                    let meta = d.meta_mut();
                    meta.attempts = rec.attempts_made();
                    meta.fallbacks = rec.fallbacks();
                    return Ok(d);
                }
                Err(e) => {
                    if let Some(kind) = health_kind(&e) {
                        if let Some(p) = probe.as_mut() {
                            p.reported = true;
                        }
                        self.health.record_failure(&k, kind, latency);
                    }
                    drop(probe);
                    if let Some(ra) = e.retry_after()
                        && matches!(&e, GatewayError::Upstream(UpstreamFailure::Status(s)) if matches!(s.status, 429 | 503 | 529))
                    {
                        self.health.cool_down(&k, ra);
                    }
                    let info = failure_info(&e);
                    let remaining = x.deadline.saturating_duration_since(Instant::now());
                    let decision = leaf.retry.decide(
                        attempt,
                        &info,
                        remaining,
                        &self.retry_budget,
                        &mut rand::rng(),
                    );
                    let retrying = matches!(decision, RetryDecision::Retry { .. });
                    rec.add_attempt(AttemptRecord::failed(&target_name, &e, latency, retrying));
                    match decision {
                        RetryDecision::Retry { after, guard } => {
                            _retry_slot = Some(guard);
                            tokio::time::sleep(after).await;
                        }
                        RetryDecision::GiveUp(_) => return Err(e),
                    }
                }
            }
        }
    }
}

/// Cancels a half-open probe that ended without a verdict (see [`crate::health`]).
struct ProbeGuard<'a> {
    reg: &'a crate::health::HealthRegistry,
    key: &'a TargetKey,
    reported: bool,
}

impl Drop for ProbeGuard<'_> {
    fn drop(&mut self) {
        if !self.reported {
            self.reg.cancel_probe(self.key);
        }
    }
}

/// The request with a target's parameter overrides applied.
fn with_params(
    req: &ChatCompletionRequest,
    params: &serde_json::Map<String, Value>,
) -> Result<ChatCompletionRequest, GatewayError> {
    let mut v = serde_json::to_value(req)
        .map_err(|e| GatewayError::Internal(InternalError::Translate(e.to_string())))?;
    if let Some(o) = v.as_object_mut() {
        // `model` is not serialised by the canonical request; it is required to read it back.
        o.insert("model".into(), Value::String(req.model.clone()));
        for (k, val) in params {
            o.insert(k.clone(), val.clone());
        }
    }
    let mut out: ChatCompletionRequest = serde_json::from_value(v)
        .map_err(|e| GatewayError::Internal(InternalError::Translate(e.to_string())))?;
    // Fields the canonical request never serialises.
    out.model.clone_from(&req.model);
    out.stream = req.stream;
    out.stream_options.clone_from(&req.stream_options);
    out.kairos.clone_from(&req.kairos);
    Ok(out)
}

/// A plan of one target: the pinned model with the default retry policy.
pub(crate) fn single(resolved: Resolved, retry: crate::retry::RetryPolicy) -> Node {
    Node::Leaf(Box::new(Leaf {
        resolved,
        params: serde_json::Map::new(),
        retry,
        timeouts: Timeouts::default(),
    }))
}

//! When and how long to wait before trying the same target again.
//!
//! [`RetryPolicy::decide`] turns one failed attempt into [`RetryDecision::Retry`] (wait, then resend to the **same**
//! target) or [`RetryDecision::GiveUp`] (the executor moves on to the next target, or answers). The rules (test matrix
//! U4–U10):
//!
//! - Retried: connect failures (nothing was sent), timeouts before the first byte, and error statuses listed in
//!   [`RetryPolicy::on_status`] (default 429, 500, 502, 503, 504, 529) that are 429 or 5xx.
//! - Never retried: quota exhaustion (`insufficient_quota`, spend limits), any other 4xx, anything after bytes
//!   reached the client, and an ambiguous failure after the request was written (the provider may have billed it)
//!   unless [`RetryPolicy::retry_ambiguous`] allows one retry.
//! - Wait: `Retry-After` exactly when it is at most [`RetryPolicy::retry_after_cap`] (longer: give up on this target
//!   so the executor falls back, [`GiveUpReason::RetryAfterTooLong`]); otherwise exponential backoff with full jitter
//!   ([`full_jitter`]). Never past the request deadline.
//! - At most [`RetryPolicy::max_attempts`] per target, and retries in flight bounded process-wide by a
//!   [`RetryBudget`] (Envoy `retry_budget`), so a full outage cannot multiply upstream load.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use kairos_providers::adapter::{UpstreamError, UpstreamErrorKind};
use rand::{Rng, RngExt};

/// Retry rules for one target. [`Default`] follows the official SDKs and Envoy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per target, the first included. Default 3 (= 2 retries, the OpenAI and Anthropic SDK default).
    pub max_attempts: u32,
    /// Backoff base: the n-th retry waits uniformly in `[0, min(max_backoff, base · 2^(n-1))]`. Default 100 ms.
    pub base_backoff: Duration,
    /// Backoff cap. Default 1 s (10 × base, Envoy's default `max_interval`).
    pub max_backoff: Duration,
    /// Longest `Retry-After` worth waiting for on the same target. Default 5 s (test matrix U5); a longer one means
    /// fall back now.
    pub retry_after_cap: Duration,
    /// Statuses that may be retried. Only 429 and 5xx are honoured: other 4xx are caller errors and never retried.
    /// Default 429, 500, 502, 503, 504, 529.
    pub on_status: Vec<u16>,
    /// Allow one retry after an ambiguous failure (connection lost after the request was written, before any
    /// response): it may be billed twice. Default false (test matrix U4).
    pub retry_ambiguous: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            base_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            retry_after_cap: Duration::from_secs(5),
            on_status: vec![429, 500, 502, 503, 504, 529],
            retry_ambiguous: false,
        }
    }
}

/// Where in the exchange an attempt failed: this decides whether resending is safe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FailureClass {
    /// Connection refused, DNS or TLS failure: the request never left. Safe to resend.
    Connect,
    /// No response head (or first stream event) in time; nothing reached the client.
    TimeoutBeforeFirstByte,
    /// The upstream answered with an error status (`FailureInfo::status`); nothing reached the client.
    Status,
    /// The connection broke after the request was written and before a response (RST, early EOF): the provider may
    /// have processed and billed it.
    Ambiguous,
    /// The failure came after bytes reached the client (a cut or stalled stream).
    AfterFirstByte,
    /// Not an upstream fault worth resending (a caller or gateway error).
    NotRetryable,
}

/// One failed attempt, as the executor saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailureInfo {
    /// HTTP status, for [`FailureClass::Status`].
    pub status: Option<u16>,
    pub class: FailureClass,
    /// A 429/402 that means quota or spend limit exhausted (`insufficient_quota`, `enforced_spend_limit_reached`).
    pub quota_exhausted: bool,
    /// The upstream's `Retry-After`.
    pub retry_after: Option<Duration>,
}

impl FailureInfo {
    fn of(class: FailureClass) -> Self {
        FailureInfo {
            status: None,
            class,
            quota_exhausted: false,
            retry_after: None,
        }
    }

    pub fn connect() -> Self {
        Self::of(FailureClass::Connect)
    }

    pub fn timeout_before_first_byte() -> Self {
        Self::of(FailureClass::TimeoutBeforeFirstByte)
    }

    pub fn ambiguous() -> Self {
        Self::of(FailureClass::Ambiguous)
    }

    pub fn after_first_byte() -> Self {
        Self::of(FailureClass::AfterFirstByte)
    }

    pub fn status(status: u16, retry_after: Option<Duration>) -> Self {
        FailureInfo {
            status: Some(status),
            class: FailureClass::Status,
            quota_exhausted: false,
            retry_after,
        }
    }

    /// A classified upstream error received before anything reached the client (an error response, or an error
    /// event at the very start of a stream).
    pub fn from_upstream(e: &UpstreamError) -> Self {
        FailureInfo {
            status: Some(e.status),
            class: FailureClass::Status,
            quota_exhausted: e.kind == UpstreamErrorKind::QuotaExhausted,
            retry_after: e.retry_after,
        }
    }
}

/// Why the executor should stop retrying this target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GiveUpReason {
    /// The failure must not be retried (caller error, quota, ambiguous, after the first byte, status not listed).
    NotRetryable,
    /// `max_attempts` reached on this target.
    AttemptsExhausted,
    /// The process-wide retry budget is spent.
    BudgetExhausted,
    /// The upstream asked for a longer wait than `retry_after_cap`: fall back instead.
    RetryAfterTooLong { retry_after: Duration },
    /// The wait would reach the request deadline.
    DeadlineTooClose,
}

impl GiveUpReason {
    pub fn as_str(self) -> &'static str {
        match self {
            GiveUpReason::NotRetryable => "not_retryable",
            GiveUpReason::AttemptsExhausted => "attempts_exhausted",
            GiveUpReason::BudgetExhausted => "budget_exhausted",
            GiveUpReason::RetryAfterTooLong { .. } => "retry_after_too_long",
            GiveUpReason::DeadlineTooClose => "deadline_too_close",
        }
    }
}

/// The verdict on one failed attempt.
#[derive(Debug)]
pub enum RetryDecision {
    /// Wait `after`, then resend to the same target. Hold `guard` until that retry attempt is over: it is this
    /// retry's slot in the [`RetryBudget`].
    Retry {
        after: Duration,
        guard: RetryGuard,
    },
    GiveUp(GiveUpReason),
}

impl RetryDecision {
    /// The wait, for a `Retry`.
    pub fn after(&self) -> Option<Duration> {
        match self {
            RetryDecision::Retry { after, .. } => Some(*after),
            RetryDecision::GiveUp(_) => None,
        }
    }

    /// The reason, for a `GiveUp`.
    pub fn give_up_reason(&self) -> Option<GiveUpReason> {
        match self {
            RetryDecision::Retry { .. } => None,
            RetryDecision::GiveUp(r) => Some(*r),
        }
    }
}

impl RetryPolicy {
    /// Whether this kind of failure may be retried at all on attempt number `attempt` (ignoring attempts, budget,
    /// `Retry-After` and deadline).
    pub fn is_retryable(&self, attempt: u32, f: &FailureInfo) -> bool {
        if f.quota_exhausted {
            return false;
        }
        match f.class {
            FailureClass::Connect | FailureClass::TimeoutBeforeFirstByte => true,
            FailureClass::Status => f.status.is_some_and(|s| {
                (s == 429 || (500..=599).contains(&s)) && self.on_status.contains(&s)
            }),
            // At most one resend after an ambiguous failure, and only when it was the first attempt: a second
            // possibly-billed duplicate is never worth it.
            FailureClass::Ambiguous => self.retry_ambiguous && attempt <= 1,
            FailureClass::AfterFirstByte | FailureClass::NotRetryable => false,
        }
    }

    /// Decide on a failed attempt. `attempt` = attempts already made on this target (1 after the first);
    /// `remaining` = time left before the request deadline. Takes a slot from `budget` only when it answers `Retry`.
    pub fn decide<R: Rng + ?Sized>(
        &self,
        attempt: u32,
        f: &FailureInfo,
        remaining: Duration,
        budget: &RetryBudget,
        rng: &mut R,
    ) -> RetryDecision {
        if !self.is_retryable(attempt, f) {
            return RetryDecision::GiveUp(GiveUpReason::NotRetryable);
        }
        if attempt >= self.max_attempts {
            return RetryDecision::GiveUp(GiveUpReason::AttemptsExhausted);
        }
        let after = match f.retry_after {
            Some(ra) if ra > self.retry_after_cap => {
                return RetryDecision::GiveUp(GiveUpReason::RetryAfterTooLong { retry_after: ra });
            }
            Some(ra) => ra,
            None => full_jitter(self.base_backoff, self.max_backoff, attempt, rng),
        };
        if after >= remaining {
            return RetryDecision::GiveUp(GiveUpReason::DeadlineTooClose);
        }
        match budget.try_retry() {
            Some(guard) => RetryDecision::Retry { after, guard },
            None => {
                crate::metrics::retry_budget_exhausted();
                RetryDecision::GiveUp(GiveUpReason::BudgetExhausted)
            }
        }
    }
}

/// Exponential backoff with full jitter (AWS architecture blog): uniform in `[0, min(max, base · 2^(attempt-1))]`.
/// `attempt` counts from 1 (0 is treated as 1).
pub fn full_jitter<R: Rng + ?Sized>(
    base: Duration,
    max: Duration,
    attempt: u32,
    rng: &mut R,
) -> Duration {
    let factor = 2u32
        .checked_pow(attempt.saturating_sub(1))
        .unwrap_or(u32::MAX);
    let cap = base.saturating_mul(factor).min(max);
    let cap_nanos = u64::try_from(cap.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(rng.random_range(0..=cap_nanos))
}

#[derive(Debug)]
struct BudgetInner {
    ratio: f64,
    min_concurrent: u64,
    active_requests: AtomicU64,
    active_retries: AtomicU64,
}

/// Process-wide retry budget (Envoy `retry_budget`): retries in flight may be at most `ratio` of the active requests,
/// but at least `min_concurrent` are always allowed. Cheap to clone (shared).
#[derive(Clone, Debug)]
pub struct RetryBudget {
    inner: Arc<BudgetInner>,
}

impl Default for RetryBudget {
    /// Envoy's defaults: 20 % of active requests, at least 3 concurrent retries.
    fn default() -> Self {
        RetryBudget::new(0.2, 3)
    }
}

impl RetryBudget {
    /// `ratio` is clamped to `0..=1` (NaN counts as 0).
    pub fn new(ratio: f64, min_concurrent: u32) -> Self {
        let ratio = if ratio.is_nan() {
            0.0
        } else {
            ratio.clamp(0.0, 1.0)
        };
        RetryBudget {
            inner: Arc::new(BudgetInner {
                ratio,
                min_concurrent: u64::from(min_concurrent),
                active_requests: AtomicU64::new(0),
                active_retries: AtomicU64::new(0),
            }),
        }
    }

    /// Count a client request as active until the guard drops.
    pub fn request_started(&self) -> RequestGuard {
        self.inner.active_requests.fetch_add(1, Ordering::Relaxed);
        RequestGuard {
            inner: Arc::clone(&self.inner),
        }
    }

    /// Claim a retry slot, held until the guard drops; `None` when the budget is spent.
    pub fn try_retry(&self) -> Option<RetryGuard> {
        let inner = &self.inner;
        let active = inner.active_requests.load(Ordering::Relaxed);
        // The epsilon keeps 0.2 × 10 at 2 despite binary rounding.
        let by_ratio = (inner.ratio * active as f64 + 1e-9).floor() as u64;
        let limit = by_ratio.max(inner.min_concurrent);
        inner
            .active_retries
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |r| {
                (r < limit).then_some(r + 1)
            })
            .ok()?;
        Some(RetryGuard {
            inner: Arc::clone(&self.inner),
        })
    }

    pub fn active_requests(&self) -> u64 {
        self.inner.active_requests.load(Ordering::Relaxed)
    }

    pub fn active_retries(&self) -> u64 {
        self.inner.active_retries.load(Ordering::Relaxed)
    }
}

/// An active request in a [`RetryBudget`]; decrements on drop.
#[derive(Debug)]
pub struct RequestGuard {
    inner: Arc<BudgetInner>,
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.inner.active_requests.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A retry in flight in a [`RetryBudget`]; decrements on drop.
#[derive(Debug)]
pub struct RetryGuard {
    inner: Arc<BudgetInner>,
}

impl Drop for RetryGuard {
    fn drop(&mut self) {
        self.inner.active_retries.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    fn rng() -> SmallRng {
        SmallRng::seed_from_u64(9)
    }

    const LONG: Duration = Duration::from_secs(600);

    fn decide(p: &RetryPolicy, attempt: u32, f: &FailureInfo) -> RetryDecision {
        p.decide(attempt, f, LONG, &RetryBudget::default(), &mut rng())
    }

    fn retries(d: &RetryDecision) -> bool {
        matches!(d, RetryDecision::Retry { .. })
    }

    #[test]
    fn decision_table_over_failure_classes() {
        let p = RetryPolicy::default();
        let quota = FailureInfo {
            quota_exhausted: true,
            ..FailureInfo::status(429, None)
        };
        let cases: Vec<(&str, FailureInfo, bool)> = vec![
            ("connect", FailureInfo::connect(), true),
            ("timeout", FailureInfo::timeout_before_first_byte(), true),
            ("429", FailureInfo::status(429, None), true),
            (
                "429 retry-after",
                FailureInfo::status(429, Some(Duration::from_secs(2))),
                true,
            ),
            ("quota 429", quota, false),
            ("500", FailureInfo::status(500, None), true),
            ("501", FailureInfo::status(501, None), false),
            ("502", FailureInfo::status(502, None), true),
            ("503", FailureInfo::status(503, None), true),
            ("504", FailureInfo::status(504, None), true),
            ("529", FailureInfo::status(529, None), true),
            ("400", FailureInfo::status(400, None), false),
            ("401", FailureInfo::status(401, None), false),
            ("402", FailureInfo::status(402, None), false),
            ("403", FailureInfo::status(403, None), false),
            ("404", FailureInfo::status(404, None), false),
            ("408", FailureInfo::status(408, None), false),
            ("413", FailureInfo::status(413, None), false),
            ("422", FailureInfo::status(422, None), false),
            (
                "status without a code",
                FailureInfo::of(FailureClass::Status),
                false,
            ),
            ("ambiguous", FailureInfo::ambiguous(), false),
            ("after first byte", FailureInfo::after_first_byte(), false),
            (
                "caller or gateway error",
                FailureInfo::of(FailureClass::NotRetryable),
                false,
            ),
        ];
        for (name, f, want) in cases {
            let d = decide(&p, 1, &f);
            assert_eq!(retries(&d), want, "{name}: {d:?}");
            if !want {
                assert_eq!(
                    d.give_up_reason(),
                    Some(GiveUpReason::NotRetryable),
                    "{name}"
                );
            }
        }
    }

    #[test]
    fn listed_4xx_other_than_429_is_still_not_retried() {
        let p = RetryPolicy {
            on_status: vec![400, 408, 429, 503],
            ..RetryPolicy::default()
        };
        assert!(!p.is_retryable(1, &FailureInfo::status(400, None)));
        assert!(!p.is_retryable(1, &FailureInfo::status(408, None)));
        assert!(p.is_retryable(1, &FailureInfo::status(429, None)));
        assert!(
            !p.is_retryable(1, &FailureInfo::status(500, None)),
            "unlisted"
        );
    }

    #[test]
    fn ambiguous_retried_once_only_when_allowed() {
        let p = RetryPolicy {
            retry_ambiguous: true,
            ..RetryPolicy::default()
        };
        assert!(retries(&decide(&p, 1, &FailureInfo::ambiguous())));
        assert_eq!(
            decide(&p, 2, &FailureInfo::ambiguous()).give_up_reason(),
            Some(GiveUpReason::NotRetryable)
        );
        // Never after the first byte, whatever the policy.
        assert!(!retries(&decide(&p, 1, &FailureInfo::after_first_byte())));
    }

    #[test]
    fn from_upstream_marks_quota_exhaustion() {
        let e = UpstreamError {
            status: 429,
            kind: UpstreamErrorKind::QuotaExhausted,
            message: "You exceeded your current quota".to_owned(),
            provider_code: Some("insufficient_quota".to_owned()),
            retry_after: None,
        };
        let f = FailureInfo::from_upstream(&e);
        assert!(f.quota_exhausted);
        assert!(!RetryPolicy::default().is_retryable(1, &f));
        let e = UpstreamError {
            status: 529,
            kind: UpstreamErrorKind::Overloaded,
            message: "Overloaded".to_owned(),
            provider_code: Some("overloaded_error".to_owned()),
            retry_after: Some(Duration::from_secs(1)),
        };
        let f = FailureInfo::from_upstream(&e);
        assert_eq!(f, FailureInfo::status(529, Some(Duration::from_secs(1))));
        assert_eq!(
            decide(&RetryPolicy::default(), 1, &f).after(),
            Some(Duration::from_secs(1))
        );
    }

    #[test]
    fn at_most_max_attempts_per_target() {
        let p = RetryPolicy::default();
        let f = FailureInfo::status(503, None);
        assert!(retries(&decide(&p, 1, &f)));
        assert!(retries(&decide(&p, 2, &f)));
        assert_eq!(
            decide(&p, 3, &f).give_up_reason(),
            Some(GiveUpReason::AttemptsExhausted)
        );
        let once = RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        };
        assert_eq!(
            decide(&once, 1, &f).give_up_reason(),
            Some(GiveUpReason::AttemptsExhausted)
        );
    }

    #[test]
    fn retry_after_is_waited_exactly_up_to_the_cap() {
        let p = RetryPolicy::default();
        let two = FailureInfo::status(429, Some(Duration::from_secs(2)));
        assert_eq!(decide(&p, 1, &two).after(), Some(Duration::from_secs(2)));
        let five = FailureInfo::status(503, Some(Duration::from_secs(5)));
        assert_eq!(decide(&p, 1, &five).after(), Some(Duration::from_secs(5)));
        let six = FailureInfo::status(503, Some(Duration::from_secs(6)));
        assert_eq!(
            decide(&p, 1, &six).give_up_reason(),
            Some(GiveUpReason::RetryAfterTooLong {
                retry_after: Duration::from_secs(6)
            })
        );
        let zero = FailureInfo::status(429, Some(Duration::ZERO));
        assert_eq!(decide(&p, 1, &zero).after(), Some(Duration::ZERO));
    }

    #[test]
    fn never_sleeps_past_the_deadline() {
        let p = RetryPolicy::default();
        let budget = RetryBudget::default();
        let two = FailureInfo::status(429, Some(Duration::from_secs(2)));
        let d = p.decide(1, &two, Duration::from_secs(2), &budget, &mut rng());
        assert_eq!(d.give_up_reason(), Some(GiveUpReason::DeadlineTooClose));
        let d = p.decide(1, &two, Duration::from_millis(2001), &budget, &mut rng());
        assert_eq!(d.after(), Some(Duration::from_secs(2)));
        drop(d);
        // Jittered waits too: with no time left nothing is retried, and a retry never waits past what is left.
        let f = FailureInfo::connect();
        let d = p.decide(1, &f, Duration::ZERO, &budget, &mut rng());
        assert_eq!(d.give_up_reason(), Some(GiveUpReason::DeadlineTooClose));
        let mut r = rng();
        for _ in 0..1000 {
            let remaining = Duration::from_millis(50);
            match p.decide(2, &f, remaining, &budget, &mut r) {
                RetryDecision::Retry { after, .. } => assert!(after < remaining),
                RetryDecision::GiveUp(reason) => {
                    assert_eq!(reason, GiveUpReason::DeadlineTooClose)
                }
            }
        }
        // Budget untouched by give-ups, released by dropped retries.
        assert_eq!(budget.active_retries(), 0);
    }

    #[test]
    fn jittered_backoff_grows_with_attempts() {
        let p = RetryPolicy::default();
        let mut r = rng();
        let mean = |attempt: u32, r: &mut SmallRng| {
            let total: Duration = (0..2000)
                .map(|_| full_jitter(p.base_backoff, p.max_backoff, attempt, r))
                .sum();
            total / 2000
        };
        let (m1, m2, m3) = (mean(1, &mut r), mean(2, &mut r), mean(3, &mut r));
        // Means ~50, ~100, ~200 ms.
        assert!((40..60).contains(&m1.as_millis()), "{m1:?}");
        assert!((85..115).contains(&m2.as_millis()), "{m2:?}");
        assert!((175..225).contains(&m3.as_millis()), "{m3:?}");
        // Capped at max_backoff: attempt 10 would be 51.2 s uncapped.
        let m10 = mean(10, &mut r);
        assert!((450..550).contains(&m10.as_millis()), "{m10:?}");
        // The gaps differ (jitter), they are not one constant.
        let a = full_jitter(p.base_backoff, p.max_backoff, 3, &mut r);
        let b = full_jitter(p.base_backoff, p.max_backoff, 3, &mut r);
        assert_ne!(a, b);
    }

    proptest! {
        #[test]
        fn full_jitter_within_bounds(
            base_ms in 0u64..10_000,
            max_ms in 0u64..100_000,
            attempt in 0u32..80,
            seed: u64,
        ) {
            let base = Duration::from_millis(base_ms);
            let max = Duration::from_millis(max_ms);
            let mut r = SmallRng::seed_from_u64(seed);
            let d = full_jitter(base, max, attempt, &mut r);
            let n = attempt.max(1) - 1;
            let exp = if n >= 64 { u128::MAX } else { 1u128 << n };
            let bound = (u128::from(base_ms) * 1_000_000).saturating_mul(exp).min(u128::from(max_ms) * 1_000_000);
            prop_assert!(d.as_nanos() <= bound, "{d:?} > {bound}");
        }
    }

    #[test]
    fn budget_allows_ratio_of_active_requests_but_at_least_min() {
        let budget = RetryBudget::new(0.2, 3);
        let requests: Vec<RequestGuard> = (0..10).map(|_| budget.request_started()).collect();
        assert_eq!(budget.active_requests(), 10);
        // max(0.2 × 10, 3) = 3.
        let held: Vec<RetryGuard> = (0..3).filter_map(|_| budget.try_retry()).collect();
        assert_eq!(held.len(), 3);
        assert!(budget.try_retry().is_none());
        // A released guard frees a slot.
        let mut held = held;
        held.pop();
        assert_eq!(budget.active_retries(), 2);
        let again = budget.try_retry();
        assert!(again.is_some());
        assert!(budget.try_retry().is_none());

        // 30 active requests: 6 retries.
        let more: Vec<RequestGuard> = (0..20).map(|_| budget.request_started()).collect();
        let extra: Vec<RetryGuard> = (0..10).filter_map(|_| budget.try_retry()).collect();
        assert_eq!(extra.len(), 3);
        assert_eq!(budget.active_retries(), 6);

        drop((requests, more, held, again, extra));
        assert_eq!(budget.active_requests(), 0);
        assert_eq!(budget.active_retries(), 0);
    }

    #[test]
    fn decide_gives_up_when_the_budget_is_spent() {
        let p = RetryPolicy::default();
        let budget = RetryBudget::new(0.2, 1);
        let _req = budget.request_started();
        let f = FailureInfo::status(503, None);
        let first = p.decide(1, &f, LONG, &budget, &mut rng());
        assert!(retries(&first));
        assert_eq!(budget.active_retries(), 1);
        let second = p.decide(1, &f, LONG, &budget, &mut rng());
        assert_eq!(second.give_up_reason(), Some(GiveUpReason::BudgetExhausted));
        drop(first);
        assert!(retries(&p.decide(1, &f, LONG, &budget, &mut rng())));
    }

    #[test]
    fn budget_is_enforced_under_concurrency() {
        let budget = RetryBudget::new(0.0, 4);
        let peak = Arc::new(AtomicU64::new(0));
        std::thread::scope(|s| {
            for _ in 0..8 {
                let budget = budget.clone();
                let peak = Arc::clone(&peak);
                s.spawn(move || {
                    for _ in 0..2000 {
                        if let Some(g) = budget.try_retry() {
                            peak.fetch_max(budget.active_retries(), Ordering::Relaxed);
                            drop(g);
                        }
                    }
                });
            }
        });
        assert!(peak.load(Ordering::Relaxed) <= 4);
        assert_eq!(budget.active_retries(), 0);
    }

    #[test]
    fn budget_clamps_bad_ratios() {
        let b = RetryBudget::new(f64::NAN, 0);
        let _r = b.request_started();
        assert!(b.try_retry().is_none());
        let b = RetryBudget::new(7.0, 0);
        let _r = b.request_started();
        let g = b.try_retry();
        assert!(g.is_some());
        assert!(b.try_retry().is_none());
    }
}

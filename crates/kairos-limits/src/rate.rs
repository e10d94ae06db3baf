//! Rate limits: the GCRA maths, the decision types, the header rendering and the in-process
//! limiter.
//!
//! # GCRA
//!
//! Each limiter is one number, its *theoretical arrival time* (TAT, microseconds). A limiter of
//! `per_minute` units per minute and a burst of `burst` units has an emission interval
//! `T = 60 s / per_minute` and a tolerance `τ = burst · T`. A request of cost `n` is admitted at
//! time `now` iff `max(TAT, now) + n·T − now ≤ τ`, and then `TAT := max(TAT, now) + n·T`.
//!
//! Over any interval of length `D`, at most `per_minute/60 · D + burst` units are admitted
//! (R1), and there is no window boundary at which twice the rate can pass (R2): the state is a
//! single continuous number. To keep that bound exact with integer microseconds, the increment of
//! a request is rounded **up** (`ceil(n · 60e6 / per_minute)`) and the tolerance **down**
//! (`floor(burst · 60e6 / per_minute)`): rounding can only ever admit less, never more.
//!
//! The same maths runs in the Redis script (`lua/gcra_check.lua`, time from Redis `TIME`) and in
//! [`LocalRateLimiter`] (time from the local monotonic clock); both report the TATs back and the
//! decision is built here by one function, so both backends answer identically.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// Microseconds in a minute.
const MINUTE_US: u128 = 60_000_000;

/// The largest span (µs, ~35.7 years) an increment, a tolerance or an adjustment may have.
///
/// Keeps every TAT below 2^53 so the Lua scripts (doubles) stay exact.
pub(crate) const MAX_SPAN_US: u64 = 1 << 50;

/// One limiter to check, with the cost to charge if the whole decision passes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RateCheck {
    /// The limiter's identity, e.g. `key:<key id>:rpm` or `ws:<workspace id>:tpm`. It becomes
    /// part of a Redis key: pass ids, never secrets.
    pub key: String,
    /// Units (requests or tokens) allowed per minute. `0` admits nothing of positive cost.
    pub per_minute: u64,
    /// Units that may pass at once from an idle limiter (the bucket size, reported as
    /// `RateLimit-Limit`). `0` means "one minute's worth", i.e. `per_minute`.
    pub burst: u64,
    /// Units this request costs: 1 for a request, the estimated token count for a TPM limiter.
    /// A cost above `burst` can never pass.
    pub cost: u64,
}

impl RateCheck {
    /// A check of `cost` units against a limiter of `per_minute` with the default burst (one
    /// minute's worth).
    #[must_use]
    pub fn new(key: impl Into<String>, per_minute: u64, cost: u64) -> Self {
        Self {
            key: key.into(),
            per_minute,
            burst: 0,
            cost,
        }
    }

    /// The same check with an explicit burst.
    #[must_use]
    pub fn with_burst(mut self, burst: u64) -> Self {
        self.burst = burst;
        self
    }

    /// The burst in force: `burst`, or `per_minute` when `burst` is 0.
    #[must_use]
    pub fn effective_burst(&self) -> u64 {
        if self.burst == 0 {
            self.per_minute
        } else {
            self.burst
        }
    }
}

/// Which store took a rate decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// Redis: exact across every replica sharing it.
    Redis,
    /// This process only: `Limits::local_only`, or the fallback while Redis is unreachable
    /// (then every replica admits up to the full limit on its own).
    Local,
}

impl Backend {
    /// `redis` or `local`, e.g. for a log field or a metric label.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Redis => "redis",
            Self::Local => "local",
        }
    }
}

/// The state of one limiter after a decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimiterStatus {
    /// [`RateCheck::key`].
    pub key: String,
    /// Whether this limiter alone would have admitted the request.
    pub allowed: bool,
    /// The bucket size ([`RateCheck::effective_burst`]), for `RateLimit-Limit`.
    pub limit: u64,
    /// Units that could pass right now, after this decision, for `RateLimit-Remaining`.
    pub remaining: u64,
    /// Time until the limiter is back to a full bucket, for `RateLimit-Reset`.
    pub reset: Duration,
    /// Only when this limiter denied: the time after which this request would pass it (if
    /// nothing else is admitted meanwhile). `None` when it allowed, or when the cost exceeds the
    /// burst and can never pass.
    pub retry_after: Option<Duration>,
}

/// The answer to [`crate::Limits::check_rates`]: all limiters passed and were charged, or
/// none was charged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateDecision {
    /// Whether the request is admitted.
    pub allowed: bool,
    /// Which store decided.
    pub backend: Backend,
    /// Decided in process against this replica's rate lease (units taken from Redis in an
    /// earlier decision, at most `rate_lease_ttl` ago); `backend` is then [`Backend::Redis`].
    pub leased: bool,
    /// One status per check, in the order of the checks.
    pub limiters: Vec<LimiterStatus>,
    /// On a denial, the time after which the request would pass every limiter that denied it;
    /// `None` when allowed, or when a cost exceeds its limiter's burst (never admissible: answer
    /// without `Retry-After`).
    pub retry_after: Option<Duration>,
}

impl RateDecision {
    /// An admitted decision with no limiter (nothing to check).
    #[must_use]
    pub fn unlimited(backend: Backend) -> Self {
        Self {
            allowed: true,
            backend,
            leased: false,
            limiters: Vec::new(),
            retry_after: None,
        }
    }

    /// The limiter the headers describe: on a denial the one that denies for longest (one that
    /// can never pass first); otherwise the one with the smallest remaining share.
    #[must_use]
    pub fn binding_limiter(&self) -> Option<&LimiterStatus> {
        if self.allowed {
            self.limiters.iter().min_by(|a, b| {
                // a.remaining / a.limit vs b.remaining / b.limit, exactly.
                let lhs = u128::from(a.remaining) * u128::from(b.limit.max(1));
                let rhs = u128::from(b.remaining) * u128::from(a.limit.max(1));
                lhs.cmp(&rhs)
            })
        } else {
            self.limiters
                .iter()
                .filter(|l| !l.allowed)
                .max_by_key(|l| l.retry_after.unwrap_or(Duration::MAX))
        }
    }

    /// The response headers of the IETF RateLimit draft, as `(name, value)` pairs:
    /// `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset` (whole seconds, rounded up)
    /// of [`Self::binding_limiter`], plus `Retry-After` (whole seconds, rounded up, at least 1)
    /// on a denial that can succeed later. Empty when there was no limiter.
    #[must_use]
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let Some(l) = self.binding_limiter() else {
            return Vec::new();
        };
        let mut out = vec![
            ("RateLimit-Limit", l.limit.to_string()),
            ("RateLimit-Remaining", l.remaining.to_string()),
            ("RateLimit-Reset", ceil_secs(l.reset).to_string()),
        ];
        if !self.allowed
            && let Some(wait) = self.retry_after
        {
            out.push(("Retry-After", ceil_secs(wait).max(1).to_string()));
        }
        out
    }
}

/// Whole seconds of `d`, rounded up.
fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// The integer GCRA parameters of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Params {
    /// What admitting the request adds to the TAT (µs), rounded up.
    pub inc_us: u64,
    /// The tolerance τ (µs), rounded down.
    pub dvt_us: u64,
    /// Bucket size reported as the limit.
    pub limit: u64,
    /// Units per minute.
    pub per_minute: u64,
}

impl Params {
    pub(crate) fn of(check: &RateCheck) -> Self {
        let burst = check.effective_burst();
        let (inc_us, dvt_us) = if check.per_minute == 0 {
            (if check.cost == 0 { 0 } else { MAX_SPAN_US }, 0)
        } else {
            (
                span_ceil(check.cost, check.per_minute),
                span_floor(burst, check.per_minute),
            )
        };
        Self {
            inc_us,
            dvt_us,
            limit: burst,
            per_minute: check.per_minute,
        }
    }

    /// The request can never pass: its cost exceeds the burst.
    pub(crate) fn impossible(&self) -> bool {
        self.inc_us > self.dvt_us
    }

    /// Units that fit in `headroom_us` of tolerance.
    fn units_in(&self, headroom_us: u64) -> u64 {
        let units = u128::from(headroom_us) * u128::from(self.per_minute) / MINUTE_US;
        u64::try_from(units).unwrap_or(u64::MAX).min(self.limit)
    }
}

/// `ceil(units · 60e6 / per_minute)` µs, capped at [`MAX_SPAN_US`]. `per_minute` > 0.
pub(crate) fn span_ceil(units: u64, per_minute: u64) -> u64 {
    let num = u128::from(units) * MINUTE_US;
    let pm = u128::from(per_minute);
    cap(num.div_ceil(pm))
}

/// `floor(units · 60e6 / per_minute)` µs, capped at [`MAX_SPAN_US`]. `per_minute` > 0.
pub(crate) fn span_floor(units: u64, per_minute: u64) -> u64 {
    cap(u128::from(units) * MINUTE_US / u128::from(per_minute))
}

fn cap(us: u128) -> u64 {
    u64::try_from(us).unwrap_or(u64::MAX).min(MAX_SPAN_US)
}

/// The signed TAT move (µs) for an adjustment of `delta` units: charges round up, give-backs
/// round down, so an adjustment never credits more than the units were worth.
pub(crate) fn adjust_span(per_minute: u64, delta: i64) -> i64 {
    if per_minute == 0 || delta == 0 {
        return 0;
    }
    let units = delta.unsigned_abs();
    let span = if delta > 0 {
        span_ceil(units, per_minute)
    } else {
        span_floor(units, per_minute)
    };
    // span ≤ 2^50, fits.
    let span = i64::try_from(span).unwrap_or(i64::MAX);
    if delta > 0 { span } else { -span }
}

/// Builds the decision from what a backend reports.
///
/// `tats[i]` is, when `allowed`, the TAT of check `i` after charging it; when denied, its TAT
/// before (already `max(TAT, now)`, and including earlier checks of the same key in this
/// decision). `now_us` is the backend's clock.
pub(crate) fn build_decision(
    checks: &[RateCheck],
    params: &[Params],
    allowed: bool,
    now_us: u64,
    tats: &[u64],
    backend: Backend,
) -> RateDecision {
    let mut limiters = Vec::with_capacity(checks.len());
    let mut retry_after: Option<Duration> = None;
    let mut never = false;
    for ((check, p), &tat) in checks.iter().zip(params).zip(tats) {
        let level = tat.saturating_sub(now_us);
        let remaining = p.units_in(p.dvt_us.saturating_sub(level));
        let status = if allowed {
            LimiterStatus {
                key: check.key.clone(),
                allowed: true,
                limit: p.limit,
                remaining,
                reset: Duration::from_micros(level),
                retry_after: None,
            }
        } else {
            let needed = level.saturating_add(p.inc_us);
            let this_ok = needed <= p.dvt_us;
            let wait = if this_ok || p.impossible() {
                None
            } else {
                Some(Duration::from_micros(needed - p.dvt_us))
            };
            if !this_ok {
                match wait {
                    None => never = true,
                    Some(w) => retry_after = Some(retry_after.map_or(w, |r| r.max(w))),
                }
            }
            LimiterStatus {
                key: check.key.clone(),
                allowed: this_ok,
                limit: p.limit,
                remaining,
                reset: Duration::from_micros(level),
                retry_after: wait,
            }
        };
        limiters.push(status);
    }
    RateDecision {
        allowed,
        backend,
        leased: false,
        limiters,
        retry_after: if allowed || never { None } else { retry_after },
    }
}

/// An in-process GCRA limiter: the same maths as the Redis script, on a clock the caller
/// passes in (microseconds on any monotonic scale).
///
/// [`crate::Limits`] uses one per process for `local_only` deployments and as the fallback while
/// Redis is unreachable, fed by a monotonic clock. The explicit clock makes it testable over
/// simulated time.
#[derive(Debug, Default)]
pub struct LocalRateLimiter {
    state: Mutex<LocalState>,
}

#[derive(Debug, Default)]
struct LocalState {
    tats: HashMap<String, u64>,
    ops: u64,
}

/// Every this many operations, limiters back to a full bucket are dropped from memory.
const PRUNE_EVERY: u64 = 4096;

impl LocalState {
    fn maybe_prune(&mut self, now_us: u64) {
        self.ops = self.ops.wrapping_add(1);
        if self.ops.is_multiple_of(PRUNE_EVERY) {
            self.tats.retain(|_, tat| *tat > now_us);
        }
    }
}

impl LocalRateLimiter {
    /// An empty limiter: every key starts with a full bucket.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Checks every limiter at time `now_us` and charges them all, or none if one denies.
    ///
    /// Several checks of the same key are applied in order, as in the Redis script.
    pub fn check_at(&self, checks: &[RateCheck], now_us: u64) -> RateDecision {
        let params: Vec<Params> = checks.iter().map(Params::of).collect();
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut pending: HashMap<&str, u64> = HashMap::new();
        let mut before = Vec::with_capacity(checks.len());
        let mut after = Vec::with_capacity(checks.len());
        let mut allowed = true;
        for (check, p) in checks.iter().zip(&params) {
            let stored = pending
                .get(check.key.as_str())
                .or_else(|| state.tats.get(&check.key))
                .copied()
                .unwrap_or(0);
            let tat = stored.max(now_us);
            let new_tat = tat.saturating_add(p.inc_us);
            if new_tat - now_us > p.dvt_us {
                allowed = false;
            }
            pending.insert(check.key.as_str(), new_tat);
            before.push(tat);
            after.push(new_tat);
        }
        if allowed {
            for (key, tat) in pending {
                if tat > now_us {
                    state.tats.insert(key.to_owned(), tat);
                }
            }
        }
        state.maybe_prune(now_us);
        drop(state);
        let tats = if allowed { after } else { before };
        build_decision(checks, &params, allowed, now_us, &tats, Backend::Local)
    }

    /// Moves the TAT of `key` by `delta` units at time `now_us`: positive charges more (the
    /// actual count exceeded the estimate), negative gives back; the TAT never goes below
    /// `now_us` (no credit beyond a full bucket).
    pub fn adjust_at(&self, key: &str, per_minute: u64, delta: i64, now_us: u64) {
        let span = adjust_span(per_minute, delta);
        if span == 0 {
            return;
        }
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let tat = state.tats.get(key).copied().unwrap_or(0).max(now_us);
        let new_tat = if span > 0 {
            tat.saturating_add(span.unsigned_abs())
                .min(now_us + 2 * MAX_SPAN_US)
        } else {
            tat.saturating_sub(span.unsigned_abs()).max(now_us)
        };
        if new_tat > now_us {
            state.tats.insert(key.to_owned(), new_tat);
        } else {
            state.tats.remove(key);
        }
        state.maybe_prune(now_us);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000;

    fn rpm(key: &str, per_minute: u64, burst: u64) -> RateCheck {
        RateCheck::new(key, per_minute, 1).with_burst(burst)
    }

    #[test]
    fn params_round_conservatively() {
        let p = Params::of(&RateCheck::new("k", 7, 1).with_burst(3));
        // 60e6 / 7 = 8_571_428.57..
        assert_eq!(p.inc_us, 8_571_429);
        assert_eq!(p.dvt_us, 25_714_285);
        assert_eq!(p.limit, 3);
        let default_burst = Params::of(&RateCheck::new("k", 600, 1));
        assert_eq!(default_burst.limit, 600);
        assert_eq!(default_burst.dvt_us, 60 * S);
        let zero = Params::of(&RateCheck::new("k", 0, 1));
        assert!(zero.impossible());
    }

    #[test]
    fn burst_is_exact_from_idle() {
        let l = LocalRateLimiter::new();
        let t0 = 10 * S;
        for i in 0..5 {
            let d = l.check_at(&[rpm("a", 60, 5)], t0);
            assert!(d.allowed, "request {i}");
            assert_eq!(d.limiters[0].remaining, 4 - i);
        }
        let d = l.check_at(&[rpm("a", 60, 5)], t0);
        assert!(!d.allowed);
        assert_eq!(d.backend, Backend::Local);
        // One unit every second: the 6th passes exactly 1 s later, not a microsecond before.
        assert_eq!(d.retry_after, Some(Duration::from_secs(1)));
        assert_eq!(d.limiters[0].retry_after, Some(Duration::from_secs(1)));
        assert!(!l.check_at(&[rpm("a", 60, 5)], t0 + S - 1).allowed);
        assert!(l.check_at(&[rpm("a", 60, 5)], t0 + S).allowed);
    }

    /// Attempts every 7 ms for 100 s: exactly `r·T + b` pass (R1), no more.
    #[test]
    fn exact_admissions_over_simulated_time() {
        for (per_minute, burst) in [(60, 5), (600, 2), (7, 3), (6000, 100)] {
            let l = LocalRateLimiter::new();
            let start = 1_000 * S;
            let span = 100 * S;
            let mut admitted = 0u64;
            let mut t = start;
            while t <= start + span {
                if l.check_at(&[rpm("k", per_minute, burst)], t).allowed {
                    admitted += 1;
                }
                t += 7_000;
            }
            let bound = per_minute as f64 / 60.0 * (span as f64 / S as f64) + burst as f64;
            assert!(
                admitted as f64 <= bound,
                "{per_minute}/min b={burst}: {admitted} > {bound}"
            );
            // Granularity of the attempts (7 ms) and the ceil of the interval cost at most one.
            assert!(
                admitted as f64 >= bound - 1.0,
                "{per_minute}/min b={burst}: {admitted} < {bound} - 1"
            );
        }
    }

    /// R2: a fixed window would let `2·limit` through around a minute boundary; GCRA lets
    /// through the burst plus what accrued in between.
    #[test]
    fn no_double_burst_at_a_window_boundary() {
        let l = LocalRateLimiter::new();
        let check = rpm("k", 100, 100);
        let mut admitted = 0;
        for t in [59 * S + 900_000, 60 * S + 100_000] {
            for _ in 0..200 {
                if l.check_at(std::slice::from_ref(&check), t).allowed {
                    admitted += 1;
                }
            }
        }
        // 100 from the full bucket + 0.2 s · 100/60 per s = 0.33 → nothing more.
        assert_eq!(admitted, 100);
    }

    #[test]
    fn a_denied_multi_check_charges_nothing() {
        let l = LocalRateLimiter::new();
        let wide = rpm("wide", 60, 10);
        let narrow = rpm("narrow", 60, 1);
        let t = 5 * S;
        assert!(l.check_at(&[wide.clone(), narrow.clone()], t).allowed);
        let d = l.check_at(&[wide.clone(), narrow.clone()], t);
        assert!(!d.allowed);
        assert!(d.limiters[0].allowed && !d.limiters[1].allowed);
        assert_eq!(d.limiters[0].remaining, 9);
        assert_eq!(d.binding_limiter().map(|s| s.key.as_str()), Some("narrow"));
        // `wide` still has 9: the denial did not charge it.
        for _ in 0..9 {
            assert!(l.check_at(std::slice::from_ref(&wide), t).allowed);
        }
        assert!(!l.check_at(std::slice::from_ref(&wide), t).allowed);
    }

    #[test]
    fn repeated_key_in_one_decision_is_charged_in_sequence() {
        let l = LocalRateLimiter::new();
        let c = rpm("k", 60, 3);
        assert!(l.check_at(&[c.clone(), c.clone()], S).allowed);
        let d = l.check_at(&[c.clone(), c.clone()], S);
        assert!(!d.allowed, "2 + 2 > 3");
        assert!(l.check_at(std::slice::from_ref(&c), S).allowed, "1 left");
    }

    #[test]
    fn tpm_cost_and_cost_above_burst() {
        let l = LocalRateLimiter::new();
        let tpm = |cost| RateCheck::new("tpm", 60_000, cost).with_burst(10_000);
        let d = l.check_at(&[tpm(4_000)], S);
        assert!(d.allowed);
        assert_eq!(d.limiters[0].remaining, 6_000);
        assert_eq!(d.limiters[0].reset, Duration::from_secs(4));
        let d = l.check_at(&[tpm(7_000)], S);
        assert!(!d.allowed);
        // 1_000 tokens per second: 1 s until 7_000 fit.
        assert_eq!(d.retry_after, Some(Duration::from_secs(1)));
        let d = l.check_at(&[tpm(10_001)], S);
        assert!(!d.allowed);
        assert_eq!(d.retry_after, None, "never admissible");
        assert!(d.limiters[0].retry_after.is_none() && !d.limiters[0].allowed);
        assert!(!d.headers().iter().any(|(n, _)| *n == "Retry-After"));
    }

    #[test]
    fn adjust_gives_back_and_charges_but_never_below_now() {
        let l = LocalRateLimiter::new();
        let tpm = |cost| RateCheck::new("tpm", 60, cost).with_burst(1_000);
        let t = 100 * S;
        assert!(l.check_at(&[tpm(1_000)], t).allowed);
        assert!(!l.check_at(&[tpm(1)], t).allowed);
        // Estimated 1_000, used 400: give back 600.
        l.adjust_at("tpm", 60, -600, t);
        assert!(l.check_at(&[tpm(600)], t).allowed);
        assert!(!l.check_at(&[tpm(1)], t).allowed);
        // A give-back larger than what is charged only empties the bucket.
        l.adjust_at("tpm", 60, -1_000_000, t);
        assert!(l.check_at(&[tpm(1_000)], t).allowed);
        assert!(!l.check_at(&[tpm(1)], t).allowed);
        // Used more than estimated: the overshoot is charged and must be waited out.
        l.adjust_at("tpm", 60, 30, t);
        let d = l.check_at(&[tpm(1)], t);
        assert_eq!(d.retry_after, Some(Duration::from_secs(31)));
        // Charging an idle limiter works too.
        l.adjust_at("other", 60, 5, t);
        let d = l.check_at(&[RateCheck::new("other", 60, 1).with_burst(5)], t);
        assert_eq!(d.retry_after, Some(Duration::from_secs(1)));
        // Adjustments on a zero limit are ignored.
        l.adjust_at("zero", 0, 5, t);
    }

    #[test]
    fn headers_follow_the_binding_limiter() {
        let l = LocalRateLimiter::new();
        let a = rpm("a", 60, 10);
        let b = rpm("b", 60, 4);
        let d = l.check_at(&[a.clone(), b.clone()], S);
        assert_eq!(
            d.headers(),
            vec![
                ("RateLimit-Limit", "4".to_owned()),
                ("RateLimit-Remaining", "3".to_owned()),
                ("RateLimit-Reset", "1".to_owned()),
            ]
        );
        for _ in 0..3 {
            assert!(l.check_at(&[a.clone(), b.clone()], S).allowed);
        }
        let d = l.check_at(&[a.clone(), b.clone()], S + 250_000);
        assert!(!d.allowed);
        let h = d.headers();
        assert_eq!(h[0], ("RateLimit-Limit", "4".to_owned()));
        assert_eq!(h[1], ("RateLimit-Remaining", "0".to_owned()));
        assert_eq!(h[2], ("RateLimit-Reset", "4".to_owned()));
        // 0.75 s to wait, rounded up to 1.
        assert_eq!(d.retry_after, Some(Duration::from_millis(750)));
        assert_eq!(h[3], ("Retry-After", "1".to_owned()));
        assert!(RateDecision::unlimited(Backend::Local).headers().is_empty());
    }

    #[test]
    fn retry_after_header_is_at_least_one_and_rounds_up() {
        let mk = |wait| RateDecision {
            allowed: false,
            backend: Backend::Redis,
            leased: false,
            limiters: vec![LimiterStatus {
                key: "k".into(),
                allowed: false,
                limit: 1,
                remaining: 0,
                reset: Duration::from_micros(1),
                retry_after: Some(wait),
            }],
            retry_after: Some(wait),
        };
        let retry = |d: RateDecision| {
            d.headers()
                .into_iter()
                .find(|(n, _)| *n == "Retry-After")
                .map(|(_, v)| v)
        };
        assert_eq!(retry(mk(Duration::ZERO)), Some("1".to_owned()));
        assert_eq!(retry(mk(Duration::from_micros(1))), Some("1".to_owned()));
        assert_eq!(retry(mk(Duration::from_secs(2))), Some("2".to_owned()));
        assert_eq!(retry(mk(Duration::from_millis(2001))), Some("3".to_owned()));
    }

    #[test]
    fn idle_limiters_are_pruned() {
        let l = LocalRateLimiter::new();
        for i in 0..PRUNE_EVERY - 1 {
            let _ = l.check_at(&[rpm(&format!("k{i}"), 60, 5)], S);
        }
        // The 4096th operation, 10 s later, finds every other bucket full again.
        let _ = l.check_at(&[rpm("last", 60, 5)], 11 * S);
        let len = l
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .tats
            .len();
        assert_eq!(len, 1, "only the last key is still charged");
    }
}

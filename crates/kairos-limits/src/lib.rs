//! Rate limits and budget reservations shared by every gateway replica through Redis, with a
//! declared fallback when Redis cannot be reached.
//!
//! # What it does
//!
//! * **Rate limits** ([`Limits::check_rates`]): requests per minute and tokens per minute, per
//!   key and per workspace, with GCRA (see [GCRA](#gcra) below). One decision
//!   checks several limiters atomically: all pass and are charged, or none is charged. Exact
//!   across replicas without rate leases; with them (the default), within one
//!   `rate_lease_ttl` of the rate ([Leases](#leases)). TPM estimates are corrected afterwards
//!   with [`Limits::adjust_rate`].
//! * **Budgets** ([`Limits::reserve`], [`Limits::settle`], [`Limits::release`]): micro-USD per
//!   scope and per [`Period`] (UTC day, UTC month, lifetime). A request reserves its worst case
//!   in all its scopes atomically, then settles the actual cost exactly once per request id.
//!   A hot scope set is served from a per-replica budget lease, in process; the limit is never
//!   overrun ([Leases](#leases)).
//!
//! # Backends and failure modes
//!
//! | situation | rate limits | budgets |
//! | --- | --- | --- |
//! | Redis answers within [`LimitsOptions::redis_timeout`] | Redis (exact across replicas), or in process against a rate lease: bound `r·(D + rate_lease_ttl) + burst` (see [Leases](#leases)) | Redis, or in process against a budget lease: never more than the limit |
//! | Redis down, slow, or breaker open | this replica's [`LocalRateLimiter`] (each replica admits the full limit), `kairos_ratelimit_fallback_total` += 1; a live rate lease is used until its ttl ends | [`BudgetError::Unavailable`] (fail closed: answer 503), `kairos_budget_unavailable_total` += 1; a live budget lease keeps admitting (its money is held in Redis) until its last confirmation is `2 × lease_validate_interval` old |
//! | Redis flushed or restarted (counters re-seeded from the ledger, holds gone) | counters start from a full bucket (as before) | a live lease is not backed any more: retired at the first settlement that finds its hold gone (`lease_lost`) or at its next validation; see the bound below |
//! | [`Limits::local_only`] (no Redis configured) | local | in process memory, seeded from the [`SpendSource`]; no leases |
//!
//! [`RateDecision::backend`] says which store decided ([`RateDecision::leased`]: in process
//! against a lease); [`Reservation::lease_id`] says whether a reservation came from a lease.
//! `kairos_limits_decisions_total{check, decided_by}` counts decisions taken from a `lease`,
//! by `redis` or `local`ly. Every Redis call is bounded by the
//! timeout, connection wait included; after [`LimitsOptions::breaker_threshold`] consecutive
//! failures calls skip Redis for [`LimitsOptions::breaker_cooldown`], then probe it again, on a
//! fresh connection. When Redis is back, it is used again.
//!
//! # Leases
//!
//! A Redis round trip costs more than the admission budget of a request (~20 µs), so a replica
//! takes blocks of budget and of rate from Redis ahead of demand and decides the common
//! admission in process; Redis calls happen in spawned tasks (lease refills, validation,
//! give-backs) and in the settlement, after the response.
//!
//! **Budget leases** (exact in the sense "never overrun"). A lease is an ordinary reservation
//! of `L` micro-USD under the request id `lease:{replica id}:{seq}` over the merged scope set.
//! A request whose amount fits in the lease's `available` takes it in process (no Redis call);
//! otherwise it is reserved in Redis as before, and the lease that could not cover it is
//! retired. After a reservation in Redis, a lease is fetched (a spawned task, at most one per
//! scope set) when the scope set has had steady demand for [`LimitsOptions::lease_warmup`] and
//! `L = min(remaining / 16, 64 · amount, amount · requests in the last second) ≥ 4 · amount`;
//! the next lease is prefetched when `available < L / 2`. Near the end of a budget (less than
//! 64 requests' worth left) `L` is too small and every reservation is exact again. A lease is
//! used while it is younger than [`LimitsOptions::lease_max_age`] (at most half the
//! reservation ttl), in the period it was reserved in (local clock), not lost, and confirmed in
//! Redis within `2 × lease_validate_interval`. Its settlement (one script) checks the
//! request's finalized marker, moves the request's part out of the lease's hold and charges
//! the actual cost to `spent`; a release sets the marker and gives the part back to the lease.
//! A retired lease is released in Redis (returning what it still holds) once its requests
//! have all finished. Because every leased micro-dollar is held in Redis, `spent + reserved ≤
//! limit` holds in every scope at all times. The price: up to one lease per replica and scope
//! set is held but unused (admitted by nobody) until the lease is used up or retired, so near
//! the limit a replica may refuse while another replica's lease still holds money (under-
//! admission, never over-admission); and a request served from a lease holds its money for at
//! least `reservation_ttl − lease_max_age` rather than `reservation_ttl`.
//!
//! Residual bounds. *Crash*: the lease's hold stays until the reservation ttl (money held,
//! never overspent); settled spend is already in Redis and the ledger. *Flush or restart of
//! Redis*: the counters are re-seeded from the ledger with no holds, so a live lease's
//! `available` is not backed; until the replica notices (the first settlement reporting
//! `lease_lost`, or the validation every `lease_validate_interval`, at most `2 ×` that with the
//! lease unusable without confirmation) it may admit at most that lease's `available` (≤ 64
//! requests, ≤ 1/16 of what was left) per replica and scope set beyond the limit. That is on
//! top of the exposure a flush already has without leases (in-flight holds are lost too).
//!
//! **Rate leases** (declared, bounded slack). Exact GCRA per decision needs a Redis round trip;
//! with [`LimitsOptions::rate_lease_ttl`] > 0 a replica whose local demand for a set of
//! limiters is high takes `L` requests' worth in one GCRA decision (every limiter of the
//! decision at once, each in its own units: `L` requests, `L ×` the request's tokens) and
//! admits the next requests against it in process for at most the ttl.
//! `L = clamp(local rate · ttl, 1, per_minute / 100)` per limiter (and within the burst); at
//! `L = 1` (small limits, low traffic) the decision is the exact script. A lease that does not
//! fit (a limiter near its limit) falls back to the exact decision for that request, and no
//! lease is tried for one ttl. Units unused when the lease ends are given back
//! (`gcra_adjust`, negative) when the next decision finds it ended. Bound: a leased unit was
//! charged to the shared TAT at most `ttl` before it is used, so over any interval `D` at most
//! `r · (D + ttl) + burst` units pass across all replicas (with `ttl = 0`, exactly the old
//! `r · D + burst`). Headers of a local decision come from the lease: `limit` = the burst,
//! `remaining` = what Redis reported after charging the lease + the lease's units left (at
//! most the limit), `reset` = Redis' reset at the grant minus the time since.
//!
//! # GCRA
//!
//! Each limiter is one number, its *theoretical arrival time* (TAT, microseconds). A limiter of
//! `per_minute` units per minute and a burst of `burst` units has an emission interval
//! `T = 60 s / per_minute` and a tolerance `τ = burst · T`. A request of cost `n` is admitted at
//! time `now` iff `max(TAT, now) + n·T − now ≤ τ`, and then `TAT := max(TAT, now) + n·T`.
//!
//! Over any interval of length `D` at most `per_minute/60 · D + burst` units are admitted (R1),
//! and there is no window boundary at which twice the rate can pass (R2): the state is one
//! continuous number. With integer microseconds the increment is rounded **up**
//! (`ceil(n · 60e6 / per_minute)`) and the tolerance **down**, so rounding can only admit less.
//! Reported to clients (R3, see [`RateDecision::headers`]): `limit` = burst, `remaining` =
//! units that fit now, `reset` = time until the bucket is full (`TAT − now`), and on a denial
//! `retry_after` = `max(TAT, now) + n·T − τ − now`. The Redis script uses Redis `TIME`; the
//! [`LocalRateLimiter`] uses the local monotonic clock; both report TATs back and one Rust
//! function builds the decision, so both backends answer identically.
//!
//! # Redis key layout
//!
//! Every key starts with [`LimitsOptions::key_prefix`] (default `kairos:`); ids come last so no
//! id can collide with another key's layout. Pass ids, never secrets.
//!
//! | key | type | content | expiry |
//! | --- | --- | --- | --- |
//! | `{prefix}rl:{limiter key}` | string | the limiter's TAT, unix µs | when the bucket is full again (+1 s) |
//! | `{prefix}bg:{period}:{period id}:h:{scope}` | hash | `spent`, `reserved` (micro-USD) | period end + grace; lifetime: none |
//! | `{prefix}bg:{period}:{period id}:rx:{scope}` | zset | request id → reservation expiry (unix ms) | as the hash |
//! | `{prefix}bg:{period}:{period id}:ra:{scope}` | hash | request id → reserved amount | as the hash |
//! | `{prefix}bg:done:{request id}` | string | `settled` or `released` | [`LimitsOptions::finalized_ttl`] |
//!
//! A budget lease is a reservation like any other: its request id `lease:{replica}:{seq}` is in
//! `rx` (expiry) and `ra` (what it still holds: its size minus the parts of the requests
//! settled from it), and counts in the hash's `reserved`; releasing it sets its own `done`
//! marker. The requests taken from a lease have a `done` marker but no `rx`/`ra` entry.
//!
//! `period` is `day`, `month` or `lifetime`; `period id` is days since the epoch, `year·12 +
//! month − 1`, or 0. The budget scripts derive the per-period key names from Redis `TIME`
//! inside Lua (so a replica's clock cannot open a period early), which is why they are built
//! in the script rather than passed as `KEYS`: this crate targets a single Redis (or a
//! primary with replicas), not Redis Cluster. Configure Redis with `maxmemory-policy
//! noeviction` or a `volatile-*` policy; an evicted counter is re-seeded from the ledger.
//!
//! # Atomicity
//!
//! Each decision is one Lua script, and Redis runs a script with no other command interleaved:
//! a rate decision reads every TAT, decides, and writes all or nothing; a reservation checks
//! `spent + reserved + amount ≤ limit` in every scope and writes all or nothing; a settlement
//! checks the request's finalized marker, moves reservation to spend and sets the marker in the
//! same script, so a replayed settlement charges once. A lease is taken by the reserve script
//! (all scopes or none); the settlement of a leased request checks its marker, moves its part
//! out of the lease's hold, charges `spent` and sets the marker in one script
//! (`budget_lease_finalize.lua`); in process, a lease's `available` is changed under one mutex,
//! so two requests never take the same micro-dollar. A rate lease is one GCRA decision (all
//! limiters or none).

mod budget;
mod lease;
mod local_budget;
mod period;
mod rate;
mod rate_lease;
mod redis_store;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use metrics::counter;

pub use crate::budget::{
    BudgetError, BudgetScope, BudgetStatus, Finalized, FnSpendSource, Reservation, ReservedScope,
    SpendFuture, SpendSource, SpendSourceError,
};
pub use crate::period::{
    Period, PeriodBounds, SECONDS_PER_DAY, UnknownPeriod, civil_from_days, days_from_civil,
};
pub use crate::rate::{Backend, LimiterStatus, LocalRateLimiter, RateCheck, RateDecision};

use crate::budget::{FinalizeMode, ReserveOutcome, SeedRequest, StatusOutcome};
use crate::lease::BudgetLeases;
use crate::local_budget::LocalBudgets;
use crate::rate::{Params, adjust_span, build_decision};
use crate::rate_lease::RateLeases;
use crate::redis_store::{CallError, RedisStore, StoreSettings};

/// Rate decisions taken by the local limiter because Redis did not answer, by `reason`
/// (`timeout`, `error`, `circuit_open`, `protocol`).
pub const RATE_FALLBACK_TOTAL: &str = "kairos_ratelimit_fallback_total";
/// Budget operations refused because Redis did not answer, by `op` (`reserve`, `settle`,
/// `release`, `status`, `seed`) and `reason`.
pub const BUDGET_UNAVAILABLE_TOTAL: &str = "kairos_budget_unavailable_total";

/// Admission decisions by `check` (`budget`, `rate`) and `decided_by`: `lease` (in process,
/// against a lease this replica holds in Redis), `redis` (one Redis script), `local` (no
/// Redis configured, or the rate fallback).
pub const DECISIONS_TOTAL: &str = "kairos_limits_decisions_total";

/// Registers the descriptions of this crate's metrics with the installed recorder.
pub fn describe_metrics() {
    metrics::describe_counter!(
        RATE_FALLBACK_TOTAL,
        "Rate decisions taken by the replica-local limiter because Redis did not answer."
    );
    metrics::describe_counter!(
        BUDGET_UNAVAILABLE_TOTAL,
        "Budget operations refused (fail closed) because Redis did not answer."
    );
    metrics::describe_counter!(
        DECISIONS_TOTAL,
        "Admission decisions (budget reservations, rate decisions) by where they were decided: lease (in process), redis or local."
    );
}

/// Tuning of [`Limits`]. `LimitsOptions::default()` is a sensible production setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitsOptions {
    /// Prefix of every Redis key. Default `kairos:`.
    pub key_prefix: String,
    /// Longest wait for any one Redis call, connection included. Default 50 ms.
    pub redis_timeout: Duration,
    /// Longest wait for a connection to be established ([`Limits::connect`], reconnections).
    /// Default 1 s.
    pub connect_timeout: Duration,
    /// How long a reservation holds its money if never settled or released: the longest a
    /// request may take. Default 15 min.
    pub reservation_ttl: Duration,
    /// How long a settled or released request id is remembered, so that a replayed settlement
    /// is recognised. Default 48 h.
    pub finalized_ttl: Duration,
    /// How long a period's counters are kept after the period ends (at least
    /// `reservation_ttl` + 1 min is used, so late settlements still find them). Default 24 h.
    pub counter_grace: Duration,
    /// Consecutive Redis failures that open the circuit breaker. Default 3.
    pub breaker_threshold: u32,
    /// How long an open breaker sends every call to the fallback without trying Redis.
    /// Default 500 ms; zero disables skipping.
    pub breaker_cooldown: Duration,
    /// Longest wait for the [`SpendSource`] when seeding a counter. Default 2 s.
    pub seed_timeout: Duration,
    /// Budget leases (see [Leases](crate#leases)): the longest a replica admits requests
    /// against one block of budget it reserved in Redis. Zero disables budget leases (every
    /// reservation is one Redis script). Capped at half of `reservation_ttl`. Default 30 s.
    pub lease_max_age: Duration,
    /// How often a live budget lease is checked against Redis (its hold still exists); a lease
    /// not confirmed for twice this long is not used. Default 500 ms.
    pub lease_validate_interval: Duration,
    /// How long a scope set must have had steady demand on this replica (no gap over 1 s)
    /// before a lease is taken for it; until then reservations are exact. Keeps short bursts
    /// exact (no budget stranded in a lease nobody uses). Default 1 s.
    pub lease_warmup: Duration,
    /// Rate leases (see [Leases](crate#leases)): how long a block of rate units taken in
    /// one GCRA decision may be used in process. Adds at most `rate × rate_lease_ttl` to the
    /// GCRA bound. Zero disables rate leases (every decision is one Redis script, exact).
    /// Default 20 ms.
    pub rate_lease_ttl: Duration,
}

impl Default for LimitsOptions {
    fn default() -> Self {
        Self {
            key_prefix: "kairos:".to_owned(),
            redis_timeout: Duration::from_millis(50),
            connect_timeout: Duration::from_secs(1),
            reservation_ttl: Duration::from_secs(15 * 60),
            finalized_ttl: Duration::from_secs(48 * 3600),
            counter_grace: Duration::from_secs(24 * 3600),
            breaker_threshold: 3,
            breaker_cooldown: Duration::from_millis(500),
            seed_timeout: Duration::from_secs(2),
            lease_max_age: Duration::from_secs(30),
            lease_validate_interval: Duration::from_millis(500),
            lease_warmup: Duration::from_secs(1),
            rate_lease_ttl: Duration::from_millis(20),
        }
    }
}

impl LimitsOptions {
    fn grace_s(&self) -> u64 {
        let grace = self
            .counter_grace
            .max(self.reservation_ttl + Duration::from_secs(60));
        grace.as_secs()
    }

    fn reservation_ttl_ms(&self) -> u64 {
        u64::try_from(self.reservation_ttl.as_millis())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    fn store_settings(&self) -> StoreSettings {
        StoreSettings {
            prefix: self.key_prefix.clone(),
            timeout: self.redis_timeout,
            connect_timeout: self.connect_timeout,
            breaker_threshold: self.breaker_threshold,
            breaker_cooldown: self.breaker_cooldown,
        }
    }
}

/// Why [`Limits::connect`] or [`Limits::connect_lazy`] failed.
#[derive(Debug, thiserror::Error)]
pub enum LimitsError {
    /// The URL is not a Redis URL the client understands.
    #[error("invalid Redis URL: {0}")]
    InvalidUrl(String),
    /// Redis did not accept a connection within [`LimitsOptions::connect_timeout`].
    #[error("cannot connect to Redis: {0}")]
    Connect(String),
    /// [`Limits::connect_lazy`] was called outside a Tokio runtime.
    #[error("no Tokio runtime: Limits::connect_lazy must be called from within one")]
    NoRuntime,
}

/// Rate limits and budgets. Cheap to clone (an `Arc` inside); share one per process.
#[derive(Clone)]
pub struct Limits {
    inner: Arc<Inner>,
}

struct Inner {
    opts: LimitsOptions,
    redis: Option<RedisStore>,
    local_rates: LocalRateLimiter,
    local_budgets: LocalBudgets,
    budget_leases: BudgetLeases,
    rate_leases: RateLeases,
    spend: Arc<dyn SpendSource>,
    origin: Instant,
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits")
            .field("backend", &self.backend())
            .field("redis", &self.inner.redis)
            .field("opts", &self.inner.opts)
            .finish_non_exhaustive()
    }
}

/// Rounds of "needs seed → seed → retry" before a reservation gives up.
const MAX_SEED_ROUNDS: usize = 3;

impl Limits {
    /// Connects to Redis at `redis_url` (`redis://[user:password@]host:port[/db]`) and returns
    /// once a connection is up, or the error if none could be made within
    /// [`LimitsOptions::connect_timeout`]: the caller decides whether to start anyway (see
    /// [`Limits::connect_lazy`]).
    ///
    /// # Errors
    /// [`LimitsError::InvalidUrl`], [`LimitsError::Connect`].
    pub async fn connect(
        redis_url: &str,
        opts: LimitsOptions,
        spend: Arc<dyn SpendSource>,
    ) -> Result<Self, LimitsError> {
        let client = open_client(redis_url)?;
        let store = RedisStore::connect(client, opts.store_settings())
            .await
            .map_err(LimitsError::Connect)?;
        Ok(Self::build(opts, Some(store), spend))
    }

    /// Like [`Limits::connect`] but returns at once: the connection is made on first use, and
    /// until Redis answers, rate limits run locally and budgets fail closed. For a gateway that
    /// must start while Redis is down. Must be called within a Tokio runtime.
    ///
    /// # Errors
    /// [`LimitsError::InvalidUrl`], [`LimitsError::NoRuntime`].
    pub fn connect_lazy(
        redis_url: &str,
        opts: LimitsOptions,
        spend: Arc<dyn SpendSource>,
    ) -> Result<Self, LimitsError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(LimitsError::NoRuntime);
        }
        let client = open_client(redis_url)?;
        let store =
            RedisStore::lazy(client, opts.store_settings()).map_err(LimitsError::Connect)?;
        Ok(Self::build(opts, Some(store), spend))
    }

    /// No Redis (single-process deployments): rate limits in this process, budgets in process
    /// memory, seeded from `spend` like the Redis counters.
    #[must_use]
    pub fn local_only(opts: LimitsOptions, spend: Arc<dyn SpendSource>) -> Self {
        Self::build(opts, None, spend)
    }

    fn build(opts: LimitsOptions, redis: Option<RedisStore>, spend: Arc<dyn SpendSource>) -> Self {
        Self {
            inner: Arc::new(Inner {
                opts,
                redis,
                local_rates: LocalRateLimiter::new(),
                local_budgets: LocalBudgets::default(),
                budget_leases: BudgetLeases::new(),
                rate_leases: RateLeases::default(),
                spend,
                origin: Instant::now(),
            }),
        }
    }

    /// The primary store: [`Backend::Redis`] when built with a Redis URL, else
    /// [`Backend::Local`]. (A given rate decision may still come from the fallback: see
    /// [`RateDecision::backend`].)
    #[must_use]
    pub fn backend(&self) -> Backend {
        if self.inner.redis.is_some() {
            Backend::Redis
        } else {
            Backend::Local
        }
    }

    /// The options in force.
    #[must_use]
    pub fn options(&self) -> &LimitsOptions {
        &self.inner.opts
    }

    /// Short-lived memory shared by the replicas (the signal loop's recent requests): sets
    /// `key` to `value` for `ttl` and returns what it held before, atomically; with no `value`,
    /// only reads it. `None` when there is no Redis, or it did not answer (the caller then
    /// keeps the memory in its own process).
    pub async fn shared_swap(
        &self,
        key: &str,
        value: Option<&[u8]>,
        ttl: Duration,
    ) -> Option<Option<Vec<u8>>> {
        let redis = self.inner.redis.as_ref()?;
        match redis.swap(key, value, ttl).await {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::debug!(error = %e, "shared memory unavailable");
                None
            }
        }
    }

    fn local_now_us(&self) -> u64 {
        // +1 s so that "TAT 0" (unknown key) is always in the past.
        u64::try_from(self.inner.origin.elapsed().as_micros())
            .unwrap_or(u64::MAX)
            .saturating_add(1_000_000)
    }

    /// Checks every limiter and charges each its cost if all pass; if one denies, none is
    /// charged. Never fails: when Redis does not answer within the timeout, this replica's
    /// local limiter decides and [`RateDecision::backend`] is [`Backend::Local`].
    pub async fn check_rates(&self, checks: &[RateCheck]) -> RateDecision {
        if checks.is_empty() {
            return RateDecision::unlimited(self.backend());
        }
        if let Some(redis) = &self.inner.redis {
            let n = if self.rate_leases_enabled() {
                match self.rate_lease_take(checks) {
                    Ok(d) => {
                        counter!(DECISIONS_TOTAL, "check" => "rate", "decided_by" => "lease")
                            .increment(1);
                        return d;
                    }
                    Err(n) => n,
                }
            } else {
                1
            };
            let mut reachable = true;
            if n > 1 {
                // One decision for `n` requests' worth: this request and a lease for the next.
                let leased: Vec<RateCheck> = checks
                    .iter()
                    .map(|c| RateCheck {
                        cost: c.cost.saturating_mul(n),
                        ..c.clone()
                    })
                    .collect();
                let params: Vec<Params> = leased.iter().map(Params::of).collect();
                let d = match redis.check_rates(&leased, &params).await {
                    Ok((allowed, now_us, tats)) => Some(build_decision(
                        &leased,
                        &params,
                        allowed,
                        now_us,
                        &tats,
                        Backend::Redis,
                    )),
                    Err(e) => {
                        counter!(RATE_FALLBACK_TOTAL, "reason" => e.reason()).increment(1);
                        reachable = false;
                        None
                    }
                };
                if let Some(d) = self.rate_lease_install(checks, n, d) {
                    counter!(DECISIONS_TOTAL, "check" => "rate", "decided_by" => "redis")
                        .increment(1);
                    return d;
                }
            }
            if reachable {
                let params: Vec<Params> = checks.iter().map(Params::of).collect();
                match redis.check_rates(checks, &params).await {
                    Ok((allowed, now_us, tats)) => {
                        counter!(DECISIONS_TOTAL, "check" => "rate", "decided_by" => "redis")
                            .increment(1);
                        return build_decision(
                            checks,
                            &params,
                            allowed,
                            now_us,
                            &tats,
                            Backend::Redis,
                        );
                    }
                    Err(e) => {
                        counter!(RATE_FALLBACK_TOTAL, "reason" => e.reason()).increment(1);
                    }
                }
            }
        }
        counter!(DECISIONS_TOTAL, "check" => "rate", "decided_by" => "local").increment(1);
        self.inner.local_rates.check_at(checks, self.local_now_us())
    }

    /// Post-corrects a limiter after the request: `delta` = actual − charged units (tokens).
    /// Positive charges the difference; negative gives it back, but never below an idle
    /// limiter (no credit beyond a full bucket). Applied where the limiter is reachable now:
    /// Redis, or the local fallback.
    pub async fn adjust_rate(&self, key: &str, per_minute: u64, delta: i64) {
        let span = adjust_span(per_minute, delta);
        if span == 0 {
            return;
        }
        if let Some(redis) = &self.inner.redis {
            match redis.adjust_rate(key, span).await {
                Ok(()) => return,
                Err(e) => {
                    counter!(RATE_FALLBACK_TOTAL, "reason" => e.reason()).increment(1);
                }
            }
        }
        self.inner
            .local_rates
            .adjust_at(key, per_minute, delta, self.local_now_us());
    }

    /// Reserves `amount_micros` for `request_id` in every scope, atomically: if each scope has
    /// `spent + reserved + amount ≤ limit`, the amount is held in all of them; otherwise nothing
    /// is held and the first scope lacking room is named. Reserving again under the same
    /// request id replaces the earlier amount. Scopes with the same id and period are merged
    /// (the smaller limit wins).
    ///
    /// A counter missing from the store (first use of the period, Redis restarted or flushed)
    /// is seeded from the [`SpendSource`] before the reservation is retried: never taken as 0.
    ///
    /// # Errors
    /// [`BudgetError::Exceeded`]; [`BudgetError::Unavailable`] when Redis does not answer
    /// (fail closed); [`BudgetError::Source`] when the ledger cannot be read for a seed;
    /// [`BudgetError::AlreadyFinalized`]; [`BudgetError::Invalid`].
    pub async fn reserve(
        &self,
        scopes: &[BudgetScope],
        request_id: &str,
        amount_micros: i64,
    ) -> Result<Reservation, BudgetError> {
        self.reserve_at(scopes, request_id, amount_micros, None)
            .await
    }

    async fn reserve_at(
        &self,
        scopes: &[BudgetScope],
        request_id: &str,
        amount_micros: i64,
        now_override_s: Option<i64>,
    ) -> Result<Reservation, BudgetError> {
        if request_id.is_empty() {
            return Err(BudgetError::Invalid("empty request id".to_owned()));
        }
        if amount_micros < 0 {
            return Err(BudgetError::Invalid(format!(
                "negative reservation {amount_micros}"
            )));
        }
        let scopes = merge_scopes(scopes);
        if scopes.is_empty() {
            return Ok(build_reservation(
                &scopes,
                request_id,
                amount_micros,
                self.backend(),
                Vec::new(),
            ));
        }
        let leased = now_override_s.is_none() && self.budget_leases_enabled();
        if leased && let Some(r) = self.lease_take(&scopes, request_id, amount_micros) {
            counter!(DECISIONS_TOTAL, "check" => "budget", "decided_by" => "lease").increment(1);
            return Ok(r);
        }
        let per_scope = self
            .reserve_store(&scopes, request_id, amount_micros, now_override_s)
            .await?;
        let by = if self.inner.redis.is_some() {
            "redis"
        } else {
            "local"
        };
        counter!(DECISIONS_TOTAL, "check" => "budget", "decided_by" => by).increment(1);
        let r = build_reservation(
            &scopes,
            request_id,
            amount_micros,
            self.backend(),
            per_scope,
        );
        if leased {
            self.lease_after_store(&scopes, &r);
        }
        Ok(r)
    }

    /// The store's reservation (Redis, or in process without Redis), seeding counters as
    /// needed: per scope `(period id, period start, remaining after)`.
    pub(crate) async fn reserve_store(
        &self,
        scopes: &[BudgetScope],
        request_id: &str,
        amount_micros: i64,
        now_override_s: Option<i64>,
    ) -> Result<Vec<(i64, i64, i64)>, BudgetError> {
        let opts = &self.inner.opts;
        for _ in 0..=MAX_SEED_ROUNDS {
            let outcome = match &self.inner.redis {
                Some(redis) => redis
                    .reserve(
                        scopes,
                        request_id,
                        amount_micros,
                        opts.reservation_ttl_ms(),
                        opts.grace_s(),
                        now_override_s,
                    )
                    .await
                    .map_err(|e| unavailable("reserve", &e))?,
                None => self.inner.local_budgets.reserve(
                    scopes,
                    request_id,
                    amount_micros,
                    now_ms(now_override_s),
                    opts.reservation_ttl_ms(),
                ),
            };
            match outcome {
                ReserveOutcome::Reserved(per_scope) => return Ok(per_scope),
                ReserveOutcome::Denied { index, remaining } => {
                    let Some(scope) = scopes.get(index).cloned() else {
                        return Err(BudgetError::Unavailable {
                            reason: format!("budget store named scope {index} of {}", scopes.len()),
                        });
                    };
                    return Err(BudgetError::Exceeded {
                        scope_id: scope.id,
                        period: scope.period,
                        limit_micros: scope.limit_micros,
                        remaining_micros: remaining.max(0),
                    });
                }
                ReserveOutcome::Finalized(_) => {
                    return Err(BudgetError::AlreadyFinalized {
                        request_id: request_id.to_owned(),
                    });
                }
                ReserveOutcome::NeedsSeed(seeds) => {
                    for seed in seeds {
                        if let Some(scope) = scopes.get(seed.index) {
                            self.seed(scope, &seed).await?;
                        }
                    }
                }
            }
        }
        Err(BudgetError::Unavailable {
            reason: "budget counters kept disappearing while being seeded".to_owned(),
        })
    }

    /// Reads the scope's spend from the [`SpendSource`] and seeds its counter with it, unless
    /// another caller did first.
    async fn seed(&self, scope: &BudgetScope, seed: &SeedRequest) -> Result<(), BudgetError> {
        let opts = &self.inner.opts;
        let read = tokio::time::timeout(
            opts.seed_timeout,
            self.inner.spend.spent_since(scope, seed.start_unix_s),
        )
        .await;
        let spent = match read {
            Ok(Ok(spent)) => spent,
            Ok(Err(source)) => {
                return Err(BudgetError::Source {
                    scope_id: scope.id.clone(),
                    source,
                });
            }
            Err(_) => {
                return Err(BudgetError::Source {
                    scope_id: scope.id.clone(),
                    source: format!("no answer within {:?}", opts.seed_timeout).into(),
                });
            }
        };
        let grace = opts.grace_s();
        let created = match &self.inner.redis {
            Some(redis) => redis
                .seed(scope, seed, spent, grace)
                .await
                .map_err(|e| unavailable("seed", &e))?,
            None => self
                .inner
                .local_budgets
                .seed(scope, seed, spent, grace.saturating_mul(1000)),
        };
        tracing::info!(
            scope = %scope.id,
            period = %scope.period,
            period_start = seed.start_unix_s,
            spent_micros = spent,
            created,
            "budget counter seeded from the ledger"
        );
        Ok(())
    }

    /// Replaces the reservation by the actual cost in every scope, once per request id: a
    /// replay returns [`Finalized::AlreadySettled`] and charges nothing. A reservation that
    /// already expired is still charged (the money was spent). The cost goes to the period the
    /// reservation was made in.
    ///
    /// # Errors
    /// [`BudgetError::Unavailable`] (retry later: it is idempotent), [`BudgetError::Invalid`].
    pub async fn settle(
        &self,
        reservation: &Reservation,
        actual_micros: i64,
    ) -> Result<Finalized, BudgetError> {
        if actual_micros < 0 {
            return Err(BudgetError::Invalid(format!(
                "negative settlement {actual_micros}"
            )));
        }
        self.finalize(
            reservation,
            FinalizeMode::Settle { actual_micros },
            "settle",
        )
        .await
    }

    /// Drops the reservation without charging anything (the request failed before anything
    /// was billed). Once per request id, like [`Limits::settle`]: a settlement after a release
    /// is ignored.
    ///
    /// # Errors
    /// [`BudgetError::Unavailable`].
    pub async fn release(&self, reservation: &Reservation) -> Result<Finalized, BudgetError> {
        self.finalize(reservation, FinalizeMode::Release, "release")
            .await
    }

    async fn finalize(
        &self,
        reservation: &Reservation,
        mode: FinalizeMode,
        op: &'static str,
    ) -> Result<Finalized, BudgetError> {
        if reservation.scopes.is_empty() {
            return Ok(Finalized::Applied);
        }
        if let Some(lease) = &reservation.lease {
            return self.finalize_leased(reservation, lease, mode, op).await;
        }
        self.finalize_store(reservation, mode, op).await
    }

    pub(crate) async fn finalize_store(
        &self,
        reservation: &Reservation,
        mode: FinalizeMode,
        op: &'static str,
    ) -> Result<Finalized, BudgetError> {
        let ttl = self.inner.opts.finalized_ttl;
        let done = match &self.inner.redis {
            Some(redis) => redis
                .finalize(reservation, mode, ttl.as_secs())
                .await
                .map_err(|e| unavailable(op, &e))?,
            None => self.inner.local_budgets.finalize(
                reservation,
                mode,
                now_ms(None),
                u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
            ),
        };
        Ok(done.map_or(Finalized::Applied, |k| k.as_finalized()))
    }

    /// The scope's spend in its current period (expired reservations dropped first). Seeds the
    /// counter from the [`SpendSource`] if it is missing.
    ///
    /// # Errors
    /// [`BudgetError::Unavailable`], [`BudgetError::Source`].
    pub async fn spent(&self, scope: &BudgetScope) -> Result<BudgetStatus, BudgetError> {
        self.spent_at(scope, None).await
    }

    async fn spent_at(
        &self,
        scope: &BudgetScope,
        now_override_s: Option<i64>,
    ) -> Result<BudgetStatus, BudgetError> {
        for _ in 0..=MAX_SEED_ROUNDS {
            let outcome = match &self.inner.redis {
                Some(redis) => redis
                    .status(scope, now_override_s)
                    .await
                    .map_err(|e| unavailable("status", &e))?,
                None => self
                    .inner
                    .local_budgets
                    .status(scope, now_ms(now_override_s)),
            };
            match outcome {
                StatusOutcome::Status {
                    spent,
                    reserved,
                    start_unix_s,
                } => {
                    return Ok(BudgetStatus {
                        spent_micros: spent,
                        reserved_micros: reserved,
                        remaining_micros: scope
                            .limit_micros
                            .saturating_sub(spent)
                            .saturating_sub(reserved)
                            .max(0),
                        period_start_unix_s: start_unix_s,
                        backend: self.backend(),
                    });
                }
                StatusOutcome::NeedsSeed(seed) => self.seed(scope, &seed).await?,
            }
        }
        Err(BudgetError::Unavailable {
            reason: "budget counter kept disappearing while being seeded".to_owned(),
        })
    }
}

fn open_client(redis_url: &str) -> Result<redis::Client, LimitsError> {
    // The error text of the client never echoes the password; the URL itself is never logged.
    redis::Client::open(redis_url).map_err(|e| LimitsError::InvalidUrl(e.to_string()))
}

fn unavailable(op: &'static str, e: &CallError) -> BudgetError {
    counter!(BUDGET_UNAVAILABLE_TOTAL, "op" => op, "reason" => e.reason()).increment(1);
    BudgetError::Unavailable {
        reason: e.to_string(),
    }
}

/// Unix milliseconds: the override (seconds) in tests, else the wall clock.
fn now_ms(override_s: Option<i64>) -> u64 {
    match override_s {
        Some(s) => u64::try_from(s.saturating_mul(1000)).unwrap_or(0),
        None => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
    }
}

/// A reservation of `amount` under `request_id` from the store's per-scope answer.
fn build_reservation(
    scopes: &[BudgetScope],
    request_id: &str,
    amount_micros: i64,
    backend: Backend,
    per_scope: Vec<(i64, i64, i64)>,
) -> Reservation {
    Reservation {
        request_id: request_id.to_owned(),
        amount_micros,
        backend,
        scopes: reserved_scopes(scopes, per_scope),
        lease: None,
    }
}

/// The scopes of a reservation (or a lease) from the store's per-scope answer
/// `(period_id, period_start_unix_s, remaining_micros)`.
fn reserved_scopes(scopes: &[BudgetScope], per_scope: Vec<(i64, i64, i64)>) -> Vec<ReservedScope> {
    scopes
        .iter()
        .zip(per_scope)
        .map(|(s, (period_id, start, remaining))| ReservedScope {
            scope_id: s.id.clone(),
            period: s.period,
            period_id,
            period_start_unix_s: start,
            remaining_micros: remaining,
        })
        .collect()
}

/// Scopes with the same id and period merged, the smaller limit kept, first-seen order.
fn merge_scopes(scopes: &[BudgetScope]) -> Vec<BudgetScope> {
    let mut out: Vec<BudgetScope> = Vec::with_capacity(scopes.len());
    for s in scopes {
        match out
            .iter_mut()
            .find(|o| o.id == s.id && o.period == s.period)
        {
            Some(o) => o.limit_micros = o.limit_micros.min(s.limit_micros),
            None => out.push(s.clone()),
        }
    }
    out
}

#[cfg(test)]
mod tests;

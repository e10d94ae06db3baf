//! Rate leases: a replica takes `L` requests' worth of units in one GCRA decision and admits
//! the next requests against them in process for at most `rate_lease_ttl` (see the crate
//! docs, "Leases").
//!
//! The lease is an ordinary GCRA decision of cost `L · cost` on every limiter of the decision,
//! all or nothing. Units a lease admits were charged to the shared TAT up to `ttl` before the
//! request passes, so over any interval `D` at most `r · (D + ttl) + burst` units pass across
//! all replicas (the GCRA bound of the interval stretched by `ttl`). Units not used when the
//! lease ends are given back with the post-correction (`gcra_adjust`, never below an idle
//! limiter).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::lease::Demand;
use crate::rate::{LimiterStatus, RateCheck, RateDecision};
use crate::{Backend, Limits};

/// A rate lease never exceeds this share of a limiter's per-minute rate (1/100: 0.6 s).
const RATE_LEASE_SHARE: u64 = 100;

#[derive(Debug)]
struct RateLease {
    granted: Instant,
    expires: Instant,
    /// Units left per limiter, in the order of the checks.
    left: Vec<u64>,
    /// The limiters' statuses right after the lease was charged (remaining excludes the lease).
    statuses: Vec<LimiterStatus>,
}

#[derive(Debug)]
struct RateSet {
    demand: Demand,
    lease: Option<RateLease>,
    /// A request is taking a lease since then (stale after 1 s: its future may have been
    /// dropped, e.g. the client went away).
    fetching: Option<Instant>,
    /// No lease before this instant (the last lease attempt was denied).
    no_lease_until: Option<Instant>,
}

/// This replica's rate leases, per limiter set.
#[derive(Debug, Default)]
pub(crate) struct RateLeases {
    sets: Mutex<HashMap<String, RateSet>>,
    ops: AtomicU64,
}

/// Every this many decisions, limiter sets idle for 5 s are forgotten (their lease ended long
/// ago; its unused units simply count as used).
const PRUNE_EVERY: u64 = 1024;

impl RateLeases {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, RateSet>> {
        self.sets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The key of a limiter set: keys, rates and bursts, not costs.
fn set_key(checks: &[RateCheck]) -> String {
    let mut k = String::new();
    for c in checks {
        k.push_str(&c.key);
        k.push('\u{1f}');
        k.push_str(&c.per_minute.to_string());
        k.push('\u{1f}');
        k.push_str(&c.effective_burst().to_string());
        k.push('\u{1e}');
    }
    k
}

/// Requests' worth of units to lease: the local demand over one ttl, at most 1/100 of a
/// minute's worth and at most the burst of every limiter. Below 2: no lease (exact).
fn lease_requests(checks: &[RateCheck], per_second: f64, ttl: Duration) -> u64 {
    let want = (per_second * ttl.as_secs_f64()).floor().clamp(1.0, 1e9) as u64;
    checks
        .iter()
        .filter(|c| c.cost > 0)
        .map(|c| {
            let share = c.per_minute / RATE_LEASE_SHARE / c.cost;
            share.min(c.effective_burst() / c.cost)
        })
        .fold(want, u64::min)
        .max(1)
}

/// What a decision of `checks` takes from the lease, or `None` when it does not cover them.
fn covers(lease: &RateLease, checks: &[RateCheck]) -> bool {
    lease.left.len() == checks.len() && lease.left.iter().zip(checks).all(|(l, c)| *l >= c.cost)
}

/// The decision of a request admitted from the lease, with headers from the lease's state:
/// `remaining` = what Redis reported after the lease was charged + the lease's units left
/// (at most the limit), `reset` = Redis' reset at the grant minus the time since.
fn local_decision(lease: &RateLease, now: Instant) -> RateDecision {
    let elapsed = now.saturating_duration_since(lease.granted);
    RateDecision {
        allowed: true,
        backend: Backend::Redis,
        leased: true,
        limiters: lease
            .statuses
            .iter()
            .zip(&lease.left)
            .map(|(s, left)| LimiterStatus {
                remaining: s.remaining.saturating_add(*left).min(s.limit),
                reset: s.reset.saturating_sub(elapsed),
                ..s.clone()
            })
            .collect(),
        retry_after: None,
    }
}

impl Limits {
    pub(crate) fn rate_leases_enabled(&self) -> bool {
        self.inner.redis.is_some() && !self.inner.opts.rate_lease_ttl.is_zero()
    }

    /// Admits `checks` from this replica's rate lease, in process; or says how many
    /// requests' worth to lease in the Redis decision (1: an exact decision).
    pub(crate) fn rate_lease_take(&self, checks: &[RateCheck]) -> Result<RateDecision, u64> {
        let ttl = self.inner.opts.rate_lease_ttl;
        let key = set_key(checks);
        let now = Instant::now();
        let mut give_back = None;
        let out = {
            let leases = &self.inner.rate_leases;
            let mut sets = leases.lock();
            if leases.ops.fetch_add(1, Ordering::Relaxed) % PRUNE_EVERY == PRUNE_EVERY - 1 {
                sets.retain(|_, s| s.demand.idle_for(now) < Duration::from_secs(5));
            }
            let set = sets.entry(key).or_insert_with(|| RateSet {
                demand: Demand::new(now),
                lease: None,
                fetching: None,
                no_lease_until: None,
            });
            set.demand.note(now);
            let live = set
                .lease
                .as_ref()
                .is_some_and(|l| now < l.expires && covers(l, checks));
            if live && let Some(l) = set.lease.as_mut() {
                for (left, c) in l.left.iter_mut().zip(checks) {
                    *left -= c.cost;
                }
                Ok(local_decision(l, now))
            } else {
                give_back = set.lease.take();
                let n = lease_requests(checks, set.demand.per_second(now), ttl);
                let allowed = set.no_lease_until.is_none_or(|t| now >= t);
                let fetching = set
                    .fetching
                    .is_some_and(|t| now.saturating_duration_since(t) < Duration::from_secs(1));
                if n >= 2 && !fetching && allowed {
                    set.fetching = Some(now);
                    Err(n)
                } else {
                    Err(1)
                }
            }
        };
        if let Some(l) = give_back {
            self.spawn_give_back(checks, l.left);
        }
        out
    }

    /// Installs the lease of `n` requests' worth after its Redis decision (`d`, taken with
    /// every cost multiplied by `n`), and returns the decision of the request that took it.
    pub(crate) fn rate_lease_install(
        &self,
        checks: &[RateCheck],
        n: u64,
        d: Option<RateDecision>,
    ) -> Option<RateDecision> {
        let ttl = self.inner.opts.rate_lease_ttl;
        let now = Instant::now();
        let mut sets = self.inner.rate_leases.lock();
        let set = sets.get_mut(&set_key(checks))?;
        set.fetching = None;
        let d = d?;
        if !d.allowed {
            // Not enough room for a lease: exact decisions for one ttl.
            set.no_lease_until = Some(now + ttl);
            return None;
        }
        let left: Vec<u64> = checks
            .iter()
            .map(|c| c.cost.saturating_mul(n.saturating_sub(1)))
            .collect();
        let lease = RateLease {
            granted: now,
            expires: now + ttl,
            left,
            statuses: d.limiters.clone(),
        };
        let mut out = local_decision(&lease, now);
        out.leased = false; // this request's decision was Redis'
        set.lease = Some(lease);
        Some(out)
    }

    /// Gives the unused units of an ended lease back to the shared limiters.
    fn spawn_give_back(&self, checks: &[RateCheck], left: Vec<u64>) {
        let backs: Vec<(String, u64, i64)> = checks
            .iter()
            .zip(left)
            .filter(|(_, l)| *l > 0)
            .map(|(c, l)| {
                (
                    c.key.clone(),
                    c.per_minute,
                    -i64::try_from(l).unwrap_or(i64::MAX),
                )
            })
            .collect();
        if backs.is_empty() {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            for (key, per_minute, delta) in backs {
                let span = crate::rate::adjust_span(per_minute, delta);
                if let Some(redis) = &this.inner.redis
                    && let Err(e) = redis.adjust_rate(&key, span).await
                {
                    tracing::debug!(error = %e, "rate lease units not given back");
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_size_follows_demand_within_the_caps() {
        let ttl = Duration::from_millis(20);
        let rpm = RateCheck::new("k:rpm", 60_000, 1);
        // 1000/s × 20 ms = 20 requests, under 600.
        assert_eq!(lease_requests(std::slice::from_ref(&rpm), 1000.0, ttl), 20);
        // Small limits (< 200/min) or little traffic: 1, i.e. exact.
        assert_eq!(lease_requests(&[RateCheck::new("k", 150, 1)], 1e6, ttl), 1);
        assert_eq!(lease_requests(std::slice::from_ref(&rpm), 10.0, ttl), 1);
        // A TPM limiter leases L × the request's tokens, within 1/100 of its rate.
        let tpm = RateCheck::new("k:tpm", 1_000_000, 1_000);
        assert_eq!(lease_requests(&[rpm.clone(), tpm], 1e6, ttl), 10);
        // Never more than the burst.
        let small_burst = RateCheck::new("k:b", 60_000, 1).with_burst(5);
        assert_eq!(lease_requests(&[small_burst], 1e6, ttl), 5);
    }
}

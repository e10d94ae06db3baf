//! Budget leases: blocks of budget a replica reserves in Redis ahead of demand, so that the
//! common reservation is decided in process (see the crate docs, "Leases").
//!
//! A lease is an ordinary reservation (the reserve script) of `L` micro-USD under the request
//! id `lease:{replica}:{seq}` over one merged scope set. Requests take their amount from the
//! lease's `available` in process; their settlement moves their part from the lease's hold to
//! `spent` in one script (`lua/budget_lease_finalize.lua`). A retired lease whose requests have
//! all finished is released in Redis like any reservation, which returns what it still holds.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::budget::{
    BudgetError, BudgetScope, FinalizeMode, Finalized, LeaseRef, Reservation, ReservedScope,
};
use crate::rate::Backend;
use crate::{Limits, unavailable};

/// Length of one demand bucket.
const BUCKET: Duration = Duration::from_millis(500);
/// A gap longer than this ends a scope set's (or a limiter set's) steady demand.
const IDLE: Duration = Duration::from_secs(1);
/// A lease is at most this fraction of what the tightest scope had left.
const LEASE_SHARE: i64 = 16;
/// A lease covers at most this many requests of the size that triggered it.
const LEASE_MAX_REQUESTS: i64 = 64;
/// A lease smaller than this many requests is not worth taking: reserve exactly.
const LEASE_MIN_REQUESTS: i64 = 4;

/// Recent demand of one scope set (or limiter set) on this replica: two buckets of 500 ms.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Demand {
    bucket_start: Instant,
    cur: u32,
    prev: u32,
    active_since: Instant,
    last: Instant,
}

impl Demand {
    pub(crate) fn new(now: Instant) -> Self {
        Self {
            bucket_start: now,
            cur: 0,
            prev: 0,
            active_since: now,
            last: now,
        }
    }

    /// Counts one event at `now`.
    pub(crate) fn note(&mut self, now: Instant) {
        if now.saturating_duration_since(self.last) > IDLE {
            *self = Self::new(now);
        }
        let since = now.saturating_duration_since(self.bucket_start);
        if since >= BUCKET {
            self.prev = if since < 2 * BUCKET { self.cur } else { 0 };
            self.cur = 0;
            self.bucket_start = now;
        }
        self.cur = self.cur.saturating_add(1);
        self.last = now;
    }

    /// Events per second over the last 0.5 to 1 s (counts the current event).
    pub(crate) fn per_second(&self, now: Instant) -> f64 {
        let window = BUCKET + now.saturating_duration_since(self.bucket_start).min(BUCKET);
        f64::from(self.cur.saturating_add(self.prev)) / window.as_secs_f64()
    }

    /// Time since the last event.
    pub(crate) fn idle_for(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.last)
    }

    /// How long demand has been steady (no gap over 1 s).
    fn steady_for(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.active_since)
    }
}

/// One lease held by this replica.
#[derive(Debug)]
struct Lease {
    id: String,
    /// Period ids and starts as Redis reserved them; `remaining_micros` = what the scope had
    /// left right after the lease was taken.
    scopes: Vec<ReservedScope>,
    size: i64,
    available: i64,
    /// Requests taken from this lease and not yet finalized: request id → amount.
    in_flight: HashMap<String, i64>,
    created: Instant,
    validated: Instant,
    lost: bool,
}

impl Lease {
    fn usable(&self, now: Instant, unix_s: i64, p: &Params) -> bool {
        !self.lost
            && now.saturating_duration_since(self.created) < p.max_age
            && now.saturating_duration_since(self.validated) <= p.validate * 2
            && self
                .scopes
                .iter()
                .all(|s| s.period.bounds_at(unix_s).id == s.period_id)
    }

    fn min_remaining(&self) -> i64 {
        self.scopes
            .iter()
            .map(|s| s.remaining_micros)
            .min()
            .unwrap_or(0)
    }
}

/// The leases of one merged scope set.
#[derive(Debug)]
struct SetState {
    demand: Demand,
    current: Option<Lease>,
    /// A prefetched lease, used when `current` cannot cover a request.
    next: Option<Lease>,
    /// Leases no longer used whose requests are still in flight.
    retired: Vec<Lease>,
    fetching: bool,
    validating: bool,
}

impl SetState {
    fn new(now: Instant) -> Self {
        Self {
            demand: Demand::new(now),
            current: None,
            next: None,
            retired: Vec::new(),
            fetching: false,
            validating: false,
        }
    }

    /// Leaves the lease: released at once when nothing is in flight, else kept until then.
    fn retire(&mut self, lease: Lease, release: &mut Vec<Lease>) {
        if lease.in_flight.is_empty() {
            release.push(lease);
        } else {
            self.retired.push(lease);
        }
    }

    /// Retires an unusable current lease, promotes a usable next one, and hands back the
    /// retired leases that can be released now.
    fn tidy(&mut self, now: Instant, unix_s: i64, p: &Params, release: &mut Vec<Lease>) {
        if let Some(c) = self.current.take_if(|c| !c.usable(now, unix_s, p)) {
            self.retire(c, release);
        }
        if let Some(n) = self.next.take_if(|n| !n.usable(now, unix_s, p)) {
            self.retire(n, release);
        }
        if self.current.is_none() {
            self.current = self.next.take();
        }
        let mut keep = Vec::with_capacity(self.retired.len());
        for l in self.retired.drain(..) {
            if l.in_flight.is_empty() {
                release.push(l);
            } else if now.saturating_duration_since(l.created) < p.forget_after {
                keep.push(l);
            }
            // else: requests that never finalized; Redis expires the hold on its own.
        }
        self.retired = keep;
    }

    fn find(&mut self, id: &str) -> Option<&mut Lease> {
        self.current
            .iter_mut()
            .chain(self.next.iter_mut())
            .chain(self.retired.iter_mut())
            .find(|l| l.id == id)
    }
}

/// Lease settings derived from the options.
#[derive(Debug, Clone, Copy)]
struct Params {
    max_age: Duration,
    validate: Duration,
    warmup: Duration,
    forget_after: Duration,
}

/// This replica's budget leases, per merged scope set.
#[derive(Debug)]
pub(crate) struct BudgetLeases {
    replica: String,
    seq: AtomicU64,
    ops: AtomicU64,
    sets: Mutex<HashMap<String, SetState>>,
}

impl BudgetLeases {
    pub(crate) fn new() -> Self {
        // A random 128-bit replica id (std's randomly keyed hasher: no extra dependency).
        let a = RandomState::new().hash_one(std::process::id());
        let b = RandomState::new().hash_one(SystemTime::now());
        Self {
            replica: format!("{a:016x}{b:016x}"),
            seq: AtomicU64::new(0),
            ops: AtomicU64::new(0),
            sets: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, SetState>> {
        self.sets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn next_id(&self) -> String {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        format!("lease:{}:{n}", self.replica)
    }
}

/// Every this many takes, scope sets idle for [`PRUNE_IDLE`] give their leases back and are
/// forgotten (also the leases of a scope set whose limit changed: a new set).
const PRUNE_EVERY: u64 = 1024;
const PRUNE_IDLE: Duration = Duration::from_secs(5);

fn prune(
    sets: &mut HashMap<String, SetState>,
    now: Instant,
    unix_s: i64,
    p: &Params,
    release: &mut Vec<Lease>,
) {
    sets.retain(|_, set| {
        if set.fetching || set.validating || set.demand.idle_for(now) < PRUNE_IDLE {
            return true;
        }
        for l in [set.current.take(), set.next.take()].into_iter().flatten() {
            set.retire(l, release);
        }
        set.tidy(now, unix_s, p, release);
        !set.retired.is_empty()
    });
}

/// The key of a merged scope set in the lease table.
fn set_key(scopes: &[BudgetScope]) -> String {
    let mut k = String::new();
    for s in scopes {
        k.push_str(&s.id);
        k.push('\u{1f}');
        k.push_str(s.period.as_str());
        k.push('\u{1f}');
        k.push_str(&s.limit_micros.to_string());
        k.push('\u{1e}');
    }
    k
}

fn unix_now_s() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The size of a lease for requests of `amount`, given what the tightest scope has left and
/// the demand, or `None` when a lease is not worth it (exact reservations then).
fn lease_size(remaining: i64, amount: i64, per_second: f64) -> Option<i64> {
    if amount <= 0 {
        return None;
    }
    // About one second of this replica's demand, at most 64 requests and 1/16 of what is left.
    let demand = (per_second.ceil().min(1e6) as i64).max(1);
    let size = (remaining / LEASE_SHARE)
        .min(amount.saturating_mul(LEASE_MAX_REQUESTS))
        .min(amount.saturating_mul(demand));
    (size >= amount.saturating_mul(LEASE_MIN_REQUESTS)).then_some(size)
}

impl Limits {
    fn lease_params(&self) -> Params {
        let o = &self.inner.opts;
        Params {
            max_age: o.lease_max_age.min(o.reservation_ttl / 2),
            validate: o.lease_validate_interval.max(Duration::from_millis(1)),
            warmup: o.lease_warmup,
            forget_after: o.reservation_ttl,
        }
    }

    pub(crate) fn budget_leases_enabled(&self) -> bool {
        self.inner.redis.is_some() && !self.inner.opts.lease_max_age.is_zero()
    }

    /// Takes `amount` from this replica's lease for the scope set, in process, or `None`
    /// (then the caller reserves in Redis). Starts a prefetch or a validation when due.
    pub(crate) fn lease_take(
        &self,
        scopes: &[BudgetScope],
        request_id: &str,
        amount: i64,
    ) -> Option<Reservation> {
        let p = self.lease_params();
        let key = set_key(scopes);
        let now = Instant::now();
        let unix_s = unix_now_s();
        let mut release = Vec::new();
        let mut fetch = None;
        let mut validate = None;
        let taken = {
            let leases = &self.inner.budget_leases;
            let mut sets = leases.lock();
            if leases.ops.fetch_add(1, Ordering::Relaxed) % PRUNE_EVERY == PRUNE_EVERY - 1 {
                prune(&mut sets, now, unix_s, &p, &mut release);
            }
            let set = sets
                .entry(key.clone())
                .or_insert_with(|| SetState::new(now));
            set.demand.note(now);
            set.tidy(now, unix_s, &p, &mut release);
            // A request reserving again under its id replaces its earlier amount.
            for l in set.current.iter_mut().chain(set.next.iter_mut()) {
                if let Some(old) = l.in_flight.remove(request_id) {
                    l.available = l.available.saturating_add(old);
                }
            }
            if set.current.as_ref().is_some_and(|c| c.available < amount) {
                // The current lease cannot cover this request: retire it, try the next one.
                if let Some(c) = set.current.take() {
                    set.retire(c, &mut release);
                }
                set.current = set.next.take();
                if set.current.as_ref().is_some_and(|c| c.available < amount)
                    && let Some(c) = set.current.take()
                {
                    set.retire(c, &mut release);
                }
            }
            let taken = set.current.as_mut().map(|l| {
                l.available -= amount;
                l.in_flight.insert(request_id.to_owned(), amount);
                Reservation {
                    request_id: request_id.to_owned(),
                    amount_micros: amount,
                    backend: Backend::Redis,
                    scopes: l
                        .scopes
                        .iter()
                        .map(|s| ReservedScope {
                            remaining_micros: s.remaining_micros.saturating_add(l.available),
                            ..s.clone()
                        })
                        .collect(),
                    lease: Some(LeaseRef {
                        set: key.clone(),
                        id: l.id.clone(),
                    }),
                }
            });
            if taken.is_some() {
                let per_second = set.demand.per_second(now);
                let steady = set.demand.steady_for(now) >= p.warmup;
                if let Some(c) = &set.current {
                    if now.saturating_duration_since(c.validated) >= p.validate && !set.validating {
                        set.validating = true;
                        validate = Some((c.id.clone(), c.scopes.clone()));
                    }
                    if c.available < c.size / 2
                        && set.next.is_none()
                        && !set.fetching
                        && steady
                        && let Some(size) = lease_size(
                            c.min_remaining().saturating_add(c.available),
                            amount,
                            per_second,
                        )
                    {
                        set.fetching = true;
                        fetch = Some(size);
                    }
                }
            }
            taken
        };
        for l in release {
            self.spawn_release(l);
        }
        if let Some(size) = fetch {
            self.spawn_fetch(key.clone(), scopes.to_vec(), size);
        }
        if let Some((id, lease_scopes)) = validate {
            self.spawn_validate(key, id, lease_scopes);
        }
        taken
    }

    /// After a reservation made in Redis: starts fetching a lease when the scope set's
    /// demand is steady and what is left makes one worth it.
    pub(crate) fn lease_after_store(&self, scopes: &[BudgetScope], r: &Reservation) {
        let Some(remaining) = r.min_remaining_micros() else {
            return;
        };
        let p = self.lease_params();
        let key = set_key(scopes);
        let now = Instant::now();
        let size = {
            let mut sets = self.inner.budget_leases.lock();
            let Some(set) = sets.get_mut(&key) else {
                return;
            };
            if set.fetching
                || set.next.is_some()
                || set.current.is_some()
                || set.demand.steady_for(now) < p.warmup
            {
                return;
            }
            let Some(size) = lease_size(remaining, r.amount_micros, set.demand.per_second(now))
            else {
                return;
            };
            set.fetching = true;
            size
        };
        self.spawn_fetch(key, scopes.to_vec(), size);
    }

    /// Reserves a lease of `size` in Redis in a spawned task and installs it.
    fn spawn_fetch(&self, key: String, scopes: Vec<BudgetScope>, size: i64) {
        let this = self.clone();
        let id = self.inner.budget_leases.next_id();
        tokio::spawn(async move {
            let out = this.reserve_store(&scopes, &id, size, None).await;
            let p = this.lease_params();
            let now = Instant::now();
            let unix_s = unix_now_s();
            let mut release = Vec::new();
            {
                let mut sets = this.inner.budget_leases.lock();
                let set = sets.get_mut(&key);
                match (out, set) {
                    (Ok(per_scope), set) => {
                        let lease = Lease {
                            id,
                            scopes: crate::reserved_scopes(&scopes, per_scope),
                            size,
                            available: size,
                            in_flight: HashMap::new(),
                            created: now,
                            validated: now,
                            lost: false,
                        };
                        match set {
                            Some(set) => {
                                set.fetching = false;
                                if !lease.usable(now, unix_s, &p) || set.next.is_some() {
                                    release.push(lease);
                                } else if set.current.is_none() {
                                    set.current = Some(lease);
                                } else {
                                    set.next = Some(lease);
                                }
                            }
                            None => release.push(lease),
                        }
                    }
                    (Err(e), set) => {
                        if let Some(set) = set {
                            set.fetching = false;
                        }
                        tracing::debug!(error = %e, "budget lease not taken");
                    }
                }
            }
            for l in release {
                this.release_lease(l).await;
            }
        });
    }

    /// Checks in a spawned task that the lease still holds its money in Redis.
    fn spawn_validate(&self, key: String, id: String, scopes: Vec<ReservedScope>) {
        let this = self.clone();
        tokio::spawn(async move {
            let Some(redis) = &this.inner.redis else {
                return;
            };
            let out = redis.lease_check(&id, &scopes).await;
            let p = this.lease_params();
            let now = Instant::now();
            let mut release = Vec::new();
            {
                let mut sets = this.inner.budget_leases.lock();
                let Some(set) = sets.get_mut(&key) else {
                    return;
                };
                set.validating = false;
                if let Some(l) = set.find(&id) {
                    match out {
                        Ok(true) => l.validated = now,
                        Ok(false) => {
                            tracing::warn!(
                                lease = %id,
                                "budget lease lost (Redis flushed or restarted?): retired"
                            );
                            l.lost = true;
                        }
                        // Not confirmed: unusable once its last confirmation is too old.
                        Err(e) => tracing::debug!(error = %e, "budget lease not validated"),
                    }
                }
                set.tidy(now, unix_now_s(), &p, &mut release);
            }
            for l in release {
                this.release_lease(l).await;
            }
        });
    }

    fn spawn_release(&self, lease: Lease) {
        let this = self.clone();
        tokio::spawn(async move { this.release_lease(lease).await });
    }

    /// Releases a lease in Redis: what it still holds goes back to the scopes.
    async fn release_lease(&self, lease: Lease) {
        let r = Reservation {
            request_id: lease.id,
            amount_micros: lease.size,
            backend: Backend::Redis,
            scopes: lease.scopes,
            lease: None,
        };
        if let Err(e) = self
            .finalize_store(&r, FinalizeMode::Release, "release")
            .await
        {
            tracing::debug!(error = %e, lease = %r.request_id, "budget lease not released; it expires on its own");
        }
    }

    /// Settles or releases a reservation taken from a lease.
    pub(crate) async fn finalize_leased(
        &self,
        reservation: &Reservation,
        lease: &LeaseRef,
        mode: FinalizeMode,
        op: &'static str,
    ) -> Result<Finalized, BudgetError> {
        let Some(redis) = &self.inner.redis else {
            return Err(BudgetError::Invalid(
                "a leased reservation needs the Redis backend".to_owned(),
            ));
        };
        let ttl = self.inner.opts.finalized_ttl.as_secs();
        let (done, lost) = redis
            .lease_finalize(reservation, &lease.id, mode, ttl)
            .await
            .map_err(|e| unavailable(op, &e))?;
        if lost {
            tracing::warn!(
                lease = %lease.id,
                "budget lease lost (Redis flushed or restarted?): retired"
            );
        }
        let p = self.lease_params();
        let now = Instant::now();
        let mut release = Vec::new();
        {
            let mut sets = self.inner.budget_leases.lock();
            if let Some(set) = sets.get_mut(&lease.set) {
                if let Some(l) = set.find(&lease.id) {
                    let part = l.in_flight.remove(&reservation.request_id);
                    if let (None, FinalizeMode::Release, Some(part)) = (done, mode, part) {
                        // Released before anything was billed: the part is still held by the
                        // lease in Redis, so it can serve another request.
                        l.available = l.available.saturating_add(part);
                    }
                    if lost {
                        l.lost = true;
                    }
                }
                set.tidy(now, unix_now_s(), &p, &mut release);
            }
        }
        for l in release {
            self.spawn_release(l);
        }
        Ok(done.map_or(Finalized::Applied, |k| k.as_finalized()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_size_is_bounded_by_share_requests_and_demand() {
        assert_eq!(lease_size(1_000_000, 10_000, 1000.0), Some(62_500));
        assert_eq!(lease_size(100_000_000, 10_000, 1000.0), Some(640_000));
        assert_eq!(lease_size(100_000_000, 10_000, 5.0), Some(50_000));
        assert_eq!(
            lease_size(100_000_000, 10_000, 2.0),
            None,
            "too little demand"
        );
        assert_eq!(
            lease_size(639_999, 10_000, 1000.0),
            None,
            "near the end: exact"
        );
        assert_eq!(lease_size(1_000_000, 0, 1000.0), None);
    }

    #[test]
    fn demand_counts_recent_events_and_resets_after_a_gap() {
        let t0 = Instant::now();
        let mut d = Demand::new(t0);
        for i in 0..100 {
            d.note(t0 + Duration::from_millis(i * 10));
        }
        let t = t0 + Duration::from_millis(1000);
        let r = d.per_second(t);
        assert!((50.0..=200.0).contains(&r), "{r}");
        assert!(d.steady_for(t) >= Duration::from_millis(990));
        d.note(t + Duration::from_secs(3));
        assert_eq!(d.steady_for(t + Duration::from_secs(3)), Duration::ZERO);
    }
}

//! Per-(provider, model) health, shared by every request of this process.
//!
//! One [`HealthRegistry`] per process tracks, for each [`TargetKey`]:
//!
//! - **Outlier ejection** (Envoy `outlier_detection`): after
//!   [`HealthConfig::consecutive_failures_to_eject`] consecutive failures (Envoy `consecutive_5xx = 5`) the target is
//!   ejected for `base_ejection · 2^level` (capped at [`HealthConfig::max_ejection`]); `level` grows by one per
//!   ejection and is forgiven by one for every `base_ejection` the target then stays healthy (Envoy decrements its
//!   ejection multiplier the same way).
//! - **Half-open probing** (circuit breaker): when an ejection runs out, the next caller of
//!   [`HealthRegistry::admit`] gets [`Admission::Probe`]; until that probe reports, everyone else sees
//!   [`Admission::Ejected`]. A successful probe closes the breaker; a failed one re-ejects with the next, longer time.
//!   A probe that never reports (its request was cancelled) frees its slot after [`HealthConfig::probe_timeout`], or
//!   at once through [`HealthRegistry::cancel_probe`].
//! - **Cool-downs** from a provider's `Retry-After` (LiteLLM cooldowns, test matrix U5): nobody is admitted until it
//!   passes (capped at [`HealthConfig::max_retry_after`]), then the target is open again without a probe.
//! - **Error rate** over a sliding, bucketed window (Helicone's health monitor), turned into a load-balancing
//!   [`HealthRegistry::weight`] with a floor, so a flapping target keeps a trickle of traffic.
//! - **Latency**: a plain EWMA of successful latencies and a Finagle/Linkerd-style **peak EWMA** (jumps up at once on a
//!   slow sample, decays back towards the EWMA with time constant [`HealthConfig::peak_decay`]) for [`p2c`].
//!
//! What counts against health is decided by the executor: it reports [`FailureKind`]s for upstream faults only.
//! Caller errors (4xx other than 429) and quota exhaustion are not the target's fault and are not reported.
//!
//! **Never ejecting the last healthy target is the executor's job**: this registry sees one target at a time, the
//! executor sees the group (Envoy caps the ejected share with `max_ejection_percent`). When every target of a group is
//! ejected, the executor tries the first one anyway, but only one request at a time
//! ([`HealthRegistry::claim_last_resort`]); the others get a fast 503 with a `Retry-After` (test matrix U21). A
//! target cooling down on a provider's `Retry-After` is never called before it ends.
//!
//! All times are [`tokio::time::Instant`] so tests can run on paused time.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use kairos_providers::adapter::UpstreamErrorKind;
use rand::{Rng, RngExt};
use serde::Serialize;
use tokio::time::Instant;

/// Number of buckets the error-rate window is split into.
const BUCKETS: usize = 10;

/// One upstream target: a provider (as named in the config) and the upstream model id.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TargetKey {
    pub provider: Arc<str>,
    pub model: Arc<str>,
}

impl TargetKey {
    pub fn new(provider: impl Into<Arc<str>>, model: impl Into<Arc<str>>) -> Self {
        TargetKey {
            provider: provider.into(),
            model: model.into(),
        }
    }
}

impl fmt::Display for TargetKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.provider, self.model)
    }
}

impl Serialize for TargetKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("TargetKey", 2)?;
        st.serialize_field("provider", &*self.provider)?;
        st.serialize_field("model", &*self.model)?;
        st.end()
    }
}

/// Tuning of the health registry. [`Default`] gives Envoy-like values.
#[derive(Clone, Debug, PartialEq)]
pub struct HealthConfig {
    /// Length of the sliding error-rate window, split into 10 buckets. Default 30 s: long enough to hold a useful
    /// sample at modest traffic, short enough that a recovered target regains its weight within half a minute
    /// (Helicone uses 60 s / 10 buckets, LiteLLM "the current minute", Envoy's success-rate interval is 10 s).
    pub window: Duration,
    /// Fewer requests than this in the window and the error rate does not lower the weight (a single failure out of
    /// one request is not a 100 % error rate). Default 10 (Helicone grants a grace of 20 requests, Envoy's
    /// success-rate detection wants 100 per host; a small gateway sees far fewer per target).
    pub min_requests: u32,
    /// Smallest weight a target that is not ejected or cooling down can get. Default 0.05, so a flapping target keeps
    /// some traffic and its error rate can recover.
    pub weight_floor: f64,
    /// Smoothing factor of the plain latency EWMA over successful requests: `ewma = α·sample + (1-α)·ewma`.
    /// Default 0.2 (roughly the last ten samples).
    pub ewma_alpha: f64,
    /// Time constant τ with which the peak EWMA decays back towards the EWMA: after Δt the excess over the EWMA keeps
    /// the fraction `e^(-Δt/τ)`. Default 10 s (Finagle's and Linkerd's `decay`).
    pub peak_decay: Duration,
    /// Consecutive failures that eject the target. Default 5 (Envoy `consecutive_5xx`).
    pub consecutive_failures_to_eject: u32,
    /// First ejection time; each further ejection doubles it. Default 30 s (Envoy `base_ejection_time`).
    pub base_ejection: Duration,
    /// Cap on the ejection time. Default 300 s (Envoy `max_ejection_time`).
    pub max_ejection: Duration,
    /// A half-open probe that has not reported after this long no longer blocks the next probe. Default 60 s: a
    /// probe should report as soon as the response head (or first stream event) says whether the target works.
    pub probe_timeout: Duration,
    /// Cap on a provider's `Retry-After` cool-down. Default 60 s: a provider asking for longer is treated as down
    /// for a minute and then tried again, rather than taken out for hours by one header.
    pub max_retry_after: Duration,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            window: Duration::from_secs(30),
            min_requests: 10,
            weight_floor: 0.05,
            ewma_alpha: 0.2,
            peak_decay: Duration::from_secs(10),
            consecutive_failures_to_eject: 5,
            base_ejection: Duration::from_secs(30),
            max_ejection: Duration::from_secs(300),
            probe_timeout: Duration::from_secs(60),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

/// An upstream fault that counts against a target's health.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// Connection refused, DNS or TLS failure (local-origin, Envoy counts these too).
    Connect,
    /// No response head / first byte in time.
    Timeout,
    /// 5xx other than overload.
    ServerError,
    /// Transient 429 (not quota exhaustion).
    RateLimited,
    /// 503 / 529 overloaded.
    Overloaded,
    /// The stream stalled or ended before its terminal event.
    StreamCut,
    /// The upstream answered with something we cannot decode.
    InvalidResponse,
}

impl FailureKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Connect => "connect",
            FailureKind::Timeout => "timeout",
            FailureKind::ServerError => "server_error",
            FailureKind::RateLimited => "rate_limited",
            FailureKind::Overloaded => "overloaded",
            FailureKind::StreamCut => "stream_cut",
            FailureKind::InvalidResponse => "invalid_response",
        }
    }

    /// The health failure for a classified upstream error response, or `None` when the error is not the target's
    /// fault (caller errors, auth, quota exhaustion, content filter): those must not be reported.
    pub fn from_upstream(kind: UpstreamErrorKind) -> Option<Self> {
        match kind {
            UpstreamErrorKind::RateLimited => Some(FailureKind::RateLimited),
            UpstreamErrorKind::Overloaded => Some(FailureKind::Overloaded),
            UpstreamErrorKind::Server => Some(FailureKind::ServerError),
            UpstreamErrorKind::BadRequest
            | UpstreamErrorKind::ContextLength
            | UpstreamErrorKind::Auth
            | UpstreamErrorKind::NotFound
            | UpstreamErrorKind::TooLarge
            | UpstreamErrorKind::QuotaExhausted
            | UpstreamErrorKind::ContentFilter
            | UpstreamErrorKind::Other => None,
        }
    }
}

/// May a request go to this target now?
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Healthy: go ahead.
    Open,
    /// Half-open: this caller carries the single recovery probe and must report its outcome
    /// ([`HealthRegistry::record_success`], [`HealthRegistry::record_failure`] or [`HealthRegistry::cancel_probe`]).
    Probe,
    /// The provider asked us to wait (`Retry-After`) until `until`.
    CoolingDown { until: Instant },
    /// Ejected until `until` (while a probe is in flight: the latest time its slot frees).
    Ejected { until: Instant },
}

impl Admission {
    /// `Open` or `Probe`.
    pub fn is_admitted(self) -> bool {
        matches!(self, Admission::Open | Admission::Probe)
    }
}

/// Holds a target's last-resort slot ([`HealthRegistry::claim_last_resort`]).
pub struct LastResortGuard<'a> {
    reg: &'a HealthRegistry,
    key: &'a TargetKey,
}

impl Drop for LastResortGuard<'_> {
    fn drop(&mut self) {
        let mut map = self.reg.lock();
        if let Some(e) = map.get_mut(self.key) {
            e.last_resort_busy = false;
        }
    }
}

/// Health state as shown in [`TargetHealth`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthState {
    Healthy,
    Ejected,
    Cooling,
    /// Half-open: the ejection ran out; the next request (or the one in flight) decides.
    Probing,
}

/// One target's health for the admin API and metrics.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TargetHealth {
    #[serde(flatten)]
    pub key: TargetKey,
    pub state: HealthState,
    /// Failures / requests in the window (0 with no requests).
    pub error_rate: f64,
    pub requests: u64,
    pub failures: u64,
    pub consecutive_failures: u32,
    /// Ejections since the process started.
    pub ejections: u32,
    /// Milliseconds until the ejection or cool-down ends (`None` when healthy or probing).
    pub until_ms: Option<u64>,
    pub ewma_ms: Option<f64>,
    pub peak_ewma_ms: Option<f64>,
}

#[derive(Clone, Copy, Debug, Default)]
struct Bucket {
    slot: u64,
    requests: u32,
    failures: u32,
}

#[derive(Debug)]
struct Entry {
    buckets: [Bucket; BUCKETS],
    consecutive: u32,
    ejections: u32,
    /// Exponent of the next ejection time.
    level: u32,
    /// `Some` while ejected, and after that while half-open (until a probe succeeds).
    ejected_until: Option<Instant>,
    probe_started: Option<Instant>,
    /// A last-resort attempt (every target of its plan ejected) is running.
    last_resort_busy: bool,
    /// When the last ejection closed (for forgiving `level`).
    healthy_since: Option<Instant>,
    cool_until: Option<Instant>,
    ewma_ms: Option<f64>,
    peak_ms: Option<f64>,
    peak_at: Instant,
}

impl Entry {
    fn new(now: Instant) -> Self {
        Entry {
            buckets: [Bucket::default(); BUCKETS],
            consecutive: 0,
            ejections: 0,
            level: 0,
            ejected_until: None,
            probe_started: None,
            last_resort_busy: false,
            healthy_since: None,
            cool_until: None,
            ewma_ms: None,
            peak_ms: None,
            peak_at: now,
        }
    }
}

/// Process-wide health of every target. `Send + Sync`; share it behind an `Arc`.
#[derive(Debug)]
pub struct HealthRegistry {
    cfg: HealthConfig,
    epoch: Instant,
    bucket_nanos: u128,
    targets: Mutex<HashMap<TargetKey, Entry>>,
}

impl Default for HealthRegistry {
    fn default() -> Self {
        HealthRegistry::new(HealthConfig::default())
    }
}

impl HealthRegistry {
    pub fn new(cfg: HealthConfig) -> Self {
        let bucket_nanos = (cfg.window.as_nanos() / BUCKETS as u128).max(1_000_000);
        HealthRegistry {
            cfg,
            epoch: Instant::now(),
            bucket_nanos,
            targets: Mutex::new(HashMap::new()),
        }
    }

    pub fn config(&self) -> &HealthConfig {
        &self.cfg
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<TargetKey, Entry>> {
        // The critical sections cannot leave an entry half-updated in a harmful way; keep serving after a panic.
        self.targets.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn entry<'m>(
        map: &'m mut HashMap<TargetKey, Entry>,
        k: &TargetKey,
        now: Instant,
    ) -> &'m mut Entry {
        map.entry(k.clone()).or_insert_with(|| Entry::new(now))
    }

    /// May a request go to `k` now? Claims the half-open probe slot when it returns [`Admission::Probe`].
    pub fn admit(&self, k: &TargetKey) -> Admission {
        let now = Instant::now();
        let mut map = self.lock();
        match map.get_mut(k) {
            None => Admission::Open,
            Some(e) => {
                let a = self.peek(e, now);
                if a == Admission::Probe {
                    e.probe_started = Some(now);
                }
                a
            }
        }
    }

    /// What [`admit`](Self::admit) would answer, without claiming a probe.
    fn peek(&self, e: &Entry, now: Instant) -> Admission {
        let cooling = e.cool_until.filter(|&u| u > now);
        let ejected = e.ejected_until.filter(|&u| u > now);
        match (ejected, cooling) {
            (Some(ej), Some(c)) if c > ej => Admission::CoolingDown { until: c },
            (Some(ej), _) => Admission::Ejected { until: ej },
            (None, Some(c)) => Admission::CoolingDown { until: c },
            (None, None) => {
                if e.ejected_until.is_none() {
                    return Admission::Open;
                }
                // Half-open.
                match e.probe_started {
                    Some(started) if started + self.cfg.probe_timeout > now => Admission::Ejected {
                        until: started + self.cfg.probe_timeout,
                    },
                    _ => Admission::Probe,
                }
            }
        }
    }

    /// Not ejected and not cooling down: [`admit`](Self::admit) would answer `Open` or `Probe`.
    pub fn is_available(&self, k: &TargetKey) -> bool {
        let now = Instant::now();
        let map = self.lock();
        map.get(k).is_none_or(|e| self.peek(e, now).is_admitted())
    }

    /// A successful attempt: closes a half-open breaker and resets the consecutive-failure count.
    pub fn record_success(&self, k: &TargetKey, latency: Duration) {
        let now = Instant::now();
        let mut map = self.lock();
        let e = Self::entry(&mut map, k, now);
        self.count(e, now, false);
        e.consecutive = 0;
        if e.ejected_until.is_some_and(|u| u <= now) {
            // Half-open and the target answered: close.
            e.ejected_until = None;
            e.probe_started = None;
            e.healthy_since = Some(now);
        }
        let ms = latency.as_secs_f64() * 1000.0;
        let ewma = match e.ewma_ms {
            Some(old) => self.cfg.ewma_alpha * ms + (1.0 - self.cfg.ewma_alpha) * old,
            None => ms,
        };
        e.ewma_ms = Some(ewma);
        let peak = self.peak_at(e, now).unwrap_or(ms).max(ms);
        e.peak_ms = Some(peak);
        e.peak_at = now;
    }

    /// A failed attempt. `cfg.consecutive_failures_to_eject` in a row eject the target; a failure while half-open
    /// re-ejects it at once with the next, longer time. While ejected, failures (of requests admitted before the
    /// ejection) are counted but do not extend it. A slow failure raises the peak latency; a fast one never lowers it.
    pub fn record_failure(&self, k: &TargetKey, kind: FailureKind, latency: Duration) {
        let _ = kind; // Every kind counts alike today; kept for metrics and future per-kind policies.
        let now = Instant::now();
        let mut map = self.lock();
        let e = Self::entry(&mut map, k, now);
        self.count(e, now, true);
        e.consecutive = e.consecutive.saturating_add(1);
        match e.ejected_until {
            Some(u) if u > now => {}
            Some(_) => self.eject(e, now),
            None => {
                if e.consecutive >= self.cfg.consecutive_failures_to_eject.max(1) {
                    self.eject(e, now);
                }
            }
        }
        let ms = latency.as_secs_f64() * 1000.0;
        let peak = match self.peak_at(e, now) {
            Some(p) => p.max(ms),
            None => ms,
        };
        e.peak_ms = Some(peak);
        e.peak_at = now;
    }

    /// The one last-resort attempt allowed at a time on an ejected target, when every target
    /// of a plan is ejected (test-matrix U21: the others get a fast 503). `None` while one is
    /// running. The slot is released when the guard drops.
    pub fn claim_last_resort<'a>(&'a self, k: &'a TargetKey) -> Option<LastResortGuard<'a>> {
        let now = Instant::now();
        let mut map = self.lock();
        let e = Self::entry(&mut map, k, now);
        if e.last_resort_busy {
            return None;
        }
        e.last_resort_busy = true;
        Some(LastResortGuard { reg: self, key: k })
    }

    /// Give back a probe slot without a verdict (the probe's request was cancelled, or failed for a reason that says
    /// nothing about the target, such as a caller error). The next caller gets the probe.
    pub fn cancel_probe(&self, k: &TargetKey) {
        let mut map = self.lock();
        if let Some(e) = map.get_mut(k) {
            e.probe_started = None;
        }
    }

    /// The provider asked us to wait (`Retry-After`): nobody is admitted to `k` until then (capped at
    /// `cfg.max_retry_after`). An earlier cool-down that lasts longer is kept.
    pub fn cool_down(&self, k: &TargetKey, retry_after: Duration) {
        let now = Instant::now();
        let until = now + retry_after.min(self.cfg.max_retry_after);
        let mut map = self.lock();
        let e = Self::entry(&mut map, k, now);
        if e.cool_until.is_none_or(|c| c < until) {
            e.cool_until = Some(until);
        }
    }

    /// Load-balancing weight in `0..=1`: 0 while ejected or cooling down, else `1 - error_rate` (once the window
    /// holds `cfg.min_requests`), never below `cfg.weight_floor`. Unknown targets weigh 1.
    pub fn weight(&self, k: &TargetKey) -> f64 {
        let now = Instant::now();
        let map = self.lock();
        let Some(e) = map.get(k) else {
            return 1.0;
        };
        if !self.peek(e, now).is_admitted() {
            return 0.0;
        }
        let (requests, failures) = self.window(e, now);
        if requests < u64::from(self.cfg.min_requests.max(1)) {
            return 1.0;
        }
        let rate = failures as f64 / requests as f64;
        (1.0 - rate).clamp(self.cfg.weight_floor.clamp(0.0, 1.0), 1.0)
    }

    /// Peak-EWMA latency in milliseconds (`None` before the first sample).
    pub fn peak_ewma_ms(&self, k: &TargetKey) -> Option<f64> {
        let now = Instant::now();
        let map = self.lock();
        map.get(k).and_then(|e| self.peak_at(e, now))
    }

    /// Every known target, sorted by provider then model.
    pub fn snapshot(&self) -> Vec<TargetHealth> {
        let now = Instant::now();
        let map = self.lock();
        let mut out: Vec<TargetHealth> = map
            .iter()
            .map(|(k, e)| {
                let (requests, failures) = self.window(e, now);
                let (state, until) = match self.peek(e, now) {
                    Admission::Open => (HealthState::Healthy, None),
                    Admission::Probe => (HealthState::Probing, None),
                    Admission::CoolingDown { until } => (HealthState::Cooling, Some(until)),
                    Admission::Ejected { until } => {
                        if e.ejected_until.is_some_and(|u| u <= now) {
                            // A probe is in flight.
                            (HealthState::Probing, None)
                        } else {
                            (HealthState::Ejected, Some(until))
                        }
                    }
                };
                TargetHealth {
                    key: k.clone(),
                    state,
                    error_rate: if requests == 0 {
                        0.0
                    } else {
                        failures as f64 / requests as f64
                    },
                    requests,
                    failures,
                    consecutive_failures: e.consecutive,
                    ejections: e.ejections,
                    until_ms: until.map(|u| {
                        u64::try_from(u.saturating_duration_since(now).as_millis())
                            .unwrap_or(u64::MAX)
                    }),
                    ewma_ms: e.ewma_ms,
                    peak_ewma_ms: self.peak_at(e, now),
                }
            })
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }

    fn eject(&self, e: &mut Entry, now: Instant) {
        if let Some(since) = e.healthy_since.take() {
            let base = self.cfg.base_ejection.as_nanos().max(1);
            let forgiven = now.saturating_duration_since(since).as_nanos() / base;
            e.level = e
                .level
                .saturating_sub(u32::try_from(forgiven).unwrap_or(u32::MAX));
        }
        let factor = 2u32.checked_pow(e.level).unwrap_or(u32::MAX);
        let time = self
            .cfg
            .base_ejection
            .saturating_mul(factor)
            .min(self.cfg.max_ejection);
        e.ejected_until = Some(now + time);
        e.probe_started = None;
        e.level = e.level.saturating_add(1).min(31);
        e.ejections = e.ejections.saturating_add(1);
    }

    fn slot(&self, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.epoch).as_nanos();
        u64::try_from(since / self.bucket_nanos).unwrap_or(u64::MAX)
    }

    fn count(&self, e: &mut Entry, now: Instant, failed: bool) {
        let slot = self.slot(now);
        let b = &mut e.buckets[(slot % BUCKETS as u64) as usize];
        if b.slot != slot {
            *b = Bucket {
                slot,
                requests: 0,
                failures: 0,
            };
        }
        b.requests = b.requests.saturating_add(1);
        if failed {
            b.failures = b.failures.saturating_add(1);
        }
    }

    /// (requests, failures) in the window ending now.
    fn window(&self, e: &Entry, now: Instant) -> (u64, u64) {
        let slot = self.slot(now);
        e.buckets
            .iter()
            .filter(|b| b.slot <= slot && b.slot + (BUCKETS as u64) > slot)
            .fold((0, 0), |(r, f), b| {
                (r + u64::from(b.requests), f + u64::from(b.failures))
            })
    }

    /// The peak EWMA at `now`: the stored peak, decayed towards the plain EWMA with time constant `peak_decay`.
    fn peak_at(&self, e: &Entry, now: Instant) -> Option<f64> {
        let peak = e.peak_ms?;
        let Some(ewma) = e.ewma_ms else {
            // Only failures so far: nothing to decay towards.
            return Some(peak);
        };
        if peak <= ewma {
            return Some(ewma);
        }
        let tau = self.cfg.peak_decay.as_secs_f64();
        let dt = now.saturating_duration_since(e.peak_at).as_secs_f64();
        let keep = if tau > 0.0 { (-dt / tau).exp() } else { 0.0 };
        Some(ewma + (peak - ewma) * keep)
    }
}

/// Power of two choices over the available targets by peak-EWMA latency: two distinct random candidates, the one
/// with the lower peak EWMA wins; when either latency is unknown or they are equal, the higher
/// [`HealthRegistry::weight`] wins (then the first draw). `None` when no candidate is available.
pub fn p2c<'a, R: Rng + ?Sized>(
    reg: &HealthRegistry,
    candidates: &'a [TargetKey],
    rng: &mut R,
) -> Option<&'a TargetKey> {
    let available: Vec<&TargetKey> = candidates.iter().filter(|k| reg.is_available(k)).collect();
    match available.len() {
        0 => None,
        1 => Some(available[0]),
        n => {
            let i = rng.random_range(0..n);
            let mut j = rng.random_range(0..n - 1);
            if j >= i {
                j += 1;
            }
            let (a, b) = (available[i], available[j]);
            let by_latency = match (reg.peak_ewma_ms(a), reg.peak_ewma_ms(b)) {
                (Some(la), Some(lb)) if la < lb => Some(a),
                (Some(la), Some(lb)) if lb < la => Some(b),
                _ => None,
            };
            by_latency.or_else(|| {
                if reg.weight(b) > reg.weight(a) {
                    Some(b)
                } else {
                    Some(a)
                }
            })
        }
    }
}

/// Weighted random pick: each candidate's configured weight times its [`HealthRegistry::weight`], excluding the
/// indices in `skip` (targets already tried). `None` when every remaining weight is 0. Negative or non-finite
/// configured weights count as 0.
pub fn weighted_pick<R: Rng + ?Sized>(
    reg: &HealthRegistry,
    candidates: &[(TargetKey, f64)],
    skip: &[usize],
    rng: &mut R,
) -> Option<usize> {
    let weights: Vec<f64> = candidates
        .iter()
        .enumerate()
        .map(|(i, (k, w))| {
            if skip.contains(&i) || !w.is_finite() || *w <= 0.0 {
                0.0
            } else {
                w * reg.weight(k)
            }
        })
        .collect();
    let total: f64 = weights.iter().sum();
    if !(total.is_finite() && total > 0.0) {
        return None;
    }
    let mut x = rng.random_range(0.0..total);
    let mut last = None;
    for (i, w) in weights.iter().enumerate() {
        if *w <= 0.0 {
            continue;
        }
        if x < *w {
            return Some(i);
        }
        x -= w;
        last = Some(i);
    }
    // Rounding left `x` just past the last bucket.
    last
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;
    use tokio::time::advance;

    fn key(p: &str) -> TargetKey {
        TargetKey::new(p, "m")
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn fail_n(reg: &HealthRegistry, k: &TargetKey, n: u32) {
        for _ in 0..n {
            reg.record_failure(k, FailureKind::ServerError, ms(10));
        }
    }

    #[test]
    fn registry_is_send_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<HealthRegistry>();
    }

    #[tokio::test(start_paused = true)]
    async fn five_consecutive_failures_eject_for_30s_then_60s() {
        let reg = HealthRegistry::default();
        let k = key("a");
        fail_n(&reg, &k, 4);
        assert_eq!(reg.admit(&k), Admission::Open);
        let t0 = Instant::now();
        fail_n(&reg, &k, 1);
        assert_eq!(
            reg.admit(&k),
            Admission::Ejected {
                until: t0 + Duration::from_secs(30)
            }
        );
        assert!(!reg.is_available(&k));
        assert_eq!(reg.weight(&k), 0.0);

        advance(Duration::from_secs(29)).await;
        assert!(matches!(reg.admit(&k), Admission::Ejected { .. }));
        advance(Duration::from_secs(1)).await;
        assert_eq!(reg.admit(&k), Admission::Probe);
        reg.record_success(&k, ms(10));
        assert_eq!(reg.admit(&k), Admission::Open);

        // Ejected again soon after recovering: the ejection doubles.
        advance(Duration::from_secs(5)).await;
        let t1 = Instant::now();
        fail_n(&reg, &k, 5);
        assert_eq!(
            reg.admit(&k),
            Admission::Ejected {
                until: t1 + Duration::from_secs(60)
            }
        );
        let snap = reg.snapshot();
        assert_eq!(snap[0].state, HealthState::Ejected);
        assert_eq!(snap[0].ejections, 2);
        assert_eq!(snap[0].until_ms, Some(60_000));
    }

    #[tokio::test(start_paused = true)]
    async fn success_resets_consecutive_failures() {
        let reg = HealthRegistry::default();
        let k = key("a");
        for _ in 0..3 {
            fail_n(&reg, &k, 4);
            reg.record_success(&k, ms(10));
        }
        assert_eq!(reg.admit(&k), Admission::Open);
        assert_eq!(reg.snapshot()[0].consecutive_failures, 0);
        assert_eq!(reg.snapshot()[0].ejections, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn half_open_admits_exactly_one_probe() {
        let reg = HealthRegistry::default();
        let k = key("a");
        fail_n(&reg, &k, 5);
        advance(Duration::from_secs(30)).await;
        assert!(reg.is_available(&k));
        assert_eq!(reg.admit(&k), Admission::Probe);
        let probe_at = Instant::now();
        for _ in 0..3 {
            assert_eq!(
                reg.admit(&k),
                Admission::Ejected {
                    until: probe_at + Duration::from_secs(60)
                }
            );
        }
        assert!(!reg.is_available(&k));
        assert_eq!(reg.snapshot()[0].state, HealthState::Probing);
        reg.record_success(&k, ms(10));
        assert_eq!(reg.admit(&k), Admission::Open);
        assert_eq!(reg.admit(&k), Admission::Open);
        assert_eq!(reg.snapshot()[0].state, HealthState::Healthy);
    }

    #[tokio::test(start_paused = true)]
    async fn failed_probe_re_ejects_with_the_longer_time() {
        let reg = HealthRegistry::default();
        let k = key("a");
        fail_n(&reg, &k, 5);
        advance(Duration::from_secs(30)).await;
        assert_eq!(reg.admit(&k), Admission::Probe);
        let t = Instant::now();
        reg.record_failure(&k, FailureKind::Timeout, Duration::from_secs(5));
        assert_eq!(
            reg.admit(&k),
            Admission::Ejected {
                until: t + Duration::from_secs(60)
            }
        );
        advance(Duration::from_secs(60)).await;
        assert_eq!(reg.admit(&k), Admission::Probe);
        let t = Instant::now();
        reg.record_failure(&k, FailureKind::Connect, ms(1));
        assert_eq!(
            reg.admit(&k),
            Admission::Ejected {
                until: t + Duration::from_secs(120)
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn ejection_time_is_capped() {
        let cfg = HealthConfig {
            max_ejection: Duration::from_secs(100),
            ..HealthConfig::default()
        };
        let reg = HealthRegistry::new(cfg);
        let k = key("a");
        fail_n(&reg, &k, 5);
        let mut last = Duration::ZERO;
        for _ in 0..6 {
            let Admission::Ejected { until } = reg.admit(&k) else {
                panic!("expected ejected");
            };
            last = until - Instant::now();
            advance(last).await;
            assert_eq!(reg.admit(&k), Admission::Probe);
            reg.record_failure(&k, FailureKind::Overloaded, ms(1));
        }
        assert_eq!(last, Duration::from_secs(100));
    }

    #[tokio::test(start_paused = true)]
    async fn ejection_level_is_forgiven_after_staying_healthy() {
        let reg = HealthRegistry::default();
        let k = key("a");
        fail_n(&reg, &k, 5); // 30 s
        advance(Duration::from_secs(30)).await;
        assert_eq!(reg.admit(&k), Admission::Probe);
        reg.record_success(&k, ms(10));
        // Healthy for two base ejection times: back to the base time.
        advance(Duration::from_secs(60)).await;
        let t = Instant::now();
        fail_n(&reg, &k, 5);
        assert_eq!(
            reg.admit(&k),
            Admission::Ejected {
                until: t + Duration::from_secs(30)
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn failures_during_an_ejection_do_not_extend_it() {
        let reg = HealthRegistry::default();
        let k = key("a");
        let t = Instant::now();
        fail_n(&reg, &k, 5);
        advance(Duration::from_secs(10)).await;
        fail_n(&reg, &k, 20);
        assert_eq!(
            reg.admit(&k),
            Admission::Ejected {
                until: t + Duration::from_secs(30)
            }
        );
        assert_eq!(reg.snapshot()[0].ejections, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn unreported_probe_frees_its_slot_after_the_probe_timeout() {
        let reg = HealthRegistry::default();
        let k = key("a");
        fail_n(&reg, &k, 5);
        advance(Duration::from_secs(30)).await;
        assert_eq!(reg.admit(&k), Admission::Probe);
        advance(Duration::from_secs(59)).await;
        assert!(matches!(reg.admit(&k), Admission::Ejected { .. }));
        advance(Duration::from_secs(1)).await;
        assert_eq!(reg.admit(&k), Admission::Probe);
        // cancel_probe frees it at once.
        reg.cancel_probe(&k);
        assert_eq!(reg.admit(&k), Admission::Probe);
        assert!(matches!(reg.admit(&k), Admission::Ejected { .. }));
    }

    #[tokio::test(start_paused = true)]
    async fn cool_down_blocks_until_retry_after_then_reopens() {
        let reg = HealthRegistry::default();
        let k = key("a");
        let other = key("b");
        let t = Instant::now();
        reg.cool_down(&k, Duration::from_secs(2));
        assert_eq!(
            reg.admit(&k),
            Admission::CoolingDown {
                until: t + Duration::from_secs(2)
            }
        );
        assert!(!reg.is_available(&k));
        assert_eq!(reg.weight(&k), 0.0);
        assert_eq!(reg.admit(&other), Admission::Open);
        // A shorter Retry-After does not shorten the running cool-down.
        reg.cool_down(&k, Duration::from_secs(1));
        advance(ms(1999)).await;
        assert!(matches!(reg.admit(&k), Admission::CoolingDown { .. }));
        assert_eq!(reg.snapshot()[0].state, HealthState::Cooling);
        assert_eq!(reg.snapshot()[0].until_ms, Some(1));
        advance(ms(1)).await;
        assert_eq!(reg.admit(&k), Admission::Open);
        assert!(reg.is_available(&k));
        assert_eq!(reg.weight(&k), 1.0);
    }

    #[tokio::test(start_paused = true)]
    async fn cool_down_is_capped() {
        let reg = HealthRegistry::default();
        let k = key("a");
        let t = Instant::now();
        reg.cool_down(&k, Duration::from_secs(3600));
        assert_eq!(
            reg.admit(&k),
            Admission::CoolingDown {
                until: t + Duration::from_secs(60)
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn cooling_and_ejected_report_the_later_end() {
        let reg = HealthRegistry::default();
        let k = key("a");
        let t = Instant::now();
        fail_n(&reg, &k, 5); // ejected 30 s
        reg.cool_down(&k, Duration::from_secs(45));
        assert_eq!(
            reg.admit(&k),
            Admission::CoolingDown {
                until: t + Duration::from_secs(45)
            }
        );
        // After the cool-down the ejection has expired too: half-open.
        advance(Duration::from_secs(45)).await;
        assert_eq!(reg.admit(&k), Admission::Probe);
    }

    #[tokio::test(start_paused = true)]
    async fn weights_reflect_the_error_rate() {
        let reg = HealthRegistry::default();
        let k = key("a");
        assert_eq!(reg.weight(&k), 1.0, "unknown target");
        // Below min_requests the rate does not count.
        reg.record_failure(&k, FailureKind::ServerError, ms(1));
        assert_eq!(reg.weight(&k), 1.0);
        // 1 failure + 3 successes, repeated: 25 % errors, never 5 in a row.
        reg.record_success(&k, ms(1));
        reg.record_success(&k, ms(1));
        reg.record_success(&k, ms(1));
        for _ in 0..4 {
            reg.record_failure(&k, FailureKind::ServerError, ms(1));
            for _ in 0..3 {
                reg.record_success(&k, ms(1));
            }
        }
        assert!((reg.weight(&k) - 0.75).abs() < 1e-9, "{}", reg.weight(&k));
        let snap = &reg.snapshot()[0];
        assert_eq!((snap.requests, snap.failures), (20, 5));
        assert!((snap.error_rate - 0.25).abs() < 1e-9);

        // The window slides: 30 s later the old samples are gone.
        advance(Duration::from_secs(30)).await;
        assert_eq!(reg.weight(&k), 1.0);
        assert_eq!(reg.snapshot()[0].requests, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn weight_has_a_floor_for_flapping_targets() {
        let cfg = HealthConfig {
            consecutive_failures_to_eject: 1000,
            ..HealthConfig::default()
        };
        let reg = HealthRegistry::new(cfg);
        let k = key("a");
        fail_n(&reg, &k, 50);
        assert!(reg.is_available(&k));
        assert!((reg.weight(&k) - 0.05).abs() < 1e-12);
    }

    #[tokio::test(start_paused = true)]
    async fn window_buckets_expire_one_by_one() {
        let reg = HealthRegistry::default();
        let k = key("a");
        for _ in 0..10 {
            reg.record_success(&k, ms(1));
        }
        advance(Duration::from_secs(15)).await;
        for _ in 0..10 {
            reg.record_success(&k, ms(1));
        }
        assert_eq!(reg.snapshot()[0].requests, 20);
        advance(Duration::from_secs(15)).await;
        assert_eq!(reg.snapshot()[0].requests, 10);
        advance(Duration::from_secs(15)).await;
        assert_eq!(reg.snapshot()[0].requests, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn peak_ewma_jumps_up_and_decays_towards_the_ewma() {
        let reg = HealthRegistry::default();
        let k = key("a");
        assert_eq!(reg.peak_ewma_ms(&k), None);
        for _ in 0..50 {
            reg.record_success(&k, ms(100));
        }
        let p = reg.peak_ewma_ms(&k).unwrap_or_default();
        assert!((p - 100.0).abs() < 1e-6, "{p}");
        reg.record_success(&k, ms(1000));
        let ewma = 0.2 * 1000.0 + 0.8 * 100.0; // 280
        assert!((reg.peak_ewma_ms(&k).unwrap_or_default() - 1000.0).abs() < 1e-6);
        // One time constant later the excess over the EWMA is down to 1/e.
        advance(Duration::from_secs(10)).await;
        let expect = ewma + (1000.0 - ewma) * (-1.0f64).exp();
        let got = reg.peak_ewma_ms(&k).unwrap_or_default();
        assert!((got - expect).abs() < 1e-6, "{got} vs {expect}");
        advance(Duration::from_secs(300)).await;
        let got = reg.peak_ewma_ms(&k).unwrap_or_default();
        assert!((got - ewma).abs() < 1e-6);
        // A fast failure never makes the target look faster; a slow one raises the peak.
        reg.record_failure(&k, FailureKind::Connect, ms(1));
        assert!((reg.peak_ewma_ms(&k).unwrap_or_default() - ewma).abs() < 1e-6);
        reg.record_failure(&k, FailureKind::Timeout, ms(5000));
        assert!((reg.peak_ewma_ms(&k).unwrap_or_default() - 5000.0).abs() < 1e-6);
    }

    #[tokio::test(start_paused = true)]
    async fn p2c_prefers_the_lower_peak_ewma() {
        let reg = HealthRegistry::default();
        let (fast, mid, slow) = (key("fast"), key("mid"), key("slow"));
        reg.record_success(&fast, ms(100));
        reg.record_success(&mid, ms(300));
        reg.record_success(&slow, ms(900));
        let cands = [slow.clone(), mid.clone(), fast.clone()];
        let mut rng = SmallRng::seed_from_u64(7);
        let mut counts = HashMap::new();
        for _ in 0..3000 {
            let k = p2c(&reg, &cands, &mut rng).map(|k| k.provider.to_string());
            *counts.entry(k).or_insert(0u32) += 1;
        }
        let c = |p: &str| counts.get(&Some(p.to_owned())).copied().unwrap_or(0);
        assert_eq!(c("slow"), 0, "{counts:?}");
        // fast wins every pair it is in (2 of 3), mid the remaining one.
        assert!((1850..=2150).contains(&c("fast")), "{counts:?}");
        assert_eq!(c("fast") + c("mid"), 3000);

        // Two candidates: always the faster one.
        let two = [slow.clone(), fast.clone()];
        for _ in 0..100 {
            assert_eq!(p2c(&reg, &two, &mut rng), Some(&fast));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn p2c_skips_unavailable_and_uses_weight_without_latency() {
        let reg = HealthRegistry::default();
        let (a, b, c) = (key("a"), key("b"), key("c"));
        let mut rng = SmallRng::seed_from_u64(1);
        assert_eq!(p2c(&reg, &[], &mut rng), None);
        // a is fastest but cooling down.
        reg.record_success(&a, ms(1));
        reg.record_success(&b, ms(500));
        reg.cool_down(&a, Duration::from_secs(5));
        for _ in 0..50 {
            assert_eq!(p2c(&reg, &[a.clone(), b.clone()], &mut rng), Some(&b));
        }
        reg.cool_down(&b, Duration::from_secs(5));
        assert_eq!(p2c(&reg, &[a.clone(), b.clone()], &mut rng), None);

        // No latency known: the healthier weight wins.
        let cfg = HealthConfig {
            consecutive_failures_to_eject: 1000,
            ..HealthConfig::default()
        };
        let reg = HealthRegistry::new(cfg);
        fail_n(&reg, &c, 20); // weight 0.05, latency known only through failures
        let d = key("d");
        for _ in 0..50 {
            assert_eq!(p2c(&reg, &[c.clone(), d.clone()], &mut rng), Some(&d));
        }
    }

    /// Pearson chi-square statistic of observed counts against expected probabilities.
    fn chi_square(observed: &[u32], probs: &[f64]) -> f64 {
        let n: u32 = observed.iter().sum();
        observed
            .iter()
            .zip(probs)
            .map(|(&o, &p)| {
                let e = f64::from(n) * p;
                (f64::from(o) - e).powi(2) / e
            })
            .sum()
    }

    #[tokio::test(start_paused = true)]
    async fn weighted_pick_follows_configured_times_health_weight() {
        let cfg = HealthConfig {
            consecutive_failures_to_eject: 1000,
            ..HealthConfig::default()
        };
        let reg = HealthRegistry::new(cfg);
        let (a, b, c, d) = (key("a"), key("b"), key("c"), key("d"));
        // c: 50 % errors -> health weight 0.5; d: ejected-like (cooling) -> 0.
        for _ in 0..10 {
            reg.record_success(&c, ms(1));
            reg.record_failure(&c, FailureKind::ServerError, ms(1));
        }
        reg.cool_down(&d, Duration::from_secs(10));
        let cands = [(a, 1.0), (b, 3.0), (c, 2.0), (d, 5.0)];
        let mut rng = SmallRng::seed_from_u64(42);
        let mut counts = [0u32; 4];
        for _ in 0..10_000 {
            let i = weighted_pick(&reg, &cands, &[], &mut rng);
            counts[i.unwrap_or(3)] += 1;
        }
        assert_eq!(counts[3], 0, "{counts:?}");
        // Effective weights 1 : 3 : 1; chi-square with 2 degrees of freedom, p = 0.001 -> 13.8.
        let x2 = chi_square(&counts[..3], &[0.2, 0.6, 0.2]);
        assert!(x2 < 13.8, "chi2 {x2}, {counts:?}");

        // Skipping b leaves a and c at 1 : 1.
        let mut counts = [0u32; 4];
        for _ in 0..10_000 {
            let i = weighted_pick(&reg, &cands, &[1], &mut rng);
            counts[i.unwrap_or(1)] += 1;
        }
        assert_eq!(counts[1], 0);
        assert_eq!(counts[3], 0);
        let x2 = chi_square(&[counts[0], counts[2]], &[0.5, 0.5]);
        assert!(x2 < 10.8, "chi2 {x2}, {counts:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn weighted_pick_none_when_all_weights_are_zero() {
        let reg = HealthRegistry::default();
        let (a, b, c) = (key("a"), key("b"), key("c"));
        reg.cool_down(&b, Duration::from_secs(1));
        let cands = [(a, 1.0), (b, 1.0), (c, 0.0)];
        let mut rng = SmallRng::seed_from_u64(3);
        assert_eq!(weighted_pick(&reg, &cands, &[], &mut rng), Some(0));
        assert_eq!(weighted_pick(&reg, &cands, &[0], &mut rng), None);
        assert_eq!(weighted_pick(&reg, &[], &[], &mut rng), None);
        let bad = [(key("x"), f64::NAN), (key("y"), -1.0)];
        assert_eq!(weighted_pick(&reg, &bad, &[], &mut rng), None);
    }

    #[test]
    fn failure_kind_from_upstream_excludes_caller_errors() {
        assert_eq!(
            FailureKind::from_upstream(UpstreamErrorKind::from_status(503)),
            Some(FailureKind::Overloaded)
        );
        assert_eq!(
            FailureKind::from_upstream(UpstreamErrorKind::from_status(500)),
            Some(FailureKind::ServerError)
        );
        assert_eq!(
            FailureKind::from_upstream(UpstreamErrorKind::RateLimited),
            Some(FailureKind::RateLimited)
        );
        for s in [400, 401, 403, 404, 413, 422, 402] {
            assert_eq!(
                FailureKind::from_upstream(UpstreamErrorKind::from_status(s)),
                None
            );
        }
        assert_eq!(
            FailureKind::from_upstream(UpstreamErrorKind::QuotaExhausted),
            None
        );
    }

    #[tokio::test(start_paused = true)]
    async fn snapshot_serializes() {
        let reg = HealthRegistry::default();
        reg.record_success(&TargetKey::new("openai", "gpt-4o"), ms(120));
        let json = serde_json::to_value(reg.snapshot()).unwrap_or_default();
        assert_eq!(json[0]["provider"], "openai");
        assert_eq!(json[0]["model"], "gpt-4o");
        assert_eq!(json[0]["state"], "healthy");
        assert_eq!(json[0]["requests"], 1);
        assert_eq!(json[0]["ewma_ms"], 120.0);
    }

    #[tokio::test(start_paused = true)]
    async fn one_last_resort_attempt_at_a_time() {
        let reg = HealthRegistry::new(HealthConfig::default());
        let k = TargetKey::new("p", "m");
        let g = reg.claim_last_resort(&k).unwrap();
        assert!(reg.claim_last_resort(&k).is_none());
        drop(g);
        assert!(reg.claim_last_resort(&k).is_some());
    }
}

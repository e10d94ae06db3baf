//! The Redis side: the connection, the circuit breaker and one function per Lua script.
//!
//! Every call is bounded by [`crate::LimitsOptions::redis_timeout`] (a `tokio` timeout around
//! the whole script invocation, connection wait included), so a dead or black-holed Redis never
//! holds a request longer than that. After `breaker_threshold` consecutive failures the breaker
//! opens: for `breaker_cooldown` calls skip Redis at once (rate limits go local, budgets fail
//! closed), then the next call probes it again. Each time the breaker opens, the connection is
//! replaced by a fresh lazily-connecting one, so a connection that went silent without being
//! closed (a partition, a frozen proxy) is abandoned rather than waited on.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{LazyLock, RwLock};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, RedisError, Script, ScriptInvocation};

use crate::budget::{
    BudgetScope, FinalKind, FinalizeMode, Reservation, ReserveOutcome, ReservedScope, SeedRequest,
    StatusOutcome,
};
use crate::rate::{Params, RateCheck};

macro_rules! budget_script {
    ($file:literal) => {
        concat!(
            include_str!("lua/budget_prelude.lua"),
            "\n",
            include_str!($file)
        )
    };
}

pub(crate) static GCRA_CHECK: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/gcra_check.lua")));
pub(crate) static GCRA_ADJUST: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/gcra_adjust.lua")));
pub(crate) static RESERVE: LazyLock<Script> =
    LazyLock::new(|| Script::new(budget_script!("lua/budget_reserve.lua")));
pub(crate) static FINALIZE: LazyLock<Script> =
    LazyLock::new(|| Script::new(budget_script!("lua/budget_finalize.lua")));
pub(crate) static STATUS: LazyLock<Script> =
    LazyLock::new(|| Script::new(budget_script!("lua/budget_status.lua")));
pub(crate) static SEED: LazyLock<Script> =
    LazyLock::new(|| Script::new(budget_script!("lua/budget_seed.lua")));
pub(crate) static LEASE_FINALIZE: LazyLock<Script> =
    LazyLock::new(|| Script::new(budget_script!("lua/budget_lease_finalize.lua")));
pub(crate) static LEASE_CHECK: LazyLock<Script> =
    LazyLock::new(|| Script::new(budget_script!("lua/budget_lease_check.lua")));

/// The Lua prelude alone, for tests that evaluate its functions.
#[cfg(test)]
pub(crate) const BUDGET_PRELUDE: &str = include_str!("lua/budget_prelude.lua");

/// Why a Redis call did not answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CallError {
    #[error("circuit open after repeated Redis failures")]
    CircuitOpen,
    #[error("no answer from Redis within {0:?}")]
    Timeout(Duration),
    #[error("redis error: {0}")]
    Redis(#[from] RedisError),
    #[error("unexpected script reply: {0}")]
    Protocol(String),
}

impl CallError {
    /// A metric label.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            Self::CircuitOpen => "circuit_open",
            Self::Timeout(_) => "timeout",
            Self::Redis(_) => "error",
            Self::Protocol(_) => "protocol",
        }
    }
}

/// Consecutive-failure circuit breaker.
#[derive(Debug)]
struct Breaker {
    origin: Instant,
    failures: AtomicU32,
    /// Milliseconds since `origin` until which the breaker is open.
    open_until_ms: AtomicU64,
    threshold: u32,
    cooldown: Duration,
}

impl Breaker {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn is_open(&self) -> bool {
        self.now_ms() < self.open_until_ms.load(Ordering::Acquire)
    }

    fn on_success(&self) {
        self.failures.store(0, Ordering::Release);
    }

    /// Records a failure; true when this failure opened the breaker.
    fn on_failure(&self) -> bool {
        let n = self
            .failures
            .fetch_add(1, Ordering::AcqRel)
            .saturating_add(1);
        if n < self.threshold.max(1) {
            return false;
        }
        let now = self.now_ms();
        let prev = self.open_until_ms.load(Ordering::Acquire);
        if prev > now {
            return false;
        }
        let until = now.saturating_add(u64::try_from(self.cooldown.as_millis()).unwrap_or(0));
        self.open_until_ms
            .compare_exchange(
                prev,
                until.max(now + 1),
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
    }
}

/// Settings the store needs from [`crate::LimitsOptions`].
#[derive(Debug, Clone)]
pub(crate) struct StoreSettings {
    pub prefix: String,
    pub timeout: Duration,
    pub connect_timeout: Duration,
    pub breaker_threshold: u32,
    pub breaker_cooldown: Duration,
}

pub(crate) struct RedisStore {
    client: Client,
    config: ConnectionManagerConfig,
    conn: RwLock<ConnectionManager>,
    breaker: Breaker,
    settings: StoreSettings,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the URL: it may hold a password.
        f.debug_struct("RedisStore")
            .field("prefix", &self.settings.prefix)
            .field("timeout", &self.settings.timeout)
            .finish_non_exhaustive()
    }
}

fn manager_config(s: &StoreSettings) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(s.connect_timeout))
        .set_response_timeout(Some(s.timeout))
        .set_number_of_retries(2)
        .set_min_delay(Duration::from_millis(20))
        .set_max_delay(Duration::from_millis(500))
}

/// Whether an error says Redis is unreachable (as opposed to a reply it gave).
fn is_availability_error(e: &RedisError) -> bool {
    e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal()
}

impl RedisStore {
    /// Connects now; the error when Redis does not answer within `connect_timeout`.
    pub(crate) async fn connect(client: Client, settings: StoreSettings) -> Result<Self, String> {
        let config = manager_config(&settings);
        let conn = tokio::time::timeout(
            settings.connect_timeout,
            ConnectionManager::new_with_config(client.clone(), config.clone()),
        )
        .await
        .map_err(|_| format!("no connection within {:?}", settings.connect_timeout))?
        .map_err(|e| e.to_string())?;
        Ok(Self::with_conn(client, config, conn, settings))
    }

    /// Returns at once; the connection is made on first use and re-made as needed.
    pub(crate) fn lazy(client: Client, settings: StoreSettings) -> Result<Self, String> {
        let config = manager_config(&settings);
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), config.clone())
            .map_err(|e| e.to_string())?;
        Ok(Self::with_conn(client, config, conn, settings))
    }

    fn with_conn(
        client: Client,
        config: ConnectionManagerConfig,
        conn: ConnectionManager,
        settings: StoreSettings,
    ) -> Self {
        Self {
            client,
            config,
            conn: RwLock::new(conn),
            breaker: Breaker {
                origin: Instant::now(),
                failures: AtomicU32::new(0),
                open_until_ms: AtomicU64::new(0),
                threshold: settings.breaker_threshold,
                cooldown: settings.breaker_cooldown,
            },
            settings,
        }
    }

    pub(crate) fn prefix(&self) -> &str {
        &self.settings.prefix
    }

    fn connection(&self) -> ConnectionManager {
        self.conn
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Replaces the connection by a fresh one that connects on first use.
    fn renew_connection(&self) {
        match ConnectionManager::new_lazy_with_config(self.client.clone(), self.config.clone()) {
            Ok(fresh) => {
                *self
                    .conn
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = fresh;
            }
            Err(e) => tracing::warn!(error = %e, "could not renew the Redis connection"),
        }
    }

    fn failed(&self, what: &str, err: &CallError) {
        if self.breaker.on_failure() {
            tracing::warn!(
                op = what,
                error = %err,
                cooldown_ms = self.settings.breaker_cooldown.as_millis(),
                "Redis unreachable: rate limits fall back to this replica, budgets fail closed"
            );
            self.renew_connection();
        } else {
            tracing::debug!(op = what, error = %err, "Redis call failed");
        }
    }

    /// Runs one script invocation under the timeout and the breaker.
    async fn run(&self, what: &str, inv: &ScriptInvocation<'_>) -> Result<Vec<i64>, CallError> {
        if self.breaker.is_open() {
            return Err(CallError::CircuitOpen);
        }
        let mut conn = self.connection();
        let res = tokio::time::timeout(
            self.settings.timeout,
            inv.invoke_async::<Vec<i64>>(&mut conn),
        )
        .await;
        self.outcome(what, res)
    }

    /// Runs one plain command under the timeout and the breaker.
    async fn run_cmd<T: redis::FromRedisValue>(
        &self,
        what: &str,
        cmd: &redis::Cmd,
    ) -> Result<T, CallError> {
        if self.breaker.is_open() {
            return Err(CallError::CircuitOpen);
        }
        let mut conn = self.connection();
        let res =
            tokio::time::timeout(self.settings.timeout, cmd.query_async::<T>(&mut conn)).await;
        self.outcome(what, res)
    }

    /// A call's result, seen by the breaker.
    fn outcome<T>(
        &self,
        what: &str,
        res: Result<Result<T, RedisError>, tokio::time::error::Elapsed>,
    ) -> Result<T, CallError> {
        match res {
            Ok(Ok(v)) => {
                self.breaker.on_success();
                Ok(v)
            }
            Ok(Err(e)) => {
                let err = CallError::Redis(e);
                if matches!(&err, CallError::Redis(e) if is_availability_error(e)) {
                    self.failed(what, &err);
                } else {
                    tracing::error!(op = what, error = %err, "Redis call failed");
                }
                Err(err)
            }
            Err(_) => {
                let err = CallError::Timeout(self.settings.timeout);
                self.failed(what, &err);
                Err(err)
            }
        }
    }

    /// Short-lived memory shared by the replicas: sets `key` (under the prefix's `mem:`) to
    /// `value` for `ttl` and returns what it held before, in one command (`SET .. PX .. GET`);
    /// with no `value`, only reads it.
    pub(crate) async fn swap(
        &self,
        key: &str,
        value: Option<&[u8]>,
        ttl: Duration,
    ) -> Result<Option<Vec<u8>>, CallError> {
        let key = format!("{}mem:{key}", self.settings.prefix);
        let cmd = match value {
            Some(v) => {
                let mut c = redis::cmd("SET");
                c.arg(&key)
                    .arg(v)
                    .arg("PX")
                    .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1))
                    .arg("GET");
                c
            }
            None => {
                let mut c = redis::cmd("GET");
                c.arg(&key);
                c
            }
        };
        self.run_cmd("mem_swap", &cmd).await
    }

    pub(crate) fn rate_key(&self, key: &str) -> String {
        format!("{}rl:{key}", self.settings.prefix)
    }

    pub(crate) fn marker_key(&self, request_id: &str) -> String {
        format!("{}bg:done:{request_id}", self.settings.prefix)
    }

    /// `(allowed, now_us, tats)` of the GCRA script.
    pub(crate) async fn check_rates(
        &self,
        checks: &[RateCheck],
        params: &[Params],
    ) -> Result<(bool, u64, Vec<u64>), CallError> {
        let mut inv = GCRA_CHECK.prepare_invoke();
        for (c, p) in checks.iter().zip(params) {
            inv.key(self.rate_key(&c.key)).arg(p.inc_us).arg(p.dvt_us);
        }
        let out = self.run("rate_check", &inv).await?;
        if out.len() != checks.len() + 2 {
            return Err(CallError::Protocol(format!("gcra_check: {out:?}")));
        }
        let as_u64 = |v: i64| u64::try_from(v).unwrap_or(0);
        Ok((
            out[0] == 1,
            as_u64(out[1]),
            out[2..].iter().map(|v| as_u64(*v)).collect(),
        ))
    }

    pub(crate) async fn adjust_rate(&self, key: &str, span_us: i64) -> Result<(), CallError> {
        let mut inv = GCRA_ADJUST.prepare_invoke();
        inv.key(self.rate_key(key)).arg(span_us);
        self.run("rate_adjust", &inv).await.map(|_| ())
    }

    pub(crate) async fn reserve(
        &self,
        scopes: &[BudgetScope],
        request_id: &str,
        amount: i64,
        ttl_ms: u64,
        grace_s: u64,
        now_override_s: Option<i64>,
    ) -> Result<ReserveOutcome, CallError> {
        let mut inv = RESERVE.prepare_invoke();
        inv.key(self.marker_key(request_id))
            .arg(self.prefix())
            .arg(request_id)
            .arg(amount)
            .arg(ttl_ms)
            .arg(grace_s)
            .arg(now_override_s.map(|t| t.to_string()).unwrap_or_default())
            .arg(scopes.len());
        for s in scopes {
            inv.arg(&s.id).arg(s.period.as_str()).arg(s.limit_micros);
        }
        let out = self.run("budget_reserve", &inv).await?;
        parse_reserve(&out, scopes.len())
    }

    pub(crate) async fn seed(
        &self,
        scope: &BudgetScope,
        seed: &SeedRequest,
        spent: i64,
        grace_s: u64,
    ) -> Result<bool, CallError> {
        let mut inv = SEED.prepare_invoke();
        inv.arg(self.prefix())
            .arg(&scope.id)
            .arg(scope.period.as_str())
            .arg(seed.period_id)
            .arg(seed.end_unix_s.unwrap_or(-1))
            .arg(grace_s)
            .arg(spent);
        let out = self.run("budget_seed", &inv).await?;
        Ok(out.first() == Some(&1))
    }

    pub(crate) async fn finalize(
        &self,
        r: &Reservation,
        mode: FinalizeMode,
        marker_ttl_s: u64,
    ) -> Result<Option<FinalKind>, CallError> {
        let (mode_name, actual) = match mode {
            FinalizeMode::Settle { actual_micros } => ("settle", actual_micros),
            FinalizeMode::Release => ("release", 0),
        };
        let mut inv = FINALIZE.prepare_invoke();
        inv.key(self.marker_key(&r.request_id))
            .arg(self.prefix())
            .arg(&r.request_id)
            .arg(mode_name)
            .arg(actual)
            .arg(marker_ttl_s.max(1))
            .arg(r.scopes.len());
        for s in &r.scopes {
            inv.arg(&s.scope_id).arg(s.period.as_str()).arg(s.period_id);
        }
        let out = self.run("budget_finalize", &inv).await?;
        match out.as_slice() {
            [0, _] => Ok(None),
            [3, k] => Ok(Some(final_kind(*k))),
            other => Err(CallError::Protocol(format!("budget_finalize: {other:?}"))),
        }
    }

    /// Settles or releases a request admitted against `lease_id`: `(already finalized, lost)`.
    pub(crate) async fn lease_finalize(
        &self,
        r: &Reservation,
        lease_id: &str,
        mode: FinalizeMode,
        marker_ttl_s: u64,
    ) -> Result<(Option<FinalKind>, bool), CallError> {
        let (mode_name, actual) = match mode {
            FinalizeMode::Settle { actual_micros } => ("settle", actual_micros),
            FinalizeMode::Release => ("release", 0),
        };
        let mut inv = LEASE_FINALIZE.prepare_invoke();
        inv.key(self.marker_key(&r.request_id))
            .arg(self.prefix())
            .arg(&r.request_id)
            .arg(lease_id)
            .arg(mode_name)
            .arg(actual)
            .arg(r.amount_micros)
            .arg(marker_ttl_s.max(1))
            .arg(r.scopes.len());
        for s in &r.scopes {
            inv.arg(&s.scope_id).arg(s.period.as_str()).arg(s.period_id);
        }
        let out = self.run("budget_lease_finalize", &inv).await?;
        match out.as_slice() {
            [0, lost] => Ok((None, *lost == 1)),
            [3, k] => Ok((Some(final_kind(*k)), false)),
            other => Err(CallError::Protocol(format!(
                "budget_lease_finalize: {other:?}"
            ))),
        }
    }

    /// Whether the lease still holds its money in every scope.
    pub(crate) async fn lease_check(
        &self,
        lease_id: &str,
        scopes: &[ReservedScope],
    ) -> Result<bool, CallError> {
        let mut inv = LEASE_CHECK.prepare_invoke();
        inv.arg(self.prefix()).arg(lease_id).arg(scopes.len());
        for s in scopes {
            inv.arg(&s.scope_id).arg(s.period.as_str()).arg(s.period_id);
        }
        let out = self.run("budget_lease_check", &inv).await?;
        match out.as_slice() {
            [v] => Ok(*v == 1),
            other => Err(CallError::Protocol(format!(
                "budget_lease_check: {other:?}"
            ))),
        }
    }

    pub(crate) async fn status(
        &self,
        scope: &BudgetScope,
        now_override_s: Option<i64>,
    ) -> Result<StatusOutcome, CallError> {
        let mut inv = STATUS.prepare_invoke();
        inv.arg(self.prefix())
            .arg(&scope.id)
            .arg(scope.period.as_str())
            .arg(now_override_s.map(|t| t.to_string()).unwrap_or_default());
        let out = self.run("budget_status", &inv).await?;
        match out.as_slice() {
            [0, spent, reserved, _pid, start] => Ok(StatusOutcome::Status {
                spent: *spent,
                reserved: *reserved,
                start_unix_s: *start,
            }),
            [1, 1, pid, start, end] => Ok(StatusOutcome::NeedsSeed(SeedRequest {
                index: 0,
                period_id: *pid,
                start_unix_s: *start,
                end_unix_s: (*end >= 0).then_some(*end),
            })),
            other => Err(CallError::Protocol(format!("budget_status: {other:?}"))),
        }
    }

    /// A connection for the crate's own tests.
    #[cfg(test)]
    pub(crate) fn test_connection(&self) -> ConnectionManager {
        self.connection()
    }
}

fn final_kind(code: i64) -> FinalKind {
    if code == 2 {
        FinalKind::Released
    } else {
        FinalKind::Settled
    }
}

fn parse_reserve(out: &[i64], n: usize) -> Result<ReserveOutcome, CallError> {
    let bad = || CallError::Protocol(format!("budget_reserve: {out:?}"));
    let index = |i: i64| {
        usize::try_from(i)
            .ok()
            .and_then(|i| i.checked_sub(1))
            .filter(|i| *i < n)
    };
    match out.first() {
        Some(0) if out.len() == 2 + 3 * n => Ok(ReserveOutcome::Reserved(
            out[2..]
                .chunks_exact(3)
                .map(|c| (c[0], c[1], c[2]))
                .collect(),
        )),
        Some(1) if out.len() > 1 && (out.len() - 1).is_multiple_of(4) => {
            let seeds = out[1..]
                .chunks_exact(4)
                .map(|c| {
                    Ok(SeedRequest {
                        index: index(c[0]).ok_or_else(bad)?,
                        period_id: c[1],
                        start_unix_s: c[2],
                        end_unix_s: (c[3] >= 0).then_some(c[3]),
                    })
                })
                .collect::<Result<Vec<_>, CallError>>()?;
            Ok(ReserveOutcome::NeedsSeed(seeds))
        }
        Some(2) if out.len() == 3 => Ok(ReserveOutcome::Denied {
            index: index(out[1]).ok_or_else(bad)?,
            remaining: out[2],
        }),
        Some(3) if out.len() == 2 => Ok(ReserveOutcome::Finalized(final_kind(out[1]))),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn breaker_opens_after_threshold_and_only_once_per_cooldown() {
        let b = Breaker {
            origin: Instant::now(),
            failures: AtomicU32::new(0),
            open_until_ms: AtomicU64::new(0),
            threshold: 3,
            cooldown: Duration::from_secs(3600),
        };
        assert!(!b.on_failure());
        assert!(!b.on_failure());
        assert!(!b.is_open());
        assert!(b.on_failure(), "third failure opens");
        assert!(b.is_open());
        assert!(!b.on_failure(), "already open");
        b.on_success();
        assert!(b.is_open(), "a success does not shorten the cooldown");
    }

    #[test]
    fn reserve_replies_are_parsed_strictly() {
        assert_eq!(
            parse_reserve(&[0, 5, 1, 2, 3], 1).ok(),
            Some(ReserveOutcome::Reserved(vec![(1, 2, 3)]))
        );
        assert_eq!(
            parse_reserve(&[1, 2, 10, 20, -1], 2).ok(),
            Some(ReserveOutcome::NeedsSeed(vec![SeedRequest {
                index: 1,
                period_id: 10,
                start_unix_s: 20,
                end_unix_s: None
            }]))
        );
        assert_eq!(
            parse_reserve(&[2, 1, 7], 1).ok(),
            Some(ReserveOutcome::Denied {
                index: 0,
                remaining: 7
            })
        );
        assert!(parse_reserve(&[2, 3, 7], 2).is_err(), "index out of range");
        assert!(parse_reserve(&[0, 5, 1, 2], 1).is_err());
        assert!(parse_reserve(&[], 1).is_err());
    }
}

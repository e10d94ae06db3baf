//! Budget types: scopes, reservations, the durable spend source and the errors.
//!
//! A budget is a limit in micro-USD on what a *scope* (an API key, a workspace…) may spend in a
//! *period* ([`Period`]). A request first [reserves](crate::Limits::reserve) its worst-case cost
//! in every scope it belongs to, then [settles](crate::Limits::settle) the actual cost or
//! [releases](crate::Limits::release) the reservation. Reservations that are never finalized
//! expire ([`crate::LimitsOptions::reservation_ttl`]).

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::pin::Pin;

use crate::period::Period;
use crate::rate::Backend;

/// One budget a request is subject to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BudgetScope {
    /// The scope's identity, e.g. `key:<key id>` or `ws:<workspace id>`. It becomes part of a
    /// Redis key: pass ids, never secrets.
    pub id: String,
    /// The accounting period.
    pub period: Period,
    /// The most the scope may spend in one period, in micro-USD.
    pub limit_micros: i64,
}

impl BudgetScope {
    /// A scope of `id` limited to `limit_micros` per `period`.
    #[must_use]
    pub fn new(id: impl Into<String>, period: Period, limit_micros: i64) -> Self {
        Self {
            id: id.into(),
            period,
            limit_micros,
        }
    }
}

/// The part of a [`Reservation`] held in one scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReservedScope {
    /// [`BudgetScope::id`].
    pub scope_id: String,
    /// [`BudgetScope::period`].
    pub period: Period,
    /// The period the reservation was made in ([`crate::PeriodBounds::id`]); the settlement is
    /// charged to that period even if it ends before the request does.
    pub period_id: i64,
    /// First second of that period, unix seconds.
    pub period_start_unix_s: i64,
    /// What the scope had left right after this reservation, in micro-USD.
    pub remaining_micros: i64,
}

/// Money set aside for one request in every scope it belongs to.
///
/// Hand it back to [`crate::Limits::settle`] or [`crate::Limits::release`]; if neither happens
/// it expires after [`crate::LimitsOptions::reservation_ttl`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub(crate) request_id: String,
    pub(crate) amount_micros: i64,
    pub(crate) backend: Backend,
    pub(crate) scopes: Vec<ReservedScope>,
    /// Set when the reservation was taken from this replica's budget lease (decided in
    /// process, no Redis call): the lease it came from.
    pub(crate) lease: Option<LeaseRef>,
}

/// The lease a [`Reservation`] was taken from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LeaseRef {
    /// The scope set's key in the replica's lease table.
    pub set: String,
    /// The lease's request id in Redis (`lease:{replica}:{seq}`).
    pub id: String,
}

impl Reservation {
    /// The request id the reservation was made under (the idempotency key of its settlement).
    #[must_use]
    pub fn request_id(&self) -> &str {
        &self.request_id
    }

    /// The amount reserved in each scope, in micro-USD.
    #[must_use]
    pub fn amount_micros(&self) -> i64 {
        self.amount_micros
    }

    /// Where the reservation is held.
    #[must_use]
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// One entry per scope, in the order the scopes were given (duplicates merged).
    #[must_use]
    pub fn scopes(&self) -> &[ReservedScope] {
        &self.scopes
    }

    /// The id of the budget lease this reservation was taken from (decided in process, from
    /// money this replica already holds in Redis), or `None` for a reservation made in the
    /// store itself.
    #[must_use]
    pub fn lease_id(&self) -> Option<&str> {
        self.lease.as_ref().map(|l| l.id.as_str())
    }

    /// The smallest amount any scope had left after this reservation (for a response header).
    /// For a leased reservation: what Redis reported when the lease was taken, plus what the
    /// lease still holds unused (this replica's view).
    #[must_use]
    pub fn min_remaining_micros(&self) -> Option<i64> {
        self.scopes.iter().map(|s| s.remaining_micros).min()
    }
}

/// What [`crate::Limits::settle`] or [`crate::Limits::release`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finalized {
    /// This call settled or released the request.
    Applied,
    /// The request had already been settled: a replay, nothing changed.
    AlreadySettled,
    /// The request had already been released: nothing changed.
    AlreadyReleased,
}

/// A scope's spend in its current period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetStatus {
    /// Settled spend in micro-USD.
    pub spent_micros: i64,
    /// Held by unexpired reservations, in micro-USD.
    pub reserved_micros: i64,
    /// `limit − spent − reserved`, at least 0.
    pub remaining_micros: i64,
    /// First second of the current period, unix seconds.
    pub period_start_unix_s: i64,
    /// Where the counters are held.
    pub backend: Backend,
}

/// The error a [`SpendSource`] returns.
pub type SpendSourceError = Box<dyn StdError + Send + Sync>;

/// The future a [`SpendSource`] returns.
pub type SpendFuture<'a> = Pin<Box<dyn Future<Output = Result<i64, SpendSourceError>> + Send + 'a>>;

/// The durable ledger, read when a period's counter is missing from the store (first use, Redis
/// restarted or flushed, counter evicted).
///
/// Redis is a cache of spend, not its system of record: a missing counter is never taken as
/// zero. The crate asks the source for the spend of the scope since the start of the current
/// period, seeds the counter with it (only if no other replica did first) and retries.
pub trait SpendSource: Send + Sync {
    /// Micro-USD spent by `scope` from `period_start_unix_s` (inclusive) until now, according to
    /// the durable ledger.
    fn spent_since<'a>(
        &'a self,
        scope: &'a BudgetScope,
        period_start_unix_s: i64,
    ) -> SpendFuture<'a>;
}

/// A [`SpendSource`] from a closure `(scope, period_start_unix_s) -> future`, for tests and
/// simple embeddings.
pub struct FnSpendSource<F>(pub F);

impl<F> fmt::Debug for FnSpendSource<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FnSpendSource")
    }
}

impl<F, Fut> SpendSource for FnSpendSource<F>
where
    F: Fn(BudgetScope, i64) -> Fut + Send + Sync,
    Fut: Future<Output = Result<i64, SpendSourceError>> + Send + 'static,
{
    fn spent_since<'a>(
        &'a self,
        scope: &'a BudgetScope,
        period_start_unix_s: i64,
    ) -> SpendFuture<'a> {
        Box::pin((self.0)(scope.clone(), period_start_unix_s))
    }
}

/// Why a budget operation did not go through.
#[derive(Debug, thiserror::Error)]
pub enum BudgetError {
    /// A scope does not have `amount` left: nothing was reserved anywhere.
    #[error("budget {scope_id} ({period}) exceeded: {remaining_micros} micro-USD left")]
    Exceeded {
        /// The first scope (in the order given) that lacks room.
        scope_id: String,
        /// Its period.
        period: Period,
        /// Its limit in micro-USD.
        limit_micros: i64,
        /// What it has left (`limit − spent − reserved`, at least 0).
        remaining_micros: i64,
    },
    /// The budget store cannot be reached (Redis down or slower than the timeout). Budgets
    /// fail closed: the gateway answers 503. A settlement may be retried later: it is
    /// idempotent per request id. A reservation that timed out may still have been made in
    /// Redis (the answer was lost): its hold expires after the reservation ttl, and a retry
    /// under the same request id replaces it rather than adding to it.
    #[error("budget store unavailable: {reason}")]
    Unavailable {
        /// What went wrong, for logs.
        reason: String,
    },
    /// The [`SpendSource`] could not tell the spend needed to seed a missing counter.
    #[error("spend of budget {scope_id} could not be read from the ledger")]
    Source {
        /// The scope whose counter is missing.
        scope_id: String,
        /// The source's error.
        #[source]
        source: SpendSourceError,
    },
    /// The request id was already settled or released: it cannot reserve again.
    #[error("request {request_id} was already finalized")]
    AlreadyFinalized {
        /// The request id.
        request_id: String,
    },
    /// The arguments cannot be right (negative amount, empty request id…).
    #[error("invalid budget call: {0}")]
    Invalid(String),
}

/// How a finalized request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FinalKind {
    Settled,
    Released,
}

impl FinalKind {
    pub(crate) fn as_finalized(self) -> Finalized {
        match self {
            Self::Settled => Finalized::AlreadySettled,
            Self::Released => Finalized::AlreadyReleased,
        }
    }
}

/// A counter the store needs seeded before it can answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SeedRequest {
    /// Index of the scope in the call's scope list.
    pub index: usize,
    pub period_id: i64,
    pub start_unix_s: i64,
    pub end_unix_s: Option<i64>,
}

/// One reservation attempt's answer, from either store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ReserveOutcome {
    /// Reserved; per scope `(period id, period start, remaining after)`.
    Reserved(Vec<(i64, i64, i64)>),
    NeedsSeed(Vec<SeedRequest>),
    Denied {
        index: usize,
        remaining: i64,
    },
    Finalized(FinalKind),
}

/// One status read's answer, from either store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StatusOutcome {
    Status {
        spent: i64,
        reserved: i64,
        start_unix_s: i64,
    },
    NeedsSeed(SeedRequest),
}

/// Settle or release.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FinalizeMode {
    Settle { actual_micros: i64 },
    Release,
}

//! The in-process budget store of `Limits::local_only`: the same semantics as the Redis scripts
//! (seeding, reservations with expiry, idempotent finalization), on the wall clock, under one
//! mutex.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, PoisonError};

use crate::budget::{
    BudgetScope, FinalKind, FinalizeMode, Reservation, ReserveOutcome, SeedRequest, StatusOutcome,
};
use crate::period::Period;

/// Reclaimed per scope and call at most, as in the Lua `reclaim`.
const RECLAIM_BATCH: usize = 100;
/// Every this many operations, counters of periods long over are dropped.
const SWEEP_EVERY: u64 = 1024;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct CounterKey {
    scope: String,
    period: Period,
    period_id: i64,
}

#[derive(Debug, Default)]
struct Counter {
    spent: i64,
    reserved: i64,
    /// request id -> (amount, expiry ms)
    amounts: HashMap<String, (i64, u64)>,
    /// (expiry ms, request id)
    by_expiry: BTreeSet<(u64, String)>,
    /// Unix ms after which the counter is dropped; `None` for lifetime.
    drop_after_ms: Option<u64>,
}

impl Counter {
    fn reclaim(&mut self, now_ms: u64) {
        for _ in 0..RECLAIM_BATCH {
            let Some(first) = self.by_expiry.first() else {
                return;
            };
            if first.0 > now_ms {
                return;
            }
            if let Some((_, rid)) = self.by_expiry.pop_first()
                && let Some((amount, _)) = self.amounts.remove(&rid)
            {
                self.reserved -= amount;
            }
        }
    }

    fn drop_reservation(&mut self, request_id: &str) {
        if let Some((amount, expiry)) = self.amounts.remove(request_id) {
            self.reserved -= amount;
            self.by_expiry.remove(&(expiry, request_id.to_owned()));
        }
    }
}

#[derive(Debug, Default)]
struct State {
    counters: HashMap<CounterKey, Counter>,
    finalized: HashMap<String, (FinalKind, u64)>,
    /// (expiry ms, request id) of the finalized markers.
    finalized_by_expiry: BTreeSet<(u64, String)>,
    ops: u64,
}

impl State {
    fn housekeeping(&mut self, now_ms: u64) {
        while let Some(first) = self.finalized_by_expiry.first() {
            if first.0 > now_ms {
                break;
            }
            if let Some((_, rid)) = self.finalized_by_expiry.pop_first() {
                self.finalized.remove(&rid);
            }
        }
        self.ops = self.ops.wrapping_add(1);
        if self.ops.is_multiple_of(SWEEP_EVERY) {
            self.counters
                .retain(|_, c| c.drop_after_ms.is_none_or(|at| at > now_ms));
        }
    }
}

fn key(scope: &BudgetScope, period_id: i64) -> CounterKey {
    CounterKey {
        scope: scope.id.clone(),
        period: scope.period,
        period_id,
    }
}

fn ms_of(unix_s: i64) -> u64 {
    u64::try_from(unix_s.saturating_mul(1000)).unwrap_or(0)
}

/// See the module docs.
#[derive(Debug, Default)]
pub(crate) struct LocalBudgets {
    state: Mutex<State>,
}

impl LocalBudgets {
    pub(crate) fn reserve(
        &self,
        scopes: &[BudgetScope],
        request_id: &str,
        amount: i64,
        now_ms: u64,
        ttl_ms: u64,
    ) -> ReserveOutcome {
        let now_s = i64::try_from(now_ms / 1000).unwrap_or(i64::MAX);
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.housekeeping(now_ms);
        if let Some((kind, _)) = state.finalized.get(request_id) {
            return ReserveOutcome::Finalized(*kind);
        }
        let bounds: Vec<_> = scopes.iter().map(|s| s.period.bounds_at(now_s)).collect();
        let seeds: Vec<SeedRequest> = scopes
            .iter()
            .zip(&bounds)
            .enumerate()
            .filter(|(_, (s, b))| !state.counters.contains_key(&key(s, b.id)))
            .map(|(index, (_, b))| SeedRequest {
                index,
                period_id: b.id,
                start_unix_s: b.start_unix_s,
                end_unix_s: b.end_unix_s,
            })
            .collect();
        if !seeds.is_empty() {
            return ReserveOutcome::NeedsSeed(seeds);
        }
        let mut remaining = Vec::with_capacity(scopes.len());
        for (index, (scope, b)) in scopes.iter().zip(&bounds).enumerate() {
            let Some(c) = state.counters.get_mut(&key(scope, b.id)) else {
                return ReserveOutcome::NeedsSeed(Vec::new());
            };
            c.reclaim(now_ms);
            let old = c.amounts.get(request_id).map_or(0, |(a, _)| *a);
            let committed = c.spent + c.reserved - old;
            if committed.saturating_add(amount) > scope.limit_micros {
                return ReserveOutcome::Denied {
                    index,
                    remaining: scope.limit_micros - committed,
                };
            }
            remaining.push((
                b.id,
                b.start_unix_s,
                scope.limit_micros - committed - amount,
            ));
        }
        let expiry = now_ms.saturating_add(ttl_ms);
        for (scope, b) in scopes.iter().zip(&bounds) {
            if let Some(c) = state.counters.get_mut(&key(scope, b.id)) {
                c.drop_reservation(request_id);
                c.amounts.insert(request_id.to_owned(), (amount, expiry));
                c.by_expiry.insert((expiry, request_id.to_owned()));
                c.reserved += amount;
            }
        }
        ReserveOutcome::Reserved(remaining)
    }

    /// Creates the counter with `spent` unless it exists; true when this call created it.
    pub(crate) fn seed(
        &self,
        scope: &BudgetScope,
        seed: &SeedRequest,
        spent: i64,
        grace_ms: u64,
    ) -> bool {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let k = key(scope, seed.period_id);
        if state.counters.contains_key(&k) {
            return false;
        }
        state.counters.insert(
            k,
            Counter {
                spent,
                drop_after_ms: seed.end_unix_s.map(|e| ms_of(e).saturating_add(grace_ms)),
                ..Counter::default()
            },
        );
        true
    }

    pub(crate) fn finalize(
        &self,
        reservation: &Reservation,
        mode: FinalizeMode,
        now_ms: u64,
        marker_ttl_ms: u64,
    ) -> Option<FinalKind> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.housekeeping(now_ms);
        let rid = reservation.request_id.as_str();
        if let Some((kind, _)) = state.finalized.get(rid) {
            return Some(*kind);
        }
        for s in &reservation.scopes {
            let k = CounterKey {
                scope: s.scope_id.clone(),
                period: s.period,
                period_id: s.period_id,
            };
            if let Some(c) = state.counters.get_mut(&k) {
                c.drop_reservation(rid);
                if let FinalizeMode::Settle { actual_micros } = mode {
                    c.spent += actual_micros;
                }
            }
        }
        let kind = match mode {
            FinalizeMode::Settle { .. } => FinalKind::Settled,
            FinalizeMode::Release => FinalKind::Released,
        };
        let expiry = now_ms.saturating_add(marker_ttl_ms);
        state.finalized.insert(rid.to_owned(), (kind, expiry));
        state.finalized_by_expiry.insert((expiry, rid.to_owned()));
        None
    }

    pub(crate) fn status(&self, scope: &BudgetScope, now_ms: u64) -> StatusOutcome {
        let now_s = i64::try_from(now_ms / 1000).unwrap_or(i64::MAX);
        let b = scope.period.bounds_at(now_s);
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.housekeeping(now_ms);
        match state.counters.get_mut(&key(scope, b.id)) {
            Some(c) => {
                c.reclaim(now_ms);
                StatusOutcome::Status {
                    spent: c.spent,
                    reserved: c.reserved,
                    start_unix_s: b.start_unix_s,
                }
            }
            None => StatusOutcome::NeedsSeed(SeedRequest {
                index: 0,
                period_id: b.id,
                start_unix_s: b.start_unix_s,
                end_unix_s: b.end_unix_s,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::ReservedScope;
    use crate::period::days_from_civil;
    use crate::rate::Backend;

    const DAY_MS: u64 = 86_400_000;

    fn seed_all(store: &LocalBudgets, scopes: &[BudgetScope], out: &ReserveOutcome, spent: i64) {
        let ReserveOutcome::NeedsSeed(seeds) = out else {
            panic!("expected a seed request, got {out:?}");
        };
        for s in seeds {
            assert!(store.seed(&scopes[s.index], s, spent, DAY_MS));
        }
    }

    fn reservation(scopes: &[BudgetScope], rid: &str, out: &ReserveOutcome) -> Reservation {
        let ReserveOutcome::Reserved(per_scope) = out else {
            panic!("expected a reservation, got {out:?}");
        };
        Reservation {
            request_id: rid.to_owned(),
            amount_micros: 0,
            backend: Backend::Local,
            scopes: scopes
                .iter()
                .zip(per_scope)
                .map(|(s, (pid, start, remaining))| ReservedScope {
                    scope_id: s.id.clone(),
                    period: s.period,
                    period_id: *pid,
                    period_start_unix_s: *start,
                    remaining_micros: *remaining,
                })
                .collect(),
            lease: None,
        }
    }

    #[test]
    fn seeds_then_reserves_and_reclaims_expired() {
        let store = LocalBudgets::default();
        let scopes = [BudgetScope::new("k", Period::Day, 1_000)];
        let now = 1_700_000_000_000;
        let out = store.reserve(&scopes, "r1", 300, now, 60_000);
        seed_all(&store, &scopes, &out, 600);
        assert_eq!(
            store.reserve(&scopes, "r1", 300, now, 60_000),
            ReserveOutcome::Reserved(vec![(
                1_700_000_000 / 86_400,
                1_700_000_000 / 86_400 * 86_400,
                100
            )])
        );
        assert_eq!(
            store.reserve(&scopes, "r2", 101, now, 60_000),
            ReserveOutcome::Denied {
                index: 0,
                remaining: 100
            }
        );
        // r1 expires at now + 60 s.
        assert!(matches!(
            store.reserve(&scopes, "r2", 101, now + 59_999, 60_000),
            ReserveOutcome::Denied { .. }
        ));
        assert!(matches!(
            store.reserve(&scopes, "r2", 400, now + 60_000, 60_000),
            ReserveOutcome::Reserved(_)
        ));
        assert_eq!(
            store.status(&scopes[0], now + 60_000),
            StatusOutcome::Status {
                spent: 600,
                reserved: 400,
                start_unix_s: 1_700_000_000 / 86_400 * 86_400
            }
        );
    }

    #[test]
    fn finalize_is_idempotent() {
        let store = LocalBudgets::default();
        let scopes = [
            BudgetScope::new("k", Period::Month, 1_000),
            BudgetScope::new("w", Period::Lifetime, 5_000),
        ];
        let now = 1_700_000_000_000;
        let out = store.reserve(&scopes, "r1", 500, now, 60_000);
        seed_all(&store, &scopes, &out, 0);
        let out = store.reserve(&scopes, "r1", 500, now, 60_000);
        let r = reservation(&scopes, "r1", &out);
        let settle = FinalizeMode::Settle { actual_micros: 200 };
        assert_eq!(store.finalize(&r, settle, now, DAY_MS), None);
        assert_eq!(
            store.finalize(&r, settle, now, DAY_MS),
            Some(FinalKind::Settled)
        );
        for s in &scopes {
            let StatusOutcome::Status {
                spent, reserved, ..
            } = store.status(s, now)
            else {
                panic!("seeded");
            };
            assert_eq!((spent, reserved), (200, 0));
        }
        assert_eq!(
            store.reserve(&scopes, "r1", 1, now, 60_000),
            ReserveOutcome::Finalized(FinalKind::Settled)
        );
        // The marker expires with its ttl.
        assert!(matches!(
            store.reserve(&scopes, "r1", 1, now + DAY_MS, 60_000),
            ReserveOutcome::Reserved(_)
        ));
    }

    #[test]
    fn a_new_month_needs_a_new_seed() {
        let store = LocalBudgets::default();
        let scopes = [BudgetScope::new("k", Period::Month, 1_000)];
        let march = ms_of(days_from_civil(2024, 3, 1) * 86_400);
        let out = store.reserve(&scopes, "a", 1, march - 1, 60_000);
        let ReserveOutcome::NeedsSeed(seeds) = &out else {
            panic!("{out:?}")
        };
        assert_eq!(seeds[0].start_unix_s, days_from_civil(2024, 2, 1) * 86_400);
        seed_all(&store, &scopes, &out, 0);
        assert!(matches!(
            store.reserve(&scopes, "a", 1, march - 1, 60_000),
            ReserveOutcome::Reserved(_)
        ));
        let out = store.reserve(&scopes, "b", 1, march, 60_000);
        let ReserveOutcome::NeedsSeed(seeds) = &out else {
            panic!("{out:?}")
        };
        assert_eq!(seeds[0].start_unix_s, march as i64 / 1000);
        assert_eq!(
            seeds[0].end_unix_s,
            Some(days_from_civil(2024, 4, 1) * 86_400)
        );
    }

    #[test]
    fn finished_periods_are_swept() {
        let store = LocalBudgets::default();
        let scopes = [BudgetScope::new("k", Period::Day, 1_000)];
        let now = 1_700_000_000_000;
        let out = store.reserve(&scopes, "r", 1, now, 60_000);
        seed_all(&store, &scopes, &out, 0);
        let later = now + 3 * DAY_MS;
        for _ in 0..SWEEP_EVERY {
            let _ = store.status(&BudgetScope::new("other", Period::Lifetime, 1), later);
        }
        let state = store.state.lock().unwrap_or_else(PoisonError::into_inner);
        assert!(state.counters.is_empty());
    }
}

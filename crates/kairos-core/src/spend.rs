//! Stage 4b, spend admission for virtual keys: rate limits (RPM/TPM per key and workspace) and
//! budget reservations (USD per key and workspace, a workspace's monthly token allowance),
//! through [`kairos_limits::Limits`] (Redis shared by the replicas, or in process).
//!
//! Before the first upstream call the request reserves an upper bound of what it can cost:
//! the input estimate (prompt bytes / 3, a deliberate overestimate of tokens) plus the output
//! cap (the request's `max_tokens`, else the model's maximum, else 4,096), priced at the most
//! expensive target of its plan, with the workspace's markup. When the request ends, the
//! reservation is settled with the cost on its ledger row (provider cost + markup) or released
//! when nothing was billed ([`SpendHold::finish`]). TPM limiters are charged the estimate and
//! corrected with the actual tokens. The master key is not subject to any of this.
//!
//! Failure modes (test matrix U23): rate limits fall back to a per-replica limiter when Redis
//! is unreachable (counted in `kairos_ratelimit_fallback_total`); budgets fail closed (503).

use std::time::Duration;

use kairos_limits::{BudgetError, BudgetScope, Limits, Period, RateCheck, Reservation};
use kairos_store::{LedgerRow, Scope, Store};

use crate::catalog::ModelEntry;
use crate::error::{ClientError, GatewayError, InternalError};
use crate::record::Recorder;
use crate::tenancy::{Access, BudgetPeriod, Settings};

/// Output tokens assumed when neither the request nor the model caps them.
const DEFAULT_MAX_OUTPUT: u64 = 4096;

/// The ledger as the budget counters' system of record.
pub struct LedgerSpend(pub Store);

impl kairos_limits::SpendSource for LedgerSpend {
    fn spent_since<'a>(
        &'a self,
        scope: &'a BudgetScope,
        period_start_unix_s: i64,
    ) -> kairos_limits::SpendFuture<'a> {
        Box::pin(async move {
            let since = period_start_unix_s.saturating_mul(1000);
            let (kind, id) = scope
                .id
                .split_once(':')
                .ok_or_else(|| format!("unknown budget scope `{}`", scope.id))?;
            let (store_scope, tokens) = match kind {
                "key" => (Scope::Key(id), false),
                "ws" => (Scope::Workspace(id), false),
                "wstok" => (Scope::Workspace(id), true),
                _ => return Err(format!("unknown budget scope `{}`", scope.id).into()),
            };
            let u = self.0.usage(store_scope, since, None).await?;
            Ok(if tokens {
                u.input_tokens + u.output_tokens
            } else {
                u.spend_micros
            })
        })
    }
}

fn period(p: BudgetPeriod) -> Period {
    match p {
        BudgetPeriod::Day => Period::Day,
        BudgetPeriod::Month => Period::Month,
        BudgetPeriod::Lifetime => Period::Lifetime,
    }
}

fn usd_to_micros(usd: f64) -> i64 {
    (usd * 1e6).round() as i64
}

/// What a request holds until it ends.
pub struct SpendHold {
    limits: Limits,
    money: Option<Reservation>,
    tokens: Option<Reservation>,
    /// TPM limiters charged with `token_estimate`: (limiter key, per minute).
    tpm: Vec<(String, u64)>,
    token_estimate: u64,
    runtime: tokio::runtime::Handle,
}

impl SpendHold {
    /// Settles with the finished row (cost + markup, tokens), off the caller's thread.
    pub fn finish(self, row: &LedgerRow) {
        let cost = row.cost_micros.unwrap_or(0).max(0) + row.markup_micros.max(0);
        let tokens = (row.input_tokens + row.output_tokens).max(0);
        let Self {
            limits,
            money,
            tokens: token_res,
            tpm,
            token_estimate,
            runtime,
            ..
        } = self;
        runtime.spawn(async move {
            for (res, actual) in [(money, cost), (token_res, tokens)] {
                let Some(res) = res else { continue };
                let out = if actual > 0 {
                    limits.settle(&res, actual).await
                } else {
                    limits.release(&res).await
                };
                if let Err(e) = out {
                    tracing::warn!(error = %e, "budget settlement failed; the hold expires on its own");
                }
            }
            let delta = tokens - token_estimate as i64;
            if delta != 0 {
                for (key, per_minute) in tpm {
                    limits.adjust_rate(&key, per_minute, delta).await;
                }
            }
        });
    }
}

fn rate_checks(prefix: &str, id: &str, s: &Settings, tokens: u64, out: &mut Vec<RateCheck>) {
    if let Some(rpm) = s.rpm {
        out.push(RateCheck::new(format!("{prefix}:{id}:rpm"), rpm, 1));
    }
    if let Some(tpm) = s.tpm {
        out.push(RateCheck::new(format!("{prefix}:{id}:tpm"), tpm, tokens));
    }
}

/// The most a request can cost on `entry`, in micro-USD (0 when the model has no price).
fn upper_bound_micros(entry: &ModelEntry, input: u64, requested_max_out: Option<u64>) -> i64 {
    let out = requested_max_out
        .or(entry.max_output_tokens.map(u64::from))
        .unwrap_or(DEFAULT_MAX_OUTPUT);
    let Some(p) = &entry.price else { return 0 };
    let total = u128::from(input) * u128::from(p.input) + u128::from(out) * u128::from(p.output);
    i64::try_from(total.div_ceil(1_000_000)).unwrap_or(i64::MAX)
}

/// Whether a key is subject to any limit or budget (else admission costs nothing).
pub fn limited(a: &Access) -> bool {
    let any = |s: &Settings| s.rpm.is_some() || s.tpm.is_some() || s.budget.is_some();
    any(&a.key) || any(&a.workspace) || a.workspace.monthly_token_allowance.is_some()
}

/// Admission for one request of a virtual key. `targets` are the models its plan may call;
/// `prompt_bytes` the size of what is sent as input; `max_out` the caller's output cap.
pub async fn admit(
    limits: &Limits,
    rec: &mut Recorder,
    targets: &[&ModelEntry],
    prompt_bytes: impl FnOnce() -> usize,
    max_out: Option<u32>,
) -> Result<(), GatewayError> {
    let Some(a) = rec.access().cloned() else {
        return Ok(());
    };
    if !limited(&a) {
        return Ok(());
    }
    let input = (prompt_bytes() as u64).div_ceil(3);
    let max_out = max_out.map(u64::from);
    let out_bound = targets
        .iter()
        .map(|e| {
            max_out
                .or(e.max_output_tokens.map(u64::from))
                .unwrap_or(DEFAULT_MAX_OUTPUT)
        })
        .max()
        .unwrap_or(DEFAULT_MAX_OUTPUT);
    let token_estimate = input + out_bound;
    check_rates(limits, &a, token_estimate).await?;
    let markup_pct = a.workspace.markup_pct.unwrap_or(0.0);
    let cost = targets
        .iter()
        .map(|e| upper_bound_micros(e, input, max_out))
        .max()
        .unwrap_or(0);
    let cost = cost + (cost as f64 * markup_pct / 100.0).ceil() as i64;
    let mut scopes = Vec::new();
    if let Some(b) = &a.key.budget {
        scopes.push(BudgetScope::new(
            format!("key:{}", a.key_id),
            period(b.period),
            usd_to_micros(b.usd),
        ));
    }
    if let Some(b) = &a.workspace.budget {
        scopes.push(BudgetScope::new(
            format!("ws:{}", a.workspace_id),
            period(b.period),
            usd_to_micros(b.usd),
        ));
    }
    let request_id = rec.id().to_owned();
    let money = if scopes.is_empty() {
        None
    } else {
        Some(
            limits
                .reserve(&scopes, &request_id, cost)
                .await
                .map_err(budget_error)?,
        )
    };
    let tokens = match a.workspace.monthly_token_allowance {
        Some(allowance) => {
            let scope = BudgetScope::new(
                format!("wstok:{}", a.workspace_id),
                Period::Month,
                i64::try_from(allowance).unwrap_or(i64::MAX),
            );
            match limits
                .reserve(
                    &[scope],
                    &format!("{request_id}:tokens"),
                    token_estimate as i64,
                )
                .await
            {
                Ok(r) => Some(r),
                Err(e) => {
                    if let Some(m) = &money {
                        let _ = limits.release(m).await;
                    }
                    return Err(budget_error(e));
                }
            }
        }
        None => None,
    };
    let mut tpm = Vec::new();
    if let Some(t) = a.key.tpm {
        tpm.push((format!("key:{}:tpm", a.key_id), t));
    }
    if let Some(t) = a.workspace.tpm {
        tpm.push((format!("ws:{}:tpm", a.workspace_id), t));
    }
    rec.set_spend_hold(SpendHold {
        limits: limits.clone(),
        money,
        tokens,
        tpm,
        token_estimate,
        runtime: tokio::runtime::Handle::current(),
    });
    Ok(())
}

async fn check_rates(limits: &Limits, a: &Access, tokens: u64) -> Result<(), GatewayError> {
    let mut checks = Vec::new();
    rate_checks("key", &a.key_id, &a.key, tokens, &mut checks);
    rate_checks("ws", &a.workspace_id, &a.workspace, tokens, &mut checks);
    if checks.is_empty() {
        return Ok(());
    }
    let d = limits.check_rates(&checks).await;
    if d.allowed {
        return Ok(());
    }
    let denied = d
        .limiters
        .iter()
        .find(|l| !l.allowed)
        .map(|l| l.key.clone())
        .unwrap_or_default();
    let scope = if denied.starts_with("key:") {
        "key"
    } else {
        "workspace"
    };
    let unit = if denied.ends_with(":tpm") {
        "tokens"
    } else {
        "requests"
    };
    Err(GatewayError::Client(ClientError::RateLimited {
        message: format!(
            "rate limit of this {scope} exceeded ({unit} per minute){}",
            match d.retry_after {
                Some(_) => "; retry after the time in Retry-After",
                None => "; this request alone exceeds the limit",
            }
        ),
        retry_after: d.retry_after.map(|r| r.max(Duration::from_secs(1))),
        headers: d
            .headers()
            .into_iter()
            .filter(|(n, _)| *n != "Retry-After")
            .collect(),
    }))
}

fn budget_error(e: BudgetError) -> GatewayError {
    match e {
        BudgetError::Exceeded {
            scope_id, period, ..
        } => GatewayError::Client(ClientError::BudgetExceeded {
            message: format!(
                "the {} budget of this {} is spent for this {}",
                period.as_str(),
                if scope_id.starts_with("key:") {
                    "key"
                } else {
                    "workspace"
                },
                match period {
                    Period::Day => "day",
                    Period::Month => "month",
                    Period::Lifetime => "lifetime",
                }
            ),
        }),
        other => {
            tracing::warn!(error = %other, "budget store unavailable: refusing (budgets fail closed)");
            GatewayError::Internal(InternalError::Unavailable("the budget store".into()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Catalog;

    #[test]
    fn upper_bound_uses_the_output_cap_and_rounds_up() {
        let cat = Catalog::builtin();
        let e = cat.get("gpt-4o-mini").expect("gpt-4o-mini");
        let p = e.price.as_ref().expect("price");
        let b = upper_bound_micros(e, 1000, Some(100));
        let exact = (1000 * p.input + 100 * p.output) as f64 / 1e6;
        assert_eq!(b, exact.ceil() as i64);
        assert!(upper_bound_micros(e, 1000, None) > b);
    }
}

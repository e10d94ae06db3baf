//! `POST /v1/feedback`: a caller's score for one of its requests, stored as an explicit outcome
//! (`outcomes` table, weight 1.0) and handed to the learner's hook at once.
//!
//! Authorisation is the receipt's: the key that made the request, an admin key of the request's
//! workspace, or the master key; anything else is the same 404 as an unknown request. Rows are
//! written off the request path, so an unknown id is looked up a few times over about a second
//! before the 404.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode};
use kairos_core::error::{GatewayError, InternalError};
use kairos_core::pipeline::clip;
use kairos_core::signals::SOURCE_EXPLICIT;
use kairos_store::{LedgerRow, OutcomeRow};
use serde::Deserialize;

use crate::http::{
    Shape, check_json_content_type, error_response, parse_json, presented_key, read_limited,
};
use crate::routes::{AppState, json_response};

/// Upper bound on a feedback body.
const MAX_BODY: usize = 16 * 1024;
/// Upper bound on `comment`, in characters.
pub const MAX_COMMENT_CHARS: usize = 4096;
/// The metric of a plain `score`.
pub const DEFAULT_METRIC: &str = "score";
/// Waits between lookups of a request whose row is not written yet (about 1 s in all).
const LOOKUP_BACKOFF_MS: &[u64] = &[0, 25, 50, 100, 150, 200, 250, 275];

/// The body (closed: unknown fields are 400).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FeedbackBody {
    request_id: Option<String>,
    receipt_id: Option<String>,
    score: Option<serde_json::Value>,
    metric: Option<String>,
    value: Option<serde_json::Value>,
    model: Option<String>,
    comment: Option<String>,
}

/// A validated body.
#[derive(Debug, PartialEq)]
struct Feedback {
    request_id: String,
    metric: String,
    score: f64,
    model: Option<String>,
    comment: Option<String>,
}

fn invalid(message: impl Into<String>, param: &str) -> GatewayError {
    GatewayError::invalid(message, Some(param))
}

/// A score: a number in [0, 1], or `true` (1.0) / `false` (0.0).
fn score_of(v: &serde_json::Value, param: &str) -> Result<f64, GatewayError> {
    let bad = || {
        invalid(
            format!("`{param}` must be a number between 0 and 1, or true or false"),
            param,
        )
    };
    match v {
        serde_json::Value::Bool(b) => Ok(if *b { 1.0 } else { 0.0 }),
        serde_json::Value::Number(n) => match n.as_f64() {
            Some(x) if x.is_finite() && (0.0..=1.0).contains(&x) => Ok(x),
            _ => Err(bad()),
        },
        _ => Err(bad()),
    }
}

/// `[A-Za-z0-9_.:-]{1,64}`, not starting with `implicit` (reserved for the gateway's signals).
fn check_metric(m: &str) -> Result<(), GatewayError> {
    if m.is_empty()
        || m.len() > 64
        || !m
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
    {
        return Err(invalid(
            "`metric` must be 1 to 64 characters of A-Z, a-z, 0-9, `_`, `.`, `:` and `-`",
            "metric",
        ));
    }
    if m.len() >= 8 && m[..8].eq_ignore_ascii_case("implicit") {
        return Err(invalid(
            "metric names starting with `implicit` are reserved for the gateway's own signals",
            "metric",
        ));
    }
    Ok(())
}

fn validate(b: FeedbackBody) -> Result<Feedback, GatewayError> {
    let request_id = match (b.request_id, b.receipt_id) {
        (Some(id), None) | (None, Some(id)) => id,
        (Some(_), Some(_)) => {
            return Err(invalid(
                "give either `request_id` or `receipt_id` (they name the same request), not both",
                "receipt_id",
            ));
        }
        (None, None) => {
            return Err(invalid(
                "`request_id` (or `receipt_id`) is required",
                "request_id",
            ));
        }
    };
    let score = match (&b.score, &b.value) {
        (Some(s), None) => score_of(s, "score")?,
        (None, Some(v)) => score_of(v, "value")?,
        (Some(_), Some(_)) => {
            return Err(invalid(
                "give either `score` or `metric` with `value`, not both `score` and `value`",
                "value",
            ));
        }
        (None, None) if b.metric.is_some() => {
            return Err(invalid(
                "`value` is required with `metric` (a number between 0 and 1, or true or false)",
                "value",
            ));
        }
        (None, None) => {
            return Err(invalid(
                "`score` is required (a number between 0 and 1, or true or false)",
                "score",
            ));
        }
    };
    let metric = b.metric.unwrap_or_else(|| DEFAULT_METRIC.to_owned());
    check_metric(&metric)?;
    if let Some(m) = &b.model
        && (m.is_empty() || m.len() > 256 || m.chars().any(char::is_control))
    {
        return Err(invalid("`model` is not a valid model name", "model"));
    }
    if let Some(c) = &b.comment
        && c.chars().count() > MAX_COMMENT_CHARS
    {
        return Err(invalid(
            format!("`comment` is longer than {MAX_COMMENT_CHARS} characters"),
            "comment",
        ));
    }
    Ok(Feedback {
        request_id,
        metric,
        score,
        model: b.model,
        comment: b.comment,
    })
}

fn unavailable() -> GatewayError {
    GatewayError::Internal(InternalError::Unavailable("the ledger database".into()))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The request's row if this caller may see it; `Ok(None)` (after about a second) when it does
/// not exist or is not theirs.
async fn find_request(
    st: &AppState,
    principal: &kairos_core::gateway::Principal,
    id: &str,
) -> Result<Option<LedgerRow>, GatewayError> {
    if id.is_empty() || id.len() > 64 {
        return Ok(None);
    }
    let started = Instant::now();
    let total: u64 = LOOKUP_BACKOFF_MS.iter().sum();
    for wait in LOOKUP_BACKOFF_MS {
        tokio::time::sleep(Duration::from_millis(*wait)).await;
        match st.store.get_request(id).await {
            Ok(Some(row)) => {
                if principal.may_access_request(&row.key_id, row.workspace.as_deref()) {
                    return Ok(Some(row));
                }
                // Not theirs: answer like an unknown id, in the same time.
                let left = Duration::from_millis(total).saturating_sub(started.elapsed());
                tokio::time::sleep(left).await;
                return Ok(None);
            }
            Ok(None) => {}
            Err(_) => return Err(unavailable()),
        }
    }
    Ok(None)
}

/// `POST /v1/feedback`.
pub(crate) async fn feedback(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Response<Body> {
    match handle(&st, &headers, body).await {
        Ok(v) => json_response(StatusCode::OK, Bytes::from(v.to_string())),
        Err(e) => error_response(&e, Shape::OpenAi, None),
    }
}

async fn handle(
    st: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<serde_json::Value, GatewayError> {
    let principal = st.gateway.authenticate(presented_key(headers)).await?;
    check_json_content_type(headers)?;
    let bytes = read_limited(headers, body, MAX_BODY.min(st.max_body_bytes)).await?;
    let fb = validate(parse_json::<FeedbackBody>(&bytes)?)?;
    let Some(row) = find_request(st, &principal, &fb.request_id).await? else {
        return Err(GatewayError::invalid_not_found(format!(
            "no request `{}` (unknown, not written yet, or not made with this key)",
            clip(&fb.request_id, 64)
        )));
    };
    let model = match &fb.model {
        Some(m) => match st.gateway.resolve(m, kairos_core::catalog::ModelMode::Chat) {
            Ok(r) => r.entry.id.clone(),
            Err(_) => {
                return Err(invalid(
                    format!("`model`: no chat model `{}` on this gateway", clip(m, 200)),
                    "model",
                ));
            }
        },
        None => row.served_model.clone().ok_or_else(|| {
            invalid(
                "this request was not served by any model; name the `model` the score is about",
                "model",
            )
        })?,
    };
    let now = now_ms();
    let outcome = OutcomeRow {
        request_id: row.id.clone(),
        metric: fb.metric,
        model,
        workspace: row.workspace.clone(),
        key_id: row.key_id.clone(),
        task: row.task.clone(),
        embedding: row.embedding.clone(),
        score: fb.score,
        weight: 1.0,
        source: SOURCE_EXPLICIT.to_owned(),
        detail: fb.comment,
        created_ms: now,
        updated_ms: now,
    };
    let updated = st
        .store
        .upsert_outcome(&outcome)
        .await
        .map_err(|_| unavailable())?;
    st.gateway.outcome_sink().observe(&outcome);
    Ok(serde_json::json!({
        "object": "feedback",
        "request_id": outcome.request_id,
        "metric": outcome.metric,
        "model": outcome.model,
        "score": outcome.score,
        "updated": updated,
    }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use serde_json::json;

    fn parse(v: serde_json::Value) -> Result<Feedback, GatewayError> {
        validate(parse_json::<FeedbackBody>(v.to_string().as_bytes())?)
    }

    #[test]
    fn bodies() {
        let ok = |v: serde_json::Value, metric: &str, score: f64| {
            let f = parse(v.clone()).unwrap_or_else(|e| panic!("{v}: {e}"));
            assert_eq!((f.metric.as_str(), f.score), (metric, score), "{v}");
        };
        ok(json!({"request_id": "r", "score": 0.5}), "score", 0.5);
        ok(json!({"receipt_id": "r", "score": true}), "score", 1.0);
        ok(json!({"request_id": "r", "score": false}), "score", 0.0);
        ok(json!({"request_id": "r", "score": 1}), "score", 1.0);
        ok(
            json!({"request_id": "r", "metric": "accuracy", "value": 0.25}),
            "accuracy",
            0.25,
        );
        ok(
            json!({"request_id": "r", "metric": "a.b:c-d_9", "score": 0}),
            "a.b:c-d_9",
            0.0,
        );
        ok(
            json!({"request_id": "r", "metric": "explicit_implicit", "value": true}),
            "explicit_implicit",
            1.0,
        );
        let bad = |v: serde_json::Value, param: &str| match parse(v.clone()) {
            Err(GatewayError::Client(kairos_core::error::ClientError::InvalidRequest {
                param: p,
                ..
            })) => assert_eq!(p.as_deref(), Some(param), "{v}"),
            other => panic!("{v}: {other:?}"),
        };
        bad(json!({"score": 0.5}), "request_id");
        bad(
            json!({"request_id": "r", "receipt_id": "r", "score": 0.5}),
            "receipt_id",
        );
        bad(json!({"request_id": "r"}), "score");
        bad(json!({"request_id": "r", "metric": "m"}), "value");
        bad(json!({"request_id": "r", "score": 1.5}), "score");
        bad(json!({"request_id": "r", "score": -0.1}), "score");
        bad(json!({"request_id": "r", "score": "good"}), "score");
        bad(json!({"request_id": "r", "score": null}), "score");
        bad(
            json!({"request_id": "r", "metric": "m", "value": 2}),
            "value",
        );
        bad(json!({"request_id": "r", "score": 1, "value": 1}), "value");
        bad(
            json!({"request_id": "r", "metric": "", "value": 1}),
            "metric",
        );
        bad(
            json!({"request_id": "r", "metric": "a b", "value": 1}),
            "metric",
        );
        bad(
            json!({"request_id": "r", "metric": "x".repeat(65), "value": 1}),
            "metric",
        );
        bad(
            json!({"request_id": "r", "metric": "implicit", "value": 1}),
            "metric",
        );
        bad(
            json!({"request_id": "r", "metric": "Implicit_retry", "value": 1}),
            "metric",
        );
        bad(json!({"request_id": "r", "score": 1, "model": ""}), "model");
        bad(
            json!({"request_id": "r", "score": 1, "comment": "x".repeat(4097)}),
            "comment",
        );
        bad(
            json!({"request_id": "r", "score": 1, "rating": 5}),
            "rating",
        );
        assert!(parse(json!({"request_id": "r", "score": 1, "comment": "é".repeat(4096)})).is_ok());
    }
}

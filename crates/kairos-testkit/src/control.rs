//! The HTTP control API under `/__mock/` (for tests that run the mock out of process).

use axum::extract::{Request, State};
use axum::response::Response;
use bytes::Bytes;
use http::StatusCode;
use serde_json::{Value, json};

use crate::behavior::Behavior;
use crate::common::{Api, Incoming, error_response, json_response, to_json_bytes};
use crate::state::MockHandle;

fn bad_request(msg: String) -> Response {
    json_response(
        StatusCode::BAD_REQUEST,
        to_json_bytes(&json!({"error": msg})),
    )
}

/// One script item: a Behavior, or `{"model": .., "behavior": ..}` (model optional).
fn parse_item(item: Value) -> Result<(Option<String>, Behavior), String> {
    let wrapped = item.as_object().is_some_and(|o| o.contains_key("behavior"));
    if !wrapped {
        let b = serde_json::from_value(item).map_err(|e| format!("invalid behavior: {e}"))?;
        return Ok((None, b));
    }
    let Value::Object(mut o) = item else {
        return Err("script item must be an object".to_owned());
    };
    let model = match o.remove("model") {
        None | Some(Value::Null) => None,
        Some(Value::String(m)) => Some(m),
        Some(_) => return Err("model must be a string".to_owned()),
    };
    if let Some(extra) = o.keys().find(|k| k.as_str() != "behavior") {
        return Err(format!("unknown field {extra:?} in script item"));
    }
    let behavior = o.remove("behavior").unwrap_or(Value::Null);
    let b = serde_json::from_value(behavior).map_err(|e| format!("invalid behavior: {e}"))?;
    Ok((model, b))
}

/// `POST /__mock/script`: a Behavior, `{"model","behavior"}`, or an array of those.
pub(crate) async fn script(State(h): State<MockHandle>, body: Bytes) -> Response {
    let v: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return bad_request(format!("invalid JSON: {e}")),
    };
    let items = match v {
        Value::Array(a) => a,
        other => vec![other],
    };
    // Validate everything before queueing anything.
    let parsed: Vec<_> = match items.into_iter().map(parse_item).collect::<Result<_, _>>() {
        Ok(p) => p,
        Err(e) => return bad_request(e),
    };
    let queued = parsed.len();
    for (model, b) in parsed {
        match model {
            Some(m) => h.push_for_model(&m, b),
            None => h.push(b),
        }
    }
    json_response(StatusCode::OK, to_json_bytes(&json!({"queued": queued})))
}

/// `GET /__mock/ledger`.
pub(crate) async fn ledger(State(h): State<MockHandle>) -> Response {
    json_response(
        StatusCode::OK,
        Bytes::from(serde_json::to_vec(&h.ledger()).unwrap_or_default()),
    )
}

/// `GET /__mock/requests`.
pub(crate) async fn requests(State(h): State<MockHandle>) -> Response {
    json_response(
        StatusCode::OK,
        Bytes::from(serde_json::to_vec(&h.requests()).unwrap_or_default()),
    )
}

/// `POST /__mock/reset`.
pub(crate) async fn reset(State(h): State<MockHandle>) -> Response {
    h.reset();
    json_response(StatusCode::OK, Bytes::from_static(b"{\"reset\":true}"))
}

/// `GET /__mock/health`.
pub(crate) async fn health() -> Response {
    json_response(StatusCode::OK, Bytes::from_static(b"{\"status\":\"ok\"}"))
}

/// `GET /__mock/stats`: counters.
pub(crate) async fn stats(State(h): State<MockHandle>) -> Response {
    json_response(
        StatusCode::OK,
        to_json_bytes(&json!({"calls": h.call_count(), "disconnects": h.disconnects()})),
    )
}

/// Anything else: logged, 404 in the OpenAI shape.
pub(crate) async fn fallback(State(h): State<MockHandle>, req: Request) -> Response {
    let inc = match Incoming::read(&h, req).await {
        Ok(inc) => inc,
        Err(r) => return r,
    };
    let msg = format!(
        "mock: no route for {} {}",
        inc.parts.method,
        inc.parts.uri.path()
    );
    error_response(
        Api::OpenAi,
        404,
        Some("unknown_url"),
        Some(&msg),
        None,
        h.next_id(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_items() {
        let (m, b) = parse_item(json!({"status": 503})).unwrap();
        assert_eq!((m, b.status), (None, 503));
        let (m, b) = parse_item(json!({"model": "gpt-x", "behavior": {"status": 429}})).unwrap();
        assert_eq!((m.as_deref(), b.status), (Some("gpt-x"), 429));
        let (m, b) = parse_item(json!({"behavior": {}})).unwrap();
        assert_eq!((m, b.status), (None, 200));
        assert!(parse_item(json!({"behavior": {}, "mdl": "x"})).is_err());
        assert!(parse_item(json!({"stauts": 1})).is_err());
    }
}

//! The Anthropic-shaped API (`POST /v1/messages`) end to end: native passthrough to Anthropic
//! upstreams, translation to OpenAI and Gemini upstreams, errors in the Anthropic shape.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use kairos_testkit::{Behavior, StreamFault, ToolCallSpec};
use serde_json::{Value, json};

async fn messages(gw: &Gw, body: Value) -> reqwest::Response {
    gw.http
        .post(format!("{}/v1/messages", gw.url))
        .header("x-api-key", MASTER)
        .header("anthropic-version", "2023-06-01")
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap()
}

fn names(ev: &[kairos_api::sse::SseEvent]) -> Vec<String> {
    ev.iter()
        .map(|e| e.event.clone().unwrap_or_default())
        .filter(|n| n != "ping")
        .collect()
}

#[tokio::test]
async fn native_passthrough_keeps_every_field_and_bills() {
    let gw = start_gw().await;
    let body = json!({
        "model": "claude-haiku-4-5",
        "max_tokens": 256,
        "system": [{"type": "text", "text": "be brief", "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hello", "cache_control": {"type": "ephemeral", "ttl": "1h"}}]}],
        "metadata": {"user_id": "end-user-7"},
        "some_new_field": {"x": 1}
    });
    let r = gw
        .http
        .post(format!("{}/v1/messages", gw.url))
        .header("x-api-key", MASTER)
        .header("anthropic-version", "2023-06-01")
        .header("anthropic-beta", "prompt-caching-2024-07-31")
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-kairos-provider"], "anthropic");
    let id = request_id(&r);
    let msg: Value = r.json().await.unwrap();
    assert_eq!(msg["type"], "message");
    assert_eq!(msg["content"][0]["type"], "text");
    let sent = &gw.mock.requests()[0];
    assert_eq!(sent.path, "/v1/messages");
    assert_eq!(
        sent.header("anthropic-beta"),
        Some("prompt-caching-2024-07-31")
    );
    assert_eq!(sent.header("x-api-key"), Some(ANTHROPIC_KEY));
    let sent_body: Value = serde_json::from_str(&sent.body).unwrap();
    assert_eq!(
        sent_body["messages"][0]["content"][0]["cache_control"]["ttl"],
        "1h"
    );
    assert_eq!(sent_body["system"][0]["cache_control"]["type"], "ephemeral");
    assert_eq!(sent_body["some_new_field"], json!({"x": 1}));
    let row = gw.row(&id).await;
    assert_eq!(
        (row.route.as_str(), row.inbound_api.as_str()),
        ("messages", "anthropic")
    );
    assert_eq!(row.end_user.as_deref(), Some("end-user-7"));
    let billed = &gw.mock.ledger()[0];
    assert_eq!(row.input_tokens as u32, billed.prompt_tokens);
    assert_eq!(row.output_tokens as u32, billed.completion_tokens);
    assert!(row.cost_micros.unwrap() > 0);
}

#[tokio::test]
async fn native_stream_is_forwarded_event_by_event() {
    let gw = start_gw().await;
    let r = messages(&gw, json!({"model": "claude-haiku-4-5", "max_tokens": 100, "stream": true, "messages": [{"role": "user", "content": "hi"}]})).await;
    assert_eq!(r.status(), 200);
    let id = request_id(&r);
    let ev = sse_events(r).await;
    let n = names(&ev);
    assert_eq!(n.first().map(String::as_str), Some("message_start"));
    assert_eq!(n.last().map(String::as_str), Some("message_stop"));
    assert!(n.contains(&"content_block_delta".to_owned()));
    let row = gw.row(&id).await;
    assert_eq!(row.outcome, "ok");
    assert_eq!(row.usage_source, "provider");
    assert_eq!(
        row.output_tokens as u32,
        gw.mock.ledger()[0].completion_tokens
    );
}

#[tokio::test]
async fn native_cut_stream_ends_with_an_error_event() {
    let gw = start_gw().await;
    gw.mock.push(Behavior {
        chunks: 6,
        stream_fault: Some(StreamFault::CutAfter(2)),
        ..Default::default()
    });
    let r = messages(&gw, json!({"model": "claude-haiku-4-5", "max_tokens": 100, "stream": true, "messages": [{"role": "user", "content": "hi"}]})).await;
    let id = request_id(&r);
    let ev = sse_events(r).await;
    let n = names(&ev);
    assert!(!n.contains(&"message_stop".to_owned()), "{n:?}");
    assert_eq!(n.last().map(String::as_str), Some("error"));
    let row = gw.row(&id).await;
    assert_eq!(row.outcome, "upstream_cut");
    assert!(row.output_tokens > 0, "{row:?}");
}

#[tokio::test]
async fn translated_to_openai_and_gemini_non_stream_and_stream() {
    let gw = start_gw().await;
    for model in ["gpt-4o-mini", "gemini-2.5-flash"] {
        let r = messages(&gw, json!({"model": model, "max_tokens": 100, "system": "be brief", "messages": [{"role": "user", "content": "hi"}]})).await;
        assert_eq!(r.status(), 200, "{model}");
        let id = request_id(&r);
        let msg: Value = r.json().await.unwrap();
        assert_eq!(msg["type"], "message", "{model}: {msg}");
        assert_eq!(msg["role"], "assistant");
        assert!(msg["content"][0]["text"].as_str().unwrap().len() > 3);
        assert_eq!(msg["stop_reason"], "end_turn");
        assert!(msg["usage"]["input_tokens"].as_u64().unwrap() > 0);
        let row = gw.row(&id).await;
        assert_eq!(row.inbound_api, "anthropic");
        assert!(row.cost_micros.unwrap() > 0);

        let r = messages(&gw, json!({"model": model, "max_tokens": 100, "stream": true, "messages": [{"role": "user", "content": "hi"}]})).await;
        assert_eq!(r.status(), 200);
        let ev = sse_events(r).await;
        let n = names(&ev);
        assert_eq!(
            n.first().map(String::as_str),
            Some("message_start"),
            "{model}: {n:?}"
        );
        assert_eq!(
            n.last().map(String::as_str),
            Some("message_stop"),
            "{model}: {n:?}"
        );
        let delta = ev
            .iter()
            .find(|e| e.event.as_deref() == Some("message_delta"))
            .unwrap();
        let d: Value = serde_json::from_str(&delta.data).unwrap();
        assert!(d["usage"]["output_tokens"].as_u64().unwrap() > 0, "{d}");
    }
}

#[tokio::test]
async fn tools_through_translation() {
    let gw = start_gw().await;
    gw.mock.push(Behavior {
        tool_call: Some(ToolCallSpec::new("lookup", r#"{"q":"rust"}"#)),
        ..Default::default()
    });
    let tools = json!([{"name": "lookup", "description": "search", "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}}}]);
    let r = messages(&gw, json!({"model": "gpt-4o-mini", "max_tokens": 100, "tools": tools, "messages": [{"role": "user", "content": "find rust"}]})).await;
    let msg: Value = r.json().await.unwrap();
    assert_eq!(msg["stop_reason"], "tool_use");
    let tu = msg["content"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["type"] == "tool_use")
        .unwrap();
    assert_eq!(tu["name"], "lookup");
    assert_eq!(tu["input"], json!({"q": "rust"}));
    // The OpenAI upstream got an OpenAI-shaped tool list.
    let sent: Value = serde_json::from_str(&gw.mock.requests()[0].body).unwrap();
    assert_eq!(sent["tools"][0]["function"]["name"], "lookup");

    // Tool result round trip, streamed.
    gw.mock.push(Behavior {
        tool_call: Some(ToolCallSpec::new("lookup", r#"{"q":"more"}"#)),
        ..Default::default()
    });
    let r = messages(&gw, json!({"model": "gpt-4o-mini", "max_tokens": 100, "stream": true, "tools": tools, "messages": [
        {"role": "user", "content": "find rust"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"q": "rust"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "Rust is a language"}]}
    ]})).await;
    let ev = sse_events(r).await;
    let mut json_parts = String::new();
    for e in &ev {
        if e.event.as_deref() == Some("content_block_delta") {
            let d: Value = serde_json::from_str(&e.data).unwrap();
            if let Some(p) = d["delta"]["partial_json"].as_str() {
                json_parts.push_str(p);
            }
        }
    }
    assert_eq!(
        serde_json::from_str::<Value>(&json_parts).unwrap(),
        json!({"q": "more"})
    );
    let sent: Value = serde_json::from_str(&gw.mock.requests()[1].body).unwrap();
    let msgs = sent["messages"].as_array().unwrap();
    assert_eq!(msgs.last().unwrap()["role"], "tool");
    assert_eq!(msgs.last().unwrap()["tool_call_id"], "toolu_1");
}

#[tokio::test]
async fn errors_use_the_anthropic_shape() {
    let gw = start_gw().await;
    let check = |v: &Value, kind: &str| {
        assert_eq!(v["type"], "error", "{v}");
        assert_eq!(v["error"]["type"], kind, "{v}");
        assert!(v["error"]["message"].is_string());
    };
    // Missing max_tokens.
    let r = messages(
        &gw,
        json!({"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(r.status(), 400);
    check(&r.json().await.unwrap(), "invalid_request_error");
    // Unknown model.
    let r = messages(&gw, json!({"model": "claude-nope", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]})).await;
    assert_eq!(r.status(), 404);
    check(&r.json().await.unwrap(), "not_found_error");
    // Bad key.
    let r = gw
        .http
        .post(format!("{}/v1/messages", gw.url))
        .header("x-api-key", "wrong")
        .header("content-type", "application/json")
        .body(json!({"model": "claude-haiku-4-5", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    check(&r.json().await.unwrap(), "authentication_error");
    // Forbidden field.
    let r = messages(&gw, json!({"model": "claude-haiku-4-5", "max_tokens": 5, "base_url": "http://evil", "messages": [{"role": "user", "content": "hi"}]})).await;
    assert_eq!(r.status(), 400);
    assert_eq!(gw.mock.call_count(), 0);
    // Upstream overload and rate limit.
    gw.mock.push(Behavior {
        status: 529,
        ..Default::default()
    });
    let r = messages(&gw, json!({"model": "claude-haiku-4-5", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]})).await;
    assert_eq!(r.status(), 503);
    check(&r.json().await.unwrap(), "overloaded_error");
    gw.mock.push(Behavior {
        status: 429,
        retry_after: Some("2".into()),
        ..Default::default()
    });
    let r = messages(&gw, json!({"model": "gpt-4o-mini", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]})).await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "2");
    check(&r.json().await.unwrap(), "rate_limit_error");
}

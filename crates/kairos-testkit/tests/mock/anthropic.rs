use kairos_testkit::{Behavior, MockConfig, MockServer, StreamFault, ToolCallSpec, UsageMode};
use serde_json::{Value, json};

use crate::common::{ANTHROPIC_VERSION, json, parse_sse, post};

fn request(text: &str) -> Value {
    json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 1024,
        "system": "abcd",
        "messages": [{"role": "user", "content": [{"type": "text", "text": text}]}],
    })
}

async fn mock() -> MockServer {
    MockServer::start(MockConfig::default()).await.unwrap()
}

#[tokio::test]
async fn non_stream_message_shape_and_cached_usage() {
    let m = mock().await;
    m.push(Behavior {
        text: Some("Hello there!".into()),
        cached_tokens: Some(2),
        ..Behavior::default()
    });
    let (status, headers, text) = post(
        &format!("{}/v1/messages", m.url()),
        &[ANTHROPIC_VERSION],
        &request("abcdefgh"),
    )
    .await;
    assert_eq!(status, 200);
    assert!(headers.contains_key("request-id"));
    let v = json(&text);
    assert!(v["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(v["type"], "message");
    assert_eq!(v["role"], "assistant");
    assert_eq!(v["model"], "claude-sonnet-4-5");
    assert_eq!(
        v["content"],
        json!([{"type": "text", "text": "Hello there!"}])
    );
    assert_eq!(v["stop_reason"], "end_turn");
    assert!(v["stop_sequence"].is_null());
    // prompt = system 1 + (3 + 2) = 6, of which 2 cached: input_tokens excludes cached ones.
    assert_eq!(
        v["usage"],
        json!({"input_tokens": 4, "output_tokens": 3, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 2})
    );
    let call = &m.ledger()[0];
    assert_eq!(call.api, "anthropic");
    assert_eq!(
        (
            call.prompt_tokens,
            call.cached_tokens,
            call.completion_tokens
        ),
        (6, 2, 3)
    );
}

#[tokio::test]
async fn stream_events_follow_the_real_order() {
    let m = mock().await;
    m.push(Behavior::text("abcdefgh"));
    let mut body = request("hi");
    body["stream"] = json!(true);
    let (status, headers, text) = post(
        &format!("{}/v1/messages", m.url()),
        &[ANTHROPIC_VERSION],
        &body,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "text/event-stream");
    let events = parse_sse(&text);
    let names: Vec<&str> = events.iter().map(|e| e.event.as_deref().unwrap()).collect();
    assert_eq!(
        names,
        vec![
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
        ]
    );
    for e in &events {
        assert_eq!(
            e.json()["type"],
            e.event.as_deref().unwrap(),
            "data.type = event name"
        );
    }
    let start = events[0].json();
    assert_eq!(start["message"]["content"], json!([]));
    assert!(start["message"]["stop_reason"].is_null());
    assert_eq!(start["message"]["usage"]["input_tokens"], 1 + 3 + 1);
    assert_eq!(start["message"]["usage"]["output_tokens"], 1);
    assert_eq!(
        events[1].json()["content_block"],
        json!({"type": "text", "text": ""})
    );
    let text: String = events[3..7]
        .iter()
        .map(|e| {
            let d = e.json();
            assert_eq!(d["delta"]["type"], "text_delta");
            assert_eq!(d["index"], 0);
            d["delta"]["text"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(text, "abcdefgh");
    let delta = events[8].json();
    assert_eq!(
        delta["delta"],
        json!({"stop_reason": "end_turn", "stop_sequence": null})
    );
    assert_eq!(delta["usage"], json!({"output_tokens": 2}));
    let call = &m.ledger()[0];
    assert!(call.stream && call.completed);
    assert_eq!(call.completion_tokens, 2);
}

#[tokio::test]
async fn tool_use_non_stream_and_stream() {
    let m = mock().await;
    let url = format!("{}/v1/messages", m.url());
    let tool = ToolCallSpec::new("get_weather", r#"{"city":"Paris"}"#);
    m.push(Behavior {
        tool_call: Some(tool.clone()),
        ..Behavior::default()
    });
    let (_, _, text) = post(&url, &[ANTHROPIC_VERSION], &request("weather")).await;
    let v = json(&text);
    assert_eq!(v["stop_reason"], "tool_use");
    let block = &v["content"][0];
    assert_eq!(block["type"], "tool_use");
    assert!(block["id"].as_str().unwrap().starts_with("toolu_"));
    assert_eq!(block["name"], "get_weather");
    assert_eq!(block["input"], json!({"city": "Paris"}));

    m.push(Behavior {
        tool_call: Some(tool.clone()),
        text: Some("Let me check.".into()),
        ..Behavior::default()
    });
    let mut body = request("weather");
    body["stream"] = json!(true);
    let (_, _, text) = post(&url, &[ANTHROPIC_VERSION], &body).await;
    let events = parse_sse(&text);
    let starts: Vec<Value> = events
        .iter()
        .filter(|e| e.event.as_deref() == Some("content_block_start"))
        .map(|e| e.json())
        .collect();
    assert_eq!(starts.len(), 2);
    assert_eq!(starts[0]["content_block"]["type"], "text");
    assert_eq!(starts[1]["index"], 1);
    assert_eq!(starts[1]["content_block"]["type"], "tool_use");
    assert_eq!(starts[1]["content_block"]["name"], "get_weather");
    assert_eq!(starts[1]["content_block"]["input"], json!({}));
    let json_pieces: Vec<String> = events
        .iter()
        .map(|e| e.json())
        .filter(|d| d["delta"]["type"] == "input_json_delta")
        .map(|d| {
            assert_eq!(d["index"], 1);
            d["delta"]["partial_json"].as_str().unwrap().to_owned()
        })
        .collect();
    assert!(json_pieces.len() > 2);
    assert_eq!(json_pieces.concat(), tool.arguments);
    let delta = events
        .iter()
        .find(|e| e.event.as_deref() == Some("message_delta"))
        .unwrap()
        .json();
    assert_eq!(delta["delta"]["stop_reason"], "tool_use");
    assert_eq!(
        events.last().unwrap().event.as_deref(),
        Some("message_stop")
    );
}

#[tokio::test]
async fn required_header_and_fields() {
    let m = mock().await;
    let url = format!("{}/v1/messages", m.url());
    let (status, _, text) = post(&url, &[], &request("x")).await;
    assert_eq!(status, 400);
    let v = json(&text);
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("anthropic-version")
    );

    let mut body = request("x");
    body.as_object_mut().unwrap().remove("max_tokens");
    let (status, _, text) = post(&url, &[ANTHROPIC_VERSION], &body).await;
    assert_eq!(status, 400);
    assert!(
        json(&text)["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_tokens")
    );
}

#[tokio::test]
async fn auth_failure_is_anthropic_shaped() {
    let m = MockServer::start(MockConfig {
        anthropic_key: Some("sk-ant-canary".into()),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let url = format!("{}/v1/messages", m.url());
    let (status, _, text) = post(&url, &[ANTHROPIC_VERSION], &request("x")).await;
    assert_eq!(status, 401);
    let v = json(&text);
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "authentication_error");
    let (status, _, _) = post(
        &url,
        &[ANTHROPIC_VERSION, ("authorization", "Bearer sk-ant-canary")],
        &request("x"),
    )
    .await;
    assert_eq!(status, 401, "Anthropic wants x-api-key");
    let (status, _, _) = post(
        &url,
        &[ANTHROPIC_VERSION, ("x-api-key", "sk-ant-canary")],
        &request("x"),
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn scripted_errors_use_anthropic_types() {
    let m = mock().await;
    let url = format!("{}/v1/messages", m.url());
    m.push(Behavior::status(529));
    m.push(Behavior {
        status: 429,
        retry_after: Some("7".into()),
        ..Behavior::default()
    });
    m.push(Behavior {
        status: 400,
        error_type: Some("invalid_request_error".into()),
        error_message: Some("prompt is too long: 200000 tokens > 199999 maximum".into()),
        ..Behavior::default()
    });
    let (status, _, text) = post(&url, &[ANTHROPIC_VERSION], &request("x")).await;
    assert_eq!(status, 529);
    assert_eq!(json(&text)["error"]["type"], "overloaded_error");
    let (status, headers, text) = post(&url, &[ANTHROPIC_VERSION], &request("x")).await;
    assert_eq!(status, 429);
    assert_eq!(headers["retry-after"], "7");
    assert_eq!(json(&text)["error"]["type"], "rate_limit_error");
    let (status, _, text) = post(&url, &[ANTHROPIC_VERSION], &request("x")).await;
    assert_eq!(status, 400);
    assert!(
        json(&text)["error"]["message"]
            .as_str()
            .unwrap()
            .contains("too long")
    );
}

#[tokio::test]
async fn stream_error_event_and_usage_absent() {
    let m = mock().await;
    let url = format!("{}/v1/messages", m.url());
    m.push(Behavior {
        stream_fault: Some(StreamFault::ErrorEventAfter(2)),
        ..Behavior::default()
    });
    let mut body = request("x");
    body["stream"] = json!(true);
    let (_, _, text) = post(&url, &[ANTHROPIC_VERSION], &body).await;
    let events = parse_sse(&text);
    let last = events.last().unwrap();
    assert_eq!(last.event.as_deref(), Some("error"));
    assert_eq!(
        last.json(),
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    );
    let deltas = events
        .iter()
        .filter(|e| e.event.as_deref() == Some("content_block_delta"))
        .count();
    assert_eq!(deltas, 2);
    assert!(
        !events
            .iter()
            .any(|e| e.event.as_deref() == Some("message_stop"))
    );
    assert!(!m.ledger()[0].completed);

    m.push(Behavior {
        usage: UsageMode::Absent,
        ..Behavior::default()
    });
    let (_, _, text) = post(&url, &[ANTHROPIC_VERSION], &body).await;
    let events = parse_sse(&text);
    assert!(events[0].json()["message"].get("usage").is_none());
    let delta = events
        .iter()
        .find(|e| e.event.as_deref() == Some("message_delta"))
        .unwrap()
        .json();
    assert!(delta.get("usage").is_none());
    assert!(m.ledger()[1].completion_tokens > 0, "billed anyway");
}

#[tokio::test]
async fn max_tokens_stop_reason_and_count_tokens() {
    let m = mock().await;
    m.push(Behavior::text("y".repeat(50)));
    let mut body = request("x");
    body["max_tokens"] = json!(2);
    let (_, _, text) = post(
        &format!("{}/v1/messages", m.url()),
        &[ANTHROPIC_VERSION],
        &body,
    )
    .await;
    let v = json(&text);
    assert_eq!(v["stop_reason"], "max_tokens");
    assert_eq!(v["content"][0]["text"], "yyyyyyyy");
    assert_eq!(v["usage"]["output_tokens"], 2);

    let (status, _, text) = post(
        &format!("{}/v1/messages/count_tokens", m.url()),
        &[ANTHROPIC_VERSION],
        &request("abcdefgh"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(json(&text), json!({"input_tokens": 1 + 3 + 2}));
    assert_eq!(m.call_count(), 1, "count_tokens is not an inference call");
}

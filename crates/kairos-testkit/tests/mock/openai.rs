use base64::Engine as _;
use kairos_testkit::{Behavior, MockConfig, MockServer, ToolCallSpec, UsageMode};
use serde_json::{Value, json};

use crate::common::{client, get, json, openai_chat, parse_sse, post};

async fn mock() -> MockServer {
    MockServer::start(MockConfig::default()).await.unwrap()
}

#[tokio::test]
async fn non_stream_completion_has_the_full_shape() {
    let m = mock().await;
    let body = openai_chat("gpt-4o-mini", "abcdefgh");
    let (status, headers, text) =
        post(&format!("{}/v1/chat/completions", m.url()), &[], &body).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "application/json");
    assert!(headers.contains_key("x-request-id"));
    let v = json(&text);
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(v["object"], "chat.completion");
    assert!(v["created"].as_u64().unwrap() > 1_600_000_000);
    assert_eq!(v["model"], "gpt-4o-mini");
    assert_eq!(v["service_tier"], "default");
    assert!(v["system_fingerprint"].is_string());
    let choice = &v["choices"][0];
    assert_eq!(choice["index"], 0);
    assert_eq!(choice["finish_reason"], "stop");
    assert!(choice["logprobs"].is_null());
    let msg = &choice["message"];
    assert_eq!(msg["role"], "assistant");
    assert!(msg["refusal"].is_null());
    assert_eq!(msg["annotations"], json!([]));
    let content = msg["content"].as_str().unwrap();
    assert_eq!(content, "Mock reply from gpt-4o-mini to \"abcdefgh\".");

    // Documented token rule: 3 per message + ceil(chars/4) per string (role excluded).
    let u = &v["usage"];
    assert_eq!(u["prompt_tokens"], 3 + 2);
    let completion = content.chars().count().div_ceil(4) as u64;
    assert_eq!(u["completion_tokens"], completion);
    assert_eq!(u["total_tokens"], 5 + completion);
    assert_eq!(
        u["prompt_tokens_details"],
        json!({"cached_tokens": 0, "audio_tokens": 0})
    );
    assert_eq!(
        u["completion_tokens_details"],
        json!({"reasoning_tokens": 0, "audio_tokens": 0, "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0})
    );

    let ledger = m.ledger();
    assert_eq!(ledger.len(), 1);
    let call = &ledger[0];
    assert_eq!(
        (call.api.as_str(), call.route.as_str(), call.model.as_str()),
        ("openai", "/v1/chat/completions", "gpt-4o-mini")
    );
    assert_eq!(
        (call.status, call.stream, call.completed),
        (200, false, true)
    );
    assert_eq!(call.prompt_tokens, 5);
    assert_eq!(u64::from(call.completion_tokens), completion);
    assert_eq!(m.call_count(), 1);
}

#[tokio::test]
async fn n_choices_and_usage_overrides() {
    let m = mock().await;
    m.push(Behavior {
        text: Some("twelve chars".into()),
        prompt_tokens: Some(100),
        cached_tokens: Some(40),
        ..Behavior::default()
    });
    let mut body = openai_chat("gpt-4o", "hi");
    body["n"] = json!(3);
    let (_, _, text) = post(&format!("{}/v1/chat/completions", m.url()), &[], &body).await;
    let v = json(&text);
    let choices = v["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 3);
    for (i, c) in choices.iter().enumerate() {
        assert_eq!(c["index"], i);
        assert_eq!(c["message"]["content"], "twelve chars");
    }
    assert_eq!(v["usage"]["prompt_tokens"], 100);
    assert_eq!(v["usage"]["completion_tokens"], 3 * 3);
    assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 40);
    let call = &m.ledger()[0];
    assert_eq!(
        (
            call.prompt_tokens,
            call.completion_tokens,
            call.cached_tokens
        ),
        (100, 9, 40)
    );
}

#[tokio::test]
async fn stream_without_usage_request() {
    let m = mock().await;
    m.push(Behavior::text("abcdefgh"));
    let mut body = openai_chat("gpt-4o", "hello");
    body["stream"] = json!(true);
    let (status, headers, text) =
        post(&format!("{}/v1/chat/completions", m.url()), &[], &body).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "text/event-stream");
    let events = parse_sse(&text);
    assert!(events.iter().all(|e| e.event.is_none()));
    assert_eq!(events.last().unwrap().data, "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| e.json())
        .collect();
    // role chunk, 4 content chunks, finish chunk.
    assert_eq!(chunks.len(), 6);
    for c in &chunks {
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["model"], "gpt-4o");
        assert_eq!(c["id"], chunks[0]["id"]);
        assert!(
            c.get("usage").is_none(),
            "no usage key unless include_usage"
        );
    }
    assert_eq!(
        chunks[0]["choices"][0]["delta"],
        json!({"role": "assistant", "content": "", "refusal": null})
    );
    let content: String = chunks[1..5]
        .iter()
        .map(|c| c["choices"][0]["delta"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(content, "abcdefgh");
    assert!(
        chunks[1..5]
            .iter()
            .all(|c| c["choices"][0]["finish_reason"].is_null())
    );
    assert_eq!(chunks[5]["choices"][0]["delta"], json!({}));
    assert_eq!(chunks[5]["choices"][0]["finish_reason"], "stop");

    let call = &m.ledger()[0];
    assert!(call.stream && call.completed);
    assert_eq!(call.completion_tokens, 2);
}

#[tokio::test]
async fn stream_with_include_usage_ends_with_usage_chunk() {
    let m = mock().await;
    m.push(Behavior::text("abcdefgh"));
    let mut body = openai_chat("gpt-4o", "hello");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let (_, _, text) = post(&format!("{}/v1/chat/completions", m.url()), &[], &body).await;
    let events = parse_sse(&text);
    assert_eq!(events.last().unwrap().data, "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| e.json())
        .collect();
    let (last, rest) = chunks.split_last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["usage"]["prompt_tokens"], 3 + 2);
    assert_eq!(last["usage"]["completion_tokens"], 2);
    assert_eq!(last["usage"]["total_tokens"], 7);
    for c in rest {
        assert!(c["usage"].is_null() && c.get("usage").is_some());
    }
}

#[tokio::test]
async fn stream_usage_absent_and_zero() {
    let m = mock().await;
    let mut body = openai_chat("gpt-4o", "hello");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});

    m.push(Behavior {
        usage: UsageMode::Absent,
        ..Behavior::default()
    });
    let (_, _, text) = post(&format!("{}/v1/chat/completions", m.url()), &[], &body).await;
    let events = parse_sse(&text);
    assert_eq!(events.last().unwrap().data, "[DONE]");
    assert!(
        events[..events.len() - 1]
            .iter()
            .all(|e| e.json()["usage"].is_null()),
        "no usage chunk when usage is absent"
    );

    m.push(Behavior {
        usage: UsageMode::Zero,
        ..Behavior::default()
    });
    let (_, _, text) = post(&format!("{}/v1/chat/completions", m.url()), &[], &body).await;
    let events = parse_sse(&text);
    let usage = events[events.len() - 2].json()["usage"].clone();
    assert_eq!(usage["prompt_tokens"], 0);
    assert_eq!(usage["completion_tokens"], 0);

    // The invoice does not depend on what was reported.
    let ledger = m.ledger();
    assert!(
        ledger
            .iter()
            .all(|c| c.prompt_tokens == 5 && c.completion_tokens > 0)
    );
}

#[tokio::test]
async fn non_stream_usage_absent_and_zero() {
    let m = mock().await;
    let url = format!("{}/v1/chat/completions", m.url());
    m.push(Behavior {
        usage: UsageMode::Absent,
        ..Behavior::default()
    });
    let (_, _, text) = post(&url, &[], &openai_chat("m", "hi")).await;
    assert!(json(&text).get("usage").is_none());
    m.push(Behavior {
        usage: UsageMode::Zero,
        ..Behavior::default()
    });
    let (_, _, text) = post(&url, &[], &openai_chat("m", "hi")).await;
    let v = json(&text);
    assert_eq!(v["usage"]["prompt_tokens"], 0);
    assert_eq!(v["usage"]["total_tokens"], 0);
    assert!(m.ledger().iter().all(|c| c.prompt_tokens == 4));
}

#[tokio::test]
async fn tool_call_non_stream_and_stream() {
    let m = mock().await;
    let url = format!("{}/v1/chat/completions", m.url());
    let tool = ToolCallSpec::new("get_weather", r#"{"city":"Paris","unit":"c"}"#);
    m.push(Behavior {
        tool_call: Some(tool.clone()),
        ..Behavior::default()
    });
    let (_, _, text) = post(&url, &[], &openai_chat("gpt-4o", "weather?")).await;
    let v = json(&text);
    let choice = &v["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert!(choice["message"]["content"].is_null());
    let call = &choice["message"]["tool_calls"][0];
    assert!(call["id"].as_str().unwrap().starts_with("call_"));
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "get_weather");
    assert_eq!(call["function"]["arguments"], tool.arguments);

    m.push(Behavior {
        tool_call: Some(tool.clone()),
        chunks: 3,
        ..Behavior::default()
    });
    let mut body = openai_chat("gpt-4o", "weather?");
    body["stream"] = json!(true);
    let (_, _, text) = post(&url, &[], &body).await;
    let events = parse_sse(&text);
    assert_eq!(events.last().unwrap().data, "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| e.json())
        .collect();
    let first = &chunks[0]["choices"][0]["delta"];
    assert_eq!(first["role"], "assistant");
    assert_eq!(first["tool_calls"][0]["index"], 0);
    assert_eq!(first["tool_calls"][0]["function"]["name"], "get_weather");
    assert!(first["tool_calls"][0]["id"].is_string());
    let pieces: Vec<&str> = chunks[1..chunks.len() - 1]
        .iter()
        .map(|c| {
            c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(pieces.len(), 3, "arguments streamed in several pieces");
    assert_eq!(pieces.concat(), tool.arguments);
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "tool_calls"
    );
}

#[tokio::test]
async fn json_mode_replies_with_json() {
    let m = mock().await;
    let url = format!("{}/v1/chat/completions", m.url());
    let mut body = openai_chat("gpt-4o", "give json");
    body["response_format"] = json!({"type": "json_object"});
    let (_, _, text) = post(&url, &[], &body).await;
    let content = json(&text)["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(json(&content).is_object());

    body["response_format"] = json!({"type": "json_schema", "json_schema": {"name": "x", "schema": {
        "type": "object", "properties": {"city": {"type": "string"}, "temp": {"type": "number"}},
        "required": ["city", "temp"]}}});
    let (_, _, text) = post(&url, &[], &body).await;
    let content = json(&text)["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    let v = json(&content);
    assert!(v["city"].is_string() && v["temp"].is_number());
}

#[tokio::test]
async fn max_tokens_caps_the_output() {
    let m = mock().await;
    m.push(Behavior::text("x".repeat(100)));
    let mut body = openai_chat("gpt-4o", "long please");
    body["max_completion_tokens"] = json!(5);
    let (_, _, text) = post(&format!("{}/v1/chat/completions", m.url()), &[], &body).await;
    let v = json(&text);
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(
        v["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .len(),
        20
    );
    assert_eq!(v["usage"]["completion_tokens"], 5);
}

#[tokio::test]
async fn validation_errors_are_openai_shaped_400s() {
    let m = mock().await;
    let url = format!("{}/v1/chat/completions", m.url());
    let (status, _, text) = post(
        &url,
        &[],
        &json!({"messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(status, 400);
    let v = json(&text);
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert!(v["error"]["param"].is_null());
    assert!(v["error"]["message"].as_str().unwrap().contains("model"));

    let (status, _, text) = post(&url, &[], &json!({"model": "m", "messages": []})).await;
    assert_eq!(status, 400);
    assert_eq!(json(&text)["error"]["param"], "messages");

    let resp = client()
        .post(&url)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert!(
        m.ledger()
            .iter()
            .all(|c| c.status == 400 && c.prompt_tokens == 0)
    );
}

#[tokio::test]
async fn bearer_auth_and_azure_api_key() {
    let m = MockServer::start(MockConfig {
        openai_key: Some("sk-test-canary".into()),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let url = format!("{}/v1/chat/completions", m.url());
    let body = openai_chat("gpt-4o", "hi");
    let (status, _, text) = post(&url, &[], &body).await;
    assert_eq!(status, 401);
    let v = json(&text);
    assert_eq!(v["error"]["code"], "invalid_api_key");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert!(!text.contains("sk-test-canary"));
    let (status, _, _) = post(&url, &[("authorization", "Bearer wrong")], &body).await;
    assert_eq!(status, 401);
    let (status, _, _) = post(&url, &[("authorization", "Bearer sk-test-canary")], &body).await;
    assert_eq!(status, 200);

    // Azure: `api-key` header, the deployment is the model.
    let azure = format!(
        "{}/openai/deployments/my-gpt/chat/completions?api-version=2024-10-21",
        m.url()
    );
    let (status, _, _) = post(&azure, &[("authorization", "Bearer sk-test-canary")], &body).await;
    assert_eq!(status, 401, "Azure wants api-key, not Bearer");
    let (status, _, text) = post(
        &azure,
        &[("api-key", "sk-test-canary")],
        &json!({"messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(json(&text)["model"], "my-gpt");

    let (status, _) = get(&format!("{}/v1/models", m.url()), &[]).await;
    assert_eq!(status, 401);
    let ledger = m.ledger();
    assert_eq!(
        ledger.iter().map(|c| c.status).collect::<Vec<_>>(),
        vec![401, 401, 200, 401, 200]
    );
    assert_eq!(ledger[4].model, "my-gpt");
}

#[tokio::test]
async fn models_list_and_retrieve() {
    let m = mock().await;
    let (status, text) = get(&format!("{}/v1/models", m.url()), &[]).await;
    assert_eq!(status, 200);
    let v = json(&text);
    assert_eq!(v["object"], "list");
    assert!(
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["id"] == "gpt-4o-mini" && d["object"] == "model")
    );
    let (status, text) = get(&format!("{}/v1/models/gpt-4o", m.url()), &[]).await;
    assert_eq!(status, 200);
    assert_eq!(json(&text)["id"], "gpt-4o");
    assert_eq!(m.call_count(), 0, "model lists are not inference calls");
}

fn decode_b64(s: &str) -> Vec<f32> {
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .unwrap()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

#[tokio::test]
async fn embeddings_float_and_base64() {
    let m = mock().await;
    let url = format!("{}/v1/embeddings", m.url());
    let (status, _, text) = post(
        &url,
        &[],
        &json!({"model": "text-embedding-3-small", "input": ["hello", "world!!"], "encoding_format": "float"}),
    )
    .await;
    assert_eq!(status, 200);
    let v = json(&text);
    assert_eq!(v["object"], "list");
    assert_eq!(v["model"], "text-embedding-3-small");
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert_eq!(data[1]["index"], 1);
    assert_eq!(data[0]["object"], "embedding");
    let floats: Vec<f32> = data[0]["embedding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect();
    assert_eq!(floats.len(), 16);
    let norm: f32 = floats.iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-4);
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens": 2 + 2, "total_tokens": 4})
    );

    // base64 (the Python SDK's default): same vector, little-endian f32.
    let (_, _, text) = post(
        &url,
        &[],
        &json!({"model": "text-embedding-3-small", "input": "hello", "encoding_format": "base64"}),
    )
    .await;
    let v = json(&text);
    let decoded = decode_b64(v["data"][0]["embedding"].as_str().unwrap());
    assert_eq!(decoded.len(), 16);
    for (a, b) in decoded.iter().zip(&floats) {
        assert!((a - b).abs() < 1e-6);
    }

    // dimensions and token-array input.
    let (_, _, text) = post(
        &url,
        &[],
        &json!({"model": "e", "input": [[1, 2, 3], [4, 5]], "dimensions": 8}),
    )
    .await;
    let v = json(&text);
    assert_eq!(v["data"][0]["embedding"].as_array().unwrap().len(), 8);
    assert_eq!(v["usage"]["prompt_tokens"], 5);

    let (status, _, _) = post(&url, &[], &json!({"model": "e", "input": []})).await;
    assert_eq!(status, 400);
    let ledger = m.ledger();
    assert_eq!(ledger.len(), 4);
    assert_eq!(
        (ledger[0].prompt_tokens, ledger[0].completion_tokens),
        (4, 0)
    );
}

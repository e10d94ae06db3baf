//! The OpenAI-shaped API end to end: gateway and mock upstream on port 0.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use kairos_testkit::{Behavior, MockConfig, StreamFault, ToolCallSpec, UsageMode};
use serde_json::{Value, json};

#[tokio::test]
async fn chat_non_stream_headers_body_and_ledger() {
    let gw = start_gw().await;
    let r = gw
        .chat(json!({"model": "gpt-4o-mini", "messages": user("hello there"), "metadata": {"team": "a"}, "user": "u-1"}))
        .await;
    assert_eq!(r.status(), 200);
    let h = r.headers().clone();
    let id = request_id(&r);
    assert_eq!(h["x-kairos-model"], "gpt-4o-mini");
    assert_eq!(h["x-kairos-provider"], "openai");
    let cost: f64 = h["x-kairos-cost-usd"].to_str().unwrap().parse().unwrap();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert!(
        body["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .len()
            > 5
    );
    let usage = &body["usage"];
    let (p, c) = (
        usage["prompt_tokens"].as_u64().unwrap(),
        usage["completion_tokens"].as_u64().unwrap(),
    );
    // gpt-4o-mini: $0.15 / $0.60 per 1M tokens.
    let expect_micros = ((p * 150_000 + c * 600_000) as f64 / 1e6).round();
    assert_eq!((cost * 1e6).round(), expect_micros);
    assert_eq!(usage["cost"].as_f64().unwrap(), cost);

    let row = gw.row(&id).await;
    assert_eq!(row.status_code, 200);
    assert_eq!(row.outcome, "ok");
    assert_eq!(row.requested_model, "gpt-4o-mini");
    assert_eq!(row.served_model.as_deref(), Some("gpt-4o-mini"));
    assert_eq!(row.provider.as_deref(), Some("openai"));
    assert_eq!((row.input_tokens as u64, row.output_tokens as u64), (p, c));
    assert_eq!(row.cost_micros, Some(expect_micros as i64));
    assert_eq!(row.usage_source, "provider");
    assert_eq!(row.key_id, "master");
    assert_eq!(row.end_user.as_deref(), Some("u-1"));
    assert!(row.metadata.as_deref().unwrap().contains("\"team\":\"a\""));
    assert!(row.latency_total_us >= row.latency_upstream_us.unwrap());
    assert_eq!(row.attempts, 1);
    // The provider's own invoice agrees, keyed by our request id.
    let billed = gw.mock.ledger();
    assert_eq!(billed.len(), 1);
    assert_eq!(billed[0].request_id.as_deref(), Some(id.as_str()));
    assert_eq!(
        (
            billed[0].prompt_tokens as u64,
            billed[0].completion_tokens as u64
        ),
        (p, c)
    );
}

#[tokio::test]
async fn header_metadata_and_trace_id() {
    let gw = start_gw().await;
    let r = gw
        .post("/v1/chat/completions")
        .header("x-kairos-metadata", r#"{"team":"hdr","env":"prod"}"#)
        .header("x-kairos-trace-id", "trace-123")
        .body(json!({"model": "gpt-4o-mini", "messages": user("x"), "metadata": {"team": "body", "app": "b"}}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-kairos-trace-id"], "trace-123");
    let row = gw.row(&request_id(&r)).await;
    assert_eq!(row.trace_id, "trace-123");
    let md: Value = serde_json::from_str(row.metadata.as_deref().unwrap()).unwrap();
    assert_eq!(md, json!({"team": "hdr", "env": "prod", "app": "b"}));

    let r = gw
        .post("/v1/chat/completions")
        .header("x-kairos-metadata", "not json")
        .body(json!({"model": "gpt-4o-mini", "messages": user("x")}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(gw.mock.call_count(), 1);
}

#[tokio::test]
async fn stream_with_usage_ends_with_usage_and_done() {
    let gw = start_gw().await;
    let r = gw
        .chat(json!({"model": "gpt-4o-mini", "messages": user("stream please"), "stream": true, "stream_options": {"include_usage": true}}))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let id = request_id(&r);
    let ev = sse_events(r).await;
    assert_eq!(ev.last().unwrap().data, "[DONE]");
    let chunks: Vec<Value> = ev[..ev.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(&e.data).unwrap())
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let usage_chunk = chunks.last().unwrap();
    assert_eq!(usage_chunk["choices"], json!([]));
    let u = &usage_chunk["usage"];
    assert!(u["cost"].as_f64().unwrap() > 0.0);
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    let row = gw.row(&id).await;
    assert_eq!(row.outcome, "ok");
    assert!(row.stream);
    assert!(row.ttft_us.is_some());
    assert_eq!(
        row.output_tokens as u64,
        u["completion_tokens"].as_u64().unwrap()
    );
    assert_eq!(
        row.cost_micros.unwrap() as f64,
        (u["cost"].as_f64().unwrap() * 1e6).round()
    );
    assert!(!text.is_empty());
    // We asked the upstream for usage on the caller's behalf.
    let sent: Value = serde_json::from_str(&gw.mock.requests()[0].body).unwrap();
    assert_eq!(sent["stream_options"]["include_usage"], true);
}

#[tokio::test]
async fn stream_without_include_usage_strips_the_usage_chunk_but_bills() {
    let gw = start_gw().await;
    let r = gw
        .chat(json!({"model": "gpt-4o-mini", "messages": user("hi"), "stream": true}))
        .await;
    let id = request_id(&r);
    let ev = sse_events(r).await;
    assert_eq!(ev.last().unwrap().data, "[DONE]");
    for e in &ev[..ev.len() - 1] {
        let c: Value = serde_json::from_str(&e.data).unwrap();
        assert_ne!(c["choices"], json!([]), "usage chunk leaked: {c}");
    }
    let row = gw.row(&id).await;
    assert_eq!(row.usage_source, "provider");
    assert!(row.cost_micros.unwrap() > 0);
    // Stream and non-stream of the same prompt cost the same (A5).
    let r2 = gw
        .chat(json!({"model": "gpt-4o-mini", "messages": user("hi")}))
        .await;
    let row2 = gw.row(&request_id(&r2)).await;
    assert_eq!(
        (row.input_tokens, row.output_tokens, row.cost_micros),
        (row2.input_tokens, row2.output_tokens, row2.cost_micros)
    );
}

#[tokio::test]
async fn cut_stream_ends_with_an_error_event_and_no_done() {
    // U12: clean EOF without [DONE] must never look like success.
    let gw = start_gw().await;
    gw.mock.push(Behavior {
        chunks: 6,
        stream_fault: Some(StreamFault::CutAfter(3)),
        ..Default::default()
    });
    let r = gw
        .chat(json!({"model": "gpt-4o-mini", "messages": user("long answer"), "stream": true}))
        .await;
    assert_eq!(r.status(), 200);
    let id = request_id(&r);
    let ev = sse_events(r).await;
    assert!(
        ev.iter().all(|e| e.data != "[DONE]"),
        "a cut stream ended with [DONE]"
    );
    let last: Value = serde_json::from_str(&ev.last().unwrap().data).unwrap();
    assert_eq!(last["error"]["code"], "upstream_cut", "{last}");
    let row = gw.row(&id).await;
    assert_eq!(row.outcome, "upstream_cut");
    assert_eq!(row.error_kind.as_deref(), Some("upstream_cut"));
    // Partial output is billed (estimated: the usage chunk never came).
    assert!(row.output_tokens > 0, "{row:?}");
    assert_eq!(row.usage_source, "estimated");
    assert!(gw.mock.ledger()[0].completion_tokens > 0);
}

#[tokio::test]
async fn stalled_stream_times_out_with_an_error_event() {
    // U11: idle longer than the stream idle timeout.
    let mut mc = MockConfig::default();
    let gw = start_full("", "stream_idle_timeout_ms = 300", &mut mc).await;
    gw.mock.push(Behavior {
        chunks: 5,
        stream_fault: Some(StreamFault::StallAfter(2)),
        ..Default::default()
    });
    let r = gw
        .chat(json!({"model": "gpt-4o-mini", "messages": user("x"), "stream": true}))
        .await;
    let id = request_id(&r);
    let ev = sse_events(r).await;
    assert!(ev.iter().all(|e| e.data != "[DONE]"));
    let last: Value = serde_json::from_str(&ev.last().unwrap().data).unwrap();
    assert_eq!(last["error"]["code"], "upstream_stalled");
    let row = gw.row(&id).await;
    assert_eq!(row.outcome, "upstream_stalled");
}

#[tokio::test]
async fn error_before_the_first_chunk_is_a_plain_http_error() {
    let gw = start_gw().await;
    gw.mock.push(Behavior {
        status: 503,
        retry_after: Some("3".into()),
        ..Default::default()
    });
    let r = gw
        .chat(json!({"model": "gpt-4o-mini", "messages": user("x"), "stream": true}))
        .await;
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "3");
    assert_eq!(r.headers()["x-kairos-error-source"], "provider");
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["error"]["code"], "provider_overloaded");
    // The provider's Retry-After now pauses that target for everyone: the next request to it
    // is answered at once, without an upstream call, with the time left.
    let calls = gw.mock.call_count();
    let r = gw
        .chat(json!({"model": "gpt-4o-mini", "messages": user("x")}))
        .await;
    assert_eq!(r.status(), 429);
    assert!(
        r.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            <= 3
    );
    assert_eq!(gw.mock.call_count(), calls);
    // Once the upstream's first event has been relayed (the 200 is out), a malformed line or
    // an error event ends the stream with an error event, never with [DONE] (another model:
    // gpt-4o-mini is still cooling down).
    for (fault, code) in [
        (StreamFault::MalformedAfter(0), "upstream_invalid_response"),
        (StreamFault::ErrorEventAfter(0), "provider_server_error"),
    ] {
        gw.mock.push(Behavior {
            stream_fault: Some(fault),
            ..Default::default()
        });
        let r = gw
            .chat(json!({"model": "gpt-4o", "messages": user("x"), "stream": true}))
            .await;
        let ev = sse_events(r).await;
        assert!(ev.iter().all(|e| e.data != "[DONE]"));
        let last: Value = serde_json::from_str(&ev.last().unwrap().data).unwrap();
        assert_eq!(last["error"]["code"], code, "{last}");
    }
}

#[tokio::test]
async fn upstream_error_mapping_table() {
    let gw = start_gw().await;
    // (scripted status, error_type, expected status, expected code)
    let cases = [
        (429, None, 429, "rate_limit_exceeded"),
        (429, Some("insufficient_quota"), 429, "insufficient_quota"),
        (
            400,
            Some("context_length_exceeded"),
            400,
            "context_length_exceeded",
        ),
        (400, None, 400, "provider_bad_request"),
        (401, None, 502, "provider_auth"),
        (404, None, 502, "provider_not_found"),
        (500, None, 502, "provider_server_error"),
        (529, None, 503, "provider_overloaded"),
    ];
    for (i, (status, et, expect, code)) in cases.into_iter().enumerate() {
        gw.mock.push(Behavior {
            status,
            error_type: et.map(str::to_owned),
            error_message: Some(format!(
                "boom with key {OPENAI_KEY} at https://internal.example/x"
            )),
            ..Default::default()
        });
        let r = gw
            .chat(json!({"model": "gpt-4o-mini", "messages": user("x")}))
            .await;
        assert_eq!(r.status(), expect, "case {status} {et:?}");
        let id = request_id(&r);
        let text = r.text().await.unwrap();
        let b: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(b["error"]["code"], code, "case {status}: {b}");
        assert!(!text.contains(OPENAI_KEY), "key leaked: {text}");
        assert!(!text.contains("internal.example"), "url leaked: {text}");
        let row = gw.row(&id).await;
        assert_eq!(row.status_code, i32::from(expect));
        assert_eq!(row.outcome, "error");
        assert_eq!(
            row.cost_micros, None,
            "an upstream error may not be known free"
        );
        // Exactly one upstream call per request: nothing is retried in the core.
        assert_eq!(gw.mock.call_count(), i + 1);
    }
}

#[tokio::test]
async fn malformed_upstream_body_is_a_502() {
    let gw = start_gw().await;
    gw.mock.push(Behavior {
        malformed_body: true,
        ..Default::default()
    });
    let r = gw
        .chat(json!({"model": "gpt-4o-mini", "messages": user("x")}))
        .await;
    assert_eq!(r.status(), 502);
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["error"]["code"], "upstream_invalid_response");
}

#[tokio::test]
async fn redirects_are_never_followed() {
    // U17
    let gw = start_gw().await;
    gw.mock.push(Behavior {
        redirect_to: Some("http://169.254.169.254/latest/meta-data".into()),
        ..Default::default()
    });
    let r = gw
        .chat(json!({"model": "gpt-4o-mini", "messages": user("x")}))
        .await;
    assert!(r.status().is_server_error());
    assert_eq!(gw.mock.call_count(), 1);
}

#[tokio::test]
async fn connection_refused_is_fast_and_free() {
    // U1
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    let extra = format!(
        "[providers.dead]\nkind = \"openai_compatible\"\nbase_url = \"http://127.0.0.1:{port}/v1\"\n[[models]]\nid = \"dead-model\"\nprovider = \"dead\"\nprice = {{ input = 1.0, output = 1.0 }}\n"
    );
    let gw = start_with(&extra, MockConfig::default()).await;
    let t = std::time::Instant::now();
    let r = gw
        .chat(json!({"model": "dead-model", "messages": user("x")}))
        .await;
    assert!(t.elapsed() < std::time::Duration::from_secs(2));
    assert_eq!(r.status(), 502);
    let id = request_id(&r);
    let text = r.text().await.unwrap();
    assert!(!text.contains("127.0.0.1"), "{text}");
    let b: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(b["error"]["code"], "provider_connect_failed");
    let row = gw.row(&id).await;
    assert_eq!(row.error_kind.as_deref(), Some("provider_connect_failed"));
    assert_eq!(row.output_tokens, 0);
}

#[tokio::test]
async fn usage_absent_is_estimated_and_zero_stays_zero() {
    // U14
    let gw = start_gw().await;
    gw.mock.push(Behavior {
        usage: UsageMode::Absent,
        ..Default::default()
    });
    let r = gw
        .chat(json!({"model": "gpt-4o-mini", "messages": user("how many tokens is this")}))
        .await;
    assert_eq!(r.status(), 200);
    let row = gw.row(&request_id(&r)).await;
    assert_eq!(row.usage_source, "estimated");
    assert!(row.input_tokens > 0 && row.output_tokens > 0, "{row:?}");
    assert!(row.cost_micros.is_some());

    gw.mock.push(Behavior {
        usage: UsageMode::Zero,
        ..Default::default()
    });
    let r = gw
        .chat(json!({"model": "gpt-4o-mini", "messages": user("x")}))
        .await;
    let row = gw.row(&request_id(&r)).await;
    assert_eq!(row.usage_source, "provider");
    assert_eq!(
        (row.input_tokens, row.output_tokens, row.cost_micros),
        (0, 0, Some(0))
    );
}

#[tokio::test]
async fn multibyte_characters_split_across_reads_are_reassembled() {
    // U15
    let gw = start_gw().await;
    gw.mock.push(Behavior {
        split_utf8: true,
        text: Some("héllo wörld 😀 ✓".into()),
        ..Default::default()
    });
    let r = gw
        .chat(json!({"model": "gpt-4o-mini", "messages": user("x"), "stream": true}))
        .await;
    let ev = sse_events(r).await;
    let text: String = ev[..ev.len() - 1]
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(&e.data).ok())
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(text, "héllo wörld 😀 ✓");
}

#[tokio::test]
async fn tools_round_trip_non_stream_and_stream() {
    let gw = start_gw().await;
    let tools = json!([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]);
    gw.mock.push(Behavior {
        tool_call: Some(ToolCallSpec::new("get_weather", r#"{"city":"Paris"}"#)),
        ..Default::default()
    });
    let r = gw
        .chat(json!({"model": "gpt-4o-mini", "messages": user("weather?"), "tools": tools, "tool_choice": "auto"}))
        .await;
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["choices"][0]["finish_reason"], "tool_calls");
    let call = &b["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_weather");
    assert_eq!(call["function"]["arguments"], r#"{"city":"Paris"}"#);

    gw.mock.push(Behavior {
        tool_call: Some(ToolCallSpec::new("get_weather", r#"{"city":"Paris"}"#)),
        ..Default::default()
    });
    let r = gw
        .chat(json!({"model": "gpt-4o-mini", "messages": user("weather?"), "tools": tools, "stream": true}))
        .await;
    let ev = sse_events(r).await;
    let mut args = String::new();
    let mut finish = None;
    for e in &ev[..ev.len() - 1] {
        let c: Value = serde_json::from_str(&e.data).unwrap();
        if let Some(tc) = c["choices"][0]["delta"]["tool_calls"].as_array() {
            args.push_str(tc[0]["function"]["arguments"].as_str().unwrap_or(""));
        }
        if let Some(f) = c["choices"][0]["finish_reason"].as_str() {
            finish = Some(f.to_owned());
        }
    }
    assert_eq!(args, r#"{"city":"Paris"}"#);
    assert_eq!(finish.as_deref(), Some("tool_calls"));
}

#[tokio::test]
async fn json_mode_and_extra_fields_are_forwarded_to_openai_compatible_upstreams() {
    let gw = start_gw().await;
    let r = gw
        .chat(json!({"model": "gpt-4o-mini", "messages": user("json"), "response_format": {"type": "json_object"}, "seed": 7, "top_k": 4, "n": 2, "stop": ["END"]}))
        .await;
    assert_eq!(r.status(), 200);
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["choices"].as_array().unwrap().len(), 2);
    serde_json::from_str::<Value>(b["choices"][0]["message"]["content"].as_str().unwrap())
        .expect("json content");
    let sent: Value = serde_json::from_str(&gw.mock.requests()[0].body).unwrap();
    assert_eq!(sent["top_k"], 4);
    assert_eq!(sent["seed"], 7);
    assert_eq!(sent["model"], "gpt-4o-mini");
    assert!(sent.get("kairos").is_none());
}

#[tokio::test]
async fn models_and_embeddings() {
    let gw = start_gw().await;
    let r = gw
        .http
        .get(format!("{}/v1/models", gw.url))
        .bearer_auth(MASTER)
        .send()
        .await
        .unwrap();
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["object"], "list");
    let ids: Vec<&str> = b["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert!(ids.len() >= 40, "{}", ids.len()); // the catalog models of the three configured providers
    for want in [
        "gpt-4o-mini",
        "claude-sonnet-4-5",
        "gemini-2.5-flash",
        "text-embedding-3-small",
    ] {
        assert!(ids.contains(&want), "{want} missing");
    }
    let r = gw
        .http
        .get(format!("{}/v1/models/gpt-4o", gw.url))
        .bearer_auth(MASTER)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = gw
        .http
        .get(format!("{}/v1/models", gw.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    for fmt in ["float", "base64"] {
        let r = gw
            .post("/v1/embeddings")
            .body(json!({"model": "text-embedding-3-small", "input": ["a", "b"], "encoding_format": fmt}).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let id = request_id(&r);
        let b: Value = r.json().await.unwrap();
        assert_eq!(b["data"].as_array().unwrap().len(), 2);
        if fmt == "base64" {
            assert!(b["data"][0]["embedding"].is_string());
        } else {
            assert!(b["data"][0]["embedding"].is_array());
        }
        let row = gw.row(&id).await;
        assert_eq!(row.route, "embeddings");
        assert!(row.input_tokens > 0);
    }
    // A chat model is not an embedding model.
    let r = gw
        .post("/v1/embeddings")
        .body(json!({"model": "gpt-4o-mini", "input": "a"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn healthz_and_readyz() {
    let gw = start_gw().await;
    let r = gw
        .http
        .get(format!("{}/healthz", gw.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = gw
        .http
        .get(format!("{}/readyz", gw.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["store"], "sqlite");
}

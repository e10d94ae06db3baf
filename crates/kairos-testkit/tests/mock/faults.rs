use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use kairos_testkit::{Behavior, MockConfig, MockServer, StreamFault};
use serde_json::{Value, json};

use crate::common::{ANTHROPIC_VERSION, client, eventually, json, openai_chat, parse_sse, post};

async fn mock() -> MockServer {
    MockServer::start(MockConfig::default()).await.unwrap()
}

fn stream_body(model: &str, text: &str) -> Value {
    let mut b = openai_chat(model, text);
    b["stream"] = json!(true);
    b
}

fn chat_url(m: &MockServer) -> String {
    format!("{}/v1/chat/completions", m.url())
}

/// Content deltas of an OpenAI stream.
fn contents(events: &[crate::common::SseEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(&e.data).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        })
        .collect()
}

#[tokio::test]
async fn fifo_script_statuses_and_retry_after() {
    let m = mock().await;
    m.push(Behavior {
        status: 503,
        retry_after: Some("2".into()),
        ..Behavior::default()
    });
    m.push(Behavior {
        status: 429,
        error_type: Some("insufficient_quota".into()),
        ..Behavior::default()
    });
    m.push(Behavior::status(200));
    let url = chat_url(&m);
    let body = openai_chat("gpt-4o", "hi");

    let (status, headers, text) = post(&url, &[], &body).await;
    assert_eq!(status, 503);
    assert_eq!(headers["retry-after"], "2");
    let v = json(&text);
    assert_eq!(v["error"]["type"], "server_error");
    assert!(v["error"]["param"].is_null());
    assert!(v["error"]["message"].is_string());

    let (status, headers, text) = post(&url, &[], &body).await;
    assert_eq!(status, 429);
    assert!(!headers.contains_key("retry-after"));
    let v = json(&text);
    assert_eq!(v["error"]["code"], "insufficient_quota");
    assert_eq!(v["error"]["type"], "insufficient_quota");

    let (status, _, _) = post(&url, &[], &body).await;
    assert_eq!(status, 200);
    assert_eq!(m.call_count(), 3);
    let ledger = m.ledger();
    assert_eq!(
        ledger.iter().map(|c| c.status).collect::<Vec<_>>(),
        vec![503, 429, 200]
    );
    assert_eq!(
        (
            ledger[0].prompt_tokens,
            ledger[0].completion_tokens,
            ledger[0].completed
        ),
        (0, 0, false),
        "errors bill nothing"
    );
}

#[tokio::test]
async fn precedence_model_script_then_fifo_then_directive_then_defaults() {
    let m = mock().await;
    let url = chat_url(&m);
    m.push(Behavior::status(500));
    m.push_for_model("model-b", Behavior::status(429));
    let directive = "hi [[mock {\"status\": 418}]]";

    let (status, _, _) = post(&url, &[], &openai_chat("model-b", directive)).await;
    assert_eq!(status, 429, "model script first");
    let (status, _, _) = post(&url, &[], &openai_chat("model-a", directive)).await;
    assert_eq!(status, 500, "FIFO before directive");
    let (status, _, _) = post(&url, &[], &openai_chat("model-b", directive)).await;
    assert_eq!(status, 418, "directive before defaults");
    let (status, _, _) = post(&url, &[], &openai_chat("model-b", "plain")).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn directives_anywhere_and_bad_directive() {
    let m = mock().await;
    let (status, headers, text) = post(
        &chat_url(&m),
        &[],
        &openai_chat(
            "gpt-4o",
            r#"[[mock {"status":503,"retry_after":"2"}]] please"#,
        ),
    )
    .await;
    assert_eq!(
        (status, &headers["retry-after"]),
        (503, &"2".parse().unwrap())
    );
    assert!(json(&text)["error"].is_object());

    // In an Anthropic system prompt.
    let (status, _, text) = post(
        &format!("{}/v1/messages", m.url()),
        &[ANTHROPIC_VERSION],
        &json!({"model": "claude", "max_tokens": 10,
                "system": [{"type": "text", "text": "[[mock {\"text\": \"from directive\"}]]"}],
                "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(json(&text)["content"][0]["text"], "from directive");

    let (status, _, text) = post(
        &chat_url(&m),
        &[],
        &openai_chat("gpt-4o", "[[mock {\"status\": }]]"),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        json(&text)["error"]["message"]
            .as_str()
            .unwrap()
            .contains("directive")
    );
}

#[tokio::test]
async fn cut_stream_ends_cleanly_without_done_and_bills_partially() {
    let m = mock().await;
    m.push(Behavior {
        text: Some("abcdefgh".into()),
        completion_tokens: Some(10),
        stream_fault: Some(StreamFault::CutAfter(2)),
        ..Behavior::default()
    });
    let (status, _, text) = post(&chat_url(&m), &[], &stream_body("gpt-4o", "hi")).await;
    assert_eq!(status, 200);
    let events = parse_sse(&text);
    assert_eq!(contents(&events), vec!["ab", "cd"]);
    assert!(events.iter().all(|e| e.data != "[DONE]"));
    assert!(
        !text.contains("finish_reason\":\"stop"),
        "no finish chunk after a cut"
    );
    let call = &m.ledger()[0];
    assert!(!call.completed);
    assert_eq!(call.completion_tokens, 5, "half the chars of 10 tokens");
    assert_eq!(m.disconnects(), 0, "a cut is not a client disconnect");
}

#[tokio::test]
async fn stall_keeps_the_connection_silent_and_bills_partially() {
    let m = mock().await;
    m.push(Behavior {
        text: Some("abcdefgh".into()),
        stream_fault: Some(StreamFault::StallAfter(1)),
        ..Behavior::default()
    });
    let resp = client()
        .post(chat_url(&m))
        .json(&stream_body("gpt-4o", "hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let mut seen = String::new();
    while !seen.contains("\"ab\"") {
        let chunk = body.next().await.unwrap().unwrap();
        seen.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    // Nothing more comes: the client's idle timeout fires.
    let next = tokio::time::timeout(Duration::from_millis(300), body.next()).await;
    assert!(next.is_err(), "stalled stream sent {next:?}");
    let call = &m.ledger()[0];
    assert_eq!((call.completion_tokens, call.completed), (1, false));
    drop(body);
    eventually("the mock sees the client leave", || m.disconnects() == 1).await;
}

#[tokio::test]
async fn client_disconnect_mid_stream_is_counted() {
    let m = mock().await;
    m.push(Behavior {
        text: Some("x".repeat(200)),
        chunks: 50,
        itl_ms: 20,
        ..Behavior::default()
    });
    let resp = client()
        .post(chat_url(&m))
        .json(&stream_body("gpt-4o", "hi"))
        .send()
        .await
        .unwrap();
    let mut body = resp.bytes_stream();
    let mut seen = String::new();
    while seen.matches("\"content\":\"xxxx\"").count() < 3 {
        let chunk = body.next().await.unwrap().unwrap();
        seen.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    drop(body);
    eventually("the mock sees the client leave", || m.disconnects() == 1).await;
    let call = &m.ledger()[0];
    assert!(!call.completed);
    assert!(
        call.completion_tokens >= 3 && call.completion_tokens < 50,
        "partial: {}",
        call.completion_tokens
    );
}

#[tokio::test]
async fn slow_headers_and_client_timeout_count_a_disconnect() {
    let m = mock().await;
    m.push(Behavior {
        headers_delay_ms: 5_000,
        ..Behavior::default()
    });
    let err = client()
        .post(chat_url(&m))
        .timeout(Duration::from_millis(150))
        .json(&openai_chat("gpt-4o", "hi"))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout());
    eventually("the mock sees the client leave", || m.disconnects() == 1).await;
    assert!(m.ledger().is_empty(), "nothing billed before headers");
    assert_eq!(m.call_count(), 1);
}

#[tokio::test]
async fn delays_are_real() {
    let m = mock().await;
    m.push(Behavior {
        headers_delay_ms: 100,
        ttft_ms: 100,
        text: Some("abcd".into()),
        chunks: 2,
        ..Behavior::default()
    });
    let start = Instant::now();
    let resp = client()
        .post(chat_url(&m))
        .json(&stream_body("gpt-4o", "hi"))
        .send()
        .await
        .unwrap();
    assert!(
        start.elapsed() >= Duration::from_millis(100),
        "headers delayed"
    );
    let text = resp.text().await.unwrap();
    assert!(
        start.elapsed() >= Duration::from_millis(200),
        "first token delayed"
    );
    assert_eq!(contents(&parse_sse(&text)), vec!["ab", "cd"]);
}

#[tokio::test]
async fn malformed_stream_line_and_body() {
    let m = mock().await;
    m.push(Behavior {
        stream_fault: Some(StreamFault::MalformedAfter(1)),
        ..Behavior::default()
    });
    let (_, _, text) = post(&chat_url(&m), &[], &stream_body("gpt-4o", "hi")).await;
    let events = parse_sse(&text);
    assert_eq!(events.last().unwrap().data, "{garbage");
    assert_eq!(contents(&events).len(), 1);

    m.push(Behavior {
        malformed_body: true,
        ..Behavior::default()
    });
    let (status, _, text) = post(&chat_url(&m), &[], &openai_chat("gpt-4o", "hi")).await;
    assert_eq!(status, 200);
    assert_eq!(text, "{\"choices\":[");
    assert!(serde_json::from_str::<Value>(&text).is_err());
    let ledger = m.ledger();
    assert!(!ledger[0].completed);
    assert!(
        ledger[1].completed && ledger[1].completion_tokens > 0,
        "billed"
    );
}

#[tokio::test]
async fn openai_in_stream_error_event() {
    let m = mock().await;
    m.push(Behavior {
        stream_fault: Some(StreamFault::ErrorEventAfter(2)),
        ..Behavior::default()
    });
    let (_, _, text) = post(&chat_url(&m), &[], &stream_body("gpt-4o", "hi")).await;
    let events = parse_sse(&text);
    let last = events.last().unwrap().json();
    assert_eq!(last["error"]["type"], "server_error");
    assert!(last["error"]["message"].is_string());
    assert_eq!(contents(&events).len(), 2);
    assert!(events.iter().all(|e| e.data != "[DONE]"));
}

#[tokio::test]
async fn abort_breaks_the_transfer() {
    let m = mock().await;
    m.push(Behavior {
        stream_fault: Some(StreamFault::AbortAfter(1)),
        ..Behavior::default()
    });
    let resp = client()
        .post(chat_url(&m))
        .json(&stream_body("gpt-4o", "hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.text().await.is_err(),
        "the chunked body never terminates"
    );
    let call = &m.ledger()[0];
    assert!(!call.completed);
    assert_eq!(m.disconnects(), 0, "the mock aborted, not the client");
}

#[tokio::test]
async fn split_utf8_writes_tiny_frames() {
    let m = mock().await;
    m.push(Behavior {
        split_utf8: true,
        ..Behavior::default()
    });
    let resp = client()
        .post(chat_url(&m))
        .json(&stream_body("gpt-4o", "hi"))
        .send()
        .await
        .unwrap();
    let mut body = resp.bytes_stream();
    let mut frames = Vec::new();
    while let Some(frame) = body.next().await {
        frames.push(frame.unwrap());
    }
    assert!(frames.iter().all(|f| f.len() <= 3), "frames of 1-3 bytes");
    assert!(
        frames.iter().any(|f| std::str::from_utf8(f).is_err()),
        "some frame splits a multi-byte char"
    );
    let all: Vec<u8> = frames.concat();
    let text = String::from_utf8(all).unwrap();
    let events = parse_sse(&text);
    let content = contents(&events).concat();
    assert!(content.contains('é') && content.contains('😀'));
    assert_eq!(events.last().unwrap().data, "[DONE]");
    assert!(m.ledger()[0].completed);
}

#[tokio::test]
async fn redirect_is_a_302_with_location() {
    let m = mock().await;
    m.push(Behavior {
        redirect_to: Some("http://169.254.169.254/latest/meta-data/".into()),
        ..Behavior::default()
    });
    let resp = client()
        .post(chat_url(&m))
        .json(&openai_chat("gpt-4o", "hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 302);
    assert_eq!(
        resp.headers()["location"],
        "http://169.254.169.254/latest/meta-data/"
    );
    assert_eq!(m.ledger()[0].status, 302);
}

#[tokio::test]
async fn finish_reason_override_and_bill_on_error() {
    let m = mock().await;
    m.push(Behavior {
        finish_reason: Some("length".into()),
        ..Behavior::default()
    });
    let (_, _, text) = post(&chat_url(&m), &[], &openai_chat("gpt-4o", "hi")).await;
    assert_eq!(json(&text)["choices"][0]["finish_reason"], "length");

    m.push(Behavior {
        status: 500,
        bill_on_error: true,
        ..Behavior::default()
    });
    let (status, _, _) = post(&chat_url(&m), &[], &openai_chat("gpt-4o", "hi")).await;
    assert_eq!(status, 500);
    let call = &m.ledger()[1];
    assert_eq!(call.status, 500);
    assert!(call.prompt_tokens > 0 && call.completion_tokens > 0);
}

#[tokio::test]
async fn ledger_carries_the_request_id() {
    let m = mock().await;
    let (status, _, _) = post(
        &chat_url(&m),
        &[("x-kairos-request-id", "req-123")],
        &openai_chat("gpt-4o", "hi"),
    )
    .await;
    assert_eq!(status, 200);
    let (_, _, _) = post(&chat_url(&m), &[], &openai_chat("gpt-4o", "hi")).await;
    let ids: Vec<Option<String>> = m.ledger().into_iter().map(|c| c.request_id).collect();
    assert_eq!(ids, vec![Some("req-123".to_owned()), None]);
}

#[tokio::test]
async fn record_off_keeps_counters_only() {
    let m = MockServer::start(MockConfig::bench()).await.unwrap();
    let (status, _, _) = post(&chat_url(&m), &[], &openai_chat("gpt-4o", "hi")).await;
    assert_eq!(status, 200);
    let (status, _, _) = post(&chat_url(&m), &[], &stream_body("gpt-4o", "hi")).await;
    assert_eq!(status, 200);
    assert!(m.ledger().is_empty());
    assert!(m.requests().is_empty());
    assert_eq!(m.call_count(), 2);
}

#[tokio::test]
async fn reset_forgets_everything() {
    let m = mock().await;
    m.push(Behavior::status(500));
    m.push_for_model("x", Behavior::status(500));
    let (status, _, _) = post(&chat_url(&m), &[], &openai_chat("gpt-4o", "hi")).await;
    assert_eq!(status, 500);
    m.reset();
    assert!(m.ledger().is_empty() && m.requests().is_empty());
    assert_eq!((m.call_count(), m.disconnects()), (0, 0));
    let (status, _, _) = post(&chat_url(&m), &[], &openai_chat("x", "hi")).await;
    assert_eq!(status, 200, "scripts were cleared");
}

#[tokio::test]
async fn shutdown_closes_stalled_streams() {
    let m = mock().await;
    m.push(Behavior {
        stream_fault: Some(StreamFault::StallAfter(0)),
        ..Behavior::default()
    });
    let resp = client()
        .post(chat_url(&m))
        .json(&stream_body("gpt-4o", "hi"))
        .send()
        .await
        .unwrap();
    let reader = tokio::spawn(async move { resp.text().await });
    tokio::time::timeout(Duration::from_secs(5), m.shutdown())
        .await
        .expect("shutdown does not wait for stalled streams");
    let read = tokio::time::timeout(Duration::from_secs(5), reader)
        .await
        .unwrap()
        .unwrap();
    assert!(
        read.is_err(),
        "the stalled body is broken off, not completed"
    );
}

#[tokio::test]
async fn demo_mode_answers_plausibly() {
    let m = MockServer::start(MockConfig {
        demo: true,
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let (_, _, text) = post(
        &chat_url(&m),
        &[],
        &openai_chat("gpt-4o-mini", "What is the capital of France?"),
    )
    .await;
    let content = json(&text)["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(content.starts_with(
        "[demo:gpt-4o-mini] Here is a short answer to \"What is the capital of France?\"."
    ));
    assert!(
        content.matches(". ").count() >= 2,
        "a few sentences: {content}"
    );
    let demo = MockConfig::demo();
    assert!(demo.demo && demo.defaults.headers_delay_ms > 0 && demo.defaults.itl_ms > 0);
}

#[tokio::test]
async fn fault_rate_answers_that_share_of_default_requests_with_the_fault_status() {
    let m = MockServer::start(MockConfig {
        fault_rate: 0.3,
        fault_status: 502,
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let c = client();
    let mut failed = 0;
    for _ in 0..400 {
        let r = c
            .post(format!("{}/v1/chat/completions", m.url()))
            .json(
                &serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}),
            )
            .send()
            .await
            .unwrap();
        match r.status().as_u16() {
            200 => {}
            502 => failed += 1,
            s => panic!("unexpected status {s}"),
        }
    }
    // 30% of 400 = 120; the sequence is deterministic, a wide band guards the hash.
    assert!((90..=150).contains(&failed), "{failed} faults out of 400");
    // A scripted behaviour wins over the fault rate.
    for _ in 0..20 {
        m.push(Behavior::status(200));
        let r = c
            .post(format!("{}/v1/chat/completions", m.url()))
            .json(
                &serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
}

use kairos_testkit::{Behavior, MockConfig, MockServer, StreamFault, ToolCallSpec, UsageMode};
use serde_json::{Value, json};

use crate::common::{json, parse_sse, post};

fn request(text: &str) -> Value {
    json!({"contents": [{"role": "user", "parts": [{"text": text}]}]})
}

async fn mock() -> MockServer {
    MockServer::start(MockConfig::default()).await.unwrap()
}

#[tokio::test]
async fn generate_content_shape() {
    let m = mock().await;
    m.push(Behavior {
        text: Some("abcdefgh".into()),
        cached_tokens: Some(1),
        ..Behavior::default()
    });
    let (status, headers, text) = post(
        &format!("{}/v1beta/models/gemini-2.5-flash:generateContent", m.url()),
        &[],
        &request("abcd"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "application/json");
    let v = json(&text);
    assert_eq!(
        v["candidates"][0],
        json!({"content": {"parts": [{"text": "abcdefgh"}], "role": "model"}, "finishReason": "STOP", "index": 0})
    );
    let u = &v["usageMetadata"];
    assert_eq!(u["promptTokenCount"], 3 + 1);
    assert_eq!(u["candidatesTokenCount"], 2);
    assert_eq!(u["totalTokenCount"], 6);
    assert_eq!(u["cachedContentTokenCount"], 1);
    assert_eq!(v["modelVersion"], "gemini-2.5-flash");
    assert!(v["responseId"].is_string());
    let call = &m.ledger()[0];
    assert_eq!(
        (call.api.as_str(), call.model.as_str(), call.stream),
        ("gemini", "gemini-2.5-flash", false)
    );
    assert_eq!(
        call.route,
        "/v1beta/models/gemini-2.5-flash:generateContent"
    );
}

#[tokio::test]
async fn stream_sse_uses_crlf_and_ends_with_usage() {
    let m = mock().await;
    m.push(Behavior::text("abcdefgh"));
    let (status, headers, text) = post(
        &format!(
            "{}/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
            m.url()
        ),
        &[],
        &request("abcd"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "text/event-stream");
    assert!(text.contains("\r\n\r\n"));
    assert!(
        !text.replace("\r\n", "").contains('\n'),
        "CRLF framing only"
    );
    let chunks: Vec<Value> = parse_sse(&text).iter().map(|e| e.json()).collect();
    assert_eq!(chunks.len(), 5);
    let body_text: String = chunks
        .iter()
        .map(|c| {
            c["candidates"][0]["content"]["parts"][0]["text"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(body_text, "abcdefgh");
    for c in &chunks[..4] {
        assert!(c["candidates"][0].get("finishReason").is_none());
        assert!(c.get("usageMetadata").is_none());
        assert_eq!(c["candidates"][0]["content"]["role"], "model");
    }
    let last = &chunks[4];
    assert_eq!(last["candidates"][0]["finishReason"], "STOP");
    assert_eq!(last["usageMetadata"]["candidatesTokenCount"], 2);
    assert!(m.ledger()[0].completed);
}

#[tokio::test]
async fn stream_without_alt_is_a_json_array() {
    let m = mock().await;
    let (_, headers, text) = post(
        &format!(
            "{}/v1beta/models/gemini-2.5-flash:streamGenerateContent",
            m.url()
        ),
        &[],
        &request("hello"),
    )
    .await;
    assert_eq!(headers["content-type"], "application/json");
    let arr = json(&text);
    let arr = arr.as_array().unwrap();
    assert_eq!(arr.len(), 5);
    assert_eq!(arr[4]["candidates"][0]["finishReason"], "STOP");
}

#[tokio::test]
async fn function_call_and_usage_absent_and_max_tokens() {
    let m = mock().await;
    let url = format!("{}/v1beta/models/gemini-2.5-pro:generateContent", m.url());
    m.push(Behavior {
        tool_call: Some(ToolCallSpec::new("lookup", r#"{"q":"rust","n":3}"#)),
        usage: UsageMode::Absent,
        ..Behavior::default()
    });
    let (_, _, text) = post(&url, &[], &request("find")).await;
    let v = json(&text);
    assert_eq!(
        v["candidates"][0]["content"]["parts"][0],
        json!({"functionCall": {"name": "lookup", "args": {"q": "rust", "n": 3}}})
    );
    assert!(v.get("usageMetadata").is_none());

    m.push(Behavior::text("z".repeat(40)));
    let mut body = request("find");
    body["generationConfig"] = json!({"maxOutputTokens": 3});
    let (_, _, text) = post(&url, &[], &body).await;
    let v = json(&text);
    assert_eq!(v["candidates"][0]["finishReason"], "MAX_TOKENS");
    assert_eq!(v["usageMetadata"]["candidatesTokenCount"], 3);

    // Streamed function call: one chunk with the whole call.
    m.push(Behavior {
        tool_call: Some(ToolCallSpec::new("lookup", r#"{"q":"rust"}"#)),
        ..Behavior::default()
    });
    let (_, _, text) = post(
        &format!(
            "{}/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse",
            m.url()
        ),
        &[],
        &request("find"),
    )
    .await;
    let chunks: Vec<Value> = parse_sse(&text).iter().map(|e| e.json()).collect();
    assert_eq!(
        chunks[0]["candidates"][0]["content"]["parts"][0]["functionCall"]["args"],
        json!({"q": "rust"})
    );
}

#[tokio::test]
async fn key_header_required_and_query_key_refused() {
    let m = MockServer::start(MockConfig {
        gemini_key: Some("AIza-canary".into()),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let url = format!("{}/v1beta/models/gemini-2.5-flash:generateContent", m.url());
    let (status, _, text) = post(&url, &[], &request("x")).await;
    assert_eq!(status, 401);
    let v = json(&text);
    assert_eq!(v["error"]["code"], 401);
    assert_eq!(v["error"]["status"], "UNAUTHENTICATED");

    let (status, _, _) = post(&format!("{url}?key=AIza-canary"), &[], &request("x")).await;
    assert_eq!(status, 401, "a key in the URL is refused");
    let (status, _, _) = post(&url, &[("x-goog-api-key", "AIza-canary")], &request("x")).await;
    assert_eq!(status, 200);

    let flagged: Vec<bool> = m.requests().iter().map(|r| r.key_in_query).collect();
    assert_eq!(flagged, vec![false, true, false]);
    assert_eq!(
        m.requests()[2].header("x-goog-api-key"),
        Some("AIza-canary")
    );
}

#[tokio::test]
async fn scripted_error_is_gemini_shaped() {
    let m = mock().await;
    m.push(Behavior {
        status: 429,
        retry_after: Some("3".into()),
        ..Behavior::default()
    });
    let (status, headers, text) = post(
        &format!("{}/v1beta/models/gemini-2.5-flash:generateContent", m.url()),
        &[],
        &request("x"),
    )
    .await;
    assert_eq!(status, 429);
    assert_eq!(headers["retry-after"], "3");
    assert_eq!(
        json(&text)["error"],
        json!({"code": 429, "message": "Rate limit reached. Please try again later.", "status": "RESOURCE_EXHAUSTED"})
    );
}

#[tokio::test]
async fn stream_cut_has_no_final_chunk() {
    let m = mock().await;
    m.push(Behavior {
        text: Some("abcdefgh".into()),
        stream_fault: Some(StreamFault::CutAfter(4)),
        ..Behavior::default()
    });
    let (_, _, text) = post(
        &format!(
            "{}/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
            m.url()
        ),
        &[],
        &request("abcd"),
    )
    .await;
    let chunks: Vec<Value> = parse_sse(&text).iter().map(|e| e.json()).collect();
    assert_eq!(chunks.len(), 4);
    assert!(chunks.iter().all(|c| c.get("usageMetadata").is_none()));
    let call = &m.ledger()[0];
    assert!(!call.completed);
    assert_eq!(call.completion_tokens, 2, "all content was written");
}

#[tokio::test]
async fn embeddings_and_count_tokens() {
    let m = mock().await;
    let base = format!("{}/v1beta/models/gemini-embedding-001", m.url());
    let (status, _, text) = post(
        &format!("{base}:embedContent"),
        &[],
        &json!({"content": {"parts": [{"text": "hello"}]}, "outputDimensionality": 8}),
    )
    .await;
    assert_eq!(status, 200);
    let v = json(&text);
    assert_eq!(v["embedding"]["values"].as_array().unwrap().len(), 8);

    let (_, _, text) = post(
        &format!("{base}:batchEmbedContents"),
        &[],
        &json!({"requests": [
            {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "a"}]}},
            {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "b"}]}},
        ]}),
    )
    .await;
    let v = json(&text);
    let embs = v["embeddings"].as_array().unwrap();
    assert_eq!(embs.len(), 2);
    assert_eq!(embs[0]["values"].as_array().unwrap().len(), 16);
    assert_ne!(embs[0], embs[1]);

    let (_, _, text) = post(&format!("{base}:countTokens"), &[], &request("abcdefgh")).await;
    assert_eq!(json(&text)["totalTokens"], 3 + 2);

    let (status, _, text) = post(&format!("{base}:noSuchMethod"), &[], &request("x")).await;
    assert_eq!(status, 404);
    assert_eq!(json(&text)["error"]["status"], "NOT_FOUND");

    let ledger = m.ledger();
    assert_eq!(ledger.len(), 2);
    assert_eq!(ledger[1].prompt_tokens, 2);
}

fn with_candidates(text: &str, n: Value) -> Value {
    let mut body = request(text);
    body["generationConfig"] = json!({"candidateCount": n});
    body
}

#[tokio::test]
async fn candidate_count_non_stream() {
    let m = mock().await;
    let url = format!("{}/v1beta/models/gemini-2.5-flash:generateContent", m.url());
    m.push(Behavior::text("abcdefgh"));
    let (status, _, text) = post(&url, &[], &with_candidates("abcd", json!(3))).await;
    assert_eq!(status, 200);
    let v = json(&text);
    let cands = v["candidates"].as_array().unwrap();
    assert_eq!(cands.len(), 3);
    for (i, c) in cands.iter().enumerate() {
        assert_eq!(
            *c,
            json!({"content": {"parts": [{"text": "abcdefgh"}], "role": "model"}, "finishReason": "STOP", "index": i})
        );
    }
    // Output is counted over all candidates (2 tokens each), in the body and in the ledger.
    let u = &v["usageMetadata"];
    assert_eq!(u["candidatesTokenCount"], 6);
    assert_eq!(u["promptTokenCount"], 4);
    assert_eq!(u["totalTokenCount"], 4 + 6);
    assert_eq!(m.ledger()[0].completion_tokens, 6);

    // Function calls too: one per candidate.
    m.push(Behavior {
        tool_call: Some(ToolCallSpec::new("lookup", r#"{"q":"rust"}"#)),
        ..Behavior::default()
    });
    let (_, _, text) = post(&url, &[], &with_candidates("find", json!(2))).await;
    let v = json(&text);
    let cands = v["candidates"].as_array().unwrap();
    assert_eq!(cands.len(), 2);
    for (i, c) in cands.iter().enumerate() {
        assert_eq!(c["index"], i);
        assert_eq!(
            c["content"]["parts"][0]["functionCall"]["args"],
            json!({"q": "rust"})
        );
        assert_eq!(c["finishReason"], "STOP");
    }

    // Absent, 0 and out of range: 1..=8.
    for (n, expected) in [
        (Value::Null, 1),
        (json!(0), 1),
        (json!(1), 1),
        (json!(20), 8),
    ] {
        let body = if n.is_null() {
            request("abcd")
        } else {
            with_candidates("abcd", n.clone())
        };
        let (_, _, text) = post(&url, &[], &body).await;
        let v = json(&text);
        let indices: Vec<u64> = v["candidates"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["index"].as_u64().unwrap())
            .collect();
        assert_eq!(
            indices,
            (0..expected).collect::<Vec<u64>>(),
            "candidateCount {n}"
        );
    }
}

#[tokio::test]
async fn candidate_count_stream() {
    let m = mock().await;
    m.push(Behavior::text("abcdefgh"));
    let (status, _, text) = post(
        &format!(
            "{}/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
            m.url()
        ),
        &[],
        &with_candidates("abcd", json!(2)),
    )
    .await;
    assert_eq!(status, 200);
    let chunks: Vec<Value> = parse_sse(&text).iter().map(|e| e.json()).collect();
    assert_eq!(chunks.len(), 5);
    let mut texts = [String::new(), String::new()];
    let mut finishes = Vec::new();
    for (k, chunk) in chunks.iter().enumerate() {
        let cands = chunk["candidates"].as_array().unwrap();
        assert_eq!(cands.len(), 2, "chunk {k} carries both candidates");
        for (i, c) in cands.iter().enumerate() {
            assert_eq!(c["index"], i);
            assert_eq!(c["content"]["role"], "model");
            texts[i].push_str(c["content"]["parts"][0]["text"].as_str().unwrap());
            if let Some(f) = c.get("finishReason") {
                finishes.push((i, f.as_str().unwrap().to_owned()));
            }
        }
        assert_eq!(chunk.get("usageMetadata").is_some(), k == 4, "chunk {k}");
    }
    assert_eq!(texts, ["abcdefgh", "abcdefgh"]);
    assert_eq!(
        finishes,
        vec![(0, "STOP".to_owned()), (1, "STOP".to_owned())]
    );
    assert_eq!(chunks[4]["usageMetadata"]["candidatesTokenCount"], 4);
    let call = &m.ledger()[0];
    assert!(call.completed);
    assert_eq!(call.completion_tokens, 4);

    // The JSON-array form carries the same candidates.
    m.push(Behavior::text("abcdefgh"));
    let (_, _, text) = post(
        &format!(
            "{}/v1beta/models/gemini-2.5-flash:streamGenerateContent",
            m.url()
        ),
        &[],
        &with_candidates("abcd", json!(3)),
    )
    .await;
    let arr = json(&text);
    let last = arr.as_array().unwrap().last().unwrap().clone();
    let finished: Vec<(u64, &str)> = last["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["index"].as_u64().unwrap(),
                c["finishReason"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(finished, vec![(0, "STOP"), (1, "STOP"), (2, "STOP")]);
    assert_eq!(last["usageMetadata"]["candidatesTokenCount"], 6);
}

#[tokio::test]
async fn candidate_count_cut_stream_bills_what_was_written() {
    let m = mock().await;
    m.push(Behavior {
        text: Some("abcdefgh".into()),
        stream_fault: Some(StreamFault::CutAfter(2)),
        ..Behavior::default()
    });
    let (_, _, text) = post(
        &format!(
            "{}/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
            m.url()
        ),
        &[],
        &with_candidates("abcd", json!(2)),
    )
    .await;
    let chunks: Vec<Value> = parse_sse(&text).iter().map(|e| e.json()).collect();
    assert_eq!(chunks.len(), 2);
    assert!(
        chunks
            .iter()
            .all(|c| c["candidates"].as_array().unwrap().len() == 2)
    );
    let call = &m.ledger()[0];
    assert!(!call.completed);
    // Half of both candidates' text was written: half of the 4 output tokens.
    assert_eq!(call.completion_tokens, 2);
}

//! Bad input and authentication tables (test-matrix I1-I10, Z1, Z2, Z7, Z8): each case gets a
//! clear OpenAI-shaped error with the right status, and the upstream is never called.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::{Value, json};

async fn expect_error(gw: &Gw, req: reqwest::RequestBuilder, status: u16, what: &str) -> Value {
    let r = req.send().await.unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(r.status().as_u16(), status, "{what}");
    let text = r.text().await.unwrap();
    let b: Value =
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("{what}: not JSON: {text}"));
    assert!(
        b["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{what}: {b}"
    );
    assert!(b["error"]["type"].is_string(), "{what}: {b}");
    assert_eq!(gw.mock.call_count(), 0, "{what}: the upstream was called");
    b
}

#[tokio::test]
async fn bad_bodies_are_400_without_an_upstream_call() {
    let gw = start_gw().await;
    let ok = json!({"model": "gpt-4o-mini", "messages": user("x")});
    let raw = |body: Vec<u8>| gw.post("/v1/chat/completions").body(body);
    let with = |patch: Value| {
        let mut b = ok.clone();
        for (k, v) in patch.as_object().unwrap() {
            b[k] = v.clone();
        }
        gw.post("/v1/chat/completions").body(b.to_string())
    };
    let cases: Vec<(&str, reqwest::RequestBuilder, u16, Option<&str>)> = vec![
        ("invalid JSON", raw(b"{\"model\": ".to_vec()), 400, None),
        ("trailing garbage", raw(format!("{ok} x").into_bytes()), 400, None),
        ("empty body", raw(Vec::new()), 400, None),
        ("not an object", raw(b"[1,2]".to_vec()), 400, None),
        ("invalid UTF-8", raw(b"{\"model\":\"gpt-4o-mini\",\"messages\":[{\"role\":\"user\",\"content\":\"\xff\xfe\"}]}".to_vec()), 400, None),
        ("deep nesting", raw(format!("{{\"model\":\"gpt-4o-mini\",\"messages\":{}{}}}", "[".repeat(10_000), "]".repeat(10_000)).into_bytes()), 400, None),
        ("duplicate model key", raw(br#"{"model":"gpt-4o-mini","model":"gpt-4o","messages":[{"role":"user","content":"x"}]}"#.to_vec()), 400, None),
        ("wrong content type", gw.http.post(format!("{}/v1/chat/completions", gw.url)).bearer_auth(MASTER).header("content-type", "text/plain").body(ok.to_string()), 400, None),
        ("missing model", raw(json!({"messages": user("x")}).to_string().into_bytes()), 400, Some("model")),
        ("missing messages", raw(json!({"model": "gpt-4o-mini"}).to_string().into_bytes()), 400, Some("messages")),
        ("empty messages", with(json!({"messages": []})), 400, Some("messages")),
        ("content wrong type", with(json!({"messages": [{"role": "user", "content": 5}]})), 400, Some("messages[0].content")),
        ("unknown role", with(json!({"messages": [{"role": "wizard", "content": "x"}]})), 400, Some("messages[0].role")),
        ("tool without id", with(json!({"messages": [{"role": "tool", "content": "x"}]})), 400, Some("messages[0].tool_call_id")),
        ("negative max_tokens", with(json!({"max_tokens": -1})), 400, Some("max_tokens")),
        ("huge max_tokens", raw(br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"x"}],"max_tokens":18446744073709551616}"#.to_vec()), 400, Some("max_tokens")),
        ("zero max_tokens", with(json!({"max_tokens": 0})), 400, Some("max_tokens")),
        ("temperature 1e308", with(json!({"temperature": 1e308})), 400, Some("temperature")),
        ("temperature string", with(json!({"temperature": "hot"})), 400, Some("temperature")),
        ("n = 0", with(json!({"n": 0})), 400, Some("n")),
        ("bad tool_choice", with(json!({"tool_choice": "sometimes"})), 400, Some("tool_choice")),
        ("bad response_format", with(json!({"response_format": {"type": "xml"}})), 400, Some("response_format.type")),
        ("stream not bool", with(json!({"stream": "yes"})), 400, Some("stream")),
        ("unknown model", with(json!({"model": "no-such-model"})), 404, Some("model")),
        ("model of an unconfigured provider", with(json!({"model": "mistral-large-latest"})), 404, Some("model")),
        ("10k tools", with(json!({"tools": vec![json!({"type":"function","function":{"name":"f"}}); 10_000]})), 413, None),
    ];
    for (what, req, status, param) in cases {
        let b = expect_error(&gw, req, status, what).await;
        if let Some(p) = param {
            assert_eq!(b["error"]["param"], p, "{what}: {b}");
        }
    }
    // Every one of them has its ledger row.
    let rows = gw.rows().await;
    assert_eq!(rows.len(), 26);
    assert!(
        rows.iter()
            .all(|r| r.outcome == "error" && r.cost_micros == Some(0))
    );
}

#[tokio::test]
async fn routing_and_credential_fields_are_rejected() {
    // I6 (CVE-2024-6587): the client never picks the upstream host or its credentials.
    let gw = start_gw().await;
    for field in [
        "api_base",
        "base_url",
        "api_key",
        "custom_host",
        "headers",
        "extra_headers",
        "organization",
        "api_version",
        "azure_endpoint",
        "aws_secret_access_key",
        "vertex_credentials",
        "anthropic_api_key",
    ] {
        let mut body = json!({"model": "gpt-4o-mini", "messages": user("x")});
        body[field] = json!("http://169.254.169.254/");
        let b = expect_error(
            &gw,
            gw.post("/v1/chat/completions").body(body.to_string()),
            400,
            field,
        )
        .await;
        assert_eq!(b["error"]["code"], "caller_forbidden_field");
        assert_eq!(b["error"]["param"], field);
    }
    // Odd field names that could be smuggled into forwarding are refused too.
    let mut body = json!({"model": "gpt-4o-mini", "messages": user("x")});
    body["X-Evil\r\nHeader"] = json!(1);
    expect_error(
        &gw,
        gw.post("/v1/chat/completions").body(body.to_string()),
        400,
        "header-like field",
    )
    .await;
}

#[tokio::test]
async fn body_limit_declared_and_chunked() {
    // I1: the harness sets max_body_bytes = 65536.
    let gw = start_gw().await;
    let big = "x".repeat(100_000);
    let body = json!({"model": "gpt-4o-mini", "messages": user(&big)}).to_string();
    let b = expect_error(
        &gw,
        gw.post("/v1/chat/completions").body(body.clone()),
        413,
        "declared",
    )
    .await;
    assert_eq!(b["error"]["code"], "caller_body_too_large");
    // Chunked, no Content-Length.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = body
        .into_bytes()
        .chunks(8192)
        .map(|c| Ok(c.to_vec()))
        .collect();
    let stream = futures_util::stream::iter(chunks);
    expect_error(
        &gw,
        gw.post("/v1/chat/completions")
            .body(reqwest::Body::wrap_stream(stream)),
        413,
        "chunked",
    )
    .await;
}

#[tokio::test]
async fn authentication_table() {
    // Z1, Z2: every bad credential gets the same 401 body, never a 500 or a DB error.
    let gw = start_gw().await;
    let url = format!("{}/v1/chat/completions", gw.url);
    let body = json!({"model": "gpt-4o-mini", "messages": user("x")}).to_string();
    let base = || {
        gw.http
            .post(&url)
            .header("content-type", "application/json")
            .body(body.clone())
    };
    let long = "k".repeat(60_000);
    let near = format!("{}x", &MASTER[..MASTER.len() - 1]);
    let cases: Vec<(&str, reqwest::RequestBuilder)> = vec![
        ("missing", base()),
        ("empty", base().header("authorization", "")),
        (
            "bearer without token",
            base().header("authorization", "Bearer"),
        ),
        ("bearer space", base().header("authorization", "Bearer ")),
        (
            "basic",
            base().header("authorization", format!("Basic {MASTER}")),
        ),
        (
            "sql injection",
            base().header("authorization", "Bearer ' OR '1'='1"),
        ),
        (
            "non-ascii",
            base().header(
                "authorization",
                reqwest::header::HeaderValue::from_bytes("Bearer kéy".as_bytes()).unwrap(),
            ),
        ),
        (
            "long key",
            base().header("authorization", format!("Bearer {long}")),
        ),
        (
            "shared prefix",
            base().header("authorization", format!("Bearer {near}")),
        ),
        (
            "master as x-api-key prefix",
            base().header("x-api-key", &MASTER[..20]),
        ),
    ];
    let mut bodies = std::collections::HashSet::new();
    for (what, req) in cases {
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 401, "{what}");
        assert_eq!(r.headers()["www-authenticate"], "Bearer");
        let b: Value = r.json().await.unwrap();
        assert_eq!(b["error"]["code"], "invalid_api_key", "{what}");
        bodies.insert(b["error"]["message"].as_str().unwrap().to_owned());
    }
    assert_eq!(bodies.len(), 1, "401 bodies differ: {bodies:?}");
    assert_eq!(gw.mock.call_count(), 0);
    // The Anthropic SDK's header works on the OpenAI route too.
    let r = base().header("x-api-key", MASTER).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn oversized_headers_get_431() {
    // I10
    let gw = start_gw().await;
    let r = gw
        .post("/v1/chat/completions")
        .header("x-junk", "j".repeat(100_000))
        .body(json!({"model": "gpt-4o-mini", "messages": user("x")}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 431);
    assert_eq!(gw.mock.call_count(), 0);
}

#[tokio::test]
async fn unknown_routes_and_methods() {
    let gw = start_gw().await;
    let r = gw
        .http
        .get(format!("{}/v1/nope", gw.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let b: Value = r.json().await.unwrap();
    assert!(b["error"]["message"].is_string());
    let r = gw
        .http
        .get(format!("{}/v1/chat/completions", gw.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
}

#[tokio::test]
async fn canary_secrets_never_leave_their_place() {
    // Z8: the caller's key never goes upstream; each provider key only to its own provider, in a
    // header; no secret in the ledger.
    let gw = start_gw().await;
    for model in ["gpt-4o-mini", "claude-haiku-4-5", "gemini-2.5-flash"] {
        let r = gw
            .chat(json!({"model": model, "messages": user("x")}))
            .await;
        assert_eq!(r.status(), 200, "{model}");
        let r = gw
            .chat(json!({"model": model, "messages": user("x"), "stream": true}))
            .await;
        assert_eq!(r.status(), 200, "{model}");
        sse_events(r).await;
    }
    let reqs = gw.mock.requests();
    assert_eq!(reqs.len(), 6);
    for req in &reqs {
        let all = format!("{:?} {} {:?}", req.headers, req.body, req.query);
        assert!(
            !all.contains(MASTER),
            "master key sent upstream: {}",
            req.path
        );
        assert!(!req.key_in_query, "key in URL: {}", req.path);
        let own = if req.path.contains("/v1beta/") {
            GEMINI_KEY
        } else if req.path.ends_with("/messages") {
            ANTHROPIC_KEY
        } else {
            OPENAI_KEY
        };
        for k in [OPENAI_KEY, ANTHROPIC_KEY, GEMINI_KEY] {
            assert_eq!(all.contains(k), k == own, "{k} vs {}", req.path);
        }
        assert!(
            req.headers
                .iter()
                .all(|(n, _)| !n.eq_ignore_ascii_case("cookie"))
        );
    }
    let rows = gw.rows().await;
    let dump = format!("{rows:?}");
    for k in [MASTER, OPENAI_KEY, ANTHROPIC_KEY, GEMINI_KEY] {
        assert!(!dump.contains(k));
    }
}

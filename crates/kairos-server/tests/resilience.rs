//! Resilience against upstream faults (test-matrix U1-U22): retries, fallbacks, load balancing,
//! health (ejection, Retry-After cool-downs), streaming commit semantics, timeouts, shedding.
//! Every test counts the calls the mock upstream received.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use kairos_testkit::{Behavior, MockConfig, StreamFault, UsageMode};
use serde_json::{Value, json};

fn calls_to(gw: &Gw, model_path_part: &str) -> usize {
    gw.mock
        .requests()
        .iter()
        .filter(|r| r.body.contains(model_path_part) || r.path.contains(model_path_part))
        .count()
}

fn fail(status: u16) -> Behavior {
    Behavior {
        status,
        ..Default::default()
    }
}

const FALLBACK: &str = r#"
[resilience]
retry_attempts = 1

[strategies.fb]
mode = "fallback"
targets = [{ model = "gpt-4o-mini" }, { model = "claude-haiku-4-5" }, { model = "gemini-2.5-flash" }]
"#;

#[tokio::test]
async fn fallback_moves_on_for_its_triggers_and_not_for_caller_errors() {
    let gw = start_resilient(FALLBACK, MockConfig::default()).await;
    gw.mock.push_for_model("gpt-4o-mini", fail(503));
    let r = gw
        .chat(json!({"model": "fb", "messages": user("hi")}))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-kairos-model"], "claude-haiku-4-5");
    assert_eq!(r.headers()["x-kairos-attempts"], "2");
    assert_eq!(r.headers()["x-kairos-fallbacks"], "1");
    let id = request_id(&r);
    let row = gw.row(&id).await;
    assert_eq!(row.served_model.as_deref(), Some("claude-haiku-4-5"));
    let attempts: Value = serde_json::from_str(row.attempts_detail.as_deref().unwrap()).unwrap();
    assert_eq!(attempts[0]["target"], "openai/gpt-4o-mini");
    assert_eq!(attempts[0]["status"], 503);
    assert_eq!(attempts[1]["outcome"], "ok");
    assert_eq!(gw.mock.call_count(), 2);

    // A 400 is the caller's problem: no fallback, exactly one call (U8).
    gw.mock.push_for_model("gpt-4o-mini", fail(400));
    let r = gw
        .chat(json!({"model": "fb", "messages": user("hi")}))
        .await;
    assert_eq!(r.status(), 400);
    assert_eq!(gw.mock.call_count(), 3);
}

#[tokio::test]
async fn retries_happen_on_the_same_target_with_backoff_then_fall_back() {
    // U7: 503, 503, 200 on one target: three calls, success, no fallback.
    let cfg = r#"
[resilience]
retry_attempts = 3
base_backoff_ms = 20
max_backoff_ms = 200
"#;
    let gw = start_resilient(cfg, MockConfig::default()).await;
    gw.mock.push_for_model("gpt-4o-mini", fail(503));
    gw.mock.push_for_model("gpt-4o-mini", fail(503));
    let r = gw
        .chat(json!({"model": "gpt-4o-mini", "messages": user("hi")}))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-kairos-attempts"], "3");
    assert_eq!(gw.mock.call_count(), 3);
    let at: Vec<u64> = gw.mock.requests().iter().map(|r| r.at_ms).collect();
    // Full jitter: each gap lies in [0, min(max, base * 2^(n-1))] plus scheduling noise.
    assert!(
        at[1] - at[0] <= 20 + 50 && at[2] - at[1] <= 40 + 50,
        "{at:?}"
    );
    let row = gw.row(&request_id(&r)).await;
    let attempts: Value = serde_json::from_str(row.attempts_detail.as_deref().unwrap()).unwrap();
    assert_eq!(attempts.as_array().unwrap().len(), 3);
    assert_eq!(attempts[0]["retried"], true);

    // Quota exhausted (U6) and 4xx (U8) are never retried: one call each.
    for b in [
        Behavior {
            status: 429,
            error_type: Some("insufficient_quota".into()),
            ..Default::default()
        },
        fail(400),
        fail(401),
        fail(404),
        fail(422),
    ] {
        let before = gw.mock.call_count();
        gw.mock.push_for_model("gpt-4o", b.clone());
        let r = gw
            .chat(json!({"model": "gpt-4o", "messages": user("hi")}))
            .await;
        assert!(!r.status().is_success(), "{b:?}");
        assert_eq!(gw.mock.call_count(), before + 1, "retried {b:?}");
    }
}

#[tokio::test]
async fn retry_after_is_honoured_and_shared() {
    // U5: 429 + Retry-After: 1 then 200: the gateway waits ≥ 1 s and retries; meanwhile other
    // requests to that target are answered at once without calling it.
    let cfg = "[resilience]\nretry_attempts = 2\nretry_after_cap_ms = 5000\n";
    let gw = start_resilient(cfg, MockConfig::default()).await;
    gw.mock.push_for_model(
        "gpt-4o-mini",
        Behavior {
            status: 429,
            retry_after: Some("1".into()),
            ..Default::default()
        },
    );
    let t = Instant::now();
    let waiting = {
        let http = gw.http.clone();
        let url = gw.url.clone();
        tokio::spawn(async move {
            http.post(format!("{url}/v1/chat/completions"))
                .bearer_auth(MASTER)
                .header("content-type", "application/json")
                .body(json!({"model": "gpt-4o-mini", "messages": user("hi")}).to_string())
                .send()
                .await
                .unwrap()
        })
    };
    while gw.mock.call_count() < 1 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let other = gw
        .chat(json!({"model": "gpt-4o-mini", "messages": user("other")}))
        .await;
    assert_eq!(other.status(), 429);
    assert!(other.headers().get("retry-after").is_some());
    assert_eq!(gw.mock.call_count(), 1, "the cooling target was called");
    let r = waiting.await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        t.elapsed() >= Duration::from_millis(1000),
        "retried before Retry-After"
    );
    assert_eq!(gw.mock.call_count(), 2);

    // A Retry-After beyond the cap is not waited for: the error comes back with it.
    gw.mock.push_for_model(
        "gpt-4o",
        Behavior {
            status: 429,
            retry_after: Some("30".into()),
            ..Default::default()
        },
    );
    let t = Instant::now();
    let r = gw
        .chat(json!({"model": "gpt-4o", "messages": user("hi")}))
        .await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "30");
    assert!(t.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn connect_dns_and_tls_failures_fall_back() {
    // U1-U3: refused, unresolvable and TLS-failing targets are connect failures; the
    // fallback serves; never plain HTTP after a TLS failure.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = l.local_addr().unwrap().port();
    drop(l);
    let probe = kairos_testkit::MockServer::start(MockConfig::default())
        .await
        .unwrap();
    let tls_port = probe.addr().port();
    let cfg = format!(
        r#"
[resilience]
retry_attempts = 1
[providers.refused]
kind = "openai_compatible"
base_url = "http://127.0.0.1:{dead}/v1"
[providers.nodns]
kind = "openai_compatible"
base_url = "http://kairos-test.invalid/v1"
[providers.badtls]
kind = "openai_compatible"
base_url = "https://127.0.0.1:{tls_port}/v1"
[[models]]
id = "m-refused"
provider = "refused"
[[models]]
id = "m-nodns"
provider = "nodns"
[[models]]
id = "m-badtls"
provider = "badtls"
[strategies.resilient]
mode = "fallback"
targets = [{{ model = "m-refused" }}, {{ model = "m-nodns" }}, {{ model = "m-badtls" }}, {{ model = "gpt-4o-mini" }}]
"#
    );
    let gw = start_resilient(&cfg, MockConfig::default()).await;
    let r = gw
        .chat(json!({"model": "resilient", "messages": user("hi")}))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-kairos-fallbacks"], "3");
    let row = gw.row(&request_id(&r)).await;
    let attempts: Value = serde_json::from_str(row.attempts_detail.as_deref().unwrap()).unwrap();
    for i in 0..3 {
        assert_eq!(
            attempts[i]["error_kind"], "provider_connect_failed",
            "{attempts}"
        );
    }
    // The TLS target was never spoken to in plain HTTP.
    assert_eq!(probe.call_count(), 0);
    let r = gw
        .chat(json!({"model": "m-badtls", "messages": user("hi")}))
        .await;
    assert_eq!(r.status(), 502);
}

#[tokio::test]
async fn slow_headers_time_out_without_a_blind_resend() {
    // U9: headers later than the TTFB timeout: 504, the upstream connection is closed, and the
    // same body is not resent to the same target (the provider may be running it).
    let cfg = "[resilience]\nretry_attempts = 3\n";
    let mut mc = MockConfig::default();
    let gw = start_inner_with(cfg, "ttfb_timeout_ms = 300", &mut mc).await;
    gw.mock.push_for_model(
        "gpt-4o-mini",
        Behavior {
            headers_delay_ms: 3_000,
            ..Default::default()
        },
    );
    let t = Instant::now();
    let r = gw
        .chat(json!({"model": "gpt-4o-mini", "messages": user("hi")}))
        .await;
    assert_eq!(r.status(), 504);
    assert!(t.elapsed() < Duration::from_secs(2));
    assert_eq!(gw.mock.call_count(), 1);
    let t = Instant::now();
    while gw.mock.disconnects() == 0 {
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "upstream not cancelled"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // x-kairos-timeout-ms lowers the request's deadline.
    gw.mock.push_for_model(
        "gpt-4o",
        Behavior {
            headers_delay_ms: 250,
            ..Default::default()
        },
    );
    let r = gw
        .post("/v1/chat/completions")
        .header("x-kairos-timeout-ms", "100")
        .body(json!({"model": "gpt-4o", "messages": user("hi")}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 504);
}

#[tokio::test]
async fn a_stream_falls_back_before_its_first_content_and_never_after() {
    let gw = start_resilient(FALLBACK, MockConfig::default()).await;
    // The first target sends its preamble, then an error event: nothing was committed, so the
    // next target serves a clean stream.
    gw.mock.push_for_model(
        "gpt-4o-mini",
        Behavior {
            stream_fault: Some(StreamFault::ErrorEventAfter(0)),
            ..Default::default()
        },
    );
    let r = gw
        .chat(json!({"model": "fb", "messages": user("hi"), "stream": true}))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-kairos-model"], "claude-haiku-4-5");
    let ev = sse_events(r).await;
    assert_eq!(ev.last().unwrap().data, "[DONE]");
    let roles = ev
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(&e.data).ok())
        .filter(|c| c["choices"][0]["delta"]["role"] == "assistant")
        .count();
    assert_eq!(roles, 1, "one preamble only");
    // Once content went out, a cut is final: error event, no retry, no fallback (U11/U12).
    gw.mock.push_for_model(
        "gpt-4o-mini",
        Behavior {
            chunks: 6,
            stream_fault: Some(StreamFault::CutAfter(2)),
            ..Default::default()
        },
    );
    let before = gw.mock.call_count();
    let r = gw
        .chat(json!({"model": "fb", "messages": user("hi"), "stream": true}))
        .await;
    let ev = sse_events(r).await;
    assert!(ev.iter().all(|e| e.data != "[DONE]"));
    assert_eq!(gw.mock.call_count(), before + 1);
}

#[tokio::test]
async fn loadbalance_follows_weights_and_falls_back() {
    let cfg = r#"
[resilience]
retry_attempts = 1
[strategies.lb]
mode = "loadbalance"
targets = [{ model = "gpt-4o-mini", weight = 3 }, { model = "gemini-2.5-flash", weight = 1 }]
"#;
    let gw = start_resilient(cfg, MockConfig::default()).await;
    let mut openai = 0;
    for _ in 0..200 {
        let r = gw
            .chat(json!({"model": "lb", "messages": user("hi")}))
            .await;
        assert_eq!(r.status(), 200);
        if r.headers()["x-kairos-model"] == "gpt-4o-mini" {
            openai += 1;
        }
    }
    // 3:1 -> 150 expected; binomial sd ~6.1: a wide 5-sd band.
    assert!(
        (120..=180).contains(&openai),
        "{openai}/200 to the weight-3 target"
    );
    // A failing pick falls back to the other target.
    for _ in 0..5 {
        gw.mock.push_for_model("gpt-4o-mini", fail(500));
        gw.mock.push_for_model("gemini-2.5-flash", fail(500));
    }
    let r = gw
        .chat(json!({"model": "lb", "messages": user("hi")}))
        .await;
    assert_eq!(r.status(), 502);
    assert!(r.headers().get("x-kairos-request-id").is_some());
}

#[tokio::test]
async fn conditional_and_nested_strategies_and_params() {
    let cfg = r#"
[resilience]
retry_attempts = 1
[strategies.cheap]
mode = "fallback"
on_status = [503]
targets = [{ model = "gemini-2.5-flash", params = { temperature = 0.2 } }, { model = "gpt-4o-mini" }]
[strategies.by-plan]
mode = "conditional"
targets = [{ strategy = "cheap", name = "cheap" }, { model = "claude-haiku-4-5", name = "strong" }]
conditions = [{ when = { "metadata.plan" = { eq = "free" } }, then = "cheap" }]
default = "strong"
"#;
    let gw = start_resilient(cfg, MockConfig::default()).await;
    let r = gw
        .chat(json!({"model": "by-plan", "messages": user("hi"), "metadata": {"plan": "free"}}))
        .await;
    assert_eq!(r.headers()["x-kairos-model"], "gemini-2.5-flash");
    let sent: Value = serde_json::from_str(&gw.mock.requests()[0].body).unwrap();
    assert_eq!(sent["generationConfig"]["temperature"], 0.2);
    let r = gw
        .chat(json!({"model": "by-plan", "messages": user("hi"), "metadata": {"plan": "pro"}}))
        .await;
    assert_eq!(r.headers()["x-kairos-model"], "claude-haiku-4-5");
    // The nested fallback applies its own on_status: 503 moves on, 500 does not (Portkey #165).
    gw.mock.push_for_model("gemini-2.5-flash", fail(503));
    let r = gw
        .chat(json!({"model": "by-plan", "messages": user("hi"), "metadata": {"plan": "free"}}))
        .await;
    assert_eq!(r.headers()["x-kairos-model"], "gpt-4o-mini");
    gw.mock.push_for_model("gemini-2.5-flash", fail(500));
    let r = gw
        .chat(json!({"model": "by-plan", "messages": user("hi"), "metadata": {"plan": "free"}}))
        .await;
    assert_eq!(r.status(), 502);
    // x-kairos-config selects a strategy by name; an unknown one is a 400.
    let r = gw
        .post("/v1/chat/completions")
        .header("x-kairos-config", "cheap")
        .body(json!({"model": "gpt-4o", "messages": user("hi")}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-kairos-model"], "gemini-2.5-flash");
    let r = gw
        .post("/v1/chat/completions")
        .header("x-kairos-config", "nope")
        .body(json!({"model": "gpt-4o", "messages": user("hi")}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn a_failing_target_is_ejected_then_probed() {
    // U20: after 5 consecutive failures the target is ejected: further requests skip it (its
    // call count stops rising) and the fallback serves them; /admin/health shows it.
    let cfg = r#"
[resilience]
retry_attempts = 1
eject_after_failures = 5
base_ejection_ms = 60000
[strategies.fb2]
mode = "fallback"
targets = [{ model = "gpt-4o-mini" }, { model = "gemini-2.5-flash" }]
"#;
    let gw = start_resilient(cfg, MockConfig::default()).await;
    for _ in 0..50 {
        gw.mock.push_for_model("gpt-4o-mini", fail(503));
    }
    for _ in 0..12 {
        let r = gw
            .chat(json!({"model": "fb2", "messages": user("hi")}))
            .await;
        assert_eq!(r.status(), 200);
    }
    assert_eq!(
        calls_to(&gw, "gpt-4o-mini"),
        5,
        "calls continued after ejection"
    );
    let h: Value = gw
        .http
        .get(format!("{}/admin/health", gw.url))
        .bearer_auth(MASTER)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let t = h["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["model"] == "gpt-4o-mini")
        .unwrap();
    assert_eq!(t["state"], "ejected", "{t}");
    // A pinned request still reaches the ejected target: the last target is never ejected.
    let before = calls_to(&gw, "gpt-4o-mini");
    let r = gw
        .chat(json!({"model": "gpt-4o-mini", "messages": user("hi")}))
        .await;
    assert_eq!(r.status(), 503);
    assert_eq!(calls_to(&gw, "gpt-4o-mini"), before + 1);
    let r = gw
        .http
        .get(format!("{}/admin/health", gw.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn the_retry_budget_bounds_load_on_a_failing_provider() {
    // U7: 60 concurrent requests against 100% 503 with 3 attempts each: without a budget that
    // is 180 calls; the budget (20% of active requests, at least 3) keeps it far lower.
    let cfg = "[resilience]\nretry_attempts = 3\nbase_backoff_ms = 50\nmax_backoff_ms = 100\neject_after_failures = 1000\n";
    let gw = start_resilient(
        cfg,
        MockConfig {
            defaults: Behavior {
                status: 503,
                headers_delay_ms: 50,
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .await;
    let mut tasks = Vec::new();
    for _ in 0..60 {
        let http = gw.http.clone();
        let url = gw.url.clone();
        tasks.push(tokio::spawn(async move {
            http.post(format!("{url}/v1/chat/completions"))
                .bearer_auth(MASTER)
                .header("content-type", "application/json")
                .body(json!({"model": "gpt-4o-mini", "messages": user("hi")}).to_string())
                .send()
                .await
                .unwrap()
                .status()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 503);
    }
    let calls = gw.mock.call_count();
    assert!(
        (60..=100).contains(&calls),
        "{calls} upstream calls for 60 requests"
    );
}

#[tokio::test]
async fn overload_is_shed_fast() {
    // U22: beyond max_in_flight, 503 + Retry-After at once.
    let gw = start_with_server(
        "max_in_flight = 2",
        MockConfig {
            defaults: Behavior {
                headers_delay_ms: 500,
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .await;
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let http = gw.http.clone();
        let url = gw.url.clone();
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let r = http
                .post(format!("{url}/v1/chat/completions"))
                .bearer_auth(MASTER)
                .header("content-type", "application/json")
                .body(json!({"model": "gpt-4o-mini", "messages": user("hi")}).to_string())
                .send()
                .await
                .unwrap();
            (
                r.status().as_u16(),
                r.headers().get("retry-after").is_some(),
                t.elapsed(),
            )
        }));
    }
    let mut shed = 0;
    for t in tasks {
        let (status, ra, elapsed) = t.await.unwrap();
        if status == 503 {
            shed += 1;
            assert!(ra);
            assert!(
                elapsed < Duration::from_millis(400),
                "shedding waited {elapsed:?}"
            );
        } else {
            assert_eq!(status, 200);
        }
    }
    assert_eq!(shed, 4);
}

#[tokio::test]
async fn auto_falls_back_to_its_runners_up() {
    let gw = start_resilient("[resilience]\nretry_attempts = 1\n", MockConfig::default()).await;
    let r = gw
        .post("/v1/route")
        .header("x-kairos-quality", "economy")
        .body(json!({"model": "auto", "messages": user("Summarize: the meeting was long and the budget passed.")}).to_string())
        .send()
        .await
        .unwrap();
    let rec: Value = r.json().await.unwrap();
    let chosen = rec["chosen"].as_str().unwrap().to_owned();
    for _ in 0..3 {
        gw.mock.push_for_model(&chosen, fail(503));
    }
    let r = gw
        .post("/v1/chat/completions")
        .header("x-kairos-quality", "economy")
        .body(json!({"model": "auto", "messages": user("Summarize: the meeting was long and the budget passed.")}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_ne!(r.headers()["x-kairos-model"].to_str().unwrap(), chosen);
    assert_eq!(r.headers()["x-kairos-fallbacks"], "1");
    let _ = UsageMode::Present;
}

fn attempts_of(row: &kairos_store::LedgerRow) -> Vec<Value> {
    serde_json::from_str::<Vec<Value>>(row.attempts_detail.as_deref().unwrap_or("[]")).unwrap()
}

fn reset_billed() -> Behavior {
    Behavior {
        reset: true,
        bill_on_error: true,
        ..Default::default()
    }
}

#[tokio::test]
async fn a_reset_after_the_request_was_written_is_ambiguous() {
    // U4: the provider read the request (and billed it), then the connection dropped without an
    // answer. Not resent by default; the attempt is on the ledger as ambiguous, to reconcile.
    let gw = start_resilient("[resilience]\nretry_attempts = 3\n", MockConfig::default()).await;
    gw.mock.push_for_model("gpt-4o-mini", reset_billed());
    let r = gw
        .chat(json!({"model": "gpt-4o-mini", "messages": user("hi")}))
        .await;
    assert_eq!(r.status(), 502);
    let id = request_id(&r);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "provider_connection_failed");
    assert_eq!(gw.mock.call_count(), 1, "an ambiguous failure was resent");
    let row = gw.row(&id).await;
    let a = attempts_of(&row);
    assert_eq!(a.len(), 1);
    assert_eq!(a[0]["ambiguous"], true);
    assert_eq!(a[0]["error_kind"], "provider_connection_failed");
    assert_eq!(row.status_code, 502);
    // The provider's own record of the call: billed, no answer; the gateway's row carries the
    // same request id.
    let billed = gw.mock.ledger();
    assert_eq!(billed.len(), 1);
    assert_eq!(billed[0].status, 0);
    assert!(billed[0].prompt_tokens > 0);
    assert_eq!(billed[0].request_id.as_deref(), Some(id.as_str()));

    // A strategy moves on to its next target (a different provider) after it.
    let gw = start_resilient(FALLBACK, MockConfig::default()).await;
    gw.mock.push_for_model("gpt-4o-mini", reset_billed());
    let r = gw
        .chat(json!({"model": "fb", "messages": user("hi")}))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-kairos-model"], "claude-haiku-4-5");
    let row = gw.row(&request_id(&r)).await;
    assert_eq!(attempts_of(&row)[0]["ambiguous"], true);
    assert_eq!(gw.mock.call_count(), 2);

    // With `retry_ambiguous = true` the policy allows exactly one resend to the same target.
    let gw = start_resilient(
        "[resilience]\nretry_attempts = 3\nretry_ambiguous = true\nbase_backoff_ms = 1\nmax_backoff_ms = 2\n",
        MockConfig::default(),
    )
    .await;
    for _ in 0..3 {
        gw.mock.push_for_model("gpt-4o-mini", reset_billed());
    }
    let r = gw
        .chat(json!({"model": "gpt-4o-mini", "messages": user("hi")}))
        .await;
    assert_eq!(r.status(), 502);
    assert_eq!(gw.mock.call_count(), 2, "one resend at most");
    let a = attempts_of(&gw.row(&request_id(&r)).await);
    assert_eq!(a[0]["retried"], true);
    assert_eq!(a[1]["ambiguous"], true);
}

#[tokio::test]
async fn a_stream_without_a_first_token_times_out_and_is_not_resent() {
    // U10: headers and the preamble arrive, then nothing. Alone, the target's stream ends with
    // an error event (never [DONE]) and the same body is not resent; with a fallback, nothing
    // was committed and the next target serves the stream.
    let mut mc = MockConfig::default();
    let gw = start_inner_with(
        "[resilience]\nretry_attempts = 3\n[strategies.fb]\nmode = \"fallback\"\ntargets = [{ model = \"gpt-4o-mini\" }, { model = \"claude-haiku-4-5\" }]\n",
        "stream_idle_timeout_ms = 300",
        &mut mc,
    )
    .await;
    let silent = Behavior {
        ttft_ms: 5_000,
        ..Default::default()
    };
    gw.mock.push_for_model("gpt-4o-mini", silent.clone());
    let t = Instant::now();
    let r = gw
        .chat(json!({"model": "gpt-4o-mini", "messages": user("hi"), "stream": true}))
        .await;
    let id = request_id(&r);
    let ev = sse_events(r).await;
    assert!(t.elapsed() < Duration::from_secs(3));
    assert!(ev.iter().all(|e| e.data != "[DONE]"));
    let last: Value = serde_json::from_str(&ev.last().unwrap().data).unwrap();
    assert_eq!(last["error"]["code"], "upstream_stalled");
    assert_eq!(gw.mock.call_count(), 1, "the body was resent");
    assert_eq!(gw.row(&id).await.outcome, "upstream_stalled");
    let t = Instant::now();
    while gw.mock.disconnects() == 0 {
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "upstream not cancelled"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    gw.mock.push_for_model("gpt-4o-mini", silent);
    let r = gw
        .chat(json!({"model": "fb", "messages": user("hi"), "stream": true}))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-kairos-model"], "claude-haiku-4-5");
    let ev = sse_events(r).await;
    assert_eq!(ev.last().unwrap().data, "[DONE]");
    assert_eq!(calls_to(&gw, "gpt-4o-mini"), 2);
}

#[tokio::test]
async fn huge_and_endless_responses_are_capped() {
    // U16: a body or a stream beyond `max_response_bytes` is cut off with a typed error; the
    // partial stream output is billed.
    let gw = start_with_server("max_response_bytes = 65536", MockConfig::default()).await;
    gw.mock.push(Behavior::text("x".repeat(100_000)));
    let r = gw
        .chat(json!({"model": "gpt-4o-mini", "messages": user("hi")}))
        .await;
    assert_eq!(r.status(), 502);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "upstream_response_too_large");

    gw.mock.push(Behavior {
        text: Some("y".repeat(200_000)),
        chunks: 2_000,
        usage: UsageMode::Absent,
        ..Default::default()
    });
    let r = gw
        .chat(json!({"model": "gpt-4o-mini", "messages": user("hi"), "stream": true}))
        .await;
    assert_eq!(r.status(), 200);
    let id = request_id(&r);
    let ev = sse_events(r).await;
    assert!(ev.iter().all(|e| e.data != "[DONE]"));
    let last: Value = serde_json::from_str(&ev.last().unwrap().data).unwrap();
    assert_eq!(last["error"]["code"], "upstream_response_too_large");
    let row = gw.row(&id).await;
    assert_eq!(
        row.error_kind.as_deref(),
        Some("upstream_response_too_large")
    );
    assert!(row.output_tokens > 0, "partial output not billed");
    assert_eq!(row.usage_source, "estimated");
}

#[tokio::test]
async fn a_slow_reader_pauses_the_upstream() {
    // U18: the gateway does not buffer a stream the client is not reading: the upstream's
    // writes stall once the socket buffers are full, and resume when the client reads again.
    let gw = start_gw().await;
    let text = "abcdefgh".repeat(5_000_000); // 40 MB in 4,000 events of 10 KB
    gw.mock.push(Behavior {
        text: Some(text),
        chunks: 4_000,
        ..Default::default()
    });
    let mut r = gw
        .chat(json!({"model": "gpt-4o-mini", "messages": user("hi"), "stream": true}))
        .await;
    assert_eq!(r.status(), 200);
    let first = r.chunk().await.unwrap().unwrap();
    assert!(!first.is_empty());
    // Give an unbounded buffer every chance to fill.
    let mut last = u32::MAX;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let written = gw.mock.ledger()[0].completion_tokens;
        if written == last {
            break;
        }
        last = written;
    }
    let billed = gw.mock.ledger();
    assert!(!billed[0].completed, "the whole stream was read ahead");
    // The mock bills 1 token per 4 chars: 10M tokens in all. What was read ahead sits in the
    // four loopback socket buffers (autotuned to several MB each), not in the gateway.
    assert!(
        billed[0].completion_tokens < 5_000_000,
        "{} of 10M tokens read ahead of the client",
        billed[0].completion_tokens
    );
    let mut tail = Vec::new();
    while let Some(c) = r.chunk().await.unwrap() {
        tail.extend_from_slice(&c);
        if tail.len() > 4096 {
            tail.drain(..tail.len() - 4096);
        }
    }
    assert!(String::from_utf8_lossy(&tail).contains("[DONE]"));
    assert!(gw.mock.ledger()[0].completed);
}

#[tokio::test]
async fn all_targets_down_fail_fast_with_retry_after() {
    // U21: once every target is ejected, one request at a time still tries the first target
    // (the last one is never starved); the others get 503 + Retry-After without an upstream call.
    let cfg = r#"
[resilience]
retry_attempts = 1
eject_after_failures = 2
base_ejection_ms = 60000
[strategies.both]
mode = "fallback"
targets = [{ model = "gpt-4o-mini" }, { model = "gemini-2.5-flash" }]
"#;
    let gw = start_resilient(
        cfg,
        MockConfig {
            defaults: Behavior {
                status: 503,
                headers_delay_ms: 300,
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .await;
    for _ in 0..2 {
        let r = gw
            .chat(json!({"model": "both", "messages": user("hi")}))
            .await;
        assert_eq!(r.status(), 503);
    }
    assert_eq!(
        gw.mock.call_count(),
        4,
        "two failures each eject both targets"
    );
    // 20 concurrent requests: one last-resort call, the rest answered at once.
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let http = gw.http.clone();
        let url = gw.url.clone();
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let r = http
                .post(format!("{url}/v1/chat/completions"))
                .bearer_auth(MASTER)
                .header("content-type", "application/json")
                .body(json!({"model": "both", "messages": user("hi")}).to_string())
                .send()
                .await
                .unwrap();
            let ra = r
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().parse::<u64>().unwrap());
            let body: Value = r.json().await.unwrap();
            (
                body["error"]["code"].as_str().unwrap().to_owned(),
                ra,
                t.elapsed(),
            )
        }));
    }
    let mut fast = 0;
    for t in tasks {
        let (code, ra, elapsed) = t.await.unwrap();
        if code == "provider_unavailable" {
            assert!(ra.is_some(), "no Retry-After");
            fast += 1;
            assert!(
                ra.unwrap() > 50,
                "Retry-After should reach the ejection's end"
            );
            assert!(elapsed < Duration::from_millis(250), "took {elapsed:?}");
        }
    }
    assert!(fast >= 18, "only {fast} fast answers");
    assert!(gw.mock.call_count() <= 6, "{} calls", gw.mock.call_count());
}

#[tokio::test]
async fn metrics_show_requests_attempts_and_target_health() {
    // Health is visible in metrics as well as at /admin/health.
    let cfg = r#"
[resilience]
retry_attempts = 1
eject_after_failures = 2
base_ejection_ms = 60000
[strategies.fb2]
mode = "fallback"
targets = [{ model = "gpt-4o-mini" }, { model = "gemini-2.5-flash" }]
"#;
    let gw = start_resilient(cfg, MockConfig::default()).await;
    for _ in 0..2 {
        gw.mock.push_for_model("gpt-4o-mini", fail(503));
    }
    for _ in 0..3 {
        let r = gw
            .chat(json!({"model": "fb2", "messages": user("hi")}))
            .await;
        assert_eq!(r.status(), 200);
    }
    // Rows reach the metrics when the recorder finishes; let the last one land.
    gw.rows().await;
    let scrape = |auth: bool| {
        let mut b = gw.http.get(format!("{}/metrics", gw.url));
        if auth {
            b = b.bearer_auth(MASTER);
        }
        b.send()
    };
    assert_eq!(scrape(false).await.unwrap().status(), 401);
    let r = scrape(true).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = r.text().await.unwrap();
    let value = |line_start: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(line_start))
            .unwrap_or_else(|| panic!("no `{line_start}` in\n{text}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(
        value(r#"kairos_requests_total{route="chat",status="200",outcome="ok"}"#),
        3.0
    );
    assert_eq!(
        value(
            r#"kairos_upstream_attempts_total{target="openai/gpt-4o-mini",outcome="error",error_kind="provider_overloaded"}"#
        ),
        2.0
    );
    assert_eq!(
        value(r#"kairos_upstream_attempts_total{target="openai/gpt-4o-mini",outcome="skipped""#),
        1.0
    );
    assert_eq!(value("kairos_fallbacks_total"), 3.0);
    assert_eq!(
        value(r#"kairos_target_state{target="openai/gpt-4o-mini",state="ejected"}"#),
        1.0
    );
    assert_eq!(
        value(r#"kairos_target_state{target="gemini/gemini-2.5-flash",state="healthy"}"#),
        1.0
    );
    assert!(
        value(r#"kairos_tokens_total{provider="gemini",model="gemini-2.5-flash",kind="output"}"#)
            > 0.0
    );
    assert!(text.contains("kairos_gateway_overhead_seconds_bucket"));
    assert!(!text.contains(MASTER) && !text.contains(OPENAI_KEY));
}

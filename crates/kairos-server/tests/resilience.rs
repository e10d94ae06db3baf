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

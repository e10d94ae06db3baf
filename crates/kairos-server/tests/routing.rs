//! `model="auto"` end to end: classification, the funnel, receipts (headers, ledger, API), the
//! dry run, and the per-request options.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::{Value, json};

const SUMMARY_PROMPT: &str = "Summarize the following article in two sentences:\n\nThe city council met on Tuesday to discuss the new budget. After hours of debate, members approved a plan that increases funding for public parks and libraries while cutting administrative costs. The mayor praised the decision, saying it reflects the priorities of residents.";

#[tokio::test]
async fn auto_routes_and_keeps_a_receipt() {
    let gw = start_gw().await;
    let r = gw
        .chat(json!({"model": "auto", "messages": user(SUMMARY_PROMPT)}))
        .await;
    assert_eq!(r.status(), 200);
    let h = r.headers().clone();
    let id = request_id(&r);
    assert_eq!(h["x-kairos-receipt-id"].to_str().unwrap(), id);
    assert_eq!(h["x-kairos-task"], "summarization");
    let served = h["x-kairos-model"].to_str().unwrap().to_owned();
    assert_ne!(served, "auto");
    let body: Value = r.json().await.unwrap();
    assert!(body["choices"][0]["message"]["content"].is_string());

    let rec = gw.receipt(&id).await;
    assert_eq!(rec["chosen"], served.as_str());
    assert_eq!(rec["requested_model"], "auto");
    assert_eq!(rec["classification"]["task"], "summarization");
    assert!(rec["classification"]["confidence"].as_f64().unwrap() > 0.0);
    assert_eq!(rec["bar"]["source"], "default");
    let cands = rec["candidates"].as_array().unwrap();
    assert!(cands.len() > 5);
    assert_eq!(cands.iter().filter(|c| c["status"] == "chosen").count(), 1);
    // Every non-chosen candidate says why.
    for c in cands.iter().filter(|c| c["status"] == "dropped") {
        assert!(c["reason"]["reason"].is_string(), "{c}");
    }
    assert!(rec["reference"]["model"].is_string());
    assert!(rec["actual"]["cost_usd"].as_f64().is_some());
    let summary = rec["summary"].as_str().unwrap();
    assert!(
        summary.starts_with("classified as summarization"),
        "{summary}"
    );
    assert!(summary.contains(&format!("routed {served}")), "{summary}");

    let row = gw.row(&id).await;
    assert_eq!(row.requested_model, "auto");
    assert_eq!(row.served_model.as_deref(), Some(served.as_str()));
    assert_eq!(row.task.as_deref(), Some("summarization"));
    // The upstream got the chosen model, never "auto".
    let sent = &gw.mock.requests()[0];
    assert!(!sent.body.contains("\"auto\""));
}

#[tokio::test]
async fn the_bar_moves_the_choice_and_cheaper_wins() {
    let gw = start_gw().await;
    let mut chosen = Vec::new();
    for q in ["economy", "premium"] {
        let r = gw
            .post("/v1/route")
            .header("x-kairos-quality", q)
            .body(json!({"model": "auto", "messages": user(SUMMARY_PROMPT)}).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let rec: Value = r.json().await.unwrap();
        assert_eq!(rec["bar"]["source"], "header");
        assert_eq!(rec["bar"]["tier"], q);
        let model = rec["chosen"].as_str().unwrap().to_owned();
        let cost = rec["estimated_cost_usd"].as_f64().unwrap();
        let quality = rec["candidates"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["model"] == model.as_str())
            .unwrap()["expected_quality"]
            .as_f64()
            .unwrap();
        // The chosen model is the cheapest of those that passed the bar.
        for c in rec["candidates"].as_array().unwrap() {
            if c["reason"]["reason"] == "costlier" {
                assert!(
                    c["estimated_cost_micros"].as_u64().unwrap() >= (cost * 1e6) as u64 - 1,
                    "{c}"
                );
            }
        }
        chosen.push((model, cost, quality));
    }
    let (econ, prem) = (&chosen[0], &chosen[1]);
    assert!(prem.2 >= econ.2, "premium picked lower quality: {chosen:?}");
    assert!(
        prem.1 >= econ.1,
        "premium picked a cheaper model: {chosen:?}"
    );
    // The dry run called nothing.
    assert_eq!(gw.mock.call_count(), 0);
}

#[tokio::test]
async fn cost_ceiling_strict_and_model_list() {
    let gw = start_gw().await;
    // A ceiling nobody meets: the best-quality model is used and the receipt says so.
    let r = gw
        .post("/v1/route")
        .header("x-kairos-max-cost-usd", "0.0000001")
        .body(json!({"model": "auto", "messages": user(SUMMARY_PROMPT)}).to_string())
        .send()
        .await
        .unwrap();
    let rec: Value = r.json().await.unwrap();
    assert_eq!(rec["bar_met"], false);
    assert!(rec["chosen"].is_string());
    assert!(
        rec["summary"]
            .as_str()
            .unwrap()
            .contains("no candidate met the bar")
    );
    // Strict: the request fails with 422 and no upstream call, but its receipt is kept.
    let r = gw
        .post("/v1/chat/completions")
        .header("x-kairos-max-cost-usd", "0.0000001")
        .body(
            json!({"model": "auto", "messages": user(SUMMARY_PROMPT), "kairos": {"strict": true}})
                .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let id = request_id(&r);
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["error"]["code"], "caller_no_route");
    assert_eq!(gw.mock.call_count(), 0);
    let rec = gw.receipt(&id).await;
    assert!(rec["chosen"].is_null());
    assert_eq!(rec["actual"]["status_code"], 422);
    // The request's own model list narrows the candidates.
    let r = gw
        .chat(json!({"model": "auto", "messages": user(SUMMARY_PROMPT), "kairos": {"models": ["claude-haiku-4-5", "gemini-2.5-flash"], "quality": 0.0}}))
        .await;
    assert_eq!(r.status(), 200);
    let m = r.headers()["x-kairos-model"].to_str().unwrap().to_owned();
    assert!(m == "claude-haiku-4-5" || m == "gemini-2.5-flash", "{m}");
    let rec = gw.receipt(&request_id(&r)).await;
    assert_eq!(rec["bar"]["source"], "body");
    for c in rec["candidates"].as_array().unwrap() {
        if c["model"] != "claude-haiku-4-5" && c["model"] != "gemini-2.5-flash" {
            assert_eq!(c["reason"]["reason"], "not_allowed", "{c}");
        }
    }
}

#[tokio::test]
async fn bad_routing_options_are_400() {
    let gw = start_gw().await;
    for (h, v) in [
        ("x-kairos-quality", "1.5"),
        ("x-kairos-quality", "gold"),
        ("x-kairos-max-cost-usd", "-1"),
        ("x-kairos-max-cost-usd", "lots"),
    ] {
        let r = gw
            .post("/v1/chat/completions")
            .header(h, v)
            .body(json!({"model": "auto", "messages": user("hi")}).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{h}: {v}");
    }
    let r = gw
        .chat(json!({"model": "auto", "messages": user("hi"), "kairos": {"qualiti": 0.5}}))
        .await;
    assert_eq!(r.status(), 400);
    assert_eq!(gw.mock.call_count(), 0);
}

#[tokio::test]
async fn tasks_are_told_apart_and_capabilities_respected() {
    let gw = start_gw().await;
    let cases = [
        (
            "Write a Python function that returns the n-th Fibonacci number using memoization.",
            "code",
        ),
        (
            "Translate into German: The weather is lovely today and we are going to the beach.",
            "translation",
        ),
        (
            "A farmer has 17 sheep and buys 3 times as many goats. How many animals does he have in total?",
            "math",
        ),
    ];
    for (prompt, task) in cases {
        let r = gw
            .post("/v1/route")
            .body(json!({"model": "auto", "messages": user(prompt)}).to_string())
            .send()
            .await
            .unwrap();
        let rec: Value = r.json().await.unwrap();
        assert_eq!(
            rec["classification"]["task"], task,
            "{prompt}: {}",
            rec["summary"]
        );
    }
    // Tools required: a model without tool support is dropped for that reason.
    let r = gw
        .post("/v1/route")
        .body(json!({"model": "auto", "messages": user("What's the weather in Paris?"), "tools": [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}]}).to_string())
        .send()
        .await
        .unwrap();
    let rec: Value = r.json().await.unwrap();
    let chosen = rec["chosen"].as_str().unwrap();
    let listed: Value = gw
        .http
        .get(format!("{}/v1/models/{chosen}", gw.url))
        .bearer_auth(MASTER)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["capabilities"]["tools"], true);
}

#[tokio::test]
async fn receipts_are_private_and_404_when_unknown() {
    let gw = start_gw().await;
    let r = gw
        .http
        .get(format!("{}/v1/receipts/nope", gw.url))
        .bearer_auth(MASTER)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = gw
        .chat(json!({"model": "auto", "messages": user(SUMMARY_PROMPT)}))
        .await;
    let id = request_id(&r);
    gw.row(&id).await;
    let r = gw
        .http
        .get(format!("{}/v1/receipts/{id}", gw.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = gw
        .http
        .get(format!("{}/v1/receipts/{id}", gw.url))
        .bearer_auth("kr-not-the-key")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // A pinned request has no receipt.
    let r = gw
        .chat(json!({"model": "gpt-4o-mini", "messages": user("hi")}))
        .await;
    assert!(r.headers().get("x-kairos-receipt-id").is_none());
    let id = request_id(&r);
    gw.row(&id).await;
    let r = gw
        .http
        .get(format!("{}/v1/receipts/{id}", gw.url))
        .bearer_auth(MASTER)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn anthropic_clients_can_ask_for_auto() {
    let gw = start_gw().await;
    let r = gw
        .http
        .post(format!("{}/v1/messages", gw.url))
        .header("x-api-key", MASTER)
        .header("anthropic-version", "2023-06-01")
        .header("content-type", "application/json")
        .body(json!({"model": "auto", "max_tokens": 200, "messages": [{"role": "user", "content": SUMMARY_PROMPT}], "kairos": {"quality": "economy"}}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-kairos-task"], "summarization");
    let id = request_id(&r);
    let msg: Value = r.json().await.unwrap();
    assert_eq!(msg["type"], "message");
    let rec = gw.receipt(&id).await;
    assert_eq!(rec["bar"]["tier"], "economy");
    // The `kairos` options never reach the upstream.
    assert!(!gw.mock.requests()[0].body.contains("kairos"));
}

#[tokio::test]
async fn provider_allowlist_and_the_receipt_cli() {
    let gw = start_gw().await;
    let r = gw
        .chat(json!({"model": "auto", "messages": user(SUMMARY_PROMPT), "kairos": {"providers": ["gemini"], "quality": 0.0}}))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-kairos-provider"], "gemini");
    let id = request_id(&r);
    gw.row(&id).await;
    // `kairos receipt ID` reads the same ledger.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kairos"))
        .args(["receipt", &id])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("KAIROS_DATA_DIR", gw.dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(&format!("receipt {id}")), "{stdout}");
    assert!(stdout.contains("classified as summarization"), "{stdout}");
    assert!(stdout.contains("actual: ok (200)"), "{stdout}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kairos"))
        .args(["receipt", "no-such-id"])
        .env_clear()
        .env("KAIROS_DATA_DIR", gw.dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
}

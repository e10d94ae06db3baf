//! The signal loop's data path end to end: `POST /v1/feedback` (explicit outcomes: scores,
//! booleans, named metrics, other models, idempotency, privacy, bad bodies) and the implicit
//! outcomes the gateway records by itself (cut-offs, invalid JSON, bad tool calls, cut streams,
//! retries, escalations), on SQLite and, when KAIROS_TEST_POSTGRES_URL is set, on PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use kairos_store::OutcomeRow;
use kairos_testkit::{Behavior, MockConfig, StreamFault, ToolCallSpec};
use serde_json::{Value, json};

const SUMMARY_PROMPT: &str = "Summarize the following article in two sentences:\n\nThe city council met on Tuesday to discuss the new budget. After hours of debate, members approved a plan that increases funding for public parks and libraries while cutting administrative costs. The mayor praised the decision, saying it reflects the priorities of residents.";

async fn feedback_as(gw: &Gw, key: &str, body: Value) -> (u16, Value) {
    let r = gw
        .http
        .post(format!("{}/v1/feedback", gw.url))
        .bearer_auth(key)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

async fn feedback(gw: &Gw, body: Value) -> Value {
    let (s, v) = feedback_as(gw, MASTER, body.clone()).await;
    assert_eq!(s, 200, "{body} -> {v}");
    v
}

/// The outcome, waiting for it (the implicit one is written with the row, retries and
/// escalations by a spawned task).
async fn outcome(gw: &Gw, id: &str, metric: &str, model: &str) -> OutcomeRow {
    for _ in 0..300 {
        gw.run.ledger.flush().await;
        if let Some(o) = gw.run.store.get_outcome(id, metric, model).await.unwrap() {
            return o;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no outcome {id}/{metric}/{model}");
}

/// Every outcome of one request.
async fn outcomes_of(gw: &Gw, id: &str) -> Vec<OutcomeRow> {
    gw.run.ledger.flush().await;
    gw.run
        .store
        .outcomes_since(0, 10_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|o| o.request_id == id)
        .collect()
}

/// A chat request with the master key; returns (request id, served model, body).
async fn chat_ok(gw: &Gw, body: Value) -> (String, String, Value) {
    chat_ok_as(gw, MASTER, body).await
}

/// [`chat_ok`] with `key`.
async fn chat_ok_as(gw: &Gw, key: &str, body: Value) -> (String, String, Value) {
    let r = gw.chat_as(key, body.clone()).await;
    assert_eq!(r.status(), 200, "{body}");
    let id = request_id(&r);
    let model = r.headers()["x-kairos-model"].to_str().unwrap().to_owned();
    let text = r.text().await.unwrap();
    let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
    gw.row(&id).await;
    (id, model, v)
}

/// The implicit outcome of a request: (score, detail).
async fn implicit(gw: &Gw, id: &str, model: &str) -> (f64, String) {
    let o = outcome(gw, id, "implicit", model).await;
    assert_eq!(o.weight, 0.25);
    assert_eq!(o.source, "implicit");
    (o.score, o.detail.unwrap_or_default())
}

// ---------------------------------------------------------------------------------------------
// Scenarios, run on every backend

async fn explicit_feedback(gw: &Gw) {
    let (id, served, _) = chat_ok(
        gw,
        json!({"model": "auto", "messages": user(SUMMARY_PROMPT)}),
    )
    .await;
    let row = gw.row(&id).await;
    assert_eq!(row.task.as_deref(), Some("summarization"));

    // A score in [0, 1], about the served model.
    let v = feedback(gw, json!({"request_id": id, "score": 0.9})).await;
    assert_eq!(
        v,
        json!({"object": "feedback", "request_id": id, "metric": "score", "model": served, "score": 0.9, "updated": false})
    );
    let first = outcome(gw, &id, "score", &served).await;
    assert_eq!(first.weight, 1.0);
    assert_eq!(first.source, "explicit");
    assert_eq!(first.key_id, "master");
    assert_eq!(first.task.as_deref(), Some("summarization"));
    assert_eq!(first.embedding, row.embedding);
    assert_eq!(first.workspace, None);

    // A boolean under its receipt id: the same outcome, updated (created_ms kept).
    tokio::time::sleep(Duration::from_millis(5)).await;
    let v = feedback(gw, json!({"receipt_id": id, "score": false})).await;
    assert_eq!(
        (v["score"].as_f64(), v["updated"].as_bool()),
        (Some(0.0), Some(true))
    );
    let second = outcome(gw, &id, "score", &served).await;
    assert_eq!(second.score, 0.0);
    assert_eq!(second.created_ms, first.created_ms);
    assert!(second.updated_ms > first.updated_ms);

    // A named metric with a comment, twice: one row, updated.
    let body = json!({"request_id": id, "metric": "faithfulness", "value": 0.7, "comment": "close, one date wrong"});
    let v = feedback(gw, body.clone()).await;
    assert_eq!(
        (v["metric"].as_str(), v["updated"].as_bool()),
        (Some("faithfulness"), Some(false))
    );
    let v = feedback(gw, body).await;
    assert_eq!(v["updated"], true);
    let o = outcome(gw, &id, "faithfulness", &served).await;
    assert_eq!(
        (o.score, o.detail.as_deref()),
        (0.7, Some("close, one date wrong"))
    );

    // About another model (an alias resolves to its catalog id).
    let other = if served == "gpt-4o" {
        "claude-sonnet-4-5"
    } else {
        "gpt-4o"
    };
    let v = feedback(gw, json!({"request_id": id, "score": true, "model": other})).await;
    assert_eq!(
        (v["model"].as_str(), v["score"].as_f64()),
        (Some(other), Some(1.0))
    );
    assert_eq!(outcome(gw, &id, "score", other).await.score, 1.0);
    let (s, v) = feedback_as(
        gw,
        MASTER,
        json!({"request_id": id, "score": 1, "model": "no-such-model"}),
    )
    .await;
    assert_eq!(
        (s, v["error"]["param"].as_str()),
        (400, Some("model")),
        "{v}"
    );

    // Exactly these outcomes (the implicit one came with the row).
    let mut keys: Vec<String> = outcomes_of(gw, &id)
        .await
        .into_iter()
        .map(|o| format!("{}/{}", o.metric, o.model))
        .collect();
    keys.sort();
    let mut want = vec![
        format!("faithfulness/{served}"),
        format!("implicit/{served}"),
        format!("score/{other}"),
        format!("score/{served}"),
    ];
    want.sort();
    assert_eq!(keys, want);
    assert_eq!(implicit(gw, &id, &served).await, (0.8, "ok".to_owned()));

    // Unknown requests are 404 (after waiting for a late row), OpenAI-shaped.
    let t = std::time::Instant::now();
    let (s, v) = feedback_as(
        gw,
        MASTER,
        json!({"request_id": "0190aaaa-0000-7000-8000-000000000000", "score": 1}),
    )
    .await;
    assert_eq!(s, 404, "{v}");
    assert_eq!(v["error"]["code"], "caller_object_not_found");
    assert!(
        t.elapsed() >= Duration::from_millis(800),
        "waited for a late row"
    );
}

async fn implicit_outcomes(gw: &Gw) {
    let ask = |text: &str| json!({"model": "gpt-4o-mini", "messages": user(text)});

    // A plain answer: a weak positive.
    let (id, m, _) = chat_ok(gw, ask("What is the capital of France?")).await;
    assert_eq!(implicit(gw, &id, &m).await, (0.8, "ok".to_owned()));

    // Cut off by the output limit.
    gw.mock.push(Behavior {
        finish_reason: Some("length".into()),
        ..Behavior::default()
    });
    let (id, m, v) = chat_ok(gw, ask("Write a long story.")).await;
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(implicit(gw, &id, &m).await, (0.3, "length".to_owned()));

    // JSON asked for, prose answered.
    gw.mock
        .push(Behavior::text("Sure! Here is the JSON: {\"a\": 1}"));
    let mut body = ask("Give me a JSON object with a = 1.");
    body["response_format"] = json!({"type": "json_object"});
    let (id, m, _) = chat_ok(gw, body.clone()).await;
    assert_eq!(
        implicit(gw, &id, &m).await,
        (0.0, "invalid_json".to_owned())
    );
    // ... and valid JSON, streamed.
    gw.mock.push(Behavior::text("{\"a\": 1}"));
    body["stream"] = json!(true);
    let (id, m, _) = chat_ok(gw, body).await;
    assert_eq!(implicit(gw, &id, &m).await, (0.8, "ok".to_owned()));

    // A refusal.
    gw.mock
        .push(Behavior::text("I'm sorry, but I can't help with that."));
    let (id, m, _) = chat_ok(gw, ask("Help me with something.")).await;
    assert_eq!(implicit(gw, &id, &m).await, (0.1, "refusal".to_owned()));

    // Tool calls: a required parameter missing; a tool that was not offered (streamed).
    let tools = json!([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]);
    let mut body = ask("What's the weather in Paris?");
    body["tools"] = tools.clone();
    gw.mock.push(Behavior {
        tool_call: Some(ToolCallSpec::new("get_weather", "{\"unit\": \"C\"}")),
        ..Behavior::default()
    });
    let (id, m, _) = chat_ok(gw, body.clone()).await;
    assert_eq!(
        implicit(gw, &id, &m).await,
        (0.0, "tool_missing_param".to_owned())
    );
    gw.mock.push(Behavior {
        tool_call: Some(ToolCallSpec::new("launch_rockets", "{}")),
        ..Behavior::default()
    });
    body["stream"] = json!(true);
    let (id, m, _) = chat_ok(gw, body.clone()).await;
    assert_eq!(
        implicit(gw, &id, &m).await,
        (0.0, "unknown_tool".to_owned())
    );
    gw.mock.push(Behavior {
        tool_call: Some(ToolCallSpec::new("get_weather", "{\"city\": \"Paris\"")),
        ..Behavior::default()
    });
    let (id, m, _) = chat_ok(gw, body.clone()).await;
    assert_eq!(
        implicit(gw, &id, &m).await,
        (0.0, "tool_args_invalid_json".to_owned())
    );
    gw.mock.push(Behavior {
        tool_call: Some(ToolCallSpec::new("get_weather", "{\"city\": \"Paris\"}")),
        ..Behavior::default()
    });
    let (id, m, _) = chat_ok(gw, body).await;
    assert_eq!(implicit(gw, &id, &m).await, (0.8, "ok".to_owned()));

    // A stream the model cut: 0.0; a client that goes away: nothing.
    gw.mock.push(Behavior {
        stream_fault: Some(StreamFault::CutAfter(1)),
        ..Behavior::default()
    });
    let mut body = ask("Tell me a story.");
    body["stream"] = json!(true);
    let (id, m, _) = chat_ok(gw, body).await;
    assert_eq!(gw.row(&id).await.outcome, "upstream_cut");
    assert_eq!(
        implicit(gw, &id, &m).await,
        (0.0, "upstream_cut".to_owned())
    );
    // An upstream error before any answer (and bad input): no implicit outcome.
    gw.mock.push(Behavior::status(500));
    let r = gw.chat(ask("Anything.")).await;
    assert_eq!(r.status(), 502);
    let id = request_id(&r);
    gw.row(&id).await;
    assert!(outcomes_of(gw, &id).await.is_empty());

    // /v1/messages, natively to Anthropic, streamed: a tool call without its required input.
    gw.mock.push(Behavior {
        tool_call: Some(ToolCallSpec::new("get_weather", "{}")),
        ..Behavior::default()
    });
    let r = gw
        .http
        .post(format!("{}/v1/messages", gw.url))
        .header("x-api-key", MASTER)
        .header("anthropic-version", "2023-06-01")
        .header("content-type", "application/json")
        .body(
            json!({"model": "claude-haiku-4-5", "max_tokens": 200, "stream": true,
                "messages": [{"role": "user", "content": "Weather in Paris?"}],
                "tools": [{"name": "get_weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]})
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let id = request_id(&r);
    let m = r.headers()["x-kairos-model"].to_str().unwrap().to_owned();
    let _ = r.text().await.unwrap();
    assert_eq!(
        implicit(gw, &id, &m).await,
        (0.0, "tool_missing_param".to_owned())
    );
    // ... and a cut-off answer, not streamed.
    gw.mock.push(Behavior {
        finish_reason: Some("length".into()),
        ..Behavior::default()
    });
    let r = gw
        .http
        .post(format!("{}/v1/messages", gw.url))
        .header("x-api-key", MASTER)
        .header("anthropic-version", "2023-06-01")
        .header("content-type", "application/json")
        .body(json!({"model": "claude-haiku-4-5", "max_tokens": 200, "messages": [{"role": "user", "content": "Write a long story."}]}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let id = request_id(&r);
    let _ = r.text().await.unwrap();
    assert_eq!(implicit(gw, &id, &m).await, (0.3, "length".to_owned()));
}

async fn retries_and_escalations(gw: &Gw) {
    retries_and_escalations_via(gw, gw, MASTER).await;
}

/// Each later request goes to `later`, with `key` (two replicas: the retry and the escalation
/// are seen across them).
async fn retries_and_escalations_via(first_gw: &Gw, later: &Gw, key: &str) {
    let gw = first_gw;
    // The same prompt again, soon after the answer: the first answer gets a retry outcome.
    let body = json!({"model": "gpt-4o-mini", "messages": user("Name three prime numbers.")});
    let (first, m, _) = chat_ok_as(gw, key, body.clone()).await;
    let (second, _, _) = chat_ok_as(later, key, body).await;
    let o = outcome(gw, &first, "implicit_retry", &m).await;
    assert_eq!(
        (o.score, o.weight, o.source.as_str()),
        (0.0, 0.5, "implicit")
    );
    assert_eq!(o.detail, Some(format!("retried by {second}")));
    assert!(
        outcomes_of(gw, &second)
            .await
            .iter()
            .all(|o| o.metric == "implicit"),
        "the later request is not blamed"
    );

    // A conversation routed by auto, continued pinned to another model: an escalation.
    let system = json!({"role": "system", "content": "You are a careful assistant."});
    let (routed, chosen, _) = chat_ok_as(
        gw,
        key,
        json!({"model": "auto", "messages": [system, {"role": "user", "content": SUMMARY_PROMPT}]}),
    )
    .await;
    assert!(gw.row(&routed).await.task.is_some());
    let pinned = if chosen == "gpt-4o" {
        "claude-sonnet-4-5"
    } else {
        "gpt-4o"
    };
    let (later, _, _) = chat_ok_as(
        later,
        key,
        json!({"model": pinned, "messages": [system, {"role": "user", "content": SUMMARY_PROMPT},
            {"role": "assistant", "content": "The council approved a budget."},
            {"role": "user", "content": "That is too short, try again."}]}),
    )
    .await;
    let o = outcome(gw, &routed, "implicit_escalation", &chosen).await;
    assert_eq!((o.score, o.weight), (0.0, 0.5));
    assert_eq!(o.task, gw.row(&routed).await.task);
    assert_eq!(o.detail, Some(format!("escalated to {pinned} by {later}")));
}

// ---------------------------------------------------------------------------------------------
// Tests

#[tokio::test]
async fn explicit_feedback_on_sqlite() {
    explicit_feedback(&start_gw().await).await;
}

#[tokio::test]
async fn implicit_outcomes_on_sqlite() {
    implicit_outcomes(&start_gw().await).await;
}

#[tokio::test]
async fn retries_and_escalations_on_sqlite() {
    retries_and_escalations(&start_gw().await).await;
}

#[tokio::test]
async fn outcomes_on_postgres() {
    let Ok(pg) = std::env::var("KAIROS_TEST_POSTGRES_URL") else {
        eprintln!("SKIP outcomes_on_postgres: KAIROS_TEST_POSTGRES_URL unset");
        return;
    };
    let (schema, url) = pg_schema(&pg, "outcomes").await;
    let gw = start_db(&url, &mut MockConfig::default()).await;
    assert_eq!(gw.run.store.backend(), "postgres");
    explicit_feedback(&gw).await;
    implicit_outcomes(&gw).await;
    retries_and_escalations(&gw).await;
    drop(gw);
    kairos_store::Store::drop_postgres_schema(&pg, &schema)
        .await
        .unwrap();
}

/// Two replicas sharing PostgreSQL and Redis: a retry or an escalation sent to the other
/// replica is still seen (the recent requests of virtual keys are remembered in Redis).
#[tokio::test]
async fn retries_and_escalations_across_replicas() {
    let (Ok(pg), Ok(redis)) = (
        std::env::var("KAIROS_TEST_POSTGRES_URL"),
        std::env::var("KAIROS_TEST_REDIS_URL"),
    ) else {
        eprintln!(
            "SKIP retries_and_escalations_across_replicas: KAIROS_TEST_POSTGRES_URL or KAIROS_TEST_REDIS_URL unset"
        );
        return;
    };
    let (schema, db) = pg_schema(&pg, "recall").await;
    let env = [
        ("KAIROS_DATABASE_URL", db.as_str()),
        ("KAIROS_REDIS_URL", redis.as_str()),
    ];
    let r1 = start_env(&env, &mut MockConfig::default()).await;
    let r2 = start_env(&env, &mut MockConfig::default()).await;
    let ws = workspace(&r1, "recall", json!({})).await;
    let (_, k) = key(&r1, MASTER, &ws, json!({"name": "svc"})).await;
    retries_and_escalations_via(&r1, &r2, &k).await;
    drop((r1, r2));
    let _ = kairos_store::Store::drop_postgres_schema(&pg, &schema).await;
}

#[tokio::test]
async fn bad_feedback_is_400_without_an_upstream_call() {
    let gw = start_gw().await;
    let raw = |body: &str| {
        gw.http
            .post(format!("{}/v1/feedback", gw.url))
            .bearer_auth(MASTER)
            .header("content-type", "application/json")
            .body(body.to_owned())
    };
    let id = "0190aaaa-0000-7000-8000-000000000000";
    #[rustfmt::skip]
    let cases: Vec<(&str, reqwest::RequestBuilder, u16, Option<&str>)> = vec![
        ("invalid JSON", raw("{\"request_id\": "), 400, None),
        ("empty body", raw(""), 400, None),
        ("not an object", raw("[1]"), 400, None),
        ("unknown field", raw(&json!({"request_id": id, "score": 1, "rating": 5}).to_string()), 400, Some("rating")),
        ("no id", raw(&json!({"score": 1}).to_string()), 400, Some("request_id")),
        ("both ids", raw(&json!({"request_id": id, "receipt_id": id, "score": 1}).to_string()), 400, Some("receipt_id")),
        ("no score", raw(&json!({"request_id": id}).to_string()), 400, Some("score")),
        ("null score", raw(&json!({"request_id": id, "score": null}).to_string()), 400, Some("score")),
        ("score above 1", raw(&json!({"request_id": id, "score": 1.01}).to_string()), 400, Some("score")),
        ("negative score", raw(&json!({"request_id": id, "score": -1}).to_string()), 400, Some("score")),
        ("score as text", raw(&json!({"request_id": id, "score": "great"}).to_string()), 400, Some("score")),
        ("NaN score", raw(&format!("{{\"request_id\": \"{id}\", \"score\": NaN}}")), 400, None),
        ("huge score", raw(&format!("{{\"request_id\": \"{id}\", \"score\": 1e999}}")), 400, None),
        ("metric without value", raw(&json!({"request_id": id, "metric": "m"}).to_string()), 400, Some("value")),
        ("score and value", raw(&json!({"request_id": id, "score": 1, "value": 1}).to_string()), 400, Some("value")),
        ("value out of range", raw(&json!({"request_id": id, "metric": "m", "value": 7}).to_string()), 400, Some("value")),
        ("reserved metric", raw(&json!({"request_id": id, "metric": "implicit", "value": 1}).to_string()), 400, Some("metric")),
        ("reserved metric prefix", raw(&json!({"request_id": id, "metric": "implicit_retry", "value": 1}).to_string()), 400, Some("metric")),
        ("bad metric name", raw(&json!({"request_id": id, "metric": "a/b", "value": 1}).to_string()), 400, Some("metric")),
        ("long metric name", raw(&json!({"request_id": id, "metric": "m".repeat(65), "value": 1}).to_string()), 400, Some("metric")),
        ("comment too long", raw(&json!({"request_id": id, "score": 1, "comment": "x".repeat(4097)}).to_string()), 400, Some("comment")),
        ("empty model", raw(&json!({"request_id": id, "score": 1, "model": ""}).to_string()), 400, Some("model")),
        ("wrong content type", gw.http .post(format!("{}/v1/feedback", gw.url)) .bearer_auth(MASTER) .header("content-type", "text/plain") .body(json!({"request_id": id, "score": 1}).to_string()), 400, None),
        ("no key", gw.http .post(format!("{}/v1/feedback", gw.url)) .header("content-type", "application/json") .body(json!({"request_id": id, "score": 1}).to_string()), 401, None),
        ("bad key", gw.http .post(format!("{}/v1/feedback", gw.url)) .bearer_auth("kr-nope") .header("content-type", "application/json") .body(json!({"request_id": id, "score": 1}).to_string()), 401, None),
        ("wrong method", gw.http .get(format!("{}/v1/feedback", gw.url)) .bearer_auth(MASTER), 405, None),
    ];
    for (what, req, status, param) in cases {
        let r = req.send().await.unwrap();
        assert_eq!(r.status().as_u16(), status, "{what}");
        let b: Value = r.json().await.unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(
            b["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{what}: {b}"
        );
        assert!(b["error"]["type"].is_string(), "{what}: {b}");
        if let Some(p) = param {
            assert_eq!(b["error"]["param"], p, "{what}: {b}");
        }
    }
    assert_eq!(gw.mock.call_count(), 0, "the upstream was called");
    assert!(gw.rows().await.is_empty(), "feedback writes no ledger row");
    assert!(gw.run.store.outcomes_since(0, 10).await.unwrap().is_empty());
}

/// Feedback and receipts are private: the key that made the request, an admin key of its
/// workspace, or the master key; everyone else gets the same 404 as for an unknown request.
#[tokio::test]
async fn feedback_and_receipts_reach_only_the_caller_and_its_workspace_admins() {
    let gw = start_gw().await;
    let a = workspace(&gw, "team-a", json!({})).await;
    let b = workspace(&gw, "team-b", json!({})).await;
    let (_, member) = key(&gw, MASTER, &a, json!({"name": "svc"})).await;
    let (_, colleague) = key(&gw, MASTER, &a, json!({"name": "other"})).await;
    let (_, admin_a) = key(&gw, MASTER, &a, json!({"name": "adm", "role": "admin"})).await;
    let (_, admin_b) = key(&gw, MASTER, &b, json!({"name": "adm", "role": "admin"})).await;

    let r = gw
        .chat_as(
            &member,
            json!({"model": "auto", "messages": user(SUMMARY_PROMPT)}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let id = request_id(&r);
    let served = r.headers()["x-kairos-model"].to_str().unwrap().to_owned();
    gw.row(&id).await;

    let receipt = |k: &str| {
        gw.http
            .get(format!("{}/v1/receipts/{id}", gw.url))
            .bearer_auth(k.to_owned())
            .send()
    };
    for (who, k, allowed) in [
        ("the key that made it", member.as_str(), true),
        ("an admin of its workspace", admin_a.as_str(), true),
        ("the master key", MASTER, true),
        ("another key of the workspace", colleague.as_str(), false),
        ("an admin of another workspace", admin_b.as_str(), false),
    ] {
        let r = receipt(k).await.unwrap();
        assert_eq!(
            r.status().as_u16(),
            if allowed { 200 } else { 404 },
            "receipt, {who}"
        );
        let (s, v) = feedback_as(&gw, k, json!({"request_id": id, "score": 0.5})).await;
        assert_eq!(s, if allowed { 200 } else { 404 }, "feedback, {who}: {v}");
        if !allowed {
            assert_eq!(v["error"]["code"], "caller_object_not_found", "{v}");
            assert!(
                !v.to_string().contains(&served),
                "nothing about the request leaks"
            );
        }
    }
    // The outcome belongs to the request's key and workspace, whoever gave the feedback.
    let o = outcome(&gw, &id, "score", &served).await;
    assert_eq!(o.workspace.as_deref(), Some(a.as_str()));
    assert_ne!(o.key_id, "master");
}

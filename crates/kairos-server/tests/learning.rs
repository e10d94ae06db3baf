//! The signal loop end to end: feedback on routed requests changes where `auto` sends similar
//! prompts, receipts cite the evidence, and the learned state is shared by replicas and survives
//! a restart (PostgreSQL).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use kairos_testkit::MockConfig;
use serde_json::{Value, json};

/// Two candidates that both clear the bar on their priors: the cheap one wins until the
/// workspace's outcomes say otherwise. Replicas re-read outcomes every 200 ms.
const ROUTING: &str = r#"
[routing]
candidates = ["gpt-4o-mini", "gpt-4o"]
default_quality = 0.3
[routing.learning]
refresh_ms = 200
"#;

fn prompt(i: usize) -> Value {
    json!({
        "model": "auto",
        "messages": user(&format!(
            "Translate this clause of a commercial lease into formal German, keeping the legal terms: \
             the tenant shall indemnify the landlord against claim number {i}."
        ))
    })
}

/// An `auto` request; returns (request id, served model).
async fn routed(gw: &Gw, i: usize) -> (String, String) {
    let r = gw.chat(prompt(i)).await;
    assert_eq!(r.status(), 200);
    let id = request_id(&r);
    let model = r
        .headers()
        .get("x-kairos-model")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let _ = r.bytes().await;
    (id, model)
}

async fn feedback(gw: &Gw, id: &str, score: f64) {
    let r = gw
        .post("/v1/feedback")
        .body(json!({"request_id": id, "score": score}).to_string())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let body = r.text().await.unwrap();
    assert_eq!(status, 200, "{body}");
}

/// Sends routed requests with a failing score until `auto` stops choosing the cheap model.
/// Returns how many it took.
async fn teach_that_mini_fails(gw: &Gw) -> usize {
    for i in 0..40 {
        let (id, model) = routed(gw, i).await;
        if model == "gpt-4o" {
            return i;
        }
        assert_eq!(model, "gpt-4o-mini", "request {i}");
        feedback(gw, &id, 0.0).await;
    }
    panic!("40 failing scores did not move routing off gpt-4o-mini");
}

fn candidate<'a>(receipt: &'a Value, model: &str) -> &'a Value {
    receipt["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["model"] == model)
        .unwrap_or_else(|| panic!("{model} not in {receipt}"))
}

#[tokio::test]
async fn feedback_moves_routing_and_receipts_cite_the_evidence() {
    let gw = start_with(ROUTING, MockConfig::default()).await;
    // Cold: the priors pick the cheaper model, and say so.
    let (id, model) = routed(&gw, 1000).await;
    assert_eq!(model, "gpt-4o-mini");
    let r = gw.receipt(&id).await;
    let mini = candidate(&r, "gpt-4o-mini");
    assert_eq!(mini["evidence"]["dominated_by"], "prior", "{r}");
    assert_eq!(mini["evidence"]["prior_share"], 1.0, "{r}");
    assert_eq!(mini["evidence"]["outcomes"], 0);
    assert_eq!(r["learning"]["exploration"], false);
    assert!(
        r["learning"]["embedder"]
            .as_str()
            .unwrap()
            .starts_with("emb1-")
    );
    // The embedding of the prompt is on the ledger row (for outcomes to copy).
    assert!(gw.row(&id).await.embedding.is_some());

    let n = teach_that_mini_fails(&gw).await;
    assert!(
        n >= 2,
        "moved after {n} outcomes: the prior should count for something"
    );
    // The receipt of the moved decision cites the workspace's evidence.
    let (id, model) = routed(&gw, 2000).await;
    assert_eq!(model, "gpt-4o");
    let r = gw.receipt(&id).await;
    let mini = candidate(&r, "gpt-4o-mini");
    let ev = &mini["evidence"];
    assert_eq!(ev["dominated_by"], "workspace", "{r}");
    assert!(ev["prior_share"].as_f64().unwrap() < 0.5, "{ev}");
    assert!(ev["outcomes"].as_u64().unwrap() >= n as u64, "{ev}");
    assert!(ev["neighbours"].as_u64().unwrap() > 0, "{ev}");
    assert!(ev["similarity"].as_f64().unwrap() > 0.5, "{ev}");
    let mean = ev["mean"].as_f64().unwrap();
    assert!(mean < 0.3, "{ev}");
    assert!(ev["low"].as_f64().unwrap() <= mean && mean <= ev["high"].as_f64().unwrap());
    assert_eq!(mini["reason"]["reason"], "below_bar", "{mini}");
    assert!(r["learning"]["workspace_outcomes"].as_u64().unwrap() >= n as u64);
    // Strict requests never explore; a dry run neither.
    let dry = gw
        .post("/v1/route")
        .body(prompt(3000).to_string())
        .send()
        .await
        .unwrap();
    let dry: Value = dry.json().await.unwrap();
    assert_eq!(dry["chosen"], "gpt-4o", "{dry}");
    assert_eq!(dry["learning"]["exploration"], false);
}

#[tokio::test]
async fn exploration_is_marked_and_never_strict() {
    let mut mock = MockConfig::default();
    let gw = start_env(&[("KAIROS_EXPLORE", "1")], &mut mock).await;
    // Every request explores (share 1): the receipt says so.
    let r = gw
        .post("/v1/route")
        .body(prompt(1).to_string())
        .send()
        .await
        .unwrap();
    let dry: Value = r.json().await.unwrap();
    assert_eq!(
        dry["learning"]["exploration"], false,
        "dry runs never explore"
    );
    let (id, _) = routed(&gw, 2).await;
    let r = gw.receipt(&id).await;
    assert_eq!(r["learning"]["exploration"], true, "{r}");
    let mut body = prompt(3);
    body["kairos"] = json!({"strict": true, "quality": 0.3});
    let resp = gw.chat(body).await;
    assert_eq!(resp.status(), 200);
    let id = request_id(&resp);
    let r = gw.receipt(&id).await;
    assert_eq!(
        r["learning"]["exploration"], false,
        "strict requests never explore"
    );
}

#[tokio::test]
async fn bad_answer_value_is_400() {
    let gw = start_with(ROUTING, MockConfig::default()).await;
    for v in ["-1", "0", "abc", "1e9"] {
        let r = gw
            .post("/v1/chat/completions")
            .header("x-kairos-answer-value-usd", v)
            .body(prompt(1).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{v}");
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["error"]["param"], "x-kairos-answer-value-usd");
    }
    let mut body = prompt(1);
    body["kairos"] = json!({"value_usd": -2});
    let r = gw.chat(body).await;
    assert_eq!(r.status(), 400);
    assert_eq!(
        gw.mock.requests().len(),
        0,
        "no upstream call for bad input"
    );
    // A good value is accepted and shows on the receipt.
    let r = gw
        .post("/v1/chat/completions")
        .header("x-kairos-answer-value-usd", "0.05")
        .body(prompt(1).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let id = request_id(&r);
    let rc = gw.receipt(&id).await;
    assert_eq!(rc["learning"]["value_usd"], 0.05, "{rc}");
}

#[tokio::test]
async fn replicas_share_learned_state_and_a_restart_keeps_it() {
    let Ok(pg) = std::env::var("KAIROS_TEST_POSTGRES_URL") else {
        eprintln!(
            "SKIP replicas_share_learned_state_and_a_restart_keeps_it: KAIROS_TEST_POSTGRES_URL unset"
        );
        return;
    };
    let (schema, url) = pg_schema(&pg, "learn").await;
    let a = start_db_with(&url, ROUTING, &mut MockConfig::default()).await;
    let b = start_db_with(&url, ROUTING, &mut MockConfig::default()).await;
    assert_eq!(a.run.store.backend(), "postgres");
    // Both start cold.
    assert_eq!(routed(&b, 500).await.1, "gpt-4o-mini");
    teach_that_mini_fails(&a).await;
    // Replica B never saw that feedback in process: it reads it from PostgreSQL.
    let t = std::time::Instant::now();
    loop {
        if routed(&b, 600).await.1 == "gpt-4o" {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "replica B did not learn within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let shared_after = t.elapsed();
    drop(a);
    drop(b);
    // A fresh process on the same database starts with the learned state.
    let c = start_db_with(&url, ROUTING, &mut MockConfig::default()).await;
    let t = std::time::Instant::now();
    loop {
        if routed(&c, 700).await.1 == "gpt-4o" {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "a restarted gateway lost the learned state"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("learned state reached replica B after {shared_after:?}");
    drop(c);
    kairos_store::Store::drop_postgres_schema(&pg, &schema)
        .await
        .unwrap();
}

/// The shift from prior to learned routing is visible per workspace on the admin API: before
/// any outcome the workspace has no estimates; after its outcomes for (translation,
/// gpt-4o-mini) outweigh the prior, that row is dominated by the workspace's data and far below
/// its prior. Another workspace sees none of it.
#[tokio::test]
async fn the_shift_to_learned_routing_is_visible_per_workspace() {
    let gw = start_with(ROUTING, MockConfig::default()).await;
    let ws = workspace(&gw, "translators", json!({})).await;
    let other = workspace(&gw, "others", json!({})).await;
    let (_, k) = key(&gw, MASTER, &ws, json!({"name": "svc"})).await;
    let learning = |w: String| {
        let gw = &gw;
        async move {
            let (s, v) = gw
                .admin(
                    reqwest::Method::GET,
                    &format!("/admin/v1/workspaces/{w}/learning"),
                    Some(MASTER),
                    None,
                )
                .await;
            assert_eq!(s, 200, "{v}");
            v
        }
    };
    let v = learning(ws.clone()).await;
    assert_eq!(
        (v["outcomes"].clone(), v["estimates"].clone()),
        (json!(0), json!([])),
        "{v}"
    );
    // 30 requests, each with a failing score for gpt-4o-mini, whichever model served it
    // (feedback may name a model the request did not use: offline labels).
    let mut served = Vec::new();
    for i in 0..30 {
        let r = gw.chat_as(&k, prompt(i)).await;
        assert_eq!(r.status(), 200);
        let id = request_id(&r);
        served.push(r.headers()["x-kairos-model"].to_str().unwrap().to_owned());
        let _ = r.bytes().await;
        let f = gw
            .http
            .post(format!("{}/v1/feedback", gw.url))
            .bearer_auth(&k)
            .header("content-type", "application/json")
            .body(json!({"request_id": id, "score": 0.0, "model": "gpt-4o-mini"}).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(f.status(), 200, "{}", f.text().await.unwrap());
    }
    assert_eq!(served[0], "gpt-4o-mini");
    assert_eq!(served.last().unwrap(), "gpt-4o", "{served:?}");
    let v = learning(ws.clone()).await;
    let row = v["estimates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["model"] == "gpt-4o-mini" && r["task"] == "translation")
        .unwrap_or_else(|| panic!("no (translation, gpt-4o-mini) row: {v}"));
    assert_eq!(row["dominated_by"], "workspace", "{v}");
    assert!(row["prior_share"].as_f64().unwrap() < 0.5, "{row}");
    let (mean, prior) = (
        row["mean"].as_f64().unwrap(),
        row["prior_mean"].as_f64().unwrap(),
    );
    assert!(mean < prior - 0.2, "{row}");
    assert!(row["outcomes"].as_f64().unwrap() >= 30.0, "{row}");
    assert!(v["embedded_points"].as_u64().unwrap() >= 2, "{v}");
    // Workspaces do not share learned state.
    let v = learning(other).await;
    assert_eq!(v["outcomes"], json!(0), "{v}");
}

/// Outcomes of pinned requests are prompt-level evidence too: failing scores on translations
/// sent to gpt-4o-mini by name move `auto` translations off it, and the receipt cites those
/// prompts as neighbours. With `embed_pinned = false` a pinned row carries no embedding and no
/// task type.
#[tokio::test]
async fn pinned_traffic_teaches_auto_routing() {
    let gw = start_with(ROUTING, MockConfig::default()).await;
    let (_, model) = routed(&gw, 5000).await;
    assert_eq!(model, "gpt-4o-mini");
    // Ten translations sent to gpt-4o-mini by name, each scored as a failure; no `auto`
    // request in between, so any neighbour evidence beyond the first request is theirs.
    for i in 0..10 {
        let mut body = prompt(i);
        body["model"] = json!("gpt-4o-mini");
        let r = gw.chat(body).await;
        assert_eq!(r.status(), 200);
        let id = request_id(&r);
        let _ = r.bytes().await;
        let row = gw.row(&id).await;
        assert!(row.embedding.is_some(), "a pinned row is embedded");
        assert_eq!(
            row.task.as_deref(),
            Some("translation"),
            "and classified, as `auto` would"
        );
        feedback(&gw, &id, 0.0).await;
    }
    let (probe, model) = routed(&gw, 6000).await;
    let r = gw.receipt(&probe).await;
    let ev = &candidate(&r, "gpt-4o-mini")["evidence"];
    assert_eq!(model, "gpt-4o", "{r}");
    assert!(ev["neighbours"].as_u64().unwrap() >= 10, "{ev}");
    // Counted at the task level too: the pinned rows carry their task type.
    assert!(ev["outcomes"].as_u64().unwrap() >= 10, "{ev}");
    assert!(ev["similarity"].as_f64().unwrap() > 0.5, "{ev}");

    let off = start_with(
        &ROUTING.replace(
            "[routing.learning]",
            "[routing.learning]\nembed_pinned = false",
        ),
        MockConfig::default(),
    )
    .await;
    let r = off
        .chat(json!({"model": "gpt-4o-mini", "messages": user("Translate 'good morning' into German.")}))
        .await;
    assert_eq!(r.status(), 200);
    let id = request_id(&r);
    let _ = r.bytes().await;
    let row = off.row(&id).await;
    assert!(
        row.embedding.is_none() && row.task.is_none(),
        "{:?}",
        row.task
    );
}

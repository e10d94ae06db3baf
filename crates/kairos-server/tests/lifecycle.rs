//! Request lifecycle: client disconnects, graceful shutdown, and the PostgreSQL ledger.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use kairos_testkit::{Behavior, MockConfig};
use serde_json::json;

#[tokio::test]
async fn client_disconnect_mid_stream_bills_partial_output_and_cancels_upstream() {
    // U19 (LiteLLM PR #33736: tokens delivered, no spend row).
    let gw = start_gw().await;
    gw.mock.push(Behavior {
        chunks: 40,
        itl_ms: 50,
        ..Default::default()
    });
    let r = gw
        .chat(json!({"model": "gpt-4o-mini", "messages": user("a long story"), "stream": true}))
        .await;
    assert_eq!(r.status(), 200);
    let id = request_id(&r);
    let mut body = r.bytes_stream();
    let mut got = 0;
    while got < 3 {
        let c = body.next().await.unwrap().unwrap();
        got += c.windows(5).filter(|w| w == b"data:").count();
    }
    drop(body); // the client goes away
    let row = gw.row(&id).await;
    assert_eq!(row.outcome, "client_disconnected");
    assert_eq!(row.status_code, 200);
    assert!(
        row.output_tokens > 0,
        "partial output must be billed: {row:?}"
    );
    assert!(row.cost_micros.unwrap_or(0) > 0);
    // The upstream saw the cancellation promptly (well before its 2 s of remaining output).
    let t = std::time::Instant::now();
    while gw.mock.disconnects() == 0 {
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "upstream not cancelled"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let billed = &gw.mock.ledger()[0];
    assert!(!billed.completed);
    assert!(
        row.output_tokens >= i64::from(billed.completion_tokens) / 2,
        "{row:?} vs {billed:?}"
    );
}

#[tokio::test]
async fn client_disconnect_while_waiting_for_a_non_stream_answer_is_recorded() {
    let gw = start_gw().await;
    gw.mock.push(Behavior {
        headers_delay_ms: 2_000,
        ..Default::default()
    });
    let req = gw
        .post("/v1/chat/completions")
        .timeout(Duration::from_millis(200))
        .body(json!({"model": "gpt-4o-mini", "messages": user("x")}).to_string())
        .send()
        .await;
    assert!(req.is_err());
    let t = std::time::Instant::now();
    let rows = loop {
        let rows = gw.rows().await;
        if !rows.is_empty() {
            break rows;
        }
        assert!(t.elapsed() < Duration::from_secs(3));
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].outcome, "client_disconnected");
    assert_eq!(rows[0].status_code, 499);
    while gw.mock.disconnects() == 0 {
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "upstream not cancelled"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_requests_and_flushes_the_ledger() {
    // A7: SIGTERM under load loses nothing.
    let gw = start_gw().await;
    gw.mock.push_for_model(
        "gpt-4o-mini",
        Behavior {
            headers_delay_ms: 400,
            ..Default::default()
        },
    );
    gw.mock.push_for_model(
        "gpt-4o",
        Behavior {
            chunks: 8,
            itl_ms: 60,
            ..Default::default()
        },
    );
    let url = gw.url.clone();
    let http = gw.http.clone();
    let slow = {
        let http = http.clone();
        let url = url.clone();
        tokio::spawn(async move {
            http.post(format!("{url}/v1/chat/completions"))
                .bearer_auth(MASTER)
                .header("content-type", "application/json")
                .body(json!({"model": "gpt-4o-mini", "messages": user("x")}).to_string())
                .send()
                .await
                .unwrap()
        })
    };
    let stream = tokio::spawn(async move {
        let r = http
            .post(format!("{url}/v1/chat/completions"))
            .bearer_auth(MASTER)
            .header("content-type", "application/json")
            .body(json!({"model": "gpt-4o", "messages": user("x"), "stream": true}).to_string())
            .send()
            .await
            .unwrap();
        sse_events(r).await
    });
    // Both requests are in flight.
    while gw.mock.call_count() < 2 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let Gw {
        run,
        mock: _mock,
        dir: _dir,
        ..
    } = gw;
    let store = run.store.clone();
    let addr = run.addr;
    let shutdown = tokio::spawn(run.shutdown());
    tokio::time::sleep(Duration::from_millis(50)).await;
    // No new connections once shutdown started.
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "still accepting"
    );
    let r = slow.await.unwrap();
    assert_eq!(r.status(), 200);
    let ev = stream.await.unwrap();
    assert_eq!(ev.last().unwrap().data, "[DONE]");
    let (drain, stats) = shutdown.await.unwrap();
    assert_eq!(drain.aborted, 0);
    assert_eq!(stats.dropped, 0);
    let rows = store.list_requests(&Default::default()).await.unwrap();
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|r| r.outcome == "ok"), "{rows:?}");
}

#[tokio::test]
async fn ledger_on_postgres() {
    let Ok(pg) = std::env::var("KAIROS_TEST_POSTGRES_URL") else {
        eprintln!("SKIP ledger_on_postgres: KAIROS_TEST_POSTGRES_URL unset");
        return;
    };
    let schema = format!("kt_gw_{}", uuid_like());
    // Create the schema (and run the migrations in it), then point the gateway at it.
    let setup = kairos_store::Store::connect_with_schema(&pg, &schema)
        .await
        .expect("postgres");
    let sep = if pg.contains('?') { '&' } else { '?' };
    let url = format!("{pg}{sep}options=-c%20search_path%3D{schema}");
    let mut mc = MockConfig::default();
    let gw = start_db(&url, &mut mc).await;
    let r = gw
        .chat(json!({"model": "gpt-4o-mini", "messages": user("hello")}))
        .await;
    assert_eq!(r.status(), 200);
    let id = request_id(&r);
    let r2 = gw
        .chat(json!({"model": "gpt-4o-mini", "messages": user("hello"), "stream": true}))
        .await;
    let id2 = request_id(&r2);
    sse_events(r2).await;
    assert_eq!(gw.run.store.backend(), "postgres");
    let row = gw.row(&id).await;
    assert_eq!(row.outcome, "ok");
    assert!(row.cost_micros.unwrap() > 0);
    let row2 = gw.row(&id2).await;
    assert_eq!(
        (row.input_tokens, row.output_tokens, row.cost_micros),
        (row2.input_tokens, row2.output_tokens, row2.cost_micros)
    );
    // The rows are in the test's schema of the shared server.
    assert!(setup.get_request(&id).await.unwrap().is_some());
    drop(gw);
    let _ = sqlx_drop_schema(&pg, &schema).await;
}

fn uuid_like() -> String {
    format!(
        "{:x}{:x}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

async fn sqlx_drop_schema(pg: &str, schema: &str) -> Result<(), kairos_store::StoreError> {
    kairos_store::Store::drop_postgres_schema(pg, schema).await
}

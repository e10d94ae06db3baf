use kairos_testkit::{BilledCall, MockConfig, ReceivedRequest, serve};
use serde_json::json;

use crate::common::{client, get, json, openai_chat, post};

/// The control API, against a mock started with `serve` on our own listener.
#[tokio::test]
async fn http_control_api_drives_an_out_of_process_style_mock() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, MockConfig::default(), async move {
        let _ = stop_rx.await;
    }));

    let (status, text) = get(&format!("{base}/__mock/health"), &[]).await;
    assert_eq!((status, json(&text)), (200, json!({"status": "ok"})));

    // A bare Behavior, a model-specific one, and an array.
    let (status, _, text) = post(
        &format!("{base}/__mock/script"),
        &[],
        &json!({"status": 503, "retry_after": "1"}),
    )
    .await;
    assert_eq!((status, json(&text)["queued"].as_u64()), (200, Some(1)));
    let (status, _, _) = post(
        &format!("{base}/__mock/script"),
        &[],
        &json!({"model": "special", "behavior": {"status": 429}}),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _, text) = post(
        &format!("{base}/__mock/script"),
        &[],
        &json!([{"text": "one"}, {"behavior": {"text": "two"}}]),
    )
    .await;
    assert_eq!((status, json(&text)["queued"].as_u64()), (200, Some(2)));
    let (status, _, _) = post(
        &format!("{base}/__mock/script"),
        &[],
        &json!({"statuss": 1}),
    )
    .await;
    assert_eq!(status, 400, "typos are rejected");

    let chat = format!("{base}/v1/chat/completions");
    let (status, _, _) = post(&chat, &[], &openai_chat("special", "hi")).await;
    assert_eq!(status, 429);
    let (status, headers, _) = post(&chat, &[], &openai_chat("gpt-4o", "hi")).await;
    assert_eq!(
        (status, &headers["retry-after"]),
        (503, &"1".parse().unwrap())
    );
    let (_, _, text) = post(&chat, &[], &openai_chat("gpt-4o", "hi")).await;
    assert_eq!(json(&text)["choices"][0]["message"]["content"], "one");
    let (_, _, text) = post(&chat, &[], &openai_chat("gpt-4o", "hi")).await;
    assert_eq!(json(&text)["choices"][0]["message"]["content"], "two");

    // Unknown routes are logged and answered 404.
    let (status, text) = get(&format!("{base}/v1/nope"), &[]).await;
    assert_eq!(status, 404);
    assert!(
        json(&text)["error"]["message"]
            .as_str()
            .unwrap()
            .contains("/v1/nope")
    );

    let (_, text) = get(&format!("{base}/__mock/ledger"), &[]).await;
    let ledger: Vec<BilledCall> = serde_json::from_str(&text).unwrap();
    assert_eq!(
        ledger.iter().map(|c| c.status).collect::<Vec<_>>(),
        vec![429, 503, 200, 200]
    );
    let (_, text) = get(&format!("{base}/__mock/requests"), &[]).await;
    let requests: Vec<ReceivedRequest> = serde_json::from_str(&text).unwrap();
    let paths: Vec<&str> = requests.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(
        paths,
        vec![
            "/v1/chat/completions",
            "/v1/chat/completions",
            "/v1/chat/completions",
            "/v1/chat/completions",
            "/v1/nope"
        ],
        "control calls are not logged"
    );
    assert!(requests[0].body.contains("special"));
    assert_eq!(requests[0].method, "POST");
    let (_, text) = get(&format!("{base}/__mock/stats"), &[]).await;
    assert_eq!(json(&text)["calls"], 4);

    let resp = client()
        .post(format!("{base}/__mock/reset"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let (_, text) = get(&format!("{base}/__mock/ledger"), &[]).await;
    assert_eq!(json(&text), json!([]));

    stop_tx.send(()).unwrap();
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn request_log_caps_bodies_and_keeps_headers() {
    let m = kairos_testkit::MockServer::start(MockConfig::default())
        .await
        .unwrap();
    let big = "x".repeat(300 * 1024);
    let (status, _, _) = post(
        &format!("{}/v1/chat/completions?trace=1", m.url()),
        &[("x-canary", "c4n4ry")],
        &openai_chat("gpt-4o", &big),
    )
    .await;
    assert_eq!(status, 200);
    let r = &m.requests()[0];
    assert_eq!(r.body.len(), 256 * 1024);
    assert_eq!(r.query.as_deref(), Some("trace=1"));
    assert_eq!(r.header("X-Canary"), Some("c4n4ry"));
    assert!(!r.key_in_query);
}

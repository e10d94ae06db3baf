//! Provider credentials per workspace (sealed in the vault) and BYOK keys (issue 5; Z8).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use kairos_testkit::MockConfig;
use reqwest::Method;
use serde_json::{Value, json};

const SECRET_KEY: &str = "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const WS_KEY: &str = "sk-canary-workspace-a-7d1e9c";
const BYOK_KEY: &str = "sk-canary-byok-3b8f2a";

/// A chat completion as `key` with an `x-kairos-provider-key` header.
async fn byok_chat(gw: &Gw, key: &str, header: impl AsRef<str>, model: &str) -> reqwest::Response {
    gw.http
        .post(format!("{}/v1/chat/completions", gw.url))
        .bearer_auth(key)
        .header("x-kairos-provider-key", header.as_ref())
        .header("content-type", "application/json")
        .body(json!({"model": model, "messages": user("hi")}).to_string())
        .send()
        .await
        .unwrap()
}

fn sent_key(gw: &Gw) -> String {
    let reqs = gw.mock.requests();
    let last = reqs.last().expect("a request reached the mock");
    last.header("authorization").unwrap_or("").to_owned()
}

#[tokio::test]
async fn workspace_credentials_are_sealed_and_used_for_that_workspace_only() {
    let mut mc = MockConfig {
        openai_extra_keys: vec![WS_KEY.into(), BYOK_KEY.into()],
        ..Default::default()
    };
    let gw = start_env(&[("KAIROS_SECRET_KEY", SECRET_KEY)], &mut mc).await;
    let a = workspace(&gw, "team-a", json!({"markup_pct": 10.0})).await;
    let b = workspace(&gw, "team-b", json!({})).await;
    let (_, ka) = key(&gw, MASTER, &a, json!({"name": "svc"})).await;
    let (_, kb) = key(&gw, MASTER, &b, json!({"name": "svc"})).await;
    let (admin_b_id, admin_b) = key(&gw, MASTER, &b, json!({"name": "adm", "role": "admin"})).await;
    let _ = admin_b_id;

    let (s, v) = gw
        .admin(
            Method::PUT,
            &format!("/admin/v1/workspaces/{a}/credentials/openai"),
            Some(MASTER),
            Some(json!({"api_key": WS_KEY})),
        )
        .await;
    assert_eq!(s, 204, "{v}");
    // Another workspace's admin can neither see nor replace it; an unknown provider is 404.
    let (s, _) = gw
        .admin(
            Method::GET,
            &format!("/admin/v1/workspaces/{a}/credentials"),
            Some(&admin_b),
            None,
        )
        .await;
    assert_eq!(s, 404);
    let (s, _) = gw
        .admin(
            Method::PUT,
            &format!("/admin/v1/workspaces/{a}/credentials/openai"),
            Some(&admin_b),
            Some(json!({"api_key": "sk-evil"})),
        )
        .await;
    assert_eq!(s, 404);
    let (s, _) = gw
        .admin(
            Method::PUT,
            &format!("/admin/v1/workspaces/{a}/credentials/nope"),
            Some(MASTER),
            Some(json!({"api_key": "x"})),
        )
        .await;
    assert_eq!(s, 404);
    // Listing shows the provider, never the key.
    let (s, v) = gw
        .admin(
            Method::GET,
            &format!("/admin/v1/workspaces/{a}/credentials"),
            Some(MASTER),
            None,
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(v["data"][0]["provider"], "openai");
    assert!(!v.to_string().contains(WS_KEY));

    // Workspace A's requests carry A's key; B's carry the configured key.
    let r = gw
        .chat_as(&ka, json!({"model": "gpt-4o-mini", "messages": user("hi")}))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(sent_key(&gw), format!("Bearer {WS_KEY}"));
    let row = gw.row(&request_id(&r)).await;
    assert!(!row.byok);
    assert_eq!(
        row.markup_micros,
        (row.cost_micros.unwrap() as f64 * 0.1).round() as i64
    );
    let r = gw
        .chat_as(&kb, json!({"model": "gpt-4o-mini", "messages": user("hi")}))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(sent_key(&gw), format!("Bearer {OPENAI_KEY}"));

    // BYOK: the caller's key for this request only; no markup; recorded as BYOK.
    let r = byok_chat(&gw, &ka, format!("openai={BYOK_KEY}"), "gpt-4o-mini").await;
    assert_eq!(r.status(), 200);
    assert_eq!(sent_key(&gw), format!("Bearer {BYOK_KEY}"));
    let row = gw.row(&request_id(&r)).await;
    assert!(row.byok);
    assert_eq!(row.markup_micros, 0);
    // A BYOK key is never sent to another provider: the Anthropic target gets its own key.
    let r = byok_chat(&gw, &ka, format!("openai={BYOK_KEY}"), "claude-haiku-4-5").await;
    assert_eq!(r.status(), 200);
    let last = gw.mock.requests().last().unwrap().clone();
    assert_eq!(last.header("x-api-key"), Some(ANTHROPIC_KEY));
    assert!(!format!("{last:?}").contains(BYOK_KEY));
    // Malformed or unknown-provider BYOK headers are 400s without an upstream call.
    let before = gw.mock.call_count();
    for h in ["sk-no-provider", "nope=sk-x", "openai="] {
        let r = byok_chat(&gw, &ka, h, "gpt-4o-mini").await;
        assert_eq!(r.status(), 400, "{h}");
        let v: Value = r.json().await.unwrap();
        assert!(
            !v.to_string().contains("sk-"),
            "a key echoed in the error: {v}"
        );
    }
    assert_eq!(gw.mock.call_count(), before);

    // Z8: the workspace key and the BYOK key appear nowhere in the database but as the sealed
    // blob (which does not contain them either).
    let creds = gw.run.store.credentials(None).await.unwrap();
    assert!(creds[0].sealed.starts_with("kv1:k1:"));
    let rows = gw.rows().await;
    let audit = gw.run.store.audit_log(None, 1000).await.unwrap();
    let dump = format!("{creds:?}{rows:?}{audit:?}");
    for secret in [WS_KEY, BYOK_KEY] {
        assert!(!dump.contains(secret), "{secret} stored in clear");
    }

    // Deleting the credential goes back to the configured key at once on this replica.
    let (s, _) = gw
        .admin(
            Method::DELETE,
            &format!("/admin/v1/workspaces/{a}/credentials/openai"),
            Some(MASTER),
            None,
        )
        .await;
    assert_eq!(s, 204);
    let r = gw
        .chat_as(&ka, json!({"model": "gpt-4o-mini", "messages": user("hi")}))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(sent_key(&gw), format!("Bearer {OPENAI_KEY}"));
}

#[tokio::test]
async fn without_a_secret_key_credentials_cannot_be_stored() {
    let gw = start_gw().await;
    let a = workspace(&gw, "team-a", json!({})).await;
    let (s, v) = gw
        .admin(
            Method::PUT,
            &format!("/admin/v1/workspaces/{a}/credentials/openai"),
            Some(MASTER),
            Some(json!({"api_key": WS_KEY})),
        )
        .await;
    assert_eq!(s, 503, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("KAIROS_SECRET_KEY")
    );
}

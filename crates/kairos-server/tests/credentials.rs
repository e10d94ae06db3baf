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

// ---------------------------------------------------------------------------------------------
// Rotating KAIROS_SECRET_KEY: re-sealing the stored credentials

const K1: &str = SECRET_KEY;
const K2: &str = "k2:ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";
/// A key that is in none of the gateway's keyrings.
const K9: &str = "k9:QEFCQ0RFRkdISUpLTE1OT1BRUlNUVVZXWFlaW1xdXl8=";
const LOST_KEY: &str = "sk-canary-sealed-under-k9-51c0";

/// A gateway on the shared database `db` with `keyring` as KAIROS_SECRET_KEY.
async fn gateway(db: &str, keyring: &str) -> Gw {
    let mut mc = MockConfig {
        openai_extra_keys: vec![WS_KEY.into()],
        ..Default::default()
    };
    start_env(
        &[("KAIROS_SECRET_KEY", keyring), ("KAIROS_DATABASE_URL", db)],
        &mut mc,
    )
    .await
}

async fn reseal(gw: &Gw, key: &str) -> (u16, Value) {
    gw.admin(
        Method::POST,
        "/admin/v1/credentials/reseal",
        Some(key),
        None,
    )
    .await
}

/// `kairos credentials reseal` against `gw`: (success, stdout, stderr).
async fn reseal_cli(gw: &Gw, extra: &[&str]) -> (bool, String, String) {
    let admin = gw.admin_url();
    let mut args = vec![
        "credentials",
        "reseal",
        "--admin-url",
        admin.as_str(),
        "--key",
        MASTER,
    ];
    args.extend(extra);
    let o = tokio::process::Command::new(env!("CARGO_BIN_EXE_kairos"))
        .args(&args)
        .env_clear()
        .env("KAIROS_DATA_DIR", "/nonexistent-kairos-data-dir")
        .output()
        .await
        .expect("run kairos");
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Seal under k1; restart with `k2,k1`; re-seal (API, then the CLI: idempotent); restart with
/// `k2` alone: the workspace's requests still carry its own key. A credential under a key that
/// is not in the ring is reported (by id) and left as it is.
async fn rotation_end_to_end(db: &str) {
    // 1. Everything sealed with k1.
    let gw = gateway(db, K1).await;
    let a = workspace(&gw, "team-a", json!({})).await;
    let b = workspace(&gw, "team-b", json!({})).await;
    let (_, ka) = key(&gw, MASTER, &a, json!({"name": "svc"})).await;
    let (_, admin_a) = key(&gw, MASTER, &a, json!({"name": "adm", "role": "admin"})).await;
    let (s, v) = gw
        .admin(
            Method::PUT,
            &format!("/admin/v1/workspaces/{a}/credentials/openai"),
            Some(MASTER),
            Some(json!({"api_key": WS_KEY})),
        )
        .await;
    assert_eq!(s, 204, "{v}");
    // Workspace B's credential was sealed under a key the operator no longer has.
    let lost = kairos_vault::Keyring::parse(K9)
        .unwrap()
        .seal(
            LOST_KEY,
            &kairos_core::tenancy::credential_aad(&b, "openai"),
        )
        .unwrap();
    let rec = kairos_store::CredentialRecord {
        workspace_id: b.clone(),
        provider: "openai".into(),
        sealed: lost.clone(),
        created_ms: 1,
        updated_ms: 1,
    };
    let e = kairos_store::AuditEntry {
        seq: 0,
        ts_ms: 1,
        actor: "test".into(),
        workspace_id: Some(b.clone()),
        action: "create".into(),
        object_type: "credential".into(),
        object_id: format!("{b}/openai"),
        before_json: None,
        after_json: None,
    };
    gw.run.store.put_credential(&rec, &e).await.unwrap();
    let r = gw
        .chat_as(&ka, json!({"model": "gpt-4o-mini", "messages": user("hi")}))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(sent_key(&gw), format!("Bearer {WS_KEY}"));
    // Nothing to do yet under k1 alone.
    let (s, v) = reseal(&gw, MASTER).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v,
        json!({"resealed": 0, "current": 1, "failed": [format!("{b}/openai")]})
    );
    gw.run.shutdown().await;

    // 2. k2 becomes current, k1 still opens: re-seal.
    let gw = gateway(db, &format!("{K2},{K1}")).await;
    let r = gw
        .chat_as(&ka, json!({"model": "gpt-4o-mini", "messages": user("hi")}))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(sent_key(&gw), format!("Bearer {WS_KEY}"));
    // Master key only: it spans workspaces.
    assert_eq!(reseal(&gw, &admin_a).await.0, 403);
    assert_eq!(reseal(&gw, &ka).await.0, 403);
    let (s, v) = reseal(&gw, MASTER).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v,
        json!({"resealed": 1, "current": 0, "failed": [format!("{b}/openai")]})
    );
    let creds = gw.run.store.credentials(None).await.unwrap();
    let of = |ws: &str| creds.iter().find(|c| c.workspace_id == ws).unwrap();
    assert!(of(&a).sealed.starts_with("kv1:k2:"), "{:?}", of(&a));
    assert_eq!(of(&b).sealed, lost, "an unopenable blob is left untouched");
    // Audited: one entry per re-sealed credential (kids only) and one for the run.
    let audit = gw.run.store.audit_log(None, 10).await.unwrap();
    assert_eq!(
        (audit[0].action.as_str(), audit[0].object_type.as_str()),
        ("reseal", "credentials")
    );
    assert_eq!(audit[0].actor, "master");
    assert_eq!(audit[0].workspace_id, None);
    let run: Value = serde_json::from_str(audit[0].after_json.as_deref().unwrap()).unwrap();
    assert_eq!(run["resealed"], 1);
    assert_eq!(run["kid"], "k2");
    assert_eq!(
        (
            audit[1].action.as_str(),
            audit[1].workspace_id.as_deref(),
            audit[1].object_id.clone()
        ),
        ("reseal", Some(a.as_str()), format!("{a}/openai"))
    );
    assert_eq!(
        serde_json::from_str::<Value>(audit[1].before_json.as_deref().unwrap()).unwrap()["kid"],
        "k1"
    );
    assert_eq!(
        serde_json::from_str::<Value>(audit[1].after_json.as_deref().unwrap()).unwrap()["kid"],
        "k2"
    );
    let dump = format!("{audit:?}{v}");
    for secret in [WS_KEY, LOST_KEY, "kv1:"] {
        assert!(
            !dump.contains(secret),
            "{secret} in the audit log or the answer"
        );
    }
    // A workspace admin sees the re-seal of its own credential.
    let (_, own) = gw
        .admin(
            Method::GET,
            &format!("/admin/v1/audit?workspace_id={a}"),
            Some(&admin_a),
            None,
        )
        .await;
    assert_eq!(own["data"][0]["action"], "reseal", "{own}");

    // Idempotent, through the CLI: nothing left to re-seal; the failure is reported (exit 1).
    let (ok, out, err) = reseal_cli(&gw, &[]).await;
    assert!(!ok, "{out}\n{err}");
    assert_eq!(
        out.trim_end(),
        format!("resealed  0\ncurrent   1\nfailed    1\n  {b}/openai"),
        "{err}"
    );
    assert!(err.contains("could not be re-sealed"), "{err}");
    assert!(!format!("{out}{err}").contains("kv1:"));
    let (_, out, _) = reseal_cli(&gw, &["--json"]).await;
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v,
        json!({"resealed": 0, "current": 1, "failed": [format!("{b}/openai")]})
    );
    gw.run.shutdown().await;

    // 3. The old key is dropped: k2 alone still opens A's credential, which is still used.
    let gw = gateway(db, K2).await;
    let r = gw
        .chat_as(&ka, json!({"model": "gpt-4o-mini", "messages": user("hi")}))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(sent_key(&gw), format!("Bearer {WS_KEY}"));
    // Once the lost one is stored again, the CLI reports success.
    let (s, _) = gw
        .admin(
            Method::DELETE,
            &format!("/admin/v1/workspaces/{b}/credentials/openai"),
            Some(MASTER),
            None,
        )
        .await;
    assert_eq!(s, 204);
    let (ok, out, err) = reseal_cli(&gw, &[]).await;
    assert!(ok, "{out}\n{err}");
    assert_eq!(out.trim_end(), "resealed  0\ncurrent   1\nfailed    0");
    gw.run.shutdown().await;
}

#[tokio::test]
async fn rotating_the_secret_key_reseals_stored_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("shared.db").display()
    );
    rotation_end_to_end(&db).await;
}

#[tokio::test]
async fn rotating_the_secret_key_reseals_stored_credentials_on_postgres() {
    let Ok(pg) = std::env::var("KAIROS_TEST_POSTGRES_URL") else {
        eprintln!(
            "SKIP rotating_the_secret_key_reseals_stored_credentials_on_postgres: KAIROS_TEST_POSTGRES_URL unset"
        );
        return;
    };
    let (schema, url) = pg_schema(&pg, "reseal").await;
    rotation_end_to_end(&url).await;
    let _ = kairos_store::Store::drop_postgres_schema(&pg, &schema).await;
}

#[tokio::test]
async fn without_a_secret_key_there_is_nothing_to_reseal() {
    let gw = start_gw().await;
    let (s, v) = reseal(&gw, MASTER).await;
    assert_eq!(s, 503, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("KAIROS_SECRET_KEY")
    );
}

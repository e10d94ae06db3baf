//! `kairos workspaces ...` / `kairos keys ...` against a live gateway: the built binary talks to
//! the harness gateway's admin listener over HTTP.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{MASTER, start_gw, user};
use serde_json::{Value, json};

struct Out {
    ok: bool,
    stdout: String,
    stderr: String,
}

/// Runs `kairos ARGS...` with a clean environment (no KAIROS_* from the developer's shell) and
/// without blocking the runtime the gateway runs on.
async fn kairos(args: &[&str]) -> Out {
    let o = tokio::process::Command::new(env!("CARGO_BIN_EXE_kairos"))
        .args(args)
        .env_clear()
        .env("KAIROS_DATA_DIR", "/nonexistent-kairos-data-dir")
        .output()
        .await
        .expect("run kairos");
    Out {
        ok: o.status.success(),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// Runs an admin subcommand with `--admin-url` and `--key` and asserts success.
async fn ok(admin: &str, key: &str, args: &[&str]) -> Out {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--admin-url", admin, "--key", key]);
    let o = kairos(&all).await;
    assert!(o.ok, "kairos {args:?} failed:\n{}\n{}", o.stdout, o.stderr);
    o
}

fn json_of(o: &Out) -> Value {
    serde_json::from_str(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", o.stdout))
}

#[tokio::test]
async fn cli_manages_workspaces_and_keys() {
    let gw = start_gw().await;
    let admin = gw.admin_url();

    // Workspace: create (JSON), then it shows up in the human listing.
    let o = ok(
        &admin,
        MASTER,
        &[
            "workspaces",
            "create",
            "cli-team",
            "--settings",
            r#"{"rpm": 100}"#,
            "--json",
        ],
    )
    .await;
    let ws = json_of(&o);
    let ws_id = ws["id"].as_str().unwrap().to_owned();
    assert_eq!(ws["name"], "cli-team");
    assert_eq!(ws["settings"], json!({"rpm": 100}));
    let o = ok(&admin, MASTER, &["workspaces", "list"]).await;
    assert!(o.stdout.starts_with("ID"), "{}", o.stdout);
    assert!(
        o.stdout.contains(&ws_id) && o.stdout.contains("cli-team"),
        "{}",
        o.stdout
    );
    let o = ok(&admin, MASTER, &["workspaces", "show", &ws_id]).await;
    assert!(o.stdout.contains("cli-team"), "{}", o.stdout);

    // Key: create with --json (flags after the subcommand's own), the key is parsed from the
    // output and the warning goes to stderr so that stdout stays JSON.
    let o = ok(
        &admin,
        MASTER,
        &[
            "keys",
            "create",
            "--workspace",
            &ws_id,
            "--name",
            "ci",
            "--expires-in",
            "30d",
            "--json",
        ],
    )
    .await;
    let k = json_of(&o);
    let key = k["key"].as_str().unwrap().to_owned();
    let key_id = k["id"].as_str().unwrap().to_owned();
    assert!(key.starts_with("kr-") && key.len() == 46, "{key}");
    assert_eq!(k["role"], "member");
    assert!(o.stderr.contains("will not be shown again"), "{}", o.stderr);
    let days = (k["expires_ms"].as_i64().unwrap() - k["created_ms"].as_i64().unwrap()) / 86_400_000;
    assert!((29..=30).contains(&days), "{k}");

    // Human form of create: the key once, with the warning.
    let o = ok(
        &admin,
        MASTER,
        &[
            "keys",
            "create",
            "--workspace",
            &ws_id,
            "--name",
            "human",
            "--role",
            "admin",
        ],
    )
    .await;
    assert!(o.stdout.contains("created key key_"), "{}", o.stdout);
    assert!(o.stdout.contains("\n    kr-"), "{}", o.stdout);
    assert!(o.stdout.contains("will not be shown again"), "{}", o.stdout);

    // List: both keys, no secrets.
    let o = ok(&admin, MASTER, &["keys", "list", "--workspace", &ws_id]).await;
    assert!(
        o.stdout.contains(&key_id) && o.stdout.contains("human"),
        "{}",
        o.stdout
    );
    assert!(
        o.stdout.contains(&key[..11]) && !o.stdout.contains(&key),
        "{}",
        o.stdout
    );
    let listed = json_of(
        &ok(
            &admin,
            MASTER,
            &["keys", "--json", "list", "--workspace", &ws_id],
        )
        .await,
    );
    assert_eq!(listed["data"].as_array().unwrap().len(), 2, "{listed}");
    assert!(!listed.to_string().contains(&key));

    // The new key works on the public listener.
    let body = json!({"model": "gpt-4o-mini", "messages": user("hi")});
    assert_eq!(gw.chat_as(&key, body.clone()).await.status(), 200);

    // Revoke through the CLI: the key stops working.
    let o = ok(&admin, MASTER, &["keys", "revoke", &key_id]).await;
    assert!(o.stdout.contains("revoked key"), "{}", o.stdout);
    assert_eq!(gw.chat_as(&key, body).await.status(), 401);
    let shown = json_of(&ok(&admin, MASTER, &["keys", "show", &key_id, "--json"]).await);
    assert_eq!(shown["revoked"], true);
    let o = ok(&admin, MASTER, &["keys", "list", "--workspace", &ws_id]).await;
    assert!(o.stdout.contains("revoked"), "{}", o.stdout);

    // Delete the workspace.
    let deleted = json_of(&ok(&admin, MASTER, &["workspaces", "delete", &ws_id, "--json"]).await);
    assert_eq!(deleted["deleted"], true);
}

#[tokio::test]
async fn cli_reports_errors_and_exits_non_zero() {
    let gw = start_gw().await;
    let admin = gw.admin_url();

    // A wrong key: the API's message and a hint, exit code non-zero, nothing on stdout.
    let o = kairos(&[
        "workspaces",
        "list",
        "--admin-url",
        &admin,
        "--key",
        "kr-wrong",
    ])
    .await;
    assert!(!o.ok);
    assert!(o.stdout.is_empty(), "{}", o.stdout);
    assert!(o.stderr.contains("HTTP 401"), "{}", o.stderr);
    assert!(o.stderr.to_lowercase().contains("key"), "{}", o.stderr);

    // The API's error message is passed on (404 of an unknown key id, 409 of a taken name).
    let o = kairos(&[
        "keys",
        "show",
        "key_nope",
        "--admin-url",
        &admin,
        "--key",
        MASTER,
    ])
    .await;
    assert!(!o.ok);
    assert!(
        o.stderr.contains("no such key") && o.stderr.contains("HTTP 404"),
        "{}",
        o.stderr
    );
    ok(&admin, MASTER, &["workspaces", "create", "dup"]).await;
    let o = kairos(&[
        "workspaces",
        "create",
        "dup",
        "--admin-url",
        &admin,
        "--key",
        MASTER,
    ])
    .await;
    assert!(!o.ok);
    assert!(o.stderr.contains("HTTP 409"), "{}", o.stderr);

    // No key anywhere (no flag, no env, no master_key file).
    let o = kairos(&["workspaces", "list", "--admin-url", &admin]).await;
    assert!(!o.ok);
    assert!(o.stderr.contains("no admin key"), "{}", o.stderr);

    // Nothing listening: a hint about the admin listener at that URL.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let url = format!("http://{closed}");
    let o = kairos(&["workspaces", "list", "--admin-url", &url, "--key", MASTER]).await;
    assert!(!o.ok);
    assert!(
        o.stderr
            .contains(&format!("cannot connect to the admin API at {url}")),
        "{}",
        o.stderr
    );
    assert!(o.stderr.contains("loopback"), "{}", o.stderr);
}

//! The admin API, served on its own listener (`[server] admin_listen` / `KAIROS_ADMIN_LISTEN`,
//! loopback by default): workspaces, virtual keys, usage and the audit log.
//!
//! Authentication: the master key (every workspace) or a virtual key with role `admin` (its
//! own workspace only; objects of other workspaces answer 404, as if absent). Member keys get
//! 403. Bodies are closed shapes (`deny_unknown_fields`): a key-update body that names `role`,
//! `workspace_id` or a budget field the caller may not set is a 400, never silently applied.
//! Every change is written together with an audit entry (actor, action, object, before and
//! after; keys appear only as id and prefix).

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode};
use kairos_core::error::{ClientError, GatewayError, InternalError};
use kairos_core::gateway::Principal;
use kairos_core::tenancy::{Role, Settings, generate_key, key_hash};
use kairos_store::{AuditEntry, KeyRecord, Scope, StoreError, WorkspaceRecord};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::http::{Shape, error_response, parse_json, presented_key};
use crate::routes::{AppState, json_response};

type Reply = Result<Response<Body>, Response<Body>>;

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route(
            "/admin/v1/workspaces",
            get(list_workspaces).post(create_workspace),
        )
        .route(
            "/admin/v1/workspaces/{id}",
            get(get_workspace)
                .patch(update_workspace)
                .delete(delete_workspace),
        )
        .route(
            "/admin/v1/workspaces/{id}/keys",
            get(list_keys).post(create_key),
        )
        .route("/admin/v1/workspaces/{id}/usage", get(workspace_usage))
        .route(
            "/admin/v1/workspaces/{id}/learning",
            get(workspace_learning),
        )
        .route(
            "/admin/v1/workspaces/{id}/credentials",
            get(list_credentials),
        )
        .route(
            "/admin/v1/workspaces/{id}/credentials/{provider}",
            axum::routing::put(put_credential).delete(delete_credential),
        )
        .route("/admin/v1/credentials/reseal", post(reseal_credentials))
        .route("/admin/v1/keys/{id}", get(get_key).patch(update_key))
        .route("/admin/v1/keys/{id}/revoke", post(revoke_key))
        .route("/admin/v1/keys/{id}/usage", get(key_usage))
        .route("/admin/v1/audit", get(audit))
        .route("/admin/health", get(crate::routes::admin_health))
        .route("/metrics", get(crate::routes::metrics_endpoint))
        .fallback(|| async {
            error_response(
                &GatewayError::Client(ClientError::NotFound),
                Shape::OpenAi,
                None,
            )
        })
        .with_state(state)
}

fn err(e: GatewayError) -> Response<Body> {
    error_response(&e, Shape::OpenAi, None)
}

fn not_found(what: &str) -> Response<Body> {
    err(GatewayError::Client(ClientError::ObjectNotFound {
        message: format!("no such {what}"),
    }))
}

fn forbidden(msg: &str) -> Response<Body> {
    err(GatewayError::Client(ClientError::Forbidden {
        message: msg.to_owned(),
    }))
}

fn bad(msg: impl Into<String>) -> Response<Body> {
    err(GatewayError::invalid(msg.into(), None))
}

fn store_err(e: StoreError) -> Response<Body> {
    match e {
        StoreError::Conflict(_) => err(GatewayError::Client(ClientError::Conflict {
            message: "an object with this name exists already".into(),
        })),
        _ => {
            tracing::warn!(error = %e, "admin API: store error");
            err(GatewayError::Internal(InternalError::Unavailable(
                "the database".into(),
            )))
        }
    }
}

fn ok(status: StatusCode, v: &impl Serialize) -> Response<Body> {
    json_response(
        status,
        Bytes::from(serde_json::to_vec(v).unwrap_or_default()),
    )
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Who is calling the admin API.
struct Admin {
    /// `master` or the admin key's id.
    actor: String,
    /// `None`: the master key (every workspace).
    workspace: Option<String>,
}

impl Admin {
    fn may_see(&self, workspace_id: &str) -> bool {
        self.workspace.as_deref().is_none_or(|w| w == workspace_id)
    }

    fn is_master(&self) -> bool {
        self.workspace.is_none()
    }
}

async fn admin(st: &AppState, headers: &HeaderMap) -> Result<Admin, Response<Body>> {
    let p: Principal = st
        .gateway
        .authenticate(presented_key(headers))
        .await
        .map_err(err)?;
    if p.admin {
        return Ok(Admin {
            actor: "master".into(),
            workspace: None,
        });
    }
    match p.access {
        Some(a) if a.role == Role::Admin => Ok(Admin {
            actor: a.key_id.clone(),
            workspace: Some(a.workspace_id.clone()),
        }),
        _ => Err(forbidden(
            "the admin API needs the master key or an admin key",
        )),
    }
}

fn body<T: serde::de::DeserializeOwned>(bytes: &Bytes) -> Result<T, Response<Body>> {
    parse_json(bytes).map_err(err)
}

fn check_settings(s: &Settings) -> Result<(), Response<Body>> {
    match s.problems().first() {
        Some((field, msg)) => Err(bad(format!("settings.{field}: {msg}"))),
        None => Ok(()),
    }
}

fn audit_entry(
    a: &Admin,
    workspace_id: Option<&str>,
    action: &str,
    object_type: &str,
    object_id: &str,
    before: Option<Value>,
    after: Option<Value>,
) -> AuditEntry {
    AuditEntry {
        seq: 0,
        ts_ms: now_ms(),
        actor: a.actor.clone(),
        workspace_id: workspace_id.map(str::to_owned),
        action: action.to_owned(),
        object_type: object_type.to_owned(),
        object_id: object_id.to_owned(),
        before_json: before.map(|v| v.to_string()),
        after_json: after.map(|v| v.to_string()),
    }
}

/// Writes a changed workspace with its audit entry and updates this replica's key table.
async fn save_workspace(
    st: &AppState,
    a: &Admin,
    action: &str,
    before: Option<Value>,
    w: WorkspaceRecord,
) -> Result<Value, Response<Body>> {
    let after = workspace_json(&w);
    let entry = audit_entry(
        a,
        Some(&w.id),
        action,
        "workspace",
        &w.id,
        before,
        Some(after.clone()),
    );
    st.store
        .upsert_workspace(&w, &entry)
        .await
        .map_err(store_err)?;
    if let Some(k) = st.gateway.keys() {
        k.upsert_workspace(w);
    }
    Ok(after)
}

/// Writes a changed key with its audit entry and updates this replica's key table.
async fn save_key(
    st: &AppState,
    a: &Admin,
    action: &str,
    before: Option<Value>,
    k: KeyRecord,
) -> Result<Value, Response<Body>> {
    let after = key_json(&k);
    let entry = audit_entry(
        a,
        Some(&k.workspace_id),
        action,
        "key",
        &k.id,
        before,
        Some(after.clone()),
    );
    st.store.upsert_key(&k, &entry).await.map_err(store_err)?;
    if let Some(c) = st.gateway.keys() {
        c.upsert_key(k);
    }
    Ok(after)
}

fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::now_v7().simple())
}

// ---------------------------------------------------------------------------------------------
// Workspaces

fn workspace_json(w: &WorkspaceRecord) -> Value {
    json!({
        "id": w.id,
        "name": w.name,
        "settings": serde_json::from_str::<Value>(&w.settings).unwrap_or(Value::Null),
        "created_ms": w.created_ms,
        "updated_ms": w.updated_ms,
        "deleted": w.deleted_ms.is_some(),
    })
}

fn valid_name(name: &str) -> Result<(), Response<Body>> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(bad(
            "`name` must be 1 to 64 characters of A-Z a-z 0-9 - _ .",
        ));
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateWorkspace {
    name: String,
    #[serde(default)]
    settings: Settings,
}

async fn create_workspace(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    raw: Bytes,
) -> Reply {
    let a = admin(&st, &headers).await?;
    if !a.is_master() {
        return Err(forbidden("only the master key creates workspaces"));
    }
    let b: CreateWorkspace = body(&raw)?;
    valid_name(&b.name)?;
    check_settings(&b.settings)?;
    let now = now_ms();
    let w = WorkspaceRecord {
        id: new_id("ws"),
        name: b.name,
        settings: serde_json::to_string(&b.settings).unwrap_or_else(|_| "{}".into()),
        created_ms: now,
        updated_ms: now,
        deleted_ms: None,
    };
    let after = save_workspace(&st, &a, "create", None, w).await?;
    Ok(ok(StatusCode::CREATED, &after))
}

async fn list_workspaces(State(st): State<Arc<AppState>>, headers: HeaderMap) -> Reply {
    let a = admin(&st, &headers).await?;
    let all = st.store.workspaces(None).await.map_err(store_err)?;
    let data: Vec<Value> = all
        .iter()
        .filter(|w| a.may_see(&w.id))
        .map(workspace_json)
        .collect();
    Ok(ok(StatusCode::OK, &json!({ "data": data })))
}

async fn find_workspace(
    st: &AppState,
    a: &Admin,
    id: &str,
) -> Result<WorkspaceRecord, Response<Body>> {
    if !a.may_see(id) || id.len() > 64 {
        return Err(not_found("workspace"));
    }
    match st.store.workspace(id).await.map_err(store_err)? {
        Some(w) => Ok(w),
        None => Err(not_found("workspace")),
    }
}

async fn get_workspace(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Reply {
    let a = admin(&st, &headers).await?;
    let w = find_workspace(&st, &a, &id).await?;
    Ok(ok(StatusCode::OK, &workspace_json(&w)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateWorkspace {
    name: Option<String>,
    settings: Option<Settings>,
}

async fn update_workspace(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    raw: Bytes,
) -> Reply {
    let a = admin(&st, &headers).await?;
    let w = find_workspace(&st, &a, &id).await?;
    if !a.is_master() {
        // A workspace's own admin must not raise its budget, limits or allowlists (API3).
        return Err(forbidden("only the master key changes a workspace"));
    }
    let b: UpdateWorkspace = body(&raw)?;
    let before = workspace_json(&w);
    let mut new = w.clone();
    if let Some(n) = b.name {
        valid_name(&n)?;
        new.name = n;
    }
    if let Some(s) = b.settings {
        check_settings(&s)?;
        new.settings = serde_json::to_string(&s).unwrap_or_else(|_| "{}".into());
    }
    new.updated_ms = now_ms().max(w.updated_ms + 1);
    let after = save_workspace(&st, &a, "update", Some(before), new).await?;
    Ok(ok(StatusCode::OK, &after))
}

async fn delete_workspace(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Reply {
    let a = admin(&st, &headers).await?;
    let w = find_workspace(&st, &a, &id).await?;
    if !a.is_master() {
        return Err(forbidden("only the master key deletes a workspace"));
    }
    let before = workspace_json(&w);
    let mut new = w.clone();
    let now = now_ms().max(w.updated_ms + 1);
    new.deleted_ms.get_or_insert(now);
    new.updated_ms = now;
    let after = save_workspace(&st, &a, "delete", Some(before), new).await?;
    Ok(ok(StatusCode::OK, &after))
}

// ---------------------------------------------------------------------------------------------
// Keys

fn key_json(k: &KeyRecord) -> Value {
    json!({
        "id": k.id,
        "workspace_id": k.workspace_id,
        "name": k.name,
        "prefix": k.key_prefix,
        "role": k.role,
        "settings": serde_json::from_str::<Value>(&k.settings).unwrap_or(Value::Null),
        "expires_ms": k.expires_ms,
        "revoked": k.revoked_ms.is_some(),
        "revoked_ms": k.revoked_ms,
        "created_ms": k.created_ms,
        "updated_ms": k.updated_ms,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateKey {
    name: String,
    #[serde(default)]
    role: Option<Role>,
    #[serde(default)]
    settings: Settings,
    expires_ms: Option<i64>,
}

async fn create_key(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(ws): Path<String>,
    raw: Bytes,
) -> Reply {
    let a = admin(&st, &headers).await?;
    let w = find_workspace(&st, &a, &ws).await?;
    if w.deleted_ms.is_some() {
        return Err(not_found("workspace"));
    }
    let b: CreateKey = body(&raw)?;
    valid_name(&b.name)?;
    check_settings(&b.settings)?;
    let now = now_ms();
    if b.expires_ms.is_some_and(|e| e <= now) {
        return Err(bad("`expires_ms` must be in the future"));
    }
    let key = generate_key();
    let rec = KeyRecord {
        id: new_id("key"),
        workspace_id: ws.clone(),
        name: b.name,
        key_hash: key_hash(&key),
        key_prefix: key[..11].to_owned(),
        role: b.role.unwrap_or(Role::Member).as_str().to_owned(),
        settings: serde_json::to_string(&b.settings).unwrap_or_else(|_| "{}".into()),
        expires_ms: b.expires_ms,
        revoked_ms: None,
        created_ms: now,
        updated_ms: now,
    };
    let mut out = save_key(&st, &a, "create", None, rec).await?;
    if let Some(o) = out.as_object_mut() {
        // Shown once: only its hash is stored.
        o.insert("key".into(), Value::String(key));
    }
    Ok(ok(StatusCode::CREATED, &out))
}

async fn list_keys(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(ws): Path<String>,
) -> Reply {
    let a = admin(&st, &headers).await?;
    find_workspace(&st, &a, &ws).await?;
    let keys = st.store.keys(Some(&ws), None).await.map_err(store_err)?;
    let data: Vec<Value> = keys.iter().map(key_json).collect();
    Ok(ok(StatusCode::OK, &json!({ "data": data })))
}

async fn find_key(st: &AppState, a: &Admin, id: &str) -> Result<KeyRecord, Response<Body>> {
    if id.len() > 64 {
        return Err(not_found("key"));
    }
    match st.store.key(id).await.map_err(store_err)? {
        Some(k) if a.may_see(&k.workspace_id) => Ok(k),
        _ => Err(not_found("key")),
    }
}

async fn get_key(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Reply {
    let a = admin(&st, &headers).await?;
    let k = find_key(&st, &a, &id).await?;
    Ok(ok(StatusCode::OK, &key_json(&k)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateKey {
    name: Option<String>,
    settings: Option<Settings>,
    expires_ms: Option<i64>,
}

async fn update_key(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    raw: Bytes,
) -> Reply {
    let a = admin(&st, &headers).await?;
    let k = find_key(&st, &a, &id).await?;
    let b: UpdateKey = body(&raw)?;
    let before = key_json(&k);
    let mut new = k.clone();
    if let Some(n) = b.name {
        valid_name(&n)?;
        new.name = n;
    }
    if let Some(s) = b.settings {
        check_settings(&s)?;
        new.settings = serde_json::to_string(&s).unwrap_or_else(|_| "{}".into());
    }
    if b.expires_ms.is_some() {
        new.expires_ms = b.expires_ms;
    }
    new.updated_ms = now_ms().max(k.updated_ms + 1);
    let after = save_key(&st, &a, "update", Some(before), new).await?;
    Ok(ok(StatusCode::OK, &after))
}

async fn revoke_key(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Reply {
    let a = admin(&st, &headers).await?;
    let k = find_key(&st, &a, &id).await?;
    let before = key_json(&k);
    let mut new = k.clone();
    let now = now_ms().max(k.updated_ms + 1);
    new.revoked_ms.get_or_insert(now);
    new.updated_ms = now;
    let after = save_key(&st, &a, "revoke", Some(before), new).await?;
    Ok(ok(StatusCode::OK, &after))
}

// ---------------------------------------------------------------------------------------------
// Provider credentials (sealed with the vault keyring; never returned)

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PutCredential {
    api_key: String,
}

fn no_content() -> Response<Body> {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::NO_CONTENT;
    r
}

async fn put_credential(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((ws, provider)): Path<(String, String)>,
    raw: Bytes,
) -> Reply {
    let a = admin(&st, &headers).await?;
    let w = find_workspace(&st, &a, &ws).await?;
    if w.deleted_ms.is_some() {
        return Err(not_found("workspace"));
    }
    if !st.gateway.provider_names().contains(&provider) {
        return Err(not_found("provider"));
    }
    let b: PutCredential = body(&raw)?;
    if b.api_key.trim().is_empty() || b.api_key.len() > 4096 {
        return Err(bad("`api_key` must be 1 to 4096 characters"));
    }
    let ring = keyring(&st)?;
    let aad = kairos_core::tenancy::credential_aad(&ws, &provider);
    let sealed = ring.seal(b.api_key.trim(), &aad).map_err(|e| {
        tracing::warn!(error = %e, "sealing a credential failed");
        err(GatewayError::Internal(InternalError::Unavailable(
            "the credential vault".into(),
        )))
    })?;
    let now = now_ms();
    let existing = st
        .store
        .credentials(Some(&ws))
        .await
        .map_err(store_err)?
        .into_iter()
        .find(|c| c.provider == provider);
    let rec = kairos_store::CredentialRecord {
        workspace_id: ws.clone(),
        provider: provider.clone(),
        sealed,
        created_ms: existing.as_ref().map_or(now, |c| c.created_ms),
        updated_ms: now,
    };
    let shown = json!({"provider": provider, "updated_ms": now});
    let entry = audit_entry(
        &a,
        Some(&ws),
        if existing.is_some() {
            "replace"
        } else {
            "create"
        },
        "credential",
        &format!("{ws}/{provider}"),
        existing.map(|c| json!({"provider": c.provider, "updated_ms": c.updated_ms})),
        Some(shown),
    );
    st.store
        .put_credential(&rec, &entry)
        .await
        .map_err(store_err)?;
    if let Some(k) = st.gateway.keys()
        && let Err(e) = k.reload().await
    {
        tracing::warn!(error = %e, "key table reload failed; the credential applies at the next refresh");
    }
    Ok(no_content())
}

async fn list_credentials(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(ws): Path<String>,
) -> Reply {
    let a = admin(&st, &headers).await?;
    find_workspace(&st, &a, &ws).await?;
    let data: Vec<Value> = st
        .store
        .credentials(Some(&ws))
        .await
        .map_err(store_err)?
        .iter()
        .map(|c| json!({"provider": c.provider, "created_ms": c.created_ms, "updated_ms": c.updated_ms}))
        .collect();
    Ok(ok(StatusCode::OK, &json!({ "data": data })))
}

async fn delete_credential(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((ws, provider)): Path<(String, String)>,
) -> Reply {
    let a = admin(&st, &headers).await?;
    find_workspace(&st, &a, &ws).await?;
    let entry = audit_entry(
        &a,
        Some(&ws),
        "delete",
        "credential",
        &format!("{ws}/{provider}"),
        Some(json!({"provider": provider})),
        None,
    );
    let gone = st
        .store
        .delete_credential(&ws, &provider, &entry)
        .await
        .map_err(store_err)?;
    if !gone {
        return Err(not_found("credential"));
    }
    if let Some(keys) = st.gateway.keys()
        && let Err(e) = keys.reload().await
    {
        tracing::warn!(error = %e, "key table reload failed; the deletion applies at the next refresh");
    }
    Ok(no_content())
}

/// The credential keyring, or 503 when the gateway has no key table or no `KAIROS_SECRET_KEY`.
fn keyring(st: &AppState) -> Result<&kairos_vault::Keyring, Response<Body>> {
    let keys = st.gateway.keys().ok_or_else(|| {
        err(GatewayError::Internal(InternalError::Unavailable(
            "the key table".into(),
        )))
    })?;
    keys.keyring().ok_or_else(|| {
        err(GatewayError::Internal(InternalError::Unavailable(
            "credential storage (set KAIROS_SECRET_KEY to enable it)".into(),
        )))
    })
}

/// `POST /admin/v1/credentials/reseal`: after a key rotation, re-seals every stored credential
/// of every workspace that is still under an older key of the keyring (master key only: it spans
/// workspaces). Each credential is written with its own audit entry; the run itself gets one
/// more (the counts and the ids that failed, never a secret or a blob).
async fn reseal_credentials(State(st): State<Arc<AppState>>, headers: HeaderMap) -> Reply {
    let a = admin(&st, &headers).await?;
    if !a.is_master() {
        return Err(forbidden(
            "only the master key re-seals credentials (it spans every workspace)",
        ));
    }
    let ring = keyring(&st)?;
    let report = kairos_core::tenancy::reseal_credentials(&st.store, ring, &a.actor)
        .await
        .map_err(store_err)?;
    let shown = json!({
        "resealed": report.resealed,
        "current": report.current,
        "failed": report.failed,
    });
    let mut after = shown.clone();
    after["kid"] = json!(ring.current_kid());
    let entry = audit_entry(&a, None, "reseal", "credentials", "*", None, Some(after));
    st.store.append_audit(&entry).await.map_err(store_err)?;
    tracing::info!(
        resealed = report.resealed,
        current = report.current,
        failed = report.failed.len(),
        kid = ring.current_kid(),
        "stored provider credentials re-sealed under the current key"
    );
    Ok(ok(StatusCode::OK, &shown))
}

// ---------------------------------------------------------------------------------------------
// Usage and audit

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Window {
    since_ms: Option<i64>,
    until_ms: Option<i64>,
}

async fn workspace_usage(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(ws): Path<String>,
    Query(w): Query<Window>,
) -> Reply {
    let a = admin(&st, &headers).await?;
    find_workspace(&st, &a, &ws).await?;
    let u = st
        .store
        .usage(Scope::Workspace(&ws), w.since_ms.unwrap_or(0), w.until_ms)
        .await
        .map_err(store_err)?;
    Ok(ok(StatusCode::OK, &json!({"workspace_id": ws, "usage": u})))
}

/// The workspace's learned routing state: per (task, model) with outcomes, the learned
/// estimate against the prior and which of the two dominates. An empty state (no outcome yet) is
/// a 200 with no rows, not a 404: the workspace exists.
async fn workspace_learning(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(ws): Path<String>,
) -> Reply {
    let a = admin(&st, &headers).await?;
    find_workspace(&st, &a, &ws).await?;
    let body = st.gateway.learning_summary(&ws);
    Ok(ok(StatusCode::OK, &body))
}

async fn key_usage(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(w): Query<Window>,
) -> Reply {
    let a = admin(&st, &headers).await?;
    let k = find_key(&st, &a, &id).await?;
    let u = st
        .store
        .usage(Scope::Key(&k.id), w.since_ms.unwrap_or(0), w.until_ms)
        .await
        .map_err(store_err)?;
    Ok(ok(StatusCode::OK, &json!({"key_id": k.id, "usage": u})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    workspace_id: Option<String>,
    limit: Option<u32>,
}

async fn audit(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Query<AuditQuery>,
) -> Reply {
    let a = admin(&st, &headers).await?;
    let ws = match (&a.workspace, q.workspace_id) {
        (Some(own), Some(asked)) if *own != asked => return Err(not_found("workspace")),
        (Some(own), _) => Some(own.clone()),
        (None, asked) => asked,
    };
    let entries = st
        .store
        .audit_log(ws.as_deref(), q.limit.unwrap_or(100))
        .await
        .map_err(store_err)?;
    Ok(ok(StatusCode::OK, &json!({ "data": entries })))
}

//! docs/openapi/admin.yaml against the code: the documented routes are exactly the routes
//! `src/admin.rs` serves (read from its source, so that a new route without documentation fails
//! here), and every answer of a live scenario matches the schema documented for its path,
//! method and status.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::sync::Mutex;

use common::{Gw, MASTER, start_env, start_gw, user};
use kairos_testkit::MockConfig;
use serde_json::{Value, json};

const DOC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi/admin.yaml");
const ADMIN_RS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/admin.rs");

const METHODS: &[&str] = &[
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// The provider-credential routes were documented before `src/admin.rs` served them: while it
/// does not, `documented_routes_equal_served_routes` fails and the live scenario leaves them out
/// (it exercises them, strictly, as soon as they are served).
const CREDENTIAL_ROUTES: &[(&str, &str)] = &[
    ("get", "/admin/v1/workspaces/{id}/credentials"),
    ("put", "/admin/v1/workspaces/{id}/credentials/{provider}"),
    ("delete", "/admin/v1/workspaces/{id}/credentials/{provider}"),
    ("post", "/admin/v1/credentials/reseal"),
];

type Route = (String, String);

/// The credential keyring of the scenario's gateway (a fixed test key, `k1`).
const KEYRING: &str = "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

// ---------------------------------------------------------------------------------------------
// The document

fn doc() -> Value {
    let text = std::fs::read_to_string(DOC).expect("docs/openapi/admin.yaml");
    serde_norway::from_str(&text).expect("admin.yaml is valid YAML")
}

fn documented_routes(doc: &Value) -> BTreeSet<Route> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for m in item.as_object().expect("path item").keys() {
            if METHODS.contains(&m.as_str()) {
                out.insert((m.clone(), path.clone()));
            }
        }
    }
    out
}

/// Follows a local `$ref` (`#/a/b`) in the document.
fn deref<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let ptr = r.strip_prefix('#').expect("local $ref");
            doc.pointer(ptr)
                .unwrap_or_else(|| panic!("dangling $ref {r}"))
        }
        None => v,
    }
}

// ---------------------------------------------------------------------------------------------
// The code: `.route("PATH", get(handler).post(other))` calls in src/admin.rs

/// The text inside the parentheses that start just before `s` (`s` begins after the `(`),
/// and the rest after the closing one. String literals are skipped over.
fn balanced(s: &str) -> (&str, &str) {
    let mut depth = 1usize;
    let mut in_str = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if in_str {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_str = true,
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    return (&s[..i], &s[i + 1..]);
                }
            }
            _ => {}
        }
    }
    panic!("unbalanced parentheses in: {s}");
}

/// `get(a).post(b)`, `axum::routing::get(crate::x::y)` -> the HTTP methods. Anything else (a
/// layer, `any(..)`, `on(..)`) fails: this test must be taught about it rather than miss a
/// route.
fn chain_methods(path: &str, chain: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut s = chain.trim();
    loop {
        // An optional path qualifier (`axum::routing::`).
        let ident_end = s
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(s.len());
        let ident = s[..ident_end].rsplit("::").next().unwrap_or_default();
        assert!(
            METHODS.contains(&ident),
            "route {path}: cannot read `{}` in `{chain}`; teach tests/admin_openapi.rs about it",
            &s[..ident_end]
        );
        let rest = s[ident_end..]
            .trim_start()
            .strip_prefix('(')
            .unwrap_or_else(|| panic!("route {path}: expected `(` after `{ident}` in `{chain}`"));
        out.push(ident.to_owned());
        let (_, after) = balanced(rest);
        let after = after.trim();
        if after.is_empty() || after == "," {
            return out;
        }
        s = after.strip_prefix('.').unwrap_or_else(|| {
            panic!("route {path}: unexpected `{after}` in `{chain}`; teach tests/admin_openapi.rs about it")
        });
    }
}

fn routes_in_source(src: &str) -> BTreeSet<Route> {
    // Line comments out (a commented-out route is not served).
    let code: String = src
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    for unsupported in [".nest(", ".merge(", ".route_service(", ".nest_service("] {
        assert!(
            !code.contains(unsupported),
            "src/admin.rs uses `{unsupported}`: its routes cannot be read from the source; teach tests/admin_openapi.rs about it"
        );
    }
    let mut out = BTreeSet::new();
    let mut rest = code.as_str();
    while let Some(i) = rest.find(".route(") {
        let (args, after) = balanced(&rest[i + ".route(".len()..]);
        rest = after;
        let args = args.trim_start();
        let lit = args
            .strip_prefix('"')
            .unwrap_or_else(|| panic!("`.route(` without a string literal path: {args}"));
        let end = lit.find('"').expect("end of the path literal");
        let path = &lit[..end];
        let chain = lit[end + 1..]
            .trim_start()
            .strip_prefix(',')
            .unwrap_or_else(|| panic!("route {path}: no method router"));
        for m in chain_methods(path, chain) {
            assert!(
                out.insert((m.clone(), path.to_owned())),
                "{m} {path} is routed twice"
            );
        }
    }
    out
}

fn served_routes() -> BTreeSet<Route> {
    routes_in_source(&std::fs::read_to_string(ADMIN_RS).expect("src/admin.rs"))
}

fn show(routes: &BTreeSet<Route>) -> String {
    routes
        .iter()
        .map(|(m, p)| format!("\n  {} {p}", m.to_uppercase()))
        .collect()
}

#[test]
fn the_route_reader_reads_method_chains() {
    let src = r#"
        Router::new()
            .route(
                "/a/{id}",
                get(get_a)
                    .patch(update_a)
                    .delete(crate::x::delete_a),
            )
            // .route("/commented", get(x))
            .route("/b", axum::routing::post(|| async { (StatusCode::OK, "(") }))
            .route("/c", put(put_c),)
            .fallback(|| async { not_found() })
    "#;
    let got = routes_in_source(src);
    let want: BTreeSet<Route> = [
        ("get", "/a/{id}"),
        ("patch", "/a/{id}"),
        ("delete", "/a/{id}"),
        ("post", "/b"),
        ("put", "/c"),
    ]
    .iter()
    .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
    .collect();
    assert_eq!(got, want);
    let r = std::panic::catch_unwind(|| routes_in_source(r#".route("/x", get(a).layer(l))"#));
    assert!(
        r.is_err(),
        "an unknown chain element must fail, not be skipped"
    );
}

#[test]
fn documented_routes_equal_served_routes() {
    let documented = documented_routes(&doc());
    let served = served_routes();
    assert!(served.len() >= 15, "read too few routes: {}", show(&served));
    let undocumented: BTreeSet<Route> = served.difference(&documented).cloned().collect();
    let not_served: BTreeSet<Route> = documented.difference(&served).cloned().collect();
    assert!(
        undocumented.is_empty() && not_served.is_empty(),
        "docs/openapi/admin.yaml and src/admin.rs disagree.\nserved but not documented:{}\ndocumented but not served:{}",
        show(&undocumented),
        show(&not_served),
    );
}

#[test]
fn the_document_is_well_formed() {
    let d = doc();
    assert_eq!(d["openapi"].as_str().map(|v| &v[..4]), Some("3.1."));
    assert_eq!(
        d["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    // Every $ref resolves, and every operation documents its auth failure.
    fn walk(doc: &Value, v: &Value) {
        match v {
            Value::Object(o) => {
                if o.contains_key("$ref") {
                    deref(doc, v);
                }
                o.values().for_each(|x| walk(doc, x));
            }
            Value::Array(a) => a.iter().for_each(|x| walk(doc, x)),
            _ => {}
        }
    }
    walk(&d, &d);
    for (m, p) in documented_routes(&d) {
        let responses = &d["paths"][&p][&m]["responses"];
        assert!(responses.get("401").is_some(), "{m} {p}: no 401");
        assert!(
            responses
                .as_object()
                .unwrap()
                .keys()
                .any(|s| s.starts_with('2')),
            "{m} {p}: no success answer"
        );
    }
    // Request bodies are closed, like the deny_unknown_fields structs they describe.
    for name in [
        "CreateWorkspace",
        "UpdateWorkspace",
        "CreateKey",
        "UpdateKey",
        "PutCredential",
        "Settings",
        "Budget",
    ] {
        assert_eq!(
            d["components"]["schemas"][name]["additionalProperties"], false,
            "{name}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Live answers against the document

struct Checker<'a> {
    gw: &'a Gw,
    doc: Value,
    templates: Vec<String>,
    /// (method, template, status) of every answer checked.
    seen: Mutex<BTreeSet<(String, String, u16)>>,
}

/// The document template matching a concrete path (`{x}` matches one segment); the most
/// literal one wins.
fn template_for<'t>(templates: &'t [String], path: &str) -> Option<&'t String> {
    let segs: Vec<&str> = path.split('/').collect();
    templates
        .iter()
        .filter(|t| {
            let ts: Vec<&str> = t.split('/').collect();
            ts.len() == segs.len()
                && ts.iter().zip(&segs).all(|(t, s)| {
                    (t.starts_with('{') && t.ends_with('}') && !s.is_empty()) || t == s
                })
        })
        .max_by_key(|t| t.split('/').filter(|s| !s.starts_with('{')).count())
}

impl<'a> Checker<'a> {
    fn new(gw: &'a Gw) -> Self {
        let doc = doc();
        let templates = doc["paths"].as_object().unwrap().keys().cloned().collect();
        Checker {
            gw,
            doc,
            templates,
            seen: Mutex::new(BTreeSet::new()),
        }
    }

    /// Calls the admin API and validates the answer against the document. Returns the status
    /// and the body (JSON, or a string for text answers).
    async fn call(
        &self,
        method: &str,
        path_and_query: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let mut b = self
            .gw
            .http
            .request(m, format!("{}{path_and_query}", self.gw.admin_url()));
        if let Some(k) = key {
            b = b.bearer_auth(k);
        }
        if let Some(v) = &body {
            b = b
                .header("content-type", "application/json")
                .body(v.to_string());
        }
        let r = b.send().await.expect("admin send");
        let status = r.status().as_u16();
        let ctype = r
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            });
        let www_auth = r.headers().get("www-authenticate").cloned();
        let text = r.text().await.unwrap_or_default();
        let what = format!("{} {path_and_query} -> {status}", method.to_uppercase());

        let path = path_and_query.split('?').next().unwrap_or_default();
        let template = template_for(&self.templates, path)
            .unwrap_or_else(|| panic!("{what}: no documented path matches"))
            .clone();
        let op = &self.doc["paths"][&template][method];
        assert!(
            op.is_object(),
            "{what}: method not documented for {template}"
        );
        let resp = op["responses"].get(status.to_string()).unwrap_or_else(|| {
            panic!("{what}: status not documented for {method} {template}: {text}")
        });
        let resp = deref(&self.doc, resp);
        if status == 401 {
            assert_eq!(
                www_auth.as_ref().and_then(|v| v.to_str().ok()),
                Some("Bearer"),
                "{what}: WWW-Authenticate"
            );
        }
        let value = match resp.get("content") {
            None => {
                assert!(
                    text.is_empty(),
                    "{what}: documented without a body, got {text}"
                );
                Value::Null
            }
            Some(content) => {
                let ctype = ctype.unwrap_or_else(|| panic!("{what}: no content-type"));
                let media = content.get(&ctype).unwrap_or_else(|| {
                    panic!("{what}: content-type {ctype} not documented: {text}")
                });
                let value = if ctype == "application/json" {
                    serde_json::from_str(&text)
                        .unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {text}"))
                } else {
                    Value::String(text)
                };
                self.validate(&what, &media["schema"], &value);
                value
            }
        };
        self.seen
            .lock()
            .unwrap()
            .insert((method.to_owned(), template, status));
        (status, value)
    }

    /// Validates `value` against a schema of the document (its `$ref`s resolve against the
    /// document's components).
    fn validate(&self, what: &str, schema: &Value, value: &Value) {
        let mut root = schema.as_object().expect("schema object").clone();
        root.insert("components".into(), self.doc["components"].clone());
        let v = jsonschema::draft202012::options()
            .build(&Value::Object(root))
            .unwrap_or_else(|e| panic!("{what}: schema does not compile: {e}"));
        let errors: Vec<String> = v
            .iter_errors(value)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{what}: the answer does not match the document:\n  {}\nanswer: {value:#}",
            errors.join("\n  ")
        );
    }

    /// A request body must match the document's request schema too (the scenario's valid
    /// bodies are examples of the documented shapes).
    fn check_request(&self, method: &str, template: &str, body: &Value) {
        let schema = &self.doc["paths"][template][method]["requestBody"]["content"]["application/json"]
            ["schema"];
        self.validate(&format!("request {method} {template}"), schema, body);
    }

    fn reject_request(&self, method: &str, template: &str, body: &Value) {
        let mut root = self.doc["paths"][template][method]["requestBody"]["content"]
            ["application/json"]["schema"]
            .as_object()
            .unwrap()
            .clone();
        root.insert("components".into(), self.doc["components"].clone());
        let v = jsonschema::draft202012::options()
            .build(&Value::Object(root))
            .unwrap();
        assert!(
            !v.is_valid(body),
            "the document accepts {body} for {method} {template}, the server does not"
        );
    }
}

/// The schema check is not vacuous: `$ref`s resolve and drift is caught.
#[test]
fn the_schemas_reject_drift() {
    let d = doc();
    let check = |name: &str, v: &Value| {
        let mut root = serde_json::Map::new();
        root.insert("$ref".into(), json!(format!("#/components/schemas/{name}")));
        root.insert("components".into(), d["components"].clone());
        jsonschema::draft202012::options()
            .build(&Value::Object(root))
            .unwrap()
            .is_valid(v)
    };
    let ws = json!({"id": "ws_1", "name": "a", "settings": {"rpm": 5}, "created_ms": 1,
        "updated_ms": 1, "deleted": false});
    assert!(check("Workspace", &ws));
    let mut extra = ws.clone();
    extra["secret"] = json!("x");
    assert!(!check("Workspace", &extra));
    let mut bad = ws.clone();
    bad["settings"] = json!({"rpm": 0});
    assert!(
        !check("Workspace", &bad),
        "nested $ref to Settings is applied"
    );
    let key = json!({"id": "key_1", "workspace_id": "ws_1", "name": "k", "prefix": "kr-abcdefgh",
        "role": "member", "settings": {}, "expires_ms": null, "revoked": false,
        "revoked_ms": null, "created_ms": 1, "updated_ms": 1});
    assert!(check("Key", &key));
    let mut with_secret = key.clone();
    with_secret["key"] = json!(format!("kr-{}", "a".repeat(43)));
    assert!(
        !check("Key", &with_secret),
        "a listed key carries no secret"
    );
    assert!(check("CreatedKey", &with_secret));
    assert!(!check("CreatedKey", &key));
    let err = json!({"error": {"message": "m", "type": "t", "param": null, "code": "c"}});
    assert!(check("Error", &err));
    assert!(!check("Error", &json!({"error": {"message": "m"}})));
}

#[tokio::test]
async fn live_answers_match_the_document() {
    let gw = start_env(
        &[("KAIROS_SECRET_KEY", KEYRING)],
        &mut MockConfig::default(),
    )
    .await;
    let c = Checker::new(&gw);
    let m = Some(MASTER);

    // --- authentication
    assert_eq!(
        c.call("get", "/admin/v1/workspaces", None, None).await.0,
        401
    );
    assert_eq!(
        c.call("get", "/admin/v1/workspaces", Some("kr-not-a-key"), None)
            .await
            .0,
        401
    );
    assert_eq!(c.call("get", "/metrics", None, None).await.0, 401);
    assert_eq!(c.call("get", "/admin/health", None, None).await.0, 401);

    // --- workspaces
    let settings = json!({
        "allowed_models": ["gpt-4o-mini", "claude-haiku-4-5"],
        "allowed_providers": ["openai", "anthropic"],
        "budget": {"usd": 25.5, "period": "month"},
        "rpm": 600,
        "tpm": 100000,
        "markup_pct": 5.0,
        "monthly_token_allowance": 1000000
    });
    let body = json!({"name": "oa-team-a", "settings": settings});
    c.check_request("post", "/admin/v1/workspaces", &body);
    let (s, a) = c.call("post", "/admin/v1/workspaces", m, Some(body)).await;
    assert_eq!(s, 201, "{a}");
    let a = a["id"].as_str().unwrap().to_owned();
    let (s, b) = c
        .call(
            "post",
            "/admin/v1/workspaces",
            m,
            Some(json!({"name": "oa-team-b"})),
        )
        .await;
    assert_eq!(s, 201);
    let b = b["id"].as_str().unwrap().to_owned();
    assert_eq!(
        c.call(
            "post",
            "/admin/v1/workspaces",
            m,
            Some(json!({"name": "oa-team-a"}))
        )
        .await
        .0,
        409
    );
    for bad in [
        json!({"name": "x", "max_budget": 5}),
        json!({"name": "no spaces"}),
        json!({"name": "x", "settings": {"rpm": 0}}),
        json!({"name": "x", "settings": {"budget": {"usd": 1}}}),
        json!({"settings": {}}),
    ] {
        c.reject_request("post", "/admin/v1/workspaces", &bad);
        let (s, v) = c
            .call("post", "/admin/v1/workspaces", m, Some(bad.clone()))
            .await;
        assert_eq!(s, 400, "{bad} -> {v}");
    }
    let (s, v) = c.call("get", "/admin/v1/workspaces", m, None).await;
    assert_eq!((s, v["data"].as_array().unwrap().len()), (200, 2));
    assert_eq!(
        c.call("get", &format!("/admin/v1/workspaces/{a}"), m, None)
            .await
            .0,
        200
    );
    assert_eq!(
        c.call("get", "/admin/v1/workspaces/ws_nope", m, None)
            .await
            .0,
        404
    );
    let patch = json!({"name": "oa-team-a2", "settings": {"allowed_models": null, "rpm": 60}});
    c.check_request("patch", "/admin/v1/workspaces/{id}", &patch);
    let (s, v) = c
        .call(
            "patch",
            &format!("/admin/v1/workspaces/{a}"),
            m,
            Some(patch),
        )
        .await;
    assert_eq!((s, &v["name"]), (200, &json!("oa-team-a2")), "{v}");
    assert_eq!(
        c.call(
            "patch",
            &format!("/admin/v1/workspaces/{b}"),
            m,
            Some(json!({"name": "oa-team-a2"}))
        )
        .await
        .0,
        409
    );
    assert_eq!(
        c.call(
            "patch",
            &format!("/admin/v1/workspaces/{a}"),
            m,
            Some(json!({"bogus": 1}))
        )
        .await
        .0,
        400
    );
    assert_eq!(
        c.call("patch", "/admin/v1/workspaces/ws_nope", m, Some(json!({})))
            .await
            .0,
        404
    );

    // --- keys
    let body = json!({"name": "a-admin", "role": "admin"});
    c.check_request("post", "/admin/v1/workspaces/{id}/keys", &body);
    let (s, v) = c
        .call(
            "post",
            &format!("/admin/v1/workspaces/{a}/keys"),
            m,
            Some(body),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let admin_a = v["key"].as_str().unwrap().to_owned();
    let body = json!({
        "name": "a-svc",
        "settings": {"metadata": {"team": "a"}, "allowed_models": ["gpt-4o-mini"]},
        "expires_ms": 4_102_444_800_000_i64
    });
    c.check_request("post", "/admin/v1/workspaces/{id}/keys", &body);
    let (s, v) = c
        .call(
            "post",
            &format!("/admin/v1/workspaces/{a}/keys"),
            Some(&admin_a),
            Some(body),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let (member_id, member) = (
        v["id"].as_str().unwrap().to_owned(),
        v["key"].as_str().unwrap().to_owned(),
    );
    let (s, v) = c
        .call(
            "post",
            &format!("/admin/v1/workspaces/{b}/keys"),
            m,
            Some(json!({"name": "b-svc"})),
        )
        .await;
    assert_eq!(s, 201);
    let b_key_id = v["id"].as_str().unwrap().to_owned();
    for bad in [
        json!({"name": "k", "role": "owner"}),
        json!({"name": "k", "workspace_id": b}),
        json!({"name": "k", "settings": {"max_budget": 1}}),
    ] {
        c.reject_request("post", "/admin/v1/workspaces/{id}/keys", &bad);
        let (s, v) = c
            .call(
                "post",
                &format!("/admin/v1/workspaces/{a}/keys"),
                m,
                Some(bad.clone()),
            )
            .await;
        assert_eq!(s, 400, "{bad} -> {v}");
    }
    // Valid in shape, refused in value.
    assert_eq!(
        c.call(
            "post",
            &format!("/admin/v1/workspaces/{a}/keys"),
            m,
            Some(json!({"name": "k", "expires_ms": 1}))
        )
        .await
        .0,
        400
    );
    assert_eq!(
        c.call(
            "post",
            "/admin/v1/workspaces/ws_nope/keys",
            m,
            Some(json!({"name": "k"}))
        )
        .await
        .0,
        404
    );
    let (s, v) = c
        .call("get", &format!("/admin/v1/workspaces/{a}/keys"), m, None)
        .await;
    assert_eq!((s, v["data"].as_array().unwrap().len()), (200, 2));
    assert!(
        !v.to_string().contains(&member),
        "a listing carries no secret"
    );
    assert_eq!(
        c.call("get", "/admin/v1/workspaces/ws_nope/keys", m, None)
            .await
            .0,
        404
    );
    assert_eq!(
        c.call("get", &format!("/admin/v1/keys/{member_id}"), m, None)
            .await
            .0,
        200
    );
    assert_eq!(
        c.call("get", "/admin/v1/keys/key_nope", m, None).await.0,
        404
    );
    let patch = json!({"name": "a-svc-2", "settings": {"metadata": {"team": "a", "env": "ci"}}, "expires_ms": null});
    c.check_request("patch", "/admin/v1/keys/{id}", &patch);
    let (s, v) = c
        .call(
            "patch",
            &format!("/admin/v1/keys/{member_id}"),
            Some(&admin_a),
            Some(patch),
        )
        .await;
    assert_eq!((s, &v["name"]), (200, &json!("a-svc-2")), "{v}");
    for bad in [
        json!({"role": "admin"}),
        json!({"workspace_id": b}),
        json!({"name": "a b"}),
    ] {
        let (s, v) = c
            .call(
                "patch",
                &format!("/admin/v1/keys/{member_id}"),
                m,
                Some(bad.clone()),
            )
            .await;
        assert_eq!(s, 400, "{bad} -> {v}");
    }
    assert_eq!(
        c.call("patch", "/admin/v1/keys/key_nope", m, Some(json!({})))
            .await
            .0,
        404
    );

    // --- roles and tenant isolation
    let me = Some(member.as_str());
    assert_eq!(c.call("get", "/admin/v1/workspaces", me, None).await.0, 403);
    assert_eq!(
        c.call("get", &format!("/admin/v1/keys/{member_id}"), me, None)
            .await
            .0,
        403
    );
    let aa = Some(admin_a.as_str());
    let (s, v) = c.call("get", "/admin/v1/workspaces", aa, None).await;
    assert_eq!((s, v["data"].as_array().unwrap().len()), (200, 1));
    assert_eq!(
        c.call(
            "post",
            "/admin/v1/workspaces",
            aa,
            Some(json!({"name": "mine"}))
        )
        .await
        .0,
        403
    );
    assert_eq!(
        c.call(
            "patch",
            &format!("/admin/v1/workspaces/{a}"),
            aa,
            Some(json!({"settings": {}}))
        )
        .await
        .0,
        403
    );
    assert_eq!(
        c.call("delete", &format!("/admin/v1/workspaces/{a}"), aa, None)
            .await
            .0,
        403
    );
    assert_eq!(
        c.call("get", &format!("/admin/v1/workspaces/{b}"), aa, None)
            .await
            .0,
        404
    );
    assert_eq!(
        c.call("get", &format!("/admin/v1/keys/{b_key_id}"), aa, None)
            .await
            .0,
        404
    );
    assert_eq!(
        c.call(
            "post",
            &format!("/admin/v1/keys/{b_key_id}/revoke"),
            aa,
            None
        )
        .await
        .0,
        404
    );
    assert_eq!(
        c.call(
            "get",
            &format!("/admin/v1/audit?workspace_id={b}"),
            aa,
            None
        )
        .await
        .0,
        404
    );
    // /admin/health and /metrics take the master key only.
    assert_eq!(c.call("get", "/admin/health", aa, None).await.0, 401);
    assert_eq!(c.call("get", "/metrics", aa, None).await.0, 401);

    // --- traffic, then usage, health and metrics
    let r = gw
        .chat_as(
            &member,
            json!({"model": "gpt-4o-mini", "messages": user("hi")}),
        )
        .await;
    assert_eq!(r.status(), 200);
    gw.row(&common::request_id(&r)).await;
    let (s, v) = c
        .call(
            "get",
            &format!("/admin/v1/workspaces/{a}/usage?since_ms=0"),
            m,
            None,
        )
        .await;
    assert_eq!((s, &v["usage"]["requests"]), (200, &json!(1)), "{v}");
    let (s, v) = c
        .call(
            "get",
            &format!("/admin/v1/keys/{member_id}/usage"),
            aa,
            None,
        )
        .await;
    assert_eq!((s, &v["usage"]["requests"]), (200, &json!(1)), "{v}");
    assert_eq!(
        c.call(
            "get",
            &format!("/admin/v1/workspaces/{a}/usage?bogus=1"),
            m,
            None
        )
        .await
        .0,
        400
    );
    assert_eq!(
        c.call(
            "get",
            &format!("/admin/v1/keys/{member_id}/usage?since_ms=soon"),
            m,
            None
        )
        .await
        .0,
        400
    );
    // The learned state: the pinned request's implicit signal counts for its model under the
    // task its prompt was classified as (after the response, off the request path); an `auto`
    // request adds a (task, model) estimate against its prior.
    let (s, v) = c
        .call(
            "get",
            &format!("/admin/v1/workspaces/{a}/learning"),
            aa,
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["outcomes"], json!(1), "{v}");
    assert_eq!(v["untasked"], json!([]), "{v}");
    assert_eq!(v["estimates"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["estimates"][0]["model"], json!("gpt-4o-mini"), "{v}");
    assert!(v["estimates"][0]["task"].is_string(), "{v}");
    let r = gw
        .chat_as(
            &member,
            json!({"model": "auto", "messages": user("Write a Python function that reverses a list.")}),
        )
        .await;
    assert_eq!(r.status(), 200);
    gw.row(&common::request_id(&r)).await;
    let (s, v) = c
        .call(
            "get",
            &format!("/admin/v1/workspaces/{a}/learning"),
            m,
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["outcomes"], json!(2), "{v}");
    let e = v["estimates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["task"] == json!("code"))
        .unwrap_or_else(|| panic!("no estimate for the routed code request: {v}"));
    assert_eq!(
        e["dominated_by"],
        json!("prior"),
        "one outcome does not outweigh a prior: {v}"
    );
    assert!(e["prior_share"].as_f64().unwrap() > 0.5, "{v}");
    assert_eq!(
        c.call("get", "/admin/v1/workspaces/ws_nope/learning", m, None)
            .await
            .0,
        404
    );
    assert_eq!(
        c.call("get", "/admin/v1/workspaces/ws_nope/usage", m, None)
            .await
            .0,
        404
    );
    assert_eq!(
        c.call("get", "/admin/v1/keys/key_nope/usage", m, None)
            .await
            .0,
        404
    );
    let (s, v) = c.call("get", "/admin/health", m, None).await;
    assert_eq!(s, 200);
    assert!(!v["targets"].as_array().unwrap().is_empty(), "{v}");
    let (s, v) = c.call("get", "/metrics", m, None).await;
    assert_eq!(s, 200);
    assert!(v.as_str().unwrap().contains("# TYPE"), "{v}");

    // --- revoke and delete
    let (s, v) = c
        .call(
            "post",
            &format!("/admin/v1/keys/{member_id}/revoke"),
            aa,
            None,
        )
        .await;
    assert_eq!((s, &v["revoked"]), (200, &json!(true)));
    assert_eq!(
        c.call("post", "/admin/v1/keys/key_nope/revoke", m, None)
            .await
            .0,
        404
    );
    assert_eq!(c.call("get", "/admin/v1/workspaces", me, None).await.0, 401);
    let (s, v) = c
        .call("delete", &format!("/admin/v1/workspaces/{b}"), m, None)
        .await;
    assert_eq!((s, &v["deleted"]), (200, &json!(true)));
    assert_eq!(
        c.call("delete", "/admin/v1/workspaces/ws_nope", m, None)
            .await
            .0,
        404
    );

    // --- audit
    let (s, v) = c.call("get", "/admin/v1/audit", m, None).await;
    assert_eq!(s, 200);
    assert!(v["data"].as_array().unwrap().len() >= 8, "{v}");
    let (s, v) = c
        .call(
            "get",
            &format!("/admin/v1/audit?workspace_id={a}&limit=3"),
            aa,
            None,
        )
        .await;
    assert_eq!((s, v["data"].as_array().unwrap().len()), (200, 3));
    assert_eq!(
        c.call("get", "/admin/v1/audit?limit=-1", m, None).await.0,
        400
    );
    assert_eq!(c.call("get", "/admin/v1/audit", me, None).await.0, 401);

    // --- provider credentials (see CREDENTIAL_ROUTES), sealed with the harness keyring.
    let served = served_routes();
    let credentials_served = CREDENTIAL_ROUTES
        .iter()
        .all(|(m, p)| served.contains(&((*m).to_owned(), (*p).to_owned())));
    let mut other_gateways = Vec::new();
    if credentials_served {
        let put = "/admin/v1/workspaces/{id}/credentials/{provider}";
        let creds = format!("/admin/v1/workspaces/{a}/credentials");
        let path = format!("{creds}/openai");
        let body = json!({"api_key": "sk-canary-workspace-openai-1"});
        c.check_request("put", put, &body);
        assert_eq!(c.call("put", &path, aa, Some(body)).await.0, 204);
        let body = json!({"api_key": "sk-canary-workspace-openai-2"});
        assert_eq!(c.call("put", &path, m, Some(body)).await.0, 204, "replace");
        let (s, list) = c.call("get", &creds, aa, None).await;
        assert_eq!(
            (s, list["data"].as_array().unwrap().len()),
            (200, 1),
            "{list}"
        );
        assert_eq!(list["data"][0]["provider"], "openai");
        let (_, audit) = c
            .call("get", &format!("/admin/v1/audit?workspace_id={a}"), m, None)
            .await;
        assert!(
            !format!("{list}{audit}").contains("sk-canary-workspace"),
            "a stored credential is never shown"
        );
        for bad in [
            json!({"api_key": "x", "provider": "openai"}),
            json!({"api_key": ""}),
            json!({}),
        ] {
            c.reject_request("put", put, &bad);
            let (s, v) = c.call("put", &path, m, Some(bad.clone())).await;
            assert_eq!(s, 400, "{bad} -> {v}");
        }
        let key = json!({"api_key": "sk-x"});
        assert_eq!(
            c.call(
                "put",
                &format!("{creds}/no-such-provider"),
                m,
                Some(key.clone())
            )
            .await
            .0,
            404
        );
        assert_eq!(
            c.call(
                "get",
                &format!("/admin/v1/workspaces/{b}/credentials"),
                aa,
                None
            )
            .await
            .0,
            404
        );
        let (_, v) = c
            .call(
                "post",
                &format!("/admin/v1/workspaces/{a}/keys"),
                m,
                Some(json!({"name": "m2"})),
            )
            .await;
        let member2 = v["key"].as_str().unwrap().to_owned();
        assert_eq!(
            c.call("put", &path, Some(&member2), Some(key.clone()))
                .await
                .0,
            403
        );
        assert_eq!(c.call("get", &creds, Some(&member2), None).await.0, 403);
        // Re-sealing spans workspaces: master key only. Under the harness keyring (one key)
        // everything is current already.
        let (s, v) = c
            .call("post", "/admin/v1/credentials/reseal", m, None)
            .await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v, json!({"resealed": 0, "current": 1, "failed": []}));
        assert_eq!(
            c.call("post", "/admin/v1/credentials/reseal", aa, None)
                .await
                .0,
            403
        );
        assert_eq!(c.call("delete", &path, aa, None).await.0, 204);
        assert_eq!(c.call("delete", &path, m, None).await.0, 404);
        let (_, list) = c.call("get", &creds, m, None).await;
        assert_eq!(list["data"], json!([]));

        // A gateway without a keyring cannot store credentials: 503.
        let plain = start_gw().await;
        let c2 = Checker::new(&plain);
        let (_, w) = c2
            .call(
                "post",
                "/admin/v1/workspaces",
                m,
                Some(json!({"name": "plain"})),
            )
            .await;
        let w = w["id"].as_str().unwrap().to_owned();
        let (s, v) = c2
            .call(
                "put",
                &format!("/admin/v1/workspaces/{w}/credentials/openai"),
                m,
                Some(key),
            )
            .await;
        assert_eq!(s, 503, "{v}");
        let (s, v) = c2
            .call("post", "/admin/v1/credentials/reseal", m, None)
            .await;
        assert_eq!(s, 503, "{v}");
        other_gateways.push(c2.seen.into_inner().unwrap());
    }

    // Every served route was answered successfully at least once (credential routes: see above).
    let mut seen = c.seen.lock().unwrap().clone();
    let ok: BTreeSet<Route> = seen
        .iter()
        .filter(|(_, _, s)| (200..300).contains(s))
        .map(|(m, p, _)| (m.clone(), p.clone()))
        .collect();
    let untested: BTreeSet<Route> = served.difference(&ok).cloned().collect();
    assert!(
        untested.is_empty(),
        "served routes without a successful answer in the scenario:{}",
        show(&untested)
    );
    // And every documented error status was produced somewhere (503: a gateway without a
    // credential keyring).
    seen.extend(other_gateways.into_iter().flatten());
    let statuses: BTreeSet<u16> = seen.iter().map(|(_, _, s)| *s).collect();
    let expected: &[u16] = if credentials_served {
        &[400, 401, 403, 404, 409, 503]
    } else {
        &[400, 401, 403, 404, 409]
    };
    for s in expected {
        assert!(statuses.contains(s), "no {s} in the scenario");
    }
}

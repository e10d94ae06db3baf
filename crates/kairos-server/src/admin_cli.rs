//! `kairos workspaces ...`, `kairos keys ...` and `kairos credentials ...`: a small client of a running gateway's admin
//! API (docs/admin.md, docs/openapi/admin.yaml).
//!
//! ```text
//! kairos workspaces create NAME [--settings JSON]
//! kairos workspaces list | show ID | delete ID
//! kairos keys create --workspace ID --name NAME [--role member|admin] [--settings JSON] [--expires-in 30d]
//! kairos keys list --workspace ID | show KEY_ID | revoke KEY_ID
//! kairos credentials reseal      (master key; after a KAIROS_SECRET_KEY rotation)
//!
//! common: --admin-url URL (KAIROS_ADMIN_URL, default http://127.0.0.1:8091)
//!         --key KEY       (KAIROS_MASTER_KEY, else <KAIROS_DATA_DIR or ./.kairos>/master_key)
//!         --json          print the API's JSON instead of a table
//! ```
//!
//! Plain HTTP only and never through a proxy (`HTTP_PROXY` is ignored): the admin listener is
//! meant for loopback or a private network, and the master key must not go to a proxy.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::{Value, json};

/// The default admin listener (`[server] admin_listen`).
pub const DEFAULT_ADMIN_URL: &str = "http://127.0.0.1:8091";

/// Flags shared by every admin subcommand (accepted before or after the subcommand).
#[derive(Args, Debug, Clone)]
pub struct Conn {
    /// Base URL of the gateway's admin listener.
    #[arg(
        long,
        global = true,
        env = "KAIROS_ADMIN_URL",
        default_value = DEFAULT_ADMIN_URL,
        value_name = "URL",
        help_heading = "Admin API"
    )]
    pub admin_url: String,
    /// The master key or an admin virtual key. Without it: KAIROS_MASTER_KEY, else the file
    /// `master_key` in KAIROS_DATA_DIR (default ./.kairos), where `kairos serve` keeps the key
    /// it generated.
    #[arg(
        long,
        global = true,
        env = "KAIROS_MASTER_KEY",
        hide_env_values = true,
        value_name = "KEY",
        help_heading = "Admin API"
    )]
    pub key: Option<String>,
    /// Print the API's JSON answer instead of a table.
    #[arg(long, global = true, help_heading = "Admin API")]
    pub json: bool,
}

#[derive(Subcommand, Debug, Clone)]
pub enum WorkspacesCmd {
    /// Create a workspace (master key only).
    Create {
        /// Unique; 1 to 64 characters of A-Z a-z 0-9 - _ .
        name: String,
        /// Settings as a JSON object, e.g. '{"allowed_models": ["gpt-4o-mini"]}'.
        #[arg(long, value_name = "JSON")]
        settings: Option<String>,
    },
    /// List the workspaces the key may see.
    List,
    /// Show one workspace.
    Show { id: String },
    /// Delete a workspace (its keys stop working at once).
    Delete { id: String },
}

#[derive(Subcommand, Debug, Clone)]
pub enum KeysCmd {
    /// Create a virtual key; the key is printed once.
    Create {
        /// Workspace id (`ws_...`).
        #[arg(long, value_name = "ID")]
        workspace: String,
        /// 1 to 64 characters of A-Z a-z 0-9 - _ .
        #[arg(long)]
        name: String,
        /// `member` (inference API only, the default) or `admin` (also manages its workspace).
        #[arg(long, value_parser = ["member", "admin"])]
        role: Option<String>,
        /// Settings as a JSON object, e.g. '{"metadata": {"team": "a"}}'.
        #[arg(long, value_name = "JSON")]
        settings: Option<String>,
        /// Expire the key after this long: a number and a unit, s m h d or w (`30d`, `12h`).
        #[arg(long, value_name = "DURATION")]
        expires_in: Option<String>,
    },
    /// List a workspace's keys (no secrets).
    List {
        #[arg(long, value_name = "ID")]
        workspace: String,
    },
    /// Show one key (no secret).
    Show { key_id: String },
    /// Revoke a key.
    Revoke { key_id: String },
}

#[derive(Subcommand, Debug, Clone)]
pub enum CredentialsCmd {
    /// Re-seal every stored provider credential still sealed under an older key of the
    /// keyring (KAIROS_SECRET_KEY) with its current key, in every workspace (master key only).
    /// Run it after making a new key current on every replica; once it reports no failure, the
    /// old key can be dropped. Idempotent. Exits with 1 when some credential could not be
    /// re-sealed (no key of the keyring opens it).
    Reseal,
}

/// What to run.
#[derive(Debug, Clone)]
pub enum Command {
    Workspaces(WorkspacesCmd),
    Keys(KeysCmd),
    Credentials(CredentialsCmd),
}

fn out(s: &str) {
    let _ = writeln!(std::io::stdout().lock(), "{s}");
}

fn err(s: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{s}");
}

/// Runs one admin subcommand; prints the answer and returns the exit code (1 on any failure,
/// with the API's error message on stderr).
pub async fn run(conn: &Conn, cmd: Command) -> ExitCode {
    match execute(conn, cmd).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            err(&format!("kairos: {e}"));
            ExitCode::FAILURE
        }
    }
}

async fn execute(conn: &Conn, cmd: Command) -> Result<(), String> {
    // Arguments are checked before anything is sent.
    let req = request_for(&cmd, now_ms())?;
    let client = Client::new(conn)?;
    let (answer, raw) = client.send(&req).await?;
    if conn.json {
        // The API's answer as it came (one line of JSON: pipe it to `jq`).
        out(raw.trim_end());
        if matches!(cmd, Command::Keys(KeysCmd::Create { .. })) {
            err(SHOWN_ONCE);
        }
    } else {
        out(&human(&cmd, &answer));
    }
    if matches!(cmd, Command::Credentials(CredentialsCmd::Reseal)) {
        let failed = answer["failed"].as_array().map_or(0, Vec::len);
        if failed > 0 {
            return Err(format!(
                "{failed} stored credential(s) could not be re-sealed: no key of the keyring \
                 opens them (they are left as they are; keep the key that sealed them, or store \
                 them again with `PUT .../credentials/{{provider}}`)"
            ));
        }
    }
    Ok(())
}

const SHOWN_ONCE: &str =
    "warning: store this key now: it will not be shown again (the gateway keeps only its hash).";

// ---------------------------------------------------------------------------------------------
// Requests

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Get,
    Post,
    Delete,
}

/// One admin API call: method, path segments under the base URL, optional JSON body.
#[derive(Debug, Clone, PartialEq)]
struct Request {
    method: Method,
    path: Vec<String>,
    body: Option<Value>,
}

fn seg(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| (*s).to_owned()).collect()
}

/// An id given on the command line, as one path segment.
fn id_arg<'a>(what: &str, id: &'a str) -> Result<&'a str, String> {
    if id.is_empty() || id == "." || id == ".." {
        return Err(format!("invalid {what} `{id}`"));
    }
    Ok(id)
}

fn request_for(cmd: &Command, now_ms: i64) -> Result<Request, String> {
    let ws = |rest: &[&str]| {
        let mut p = seg(&["admin", "v1", "workspaces"]);
        p.extend(rest.iter().map(|s| (*s).to_owned()));
        p
    };
    let key = |rest: &[&str]| {
        let mut p = seg(&["admin", "v1", "keys"]);
        p.extend(rest.iter().map(|s| (*s).to_owned()));
        p
    };
    let get = |path| Request {
        method: Method::Get,
        path,
        body: None,
    };
    Ok(match cmd {
        Command::Workspaces(c) => match c {
            WorkspacesCmd::Create { name, settings } => {
                let mut body = json!({ "name": name });
                if let Some(s) = settings {
                    body["settings"] = settings_arg(s)?;
                }
                Request {
                    method: Method::Post,
                    path: ws(&[]),
                    body: Some(body),
                }
            }
            WorkspacesCmd::List => get(ws(&[])),
            WorkspacesCmd::Show { id } => get(ws(&[id_arg("workspace id", id)?])),
            WorkspacesCmd::Delete { id } => Request {
                method: Method::Delete,
                path: ws(&[id_arg("workspace id", id)?]),
                body: None,
            },
        },
        Command::Keys(c) => match c {
            KeysCmd::Create {
                workspace,
                name,
                role,
                settings,
                expires_in,
            } => {
                let mut body = json!({ "name": name });
                if let Some(r) = role {
                    body["role"] = Value::String(r.clone());
                }
                if let Some(s) = settings {
                    body["settings"] = settings_arg(s)?;
                }
                if let Some(d) = expires_in {
                    let d = parse_duration(d)?;
                    let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
                    body["expires_ms"] = json!(now_ms.saturating_add(ms));
                }
                Request {
                    method: Method::Post,
                    path: ws(&[id_arg("workspace id", workspace)?, "keys"]),
                    body: Some(body),
                }
            }
            KeysCmd::List { workspace } => get(ws(&[id_arg("workspace id", workspace)?, "keys"])),
            KeysCmd::Show { key_id } => get(key(&[id_arg("key id", key_id)?])),
            KeysCmd::Revoke { key_id } => Request {
                method: Method::Post,
                path: key(&[id_arg("key id", key_id)?, "revoke"]),
                body: None,
            },
        },
        Command::Credentials(CredentialsCmd::Reseal) => Request {
            method: Method::Post,
            path: seg(&["admin", "v1", "credentials", "reseal"]),
            body: None,
        },
    })
}

fn settings_arg(s: &str) -> Result<Value, String> {
    match serde_json::from_str::<Value>(s) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err("--settings must be a JSON object, e.g. '{\"rpm\": 60}'".into()),
        Err(e) => Err(format!("--settings is not valid JSON: {e}")),
    }
}

/// `30d`, `12h`, `90m`, `45s`, `2w`: a positive whole number and one unit.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad =
        || format!("invalid duration `{s}`: expected a number and a unit, e.g. 30d, 12h, 90m");
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().map_err(|_| bad())?;
    let secs_per = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(bad()),
    };
    if n == 0 {
        return Err(format!("invalid duration `{s}`: must be more than zero"));
    }
    // Far beyond any sensible expiry; keeps the millisecond arithmetic in range.
    let secs = n
        .checked_mul(secs_per)
        .filter(|&x| x <= 100 * 365 * 86_400)
        .ok_or_else(|| format!("invalid duration `{s}`: at most 100 years"))?;
    Ok(Duration::from_secs(secs))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

// ---------------------------------------------------------------------------------------------
// Transport

struct Client {
    http: reqwest::Client,
    base: reqwest::Url,
    key: String,
}

/// The key to present: `--key` / KAIROS_MASTER_KEY, else `<data_dir>/master_key`.
fn resolve_key(conn: &Conn) -> Result<String, String> {
    if let Some(k) = conn.key.as_deref().map(str::trim).filter(|k| !k.is_empty()) {
        return Ok(k.to_owned());
    }
    let dir = std::env::var_os("KAIROS_DATA_DIR")
        .filter(|d| !d.is_empty())
        .map_or_else(|| PathBuf::from("./.kairos"), PathBuf::from);
    let file = dir.join("master_key");
    match std::fs::read_to_string(&file) {
        Ok(k) if !k.trim().is_empty() => Ok(k.trim().to_owned()),
        _ => Err(format!(
            "no admin key: pass --key, set KAIROS_MASTER_KEY, or run where {} exists (KAIROS_DATA_DIR)",
            file.display()
        )),
    }
}

impl Client {
    fn new(conn: &Conn) -> Result<Client, String> {
        let base = reqwest::Url::parse(conn.admin_url.trim())
            .map_err(|e| format!("invalid --admin-url `{}`: {e}", conn.admin_url))?;
        if base.scheme() != "http" {
            return Err(format!(
                "--admin-url `{}`: only http:// is supported (the admin listener is meant for \
                 loopback or a private network; use an SSH tunnel to reach a remote one)",
                conn.admin_url
            ));
        }
        if base.cannot_be_a_base() {
            return Err(format!("invalid --admin-url `{}`", conn.admin_url));
        }
        let key = resolve_key(conn)?;
        let http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| format!("cannot set up the HTTP client: {e}"))?;
        Ok(Client { http, base, key })
    }

    fn url(&self, path: &[String]) -> reqwest::Url {
        let mut u = self.base.clone();
        if let Ok(mut s) = u.path_segments_mut() {
            // Each part is one path segment (percent-encoded): an id cannot add segments.
            s.pop_if_empty().extend(path);
        }
        u
    }

    /// The parsed answer and its text.
    async fn send(&self, req: &Request) -> Result<(Value, String), String> {
        let url = self.url(&req.path);
        let method = match req.method {
            Method::Get => reqwest::Method::GET,
            Method::Post => reqwest::Method::POST,
            Method::Delete => reqwest::Method::DELETE,
        };
        let mut b = self
            .http
            .request(method.clone(), url.clone())
            .bearer_auth(&self.key);
        if let Some(body) = &req.body {
            b = b
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_string());
        }
        let resp = b.send().await.map_err(|e| self.transport_error(&e))?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .map_err(|e| format!("reading the answer of {method} {url}: {e}"))?;
        let body: Option<Value> = serde_json::from_str(&text).ok();
        if status.is_success() {
            return Ok((body.unwrap_or(Value::Null), text));
        }
        let msg = body
            .as_ref()
            .and_then(|v| v["error"]["message"].as_str())
            .map(str::to_owned)
            .unwrap_or_else(|| {
                let t = text.trim();
                if t.is_empty() {
                    status.canonical_reason().unwrap_or("error").to_owned()
                } else {
                    t.chars().take(500).collect()
                }
            });
        let mut line = format!("{msg} (HTTP {})", status.as_u16());
        if status == reqwest::StatusCode::UNAUTHORIZED {
            line.push_str(
                "\nhint: the admin API takes the master key or an admin virtual key (--key, \
                 KAIROS_MASTER_KEY, or <KAIROS_DATA_DIR>/master_key)",
            );
        } else if status == reqwest::StatusCode::NOT_FOUND
            && body.as_ref().and_then(|v| v["error"]["code"].as_str()) == Some("caller_not_found")
        {
            line.push_str(&format!(
                "\nhint: {} does not look like a KairosRoute admin listener (wrong --admin-url?)",
                self.base
            ));
        }
        Err(line)
    }

    fn transport_error(&self, e: &reqwest::Error) -> String {
        let base = self.base.as_str().trim_end_matches('/');
        if e.is_connect() {
            format!(
                "cannot connect to the admin API at {base}: {}\n\
                 hint: the admin API has its own listener ([server] admin_listen or \
                 KAIROS_ADMIN_LISTEN, default 127.0.0.1:8091), on loopback only by default; is \
                 the gateway running there? Point --admin-url (or KAIROS_ADMIN_URL) at it, or run \
                 this on the gateway's host.",
                root_cause(e)
            )
        } else if e.is_timeout() {
            format!("the admin API at {base} did not answer in time")
        } else {
            format!(
                "request to the admin API at {base} failed: {}",
                root_cause(e)
            )
        }
    }
}

/// The innermost error's text (`Connection refused (os error 111)` rather than reqwest's
/// generic "error sending request").
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

// ---------------------------------------------------------------------------------------------
// Human output

fn human(cmd: &Command, v: &Value) -> String {
    match cmd {
        Command::Workspaces(WorkspacesCmd::List) => workspace_table(v),
        Command::Workspaces(WorkspacesCmd::Create { .. }) => {
            format!("created workspace\n{}", details(v, WORKSPACE_FIELDS))
        }
        Command::Workspaces(WorkspacesCmd::Delete { .. }) => {
            format!("deleted workspace\n{}", details(v, WORKSPACE_FIELDS))
        }
        Command::Workspaces(WorkspacesCmd::Show { .. }) => details(v, WORKSPACE_FIELDS),
        Command::Keys(KeysCmd::List { .. }) => key_table(v),
        Command::Keys(KeysCmd::Create { .. }) => created_key(v),
        Command::Keys(KeysCmd::Revoke { .. }) => {
            format!("revoked key\n{}", details(v, KEY_FIELDS))
        }
        Command::Keys(KeysCmd::Show { .. }) => details(v, KEY_FIELDS),
        Command::Credentials(CredentialsCmd::Reseal) => reseal_summary(v),
    }
}

fn reseal_summary(v: &Value) -> String {
    let n = |f: &str| v[f].as_u64().unwrap_or(0);
    let failed: Vec<String> = v["failed"]
        .as_array()
        .map(|a| a.iter().map(text).collect())
        .unwrap_or_default();
    let mut s = format!(
        "resealed  {}\ncurrent   {}\nfailed    {}",
        n("resealed"),
        n("current"),
        failed.len()
    );
    for id in &failed {
        s.push_str(&format!("\n  {id}"));
    }
    s
}

const WORKSPACE_FIELDS: &[&str] = &[
    "id",
    "name",
    "settings",
    "created_ms",
    "updated_ms",
    "deleted",
];
const KEY_FIELDS: &[&str] = &[
    "id",
    "workspace_id",
    "name",
    "prefix",
    "role",
    "settings",
    "expires_ms",
    "revoked",
    "revoked_ms",
    "created_ms",
    "updated_ms",
];

fn created_key(v: &Value) -> String {
    let key = v["key"].as_str().unwrap_or("?");
    format!(
        "created key {} ({}, role {}) in workspace {}\n\n    {key}\n\n{SHOWN_ONCE}",
        text(&v["id"]),
        text(&v["name"]),
        text(&v["role"]),
        text(&v["workspace_id"]),
    )
}

/// `field: value` lines, known fields first, then anything else the API added.
fn details(v: &Value, order: &[&str]) -> String {
    let Some(obj) = v.as_object() else {
        return v.to_string();
    };
    let mut names: Vec<&str> = order
        .iter()
        .copied()
        .filter(|f| obj.contains_key(*f))
        .collect();
    names.extend(
        obj.keys()
            .map(String::as_str)
            .filter(|k| !order.contains(k)),
    );
    let width = names.iter().map(|n| n.len()).max().unwrap_or(0);
    names
        .iter()
        .map(|n| {
            let val = &obj[*n];
            let shown = if n.ends_with("_ms") && val.is_i64() {
                format!("{} ({})", time(val), val)
            } else {
                text(val)
            };
            format!("{n:<width$}  {shown}")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn workspace_table(v: &Value) -> String {
    let rows: Vec<Vec<String>> = items(v)
        .iter()
        .map(|w| {
            vec![
                text(&w["id"]),
                text(&w["name"]),
                if w["deleted"].as_bool() == Some(true) {
                    "deleted".into()
                } else {
                    "active".into()
                },
                time(&w["created_ms"]),
                settings_summary(&w["settings"]),
            ]
        })
        .collect();
    table(&["ID", "NAME", "STATUS", "CREATED", "SETTINGS"], &rows)
}

fn key_table(v: &Value) -> String {
    let now = now_ms();
    let rows: Vec<Vec<String>> = items(v)
        .iter()
        .map(|k| {
            let status = if k["revoked"].as_bool() == Some(true) {
                "revoked"
            } else if k["expires_ms"].as_i64().is_some_and(|e| e <= now) {
                "expired"
            } else {
                "active"
            };
            vec![
                text(&k["id"]),
                text(&k["name"]),
                format!("{}...", text(&k["prefix"])),
                text(&k["role"]),
                status.to_owned(),
                if k["expires_ms"].is_null() {
                    "never".into()
                } else {
                    time(&k["expires_ms"])
                },
                time(&k["created_ms"]),
            ]
        })
        .collect();
    table(
        &[
            "ID", "NAME", "PREFIX", "ROLE", "STATUS", "EXPIRES", "CREATED",
        ],
        &rows,
    )
}

fn items(v: &Value) -> Vec<Value> {
    v["data"].as_array().cloned().unwrap_or_default()
}

fn settings_summary(s: &Value) -> String {
    match s.as_object() {
        Some(o) if !o.is_empty() => s.to_string(),
        _ => "-".into(),
    }
}

/// A string without quotes; anything else as compact JSON; null as `-`.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// Left-aligned columns separated by two spaces; `(none)` for no rows.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    if rows.is_empty() {
        return "(none)".into();
    }
    let mut width: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = width.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                let pad = width[i].saturating_sub(c.chars().count());
                s.push_str(c);
                s.push_str(&" ".repeat(pad + 2));
            }
        }
        s
    };
    let mut out = vec![line(header.to_vec())];
    for r in rows {
        out.push(line(r.iter().map(String::as_str).collect()));
    }
    out.join("\n")
}

/// Unix ms as `YYYY-MM-DD HH:MM UTC`; `-` for anything else.
fn time(v: &Value) -> String {
    let Some(ms) = v.as_i64() else {
        return "-".into();
    };
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rem / 3600,
        (rem % 3600) / 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("30d").unwrap(),
            Duration::from_secs(30 * 86_400)
        );
        assert_eq!(
            parse_duration("12h").unwrap(),
            Duration::from_secs(12 * 3600)
        );
        assert_eq!(parse_duration("90m").unwrap(), Duration::from_secs(5400));
        assert_eq!(
            parse_duration("2w").unwrap(),
            Duration::from_secs(14 * 86_400)
        );
        assert_eq!(parse_duration("45s").unwrap(), Duration::from_secs(45));
        for bad in [
            "",
            "d",
            "30",
            "30x",
            "-1d",
            "0d",
            "1.5h",
            "30 d",
            "999999999999w",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn requests_are_built_from_arguments() {
        let r = request_for(
            &Command::Keys(KeysCmd::Create {
                workspace: "ws_1".into(),
                name: "ci".into(),
                role: Some("admin".into()),
                settings: Some(r#"{"rpm": 5}"#.into()),
                expires_in: Some("1h".into()),
            }),
            1_000,
        )
        .unwrap();
        assert_eq!(r.method, Method::Post);
        assert_eq!(r.path, ["admin", "v1", "workspaces", "ws_1", "keys"]);
        assert_eq!(
            r.body.unwrap(),
            json!({"name": "ci", "role": "admin", "settings": {"rpm": 5}, "expires_ms": 3_601_000})
        );
        let r = request_for(
            &Command::Keys(KeysCmd::Revoke {
                key_id: "key_1".into(),
            }),
            0,
        )
        .unwrap();
        assert_eq!(
            (r.method, r.path.join("/")),
            (Method::Post, "admin/v1/keys/key_1/revoke".into())
        );
        let bad = Command::Workspaces(WorkspacesCmd::Create {
            name: "a".into(),
            settings: Some("[1]".into()),
        });
        assert!(request_for(&bad, 0).unwrap_err().contains("JSON object"));
        let bad = Command::Workspaces(WorkspacesCmd::Create {
            name: "a".into(),
            settings: Some("{".into()),
        });
        assert!(request_for(&bad, 0).unwrap_err().contains("not valid JSON"));
        let bad = Command::Keys(KeysCmd::Show {
            key_id: "..".into(),
        });
        assert!(request_for(&bad, 0).unwrap_err().contains("invalid key id"));
    }

    #[test]
    fn reseal_request_and_summary() {
        let r = request_for(&Command::Credentials(CredentialsCmd::Reseal), 0).unwrap();
        assert_eq!(
            (r.method, r.path.join("/"), r.body),
            (Method::Post, "admin/v1/credentials/reseal".into(), None)
        );
        let s = reseal_summary(&json!({"resealed": 3, "current": 1, "failed": ["ws_1/openai"]}));
        assert_eq!(s, "resealed  3\ncurrent   1\nfailed    1\n  ws_1/openai");
    }

    #[test]
    fn ids_stay_one_path_segment() {
        let c = Client {
            http: reqwest::Client::new(),
            base: reqwest::Url::parse("http://127.0.0.1:8091/prefix/").unwrap(),
            key: String::new(),
        };
        let u = c.url(&seg(&["admin", "v1", "keys", "../x?y#z"]));
        assert_eq!(
            u.as_str(),
            "http://127.0.0.1:8091/prefix/admin/v1/keys/..%2Fx%3Fy%23z"
        );
    }

    #[test]
    fn times_and_tables() {
        assert_eq!(time(&json!(0)), "1970-01-01 00:00 UTC");
        assert_eq!(time(&json!(1_709_210_096_000_i64)), "2024-02-29 12:34 UTC");
        assert_eq!(time(&Value::Null), "-");
        let t = table(
            &["ID", "NAME"],
            &[
                vec!["a".into(), "x".into()],
                vec!["long-id".into(), "y".into()],
            ],
        );
        assert_eq!(t, "ID       NAME\na        x\nlong-id  y");
        assert_eq!(table(&["ID"], &[]), "(none)");
        let keys = json!({"data": [{"id": "key_1", "name": "ci", "prefix": "kr-abcdefgh", "role": "member",
            "revoked": true, "expires_ms": null, "created_ms": 0}]});
        let t = key_table(&keys);
        assert!(
            t.contains("kr-abcdefgh...") && t.contains("revoked") && t.contains("never"),
            "{t}"
        );
    }
}

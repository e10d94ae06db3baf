//! The ledger row and the list query.

use serde::{Deserialize, Serialize};

/// One request in the ledger: exactly one row per request, also for errors and client
/// disconnects. The same struct is the JSON line format of the spool file.
///
/// Text values are stored as given, except that NUL characters (`'\0'`) are replaced with
/// U+FFFD on insert on every backend: PostgreSQL rejects NUL in `TEXT`, and one such row would
/// otherwise block the writer forever.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LedgerRow {
    /// Request id (uuid v7 text); the primary key. Inserts are idempotent on it.
    pub id: String,
    /// Unix time in milliseconds at request start.
    pub ts_ms: i64,
    /// `"master"` for now; later the virtual key id (never the key itself).
    pub key_id: String,
    pub workspace: Option<String>,
    /// `"chat"` | `"messages"` | `"embeddings"`.
    pub route: String,
    /// `"openai"` | `"anthropic"`.
    pub inbound_api: String,
    pub requested_model: String,
    pub served_model: Option<String>,
    pub provider: Option<String>,
    pub stream: bool,
    /// HTTP status sent to the client.
    pub status_code: i32,
    /// `"ok"` | `"error"` | `"client_disconnected"` | `"upstream_cut"` | `"upstream_stalled"` ...
    pub outcome: String,
    pub error_kind: Option<String>,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cached_tokens: i64,
    pub cache_write_tokens: i64,
    pub reasoning_tokens: i64,
    /// `"provider"` | `"estimated"` | `"none"`.
    pub usage_source: String,
    /// Integer micro-USD; `None` = price unknown.
    pub cost_micros: Option<i64>,
    pub latency_total_us: i64,
    pub latency_upstream_us: Option<i64>,
    pub overhead_us: i64,
    pub ttft_us: Option<i64>,
    /// JSON object text (tags).
    pub metadata: Option<String>,
    pub end_user: Option<String>,
    pub trace_id: String,
    pub attempts: i32,
    /// The classified task type of a routed (`model="auto"`) request.
    #[serde(default)]
    pub task: Option<String>,
    /// The routing receipt (JSON) of a routed request.
    #[serde(default)]
    pub receipt: Option<String>,
    /// Every upstream attempt (JSON array) when there was more than one or one failed.
    #[serde(default)]
    pub attempts_detail: Option<String>,
    /// The caller brought its own provider key for this request (no markup applies).
    #[serde(default)]
    pub byok: bool,
    /// The workspace's markup on managed-key spend, in micro-USD (0 for BYOK); billed on top
    /// of `cost_micros`.
    #[serde(default)]
    pub markup_micros: i64,
    /// The routed prompt's embedding (an opaque string from `kairos_router::embed::quantize`),
    /// kept so that outcomes can be learned per region of prompt space.
    #[serde(default)]
    pub embedding: Option<String>,
    /// Outcomes computed when the request finished (the implicit signal), not a column: the
    /// writer upserts them into `outcomes` in the same transaction as the row, and the spool
    /// line carries them, so a spooled row still yields its outcomes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signals: Vec<Signal>,
    /// The intent-journal generation holding this request's entry (not stored).
    #[serde(skip)]
    pub journal_gen: Option<u32>,
}

/// An outcome carried on its request's [`LedgerRow`]: the row supplies the request id,
/// workspace, key, task and embedding of the [`OutcomeRow`] it becomes
/// ([`OutcomeRow::from_signal`]).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Signal {
    pub metric: String,
    pub model: String,
    /// In [0, 1].
    pub score: f64,
    pub weight: f64,
    /// `"explicit"` | `"implicit"`.
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Unix time in milliseconds when the outcome was observed.
    pub at_ms: i64,
}

/// How one request went for one model by one metric: explicit feedback (`POST /v1/feedback`)
/// or an implicit signal computed by the gateway. Unique per `(request_id, metric, model)`;
/// writing the same key again updates `score`, `weight`, `detail` and `updated_ms` and keeps
/// `created_ms` ([`crate::Store::upsert_outcome`]).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OutcomeRow {
    pub request_id: String,
    /// `"score"` (explicit default), a caller's metric name, `"implicit"`, `"implicit_retry"`,
    /// `"implicit_escalation"`.
    pub metric: String,
    /// The model the outcome is about (usually the request's served model).
    pub model: String,
    /// Copied from the request's row.
    pub workspace: Option<String>,
    /// The key that made the request (copied from its row).
    pub key_id: String,
    /// The request's routed task, if it was routed (copied from its row).
    pub task: Option<String>,
    /// The request's prompt embedding (copied from its row).
    pub embedding: Option<String>,
    /// In [0, 1].
    pub score: f64,
    /// 1.0 for explicit feedback; lower for implicit signals.
    pub weight: f64,
    /// `"explicit"` | `"implicit"`.
    pub source: String,
    /// The caller's comment, or the implicit signal's reasons (comma separated).
    pub detail: Option<String>,
    pub created_ms: i64,
    pub updated_ms: i64,
}

impl OutcomeRow {
    /// The outcome `s` of the request `row`.
    pub fn from_signal(row: &LedgerRow, s: &Signal) -> OutcomeRow {
        OutcomeRow {
            request_id: row.id.clone(),
            metric: s.metric.clone(),
            model: s.model.clone(),
            workspace: row.workspace.clone(),
            key_id: row.key_id.clone(),
            task: row.task.clone(),
            embedding: row.embedding.clone(),
            score: s.score,
            weight: s.weight,
            source: s.source.clone(),
            detail: s.detail.clone(),
            created_ms: s.at_ms,
            updated_ms: s.at_ms,
        }
    }

    /// Upper bound on `detail`, in bytes (longer values are cut at a character boundary).
    pub const MAX_DETAIL_BYTES: usize = 16 * 1024;
}

/// Filters for [`crate::Store::list_requests`]. Results are newest first
/// (`ts_ms` descending, then `id` descending).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListQuery {
    /// Only rows of this key id.
    pub key_id: Option<String>,
    /// Only rows whose `served_model` equals this (the indexed column; rows that never reached a
    /// provider have no served model and never match).
    pub model: Option<String>,
    /// Only rows with `ts_ms >= since_ms`.
    pub since_ms: Option<i64>,
    /// Only rows with `ts_ms < until_ms` (for paging backwards in time).
    pub until_ms: Option<i64>,
    /// Maximum number of rows; `None` = [`ListQuery::DEFAULT_LIMIT`], capped at
    /// [`ListQuery::MAX_LIMIT`].
    pub limit: Option<u32>,
}

impl ListQuery {
    /// Rows returned when `limit` is `None`.
    pub const DEFAULT_LIMIT: u32 = 100;
    /// Upper bound on `limit`.
    pub const MAX_LIMIT: u32 = 1000;

    /// The limit actually applied.
    pub fn effective_limit(&self) -> u32 {
        self.limit
            .unwrap_or(Self::DEFAULT_LIMIT)
            .min(Self::MAX_LIMIT)
    }
}

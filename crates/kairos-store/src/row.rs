//! The ledger row and the list query.

use serde::{Deserialize, Serialize};

/// One request in the ledger: exactly one row per request, also for errors and client
/// disconnects. The same struct is the JSON line format of the spool file.
///
/// Text values are stored as given, except that NUL characters (`'\0'`) are replaced with
/// U+FFFD on insert on every backend: PostgreSQL rejects NUL in `TEXT`, and one such row would
/// otherwise block the writer forever.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
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
    /// The intent-journal generation holding this request's entry (not stored).
    #[serde(skip)]
    pub journal_gen: Option<u32>,
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

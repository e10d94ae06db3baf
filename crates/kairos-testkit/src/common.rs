//! Pieces every API shares: reading and logging requests, auth outcomes, choosing the
//! behaviour, delays, token counting, reply text, error bodies and billing.

use std::borrow::Cow;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, LOCATION, RETRY_AFTER};
use http::{StatusCode, request::Parts};
use serde_json::{Value, json};

use crate::behavior::{Behavior, DIRECTIVE_OPEN, ToolCallSpec, UsageMode, parse_directive};
use crate::state::{BODY_LOG_CAP, BilledCall, LedgerSlot, MockHandle, ReceivedRequest};

/// Largest request body accepted.
const MAX_BODY: usize = 64 * 1024 * 1024;

pub(crate) const JSON: HeaderValue = HeaderValue::from_static("application/json");
pub(crate) const SSE: HeaderValue = HeaderValue::from_static("text/event-stream");

/// The three wire formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Api {
    OpenAi,
    Anthropic,
    Gemini,
}

impl Api {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::OpenAi => "openai",
            Self::Anthropic => "anthropic",
            Self::Gemini => "gemini",
        }
    }
}

/// A request with its body read (and logged when recording).
pub(crate) struct Incoming {
    pub(crate) parts: Parts,
    pub(crate) body: Bytes,
}

impl Incoming {
    pub(crate) async fn read(h: &MockHandle, req: Request) -> Result<Self, Response> {
        let (parts, body) = req.into_parts();
        let body = match axum::body::to_bytes(body, MAX_BODY).await {
            Ok(b) => b,
            Err(_) => {
                return Err(plain(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "request body too large or unreadable",
                ));
            }
        };
        let inc = Self { parts, body };
        if h.record() {
            h.log_request(inc.to_received(h));
        }
        Ok(inc)
    }

    fn to_received(&self, h: &MockHandle) -> ReceivedRequest {
        let query = self.parts.uri.query().map(str::to_owned);
        let key_in_query = query
            .as_deref()
            .is_some_and(|q| q.split('&').any(|kv| kv == "key" || kv.starts_with("key=")));
        let cap = self.body.len().min(BODY_LOG_CAP);
        ReceivedRequest {
            method: self.parts.method.to_string(),
            path: self.parts.uri.path().to_owned(),
            query,
            headers: self
                .parts
                .headers
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_owned(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            body: String::from_utf8_lossy(&self.body[..cap]).into_owned(),
            at_ms: h.elapsed_ms(),
            key_in_query,
        }
    }

    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.parts.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub(crate) fn path(&self) -> &str {
        self.parts.uri.path()
    }

    pub(crate) fn query_param(&self, name: &str) -> Option<&str> {
        self.parts.uri.query()?.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k == name).then_some(v)
        })
    }
}

pub(crate) fn plain(status: StatusCode, msg: &'static str) -> Response {
    let mut r = Response::new(Body::from(msg));
    *r.status_mut() = status;
    r
}

pub(crate) fn json_response(status: StatusCode, body: impl Into<Body>) -> Response {
    let mut r = Response::new(body.into());
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, JSON);
    r
}

pub(crate) fn to_json_bytes(v: &Value) -> Bytes {
    Bytes::from(serde_json::to_vec(v).unwrap_or_default())
}

// ---------------------------------------------------------------------------------------------
// One inference call: auth, behaviour, delays, errors, billing.

/// Context of one inference request on its way through the mock.
pub(crate) struct Call<'a> {
    pub(crate) h: &'a MockHandle,
    pub(crate) api: Api,
    pub(crate) inc: &'a Incoming,
    pub(crate) model: String,
    pub(crate) stream: bool,
    pub(crate) id: u64,
}

impl<'a> Call<'a> {
    pub(crate) fn new(h: &'a MockHandle, api: Api, inc: &'a Incoming) -> Self {
        h.count_call();
        Self {
            h,
            api,
            inc,
            model: String::new(),
            stream: false,
            id: h.next_id(),
        }
    }

    /// A ledger row for this call.
    pub(crate) fn bill(
        &self,
        status: u16,
        usage: Option<&Tokens>,
        completed: bool,
    ) -> Option<LedgerSlot> {
        if !self.h.record() {
            return None;
        }
        let t = usage.copied().unwrap_or_default();
        self.h.bill(BilledCall {
            request_id: self.inc.header("x-kairos-request-id").map(str::to_owned),
            api: self.api.name().to_owned(),
            route: self.inc.path().to_owned(),
            model: self.model.clone(),
            stream: self.stream,
            status,
            prompt_tokens: t.prompt,
            completion_tokens: t.completion,
            cached_tokens: t.cached,
            completed,
        })
    }

    /// An error in this API's shape, billed with 0 tokens.
    pub(crate) fn fail(&self, status: u16, error_type: Option<&str>, message: &str) -> Response {
        self.bill(status, None, false);
        error_response(self.api, status, error_type, Some(message), None, self.id)
    }

    /// Picks the behaviour: model script > FIFO script > directive > defaults.
    pub(crate) fn behavior(&self, body: &Value) -> Result<Cow<'a, Behavior>, String> {
        if let Some(b) = self.h.take_script(&self.model) {
            return Ok(Cow::Owned(b));
        }
        if let Some(found) = find_directive(&self.inc.body, body) {
            return found.map(Cow::Owned);
        }
        Ok(self.h.defaults())
    }

    /// Waits `ms` before the headers; a client that leaves meanwhile counts as a disconnect.
    pub(crate) async fn delay(&self, ms: u64) {
        if ms == 0 {
            return;
        }
        let mut guard = PendingGuard {
            h: self.h,
            armed: true,
        };
        tokio::time::sleep(Duration::from_millis(ms)).await;
        guard.armed = false;
    }

    /// Applies the behaviour's error side: redirect or non-2xx status. `None` when the call
    /// goes on to a successful answer. `usage` is billed only with `bill_on_error`.
    pub(crate) async fn refuse(&self, b: &Behavior, usage: Option<&Tokens>) -> Option<Response> {
        if b.reset {
            self.delay(b.headers_delay_ms).await;
            self.bill(0, if b.bill_on_error { usage } else { None }, false);
            if let Some(kill) = self.inc.parts.extensions.get::<crate::server::ConnKill>() {
                kill.0.notify_one();
            }
            // The connection task drops the connection; this handler never answers.
            std::future::pending::<()>().await;
        }
        if let Some(location) = &b.redirect_to {
            self.delay(b.headers_delay_ms).await;
            self.bill(302, None, false);
            let mut r = Response::new(Body::empty());
            *r.status_mut() = StatusCode::FOUND;
            if let Ok(v) = HeaderValue::from_str(location) {
                r.headers_mut().insert(LOCATION, v);
            }
            add_retry_after(&mut r, b);
            return Some(r);
        }
        if b.is_success() {
            return None;
        }
        self.delay(b.headers_delay_ms).await;
        let billed = if b.bill_on_error { usage } else { None };
        self.bill(b.status, billed, false);
        let mut r = error_response(
            self.api,
            b.status,
            b.error_type.as_deref(),
            b.error_message.as_deref(),
            None,
            self.id,
        );
        add_retry_after(&mut r, b);
        Some(r)
    }

    /// Sets the common success headers.
    pub(crate) fn decorate(&self, r: &mut Response, b: &Behavior) {
        add_retry_after(r, b);
        let name = match self.api {
            Api::OpenAi => "x-request-id",
            Api::Anthropic => "request-id",
            Api::Gemini => return,
        };
        if let Ok(v) = HeaderValue::from_str(&format!("req_mock{:012x}", self.id)) {
            r.headers_mut().insert(HeaderName::from_static(name), v);
        }
    }
}

struct PendingGuard<'a> {
    h: &'a MockHandle,
    armed: bool,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.h.count_disconnect();
        }
    }
}

fn add_retry_after(r: &mut Response, b: &Behavior) {
    if let Some(ra) = &b.retry_after
        && let Ok(v) = HeaderValue::from_str(ra)
    {
        r.headers_mut().insert(RETRY_AFTER, v);
    }
}

/// Finds a directive in any string of the request (cheap byte scan first).
fn find_directive(raw: &[u8], body: &Value) -> Option<Result<Behavior, String>> {
    let open = DIRECTIVE_OPEN.as_bytes();
    if !raw.windows(open.len()).any(|w| w == open) {
        return None;
    }
    let mut found = None;
    visit_strings(body, &mut |s| {
        if found.is_none()
            && let Some(r) = parse_directive(s)
        {
            found = Some(r.map(|(b, _)| b));
        }
    });
    found
}

fn visit_strings(v: &Value, f: &mut impl FnMut(&str)) {
    match v {
        Value::String(s) => f(s),
        Value::Array(a) => a.iter().for_each(|x| visit_strings(x, f)),
        Value::Object(o) => o.values().for_each(|x| visit_strings(x, f)),
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------------
// Error bodies.

/// A provider-shaped error response.
pub(crate) fn error_response(
    api: Api,
    status: u16,
    error_type: Option<&str>,
    message: Option<&str>,
    param: Option<&str>,
    id: u64,
) -> Response {
    let status_code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let message = message.unwrap_or_else(|| default_message(status, error_type));
    let body = match api {
        Api::OpenAi => {
            let (ty, code) = openai_error_kind(status, error_type);
            json!({"error": {"message": message, "type": ty, "param": param, "code": code}})
        }
        Api::Anthropic => json!({
            "type": "error",
            "error": {"type": error_type.unwrap_or_else(|| anthropic_error_type(status)), "message": message},
            "request_id": format!("req_mock{id:012x}"),
        }),
        Api::Gemini => json!({"error": {
            "code": status,
            "message": message,
            "status": error_type.unwrap_or_else(|| gemini_status(status)),
        }}),
    };
    json_response(status_code, to_json_bytes(&body))
}

/// OpenAI `(type, code)` for a status or an explicit error type.
pub(crate) fn openai_error_kind(status: u16, error_type: Option<&str>) -> (&str, Option<&str>) {
    if let Some(et) = error_type {
        let ty = match et {
            "context_length_exceeded" | "invalid_api_key" | "model_not_found" => {
                "invalid_request_error"
            }
            "rate_limit_exceeded" => "requests",
            other => other,
        };
        return (ty, Some(et));
    }
    match status {
        401 => ("invalid_request_error", Some("invalid_api_key")),
        403 => ("request_forbidden", Some("request_forbidden")),
        404 => ("invalid_request_error", Some("model_not_found")),
        413 => ("invalid_request_error", Some("request_too_large")),
        429 => ("requests", Some("rate_limit_exceeded")),
        500..=599 => ("server_error", None),
        _ => ("invalid_request_error", None),
    }
}

pub(crate) fn anthropic_error_type(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        504 => "timeout_error",
        529 => "overloaded_error",
        500..=599 => "api_error",
        _ => "invalid_request_error",
    }
}

pub(crate) fn gemini_status(status: u16) -> &'static str {
    match status {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "ABORTED",
        429 => "RESOURCE_EXHAUSTED",
        499 => "CANCELLED",
        501 => "NOT_IMPLEMENTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        500..=599 => "INTERNAL",
        _ => "FAILED_PRECONDITION",
    }
}

fn default_message(status: u16, error_type: Option<&str>) -> &'static str {
    match error_type {
        Some("insufficient_quota") => {
            return "You exceeded your current quota, please check your plan and billing details.";
        }
        Some("context_length_exceeded") => {
            return "This model's maximum context length is 128000 tokens. However, your messages resulted in more tokens. Please reduce the length of the messages.";
        }
        Some("overloaded_error") => return "Overloaded",
        _ => {}
    }
    match status {
        400 => "Invalid request.",
        401 => "Invalid API key.",
        402 => "Payment required.",
        403 => "Permission denied.",
        404 => "The requested model or resource does not exist.",
        408 => "Request timed out.",
        413 => "Request too large.",
        429 => "Rate limit reached. Please try again later.",
        500 => "The server had an error while processing your request.",
        502 => "Bad gateway.",
        503 => "The service is temporarily unavailable.",
        504 => "Gateway timeout.",
        529 => "Overloaded",
        _ => "Mock error.",
    }
}

// ---------------------------------------------------------------------------------------------
// Tokens.

/// Billed (and normally reported) token counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Tokens {
    pub(crate) prompt: u32,
    pub(crate) completion: u32,
    pub(crate) cached: u32,
}

impl Tokens {
    /// What the response reports under `mode` (`None`: no usage object).
    pub(crate) fn reported(&self, mode: UsageMode) -> Option<Tokens> {
        match mode {
            UsageMode::Present => Some(*self),
            UsageMode::Zero => Some(Tokens::default()),
            UsageMode::Absent => None,
        }
    }
}

/// `ceil(chars / 4)`.
pub(crate) fn text_tokens(s: &str) -> u32 {
    u32::try_from(s.chars().count().div_ceil(4)).unwrap_or(u32::MAX)
}

/// Sum of `text_tokens` over the string leaves of `v`, skipping the values of `role` and `type`.
pub(crate) fn leaf_tokens(v: &Value) -> u32 {
    match v {
        Value::String(s) => text_tokens(s),
        Value::Array(a) => a.iter().map(leaf_tokens).fold(0, u32::saturating_add),
        Value::Object(o) => o
            .iter()
            .filter(|(k, _)| k.as_str() != "role" && k.as_str() != "type")
            .map(|(_, v)| leaf_tokens(v))
            .fold(0, u32::saturating_add),
        _ => 0,
    }
}

/// 3 per message plus the message's leaf tokens.
pub(crate) fn messages_tokens(messages: &[Value]) -> u32 {
    messages
        .iter()
        .map(|m| leaf_tokens(m).saturating_add(3))
        .fold(0, u32::saturating_add)
}

/// `text_tokens` of the compact JSON of `v` (tools).
pub(crate) fn json_tokens(v: Option<&Value>) -> u32 {
    match v {
        None | Some(Value::Null) => 0,
        Some(v) => text_tokens(&v.to_string()),
    }
}

/// The text of a message's content: a string (borrowed), or the `text` of its parts joined
/// by spaces.
pub(crate) fn content_text(content: Option<&Value>) -> Cow<'_, str> {
    match content {
        Some(Value::String(s)) => Cow::Borrowed(s),
        Some(Value::Array(parts)) => Cow::Owned(
            parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join(" "),
        ),
        _ => Cow::Borrowed(""),
    }
}

pub(crate) fn as_u32(v: Option<&Value>) -> Option<u32> {
    v.and_then(Value::as_u64)
        .map(|n| u32::try_from(n).unwrap_or(u32::MAX))
}

// ---------------------------------------------------------------------------------------------
// The reply.

/// Why generation stopped, in a neutral vocabulary mapped to each API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Finish {
    Stop,
    Length,
    ToolCalls,
    Other(String),
}

impl Finish {
    fn from_override(s: &str) -> Self {
        match s {
            "stop" | "end_turn" | "STOP" => Self::Stop,
            "length" | "max_tokens" | "MAX_TOKENS" => Self::Length,
            "tool_calls" | "tool_use" => Self::ToolCalls,
            other => Self::Other(other.to_owned()),
        }
    }

    pub(crate) fn openai(&self) -> &str {
        match self {
            Self::Stop => "stop",
            Self::Length => "length",
            Self::ToolCalls => "tool_calls",
            Self::Other(s) => s,
        }
    }

    pub(crate) fn anthropic(&self) -> &str {
        match self {
            Self::Stop => "end_turn",
            Self::Length => "max_tokens",
            Self::ToolCalls => "tool_use",
            Self::Other(s) if s == "content_filter" => "refusal",
            Self::Other(s) => s,
        }
    }

    pub(crate) fn gemini(&self) -> String {
        match self {
            // Gemini reports STOP for function calls too.
            Self::Stop | Self::ToolCalls => "STOP".to_owned(),
            Self::Length => "MAX_TOKENS".to_owned(),
            Self::Other(s) if s == "content_filter" => "SAFETY".to_owned(),
            Self::Other(s) => s.to_ascii_uppercase(),
        }
    }
}

/// What the request asked for, as far as the reply is concerned.
pub(crate) struct Ask<'r> {
    pub(crate) model: &'r str,
    pub(crate) prompt_tokens: u32,
    /// Text of the last user message.
    pub(crate) last_user: Cow<'r, str>,
    /// Output cap (max_tokens and friends).
    pub(crate) max_tokens: Option<u32>,
    /// JSON output requested: `Some(schema)` (`Value::Null` for plain JSON mode).
    pub(crate) json_schema: Option<&'r Value>,
    /// Number of choices (OpenAI `n`, Gemini `generationConfig.candidateCount`).
    pub(crate) n: usize,
}

/// The planned answer.
pub(crate) struct Reply {
    /// Text to send (None: tool call only).
    pub(crate) text: Option<String>,
    pub(crate) tool: Option<ToolCallSpec>,
    pub(crate) finish: Finish,
    pub(crate) tokens: Tokens,
    pub(crate) n: usize,
}

impl Reply {
    pub(crate) fn plan(h: &MockHandle, b: &Behavior, ask: &Ask<'_>) -> Self {
        let tool = b.tool_call.clone();
        let mut finish = if tool.is_some() {
            Finish::ToolCalls
        } else {
            Finish::Stop
        };
        let mut text = match (&b.text, &tool) {
            (Some(t), _) => Some(t.clone()),
            (None, Some(_)) => None,
            (None, None) => Some(default_text(h, b, ask)),
        };
        if let (Some(t), Some(cap), None, None) =
            (&mut text, ask.max_tokens, b.completion_tokens, &tool)
        {
            let max_chars = usize::try_from(cap).unwrap_or(usize::MAX).saturating_mul(4);
            if let Some((idx, _)) = t.char_indices().nth(max_chars) {
                t.truncate(idx);
                finish = Finish::Length;
            }
        }
        if let Some(f) = &b.finish_reason {
            finish = Finish::from_override(f);
        }
        let n = ask.n.max(1);
        let per_choice =
            text.as_deref()
                .map_or(0, text_tokens)
                .saturating_add(tool.as_ref().map_or(0, |t| {
                    text_tokens(&t.name).saturating_add(text_tokens(&t.arguments))
                }));
        let computed = per_choice
            .max(1)
            .saturating_mul(u32::try_from(n).unwrap_or(u32::MAX));
        let tokens = Tokens {
            prompt: b.prompt_tokens.unwrap_or(ask.prompt_tokens),
            completion: b.completion_tokens.unwrap_or(computed),
            cached: b.cached_tokens.unwrap_or(0),
        };
        Self {
            text,
            tool,
            finish,
            tokens,
            n,
        }
    }

    /// Pieces of the text for streaming.
    pub(crate) fn text_pieces(&self, chunks: usize) -> Vec<&str> {
        self.text
            .as_deref()
            .map(|t| split_chars(t, chunks))
            .unwrap_or_default()
    }

    /// Pieces of the tool arguments for streaming.
    pub(crate) fn arg_pieces(&self, chunks: usize) -> Vec<&str> {
        self.tool
            .as_ref()
            .map(|t| split_chars(&t.arguments, chunks))
            .unwrap_or_default()
    }

    /// Number of content events a non-stream answer would have had (for its delay).
    pub(crate) fn content_events(&self, chunks: usize) -> usize {
        self.text_pieces(chunks).len() + self.arg_pieces(chunks).len()
    }
}

/// Total time a non-stream answer waits before its headers.
pub(crate) fn generation_delay_ms(b: &Behavior, reply: &Reply) -> u64 {
    let events = u64::try_from(reply.content_events(b.chunks)).unwrap_or(0);
    b.headers_delay_ms
        .saturating_add(b.ttft_ms)
        .saturating_add(b.itl_ms.saturating_mul(events.saturating_sub(1)))
}

/// Splits `s` into at most `chunks` non-empty pieces on char boundaries (one empty piece for
/// an empty string).
pub(crate) fn split_chars(s: &str, chunks: usize) -> Vec<&str> {
    let total = s.chars().count();
    if total == 0 {
        return vec![s];
    }
    let k = chunks.clamp(1, total);
    let (base, extra) = (total / k, total % k);
    let mut out = Vec::with_capacity(k);
    let mut indices = s
        .char_indices()
        .map(|(i, _)| i)
        .chain(std::iter::once(s.len()));
    let mut start = 0;
    let mut consumed = 0;
    let _ = indices.next();
    for piece in 0..k {
        let len = base + usize::from(piece < extra);
        consumed += len;
        let end = if consumed >= total {
            s.len()
        } else {
            indices.nth(len - 1).unwrap_or(s.len())
        };
        out.push(&s[start..end]);
        start = end;
    }
    out
}

const SPLIT_TEXT: &str = "Voilà: café, naïve, 😀 and déjà vu 😀 — é/😀 split across reads.";

fn snippet(last_user: &str) -> String {
    let cleaned: Cow<'_, str> = match parse_directive(last_user) {
        Some(Ok((_, range))) => {
            let mut s = last_user.to_owned();
            s.replace_range(range, "");
            Cow::Owned(s)
        }
        _ => Cow::Borrowed(last_user),
    };
    let cleaned = cleaned.trim();
    if cleaned.is_empty() {
        return "(empty prompt)".to_owned();
    }
    let mut out: String = cleaned.chars().take(60).collect();
    if out.len() < cleaned.len() {
        out.push_str("...");
    }
    out
}

/// The reply text when the behaviour sets none (see the crate docs).
fn default_text(h: &MockHandle, b: &Behavior, ask: &Ask<'_>) -> String {
    if b.split_utf8 {
        return SPLIT_TEXT.to_owned();
    }
    if let Some(schema) = ask.json_schema {
        let v = match schema {
            Value::Null => json!({"answer": "mock", "model": ask.model}),
            schema => json_for_schema(schema, 0),
        };
        return v.to_string();
    }
    let snip = snippet(&ask.last_user);
    if h.config().demo {
        format!(
            "[demo:{model}] Here is a short answer to \"{snip}\". In demo mode KairosRoute answers \
             from its built-in mock upstream, so no real model was called. Add a provider key to \
             your configuration to get real answers.",
            model = ask.model
        )
    } else {
        format!("Mock reply from {} to \"{snip}\".", ask.model)
    }
}

/// A small value that satisfies simple JSON schemas.
fn json_for_schema(schema: &Value, depth: usize) -> Value {
    if depth > 8 {
        return Value::Null;
    }
    if let Some(v) = schema
        .get("enum")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
    {
        return v.clone();
    }
    if let Some(v) = schema.get("const") {
        return v.clone();
    }
    let ty = match schema.get("type") {
        Some(Value::String(s)) => s.as_str(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null")
            .unwrap_or("null"),
        _ if schema.get("properties").is_some() => "object",
        _ => "string",
    };
    match ty {
        "object" => {
            let mut map = serde_json::Map::new();
            if let Some(Value::Object(props)) = schema.get("properties") {
                for (k, sub) in props {
                    map.insert(k.clone(), json_for_schema(sub, depth + 1));
                }
            }
            Value::Object(map)
        }
        "array" => match schema.get("items") {
            Some(items) if schema.get("minItems").and_then(Value::as_u64).unwrap_or(0) > 0 => {
                Value::Array(vec![json_for_schema(items, depth + 1)])
            }
            _ => Value::Array(Vec::new()),
        },
        "integer" => json!(1),
        "number" => json!(1.5),
        "boolean" => json!(true),
        "null" => Value::Null,
        _ => json!("mock"),
    }
}

/// `data: <json>\n\n` (or `\r\n\r\n`).
pub(crate) fn sse_data(v: &Value, crlf: bool) -> Bytes {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"data: ");
    if serde_json::to_writer(&mut out, v).is_err() {
        out.extend_from_slice(b"{}");
    }
    out.extend_from_slice(if crlf { b"\r\n\r\n" } else { b"\n\n" });
    Bytes::from(out)
}

/// `event: <name>\ndata: <json>\n\n`.
pub(crate) fn sse_event(name: &str, v: &Value) -> Bytes {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    if serde_json::to_writer(&mut out, v).is_err() {
        out.extend_from_slice(b"{}");
    }
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

/// A streaming response with the SSE headers.
pub(crate) fn stream_response(body: Body, content_type: HeaderValue) -> Response {
    let mut r = Response::new(body);
    let headers: &mut HeaderMap = r.headers_mut();
    headers.insert(CONTENT_TYPE, content_type);
    headers.insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache"),
    );
    r
}

/// Seconds since the epoch, for `created`.
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_chars_keeps_char_boundaries() {
        assert_eq!(split_chars("abcdefgh", 4), vec!["ab", "cd", "ef", "gh"]);
        assert_eq!(split_chars("abcde", 2), vec!["abc", "de"]);
        assert_eq!(split_chars("ab", 4), vec!["a", "b"]);
        assert_eq!(split_chars("", 4), vec![""]);
        assert_eq!(split_chars("é😀x", 3), vec!["é", "😀", "x"]);
        let s = "héllo 😀 wörld";
        assert_eq!(split_chars(s, 5).concat(), s);
        assert_eq!(split_chars(s, 0), vec![s]);
    }

    #[test]
    fn token_counting_is_documented_rule() {
        assert_eq!(text_tokens(""), 0);
        assert_eq!(text_tokens("abcd"), 1);
        assert_eq!(text_tokens("abcde"), 2);
        assert_eq!(text_tokens("😀😀😀😀😀"), 2, "chars, not bytes");
        let msgs = vec![
            json!({"role": "system", "content": "abcdefgh"}),
            json!({"role": "user", "content": [{"type": "text", "text": "abcde"}]}),
        ];
        assert_eq!(messages_tokens(&msgs), (3 + 2) + (3 + 2));
    }

    #[test]
    fn schema_values() {
        let schema = json!({"type": "object", "properties": {
            "name": {"type": "string"}, "age": {"type": "integer"},
            "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1},
            "kind": {"enum": ["a", "b"]}, "opt": {"type": ["null", "boolean"]}
        }});
        assert_eq!(
            json_for_schema(&schema, 0),
            json!({"name": "mock", "age": 1, "tags": ["mock"], "kind": "a", "opt": true})
        );
    }

    #[test]
    fn snippet_strips_directive_and_truncates() {
        assert_eq!(snippet("hi [[mock {\"status\":200}]] there"), "hi  there");
        assert_eq!(snippet("   "), "(empty prompt)");
        let long = "x".repeat(100);
        assert_eq!(snippet(&long), format!("{}...", "x".repeat(60)));
    }

    #[test]
    fn finish_mapping() {
        assert_eq!(Finish::from_override("length").anthropic(), "max_tokens");
        assert_eq!(Finish::from_override("length").gemini(), "MAX_TOKENS");
        assert_eq!(Finish::from_override("max_tokens").openai(), "length");
        assert_eq!(Finish::from_override("tool_calls").anthropic(), "tool_use");
        assert_eq!(Finish::from_override("content_filter").gemini(), "SAFETY");
        assert_eq!(
            Finish::from_override("stop_sequence").anthropic(),
            "stop_sequence"
        );
    }
}

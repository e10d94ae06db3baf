//! The one trait every upstream API implements, and the types it trades in.
//!
//! An adapter is a set of PURE functions: canonical (OpenAI-shaped) request -> upstream HTTP
//! request, upstream body -> canonical response, upstream SSE events -> canonical chunks, upstream
//! error -> classified error. It never does IO; [`crate::client`] does. That keeps every
//! translation snapshot-testable and fuzzable, and lets one conformance suite run over all
//! adapters.

use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use kairos_api::openai::{
    ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, EmbeddingRequest, EmbeddingResponse,
};
use kairos_api::sse::SseEvent;

/// The wire API an upstream speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ApiKind {
    OpenAi,
    Anthropic,
    Gemini,
}

impl ApiKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ApiKind::OpenAi => "openai",
            ApiKind::Anthropic => "anthropic",
            ApiKind::Gemini => "gemini",
        }
    }
}

/// Everything an adapter needs to address one model on one upstream.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// The provider's name in config (for messages only).
    pub provider: &'a str,
    /// The model id the upstream API expects.
    pub upstream_model: &'a str,
    /// The provider key. Adapters put it in a header, never in a URL, and never anywhere else.
    pub api_key: Option<&'a str>,
    /// Output-token cap to send when the caller gave none and the upstream requires one
    /// (Anthropic's `max_tokens` is mandatory).
    pub default_max_tokens: u32,
}

/// An HTTP request for the upstream, relative to the operator-configured base URL.
#[derive(Debug, Clone)]
pub struct UpstreamRequest {
    /// Appended to the provider's base URL, e.g. `/chat/completions`. Built only from
    /// operator config and escaped model ids, never from caller input that could change the host.
    pub path_and_query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// What an adapter reports after consuming one SSE event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamSignal {
    Continue,
    /// The upstream's explicit end of stream (`[DONE]`, `message_stop`). APIs without one
    /// (Gemini) never return it: the stream ends at EOF and `finish` judges whether that EOF
    /// was clean.
    Done,
}

/// Upstream SSE events -> canonical chunks, with the state the translation needs.
pub trait ChatStreamDecoder: Send {
    /// Consume one event, appending zero or more canonical chunks to `out`.
    ///
    /// Usage, when the upstream reports it, is emitted as a final chunk with `choices: []` and
    /// `usage` set (the OpenAI `include_usage` shape), after the chunk carrying `finish_reason`.
    fn on_event(
        &mut self,
        event: &SseEvent,
        out: &mut Vec<ChatCompletionChunk>,
    ) -> Result<StreamSignal, DecodeError>;

    /// Called at end of input. Returns `Err(DecodeError::Truncated)` when the stream ended
    /// without its terminal event (a cut stream must never look like a clean one). May emit
    /// pending chunks (e.g. a buffered usage chunk).
    fn finish(&mut self, out: &mut Vec<ChatCompletionChunk>) -> Result<(), DecodeError>;
}

/// One upstream API.
pub trait Adapter: Send + Sync + 'static {
    fn api(&self) -> ApiKind;

    /// Canonical request -> upstream request. `stream` says whether to ask for a stream.
    fn chat_request(
        &self,
        req: &ChatCompletionRequest,
        target: &Target<'_>,
        stream: bool,
    ) -> Result<UpstreamRequest, TranslateError>;

    /// Upstream 2xx body -> canonical response.
    fn chat_response(
        &self,
        body: &[u8],
        target: &Target<'_>,
    ) -> Result<ChatCompletion, DecodeError>;

    /// A fresh decoder for one streamed response.
    fn chat_stream_decoder(&self, target: &Target<'_>) -> Box<dyn ChatStreamDecoder>;

    fn embeddings_request(
        &self,
        req: &EmbeddingRequest,
        target: &Target<'_>,
    ) -> Result<UpstreamRequest, TranslateError>;

    /// Upstream 2xx embeddings body -> canonical response, honouring the caller's
    /// `encoding_format` (base64 of little-endian f32 when asked).
    fn embeddings_response(
        &self,
        body: &[u8],
        req: &EmbeddingRequest,
        target: &Target<'_>,
    ) -> Result<EmbeddingResponse, DecodeError>;

    /// Non-2xx upstream response -> classified error with a sanitised message.
    fn upstream_error(&self, status: u16, headers: &HeaderMap, body: &[u8]) -> UpstreamError;
}

/// The request cannot be expressed for this upstream (caller error: 400, no upstream call).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct TranslateError {
    pub message: String,
    /// The request field at fault, e.g. `messages[2].content[0]`.
    pub param: Option<String>,
}

impl TranslateError {
    pub fn new(message: impl Into<String>, param: Option<&str>) -> Self {
        TranslateError {
            message: message.into(),
            param: param.map(str::to_owned),
        }
    }
}

/// The upstream sent something we cannot read (502 `upstream_invalid_response`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("upstream sent an invalid response: {0}")]
    Invalid(String),
    #[error("upstream stream ended before its terminal event")]
    Truncated,
    /// The upstream reported an error inside a stream (`event: error`, `data: {"error":..}`).
    #[error("upstream reported an error mid-stream: {}", .0.message)]
    StreamError(UpstreamError),
}

impl DecodeError {
    /// An `Invalid` error whose detail quotes at most 200 bytes of upstream output.
    pub fn invalid(what: &str, err: impl std::fmt::Display) -> Self {
        let mut detail = format!("{what}: {err}");
        truncate_utf8(&mut detail, 200);
        DecodeError::Invalid(detail)
    }
}

/// A classified upstream failure. `message` is sanitised (see [`sanitize_message`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamError {
    pub status: u16,
    pub kind: UpstreamErrorKind,
    pub message: String,
    /// The provider's own code/type (`insufficient_quota`, `overloaded_error`, ...).
    pub provider_code: Option<String>,
    pub retry_after: Option<Duration>,
}

/// Closed vocabulary of upstream failure causes (stable strings via [`UpstreamErrorKind::as_str`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UpstreamErrorKind {
    /// 400/422 the provider rejected the request.
    BadRequest,
    /// The prompt does not fit the model's context.
    ContextLength,
    /// 401/403: the provider key is wrong or lacks permission (an operator problem).
    Auth,
    /// 404: the model or route does not exist upstream.
    NotFound,
    /// 413
    TooLarge,
    /// 429 transient rate limit.
    RateLimited,
    /// 429/402 quota or spend limit exhausted: not retryable.
    QuotaExhausted,
    /// 529 / 503 overloaded.
    Overloaded,
    /// Other 5xx.
    Server,
    /// Content policy refusal by the provider.
    ContentFilter,
    /// Anything else.
    Other,
}

impl UpstreamErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamErrorKind::BadRequest => "provider_bad_request",
            UpstreamErrorKind::ContextLength => "provider_context_length",
            UpstreamErrorKind::Auth => "provider_auth",
            UpstreamErrorKind::NotFound => "provider_not_found",
            UpstreamErrorKind::TooLarge => "provider_too_large",
            UpstreamErrorKind::RateLimited => "provider_rate_limited",
            UpstreamErrorKind::QuotaExhausted => "provider_quota_exhausted",
            UpstreamErrorKind::Overloaded => "provider_overloaded",
            UpstreamErrorKind::Server => "provider_server_error",
            UpstreamErrorKind::ContentFilter => "provider_content_filter",
            UpstreamErrorKind::Other => "provider_error",
        }
    }

    /// Whether a retry of the same request may succeed (used by the resilience layer).
    pub fn retryable(self) -> bool {
        match self {
            UpstreamErrorKind::RateLimited
            | UpstreamErrorKind::Overloaded
            | UpstreamErrorKind::Server => true,
            UpstreamErrorKind::BadRequest
            | UpstreamErrorKind::ContextLength
            | UpstreamErrorKind::Auth
            | UpstreamErrorKind::NotFound
            | UpstreamErrorKind::TooLarge
            | UpstreamErrorKind::QuotaExhausted
            | UpstreamErrorKind::ContentFilter
            | UpstreamErrorKind::Other => false,
        }
    }

    /// Default classification from the HTTP status alone.
    pub fn from_status(status: u16) -> Self {
        match status {
            400 | 422 => UpstreamErrorKind::BadRequest,
            401 | 403 => UpstreamErrorKind::Auth,
            402 => UpstreamErrorKind::QuotaExhausted,
            404 => UpstreamErrorKind::NotFound,
            413 => UpstreamErrorKind::TooLarge,
            429 => UpstreamErrorKind::RateLimited,
            503 | 529 => UpstreamErrorKind::Overloaded,
            500..=599 => UpstreamErrorKind::Server,
            _ => UpstreamErrorKind::Other,
        }
    }
}

/// Parse a `Retry-After` header given in seconds (HTTP dates are ignored: providers send seconds).
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    let secs: f64 = v.parse().ok()?;
    (secs.is_finite() && (0.0..86_400.0).contains(&secs)).then(|| Duration::from_secs_f64(secs))
}

/// Make an upstream error message safe to show a caller: at most 300 bytes, control characters
/// removed, anything that looks like a credential (`sk-...`, `key=...`, bearer tokens, long
/// opaque tokens) or a URL replaced by `[redacted]`.
pub fn sanitize_message(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len().min(320));
    for word in raw.split_inclusive(char::is_whitespace) {
        let trimmed = word.trim_end();
        let tail = &word[trimmed.len()..];
        if looks_secret_or_url(trimmed) {
            out.push_str("[redacted]");
        } else {
            out.extend(trimmed.chars().filter(|c| !c.is_control()));
        }
        if !tail.is_empty() {
            out.push(' ');
        }
        if out.len() > 300 {
            break;
        }
    }
    truncate_utf8(&mut out, 300);
    out.trim().to_owned()
}

fn looks_secret_or_url(word: &str) -> bool {
    let w =
        word.trim_matches(|c: char| matches!(c, '"' | '\'' | ',' | '.' | '(' | ')' | ':' | ';'));
    let lower = w.to_ascii_lowercase();
    if lower.contains("://") || lower.starts_with("www.") {
        return true;
    }
    for p in [
        "sk-", "sk_", "kr-", "key=", "api_key", "apikey", "bearer", "aiza", "token=",
    ] {
        if lower.starts_with(p)
            || lower.contains(&format!("?{p}"))
            || lower.contains(&format!("&{p}"))
        {
            return true;
        }
    }
    // Long opaque tokens (mixed letters and digits, 24+ chars) are treated as secrets.
    w.len() >= 24
        && w.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
        && w.chars().any(|c| c.is_ascii_digit())
        && w.chars().any(|c| c.is_ascii_alphabetic())
}

/// Truncate to at most `max` bytes on a char boundary.
pub fn truncate_utf8(s: &mut String, max: usize) {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitize_removes_keys_and_urls() {
        let msg = sanitize_message(
            "Incorrect API key provided: sk-proj-abc123def456. See https://platform.openai.com/account?key=zz for help\n",
        );
        assert!(!msg.contains("sk-proj"), "{msg}");
        assert!(!msg.contains("https"), "{msg}");
        assert!(msg.starts_with("Incorrect API key provided:"), "{msg}");
        let msg = sanitize_message("token AIzaSyD-1234567890abcdefghijkl is invalid");
        assert!(!msg.contains("AIza"), "{msg}");
        let long = "x ".repeat(400);
        assert!(sanitize_message(&long).len() <= 300);
    }

    #[test]
    fn retry_after_parses_seconds_only() {
        let mut h = HeaderMap::new();
        h.insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static("2"),
        );
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn classification_by_status() {
        assert_eq!(
            UpstreamErrorKind::from_status(529),
            UpstreamErrorKind::Overloaded
        );
        assert!(UpstreamErrorKind::from_status(503).retryable());
        assert!(!UpstreamErrorKind::from_status(400).retryable());
    }
}

//! What the mock does for one request: [`Behavior`], its parts, and the `[[mock {...}]]` directive.

use serde::{Deserialize, Serialize};

/// How the mock answers one request. Every field is optional in JSON; a missing field takes the
/// value of [`Behavior::default`] (not of the server's configured defaults: a scripted or
/// directive behaviour replaces the defaults as a whole).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Behavior {
    /// HTTP status. Non-2xx answers carry the provider-shaped error body.
    pub status: u16,
    /// OpenAI `code` (and a matching `type`), Anthropic `error.type`, or Gemini `status`.
    /// Defaults depend on the status.
    pub error_type: Option<String>,
    /// Error message; a per-status default otherwise.
    pub error_message: Option<String>,
    /// Value of a `Retry-After` response header (sent with any status).
    pub retry_after: Option<String>,
    /// Delay before the response headers. Non-stream answers also wait `ttft_ms` and
    /// `(chunks - 1) * itl_ms` before their headers (the time the generation would take).
    pub headers_delay_ms: u64,
    /// Streams: delay between the headers (and the preamble events) and the first content event.
    pub ttft_ms: u64,
    /// Streams: delay between two content events.
    pub itl_ms: u64,
    /// Number of content deltas the reply (text or tool arguments) is split into, on char
    /// boundaries. Fewer when the reply has fewer chars; at least 1.
    pub chunks: usize,
    /// Reply text. Unset: derived from the prompt (see the crate docs).
    pub text: Option<String>,
    /// Whether the response reports usage. The ledger bills the same in every mode.
    pub usage: UsageMode,
    /// Override the billed and reported prompt tokens (total input, cached included).
    pub prompt_tokens: Option<u32>,
    /// Override the billed and reported completion tokens (whole reply, all choices).
    pub completion_tokens: Option<u32>,
    /// Cached input tokens (part of `prompt_tokens`). Default 0.
    pub cached_tokens: Option<u32>,
    /// A fault injected into a stream after some content events.
    pub stream_fault: Option<StreamFault>,
    /// Non-stream: answer 200 with a truncated JSON body (`{"choices":[` for OpenAI).
    /// Stream without `stream_fault`: acts as `malformed_after: 0`.
    pub malformed_body: bool,
    /// Answer with a tool call. The text is then only sent if `text` is set explicitly.
    pub tool_call: Option<ToolCallSpec>,
    /// Write each SSE event in 1-3 byte body frames (multi-byte chars get split); when `text`
    /// is unset the reply uses "é" and "😀".
    pub split_utf8: bool,
    /// Answer `302 Found` with this `Location`.
    pub redirect_to: Option<String>,
    /// Force the finish reason. OpenAI vocabulary (`stop`, `length`, `tool_calls`,
    /// `content_filter`) is mapped to the other APIs (`max_tokens`/`MAX_TOKENS`, ...); other
    /// values are passed through (upper-cased for Gemini).
    pub finish_reason: Option<String>,
    /// Non-2xx answers are normally billed 0 tokens; with this set the ledger bills the full
    /// usage anyway (a provider that charged and then failed: test-matrix A4).
    pub bill_on_error: bool,
    /// Read the whole request, then drop the connection without answering (after
    /// `headers_delay_ms`): the provider got the request and may have billed it
    /// (`bill_on_error`), the caller got nothing (test-matrix U4). Billed with status 0.
    pub reset: bool,
}

impl Default for Behavior {
    fn default() -> Self {
        Self {
            status: 200,
            error_type: None,
            error_message: None,
            retry_after: None,
            headers_delay_ms: 0,
            ttft_ms: 0,
            itl_ms: 0,
            chunks: 4,
            text: None,
            usage: UsageMode::Present,
            prompt_tokens: None,
            completion_tokens: None,
            cached_tokens: None,
            stream_fault: None,
            malformed_body: false,
            tool_call: None,
            split_utf8: false,
            redirect_to: None,
            finish_reason: None,
            bill_on_error: false,
            reset: false,
        }
    }
}

impl Behavior {
    /// A plain successful answer with this status (convenience for scripts).
    pub fn status(status: u16) -> Self {
        Self {
            status,
            ..Self::default()
        }
    }

    /// A successful answer with this text.
    pub fn text(text: impl Into<String>) -> Self {
        Self {
            text: Some(text.into()),
            ..Self::default()
        }
    }

    /// The latency defaults used by demo mode: headers after 80 ms, first token 120 ms later,
    /// 15 ms between tokens, 16 content chunks.
    pub fn demo_latency() -> Self {
        Self {
            headers_delay_ms: 80,
            ttft_ms: 120,
            itl_ms: 15,
            chunks: 16,
            ..Self::default()
        }
    }

    pub(crate) fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Usage reporting mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UsageMode {
    /// The usage object is present with the billed numbers.
    #[default]
    Present,
    /// No usage object at all (OpenAI: no usage chunk even when requested; Anthropic: no
    /// `usage` in the message, `message_start` or `message_delta`; Gemini: no `usageMetadata`).
    Absent,
    /// The usage object is present with every count 0.
    Zero,
}

/// A fault injected into a stream. `n` counts content events (text or tool-argument deltas,
/// over all choices); the fault takes effect right after the n-th one (so `n` equal to the
/// number of content events hits the finish/usage events).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum StreamFault {
    /// End the body cleanly, without `[DONE]` / `message_stop` / the final chunk.
    CutAfter(usize),
    /// Keep the connection open and send nothing, for ever.
    StallAfter(usize),
    /// Send a `data: {garbage` line, then end the body.
    MalformedAfter(usize),
    /// Send the provider's in-stream error event, then end the body.
    ErrorEventAfter(usize),
    /// Abort the connection (the chunked body is never terminated: the client sees a
    /// transport error, the closest a server gets to a reset).
    AbortAfter(usize),
}

impl StreamFault {
    pub(crate) fn after(self) -> usize {
        match self {
            Self::CutAfter(n)
            | Self::StallAfter(n)
            | Self::MalformedAfter(n)
            | Self::ErrorEventAfter(n)
            | Self::AbortAfter(n) => n,
        }
    }
}

/// A tool call to answer with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolCallSpec {
    /// Function name.
    pub name: String,
    /// Arguments as a JSON string (sent verbatim to OpenAI clients and as `input_json_delta`
    /// pieces to Anthropic clients; parsed into an object where the format needs one, and sent
    /// as a JSON string there if it does not parse).
    #[serde(default = "empty_object")]
    pub arguments: String,
}

fn empty_object() -> String {
    "{}".to_owned()
}

impl ToolCallSpec {
    /// A tool call with these arguments.
    pub fn new(name: impl Into<String>, arguments: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            arguments: arguments.into(),
        }
    }

    /// The arguments as a JSON value (an object when they parse, else the raw string).
    pub(crate) fn arguments_value(&self) -> serde_json::Value {
        serde_json::from_str(&self.arguments)
            .unwrap_or_else(|_| serde_json::Value::String(self.arguments.clone()))
    }
}

/// The marker that opens a directive.
pub const DIRECTIVE_OPEN: &str = "[[mock";

/// Finds a `[[mock {...}]]` directive in `text`.
///
/// Returns `None` when there is none, `Some(Err(reason))` when there is one that does not parse,
/// and otherwise the behaviour with the byte range the directive spans.
pub fn parse_directive(text: &str) -> Option<Result<(Behavior, std::ops::Range<usize>), String>> {
    let start = text.find(DIRECTIVE_OPEN)?;
    let after_open = start + DIRECTIVE_OPEN.len();
    let rest = &text[after_open..];
    let trimmed = rest.trim_start();
    let json_start = after_open + (rest.len() - trimmed.len());
    let mut stream = serde_json::Deserializer::from_str(trimmed).into_iter::<Behavior>();
    let behavior = match stream.next() {
        Some(Ok(b)) => b,
        Some(Err(e)) => return Some(Err(format!("invalid [[mock ...]] directive: {e}"))),
        None => return Some(Err("empty [[mock ...]] directive".to_owned())),
    };
    let json_end = json_start + stream.byte_offset();
    let tail = &text[json_end..];
    let tail_trimmed = tail.trim_start();
    if !tail_trimmed.starts_with("]]") {
        return Some(Err("[[mock ...]] directive is not closed by ]]".to_owned()));
    }
    let end = json_end + (tail.len() - tail_trimmed.len()) + 2;
    Some(Ok((behavior, start..end)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directive_is_parsed_with_its_span() {
        let text = "hello [[mock {\"status\":503,\"retry_after\":\"2\"}]] world";
        let (b, range) = parse_directive(text).unwrap().unwrap();
        assert_eq!(b.status, 503);
        assert_eq!(b.retry_after.as_deref(), Some("2"));
        assert_eq!(b.chunks, 4, "missing fields take Behavior::default");
        assert_eq!(
            &text[range],
            "[[mock {\"status\":503,\"retry_after\":\"2\"}]]"
        );
    }

    #[test]
    fn directive_with_nested_brackets_and_spaces() {
        let text = "[[mock   {\"text\":\"a ]] b\",\"stream_fault\":{\"cut_after\":2}}  ]]";
        let (b, range) = parse_directive(text).unwrap().unwrap();
        assert_eq!(b.text.as_deref(), Some("a ]] b"));
        assert_eq!(b.stream_fault, Some(StreamFault::CutAfter(2)));
        assert_eq!(range, 0..text.len());
    }

    #[test]
    fn bad_directives_are_errors_and_absent_ones_none() {
        assert!(parse_directive("no directive here").is_none());
        assert!(parse_directive("[[mock {\"status\":}]]").unwrap().is_err());
        assert!(parse_directive("[[mock {\"status\":500}").unwrap().is_err());
        assert!(
            parse_directive("[[mock {\"no_such_field\":1}]]")
                .unwrap()
                .is_err()
        );
    }

    #[test]
    fn behavior_json_defaults_and_round_trip() {
        let b: Behavior = serde_json::from_str("{}").unwrap();
        assert_eq!(b, Behavior::default());
        let b: Behavior = serde_json::from_str(
            r#"{"usage":"zero","tool_call":{"name":"f"},"stream_fault":{"stall_after":1}}"#,
        )
        .unwrap();
        assert_eq!(b.usage, UsageMode::Zero);
        assert_eq!(b.tool_call.as_ref().unwrap().arguments, "{}");
        let back: Behavior = serde_json::from_value(serde_json::to_value(&b).unwrap()).unwrap();
        assert_eq!(back, b);
    }
}

//! Anthropic Messages API wire types (`POST /v1/messages`, request, response and stream events).
//!
//! Modelled on the official SDK (`anthropic` 2.11, `anthropic/types/`), with one rule on top:
//! **fidelity**. Every object a client sends keeps the fields this module does not model
//! (`cache_control`, `citations`, `title`, `context`, `allowed_domains`, `container`, ...) in a
//! `#[serde(flatten)] extra` map, and content blocks, image sources, tool choices and stream
//! events of a type this module does not know are kept verbatim as `Unknown(Value)`. Parsing a
//! request and serialising it again therefore yields the same JSON (same keys and values; key
//! order may differ), which is what the native Anthropic passthrough relies on: a new API feature
//! must not turn into a gateway 400 or be silently stripped.
//!
//! Two known, harmless differences remain after a round trip: an explicit `null` for a field this
//! module models as `Option` is omitted (Anthropic treats both alike), and a float field given as
//! an integer (`"temperature": 1`) is written back as `1.0`.

use std::fmt;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Map, Value};

/// Trait impls for an "open" internally tagged enum, one whose derived impls are generated with
/// `#[serde(remote = "Self")]` as inherent functions: objects whose `type` is one of `$known`
/// are parsed strictly by the derived code (a malformed `text` block is an error, not an
/// unknown block), any other string `type` is kept verbatim in the `$fallback` variant (which
/// the derive skips, and which serialises as the value itself), and a value without a string
/// `type` is an error.
macro_rules! open_enum {
    ($ty:ident, $fallback:ident, $what:literal, [$($known:literal),* $(,)?]) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                match self {
                    $ty::$fallback(v) => v.serialize(s),
                    known => $ty::serialize(known, s),
                }
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let v = Value::deserialize(d)?;
                let known = match v.get("type") {
                    Some(Value::String(t)) => [$($known),*].contains(&t.as_str()),
                    _ => {
                        return Err(de::Error::custom(concat!(
                            $what,
                            " must be an object with a string `type`"
                        )));
                    }
                };
                if known {
                    $ty::deserialize(v).map_err(de::Error::custom)
                } else {
                    Ok($ty::$fallback(v))
                }
            }
        }
    };
}

// ---------------------------------------------------------------------------------------------
// Request
// ---------------------------------------------------------------------------------------------

/// `POST /v1/messages` request body.
///
/// `model` must stay the FIRST field: serialisation order is declaration order, and the native
/// passthrough relies on the body starting with `{"model":` (see
/// `kairos_providers::anthropic::AnthropicAdapter::native_request`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct MessagesRequest {
    pub model: String,
    pub messages: Vec<MessageParam>,
    /// Required by the API: a request without it is a deserialisation error.
    pub max_tokens: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<Content>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Metadata>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_sequences: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Tool>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thinking: Option<ThinkingConfig>,
    /// `auto` | `standard_only`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_tier: Option<String>,
    /// `{effort?, format?: {type: "json_schema", schema}}`, kept as JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_config: Option<Value>,
    /// Every other top-level field (`cache_control`, `container`, `inference_geo`, ...).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl MessagesRequest {
    pub fn is_stream(&self) -> bool {
        self.stream.unwrap_or(false)
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct Metadata {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Conversation roles. `system` is accepted inside `messages` by current API versions.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Assistant,
    System,
}

/// One input message (the SDK's `MessageParam`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct MessageParam {
    pub role: Role,
    pub content: Content,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A string or an array of content blocks (message content, `system`, `tool_result.content`).
#[derive(Debug, Clone, PartialEq)]
pub enum Content {
    Text(String),
    Blocks(Vec<ContentBlock>),
}

impl Content {
    /// The content as blocks (a string is shorthand for one text block).
    pub fn blocks(&self) -> std::borrow::Cow<'_, [ContentBlock]> {
        match self {
            Content::Text(t) => std::borrow::Cow::Owned(vec![ContentBlock::text(t.clone())]),
            Content::Blocks(b) => std::borrow::Cow::Borrowed(b),
        }
    }
}

impl Serialize for Content {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Content::Text(t) => s.serialize_str(t),
            Content::Blocks(b) => b.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Content {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Content;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or an array of content blocks")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Content::Text(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Content::Text(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut blocks = Vec::with_capacity(seq.size_hint().unwrap_or(1).min(64));
                while let Some(b) = seq.next_element()? {
                    blocks.push(b);
                }
                Ok(Content::Blocks(blocks))
            }
        }
        d.deserialize_any(V)
    }
}

/// A content block, in requests and responses. Block types this module does not model
/// (`server_tool_use`, `web_search_tool_result`, `search_result`, `container_upload`, ...) are
/// kept verbatim in [`ContentBlock::Unknown`].
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(remote = "Self", tag = "type", rename_all = "snake_case")]
pub enum ContentBlock {
    Text(TextBlock),
    Image(ImageBlock),
    Document(DocumentBlock),
    ToolUse(ToolUseBlock),
    ToolResult(ToolResultBlock),
    Thinking(ThinkingBlock),
    RedactedThinking(RedactedThinkingBlock),
    /// Any other block, verbatim (including its `type`).
    #[serde(skip)]
    Unknown(Value),
}

open_enum!(
    ContentBlock,
    Unknown,
    "a content block",
    [
        "text",
        "image",
        "document",
        "tool_use",
        "tool_result",
        "thinking",
        "redacted_thinking"
    ]
);

impl ContentBlock {
    pub fn text(text: impl Into<String>) -> Self {
        ContentBlock::Text(TextBlock {
            text: text.into(),
            extra: Map::new(),
        })
    }

    /// The block's `type` string.
    pub fn type_name(&self) -> &str {
        match self {
            ContentBlock::Text(_) => "text",
            ContentBlock::Image(_) => "image",
            ContentBlock::Document(_) => "document",
            ContentBlock::ToolUse(_) => "tool_use",
            ContentBlock::ToolResult(_) => "tool_result",
            ContentBlock::Thinking(_) => "thinking",
            ContentBlock::RedactedThinking(_) => "redacted_thinking",
            ContentBlock::Unknown(v) => v.get("type").and_then(Value::as_str).unwrap_or("unknown"),
        }
    }
}

/// `{"type":"text","text":..}`; `cache_control` and `citations` live in `extra`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct TextBlock {
    pub text: String,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct ImageBlock {
    pub source: ImageSource,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Image source: base64 data or a URL (`file` sources and anything newer are kept verbatim).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(remote = "Self", tag = "type", rename_all = "snake_case")]
pub enum ImageSource {
    Base64 {
        media_type: String,
        data: String,
        #[serde(flatten)]
        extra: Map<String, Value>,
    },
    Url {
        url: String,
        #[serde(flatten)]
        extra: Map<String, Value>,
    },
    #[serde(skip)]
    Other(Value),
}

open_enum!(ImageSource, Other, "an image source", ["base64", "url"]);

/// `{"type":"document","source":..}`; the source (base64 PDF, plain text, content, URL, file)
/// is kept as JSON; `title`, `context`, `citations`, `cache_control` live in `extra`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct DocumentBlock {
    pub source: Value,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct ToolUseBlock {
    pub id: String,
    pub name: String,
    /// A JSON object (the tool's arguments).
    #[serde(default = "empty_object")]
    pub input: Value,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn empty_object() -> Value {
    Value::Object(Map::new())
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct ToolResultBlock {
    pub tool_use_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Content>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_error: Option<bool>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct ThinkingBlock {
    pub thinking: String,
    /// Required when a thinking block is sent back to the API; opaque.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct RedactedThinkingBlock {
    pub data: String,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A tool definition. Client ("custom") tools have `name`, `description`, `input_schema`;
/// server tools (`web_search_20250305`, `bash_20250124`, `code_execution_*`, ...) have a `type`
/// and no `input_schema`. Everything else (`cache_control`, `strict`, `max_uses`, ...) lives in
/// `extra`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct Tool {
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_schema: Option<Value>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Tool {
    /// A client tool (function calling), as opposed to an Anthropic-executed server tool.
    pub fn is_custom(&self) -> bool {
        matches!(self.kind.as_deref(), None | Some("custom"))
    }
}

/// `tool_choice`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(remote = "Self", tag = "type", rename_all = "snake_case")]
pub enum ToolChoice {
    Auto {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        disable_parallel_tool_use: Option<bool>,
        #[serde(flatten)]
        extra: Map<String, Value>,
    },
    Any {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        disable_parallel_tool_use: Option<bool>,
        #[serde(flatten)]
        extra: Map<String, Value>,
    },
    Tool {
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        disable_parallel_tool_use: Option<bool>,
        #[serde(flatten)]
        extra: Map<String, Value>,
    },
    None {
        #[serde(flatten)]
        extra: Map<String, Value>,
    },
    #[serde(skip)]
    Other(Value),
}

open_enum!(
    ToolChoice,
    Other,
    "tool_choice",
    ["auto", "any", "tool", "none"]
);

impl ToolChoice {
    pub fn disable_parallel_tool_use(&self) -> Option<bool> {
        match self {
            ToolChoice::Auto {
                disable_parallel_tool_use,
                ..
            }
            | ToolChoice::Any {
                disable_parallel_tool_use,
                ..
            }
            | ToolChoice::Tool {
                disable_parallel_tool_use,
                ..
            } => *disable_parallel_tool_use,
            ToolChoice::None { .. } | ToolChoice::Other(_) => None,
        }
    }
}

/// `thinking`: `{type: "enabled", budget_tokens}`, `{type: "disabled"}`, `{type: "adaptive"}`, ...
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct ThinkingConfig {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_tokens: Option<u32>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

// ---------------------------------------------------------------------------------------------
// Response
// ---------------------------------------------------------------------------------------------

/// A response `Message` (also the `message` of `message_start`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct Message {
    pub id: String,
    /// Always `"message"`.
    #[serde(rename = "type", default = "message_type")]
    pub kind: String,
    #[serde(default = "assistant_role")]
    pub role: Role,
    pub model: String,
    #[serde(default)]
    pub content: Vec<ContentBlock>,
    /// Serialised as `null` while unknown (`message_start`), as the API does.
    #[serde(default)]
    pub stop_reason: Option<StopReason>,
    #[serde(default)]
    pub stop_sequence: Option<String>,
    /// Absent when the upstream reported no usage (kept distinct from an explicit zero).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn message_type() -> String {
    "message".to_owned()
}

fn assistant_role() -> Role {
    Role::Assistant
}

/// Why generation stopped. Unknown values are kept verbatim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    EndTurn,
    MaxTokens,
    StopSequence,
    ToolUse,
    PauseTurn,
    Refusal,
    ModelContextWindowExceeded,
    Other(String),
}

impl StopReason {
    pub fn as_str(&self) -> &str {
        match self {
            StopReason::EndTurn => "end_turn",
            StopReason::MaxTokens => "max_tokens",
            StopReason::StopSequence => "stop_sequence",
            StopReason::ToolUse => "tool_use",
            StopReason::PauseTurn => "pause_turn",
            StopReason::Refusal => "refusal",
            StopReason::ModelContextWindowExceeded => "model_context_window_exceeded",
            StopReason::Other(s) => s,
        }
    }

    pub fn parse(s: &str) -> StopReason {
        match s {
            "end_turn" => StopReason::EndTurn,
            "max_tokens" => StopReason::MaxTokens,
            "stop_sequence" => StopReason::StopSequence,
            "tool_use" => StopReason::ToolUse,
            "pause_turn" => StopReason::PauseTurn,
            "refusal" => StopReason::Refusal,
            "model_context_window_exceeded" => StopReason::ModelContextWindowExceeded,
            other => StopReason::Other(other.to_owned()),
        }
    }
}

impl Serialize for StopReason {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for StopReason {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<str>::deserialize(d)?;
        Ok(StopReason::parse(&s))
    }
}

/// Usage of a response. Total input = `input_tokens + cache_creation_input_tokens +
/// cache_read_input_tokens` (Anthropic's `input_tokens` EXCLUDES cached tokens).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct Usage {
    #[serde(default)]
    pub input_tokens: u64,
    #[serde(default)]
    pub output_tokens: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_creation_input_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_read_input_tokens: Option<u64>,
    /// `cache_creation`, `server_tool_use`, `service_tier`, `output_tokens_details`, ...
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

// ---------------------------------------------------------------------------------------------
// Streaming
// ---------------------------------------------------------------------------------------------

/// One streamed event (the JSON `data` of a named SSE event). Unknown event types are kept
/// verbatim in [`StreamEvent::Unknown`] so new event types never break a stream.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(remote = "Self", tag = "type", rename_all = "snake_case")]
pub enum StreamEvent {
    MessageStart {
        message: Message,
    },
    ContentBlockStart {
        index: u32,
        content_block: ContentBlock,
    },
    ContentBlockDelta {
        index: u32,
        delta: BlockDelta,
    },
    ContentBlockStop {
        index: u32,
    },
    MessageDelta {
        delta: MessageDelta,
        /// Absent when the upstream reported no usage.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        usage: Option<DeltaUsage>,
    },
    MessageStop,
    Ping,
    Error {
        error: ErrorDetail,
    },
    #[serde(skip)]
    Unknown(Value),
}

open_enum!(
    StreamEvent,
    Unknown,
    "a stream event",
    [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
        "ping",
        "error"
    ]
);

impl StreamEvent {
    /// The SSE event name (equal to the `type`).
    pub fn name(&self) -> &str {
        match self {
            StreamEvent::MessageStart { .. } => "message_start",
            StreamEvent::ContentBlockStart { .. } => "content_block_start",
            StreamEvent::ContentBlockDelta { .. } => "content_block_delta",
            StreamEvent::ContentBlockStop { .. } => "content_block_stop",
            StreamEvent::MessageDelta { .. } => "message_delta",
            StreamEvent::MessageStop => "message_stop",
            StreamEvent::Ping => "ping",
            StreamEvent::Error { .. } => "error",
            StreamEvent::Unknown(v) => v.get("type").and_then(Value::as_str).unwrap_or("unknown"),
        }
    }
}

/// `content_block_delta.delta`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(remote = "Self", tag = "type", rename_all = "snake_case")]
pub enum BlockDelta {
    TextDelta {
        text: String,
    },
    InputJsonDelta {
        partial_json: String,
    },
    ThinkingDelta {
        thinking: String,
    },
    SignatureDelta {
        signature: String,
    },
    CitationsDelta {
        citation: Value,
    },
    #[serde(skip)]
    Unknown(Value),
}

open_enum!(
    BlockDelta,
    Unknown,
    "a content block delta",
    [
        "text_delta",
        "input_json_delta",
        "thinking_delta",
        "signature_delta",
        "citations_delta"
    ]
);

/// `message_delta.delta`. Both fields are always serialised (`null` when unset), as the API does.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct MessageDelta {
    #[serde(default)]
    pub stop_reason: Option<StopReason>,
    #[serde(default)]
    pub stop_sequence: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `message_delta.usage`: cumulative counts. `input_tokens` and the cache counts are optional
/// (absent = keep the `message_start` value, which is how the SDK accumulates them).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct DeltaUsage {
    #[serde(default)]
    pub output_tokens: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_creation_input_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_read_input_tokens: Option<u64>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `error.error` of an `error` event or an error body.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct ErrorDetail {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub message: String,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A request using most of the surface: cache_control everywhere, thinking, server tools,
    /// documents, images, citations, tool results with blocks, unknown block types and unknown
    /// top-level fields.
    fn rich_request() -> Value {
        json!({
            "model": "claude-sonnet-4-5",
            "max_tokens": 2048,
            "system": [
                {"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral", "ttl": "1h"}}
            ],
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "Look", "cache_control": {"type": "ephemeral"}},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
                    {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}},
                    {"type": "image", "source": {"type": "file", "file_id": "file_123"}},
                    {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="},
                     "title": "Doc", "context": "ctx", "citations": {"enabled": true}},
                    {"type": "search_result", "source": "https://x", "title": "t", "content": [{"type": "text", "text": "r"}]}
                ]},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "hmm", "signature": "EqQBCkgIARABGAIiQL"},
                    {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va"},
                    {"type": "text", "text": "calling", "citations": [{"type": "char_location", "cited_text": "x", "document_index": 0, "start_char_index": 0, "end_char_index": 1}]},
                    {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {"query": "q"}},
                    {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": [{"type": "web_search_result", "url": "https://e", "title": "E", "encrypted_content": "abc", "page_age": null}]},
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris", "days": 3}, "cache_control": {"type": "ephemeral"}}
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "is_error": false,
                     "content": [{"type": "text", "text": "sunny"}, {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/"}}],
                     "cache_control": {"type": "ephemeral"}},
                    {"type": "text", "text": "and?"}
                ]}
            ],
            "tools": [
                {"name": "get_weather", "description": "Weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
                 "cache_control": {"type": "ephemeral"}, "strict": true, "input_examples": [{"city": "Oslo"}]},
                {"type": "web_search_20250305", "name": "web_search", "max_uses": 5, "allowed_domains": ["example.com"], "user_location": {"type": "approximate", "city": "Paris"}},
                {"type": "bash_20250124", "name": "bash"}
            ],
            "tool_choice": {"type": "auto", "disable_parallel_tool_use": true},
            "thinking": {"type": "enabled", "budget_tokens": 1024, "display": "summarized"},
            "metadata": {"user_id": "u-1"},
            "stop_sequences": ["\n\nHuman:"],
            "stream": true,
            "temperature": 0.5,
            "top_p": 0.9,
            "top_k": 40,
            "service_tier": "auto",
            "output_config": {"effort": "high"},
            "cache_control": {"type": "ephemeral"},
            "container": "container_1",
            "inference_geo": "us",
            "context_management": {"edits": [{"type": "clear_tool_uses_20250919"}]}
        })
    }

    #[test]
    fn request_round_trip_is_lossless() {
        let v = rich_request();
        let req: MessagesRequest = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(serde_json::to_value(&req).unwrap(), v);
        // The typed view is populated where it matters.
        assert_eq!(req.max_tokens, 2048);
        assert_eq!(req.tools.as_ref().unwrap().len(), 3);
        assert!(req.tools.as_ref().unwrap()[0].is_custom());
        assert!(!req.tools.as_ref().unwrap()[1].is_custom());
        assert_eq!(
            req.tool_choice
                .as_ref()
                .unwrap()
                .disable_parallel_tool_use(),
            Some(true)
        );
        assert_eq!(req.thinking.as_ref().unwrap().budget_tokens, Some(1024));
        let Content::Blocks(blocks) = &req.messages[0].content else {
            panic!()
        };
        assert!(matches!(
            blocks[1],
            ContentBlock::Image(ImageBlock {
                source: ImageSource::Base64 { .. },
                ..
            })
        ));
        assert!(matches!(
            blocks[2],
            ContentBlock::Image(ImageBlock {
                source: ImageSource::Url { .. },
                ..
            })
        ));
        assert!(matches!(
            blocks[3],
            ContentBlock::Image(ImageBlock {
                source: ImageSource::Other(_),
                ..
            })
        ));
        assert!(matches!(blocks[5], ContentBlock::Unknown(_)));
        assert_eq!(blocks[5].type_name(), "search_result");
        let Content::Blocks(blocks) = &req.messages[1].content else {
            panic!()
        };
        assert_eq!(
            blocks
                .iter()
                .map(ContentBlock::type_name)
                .collect::<Vec<_>>(),
            [
                "thinking",
                "redacted_thinking",
                "text",
                "server_tool_use",
                "web_search_tool_result",
                "tool_use"
            ]
        );
        assert!(req.extra.contains_key("context_management"));
    }

    #[test]
    fn string_forms_and_minimal_request() {
        let v = json!({
            "model": "m", "max_tokens": 5, "system": "be nice",
            "messages": [{"role": "user", "content": "hi"},
                         {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "42"}]}],
            "tool_choice": {"type": "tool", "name": "f"}
        });
        let req: MessagesRequest = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(req.system, Some(Content::Text("be nice".into())));
        assert_eq!(serde_json::to_value(&req).unwrap(), v);
        for tc in [
            json!({"type": "any"}),
            json!({"type": "none"}),
            json!({"type": "auto"}),
            json!({"type": "future_mode", "x": 1}),
        ] {
            let parsed: ToolChoice = serde_json::from_value(tc.clone()).unwrap();
            assert_eq!(serde_json::to_value(&parsed).unwrap(), tc);
        }
    }

    #[test]
    fn max_tokens_is_required_and_types_are_checked() {
        let err = serde_json::from_value::<MessagesRequest>(json!({
            "model": "m", "messages": [{"role": "user", "content": "hi"}]
        }))
        .unwrap_err();
        assert!(err.to_string().contains("max_tokens"), "{err}");
        let err = serde_json::from_value::<MessagesRequest>(json!({
            "model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": 5}]
        }))
        .unwrap_err();
        assert!(err.to_string().contains("string or an array"), "{err}");
        let err = serde_json::from_value::<MessagesRequest>(json!({
            "model": "m", "max_tokens": 1, "messages": [{"role": "robot", "content": "x"}]
        }))
        .unwrap_err();
        assert!(err.to_string().contains("unknown variant"), "{err}");
    }

    #[test]
    fn response_and_usage() {
        let v = json!({
            "id": "msg_01", "type": "message", "role": "assistant", "model": "claude-x",
            "content": [
                {"type": "thinking", "thinking": "t", "signature": "sig"},
                {"type": "text", "text": "Hi", "citations": null},
                {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": [1, 2]}}
            ],
            "stop_reason": "tool_use", "stop_sequence": null,
            "usage": {"input_tokens": 10, "output_tokens": 5, "cache_creation_input_tokens": 2,
                      "cache_read_input_tokens": 3, "service_tier": "standard",
                      "cache_creation": {"ephemeral_5m_input_tokens": 2, "ephemeral_1h_input_tokens": 0}}
        });
        let m: Message = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(m.stop_reason, Some(StopReason::ToolUse));
        assert_eq!(m.usage.as_ref().unwrap().cache_read_input_tokens, Some(3));
        assert_eq!(serde_json::to_value(&m).unwrap(), v);
        let m: Message = serde_json::from_value(json!({
            "id": "x", "type": "message", "role": "assistant", "model": "m", "content": [],
            "stop_reason": "some_new_reason", "usage": {"input_tokens": 1, "output_tokens": 1}
        }))
        .unwrap();
        assert_eq!(
            m.stop_reason,
            Some(StopReason::Other("some_new_reason".into()))
        );
    }

    #[test]
    fn stream_events_parse() {
        let cases = [
            (
                json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant", "model": "m", "content": [], "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 5, "output_tokens": 1}}}),
                "message_start",
            ),
            (
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
                "content_block_start",
            ),
            (
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}}),
                "content_block_delta",
            ),
            (
                json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"a\""}}),
                "content_block_delta",
            ),
            (
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "x"}}),
                "content_block_delta",
            ),
            (
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "s"}}),
                "content_block_delta",
            ),
            (
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "citations_delta", "citation": {"type": "char_location"}}}),
                "content_block_delta",
            ),
            (
                json!({"type": "content_block_stop", "index": 0}),
                "content_block_stop",
            ),
            (
                json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": 15}}),
                "message_delta",
            ),
            (json!({"type": "message_stop"}), "message_stop"),
            (json!({"type": "ping"}), "ping"),
            (
                json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
                "error",
            ),
            (
                json!({"type": "brand_new_event", "x": 1}),
                "brand_new_event",
            ),
        ];
        for (v, name) in cases {
            let ev: StreamEvent = serde_json::from_value(v.clone()).unwrap();
            assert_eq!(ev.name(), name);
            assert_eq!(serde_json::to_value(&ev).unwrap(), v, "{name}");
        }
        let ev: StreamEvent = serde_json::from_value(json!({"type": "content_block_delta", "index": 0, "delta": {"type": "new_delta", "v": 1}})).unwrap();
        assert!(matches!(
            ev,
            StreamEvent::ContentBlockDelta {
                delta: BlockDelta::Unknown(_),
                ..
            }
        ));
        let ev: StreamEvent = serde_json::from_value(json!({"type": "message_delta", "delta": {"stop_reason": "max_tokens", "stop_sequence": null}, "usage": {"output_tokens": 3, "input_tokens": 9, "cache_read_input_tokens": 4}})).unwrap();
        let StreamEvent::MessageDelta { delta, usage } = ev else {
            panic!()
        };
        assert_eq!(delta.stop_reason, Some(StopReason::MaxTokens));
        let usage = usage.unwrap();
        assert_eq!(
            (
                usage.input_tokens,
                usage.cache_read_input_tokens,
                usage.cache_creation_input_tokens
            ),
            (Some(9), Some(4), None)
        );
    }

    #[test]
    fn known_block_types_are_parsed_strictly() {
        let err = serde_json::from_value::<ContentBlock>(json!({"type": "text"})).unwrap_err();
        assert!(err.to_string().contains("missing field `text`"), "{err}");
        let err = serde_json::from_value::<ContentBlock>(
            json!({"type": "tool_use", "id": 1, "name": "f"}),
        )
        .unwrap_err();
        assert!(err.to_string().contains("invalid type"), "{err}");
        let err = serde_json::from_value::<ContentBlock>(json!({"text": "x"})).unwrap_err();
        assert!(err.to_string().contains("string `type`"), "{err}");
        assert!(serde_json::from_value::<ContentBlock>(json!(5)).is_err());
        let err = serde_json::from_value::<ToolChoice>(json!({"type": "tool"})).unwrap_err();
        assert!(err.to_string().contains("name"), "{err}");
        let ok = serde_json::from_value::<ContentBlock>(
            json!({"type": "container_upload", "file_id": "f"}),
        )
        .unwrap();
        assert!(matches!(ok, ContentBlock::Unknown(_)));
    }
}

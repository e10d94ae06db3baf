//! Anthropic Messages API, in both directions.
//!
//! * [`AnthropicAdapter`] implements [`Adapter`]: canonical (OpenAI-shaped) requests go to
//!   `POST {base}/v1/messages`, answers and streams come back as canonical responses and chunks.
//! * [`messages_to_chat`], [`chat_to_messages`] and [`AnthropicStreamEncoder`] serve
//!   Anthropic-shaped CLIENTS (`/v1/messages` on the gateway) in front of any upstream.
//! * [`AnthropicAdapter::native_request`], [`native_response_usage`] and [`NativeStreamObserver`]
//!   serve the Anthropic client -> Anthropic upstream passthrough, where the gateway forwards the
//!   client's request (model replaced) and the upstream's bytes untouched and only reads usage.
//!
//! # Canonical -> Anthropic (what is translated, what is dropped)
//!
//! | canonical | Anthropic |
//! |---|---|
//! | `system` / `developer` messages (anywhere) | top-level `system` (one text block each, in order) |
//! | user `text` / `image_url` parts | `text` / `image` blocks (`data:` URL -> base64 source, http(s) URL -> url source) |
//! | user `file` part with a PDF `file_data` data URL | `document` block (base64 PDF) |
//! | assistant `tool_calls` | `tool_use` blocks (`arguments` must be a JSON object) |
//! | `tool` messages | `tool_result` blocks in a user turn (consecutive ones merged) |
//! | consecutive same-role turns | merged into one turn |
//! | `max_completion_tokens` / `max_tokens` | `max_tokens` (else the target's `default_max_tokens`; required by Anthropic) |
//! | `stop` | `stop_sequences` |
//! | `temperature` | `temperature` **clamped to [0, 1]** (OpenAI allows 0..2, Anthropic 0..1; values are clamped, not rescaled) |
//! | `top_p`, `top_k` (an unknown field in the canonical request) | `top_p`, `top_k` |
//! | `user` (or `safety_identifier`) | `metadata.user_id` |
//! | `tools` (function) | `tools` {name, description, input_schema (default `{"type":"object"}`)} |
//! | `tool_choice` auto / required / none / function | `auto` / `any` / `none` / `tool` |
//! | `parallel_tool_calls: false` | `tool_choice.disable_parallel_tool_use: true` |
//! | `response_format` json_object / json_schema | an extra system instruction asking for a single JSON object (with the schema, when given); Anthropic has no JSON mode |
//! | `reasoning_effort` low / medium / high (xhigh) | `thinking: {type: enabled, budget_tokens: 1024 / 4096 / 16384 (32768)}`; `minimal`/`none` = no thinking. `max_tokens` is raised to `budget + max_tokens` when it would not exceed the budget; `temperature`, `top_p` and `top_k` are dropped (Anthropic rejects them with thinking). No thinking when `tool_choice` forces a tool, nor when the last assistant turn holds tool calls (Anthropic then requires a signed thinking block first) |
//!
//! Rejected with a [`TranslateError`] (the caller gets a 400 naming the field): `n > 1`, audio
//! input, files that are not PDF data URLs, image types Anthropic does not take, custom tools,
//! `function`-role messages, tool-call arguments that are not a JSON object, unknown
//! `tool_choice` objects and unknown `reasoning_effort` values.
//!
//! Dropped silently (no Anthropic equivalent): `seed`, `frequency_penalty`, `presence_penalty`,
//! `logit_bias`, `logprobs`, `top_logprobs`, `metadata`, `service_tier`, `store`, `modalities`,
//! `prediction`, `audio`, `web_search_options`, `verbosity`, `prompt_cache_key`, tool `strict`,
//! other unknown fields, and assistant `reasoning_content` (Anthropic only accepts thinking
//! blocks it signed itself). Empty text parts are omitted (Anthropic rejects empty text blocks),
//! and a turn left without content is dropped. When the history holds tool calls but the request
//! defines no tools (legal for OpenAI, a 400 for Anthropic), each called tool is declared with an
//! open schema and `tool_choice` is set to `none`.
//!
//! # Anthropic -> canonical
//!
//! Text blocks are concatenated into `content`, `tool_use` blocks become `tool_calls`
//! (`arguments` = compact JSON of `input`), `thinking` blocks become `reasoning_content`; server
//! tool blocks (`server_tool_use`, `web_search_tool_result`, ...) and redacted thinking have no
//! canonical form and are skipped. `stop_reason` end_turn / stop_sequence / pause_turn -> `stop`,
//! max_tokens / model_context_window_exceeded -> `length`, tool_use -> `tool_calls`, refusal ->
//! `content_filter`. Usage: `prompt_tokens = input + cache_read + cache_creation` (Anthropic's
//! `input_tokens` excludes cached tokens, OpenAI's `prompt_tokens` includes them),
//! `prompt_tokens_details.cached_tokens = cache_read`, `cache_write_tokens = cache_creation`.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, header};
use kairos_api::anthropic::{
    self as wire, BlockDelta, Content, ContentBlock, DeltaUsage, ImageSource, MessageParam,
    MessagesRequest, StopReason, StreamEvent, TextBlock, ThinkingBlock, ToolUseBlock,
};
use kairos_api::openai::{
    ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, ChatMessage, Choice, ChunkChoice,
    CompletionTokensDetails, ContentPart, Delta, EmbeddingRequest, EmbeddingResponse, FinishReason,
    FunctionCall, FunctionCallDelta, FunctionDef, ImageUrl, JsonSchemaFormat, MessageContent,
    PromptTokensDetails, ResponseFormat, ResponseMessage, Role, Stop, StreamOptions, Tool,
    ToolCall, ToolCallDelta, ToolChoice, ToolKind, Usage,
};
use kairos_api::sse::{SseEvent, encode_named};
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::adapter::{
    Adapter, ApiKind, ChatStreamDecoder, DecodeError, StreamSignal, Target, TranslateError,
    UpstreamError, UpstreamErrorKind, UpstreamRequest, retry_after, sanitize_message,
};

/// The `anthropic-version` header value sent upstream.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

/// Thinking budgets used for `reasoning_effort`.
const BUDGET_LOW: u32 = 1024;
const BUDGET_MEDIUM: u32 = 4096;
const BUDGET_HIGH: u32 = 16384;
const BUDGET_XHIGH: u32 = 32768;

/// The Anthropic Messages API upstream.
#[derive(Debug, Clone, Copy, Default)]
pub struct AnthropicAdapter;

impl AnthropicAdapter {
    fn headers(&self, target: &Target<'_>) -> Result<HeaderMap, TranslateError> {
        let mut h = HeaderMap::with_capacity(4);
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(
            HeaderName::from_static("anthropic-version"),
            HeaderValue::from_static(ANTHROPIC_VERSION),
        );
        if let Some(key) = target.api_key {
            let mut v = HeaderValue::from_str(key).map_err(|_| {
                TranslateError::new(
                    format!(
                        "the key configured for provider `{}` is not a valid header value",
                        target.provider
                    ),
                    None,
                )
            })?;
            v.set_sensitive(true);
            h.insert(HeaderName::from_static("x-api-key"), v);
        }
        Ok(h)
    }

    /// Native passthrough: the client's request re-serialised with `model` replaced by
    /// `target.upstream_model` and everything else untouched (see the fidelity rule in
    /// [`kairos_api::anthropic`]). `anthropic_beta` is the client's `anthropic-beta` header, which
    /// is forwarded when given (a value with CR, LF or other control characters is rejected).
    pub fn native_request(
        &self,
        req: &MessagesRequest,
        target: &Target<'_>,
        anthropic_beta: Option<&str>,
    ) -> Result<UpstreamRequest, TranslateError> {
        let mut headers = self.headers(target)?;
        if let Some(beta) = anthropic_beta {
            let v = HeaderValue::from_str(beta).map_err(|_| {
                TranslateError::new(
                    "the anthropic-beta header contains characters that are not allowed",
                    Some("anthropic-beta"),
                )
            })?;
            headers.insert(HeaderName::from_static("anthropic-beta"), v);
        }
        Ok(UpstreamRequest {
            path_and_query: "/v1/messages".to_owned(),
            headers,
            body: Bytes::from(serialize_with_model(req, target.upstream_model)?),
        })
    }
}

/// Serialise `req` with `model` replaced, without cloning the request.
///
/// `MessagesRequest` declares `model` first, so its compact JSON starts with
/// `{"model":<json string>`; that prefix is swapped for the new model. Should the prefix ever not
/// match (a reordered struct), the slower path through `serde_json::Value` is taken.
fn serialize_with_model(req: &MessagesRequest, model: &str) -> Result<Vec<u8>, TranslateError> {
    let enc =
        |e: serde_json::Error| TranslateError::new(format!("cannot encode request: {e}"), None);
    let body = serde_json::to_vec(req).map_err(enc)?;
    let mut old_prefix = b"{\"model\":".to_vec();
    serde_json::to_writer(&mut old_prefix, &req.model).map_err(enc)?;
    if body.starts_with(&old_prefix) {
        let mut out = Vec::with_capacity(body.len() + model.len() + 2);
        out.extend_from_slice(b"{\"model\":");
        serde_json::to_writer(&mut out, model).map_err(enc)?;
        out.extend_from_slice(&body[old_prefix.len()..]);
        Ok(out)
    } else {
        let mut v = serde_json::to_value(req).map_err(enc)?;
        if let Some(o) = v.as_object_mut() {
            o.insert("model".to_owned(), Value::String(model.to_owned()));
        }
        serde_json::to_vec(&v).map_err(enc)
    }
}

impl Adapter for AnthropicAdapter {
    fn api(&self) -> ApiKind {
        ApiKind::Anthropic
    }

    fn chat_request(
        &self,
        req: &ChatCompletionRequest,
        target: &Target<'_>,
        stream: bool,
    ) -> Result<UpstreamRequest, TranslateError> {
        let out = chat_request_to_messages(req, target, stream)?;
        let body = serde_json::to_vec(&out)
            .map_err(|e| TranslateError::new(format!("cannot encode request: {e}"), None))?;
        Ok(UpstreamRequest {
            path_and_query: "/v1/messages".to_owned(),
            headers: self.headers(target)?,
            body: Bytes::from(body),
        })
    }

    fn chat_response(
        &self,
        body: &[u8],
        _target: &Target<'_>,
    ) -> Result<ChatCompletion, DecodeError> {
        let msg: wire::Message =
            serde_json::from_slice(body).map_err(|e| DecodeError::invalid("message", e))?;
        Ok(message_to_chat(&msg))
    }

    fn chat_stream_decoder(&self, target: &Target<'_>) -> Box<dyn ChatStreamDecoder> {
        Box::new(AnthropicStreamDecoder::new(target.upstream_model))
    }

    fn embeddings_request(
        &self,
        _req: &EmbeddingRequest,
        _target: &Target<'_>,
    ) -> Result<UpstreamRequest, TranslateError> {
        Err(TranslateError::new(
            "Anthropic has no embeddings API",
            Some("model"),
        ))
    }

    fn embeddings_response(
        &self,
        _body: &[u8],
        _req: &EmbeddingRequest,
        _target: &Target<'_>,
    ) -> Result<EmbeddingResponse, DecodeError> {
        Err(DecodeError::Invalid(
            "Anthropic has no embeddings API".to_owned(),
        ))
    }

    fn upstream_error(&self, status: u16, headers: &HeaderMap, body: &[u8]) -> UpstreamError {
        anthropic_error(status, headers, body)
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

// =============================================================================================
// Canonical request -> Anthropic request
// =============================================================================================

/// Translate a canonical request into an Anthropic `MessagesRequest` for `target` (see the
/// module documentation for the mapping).
pub fn chat_request_to_messages(
    req: &ChatCompletionRequest,
    target: &Target<'_>,
    stream: bool,
) -> Result<MessagesRequest, TranslateError> {
    if req.n.is_some_and(|n| n > 1) {
        return Err(TranslateError::new(
            "Anthropic models return one choice per request; `n` must be 1",
            Some("n"),
        ));
    }

    let mut system: Vec<ContentBlock> = Vec::new();
    let mut turns: Vec<MessageParam> = Vec::with_capacity(req.messages.len());
    for (i, m) in req.messages.iter().enumerate() {
        match m.role {
            Role::System | Role::Developer => {
                let text = text_only(m.content.as_ref(), &format!("messages[{i}].content"))?;
                if !text.is_empty() {
                    system.push(ContentBlock::text(text));
                }
            }
            Role::User => {
                let blocks = user_blocks(m, i)?;
                push_turn(&mut turns, wire::Role::User, blocks);
            }
            Role::Assistant => {
                let blocks = assistant_blocks(m, i)?;
                push_turn(&mut turns, wire::Role::Assistant, blocks);
            }
            Role::Tool => {
                let Some(id) = m.tool_call_id.as_deref() else {
                    return Err(TranslateError::new(
                        "tool messages need a tool_call_id",
                        Some(&format!("messages[{i}].tool_call_id")),
                    ));
                };
                let text = text_only(m.content.as_ref(), &format!("messages[{i}].content"))?;
                let block = ContentBlock::ToolResult(wire::ToolResultBlock {
                    tool_use_id: id.to_owned(),
                    content: (!text.is_empty()).then_some(Content::Text(text)),
                    is_error: None,
                    extra: Map::new(),
                });
                push_tool_result(&mut turns, block);
            }
            Role::Function => {
                return Err(TranslateError::new(
                    "the legacy `function` role is not supported for Anthropic models; use tool messages",
                    Some(&format!("messages[{i}].role")),
                ));
            }
        }
    }

    // Anthropic has no JSON mode: ask for it in the system prompt.
    match &req.response_format {
        Some(ResponseFormat::JsonObject) => system.push(ContentBlock::text(
            "Respond with a single valid JSON object and nothing else: no prose, no Markdown code fences.",
        )),
        Some(ResponseFormat::JsonSchema { json_schema }) => {
            let mut text = String::from(
                "Respond with a single valid JSON object and nothing else: no prose, no Markdown code fences.",
            );
            if let Some(schema) = &json_schema.schema {
                text.push_str(" The object must conform to this JSON Schema:\n");
                text.push_str(&schema.to_string());
            }
            system.push(ContentBlock::text(text));
        }
        Some(ResponseFormat::Text) | None => {}
    }

    let mut tools = translate_tools(req)?;
    let disable_parallel = (req.parallel_tool_calls == Some(false)).then_some(true);
    let mut tool_choice = match &req.tool_choice {
        None => disable_parallel.map(|d| wire::ToolChoice::Auto {
            disable_parallel_tool_use: Some(d),
            extra: Map::new(),
        }),
        Some(ToolChoice::Auto) => Some(wire::ToolChoice::Auto {
            disable_parallel_tool_use: disable_parallel,
            extra: Map::new(),
        }),
        Some(ToolChoice::Required) => Some(wire::ToolChoice::Any {
            disable_parallel_tool_use: disable_parallel,
            extra: Map::new(),
        }),
        Some(ToolChoice::None) => Some(wire::ToolChoice::None { extra: Map::new() }),
        Some(ToolChoice::Function { name }) => Some(wire::ToolChoice::Tool {
            name: name.clone(),
            disable_parallel_tool_use: disable_parallel,
            extra: Map::new(),
        }),
        Some(ToolChoice::Other(_)) => {
            return Err(TranslateError::new(
                "this tool_choice form is not supported for Anthropic models",
                Some("tool_choice"),
            ));
        }
    };
    if tools.is_none() {
        // Anthropic rejects a history with tool_use blocks unless tools are defined.
        let called = called_tool_names(&turns);
        if called.is_empty() {
            tool_choice = None;
        } else {
            tools = Some(
                called
                    .into_iter()
                    .map(|name| wire::Tool {
                        kind: None,
                        name,
                        description: None,
                        input_schema: Some(json!({"type": "object"})),
                        extra: Map::new(),
                    })
                    .collect(),
            );
            tool_choice = Some(wire::ToolChoice::None { extra: Map::new() });
        }
    }

    let mut max_tokens = req.output_cap().unwrap_or(target.default_max_tokens);
    let budget = match req.reasoning_effort.as_deref() {
        None | Some("none" | "minimal") => None,
        Some("low") => Some(BUDGET_LOW),
        Some("medium") => Some(BUDGET_MEDIUM),
        Some("high") => Some(BUDGET_HIGH),
        Some("xhigh" | "max") => Some(BUDGET_XHIGH),
        Some(other) => {
            return Err(TranslateError::new(
                format!(
                    "unknown reasoning_effort `{other}`, expected none, minimal, low, medium, high or xhigh"
                ),
                Some("reasoning_effort"),
            ));
        }
    };
    // Anthropic rejects thinking together with forced tool use (`any` / `tool`), and, inside a
    // tool loop, unless the last assistant turn starts with a signed thinking block, which a
    // canonical history cannot carry.
    let forced_tool = matches!(
        tool_choice,
        Some(wire::ToolChoice::Any { .. } | wire::ToolChoice::Tool { .. })
    );
    let in_tool_loop = turns
        .iter()
        .rev()
        .find(|t| t.role == wire::Role::Assistant)
        .is_some_and(|t| {
            matches!(&t.content, Content::Blocks(b) if b.iter().any(|b| matches!(b, ContentBlock::ToolUse(_))))
        });
    let thinking = budget.filter(|_| !forced_tool && !in_tool_loop).map(|b| {
        if max_tokens <= b {
            max_tokens = b.saturating_add(max_tokens);
        }
        wire::ThinkingConfig {
            kind: "enabled".to_owned(),
            budget_tokens: Some(b),
            extra: Map::new(),
        }
    });
    let thinking_on = thinking.is_some();

    let user_id = req.user.clone().or_else(|| req.safety_identifier.clone());
    let stop_sequences = req
        .stop
        .as_ref()
        .map(Stop::to_vec)
        .filter(|v| !v.is_empty());

    Ok(MessagesRequest {
        model: target.upstream_model.to_owned(),
        messages: turns.into_iter().map(compact_turn).collect(),
        max_tokens,
        system: match system.len() {
            0 => None,
            1 => match system.pop() {
                Some(ContentBlock::Text(t)) if t.extra.is_empty() => Some(Content::Text(t.text)),
                Some(b) => Some(Content::Blocks(vec![b])),
                None => None,
            },
            _ => Some(Content::Blocks(system)),
        },
        metadata: user_id.map(|u| wire::Metadata {
            user_id: Some(u),
            extra: Map::new(),
        }),
        stop_sequences,
        stream: stream.then_some(true),
        temperature: if thinking_on {
            None
        } else {
            req.temperature.map(|t| t.clamp(0.0, 1.0))
        },
        top_p: if thinking_on { None } else { req.top_p },
        top_k: if thinking_on {
            None
        } else {
            req.extra
                .get("top_k")
                .and_then(Value::as_u64)
                .and_then(|k| u32::try_from(k).ok())
        },
        tools,
        tool_choice,
        thinking,
        service_tier: None,
        output_config: None,
        extra: Map::new(),
    })
}

/// Text of a system/developer/tool message: a string or text parts (joined with a newline).
fn text_only(content: Option<&MessageContent>, param: &str) -> Result<String, TranslateError> {
    match content {
        None => Ok(String::new()),
        Some(MessageContent::Text(t)) => Ok(t.clone()),
        Some(MessageContent::Parts(parts)) => {
            let mut out = String::new();
            for (j, p) in parts.iter().enumerate() {
                match p {
                    ContentPart::Text { text } | ContentPart::Refusal { refusal: text } => {
                        if !out.is_empty() {
                            out.push('\n');
                        }
                        out.push_str(text);
                    }
                    _ => {
                        return Err(TranslateError::new(
                            "only text parts are supported here for Anthropic models",
                            Some(&format!("{param}[{j}]")),
                        ));
                    }
                }
            }
            Ok(out)
        }
    }
}

fn user_blocks(m: &ChatMessage, i: usize) -> Result<Vec<ContentBlock>, TranslateError> {
    match &m.content {
        None => Ok(Vec::new()),
        Some(MessageContent::Text(t)) => Ok(if t.is_empty() {
            Vec::new()
        } else {
            vec![ContentBlock::text(t.clone())]
        }),
        Some(MessageContent::Parts(parts)) => {
            let mut out = Vec::with_capacity(parts.len());
            for (j, p) in parts.iter().enumerate() {
                let param = || format!("messages[{i}].content[{j}]");
                match p {
                    ContentPart::Text { text } | ContentPart::Refusal { refusal: text } => {
                        if !text.is_empty() {
                            out.push(ContentBlock::text(text.clone()));
                        }
                    }
                    ContentPart::ImageUrl { image_url } => {
                        out.push(image_block(&image_url.url, &param())?);
                    }
                    ContentPart::File { file } => out.push(file_block(file, &param())?),
                    ContentPart::InputAudio { .. } => {
                        return Err(TranslateError::new(
                            "Anthropic models do not accept audio input",
                            Some(&param()),
                        ));
                    }
                }
            }
            Ok(out)
        }
    }
}

/// `data:<media type>[;params];base64,<data>` -> (media type, data).
fn parse_data_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("data:")?;
    let (meta, data) = rest.split_once(',')?;
    let mut params = meta.split(';');
    let media_type = params.next()?.trim();
    params
        .any(|p| p.trim().eq_ignore_ascii_case("base64"))
        .then_some((media_type, data))
}

fn image_block(url: &str, param: &str) -> Result<ContentBlock, TranslateError> {
    let source = if url.starts_with("data:") {
        let Some((media_type, data)) = parse_data_url(url) else {
            return Err(TranslateError::new(
                "image data URLs must be base64 encoded (data:<type>;base64,<data>)",
                Some(param),
            ));
        };
        let media_type = match media_type.to_ascii_lowercase().as_str() {
            "image/jpeg" | "image/jpg" => "image/jpeg",
            "image/png" => "image/png",
            "image/gif" => "image/gif",
            "image/webp" => "image/webp",
            other => {
                return Err(TranslateError::new(
                    format!(
                        "image type `{other}` is not supported by Anthropic models (jpeg, png, gif, webp)"
                    ),
                    Some(param),
                ));
            }
        };
        ImageSource::Base64 {
            media_type: media_type.to_owned(),
            data: data.to_owned(),
            extra: Map::new(),
        }
    } else if url.starts_with("https://") || url.starts_with("http://") {
        ImageSource::Url {
            url: url.to_owned(),
            extra: Map::new(),
        }
    } else {
        return Err(TranslateError::new(
            "image URLs must be http(s) URLs or base64 data URLs",
            Some(param),
        ));
    };
    Ok(ContentBlock::Image(wire::ImageBlock {
        source,
        extra: Map::new(),
    }))
}

/// OpenAI `file` part -> `document` block (PDF data URLs only).
fn file_block(file: &Value, param: &str) -> Result<ContentBlock, TranslateError> {
    let data_url = file.get("file_data").and_then(Value::as_str);
    let Some((media_type, data)) = data_url.and_then(parse_data_url) else {
        return Err(TranslateError::new(
            "only files given inline as a base64 PDF data URL (file_data) are supported for Anthropic models",
            Some(param),
        ));
    };
    if !media_type.eq_ignore_ascii_case("application/pdf") {
        return Err(TranslateError::new(
            format!("file type `{media_type}` is not supported by Anthropic models (PDF only)"),
            Some(param),
        ));
    }
    let mut extra = Map::new();
    if let Some(name) = file.get("filename").and_then(Value::as_str) {
        extra.insert("title".to_owned(), Value::String(name.to_owned()));
    }
    Ok(ContentBlock::Document(wire::DocumentBlock {
        source: json!({"type": "base64", "media_type": "application/pdf", "data": data}),
        extra,
    }))
}

fn assistant_blocks(m: &ChatMessage, i: usize) -> Result<Vec<ContentBlock>, TranslateError> {
    let mut out = Vec::new();
    match &m.content {
        Some(MessageContent::Text(t)) if !t.is_empty() => out.push(ContentBlock::text(t.clone())),
        None | Some(MessageContent::Text(_)) => {}
        Some(MessageContent::Parts(parts)) => {
            for (j, p) in parts.iter().enumerate() {
                match p {
                    ContentPart::Text { text } | ContentPart::Refusal { refusal: text } => {
                        if !text.is_empty() {
                            out.push(ContentBlock::text(text.clone()));
                        }
                    }
                    _ => {
                        return Err(TranslateError::new(
                            "assistant messages may only contain text for Anthropic models",
                            Some(&format!("messages[{i}].content[{j}]")),
                        ));
                    }
                }
            }
        }
    }
    if out.is_empty()
        && let Some(r) = m.refusal.as_deref().filter(|r| !r.is_empty())
    {
        out.push(ContentBlock::text(r.to_owned()));
    }
    for (k, call) in m.tool_calls.iter().flatten().enumerate() {
        let param = || format!("messages[{i}].tool_calls[{k}].function.arguments");
        if call.kind != "function" {
            return Err(TranslateError::new(
                format!(
                    "tool call type `{}` is not supported for Anthropic models",
                    call.kind
                ),
                Some(&format!("messages[{i}].tool_calls[{k}].type")),
            ));
        }
        let args = call.function.arguments.trim();
        let input = if args.is_empty() {
            Value::Object(Map::new())
        } else {
            serde_json::from_str::<Value>(args).map_err(|e| {
                TranslateError::new(
                    format!("tool call arguments are not valid JSON: {e}"),
                    Some(&param()),
                )
            })?
        };
        if !input.is_object() {
            return Err(TranslateError::new(
                "tool call arguments must be a JSON object for Anthropic models",
                Some(&param()),
            ));
        }
        out.push(ContentBlock::ToolUse(ToolUseBlock {
            id: call.id.clone(),
            name: call.function.name.clone(),
            input,
            extra: Map::new(),
        }));
    }
    Ok(out)
}

/// Append blocks as a turn of `role`, merging into the previous turn when it has the same role.
fn push_turn(turns: &mut Vec<MessageParam>, role: wire::Role, blocks: Vec<ContentBlock>) {
    if blocks.is_empty() {
        return;
    }
    if let Some(last) = turns.last_mut()
        && last.role == role
        && let Content::Blocks(existing) = &mut last.content
    {
        existing.extend(blocks);
        return;
    }
    turns.push(MessageParam {
        role,
        content: Content::Blocks(blocks),
        extra: Map::new(),
    });
}

/// Add a tool_result to the user turn at the end (creating one if needed), after any
/// tool_result already there and before other blocks: Anthropic wants tool results first.
fn push_tool_result(turns: &mut Vec<MessageParam>, block: ContentBlock) {
    if let Some(last) = turns.last_mut()
        && last.role == wire::Role::User
        && let Content::Blocks(existing) = &mut last.content
    {
        let at = existing
            .iter()
            .position(|b| !matches!(b, ContentBlock::ToolResult(_)))
            .unwrap_or(existing.len());
        existing.insert(at, block);
        return;
    }
    push_turn(turns, wire::Role::User, vec![block]);
}

/// A turn holding a single plain text block is sent in the short string form.
fn compact_turn(mut m: MessageParam) -> MessageParam {
    if let Content::Blocks(b) = &mut m.content
        && b.len() == 1
        && matches!(&b[0], ContentBlock::Text(t) if t.extra.is_empty())
        && let Some(ContentBlock::Text(t)) = b.pop()
    {
        m.content = Content::Text(t.text);
    }
    m
}

fn called_tool_names(turns: &[MessageParam]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for t in turns {
        if let Content::Blocks(blocks) = &t.content {
            for b in blocks {
                if let ContentBlock::ToolUse(u) = b
                    && !names.contains(&u.name)
                {
                    names.push(u.name.clone());
                }
            }
        }
    }
    names
}

fn translate_tools(req: &ChatCompletionRequest) -> Result<Option<Vec<wire::Tool>>, TranslateError> {
    let Some(tools) = req.tools.as_ref().filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    let mut out = Vec::with_capacity(tools.len());
    for (k, t) in tools.iter().enumerate() {
        let f = match (t.kind, &t.function) {
            (ToolKind::Function, Some(f)) => f,
            (ToolKind::Function, None) => {
                return Err(TranslateError::new(
                    "function tools need a `function` object",
                    Some(&format!("tools[{k}].function")),
                ));
            }
            (ToolKind::Custom, _) => {
                return Err(TranslateError::new(
                    "custom tools are not supported for Anthropic models",
                    Some(&format!("tools[{k}]")),
                ));
            }
        };
        let mut schema = f
            .parameters
            .clone()
            .unwrap_or_else(|| json!({"type": "object"}));
        if let Some(o) = schema.as_object_mut()
            && !o.contains_key("type")
        {
            o.insert("type".to_owned(), Value::String("object".to_owned()));
        }
        out.push(wire::Tool {
            kind: None,
            name: f.name.clone(),
            description: f.description.clone(),
            input_schema: Some(schema),
            extra: Map::new(),
        });
    }
    Ok(Some(out))
}

// =============================================================================================
// Anthropic response -> canonical response
// =============================================================================================

/// `stop_reason` -> canonical finish reason.
pub fn stop_reason_to_finish(r: &StopReason) -> FinishReason {
    match r {
        StopReason::EndTurn | StopReason::StopSequence | StopReason::PauseTurn => {
            FinishReason::Stop
        }
        StopReason::MaxTokens | StopReason::ModelContextWindowExceeded => FinishReason::Length,
        StopReason::ToolUse => FinishReason::ToolCalls,
        StopReason::Refusal => FinishReason::ContentFilter,
        StopReason::Other(s) => FinishReason::Other(s.clone()),
    }
}

/// Anthropic token counts -> canonical usage (`prompt_tokens` includes cached tokens).
fn ir_usage(
    input: u64,
    output: u64,
    cache_creation: u64,
    cache_read: u64,
    thinking: Option<u64>,
) -> Usage {
    let prompt = input
        .saturating_add(cache_read)
        .saturating_add(cache_creation);
    Usage {
        prompt_tokens: prompt,
        completion_tokens: output,
        total_tokens: prompt.saturating_add(output),
        prompt_tokens_details: Some(PromptTokensDetails {
            cached_tokens: Some(cache_read),
            audio_tokens: None,
            cache_write_tokens: (cache_creation > 0).then_some(cache_creation),
        }),
        completion_tokens_details: thinking.map(|t| CompletionTokensDetails {
            reasoning_tokens: Some(t),
            ..Default::default()
        }),
        cost: None,
    }
}

fn thinking_tokens(extra: &Map<String, Value>) -> Option<u64> {
    extra
        .get("output_tokens_details")?
        .get("thinking_tokens")?
        .as_u64()
}

/// A response's usage -> canonical usage.
pub fn usage_to_ir(u: &wire::Usage) -> Usage {
    ir_usage(
        u.input_tokens,
        u.output_tokens,
        u.cache_creation_input_tokens.unwrap_or(0),
        u.cache_read_input_tokens.unwrap_or(0),
        thinking_tokens(&u.extra),
    )
}

/// A complete Anthropic message -> canonical chat completion.
pub fn message_to_chat(msg: &wire::Message) -> ChatCompletion {
    let mut text = String::new();
    let mut reasoning = String::new();
    let mut tool_calls = Vec::new();
    for b in &msg.content {
        match b {
            ContentBlock::Text(t) => text.push_str(&t.text),
            ContentBlock::Thinking(t) => reasoning.push_str(&t.thinking),
            ContentBlock::ToolUse(u) => tool_calls.push(ToolCall {
                id: u.id.clone(),
                kind: "function".to_owned(),
                function: FunctionCall {
                    name: u.name.clone(),
                    arguments: u.input.to_string(),
                },
            }),
            _ => {}
        }
    }
    let content = if text.is_empty() && !tool_calls.is_empty() {
        None
    } else {
        Some(text)
    };
    ChatCompletion {
        id: msg.id.clone(),
        object: "chat.completion".to_owned(),
        created: now_secs(),
        model: msg.model.clone(),
        choices: vec![Choice {
            index: 0,
            message: ResponseMessage {
                role: Role::Assistant,
                content,
                refusal: None,
                tool_calls: (!tool_calls.is_empty()).then_some(tool_calls),
                reasoning_content: (!reasoning.is_empty()).then_some(reasoning),
                annotations: None,
                audio: None,
            },
            finish_reason: msg.stop_reason.as_ref().map(stop_reason_to_finish),
            logprobs: None,
        }],
        usage: msg.usage.as_ref().map(usage_to_ir),
        service_tier: None,
        system_fingerprint: None,
    }
}

// =============================================================================================
// Errors
// =============================================================================================

/// The HTTP status Anthropic uses for an error `type` (for errors reported inside a stream).
pub fn status_for_error_type(kind: &str) -> u16 {
    match kind {
        "invalid_request_error" => 400,
        "authentication_error" => 401,
        "billing_error" => 402,
        "permission_error" => 403,
        "not_found_error" => 404,
        "request_too_large" => 413,
        "rate_limit_error" => 429,
        "timeout_error" => 504,
        "overloaded_error" => 529,
        _ => 500,
    }
}

fn is_quota_message(lower: &str) -> bool {
    [
        "credit balance",
        "api usage limit",
        "usage limits",
        "usage threshold",
        "spend limit",
        "spend_limit",
    ]
    .iter()
    .any(|m| lower.contains(m))
}

fn is_context_message(lower: &str) -> bool {
    [
        "prompt is too long",
        "exceed context limit",
        "context window",
        "context length",
    ]
    .iter()
    .any(|m| lower.contains(m))
}

fn classify(
    status: u16,
    kind: Option<&str>,
    error_code: Option<&str>,
    message: &str,
) -> UpstreamErrorKind {
    let lower = message.to_ascii_lowercase();
    let quota = error_code == Some("enforced_spend_limit_reached") || is_quota_message(&lower);
    match kind {
        Some("billing_error") => UpstreamErrorKind::QuotaExhausted,
        Some("rate_limit_error") if quota => UpstreamErrorKind::QuotaExhausted,
        Some("rate_limit_error") => UpstreamErrorKind::RateLimited,
        Some("overloaded_error") => UpstreamErrorKind::Overloaded,
        Some("authentication_error" | "permission_error") => UpstreamErrorKind::Auth,
        Some("not_found_error") => UpstreamErrorKind::NotFound,
        Some("request_too_large") => UpstreamErrorKind::TooLarge,
        Some("invalid_request_error") if is_context_message(&lower) => {
            UpstreamErrorKind::ContextLength
        }
        Some("invalid_request_error") if quota => UpstreamErrorKind::QuotaExhausted,
        Some("invalid_request_error") => UpstreamErrorKind::BadRequest,
        Some("api_error" | "timeout_error") => UpstreamErrorKind::Server,
        _ if quota && matches!(status, 400 | 402 | 429) => UpstreamErrorKind::QuotaExhausted,
        _ => UpstreamErrorKind::from_status(status),
    }
}

#[derive(serde::Deserialize)]
struct ErrorBody {
    error: Option<ErrorInner>,
}

#[derive(serde::Deserialize)]
struct ErrorInner {
    #[serde(rename = "type")]
    kind: Option<String>,
    message: Option<String>,
    details: Option<ErrorDetails>,
}

#[derive(serde::Deserialize)]
struct ErrorDetails {
    error_code: Option<String>,
}

/// Classify an Anthropic error body `{"type":"error","error":{"type","message"}}` (also used for
/// in-stream `error` events). Non-JSON bodies (proxies, HTML) are classified by status.
pub fn anthropic_error(status: u16, headers: &HeaderMap, body: &[u8]) -> UpstreamError {
    let inner = serde_json::from_slice::<ErrorBody>(body)
        .ok()
        .and_then(|b| b.error);
    let (kind, message, code) = match inner {
        Some(i) => (i.kind, i.message, i.details.and_then(|d| d.error_code)),
        None => (None, None, None),
    };
    let message = message.unwrap_or_default();
    UpstreamError {
        status,
        // 503/529 mean "overloaded" whatever type the body names (a generic `api_error`).
        kind: match status {
            503 | 529 => UpstreamErrorKind::Overloaded,
            _ => classify(status, kind.as_deref(), code.as_deref(), &message),
        },
        message: if message.is_empty() {
            "upstream error".to_owned()
        } else {
            sanitize_message(&message)
        },
        provider_code: code.or(kind),
        retry_after: retry_after(headers),
    }
}

fn stream_error(detail: &wire::ErrorDetail) -> UpstreamError {
    let status = status_for_error_type(&detail.kind);
    let code = detail
        .extra
        .get("details")
        .and_then(|d| d.get("error_code"))
        .and_then(Value::as_str);
    UpstreamError {
        status,
        kind: classify(status, Some(&detail.kind), code, &detail.message),
        message: if detail.message.is_empty() {
            "upstream error".to_owned()
        } else {
            sanitize_message(&detail.message)
        },
        provider_code: Some(code.unwrap_or(&detail.kind).to_owned()),
        retry_after: None,
    }
}

// =============================================================================================
// Anthropic stream -> canonical chunks
// =============================================================================================

/// Cumulative token counts of a stream, as `message_start` and `message_delta` report them.
#[derive(Debug, Default, Clone)]
struct UsageAcc {
    /// The upstream reported usage at all (absent is not zero).
    seen: bool,
    input: u64,
    output: u64,
    cache_creation: u64,
    cache_read: u64,
    thinking: Option<u64>,
}

impl UsageAcc {
    fn start(&mut self, u: &wire::Usage) {
        self.seen = true;
        self.input = u.input_tokens;
        self.output = u.output_tokens;
        self.cache_creation = u.cache_creation_input_tokens.unwrap_or(0);
        self.cache_read = u.cache_read_input_tokens.unwrap_or(0);
        self.thinking = thinking_tokens(&u.extra);
    }

    /// `message_delta` counts are cumulative totals: they overwrite, and absent optional counts
    /// keep the `message_start` value (the SDK's `accumulate_event` does the same).
    fn delta(&mut self, u: &DeltaUsage) {
        self.seen = true;
        self.output = u.output_tokens;
        if let Some(v) = u.input_tokens {
            self.input = v;
        }
        if let Some(v) = u.cache_creation_input_tokens {
            self.cache_creation = v;
        }
        if let Some(v) = u.cache_read_input_tokens {
            self.cache_read = v;
        }
        if let Some(t) = thinking_tokens(&u.extra) {
            self.thinking = Some(t);
        }
    }

    fn to_ir(&self) -> Usage {
        ir_usage(
            self.input,
            self.output,
            self.cache_creation,
            self.cache_read,
            self.thinking,
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BlockKind {
    Text,
    Thinking,
    /// A client tool call with its 0-based index among tool calls.
    Tool(u32),
    /// Server tool blocks and anything unknown: no canonical output.
    Other,
}

/// Anthropic SSE events -> canonical chunks.
#[derive(Debug)]
pub struct AnthropicStreamDecoder {
    id: String,
    model: String,
    created: u64,
    /// (block index, kind) of every block started so far.
    blocks: Vec<(u32, BlockKind)>,
    tool_calls: u32,
    usage: UsageAcc,
    done: bool,
}

impl AnthropicStreamDecoder {
    /// `model` is used until `message_start` names the model.
    pub fn new(model: &str) -> Self {
        AnthropicStreamDecoder {
            id: String::new(),
            model: model.to_owned(),
            created: now_secs(),
            blocks: Vec::new(),
            tool_calls: 0,
            usage: UsageAcc::default(),
            done: false,
        }
    }

    fn chunk(&self, delta: Delta, finish_reason: Option<FinishReason>) -> ChatCompletionChunk {
        ChatCompletionChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk".to_owned(),
            created: self.created,
            model: self.model.clone(),
            choices: vec![ChunkChoice {
                index: 0,
                delta,
                finish_reason,
                logprobs: None,
            }],
            usage: None,
            service_tier: None,
            system_fingerprint: None,
        }
    }

    fn kind_of(&self, index: u32) -> Option<BlockKind> {
        self.blocks
            .iter()
            .rev()
            .find(|(i, _)| *i == index)
            .map(|(_, k)| *k)
    }
}

impl ChatStreamDecoder for AnthropicStreamDecoder {
    fn on_event(
        &mut self,
        event: &SseEvent,
        out: &mut Vec<ChatCompletionChunk>,
    ) -> Result<StreamSignal, DecodeError> {
        if event.event.as_deref() == Some("ping") {
            return Ok(StreamSignal::Continue);
        }
        let ev: StreamEvent = serde_json::from_str(&event.data)
            .map_err(|e| DecodeError::invalid("stream event", e))?;
        match ev {
            StreamEvent::MessageStart { message } => {
                self.id = message.id;
                if !message.model.is_empty() {
                    self.model = message.model;
                }
                if let Some(u) = &message.usage {
                    self.usage.start(u);
                }
                out.push(self.chunk(
                    Delta {
                        role: Some(Role::Assistant),
                        content: Some(String::new()),
                        ..Default::default()
                    },
                    None,
                ));
            }
            StreamEvent::ContentBlockStart {
                index,
                content_block,
            } => {
                let kind = match content_block {
                    ContentBlock::Text(t) => {
                        if !t.text.is_empty() {
                            out.push(self.chunk(
                                Delta {
                                    content: Some(t.text),
                                    ..Default::default()
                                },
                                None,
                            ));
                        }
                        BlockKind::Text
                    }
                    ContentBlock::Thinking(t) => {
                        if !t.thinking.is_empty() {
                            out.push(self.chunk(
                                Delta {
                                    reasoning_content: Some(t.thinking),
                                    ..Default::default()
                                },
                                None,
                            ));
                        }
                        BlockKind::Thinking
                    }
                    ContentBlock::ToolUse(u) => {
                        let n = self.tool_calls;
                        self.tool_calls += 1;
                        // The input arrives as input_json_delta; a non-empty start input (not
                        // sent by the API today) is passed on as the first arguments piece.
                        let args = match &u.input {
                            Value::Object(o) if o.is_empty() => String::new(),
                            other => other.to_string(),
                        };
                        out.push(self.chunk(
                            Delta {
                                tool_calls: Some(vec![ToolCallDelta {
                                    index: n,
                                    id: Some(u.id),
                                    kind: Some("function".to_owned()),
                                    function: Some(FunctionCallDelta {
                                        name: Some(u.name),
                                        arguments: Some(args),
                                    }),
                                }]),
                                ..Default::default()
                            },
                            None,
                        ));
                        BlockKind::Tool(n)
                    }
                    _ => BlockKind::Other,
                };
                self.blocks.push((index, kind));
            }
            StreamEvent::ContentBlockDelta { index, delta } => {
                let kind = self.kind_of(index);
                match delta {
                    BlockDelta::TextDelta { text }
                        if kind != Some(BlockKind::Other) && !text.is_empty() =>
                    {
                        out.push(self.chunk(
                            Delta {
                                content: Some(text),
                                ..Default::default()
                            },
                            None,
                        ));
                    }
                    BlockDelta::ThinkingDelta { thinking }
                        if kind != Some(BlockKind::Other) && !thinking.is_empty() =>
                    {
                        out.push(self.chunk(
                            Delta {
                                reasoning_content: Some(thinking),
                                ..Default::default()
                            },
                            None,
                        ));
                    }
                    BlockDelta::InputJsonDelta { partial_json } => {
                        if let Some(BlockKind::Tool(n)) = kind
                            && !partial_json.is_empty()
                        {
                            out.push(self.chunk(
                                Delta {
                                    tool_calls: Some(vec![ToolCallDelta {
                                        index: n,
                                        id: None,
                                        kind: None,
                                        function: Some(FunctionCallDelta {
                                            name: None,
                                            arguments: Some(partial_json),
                                        }),
                                    }]),
                                    ..Default::default()
                                },
                                None,
                            ));
                        }
                    }
                    // signature_delta, citations_delta, server-tool input and unknown deltas
                    // have no canonical form.
                    _ => {}
                }
            }
            StreamEvent::MessageDelta { delta, usage } => {
                if let Some(u) = &usage {
                    self.usage.delta(u);
                }
                if let Some(r) = delta.stop_reason.as_ref() {
                    out.push(self.chunk(Delta::default(), Some(stop_reason_to_finish(r))));
                }
            }
            StreamEvent::MessageStop => {
                if self.usage.seen {
                    out.push(ChatCompletionChunk {
                        choices: Vec::new(),
                        usage: Some(self.usage.to_ir()),
                        ..self.chunk(Delta::default(), None)
                    });
                }
                self.done = true;
                return Ok(StreamSignal::Done);
            }
            StreamEvent::Error { error } => {
                return Err(DecodeError::StreamError(stream_error(&error)));
            }
            StreamEvent::ContentBlockStop { .. } | StreamEvent::Ping | StreamEvent::Unknown(_) => {}
        }
        Ok(StreamSignal::Continue)
    }

    fn finish(&mut self, _out: &mut Vec<ChatCompletionChunk>) -> Result<(), DecodeError> {
        if self.done {
            Ok(())
        } else {
            Err(DecodeError::Truncated)
        }
    }
}

// =============================================================================================
// Anthropic-shaped clients: request -> canonical
// =============================================================================================

/// An Anthropic client's request -> canonical request, for non-Anthropic upstreams. Strict:
/// anything that cannot be expressed canonically (server tools, server tool blocks, search
/// results, file-id sources, ...) is a [`TranslateError`] naming the field, so a request is
/// never silently changed before reaching another provider.
///
/// * `system` (and `system`-role messages) -> system messages; text/image blocks -> parts;
///   base64 PDF documents -> `file` parts; plain-text documents -> text parts.
/// * `tool_use` -> assistant `tool_calls`; `tool_result` -> `tool` messages placed before the
///   rest of the user turn (content flattened to text, `is_error` noted as an `Error: ` prefix;
///   images in a tool result move to the user message that follows the tool messages, since
///   OpenAI tool messages carry text only).
/// * `thinking` -> `reasoning_content`; `redacted_thinking` is dropped (opaque).
/// * `tools` -> function tools (`strict` kept); `tool_choice` auto/any/tool/none ->
///   auto/required/function/none; `disable_parallel_tool_use` -> `parallel_tool_calls: false`.
/// * `stop_sequences` -> `stop`; `metadata.user_id` -> `user`; `max_tokens` -> `max_tokens`;
///   `thinking` (budget < 4096 low, < 16384 medium, else high; adaptive/disabled -> none) or
///   `output_config.effort` -> `reasoning_effort`; `output_config.format` (json_schema) ->
///   `response_format`; `top_k`, `service_tier` and unknown fields are dropped.
pub fn messages_to_chat(req: &MessagesRequest) -> Result<ChatCompletionRequest, TranslateError> {
    inbound(req, true)
}

/// Like [`messages_to_chat`], but never fails on Anthropic-only features: they are skipped.
/// For routing decisions (features, token estimates) of a request that may go to Anthropic
/// natively; never send its result to an upstream.
pub fn messages_to_chat_for_routing(req: &MessagesRequest) -> ChatCompletionRequest {
    match inbound(req, false) {
        Ok(r) => r,
        // Lenient mode reports no errors; keep a sane fallback rather than panicking.
        Err(_) => ChatCompletionRequest {
            model: req.model.clone(),
            max_tokens: Some(req.max_tokens),
            ..Default::default()
        },
    }
}

struct Inbound {
    strict: bool,
}

impl Inbound {
    /// In strict mode, an unsupported element is an error; in lenient mode it is skipped.
    fn unsupported(&self, what: String, param: String) -> Result<(), TranslateError> {
        if self.strict {
            Err(TranslateError::new(what, Some(&param)))
        } else {
            Ok(())
        }
    }
}

fn inbound(req: &MessagesRequest, strict: bool) -> Result<ChatCompletionRequest, TranslateError> {
    let cx = Inbound { strict };
    let mut messages = Vec::with_capacity(req.messages.len() + 1);
    if let Some(system) = &req.system
        && let Some(content) = system_content(&cx, system, "system")?
    {
        messages.push(chat_message(Role::System, Some(content)));
    }
    for (i, m) in req.messages.iter().enumerate() {
        match m.role {
            wire::Role::System => {
                if let Some(content) =
                    system_content(&cx, &m.content, &format!("messages[{i}].content"))?
                {
                    messages.push(chat_message(Role::System, Some(content)));
                }
            }
            wire::Role::User => inbound_user(&cx, m, i, &mut messages)?,
            wire::Role::Assistant => messages.push(inbound_assistant(&cx, m, i)?),
        }
    }

    let mut tools = Vec::new();
    for (k, t) in req.tools.iter().flatten().enumerate() {
        if !t.is_custom() {
            cx.unsupported(
                format!(
                    "the server tool `{}` is only available on Anthropic models",
                    t.kind.as_deref().unwrap_or_default()
                ),
                format!("tools[{k}]"),
            )?;
            continue;
        }
        tools.push(Tool {
            kind: ToolKind::Function,
            function: Some(FunctionDef {
                name: t.name.clone(),
                description: t.description.clone(),
                parameters: Some(
                    t.input_schema
                        .clone()
                        .unwrap_or_else(|| json!({"type": "object"})),
                ),
                strict: t.extra.get("strict").and_then(Value::as_bool),
            }),
            custom: None,
        });
    }

    let tool_choice = match &req.tool_choice {
        None => None,
        Some(wire::ToolChoice::Auto { .. }) => Some(ToolChoice::Auto),
        Some(wire::ToolChoice::Any { .. }) => Some(ToolChoice::Required),
        Some(wire::ToolChoice::Tool { name, .. }) => {
            Some(ToolChoice::Function { name: name.clone() })
        }
        Some(wire::ToolChoice::None { .. }) => Some(ToolChoice::None),
        Some(wire::ToolChoice::Other(v)) => {
            cx.unsupported(
                format!(
                    "tool_choice type `{}` is only available on Anthropic models",
                    v.get("type").and_then(Value::as_str).unwrap_or_default()
                ),
                "tool_choice".to_owned(),
            )?;
            None
        }
    };
    let parallel_tool_calls = req
        .tool_choice
        .as_ref()
        .and_then(wire::ToolChoice::disable_parallel_tool_use)
        .filter(|d| *d)
        .map(|_| false);

    let output_config = req.output_config.as_ref();
    let effort = output_config
        .and_then(|o| o.get("effort"))
        .and_then(Value::as_str)
        .map(|e| match e {
            "low" => "low",
            "medium" => "medium",
            _ => "high",
        });
    let reasoning_effort = effort
        .or_else(|| {
            let t = req.thinking.as_ref()?;
            if t.kind != "enabled" {
                return None;
            }
            Some(match t.budget_tokens.unwrap_or(BUDGET_LOW) {
                b if b < BUDGET_MEDIUM => "low",
                b if b < BUDGET_HIGH => "medium",
                _ => "high",
            })
        })
        .map(str::to_owned);
    let response_format = match output_config.and_then(|o| o.get("format")) {
        Some(f) if f.get("type").and_then(Value::as_str) == Some("json_schema") => {
            Some(ResponseFormat::JsonSchema {
                json_schema: JsonSchemaFormat {
                    name: "response".to_owned(),
                    description: None,
                    schema: f.get("schema").cloned(),
                    strict: Some(true),
                },
            })
        }
        Some(_) => {
            cx.unsupported(
                "this output_config.format is only available on Anthropic models".to_owned(),
                "output_config.format".to_owned(),
            )?;
            None
        }
        None => None,
    };

    let stream = req.is_stream();
    Ok(ChatCompletionRequest {
        model: req.model.clone(),
        messages,
        stream: req.stream,
        stream_options: stream.then(|| StreamOptions {
            include_usage: Some(true),
            extra: Map::new(),
        }),
        tools: (!tools.is_empty()).then_some(tools),
        tool_choice,
        parallel_tool_calls,
        response_format,
        stop: req
            .stop_sequences
            .as_ref()
            .filter(|s| !s.is_empty())
            .map(|s| Stop::Many(s.clone())),
        temperature: req.temperature,
        top_p: req.top_p,
        max_tokens: Some(req.max_tokens),
        user: req.metadata.as_ref().and_then(|m| m.user_id.clone()),
        reasoning_effort,
        ..Default::default()
    })
}

fn chat_message(role: Role, content: Option<MessageContent>) -> ChatMessage {
    ChatMessage {
        role,
        content,
        name: None,
        tool_calls: None,
        tool_call_id: None,
        refusal: None,
        reasoning_content: None,
        function_call: None,
        audio: None,
    }
}

fn parts_to_content(mut parts: Vec<ContentPart>) -> MessageContent {
    if parts.len() == 1
        && matches!(parts[0], ContentPart::Text { .. })
        && let Some(ContentPart::Text { text }) = parts.pop()
    {
        return MessageContent::Text(text);
    }
    MessageContent::Parts(parts)
}

fn system_content(
    cx: &Inbound,
    content: &Content,
    param: &str,
) -> Result<Option<MessageContent>, TranslateError> {
    match content {
        Content::Text(t) => Ok((!t.is_empty()).then(|| MessageContent::Text(t.clone()))),
        Content::Blocks(blocks) => {
            let mut parts = Vec::with_capacity(blocks.len());
            for (k, b) in blocks.iter().enumerate() {
                match b {
                    ContentBlock::Text(t) => parts.push(ContentPart::Text {
                        text: t.text.clone(),
                    }),
                    other => cx.unsupported(
                        format!(
                            "`{}` blocks are not supported in a system prompt",
                            other.type_name()
                        ),
                        format!("{param}[{k}]"),
                    )?,
                }
            }
            Ok((!parts.is_empty()).then(|| parts_to_content(parts)))
        }
    }
}

fn image_part(
    cx: &Inbound,
    img: &wire::ImageBlock,
    param: &str,
) -> Result<Option<ContentPart>, TranslateError> {
    let url = match &img.source {
        ImageSource::Base64 {
            media_type, data, ..
        } => format!("data:{media_type};base64,{data}"),
        ImageSource::Url { url, .. } => url.clone(),
        ImageSource::Other(v) => {
            cx.unsupported(
                format!(
                    "image source `{}` is only available on Anthropic models",
                    v.get("type").and_then(Value::as_str).unwrap_or_default()
                ),
                format!("{param}.source"),
            )?;
            return Ok(None);
        }
    };
    Ok(Some(ContentPart::ImageUrl {
        image_url: ImageUrl { url, detail: None },
    }))
}

fn document_part(
    cx: &Inbound,
    doc: &wire::DocumentBlock,
    param: &str,
) -> Result<Option<ContentPart>, TranslateError> {
    let src = &doc.source;
    let kind = src.get("type").and_then(Value::as_str).unwrap_or_default();
    let media = src
        .get("media_type")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let title = doc.extra.get("title").and_then(Value::as_str);
    match (kind, src.get("data")) {
        ("base64", Some(Value::String(data))) if media == "application/pdf" => {
            let mut file = Map::new();
            file.insert(
                "file_data".to_owned(),
                Value::String(format!("data:application/pdf;base64,{data}")),
            );
            file.insert(
                "filename".to_owned(),
                Value::String(title.unwrap_or("document.pdf").to_owned()),
            );
            Ok(Some(ContentPart::File {
                file: Value::Object(file),
            }))
        }
        ("text", Some(Value::String(data))) => Ok(Some(ContentPart::Text {
            text: match title {
                Some(t) => format!("{t}\n\n{data}"),
                None => data.clone(),
            },
        })),
        _ => {
            cx.unsupported(
                format!("document source `{kind}` is only available on Anthropic models"),
                format!("{param}.source"),
            )?;
            Ok(None)
        }
    }
}

fn inbound_user(
    cx: &Inbound,
    m: &MessageParam,
    i: usize,
    out: &mut Vec<ChatMessage>,
) -> Result<(), TranslateError> {
    let blocks = match &m.content {
        Content::Text(t) => {
            out.push(chat_message(
                Role::User,
                Some(MessageContent::Text(t.clone())),
            ));
            return Ok(());
        }
        Content::Blocks(b) => b,
    };
    let mut parts = Vec::with_capacity(blocks.len());
    for (j, b) in blocks.iter().enumerate() {
        let param = format!("messages[{i}].content[{j}]");
        match b {
            ContentBlock::Text(t) => parts.push(ContentPart::Text {
                text: t.text.clone(),
            }),
            ContentBlock::Image(img) => parts.extend(image_part(cx, img, &param)?),
            ContentBlock::Document(doc) => parts.extend(document_part(cx, doc, &param)?),
            ContentBlock::ToolResult(r) => {
                let mut text = String::new();
                match &r.content {
                    None => {}
                    Some(Content::Text(t)) => text.push_str(t),
                    Some(Content::Blocks(inner)) => {
                        for (k, ib) in inner.iter().enumerate() {
                            let iparam = format!("{param}.content[{k}]");
                            match ib {
                                ContentBlock::Text(t) => {
                                    if !text.is_empty() {
                                        text.push('\n');
                                    }
                                    text.push_str(&t.text);
                                }
                                ContentBlock::Image(img) => {
                                    parts.extend(image_part(cx, img, &iparam)?);
                                }
                                ContentBlock::Document(doc) => {
                                    match document_part(cx, doc, &iparam)? {
                                        Some(ContentPart::Text { text: t }) => {
                                            if !text.is_empty() {
                                                text.push('\n');
                                            }
                                            text.push_str(&t);
                                        }
                                        Some(p) => parts.push(p),
                                        None => {}
                                    }
                                }
                                other => cx.unsupported(
                                    format!(
                                        "`{}` blocks in a tool result are only available on Anthropic models",
                                        other.type_name()
                                    ),
                                    iparam,
                                )?,
                            }
                        }
                    }
                }
                if r.is_error == Some(true) {
                    text.insert_str(0, "Error: ");
                }
                let mut msg = chat_message(Role::Tool, Some(MessageContent::Text(text)));
                msg.tool_call_id = Some(r.tool_use_id.clone());
                out.push(msg);
            }
            other => cx.unsupported(
                format!(
                    "`{}` blocks in a user message are only available on Anthropic models",
                    other.type_name()
                ),
                param,
            )?,
        }
    }
    if !parts.is_empty() {
        out.push(chat_message(Role::User, Some(parts_to_content(parts))));
    }
    Ok(())
}

fn inbound_assistant(
    cx: &Inbound,
    m: &MessageParam,
    i: usize,
) -> Result<ChatMessage, TranslateError> {
    let blocks = match &m.content {
        Content::Text(t) => {
            return Ok(chat_message(
                Role::Assistant,
                Some(MessageContent::Text(t.clone())),
            ));
        }
        Content::Blocks(b) => b,
    };
    let mut text = String::new();
    let mut reasoning = String::new();
    let mut calls = Vec::new();
    for (j, b) in blocks.iter().enumerate() {
        match b {
            ContentBlock::Text(t) => text.push_str(&t.text),
            ContentBlock::Thinking(t) => reasoning.push_str(&t.thinking),
            ContentBlock::RedactedThinking(_) => {}
            ContentBlock::ToolUse(u) => calls.push(ToolCall {
                id: u.id.clone(),
                kind: "function".to_owned(),
                function: FunctionCall {
                    name: u.name.clone(),
                    arguments: u.input.to_string(),
                },
            }),
            other => cx.unsupported(
                format!(
                    "`{}` blocks in an assistant message are only available on Anthropic models",
                    other.type_name()
                ),
                format!("messages[{i}].content[{j}]"),
            )?,
        }
    }
    let mut msg = chat_message(
        Role::Assistant,
        if text.is_empty() && !calls.is_empty() {
            None
        } else {
            Some(MessageContent::Text(text))
        },
    );
    msg.tool_calls = (!calls.is_empty()).then_some(calls);
    msg.reasoning_content = (!reasoning.is_empty()).then_some(reasoning);
    Ok(msg)
}

// =============================================================================================
// Anthropic-shaped clients: canonical response -> Anthropic response
// =============================================================================================

/// Canonical finish reason -> `stop_reason`. `tool_use` is reported whenever the answer holds
/// tool calls and the upstream said `stop` (some providers do), because Anthropic clients run
/// tools on `stop_reason == "tool_use"`.
fn finish_to_stop_reason(f: Option<&FinishReason>, has_tools: bool) -> StopReason {
    match f {
        Some(FinishReason::Length) => StopReason::MaxTokens,
        Some(FinishReason::ContentFilter) => StopReason::Refusal,
        Some(FinishReason::ToolCalls | FinishReason::FunctionCall) => StopReason::ToolUse,
        Some(FinishReason::Stop | FinishReason::Other(_)) | None if has_tools => {
            StopReason::ToolUse
        }
        Some(FinishReason::Stop | FinishReason::Other(_)) | None => StopReason::EndTurn,
    }
}

/// Anthropic token counts from canonical usage: `input_tokens` excludes cached tokens.
fn wire_counts(u: &Usage) -> (u64, u64, u64, u64) {
    let cache_read = u.cached_tokens();
    let cache_write = u
        .prompt_tokens_details
        .as_ref()
        .and_then(|d| d.cache_write_tokens)
        .unwrap_or(0);
    let input = u
        .prompt_tokens
        .saturating_sub(cache_read)
        .saturating_sub(cache_write);
    (input, u.completion_tokens, cache_write, cache_read)
}

fn parse_arguments(args: &str) -> Value {
    match serde_json::from_str::<Value>(args) {
        Ok(v @ Value::Object(_)) => v,
        // Anthropic clients expect an object; invalid or non-object arguments from a
        // non-Anthropic model cannot be represented and become an empty object.
        _ => {
            if !args.trim().is_empty() {
                tracing::debug!("tool call arguments are not a JSON object; sending {{}}");
            }
            Value::Object(Map::new())
        }
    }
}

/// A canonical (non-streamed) response -> Anthropic `Message` for an Anthropic client. `model`
/// is the model name to report.
pub fn chat_to_messages(resp: &ChatCompletion, model: &str) -> wire::Message {
    let mut content = Vec::new();
    let choice = resp.choices.first();
    let mut has_tools = false;
    if let Some(c) = choice {
        let m = &c.message;
        if let Some(r) = m.reasoning_content.as_deref().filter(|r| !r.is_empty()) {
            content.push(ContentBlock::Thinking(ThinkingBlock {
                thinking: r.to_owned(),
                signature: Some(String::new()),
                extra: Map::new(),
            }));
        }
        if let Some(t) = m.content.as_deref().filter(|t| !t.is_empty()) {
            content.push(ContentBlock::text(t));
        }
        if let Some(r) = m.refusal.as_deref().filter(|r| !r.is_empty()) {
            content.push(ContentBlock::text(r));
        }
        for call in m.tool_calls.iter().flatten() {
            has_tools = true;
            content.push(ContentBlock::ToolUse(ToolUseBlock {
                id: call.id.clone(),
                name: call.function.name.clone(),
                input: parse_arguments(&call.function.arguments),
                extra: Map::new(),
            }));
        }
    }
    if content.is_empty() {
        content.push(ContentBlock::text(""));
    }
    let (input, output, cache_write, cache_read) =
        wire_counts(&resp.usage.clone().unwrap_or_default());
    wire::Message {
        id: resp.id.clone(),
        kind: "message".to_owned(),
        role: wire::Role::Assistant,
        model: model.to_owned(),
        content,
        stop_reason: Some(finish_to_stop_reason(
            choice.and_then(|c| c.finish_reason.as_ref()),
            has_tools,
        )),
        stop_sequence: None,
        usage: Some(wire::Usage {
            input_tokens: input,
            output_tokens: output,
            cache_creation_input_tokens: Some(cache_write),
            cache_read_input_tokens: Some(cache_read),
            extra: Map::new(),
        }),
        extra: Map::new(),
    }
}

// =============================================================================================
// Anthropic-shaped clients: canonical chunks -> Anthropic SSE
// =============================================================================================

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpenBlock {
    Text(u32),
    Thinking(u32),
    Tool(u32),
}

impl OpenBlock {
    fn index(self) -> u32 {
        match self {
            OpenBlock::Text(i) | OpenBlock::Thinking(i) | OpenBlock::Tool(i) => i,
        }
    }
}

/// Borrowed content_block_delta, so that hot-path deltas are serialised without copies.
#[derive(Serialize)]
struct DeltaEvent<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    index: u32,
    delta: DeltaBody<'a>,
}

#[derive(Serialize)]
#[serde(tag = "type")]
enum DeltaBody<'a> {
    #[serde(rename = "text_delta")]
    Text { text: &'a str },
    #[serde(rename = "input_json_delta")]
    InputJson { partial_json: &'a str },
    #[serde(rename = "thinking_delta")]
    Thinking { thinking: &'a str },
}

/// Canonical chunks -> Anthropic SSE bytes, for an Anthropic client served by any upstream.
///
/// Emits `message_start` first, then `content_block_start` / `content_block_delta` /
/// `content_block_stop` for text, thinking and tool_use blocks (one open block at a time, block
/// indices 0, 1, 2, ... in order; tool arguments as `input_json_delta`), and on
/// [`finish_ok`](Self::finish_ok) `message_delta` (stop reason and the real usage) and
/// `message_stop`. `message_start` reports zero usage (the real counts are only known at the end
/// of an upstream stream); the final `message_delta` carries `input_tokens`, `output_tokens` and
/// the cache counts, which the SDK's accumulator copies over the start values.
///
/// Thinking blocks carry an empty `signature` (a non-Anthropic model's reasoning cannot be
/// signed). Arguments for a tool call whose block was already closed (upstreams that interleave
/// parallel tool calls) are sent to that block's index, which the SDK accumulators handle.
#[derive(Debug)]
pub struct AnthropicStreamEncoder {
    model: String,
    id: String,
    started: bool,
    finished: bool,
    open: Option<OpenBlock>,
    next_index: u32,
    /// (canonical tool call index, block index) of every tool_use block started.
    tools: Vec<(u32, u32)>,
    finish_reason: Option<FinishReason>,
    usage: Option<Usage>,
}

impl AnthropicStreamEncoder {
    pub fn new(model: &str, message_id: &str) -> Self {
        AnthropicStreamEncoder {
            model: model.to_owned(),
            id: message_id.to_owned(),
            started: false,
            finished: false,
            open: None,
            next_index: 0,
            tools: Vec::new(),
            finish_reason: None,
            usage: None,
        }
    }

    /// Whether `message_start` was emitted (the client has seen bytes of this message).
    pub fn is_started(&self) -> bool {
        self.started
    }

    fn emit<T: Serialize>(name: &str, payload: &T, out: &mut Vec<Bytes>) {
        match serde_json::to_vec(payload) {
            Ok(data) => out.push(encode_named(name, &data)),
            // Unreachable for these payloads (string keys only); never emit a broken event.
            Err(e) => tracing::error!(error = %e, "cannot encode an Anthropic stream event"),
        }
    }

    fn ensure_started(&mut self, out: &mut Vec<Bytes>) {
        if self.started {
            return;
        }
        self.started = true;
        let start = StreamEvent::MessageStart {
            message: wire::Message {
                id: self.id.clone(),
                kind: "message".to_owned(),
                role: wire::Role::Assistant,
                model: self.model.clone(),
                content: Vec::new(),
                stop_reason: None,
                stop_sequence: None,
                usage: Some(wire::Usage {
                    input_tokens: 0,
                    output_tokens: 0,
                    cache_creation_input_tokens: Some(0),
                    cache_read_input_tokens: Some(0),
                    extra: Map::new(),
                }),
                extra: Map::new(),
            },
        };
        Self::emit("message_start", &start, out);
    }

    fn close_block(&mut self, out: &mut Vec<Bytes>) {
        if let Some(b) = self.open.take() {
            Self::emit(
                "content_block_stop",
                &StreamEvent::ContentBlockStop { index: b.index() },
                out,
            );
        }
    }

    fn open_block(&mut self, block: ContentBlock, out: &mut Vec<Bytes>) -> u32 {
        self.close_block(out);
        let index = self.next_index;
        self.next_index += 1;
        Self::emit(
            "content_block_start",
            &StreamEvent::ContentBlockStart {
                index,
                content_block: block,
            },
            out,
        );
        index
    }

    fn delta(index: u32, delta: DeltaBody<'_>, out: &mut Vec<Bytes>) {
        Self::emit(
            "content_block_delta",
            &DeltaEvent {
                kind: "content_block_delta",
                index,
                delta,
            },
            out,
        );
    }

    fn push_text(&mut self, text: &str, out: &mut Vec<Bytes>) {
        let index = match self.open {
            Some(OpenBlock::Text(i)) => i,
            _ => {
                let i = self.open_block(ContentBlock::text(""), out);
                self.open = Some(OpenBlock::Text(i));
                i
            }
        };
        Self::delta(index, DeltaBody::Text { text }, out);
    }

    fn push_thinking(&mut self, thinking: &str, out: &mut Vec<Bytes>) {
        let index = match self.open {
            Some(OpenBlock::Thinking(i)) => i,
            _ => {
                let i = self.open_block(
                    ContentBlock::Thinking(ThinkingBlock {
                        thinking: String::new(),
                        signature: Some(String::new()),
                        extra: Map::new(),
                    }),
                    out,
                );
                self.open = Some(OpenBlock::Thinking(i));
                i
            }
        };
        Self::delta(index, DeltaBody::Thinking { thinking }, out);
    }

    fn push_tool(&mut self, call: &ToolCallDelta, out: &mut Vec<Bytes>) {
        let known = self
            .tools
            .iter()
            .find(|(ir, _)| *ir == call.index)
            .map(|(_, b)| *b);
        let function = call.function.as_ref();
        let index = match known {
            Some(b) => b,
            None => {
                let id = call
                    .id
                    .clone()
                    .unwrap_or_else(|| format!("toolu_{}_{}", self.id, call.index));
                let name = function.and_then(|f| f.name.clone()).unwrap_or_default();
                let b = self.open_block(
                    ContentBlock::ToolUse(ToolUseBlock {
                        id,
                        name,
                        input: Value::Object(Map::new()),
                        extra: Map::new(),
                    }),
                    out,
                );
                self.open = Some(OpenBlock::Tool(b));
                self.tools.push((call.index, b));
                b
            }
        };
        if let Some(args) = function
            .and_then(|f| f.arguments.as_deref())
            .filter(|a| !a.is_empty())
        {
            Self::delta(index, DeltaBody::InputJson { partial_json: args }, out);
        }
    }

    /// Translate one canonical chunk. Only choice 0 is used (Anthropic has one answer).
    pub fn push(&mut self, chunk: &ChatCompletionChunk, out: &mut Vec<Bytes>) {
        if self.finished {
            return;
        }
        self.ensure_started(out);
        if let Some(u) = &chunk.usage {
            self.usage = Some(u.clone());
        }
        let Some(choice) = chunk.choices.iter().find(|c| c.index == 0) else {
            return;
        };
        let d = &choice.delta;
        if let Some(r) = d.reasoning_content.as_deref().filter(|r| !r.is_empty()) {
            self.push_thinking(r, out);
        }
        if let Some(t) = d.content.as_deref().filter(|t| !t.is_empty()) {
            self.push_text(t, out);
        }
        if let Some(t) = d.refusal.as_deref().filter(|t| !t.is_empty()) {
            self.push_text(t, out);
        }
        for call in d.tool_calls.iter().flatten() {
            self.push_tool(call, out);
        }
        if let Some(f) = &choice.finish_reason {
            self.finish_reason = Some(f.clone());
        }
    }

    /// End the message cleanly: close the open block, then `message_delta` (stop reason and
    /// usage: `usage` if given, else the last usage seen in a chunk, else zeros) and
    /// `message_stop`.
    pub fn finish_ok(&mut self, usage: Option<&Usage>, out: &mut Vec<Bytes>) {
        if self.finished {
            return;
        }
        self.ensure_started(out);
        self.close_block(out);
        self.finished = true;
        let usage = usage.or(self.usage.as_ref()).cloned().unwrap_or_default();
        let (input, output, cache_write, cache_read) = wire_counts(&usage);
        let ev = StreamEvent::MessageDelta {
            delta: wire::MessageDelta {
                stop_reason: Some(finish_to_stop_reason(
                    self.finish_reason.as_ref(),
                    !self.tools.is_empty(),
                )),
                stop_sequence: None,
                extra: Map::new(),
            },
            usage: Some(DeltaUsage {
                output_tokens: output,
                input_tokens: Some(input),
                cache_creation_input_tokens: Some(cache_write),
                cache_read_input_tokens: Some(cache_read),
                extra: Map::new(),
            }),
        };
        Self::emit("message_delta", &ev, out);
        Self::emit("message_stop", &StreamEvent::MessageStop, out);
    }

    /// End the message with an `error` event and NO `message_stop` (a cut stream must never
    /// look complete). `error_type` is an Anthropic error type such as `overloaded_error`.
    pub fn finish_error(&mut self, error_type: &str, message: &str, out: &mut Vec<Bytes>) {
        if self.finished {
            return;
        }
        self.finished = true;
        let ev = StreamEvent::Error {
            error: wire::ErrorDetail {
                kind: error_type.to_owned(),
                message: message.to_owned(),
                extra: Map::new(),
            },
        };
        Self::emit("error", &ev, out);
    }
}

// =============================================================================================
// Native passthrough: observe what is forwarded
// =============================================================================================

/// Parse a native Anthropic response body (which the server forwards unchanged) to read its
/// usage and stop reason.
pub fn native_response_usage(body: &[u8]) -> Result<wire::Message, DecodeError> {
    serde_json::from_slice(body).map_err(|e| DecodeError::invalid("message", e))
}

/// Watches the raw Anthropic SSE events the server forwards untouched, for usage, stop reason,
/// whether output was sent, and a clean end.
#[derive(Debug, Default)]
pub struct NativeStreamObserver {
    usage: UsageAcc,
    saw_usage: bool,
    stop_reason: Option<StopReason>,
    saw_content: bool,
    done: bool,
}

impl NativeStreamObserver {
    pub fn new() -> Self {
        Self::default()
    }

    /// Observe one event. `Done` on `message_stop`; an `error` event is
    /// `Err(DecodeError::StreamError)`; malformed JSON in a non-delta event is
    /// `Err(DecodeError::Invalid)`.
    pub fn on_event(&mut self, ev: &SseEvent) -> Result<StreamSignal, DecodeError> {
        match ev.event.as_deref() {
            Some("ping") => return Ok(StreamSignal::Continue),
            // The most frequent event: no need to parse it.
            Some("content_block_delta") => {
                self.saw_content = true;
                return Ok(StreamSignal::Continue);
            }
            _ => {}
        }
        let parsed: StreamEvent =
            serde_json::from_str(&ev.data).map_err(|e| DecodeError::invalid("stream event", e))?;
        match parsed {
            StreamEvent::MessageStart { message } => {
                if let Some(u) = &message.usage {
                    self.usage.start(u);
                }
                self.saw_usage = self.usage.seen;
            }
            StreamEvent::ContentBlockStart { content_block, .. } => {
                let empty = match &content_block {
                    ContentBlock::Text(TextBlock { text, .. }) => text.is_empty(),
                    ContentBlock::Thinking(t) => t.thinking.is_empty(),
                    _ => false,
                };
                if !empty {
                    self.saw_content = true;
                }
            }
            StreamEvent::ContentBlockDelta { .. } => self.saw_content = true,
            StreamEvent::MessageDelta { delta, usage } => {
                if let Some(u) = &usage {
                    self.usage.delta(u);
                }
                self.saw_usage = self.usage.seen;
                if delta.stop_reason.is_some() {
                    self.stop_reason = delta.stop_reason;
                }
            }
            StreamEvent::MessageStop => {
                self.done = true;
                return Ok(StreamSignal::Done);
            }
            StreamEvent::Error { error } => {
                return Err(DecodeError::StreamError(stream_error(&error)));
            }
            StreamEvent::ContentBlockStop { .. } | StreamEvent::Ping | StreamEvent::Unknown(_) => {}
        }
        Ok(StreamSignal::Continue)
    }

    /// Canonical usage so far (cumulative; complete after `message_stop`).
    pub fn usage(&self) -> Usage {
        self.usage.to_ir()
    }

    /// Whether the upstream reported any usage (`message_start` or `message_delta`).
    pub fn has_usage(&self) -> bool {
        self.saw_usage
    }

    pub fn stop_reason(&self) -> Option<&StopReason> {
        self.stop_reason.as_ref()
    }

    pub fn finish_reason(&self) -> Option<FinishReason> {
        self.stop_reason.as_ref().map(stop_reason_to_finish)
    }

    /// Whether output (text, thinking, tool use, server tool blocks) has been seen.
    pub fn saw_content(&self) -> bool {
        self.saw_content
    }

    /// `Err(Truncated)` unless `message_stop` was seen.
    pub fn finish(&self) -> Result<(), DecodeError> {
        if self.done {
            Ok(())
        } else {
            Err(DecodeError::Truncated)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kairos_api::sse::SseDecoder;
    use serde_json::json;

    fn target() -> Target<'static> {
        Target {
            provider: "anthropic",
            upstream_model: "claude-sonnet-4-5-20250929",
            api_key: Some("sk-ant-test-canary"),
            default_max_tokens: 4096,
        }
    }

    fn ir(v: Value) -> ChatCompletionRequest {
        serde_json::from_value(v).unwrap()
    }

    fn body_of(up: &UpstreamRequest) -> Value {
        serde_json::from_slice(&up.body).unwrap()
    }

    fn sse(name: &str, data: Value) -> SseEvent {
        SseEvent {
            event: Some(name.to_owned()),
            data: data.to_string(),
        }
    }

    // ------------------------------------------------------------------ IR -> Anthropic

    #[test]
    fn ir_request_with_tools_images_and_tool_results() {
        let req = ir(json!({
            "model": "claude",
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "developer", "content": [{"type": "text", "text": "Use metric units."}]},
                {"role": "user", "content": [
                    {"type": "text", "text": "What is in this picture, and the weather?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "high"}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
                    {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0=", "filename": "report.pdf"}}
                ]},
                {"role": "assistant", "content": "Let me check.", "reasoning_content": "dropped", "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                    {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": ""}}
                ]},
                {"role": "tool", "tool_call_id": "call_1", "content": "18C, sunny"},
                {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "14:00"}]},
                {"role": "user", "content": "Thanks. Summarise."},
                {"role": "user", "content": ""}
            ],
            "tools": [
                {"type": "function", "function": {"name": "get_weather", "description": "Weather by city",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}, "strict": true}},
                {"type": "function", "function": {"name": "get_time"}},
                {"type": "function", "function": {"name": "no_type", "parameters": {"properties": {}}}}
            ],
            "tool_choice": "required",
            "parallel_tool_calls": false,
            "stop": ["END"],
            "temperature": 1.7,
            "top_p": 0.9,
            "top_k": 20,
            "max_completion_tokens": 300,
            "user": "user-42",
            "seed": 7,
            "frequency_penalty": 0.5,
            "stream": true
        }));
        let up = AnthropicAdapter
            .chat_request(&req, &target(), true)
            .unwrap();
        assert_eq!(up.path_and_query, "/v1/messages");
        assert_eq!(up.headers["x-api-key"], "sk-ant-test-canary");
        assert!(up.headers["x-api-key"].is_sensitive());
        assert_eq!(up.headers["anthropic-version"], "2023-06-01");
        assert_eq!(up.headers["content-type"], "application/json");
        assert!(up.headers.get("authorization").is_none());
        let body = body_of(&up);
        assert_eq!(
            body["temperature"],
            json!(1.0),
            "clamped to Anthropic's range"
        );
        insta::assert_json_snapshot!("ir_to_anthropic_request", body);
    }

    #[test]
    fn ir_request_json_mode_and_reasoning() {
        let req = ir(json!({
            "model": "claude",
            "messages": [{"role": "user", "content": "List two colours."}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "colours", "schema":
                {"type": "object", "properties": {"colours": {"type": "array", "items": {"type": "string"}}}, "required": ["colours"]}}},
            "reasoning_effort": "low",
            "max_tokens": 500,
            "temperature": 0.2
        }));
        let body = body_of(
            &AnthropicAdapter
                .chat_request(&req, &target(), false)
                .unwrap(),
        );
        assert_eq!(
            body["thinking"],
            json!({"type": "enabled", "budget_tokens": 1024})
        );
        assert_eq!(
            body["max_tokens"],
            json!(1524),
            "raised above the thinking budget"
        );
        assert!(
            body.get("temperature").is_none(),
            "not allowed with thinking"
        );
        assert!(body.get("stream").is_none());
        insta::assert_json_snapshot!("ir_to_anthropic_json_mode", body);

        let req = ir(json!({
            "model": "claude",
            "messages": [{"role": "system", "content": "sys"}, {"role": "user", "content": "hi"}],
            "response_format": {"type": "json_object"},
            "reasoning_effort": "high",
            "max_tokens": 20000
        }));
        let body = body_of(
            &AnthropicAdapter
                .chat_request(&req, &target(), false)
                .unwrap(),
        );
        assert_eq!(body["max_tokens"], json!(20000), "already above the budget");
        assert_eq!(body["thinking"]["budget_tokens"], json!(16384));
        assert_eq!(body["system"][0]["text"], json!("sys"));
        assert!(
            body["system"][1]["text"]
                .as_str()
                .unwrap()
                .contains("single valid JSON object")
        );
        // No cap given: the target default is used.
        let req = ir(json!({"model": "c", "messages": [{"role": "user", "content": "hi"}]}));
        let body = body_of(
            &AnthropicAdapter
                .chat_request(&req, &target(), false)
                .unwrap(),
        );
        assert_eq!(body["max_tokens"], json!(4096));
        assert_eq!(body["messages"], json!([{"role": "user", "content": "hi"}]));
        // Forced tool use and thinking do not mix on Anthropic: thinking is left out.
        let req = ir(
            json!({"model": "c", "messages": [{"role": "user", "content": "hi"}],
            "tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "required",
            "reasoning_effort": "medium", "temperature": 0.5}),
        );
        let body = body_of(
            &AnthropicAdapter
                .chat_request(&req, &target(), false)
                .unwrap(),
        );
        assert!(body.get("thinking").is_none());
        assert_eq!(body["temperature"], json!(0.5));
        // Inside a tool loop, thinking would need the (unsigned) reasoning of the last turn.
        let req = ir(
            json!({"model": "c", "reasoning_effort": "medium", "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "reasoning_content": "r", "tool_calls": [{"id": "t", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "t", "content": "ok"}],
            "tools": [{"type": "function", "function": {"name": "f"}}]}),
        );
        let body = body_of(
            &AnthropicAdapter
                .chat_request(&req, &target(), false)
                .unwrap(),
        );
        assert!(body.get("thinking").is_none());
        assert_eq!(body["model"], json!("claude-sonnet-4-5-20250929"));
    }

    #[test]
    fn ir_tool_choice_mapping() {
        let base = |tc: Value, parallel: Value| {
            let mut v = json!({"model": "c", "messages": [{"role": "user", "content": "hi"}],
                "tools": [{"type": "function", "function": {"name": "f"}}]});
            if !tc.is_null() {
                v["tool_choice"] = tc;
            }
            if !parallel.is_null() {
                v["parallel_tool_calls"] = parallel;
            }
            body_of(
                &AnthropicAdapter
                    .chat_request(&ir(v), &target(), false)
                    .unwrap(),
            )["tool_choice"]
                .clone()
        };
        assert_eq!(base(json!("auto"), Value::Null), json!({"type": "auto"}));
        assert_eq!(base(json!("required"), Value::Null), json!({"type": "any"}));
        assert_eq!(base(json!("none"), Value::Null), json!({"type": "none"}));
        assert_eq!(
            base(
                json!({"type": "function", "function": {"name": "f"}}),
                json!(false)
            ),
            json!({"type": "tool", "name": "f", "disable_parallel_tool_use": true})
        );
        assert_eq!(
            base(Value::Null, json!(false)),
            json!({"type": "auto", "disable_parallel_tool_use": true})
        );
        assert_eq!(base(Value::Null, json!(true)), Value::Null);
    }

    #[test]
    fn ir_history_with_tool_calls_but_no_tools_declares_them() {
        let req = ir(json!({"model": "c", "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "tool_calls": [{"id": "t1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "t1", "content": "ok"}
        ]}));
        let body = body_of(
            &AnthropicAdapter
                .chat_request(&req, &target(), false)
                .unwrap(),
        );
        assert_eq!(
            body["tools"],
            json!([{"name": "lookup", "input_schema": {"type": "object"}}])
        );
        assert_eq!(body["tool_choice"], json!({"type": "none"}));
        assert_eq!(
            body["messages"][2],
            json!({"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "ok"}]})
        );
    }

    #[test]
    fn ir_untranslatable_requests_are_rejected_with_a_param() {
        let cases = [
            (
                json!({"model": "c", "n": 2, "messages": [{"role": "user", "content": "x"}]}),
                "n",
            ),
            (
                json!({"model": "c", "messages": [{"role": "user", "content": [
                {"type": "text", "text": "x"}, {"type": "input_audio", "input_audio": {"data": "AA", "format": "wav"}}]}]}),
                "messages[0].content[1]",
            ),
            (
                json!({"model": "c", "messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "data:image/bmp;base64,Qk0="}}]}]}),
                "messages[0].content[0]",
            ),
            (
                json!({"model": "c", "messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}]}]}),
                "messages[0].content[0]",
            ),
            (
                json!({"model": "c", "messages": [{"role": "user", "content": [
                {"type": "file", "file": {"file_id": "file-1"}}]}]}),
                "messages[0].content[0]",
            ),
            (
                json!({"model": "c", "messages": [{"role": "user", "content": "x"}, {"role": "assistant", "tool_calls": [
                {"id": "a", "type": "function", "function": {"name": "f", "arguments": "{\"a\":"}}]}]}),
                "messages[1].tool_calls[0].function.arguments",
            ),
            (
                json!({"model": "c", "messages": [{"role": "user", "content": "x"}, {"role": "assistant", "tool_calls": [
                {"id": "a", "type": "function", "function": {"name": "f", "arguments": "[1]"}}]}]}),
                "messages[1].tool_calls[0].function.arguments",
            ),
            (
                json!({"model": "c", "messages": [{"role": "tool", "content": "x"}]}),
                "messages[0].tool_call_id",
            ),
            (
                json!({"model": "c", "messages": [{"role": "function", "name": "f", "content": "x"}]}),
                "messages[0].role",
            ),
            (
                json!({"model": "c", "messages": [{"role": "user", "content": "x"}],
                "tools": [{"type": "custom", "custom": {"name": "g"}}]}),
                "tools[0]",
            ),
            (
                json!({"model": "c", "messages": [{"role": "user", "content": "x"}],
                "tool_choice": {"type": "allowed_tools", "allowed_tools": {}}}),
                "tool_choice",
            ),
            (
                json!({"model": "c", "messages": [{"role": "user", "content": "x"}], "reasoning_effort": "ludicrous"}),
                "reasoning_effort",
            ),
        ];
        for (req, param) in cases {
            let err = AnthropicAdapter
                .chat_request(&ir(req.clone()), &target(), false)
                .unwrap_err();
            assert_eq!(err.param.as_deref(), Some(param), "{req} -> {err:?}");
        }
        let e = AnthropicAdapter
            .embeddings_request(
                &serde_json::from_value(json!({"model": "e", "input": "x"})).unwrap(),
                &target(),
            )
            .unwrap_err();
        assert!(e.message.contains("no embeddings"));
    }

    #[test]
    fn header_key_must_be_a_valid_header_value() {
        let t = Target {
            api_key: Some("bad\nkey"),
            ..target()
        };
        let req = ir(json!({"model": "c", "messages": [{"role": "user", "content": "x"}]}));
        let err = AnthropicAdapter.chat_request(&req, &t, false).unwrap_err();
        assert!(
            !err.message.contains("bad"),
            "the key never appears in a message"
        );
    }

    // ------------------------------------------------------------------ Anthropic -> IR

    fn anthropic_message() -> Value {
        json!({
            "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-4-5-20250929",
            "content": [
                {"type": "thinking", "thinking": "The user wants weather for two cities.", "signature": "EqQBCgIYAhIM"},
                {"type": "text", "text": "Checking "},
                {"type": "text", "text": "both.", "citations": null},
                {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "toolu_02", "name": "get_weather", "input": {"city": "Oslo", "unit": "c"}}
            ],
            "stop_reason": "tool_use",
            "stop_sequence": null,
            "usage": {"input_tokens": 100, "output_tokens": 50, "cache_creation_input_tokens": 20,
                      "cache_read_input_tokens": 1000, "service_tier": "standard"}
        })
    }

    #[test]
    fn anthropic_response_to_ir() {
        let body = serde_json::to_vec(&anthropic_message()).unwrap();
        let c = AnthropicAdapter.chat_response(&body, &target()).unwrap();
        let u = c.usage.as_ref().unwrap();
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens, u.total_tokens),
            (1120, 50, 1170)
        );
        assert_eq!(u.cached_tokens(), 1000);
        insta::assert_json_snapshot!("anthropic_response_to_ir", c, {".created" => 0});
        for (reason, want) in [
            ("end_turn", "stop"),
            ("stop_sequence", "stop"),
            ("pause_turn", "stop"),
            ("max_tokens", "length"),
            ("model_context_window_exceeded", "length"),
            ("tool_use", "tool_calls"),
            ("refusal", "content_filter"),
        ] {
            let mut m = anthropic_message();
            m["stop_reason"] = json!(reason);
            let c = AnthropicAdapter
                .chat_response(&serde_json::to_vec(&m).unwrap(), &target())
                .unwrap();
            assert_eq!(c.choices[0].finish_reason.as_ref().unwrap().as_str(), want);
        }
        assert!(matches!(
            AnthropicAdapter.chat_response(b"{\"id\":", &target()),
            Err(DecodeError::Invalid(_))
        ));
    }

    // ------------------------------------------------------------------ stream decoder

    /// A realistic upstream stream: thinking, text, then two tool_use blocks whose arguments are
    /// split across several deltas (Portkey #1275: parallel tool calls merged or mis-indexed).
    fn multi_tool_stream() -> Vec<SseEvent> {
        vec![
            sse(
                "message_start",
                json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant",
                "model": "claude-sonnet-4-5-20250929", "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": 40, "output_tokens": 1, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 300}}}),
            ),
            sse("ping", json!({"type": "ping"})),
            sse(
                "content_block_start",
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": "", "signature": ""}}),
            ),
            sse(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "Two cities."}}),
            ),
            sse(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "EqQB"}}),
            ),
            sse(
                "content_block_stop",
                json!({"type": "content_block_stop", "index": 0}),
            ),
            sse(
                "content_block_start",
                json!({"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}}),
            ),
            sse(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "Checking"}}),
            ),
            sse(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": " both."}}),
            ),
            sse(
                "content_block_stop",
                json!({"type": "content_block_stop", "index": 1}),
            ),
            sse(
                "content_block_start",
                json!({"type": "content_block_start", "index": 2, "content_block": {"type": "tool_use", "id": "toolu_A", "name": "get_weather", "input": {}}}),
            ),
            sse(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": ""}}),
            ),
            sse(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": "{\"city\": \"Pa"}}),
            ),
            sse(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": "ris\"}"}}),
            ),
            sse(
                "content_block_stop",
                json!({"type": "content_block_stop", "index": 2}),
            ),
            sse(
                "content_block_start",
                json!({"type": "content_block_start", "index": 3, "content_block": {"type": "tool_use", "id": "toolu_B", "name": "get_weather", "input": {}}}),
            ),
            sse(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 3, "delta": {"type": "input_json_delta", "partial_json": "{\"ci"}}),
            ),
            sse(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 3, "delta": {"type": "input_json_delta", "partial_json": "ty\": \"Oslo\", \"unit\""}}),
            ),
            sse(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 3, "delta": {"type": "input_json_delta", "partial_json": ": \"c\"}"}}),
            ),
            sse(
                "content_block_stop",
                json!({"type": "content_block_stop", "index": 3}),
            ),
            sse(
                "message_delta",
                json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null},
                "usage": {"output_tokens": 89}}),
            ),
            sse("message_stop", json!({"type": "message_stop"})),
        ]
    }

    fn decode(events: &[SseEvent]) -> (Vec<ChatCompletionChunk>, Result<(), DecodeError>) {
        let mut d = AnthropicAdapter.chat_stream_decoder(&target());
        let mut out = Vec::new();
        for (i, e) in events.iter().enumerate() {
            match d.on_event(e, &mut out) {
                Ok(StreamSignal::Done) => {
                    assert_eq!(i, events.len() - 1, "Done only at message_stop")
                }
                Ok(StreamSignal::Continue) => {}
                Err(err) => return (out, Err(err)),
            }
        }
        let fin = d.finish(&mut out);
        (out, fin)
    }

    /// (text, reasoning, tool calls as (id, name, arguments), finish reason, usage)
    type Accumulated = (
        String,
        String,
        Vec<(String, String, String)>,
        Option<String>,
        Option<Usage>,
    );

    /// Accumulate canonical chunks the way an OpenAI client does.
    fn accumulate(chunks: &[ChatCompletionChunk]) -> Accumulated {
        let (mut text, mut reasoning, mut calls, mut finish, mut usage) = (
            String::new(),
            String::new(),
            Vec::<(String, String, String)>::new(),
            None,
            None,
        );
        for c in chunks {
            if c.usage.is_some() {
                usage = c.usage.clone();
            }
            for ch in &c.choices {
                text.push_str(ch.delta.content.as_deref().unwrap_or(""));
                reasoning.push_str(ch.delta.reasoning_content.as_deref().unwrap_or(""));
                for t in ch.delta.tool_calls.iter().flatten() {
                    let i = t.index as usize;
                    if calls.len() <= i {
                        calls.resize(i + 1, Default::default());
                    }
                    if let Some(id) = &t.id {
                        calls[i].0 = id.clone();
                    }
                    if let Some(f) = &t.function {
                        if let Some(n) = &f.name {
                            calls[i].1 = n.clone();
                        }
                        calls[i].2.push_str(f.arguments.as_deref().unwrap_or(""));
                    }
                }
                if let Some(f) = &ch.finish_reason {
                    finish = Some(f.as_str().to_owned());
                }
            }
        }
        (text, reasoning, calls, finish, usage)
    }

    #[test]
    fn stream_decoder_multi_tool_calls() {
        let (chunks, fin) = decode(&multi_tool_stream());
        assert_eq!(fin, Ok(()));
        assert!(
            chunks
                .iter()
                .all(|c| c.id == "msg_1" && c.model == "claude-sonnet-4-5-20250929")
        );
        assert_eq!(chunks[0].choices[0].delta.role, Some(Role::Assistant));
        let (text, reasoning, calls, finish, usage) = accumulate(&chunks);
        assert_eq!(text, "Checking both.");
        assert_eq!(reasoning, "Two cities.");
        assert_eq!(
            calls,
            vec![
                (
                    "toolu_A".into(),
                    "get_weather".into(),
                    "{\"city\": \"Paris\"}".into()
                ),
                (
                    "toolu_B".into(),
                    "get_weather".into(),
                    "{\"city\": \"Oslo\", \"unit\": \"c\"}".into()
                ),
            ]
        );
        assert_eq!(finish.as_deref(), Some("tool_calls"));
        let usage = usage.unwrap();
        assert_eq!(
            (
                usage.prompt_tokens,
                usage.completion_tokens,
                usage.cached_tokens()
            ),
            (340, 89, 300)
        );
        // The usage chunk is last and has no choices.
        let last = chunks.last().unwrap();
        assert!(last.choices.is_empty() && last.usage.is_some());
        insta::assert_json_snapshot!("anthropic_stream_to_ir_chunks", chunks, {"[].created" => 0});
    }

    #[test]
    fn stream_decoder_truncation_errors_and_noise() {
        let events = multi_tool_stream();
        // Cut before message_stop: never a clean end.
        let (_, fin) = decode(&events[..events.len() - 1]);
        assert_eq!(fin, Err(DecodeError::Truncated));
        let (_, fin) = decode(&events[..5]);
        assert_eq!(fin, Err(DecodeError::Truncated));

        // An error event mid-stream is classified.
        let mut with_error = events[..8].to_vec();
        with_error.push(sse("error", json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})));
        let (_, fin) = decode(&with_error);
        let Err(DecodeError::StreamError(e)) = fin else {
            panic!("{fin:?}")
        };
        assert_eq!(
            (e.kind, e.status, e.provider_code.as_deref()),
            (UpstreamErrorKind::Overloaded, 529, Some("overloaded_error"))
        );

        // Unknown events and deltas, server tool blocks and citations are ignored.
        let mut noisy = events[..1].to_vec();
        noisy.push(sse("brand_new", json!({"type": "brand_new", "x": 1})));
        noisy.push(sse("content_block_start", json!({"type": "content_block_start", "index": 0,
            "content_block": {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {}}})));
        noisy.push(sse(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0,
            "delta": {"type": "input_json_delta", "partial_json": "{\"query\":\"x\"}"}}),
        ));
        noisy.push(sse("content_block_start", json!({"type": "content_block_start", "index": 1,
            "content_block": {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": []}})));
        noisy.push(sse("content_block_start", json!({"type": "content_block_start", "index": 2, "content_block": {"type": "text", "text": ""}})));
        noisy.push(sse("content_block_delta", json!({"type": "content_block_delta", "index": 2, "delta": {"type": "citations_delta", "citation": {"type": "web_search_result_location"}}})));
        noisy.push(sse("content_block_delta", json!({"type": "content_block_delta", "index": 2, "delta": {"type": "text_delta", "text": "Found."}})));
        noisy.push(sse("content_block_delta", json!({"type": "content_block_delta", "index": 2, "delta": {"type": "future_delta", "v": 1}})));
        noisy.extend_from_slice(&events[events.len() - 2..]);
        let (chunks, fin) = decode(&noisy);
        assert_eq!(fin, Ok(()));
        let (text, _, calls, _, _) = accumulate(&chunks);
        assert_eq!(text, "Found.");
        assert!(
            calls.is_empty(),
            "server tool calls are not client tool calls"
        );

        // Garbage is a typed error.
        let (_, fin) = decode(&[SseEvent {
            event: Some("message_start".into()),
            data: "{garbage".into(),
        }]);
        assert!(matches!(fin, Err(DecodeError::Invalid(_))));
    }

    #[test]
    fn stream_usage_follows_sdk_accumulation() {
        // message_delta counts are cumulative and overwrite; absent ones keep the start value.
        let events = vec![
            sse(
                "message_start",
                json!({"type": "message_start", "message": {"id": "m", "type": "message", "role": "assistant", "model": "x",
                "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": 10, "output_tokens": 1, "cache_creation_input_tokens": 5, "cache_read_input_tokens": 7}}}),
            ),
            sse(
                "message_delta",
                json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null},
                "usage": {"output_tokens": 30, "input_tokens": 12, "output_tokens_details": {"thinking_tokens": 20}}}),
            ),
            sse("message_stop", json!({"type": "message_stop"})),
        ];
        let (chunks, fin) = decode(&events);
        assert_eq!(fin, Ok(()));
        let u = chunks.last().unwrap().usage.clone().unwrap();
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens, u.total_tokens),
            (24, 30, 54)
        );
        assert_eq!(u.cached_tokens(), 7);
        assert_eq!(
            u.prompt_tokens_details.as_ref().unwrap().cache_write_tokens,
            Some(5)
        );
        assert_eq!(u.reasoning_tokens(), 20);
    }

    // ------------------------------------------------------------------ errors

    #[test]
    fn error_classification_table() {
        let body = |t: &str, m: &str| {
            json!({"type": "error", "error": {"type": t, "message": m}}).to_string()
        };
        let cases: Vec<(u16, String, UpstreamErrorKind)> = vec![
            (429, body("rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit"), UpstreamErrorKind::RateLimited),
            (429, json!({"type": "error", "error": {"type": "rate_limit_error", "message": "You have reached your API usage limits.",
                "details": {"error_code": "enforced_spend_limit_reached"}}}).to_string(), UpstreamErrorKind::QuotaExhausted),
            (400, body("invalid_request_error", "Your credit balance is too low to access the Anthropic API."), UpstreamErrorKind::QuotaExhausted),
            (400, body("invalid_request_error", "You have reached your specified workspace API usage limits."), UpstreamErrorKind::QuotaExhausted),
            (402, body("billing_error", "billing problem"), UpstreamErrorKind::QuotaExhausted),
            (529, body("overloaded_error", "Overloaded"), UpstreamErrorKind::Overloaded),
            (401, body("authentication_error", "invalid x-api-key"), UpstreamErrorKind::Auth),
            (403, body("permission_error", "no access"), UpstreamErrorKind::Auth),
            (404, body("not_found_error", "model: claude-9"), UpstreamErrorKind::NotFound),
            (413, body("request_too_large", "Request exceeds the maximum allowed number of bytes."), UpstreamErrorKind::TooLarge),
            (400, body("invalid_request_error", "prompt is too long: 208310 tokens > 200000 maximum"), UpstreamErrorKind::ContextLength),
            (400, body("invalid_request_error", "input length and `max_tokens` exceed context limit: 198000 + 8192 > 200000"), UpstreamErrorKind::ContextLength),
            (400, body("invalid_request_error", "messages: text content blocks must be non-empty"), UpstreamErrorKind::BadRequest),
            (500, body("api_error", "Internal server error"), UpstreamErrorKind::Server),
            (504, body("timeout_error", "timeout"), UpstreamErrorKind::Server),
            (502, "<html>Bad Gateway</html>".to_owned(), UpstreamErrorKind::Server),
            (503, String::new(), UpstreamErrorKind::Overloaded),
            (418, body("teapot_error", "short and stout"), UpstreamErrorKind::Other),
        ];
        for (status, b, want) in cases {
            let e = AnthropicAdapter.upstream_error(status, &HeaderMap::new(), b.as_bytes());
            assert_eq!(e.kind, want, "{status} {b}");
            assert_eq!(e.status, status);
        }
        let mut h = HeaderMap::new();
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("17"));
        let e = AnthropicAdapter.upstream_error(
            429,
            &h,
            body("rate_limit_error", "slow down, see https://docs.anthropic.com/rate-limits key sk-ant-api03-abcdefghijklmnop1234").as_bytes(),
        );
        assert_eq!(e.retry_after, Some(std::time::Duration::from_secs(17)));
        assert_eq!(e.provider_code.as_deref(), Some("rate_limit_error"));
        assert!(
            !e.message.contains("https") && !e.message.contains("sk-ant"),
            "{}",
            e.message
        );
        let e = AnthropicAdapter.upstream_error(
            429,
            &HeaderMap::new(),
            json!({"type": "error", "error": {"type": "rate_limit_error", "message": "limits", "details": {"error_code": "enforced_spend_limit_reached"}}}).to_string().as_bytes(),
        );
        assert_eq!(
            e.provider_code.as_deref(),
            Some("enforced_spend_limit_reached")
        );
        assert!(!e.kind.retryable());
        let e = AnthropicAdapter.upstream_error(502, &HeaderMap::new(), b"");
        assert_eq!(e.message, "upstream error");
    }

    // ------------------------------------------------------------------ inbound: client -> IR

    fn client_request() -> Value {
        json!({
            "model": "auto",
            "max_tokens": 1024,
            "system": [{"type": "text", "text": "You are a weather bot.", "cache_control": {"type": "ephemeral"}},
                       {"type": "text", "text": "Be brief."}],
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "Weather in Paris? Here is a map."},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
                    {"type": "image", "source": {"type": "url", "url": "https://example.com/map.png"}},
                    {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="}, "title": "forecast.pdf"},
                    {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "Paris: mild."}}
                ]},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "Need the tool.", "signature": "sig"},
                    {"type": "redacted_thinking", "data": "opaque"},
                    {"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
                    {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {"city": "Lyon"}}
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"},
                    {"type": "tool_result", "tool_use_id": "toolu_2", "is_error": true,
                     "content": [{"type": "text", "text": "station offline"}, {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/"}}]},
                    {"type": "text", "text": "And tomorrow?"}
                ]},
                {"role": "assistant", "content": "Prefill: "}
            ],
            "tools": [{"name": "get_weather", "description": "Weather by city",
                       "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}, "strict": true,
                       "cache_control": {"type": "ephemeral"}}],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
            "thinking": {"type": "enabled", "budget_tokens": 5000},
            "stop_sequences": ["STOP"],
            "metadata": {"user_id": "u-9"},
            "temperature": 0.3,
            "top_p": 0.8,
            "top_k": 10,
            "stream": true,
            "service_tier": "auto"
        })
    }

    #[test]
    fn anthropic_client_request_to_ir() {
        let req: MessagesRequest = serde_json::from_value(client_request()).unwrap();
        let chat = messages_to_chat(&req).unwrap();
        assert_eq!(chat.model, "auto");
        assert!(chat.wants_usage_in_stream());
        assert_eq!(chat.reasoning_effort.as_deref(), Some("medium"));
        // The IR serialises without model and stream_options (adapters write those).
        // Neither field is part of the canonical request's JSON (adapters write `stream`, and
        // `reasoning_content` is never sent upstream), so check them here.
        assert_eq!(chat.stream, Some(true));
        assert!(
            chat.messages
                .iter()
                .any(|m| m.reasoning_content.as_deref() == Some("Need the tool."))
        );
        insta::assert_json_snapshot!("anthropic_client_request_to_ir", chat);
        // And the IR translates back to a valid Anthropic request (a full loop through the adapter).
        let up = AnthropicAdapter
            .chat_request(&chat, &target(), true)
            .unwrap();
        let back = body_of(&up);
        assert_eq!(back["messages"][1]["content"][1]["type"], json!("tool_use"));
        assert_eq!(
            back["messages"][2]["content"][0]["type"],
            json!("tool_result")
        );
        assert_eq!(
            back["messages"][2]["content"][1]["type"],
            json!("tool_result")
        );
        assert_eq!(
            back["tool_choice"],
            json!({"type": "any", "disable_parallel_tool_use": true})
        );
    }

    #[test]
    fn anthropic_client_mappings() {
        let mk = |extra: Value| {
            let mut v = json!({"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]});
            for (k, val) in extra.as_object().unwrap() {
                v[k] = val.clone();
            }
            messages_to_chat(&serde_json::from_value(v).unwrap()).unwrap()
        };
        assert_eq!(
            mk(json!({"tool_choice": {"type": "auto"}})).tool_choice,
            Some(ToolChoice::Auto)
        );
        assert_eq!(
            mk(json!({"tool_choice": {"type": "none"}})).tool_choice,
            Some(ToolChoice::None)
        );
        assert_eq!(
            mk(json!({"tool_choice": {"type": "tool", "name": "f"}})).tool_choice,
            Some(ToolChoice::Function { name: "f".into() })
        );
        assert_eq!(
            mk(json!({"tool_choice": {"type": "auto"}})).parallel_tool_calls,
            None
        );
        assert_eq!(
            mk(json!({"thinking": {"type": "enabled", "budget_tokens": 1024}}))
                .reasoning_effort
                .as_deref(),
            Some("low")
        );
        assert_eq!(
            mk(json!({"thinking": {"type": "enabled", "budget_tokens": 20000}}))
                .reasoning_effort
                .as_deref(),
            Some("high")
        );
        assert_eq!(
            mk(json!({"thinking": {"type": "disabled"}})).reasoning_effort,
            None
        );
        assert_eq!(
            mk(json!({"thinking": {"type": "adaptive"}, "output_config": {"effort": "max"}}))
                .reasoning_effort
                .as_deref(),
            Some("high")
        );
        let c = mk(
            json!({"output_config": {"format": {"type": "json_schema", "schema": {"type": "object"}}}}),
        );
        assert!(matches!(
            c.response_format,
            Some(ResponseFormat::JsonSchema { .. })
        ));
        let c = mk(json!({"system": "plain", "stream": false}));
        assert_eq!(
            c.messages[0].content,
            Some(MessageContent::Text("plain".into()))
        );
        assert!(!c.wants_usage_in_stream());
    }

    #[test]
    fn anthropic_only_features_are_rejected_strictly_and_skipped_for_routing() {
        let cases = [
            (
                json!({"tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 3}]}),
                "tools[0]",
            ),
            (
                json!({"messages": [{"role": "user", "content": [{"type": "search_result", "source": "s", "title": "t", "content": []}]}]}),
                "messages[0].content[0]",
            ),
            (
                json!({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": [
                {"type": "server_tool_use", "id": "s", "name": "web_search", "input": {}}]}]}),
                "messages[1].content[0]",
            ),
            (
                json!({"messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "file", "file_id": "f"}}]}]}),
                "messages[0].content[0].source",
            ),
            (
                json!({"messages": [{"role": "user", "content": [{"type": "document", "source": {"type": "url", "url": "https://x/a.pdf"}}]}]}),
                "messages[0].content[0].source",
            ),
            (
                json!({"tool_choice": {"type": "future_choice"}}),
                "tool_choice",
            ),
        ];
        for (patch, param) in cases {
            let mut v = json!({"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]});
            for (k, val) in patch.as_object().unwrap() {
                v[k] = val.clone();
            }
            let req: MessagesRequest = serde_json::from_value(v).unwrap();
            let err = messages_to_chat(&req).unwrap_err();
            assert_eq!(err.param.as_deref(), Some(param), "{patch}");
            // For routing, the Anthropic-only parts are skipped, not reported.
            let lenient = messages_to_chat_for_routing(&req);
            assert!(
                lenient.tools.is_none() && lenient.tool_choice.is_none(),
                "{patch}"
            );
            assert!(
                lenient.messages.iter().all(|m| m.tool_calls.is_none()),
                "{patch}"
            );
        }
    }

    // ------------------------------------------------------------------ IR -> client response

    #[test]
    fn ir_response_to_anthropic_message() {
        let c: ChatCompletion = serde_json::from_value(json!({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o",
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant",
                "content": "Let me look.", "reasoning_content": "thinking...",
                "tool_calls": [
                    {"id": "call_a", "type": "function", "function": {"name": "f", "arguments": "{\"x\":1}"}},
                    {"id": "call_b", "type": "function", "function": {"name": "g", "arguments": "not json"}}
                ]}}],
            "usage": {"prompt_tokens": 120, "completion_tokens": 30, "total_tokens": 150,
                      "prompt_tokens_details": {"cached_tokens": 100}}
        }))
        .unwrap();
        let m = chat_to_messages(&c, "gpt-4o");
        assert_eq!(
            m.usage.as_ref().unwrap().input_tokens,
            20,
            "Anthropic input excludes cached tokens"
        );
        assert_eq!(m.usage.as_ref().unwrap().cache_read_input_tokens, Some(100));
        insta::assert_json_snapshot!("ir_response_to_anthropic_message", m);

        // Finish reasons, and tool_use whenever tools were called.
        for (finish, tools, want) in [
            ("stop", false, "end_turn"),
            ("length", false, "max_tokens"),
            ("content_filter", false, "refusal"),
            ("stop", true, "tool_use"),
        ] {
            let mut v = serde_json::to_value(&c).unwrap();
            v["choices"][0]["finish_reason"] = json!(finish);
            if !tools {
                v["choices"][0]["message"]["tool_calls"] = Value::Null;
            }
            let m = chat_to_messages(&serde_json::from_value(v).unwrap(), "x");
            assert_eq!(m.stop_reason.as_ref().unwrap().as_str(), want);
        }
        // An empty answer still has one (empty) text block.
        let mut v = serde_json::to_value(&c).unwrap();
        v["choices"][0]["message"] = json!({"role": "assistant", "content": null});
        v["usage"] = Value::Null;
        let m = chat_to_messages(&serde_json::from_value(v).unwrap(), "x");
        assert_eq!(
            serde_json::to_value(&m.content).unwrap(),
            json!([{"type": "text", "text": ""}])
        );
        assert_eq!(
            (
                m.usage.as_ref().unwrap().input_tokens,
                m.usage.as_ref().unwrap().output_tokens
            ),
            (0, 0)
        );
    }

    // ------------------------------------------------------------------ encoder

    fn chunk(delta: Value, finish: Value) -> ChatCompletionChunk {
        serde_json::from_value(json!({"id": "chatcmpl-9", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}))
        .unwrap()
    }

    fn ir_multi_tool_chunks() -> Vec<ChatCompletionChunk> {
        vec![
            chunk(json!({"role": "assistant", "content": ""}), Value::Null),
            chunk(json!({"reasoning_content": "Two "}), Value::Null),
            chunk(json!({"reasoning_content": "cities."}), Value::Null),
            chunk(json!({"content": "Checking"}), Value::Null),
            chunk(json!({"content": " both."}), Value::Null),
            chunk(json!({"tool_calls": [{"index": 0, "id": "call_A", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]}), Value::Null),
            chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\": \"Pa"}}]}), Value::Null),
            chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": "ris\"}"}}]}), Value::Null),
            chunk(json!({"tool_calls": [{"index": 1, "id": "call_B", "type": "function", "function": {"name": "get_weather", "arguments": "{\"ci"}}]}), Value::Null),
            chunk(json!({"tool_calls": [{"index": 1, "function": {"arguments": "ty\": \"Oslo\"}"}}]}), Value::Null),
            chunk(json!({}), json!("tool_calls")),
            serde_json::from_value(json!({"id": "chatcmpl-9", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o", "choices": [],
                "usage": {"prompt_tokens": 340, "completion_tokens": 89, "total_tokens": 429, "prompt_tokens_details": {"cached_tokens": 300}}})).unwrap(),
        ]
    }

    fn parse_sse(bytes: &[Bytes]) -> Vec<SseEvent> {
        let mut d = SseDecoder::default();
        let mut out = Vec::new();
        for b in bytes {
            d.feed(b);
            while let Some(e) = d.next_event().unwrap() {
                out.push(e);
            }
        }
        assert!(!d.has_partial());
        out
    }

    /// A Rust port of the SDK's `accumulate_event` (anthropic/lib/streaming/_messages.py):
    /// builds the final message from the events, failing on anything it would reject.
    fn sdk_accumulate(events: &[SseEvent]) -> wire::Message {
        let mut snapshot: Option<wire::Message> = None;
        let mut json_bufs: Vec<(u32, String)> = Vec::new();
        for e in events {
            let ev: StreamEvent = serde_json::from_str(&e.data).unwrap();
            assert_eq!(
                e.event.as_deref(),
                Some(ev.name()),
                "event name matches the type"
            );
            match ev {
                StreamEvent::MessageStart { message } => {
                    assert!(snapshot.is_none());
                    snapshot = Some(message);
                }
                other => {
                    let s = snapshot.as_mut().expect("message_start first");
                    match other {
                        StreamEvent::ContentBlockStart {
                            index,
                            content_block,
                        } => {
                            assert_eq!(
                                index as usize,
                                s.content.len(),
                                "blocks are numbered in order"
                            );
                            s.content.push(content_block);
                        }
                        StreamEvent::ContentBlockDelta { index, delta } => {
                            match (&mut s.content[index as usize], delta) {
                                (ContentBlock::Text(t), BlockDelta::TextDelta { text }) => {
                                    t.text.push_str(&text)
                                }
                                (
                                    ContentBlock::Thinking(t),
                                    BlockDelta::ThinkingDelta { thinking },
                                ) => t.thinking.push_str(&thinking),
                                (
                                    ContentBlock::ToolUse(u),
                                    BlockDelta::InputJsonDelta { partial_json },
                                ) => {
                                    let pos = json_bufs.iter().position(|(i, _)| *i == index);
                                    let buf = match pos {
                                        Some(p) => &mut json_bufs[p].1,
                                        None => {
                                            json_bufs.push((index, String::new()));
                                            &mut json_bufs.last_mut().unwrap().1
                                        }
                                    };
                                    buf.push_str(&partial_json);
                                    if let Ok(v) = serde_json::from_str(buf) {
                                        u.input = v;
                                    }
                                }
                                (b, d) => panic!("delta {d:?} does not fit block {b:?}"),
                            }
                        }
                        StreamEvent::ContentBlockStop { index } => {
                            assert!((index as usize) < s.content.len())
                        }
                        StreamEvent::MessageDelta { delta, usage } => {
                            s.stop_reason = delta.stop_reason;
                            s.stop_sequence = delta.stop_sequence;
                            let usage = usage.expect("message_delta usage");
                            let su = s.usage.get_or_insert_with(Default::default);
                            su.output_tokens = usage.output_tokens;
                            if let Some(v) = usage.input_tokens {
                                su.input_tokens = v;
                            }
                            if let Some(v) = usage.cache_creation_input_tokens {
                                su.cache_creation_input_tokens = Some(v);
                            }
                            if let Some(v) = usage.cache_read_input_tokens {
                                su.cache_read_input_tokens = Some(v);
                            }
                        }
                        StreamEvent::MessageStop | StreamEvent::Ping => {}
                        other => panic!("unexpected event {other:?}"),
                    }
                }
            }
        }
        snapshot.unwrap()
    }

    #[test]
    fn encoder_multi_tool_stream_event_by_event() {
        let mut enc = AnthropicStreamEncoder::new("gpt-4o", "msg_kr_1");
        let mut out = Vec::new();
        for c in ir_multi_tool_chunks() {
            enc.push(&c, &mut out);
        }
        enc.finish_ok(None, &mut out);
        let events = parse_sse(&out);
        let names: Vec<&str> = events.iter().map(|e| e.event.as_deref().unwrap()).collect();
        assert_eq!(
            names,
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop", // thinking
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop", // text
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop", // tool A
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop", // tool B
                "message_delta",
                "message_stop",
            ]
        );
        let datas: Vec<Value> = events
            .iter()
            .map(|e| serde_json::from_str(&e.data).unwrap())
            .collect();
        insta::assert_json_snapshot!("encoder_multi_tool_events", datas);

        let msg = sdk_accumulate(&events);
        assert_eq!(msg.id, "msg_kr_1");
        assert_eq!(msg.model, "gpt-4o");
        assert_eq!(msg.stop_reason, Some(StopReason::ToolUse));
        let content = serde_json::to_value(&msg.content).unwrap();
        assert_eq!(
            content,
            json!([
                {"type": "thinking", "thinking": "Two cities.", "signature": ""},
                {"type": "text", "text": "Checking both."},
                {"type": "tool_use", "id": "call_A", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "call_B", "name": "get_weather", "input": {"city": "Oslo"}}
            ])
        );
        assert_eq!(
            (
                msg.usage.as_ref().unwrap().input_tokens,
                msg.usage.as_ref().unwrap().output_tokens,
                msg.usage.as_ref().unwrap().cache_read_input_tokens,
                msg.usage.as_ref().unwrap().cache_creation_input_tokens
            ),
            (40, 89, Some(300), Some(0))
        );
    }

    #[test]
    fn encoder_error_has_no_message_stop_and_empty_stream_is_valid() {
        let mut enc = AnthropicStreamEncoder::new("m", "msg_2");
        let mut out = Vec::new();
        enc.push(&chunk(json!({"content": "partial"}), Value::Null), &mut out);
        enc.finish_error("overloaded_error", "upstream overloaded", &mut out);
        enc.finish_ok(None, &mut out); // ignored after an error
        let events = parse_sse(&out);
        let names: Vec<&str> = events.iter().map(|e| e.event.as_deref().unwrap()).collect();
        assert_eq!(
            names,
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "error"
            ]
        );
        assert_eq!(
            serde_json::from_str::<Value>(&events[3].data).unwrap(),
            json!({"type": "error", "error": {"type": "overloaded_error", "message": "upstream overloaded"}})
        );

        // No chunks at all, then a clean end: still a complete, valid message.
        let mut enc = AnthropicStreamEncoder::new("m", "msg_3");
        let mut out = Vec::new();
        let usage: Usage = serde_json::from_value(
            json!({"prompt_tokens": 5, "completion_tokens": 0, "total_tokens": 5}),
        )
        .unwrap();
        enc.finish_ok(Some(&usage), &mut out);
        let events = parse_sse(&out);
        let msg = sdk_accumulate(&events);
        assert_eq!(msg.stop_reason, Some(StopReason::EndTurn));
        assert_eq!(msg.usage.as_ref().unwrap().input_tokens, 5);
        assert!(msg.content.is_empty());
    }

    #[test]
    fn encoder_handles_interleaved_tool_arguments_and_missing_ids() {
        let mut enc = AnthropicStreamEncoder::new("m", "msg_4");
        let mut out = Vec::new();
        for c in [
            chunk(
                json!({"tool_calls": [{"index": 0, "id": "a", "function": {"name": "f", "arguments": "{\"x\""}}]}),
                Value::Null,
            ),
            chunk(
                json!({"tool_calls": [{"index": 1, "function": {"name": "g", "arguments": "{}"}}]}),
                Value::Null,
            ),
            chunk(
                json!({"tool_calls": [{"index": 0, "function": {"arguments": ": 1}"}}]}),
                Value::Null,
            ),
            chunk(json!({"content": "done"}), json!("stop")),
        ] {
            enc.push(&c, &mut out);
        }
        enc.finish_ok(None, &mut out);
        let msg = sdk_accumulate(&parse_sse(&out));
        assert_eq!(
            serde_json::to_value(&msg.content).unwrap(),
            json!([
                {"type": "tool_use", "id": "a", "name": "f", "input": {"x": 1}},
                {"type": "tool_use", "id": "toolu_msg_4_1", "name": "g", "input": {}},
                {"type": "text", "text": "done"}
            ])
        );
        assert_eq!(
            msg.stop_reason,
            Some(StopReason::ToolUse),
            "tool calls were made"
        );
    }

    #[test]
    fn decoder_then_encoder_preserves_the_answer() {
        let (chunks, fin) = decode(&multi_tool_stream());
        assert_eq!(fin, Ok(()));
        let mut enc = AnthropicStreamEncoder::new("claude-sonnet-4-5-20250929", "msg_1");
        let mut out = Vec::new();
        for c in &chunks {
            enc.push(c, &mut out);
        }
        enc.finish_ok(None, &mut out);
        let msg = sdk_accumulate(&parse_sse(&out));
        let content = serde_json::to_value(&msg.content).unwrap();
        assert_eq!(
            content[1],
            json!({"type": "text", "text": "Checking both."})
        );
        assert_eq!(content[2]["input"], json!({"city": "Paris"}));
        assert_eq!(content[3]["input"], json!({"city": "Oslo", "unit": "c"}));
        assert_eq!(
            (
                msg.usage.as_ref().unwrap().input_tokens,
                msg.usage.as_ref().unwrap().output_tokens,
                msg.usage.as_ref().unwrap().cache_read_input_tokens
            ),
            (40, 89, Some(300)),
            "usage survives the round trip"
        );
    }

    // ------------------------------------------------------------------ native passthrough

    #[test]
    fn native_request_is_faithful() {
        let client = json!({
            "model": "claude-latest-alias",
            "max_tokens": 4000,
            "system": [{"type": "text", "text": "sys", "cache_control": {"type": "ephemeral", "ttl": "1h"}}],
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}},
                    {"type": "search_result", "source": "s", "title": "t", "content": [{"type": "text", "text": "x"}], "citations": {"enabled": true}}]},
                {"role": "assistant", "content": [{"type": "thinking", "thinking": "t", "signature": "sig=="},
                    {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {"query": "q"}}]}
            ],
            "tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 2},
                      {"name": "f", "input_schema": {"type": "object"}, "cache_control": {"type": "ephemeral"}}],
            "thinking": {"type": "enabled", "budget_tokens": 2048},
            "context_management": {"edits": []},
            "temperature": 0.25,
            "stream": true
        });
        let req: MessagesRequest = serde_json::from_value(client.clone()).unwrap();
        let up = AnthropicAdapter
            .native_request(
                &req,
                &target(),
                Some("prompt-caching-2024-07-31,context-1m-2025-08-07"),
            )
            .unwrap();
        let mut want = client;
        want["model"] = json!("claude-sonnet-4-5-20250929");
        assert_eq!(body_of(&up), want);
        assert_eq!(up.path_and_query, "/v1/messages");
        assert_eq!(
            up.headers["anthropic-beta"],
            "prompt-caching-2024-07-31,context-1m-2025-08-07"
        );
        assert_eq!(up.headers["x-api-key"], "sk-ant-test-canary");
        assert_eq!(up.headers["anthropic-version"], "2023-06-01");
        // Header injection is refused.
        let err = AnthropicAdapter
            .native_request(&req, &target(), Some("a\r\nx-evil: 1"))
            .unwrap_err();
        assert_eq!(err.param.as_deref(), Some("anthropic-beta"));
        // A model id needing escapes is written correctly.
        let t = Target {
            upstream_model: "we\"ird\\model",
            ..target()
        };
        let up = AnthropicAdapter.native_request(&req, &t, None).unwrap();
        assert_eq!(body_of(&up)["model"], json!("we\"ird\\model"));
        assert!(up.headers.get("anthropic-beta").is_none());
    }

    #[test]
    fn native_response_and_stream_observer() {
        let m = native_response_usage(&serde_json::to_vec(&anthropic_message()).unwrap()).unwrap();
        assert_eq!(usage_to_ir(m.usage.as_ref().unwrap()).prompt_tokens, 1120);
        assert_eq!(m.stop_reason, Some(StopReason::ToolUse));
        assert!(native_response_usage(b"not json").is_err());

        let events = multi_tool_stream();
        let mut obs = NativeStreamObserver::new();
        for (i, e) in events.iter().enumerate() {
            let sig = obs.on_event(e).unwrap();
            assert_eq!(sig == StreamSignal::Done, i == events.len() - 1);
            if i < 2 {
                assert!(!obs.saw_content(), "message_start and ping are not content");
            }
        }
        assert!(obs.saw_content());
        assert!(obs.has_usage());
        assert_eq!(obs.finish(), Ok(()));
        assert_eq!(obs.finish_reason(), Some(FinishReason::ToolCalls));
        let u = obs.usage();
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens, u.cached_tokens()),
            (340, 89, 300)
        );

        let mut obs = NativeStreamObserver::new();
        for e in &events[..events.len() - 1] {
            obs.on_event(e).unwrap();
        }
        assert_eq!(obs.finish(), Err(DecodeError::Truncated));
        let err = obs
            .on_event(&sse(
                "error",
                json!({"type": "error", "error": {"type": "rate_limit_error", "message": "slow"}}),
            ))
            .unwrap_err();
        let DecodeError::StreamError(e) = err else {
            panic!()
        };
        assert_eq!((e.kind, e.status), (UpstreamErrorKind::RateLimited, 429));
    }
}

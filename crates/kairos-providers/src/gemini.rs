//! Google Gemini (Generative Language API): canonical (OpenAI-shaped) chat and embeddings
//! requests translated to `generateContent`, `streamGenerateContent?alt=sse` and
//! `batchEmbedContents`, and their answers translated back.
//!
//! - The key travels only in the `x-goog-api-key` header (marked sensitive), never as `?key=`
//!   (LiteLLM leaked Gemini keys through URLs in errors and logs).
//! - Gemini has no `[DONE]`: a stream is complete when every candidate has sent a
//!   `finishReason`; [`GeminiStreamDecoder::finish`] reports a stream cut before that as
//!   [`DecodeError::Truncated`], and emits the (cumulative, last-seen) usage chunk otherwise.
//! - Gemini 3 rejects replayed function calls without a `thoughtSignature`, and the OpenAI shape
//!   cannot carry one back. With [`GeminiAdapter::thought_signature_placeholder`] (the default)
//!   the first function call of each replayed model turn carries Google's documented
//!   validator-skip value instead (the model then lacks its earlier reasoning, but the request
//!   is valid). Signatures are deliberately not smuggled through tool-call ids: ids must stay
//!   short and portable, because the next turn of the conversation may be routed to another
//!   provider (OpenAI caps ids at 40 characters).
//! - Embeddings: Gemini reports no token usage for `batchEmbedContents`, so the response says 0
//!   prompt tokens (the gateway estimates); a `usageMetadata`, should one appear, is used.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, header};
use kairos_api::gemini as g;
use kairos_api::openai::{
    ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, Choice, ChunkChoice,
    CompletionTokensDetails, ContentPart, Delta, Embedding, EmbeddingInput, EmbeddingRequest,
    EmbeddingResponse, EmbeddingUsage, EmbeddingVector, EncodingFormat, FinishReason, FunctionCall,
    FunctionCallDelta, MessageContent, PromptTokensDetails, ResponseFormat, ResponseMessage, Role,
    ToolCall, ToolCallDelta, ToolChoice, ToolKind, Usage,
};
use kairos_api::sse::SseEvent;
use serde_json::Value;

use crate::adapter::{
    Adapter, ApiKind, ChatStreamDecoder, DecodeError, StreamSignal, Target, TranslateError,
    UpstreamError, UpstreamErrorKind, UpstreamRequest, retry_after, sanitize_message,
};
use crate::openai::escape_path_segment;

/// The `thoughtSignature` value Google documents for function calls that did not come from the
/// current model (or whose signature was lost): it tells Gemini 3 to skip signature validation.
pub const THOUGHT_SIGNATURE_PLACEHOLDER: &str = "skip_thought_signature_validator";

/// `thinkingBudget` for each OpenAI `reasoning_effort`.
const THINKING_BUDGETS: &[(&str, i32)] = &[
    ("none", 0),
    ("minimal", 512),
    ("low", 1024),
    ("medium", 8192),
    ("high", 24576),
    ("xhigh", 24576),
];

/// The Gemini API adapter. Base URL (from config): `https://generativelanguage.googleapis.com`.
#[derive(Debug, Clone)]
pub struct GeminiAdapter {
    /// The API version path segment. `v1beta` by default: `responseJsonSchema`,
    /// `parametersJsonSchema` and `thinkingConfig` need it.
    pub api_version: String,
    /// Put [`THOUGHT_SIGNATURE_PLACEHOLDER`] on replayed function calls (see the module docs).
    pub thought_signature_placeholder: bool,
}

impl Default for GeminiAdapter {
    fn default() -> Self {
        GeminiAdapter {
            api_version: "v1beta".to_owned(),
            thought_signature_placeholder: true,
        }
    }
}

/// The model id without the `models/` resource prefix some configs carry.
fn model_id(model: &str) -> &str {
    model.strip_prefix("models/").unwrap_or(model)
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A completion id for responses without `responseId`: unique within the process and over time.
fn generated_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    // Truncation to 64 bits is fine: this only needs to differ between responses.
    let nanos = u64::try_from(nanos & u128::from(u64::MAX)).unwrap_or(0);
    format!("chatcmpl-gemini{nanos:x}{n:x}")
}

/// Prefix of the tool-call ids of one response: `call_` plus up to the last 16 alphanumerics of
/// the response id, so ids differ between turns (Anthropic rejects duplicate tool-use ids and a
/// conversation may move there) while staying short and `[A-Za-z0-9_]`.
fn call_id_prefix(response_id: &str) -> String {
    let alnum: String = response_id
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect();
    let tail = &alnum[alnum.len().saturating_sub(16)..];
    if tail.is_empty() {
        "call".to_owned()
    } else {
        format!("call_{tail}")
    }
}

fn index_u32(i: usize) -> u32 {
    u32::try_from(i).unwrap_or(u32::MAX)
}

impl GeminiAdapter {
    fn path(&self, target: &Target<'_>, method: &str) -> String {
        format!(
            "/{}/models/{}:{method}",
            escape_path_segment(&self.api_version),
            escape_path_segment(model_id(target.upstream_model))
        )
    }

    fn headers(&self, target: &Target<'_>) -> Result<HeaderMap, TranslateError> {
        let mut h = HeaderMap::with_capacity(2);
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
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
            h.insert(HeaderName::from_static("x-goog-api-key"), v);
        }
        Ok(h)
    }

    /// Canonical chat request -> `GenerateContentRequest` (pure; exposed for tests and fuzzing).
    pub fn translate_request(
        &self,
        req: &ChatCompletionRequest,
    ) -> Result<g::GenerateContentRequest, TranslateError> {
        let mut system: Vec<g::Part> = Vec::new();
        let mut contents: Vec<g::Content> = Vec::new();
        // tool_call id -> function name, from the assistant messages seen so far.
        let mut call_names: HashMap<&str, &str> = HashMap::new();

        for (i, m) in req.messages.iter().enumerate() {
            match m.role {
                Role::System | Role::Developer => {
                    if let Some(c) = &m.content {
                        system.extend(text_parts(c, i, "system")?);
                    }
                }
                Role::User => {
                    push_content(&mut contents, "user", user_parts(m.content.as_ref(), i)?)
                }
                Role::Assistant => {
                    let mut parts = match &m.content {
                        Some(c) => text_parts(c, i, "assistant")?,
                        None => Vec::new(),
                    };
                    for (j, call) in m.tool_calls.iter().flatten().enumerate() {
                        let args = parse_arguments(&call.function.arguments, i, j)?;
                        call_names.insert(call.id.as_str(), call.function.name.as_str());
                        parts.push(g::Part {
                            function_call: Some(g::FunctionCall {
                                id: None,
                                name: call.function.name.clone(),
                                args: Some(args),
                            }),
                            thought_signature: (j == 0 && self.thought_signature_placeholder)
                                .then(|| THOUGHT_SIGNATURE_PLACEHOLDER.to_owned()),
                            ..g::Part::default()
                        });
                    }
                    push_content(&mut contents, "model", parts);
                }
                Role::Tool => {
                    let param = format!("messages[{i}].tool_call_id");
                    let id = m.tool_call_id.as_deref().ok_or_else(|| {
                        TranslateError::new("a tool message needs `tool_call_id`", Some(&param))
                    })?;
                    let name = call_names.get(id).copied().ok_or_else(|| {
                        TranslateError::new(
                            "`tool_call_id` does not match a tool call of an earlier assistant message",
                            Some(&param),
                        )
                    })?;
                    push_content(
                        &mut contents,
                        "user",
                        vec![function_response(name, m.content.as_ref())],
                    );
                }
                Role::Function => {
                    let name = m.name.as_deref().ok_or_else(|| {
                        TranslateError::new(
                            "a function message needs `name`",
                            Some(&format!("messages[{i}].name")),
                        )
                    })?;
                    push_content(
                        &mut contents,
                        "user",
                        vec![function_response(name, m.content.as_ref())],
                    );
                }
            }
        }

        let mut system_instruction = (!system.is_empty()).then_some(g::Content {
            role: None,
            parts: system,
        });
        if contents.is_empty() {
            // Gemini requires `contents`; a system-only conversation is sent as the user turn.
            match system_instruction.take() {
                Some(s) => contents.push(g::Content {
                    role: Some("user".to_owned()),
                    parts: s.parts,
                }),
                None => {
                    return Err(TranslateError::new(
                        "the request has no message content to send",
                        Some("messages"),
                    ));
                }
            }
        }

        let mut declarations = match &req.tools {
            Some(tools) => function_declarations(tools)?,
            None => Vec::new(),
        };
        let tool_config = match &req.tool_choice {
            Some(choice) if !declarations.is_empty() => {
                Some(tool_config(choice, &mut declarations)?)
            }
            _ => None,
        };
        let tools = (!declarations.is_empty()).then(|| {
            vec![g::Tool {
                function_declarations: Some(declarations),
            }]
        });

        let generation_config = generation_config(req)?;
        Ok(g::GenerateContentRequest {
            contents,
            system_instruction,
            tools,
            tool_config,
            generation_config: (!generation_config.is_empty()).then_some(generation_config),
            safety_settings: None,
        })
    }
}

/// Append `parts` as a `role` turn, merging with the previous turn of the same role (Gemini
/// wants alternating turns; consecutive tool results become one user turn).
fn push_content(contents: &mut Vec<g::Content>, role: &str, parts: Vec<g::Part>) {
    if parts.is_empty() {
        return;
    }
    if let Some(last) = contents.last_mut()
        && last.role.as_deref() == Some(role)
    {
        last.parts.extend(parts);
        return;
    }
    contents.push(g::Content {
        role: Some(role.to_owned()),
        parts,
    });
}

/// Text-only content (system and assistant messages). Empty strings are dropped: Gemini rejects
/// empty text parts.
fn text_parts(c: &MessageContent, i: usize, who: &str) -> Result<Vec<g::Part>, TranslateError> {
    match c {
        MessageContent::Text(t) => Ok(if t.is_empty() {
            Vec::new()
        } else {
            vec![g::Part::text(t.as_str())]
        }),
        MessageContent::Parts(parts) => {
            let mut out = Vec::with_capacity(parts.len());
            for (k, p) in parts.iter().enumerate() {
                match p {
                    ContentPart::Text { text } | ContentPart::Refusal { refusal: text } => {
                        if !text.is_empty() {
                            out.push(g::Part::text(text.as_str()));
                        }
                    }
                    _ => {
                        return Err(TranslateError::new(
                            format!("{who} messages can only contain text for Gemini"),
                            Some(&format!("messages[{i}].content[{k}]")),
                        ));
                    }
                }
            }
            Ok(out)
        }
    }
}

fn user_parts(c: Option<&MessageContent>, i: usize) -> Result<Vec<g::Part>, TranslateError> {
    let Some(MessageContent::Parts(parts)) = c else {
        return match c {
            Some(c) => text_parts(c, i, "user"),
            None => Ok(Vec::new()),
        };
    };
    let mut out = Vec::with_capacity(parts.len());
    for (k, p) in parts.iter().enumerate() {
        let param = || format!("messages[{i}].content[{k}]");
        match p {
            ContentPart::Text { text } | ContentPart::Refusal { refusal: text } => {
                if !text.is_empty() {
                    out.push(g::Part::text(text.as_str()));
                }
            }
            ContentPart::ImageUrl { image_url } => out.push(image_part(&image_url.url, &param())?),
            ContentPart::InputAudio { input_audio } => {
                out.push(audio_part(input_audio, &param())?);
            }
            ContentPart::File { file } => out.push(file_part(file, &param())?),
        }
    }
    Ok(out)
}

fn inline(mime_type: &str, data: &str) -> g::Part {
    g::Part {
        inline_data: Some(g::Blob {
            mime_type: mime_type.to_owned(),
            data: data.to_owned(),
        }),
        ..g::Part::default()
    }
}

/// `data:<mime>[;param]*;base64,<data>` -> `(mime, data)`.
fn parse_data_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("data:")?;
    let (meta, data) = rest.split_once(',')?;
    let meta = meta.strip_suffix(";base64")?;
    let mime = meta.split(';').next()?.trim();
    (!mime.is_empty() && !data.is_empty()).then_some((mime, data))
}

/// A media type from a URL's or file name's extension.
fn guess_mime(name: &str) -> Option<&'static str> {
    let path = name.split(['?', '#']).next().unwrap_or(name);
    let file = path.rsplit('/').next().unwrap_or(path);
    let (_, ext) = file.rsplit_once('.')?;
    Some(match ext.to_ascii_lowercase().as_str() {
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "heic" => "image/heic",
        "heif" => "image/heif",
        "pdf" => "application/pdf",
        "txt" => "text/plain",
        "mp3" => "audio/mp3",
        "wav" => "audio/wav",
        "mp4" => "video/mp4",
        _ => return None,
    })
}

fn image_part(url: &str, param: &str) -> Result<g::Part, TranslateError> {
    if url.starts_with("data:") {
        let (mime, data) = parse_data_url(url).ok_or_else(|| {
            TranslateError::new(
                "an image data URL must look like `data:<media type>;base64,<data>`",
                Some(param),
            )
        })?;
        return Ok(inline(mime, data));
    }
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    if lower.starts_with("https://") || lower.starts_with("http://") || lower.starts_with("gs://") {
        return Ok(g::Part {
            file_data: Some(g::FileData {
                mime_type: Some(guess_mime(url).unwrap_or("image/jpeg").to_owned()),
                file_uri: url.to_owned(),
            }),
            ..g::Part::default()
        });
    }
    Err(TranslateError::new(
        "image URLs must be https://, http://, gs:// or data: URLs",
        Some(param),
    ))
}

fn audio_part(v: &Value, param: &str) -> Result<g::Part, TranslateError> {
    let data = v
        .get("data")
        .and_then(Value::as_str)
        .filter(|d| !d.is_empty())
        .ok_or_else(|| TranslateError::new("input_audio needs base64 `data`", Some(param)))?;
    let format = v.get("format").and_then(Value::as_str).unwrap_or("wav");
    let mime = match format {
        "wav" => "audio/wav".to_owned(),
        "mp3" => "audio/mp3".to_owned(),
        other => format!("audio/{}", other.to_ascii_lowercase()),
    };
    Ok(inline(&mime, data))
}

fn file_part(v: &Value, param: &str) -> Result<g::Part, TranslateError> {
    let Some(file_data) = v
        .get("file_data")
        .and_then(Value::as_str)
        .filter(|d| !d.is_empty())
    else {
        return Err(TranslateError::new(
            "Gemini needs file content inline (`file_data`); `file_id` references cannot be sent",
            Some(param),
        ));
    };
    if file_data.starts_with("data:") {
        let (mime, data) = parse_data_url(file_data).ok_or_else(|| {
            TranslateError::new(
                "`file_data` must be base64 or `data:<media type>;base64,<data>`",
                Some(param),
            )
        })?;
        return Ok(inline(mime, data));
    }
    let mime = v
        .get("filename")
        .and_then(Value::as_str)
        .and_then(guess_mime)
        .unwrap_or("application/pdf");
    Ok(inline(mime, file_data))
}

/// Tool-call arguments (JSON text) -> a JSON object. Empty text means no arguments.
fn parse_arguments(args: &str, i: usize, j: usize) -> Result<Value, TranslateError> {
    let param = || format!("messages[{i}].tool_calls[{j}].function.arguments");
    if args.trim().is_empty() {
        return Ok(Value::Object(serde_json::Map::new()));
    }
    match serde_json::from_str::<Value>(args) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err(TranslateError::new(
            "tool call arguments must be a JSON object",
            Some(&param()),
        )),
        Err(_) => Err(TranslateError::new(
            "tool call arguments are not valid JSON",
            Some(&param()),
        )),
    }
}

/// A tool result: `{"content": <parsed JSON, or the text>}`.
fn function_response(name: &str, content: Option<&MessageContent>) -> g::Part {
    let text = content.map(|c| c.text().into_owned()).unwrap_or_default();
    let value = serde_json::from_str::<Value>(&text).unwrap_or(Value::String(text));
    let mut response = serde_json::Map::with_capacity(1);
    response.insert("content".to_owned(), value);
    g::Part {
        function_response: Some(g::FunctionResponse {
            id: None,
            name: name.to_owned(),
            response: Value::Object(response),
        }),
        ..g::Part::default()
    }
}

fn function_declarations(
    tools: &[kairos_api::openai::Tool],
) -> Result<Vec<g::FunctionDeclaration>, TranslateError> {
    let mut out = Vec::with_capacity(tools.len());
    for (i, t) in tools.iter().enumerate() {
        match (t.kind, &t.function) {
            (ToolKind::Function, Some(f)) => out.push(g::FunctionDeclaration {
                name: f.name.clone(),
                description: f.description.clone(),
                parameters: None,
                parameters_json_schema: f.parameters.clone(),
            }),
            _ => {
                return Err(TranslateError::new(
                    "Gemini supports only `function` tools",
                    Some(&format!("tools[{i}]")),
                ));
            }
        }
    }
    Ok(out)
}

fn calling(mode: g::FunctionCallingMode, names: Option<Vec<String>>) -> g::ToolConfig {
    g::ToolConfig {
        function_calling_config: Some(g::FunctionCallingConfig {
            mode: Some(mode),
            allowed_function_names: names,
        }),
    }
}

/// `tool_choice` -> `toolConfig.functionCallingConfig`. `allowed_tools` with mode `auto` narrows
/// the declarations instead (Gemini only honours `allowedFunctionNames` with mode `ANY`).
fn tool_config(
    choice: &ToolChoice,
    declarations: &mut Vec<g::FunctionDeclaration>,
) -> Result<g::ToolConfig, TranslateError> {
    use g::FunctionCallingMode as Mode;
    Ok(match choice {
        ToolChoice::None => calling(Mode::None, None),
        ToolChoice::Auto => calling(Mode::Auto, None),
        ToolChoice::Required => calling(Mode::Any, None),
        ToolChoice::Function { name } => calling(Mode::Any, Some(vec![name.clone()])),
        ToolChoice::Other(v) => {
            let unsupported =
                || TranslateError::new("unsupported `tool_choice` for Gemini", Some("tool_choice"));
            if v.get("type").and_then(Value::as_str) != Some("allowed_tools") {
                return Err(unsupported());
            }
            let allowed = v.get("allowed_tools").ok_or_else(unsupported)?;
            let names: Vec<String> = allowed
                .get("tools")
                .and_then(Value::as_array)
                .ok_or_else(unsupported)?
                .iter()
                .filter_map(|t| t.pointer("/function/name").and_then(Value::as_str))
                .map(str::to_owned)
                .collect();
            if names.is_empty() {
                return Err(unsupported());
            }
            match allowed.get("mode").and_then(Value::as_str) {
                Some("required") => calling(Mode::Any, Some(names)),
                Some("auto") | None => {
                    declarations.retain(|d| names.contains(&d.name));
                    calling(Mode::Auto, None)
                }
                Some(_) => return Err(unsupported()),
            }
        }
    })
}

fn generation_config(req: &ChatCompletionRequest) -> Result<g::GenerationConfig, TranslateError> {
    let top_k = match req.extra.get("top_k") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .and_then(|k| u32::try_from(k).ok())
                .ok_or_else(|| {
                    TranslateError::new("`top_k` must be a non-negative integer", Some("top_k"))
                })?,
        ),
    };
    let mut gc = g::GenerationConfig {
        temperature: req.temperature,
        top_p: req.top_p,
        top_k,
        candidate_count: req.n,
        max_output_tokens: req.output_cap(),
        stop_sequences: req
            .stop
            .as_ref()
            .map(kairos_api::openai::Stop::to_vec)
            .filter(|s| !s.is_empty()),
        seed: req.seed,
        presence_penalty: req.presence_penalty,
        frequency_penalty: req.frequency_penalty,
        ..g::GenerationConfig::default()
    };
    match &req.response_format {
        None | Some(ResponseFormat::Text) => {}
        Some(ResponseFormat::JsonObject) => {
            gc.response_mime_type = Some("application/json".to_owned());
        }
        Some(ResponseFormat::JsonSchema { json_schema }) => {
            gc.response_mime_type = Some("application/json".to_owned());
            gc.response_json_schema = json_schema.schema.clone();
        }
    }
    if let Some(effort) = &req.reasoning_effort {
        let budget = THINKING_BUDGETS
            .iter()
            .find(|(name, _)| *name == effort.as_str())
            .map(|(_, b)| *b)
            .ok_or_else(|| {
                TranslateError::new(
                    "`reasoning_effort` must be none, minimal, low, medium, high or xhigh",
                    Some("reasoning_effort"),
                )
            })?;
        gc.thinking_config = Some(g::ThinkingConfig {
            thinking_budget: Some(budget),
            // Ask for thought summaries so they come back as `reasoning_content`.
            include_thoughts: (budget > 0).then_some(true),
            thinking_level: None,
        });
    }
    Ok(gc)
}

// ---------------------------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------------------------

/// `finishReason` -> OpenAI `finish_reason` (`None` while the candidate is still generating).
fn finish_reason(reason: &str, has_tool_calls: bool) -> Option<FinishReason> {
    Some(match reason {
        "" | "FINISH_REASON_UNSPECIFIED" => return None,
        "STOP" if has_tool_calls => FinishReason::ToolCalls,
        "STOP" => FinishReason::Stop,
        "MAX_TOKENS" => FinishReason::Length,
        "SAFETY"
        | "RECITATION"
        | "BLOCKLIST"
        | "PROHIBITED_CONTENT"
        | "SPII"
        | "IMAGE_SAFETY"
        | "IMAGE_PROHIBITED_CONTENT"
        | "IMAGE_RECITATION" => FinishReason::ContentFilter,
        other => FinishReason::Other(other.to_ascii_lowercase()),
    })
}

/// `usageMetadata` -> OpenAI usage. `None` when it carries no counts at all (unknown, so the
/// gateway estimates); explicit zeros stay zeros.
fn usage(u: &g::UsageMetadata) -> Option<Usage> {
    if u.prompt_token_count.is_none()
        && u.candidates_token_count.is_none()
        && u.total_token_count.is_none()
    {
        return None;
    }
    let prompt = u
        .prompt_token_count
        .unwrap_or(0)
        .saturating_add(u.tool_use_prompt_token_count.unwrap_or(0));
    let completion = u
        .candidates_token_count
        .unwrap_or(0)
        .saturating_add(u.thoughts_token_count.unwrap_or(0));
    Some(Usage {
        prompt_tokens: prompt,
        completion_tokens: completion,
        total_tokens: prompt.saturating_add(completion),
        prompt_tokens_details: u.cached_content_token_count.map(|c| PromptTokensDetails {
            cached_tokens: Some(c),
            ..PromptTokensDetails::default()
        }),
        completion_tokens_details: u.thoughts_token_count.map(|t| CompletionTokensDetails {
            reasoning_tokens: Some(t),
            ..CompletionTokensDetails::default()
        }),
        cost: None,
    })
}

/// What the parts of one candidate (or one streamed piece of it) amount to.
#[derive(Default)]
struct Collected {
    text: Option<String>,
    reasoning: Option<String>,
    tool_calls: Vec<ToolCall>,
}

/// Split parts into answer text, thought text and function calls. `next_call` numbers the
/// calls of this candidate (it carries over between stream chunks). Empty texts are skipped
/// when `skip_empty` (stream chunks often end with `{"text": ""}`).
fn collect_parts(
    parts: Vec<g::Part>,
    prefix: &str,
    candidate: u32,
    next_call: &mut u32,
    skip_empty: bool,
) -> Collected {
    let mut out = Collected::default();
    for p in parts {
        if let Some(call) = p.function_call {
            let n = *next_call;
            *next_call = next_call.saturating_add(1);
            let arguments = match call.args {
                None | Some(Value::Null) => "{}".to_owned(),
                Some(a) => serde_json::to_string(&a).unwrap_or_else(|_| "{}".to_owned()),
            };
            out.tool_calls.push(ToolCall {
                id: call
                    .id
                    .filter(|id| !id.is_empty())
                    .unwrap_or_else(|| format!("{prefix}_{candidate}_{n}")),
                kind: "function".to_owned(),
                function: FunctionCall {
                    name: call.name,
                    arguments,
                },
            });
        } else if let Some(text) = p.text {
            if skip_empty && text.is_empty() {
                continue;
            }
            let slot = if p.thought == Some(true) {
                &mut out.reasoning
            } else {
                &mut out.text
            };
            slot.get_or_insert_with(String::new).push_str(&text);
        }
    }
    out
}

/// `generateContent` response -> chat completion (pure; exposed for tests and fuzzing).
/// `model` is used when the response names no `modelVersion`.
pub fn translate_response(
    resp: g::GenerateContentResponse,
    model: &str,
    created: u64,
) -> Result<ChatCompletion, DecodeError> {
    let id = resp
        .response_id
        .filter(|s| !s.is_empty())
        .unwrap_or_else(generated_id);
    let prefix = call_id_prefix(&id);
    let mut choices = Vec::with_capacity(resp.candidates.len().max(1));
    if resp.candidates.is_empty() {
        if resp
            .prompt_feedback
            .as_ref()
            .and_then(|f| f.block_reason.as_deref())
            .is_none()
        {
            return Err(DecodeError::Invalid(
                "generateContent response has no candidates".to_owned(),
            ));
        }
        choices.push(Choice {
            index: 0,
            message: message(Collected::default()),
            finish_reason: Some(FinishReason::ContentFilter),
            logprobs: None,
        });
    }
    for (pos, cand) in resp.candidates.into_iter().enumerate() {
        let index = cand.index.unwrap_or(index_u32(pos));
        let parts = cand.content.map(|c| c.parts).unwrap_or_default();
        let mut calls = 0;
        let collected = collect_parts(parts, &prefix, index, &mut calls, false);
        let finish = cand
            .finish_reason
            .as_deref()
            .and_then(|r| finish_reason(r, !collected.tool_calls.is_empty()));
        choices.push(Choice {
            index,
            message: message(collected),
            finish_reason: finish,
            logprobs: None,
        });
    }
    Ok(ChatCompletion {
        id,
        object: "chat.completion".to_owned(),
        created,
        model: resp
            .model_version
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| model.to_owned()),
        choices,
        usage: resp.usage_metadata.as_ref().and_then(usage),
        service_tier: None,
        system_fingerprint: None,
    })
}

fn message(c: Collected) -> ResponseMessage {
    ResponseMessage {
        role: Role::Assistant,
        content: c.text,
        refusal: None,
        tool_calls: (!c.tool_calls.is_empty()).then_some(c.tool_calls),
        reasoning_content: c.reasoning,
        annotations: None,
        audio: None,
    }
}

// ---------------------------------------------------------------------------------------------
// Streaming
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Default)]
struct CandidateState {
    calls: u32,
    finished: bool,
}

/// `streamGenerateContent?alt=sse` events -> canonical chunks. Every event is a whole
/// `GenerateContentResponse`; there is no `[DONE]`, so [`ChatStreamDecoder::on_event`] always
/// returns `Continue` and completeness is judged in [`ChatStreamDecoder::finish`].
#[derive(Debug)]
pub struct GeminiStreamDecoder {
    upstream_model: String,
    created: u64,
    /// Set from the first chunk: (id, tool-call id prefix, model).
    ident: Option<(String, String, String)>,
    candidates: BTreeMap<u32, CandidateState>,
    usage: Option<Usage>,
}

impl GeminiStreamDecoder {
    pub fn new(upstream_model: &str) -> Self {
        Self::with_created(upstream_model, now_secs())
    }

    fn with_created(upstream_model: &str, created: u64) -> Self {
        GeminiStreamDecoder {
            upstream_model: model_id(upstream_model).to_owned(),
            created,
            ident: None,
            candidates: BTreeMap::new(),
            usage: None,
        }
    }
}

fn chunk(
    id: &str,
    model: &str,
    created: u64,
    choices: Vec<ChunkChoice>,
    usage: Option<Usage>,
) -> ChatCompletionChunk {
    ChatCompletionChunk {
        id: id.to_owned(),
        object: "chat.completion.chunk".to_owned(),
        created,
        model: model.to_owned(),
        choices,
        usage,
        service_tier: None,
        system_fingerprint: None,
    }
}

fn choice(index: u32, delta: Delta, finish_reason: Option<FinishReason>) -> Vec<ChunkChoice> {
    vec![ChunkChoice {
        index,
        delta,
        finish_reason,
        logprobs: None,
    }]
}

fn role_delta() -> Delta {
    Delta {
        role: Some(Role::Assistant),
        content: Some(String::new()),
        ..Delta::default()
    }
}

impl ChatStreamDecoder for GeminiStreamDecoder {
    fn on_event(
        &mut self,
        event: &SseEvent,
        out: &mut Vec<ChatCompletionChunk>,
    ) -> Result<StreamSignal, DecodeError> {
        let data = event.data.trim();
        if data.is_empty() || data == "[DONE]" {
            return Ok(StreamSignal::Continue);
        }
        let value: Value =
            serde_json::from_str(data).map_err(|e| DecodeError::invalid("stream chunk", e))?;
        if value.get("error").is_some_and(|e| !e.is_null()) {
            let status = value
                .pointer("/error/code")
                .and_then(Value::as_u64)
                .and_then(|c| u16::try_from(c).ok())
                .filter(|c| (400..=599).contains(c))
                .unwrap_or(500);
            return Err(DecodeError::StreamError(gemini_error(
                status,
                &HeaderMap::new(),
                data.as_bytes(),
            )));
        }
        let resp: g::GenerateContentResponse =
            serde_json::from_value(value).map_err(|e| DecodeError::invalid("stream chunk", e))?;

        let (id, prefix, model) = self.ident.get_or_insert_with(|| {
            let id = resp
                .response_id
                .clone()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(generated_id);
            let prefix = call_id_prefix(&id);
            let model = resp
                .model_version
                .clone()
                .filter(|m| !m.is_empty())
                .unwrap_or_else(|| self.upstream_model.clone());
            (id, prefix, model)
        });
        let created = self.created;

        if resp.candidates.is_empty()
            && resp
                .prompt_feedback
                .as_ref()
                .and_then(|f| f.block_reason.as_deref())
                .is_some()
        {
            let state = self.candidates.entry(0).or_insert_with(|| {
                out.push(chunk(
                    id,
                    model,
                    created,
                    choice(0, role_delta(), None),
                    None,
                ));
                CandidateState::default()
            });
            if !state.finished {
                state.finished = true;
                out.push(chunk(
                    id,
                    model,
                    created,
                    choice(0, Delta::default(), Some(FinishReason::ContentFilter)),
                    None,
                ));
            }
        }

        for (pos, cand) in resp.candidates.into_iter().enumerate() {
            let index = cand.index.unwrap_or(index_u32(pos));
            let state = self.candidates.entry(index).or_insert_with(|| {
                out.push(chunk(
                    id,
                    model,
                    created,
                    choice(index, role_delta(), None),
                    None,
                ));
                CandidateState::default()
            });
            let parts = cand.content.map(|c| c.parts).unwrap_or_default();
            let first_call = state.calls;
            let collected = collect_parts(parts, prefix, index, &mut state.calls, true);
            let tool_calls: Vec<ToolCallDelta> = collected
                .tool_calls
                .into_iter()
                .zip(first_call..)
                .map(|(call, n)| ToolCallDelta {
                    index: n,
                    id: Some(call.id),
                    kind: Some(call.kind),
                    function: Some(FunctionCallDelta {
                        name: Some(call.function.name),
                        arguments: Some(call.function.arguments),
                    }),
                })
                .collect();
            let delta = Delta {
                role: None,
                content: collected.text,
                refusal: None,
                tool_calls: (!tool_calls.is_empty()).then_some(tool_calls),
                reasoning_content: collected.reasoning,
            };
            if delta.has_content() {
                out.push(chunk(id, model, created, choice(index, delta, None), None));
            }
            if let Some(fr) = cand
                .finish_reason
                .as_deref()
                .and_then(|r| finish_reason(r, state.calls > 0))
            {
                state.finished = true;
                out.push(chunk(
                    id,
                    model,
                    created,
                    choice(index, Delta::default(), Some(fr)),
                    None,
                ));
            }
        }

        // Cumulative: the last report wins.
        if let Some(u) = resp.usage_metadata.as_ref().and_then(usage) {
            self.usage = Some(u);
        }
        Ok(StreamSignal::Continue)
    }

    fn finish(&mut self, out: &mut Vec<ChatCompletionChunk>) -> Result<(), DecodeError> {
        if self.candidates.is_empty() || self.candidates.values().any(|c| !c.finished) {
            return Err(DecodeError::Truncated);
        }
        if let (Some(u), Some((id, _, model))) = (self.usage.take(), &self.ident) {
            out.push(chunk(id, model, self.created, Vec::new(), Some(u)));
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// The `reason` of an `ErrorInfo` detail (`API_KEY_INVALID`, ...).
fn error_reason(details: &[Value]) -> Option<String> {
    details.iter().find_map(|d| {
        let ty = d.get("@type")?.as_str()?;
        if !ty.ends_with("ErrorInfo") {
            return None;
        }
        d.get("reason")?.as_str().map(str::to_owned)
    })
}

/// `RetryInfo.retryDelay` (`"12s"`, `"0.5s"`).
fn retry_delay(details: &[Value]) -> Option<Duration> {
    details.iter().find_map(|d| {
        let ty = d.get("@type")?.as_str()?;
        if !ty.ends_with("RetryInfo") {
            return None;
        }
        let secs: f64 = d
            .get("retryDelay")?
            .as_str()?
            .trim()
            .strip_suffix('s')?
            .parse()
            .ok()?;
        (secs.is_finite() && (0.0..86_400.0).contains(&secs)).then(|| Duration::from_secs_f64(secs))
    })
}

fn mentions_token_limit(lower: &str) -> bool {
    (lower.contains("token count") && lower.contains("exceed"))
        || lower.contains("maximum number of tokens")
        || lower.contains("context length")
        || lower.contains("context window")
        || lower.contains("too many tokens")
}

/// Classify a Gemini error body (also used for in-stream `{"error":..}` events).
pub fn gemini_error(status: u16, headers: &HeaderMap, body: &[u8]) -> UpstreamError {
    // Non-SSE streams wrap the error in an array. (Checked first: serde would also read a
    // one-element array as the struct, with an empty error.)
    let parsed = if body.trim_ascii_start().starts_with(b"[") {
        serde_json::from_slice::<Vec<g::GeminiErrorBody>>(body)
            .ok()
            .and_then(|v| v.into_iter().next())
    } else {
        serde_json::from_slice::<g::GeminiErrorBody>(body).ok()
    }
    .map(|b| b.error)
    .unwrap_or_default();
    let message = parsed.message.as_deref().unwrap_or("");
    let lower = message.to_ascii_lowercase();
    let reason = error_reason(&parsed.details);

    let mut kind = match parsed.status.as_deref() {
        Some("RESOURCE_EXHAUSTED") => UpstreamErrorKind::RateLimited,
        Some("INVALID_ARGUMENT") => UpstreamErrorKind::BadRequest,
        Some("UNAUTHENTICATED" | "PERMISSION_DENIED") => UpstreamErrorKind::Auth,
        // "User location is not supported", "free tier is not available in your country": a
        // provider-account problem, not the caller's.
        Some("FAILED_PRECONDITION") if status == 400 => UpstreamErrorKind::Auth,
        Some("NOT_FOUND") => UpstreamErrorKind::NotFound,
        Some("UNAVAILABLE") => UpstreamErrorKind::Overloaded,
        Some("INTERNAL" | "DEADLINE_EXCEEDED") => UpstreamErrorKind::Server,
        _ => UpstreamErrorKind::from_status(status),
    };
    // Gemini answers a bad key with 400 INVALID_ARGUMENT.
    if matches!(
        reason.as_deref(),
        Some("API_KEY_INVALID" | "API_KEY_EXPIRED")
    ) || (lower.contains("api key")
        && (lower.contains("not valid") || lower.contains("invalid") || lower.contains("expired")))
    {
        kind = UpstreamErrorKind::Auth;
    } else if kind == UpstreamErrorKind::BadRequest {
        if mentions_token_limit(&lower) {
            kind = UpstreamErrorKind::ContextLength;
        } else if lower.contains("payload size exceeds") {
            kind = UpstreamErrorKind::TooLarge;
        }
    }
    // 503/529 mean "overloaded" whatever status the body names.
    if matches!(status, 503 | 529) {
        kind = UpstreamErrorKind::Overloaded;
    }
    UpstreamError {
        status,
        kind,
        message: sanitize_message(if message.is_empty() {
            "upstream error"
        } else {
            message
        }),
        provider_code: reason.or(parsed.status),
        retry_after: retry_after(headers).or_else(|| retry_delay(&parsed.details)),
    }
}

// ---------------------------------------------------------------------------------------------
// Adapter
// ---------------------------------------------------------------------------------------------

fn encode_f32_le(values: &[f32]) -> String {
    let mut bytes = Vec::with_capacity(values.len() * 4);
    for v in values {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

impl Adapter for GeminiAdapter {
    fn api(&self) -> ApiKind {
        ApiKind::Gemini
    }

    fn chat_request(
        &self,
        req: &ChatCompletionRequest,
        target: &Target<'_>,
        stream: bool,
    ) -> Result<UpstreamRequest, TranslateError> {
        let body = self.translate_request(req)?;
        let body = serde_json::to_vec(&body)
            .map_err(|e| TranslateError::new(format!("cannot encode request: {e}"), None))?;
        let path_and_query = if stream {
            format!("{}?alt=sse", self.path(target, "streamGenerateContent"))
        } else {
            self.path(target, "generateContent")
        };
        Ok(UpstreamRequest {
            path_and_query,
            headers: self.headers(target)?,
            body: Bytes::from(body),
        })
    }

    fn chat_response(
        &self,
        body: &[u8],
        target: &Target<'_>,
    ) -> Result<ChatCompletion, DecodeError> {
        let resp: g::GenerateContentResponse = serde_json::from_slice(body)
            .map_err(|e| DecodeError::invalid("generateContent response", e))?;
        translate_response(resp, model_id(target.upstream_model), now_secs())
    }

    fn chat_stream_decoder(&self, target: &Target<'_>) -> Box<dyn ChatStreamDecoder> {
        Box::new(GeminiStreamDecoder::new(target.upstream_model))
    }

    fn embeddings_request(
        &self,
        req: &EmbeddingRequest,
        target: &Target<'_>,
    ) -> Result<UpstreamRequest, TranslateError> {
        let texts: Vec<&str> = match &req.input {
            EmbeddingInput::Text(t) => vec![t.as_str()],
            EmbeddingInput::Texts(v) => v.iter().map(String::as_str).collect(),
            EmbeddingInput::Tokens(_) | EmbeddingInput::TokenBatches(_) => {
                return Err(TranslateError::new(
                    "Gemini embeddings take text input, not token ids",
                    Some("input"),
                ));
            }
        };
        if texts.is_empty() {
            return Err(TranslateError::new(
                "`input` must not be empty",
                Some("input"),
            ));
        }
        let model = format!("models/{}", model_id(target.upstream_model));
        let body = g::BatchEmbedContentsRequest {
            requests: texts
                .into_iter()
                .map(|t| g::EmbedContentRequest {
                    model: model.clone(),
                    content: g::Content {
                        role: None,
                        parts: vec![g::Part::text(t)],
                    },
                    task_type: None,
                    title: None,
                    output_dimensionality: req.dimensions,
                })
                .collect(),
        };
        let body = serde_json::to_vec(&body)
            .map_err(|e| TranslateError::new(format!("cannot encode request: {e}"), None))?;
        Ok(UpstreamRequest {
            path_and_query: self.path(target, "batchEmbedContents"),
            headers: self.headers(target)?,
            body: Bytes::from(body),
        })
    }

    fn embeddings_response(
        &self,
        body: &[u8],
        req: &EmbeddingRequest,
        target: &Target<'_>,
    ) -> Result<EmbeddingResponse, DecodeError> {
        let resp: g::BatchEmbedContentsResponse = serde_json::from_slice(body)
            .map_err(|e| DecodeError::invalid("batchEmbedContents response", e))?;
        if resp.embeddings.len() != req.input.len() {
            return Err(DecodeError::Invalid(format!(
                "batchEmbedContents returned {} embeddings for {} inputs",
                resp.embeddings.len(),
                req.input.len()
            )));
        }
        let base64 = req.encoding_format == Some(EncodingFormat::Base64);
        let data = resp
            .embeddings
            .into_iter()
            .enumerate()
            .map(|(i, e)| Embedding {
                object: "embedding".to_owned(),
                embedding: if base64 {
                    EmbeddingVector::Base64(encode_f32_le(&e.values))
                } else {
                    EmbeddingVector::Float(e.values)
                },
                index: index_u32(i),
            })
            .collect();
        // Gemini does not report embedding usage: 0 unless a future response carries it.
        let prompt = resp
            .usage_metadata
            .and_then(|u| u.prompt_token_count)
            .unwrap_or(0);
        Ok(EmbeddingResponse {
            object: "list".to_owned(),
            data,
            model: model_id(target.upstream_model).to_owned(),
            usage: EmbeddingUsage {
                prompt_tokens: prompt,
                total_tokens: prompt,
            },
        })
    }

    fn upstream_error(&self, status: u16, headers: &HeaderMap, body: &[u8]) -> UpstreamError {
        gemini_error(status, headers, body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kairos_api::sse::SseDecoder;
    use serde_json::json;

    const KEY: &str = "AIzaSy-test-canary-0123456789";

    fn target() -> Target<'static> {
        Target {
            provider: "gemini",
            upstream_model: "gemini-2.5-flash",
            api_key: Some(KEY),
            default_max_tokens: 4096,
        }
    }

    fn chat(v: Value) -> ChatCompletionRequest {
        let mut v = v;
        v["model"] = json!("gemini-2.5-flash");
        serde_json::from_value(v).unwrap()
    }

    fn body_of(req: &ChatCompletionRequest) -> Value {
        let up = GeminiAdapter::default()
            .chat_request(req, &target(), false)
            .unwrap();
        serde_json::from_slice(&up.body).unwrap()
    }

    fn translate_err(req: &ChatCompletionRequest) -> TranslateError {
        GeminiAdapter::default().translate_request(req).unwrap_err()
    }

    fn response(v: Value) -> ChatCompletion {
        translate_response(
            serde_json::from_value(v).unwrap(),
            "gemini-2.5-flash",
            1_700_000_000,
        )
        .unwrap()
    }

    /// CRLF-framed SSE, as Gemini sends it.
    fn sse(events: &[Value]) -> Vec<u8> {
        let mut out = Vec::new();
        for e in events {
            out.extend_from_slice(b"data: ");
            out.extend_from_slice(serde_json::to_string(e).unwrap().as_bytes());
            out.extend_from_slice(b"\r\n\r\n");
        }
        out
    }

    /// Decode `bytes` fed in pieces of `piece` bytes; returns the chunks and the first error
    /// (from `on_event` or `finish`).
    fn decode(bytes: &[u8], piece: usize) -> (Vec<ChatCompletionChunk>, Result<(), DecodeError>) {
        let mut sse = SseDecoder::default();
        let mut dec = GeminiStreamDecoder::with_created("gemini-2.5-flash", 1_700_000_000);
        let mut out = Vec::new();
        for p in bytes.chunks(piece.max(1)) {
            sse.feed(p);
            while let Some(ev) = sse.next_event().unwrap() {
                match dec.on_event(&ev, &mut out) {
                    Ok(sig) => assert_eq!(sig, StreamSignal::Continue),
                    Err(e) => return (out, Err(e)),
                }
            }
        }
        assert!(!sse.has_partial());
        let r = dec.finish(&mut out);
        (out, r)
    }

    // ---- requests --------------------------------------------------------------------------

    #[test]
    fn request_text_system_and_parameters() {
        let mut r = chat(json!({
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "developer", "content": [{"type": "text", "text": "Answer in English."}]},
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello! How can I help?"},
                {"role": "user", "content": [{"type": "text", "text": "Name a colour."}, {"type": "text", "text": ""}]},
                {"role": "user", "content": "Just one."}
            ],
            "temperature": 0.2,
            "top_p": 0.9,
            "top_k": 40,
            "max_completion_tokens": 256,
            "max_tokens": 99,
            "n": 2,
            "stop": ["\n\n", "END"],
            "seed": 7,
            "presence_penalty": 0.5,
            "frequency_penalty": -0.5,
            "reasoning_effort": "low",
            "user": "u-1",
            "logit_bias": {"50256": -100}
        }));
        r.extra.insert("unknown_field".into(), json!(true));
        insta::assert_json_snapshot!("request_text_system_parameters", body_of(&r));
    }

    #[test]
    fn request_path_headers_and_key_never_in_url() {
        let a = GeminiAdapter::default();
        let r = chat(json!({"messages": [{"role": "user", "content": "hi"}]}));
        let up = a.chat_request(&r, &target(), false).unwrap();
        assert_eq!(
            up.path_and_query,
            "/v1beta/models/gemini-2.5-flash:generateContent"
        );
        let up_s = a.chat_request(&r, &target(), true).unwrap();
        assert_eq!(
            up_s.path_and_query,
            "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
        );
        assert_eq!(up.body, up_s.body, "the body does not depend on streaming");
        let e: EmbeddingRequest =
            serde_json::from_value(json!({"model": "e", "input": "x"})).unwrap();
        let up_e = a.embeddings_request(&e, &target()).unwrap();
        assert_eq!(
            up_e.path_and_query,
            "/v1beta/models/gemini-2.5-flash:batchEmbedContents"
        );
        for up in [&up, &up_s, &up_e] {
            assert!(!up.path_and_query.contains(KEY));
            assert!(!up.path_and_query.contains("key="));
            assert!(!String::from_utf8_lossy(&up.body).contains(KEY));
            let h = up.headers.get("x-goog-api-key").unwrap();
            assert_eq!(h, KEY);
            assert!(h.is_sensitive());
            assert!(up.headers.get("authorization").is_none());
            assert_eq!(up.headers.get("content-type").unwrap(), "application/json");
        }
        // `models/` prefixes are stripped; anything else is escaped into one segment.
        let t = Target {
            upstream_model: "models/gemini-2.5-pro",
            ..target()
        };
        assert_eq!(
            a.chat_request(&r, &t, false).unwrap().path_and_query,
            "/v1beta/models/gemini-2.5-pro:generateContent"
        );
        let t = Target {
            upstream_model: "x/../y?key=1#f:z",
            ..target()
        };
        assert_eq!(
            a.chat_request(&r, &t, false).unwrap().path_and_query,
            "/v1beta/models/x%2F..%2Fy%3Fkey%3D1%23f%3Az:generateContent"
        );
        // No key configured: no header.
        let t = Target {
            api_key: None,
            ..target()
        };
        assert!(
            a.chat_request(&r, &t, false)
                .unwrap()
                .headers
                .get("x-goog-api-key")
                .is_none()
        );
        let t = Target {
            api_key: Some("bad\nkey"),
            ..target()
        };
        assert!(a.chat_request(&r, &t, false).is_err());
    }

    #[test]
    fn request_images_audio_and_files() {
        let r = chat(json!({"messages": [{"role": "user", "content": [
            {"type": "text", "text": "Compare these."},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "high"}},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.WEBP?size=large#x"}},
            {"type": "image_url", "image_url": {"url": "http://example.com/photo"}},
            {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "mp3"}},
            {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0=", "filename": "a.pdf"}},
            {"type": "file", "file": {"file_data": "aGVsbG8=", "filename": "notes.txt"}}
        ]}]}));
        insta::assert_json_snapshot!("request_images_audio_files", body_of(&r));

        for (part, why) in [
            (
                json!({"type": "image_url", "image_url": {"url": "ftp://example.com/a.png"}}),
                "scheme",
            ),
            (
                json!({"type": "image_url", "image_url": {"url": "data:image/png,rawbytes"}}),
                "not base64",
            ),
            (
                json!({"type": "image_url", "image_url": {"url": "data:;base64,AAAA"}}),
                "no media type",
            ),
            (
                json!({"type": "input_audio", "input_audio": {"format": "wav"}}),
                "no audio data",
            ),
            (
                json!({"type": "file", "file": {"file_id": "file-abc"}}),
                "file id",
            ),
        ] {
            let r = chat(json!({"messages": [
                {"role": "user", "content": "first"},
                {"role": "user", "content": [{"type": "text", "text": "x"}, part]}
            ]}));
            let e = translate_err(&r);
            assert_eq!(
                e.param.as_deref(),
                Some("messages[1].content[1]"),
                "{why}: {e:?}"
            );
        }
        let r = chat(json!({"messages": [
            {"role": "system", "content": [{"type": "image_url", "image_url": {"url": "https://a/b.png"}}]},
            {"role": "user", "content": "x"}
        ]}));
        assert_eq!(
            translate_err(&r).param.as_deref(),
            Some("messages[0].content[0]")
        );
    }

    fn tool_conversation() -> ChatCompletionRequest {
        chat(json!({
            "messages": [
                {"role": "system", "content": "You can look up weather."},
                {"role": "user", "content": "Weather in Paris and Rome?"},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                    {"id": "call_b", "type": "function", "function": {"name": "get_time", "arguments": ""}}
                ]},
                {"role": "tool", "tool_call_id": "call_a", "content": "{\"temp_c\": 21, \"sky\": \"clear\"}"},
                {"role": "tool", "tool_call_id": "call_b", "content": "12:00"},
                {"role": "user", "content": "Thanks. Which is warmer?"}
            ],
            "tools": [
                {"type": "function", "function": {
                    "name": "get_weather", "description": "Current weather",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                   "required": ["city"], "additionalProperties": false},
                    "strict": true}},
                {"type": "function", "function": {"name": "get_time"}}
            ],
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
            "parallel_tool_calls": true
        }))
    }

    #[test]
    fn request_tools_and_tool_results() {
        insta::assert_json_snapshot!("request_tools_round_trip", body_of(&tool_conversation()));

        let a = GeminiAdapter {
            thought_signature_placeholder: false,
            ..GeminiAdapter::default()
        };
        let g = a.translate_request(&tool_conversation()).unwrap();
        assert!(
            g.contents
                .iter()
                .flat_map(|c| &c.parts)
                .all(|p| p.thought_signature.is_none())
        );
    }

    #[test]
    fn tool_errors_name_the_field() {
        let mut r = tool_conversation();
        r.messages[3].tool_call_id = Some("call_unknown".into());
        assert_eq!(
            translate_err(&r).param.as_deref(),
            Some("messages[3].tool_call_id")
        );
        r.messages[3].tool_call_id = None;
        assert_eq!(
            translate_err(&r).param.as_deref(),
            Some("messages[3].tool_call_id")
        );

        for bad in ["{not json", "[1,2]", "\"s\""] {
            let mut r = tool_conversation();
            r.messages[2].tool_calls.as_mut().unwrap()[1]
                .function
                .arguments = bad.into();
            let e = translate_err(&r);
            assert_eq!(
                e.param.as_deref(),
                Some("messages[2].tool_calls[1].function.arguments"),
                "{bad}"
            );
        }
        let mut r = tool_conversation();
        r.tools.as_mut().unwrap()[1] =
            serde_json::from_value(json!({"type": "custom", "custom": {"name": "grammar"}}))
                .unwrap();
        assert_eq!(translate_err(&r).param.as_deref(), Some("tools[1]"));
    }

    #[test]
    fn tool_choice_modes() {
        let cases = [
            (
                json!("none"),
                json!({"functionCallingConfig": {"mode": "NONE"}}),
                2,
            ),
            (
                json!("auto"),
                json!({"functionCallingConfig": {"mode": "AUTO"}}),
                2,
            ),
            (
                json!("required"),
                json!({"functionCallingConfig": {"mode": "ANY"}}),
                2,
            ),
            (
                json!({"type": "function", "function": {"name": "get_time"}}),
                json!({"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_time"]}}),
                2,
            ),
            (
                json!({"type": "allowed_tools", "allowed_tools": {"mode": "required", "tools": [{"type": "function", "function": {"name": "get_time"}}]}}),
                json!({"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_time"]}}),
                2,
            ),
            (
                json!({"type": "allowed_tools", "allowed_tools": {"mode": "auto", "tools": [{"type": "function", "function": {"name": "get_time"}}]}}),
                json!({"functionCallingConfig": {"mode": "AUTO"}}),
                1,
            ),
        ];
        for (choice, expected, declarations) in cases {
            let mut r = tool_conversation();
            r.tool_choice = Some(serde_json::from_value(choice.clone()).unwrap());
            let b = body_of(&r);
            assert_eq!(b["toolConfig"], expected, "{choice}");
            assert_eq!(
                b["tools"][0]["functionDeclarations"]
                    .as_array()
                    .unwrap()
                    .len(),
                declarations,
                "{choice}"
            );
        }
        let mut r = tool_conversation();
        r.tool_choice = Some(
            serde_json::from_value(json!({"type": "custom", "custom": {"name": "x"}})).unwrap(),
        );
        assert_eq!(translate_err(&r).param.as_deref(), Some("tool_choice"));
        // No tools: no toolConfig.
        let r =
            chat(json!({"messages": [{"role": "user", "content": "x"}], "tool_choice": "none"}));
        let b = body_of(&r);
        assert!(
            b.get("toolConfig").is_none() && b.get("tools").is_none(),
            "{b}"
        );
    }

    #[test]
    fn request_json_modes() {
        let r = chat(json!({
            "messages": [{"role": "user", "content": "List two colours."}],
            "response_format": {"type": "json_schema", "json_schema": {
                "name": "colours", "strict": true,
                "schema": {"type": "object", "properties": {"colours": {"type": "array", "items": {"type": "string"}}},
                           "required": ["colours"], "additionalProperties": false}}}
        }));
        insta::assert_json_snapshot!("request_json_schema", body_of(&r)["generationConfig"]);
        let r = chat(json!({
            "messages": [{"role": "user", "content": "x"}],
            "response_format": {"type": "json_object"}
        }));
        assert_eq!(
            body_of(&r)["generationConfig"],
            json!({"responseMimeType": "application/json"})
        );
        let r = chat(json!({
            "messages": [{"role": "user", "content": "x"}],
            "response_format": {"type": "text"}
        }));
        assert!(body_of(&r).get("generationConfig").is_none());
    }

    #[test]
    fn reasoning_effort_budgets() {
        for (effort, budget, include) in [
            ("none", 0, None),
            ("minimal", 512, Some(true)),
            ("low", 1024, Some(true)),
            ("medium", 8192, Some(true)),
            ("high", 24576, Some(true)),
        ] {
            let r = chat(
                json!({"messages": [{"role": "user", "content": "x"}], "reasoning_effort": effort}),
            );
            let b = body_of(&r);
            assert_eq!(
                b["generationConfig"]["thinkingConfig"]["thinkingBudget"],
                budget
            );
            assert_eq!(
                b["generationConfig"]["thinkingConfig"]
                    .get("includeThoughts")
                    .cloned(),
                include.map(Value::Bool)
            );
        }
        let r = chat(
            json!({"messages": [{"role": "user", "content": "x"}], "reasoning_effort": "max"}),
        );
        assert_eq!(translate_err(&r).param.as_deref(), Some("reasoning_effort"));
        let r = chat(json!({"messages": [{"role": "user", "content": "x"}], "top_k": "many"}));
        assert_eq!(translate_err(&r).param.as_deref(), Some("top_k"));
    }

    #[test]
    fn empty_and_system_only_conversations() {
        let r = chat(json!({"messages": [{"role": "system", "content": "Say hi."}]}));
        assert_eq!(
            body_of(&r),
            json!({"contents": [{"role": "user", "parts": [{"text": "Say hi."}]}]})
        );
        let r = chat(json!({"messages": [{"role": "user", "content": ""}]}));
        assert_eq!(translate_err(&r).param.as_deref(), Some("messages"));
        // An empty assistant turn is dropped, and the user turns around it merge.
        let r = chat(json!({"messages": [
            {"role": "user", "content": "a"},
            {"role": "assistant", "content": ""},
            {"role": "user", "content": "b"}
        ]}));
        assert_eq!(
            body_of(&r)["contents"],
            json!([{"role": "user", "parts": [{"text": "a"}, {"text": "b"}]}])
        );
    }

    // ---- responses -------------------------------------------------------------------------

    #[test]
    fn response_text_with_usage() {
        let c = response(json!({
            "candidates": [{
                "content": {"role": "model", "parts": [{"text": "Blue"}, {"text": " and green."}]},
                "finishReason": "STOP", "index": 0,
                "safetyRatings": [{"category": "HARM_CATEGORY_HARASSMENT", "probability": "NEGLIGIBLE"}]
            }],
            "usageMetadata": {"promptTokenCount": 12, "candidatesTokenCount": 4, "totalTokenCount": 16,
                              "cachedContentTokenCount": 8,
                              "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 12}]},
            "modelVersion": "gemini-2.5-flash-001",
            "responseId": "resp-AbC123"
        }));
        insta::assert_json_snapshot!("response_text_usage", c);
    }

    #[test]
    fn response_thoughts_and_function_calls() {
        let c = response(json!({
            "candidates": [{
                "content": {"role": "model", "parts": [
                    {"text": "The user wants weather for two cities.", "thought": true},
                    {"text": "Let me check.", "thoughtSignature": "c2lnbmF0dXJl"},
                    {"functionCall": {"name": "get_weather", "args": {"city": "Paris", "units": ["c"]}}, "thoughtSignature": "c2ln"},
                    {"functionCall": {"id": "fc-7", "name": "get_time"}}
                ]},
                "finishReason": "STOP", "index": 0
            }],
            "usageMetadata": {"promptTokenCount": 50, "candidatesTokenCount": 20, "thoughtsTokenCount": 100, "totalTokenCount": 170},
            "modelVersion": "gemini-2.5-pro",
            "responseId": "r2"
        }));
        insta::assert_json_snapshot!("response_thoughts_function_calls", c);
        let u = c.usage.unwrap();
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens, u.total_tokens),
            (50, 120, 170)
        );
        assert_eq!(u.reasoning_tokens(), 100);
    }

    #[test]
    fn response_safety_and_finish_reasons() {
        // Prompt blocked: no candidates.
        let c = response(json!({
            "promptFeedback": {"blockReason": "SAFETY", "safetyRatings": []},
            "usageMetadata": {"promptTokenCount": 9, "totalTokenCount": 9},
            "responseId": "blocked-1"
        }));
        insta::assert_json_snapshot!("response_prompt_blocked", c);

        // Candidates: index taken from the body, finish reasons mapped.
        let c = response(json!({
            "candidates": [
                {"content": {"role": "model", "parts": [{"text": "Partial"}]}, "finishReason": "MAX_TOKENS", "index": 0},
                {"finishReason": "SAFETY", "index": 1, "safetyRatings": [{"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": true}]},
                {"content": {"role": "model", "parts": [{"text": "x"}]}, "finishReason": "MALFORMED_FUNCTION_CALL", "index": 2},
                {"content": {"role": "model", "parts": [{"text": "y"}]}, "index": 3}
            ],
            "responseId": "multi"
        }));
        let got: Vec<_> = c
            .choices
            .iter()
            .map(|ch| {
                (
                    ch.index,
                    ch.message.content.clone(),
                    ch.finish_reason.clone(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (0, Some("Partial".into()), Some(FinishReason::Length)),
                (1, None, Some(FinishReason::ContentFilter)),
                (
                    2,
                    Some("x".into()),
                    Some(FinishReason::Other("malformed_function_call".into()))
                ),
                (3, Some("y".into()), None),
            ]
        );
        assert!(
            c.usage.is_none(),
            "absent usage stays absent (the gateway estimates)"
        );
        for (reason, expected) in [
            ("RECITATION", FinishReason::ContentFilter),
            ("BLOCKLIST", FinishReason::ContentFilter),
            ("PROHIBITED_CONTENT", FinishReason::ContentFilter),
            ("SPII", FinishReason::ContentFilter),
            ("IMAGE_SAFETY", FinishReason::ContentFilter),
            ("OTHER", FinishReason::Other("other".into())),
        ] {
            assert_eq!(finish_reason(reason, false), Some(expected), "{reason}");
        }
        assert_eq!(finish_reason("STOP", true), Some(FinishReason::ToolCalls));
        assert_eq!(finish_reason("FINISH_REASON_UNSPECIFIED", false), None);
    }

    #[test]
    fn response_ids_and_decode_errors() {
        let a = GeminiAdapter::default();
        let body = br#"{"candidates":[{"content":{"parts":[{"functionCall":{"name":"f","args":{}}}]},"finishReason":"STOP"}]}"#;
        let c1 = a.chat_response(body, &target()).unwrap();
        let c2 = a.chat_response(body, &target()).unwrap();
        assert!(c1.id.starts_with("chatcmpl-gemini"), "{}", c1.id);
        assert_ne!(c1.id, c2.id);
        assert_eq!(c1.model, "gemini-2.5-flash");
        let id1 = &c1.choices[0].message.tool_calls.as_ref().unwrap()[0].id;
        let id2 = &c2.choices[0].message.tool_calls.as_ref().unwrap()[0].id;
        assert_ne!(id1, id2, "tool-call ids differ between responses");
        assert!(
            id1.len() <= 40 && id1.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "{id1}"
        );
        assert_eq!(c1.choices[0].finish_reason, Some(FinishReason::ToolCalls));
        assert_eq!(
            c1.choices[0].message.tool_calls.as_ref().unwrap()[0]
                .function
                .arguments,
            "{}"
        );
        assert!(matches!(
            a.chat_response(b"{\"candidates\":[", &target()),
            Err(DecodeError::Invalid(_))
        ));
        assert!(matches!(
            a.chat_response(b"{}", &target()),
            Err(DecodeError::Invalid(_))
        ));
    }

    // ---- streaming -------------------------------------------------------------------------

    fn text_stream() -> Vec<u8> {
        sse(&[
            json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "Hel"}]}, "index": 0}],
                   "usageMetadata": {"promptTokenCount": 7, "totalTokenCount": 7},
                   "modelVersion": "gemini-2.5-flash", "responseId": "stream-1"}),
            json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "lo, wörld 😀"}]}, "index": 0}],
                   "usageMetadata": {"promptTokenCount": 7, "candidatesTokenCount": 3, "totalTokenCount": 10},
                   "modelVersion": "gemini-2.5-flash", "responseId": "stream-1"}),
            json!({"candidates": [{"content": {"role": "model", "parts": [{"text": ""}]}, "finishReason": "STOP", "index": 0}],
                   "usageMetadata": {"promptTokenCount": 7, "candidatesTokenCount": 5, "totalTokenCount": 12},
                   "modelVersion": "gemini-2.5-flash", "responseId": "stream-1"}),
        ])
    }

    #[test]
    fn stream_text_with_usage() {
        let bytes = text_stream();
        assert!(bytes.windows(4).any(|w| w == b"\r\n\r\n"));
        let (chunks, r) = decode(&bytes, usize::MAX);
        r.unwrap();
        insta::assert_json_snapshot!("stream_text_usage", chunks);
        // Any split of the bytes (inside CRLF pairs and multi-byte characters) decodes the same.
        for piece in [1, 2, 3, 7, 64] {
            let (split, r) = decode(&bytes, piece);
            r.unwrap();
            assert_eq!(split, chunks, "piece {piece}");
        }
    }

    #[test]
    fn stream_thoughts_and_function_calls() {
        let bytes = sse(&[
            json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "Need the weather.", "thought": true}]}, "index": 0}],
                   "responseId": "s2", "modelVersion": "gemini-2.5-pro"}),
            json!({"candidates": [{"content": {"role": "model", "parts": [
                        {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": "c2ln"},
                        {"functionCall": {"name": "get_weather", "args": {"city": "Rome"}}}]}, "index": 0}],
                   "responseId": "s2", "modelVersion": "gemini-2.5-pro"}),
            json!({"candidates": [{"content": {"role": "model", "parts": [{"functionCall": {"id": "own-id", "name": "get_time", "args": {}}}]},
                                   "finishReason": "STOP", "index": 0}],
                   "usageMetadata": {"promptTokenCount": 30, "candidatesTokenCount": 25, "thoughtsTokenCount": 40, "cachedContentTokenCount": 10, "totalTokenCount": 95},
                   "responseId": "s2", "modelVersion": "gemini-2.5-pro"}),
        ]);
        let (chunks, r) = decode(&bytes, 5);
        r.unwrap();
        insta::assert_json_snapshot!("stream_thoughts_function_calls", chunks);
    }

    #[test]
    fn stream_prompt_blocked() {
        let bytes = sse(&[json!({
            "promptFeedback": {"blockReason": "PROHIBITED_CONTENT"},
            "usageMetadata": {"promptTokenCount": 4, "totalTokenCount": 4},
            "responseId": "s3"
        })]);
        let (chunks, r) = decode(&bytes, usize::MAX);
        r.unwrap();
        assert_eq!(chunks.len(), 3, "role, finish, usage");
        assert_eq!(
            chunks[1].choices[0].finish_reason,
            Some(FinishReason::ContentFilter)
        );
        assert_eq!(chunks[2].usage.as_ref().unwrap().prompt_tokens, 4);
    }

    #[test]
    fn stream_without_finish_reason_is_truncated() {
        let bytes = text_stream();
        // Drop the last (finishing) event.
        let cut = bytes.len() - sse(&[json!({"candidates": [{"content": {"role": "model", "parts": [{"text": ""}]}, "finishReason": "STOP", "index": 0}],
                   "usageMetadata": {"promptTokenCount": 7, "candidatesTokenCount": 5, "totalTokenCount": 12},
                   "modelVersion": "gemini-2.5-flash", "responseId": "stream-1"})]).len();
        let (chunks, r) = decode(&bytes[..cut], 3);
        assert_eq!(r, Err(DecodeError::Truncated));
        assert!(
            chunks.iter().all(|c| c.usage.is_none()),
            "no usage chunk for a cut stream"
        );
        assert_eq!(chunks.len(), 3, "role + two text deltas were delivered");
        // An empty stream is truncated too.
        let (chunks, r) = decode(b"", 1);
        assert_eq!(r, Err(DecodeError::Truncated));
        assert!(chunks.is_empty());
        // Two candidates, only one finished.
        let bytes = sse(&[json!({"candidates": [
            {"content": {"parts": [{"text": "a"}]}, "finishReason": "STOP", "index": 0},
            {"content": {"parts": [{"text": "b"}]}, "index": 1}
        ], "responseId": "s4"})]);
        assert_eq!(decode(&bytes, usize::MAX).1, Err(DecodeError::Truncated));
    }

    #[test]
    fn stream_error_chunk_and_garbage() {
        let mut bytes = sse(&[
            json!({"candidates": [{"content": {"parts": [{"text": "Hi"}]}, "index": 0}], "responseId": "s5"}),
        ]);
        bytes.extend_from_slice(&sse(&[json!({"error": {
            "code": 503, "message": "The model is overloaded. Please try again later.", "status": "UNAVAILABLE"
        }})]));
        let (chunks, r) = decode(&bytes, 4);
        assert_eq!(chunks.len(), 2);
        let Err(DecodeError::StreamError(e)) = r else {
            panic!("expected a stream error, got {r:?}");
        };
        assert_eq!(e.status, 503);
        assert_eq!(e.kind, UpstreamErrorKind::Overloaded);
        assert_eq!(e.provider_code.as_deref(), Some("UNAVAILABLE"));

        let (_, r) = decode(b"data: {garbage\r\n\r\n", 1);
        assert!(matches!(r, Err(DecodeError::Invalid(_))), "{r:?}");
        let (_, r) = decode(b"data: {\"candidates\": 5}\r\n\r\n", 1);
        assert!(matches!(r, Err(DecodeError::Invalid(_))), "{r:?}");
    }

    // ---- embeddings ------------------------------------------------------------------------

    fn embed_req(v: Value) -> EmbeddingRequest {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn embeddings_request_shape() {
        let a = GeminiAdapter::default();
        let t = Target {
            upstream_model: "gemini-embedding-001",
            ..target()
        };
        let up = a
            .embeddings_request(
                &embed_req(json!({"model": "emb", "input": ["alpha", "beta"], "dimensions": 768, "encoding_format": "base64", "user": "u"})),
                &t,
            )
            .unwrap();
        assert_eq!(
            up.path_and_query,
            "/v1beta/models/gemini-embedding-001:batchEmbedContents"
        );
        let body: Value = serde_json::from_slice(&up.body).unwrap();
        insta::assert_json_snapshot!("embeddings_request", body);
        for input in [json!([1, 2, 3]), json!([[1], [2]])] {
            let e = a
                .embeddings_request(&embed_req(json!({"model": "emb", "input": input})), &t)
                .unwrap_err();
            assert_eq!(e.param.as_deref(), Some("input"));
        }
        let e = a
            .embeddings_request(&embed_req(json!({"model": "emb", "input": []})), &t)
            .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("input"));
    }

    #[test]
    fn embeddings_response_float_and_base64() {
        let a = GeminiAdapter::default();
        let t = Target {
            upstream_model: "gemini-embedding-001",
            ..target()
        };
        let body =
            br#"{"embeddings":[{"values":[0.25,-1.5,3.0e-3]},{"values":[1.0,0.0,-0.0078125]}]}"#;
        let float = embed_req(json!({"model": "emb", "input": ["a", "b"]}));
        let r = a.embeddings_response(body, &float, &t).unwrap();
        insta::assert_json_snapshot!("embeddings_response_float", r);

        let b64 =
            embed_req(json!({"model": "emb", "input": ["a", "b"], "encoding_format": "base64"}));
        let r64 = a.embeddings_response(body, &b64, &t).unwrap();
        assert_eq!(r64.data.len(), 2);
        for (e64, ef) in r64.data.iter().zip(&r.data) {
            let (EmbeddingVector::Base64(s), EmbeddingVector::Float(f)) =
                (&e64.embedding, &ef.embedding)
            else {
                panic!("wrong vector kinds");
            };
            let bytes = base64::engine::general_purpose::STANDARD.decode(s).unwrap();
            let back: Vec<f32> = bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            assert_eq!(&back, f);
            assert_eq!(e64.index, ef.index);
        }
        assert_eq!(r64.usage.prompt_tokens, 0);

        // One input, two vectors: invalid. Garbage: invalid.
        let one = embed_req(json!({"model": "emb", "input": "a"}));
        assert!(matches!(
            a.embeddings_response(body, &one, &t),
            Err(DecodeError::Invalid(_))
        ));
        assert!(matches!(
            a.embeddings_response(b"{\"embedding\":{\"values\":[", &one, &t),
            Err(DecodeError::Invalid(_))
        ));
        // Usage is taken when present.
        let r = a
            .embeddings_response(
                br#"{"embeddings":[{"values":[1]}],"usageMetadata":{"promptTokenCount":3}}"#,
                &one,
                &t,
            )
            .unwrap();
        assert_eq!((r.usage.prompt_tokens, r.usage.total_tokens), (3, 3));
    }

    // ---- errors ----------------------------------------------------------------------------

    #[test]
    fn error_classification_table() {
        let api_key_invalid = json!({"error": {"code": 400, "message": "API key not valid. Please pass a valid API key.", "status": "INVALID_ARGUMENT",
            "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID", "domain": "googleapis.com",
                         "metadata": {"service": "generativelanguage.googleapis.com"}}]}});
        let quota = json!({"error": {"code": 429, "message": "You exceeded your current quota, please check your plan and billing details.", "status": "RESOURCE_EXHAUSTED",
            "details": [{"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [{"quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier"}]},
                        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "12s"}]}});
        let cases: Vec<(u16, Value, UpstreamErrorKind, Option<&str>)> = vec![
            (
                400,
                api_key_invalid,
                UpstreamErrorKind::Auth,
                Some("API_KEY_INVALID"),
            ),
            (
                429,
                quota,
                UpstreamErrorKind::RateLimited,
                Some("RESOURCE_EXHAUSTED"),
            ),
            (
                400,
                json!({"error": {"code": 400, "message": "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576).", "status": "INVALID_ARGUMENT"}}),
                UpstreamErrorKind::ContextLength,
                Some("INVALID_ARGUMENT"),
            ),
            (
                400,
                json!({"error": {"code": 400, "message": "Request payload size exceeds the limit: 20971520 bytes.", "status": "INVALID_ARGUMENT"}}),
                UpstreamErrorKind::TooLarge,
                Some("INVALID_ARGUMENT"),
            ),
            (
                400,
                json!({"error": {"code": 400, "message": "* GenerateContentRequest.contents: contents is not specified", "status": "INVALID_ARGUMENT"}}),
                UpstreamErrorKind::BadRequest,
                Some("INVALID_ARGUMENT"),
            ),
            (
                400,
                json!({"error": {"code": 400, "message": "User location is not supported for the API use.", "status": "FAILED_PRECONDITION"}}),
                UpstreamErrorKind::Auth,
                Some("FAILED_PRECONDITION"),
            ),
            (
                401,
                json!({"error": {"code": 401, "message": "Request had invalid authentication credentials.", "status": "UNAUTHENTICATED"}}),
                UpstreamErrorKind::Auth,
                Some("UNAUTHENTICATED"),
            ),
            (
                403,
                json!({"error": {"code": 403, "message": "Permission denied.", "status": "PERMISSION_DENIED"}}),
                UpstreamErrorKind::Auth,
                Some("PERMISSION_DENIED"),
            ),
            (
                404,
                json!({"error": {"code": 404, "message": "models/gemini-9 is not found for API version v1beta", "status": "NOT_FOUND"}}),
                UpstreamErrorKind::NotFound,
                Some("NOT_FOUND"),
            ),
            (
                503,
                json!({"error": {"code": 503, "message": "The model is overloaded. Please try again later.", "status": "UNAVAILABLE"}}),
                UpstreamErrorKind::Overloaded,
                Some("UNAVAILABLE"),
            ),
            (
                500,
                json!({"error": {"code": 500, "message": "An internal error has occurred.", "status": "INTERNAL"}}),
                UpstreamErrorKind::Server,
                Some("INTERNAL"),
            ),
            (
                504,
                json!({"error": {"code": 504, "message": "Deadline exceeded.", "status": "DEADLINE_EXCEEDED"}}),
                UpstreamErrorKind::Server,
                Some("DEADLINE_EXCEEDED"),
            ),
            (
                402,
                json!({"error": {"code": 402, "message": "Payment required.", "status": "FAILED_PRECONDITION"}}),
                UpstreamErrorKind::QuotaExhausted,
                Some("FAILED_PRECONDITION"),
            ),
            (
                502,
                json!("<html>bad gateway</html>"),
                UpstreamErrorKind::Server,
                None,
            ),
        ];
        for (status, body, kind, code) in cases {
            let raw = match &body {
                Value::String(s) => s.clone().into_bytes(),
                v => serde_json::to_vec(v).unwrap(),
            };
            let e = gemini_error(status, &HeaderMap::new(), &raw);
            assert_eq!(e.kind, kind, "{status} {body}");
            assert_eq!(e.provider_code.as_deref(), code, "{status} {body}");
            assert_eq!(e.status, status);
        }
        // Retry-After: the header wins, else RetryInfo.
        let body = br#"{"error":{"code":429,"message":"slow down","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"12.5s"}]}}"#;
        let e = gemini_error(429, &HeaderMap::new(), body);
        assert_eq!(e.retry_after, Some(Duration::from_millis(12_500)));
        assert!(e.kind.retryable());
        let mut h = HeaderMap::new();
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("3"));
        assert_eq!(
            gemini_error(429, &h, body).retry_after,
            Some(Duration::from_secs(3))
        );
        // Messages are sanitised and never empty.
        let e = gemini_error(
            400,
            &HeaderMap::new(),
            br#"{"error":{"code":400,"message":"API key AIzaSyD-1234567890abcdefghijkl expired. See https://ai.google.dev/x?key=AIzaSyD","status":"INVALID_ARGUMENT"}}"#,
        );
        assert_eq!(e.kind, UpstreamErrorKind::Auth);
        assert!(
            !e.message.contains("AIza") && !e.message.contains("https"),
            "{}",
            e.message
        );
        assert_eq!(
            gemini_error(500, &HeaderMap::new(), b"").message,
            "upstream error"
        );
        // A non-SSE stream wraps the error in an array.
        let e = gemini_error(
            429,
            &HeaderMap::new(),
            br#"[{"error":{"code":429,"message":"quota","status":"RESOURCE_EXHAUSTED"}}]"#,
        );
        assert_eq!(e.message, "quota");
    }

    proptest::proptest! {
        /// Arbitrary upstream bytes never panic the decoders or the error mapper.
        #[test]
        fn arbitrary_upstream_input_never_panics(data in ".{0,200}", status in 0u16..700) {
            let a = GeminiAdapter::default();
            let mut d = GeminiStreamDecoder::new("m");
            let mut out = Vec::new();
            let _ = d.on_event(&SseEvent { event: None, data: data.clone() }, &mut out);
            let _ = d.finish(&mut out);
            let _ = a.chat_response(data.as_bytes(), &target());
            let e = gemini_error(status, &HeaderMap::new(), data.as_bytes());
            proptest::prop_assert!(e.message.len() <= 300);
            let one: EmbeddingRequest =
                serde_json::from_value(json!({"model": "e", "input": "a"})).unwrap();
            let _ = a.embeddings_response(data.as_bytes(), &one, &target());
        }
    }

    #[test]
    fn adapter_reports_its_api() {
        assert_eq!(GeminiAdapter::default().api(), ApiKind::Gemini);
        let mut d = GeminiAdapter::default().chat_stream_decoder(&target());
        assert_eq!(d.finish(&mut Vec::new()), Err(DecodeError::Truncated));
    }
}

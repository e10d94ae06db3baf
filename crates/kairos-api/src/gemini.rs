//! Google Gemini API (Generative Language API, `v1beta`) wire types: `generateContent`,
//! `streamGenerateContent` (every SSE `data:` event is a whole [`GenerateContentResponse`]),
//! `batchEmbedContents` and the error body.
//!
//! Field names follow the REST JSON mapping (camelCase), as the official `google-genai` SDK writes
//! them in its `_..._to_mldev` converters. Request types skip `None` fields (Gemini rejects some
//! explicit nulls); response types ignore unknown fields and take `null` as absent, so new
//! upstream fields never break decoding.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// `null` or absent -> `T::default()` (Gemini omits empty lists, and some proxies write `null`).
fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

// ---------------------------------------------------------------------------------------------
// Request
// ---------------------------------------------------------------------------------------------

/// `POST /v1beta/models/{model}:generateContent` (and `:streamGenerateContent?alt=sse`) body.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GenerateContentRequest {
    pub contents: Vec<Content>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_instruction: Option<Content>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Tool>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_config: Option<ToolConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation_config: Option<GenerationConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub safety_settings: Option<Vec<SafetySetting>>,
}

/// One turn: `role` is `user` or `model` (absent in `systemInstruction`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Content {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub parts: Vec<Part>,
}

/// One part of a [`Content`]. Exactly one of the data fields is set (`text`, `inlineData`,
/// `fileData`, `functionCall`, `functionResponse`); `thought` and `thoughtSignature` qualify it.
/// Part kinds this gateway does not translate (`executableCode`, ...) decode as a part with no
/// field set and are skipped.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Part {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// `true` on thought-summary parts (only returned with `thinkingConfig.includeThoughts`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thought: Option<bool>,
    /// Opaque base64 signature of the model's reasoning (Gemini 2.5+ thinking models). Gemini 3
    /// requires it back on replayed function calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thought_signature: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inline_data: Option<Blob>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_data: Option<FileData>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function_call: Option<FunctionCall>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function_response: Option<FunctionResponse>,
}

impl Part {
    pub fn text(text: impl Into<String>) -> Self {
        Part {
            text: Some(text.into()),
            ..Part::default()
        }
    }
}

/// Inline bytes, base64-encoded.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Blob {
    pub mime_type: String,
    pub data: String,
}

/// Data referenced by URI (Files API, `gs://` or public HTTP(S) URLs).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FileData {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
    pub file_uri: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FunctionCall {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub name: String,
    /// A JSON object (absent for functions without parameters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Value>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FunctionResponse {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub name: String,
    /// A JSON object.
    pub response: Value,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Tool {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function_declarations: Option<Vec<FunctionDeclaration>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FunctionDeclaration {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// OpenAPI-subset `Schema` (mutually exclusive with `parametersJsonSchema`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
    /// Full JSON Schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters_json_schema: Option<Value>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ToolConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function_calling_config: Option<FunctionCallingConfig>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FunctionCallingConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<FunctionCallingMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_function_names: Option<Vec<String>>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FunctionCallingMode {
    /// The model decides between text and function calls.
    Auto,
    /// The model must call a function (one of `allowedFunctionNames` when set).
    Any,
    /// No function calls.
    None,
    /// Text or function calls, with calls validated against the declarations.
    Validated,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GenerationConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate_count: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_sequences: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_mime_type: Option<String>,
    /// OpenAPI-subset schema (the older field; mutually exclusive with `responseJsonSchema`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_schema: Option<Value>,
    /// Full JSON Schema for `responseMimeType: application/json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_json_schema: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thinking_config: Option<ThinkingConfig>,
}

impl GenerationConfig {
    /// True when no field is set (the object is then left out of the request).
    pub fn is_empty(&self) -> bool {
        *self == GenerationConfig::default()
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ThinkingConfig {
    /// Thinking tokens: 0 disables thinking where the model allows it, -1 lets the model decide.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thinking_budget: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_thoughts: Option<bool>,
    /// Gemini 3: `MINIMAL`, `LOW`, `MEDIUM`, `HIGH` (not combinable with `thinkingBudget`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thinking_level: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SafetySetting {
    /// `HARM_CATEGORY_HARASSMENT`, ...
    pub category: String,
    /// `BLOCK_NONE`, `BLOCK_ONLY_HIGH`, ..., `OFF`.
    pub threshold: String,
}

// ---------------------------------------------------------------------------------------------
// Response
// ---------------------------------------------------------------------------------------------

/// `generateContent` response, and one `streamGenerateContent` chunk.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GenerateContentResponse {
    #[serde(default, deserialize_with = "null_default")]
    pub candidates: Vec<Candidate>,
    /// Only when the prompt was blocked (then there are no candidates).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_feedback: Option<PromptFeedback>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_metadata: Option<UsageMetadata>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_id: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Candidate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Content>,
    /// `STOP`, `MAX_TOKENS`, `SAFETY`, ... (kept as text: the enum grows). Absent while a
    /// streamed candidate is still generating.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub safety_ratings: Option<Vec<Value>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PromptFeedback {
    /// `SAFETY`, `OTHER`, `BLOCKLIST`, `PROHIBITED_CONTENT`, `IMAGE_SAFETY`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub safety_ratings: Option<Vec<Value>>,
}

/// Token counts. Every field is optional: an absent count is unknown, an explicit 0 is 0.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UsageMetadata {
    /// The whole prompt, cached content included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_token_count: Option<u64>,
    /// Output tokens of all candidates, thoughts excluded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidates_token_count: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_token_count: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_content_token_count: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thoughts_token_count: Option<u64>,
    /// Results of server-side tools fed back to the model (billed as input).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_use_prompt_token_count: Option<u64>,
}

// ---------------------------------------------------------------------------------------------
// Embeddings
// ---------------------------------------------------------------------------------------------

/// `POST /v1beta/models/{model}:batchEmbedContents` body.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BatchEmbedContentsRequest {
    pub requests: Vec<EmbedContentRequest>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EmbedContentRequest {
    /// `models/{model}`: must name the same model as the URL.
    pub model: String,
    pub content: Content,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_dimensionality: Option<u32>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BatchEmbedContentsResponse {
    /// One per request, in request order.
    #[serde(default, deserialize_with = "null_default")]
    pub embeddings: Vec<ContentEmbedding>,
    /// Not sent by the Gemini API today; read when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_metadata: Option<UsageMetadata>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ContentEmbedding {
    #[serde(default, deserialize_with = "null_default")]
    pub values: Vec<f32>,
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// `{"error": {"code", "message", "status", "details"}}` (google.rpc.Status). Also sent as an
/// SSE `data:` event when a stream fails.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct GeminiErrorBody {
    pub error: GeminiError,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct GeminiError {
    /// The HTTP status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The canonical code: `INVALID_ARGUMENT`, `RESOURCE_EXHAUSTED`, `UNAVAILABLE`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Typed details (`@type` `...ErrorInfo` with a `reason`, `...RetryInfo` with a
    /// `retryDelay` such as `"12s"`, `...QuotaFailure`, ...).
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub details: Vec<Value>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn request_serialises_camel_case_and_skips_none() {
        let req = GenerateContentRequest {
            contents: vec![Content {
                role: Some("user".into()),
                parts: vec![
                    Part::text("hi"),
                    Part {
                        inline_data: Some(Blob {
                            mime_type: "image/png".into(),
                            data: "AAAA".into(),
                        }),
                        ..Part::default()
                    },
                ],
            }],
            system_instruction: Some(Content {
                role: None,
                parts: vec![Part::text("be brief")],
            }),
            tool_config: Some(ToolConfig {
                function_calling_config: Some(FunctionCallingConfig {
                    mode: Some(FunctionCallingMode::Any),
                    allowed_function_names: Some(vec!["f".into()]),
                }),
            }),
            generation_config: Some(GenerationConfig {
                max_output_tokens: Some(10),
                thinking_config: Some(ThinkingConfig {
                    thinking_budget: Some(1024),
                    include_thoughts: Some(true),
                    thinking_level: None,
                }),
                ..GenerationConfig::default()
            }),
            ..GenerateContentRequest::default()
        };
        assert_eq!(
            serde_json::to_value(&req).unwrap(),
            json!({
                "contents": [{"role": "user", "parts": [
                    {"text": "hi"},
                    {"inlineData": {"mimeType": "image/png", "data": "AAAA"}}
                ]}],
                "systemInstruction": {"parts": [{"text": "be brief"}]},
                "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["f"]}},
                "generationConfig": {
                    "maxOutputTokens": 10,
                    "thinkingConfig": {"thinkingBudget": 1024, "includeThoughts": true}
                }
            })
        );
    }

    #[test]
    fn response_ignores_unknown_fields_and_nulls() {
        let r: GenerateContentResponse = serde_json::from_value(json!({
            "candidates": [{
                "content": {"role": "model", "parts": [
                    {"text": "a", "thoughtSignature": "c2ln"},
                    {"executableCode": {"language": "PYTHON", "code": "1"}},
                    {"functionCall": {"name": "f", "args": {"x": 1}}}
                ]},
                "finishReason": "STOP",
                "index": 0,
                "citationMetadata": {"citationSources": []},
                "avgLogprobs": -0.1
            }],
            "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 0, "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 5}]},
            "modelVersion": "gemini-2.5-flash",
            "responseId": "abc",
            "createTime": null
        }))
        .unwrap();
        let parts = &r.candidates[0].content.as_ref().unwrap().parts;
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[0].thought_signature.as_deref(), Some("c2ln"));
        assert_eq!(parts[1], Part::default());
        assert_eq!(
            parts[2].function_call.as_ref().unwrap().args,
            Some(json!({"x": 1}))
        );
        let u = r.usage_metadata.unwrap();
        assert_eq!(u.candidates_token_count, Some(0));
        assert_eq!(u.thoughts_token_count, None);

        let r: GenerateContentResponse = serde_json::from_value(
            json!({"candidates": null, "promptFeedback": {"blockReason": "SAFETY"}}),
        )
        .unwrap();
        assert!(r.candidates.is_empty());
        assert_eq!(
            r.prompt_feedback.unwrap().block_reason.as_deref(),
            Some("SAFETY")
        );
        let c: Content = serde_json::from_value(json!({"role": "model"})).unwrap();
        assert!(c.parts.is_empty());
    }

    #[test]
    fn embeddings_and_errors() {
        let req = BatchEmbedContentsRequest {
            requests: vec![EmbedContentRequest {
                model: "models/gemini-embedding-001".into(),
                content: Content {
                    role: None,
                    parts: vec![Part::text("x")],
                },
                output_dimensionality: Some(8),
                ..EmbedContentRequest::default()
            }],
        };
        assert_eq!(
            serde_json::to_value(&req).unwrap(),
            json!({"requests": [{"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "x"}]}, "outputDimensionality": 8}]})
        );
        let r: BatchEmbedContentsResponse =
            serde_json::from_value(json!({"embeddings": [{"values": [0.5, -1.0]}]})).unwrap();
        assert_eq!(r.embeddings[0].values, vec![0.5, -1.0]);
        let e: GeminiErrorBody = serde_json::from_value(json!({"error": {
            "code": 429, "message": "quota", "status": "RESOURCE_EXHAUSTED",
            "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "12s"}]
        }}))
        .unwrap();
        assert_eq!(e.error.code, Some(429));
        assert_eq!(e.error.status.as_deref(), Some("RESOURCE_EXHAUSTED"));
        assert_eq!(e.error.details.len(), 1);
    }
}

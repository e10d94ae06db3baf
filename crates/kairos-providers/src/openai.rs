//! OpenAI-compatible upstreams: OpenAI, Azure OpenAI, Mistral, DeepSeek, Groq, Together,
//! OpenRouter, xAI, Ollama, vLLM and anything else that speaks `/chat/completions`.
//!
//! The canonical request IS the OpenAI shape, so translation is serialisation with the upstream
//! model id and `stream_options` written here (never the caller's), plus the pass-through of
//! unknown fields the server already vetted.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, header};
use kairos_api::openai::{
    ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, EmbeddingRequest, EmbeddingResponse,
};
use kairos_api::sse::SseEvent;
use serde::Serialize;

use crate::adapter::{
    Adapter, ApiKind, ChatStreamDecoder, DecodeError, StreamSignal, Target, TranslateError,
    UpstreamError, UpstreamErrorKind, UpstreamRequest, retry_after, sanitize_message,
};

/// How the provider key is presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthStyle {
    /// `Authorization: Bearer <key>` (OpenAI and most compatibles).
    Bearer,
    /// `api-key: <key>` (Azure OpenAI).
    ApiKeyHeader,
}

/// Path layout of the upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathStyle {
    /// `{base}/chat/completions`, `{base}/embeddings` (base usually ends in `/v1`).
    Standard,
    /// Azure deployments: `{base}/openai/deployments/{model}/chat/completions?api-version=..`.
    AzureDeployment { api_version: String },
}

#[derive(Debug, Clone)]
pub struct OpenAiAdapter {
    pub auth: AuthStyle,
    pub paths: PathStyle,
    /// Ask for `stream_options.include_usage` on streams (true unless the upstream rejects it).
    pub stream_usage: bool,
    /// Forward vetted unknown top-level fields (`extra`). True for OpenAI-compatible upstreams.
    pub forward_extra: bool,
}

impl Default for OpenAiAdapter {
    fn default() -> Self {
        OpenAiAdapter {
            auth: AuthStyle::Bearer,
            paths: PathStyle::Standard,
            stream_usage: true,
            forward_extra: true,
        }
    }
}

#[derive(Serialize)]
struct StreamOpts {
    include_usage: bool,
}

/// The outbound body: the canonical request (which never serialises `model` or
/// `stream_options`) plus the fields this adapter owns.
#[derive(Serialize)]
struct Outbound<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    model: Option<&'a str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<StreamOpts>,
    #[serde(flatten)]
    req: &'a ChatCompletionRequest,
}

impl OpenAiAdapter {
    fn path(&self, target: &Target<'_>, op: &str) -> String {
        match &self.paths {
            PathStyle::Standard => format!("/{op}"),
            PathStyle::AzureDeployment { api_version } => format!(
                "/openai/deployments/{}/{op}?api-version={}",
                escape_path_segment(target.upstream_model),
                escape_path_segment(api_version)
            ),
        }
    }

    fn headers(&self, target: &Target<'_>) -> Result<HeaderMap, TranslateError> {
        let mut h = HeaderMap::with_capacity(3);
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(key) = target.api_key {
            let (name, value) = match self.auth {
                AuthStyle::Bearer => (header::AUTHORIZATION, format!("Bearer {key}")),
                AuthStyle::ApiKeyHeader => {
                    (http::HeaderName::from_static("api-key"), key.to_owned())
                }
            };
            let mut v = HeaderValue::from_str(&value).map_err(|_| {
                TranslateError::new(
                    format!(
                        "the key configured for provider `{}` is not a valid header value",
                        target.provider
                    ),
                    None,
                )
            })?;
            v.set_sensitive(true);
            h.insert(name, v);
        }
        Ok(h)
    }

    fn model_in_body<'a>(&self, target: &Target<'a>) -> Option<&'a str> {
        match self.paths {
            PathStyle::Standard => Some(target.upstream_model),
            // Azure deployments name the model in the path.
            PathStyle::AzureDeployment { .. } => None,
        }
    }
}

/// Percent-encode everything but unreserved characters, so a model id can never add path
/// segments, a query or a fragment.
pub fn escape_path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Adapter for OpenAiAdapter {
    fn api(&self) -> ApiKind {
        ApiKind::OpenAi
    }

    fn chat_request(
        &self,
        req: &ChatCompletionRequest,
        target: &Target<'_>,
        stream: bool,
    ) -> Result<UpstreamRequest, TranslateError> {
        // Sized up front: growing from empty re-copies the body several times (memmove was the
        // top user-space symbol in a profile of the non-streaming path).
        let mut buf = Vec::with_capacity(1024);
        let body = if self.forward_extra || req.extra.is_empty() {
            serde_json::to_writer(
                &mut buf,
                &Outbound {
                    model: self.model_in_body(target),
                    stream,
                    stream_options: (stream && self.stream_usage).then_some(StreamOpts {
                        include_usage: true,
                    }),
                    req,
                },
            )
        } else {
            let mut stripped = req.clone();
            stripped.extra.clear();
            serde_json::to_writer(
                &mut buf,
                &Outbound {
                    model: self.model_in_body(target),
                    stream,
                    stream_options: (stream && self.stream_usage).then_some(StreamOpts {
                        include_usage: true,
                    }),
                    req: &stripped,
                },
            )
        }
        .map_err(|e| TranslateError::new(format!("cannot encode request: {e}"), None));
        body?;
        Ok(UpstreamRequest {
            path_and_query: self.path(target, "chat/completions"),
            headers: self.headers(target)?,
            body: Bytes::from(buf),
        })
    }

    fn chat_response(
        &self,
        body: &[u8],
        _target: &Target<'_>,
    ) -> Result<ChatCompletion, DecodeError> {
        serde_json::from_slice(body).map_err(|e| DecodeError::invalid("chat completion", e))
    }

    fn chat_stream_decoder(&self, _target: &Target<'_>) -> Box<dyn ChatStreamDecoder> {
        Box::new(OpenAiStreamDecoder::default())
    }

    fn embeddings_request(
        &self,
        req: &EmbeddingRequest,
        target: &Target<'_>,
    ) -> Result<UpstreamRequest, TranslateError> {
        #[derive(Serialize)]
        struct Out<'a> {
            #[serde(skip_serializing_if = "Option::is_none")]
            model: Option<&'a str>,
            input: &'a kairos_api::openai::EmbeddingInput,
            #[serde(skip_serializing_if = "Option::is_none")]
            dimensions: Option<u32>,
            #[serde(skip_serializing_if = "Option::is_none")]
            encoding_format: Option<kairos_api::openai::EncodingFormat>,
            #[serde(skip_serializing_if = "Option::is_none")]
            user: Option<&'a str>,
        }
        let body = serde_json::to_vec(&Out {
            model: self.model_in_body(target),
            input: &req.input,
            dimensions: req.dimensions,
            encoding_format: req.encoding_format,
            user: req.user.as_deref(),
        })
        .map_err(|e| TranslateError::new(format!("cannot encode request: {e}"), None))?;
        Ok(UpstreamRequest {
            path_and_query: self.path(target, "embeddings"),
            headers: self.headers(target)?,
            body: Bytes::from(body),
        })
    }

    fn embeddings_response(
        &self,
        body: &[u8],
        _req: &EmbeddingRequest,
        _target: &Target<'_>,
    ) -> Result<EmbeddingResponse, DecodeError> {
        serde_json::from_slice(body).map_err(|e| DecodeError::invalid("embeddings", e))
    }

    fn upstream_error(&self, status: u16, headers: &HeaderMap, body: &[u8]) -> UpstreamError {
        openai_error(status, headers, body)
    }
}

/// Classify an OpenAI-shaped error body (also used for in-stream `{"error":..}` events).
pub fn openai_error(status: u16, headers: &HeaderMap, body: &[u8]) -> UpstreamError {
    #[derive(serde::Deserialize)]
    struct Body {
        error: Option<Inner>,
    }
    #[derive(serde::Deserialize)]
    struct Inner {
        message: Option<String>,
        #[serde(rename = "type")]
        kind: Option<String>,
        code: Option<serde_json::Value>,
    }
    let parsed = serde_json::from_slice::<Body>(body)
        .ok()
        .and_then(|b| b.error);
    let (message, kind, code) = match parsed {
        Some(i) => (
            i.message,
            i.kind,
            i.code.and_then(|c| match c {
                serde_json::Value::String(s) => Some(s),
                serde_json::Value::Number(n) => Some(n.to_string()),
                _ => None,
            }),
        ),
        None => (None, None, None),
    };
    let provider_code = code.clone().or(kind.clone());
    let mut k = UpstreamErrorKind::from_status(status);
    let code_or_type = |s: &str| code.as_deref() == Some(s) || kind.as_deref() == Some(s);
    if code_or_type("insufficient_quota") || code_or_type("billing_hard_limit_reached") {
        k = UpstreamErrorKind::QuotaExhausted;
    } else if code_or_type("context_length_exceeded") || code_or_type("string_above_max_length") {
        k = UpstreamErrorKind::ContextLength;
    } else if code_or_type("content_filter") || code_or_type("content_policy_violation") {
        k = UpstreamErrorKind::ContentFilter;
    }
    UpstreamError {
        status,
        kind: k,
        message: sanitize_message(message.as_deref().unwrap_or("upstream error")),
        provider_code,
        retry_after: retry_after(headers),
    }
}

/// OpenAI SSE: `data: <chunk>` events, `data: [DONE]` at the end, `data: {"error":..}` on failure.
#[derive(Debug, Default)]
pub struct OpenAiStreamDecoder {
    done: bool,
}

impl ChatStreamDecoder for OpenAiStreamDecoder {
    fn on_event(
        &mut self,
        event: &SseEvent,
        out: &mut Vec<ChatCompletionChunk>,
    ) -> Result<StreamSignal, DecodeError> {
        let data = event.data.trim();
        if data == "[DONE]" {
            self.done = true;
            return Ok(StreamSignal::Done);
        }
        if event.event.as_deref() == Some("error") || data.starts_with("{\"error\"") {
            return Err(DecodeError::StreamError(openai_error(
                500,
                &HeaderMap::new(),
                data.as_bytes(),
            )));
        }
        let chunk: ChatCompletionChunk =
            serde_json::from_str(data).map_err(|e| DecodeError::invalid("stream chunk", e))?;
        out.push(chunk);
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

#[cfg(test)]
mod tests {
    use super::*;
    use kairos_api::openai::ChatMessage;
    use kairos_api::openai::Role;
    use serde_json::{Value, json};

    fn target() -> Target<'static> {
        Target {
            provider: "openai",
            upstream_model: "gpt-4o-2024-08-06",
            api_key: Some("sk-test-canary"),
            default_max_tokens: 4096,
        }
    }

    fn req() -> ChatCompletionRequest {
        let mut r = ChatCompletionRequest {
            model: "gpt-4o".into(),
            messages: vec![ChatMessage::new(Role::User, "hi")],
            ..Default::default()
        };
        r.extra.insert("top_k".into(), json!(3));
        r
    }

    #[test]
    fn writes_upstream_model_and_asks_for_stream_usage() {
        let a = OpenAiAdapter::default();
        let up = a.chat_request(&req(), &target(), true).unwrap();
        let body: Value = serde_json::from_slice(&up.body).unwrap();
        assert_eq!(body["model"], "gpt-4o-2024-08-06");
        assert_eq!(body["stream_options"]["include_usage"], true);
        assert_eq!(body["top_k"], 3);
        assert_eq!(up.path_and_query, "/chat/completions");
        assert_eq!(
            up.headers.get("authorization").unwrap(),
            "Bearer sk-test-canary"
        );
        assert!(up.headers.get("authorization").unwrap().is_sensitive());
        let up = a.chat_request(&req(), &target(), false).unwrap();
        let body: Value = serde_json::from_slice(&up.body).unwrap();
        assert!(body.get("stream_options").is_none());
    }

    #[test]
    fn azure_deployment_paths_and_header() {
        let a = OpenAiAdapter {
            auth: AuthStyle::ApiKeyHeader,
            paths: PathStyle::AzureDeployment {
                api_version: "2024-10-21".into(),
            },
            stream_usage: true,
            forward_extra: false,
        };
        let t = Target {
            upstream_model: "my deploy/../x",
            ..target()
        };
        let up = a.chat_request(&req(), &t, false).unwrap();
        assert_eq!(
            up.path_and_query,
            "/openai/deployments/my%20deploy%2F..%2Fx/chat/completions?api-version=2024-10-21"
        );
        assert_eq!(up.headers.get("api-key").unwrap(), "sk-test-canary");
        assert!(up.headers.get("authorization").is_none());
        let body: Value = serde_json::from_slice(&up.body).unwrap();
        assert!(body.get("model").is_none());
        assert!(body.get("top_k").is_none(), "extra not forwarded");
    }

    #[test]
    fn stream_decoder_requires_done() {
        let mut d = OpenAiStreamDecoder::default();
        let mut out = Vec::new();
        let ev = |data: &str| SseEvent {
            event: None,
            data: data.into(),
        };
        d.on_event(
            &ev(r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]}"#),
            &mut out,
        )
        .unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(d.finish(&mut out), Err(DecodeError::Truncated));
        assert_eq!(d.on_event(&ev("[DONE]"), &mut out), Ok(StreamSignal::Done));
        assert_eq!(d.finish(&mut out), Ok(()));
        let err = d
            .on_event(
                &ev(r#"{"error":{"message":"overloaded","type":"server_error"}}"#),
                &mut out,
            )
            .unwrap_err();
        assert!(matches!(err, DecodeError::StreamError(_)));
        assert!(matches!(
            d.on_event(&ev("{garbage"), &mut out),
            Err(DecodeError::Invalid(_))
        ));
    }

    #[test]
    fn error_classification() {
        let e = openai_error(
            429,
            &HeaderMap::new(),
            br#"{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","code":"insufficient_quota"}}"#,
        );
        assert_eq!(e.kind, UpstreamErrorKind::QuotaExhausted);
        assert!(!e.kind.retryable());
        let e = openai_error(
            429,
            &HeaderMap::new(),
            br#"{"error":{"message":"slow down"}}"#,
        );
        assert_eq!(e.kind, UpstreamErrorKind::RateLimited);
        let e = openai_error(502, &HeaderMap::new(), b"<html>bad gateway</html>");
        assert_eq!(e.kind, UpstreamErrorKind::Server);
        assert_eq!(e.message, "upstream error");
    }
}

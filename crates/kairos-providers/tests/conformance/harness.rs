//! The plumbing every conformance case shares: what an adapter under test is ([`Spec`], with its
//! capability flags), a mock upstream started per test with the adapter's key required
//! ([`Fixture`]), and helpers that run one request through the real [`HttpClient`] and the
//! adapter's decoders.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::HeaderMap;
use http_body_util::BodyExt as _;
use kairos_api::openai::{
    ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, ChatMessage, EmbeddingResponse,
    EmbeddingVector, FinishReason, FunctionDef, Role, Tool, ToolChoice, ToolKind, Usage,
};
use kairos_api::sse::SseDecoder;
use kairos_providers::adapter::{Adapter, DecodeError, StreamSignal, Target, UpstreamErrorKind};
use kairos_providers::adapter::{UpstreamError, UpstreamRequest};
use kairos_providers::client::{BaseUrl, ClientOptions, HttpClient, read_body};
use kairos_testkit::{BilledCall, MockConfig, MockServer};
use serde_json::Value;

/// Upper bound for any single wait on the mock (headers, one body frame). A guard against a hung
/// test, never a synchronisation device: every wait ends as soon as the awaited data arrives.
const GUARD: Duration = Duration::from_secs(10);

/// One adapter configuration under test, with the ways it legitimately differs from the others.
pub struct Spec {
    pub adapter: Arc<dyn Adapter>,
    /// Appended to the mock's URL to form the operator-configured base URL (`/v1` or empty).
    pub base_path: &'static str,
    /// The model id sent upstream (Azure: the deployment).
    pub model: &'static str,
    /// The provider key; the mock is configured to require exactly this key.
    pub key: &'static str,
    /// Which `MockConfig` key field guards this API.
    pub mock_key: MockKey,
    /// The only header allowed to carry the key, and its value around the key.
    pub auth_header: &'static str,
    pub auth_prefix: &'static str,
    pub caps: Caps,
}

/// Which key of the mock's configuration protects the adapter's routes.
#[derive(Debug, Clone, Copy)]
pub enum MockKey {
    OpenAi,
    Anthropic,
    Gemini,
}

/// Capability flags: every difference between adapters is spelt out here, so no case is skipped
/// silently; each case asserts the documented alternative instead.
#[derive(Debug, Clone, Copy)]
pub struct Caps {
    /// The stream has an explicit terminal event (`[DONE]`, `message_stop`) for which the decoder
    /// returns [`StreamSignal::Done`]. Without one (Gemini), completeness is judged by `finish`.
    pub explicit_stream_end: bool,
    /// Streamed tool-call arguments arrive in several deltas (OpenAI, Anthropic). Gemini streams
    /// each function call whole, in one event.
    pub tool_args_streamed_in_pieces: bool,
    /// What the decoder reports for the mock's default in-stream error event.
    pub stream_error_kind: UpstreamErrorKind,
    pub json_mode: JsonMode,
    pub n_choices: NChoices,
    pub embeddings: Embeddings,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonMode {
    /// The upstream has a JSON mode the mock honours: the answer must parse as JSON.
    Native,
    /// No JSON mode upstream: the adapter adds a system instruction asking for JSON (the mock
    /// cannot follow instructions, so the case checks the instruction reached the upstream at
    /// this JSON pointer of the body).
    SystemInstruction { pointer: &'static str },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NChoices {
    /// `n` is translated; the JSON pointer is where it lands in the upstream body.
    Supported { request_pointer: &'static str },
    /// `n > 1` is a `TranslateError` naming `n`.
    Rejected,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Embeddings {
    /// Embeddings work. `reports_usage`: the upstream reports token usage (Gemini does not: the
    /// adapter says 0 and the gateway estimates).
    Supported { reports_usage: bool },
    /// `embeddings_request` is a `TranslateError`.
    Unsupported,
}

impl Spec {
    pub fn mock_config(&self) -> MockConfig {
        let mut cfg = MockConfig::default();
        let key = Some(self.key.to_owned());
        match self.mock_key {
            MockKey::OpenAi => cfg.openai_key = key,
            MockKey::Anthropic => cfg.anthropic_key = key,
            MockKey::Gemini => cfg.gemini_key = key,
        }
        cfg
    }
}

/// A mock upstream (port 0, the adapter's key required) with a client pointed at it.
pub struct Fixture<'s> {
    pub spec: &'s Spec,
    pub mock: MockServer,
    pub client: HttpClient,
    pub base: BaseUrl,
    /// The key sent upstream (the spec's key unless a case swaps it).
    pub key: String,
}

/// A non-2xx answer, classified by the adapter.
#[derive(Debug)]
pub struct Failure {
    pub status: u16,
    pub error: UpstreamError,
}

impl<'s> Fixture<'s> {
    pub async fn start(spec: &'s Spec) -> Fixture<'s> {
        let mock = MockServer::start(spec.mock_config())
            .await
            .expect("mock server starts on port 0");
        let base = BaseUrl::parse(&format!("{}{}", mock.url(), spec.base_path))
            .expect("the mock URL is a valid base URL");
        Fixture {
            spec,
            mock,
            client: HttpClient::new(&ClientOptions::default()),
            base,
            key: spec.key.to_owned(),
        }
    }

    pub fn adapter(&self) -> &dyn Adapter {
        self.spec.adapter.as_ref()
    }

    pub fn target(&self) -> Target<'_> {
        Target {
            provider: "conformance",
            upstream_model: self.spec.model,
            api_key: Some(&self.key),
            default_max_tokens: 1024,
        }
    }

    /// Translate `req` as the gateway's pipeline does: the canonical request's `stream` agrees
    /// with the `stream` argument (the `stream_flag_follows_argument` case checks adapters that
    /// are handed a disagreeing pair).
    pub fn chat_request(&self, req: &ChatCompletionRequest, stream: bool) -> UpstreamRequest {
        let req = ChatCompletionRequest {
            stream: Some(stream),
            ..req.clone()
        };
        self.adapter()
            .chat_request(&req, &self.target(), stream)
            .expect("the adapter translates the request")
    }

    /// Translate `req` exactly as given (its `stream` field untouched).
    pub fn chat_request_raw(&self, req: &ChatCompletionRequest, stream: bool) -> UpstreamRequest {
        self.adapter()
            .chat_request(req, &self.target(), stream)
            .expect("the adapter translates the request")
    }

    /// Send and read the whole body.
    pub async fn send(&self, up: UpstreamRequest) -> (u16, HeaderMap, Bytes) {
        let resp = self
            .client
            .send(&self.base, up, &HeaderMap::new(), GUARD)
            .await
            .expect("the mock answers");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = read_body(resp.into_body(), 16 * 1024 * 1024, GUARD)
            .await
            .expect("the body is read");
        (status, headers, body)
    }

    /// A non-stream chat call: `Ok` decoded 2xx answer, `Err` classified error.
    pub async fn chat(
        &self,
        req: &ChatCompletionRequest,
    ) -> Result<Result<ChatCompletion, DecodeError>, Failure> {
        let up = self.chat_request(req, false);
        let (status, headers, body) = self.send(up).await;
        if !(200..300).contains(&status) {
            return Err(Failure {
                status,
                error: self.adapter().upstream_error(status, &headers, &body),
            });
        }
        Ok(self.adapter().chat_response(&body, &self.target()))
    }

    /// A non-stream chat call that must succeed.
    pub async fn chat_ok(&self, req: &ChatCompletionRequest) -> ChatCompletion {
        match self.chat(req).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => panic!("the answer does not decode: {e:?}"),
            Err(f) => panic!("the upstream refused: {f:?}"),
        }
    }

    /// A stream chat call: every body frame fed to the SSE decoder as it arrives, every event to
    /// the adapter's stream decoder, `finish` at the end of the body (unless an event failed).
    pub async fn stream(&self, req: &ChatCompletionRequest) -> StreamRun {
        self.stream_upstream(self.chat_request(req, true)).await
    }

    /// Send an already translated stream request and decode what comes back.
    pub async fn stream_upstream(&self, up: UpstreamRequest) -> StreamRun {
        let resp = self
            .client
            .send(&self.base, up, &HeaderMap::new(), GUARD)
            .await
            .expect("the mock answers");
        assert_eq!(resp.status().as_u16(), 200, "stream status");
        let mut body = resp.into_body();
        let mut sse = SseDecoder::default();
        let mut decoder = self.adapter().chat_stream_decoder(&self.target());
        let mut run = StreamRun::default();
        loop {
            let frame = tokio::time::timeout(GUARD, body.frame())
                .await
                .expect("the stream makes progress");
            let Some(frame) = frame else { break };
            let frame = frame.expect("the body reads without a transport error");
            let Ok(data) = frame.into_data() else {
                continue;
            };
            run.frames += 1;
            sse.feed(&data);
            while let Some(event) = sse.next_event().expect("valid SSE framing") {
                run.events += 1;
                match decoder.on_event(&event, &mut run.chunks) {
                    Ok(StreamSignal::Done) => run.done_signals += 1,
                    Ok(StreamSignal::Continue) => {}
                    Err(e) => {
                        run.outcome = Err(e);
                        return run;
                    }
                }
            }
        }
        run.partial_event_at_eof = sse.has_partial();
        run.outcome = decoder.finish(&mut run.chunks);
        run
    }

    /// The ledger, which must hold exactly `n` calls.
    pub fn ledger(&self, n: usize) -> Vec<BilledCall> {
        let ledger = self.mock.ledger();
        assert_eq!(ledger.len(), n, "ledger: {ledger:?}");
        ledger
    }

    /// Parse the body of the `i`-th request the mock received.
    pub fn request_body(&self, i: usize) -> Value {
        let reqs = self.mock.requests();
        let r = reqs.get(i).expect("the request reached the mock");
        serde_json::from_str(&r.body).expect("the upstream body is JSON")
    }
}

/// Everything one stream produced.
#[derive(Debug)]
pub struct StreamRun {
    pub chunks: Vec<ChatCompletionChunk>,
    /// How many times the decoder returned [`StreamSignal::Done`].
    pub done_signals: usize,
    /// The first decode error, else the result of `finish`.
    pub outcome: Result<(), DecodeError>,
    pub frames: usize,
    pub events: usize,
    pub partial_event_at_eof: bool,
}

impl Default for StreamRun {
    fn default() -> Self {
        StreamRun {
            chunks: Vec::new(),
            done_signals: 0,
            outcome: Err(DecodeError::Invalid("stream never ran".to_owned())),
            frames: 0,
            events: 0,
            partial_event_at_eof: false,
        }
    }
}

/// A tool call put back together from stream deltas.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct AssembledCall {
    pub id: Option<String>,
    pub name: String,
    pub arguments: String,
}

/// A stream's chunks folded into what a client would show.
#[derive(Debug, Default)]
pub struct Assembled {
    /// Content per choice index.
    pub text: BTreeMap<u32, String>,
    /// Every finish reason, in order, with its choice index.
    pub finishes: Vec<(u32, FinishReason)>,
    /// Every usage report, with the number of choices its chunk carried.
    pub usages: Vec<(usize, Usage)>,
    /// Tool calls per (choice index, tool-call index).
    pub tool_calls: BTreeMap<(u32, u32), AssembledCall>,
    /// The role of the first delta seen for each choice.
    pub first_role: BTreeMap<u32, Option<Role>>,
    /// Position of the first chunk carrying usage, and of the last chunk carrying a finish reason.
    pub first_usage_pos: Option<usize>,
    pub last_finish_pos: Option<usize>,
}

impl StreamRun {
    pub fn assemble(&self) -> Assembled {
        let mut a = Assembled::default();
        for (pos, chunk) in self.chunks.iter().enumerate() {
            if let Some(u) = &chunk.usage {
                a.usages.push((chunk.choices.len(), u.clone()));
                a.first_usage_pos.get_or_insert(pos);
            }
            for c in &chunk.choices {
                a.first_role.entry(c.index).or_insert(c.delta.role);
                if let Some(t) = &c.delta.content {
                    a.text.entry(c.index).or_default().push_str(t);
                }
                if let Some(f) = &c.finish_reason {
                    a.finishes.push((c.index, f.clone()));
                    a.last_finish_pos = Some(pos);
                }
                for tc in c.delta.tool_calls.iter().flatten() {
                    let call = a.tool_calls.entry((c.index, tc.index)).or_default();
                    if let Some(id) = &tc.id {
                        assert!(
                            call.id.is_none() || call.id.as_ref() == Some(id),
                            "a tool call changed its id mid-stream"
                        );
                        call.id = Some(id.clone());
                    }
                    if let Some(f) = &tc.function {
                        if let Some(n) = &f.name {
                            call.name.push_str(n);
                        }
                        if let Some(args) = &f.arguments {
                            call.arguments.push_str(args);
                        }
                    }
                }
            }
        }
        a
    }

    /// Every chunk belongs to one completion: one non-empty id and a non-empty model throughout.
    pub fn assert_one_identity(&self) {
        let first = self.chunks.first().expect("the stream produced chunks");
        assert!(!first.id.is_empty(), "chunk id is empty");
        for c in &self.chunks {
            assert_eq!(c.id, first.id, "all chunks of a stream share one id");
            assert!(!c.model.is_empty(), "chunk model is empty");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Canonical requests

pub fn text_request() -> ChatCompletionRequest {
    ChatCompletionRequest {
        model: "conformance-model".to_owned(),
        messages: vec![
            ChatMessage::new(Role::System, "You are a terse assistant."),
            ChatMessage::new(Role::User, "Say hello to the conformance suite."),
        ],
        ..ChatCompletionRequest::default()
    }
}

pub const TOOL_NAME: &str = "get_weather";
pub const TOOL_ARGS: &str = r#"{"city":"Paris","unit":"celsius","days":[1,2]}"#;

pub fn tool_request() -> ChatCompletionRequest {
    ChatCompletionRequest {
        messages: vec![ChatMessage::new(
            Role::User,
            "What is the weather in Paris?",
        )],
        tools: Some(vec![Tool {
            kind: ToolKind::Function,
            function: Some(FunctionDef {
                name: TOOL_NAME.to_owned(),
                description: Some("Weather forecast for a city".to_owned()),
                parameters: Some(serde_json::json!({
                    "type": "object",
                    "properties": {
                        "city": {"type": "string"},
                        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                        "days": {"type": "array", "items": {"type": "integer"}}
                    },
                    "required": ["city"]
                })),
                strict: None,
            }),
            custom: None,
        }]),
        tool_choice: Some(ToolChoice::Auto),
        ..text_request()
    }
}

// ---------------------------------------------------------------------------------------------
// Assertions

/// The usage the adapter reported equals what the mock billed.
#[track_caller]
pub fn assert_usage_matches(usage: &Usage, billed: &BilledCall) {
    assert_eq!(
        (usage.prompt_tokens, usage.completion_tokens),
        (
            u64::from(billed.prompt_tokens),
            u64::from(billed.completion_tokens)
        ),
        "reported usage {usage:?} differs from the billed call {billed:?}"
    );
    assert_eq!(
        usage.total_tokens,
        usage.prompt_tokens + usage.completion_tokens,
        "total_tokens"
    );
    assert!(billed.prompt_tokens > 0 && billed.completion_tokens > 0);
}

/// Both representations of one JSON document are equal as JSON.
#[track_caller]
pub fn assert_same_json(actual: &str, expected: &str) {
    let a: Value =
        serde_json::from_str(actual).unwrap_or_else(|e| panic!("`{actual}` is not JSON: {e}"));
    let b: Value = serde_json::from_str(expected).expect("expected is JSON");
    assert_eq!(a, b);
}

pub fn vectors(resp: &EmbeddingResponse) -> Vec<Vec<f32>> {
    resp.data
        .iter()
        .map(|e| match &e.embedding {
            EmbeddingVector::Float(v) => v.clone(),
            EmbeddingVector::Base64(s) => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(s)
                    .expect("base64 embedding");
                assert_eq!(bytes.len() % 4, 0, "base64 embedding is whole f32s");
                bytes
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect()
            }
        })
        .collect()
}

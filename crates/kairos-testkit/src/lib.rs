//! kairos-testkit: the mock upstream.
//!
//! A mock LLM provider speaking the OpenAI, Anthropic and Gemini wire formats (streaming
//! included) with scriptable faults, and keeping its own ledger of billed tokens per request:
//! the "provider invoice" oracle for accounting tests. It deliberately does not depend on the
//! gateway's own type crates: it is an independent oracle, built on `serde_json` alone.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use kairos_testkit::{Behavior, MockConfig, MockServer, StreamFault};
//! let mock = MockServer::start(MockConfig::default()).await?;
//! mock.push(Behavior { status: 429, retry_after: Some("2".into()), ..Behavior::default() });
//! mock.push(Behavior { stream_fault: Some(StreamFault::CutAfter(2)), ..Behavior::default() });
//! // point the gateway at mock.url() ... then compare its ledger with mock.ledger()
//! # Ok(()) }
//! ```
//!
//! # Routes
//!
//! | API | route |
//! |---|---|
//! | OpenAI | `POST /v1/chat/completions`, `POST /v1/embeddings`, `GET /v1/models`, `GET /v1/models/{id}` |
//! | Azure OpenAI | `POST /openai/deployments/{deployment}/chat/completions` and `.../embeddings` (auth header `api-key`, model = deployment) |
//! | Anthropic | `POST /v1/messages`, `POST /v1/messages/count_tokens` |
//! | Gemini | `POST /v1beta/models/{model}:generateContent`, `:streamGenerateContent` (`?alt=sse` for SSE, else a streamed JSON array), `:embedContent`, `:batchEmbedContents`, `:countTokens`; also under `/v1/models/` |
//! | control | `POST /__mock/script`, `GET /__mock/ledger`, `GET /__mock/requests`, `POST /__mock/reset`, `GET /__mock/health`, `GET /__mock/stats` |
//!
//! Unknown routes answer 404 (OpenAI shape) and are logged.
//!
//! `POST /__mock/script` takes a [`Behavior`] (queued FIFO), `{"model": "...", "behavior": {...}}`
//! (queued for that model), or an array of those; unknown fields are rejected (400).
//! `GET /__mock/ledger` and `GET /__mock/requests` return JSON arrays of [`BilledCall`] and
//! [`ReceivedRequest`]; `GET /__mock/stats` returns `{"calls", "disconnects"}`.
//! The `kairos-mock` binary serves the same mock as a process
//! (`kairos-mock --listen ADDR [--config mock.json] [--demo] [--no-record]`).
//!
//! # Choosing the behaviour
//!
//! Each *inference* request (chat, messages, generate, embeddings) takes, in this order of
//! precedence: the next behaviour pushed for its model ([`MockServer::push_for_model`]), the
//! next behaviour of the FIFO script ([`MockServer::push`]), a directive
//! `[[mock {"status":503,"retry_after":"2"}]]` (JSON of a [`Behavior`]) found in any string of the
//! request body, or the configured defaults ([`MockConfig::defaults`]). A scripted or directive
//! behaviour replaces the defaults as a whole (its missing fields take [`Behavior::default`]).
//! Model lists and token-count routes neither consume scripts nor count as calls.
//!
//! Checks happen in the provider's order: auth (401), then request validation (400), then the
//! behaviour. A malformed directive is a 400.
//!
//! # Token counting (deterministic)
//!
//! - `text_tokens(s) = ceil(chars(s) / 4)` (Unicode scalar values, not bytes).
//! - **prompt tokens** = for each message (OpenAI/Anthropic `messages`, Gemini `contents`):
//!   3 + the sum of `text_tokens` over every string in the message except the values of the keys
//!   `role` and `type`; plus the same sum over Anthropic `system` / Gemini `systemInstruction`
//!   (no +3); plus `text_tokens` of the compact JSON of `tools` (and OpenAI `functions`).
//!   Embeddings: the sum of `text_tokens` over the inputs (token-array inputs: their length).
//! - **completion tokens** = `max(1, text_tokens(reply) + text_tokens(tool name) +
//!   text_tokens(tool arguments))` per choice, times `n`.
//! - **cached tokens** = 0 unless the behaviour sets `cached_tokens`; they are part of the prompt
//!   tokens (Anthropic's wire `input_tokens` is `prompt - cached`, `cache_read_input_tokens` is
//!   `cached`, as at the real API).
//! - Behaviour overrides (`prompt_tokens`, `completion_tokens`, `cached_tokens`) replace the
//!   computed numbers.
//! - If the request caps the output (`max_completion_tokens`/`max_tokens`, Anthropic
//!   `max_tokens`, Gemini `maxOutputTokens`) and no `completion_tokens` override or tool call
//!   applies, the text is cut to `4 * cap` chars and the finish reason becomes `length`
//!   (`max_tokens`, `MAX_TOKENS`): the mock never bills more output than the cap.
//!
//! # Billing (the ledger)
//!
//! One [`BilledCall`] per inference request when `record` is on. A 2xx non-stream answer bills
//! its full usage. A stream is billed when its headers go out with the prompt tokens, and its
//! completion tokens grow as content events are written
//! (`ceil(full * chars_written / total_chars)`), so a cut, stall, abort or client disconnect bills
//! partially with `completed: false`. Errors and redirects bill 0 tokens (unless
//! `bill_on_error`). The ledger bills the same whatever `usage` the response reports.
//!
//! # Reply text
//!
//! When the behaviour sets no `text`: with `split_utf8`, a fixed text full of "é" and "😀";
//! with JSON output requested (`response_format` json_object/json_schema, Gemini
//! `responseMimeType: application/json`), a small JSON object (satisfying simple schemas);
//! in demo mode `[demo:{model}] Here is a short answer to "<first 60 chars of the last user
//! message>". ...` (three sentences); otherwise `Mock reply from {model} to "<snippet>".`
//!
//! # Timing
//!
//! Streams: headers after `headers_delay_ms`, then the preamble events at once (OpenAI role
//! chunk; Anthropic `message_start`, `content_block_start`, `ping`), `ttft_ms` before the first
//! content event, `itl_ms` between content events, then the closing events at once. Non-stream
//! answers wait `headers_delay_ms + ttft_ms + (content events - 1) * itl_ms` before the headers;
//! errors wait `headers_delay_ms`. Nothing sleeps when the delays are 0.
//!
//! A client that goes away while a response is pending or a stream is running counts in
//! [`MockServer::disconnects`].

mod anthropic;
mod behavior;
mod common;
mod control;
mod embed;
mod gemini;
mod openai;
mod server;
mod state;
mod stream;

pub use behavior::{Behavior, StreamFault, ToolCallSpec, UsageMode, parse_directive};
pub use server::{MockServer, router, serve, serve_with};
pub use state::{BilledCall, MockConfig, MockHandle, ReceivedRequest};

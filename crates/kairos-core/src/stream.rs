//! Committed upstream streams: [`EventReader`] (body frames -> SSE events, with the idle and
//! total deadlines), [`ChatStream`] (events -> canonical chunks through an adapter's decoder) and
//! [`NativeStream`] (Anthropic events forwarded as they are, watched for usage and a clean end).
//!
//! Both streams carry the request's [`Recorder`]. The final `Some(Err(..))` (cut, stall,
//! upstream error event) or `None` (clean end) writes the ledger row; dropping a stream early
//! (client gone) writes it as `client_disconnected` with the partial usage, and drops the
//! upstream body, which closes that connection and cancels the generation promptly.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use kairos_api::openai::ChatCompletionChunk;
use kairos_api::sse::{SseDecoder, SseEvent, encode_named};
use kairos_providers::adapter::{ChatStreamDecoder, StreamSignal};
use kairos_providers::anthropic::NativeStreamObserver;

use crate::error::{GatewayError, UpstreamFailure};
use crate::pipeline::usd;
use crate::record::{Recorder, Tokens};

/// Upstream body -> SSE events, enforcing the stream idle timeout and the request deadline.
pub struct EventReader {
    body: Incoming,
    sse: SseDecoder,
    provider: String,
    idle: Duration,
    deadline: Instant,
    eof: bool,
    /// Bytes still allowed before the stream counts as too large (test-matrix U16).
    budget: usize,
}

impl EventReader {
    pub fn new(
        body: Incoming,
        provider: &str,
        idle: Duration,
        deadline: Instant,
        max_bytes: usize,
    ) -> EventReader {
        EventReader {
            body,
            sse: SseDecoder::default(),
            provider: provider.to_owned(),
            idle,
            deadline,
            eof: false,
            budget: max_bytes,
        }
    }

    pub fn provider(&self) -> &str {
        &self.provider
    }

    fn stalled(&self) -> GatewayError {
        GatewayError::Upstream(UpstreamFailure::StreamStalled {
            provider: self.provider.clone(),
        })
    }

    /// The next event; `Ok(None)` at the end of the body.
    pub async fn next_event(&mut self) -> Result<Option<SseEvent>, GatewayError> {
        loop {
            match self.sse.next_event() {
                Ok(Some(ev)) => return Ok(Some(ev)),
                Ok(None) => {}
                Err(e) => {
                    return Err(GatewayError::Upstream(UpstreamFailure::InvalidResponse {
                        provider: self.provider.clone(),
                        detail: e.to_string(),
                    }));
                }
            }
            if self.eof {
                return Ok(None);
            }
            let now = Instant::now();
            if now >= self.deadline {
                return Err(self.stalled());
            }
            let wait = self.idle.min(self.deadline - now);
            match tokio::time::timeout(wait, self.body.frame()).await {
                Err(_) => return Err(self.stalled()),
                Ok(None) => self.eof = true,
                Ok(Some(Err(_))) => {
                    return Err(GatewayError::Upstream(UpstreamFailure::StreamCut {
                        provider: self.provider.clone(),
                    }));
                }
                Ok(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        let Some(left) = self.budget.checked_sub(data.len()) else {
                            return Err(GatewayError::Upstream(
                                UpstreamFailure::ResponseTooLarge {
                                    provider: self.provider.clone(),
                                },
                            ));
                        };
                        self.budget = left;
                        self.sse.feed(&data);
                    }
                }
            }
        }
    }

    /// After the terminal event: read the rest of the body (bounded) so that the connection
    /// can return to the pool instead of being closed.
    pub async fn drain(&mut self) {
        if self.eof {
            return;
        }
        let body = &mut self.body;
        let _ = tokio::time::timeout(Duration::from_millis(50), async {
            while let Some(Ok(_)) = body.frame().await {}
        })
        .await;
        self.eof = true;
    }
}

/// A committed upstream stream, translated to canonical chunks. See the module docs.
pub struct ChatStream {
    reader: EventReader,
    decoder: Box<dyn ChatStreamDecoder>,
    queue: VecDeque<ChatCompletionChunk>,
    scratch: Vec<ChatCompletionChunk>,
    pub(crate) rec: Option<Recorder>,
    /// The upstream's terminal event (or EOF) was seen.
    upstream_done: bool,
    /// `decoder.finish` has run.
    decoder_finished: bool,
    ended: bool,
    cost_micros: Option<u64>,
}

impl ChatStream {
    pub(crate) fn new(reader: EventReader, decoder: Box<dyn ChatStreamDecoder>) -> ChatStream {
        ChatStream {
            reader,
            decoder,
            queue: VecDeque::new(),
            scratch: Vec::new(),
            rec: None,
            upstream_done: false,
            decoder_finished: false,
            ended: false,
            cost_micros: None,
        }
    }

    /// The cost, once the usage chunk has passed.
    pub fn cost_micros(&self) -> Option<u64> {
        self.cost_micros
    }

    /// Read until the upstream's first event has produced a chunk (or the stream ended), so
    /// that a failure before that (a bad status, a body that is not a stream, an immediate error
    /// event) is an ordinary HTTP error. The first chunk is then sent at once: waiting for the
    /// first *content* chunk instead would add the upstream's preamble-to-first-token gap to
    /// the client's time to first byte. With `hold_for_content` (another target could still take
    /// over) the stream is held until its first content chunk, so that a preamble followed by an
    /// error still falls back cleanly.
    pub(crate) async fn prime(
        &mut self,
        rec: &mut Recorder,
        hold_for_content: bool,
    ) -> Result<(), GatewayError> {
        let ready = |s: &ChatStream| {
            if hold_for_content {
                s.queue.iter().any(|c| {
                    c.usage.is_some()
                        || c.choices
                            .iter()
                            .any(|ch| ch.delta.has_content() || ch.finish_reason.is_some())
                })
            } else {
                !s.queue.is_empty()
            }
        };
        while !ready(self) && !self.upstream_done {
            if let Err(e) = self.read_one().await {
                rec.upstream_end();
                return Err(e);
            }
        }
        if self.upstream_done && !ready(self) {
            let r = self.finish_decoder();
            rec.upstream_end();
            r?;
        }
        Ok(())
    }

    async fn read_one(&mut self) -> Result<(), GatewayError> {
        match self.reader.next_event().await? {
            None => self.upstream_done = true,
            Some(ev) => {
                let sig = self
                    .decoder
                    .on_event(&ev, &mut self.scratch)
                    .map_err(|e| GatewayError::from_decode(self.reader.provider(), e))?;
                self.queue.extend(self.scratch.drain(..));
                if sig == StreamSignal::Done {
                    self.upstream_done = true;
                }
            }
        }
        Ok(())
    }

    /// Run the decoder's end-of-input check once, queueing any chunks it still holds.
    fn finish_decoder(&mut self) -> Result<(), GatewayError> {
        if self.decoder_finished {
            return Ok(());
        }
        self.decoder_finished = true;
        let mut tail = Vec::new();
        self.decoder
            .finish(&mut tail)
            .map_err(|e| GatewayError::from_decode(self.reader.provider(), e))?;
        self.queue.extend(tail);
        Ok(())
    }

    fn observe(&mut self, chunk: &mut ChatCompletionChunk) {
        let Some(rec) = self.rec.as_mut() else { return };
        rec.observe_chunk(chunk);
        for ch in &chunk.choices {
            let d = &ch.delta;
            if d.has_content() {
                rec.first_token();
            }
            for text in [&d.content, &d.reasoning_content, &d.refusal]
                .into_iter()
                .flatten()
            {
                rec.add_output_text(text);
            }
            for call in d.tool_calls.iter().flatten() {
                if let Some(f) = &call.function {
                    for text in [&f.name, &f.arguments].into_iter().flatten() {
                        rec.add_output_text(text);
                    }
                }
            }
        }
        if let Some(u) = chunk.usage.as_mut() {
            rec.set_usage(Tokens::from_usage(u));
            self.cost_micros = rec.provider_cost_micros();
            u.cost = self.cost_micros.map(usd);
        }
    }

    /// A chunk already decoded, without waiting (lets the server coalesce writes).
    pub fn next_ready(&mut self) -> Option<ChatCompletionChunk> {
        let mut c = self.queue.pop_front()?;
        self.observe(&mut c);
        Some(c)
    }

    /// The next canonical chunk; `Some(Err)` once if the stream fails; `None` at a clean end.
    pub async fn next(&mut self) -> Option<Result<ChatCompletionChunk, GatewayError>> {
        loop {
            if let Some(c) = self.next_ready() {
                return Some(Ok(c));
            }
            if self.ended {
                return None;
            }
            if self.upstream_done {
                if !self.decoder_finished {
                    self.reader.drain().await;
                    // Clean only if the decoder saw its terminal event (or, for APIs without
                    // one, the final finish reason).
                    if let Err(e) = self.finish_decoder() {
                        return Some(Err(self.fail(e)));
                    }
                    continue;
                }
                self.ended = true;
                if let Some(mut rec) = self.rec.take() {
                    rec.upstream_end();
                    rec.finish_ok(200);
                }
                return None;
            }
            if let Err(e) = self.read_one().await {
                return Some(Err(self.fail(e)));
            }
        }
    }

    fn fail(&mut self, e: GatewayError) -> GatewayError {
        self.ended = true;
        self.queue.clear();
        if let Some(mut rec) = self.rec.take() {
            rec.upstream_end();
            rec.finish_stream_err(&e);
        }
        e
    }
}

/// An Anthropic stream forwarded event by event to an Anthropic-shaped client (native
/// passthrough: nothing the client sent or the upstream answered is lost in translation).
pub struct NativeStream {
    reader: EventReader,
    observer: NativeStreamObserver,
    queue: VecDeque<Bytes>,
    pub(crate) rec: Option<Recorder>,
    upstream_done: bool,
    ended: bool,
}

impl NativeStream {
    pub(crate) fn new(reader: EventReader) -> NativeStream {
        NativeStream {
            reader,
            observer: NativeStreamObserver::new(),
            queue: VecDeque::new(),
            rec: None,
            upstream_done: false,
            ended: false,
        }
    }

    async fn read_one(&mut self, rec: &mut Recorder) -> Result<(), GatewayError> {
        let Some(ev) = self.reader.next_event().await? else {
            self.upstream_done = true;
            return Ok(());
        };
        let sig = self
            .observer
            .on_event(&ev)
            .map_err(|e| GatewayError::from_decode(self.reader.provider(), e))?;
        if ev.event.as_deref() == Some("content_block_start") {
            observe_block_start(&ev.data, rec);
        }
        if ev.event.as_deref() == Some("content_block_delta") {
            // The observer skips parsing deltas (the hot event); parse here, and never
            // forward one that is not valid JSON.
            if !collect_delta_text(&ev.data, rec) {
                return Err(GatewayError::Upstream(UpstreamFailure::InvalidResponse {
                    provider: self.reader.provider().to_owned(),
                    detail: "a content_block_delta event is not valid JSON".into(),
                }));
            }
            rec.first_token();
        }
        if ev.event.as_deref() == Some("message_delta") && self.observer.has_usage() {
            // message_delta carries the final output count: from here the provider's numbers
            // are complete (message_start's count is a placeholder).
            rec.set_usage(Tokens::from_usage(&self.observer.usage()));
        }
        self.queue.push_back(encode_named(
            ev.event.as_deref().unwrap_or("message"),
            ev.data.as_bytes(),
        ));
        if sig == StreamSignal::Done {
            self.upstream_done = true;
        }
        Ok(())
    }

    /// Read until the first event is queued (see [`ChatStream::prime`]).
    pub(crate) async fn prime(&mut self, rec: &mut Recorder) -> Result<(), GatewayError> {
        while self.queue.is_empty() && !self.upstream_done {
            if let Err(e) = self.read_one(rec).await {
                rec.upstream_end();
                return Err(e);
            }
        }
        if self.upstream_done
            && let Err(e) = self.observer.finish()
        {
            rec.upstream_end();
            return Err(GatewayError::from_decode(self.reader.provider(), e));
        }
        Ok(())
    }

    /// The next event, as SSE bytes; `Some(Err)` once on failure; `None` at a clean end.
    pub async fn next(&mut self) -> Option<Result<Bytes, GatewayError>> {
        loop {
            if let Some(b) = self.queue.pop_front() {
                return Some(Ok(b));
            }
            if self.ended {
                return None;
            }
            if self.upstream_done {
                self.reader.drain().await;
                self.ended = true;
                let mut rec = self.rec.take()?;
                rec.upstream_end();
                if let Some(f) = self.observer.finish_reason() {
                    rec.observed_mut().set_finish(f.as_str());
                }
                return match self.observer.finish() {
                    Ok(()) => {
                        rec.finish_ok(200);
                        None
                    }
                    Err(e) => {
                        let e = GatewayError::from_decode(self.reader.provider(), e);
                        rec.finish_stream_err(&e);
                        Some(Err(e))
                    }
                };
            }
            let mut rec = self.rec.take()?;
            let r = self.read_one(&mut rec).await;
            self.rec = Some(rec);
            if let Err(e) = r {
                self.ended = true;
                self.queue.clear();
                if let Some(mut rec) = self.rec.take() {
                    rec.upstream_end();
                    rec.finish_stream_err(&e);
                }
                return Some(Err(e));
            }
        }
    }

    pub fn usage(&self) -> kairos_api::openai::Usage {
        self.observer.usage()
    }
}

/// Visible text of a `content_block_delta` (for estimates should the stream be cut). False when
/// the event is not valid JSON.
fn collect_delta_text(data: &str, rec: &mut Recorder) -> bool {
    #[derive(serde::Deserialize)]
    struct Ev<'a> {
        #[serde(default)]
        index: u32,
        #[serde(borrow)]
        delta: Option<D<'a>>,
    }
    #[derive(serde::Deserialize)]
    struct D<'a> {
        #[serde(borrow, default)]
        text: Option<std::borrow::Cow<'a, str>>,
        #[serde(borrow, default)]
        partial_json: Option<std::borrow::Cow<'a, str>>,
        #[serde(borrow, default)]
        thinking: Option<std::borrow::Cow<'a, str>>,
    }
    match serde_json::from_str::<Ev<'_>>(data) {
        Ok(Ev {
            index,
            delta: Some(d),
        }) => {
            if let Some(t) = &d.text {
                rec.observed_mut().add_text(t);
            }
            if let Some(j) = &d.partial_json {
                rec.observed_mut().tool_args(index, j);
            }
            for t in [d.text, d.partial_json, d.thinking].into_iter().flatten() {
                rec.add_output_text(&t);
            }
            true
        }
        Ok(Ev { delta: None, .. }) => true,
        Err(_) => false,
    }
}

/// A `content_block_start`: a tool call's name, for the implicit signal (the observer has
/// already checked the event is valid JSON).
fn observe_block_start(data: &str, rec: &mut Recorder) {
    #[derive(serde::Deserialize)]
    struct Ev<'a> {
        #[serde(default)]
        index: u32,
        #[serde(borrow)]
        content_block: Block<'a>,
    }
    #[derive(serde::Deserialize)]
    struct Block<'a> {
        #[serde(borrow, rename = "type")]
        kind: std::borrow::Cow<'a, str>,
        #[serde(borrow, default)]
        name: Option<std::borrow::Cow<'a, str>>,
        #[serde(borrow, default)]
        text: Option<std::borrow::Cow<'a, str>>,
    }
    if let Ok(ev) = serde_json::from_str::<Ev<'_>>(data) {
        let b = ev.content_block;
        match b.kind.as_ref() {
            "tool_use" => {
                rec.observed_mut()
                    .tool_name(ev.index, b.name.as_deref().unwrap_or_default());
            }
            "text" => {
                if let Some(t) = b.text.as_deref().filter(|t| !t.is_empty()) {
                    rec.observed_mut().add_text(t);
                }
            }
            _ => {}
        }
    }
}

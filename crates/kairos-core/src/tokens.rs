//! Token estimates for when a provider reports no usage (rows are then marked `estimated`).
//!
//! Uses tiktoken's `o200k_base` (the tokenizer of current OpenAI models) for every model: exact
//! for OpenAI, an approximation for other vendors' tokenizers (typically within ~10-20%). The BPE
//! table is loaded lazily on first use (it costs ~100 ms and tens of MB), so a gateway whose
//! providers always report usage never pays for it. Never call these on the async request path:
//! ledger estimates go through [`estimator`], one background thread with a bounded queue.

use std::sync::OnceLock;
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};

use kairos_api::openai::{ChatCompletionRequest, ChatMessage, EmbeddingInput};

/// A unit of estimation work (tokenise, then record the ledger row).
pub type EstimateJob = Box<dyn FnOnce() + Send + 'static>;

/// One dedicated thread that runs estimate jobs in order.
///
/// Not `spawn_blocking`: a load of streams without usage (some OpenAI-compatible servers never
/// report it) made one blocking thread per request, hundreds at once, each with its own allocator
/// heap: p99 latency went to seconds and RSS to hundreds of MB in the peerbench SSE scenario.
pub struct Estimator {
    tx: SyncSender<EstimateJob>,
}

impl Estimator {
    /// Queue a job. When the queue is full (the thread cannot keep up), the job runs on the
    /// caller's thread instead: slower for that caller, but no row is ever lost.
    pub fn submit(&self, job: EstimateJob) {
        match self.tx.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(job) | TrySendError::Disconnected(job)) => job(),
        }
    }

    /// Wait until every job queued before this call has run (blocking: call it from a blocking
    /// thread). Shutdown calls it before draining the ledger, so that rows still being
    /// estimated, classified or embedded are written.
    pub fn flush(&self) {
        let (done_tx, done_rx) = sync_channel::<()>(1);
        let barrier: EstimateJob = Box::new(move || {
            let _ = done_tx.send(());
        });
        if let Err(e) = self.tx.send(barrier) {
            (e.0)();
        }
        let _ = done_rx.recv();
    }
}

/// The process-wide estimator, started on first use.
pub fn estimator() -> &'static Estimator {
    static E: OnceLock<Estimator> = OnceLock::new();
    E.get_or_init(|| {
        let (tx, rx) = sync_channel::<EstimateJob>(16_384);
        let spawned = std::thread::Builder::new()
            .name("kairos-estimator".into())
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    job();
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the token estimator thread; estimating inline");
        }
        Estimator { tx }
    })
}

/// Tokens in a piece of text.
pub fn count(text: &str) -> u64 {
    if text.is_empty() {
        return 0;
    }
    tiktoken_rs::o200k_base_singleton()
        .encode_ordinary(text)
        .len() as u64
}

/// Prompt tokens of a chat request, with OpenAI's per-message framing overhead (3 tokens per
/// message, 3 for the reply priming) and the tool definitions as JSON.
pub fn chat_prompt(req: &ChatCompletionRequest) -> u64 {
    let mut n = 3;
    for m in &req.messages {
        n += message(m);
    }
    if let Some(tools) = &req.tools
        && let Ok(json) = serde_json::to_string(tools)
    {
        n += count(&json);
    }
    n
}

fn message(m: &ChatMessage) -> u64 {
    let mut n = 3;
    if let Some(c) = &m.content {
        n += count(&c.text());
    }
    if let Some(name) = &m.name {
        n += count(name) + 1;
    }
    if let Some(calls) = &m.tool_calls {
        for c in calls {
            n += count(&c.function.name) + count(&c.function.arguments) + 3;
        }
    }
    n
}

/// Tokens of an embeddings input.
pub fn embedding_input(input: &EmbeddingInput) -> u64 {
    match input {
        EmbeddingInput::Text(s) => count(s),
        EmbeddingInput::Texts(v) => v.iter().map(|s| count(s)).sum(),
        EmbeddingInput::Tokens(t) => t.len() as u64,
        EmbeddingInput::TokenBatches(b) => b.iter().map(|t| t.len() as u64).sum(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kairos_api::openai::Role;

    #[test]
    fn flush_waits_for_queued_jobs() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        let done = Arc::new(AtomicUsize::new(0));
        for _ in 0..3 {
            let done = Arc::clone(&done);
            estimator().submit(Box::new(move || {
                std::thread::sleep(std::time::Duration::from_millis(30));
                done.fetch_add(1, Ordering::SeqCst);
            }));
        }
        estimator().flush();
        assert_eq!(done.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn counts_with_a_real_tokenizer() {
        assert_eq!(count(""), 0);
        assert_eq!(count("hello world"), 2);
        let req = ChatCompletionRequest {
            model: "m".into(),
            messages: vec![ChatMessage::new(Role::User, "hello world")],
            ..Default::default()
        };
        assert_eq!(chat_prompt(&req), 3 + 3 + 2);
    }
}

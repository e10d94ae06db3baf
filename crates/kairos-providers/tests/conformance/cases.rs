//! The conformance cases. Each is one async function over a [`Spec`]; the macro in
//! `conformance.rs` instantiates every one of them for every adapter. Where adapters legitimately
//! differ, the case branches on a capability flag and asserts the documented alternative.

use std::time::Duration;

use kairos_api::openai::{
    ChatCompletionRequest, EmbeddingInput, EmbeddingRequest, EmbeddingVector, EncodingFormat,
    FinishReason, ResponseFormat, Role,
};
use kairos_providers::adapter::{DecodeError, UpstreamErrorKind};
use kairos_testkit::{Behavior, StreamFault, ToolCallSpec, UsageMode};
use serde_json::Value;

use crate::harness::{
    Embeddings, Fixture, JsonMode, NChoices, Spec, StreamRun, TOOL_ARGS, TOOL_NAME,
    assert_same_json, assert_usage_matches, text_request, tool_request, vectors,
};

/// Scripted reply: long enough for the mock to split it into 4 content events.
const TEXT: &str = "Hello, conformance suite! This reply arrives in four pieces.";

fn scripted_text() -> Behavior {
    Behavior::text(TEXT)
}

fn scripted_tool_call() -> Behavior {
    Behavior {
        tool_call: Some(ToolCallSpec::new(TOOL_NAME, TOOL_ARGS)),
        ..Behavior::default()
    }
}

/// The stream ended the way a complete stream of this API ends.
#[track_caller]
fn assert_clean_end(spec: &Spec, run: &StreamRun) {
    assert_eq!(run.outcome, Ok(()), "stream outcome");
    let expected = usize::from(spec.caps.explicit_stream_end);
    assert_eq!(run.done_signals, expected, "StreamSignal::Done count");
    assert!(!run.partial_event_at_eof, "the body ended mid-event");
}

/// 1. A text answer: content, finish reason, usage equal to the provider's invoice, a model.
pub async fn text_non_stream(spec: &Spec) {
    let fx = Fixture::start(spec).await;
    fx.mock.push(scripted_text());
    let resp = fx.chat_ok(&text_request()).await;
    assert!(!resp.id.is_empty(), "id");
    assert!(!resp.model.is_empty(), "model");
    assert_eq!(resp.choices.len(), 1);
    let choice = &resp.choices[0];
    assert_eq!(choice.index, 0);
    assert_eq!(choice.message.role, Role::Assistant);
    assert_eq!(choice.message.content.as_deref(), Some(TEXT));
    assert!(choice.message.tool_calls.is_none());
    assert_eq!(choice.finish_reason, Some(FinishReason::Stop));
    let billed = &fx.ledger(1)[0];
    assert!(billed.completed && !billed.stream && billed.status == 200);
    assert_usage_matches(resp.usage.as_ref().expect("usage reported"), billed);
}

/// 2. The same answer streamed: deltas concatenate to the non-stream text, one finish reason,
///    the role first, one usage chunk (no choices) after the finish, equal to the invoice.
pub async fn text_stream(spec: &Spec) {
    let fx = Fixture::start(spec).await;
    fx.mock.push(scripted_text());
    fx.mock.push(scripted_text());
    let full = fx.chat_ok(&text_request()).await;
    let full_text = full.choices[0].message.content.clone().expect("content");

    let run = fx.stream(&text_request()).await;
    assert_clean_end(spec, &run);
    run.assert_one_identity();
    let first = run.chunks.first().expect("chunks");
    assert_eq!(
        first.choices.first().and_then(|c| c.delta.role),
        Some(Role::Assistant),
        "the first chunk carries the role"
    );
    let a = run.assemble();
    assert_eq!(a.text.len(), 1, "one choice");
    assert_eq!(
        a.text.get(&0),
        Some(&full_text),
        "stream text == non-stream text"
    );
    let pieces = run
        .chunks
        .iter()
        .flat_map(|c| &c.choices)
        .filter(|c| c.delta.content.as_deref().is_some_and(|t| !t.is_empty()))
        .count();
    assert!(pieces >= 2, "the text was streamed in pieces ({pieces})");
    assert_eq!(
        a.finishes,
        vec![(0, FinishReason::Stop)],
        "exactly one finish"
    );
    assert_eq!(a.usages.len(), 1, "exactly one usage chunk");
    assert_eq!(a.usages[0].0, 0, "the usage chunk has no choices");
    assert!(
        a.first_usage_pos > a.last_finish_pos,
        "usage comes after the finish reason"
    );
    let billed = &fx.ledger(2)[1];
    assert!(billed.completed && billed.stream);
    assert_usage_matches(&a.usages[0].1, billed);
}

/// 3. Test-matrix A5: the same prompt costs the same streamed or not.
pub async fn stream_and_non_stream_bill_the_same(spec: &Spec) {
    let fx = Fixture::start(spec).await;
    fx.mock.push(scripted_text());
    fx.mock.push(scripted_text());
    let full = fx.chat_ok(&text_request()).await;
    let run = fx.stream(&text_request()).await;
    assert_clean_end(spec, &run);
    let ledger = fx.ledger(2);
    let full_usage = full.usage.expect("non-stream usage");
    let a = run.assemble();
    assert_eq!(a.usages.len(), 1, "stream usage");
    let stream_usage = &a.usages[0].1;
    assert_usage_matches(&full_usage, &ledger[0]);
    assert_usage_matches(stream_usage, &ledger[1]);
    assert_eq!(
        (ledger[0].prompt_tokens, ledger[0].completion_tokens),
        (ledger[1].prompt_tokens, ledger[1].completion_tokens),
        "the upstream billed both shapes of the request the same"
    );
    assert_eq!(
        (full_usage.prompt_tokens, full_usage.completion_tokens),
        (stream_usage.prompt_tokens, stream_usage.completion_tokens)
    );
}

/// 3b. The `stream` argument decides whether a stream is asked for (the trait's contract),
///     whatever the canonical request's own `stream` field says: a fallback or a translated
///     Anthropic-client request must not depend on the field agreeing.
pub async fn stream_flag_follows_argument(spec: &Spec) {
    let fx = Fixture::start(spec).await;
    fx.mock.push(scripted_text());
    fx.mock.push(scripted_text());
    let unset = ChatCompletionRequest {
        stream: None,
        ..text_request()
    };
    let run = fx.stream_upstream(fx.chat_request_raw(&unset, true)).await;
    assert_clean_end(spec, &run);
    assert_eq!(run.assemble().text.get(&0).map(String::as_str), Some(TEXT));

    let contrary = ChatCompletionRequest {
        stream: Some(true),
        ..text_request()
    };
    let (status, _, body) = fx.send(fx.chat_request_raw(&contrary, false)).await;
    assert_eq!(status, 200);
    let resp = fx
        .adapter()
        .chat_response(&body, &fx.target())
        .expect("a non-stream answer");
    assert_eq!(resp.choices[0].message.content.as_deref(), Some(TEXT));
    let ledger = fx.ledger(2);
    assert_eq!((ledger[0].stream, ledger[1].stream), (true, false));
}

/// 4a. A tool call: one call, name and arguments intact, finish reason `tool_calls`.
pub async fn tool_call_non_stream(spec: &Spec) {
    let fx = Fixture::start(spec).await;
    fx.mock.push(scripted_tool_call());
    let resp = fx.chat_ok(&tool_request()).await;
    assert_eq!(resp.choices.len(), 1);
    let choice = &resp.choices[0];
    assert_eq!(choice.finish_reason, Some(FinishReason::ToolCalls));
    assert!(
        choice.message.content.as_deref().unwrap_or("").is_empty(),
        "no invented text: {:?}",
        choice.message.content
    );
    let calls = choice.message.tool_calls.as_ref().expect("tool_calls");
    assert_eq!(calls.len(), 1);
    assert!(!calls[0].id.is_empty(), "tool call id");
    assert_eq!(calls[0].kind, "function");
    assert_eq!(calls[0].function.name, TOOL_NAME);
    assert_same_json(&calls[0].function.arguments, TOOL_ARGS);
    assert_usage_matches(resp.usage.as_ref().expect("usage"), &fx.ledger(1)[0]);
}

/// 4b. The same tool call streamed: arguments reassembled from the deltas.
pub async fn tool_call_stream(spec: &Spec) {
    let fx = Fixture::start(spec).await;
    fx.mock.push(scripted_tool_call());
    let run = fx.stream(&tool_request()).await;
    assert_clean_end(spec, &run);
    run.assert_one_identity();
    let a = run.assemble();
    assert_eq!(
        a.first_role.get(&0),
        Some(&Some(Role::Assistant)),
        "the first delta carries the role"
    );
    assert!(
        a.text.values().all(String::is_empty),
        "no invented text: {:?}",
        a.text
    );
    assert_eq!(a.tool_calls.len(), 1, "one tool call: {:?}", a.tool_calls);
    let ((choice, index), call) = a.tool_calls.iter().next().expect("a call");
    assert_eq!((*choice, *index), (0, 0));
    assert!(call.id.as_deref().is_some_and(|id| !id.is_empty()), "id");
    assert_eq!(call.name, TOOL_NAME, "the name is sent once, whole");
    assert_same_json(&call.arguments, TOOL_ARGS);
    let arg_deltas = run
        .chunks
        .iter()
        .flat_map(|c| &c.choices)
        .flat_map(|c| c.delta.tool_calls.iter().flatten())
        .filter(|t| {
            t.function
                .as_ref()
                .and_then(|f| f.arguments.as_deref())
                .is_some_and(|s| !s.is_empty())
        })
        .count();
    if spec.caps.tool_args_streamed_in_pieces {
        assert!(arg_deltas >= 2, "arguments came in pieces ({arg_deltas})");
    } else {
        assert_eq!(arg_deltas, 1, "arguments came whole");
    }
    assert_eq!(a.finishes, vec![(0, FinishReason::ToolCalls)]);
    assert_eq!(a.usages.len(), 1);
    assert_usage_matches(&a.usages[0].1, &fx.ledger(1)[0]);
}

fn faulty(fault: StreamFault) -> Behavior {
    Behavior {
        stream_fault: Some(fault),
        ..scripted_text()
    }
}

/// A stream that did not end cleanly: no `Done`, no finish reason, no usage, a partial bill.
#[track_caller]
fn assert_unfinished(fx: &Fixture<'_>, run: &StreamRun) {
    assert_eq!(run.done_signals, 0, "no terminal event was sent");
    let a = run.assemble();
    assert!(a.finishes.is_empty(), "no finish reason: {:?}", a.finishes);
    assert!(a.usages.is_empty(), "no usage: {:?}", a.usages);
    assert!(
        !fx.ledger(1)[0].completed,
        "the mock billed an unfinished stream"
    );
}

/// 5a. A stream cut mid-text is `Truncated`, never a clean end.
pub async fn cut_stream_mid_text(spec: &Spec) {
    let fx = Fixture::start(spec).await;
    fx.mock.push(faulty(StreamFault::CutAfter(2)));
    let run = fx.stream(&text_request()).await;
    assert_eq!(run.outcome, Err(DecodeError::Truncated));
    assert_unfinished(&fx, &run);
    let text = run.assemble().text.remove(&0).unwrap_or_default();
    assert!(
        !text.is_empty() && text.len() < TEXT.len() && TEXT.starts_with(&text),
        "a strict prefix was delivered: {text:?}"
    );
}

/// 5b. A stream cut after all the text but before its finish/terminal events is `Truncated`.
pub async fn cut_stream_before_finish(spec: &Spec) {
    let fx = Fixture::start(spec).await;
    fx.mock.push(faulty(StreamFault::CutAfter(4)));
    let run = fx.stream(&text_request()).await;
    assert_eq!(run.outcome, Err(DecodeError::Truncated));
    assert_unfinished(&fx, &run);
    assert_eq!(run.assemble().text.get(&0).map(String::as_str), Some(TEXT));
}

/// 6a. A garbage line in a stream is a decode error (no panic, no clean end).
pub async fn malformed_stream_line(spec: &Spec) {
    let fx = Fixture::start(spec).await;
    fx.mock.push(faulty(StreamFault::MalformedAfter(1)));
    let run = fx.stream(&text_request()).await;
    assert!(
        matches!(run.outcome, Err(DecodeError::Invalid(_))),
        "{:?}",
        run.outcome
    );
    assert_unfinished(&fx, &run);
}

/// 6b. A truncated non-stream body is a decode error.
pub async fn malformed_body(spec: &Spec) {
    let fx = Fixture::start(spec).await;
    fx.mock.push(Behavior {
        malformed_body: true,
        ..scripted_text()
    });
    let res = fx.chat(&text_request()).await.expect("status 200");
    assert!(matches!(res, Err(DecodeError::Invalid(_))), "{res:?}");
}

/// 7. The upstream's in-stream error event is a `StreamError`, classified, with a sanitised
///    message.
pub async fn in_stream_error_event(spec: &Spec) {
    let fx = Fixture::start(spec).await;
    fx.mock.push(Behavior {
        error_message: Some(format!(
            "Internal failure while serving key {}; please retry",
            spec.key
        )),
        ..faulty(StreamFault::ErrorEventAfter(1))
    });
    let run = fx.stream(&text_request()).await;
    let Err(DecodeError::StreamError(e)) = &run.outcome else {
        panic!("expected a StreamError, got {:?}", run.outcome);
    };
    assert_eq!(e.kind, spec.caps.stream_error_kind, "{e:?}");
    assert!(!e.message.is_empty());
    assert!(!e.message.contains(spec.key), "key leaked: {}", e.message);
    assert_unfinished(&fx, &run);
}

/// 8. One error status: classified, `Retry-After` kept, the message free of the key.
async fn error_status(
    spec: &Spec,
    status: u16,
    expected: UpstreamErrorKind,
    retry_after: Option<u64>,
) {
    let fx = Fixture::start(spec).await;
    fx.mock.push(Behavior {
        retry_after: retry_after.map(|s| s.to_string()),
        ..Behavior::status(status)
    });
    let failure = match fx.chat(&text_request()).await {
        Err(f) => f,
        Ok(r) => panic!("status {status} came back as a success: {r:?}"),
    };
    assert_eq!(failure.status, status);
    let e = &failure.error;
    assert_eq!(e.status, status);
    assert_eq!(e.kind, expected, "status {status}: {e:?}");
    assert_eq!(e.retry_after, retry_after.map(Duration::from_secs));
    assert!(!e.message.is_empty());
    assert!(!e.message.contains(spec.key));
    let billed = &fx.ledger(1)[0];
    assert_eq!((billed.status, billed.completed), (status, false));
}

pub async fn error_400(spec: &Spec) {
    error_status(spec, 400, UpstreamErrorKind::BadRequest, None).await;
}

pub async fn error_401(spec: &Spec) {
    error_status(spec, 401, UpstreamErrorKind::Auth, None).await;
}

pub async fn error_404(spec: &Spec) {
    error_status(spec, 404, UpstreamErrorKind::NotFound, None).await;
}

pub async fn error_429_retry_after(spec: &Spec) {
    error_status(spec, 429, UpstreamErrorKind::RateLimited, Some(7)).await;
}

pub async fn error_500(spec: &Spec) {
    error_status(spec, 500, UpstreamErrorKind::Server, None).await;
}

pub async fn error_503(spec: &Spec) {
    error_status(spec, 503, UpstreamErrorKind::Overloaded, Some(3)).await;
}

pub async fn error_529(spec: &Spec) {
    error_status(spec, 529, UpstreamErrorKind::Overloaded, None).await;
}

/// 8b. An upstream that echoes the key (in prose, a URL, quotes) never gets it to the caller.
pub async fn error_message_never_contains_key(spec: &Spec) {
    let fx = Fixture::start(spec).await;
    let key = spec.key;
    let statuses = [400, 401, 429, 500];
    for status in statuses {
        fx.mock.push(Behavior {
            error_message: Some(format!(
                "Incorrect API key provided: {key}. Find your key at \
                 https://keys.example.com/account?key={key} or send \"{key}\" again."
            )),
            ..Behavior::status(status)
        });
    }
    for status in statuses {
        let failure = match fx.chat(&text_request()).await {
            Err(f) => f,
            Ok(r) => panic!("status {status} came back as a success: {r:?}"),
        };
        assert_eq!(failure.status, status);
        let msg = &failure.error.message;
        assert!(!msg.contains(key), "status {status}: key leaked in {msg:?}");
        assert!(
            !msg.contains("https://"),
            "status {status}: URL kept in {msg:?}"
        );
    }
}

/// 8c. The mock checks the key: a wrong one is an `Auth` error that does not echo it.
pub async fn wrong_key_is_auth_error(spec: &Spec) {
    let mut fx = Fixture::start(spec).await;
    fx.key = format!("{}-revoked", spec.key);
    let failure = match fx.chat(&text_request()).await {
        Err(f) => f,
        Ok(r) => panic!("a wrong key was accepted: {r:?}"),
    };
    assert_eq!(failure.status, 401);
    assert_eq!(failure.error.kind, UpstreamErrorKind::Auth);
    assert!(!failure.error.kind.retryable());
    assert!(!failure.error.message.contains(&fx.key));
}

fn with_usage(mode: UsageMode) -> Behavior {
    Behavior {
        usage: mode,
        ..scripted_text()
    }
}

/// 9a. No usage reported: `usage: None`, so the gateway estimates (never a made-up zero).
pub async fn usage_absent_non_stream(spec: &Spec) {
    let fx = Fixture::start(spec).await;
    fx.mock.push(with_usage(UsageMode::Absent));
    let resp = fx.chat_ok(&text_request()).await;
    assert_eq!(resp.choices[0].message.content.as_deref(), Some(TEXT));
    assert_eq!(resp.usage, None, "absent usage must stay absent");
}

/// 9b. No usage reported in a stream: no usage chunk.
pub async fn usage_absent_stream(spec: &Spec) {
    let fx = Fixture::start(spec).await;
    fx.mock.push(with_usage(UsageMode::Absent));
    let run = fx.stream(&text_request()).await;
    assert_clean_end(spec, &run);
    let a = run.assemble();
    assert_eq!(a.text.get(&0).map(String::as_str), Some(TEXT));
    assert_eq!(a.finishes, vec![(0, FinishReason::Stop)]);
    assert!(
        a.usages.is_empty(),
        "absent usage must stay absent: {:?}",
        a.usages
    );
}

/// 9c. Usage reported as zeros stays zeros (it is a report, not an absence).
pub async fn usage_zero_non_stream(spec: &Spec) {
    let fx = Fixture::start(spec).await;
    fx.mock.push(with_usage(UsageMode::Zero));
    let resp = fx.chat_ok(&text_request()).await;
    let u = resp.usage.expect("zero usage is still usage");
    assert_eq!(
        (u.prompt_tokens, u.completion_tokens, u.total_tokens),
        (0, 0, 0)
    );
}

/// 9d. Zero usage in a stream: one usage chunk with zeros.
pub async fn usage_zero_stream(spec: &Spec) {
    let fx = Fixture::start(spec).await;
    fx.mock.push(with_usage(UsageMode::Zero));
    let run = fx.stream(&text_request()).await;
    assert_clean_end(spec, &run);
    let a = run.assemble();
    assert_eq!(a.usages.len(), 1, "zero usage is still usage");
    let (choices, u) = &a.usages[0];
    assert_eq!(*choices, 0);
    assert_eq!(
        (u.prompt_tokens, u.completion_tokens, u.total_tokens),
        (0, 0, 0)
    );
}

/// 10. Multi-byte text written in 1-3 byte frames is reassembled exactly.
pub async fn split_utf8_stream(spec: &Spec) {
    let fx = Fixture::start(spec).await;
    let split = Behavior {
        split_utf8: true,
        ..Behavior::default()
    };
    fx.mock.push(split.clone());
    fx.mock.push(split);
    let full = fx.chat_ok(&text_request()).await;
    let expected = full.choices[0].message.content.clone().expect("content");
    assert!(
        expected.chars().any(|c| c.len_utf8() == 2) && expected.chars().any(|c| c.len_utf8() == 4),
        "the mock's split text has 2- and 4-byte characters: {expected:?}"
    );
    let run = fx.stream(&text_request()).await;
    assert_clean_end(spec, &run);
    assert!(
        run.frames > run.events,
        "events arrived split over frames ({} frames, {} events)",
        run.frames,
        run.events
    );
    assert_eq!(run.assemble().text.get(&0), Some(&expected));
}

/// 11. The key travels only in the API's auth header (marked sensitive), never in a path,
///     query, body or other header.
pub async fn key_only_in_auth_header(spec: &Spec) {
    let fx = Fixture::start(spec).await;
    let key = spec.key;
    let expected_value = format!("{}{key}", spec.auth_prefix);

    let mut upstream = vec![fx.chat_request(&text_request(), false)];
    upstream.push(fx.chat_request(&text_request(), true));
    let emb = embedding_request(EncodingFormat::Float);
    if let Embeddings::Supported { .. } = spec.caps.embeddings {
        upstream.push(
            fx.adapter()
                .embeddings_request(&emb, &fx.target())
                .expect("embeddings request"),
        );
    }
    for up in &upstream {
        assert!(!up.path_and_query.contains(key), "{}", up.path_and_query);
        assert!(!String::from_utf8_lossy(&up.body).contains(key));
        let auth = up.headers.get(spec.auth_header).expect("auth header");
        assert_eq!(auth.as_bytes(), expected_value.as_bytes());
        assert!(auth.is_sensitive(), "the auth header is marked sensitive");
        for (name, value) in &up.headers {
            if name.as_str() != spec.auth_header {
                assert!(
                    !String::from_utf8_lossy(value.as_bytes()).contains(key),
                    "{name}"
                );
            }
        }
    }

    // Over the wire, as the upstream sees it.
    fx.chat_ok(&text_request()).await;
    assert_clean_end(spec, &fx.stream(&text_request()).await);
    if let Embeddings::Supported { .. } = spec.caps.embeddings {
        let up = fx
            .adapter()
            .embeddings_request(&emb, &fx.target())
            .expect("embeddings request");
        assert_eq!(fx.send(up).await.0, 200);
    }
    let received = fx.mock.requests();
    assert_eq!(received.len(), upstream.len());
    for r in &received {
        assert!(!r.key_in_query, "key in the query of {}", r.path);
        assert!(!r.path.contains(key), "{}", r.path);
        assert!(
            !r.query.as_deref().unwrap_or("").contains(key),
            "{:?}",
            r.query
        );
        assert!(!r.body.contains(key), "key in the body of {}", r.path);
        let carrying: Vec<&(String, String)> =
            r.headers.iter().filter(|(_, v)| v.contains(key)).collect();
        assert_eq!(
            carrying,
            vec![&(spec.auth_header.to_owned(), expected_value.clone())],
            "exactly one header carries the key, the auth header"
        );
    }
}

/// 12. JSON mode leads to JSON.
pub async fn json_mode(spec: &Spec) {
    let fx = Fixture::start(spec).await;
    let req = ChatCompletionRequest {
        response_format: Some(ResponseFormat::JsonObject),
        ..text_request()
    };
    match spec.caps.json_mode {
        JsonMode::Native => {
            let resp = fx.chat_ok(&req).await;
            let content = resp.choices[0].message.content.clone().expect("content");
            let v: Value = serde_json::from_str(&content)
                .unwrap_or_else(|e| panic!("`{content}` is not JSON: {e}"));
            assert!(v.is_object(), "{v}");
            let run = fx.stream(&req).await;
            assert_clean_end(spec, &run);
            let streamed = run.assemble().text.remove(&0).expect("streamed content");
            assert_same_json(&streamed, &content);
        }
        JsonMode::SystemInstruction { pointer } => {
            let resp = fx.chat_ok(&req).await;
            assert_eq!(resp.choices[0].finish_reason, Some(FinishReason::Stop));
            let body = fx.request_body(0);
            let instruction = body
                .pointer(pointer)
                .unwrap_or_else(|| panic!("no {pointer} in {body}"))
                .to_string();
            assert!(
                instruction.contains("JSON"),
                "the upstream was asked for JSON: {instruction}"
            );
        }
    }
}

fn two_choices() -> ChatCompletionRequest {
    ChatCompletionRequest {
        n: Some(2),
        ..text_request()
    }
}

/// 13a. `n = 2`: two choices where the upstream supports it, else a `TranslateError` on `n`.
pub async fn n_two_non_stream(spec: &Spec) {
    let fx = Fixture::start(spec).await;
    match spec.caps.n_choices {
        NChoices::Supported { request_pointer } => {
            fx.mock.push(scripted_text());
            let resp = fx.chat_ok(&two_choices()).await;
            assert_eq!(
                fx.request_body(0).pointer(request_pointer),
                Some(&Value::from(2)),
                "n reached the upstream at {request_pointer}"
            );
            let indices: Vec<u32> = resp.choices.iter().map(|c| c.index).collect();
            assert_eq!(indices, vec![0, 1]);
            for c in &resp.choices {
                assert_eq!(c.message.content.as_deref(), Some(TEXT));
                assert_eq!(c.finish_reason, Some(FinishReason::Stop));
            }
            assert_usage_matches(resp.usage.as_ref().expect("usage"), &fx.ledger(1)[0]);
        }
        NChoices::Rejected => assert_n_rejected(&fx, false),
    }
}

/// 13b. `n = 2` streamed: each choice complete, one finish reason each, one usage chunk.
pub async fn n_two_stream(spec: &Spec) {
    let fx = Fixture::start(spec).await;
    match spec.caps.n_choices {
        NChoices::Supported { request_pointer } => {
            fx.mock.push(scripted_text());
            let run = fx.stream(&two_choices()).await;
            assert_clean_end(spec, &run);
            assert_eq!(
                fx.request_body(0).pointer(request_pointer),
                Some(&Value::from(2)),
                "n reached the upstream at {request_pointer}"
            );
            let a = run.assemble();
            for i in 0..2 {
                assert_eq!(a.text.get(&i).map(String::as_str), Some(TEXT), "choice {i}");
                assert_eq!(a.first_role.get(&i), Some(&Some(Role::Assistant)));
            }
            assert_eq!(a.text.len(), 2);
            let mut finishes = a.finishes.clone();
            finishes.sort_by_key(|(i, _)| *i);
            assert_eq!(
                finishes,
                vec![(0, FinishReason::Stop), (1, FinishReason::Stop)]
            );
            assert_eq!(a.usages.len(), 1);
            assert_usage_matches(&a.usages[0].1, &fx.ledger(1)[0]);
        }
        NChoices::Rejected => assert_n_rejected(&fx, true),
    }
}

#[track_caller]
fn assert_n_rejected(fx: &Fixture<'_>, stream: bool) {
    let err = fx
        .adapter()
        .chat_request(&two_choices(), &fx.target(), stream)
        .expect_err("n = 2 cannot be expressed");
    assert_eq!(err.param.as_deref(), Some("n"), "{err:?}");
    assert!(!err.message.is_empty());
}

fn embedding_request(format: EncodingFormat) -> EmbeddingRequest {
    EmbeddingRequest {
        model: "conformance-embedding".to_owned(),
        input: EmbeddingInput::Texts(vec!["alpha".to_owned(), "beta gamma delta".to_owned()]),
        dimensions: Some(8),
        encoding_format: Some(format),
        user: None,
        extra: serde_json::Map::new(),
    }
}

/// 14. Embeddings: float and base64 decode to the same vectors, with the requested dimensions.
pub async fn embeddings_float_and_base64(spec: &Spec) {
    let fx = Fixture::start(spec).await;
    let Embeddings::Supported { reports_usage } = spec.caps.embeddings else {
        let err = fx
            .adapter()
            .embeddings_request(&embedding_request(EncodingFormat::Float), &fx.target())
            .expect_err("no embeddings API");
        assert!(!err.message.is_empty());
        return;
    };
    let mut decoded = Vec::new();
    for format in [EncodingFormat::Float, EncodingFormat::Base64] {
        let req = embedding_request(format);
        let up = fx
            .adapter()
            .embeddings_request(&req, &fx.target())
            .expect("embeddings request");
        let (status, _, body) = fx.send(up).await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        let resp = fx
            .adapter()
            .embeddings_response(&body, &req, &fx.target())
            .expect("embeddings decode");
        assert!(!resp.model.is_empty());
        assert_eq!(resp.data.len(), 2);
        for (i, e) in resp.data.iter().enumerate() {
            assert_eq!(e.index as usize, i);
            let right_kind = match format {
                EncodingFormat::Float => matches!(e.embedding, EmbeddingVector::Float(_)),
                EncodingFormat::Base64 => matches!(e.embedding, EmbeddingVector::Base64(_)),
            };
            assert!(right_kind, "{format:?} answered as {:?}", e.embedding);
        }
        decoded.push((vectors(&resp), resp.usage));
    }
    let ledger = fx.ledger(2);
    let (float, base64) = (&decoded[0], &decoded[1]);
    assert_eq!(float.0, base64.0, "float and base64 carry the same vectors");
    for v in &float.0 {
        assert_eq!(v.len(), 8, "requested dimensions");
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "unit vector, norm {norm}");
    }
    assert_ne!(float.0[0], float.0[1], "one vector per input, in order");
    for ((_, usage), billed) in decoded.iter().zip(&ledger) {
        if reports_usage {
            assert_eq!(usage.prompt_tokens, u64::from(billed.prompt_tokens));
            assert!(usage.prompt_tokens > 0);
        } else {
            assert_eq!(
                usage.prompt_tokens, 0,
                "unreported usage is 0: the gateway estimates"
            );
        }
    }
}

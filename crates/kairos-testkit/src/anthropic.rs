//! Anthropic wire format: messages (plain and streamed) and token counting.

use axum::extract::{Request, State};
use axum::response::Response;
use bytes::Bytes;
use http::StatusCode;
use serde_json::{Value, json};

use crate::behavior::{StreamFault, UsageMode};
use crate::common::{
    Api, Ask, Call, Finish, Incoming, Reply, SSE, Tokens, as_u32, content_text, error_response,
    generation_delay_ms, json_response, json_tokens, leaf_tokens, messages_tokens, sse_event,
    stream_response, to_json_bytes,
};
use crate::state::MockHandle;
use crate::stream::{self, Ev, StreamSpec};

fn authorized(h: &MockHandle, inc: &Incoming) -> bool {
    match &h.config().anthropic_key {
        None => true,
        Some(key) => inc.header("x-api-key") == Some(key.as_str()),
    }
}

const BAD_KEY: &str = "invalid x-api-key";
const NO_VERSION: &str = "anthropic-version: header is required";

fn prompt_tokens(v: &Value, messages: &[Value]) -> u32 {
    messages_tokens(messages)
        .saturating_add(v.get("system").map_or(0, leaf_tokens))
        .saturating_add(json_tokens(v.get("tools")))
}

/// `POST /v1/messages`.
pub(crate) async fn messages(State(h): State<MockHandle>, req: Request) -> Response {
    match Incoming::read(&h, req).await {
        Ok(inc) => messages_impl(&h, &inc).await,
        Err(r) => r,
    }
}

async fn messages_impl(h: &MockHandle, inc: &Incoming) -> Response {
    let mut call = Call::new(h, Api::Anthropic, inc);
    if !authorized(h, inc) {
        return call.fail(401, None, BAD_KEY);
    }
    if inc.header("anthropic-version").is_none() {
        return call.fail(400, None, NO_VERSION);
    }
    let Ok(v) = serde_json::from_slice::<Value>(&inc.body) else {
        return call.fail(400, None, "The request body is not valid JSON.");
    };
    match v.get("model").and_then(Value::as_str) {
        Some(m) if !m.is_empty() => call.model = m.to_owned(),
        _ => return call.fail(400, None, "model: Field required"),
    }
    let messages = match v.get("messages").and_then(Value::as_array) {
        Some(m) if !m.is_empty() => m,
        _ => return call.fail(400, None, "messages: at least one message is required"),
    };
    let Some(max_tokens) = as_u32(v.get("max_tokens")) else {
        return call.fail(400, None, "max_tokens: Field required");
    };
    call.stream = v.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let b = match call.behavior(&v) {
        Ok(b) => b,
        Err(e) => return call.fail(400, None, &e),
    };
    let last_user = messages
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        .map(|m| content_text(m.get("content")))
        .unwrap_or_default();
    let ask = Ask {
        model: &call.model,
        prompt_tokens: prompt_tokens(&v, messages),
        last_user,
        max_tokens: Some(max_tokens),
        json_schema: None,
        n: 1,
    };
    let reply = Reply::plan(h, &b, &ask);
    if let Some(r) = call.refuse(&b, Some(&reply.tokens)).await {
        return r;
    }
    let stop_sequence = match &reply.finish {
        Finish::Other(s) if s == "stop_sequence" => Some(
            v.pointer("/stop_sequences/0")
                .and_then(Value::as_str)
                .unwrap_or("\n\nHuman:")
                .to_owned(),
        ),
        _ => None,
    };

    if !call.stream {
        call.delay(generation_delay_ms(&b, &reply)).await;
        call.bill(200, Some(&reply.tokens), true);
        let body = if b.malformed_body {
            Bytes::from_static(b"{\"id\":\"msg_mock\",\"type\":\"message\",\"content\":[")
        } else {
            to_json_bytes(&message_json(
                &call,
                &reply,
                b.usage,
                stop_sequence.as_deref(),
            ))
        };
        let mut r = json_response(StatusCode::OK, body);
        call.decorate(&mut r, &b);
        return r;
    }

    call.delay(b.headers_delay_ms).await;
    let slot = call.bill(
        200,
        Some(&Tokens {
            completion: 0,
            ..reply.tokens
        }),
        false,
    );
    let error_event = sse_event(
        "error",
        &json!({"type": "error", "error": {
            "type": b.error_type.as_deref().unwrap_or("overloaded_error"),
            "message": b.error_message.as_deref().unwrap_or("Overloaded"),
        }}),
    );
    let spec = StreamSpec {
        events: stream_events(&call, &reply, b.chunks, b.usage, stop_sequence.as_deref()),
        fault: b
            .stream_fault
            .or(b.malformed_body.then_some(StreamFault::MalformedAfter(0))),
        malformed: Bytes::from_static(b"event: content_block_delta\ndata: {garbage\n\n"),
        error_event,
        ttft_ms: b.ttft_ms,
        itl_ms: b.itl_ms,
        split: b.split_utf8,
        completion_tokens: reply.tokens.completion,
    };
    let mut r = stream_response(stream::body(h.clone(), slot, spec), SSE);
    call.decorate(&mut r, &b);
    r
}

/// The usage object; `output_tokens` given separately (message_start reports 1).
fn usage_json(t: Tokens, output_tokens: u32) -> Value {
    json!({
        "input_tokens": t.prompt.saturating_sub(t.cached),
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": t.cached,
        "output_tokens": output_tokens,
    })
}

fn tool_id(call: &Call<'_>) -> String {
    format!("toolu_mock{:012x}", call.id)
}

fn message_id(call: &Call<'_>) -> String {
    format!("msg_mock{:012x}", call.id)
}

fn message_json(call: &Call<'_>, reply: &Reply, usage: UsageMode, stop_seq: Option<&str>) -> Value {
    let mut content = Vec::new();
    if let Some(text) = &reply.text {
        content.push(json!({"type": "text", "text": text}));
    }
    if let Some(t) = &reply.tool {
        content.push(json!({
            "type": "tool_use",
            "id": tool_id(call),
            "name": t.name,
            "input": t.arguments_value(),
        }));
    }
    let mut body = json!({
        "id": message_id(call),
        "type": "message",
        "role": "assistant",
        "model": call.model,
        "content": content,
        "stop_reason": reply.finish.anthropic(),
        "stop_sequence": stop_seq,
    });
    if let Some(t) = reply.tokens.reported(usage) {
        body["usage"] = usage_json(t, t.completion);
    }
    body
}

fn stream_events(
    call: &Call<'_>,
    reply: &Reply,
    chunks: usize,
    usage: UsageMode,
    stop_seq: Option<&str>,
) -> Vec<Ev> {
    let reported = reply.tokens.reported(usage);
    let mut message = json!({
        "id": message_id(call),
        "type": "message",
        "role": "assistant",
        "model": call.model,
        "content": [],
        "stop_reason": null,
        "stop_sequence": null,
    });
    if let Some(t) = reported {
        let first = if usage == UsageMode::Zero { 0 } else { 1 };
        message["usage"] = usage_json(t, first);
    }
    let mut events = vec![Ev::meta(sse_event(
        "message_start",
        &json!({"type": "message_start", "message": message}),
    ))];
    let mut index = 0;
    let ping = |events: &mut Vec<Ev>, index: usize| {
        if index == 0 {
            events.push(Ev::meta(sse_event("ping", &json!({"type": "ping"}))));
        }
    };
    if reply.text.is_some() {
        events.push(Ev::meta(sse_event(
            "content_block_start",
            &json!({"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}}),
        )));
        ping(&mut events, index);
        for piece in reply.text_pieces(chunks) {
            events.push(Ev::content(
                sse_event(
                    "content_block_delta",
                    &json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": piece}}),
                ),
                piece.chars().count(),
            ));
        }
        events.push(Ev::meta(sse_event(
            "content_block_stop",
            &json!({"type": "content_block_stop", "index": index}),
        )));
        index += 1;
    }
    if let Some(tool) = &reply.tool {
        events.push(Ev::meta(sse_event(
            "content_block_start",
            &json!({"type": "content_block_start", "index": index, "content_block": {
                "type": "tool_use", "id": tool_id(call), "name": tool.name, "input": {},
            }}),
        )));
        ping(&mut events, index);
        events.push(Ev::meta(sse_event(
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": ""}}),
        )));
        for (k, piece) in reply.arg_pieces(chunks).into_iter().enumerate() {
            let chars = piece.chars().count() + if k == 0 { tool.name.chars().count() } else { 0 };
            events.push(Ev::content(
                sse_event(
                    "content_block_delta",
                    &json!({"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": piece}}),
                ),
                chars,
            ));
        }
        events.push(Ev::meta(sse_event(
            "content_block_stop",
            &json!({"type": "content_block_stop", "index": index}),
        )));
    }
    let mut delta = json!({
        "type": "message_delta",
        "delta": {"stop_reason": reply.finish.anthropic(), "stop_sequence": stop_seq},
    });
    if let Some(t) = reported {
        delta["usage"] = json!({"output_tokens": t.completion});
    }
    events.push(Ev::meta(sse_event("message_delta", &delta)));
    events.push(Ev::meta(sse_event(
        "message_stop",
        &json!({"type": "message_stop"}),
    )));
    events
}

/// `POST /v1/messages/count_tokens` (free: not counted as a call, not billed).
pub(crate) async fn count_tokens(State(h): State<MockHandle>, req: Request) -> Response {
    let inc = match Incoming::read(&h, req).await {
        Ok(inc) => inc,
        Err(r) => return r,
    };
    let id = h.next_id();
    if !authorized(&h, &inc) {
        return error_response(Api::Anthropic, 401, None, Some(BAD_KEY), None, id);
    }
    if inc.header("anthropic-version").is_none() {
        return error_response(Api::Anthropic, 400, None, Some(NO_VERSION), None, id);
    }
    let Ok(v) = serde_json::from_slice::<Value>(&inc.body) else {
        return error_response(
            Api::Anthropic,
            400,
            None,
            Some("The request body is not valid JSON."),
            None,
            id,
        );
    };
    let Some(messages) = v.get("messages").and_then(Value::as_array) else {
        return error_response(
            Api::Anthropic,
            400,
            None,
            Some("messages: Field required"),
            None,
            id,
        );
    };
    json_response(
        StatusCode::OK,
        to_json_bytes(&json!({"input_tokens": prompt_tokens(&v, messages)})),
    )
}

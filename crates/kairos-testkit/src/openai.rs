//! OpenAI wire format: chat completions (also Azure deployments), embeddings, models.

use axum::extract::{Path, Request, State};
use axum::response::Response;
use bytes::Bytes;
use http::StatusCode;
use serde_json::{Value, json};

use crate::behavior::StreamFault;
use crate::common::{
    Api, Ask, Call, Incoming, Reply, SSE, Tokens, as_u32, content_text, error_response,
    generation_delay_ms, json_response, json_tokens, messages_tokens, openai_error_kind, sse_data,
    stream_response, text_tokens, to_json_bytes, unix_now,
};
use crate::embed;
use crate::state::MockHandle;
use crate::stream::{self, Ev, StreamSpec};

static NULL: Value = Value::Null;

/// Models listed by `GET /v1/models`.
const MODELS: &[&str] = &[
    "gpt-4o",
    "gpt-4o-mini",
    "gpt-4.1",
    "gpt-4.1-mini",
    "o3-mini",
    "text-embedding-3-small",
    "text-embedding-3-large",
];

fn authorized(h: &MockHandle, inc: &Incoming, azure: bool) -> bool {
    let Some(key) = &h.config().openai_key else {
        return true;
    };
    let ok = |k: &str| k == key || h.config().openai_extra_keys.iter().any(|x| x == k);
    if azure {
        return inc.header("api-key").is_some_and(ok);
    }
    inc.header("authorization")
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(ok)
}

const BAD_KEY: &str = "Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys.";

/// `POST /v1/chat/completions`.
pub(crate) async fn chat(State(h): State<MockHandle>, req: Request) -> Response {
    match Incoming::read(&h, req).await {
        Ok(inc) => chat_impl(&h, &inc, None).await,
        Err(r) => r,
    }
}

/// `POST /openai/deployments/{deployment}/chat/completions` (Azure).
pub(crate) async fn azure_chat(
    State(h): State<MockHandle>,
    Path(deployment): Path<String>,
    req: Request,
) -> Response {
    match Incoming::read(&h, req).await {
        Ok(inc) => chat_impl(&h, &inc, Some(deployment)).await,
        Err(r) => r,
    }
}

async fn chat_impl(h: &MockHandle, inc: &Incoming, deployment: Option<String>) -> Response {
    let mut call = Call::new(h, Api::OpenAi, inc);
    let azure = deployment.is_some();
    if let Some(d) = deployment {
        call.model = d;
    }
    if !authorized(h, inc, azure) {
        return call.fail(401, None, BAD_KEY);
    }
    let Ok(v) = serde_json::from_slice::<Value>(&inc.body) else {
        return call.fail(
            400,
            None,
            "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly.)",
        );
    };
    if !azure {
        match v.get("model").and_then(Value::as_str) {
            Some(m) if !m.is_empty() => call.model = m.to_owned(),
            _ => return call.fail(400, None, "you must provide a model parameter"),
        }
    }
    let messages = match v.get("messages").and_then(Value::as_array) {
        Some(m) if !m.is_empty() => m,
        _ => {
            call.bill(400, None, false);
            return error_response(
                Api::OpenAi,
                400,
                None,
                Some("'messages' must contain at least one message."),
                Some("messages"),
                call.id,
            );
        }
    };
    call.stream = v.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let b = match call.behavior(&v) {
        Ok(b) => b,
        Err(e) => return call.fail(400, None, &e),
    };

    let prompt_tokens = messages_tokens(messages)
        .saturating_add(json_tokens(v.get("tools")))
        .saturating_add(json_tokens(v.get("functions")));
    let last_user = messages
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        .map(|m| content_text(m.get("content")))
        .unwrap_or_default();
    let json_schema = match v.pointer("/response_format/type").and_then(Value::as_str) {
        Some("json_object") => Some(&NULL),
        Some("json_schema") => Some(
            v.pointer("/response_format/json_schema/schema")
                .unwrap_or(&NULL),
        ),
        _ => None,
    };
    let n = v
        .get("n")
        .and_then(Value::as_u64)
        .map_or(1, |n| usize::try_from(n.clamp(1, 128)).unwrap_or(1));
    let ask = Ask {
        model: &call.model,
        prompt_tokens,
        last_user,
        max_tokens: as_u32(v.get("max_completion_tokens")).or_else(|| as_u32(v.get("max_tokens"))),
        json_schema,
        n,
    };
    let reply = Reply::plan(h, &b, &ask);
    if let Some(r) = call.refuse(&b, Some(&reply.tokens)).await {
        return r;
    }

    if !call.stream {
        call.delay(generation_delay_ms(&b, &reply)).await;
        call.bill(200, Some(&reply.tokens), true);
        let body = if b.malformed_body {
            Bytes::from_static(b"{\"choices\":[")
        } else {
            to_json_bytes(&completion_json(&call, &reply, b.usage))
        };
        let mut r = json_response(StatusCode::OK, body);
        call.decorate(&mut r, &b);
        return r;
    }

    let include_usage = v
        .pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        == Some(true);
    call.delay(b.headers_delay_ms).await;
    let slot = call.bill(
        200,
        Some(&Tokens {
            completion: 0,
            ..reply.tokens
        }),
        false,
    );
    let (ty, code) = openai_error_kind(500, b.error_type.as_deref());
    let error_event = sse_data(
        &json!({"error": {
            "message": b.error_message.as_deref().unwrap_or("The server had an error while processing your request. Sorry about that!"),
            "type": ty, "param": null, "code": code,
        }}),
        false,
    );
    let spec = StreamSpec {
        events: stream_events(&call, &reply, b.chunks, include_usage, b.usage),
        fault: b
            .stream_fault
            .or(b.malformed_body.then_some(StreamFault::MalformedAfter(0))),
        malformed: Bytes::from_static(b"data: {garbage\n\n"),
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

fn usage_json(t: Tokens) -> Value {
    json!({
        "prompt_tokens": t.prompt,
        "completion_tokens": t.completion,
        "total_tokens": t.prompt.saturating_add(t.completion),
        "prompt_tokens_details": {"cached_tokens": t.cached, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    })
}

fn tool_call_id(call: &Call<'_>) -> String {
    format!("call_mock{:012x}", call.id)
}

fn completion_json(call: &Call<'_>, reply: &Reply, usage: crate::behavior::UsageMode) -> Value {
    let mut message = json!({
        "role": "assistant",
        "content": reply.text,
        "refusal": null,
        "annotations": [],
    });
    if let Some(t) = &reply.tool {
        message["tool_calls"] = json!([{
            "id": tool_call_id(call),
            "type": "function",
            "function": {"name": t.name, "arguments": t.arguments},
        }]);
    }
    let choices: Vec<Value> = (0..reply.n)
        .map(|i| {
            json!({
                "index": i,
                "message": message,
                "logprobs": null,
                "finish_reason": reply.finish.openai(),
            })
        })
        .collect();
    let mut body = json!({
        "id": format!("chatcmpl-mock{:012x}", call.id),
        "object": "chat.completion",
        "created": unix_now(),
        "model": call.model,
        "choices": choices,
        "service_tier": "default",
        "system_fingerprint": "fp_mock",
    });
    if let Some(t) = reply.tokens.reported(usage) {
        body["usage"] = usage_json(t);
    }
    body
}

fn stream_events(
    call: &Call<'_>,
    reply: &Reply,
    chunks: usize,
    include_usage: bool,
    usage: crate::behavior::UsageMode,
) -> Vec<Ev> {
    let id = format!("chatcmpl-mock{:012x}", call.id);
    let created = unix_now();
    let chunk = |choices: Value, usage: Value| -> Bytes {
        let mut c = json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": call.model,
            "service_tier": "default",
            "system_fingerprint": "fp_mock",
            "choices": choices,
        });
        if include_usage {
            c["usage"] = usage;
        }
        sse_data(&c, false)
    };
    let choice = |i: usize, delta: Value, finish: Value| json!([{"index": i, "delta": delta, "logprobs": null, "finish_reason": finish}]);
    let mut events = Vec::new();
    if reply.text.is_some() {
        for i in 0..reply.n {
            let delta = json!({"role": "assistant", "content": "", "refusal": null});
            events.push(Ev::meta(chunk(choice(i, delta, Value::Null), Value::Null)));
        }
        for piece in reply.text_pieces(chunks) {
            for i in 0..reply.n {
                let delta = json!({"content": piece});
                events.push(Ev::content(
                    chunk(choice(i, delta, Value::Null), Value::Null),
                    piece.chars().count(),
                ));
            }
        }
    }
    if let Some(tool) = &reply.tool {
        for i in 0..reply.n {
            let mut delta = json!({"tool_calls": [{
                "index": 0,
                "id": tool_call_id(call),
                "type": "function",
                "function": {"name": tool.name, "arguments": ""},
            }]});
            if reply.text.is_none() {
                delta["role"] = json!("assistant");
                delta["content"] = Value::Null;
                delta["refusal"] = Value::Null;
            }
            events.push(Ev::meta(chunk(choice(i, delta, Value::Null), Value::Null)));
        }
        for (k, piece) in reply.arg_pieces(chunks).into_iter().enumerate() {
            for i in 0..reply.n {
                let delta = json!({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]});
                // The tool name counts towards the output: bill it with the first piece.
                let chars =
                    piece.chars().count() + if k == 0 { tool.name.chars().count() } else { 0 };
                events.push(Ev::content(
                    chunk(choice(i, delta, Value::Null), Value::Null),
                    chars,
                ));
            }
        }
    }
    for i in 0..reply.n {
        events.push(Ev::meta(chunk(
            choice(i, json!({}), json!(reply.finish.openai())),
            Value::Null,
        )));
    }
    if include_usage && let Some(t) = reply.tokens.reported(usage) {
        events.push(Ev::meta(chunk(json!([]), usage_json(t))));
    }
    events.push(Ev::meta(Bytes::from_static(b"data: [DONE]\n\n")));
    events
}

// ---------------------------------------------------------------------------------------------
// Embeddings.

/// `POST /v1/embeddings`.
pub(crate) async fn embeddings(State(h): State<MockHandle>, req: Request) -> Response {
    match Incoming::read(&h, req).await {
        Ok(inc) => embeddings_impl(&h, &inc, None).await,
        Err(r) => r,
    }
}

/// `POST /openai/deployments/{deployment}/embeddings` (Azure).
pub(crate) async fn azure_embeddings(
    State(h): State<MockHandle>,
    Path(deployment): Path<String>,
    req: Request,
) -> Response {
    match Incoming::read(&h, req).await {
        Ok(inc) => embeddings_impl(&h, &inc, Some(deployment)).await,
        Err(r) => r,
    }
}

/// One embedding input: its hash seed and its token count.
fn embedding_inputs(input: &Value) -> Option<Vec<(Vec<u8>, u32)>> {
    let one = |v: &Value| -> Option<(Vec<u8>, u32)> {
        match v {
            Value::String(s) => Some((s.as_bytes().to_vec(), text_tokens(s))),
            Value::Array(toks) if toks.iter().all(Value::is_u64) => Some((
                embed::token_seed(toks),
                u32::try_from(toks.len()).unwrap_or(u32::MAX),
            )),
            _ => None,
        }
    };
    let items: Vec<(Vec<u8>, u32)> = match input {
        Value::String(_) => vec![one(input)?],
        Value::Array(a) if !a.is_empty() && a.iter().all(Value::is_u64) => vec![one(input)?],
        Value::Array(a) => a.iter().map(one).collect::<Option<_>>()?,
        _ => return None,
    };
    (!items.is_empty()).then_some(items)
}

async fn embeddings_impl(h: &MockHandle, inc: &Incoming, deployment: Option<String>) -> Response {
    let mut call = Call::new(h, Api::OpenAi, inc);
    let azure = deployment.is_some();
    if let Some(d) = deployment {
        call.model = d;
    }
    if !authorized(h, inc, azure) {
        return call.fail(401, None, BAD_KEY);
    }
    let Ok(v) = serde_json::from_slice::<Value>(&inc.body) else {
        return call.fail(
            400,
            None,
            "We could not parse the JSON body of your request.",
        );
    };
    if !azure {
        match v.get("model").and_then(Value::as_str) {
            Some(m) if !m.is_empty() => call.model = m.to_owned(),
            _ => return call.fail(400, None, "you must provide a model parameter"),
        }
    }
    let Some(inputs) = v.get("input").and_then(embedding_inputs) else {
        call.bill(400, None, false);
        return error_response(
            Api::OpenAi,
            400,
            None,
            Some("'input' must be a non-empty string, array of strings, or array of token arrays."),
            Some("input"),
            call.id,
        );
    };
    let b = match call.behavior(&v) {
        Ok(b) => b,
        Err(e) => return call.fail(400, None, &e),
    };
    let computed = inputs.iter().map(|(_, t)| *t).fold(0, u32::saturating_add);
    let tokens = Tokens {
        prompt: b.prompt_tokens.unwrap_or(computed),
        completion: 0,
        cached: 0,
    };
    if let Some(r) = call.refuse(&b, Some(&tokens)).await {
        return r;
    }
    call.delay(b.headers_delay_ms).await;
    call.bill(200, Some(&tokens), true);
    if b.malformed_body {
        let mut r = json_response(
            StatusCode::OK,
            Bytes::from_static(b"{\"object\":\"list\",\"data\":["),
        );
        call.decorate(&mut r, &b);
        return r;
    }
    let dims = v
        .get("dimensions")
        .and_then(Value::as_u64)
        .map_or(embed::DEFAULT_DIMS, |d| {
            usize::try_from(d)
                .unwrap_or(embed::MAX_DIMS)
                .clamp(1, embed::MAX_DIMS)
        });
    let base64 = v.get("encoding_format").and_then(Value::as_str) == Some("base64");
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, (seed, _))| {
            let vector = embed::unit_vector(seed, dims);
            let embedding = if base64 {
                json!(embed::to_base64(&vector))
            } else {
                json!(vector)
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    let mut body = json!({"object": "list", "data": data, "model": call.model});
    if let Some(t) = tokens.reported(b.usage) {
        body["usage"] = json!({"prompt_tokens": t.prompt, "total_tokens": t.prompt});
    }
    let mut r = json_response(StatusCode::OK, to_json_bytes(&body));
    call.decorate(&mut r, &b);
    r
}

// ---------------------------------------------------------------------------------------------
// Models.

fn model_json(id: &str) -> Value {
    json!({"id": id, "object": "model", "created": 1_700_000_000u64, "owned_by": "kairos-mock"})
}

/// `GET /v1/models`.
pub(crate) async fn models(State(h): State<MockHandle>, req: Request) -> Response {
    let inc = match Incoming::read(&h, req).await {
        Ok(inc) => inc,
        Err(r) => return r,
    };
    if !authorized(&h, &inc, false) {
        return error_response(Api::OpenAi, 401, None, Some(BAD_KEY), None, h.next_id());
    }
    let data: Vec<Value> = MODELS.iter().map(|m| model_json(m)).collect();
    json_response(
        StatusCode::OK,
        to_json_bytes(&json!({"object": "list", "data": data})),
    )
}

/// `GET /v1/models/{model}`: every id exists.
pub(crate) fn model(h: &MockHandle, inc: &Incoming, id: &str) -> Response {
    if !authorized(h, inc, false) {
        return error_response(Api::OpenAi, 401, None, Some(BAD_KEY), None, h.next_id());
    }
    json_response(StatusCode::OK, to_json_bytes(&model_json(id)))
}

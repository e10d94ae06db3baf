//! Gemini wire format: `models/{model}:{method}` for generateContent, streamGenerateContent
//! (SSE with `?alt=sse`, else a streamed JSON array), embedContent, batchEmbedContents and
//! countTokens.

use axum::extract::{Path, Request, State};
use axum::response::Response;
use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::behavior::StreamFault;
use crate::common::{
    Api, Ask, Call, Incoming, JSON, Reply, SSE, Tokens, as_u32, content_text, error_response,
    generation_delay_ms, json_response, json_tokens, leaf_tokens, messages_tokens, sse_data,
    stream_response, text_tokens, to_json_bytes,
};
use crate::embed;
use crate::openai;
use crate::state::MockHandle;
use crate::stream::{self, Ev, StreamSpec};

static NULL: Value = Value::Null;

/// Why a Gemini request is not authorised, if it is not.
fn auth_problem(h: &MockHandle, inc: &Incoming) -> Option<&'static str> {
    let key = h.config().gemini_key.as_ref()?;
    if inc.query_param("key").is_some() {
        return Some(
            "API keys in the URL (?key=) are not accepted by this mock: use x-goog-api-key.",
        );
    }
    if inc.header("x-goog-api-key") == Some(key.as_str()) {
        None
    } else {
        Some("API key not valid. Please pass a valid API key.")
    }
}

/// `POST /v1beta/models/{model}:{method}`.
pub(crate) async fn dispatch(
    State(h): State<MockHandle>,
    Path(rest): Path<String>,
    req: Request,
) -> Response {
    let inc = match Incoming::read(&h, req).await {
        Ok(inc) => inc,
        Err(r) => return r,
    };
    route(&h, &inc, &rest).await
}

/// `/v1/models/{*rest}`: OpenAI model retrieval on GET, Gemini v1 on POST.
pub(crate) async fn v1_models_rest(
    State(h): State<MockHandle>,
    Path(rest): Path<String>,
    req: Request,
) -> Response {
    let inc = match Incoming::read(&h, req).await {
        Ok(inc) => inc,
        Err(r) => return r,
    };
    if inc.parts.method == Method::GET {
        return openai::model(&h, &inc, &rest);
    }
    route(&h, &inc, &rest).await
}

async fn route(h: &MockHandle, inc: &Incoming, rest: &str) -> Response {
    let Some((model, method)) = rest.rsplit_once(':') else {
        return not_found(h, rest);
    };
    match method {
        "generateContent" => generate(h, inc, model, false).await,
        "streamGenerateContent" => generate(h, inc, model, true).await,
        "embedContent" => embed_content(h, inc, model, false).await,
        "batchEmbedContents" => embed_content(h, inc, model, true).await,
        "countTokens" => count_tokens(h, inc),
        _ => not_found(h, rest),
    }
}

fn not_found(h: &MockHandle, rest: &str) -> Response {
    let msg = format!("models/{rest} is not found or is not a supported method.");
    error_response(Api::Gemini, 404, None, Some(&msg), None, h.next_id())
}

fn prompt_tokens(v: &Value, contents: &[Value]) -> u32 {
    messages_tokens(contents)
        .saturating_add(v.get("systemInstruction").map_or(0, leaf_tokens))
        .saturating_add(json_tokens(v.get("tools")))
}

fn usage_json(t: Tokens) -> Value {
    let mut u = json!({
        "promptTokenCount": t.prompt,
        "candidatesTokenCount": t.completion,
        "totalTokenCount": t.prompt.saturating_add(t.completion),
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": t.prompt}],
    });
    if t.cached > 0 {
        u["cachedContentTokenCount"] = json!(t.cached);
    }
    u
}

fn response_id(call: &Call<'_>) -> String {
    format!("mockresp{:012x}", call.id)
}

/// Most candidates one request may ask for (`generationConfig.candidateCount`).
const MAX_CANDIDATES: u64 = 8;

/// `generationConfig.candidateCount`, clamped to 1..=8 (absent or 0: 1).
fn candidate_count(v: &Value) -> usize {
    v.pointer("/generationConfig/candidateCount")
        .and_then(Value::as_u64)
        .map_or(1, |n| {
            usize::try_from(n.clamp(1, MAX_CANDIDATES)).unwrap_or(1)
        })
}

/// One candidate: its parts, its index and, once it has finished, its finish reason.
fn candidate_json(index: usize, parts: Vec<Value>, finish: Option<&str>) -> Value {
    let mut candidate = json!({"content": {"parts": parts, "role": "model"}, "index": index});
    if let Some(f) = finish {
        candidate["finishReason"] = json!(f);
    }
    candidate
}

/// A `GenerateContentResponse` carrying `candidates` (each with its own `index`).
fn response_json(call: &Call<'_>, candidates: Vec<Value>, usage: Option<Tokens>) -> Value {
    let mut body = json!({
        "candidates": candidates,
        "modelVersion": call.model,
        "responseId": response_id(call),
    });
    if let Some(t) = usage {
        body["usageMetadata"] = usage_json(t);
    }
    body
}

/// The same parts for candidates `0..n`.
fn candidates(n: usize, parts: &[Value], finish: Option<&str>) -> Vec<Value> {
    (0..n)
        .map(|i| candidate_json(i, parts.to_vec(), finish))
        .collect()
}

fn function_call_part(reply: &Reply) -> Option<Value> {
    reply
        .tool
        .as_ref()
        .map(|t| json!({"functionCall": {"name": t.name, "args": t.arguments_value()}}))
}

async fn generate(h: &MockHandle, inc: &Incoming, model: &str, stream: bool) -> Response {
    let mut call = Call::new(h, Api::Gemini, inc);
    call.model = model.to_owned();
    call.stream = stream;
    if let Some(problem) = auth_problem(h, inc) {
        return call.fail(401, None, problem);
    }
    let Ok(v) = serde_json::from_slice::<Value>(&inc.body) else {
        return call.fail(400, None, "Invalid JSON payload received.");
    };
    let contents = match v.get("contents").and_then(Value::as_array) {
        Some(c) if !c.is_empty() => c,
        _ => {
            return call.fail(
                400,
                None,
                "* GenerateContentRequest.contents: contents is not specified",
            );
        }
    };
    let b = match call.behavior(&v) {
        Ok(b) => b,
        Err(e) => return call.fail(400, None, &e),
    };
    let last_user = contents
        .iter()
        .rev()
        .find(|c| {
            c.get("role")
                .and_then(Value::as_str)
                .is_none_or(|r| r == "user")
        })
        .map(|c| content_text(c.get("parts")))
        .unwrap_or_default();
    let json_schema = if v
        .pointer("/generationConfig/responseMimeType")
        .and_then(Value::as_str)
        == Some("application/json")
    {
        Some(
            v.pointer("/generationConfig/responseSchema")
                .or_else(|| v.pointer("/generationConfig/responseJsonSchema"))
                .unwrap_or(&NULL),
        )
    } else {
        None
    };
    let ask = Ask {
        model: &call.model,
        prompt_tokens: prompt_tokens(&v, contents),
        last_user,
        max_tokens: as_u32(v.pointer("/generationConfig/maxOutputTokens")),
        json_schema,
        n: candidate_count(&v),
    };
    let reply = Reply::plan(h, &b, &ask);
    if let Some(r) = call.refuse(&b, Some(&reply.tokens)).await {
        return r;
    }
    let finish = reply.finish.gemini();
    let reported = reply.tokens.reported(b.usage);

    if !stream {
        call.delay(generation_delay_ms(&b, &reply)).await;
        call.bill(200, Some(&reply.tokens), true);
        let body = if b.malformed_body {
            Bytes::from_static(b"{\"candidates\":[")
        } else {
            let mut parts = Vec::new();
            if let Some(t) = &reply.text {
                parts.push(json!({"text": t}));
            }
            parts.extend(function_call_part(&reply));
            to_json_bytes(&response_json(
                &call,
                candidates(reply.n, &parts, Some(&finish)),
                reported,
            ))
        };
        let mut r = json_response(StatusCode::OK, body);
        call.decorate(&mut r, &b);
        return r;
    }

    let sse = inc.query_param("alt") == Some("sse");
    call.delay(b.headers_delay_ms).await;
    let slot = call.bill(
        200,
        Some(&Tokens {
            completion: 0,
            ..reply.tokens
        }),
        false,
    );
    // SSE: `data: <json>\r\n\r\n` per chunk. Otherwise a JSON array written element by element.
    let mut first = true;
    let mut frame = |v: &Value| -> Bytes {
        if sse {
            return sse_data(v, true);
        }
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(if first { b"[" } else { b",\r\n" });
        first = false;
        if serde_json::to_writer(&mut out, v).is_err() {
            out.extend_from_slice(b"{}");
        }
        Bytes::from(out)
    };
    // Every candidate has the same reply, so each step carries a delta for all of them; the
    // last chunk finishes every candidate and carries the usage.
    let n = reply.n;
    let mut events = Vec::new();
    for piece in reply.text_pieces(b.chunks) {
        let parts = [json!({"text": piece})];
        events.push(Ev::content(
            frame(&response_json(&call, candidates(n, &parts, None), None)),
            piece.chars().count().saturating_mul(n),
        ));
    }
    if let (Some(part), Some(tool)) = (function_call_part(&reply), &reply.tool) {
        let chars = tool.name.chars().count() + tool.arguments.chars().count();
        events.push(Ev::content(
            frame(&response_json(&call, candidates(n, &[part], None), None)),
            chars.saturating_mul(n),
        ));
    }
    events.push(Ev::meta(frame(&response_json(
        &call,
        candidates(n, &[json!({"text": ""})], Some(&finish)),
        reported,
    ))));
    if !sse {
        events.push(Ev::meta(Bytes::from_static(b"]")));
    }
    let status = b.error_type.as_deref().unwrap_or("INTERNAL");
    let error = json!({"error": {
        "code": 500,
        "message": b.error_message.as_deref().unwrap_or("An internal error has occurred."),
        "status": status,
    }});
    let (error_event, malformed) = if sse {
        (
            sse_data(&error, true),
            Bytes::from_static(b"data: {garbage\r\n\r\n"),
        )
    } else {
        let mut e = b",\r\n".to_vec();
        e.extend_from_slice(&to_json_bytes(&error));
        e.push(b']');
        (Bytes::from(e), Bytes::from_static(b",\r\n{garbage"))
    };
    let spec = StreamSpec {
        events,
        fault: b
            .stream_fault
            .or(b.malformed_body.then_some(StreamFault::MalformedAfter(0))),
        malformed,
        error_event,
        ttft_ms: b.ttft_ms,
        itl_ms: b.itl_ms,
        split: b.split_utf8,
        completion_tokens: reply.tokens.completion,
    };
    let content_type = if sse { SSE } else { JSON };
    let mut r = stream_response(stream::body(h.clone(), slot, spec), content_type);
    call.decorate(&mut r, &b);
    r
}

fn dims(v: &Value) -> usize {
    v.get("outputDimensionality")
        .and_then(Value::as_u64)
        .map_or(embed::DEFAULT_DIMS, |d| {
            usize::try_from(d)
                .unwrap_or(embed::MAX_DIMS)
                .clamp(1, embed::MAX_DIMS)
        })
}

/// `:embedContent` and `:batchEmbedContents`.
async fn embed_content(h: &MockHandle, inc: &Incoming, model: &str, batch: bool) -> Response {
    let mut call = Call::new(h, Api::Gemini, inc);
    call.model = model.to_owned();
    if let Some(problem) = auth_problem(h, inc) {
        return call.fail(401, None, problem);
    }
    let Ok(v) = serde_json::from_slice::<Value>(&inc.body) else {
        return call.fail(400, None, "Invalid JSON payload received.");
    };
    // (text, dimensions) per input.
    let inputs: Vec<(String, usize)> = if batch {
        v.get("requests")
            .and_then(Value::as_array)
            .map(|reqs| {
                reqs.iter()
                    .map(|r| {
                        (
                            content_text(r.pointer("/content/parts")).into_owned(),
                            dims(r),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    } else {
        v.get("content")
            .map(|c| vec![(content_text(c.get("parts")).into_owned(), dims(&v))])
            .unwrap_or_default()
    };
    if inputs.is_empty() {
        return call.fail(400, None, "* content: content is not specified");
    }
    let b = match call.behavior(&v) {
        Ok(b) => b,
        Err(e) => return call.fail(400, None, &e),
    };
    let computed = inputs
        .iter()
        .map(|(t, _)| text_tokens(t))
        .fold(0, u32::saturating_add);
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
    let body = if b.malformed_body {
        Bytes::from_static(b"{\"embedding\":{\"values\":[")
    } else {
        let mut vectors = inputs
            .iter()
            .map(|(t, d)| json!({"values": embed::unit_vector(t.as_bytes(), *d)}));
        let body = if batch {
            json!({"embeddings": vectors.collect::<Vec<_>>()})
        } else {
            json!({"embedding": vectors.next().unwrap_or(Value::Null)})
        };
        to_json_bytes(&body)
    };
    let mut r = json_response(StatusCode::OK, body);
    call.decorate(&mut r, &b);
    r
}

/// `:countTokens` (free: not counted as a call, not billed).
fn count_tokens(h: &MockHandle, inc: &Incoming) -> Response {
    let id = h.next_id();
    if let Some(problem) = auth_problem(h, inc) {
        return error_response(Api::Gemini, 401, None, Some(problem), None, id);
    }
    let Ok(v) = serde_json::from_slice::<Value>(&inc.body) else {
        return error_response(
            Api::Gemini,
            400,
            None,
            Some("Invalid JSON payload received."),
            None,
            id,
        );
    };
    let req = v.get("generateContentRequest").unwrap_or(&v);
    let contents = req
        .get("contents")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    let total = prompt_tokens(req, contents);
    json_response(
        StatusCode::OK,
        to_json_bytes(&json!({
            "totalTokens": total,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": total}],
        })),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::behavior::UsageMode;

    #[test]
    fn usage_metadata_has_cached_count_only_when_positive() {
        let u = usage_json(Tokens {
            prompt: 10,
            completion: 3,
            cached: 0,
        });
        assert_eq!(u["totalTokenCount"], 13);
        assert!(u.get("cachedContentTokenCount").is_none());
        let u = usage_json(Tokens {
            prompt: 10,
            completion: 3,
            cached: 4,
        });
        assert_eq!(u["cachedContentTokenCount"], 4);
    }

    #[test]
    fn usage_mode_absent_reports_nothing() {
        let t = Tokens {
            prompt: 1,
            completion: 1,
            cached: 0,
        };
        assert!(t.reported(UsageMode::Absent).is_none());
    }
}

//! `POST /v1/messages`: the Anthropic Messages API, so the Anthropic SDK (and tools built on it)
//! can call any configured model. Errors use the Anthropic error shape.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use kairos_api::anthropic::MessagesRequest;
use kairos_api::error::anthropic_error_type;
use kairos_api::openai::Usage;
use kairos_core::error::GatewayError;
use kairos_core::messages::MessagesReply;
use kairos_core::pipeline::{ChatReply, ChatStream, NativeStream};
use kairos_core::record::{InboundApi, RouteKind};
use kairos_providers::anthropic::{AnthropicStreamEncoder, chat_to_messages};

use crate::http::{Shape, error_response};
use crate::routes::{AppState, Begun, InFlight, begin, json_response, meta_headers};

pub async fn messages(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Response<Body> {
    let Begun::<MessagesRequest> { req, rec, guard } = match begin(
        &st,
        &headers,
        body,
        RouteKind::Messages,
        InboundApi::Anthropic,
        Shape::Anthropic,
    )
    .await
    {
        Ok(b) => b,
        Err(r) => return r,
    };
    let id = rec.id().to_owned();
    let trace = rec.trace_id().to_owned();
    let beta = headers
        .get("anthropic-beta")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let message_id = format!("msg_{}", id.replace('-', ""));
    let opts = match crate::routes::route_options(&headers) {
        Ok(o) => o,
        Err(e) => {
            rec.finish_err(&e);
            return error_response(&e, Shape::Anthropic, Some(&id));
        }
    };
    match st.gateway.messages(rec, req, beta, opts).await {
        Ok(MessagesReply::NativeComplete(bytes, meta)) => {
            let mut r = json_response(StatusCode::OK, bytes);
            meta_headers(r.headers_mut(), &meta, &trace);
            r
        }
        Ok(MessagesReply::NativeStream(s, meta)) => {
            let mut r = sse_response(native_sse(s, guard));
            meta_headers(r.headers_mut(), &meta, &trace);
            r
        }
        Ok(MessagesReply::Translated(ChatReply::Complete(resp, meta))) => {
            let msg = chat_to_messages(&resp, &resp.model);
            let mut r = json_response(
                StatusCode::OK,
                Bytes::from(serde_json::to_vec(&msg).unwrap_or_default()),
            );
            meta_headers(r.headers_mut(), &meta, &trace);
            r
        }
        Ok(MessagesReply::Translated(ChatReply::Stream(s, meta))) => {
            let mut r = sse_response(translated_sse(s, meta.model.clone(), message_id, guard));
            meta_headers(r.headers_mut(), &meta, &trace);
            r
        }
        Err(e) => error_response(&e, Shape::Anthropic, Some(&id)),
    }
}

fn sse_response(body: Body) -> Response<Body> {
    let mut r = Response::new(body);
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    r
}

/// The Anthropic `error` event that ends a failed stream (there is no `message_stop` after it).
fn error_event(e: &GatewayError) -> Bytes {
    let kind = match e {
        GatewayError::Upstream(kairos_core::error::UpstreamFailure::Status(u))
            if u.kind == kairos_providers::adapter::UpstreamErrorKind::Overloaded =>
        {
            "overloaded_error"
        }
        _ => anthropic_error_type(e.status()),
    };
    let body =
        serde_json::json!({"type": "error", "error": {"type": kind, "message": e.to_string()}});
    kairos_api::sse::encode_named("error", body.to_string().as_bytes())
}

fn native_sse(stream: Box<NativeStream>, guard: InFlight) -> Body {
    let s = futures_util::stream::unfold((stream, guard, false), |(mut s, g, done)| async move {
        if done {
            return None;
        }
        match s.next().await {
            Some(Ok(b)) => Some((Ok::<Bytes, std::convert::Infallible>(b), (s, g, false))),
            Some(Err(e)) => Some((Ok(error_event(&e)), (s, g, true))),
            None => None,
        }
    });
    Body::from_stream(s)
}

fn translated_sse(
    stream: Box<ChatStream>,
    model: String,
    message_id: String,
    guard: InFlight,
) -> Body {
    struct S {
        stream: Box<ChatStream>,
        enc: AnthropicStreamEncoder,
        usage: Option<Usage>,
        done: bool,
        _guard: InFlight,
    }
    let state = S {
        stream,
        enc: AnthropicStreamEncoder::new(&model, &message_id),
        usage: None,
        done: false,
        _guard: guard,
    };
    let s = futures_util::stream::unfold(state, |mut st| async move {
        if st.done {
            return None;
        }
        let mut out: Vec<Bytes> = Vec::new();
        while out.is_empty() {
            match st.stream.next().await {
                Some(Ok(chunk)) => {
                    if chunk.choices.is_empty() && chunk.usage.is_some() {
                        st.usage = chunk.usage;
                    } else {
                        st.enc.push(&chunk, &mut out);
                    }
                }
                Some(Err(e)) => {
                    let kind = anthropic_error_type(e.status());
                    st.enc.finish_error(kind, &e.to_string(), &mut out);
                    st.done = true;
                    break;
                }
                None => {
                    st.enc.finish_ok(st.usage.as_ref(), &mut out);
                    st.done = true;
                    break;
                }
            }
        }
        let joined: Bytes = if out.len() == 1 {
            out.pop().unwrap_or_default()
        } else {
            Bytes::from(out.concat())
        };
        Some((Ok::<Bytes, std::convert::Infallible>(joined), st))
    });
    Body::from_stream(s)
}

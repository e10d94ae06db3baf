//! The axum router and the handlers. Handlers are thin: authenticate, read and parse the body,
//! call the core pipeline, turn the result into HTTP in the caller's API shape.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use kairos_api::openai::{ChatCompletionChunk, ChatCompletionRequest, EmbeddingRequest};
use kairos_api::sse;
use kairos_core::error::{ClientError, GatewayError, InternalError};
use kairos_core::gateway::Gateway;
use kairos_core::pipeline::{ChatReply, ChatStream, ReplyMeta, request_info};
use kairos_core::record::{InboundApi, Recorder, RouteKind};
use kairos_core::routing::{RouteOptions, check_cost, parse_bar, receipt_from_row};
use kairos_router::funnel::BarSource;
use kairos_store::Store;

use crate::http::{
    Shape, X_ATTEMPTS, X_COST, X_DROPPED, X_FALLBACKS, X_MODEL, X_PROVIDER, X_RECEIPT_ID,
    X_REQUEST_ID, X_TASK, X_TRACE_ID, check_json_content_type, error_body, error_response,
    format_usd, parse_json, presented_key, read_limited, set,
};

/// Everything the handlers share.
pub struct AppState {
    pub gateway: Gateway,
    pub store: Store,
    pub max_body_bytes: usize,
    pub max_in_flight: usize,
    pub in_flight: AtomicUsize,
}

/// Counts a request as in flight until dropped (for streams: until the stream ends).
pub struct InFlight(Arc<AppState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl AppState {
    /// Load shedding (test-matrix U22): beyond the cap, answer 503 at once.
    fn admit(self: &Arc<Self>) -> Option<InFlight> {
        let prev = self.in_flight.fetch_add(1, Ordering::Relaxed);
        let guard = InFlight(self.clone());
        (prev < self.max_in_flight).then_some(guard)
    }
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/chat/completions", post(chat_completions))
        .route("/v1/messages", post(crate::anthropic::messages))
        .route("/v1/embeddings", post(embeddings))
        .route("/embeddings", post(embeddings))
        .route("/v1/route", post(dry_run))
        .route("/admin/health", get(admin_health))
        .route("/metrics", get(metrics_endpoint))
        .route("/v1/receipts/{id}", get(receipt))
        .route("/v1/feedback", post(crate::feedback::feedback))
        .route("/v1/models", get(models))
        .route("/v1/models/{*id}", get(model))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

async fn not_found() -> Response<Body> {
    error_response(
        &GatewayError::Client(ClientError::NotFound),
        Shape::OpenAi,
        None,
    )
}

async fn method_not_allowed() -> Response<Body> {
    error_response(
        &GatewayError::Client(ClientError::MethodNotAllowed),
        Shape::OpenAi,
        None,
    )
}

async fn healthz() -> Response<Body> {
    json_response(StatusCode::OK, Bytes::from_static(b"{\"status\":\"ok\"}"))
}

async fn readyz(State(st): State<Arc<AppState>>) -> Response<Body> {
    match st.store.ping().await {
        Ok(()) => json_response(
            StatusCode::OK,
            Bytes::from(
                serde_json::json!({"status": "ready", "store": st.store.backend(), "providers": st.gateway.provider_names()})
                    .to_string(),
            ),
        ),
        Err(_) => json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            Bytes::from(
                serde_json::json!({"status": "unavailable", "store": st.store.backend()}).to_string(),
            ),
        ),
    }
}

pub fn json_response(status: StatusCode, body: Bytes) -> Response<Body> {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// The start of every inference request: admission, recorder, authentication, attribution
/// headers, then the JSON body. On failure the row is written and the error response returned.
pub(crate) struct Begun<T> {
    pub req: T,
    pub rec: Recorder,
    pub guard: InFlight,
}

pub(crate) async fn begin<T: serde::de::DeserializeOwned>(
    st: &Arc<AppState>,
    headers: &HeaderMap,
    body: Body,
    route: RouteKind,
    inbound: InboundApi,
    shape: Shape,
) -> Result<Begun<T>, Response<Body>> {
    let (rec, guard) = admit(st, headers, route, inbound, shape).await?;
    let (req, rec) = read_json(st, headers, body, rec, shape).await?;
    Ok(Begun { req, rec, guard })
}

async fn admit(
    st: &Arc<AppState>,
    headers: &HeaderMap,
    route: RouteKind,
    inbound: InboundApi,
    shape: Shape,
) -> Result<(Recorder, InFlight), Response<Body>> {
    let started = Instant::now();
    let trace = headers
        .get("x-kairos-trace-id")
        .and_then(|v| v.to_str().ok())
        .filter(|t| {
            !t.is_empty()
                && t.len() <= 128
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
        })
        .map(str::to_owned);
    let mut rec = Recorder::new(
        st.gateway.ledger().clone(),
        request_info(route, inbound, trace, started),
    );
    let fail = |rec: Recorder, e: GatewayError| {
        let id = rec.id().to_owned();
        rec.finish_err(&e);
        error_response(&e, shape, Some(&id))
    };
    let Some(guard) = st.admit() else {
        kairos_core::metrics::shed();
        return Err(fail(rec, GatewayError::Internal(InternalError::Overloaded)));
    };
    match st.gateway.authenticate(presented_key(headers)).await {
        Ok(p) => match p.access {
            Some(a) => rec.set_access(a),
            None => rec.set_key(&p.key_id),
        },
        Err(e) => return Err(fail(rec, e)),
    }
    match byok_keys(st, headers) {
        Ok(keys) if !keys.is_empty() => rec.set_byok(keys),
        Ok(_) => {}
        Err(e) => return Err(fail(rec, e)),
    }
    if let Some(v) = headers.get("x-kairos-metadata") {
        match parse_metadata_header(v) {
            Ok(m) => rec.add_metadata(m, true),
            Err(e) => return Err(fail(rec, e)),
        }
    }
    Ok((rec, guard))
}

/// `x-kairos-provider-key: <provider>=<key>` (repeatable): the caller's own provider key for
/// this request only (BYOK). Used for attempts on that provider alone, never stored or logged.
fn byok_keys(
    st: &AppState,
    headers: &HeaderMap,
) -> Result<Vec<(String, secrecy::SecretString)>, GatewayError> {
    let mut out = Vec::new();
    for v in headers.get_all("x-kairos-provider-key") {
        let bad = |m: &str| GatewayError::invalid(m.to_owned(), Some("x-kairos-provider-key"));
        let s = v
            .to_str()
            .map_err(|_| bad("`x-kairos-provider-key` must be ASCII: `<provider>=<key>`"))?;
        let (provider, key) = s
            .split_once('=')
            .ok_or_else(|| bad("`x-kairos-provider-key` must be `<provider>=<key>`"))?;
        let (provider, key) = (provider.trim(), key.trim());
        if key.is_empty() || key.len() > 1024 {
            return Err(bad(
                "the key in `x-kairos-provider-key` must be 1 to 1024 characters",
            ));
        }
        if !st.gateway.provider_names().iter().any(|p| p == provider) {
            return Err(bad(
                "`x-kairos-provider-key` names a provider that is not configured (see GET /v1/models)",
            ));
        }
        if out.iter().any(|(p, _)| p == provider) {
            return Err(bad("one `x-kairos-provider-key` per provider"));
        }
        out.push((
            provider.to_owned(),
            secrecy::SecretString::from(key.to_owned()),
        ));
    }
    Ok(out)
}

/// `x-kairos-metadata`: a JSON object of at most 4 KiB whose values are strings, numbers or
/// booleans.
fn parse_metadata_header(
    v: &HeaderValue,
) -> Result<serde_json::Map<String, serde_json::Value>, GatewayError> {
    let bad = || {
        GatewayError::invalid(
            "`x-kairos-metadata` must be a JSON object (at most 4 KiB) of string, number or boolean values",
            Some("x-kairos-metadata"),
        )
    };
    if v.len() > 4096 {
        return Err(bad());
    }
    let m: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(v.as_bytes()).map_err(|_| bad())?;
    if m.len() > 64
        || m.iter()
            .any(|(k, v)| k.len() > 64 || !(v.is_string() || v.is_number() || v.is_boolean()))
    {
        return Err(bad());
    }
    Ok(m)
}

/// Read, size-check and parse the JSON body; on failure write the row and return the response.
async fn read_json<T: serde::de::DeserializeOwned>(
    st: &AppState,
    headers: &HeaderMap,
    body: Body,
    rec: Recorder,
    shape: Shape,
) -> Result<(T, Recorder), Response<Body>> {
    let parsed = async {
        check_json_content_type(headers)?;
        let bytes = read_limited(headers, body, st.max_body_bytes).await?;
        parse_json::<T>(&bytes)
    }
    .await;
    match parsed {
        Ok(v) => Ok((v, rec)),
        Err(e) => {
            let id = rec.id().to_owned();
            rec.finish_err(&e);
            Err(error_response(&e, shape, Some(&id)))
        }
    }
}

/// Routing options from `x-kairos-quality` (0-1 or economy/balanced/premium),
/// `x-kairos-max-cost-usd`, `x-kairos-strict`, `x-kairos-route: off`, `x-kairos-config`,
/// `x-kairos-timeout-ms` and `x-kairos-answer-value-usd`.
pub(crate) fn route_options(h: &HeaderMap) -> Result<RouteOptions, GatewayError> {
    let text = |name: &str| -> Result<Option<&str>, GatewayError> {
        match h.get(name) {
            None => Ok(None),
            Some(v) => v.to_str().map(|s| Some(s.trim())).map_err(|_| {
                GatewayError::invalid(format!("`{name}` is not valid text"), Some(name))
            }),
        }
    };
    let mut o = RouteOptions::default();
    if let Some(q) = text("x-kairos-quality")? {
        let (v, tier) = parse_bar(q).ok_or_else(|| {
            GatewayError::invalid(
                "`x-kairos-quality` must be a number between 0 and 1 or one of economy, balanced, premium",
                Some("x-kairos-quality"),
            )
        })?;
        o.bar = Some((v, tier, BarSource::Header));
    }
    if let Some(c) = text("x-kairos-max-cost-usd")? {
        let v: f64 = c.parse().map_err(|_| {
            GatewayError::invalid(
                "`x-kairos-max-cost-usd` must be a number",
                Some("x-kairos-max-cost-usd"),
            )
        })?;
        check_cost(v, "x-kairos-max-cost-usd")?;
        o.max_cost_usd = Some(v);
    }
    if let Some(s) = text("x-kairos-strict")? {
        o.strict = matches!(s, "1" | "true" | "yes" | "on");
    }
    if let Some(r) = text("x-kairos-route")? {
        o.disabled = matches!(r, "0" | "false" | "no" | "off");
    }
    if let Some(c) = text("x-kairos-config")? {
        if c.is_empty() || c.len() > 128 {
            return Err(GatewayError::invalid(
                "`x-kairos-config` must name a configured strategy",
                Some("x-kairos-config"),
            ));
        }
        o.strategy = Some(c.to_owned());
    }
    if let Some(t) = text("x-kairos-timeout-ms")? {
        let ms: u64 = t.parse().ok().filter(|v| *v > 0).ok_or_else(|| {
            GatewayError::invalid(
                "`x-kairos-timeout-ms` must be a positive number of milliseconds",
                Some("x-kairos-timeout-ms"),
            )
        })?;
        o.timeout = Some(std::time::Duration::from_millis(ms));
    }
    if let Some(v) = text("x-kairos-answer-value-usd")? {
        let param = "x-kairos-answer-value-usd";
        let v: f64 = v.parse().map_err(|_| {
            GatewayError::invalid(format!("`{param}` must be a number"), Some(param))
        })?;
        kairos_core::routing::check_value(v, param)?;
        o.value_usd = Some(v);
    }
    Ok(o)
}

pub(crate) fn meta_headers(h: &mut HeaderMap, meta: &ReplyMeta, trace_id: &str) {
    set(h, X_REQUEST_ID, &meta.request_id);
    if let Some(task) = meta.task {
        set(h, X_RECEIPT_ID, &meta.request_id);
        set(h, X_TASK, task);
    }
    set(h, X_TRACE_ID, trace_id);
    set(h, X_MODEL, &meta.model);
    set(h, X_PROVIDER, &meta.provider);
    set(h, X_ATTEMPTS, &meta.attempts.to_string());
    if meta.fallbacks > 0 {
        set(h, X_FALLBACKS, &meta.fallbacks.to_string());
    }
    match meta.cost_micros {
        Some(c) => set(h, X_COST, &format_usd(c)),
        // Streams learn their cost at the end: it is in the final usage chunk (`usage.cost`).
        None => set(h, X_COST, "pending"),
    }
    if !meta.dropped_params.is_empty() {
        set(h, X_DROPPED, &meta.dropped_params.join(","));
    }
}

async fn chat_completions(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Response<Body> {
    let Begun::<ChatCompletionRequest> { req, rec, guard } = match begin(
        &st,
        &headers,
        body,
        RouteKind::Chat,
        InboundApi::OpenAi,
        Shape::OpenAi,
    )
    .await
    {
        Ok(b) => b,
        Err(r) => return r,
    };
    let id = rec.id().to_owned();
    let trace = rec.trace_id().to_owned();
    let wants_usage = req.wants_usage_in_stream();
    let opts = match route_options(&headers) {
        Ok(o) => o,
        Err(e) => {
            rec.finish_err(&e);
            return error_response(&e, Shape::OpenAi, Some(&id));
        }
    };
    match st.gateway.chat(rec, req, opts).await {
        Ok(ChatReply::Complete(resp, meta)) => {
            let mut body = Vec::with_capacity(1024);
            let _ = serde_json::to_writer(&mut body, &resp);
            let mut r = json_response(StatusCode::OK, Bytes::from(body));
            meta_headers(r.headers_mut(), &meta, &trace);
            r
        }
        Ok(ChatReply::Stream(stream, meta)) => {
            let mut r = Response::new(openai_sse(stream, wants_usage, guard));
            let h = r.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            );
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            h.insert("x-accel-buffering", HeaderValue::from_static("no"));
            meta_headers(h, &meta, &trace);
            r
        }
        Err(e) => error_response(&e, Shape::OpenAi, Some(&id)),
    }
}

/// Canonical chunks -> OpenAI SSE. A failure after the stream started ends it with an error
/// event and WITHOUT `[DONE]`, so no client mistakes a cut answer for a complete one.
fn openai_sse(stream: Box<ChatStream>, wants_usage: bool, guard: InFlight) -> Body {
    struct S {
        stream: Box<ChatStream>,
        _guard: InFlight,
        done: bool,
    }
    fn push_chunk(frame: &mut Vec<u8>, chunk: &ChatCompletionChunk, wants_usage: bool) {
        if chunk.choices.is_empty() && chunk.usage.is_some() && !wants_usage {
            return; // we asked the upstream for usage; the caller did not
        }
        // Serialised straight into the outgoing frame.
        frame.extend_from_slice(b"data: ");
        let _ = serde_json::to_writer(&mut *frame, chunk);
        frame.extend_from_slice(b"\n\n");
    }
    let state = S {
        stream,
        _guard: guard,
        done: false,
    };
    let s = futures_util::stream::unfold(state, move |mut st| async move {
        if st.done {
            return None;
        }
        let mut frame = Vec::with_capacity(1024);
        loop {
            match st.stream.next().await {
                Some(Ok(chunk)) => {
                    push_chunk(&mut frame, &chunk, wants_usage);
                    // Chunks already decoded from the same upstream read go out in one write.
                    while frame.len() < 32 * 1024 {
                        let Some(c) = st.stream.next_ready() else {
                            break;
                        };
                        push_chunk(&mut frame, &c, wants_usage);
                    }
                    if !frame.is_empty() {
                        return Some((
                            Ok::<Bytes, std::convert::Infallible>(Bytes::from(frame)),
                            st,
                        ));
                    }
                }
                Some(Err(e)) => {
                    st.done = true;
                    frame.extend_from_slice(&sse::encode_data(&error_body(&e, Shape::OpenAi)));
                    return Some((Ok(Bytes::from(frame)), st));
                }
                None => {
                    st.done = true;
                    frame.extend_from_slice(sse::DONE);
                    return Some((Ok(Bytes::from(frame)), st));
                }
            }
        }
    });
    Body::from_stream(s)
}

async fn embeddings(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Response<Body> {
    let Begun::<EmbeddingRequest> {
        req,
        rec,
        guard: _guard,
    } = match begin(
        &st,
        &headers,
        body,
        RouteKind::Embeddings,
        InboundApi::OpenAi,
        Shape::OpenAi,
    )
    .await
    {
        Ok(b) => b,
        Err(r) => return r,
    };
    let id = rec.id().to_owned();
    let trace = rec.trace_id().to_owned();
    match st.gateway.embeddings(rec, req).await {
        Ok((resp, meta)) => {
            let mut r = json_response(
                StatusCode::OK,
                Bytes::from(serde_json::to_vec(&resp).unwrap_or_default()),
            );
            meta_headers(r.headers_mut(), &meta, &trace);
            r
        }
        Err(e) => error_response(&e, Shape::OpenAi, Some(&id)),
    }
}

async fn authorized(st: &AppState, headers: &HeaderMap) -> Result<(), Response<Body>> {
    st.gateway
        .authenticate(presented_key(headers))
        .await
        .map(|_| ())
        .map_err(|e| error_response(&e, Shape::OpenAi, None))
}

async fn models(State(st): State<Arc<AppState>>, headers: HeaderMap) -> Response<Body> {
    if let Err(r) = authorized(&st, &headers).await {
        return r;
    }
    json_response(
        StatusCode::OK,
        Bytes::from(serde_json::to_vec(&st.gateway.models()).unwrap_or_default()),
    )
}

async fn model(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response<Body> {
    if let Err(r) = authorized(&st, &headers).await {
        return r;
    }
    match st.gateway.models().data.into_iter().find(|m| m.id == id) {
        Some(m) => json_response(
            StatusCode::OK,
            Bytes::from(serde_json::to_vec(&m).unwrap_or_default()),
        ),
        None => error_response(
            &GatewayError::Client(ClientError::UnknownModel {
                model: kairos_core::pipeline::clip(&id, 200),
                hint: None,
            }),
            Shape::OpenAi,
            None,
        ),
    }
}

/// `POST /v1/route`: the routing receipt for a chat request, without calling any model.
async fn dry_run(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Response<Body> {
    if let Err(r) = authorized(&st, &headers).await {
        return r;
    }
    let parsed = async {
        check_json_content_type(&headers)?;
        let bytes = read_limited(&headers, body, st.max_body_bytes).await?;
        let req: ChatCompletionRequest = parse_json(&bytes)?;
        let opts = route_options(&headers)?;
        st.gateway.dry_run(&req, opts)
    }
    .await;
    match parsed {
        Ok(receipt) => {
            let mut v = serde_json::to_value(&receipt).unwrap_or_default();
            if let Some(o) = v.as_object_mut() {
                o.insert(
                    "summary".into(),
                    serde_json::Value::String(receipt.summary()),
                );
            }
            json_response(StatusCode::OK, Bytes::from(v.to_string()))
        }
        Err(e) => error_response(&e, Shape::OpenAi, None),
    }
}

/// `GET /v1/receipts/{id}`: a routed request's receipt, to the key that made the request, an
/// admin key of its workspace, or the master key. Rows are written off the request path, so a receipt appears within milliseconds of the
/// response (404 until then).
async fn receipt(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response<Body> {
    let principal = match st.gateway.authenticate(presented_key(&headers)).await {
        Ok(p) => p,
        Err(e) => return error_response(&e, Shape::OpenAi, None),
    };
    let not_found = || {
        error_response(
            &GatewayError::invalid_not_found(format!(
                "no receipt `{}`",
                kairos_core::pipeline::clip(&id, 64)
            )),
            Shape::OpenAi,
            None,
        )
    };
    if id.len() > 64 {
        return not_found();
    }
    match st.store.get_request(&id).await {
        Ok(Some(row)) if principal.may_access_request(&row.key_id, row.workspace.as_deref()) => {
            match receipt_from_row(&row, st.gateway.catalog()) {
                Some(r) => {
                    let mut v = serde_json::to_value(&r).unwrap_or_default();
                    if let Some(o) = v.as_object_mut() {
                        o.insert("summary".into(), serde_json::Value::String(r.summary()));
                    }
                    json_response(StatusCode::OK, Bytes::from(v.to_string()))
                }
                None => not_found(),
            }
        }
        Ok(_) => not_found(),
        Err(_) => error_response(
            &GatewayError::Internal(InternalError::Unavailable("the ledger database".into())),
            Shape::OpenAi,
            None,
        ),
    }
}

/// `GET /metrics`: Prometheus exposition (admin only: scrape with the master key as a bearer
/// token).
pub(crate) async fn metrics_endpoint(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Response<Body> {
    match st.gateway.authenticate(presented_key(&headers)).await {
        Ok(p) if p.admin => match crate::metrics::render(&st) {
            Some(text) => {
                let mut r = Response::new(Body::from(text));
                r.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                r
            }
            None => error_response(
                &GatewayError::Internal(InternalError::Unavailable("metrics".into())),
                Shape::OpenAi,
                None,
            ),
        },
        Ok(_) => error_response(
            &GatewayError::Client(ClientError::Unauthorized),
            Shape::OpenAi,
            None,
        ),
        Err(e) => error_response(&e, Shape::OpenAi, None),
    }
}

/// `GET /admin/health`: every upstream target's health (admin only).
pub(crate) async fn admin_health(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Response<Body> {
    match st.gateway.authenticate(presented_key(&headers)).await {
        Ok(p) if p.admin => json_response(
            StatusCode::OK,
            Bytes::from(serde_json::json!({"targets": st.gateway.health_snapshot()}).to_string()),
        ),
        Ok(_) => error_response(
            &GatewayError::Client(ClientError::Unauthorized),
            Shape::OpenAi,
            None,
        ),
        Err(e) => error_response(&e, Shape::OpenAi, None),
    }
}

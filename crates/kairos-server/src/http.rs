//! Turning gateway results into HTTP: error bodies in the caller's API shape, `x-kairos-*`
//! headers, and the body reader with its limit. The only place errors become HTTP.

use axum::body::Body;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode, header};
use http_body_util::BodyExt;
use kairos_api::error::{
    AnthropicError, AnthropicErrorBody, OpenAiError, OpenAiErrorBody, anthropic_error_type,
};
use kairos_core::error::{ClientError, GatewayError};

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-kairos-request-id");
pub const X_TRACE_ID: HeaderName = HeaderName::from_static("x-kairos-trace-id");
pub const X_MODEL: HeaderName = HeaderName::from_static("x-kairos-model");
pub const X_PROVIDER: HeaderName = HeaderName::from_static("x-kairos-provider");
pub const X_COST: HeaderName = HeaderName::from_static("x-kairos-cost-usd");
pub const X_ATTEMPTS: HeaderName = HeaderName::from_static("x-kairos-attempts");
pub const X_ERROR_SOURCE: HeaderName = HeaderName::from_static("x-kairos-error-source");
pub const X_DROPPED: HeaderName = HeaderName::from_static("x-kairos-dropped-params");
pub const X_RECEIPT_ID: HeaderName = HeaderName::from_static("x-kairos-receipt-id");
pub const X_TASK: HeaderName = HeaderName::from_static("x-kairos-task");
pub const X_FALLBACKS: HeaderName = HeaderName::from_static("x-kairos-fallbacks");

/// Which API shape the caller speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    OpenAi,
    Anthropic,
}

/// The JSON error body for `err` in the caller's shape.
pub fn error_body(err: &GatewayError, shape: Shape) -> Vec<u8> {
    let message = err.to_string();
    let out = match shape {
        Shape::OpenAi => serde_json::to_vec(&OpenAiErrorBody {
            error: OpenAiError {
                message,
                kind: err.openai_type().to_owned(),
                param: err.param().map(str::to_owned),
                code: Some(err.code()),
            },
        }),
        Shape::Anthropic => serde_json::to_vec(&AnthropicErrorBody {
            kind: "error".into(),
            error: AnthropicError {
                kind: anthropic_type(err).to_owned(),
                message,
            },
        }),
    };
    out.unwrap_or_else(|_| b"{\"error\":{\"message\":\"internal error\"}}".to_vec())
}

fn anthropic_type(err: &GatewayError) -> &'static str {
    match err {
        GatewayError::Upstream(kairos_core::error::UpstreamFailure::Status(e))
            if e.kind == kairos_providers::adapter::UpstreamErrorKind::Overloaded =>
        {
            "overloaded_error"
        }
        _ => anthropic_error_type(err.status()),
    }
}

/// A complete error response: status, body, `Retry-After`, request id and error source.
pub fn error_response(
    err: &GatewayError,
    shape: Shape,
    request_id: Option<&str>,
) -> Response<Body> {
    let status = StatusCode::from_u16(err.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = Response::new(Body::from(error_body(err, shape)));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let GatewayError::Client(ClientError::RateLimited { headers, .. }) = err {
        for (name, value) in headers {
            if let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) {
                h.insert(n, v);
            }
        }
    }
    if let Some(id) = request_id.and_then(|i| HeaderValue::from_str(i).ok()) {
        h.insert(X_REQUEST_ID, id);
    }
    h.insert(
        X_ERROR_SOURCE,
        HeaderValue::from_static(err.origin().as_str()),
    );
    if let Some(ra) = err.retry_after() {
        let secs = ra.as_secs_f64().ceil().max(1.0) as u64;
        if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
            h.insert(header::RETRY_AFTER, v);
        }
    }
    if matches!(err, GatewayError::Client(ClientError::Unauthorized)) {
        h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    resp
}

/// USD with 8 decimals (micro-dollars are 6; two more keep sub-micro prices readable later).
pub fn format_usd(micros: u64) -> String {
    format!("{}.{:06}", micros / 1_000_000, micros % 1_000_000)
}

pub fn set(h: &mut HeaderMap, name: HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        h.insert(name, v);
    }
}

/// The caller's credential: `Authorization: Bearer <key>` (OpenAI SDK) or `x-api-key: <key>`
/// (Anthropic SDK).
pub fn presented_key(h: &HeaderMap) -> Option<&str> {
    if let Some(v) = h.get(header::AUTHORIZATION) {
        let v = v.to_str().ok()?;
        let (scheme, rest) = v.split_once(' ')?;
        return scheme.eq_ignore_ascii_case("bearer").then_some(rest.trim());
    }
    h.get("x-api-key").and_then(|v| v.to_str().ok())
}

/// Read the whole body, refusing more than `limit` bytes: at once when `Content-Length`
/// declares more, otherwise as soon as the running total passes it (chunked bodies).
pub async fn read_limited(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<Bytes, GatewayError> {
    let too_large = || GatewayError::Client(ClientError::BodyTooLarge { limit });
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len > limit as u64
    {
        return Err(too_large());
    }
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(_) => Err(GatewayError::invalid(
            "the request body could not be read",
            None,
        )),
    }
}

/// `Content-Type` must be JSON when present.
pub fn check_json_content_type(h: &HeaderMap) -> Result<(), GatewayError> {
    match h
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or(""))
    {
        None => Ok(()),
        Some(ct) => {
            let mime = ct.split(';').next().unwrap_or("").trim();
            if mime.eq_ignore_ascii_case("application/json") || mime.ends_with("+json") {
                Ok(())
            } else {
                Err(GatewayError::invalid(
                    "the request body must be JSON (Content-Type: application/json)",
                    None,
                ))
            }
        }
    }
}

/// Parse JSON into `T`; errors name the offending field (`messages[0].content`).
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, GatewayError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(GatewayError::invalid(
            "the request body is empty; expected a JSON object",
            None,
        ));
    }
    // Fast path: plain serde_json. Only a request that fails is parsed again with path
    // tracking, to name the offending field.
    if let Ok(v) = serde_json::from_slice::<T>(body) {
        return Ok(v);
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let value: T = match serde_path_to_error::deserialize(&mut de) {
        Ok(v) => v,
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let mut param = (path != "." && !path.is_empty()).then_some(path);
            // serde reports a missing field at its parent's path: name the field itself.
            let text = inner.to_string();
            if let Some(rest) = text.strip_prefix("missing field `")
                && let Some(field) = rest.split('`').next()
            {
                param = Some(match param {
                    Some(p) => format!("{p}.{field}"),
                    None => field.to_owned(),
                });
            }
            let msg = match inner.classify() {
                serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                    format!("the request body is not valid JSON: {inner}")
                }
                serde_json::error::Category::Io => "the request body could not be read".to_owned(),
                serde_json::error::Category::Data => match &param {
                    Some(p) => format!(
                        "invalid value for `{p}`: {}",
                        strip_position(&inner.to_string())
                    ),
                    None => format!("invalid request: {}", strip_position(&inner.to_string())),
                },
            };
            return Err(GatewayError::Client(ClientError::InvalidRequest {
                message: msg,
                param,
            }));
        }
    };
    de.end().map_err(|_| {
        GatewayError::invalid(
            "the request body has trailing data after the JSON value",
            None,
        )
    })?;
    Ok(value)
}

fn strip_position(s: &str) -> &str {
    match s.rfind(" at line ") {
        Some(i) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kairos_api::openai::ChatCompletionRequest;

    #[test]
    fn bad_json_errors_name_the_field() {
        let e = parse_json::<ChatCompletionRequest>(
            br#"{"model":"m","messages":[{"role":"user","content":5}]}"#,
        )
        .unwrap_err();
        assert_eq!(e.param(), Some("messages[0].content"));
        assert_eq!(e.status(), 400);
        let e =
            parse_json::<ChatCompletionRequest>(br#"{"model":"m","messages":[]} x"#).unwrap_err();
        assert!(
            e.to_string().contains("not valid JSON") || e.to_string().contains("trailing"),
            "{e}"
        );
        let e = parse_json::<ChatCompletionRequest>(b"").unwrap_err();
        assert!(e.to_string().contains("empty"));
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        let e = parse_json::<ChatCompletionRequest>(deep.as_bytes()).unwrap_err();
        assert_eq!(e.status(), 400);
    }

    #[test]
    fn presented_key_forms() {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer abc"),
        );
        assert_eq!(presented_key(&h), Some("abc"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(presented_key(&h), None);
        let mut h = HeaderMap::new();
        h.insert("x-api-key", HeaderValue::from_static("k"));
        assert_eq!(presented_key(&h), Some("k"));
    }

    #[test]
    fn usd_format() {
        assert_eq!(format_usd(0), "0.000000");
        assert_eq!(format_usd(1_234_567), "1.234567");
        assert_eq!(format_usd(29), "0.000029");
    }
}

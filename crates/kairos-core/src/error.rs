//! The gateway's one error type, joined from small per-cause enums.
//!
//! Every variant knows who is at fault ([`Origin`]), a stable machine-readable [`GatewayError::kind`]
//! used in logs, metrics and the ledger, the HTTP status it maps to, and a message that is safe to
//! show a caller (no keys, URLs or internal detail). Only `kairos-server` turns it into HTTP.
//! The matches below are exhaustive on purpose: a new variant must decide each of these.

use std::time::Duration;

use kairos_providers::adapter::{DecodeError, UpstreamError, UpstreamErrorKind};
use kairos_providers::client::{BodyError, SendError};

/// Who caused a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Client,
    Upstream,
    Gateway,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Client => "client",
            Origin::Upstream => "provider",
            Origin::Gateway => "gateway",
        }
    }
}

/// The caller's request is wrong. Never reaches an upstream, never costs anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientError {
    /// Body is not JSON, has the wrong types, or breaks a rule. `param` names the field.
    InvalidRequest {
        message: String,
        param: Option<String>,
    },
    /// A field that would choose the upstream or carry credentials (`api_base`, `api_key`, ...).
    ForbiddenField {
        field: String,
    },
    UnknownModel {
        model: String,
        hint: Option<String>,
    },
    /// The model exists but cannot serve this kind of request (e.g. chat on an embedding model).
    WrongModelMode {
        model: String,
        expected: &'static str,
    },
    Unauthorized,
    /// A rate limit of the key or its workspace (RPM/TPM). `headers` are the `RateLimit-*`
    /// response headers.
    RateLimited {
        message: String,
        retry_after: Option<Duration>,
        headers: Vec<(&'static str, String)>,
    },
    /// A budget of the key or its workspace is spent for its period.
    BudgetExceeded {
        message: String,
    },
    /// Authenticated, but this key may not do that (admin API).
    Forbidden {
        message: String,
    },
    /// The object exists already (a workspace name).
    Conflict {
        message: String,
    },
    /// The key's (or its workspace's) allowlist excludes this model or provider.
    ModelNotAllowed {
        model: String,
    },
    BodyTooLarge {
        limit: usize,
    },
    UnsupportedMediaType,
    NotFound,
    MethodNotAllowed,
    /// `model="auto"` found no model to route to (strict bar unmet, nothing allowed, ...).
    NoRoute {
        message: String,
    },
    /// A receipt or other object that does not exist or is not the caller's.
    ObjectNotFound {
        message: String,
    },
}

/// The upstream failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamFailure {
    /// The provider answered with an error status.
    Status(UpstreamError),
    /// Could not connect (the request never left).
    Connect { provider: String },
    /// No response headers in time (ambiguous: the provider may bill it).
    Timeout { provider: String },
    /// The connection broke (ambiguous).
    Io { provider: String },
    /// The provider sent something unreadable.
    InvalidResponse { provider: String, detail: String },
    /// The response body exceeded the gateway's cap.
    ResponseTooLarge { provider: String },
    /// A stream ended without its terminal event.
    StreamCut { provider: String },
    /// A stream went silent longer than the idle timeout.
    StreamStalled { provider: String },
    /// The provider asked for a pause (Retry-After) that is still running: not called.
    CoolingDown {
        provider: String,
        retry_after: Duration,
    },
    /// Every target of the plan is ejected after repeated failures and the one last-resort
    /// attempt allowed at a time is already running: not called (test-matrix U21).
    Ejected {
        provider: String,
        retry_after: Duration,
    },
}

/// The gateway itself failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InternalError {
    /// A request could not be translated for the chosen upstream for a reason that is not the
    /// caller's (bad provider key format, encoding bug).
    Translate(String),
    ShuttingDown,
    Overloaded,
    Unavailable(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GatewayError {
    #[error("{}", .0.message())]
    Client(ClientError),
    #[error("{}", .0.message())]
    Upstream(UpstreamFailure),
    #[error("{}", .0.message())]
    Internal(InternalError),
}

impl ClientError {
    fn message(&self) -> String {
        match self {
            ClientError::InvalidRequest { message, .. } => message.clone(),
            ClientError::ForbiddenField { field } => format!(
                "the field `{field}` is not accepted: upstream hosts and credentials are set by the gateway operator, not per request"
            ),
            ClientError::UnknownModel { model, hint } => match hint {
                Some(h) => format!("the model `{model}` is not available: {h}"),
                None => format!(
                    "the model `{model}` does not exist or is not configured; GET /v1/models lists the models you can use"
                ),
            },
            ClientError::WrongModelMode { model, expected } => {
                format!("the model `{model}` is not a {expected} model")
            }
            ClientError::Unauthorized => {
                "missing or invalid API key; send `Authorization: Bearer <key>`".to_owned()
            }
            ClientError::BodyTooLarge { limit } => {
                format!("request body exceeds the limit of {limit} bytes")
            }
            ClientError::UnsupportedMediaType => {
                "request body must be JSON (Content-Type: application/json)".to_owned()
            }
            ClientError::NotFound => "no such route".to_owned(),
            ClientError::MethodNotAllowed => "method not allowed on this route".to_owned(),
            ClientError::NoRoute { message } => format!("routing failed: {message}"),
            ClientError::ObjectNotFound { message } => message.clone(),
            ClientError::Forbidden { message }
            | ClientError::Conflict { message }
            | ClientError::BudgetExceeded { message }
            | ClientError::RateLimited { message, .. } => message.clone(),
            ClientError::ModelNotAllowed { model } => format!(
                "this API key may not use the model `{model}`; its allowed models and providers are set by the workspace admin"
            ),
        }
    }
}

impl UpstreamFailure {
    fn message(&self) -> String {
        match self {
            UpstreamFailure::Status(e) => format!("upstream error: {}", e.message),
            UpstreamFailure::Connect { provider } => {
                format!("could not connect to provider `{provider}`")
            }
            UpstreamFailure::Timeout { provider } => {
                format!("provider `{provider}` did not respond in time")
            }
            UpstreamFailure::Io { provider } => {
                format!("the connection to provider `{provider}` failed")
            }
            UpstreamFailure::InvalidResponse { provider, detail } => {
                format!("provider `{provider}` sent an invalid response ({detail})")
            }
            UpstreamFailure::ResponseTooLarge { provider } => {
                format!("provider `{provider}` sent a response larger than the gateway accepts")
            }
            UpstreamFailure::StreamCut { provider } => format!(
                "the stream from provider `{provider}` ended before completion; the output is incomplete"
            ),
            UpstreamFailure::StreamStalled { provider } => {
                format!("the stream from provider `{provider}` stalled; the output is incomplete")
            }
            UpstreamFailure::Ejected {
                provider,
                retry_after,
            } => format!(
                "provider `{provider}` is failing and temporarily out of rotation; retry after {} s",
                retry_after.as_secs_f64().ceil()
            ),
            UpstreamFailure::CoolingDown {
                provider,
                retry_after,
            } => format!(
                "provider `{provider}` asked for a pause; retry after {} s",
                retry_after.as_secs_f64().ceil()
            ),
        }
    }
}

impl InternalError {
    fn message(&self) -> String {
        match self {
            InternalError::Translate(m) => {
                format!("the gateway could not prepare the request: {m}")
            }
            InternalError::ShuttingDown => "the gateway is shutting down".to_owned(),
            InternalError::Overloaded => "the gateway is overloaded, retry later".to_owned(),
            InternalError::Unavailable(what) => format!("temporarily unavailable: {what}"),
        }
    }
}

impl GatewayError {
    pub fn invalid(message: impl Into<String>, param: Option<&str>) -> Self {
        GatewayError::Client(ClientError::InvalidRequest {
            message: message.into(),
            param: param.map(str::to_owned),
        })
    }

    /// A 404 for an object that does not exist (or that the caller may not see).
    pub fn invalid_not_found(message: impl Into<String>) -> Self {
        GatewayError::Client(ClientError::ObjectNotFound {
            message: message.into(),
        })
    }

    pub fn origin(&self) -> Origin {
        match self {
            GatewayError::Client(_) => Origin::Client,
            GatewayError::Upstream(_) => Origin::Upstream,
            GatewayError::Internal(_) => Origin::Gateway,
        }
    }

    /// Stable identifier for logs, metrics and the ledger (`caller_*`, `provider_*`, `gateway_*`).
    pub fn kind(&self) -> &'static str {
        match self {
            GatewayError::Client(c) => match c {
                ClientError::InvalidRequest { .. } => "caller_invalid_request",
                ClientError::ForbiddenField { .. } => "caller_forbidden_field",
                ClientError::UnknownModel { .. } => "caller_unknown_model",
                ClientError::WrongModelMode { .. } => "caller_wrong_model_mode",
                ClientError::Unauthorized => "caller_unauthorized",
                ClientError::BodyTooLarge { .. } => "caller_body_too_large",
                ClientError::UnsupportedMediaType => "caller_unsupported_media_type",
                ClientError::NotFound => "caller_not_found",
                ClientError::MethodNotAllowed => "caller_method_not_allowed",
                ClientError::NoRoute { .. } => "caller_no_route",
                ClientError::ObjectNotFound { .. } => "caller_object_not_found",
                ClientError::ModelNotAllowed { .. } => "caller_model_not_allowed",
                ClientError::Forbidden { .. } => "caller_forbidden",
                ClientError::RateLimited { .. } => "rate_limit_exceeded",
                ClientError::BudgetExceeded { .. } => "budget_exceeded",
                ClientError::Conflict { .. } => "caller_conflict",
            },
            GatewayError::Upstream(u) => match u {
                UpstreamFailure::Status(e) => e.kind.as_str(),
                UpstreamFailure::Connect { .. } => "provider_connect_failed",
                UpstreamFailure::Timeout { .. } => "provider_timeout",
                UpstreamFailure::Io { .. } => "provider_connection_failed",
                UpstreamFailure::InvalidResponse { .. } => "upstream_invalid_response",
                UpstreamFailure::ResponseTooLarge { .. } => "upstream_response_too_large",
                UpstreamFailure::StreamCut { .. } => "upstream_cut",
                UpstreamFailure::StreamStalled { .. } => "upstream_stalled",
                UpstreamFailure::CoolingDown { .. } => "provider_cooling_down",
                UpstreamFailure::Ejected { .. } => "provider_unavailable",
            },
            GatewayError::Internal(i) => match i {
                InternalError::Translate(_) => "gateway_translate",
                InternalError::ShuttingDown => "gateway_shutting_down",
                InternalError::Overloaded => "gateway_overloaded",
                InternalError::Unavailable(_) => "gateway_unavailable",
            },
        }
    }

    /// The HTTP status for the caller.
    pub fn status(&self) -> u16 {
        match self {
            GatewayError::Client(c) => match c {
                ClientError::InvalidRequest { .. }
                | ClientError::ForbiddenField { .. }
                | ClientError::WrongModelMode { .. } => 400,
                ClientError::UnknownModel { .. } | ClientError::NotFound => 404,
                ClientError::Unauthorized => 401,
                ClientError::BodyTooLarge { .. } => 413,
                ClientError::UnsupportedMediaType => 415,
                ClientError::MethodNotAllowed => 405,
                ClientError::NoRoute { .. } => 422,
                ClientError::ObjectNotFound { .. } => 404,
                ClientError::ModelNotAllowed { .. } | ClientError::Forbidden { .. } => 403,
                ClientError::Conflict { .. } => 409,
                ClientError::RateLimited { .. } => 429,
                ClientError::BudgetExceeded { .. } => 402,
            },
            GatewayError::Upstream(u) => match u {
                UpstreamFailure::Status(e) => match e.kind {
                    UpstreamErrorKind::BadRequest
                    | UpstreamErrorKind::ContextLength
                    | UpstreamErrorKind::ContentFilter => 400,
                    UpstreamErrorKind::TooLarge => 413,
                    UpstreamErrorKind::RateLimited | UpstreamErrorKind::QuotaExhausted => 429,
                    UpstreamErrorKind::Overloaded => 503,
                    // The operator's provider key or model id is wrong: not the caller's 401/404.
                    UpstreamErrorKind::Auth
                    | UpstreamErrorKind::NotFound
                    | UpstreamErrorKind::Server
                    | UpstreamErrorKind::Other => 502,
                },
                UpstreamFailure::Timeout { .. } | UpstreamFailure::StreamStalled { .. } => 504,
                UpstreamFailure::CoolingDown { .. } => 429,
                UpstreamFailure::Ejected { .. } => 503,
                UpstreamFailure::Connect { .. }
                | UpstreamFailure::Io { .. }
                | UpstreamFailure::InvalidResponse { .. }
                | UpstreamFailure::ResponseTooLarge { .. }
                | UpstreamFailure::StreamCut { .. } => 502,
            },
            GatewayError::Internal(i) => match i {
                InternalError::Translate(_) => 500,
                InternalError::ShuttingDown
                | InternalError::Overloaded
                | InternalError::Unavailable(_) => 503,
            },
        }
    }

    /// Whether the same request may succeed if retried (resilience layer).
    pub fn retryable(&self) -> bool {
        match self {
            GatewayError::Client(_) => false,
            GatewayError::Upstream(u) => match u {
                UpstreamFailure::Status(e) => e.kind.retryable(),
                UpstreamFailure::Connect { .. }
                | UpstreamFailure::Timeout { .. }
                | UpstreamFailure::CoolingDown { .. }
                | UpstreamFailure::Ejected { .. } => true,
                UpstreamFailure::Io { .. }
                | UpstreamFailure::InvalidResponse { .. }
                | UpstreamFailure::ResponseTooLarge { .. }
                | UpstreamFailure::StreamCut { .. }
                | UpstreamFailure::StreamStalled { .. } => false,
            },
            GatewayError::Internal(i) => match i {
                InternalError::Overloaded | InternalError::Unavailable(_) => true,
                InternalError::Translate(_) | InternalError::ShuttingDown => false,
            },
        }
    }

    /// The OpenAI error `type`.
    pub fn openai_type(&self) -> &'static str {
        match self.status() {
            400 | 404 | 405 | 409 | 413 | 415 | 422 => "invalid_request_error",
            401 => "authentication_error",
            402 => "insufficient_quota",
            403 => "permission_error",
            429 => match self {
                GatewayError::Upstream(UpstreamFailure::Status(e))
                    if e.kind == UpstreamErrorKind::QuotaExhausted =>
                {
                    "insufficient_quota"
                }
                _ => "rate_limit_error",
            },
            _ => match self.origin() {
                Origin::Upstream => "upstream_error",
                Origin::Gateway | Origin::Client => "server_error",
            },
        }
    }

    /// The OpenAI error `code`: the provider's code when it is a well-known one, else our kind.
    pub fn code(&self) -> String {
        match self {
            GatewayError::Client(ClientError::UnknownModel { .. }) => "model_not_found".into(),
            GatewayError::Client(ClientError::Unauthorized) => "invalid_api_key".into(),
            GatewayError::Upstream(UpstreamFailure::Status(e)) => match e.kind {
                UpstreamErrorKind::ContextLength => "context_length_exceeded".into(),
                UpstreamErrorKind::QuotaExhausted => "insufficient_quota".into(),
                UpstreamErrorKind::RateLimited => "rate_limit_exceeded".into(),
                _ => self.kind().into(),
            },
            _ => self.kind().into(),
        }
    }

    pub fn param(&self) -> Option<&str> {
        match self {
            GatewayError::Client(ClientError::InvalidRequest { param, .. }) => param.as_deref(),
            GatewayError::Client(ClientError::ForbiddenField { field }) => Some(field),
            GatewayError::Client(ClientError::UnknownModel { .. }) => Some("model"),
            _ => None,
        }
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            GatewayError::Client(ClientError::RateLimited { retry_after, .. }) => *retry_after,
            GatewayError::Upstream(UpstreamFailure::Status(e)) => e.retry_after,
            GatewayError::Upstream(
                UpstreamFailure::CoolingDown { retry_after, .. }
                | UpstreamFailure::Ejected { retry_after, .. },
            ) => Some(*retry_after),
            GatewayError::Internal(InternalError::Overloaded | InternalError::ShuttingDown) => {
                Some(Duration::from_secs(1))
            }
            _ => None,
        }
    }

    /// Map a transport failure for `provider`.
    pub fn from_send(provider: &str, e: SendError) -> Self {
        let provider = provider.to_owned();
        GatewayError::Upstream(match e {
            SendError::Connect => UpstreamFailure::Connect { provider },
            SendError::Timeout => UpstreamFailure::Timeout { provider },
            SendError::Io(_) => UpstreamFailure::Io { provider },
            SendError::Build(m) => return GatewayError::Internal(InternalError::Translate(m)),
        })
    }

    pub fn from_body(provider: &str, e: BodyError) -> Self {
        let provider = provider.to_owned();
        GatewayError::Upstream(match e {
            BodyError::TooLarge(_) => UpstreamFailure::ResponseTooLarge { provider },
            BodyError::Idle => UpstreamFailure::StreamStalled { provider },
            BodyError::Io(_) => UpstreamFailure::Io { provider },
        })
    }

    pub fn from_decode(provider: &str, e: DecodeError) -> Self {
        let provider = provider.to_owned();
        GatewayError::Upstream(match e {
            DecodeError::Invalid(detail) => UpstreamFailure::InvalidResponse { provider, detail },
            DecodeError::Truncated => UpstreamFailure::StreamCut { provider },
            DecodeError::StreamError(u) => UpstreamFailure::Status(u),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_kinds() {
        let e = GatewayError::Client(ClientError::UnknownModel {
            model: "x".into(),
            hint: None,
        });
        assert_eq!(
            (e.status(), e.kind(), e.code().as_str()),
            (404, "caller_unknown_model", "model_not_found")
        );
        let up = UpstreamError {
            status: 429,
            kind: UpstreamErrorKind::QuotaExhausted,
            message: "quota".into(),
            provider_code: None,
            retry_after: None,
        };
        let e = GatewayError::Upstream(UpstreamFailure::Status(up));
        assert_eq!(e.status(), 429);
        assert_eq!(e.openai_type(), "insufficient_quota");
        assert!(!e.retryable());
        let e = GatewayError::from_send("p", SendError::Timeout);
        assert_eq!((e.status(), e.kind()), (504, "provider_timeout"));
        let e = GatewayError::from_decode("p", DecodeError::Truncated);
        assert_eq!((e.status(), e.kind()), (502, "upstream_cut"));
    }

    #[test]
    fn messages_never_carry_detail_beyond_the_provider_name() {
        let e = GatewayError::from_send("openai", SendError::Io("tcp reset by 10.0.0.1".into()));
        assert_eq!(e.to_string(), "the connection to provider `openai` failed");
    }
}

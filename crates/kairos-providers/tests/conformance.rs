//! One conformance suite, run over every provider adapter.
//!
//! Each adapter configuration is a [`Spec`]: the adapter, where it is mounted on the mock upstream,
//! its key and auth header, and capability flags for the ways it legitimately differs (no
//! embeddings, no `n`, no JSON mode, no terminal stream event, ...). [`conformance_suite!`]
//! instantiates every case of `conformance/cases.rs` for a spec, so an adapter cannot opt out of a
//! case: a difference is a flag the case asserts on, and a known bug is an `#[ignore]` with its
//! reason, written next to the adapter below.
//!
//! Every test starts its own `kairos_testkit::MockServer` on port 0 with the adapter's key
//! required, sends through the real `HttpClient`, and compares what the adapter decoded with the
//! mock's own ledger and request log (the mock does not use our types: an independent oracle).
//!
//! Run: `cargo test -p kairos-providers --test conformance`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "conformance/cases.rs"]
mod cases;
#[path = "conformance/harness.rs"]
mod harness;

use std::sync::Arc;

use harness::{Caps, Embeddings, JsonMode, MockKey, NChoices, Spec};
use kairos_providers::adapter::UpstreamErrorKind;
use kairos_providers::anthropic::AnthropicAdapter;
use kairos_providers::gemini::GeminiAdapter;
use kairos_providers::openai::{AuthStyle, OpenAiAdapter, PathStyle};

/// Instantiates every conformance case for one adapter.
///
/// ```text
/// conformance_suite! {
///     mod name = spec_expression;
///     case_name: #[ignore = "bug: why"],   // optional, one per case, in the order below
/// }
/// ```
///
/// The optional per-case attribute exists for known bugs only: a legitimate difference between
/// adapters belongs in the spec's `Caps`. The cases must be listed in the order of the pattern.
macro_rules! conformance_suite {
    (
        mod $module:ident = $spec:expr;
        $(text_non_stream: #[$text_non_stream:meta],)?
        $(text_stream: #[$text_stream:meta],)?
        $(stream_and_non_stream_bill_the_same: #[$parity:meta],)?
        $(stream_flag_follows_argument: #[$stream_flag:meta],)?
        $(tool_call_non_stream: #[$tool_call_non_stream:meta],)?
        $(tool_call_stream: #[$tool_call_stream:meta],)?
        $(cut_stream_mid_text: #[$cut_stream_mid_text:meta],)?
        $(cut_stream_before_finish: #[$cut_stream_before_finish:meta],)?
        $(malformed_stream_line: #[$malformed_stream_line:meta],)?
        $(malformed_body: #[$malformed_body:meta],)?
        $(in_stream_error_event: #[$in_stream_error_event:meta],)?
        $(error_400: #[$error_400:meta],)?
        $(error_401: #[$error_401:meta],)?
        $(error_404: #[$error_404:meta],)?
        $(error_429_retry_after: #[$error_429:meta],)?
        $(error_500: #[$error_500:meta],)?
        $(error_503: #[$error_503:meta],)?
        $(error_529: #[$error_529:meta],)?
        $(error_message_never_contains_key: #[$error_message:meta],)?
        $(wrong_key_is_auth_error: #[$wrong_key:meta],)?
        $(usage_absent_non_stream: #[$usage_absent_non_stream:meta],)?
        $(usage_absent_stream: #[$usage_absent_stream:meta],)?
        $(usage_zero_non_stream: #[$usage_zero_non_stream:meta],)?
        $(usage_zero_stream: #[$usage_zero_stream:meta],)?
        $(split_utf8_stream: #[$split_utf8_stream:meta],)?
        $(key_only_in_auth_header: #[$key_only:meta],)?
        $(json_mode: #[$json_mode:meta],)?
        $(n_two_non_stream: #[$n_two_non_stream:meta],)?
        $(n_two_stream: #[$n_two_stream:meta],)?
        $(embeddings_float_and_base64: #[$embeddings:meta],)?
    ) => {
        mod $module {
            use super::*;

            fn spec() -> Spec {
                $spec
            }

            conformance_suite!(@case text_non_stream $(#[$text_non_stream])?);
            conformance_suite!(@case text_stream $(#[$text_stream])?);
            conformance_suite!(@case stream_and_non_stream_bill_the_same $(#[$parity])?);
            conformance_suite!(@case stream_flag_follows_argument $(#[$stream_flag])?);
            conformance_suite!(@case tool_call_non_stream $(#[$tool_call_non_stream])?);
            conformance_suite!(@case tool_call_stream $(#[$tool_call_stream])?);
            conformance_suite!(@case cut_stream_mid_text $(#[$cut_stream_mid_text])?);
            conformance_suite!(@case cut_stream_before_finish $(#[$cut_stream_before_finish])?);
            conformance_suite!(@case malformed_stream_line $(#[$malformed_stream_line])?);
            conformance_suite!(@case malformed_body $(#[$malformed_body])?);
            conformance_suite!(@case in_stream_error_event $(#[$in_stream_error_event])?);
            conformance_suite!(@case error_400 $(#[$error_400])?);
            conformance_suite!(@case error_401 $(#[$error_401])?);
            conformance_suite!(@case error_404 $(#[$error_404])?);
            conformance_suite!(@case error_429_retry_after $(#[$error_429])?);
            conformance_suite!(@case error_500 $(#[$error_500])?);
            conformance_suite!(@case error_503 $(#[$error_503])?);
            conformance_suite!(@case error_529 $(#[$error_529])?);
            conformance_suite!(@case error_message_never_contains_key $(#[$error_message])?);
            conformance_suite!(@case wrong_key_is_auth_error $(#[$wrong_key])?);
            conformance_suite!(@case usage_absent_non_stream $(#[$usage_absent_non_stream])?);
            conformance_suite!(@case usage_absent_stream $(#[$usage_absent_stream])?);
            conformance_suite!(@case usage_zero_non_stream $(#[$usage_zero_non_stream])?);
            conformance_suite!(@case usage_zero_stream $(#[$usage_zero_stream])?);
            conformance_suite!(@case split_utf8_stream $(#[$split_utf8_stream])?);
            conformance_suite!(@case key_only_in_auth_header $(#[$key_only])?);
            conformance_suite!(@case json_mode $(#[$json_mode])?);
            conformance_suite!(@case n_two_non_stream $(#[$n_two_non_stream])?);
            conformance_suite!(@case n_two_stream $(#[$n_two_stream])?);
            conformance_suite!(@case embeddings_float_and_base64 $(#[$embeddings])?);
        }
    };
    (@case $case:ident $(#[$meta:meta])?) => {
        #[tokio::test]
        $(#[$meta])?
        async fn $case() {
            crate::cases::$case(&spec()).await;
        }
    };
}

fn openai_compatible() -> Spec {
    Spec {
        adapter: Arc::new(OpenAiAdapter::default()),
        base_path: "/v1",
        model: "gpt-4o-mini",
        key: "sk-conformance-openai-0123456789abcdef",
        mock_key: MockKey::OpenAi,
        auth_header: "authorization",
        auth_prefix: "Bearer ",
        caps: Caps {
            explicit_stream_end: true,
            tool_args_streamed_in_pieces: true,
            stream_error_kind: UpstreamErrorKind::Server,
            json_mode: JsonMode::Native,
            n_choices: NChoices::Supported {
                request_pointer: "/n",
            },
            embeddings: Embeddings::Supported {
                reports_usage: true,
            },
        },
    }
}

fn azure() -> Spec {
    Spec {
        adapter: Arc::new(OpenAiAdapter {
            auth: AuthStyle::ApiKeyHeader,
            paths: PathStyle::AzureDeployment {
                api_version: "2024-10-21".to_owned(),
            },
            ..OpenAiAdapter::default()
        }),
        base_path: "",
        model: "prod-gpt-4o-deployment",
        key: "0a1b2c3d4e5f60718293a4b5c6d7e8f9",
        mock_key: MockKey::OpenAi,
        auth_header: "api-key",
        auth_prefix: "",
        caps: Caps {
            explicit_stream_end: true,
            tool_args_streamed_in_pieces: true,
            stream_error_kind: UpstreamErrorKind::Server,
            json_mode: JsonMode::Native,
            n_choices: NChoices::Supported {
                request_pointer: "/n",
            },
            embeddings: Embeddings::Supported {
                reports_usage: true,
            },
        },
    }
}

fn anthropic() -> Spec {
    Spec {
        adapter: Arc::new(AnthropicAdapter),
        base_path: "",
        model: "claude-sonnet-4-5",
        key: "sk-ant-api03-conformance-0123456789abcdef",
        mock_key: MockKey::Anthropic,
        auth_header: "x-api-key",
        auth_prefix: "",
        caps: Caps {
            explicit_stream_end: true,
            tool_args_streamed_in_pieces: true,
            // The mock's default Anthropic stream error is `overloaded_error`.
            stream_error_kind: UpstreamErrorKind::Overloaded,
            // Anthropic has no JSON mode: the adapter asks for JSON in the system prompt.
            json_mode: JsonMode::SystemInstruction { pointer: "/system" },
            n_choices: NChoices::Rejected,
            embeddings: Embeddings::Unsupported,
        },
    }
}

fn gemini() -> Spec {
    Spec {
        adapter: Arc::new(GeminiAdapter::default()),
        base_path: "",
        model: "gemini-2.5-flash",
        key: "AIzaSyConformance0123456789abcdefghijk",
        mock_key: MockKey::Gemini,
        auth_header: "x-goog-api-key",
        auth_prefix: "",
        caps: Caps {
            // No `[DONE]`: a Gemini stream is complete when every candidate has finished.
            explicit_stream_end: false,
            // Gemini streams a function call whole, in one event.
            tool_args_streamed_in_pieces: false,
            stream_error_kind: UpstreamErrorKind::Server,
            json_mode: JsonMode::Native,
            n_choices: NChoices::Supported {
                request_pointer: "/generationConfig/candidateCount",
            },
            // batchEmbedContents reports no usage: the adapter says 0, the gateway estimates.
            embeddings: Embeddings::Supported {
                reports_usage: false,
            },
        },
    }
}

conformance_suite! {
    mod openai = openai_compatible();
}

conformance_suite! {
    mod azure_openai = azure();
}

conformance_suite! {
    mod anthropic_messages = anthropic();
}

conformance_suite! {
    mod gemini_generate = gemini();
}

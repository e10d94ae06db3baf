//! `POST /v1/messages`: Anthropic-shaped callers, to any provider.
//!
//! The request is translated to the canonical shape for routing. When the chosen model is
//! served by an Anthropic upstream, the caller's own request goes there natively (re-serialised
//! with the upstream model id, everything else untouched: `cache_control`, thinking, server tools)
//! and the answer comes back byte for byte; otherwise the canonical request is dispatched like a
//! chat request and the server encodes the canonical answer in the Anthropic shape.

use std::sync::Arc;

use bytes::Bytes;
use kairos_api::anthropic::MessagesRequest;
use kairos_providers::adapter::ApiKind;
use kairos_providers::anthropic::{
    AnthropicAdapter, messages_to_chat, messages_to_chat_for_routing, native_response_usage,
};
use kairos_providers::client::read_body;

use crate::dispatch::AttemptLimits;
use crate::error::GatewayError;
use crate::gateway::{Gateway, Resolved};
use crate::pipeline::{ChatReply, ReplyMeta};
use crate::record::{PromptSource, Recorder, Tokens};
use crate::routing::RouteOptions;
use crate::strategy::Node;
use crate::stream::{EventReader, NativeStream};

pub enum MessagesReply {
    /// A canonical reply (non-Anthropic upstream): encode it in the Anthropic shape.
    Translated(ChatReply),
    /// The Anthropic upstream's own response body, with its cost known.
    NativeComplete(Bytes, ReplyMeta),
    NativeStream(Box<NativeStream>, ReplyMeta),
}

fn validate(req: &MessagesRequest) -> Result<(), GatewayError> {
    if req.model.is_empty() || req.model.len() > 256 {
        return Err(GatewayError::invalid("`model` is required", Some("model")));
    }
    if req.messages.is_empty() {
        return Err(GatewayError::invalid(
            "`messages` must contain at least one message",
            Some("messages"),
        ));
    }
    if req.messages.len() > crate::pipeline::MAX_MESSAGES {
        return Err(GatewayError::invalid("too many messages", Some("messages")));
    }
    if req.max_tokens == 0 || req.max_tokens > crate::pipeline::MAX_OUTPUT_TOKENS {
        return Err(GatewayError::invalid(
            "`max_tokens` must be at least 1",
            Some("max_tokens"),
        ));
    }
    if req
        .tools
        .as_ref()
        .is_some_and(|t| t.len() > crate::pipeline::MAX_TOOLS)
    {
        return Err(GatewayError::invalid("too many tools", Some("tools")));
    }
    for (name, v, hi) in [
        ("temperature", req.temperature, 1.0),
        ("top_p", req.top_p, 1.0),
    ] {
        if let Some(x) = v
            && !(x.is_finite() && (0.0..=hi).contains(&x))
        {
            return Err(GatewayError::invalid(
                format!("`{name}` must be between 0 and {hi}"),
                Some(name),
            ));
        }
    }
    crate::pipeline::check_extra(&req.extra)?;
    Ok(())
}

impl Gateway {
    /// Stages 3-9 for an Anthropic-shaped request. `beta` is the caller's `anthropic-beta`
    /// header, forwarded to Anthropic upstreams only.
    pub async fn messages(
        &self,
        mut rec: Recorder,
        mut req: MessagesRequest,
        beta: Option<String>,
        opts: RouteOptions,
    ) -> Result<MessagesReply, GatewayError> {
        rec.set_requested(&req.model, req.is_stream());
        rec.set_signals(self.signals.clone());
        if let Some(u) = req.metadata.as_ref().and_then(|m| m.user_id.clone()) {
            rec.set_end_user(Some(u));
        }
        // Gateway options never travel upstream.
        let kairos = req.extra.remove("kairos");
        let routing_view = Arc::new({
            let mut ir = messages_to_chat_for_routing(&req);
            ir.kairos = kairos;
            ir
        });
        let deadline = self.deadline(opts.timeout);
        let prepared = async {
            validate(&req)?;
            let plan = self.resolve_or_route(&mut rec, &routing_view, opts)?;
            self.admit_spend(
                &mut rec,
                &plan,
                || serde_json::to_vec(&req.messages).map_or(0, |v| v.len()),
                Some(req.max_tokens),
            )
            .await?;
            Ok(plan)
        }
        .await;
        let plan = match prepared {
            Ok(p) => p,
            Err(e) => {
                rec.finish_err(&e);
                return Err(e);
            }
        };
        // A single Anthropic target is called natively (full fidelity). Plans with several
        // targets go through the canonical form, so that any target can take over.
        if let Node::Leaf(leaf) = plan.as_ref()
            && leaf.resolved.provider.api() == ApiKind::Anthropic
        {
            let r = &leaf.resolved;
            rec.set_prompt(PromptSource::Chat(routing_view));
            let limits = AttemptLimits {
                ttfb: r.provider.ttfb_timeout,
                idle: r.provider.stream_idle_timeout,
                deadline,
                hold_for_content: false,
            };
            return match self
                .native(&mut rec, &req, r, beta.as_deref(), limits)
                .await
            {
                Ok(MessagesReply::NativeStream(mut s, meta)) => {
                    s.rec = Some(rec);
                    Ok(MessagesReply::NativeStream(s, meta))
                }
                Ok(other) => {
                    rec.finish_ok(200);
                    Ok(other)
                }
                Err(e) => {
                    rec.finish_err(&e);
                    Err(e)
                }
            };
        }
        let ir = match messages_to_chat(&req) {
            Ok(ir) => ir,
            Err(e) => {
                let e = GatewayError::invalid(e.message, e.param.as_deref());
                rec.finish_err(&e);
                return Err(e);
            }
        };
        let result = self.chat_resolved(&mut rec, ir, plan, deadline).await;
        Self::settle(rec, result).map(MessagesReply::Translated)
    }

    async fn native(
        &self,
        rec: &mut Recorder,
        req: &MessagesRequest,
        r: &Resolved,
        beta: Option<&str>,
        limits: AttemptLimits,
    ) -> Result<MessagesReply, GatewayError> {
        let key = crate::pipeline::override_key(rec, r);
        let t = crate::pipeline::target(r, &key);
        let up = AnthropicAdapter
            .native_request(req, &t, beta)
            .map_err(|e| GatewayError::invalid(e.message, e.param.as_deref()))?;
        let started = std::time::Instant::now();
        let target_name = format!("{}/{}", r.provider.name, r.entry.id);
        let body = match self.send_attempt(rec, r, up, &limits).await {
            Ok(b) => b,
            Err(e) => {
                rec.add_attempt(crate::record::AttemptRecord::failed(
                    &target_name,
                    &e,
                    started.elapsed(),
                    false,
                ));
                return Err(e);
            }
        };
        rec.add_attempt(crate::record::AttemptRecord::ok(
            &target_name,
            started.elapsed(),
        ));
        let mut meta = Gateway::meta(rec, r, Vec::new());
        meta.attempts = rec.attempts_made();
        if req.is_stream() {
            let reader = EventReader::new(
                body,
                &r.provider.name,
                limits.idle,
                limits.deadline.into_std(),
                self.limits.max_response_bytes,
            );
            let mut s = NativeStream::new(reader);
            s.prime(rec).await?;
            return Ok(MessagesReply::NativeStream(Box::new(s), meta));
        }
        let body = read_body(body, self.limits.max_response_bytes, limits.ttfb)
            .await
            .map_err(|e| GatewayError::from_body(&r.provider.name, e))?;
        rec.upstream_end();
        let msg = native_response_usage(&body)
            .map_err(|e| GatewayError::from_decode(&r.provider.name, e))?;
        let ir = kairos_providers::anthropic::message_to_chat(&msg);
        for c in &ir.choices {
            if let Some(text) = &c.message.content {
                rec.add_output_text(text);
            }
        }
        rec.observe_completion(&ir);
        if let Some(u) = &ir.usage {
            rec.set_usage(Tokens::from_usage(u));
            meta.cost_micros = rec.provider_cost_micros();
        }
        Ok(MessagesReply::NativeComplete(body, meta))
    }
}

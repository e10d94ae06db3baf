//! Wire types of the APIs KairosRoute speaks (OpenAI, Anthropic, Gemini), the SSE codec and the
//! error bodies. serde only, no IO.

pub mod anthropic;
pub mod error;
pub mod gemini;
pub mod openai;
pub mod sse;

//! Upstream provider adapters behind one trait ([`adapter::Adapter`]), and the shared HTTP client
//! that executes their requests.

pub mod adapter;
pub mod anthropic;
pub mod client;
pub mod gemini;
pub mod openai;

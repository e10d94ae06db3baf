//! The gateway core: configuration, the model catalog and cost, the error model, and the request
//! pipeline. No axum, no SQL: the server crate does HTTP, the store crate does storage.

pub mod catalog;
pub mod config;
pub mod dispatch;
pub mod env;
pub mod error;
pub mod gateway;
pub mod health;
pub mod learning;
pub mod messages;
pub mod metrics;
pub mod pipeline;
pub mod record;
pub mod retry;
pub mod routing;
pub mod signals;
pub mod spend;
pub mod strategy;
pub mod stream;
pub mod tenancy;
pub mod tokens;

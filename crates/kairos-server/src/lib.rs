//! The `kairos` binary's library half: HTTP transport, handlers, startup. The binary
//! (`main.rs`) is only the CLI on top.

pub mod admin;
pub mod admin_cli;
pub mod anthropic;
pub mod eval_cmd;
pub mod feedback;
pub mod http;
pub mod metrics;
pub mod routes;
pub mod serve;
pub mod startup;

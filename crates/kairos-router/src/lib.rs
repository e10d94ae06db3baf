//! `model="auto"`: classify the request's task, estimate each candidate model's quality for that
//! task, and pick the cheapest candidate that clears the quality bar, keeping every step as a
//! receipt. Everything here is free of IO and clocks: the funnel is a pure function of its inputs,
//! so routing is unit- and property-testable and `POST /v1/route` can run it without a model; the
//! learner ([`learn`]) keeps per-workspace outcomes in memory, fed by the gateway, and takes its
//! randomness (exploration) from the caller's generator.

pub mod classifier;
pub mod embed;
pub mod eval;
pub mod funnel;
pub mod learn;
pub mod quality;
pub mod receipt;
pub mod task;

pub use task::TaskType;

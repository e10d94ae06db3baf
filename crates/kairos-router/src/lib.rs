//! `model="auto"`: classify the request's task, estimate each candidate model's quality for that
//! task, and pick the cheapest candidate that clears the quality bar, keeping every step as a
//! receipt. Everything here is a pure function of its inputs (no IO, no clock, no randomness),
//! so routing is unit- and property-testable and `POST /v1/route` can run it without a model.

pub mod classifier;
pub mod eval;
pub mod funnel;
pub mod quality;
pub mod receipt;
pub mod task;

pub use task::TaskType;

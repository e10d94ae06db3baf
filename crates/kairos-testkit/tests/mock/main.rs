//! Integration tests: the mock on port 0, driven by a plain HTTP client.
//!
//! The modules are marked `cfg(test)` so that clippy treats their helpers as test code
//! (unwrap allowed, as in unit tests).

#[cfg(test)]
mod anthropic;
#[cfg(test)]
mod common;
#[cfg(test)]
mod control;
#[cfg(test)]
mod faults;
#[cfg(test)]
mod gemini;
#[cfg(test)]
mod openai;

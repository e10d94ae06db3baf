//! kairos-core
pub mod catalog;

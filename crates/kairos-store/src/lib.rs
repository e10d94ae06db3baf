//! kairos-store

//! kairos-server

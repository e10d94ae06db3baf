//! kairos-testkit

//! The store's error type.

/// Errors from [`crate::Store`]. Display strings never contain the database URL.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL or an option is not acceptable (unknown scheme, bad schema name, ...).
    #[error("invalid store configuration: {0}")]
    Config(String),
    /// The database returned an error or could not be reached.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Applying the migrations failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A unique value (workspace name, key hash) is taken.
    #[error("conflict: {0}")]
    Conflict(String),
    /// A filesystem operation failed (creating the SQLite directory, the spool).
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

impl StoreError {
    /// A stable name for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            StoreError::Config(_) => "store_config",
            StoreError::Database(_) => "store_database",
            StoreError::Migrate(_) => "store_migrate",
            StoreError::Io(_) => "store_io",
            StoreError::Conflict(_) => "store_conflict",
        }
    }

    /// Whether trying the same operation again later may succeed.
    pub fn retryable(&self) -> bool {
        match self {
            StoreError::Config(_) | StoreError::Migrate(_) | StoreError::Conflict(_) => false,
            StoreError::Database(_) | StoreError::Io(_) => true,
        }
    }
}

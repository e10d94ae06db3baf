//! Every `KAIROS_*` environment variable the gateway reads, in one place.
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `KAIROS_LISTEN` | address of the API listener | `127.0.0.1:8080` |
//! | `KAIROS_DATA_DIR` | where the SQLite file, the generated master key and the ledger spool live | `./.kairos` |
//! | `KAIROS_DATABASE_URL` | `postgres://...` to use PostgreSQL instead of SQLite | SQLite in the data dir |
//! | `KAIROS_MASTER_KEY` | the bearer key callers must send | generated at first start, stored in the data dir |
//! | `KAIROS_ADMIN_LISTEN` | address of the admin API listener (`off` disables it) | `127.0.0.1:8091` |
//! | `KAIROS_REDIS_URL` | `redis://...` shared by replicas for rate limits and budget counters | none: in-process |
//! | `KAIROS_REDIS_TIMEOUT_MS` | longest wait for one Redis decision | `50` |
//! | `KAIROS_SECRET_KEY` | vault keyring for provider credentials: `kid:base64key[,kid:base64key...]` (first encrypts) | unset: credentials cannot be stored |
//! | `KAIROS_LOG` | log level or `EnvFilter` directive | `info` |
//! | `KAIROS_LOG_FORMAT` | `text` or `json` | `text` |
//! | `KAIROS_MULTI_THREAD` | set: always use tokio's multi-thread scheduler, also on one CPU | unset: current-thread scheduler when the process has one CPU |
//!
//! Provider variables (`OPENAI_API_KEY`, ...) are listed in [`crate::config::ProviderKind::env_vars`].
//! Environment overrides win over the config file.

use std::collections::HashMap;

/// `KAIROS_MULTI_THREAD` is set (read before the runtime, hence before the config).
pub fn multi_thread_forced() -> bool {
    std::env::var_os("KAIROS_MULTI_THREAD").is_some()
}

/// Where environment variables come from (the process, or a map in tests).
pub trait EnvSource {
    fn get(&self, name: &str) -> Option<String>;
}

/// The real process environment.
pub struct ProcessEnv;

impl EnvSource for ProcessEnv {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

/// A fixed set of variables (tests, `config check` with a clean slate).
#[derive(Debug, Default, Clone)]
pub struct MapEnv(pub HashMap<String, String>);

impl<const N: usize> From<[(&str, &str); N]> for MapEnv {
    fn from(v: [(&str, &str); N]) -> Self {
        MapEnv(
            v.into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        )
    }
}

impl EnvSource for MapEnv {
    fn get(&self, name: &str) -> Option<String> {
        self.0.get(name).cloned()
    }
}

/// The `KAIROS_*` overrides that are set.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub listen: Option<String>,
    pub admin_listen: Option<String>,
    pub redis_url: Option<String>,
    pub redis_timeout_ms: Option<String>,
    pub data_dir: Option<String>,
    pub database_url: Option<String>,
    pub master_key: Option<String>,
    pub secret_key: Option<String>,
    pub log: Option<String>,
    pub log_format: Option<String>,
    /// `[routing.learning] explore`.
    pub explore: Option<String>,
}

impl Overrides {
    pub fn read(env: &dyn EnvSource) -> Overrides {
        let get = |n: &str| env.get(n).filter(|v| !v.is_empty());
        Overrides {
            listen: get("KAIROS_LISTEN"),
            admin_listen: get("KAIROS_ADMIN_LISTEN"),
            redis_url: get("KAIROS_REDIS_URL"),
            redis_timeout_ms: get("KAIROS_REDIS_TIMEOUT_MS"),
            data_dir: get("KAIROS_DATA_DIR"),
            database_url: get("KAIROS_DATABASE_URL"),
            master_key: get("KAIROS_MASTER_KEY"),
            secret_key: get("KAIROS_SECRET_KEY"),
            log: get("KAIROS_LOG"),
            log_format: get("KAIROS_LOG_FORMAT"),
            explore: get("KAIROS_EXPLORE"),
        }
    }
}

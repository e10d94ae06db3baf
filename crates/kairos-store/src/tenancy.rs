//! Workspaces, virtual keys, provider credentials and the admin audit log.
//!
//! Plain records: the gateway validates settings (JSON objects) and never hands this crate a
//! secret in clear (keys arrive as SHA-256 hashes, credentials as sealed vault blobs). Every
//! change is written in one transaction together with its [`AuditEntry`].

use serde::{Deserialize, Serialize};

use crate::error::StoreError;
use crate::store::{Backend, Store};

/// A workspace row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkspaceRecord {
    pub id: String,
    pub name: String,
    /// JSON object.
    pub settings: String,
    pub created_ms: i64,
    pub updated_ms: i64,
    pub deleted_ms: Option<i64>,
}

/// A virtual key row. The key itself is never stored: only its hash and a short prefix.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyRecord {
    pub id: String,
    pub workspace_id: String,
    pub name: String,
    /// Lowercase hex SHA-256 of the key.
    pub key_hash: String,
    pub key_prefix: String,
    /// `member` or `admin`.
    pub role: String,
    /// JSON object.
    pub settings: String,
    pub expires_ms: Option<i64>,
    pub revoked_ms: Option<i64>,
    pub created_ms: i64,
    pub updated_ms: i64,
}

/// A provider credential of a workspace: a sealed vault blob, never the key in clear.
#[derive(Debug, Clone, PartialEq)]
pub struct CredentialRecord {
    pub workspace_id: String,
    pub provider: String,
    pub sealed: String,
    pub created_ms: i64,
    pub updated_ms: i64,
}

/// What a re-seal run does with one stored credential (decided by the caller, which holds the
/// keyring: this crate never sees a credential in clear).
#[derive(Debug, Clone, PartialEq)]
pub enum Reseal {
    /// Already sealed under the current key (and it opens): left as it is.
    Current,
    /// Replace the blob by `sealed` (the same secret under the current key), written together
    /// with `audit`.
    Replace {
        sealed: String,
        audit: Box<AuditEntry>,
    },
    /// No key of the keyring opens it: left untouched and reported.
    Failed,
}

/// The counts of one re-seal run ([`Store::reseal_credentials`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResealReport {
    /// Credentials re-sealed under the current key by this run.
    pub resealed: u64,
    /// Credentials that were already under the current key.
    pub current: u64,
    /// Credentials that could not be re-sealed, as `workspace_id/provider` (never their blob).
    pub failed: Vec<String>,
}

/// How often one credential is looked at again when it changed between reading and swapping.
const RESEAL_TRIES: usize = 3;

/// One admin action: who, what, when, and the object before and after (secrets removed by the
/// caller).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Assigned by the database; 0 when inserting.
    pub seq: i64,
    pub ts_ms: i64,
    pub actor: String,
    pub workspace_id: Option<String>,
    pub action: String,
    pub object_type: String,
    pub object_id: String,
    pub before_json: Option<String>,
    pub after_json: Option<String>,
}

/// Aggregated usage from the ledger.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct UsageSummary {
    pub requests: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    /// Provider cost plus markup, micro-USD.
    pub spend_micros: i64,
    pub markup_micros: i64,
}

/// What a usage or spend query covers.
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    Workspace(&'a str),
    Key(&'a str),
}

macro_rules! tenancy_sql {
    ($db:ty) => {
        use sqlx::{Pool, QueryBuilder, Row};

        use super::{AuditEntry, CredentialRecord, KeyRecord, Scope, UsageSummary, WorkspaceRecord};

        type DbRow = <$db as sqlx::Database>::Row;
        type Tx<'c> = sqlx::Transaction<'c, $db>;

        const WS_COLS: &str = "id, name, settings, created_ms, updated_ms, deleted_ms";
        const KEY_COLS: &str = "id, workspace_id, name, key_hash, key_prefix, role, settings, \
                                expires_ms, revoked_ms, created_ms, updated_ms";

        fn ws(row: &DbRow) -> Result<WorkspaceRecord, sqlx::Error> {
            Ok(WorkspaceRecord {
                id: row.try_get("id")?,
                name: row.try_get("name")?,
                settings: row.try_get("settings")?,
                created_ms: row.try_get("created_ms")?,
                updated_ms: row.try_get("updated_ms")?,
                deleted_ms: row.try_get("deleted_ms")?,
            })
        }

        fn key(row: &DbRow) -> Result<KeyRecord, sqlx::Error> {
            Ok(KeyRecord {
                id: row.try_get("id")?,
                workspace_id: row.try_get("workspace_id")?,
                name: row.try_get("name")?,
                key_hash: row.try_get("key_hash")?,
                key_prefix: row.try_get("key_prefix")?,
                role: row.try_get("role")?,
                settings: row.try_get("settings")?,
                expires_ms: row.try_get("expires_ms")?,
                revoked_ms: row.try_get("revoked_ms")?,
                created_ms: row.try_get("created_ms")?,
                updated_ms: row.try_get("updated_ms")?,
            })
        }

        async fn audit(tx: &mut Tx<'_>, a: &AuditEntry) -> Result<(), sqlx::Error> {
            let mut qb = QueryBuilder::<$db>::new(
                "INSERT INTO audit_log (ts_ms, actor, workspace_id, action, object_type, \
                 object_id, before_json, after_json) ",
            );
            qb.push_values(std::iter::once(a), |mut b, a| {
                b.push_bind(a.ts_ms)
                    .push_bind(a.actor.as_str())
                    .push_bind(a.workspace_id.as_deref())
                    .push_bind(a.action.as_str())
                    .push_bind(a.object_type.as_str())
                    .push_bind(a.object_id.as_str())
                    .push_bind(a.before_json.as_deref())
                    .push_bind(a.after_json.as_deref());
            });
            qb.build().execute(&mut **tx).await?;
            Ok(())
        }

        pub(crate) async fn upsert_workspace(
            pool: &Pool<$db>,
            w: &WorkspaceRecord,
            a: &AuditEntry,
        ) -> Result<(), sqlx::Error> {
            let mut tx = pool.begin().await?;
            let mut qb = QueryBuilder::<$db>::new(format!("INSERT INTO workspaces ({WS_COLS}) "));
            qb.push_values(std::iter::once(w), |mut b, w| {
                b.push_bind(w.id.as_str())
                    .push_bind(w.name.as_str())
                    .push_bind(w.settings.as_str())
                    .push_bind(w.created_ms)
                    .push_bind(w.updated_ms)
                    .push_bind(w.deleted_ms);
            });
            qb.push(
                " ON CONFLICT (id) DO UPDATE SET name = excluded.name, settings = \
                 excluded.settings, updated_ms = excluded.updated_ms, deleted_ms = \
                 excluded.deleted_ms",
            );
            qb.build().execute(&mut *tx).await?;
            audit(&mut tx, a).await?;
            tx.commit().await
        }

        pub(crate) async fn workspaces(
            pool: &Pool<$db>,
            changed_since_ms: Option<i64>,
        ) -> Result<Vec<WorkspaceRecord>, sqlx::Error> {
            let mut qb = QueryBuilder::<$db>::new(format!("SELECT {WS_COLS} FROM workspaces"));
            if let Some(t) = changed_since_ms {
                qb.push(" WHERE updated_ms >= ").push_bind(t);
            }
            qb.push(" ORDER BY id");
            qb.build().fetch_all(pool).await?.iter().map(ws).collect()
        }

        pub(crate) async fn workspace(
            pool: &Pool<$db>,
            id: &str,
        ) -> Result<Option<WorkspaceRecord>, sqlx::Error> {
            let mut qb =
                QueryBuilder::<$db>::new(format!("SELECT {WS_COLS} FROM workspaces WHERE id = "));
            qb.push_bind(id);
            qb.build().fetch_optional(pool).await?.as_ref().map(ws).transpose()
        }

        pub(crate) async fn upsert_key(
            pool: &Pool<$db>,
            k: &KeyRecord,
            a: &AuditEntry,
        ) -> Result<(), sqlx::Error> {
            let mut tx = pool.begin().await?;
            let mut qb = QueryBuilder::<$db>::new(format!("INSERT INTO virtual_keys ({KEY_COLS}) "));
            qb.push_values(std::iter::once(k), |mut b, k| {
                b.push_bind(k.id.as_str())
                    .push_bind(k.workspace_id.as_str())
                    .push_bind(k.name.as_str())
                    .push_bind(k.key_hash.as_str())
                    .push_bind(k.key_prefix.as_str())
                    .push_bind(k.role.as_str())
                    .push_bind(k.settings.as_str())
                    .push_bind(k.expires_ms)
                    .push_bind(k.revoked_ms)
                    .push_bind(k.created_ms)
                    .push_bind(k.updated_ms);
            });
            // The hash, prefix, workspace and creation time of a key never change.
            qb.push(
                " ON CONFLICT (id) DO UPDATE SET name = excluded.name, role = excluded.role, \
                 settings = excluded.settings, expires_ms = excluded.expires_ms, revoked_ms = \
                 excluded.revoked_ms, updated_ms = excluded.updated_ms",
            );
            qb.build().execute(&mut *tx).await?;
            audit(&mut tx, a).await?;
            tx.commit().await
        }

        pub(crate) async fn keys(
            pool: &Pool<$db>,
            workspace_id: Option<&str>,
            changed_since_ms: Option<i64>,
        ) -> Result<Vec<KeyRecord>, sqlx::Error> {
            let mut qb =
                QueryBuilder::<$db>::new(format!("SELECT {KEY_COLS} FROM virtual_keys WHERE 1 = 1"));
            if let Some(w) = workspace_id {
                qb.push(" AND workspace_id = ").push_bind(w);
            }
            if let Some(t) = changed_since_ms {
                qb.push(" AND updated_ms >= ").push_bind(t);
            }
            qb.push(" ORDER BY created_ms, id");
            qb.build().fetch_all(pool).await?.iter().map(key).collect()
        }

        pub(crate) async fn key_by(
            pool: &Pool<$db>,
            column: &'static str,
            value: &str,
        ) -> Result<Option<KeyRecord>, sqlx::Error> {
            let mut qb = QueryBuilder::<$db>::new(format!(
                "SELECT {KEY_COLS} FROM virtual_keys WHERE {column} = "
            ));
            qb.push_bind(value);
            qb.build().fetch_optional(pool).await?.as_ref().map(key).transpose()
        }

        pub(crate) async fn put_credential(
            pool: &Pool<$db>,
            c: &CredentialRecord,
            a: &AuditEntry,
        ) -> Result<(), sqlx::Error> {
            let mut tx = pool.begin().await?;
            let mut qb = QueryBuilder::<$db>::new(
                "INSERT INTO provider_credentials (workspace_id, provider, sealed, created_ms, \
                 updated_ms) ",
            );
            qb.push_values(std::iter::once(c), |mut b, c| {
                b.push_bind(c.workspace_id.as_str())
                    .push_bind(c.provider.as_str())
                    .push_bind(c.sealed.as_str())
                    .push_bind(c.created_ms)
                    .push_bind(c.updated_ms);
            });
            qb.push(
                " ON CONFLICT (workspace_id, provider) DO UPDATE SET sealed = excluded.sealed, \
                 updated_ms = excluded.updated_ms",
            );
            qb.build().execute(&mut *tx).await?;
            audit(&mut tx, a).await?;
            tx.commit().await
        }

        /// Replaces the blob of one credential only if it is still `expected` (compare and
        /// swap), with its audit entry, in one transaction. `false`: it changed or is gone.
        pub(crate) async fn swap_credential(
            pool: &Pool<$db>,
            workspace_id: &str,
            provider: &str,
            expected: &str,
            sealed: &str,
            a: &AuditEntry,
        ) -> Result<bool, sqlx::Error> {
            let mut tx = pool.begin().await?;
            let mut qb = QueryBuilder::<$db>::new("UPDATE provider_credentials SET sealed = ");
            qb.push_bind(sealed)
                .push(" WHERE workspace_id = ")
                .push_bind(workspace_id)
                .push(" AND provider = ")
                .push_bind(provider)
                .push(" AND sealed = ")
                .push_bind(expected);
            let n = qb.build().execute(&mut *tx).await?.rows_affected();
            if n == 0 {
                tx.rollback().await?;
                return Ok(false);
            }
            audit(&mut tx, a).await?;
            tx.commit().await?;
            Ok(true)
        }

        pub(crate) async fn append_audit(pool: &Pool<$db>, a: &AuditEntry) -> Result<(), sqlx::Error> {
            let mut tx = pool.begin().await?;
            audit(&mut tx, a).await?;
            tx.commit().await
        }

        pub(crate) async fn delete_credential(
            pool: &Pool<$db>,
            workspace_id: &str,
            provider: &str,
            a: &AuditEntry,
        ) -> Result<bool, sqlx::Error> {
            let mut tx = pool.begin().await?;
            let mut qb =
                QueryBuilder::<$db>::new("DELETE FROM provider_credentials WHERE workspace_id = ");
            qb.push_bind(workspace_id).push(" AND provider = ").push_bind(provider);
            let n = qb.build().execute(&mut *tx).await?.rows_affected();
            if n > 0 {
                audit(&mut tx, a).await?;
            }
            tx.commit().await?;
            Ok(n > 0)
        }

        pub(crate) async fn credentials(
            pool: &Pool<$db>,
            workspace_id: Option<&str>,
        ) -> Result<Vec<CredentialRecord>, sqlx::Error> {
            let mut qb = QueryBuilder::<$db>::new(
                "SELECT workspace_id, provider, sealed, created_ms, updated_ms FROM \
                 provider_credentials WHERE 1 = 1",
            );
            if let Some(w) = workspace_id {
                qb.push(" AND workspace_id = ").push_bind(w);
            }
            qb.push(" ORDER BY workspace_id, provider");
            let rows = qb.build().fetch_all(pool).await?;
            rows.iter()
                .map(|r| {
                    Ok(CredentialRecord {
                        workspace_id: r.try_get("workspace_id")?,
                        provider: r.try_get("provider")?,
                        sealed: r.try_get("sealed")?,
                        created_ms: r.try_get("created_ms")?,
                        updated_ms: r.try_get("updated_ms")?,
                    })
                })
                .collect()
        }

        pub(crate) async fn audit_log(
            pool: &Pool<$db>,
            workspace_id: Option<&str>,
            limit: i64,
        ) -> Result<Vec<AuditEntry>, sqlx::Error> {
            let mut qb = QueryBuilder::<$db>::new(
                "SELECT seq, ts_ms, actor, workspace_id, action, object_type, object_id, \
                 before_json, after_json FROM audit_log WHERE 1 = 1",
            );
            if let Some(w) = workspace_id {
                qb.push(" AND workspace_id = ").push_bind(w);
            }
            qb.push(" ORDER BY seq DESC LIMIT ").push_bind(limit);
            let rows = qb.build().fetch_all(pool).await?;
            rows.iter()
                .map(|r| {
                    Ok(AuditEntry {
                        seq: r.try_get("seq")?,
                        ts_ms: r.try_get("ts_ms")?,
                        actor: r.try_get("actor")?,
                        workspace_id: r.try_get("workspace_id")?,
                        action: r.try_get("action")?,
                        object_type: r.try_get("object_type")?,
                        object_id: r.try_get("object_id")?,
                        before_json: r.try_get("before_json")?,
                        after_json: r.try_get("after_json")?,
                    })
                })
                .collect()
        }

        pub(crate) async fn usage(
            pool: &Pool<$db>,
            scope: Scope<'_>,
            since_ms: i64,
            until_ms: Option<i64>,
        ) -> Result<UsageSummary, sqlx::Error> {
            let mut qb = QueryBuilder::<$db>::new(
                "SELECT COUNT(*) AS n, CAST(COALESCE(SUM(input_tokens), 0) AS BIGINT) AS inp, \
                 CAST(COALESCE(SUM(output_tokens), 0) AS BIGINT) AS outp, \
                 CAST(COALESCE(SUM(COALESCE(cost_micros, 0) + markup_micros), 0) AS BIGINT) AS spend, \
                 CAST(COALESCE(SUM(markup_micros), 0) AS BIGINT) AS markup \
                 FROM requests WHERE ",
            );
            match scope {
                Scope::Workspace(w) => qb.push("workspace = ").push_bind(w),
                Scope::Key(k) => qb.push("key_id = ").push_bind(k),
            };
            qb.push(" AND ts_ms >= ").push_bind(since_ms);
            if let Some(u) = until_ms {
                qb.push(" AND ts_ms < ").push_bind(u);
            }
            let r = qb.build().fetch_one(pool).await?;
            // SUM over BIGINT is NUMERIC in PostgreSQL, hence the casts above.
            let get = |name: &str| -> Result<i64, sqlx::Error> {
                r.try_get::<i64, _>(name)
            };
            Ok(UsageSummary {
                requests: get("n")?,
                input_tokens: get("inp")?,
                output_tokens: get("outp")?,
                spend_micros: get("spend")?,
                markup_micros: get("markup")?,
            })
        }
    };
}

mod sqlite_tenancy {
    tenancy_sql!(sqlx::Sqlite);
}

mod postgres_tenancy {
    tenancy_sql!(sqlx::Postgres);
}

macro_rules! both {
    ($self:ident, $f:ident ( $($arg:expr),* )) => {
        match &$self.backend {
            Backend::Sqlite(p) => sqlite_tenancy::$f(p, $($arg),*).await.map_err(StoreError::from),
            Backend::Postgres(p) => postgres_tenancy::$f(p, $($arg),*).await.map_err(StoreError::from),
        }
    };
}

impl Store {
    /// Creates or updates a workspace (by id), with its audit entry, in one transaction.
    /// A duplicate name is [`StoreError::Conflict`].
    pub async fn upsert_workspace(
        &self,
        w: &WorkspaceRecord,
        a: &AuditEntry,
    ) -> Result<(), StoreError> {
        both!(self, upsert_workspace(w, a)).map_err(conflict)
    }

    /// Every workspace (deleted ones included), or those changed at or after `since_ms`.
    pub async fn workspaces(
        &self,
        changed_since_ms: Option<i64>,
    ) -> Result<Vec<WorkspaceRecord>, StoreError> {
        both!(self, workspaces(changed_since_ms))
    }

    pub async fn workspace(&self, id: &str) -> Result<Option<WorkspaceRecord>, StoreError> {
        both!(self, workspace(id))
    }

    /// Creates or updates a key (by id), with its audit entry. A duplicate hash is
    /// [`StoreError::Conflict`].
    pub async fn upsert_key(&self, k: &KeyRecord, a: &AuditEntry) -> Result<(), StoreError> {
        both!(self, upsert_key(k, a)).map_err(conflict)
    }

    /// Keys of one workspace or all, optionally only those changed at or after `since_ms`.
    pub async fn keys(
        &self,
        workspace_id: Option<&str>,
        changed_since_ms: Option<i64>,
    ) -> Result<Vec<KeyRecord>, StoreError> {
        both!(self, keys(workspace_id, changed_since_ms))
    }

    pub async fn key(&self, id: &str) -> Result<Option<KeyRecord>, StoreError> {
        both!(self, key_by("id", id))
    }

    /// The key with this hash (lowercase hex SHA-256), revoked or not.
    pub async fn key_by_hash(&self, hash: &str) -> Result<Option<KeyRecord>, StoreError> {
        both!(self, key_by("key_hash", hash))
    }

    pub async fn put_credential(
        &self,
        c: &CredentialRecord,
        a: &AuditEntry,
    ) -> Result<(), StoreError> {
        both!(self, put_credential(c, a))
    }

    /// `false` when there was none.
    pub async fn delete_credential(
        &self,
        workspace_id: &str,
        provider: &str,
        a: &AuditEntry,
    ) -> Result<bool, StoreError> {
        both!(self, delete_credential(workspace_id, provider, a))
    }

    pub async fn credentials(
        &self,
        workspace_id: Option<&str>,
    ) -> Result<Vec<CredentialRecord>, StoreError> {
        both!(self, credentials(workspace_id))
    }

    /// One credential of a workspace, if stored.
    pub async fn credential(
        &self,
        workspace_id: &str,
        provider: &str,
    ) -> Result<Option<CredentialRecord>, StoreError> {
        Ok(self
            .credentials(Some(workspace_id))
            .await?
            .into_iter()
            .find(|c| c.provider == provider))
    }

    /// Replaces the sealed blob of a credential only if it is still `expected`, together with
    /// its audit entry, in one transaction. Returns `false` (and changes nothing) when the
    /// credential was replaced or deleted meanwhile. `created_ms` and `updated_ms` are kept:
    /// the secret is the same.
    pub async fn swap_credential(
        &self,
        workspace_id: &str,
        provider: &str,
        expected: &str,
        sealed: &str,
        a: &AuditEntry,
    ) -> Result<bool, StoreError> {
        both!(
            self,
            swap_credential(workspace_id, provider, expected, sealed, a)
        )
    }

    /// Re-seals every stored credential as `decide` says (the caller holds the keyring; see
    /// [`Reseal`]). Each replacement is its own transaction, a compare-and-swap on the blob
    /// that was read ([`Store::swap_credential`]): a credential replaced concurrently (say by
    /// `PUT .../credentials/{provider}`) is not overwritten but read and decided again, and
    /// one deleted meanwhile is skipped. Idempotent: a second run finds everything current.
    ///
    /// A database error ends the run with that error; what was swapped until then stays
    /// swapped, and running again finishes the job.
    pub async fn reseal_credentials(
        &self,
        mut decide: impl FnMut(&CredentialRecord) -> Reseal,
    ) -> Result<ResealReport, StoreError> {
        let mut report = ResealReport::default();
        for first in self.credentials(None).await? {
            let id = format!("{}/{}", first.workspace_id, first.provider);
            let mut c = first;
            let mut tries = 0;
            loop {
                match decide(&c) {
                    Reseal::Current => report.current += 1,
                    Reseal::Failed => report.failed.push(id),
                    Reseal::Replace { sealed, audit } => {
                        if self
                            .swap_credential(
                                &c.workspace_id,
                                &c.provider,
                                &c.sealed,
                                &sealed,
                                &audit,
                            )
                            .await?
                        {
                            report.resealed += 1;
                        } else {
                            tries += 1;
                            match self.credential(&c.workspace_id, &c.provider).await? {
                                // Deleted meanwhile: nothing left to re-seal.
                                None => {}
                                Some(now) if tries < RESEAL_TRIES => {
                                    c = now;
                                    continue;
                                }
                                Some(_) => {
                                    tracing::warn!(
                                        credential = %id,
                                        "a credential kept changing during the re-seal; run it again"
                                    );
                                    report.failed.push(id);
                                }
                            }
                        }
                    }
                }
                break;
            }
        }
        Ok(report)
    }

    /// Appends one audit entry on its own (an action that changed no single object, such as
    /// the summary of a re-seal run).
    pub async fn append_audit(&self, a: &AuditEntry) -> Result<(), StoreError> {
        both!(self, append_audit(a))
    }

    /// Newest first, at most `limit` (capped at 1000).
    pub async fn audit_log(
        &self,
        workspace_id: Option<&str>,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        both!(self, audit_log(workspace_id, i64::from(limit.min(1000))))
    }

    /// Requests, tokens and spend (cost + markup) of a workspace or key from `since_ms`.
    pub async fn usage(
        &self,
        scope: Scope<'_>,
        since_ms: i64,
        until_ms: Option<i64>,
    ) -> Result<UsageSummary, StoreError> {
        both!(self, usage(scope, since_ms, until_ms))
    }
}

/// Unique-constraint violations become [`StoreError::Conflict`].
fn conflict(e: StoreError) -> StoreError {
    if let StoreError::Database(sqlx::Error::Database(d)) = &e
        && d.is_unique_violation()
    {
        return StoreError::Conflict(d.message().to_owned());
    }
    e
}

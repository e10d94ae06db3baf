//! Workspaces and virtual keys as the request path sees them: settings, the access a key
//! grants, and [`KeyCache`], the in-memory table that authenticates without a database round
//! trip.
//!
//! Every replica keeps the whole key table in memory, indexed by the SHA-256 of the key. It is
//! refreshed from the store every `refresh` (default 1 s) with the rows changed since the last
//! refresh minus an overlap window (rows committed late or by a replica with a skewed clock are
//! picked up by the next passes), so a revocation reaches every replica within about a second
//! and always within [`REVOCATION_BOUND`]. A key the table does not know yet (created a moment
//! ago on another replica) is looked up once in the store; misses are remembered for a short
//! time so that a flood of invalid keys cannot turn into a flood of queries.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use kairos_store::{AuditEntry, KeyRecord, Reseal, ResealReport, Store, WorkspaceRecord};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Upper bound on how long a revoked key keeps working on any replica (checked by tests).
pub const REVOCATION_BOUND: Duration = Duration::from_secs(5);
/// Re-read window behind the newest change seen.
const OVERLAP_MS: i64 = 10_000;
/// How long an unknown key hash is remembered as unknown.
const NEGATIVE_TTL: Duration = Duration::from_secs(1);
const NEGATIVE_CAP: usize = 100_000;

/// `day`, `month` (UTC calendar) or `lifetime`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BudgetPeriod {
    Day,
    Month,
    Lifetime,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetSetting {
    pub usd: f64,
    pub period: BudgetPeriod,
}

/// A workspace's or key's limits and allowlists (the same shape for both; a key's settings
/// narrow its workspace's, they never widen them).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_models: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_providers: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<BudgetSetting>,
    /// Requests per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpm: Option<u64>,
    /// Tokens (input estimate + max output) per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<u64>,
    /// Workspaces only: markup on managed-key spend, in percent (BYOK requests pay none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub markup_pct: Option<f64>,
    /// Workspaces only: a monthly token allowance (input + output), e.g. a free tier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monthly_token_allowance: Option<u64>,
    /// Keys only: free-form tags copied to every request's metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
}

impl Settings {
    /// Problems with values, as `(field, message)`.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if let Some(b) = &self.budget
            && !(b.usd.is_finite() && b.usd >= 0.0 && b.usd <= 1e9)
        {
            out.push(("budget.usd", "must be between 0 and 1e9".to_owned()));
        }
        if let Some(m) = self.markup_pct
            && !(m.is_finite() && (0.0..=1000.0).contains(&m))
        {
            out.push(("markup_pct", "must be between 0 and 1000".to_owned()));
        }
        if self.rpm == Some(0) {
            out.push((
                "rpm",
                "must be at least 1 (leave it out for no limit)".to_owned(),
            ));
        }
        if self.tpm == Some(0) {
            out.push((
                "tpm",
                "must be at least 1 (leave it out for no limit)".to_owned(),
            ));
        }
        for (f, list) in [
            ("allowed_models", &self.allowed_models),
            ("allowed_providers", &self.allowed_providers),
        ] {
            if let Some(l) = list
                && (l.len() > 1000 || l.iter().any(|s| s.is_empty() || s.len() > 200))
            {
                out.push((
                    f,
                    "at most 1000 non-empty names of at most 200 bytes".to_owned(),
                ));
            }
        }
        if let Some(md) = &self.metadata
            && serde_json::to_string(md).map_or(0, |s| s.len()) > 4096
        {
            out.push(("metadata", "at most 4 KiB of JSON".to_owned()));
        }
        out
    }
}

/// `member` calls the inference API; `admin` also manages its own workspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Member,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Member => "member",
            Role::Admin => "admin",
        }
    }
}

/// What an authenticated virtual key may do, with its workspace's settings merged in.
#[derive(Debug, Clone)]
pub struct Access {
    pub key_id: String,
    pub workspace_id: String,
    pub role: Role,
    /// Intersection of the key's and the workspace's lists; `None` = everything.
    pub allowed_models: Option<HashSet<String>>,
    pub allowed_providers: Option<HashSet<String>>,
    pub key: Settings,
    pub workspace: Settings,
    /// The workspace's provider keys (decrypted from the vault), by provider name.
    pub credentials: Arc<HashMap<String, SecretString>>,
}

impl Access {
    /// May this key use `model` (catalog id or alias as requested, or the served id) on
    /// `provider`?
    pub fn allows(&self, model_names: &[&str], provider: &str) -> bool {
        let model_ok = self
            .allowed_models
            .as_ref()
            .is_none_or(|m| model_names.iter().any(|n| m.contains(*n)));
        let provider_ok = self
            .allowed_providers
            .as_ref()
            .is_none_or(|p| p.contains(provider));
        model_ok && provider_ok
    }
}

fn intersect(a: &Option<Vec<String>>, b: &Option<Vec<String>>) -> Option<HashSet<String>> {
    match (a, b) {
        (None, None) => None,
        (Some(x), None) | (None, Some(x)) => Some(x.iter().cloned().collect()),
        (Some(x), Some(y)) => {
            let y: HashSet<&String> = y.iter().collect();
            Some(x.iter().filter(|s| y.contains(s)).cloned().collect())
        }
    }
}

/// The associated data binding a sealed credential to its workspace and provider.
pub fn credential_aad(workspace_id: &str, provider: &str) -> String {
    format!("{workspace_id}/{provider}")
}

/// Re-seals every stored provider credential that is still sealed under a key other than the
/// keyring's current one (after a key rotation, so that the old key can be dropped), in every
/// workspace. Each credential is one compare-and-swap transaction with its own audit entry
/// (`reseal`, by `actor`, naming the kids only); see [`Store::reseal_credentials`]. A credential
/// that no key of the keyring opens is left untouched and reported by id
/// (`workspace_id/provider`). Idempotent.
pub async fn reseal_credentials(
    store: &Store,
    ring: &kairos_vault::Keyring,
    actor: &str,
) -> Result<ResealReport, kairos_store::StoreError> {
    store
        .reseal_credentials(|c| {
            let aad = credential_aad(&c.workspace_id, &c.provider);
            match ring.rotate(&c.sealed, &aad) {
                Ok(new) if new == c.sealed => Reseal::Current,
                Ok(new) => {
                    let kid = |blob: &str| kairos_vault::blob_kid(blob).unwrap_or("").to_owned();
                    let shown = |blob: &str| {
                        serde_json::json!({"provider": c.provider, "kid": kid(blob)}).to_string()
                    };
                    let audit = AuditEntry {
                        seq: 0,
                        ts_ms: now_ms(),
                        actor: actor.to_owned(),
                        workspace_id: Some(c.workspace_id.clone()),
                        action: "reseal".to_owned(),
                        object_type: "credential".to_owned(),
                        object_id: aad.clone(),
                        before_json: Some(shown(&c.sealed)),
                        after_json: Some(shown(&new)),
                    };
                    Reseal::Replace {
                        sealed: new,
                        audit: Box::new(audit),
                    }
                }
                Err(e) => {
                    // The error names a kid at most, never the blob or the secret.
                    tracing::warn!(
                        credential = %aad,
                        error = %e,
                        "a stored provider credential cannot be re-sealed: no key of the keyring opens it"
                    );
                    Reseal::Failed
                }
            }
        })
        .await
}

/// Lowercase hex SHA-256 of a presented key.
pub fn key_hash(key: &str) -> String {
    let d = Sha256::digest(key.as_bytes());
    let mut s = String::with_capacity(64);
    for b in d {
        use std::fmt::Write;
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// A new random virtual key: `kr-` and 43 base62 characters (256 bits).
pub fn generate_key() -> String {
    use rand::RngExt;
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut rng = rand::rng();
    let mut s = String::from("kr-");
    for _ in 0..43 {
        s.push(ALPHABET[rng.random_range(0..ALPHABET.len())] as char);
    }
    s
}

struct Entry {
    key: KeyRecord,
    settings: Settings,
}

#[derive(Default)]
struct Tables {
    /// By key hash.
    keys: HashMap<String, Arc<Entry>>,
    workspaces: HashMap<String, (WorkspaceRecord, Settings)>,
    /// Provider keys per workspace, decrypted.
    credentials: HashMap<String, Arc<HashMap<String, SecretString>>>,
    /// Key hashes looked up and not found, with when.
    unknown: HashMap<String, Instant>,
    /// Newest `updated_ms` seen.
    watermark_ms: i64,
}

/// Why a presented key was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyRejection {
    /// Unknown, revoked, expired, or its workspace was deleted (all look the same to the
    /// caller).
    Invalid,
    /// The store could not be asked (test-matrix U24: 503, not 401).
    StoreUnavailable,
}

/// The in-memory key table (see the module docs). Cheap to clone.
#[derive(Clone)]
pub struct KeyCache {
    store: Store,
    tables: Arc<RwLock<Tables>>,
    keyring: Option<Arc<kairos_vault::Keyring>>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn parse_settings(json: &str) -> Settings {
    serde_json::from_str(json).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "unreadable settings in the store; treating as empty");
        Settings::default()
    })
}

impl KeyCache {
    /// Loads every key and workspace.
    pub async fn load(
        store: Store,
        keyring: Option<Arc<kairos_vault::Keyring>>,
    ) -> Result<KeyCache, kairos_store::StoreError> {
        let c = KeyCache {
            store,
            tables: Arc::new(RwLock::new(Tables::default())),
            keyring,
        };
        c.refresh_since(None).await?;
        Ok(c)
    }

    /// Applies the rows changed since the watermark (minus the overlap window).
    pub async fn refresh(&self) -> Result<(), kairos_store::StoreError> {
        let since = self.read().watermark_ms - OVERLAP_MS;
        self.refresh_since(Some(since.max(0))).await
    }

    async fn refresh_since(&self, since: Option<i64>) -> Result<(), kairos_store::StoreError> {
        let workspaces = self.store.workspaces(since).await?;
        let keys = self.store.keys(None, since).await?;
        // The credential table is small and read whole, so that deletions are seen too.
        let mut creds: HashMap<String, HashMap<String, SecretString>> = HashMap::new();
        if let Some(ring) = &self.keyring {
            for c in self.store.credentials(None).await? {
                let aad = credential_aad(&c.workspace_id, &c.provider);
                match ring.open(&c.sealed, &aad) {
                    Ok(k) => {
                        creds
                            .entry(c.workspace_id)
                            .or_default()
                            .insert(c.provider, k);
                    }
                    Err(e) => tracing::warn!(
                        workspace = %c.workspace_id,
                        provider = %c.provider,
                        error = %e,
                        "a stored provider credential cannot be opened with KAIROS_SECRET_KEY; it is ignored"
                    ),
                }
            }
        }
        let mut t = self.write();
        t.credentials = creds.into_iter().map(|(w, m)| (w, Arc::new(m))).collect();
        for w in workspaces {
            t.watermark_ms = t.watermark_ms.max(w.updated_ms);
            let s = parse_settings(&w.settings);
            t.workspaces.insert(w.id.clone(), (w, s));
        }
        for k in keys {
            t.watermark_ms = t.watermark_ms.max(k.updated_ms);
            t.unknown.remove(&k.key_hash);
            let settings = parse_settings(&k.settings);
            t.keys
                .insert(k.key_hash.clone(), Arc::new(Entry { key: k, settings }));
        }
        Ok(())
    }

    /// Refreshes every `every` until the process ends.
    pub fn spawn_refresher(&self, every: Duration) {
        let c = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = c.refresh().await {
                    tracing::warn!(error = %e, "key table refresh failed; serving the cached table");
                }
            }
        });
    }

    /// Puts a record written by this replica into the table at once.
    pub fn upsert_key(&self, k: KeyRecord) {
        let settings = parse_settings(&k.settings);
        let mut t = self.write();
        t.unknown.remove(&k.key_hash);
        t.keys
            .insert(k.key_hash.clone(), Arc::new(Entry { key: k, settings }));
    }

    /// The vault keyring (None: `KAIROS_SECRET_KEY` not set, credentials cannot be stored).
    pub fn keyring(&self) -> Option<&kairos_vault::Keyring> {
        self.keyring.as_deref()
    }

    /// Re-reads everything now (after a credential change on this replica).
    pub async fn reload(&self) -> Result<(), kairos_store::StoreError> {
        self.refresh().await
    }

    pub fn upsert_workspace(&self, w: WorkspaceRecord) {
        let s = parse_settings(&w.settings);
        self.write().workspaces.insert(w.id.clone(), (w, s));
    }

    /// The workspace's record and settings, if known.
    pub fn workspace(&self, id: &str) -> Option<(WorkspaceRecord, Settings)> {
        self.read().workspaces.get(id).cloned()
    }

    /// Authenticates a presented virtual key.
    pub async fn authenticate(&self, presented: &str) -> Result<Access, KeyRejection> {
        let hash = key_hash(presented);
        if let Some(a) = self.check(&hash) {
            return a;
        }
        {
            let t = self.read();
            if t.unknown
                .get(&hash)
                .is_some_and(|at| at.elapsed() < NEGATIVE_TTL)
            {
                return Err(KeyRejection::Invalid);
            }
        }
        let found = tokio::time::timeout(Duration::from_secs(2), self.store.key_by_hash(&hash))
            .await
            .map_err(|_| KeyRejection::StoreUnavailable)?
            .map_err(|_| KeyRejection::StoreUnavailable)?;
        match found {
            Some(k) => {
                if !self.read().workspaces.contains_key(&k.workspace_id)
                    && let Ok(Some(w)) = self.store.workspace(&k.workspace_id).await
                {
                    self.upsert_workspace(w);
                }
                self.upsert_key(k);
                self.check(&hash).unwrap_or(Err(KeyRejection::Invalid))
            }
            None => {
                let mut t = self.write();
                if t.unknown.len() >= NEGATIVE_CAP {
                    t.unknown.retain(|_, at| at.elapsed() < NEGATIVE_TTL);
                    if t.unknown.len() >= NEGATIVE_CAP {
                        t.unknown.clear();
                    }
                }
                t.unknown.insert(hash, Instant::now());
                Err(KeyRejection::Invalid)
            }
        }
    }

    /// `None` when the table does not know the hash.
    fn check(&self, hash: &str) -> Option<Result<Access, KeyRejection>> {
        let t = self.read();
        let e = t.keys.get(hash)?.clone();
        let k = &e.key;
        let now = now_ms();
        if k.revoked_ms.is_some() || k.expires_ms.is_some_and(|x| x <= now) {
            return Some(Err(KeyRejection::Invalid));
        }
        let Some((w, ws)) = t.workspaces.get(&k.workspace_id) else {
            return Some(Err(KeyRejection::Invalid));
        };
        if w.deleted_ms.is_some() {
            return Some(Err(KeyRejection::Invalid));
        }
        let role = if k.role == "admin" {
            Role::Admin
        } else {
            Role::Member
        };
        Some(Ok(Access {
            key_id: k.id.clone(),
            workspace_id: k.workspace_id.clone(),
            role,
            allowed_models: intersect(&e.settings.allowed_models, &ws.allowed_models),
            allowed_providers: intersect(&e.settings.allowed_providers, &ws.allowed_providers),
            key: e.settings.clone(),
            workspace: ws.clone(),
            credentials: t
                .credentials
                .get(&k.workspace_id)
                .cloned()
                .unwrap_or_default(),
        }))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Tables> {
        self.tables
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Tables> {
        self.tables
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_random_and_hashes_are_hex() {
        let a = generate_key();
        let b = generate_key();
        assert_ne!(a, b);
        assert!(a.starts_with("kr-") && a.len() == 46);
        let h = key_hash(&a);
        assert_eq!(h.len(), 64);
        assert!(
            h.bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_eq!(
            key_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn lists_intersect_and_access_checks_both() {
        let k = Some(vec!["gpt-4o".to_owned(), "gpt-4o-mini".to_owned()]);
        let w = Some(vec![
            "gpt-4o-mini".to_owned(),
            "claude-haiku-4-5".to_owned(),
        ]);
        let m = intersect(&k, &w).unwrap();
        assert_eq!(m.len(), 1);
        assert!(m.contains("gpt-4o-mini"));
        assert!(intersect(&None, &None).is_none());
        let a = Access {
            key_id: "k".into(),
            workspace_id: "w".into(),
            role: Role::Member,
            allowed_models: Some(m),
            allowed_providers: Some(["openai".to_owned()].into()),
            key: Settings::default(),
            workspace: Settings::default(),
            credentials: Arc::default(),
        };
        assert!(a.allows(&["gpt-4o-mini"], "openai"));
        assert!(!a.allows(&["gpt-4o-mini"], "azure"));
        assert!(!a.allows(&["gpt-4o"], "openai"));
    }

    #[test]
    fn settings_are_validated() {
        let s: Settings = serde_json::from_str(
            r#"{"budget":{"usd":-1,"period":"month"},"rpm":0,"markup_pct":4}"#,
        )
        .unwrap();
        let p: Vec<&str> = s.problems().iter().map(|(f, _)| *f).collect();
        assert_eq!(p, ["budget.usd", "rpm"]);
        assert!(serde_json::from_str::<Settings>(r#"{"max_budget": 5}"#).is_err());
    }
}

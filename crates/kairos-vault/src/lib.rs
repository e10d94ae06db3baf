//! Provider credentials encrypted at rest.
//!
//! A [`Keyring`] holds 32-byte data-encryption keys, each under a short key id (kid). The first
//! key is the *current* one: [`Keyring::seal`] encrypts with it. The others only decrypt, so a
//! key can be rotated without a flag day: add the new key in front, restart, re-seal the stored
//! blobs ([`Keyring::rotate`]; the gateway's `kairos credentials reseal`), then drop the old key.
//!
//! # Keyring format (`KAIROS_SECRET_KEY`, or a file)
//!
//! ```text
//! k2:BASE64KEY,k1:BASE64KEY      current first; entries separated by commas or newlines
//! BASE64KEY                      a bare key is accepted as kid `k1`
//! # a comment                    (a line starting with `#`, handy in a keyring file)
//! ```
//!
//! A key is 32 bytes in standard (or URL-safe) base64, padded or not. A kid is 1-32 characters
//! from `A-Z a-z 0-9 . _ -`. `kairos`-side tooling prints a new entry with
//! [`Keyring::generate_entry`].
//!
//! # Blob format
//!
//! ```text
//! kv1:<kid>:<base64url, no padding (nonce 12 bytes || ciphertext || tag 16 bytes)>
//! ```
//!
//! AES-256-GCM with a random 96-bit nonce per seal. The associated data is
//! `kv1:<kid>:<aad>` (UTF-8), where `aad` is chosen by the caller to name the blob's owner
//! (the gateway passes e.g. `workspace_id/credential_name`): a blob copied to another row, or
//! whose kid was edited, does not open.
//!
//! # What never leaks
//!
//! Errors name kids, entry positions and lengths, never key bytes, plaintexts or blob contents
//! (a "blob" may be a legacy plaintext credential). `Debug` of a [`Keyring`] lists kids only.
//! Key bytes live in [`SecretBox`]es (heap, zeroized on drop); decrypted plaintexts are returned
//! as [`SecretString`] and the intermediate buffers are zeroized.

use std::fmt;
use std::path::{Path, PathBuf};

use aes_gcm::aead::{Nonce, Tag};
use aes_gcm::{AeadInOut, Aes256Gcm, Key, KeyInit};
use base64::Engine;
use base64::engine::general_purpose::{
    STANDARD, STANDARD_PAD_INDIFFERENT, URL_SAFE_NO_PAD, URL_SAFE_PAD_INDIFFERENT,
};
use rand::TryRng;
use secrecy::{ExposeSecret, SecretBox, SecretString};
use zeroize::Zeroizing;

/// The environment variable holding the keyring.
pub const ENV_VAR: &str = "KAIROS_SECRET_KEY";
/// Length of a data-encryption key (AES-256).
pub const KEY_LEN: usize = 32;
/// The kid given to a bare key (an entry without `kid:`).
pub const DEFAULT_KID: &str = "k1";
/// Longest accepted kid.
pub const MAX_KID_LEN: usize = 32;
/// Version prefix of every blob.
pub const BLOB_VERSION: &str = "kv1";

const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// Everything that can go wrong. No variant carries key bytes, plaintext or blob contents.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("{origin}: no key (expected `kid:base64key[,kid:base64key...]`, current key first)")]
    Empty { origin: String },
    #[error(
        "{origin}: entry {entry}: the key id must be 1-{MAX_KID_LEN} characters from A-Z a-z 0-9 . _ -"
    )]
    InvalidKid { origin: String, entry: usize },
    #[error("{origin}: entry {entry} (kid `{kid}`): the key is not valid base64")]
    InvalidBase64 {
        origin: String,
        entry: usize,
        kid: String,
    },
    #[error(
        "{origin}: entry {entry} (kid `{kid}`): the key is {len} bytes, expected {KEY_LEN} (base64 of 32 random bytes)"
    )]
    InvalidKeyLength {
        origin: String,
        entry: usize,
        kid: String,
        len: usize,
    },
    #[error("{origin}: kid `{kid}` appears more than once")]
    DuplicateKid { origin: String, kid: String },
    #[error("cannot read the keyring file {}: {source}", path.display())]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{origin}: not UTF-8 text")]
    NotUtf8 { origin: String },
    #[error("not a sealed value (expected `{BLOB_VERSION}:<kid>:<data>`)")]
    Malformed,
    #[error("the value was sealed with key `{kid}`, which is not in the keyring ({ENV_VAR})")]
    UnknownKid { kid: String },
    #[error(
        "the value does not open with key `{kid}`: it was altered, belongs to another owner, or the key under that kid changed"
    )]
    Decrypt { kid: String },
    #[error("the operating system's random number generator failed: {0}")]
    Random(String),
    #[error("the value is too large to seal")]
    TooLarge,
}

/// One data-encryption key.
struct DataKey {
    kid: String,
    key: SecretBox<[u8; KEY_LEN]>,
}

impl DataKey {
    fn cipher(&self) -> Aes256Gcm {
        let key: &Key<Aes256Gcm> = self.key.expose_secret().into();
        Aes256Gcm::new(key)
    }
}

/// The data-encryption keys; the first one is current (seals), the others only open.
pub struct Keyring {
    keys: Vec<DataKey>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("current", &self.current_kid())
            .field("kids", &self.kids().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Keyring {
    /// Parses a keyring spec (`kid:base64key,...`); errors say `keyring: ...`.
    pub fn parse(spec: &str) -> Result<Keyring, VaultError> {
        Keyring::parse_with_origin(spec, "keyring")
    }

    /// Parses a keyring spec; `origin` (e.g. `KAIROS_SECRET_KEY`, a file path) prefixes errors.
    pub fn parse_with_origin(spec: &str, origin: &str) -> Result<Keyring, VaultError> {
        let mut keys: Vec<DataKey> = Vec::new();
        let entries = spec
            .lines()
            .filter(|line| !line.trim_start().starts_with('#'))
            .flat_map(|line| line.split(','))
            .map(str::trim)
            .filter(|e| !e.is_empty());
        for (i, raw) in entries.enumerate() {
            let entry = i + 1;
            let (kid, b64) = match raw.split_once(':') {
                Some((kid, b64)) => (kid.trim(), b64.trim()),
                None => (DEFAULT_KID, raw),
            };
            if !valid_kid(kid) {
                return Err(VaultError::InvalidKid {
                    origin: origin.to_owned(),
                    entry,
                });
            }
            if keys.iter().any(|k| k.kid == kid) {
                return Err(VaultError::DuplicateKid {
                    origin: origin.to_owned(),
                    kid: kid.to_owned(),
                });
            }
            let key = decode_key(b64).map_err(|p| match p {
                KeyProblem::Base64 => VaultError::InvalidBase64 {
                    origin: origin.to_owned(),
                    entry,
                    kid: kid.to_owned(),
                },
                KeyProblem::Length(len) => VaultError::InvalidKeyLength {
                    origin: origin.to_owned(),
                    entry,
                    kid: kid.to_owned(),
                    len,
                },
            })?;
            keys.push(DataKey {
                kid: kid.to_owned(),
                key,
            });
        }
        if keys.is_empty() {
            return Err(VaultError::Empty {
                origin: origin.to_owned(),
            });
        }
        Ok(Keyring { keys })
    }

    /// The keyring in `KAIROS_SECRET_KEY`; `None` when the variable is not set. Set but blank is
    /// an error (an unset `${VAR}` in a compose file must not silently disable encryption).
    pub fn from_env() -> Result<Option<Keyring>, VaultError> {
        match std::env::var(ENV_VAR) {
            Ok(v) => {
                let v = Zeroizing::new(v);
                Keyring::parse_with_origin(&v, ENV_VAR).map(Some)
            }
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => Err(VaultError::NotUtf8 {
                origin: ENV_VAR.to_owned(),
            }),
        }
    }

    /// The keyring in a file (same format; entries may also be one per line).
    pub fn from_file(path: &Path) -> Result<Keyring, VaultError> {
        let bytes = Zeroizing::new(std::fs::read(path).map_err(|source| VaultError::ReadFile {
            path: path.to_owned(),
            source,
        })?);
        let origin = path.display().to_string();
        let text = std::str::from_utf8(&bytes).map_err(|_| VaultError::NotUtf8 {
            origin: origin.clone(),
        })?;
        Keyring::parse_with_origin(text, &origin)
    }

    /// The file when one is given, else `KAIROS_SECRET_KEY` (`None` when neither is set).
    pub fn load(file: Option<&Path>) -> Result<Option<Keyring>, VaultError> {
        match file {
            Some(path) => Keyring::from_file(path).map(Some),
            None => Keyring::from_env(),
        }
    }

    /// A new random entry `kid:base64key` for operators to add to the keyring. The returned
    /// string IS key material: print it once, never log it.
    pub fn generate_entry(kid: &str) -> Result<String, VaultError> {
        if !valid_kid(kid) {
            return Err(VaultError::InvalidKid {
                origin: "new entry".to_owned(),
                entry: 1,
            });
        }
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        fill_random(&mut key[..])?;
        let b64 = Zeroizing::new(STANDARD.encode(&key[..]));
        Ok(format!("{kid}:{}", b64.as_str()))
    }

    /// The kid new blobs are sealed with.
    pub fn current_kid(&self) -> &str {
        // Non-empty by construction.
        self.keys.first().map_or("", |k| k.kid.as_str())
    }

    /// Every kid, current first.
    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|k| k.kid.as_str())
    }

    /// Whether the keyring holds a key under `kid`.
    pub fn contains(&self, kid: &str) -> bool {
        self.key(kid).is_some()
    }

    fn key(&self, kid: &str) -> Option<&DataKey> {
        self.keys.iter().find(|k| k.kid == kid)
    }

    fn current(&self) -> Result<&DataKey, VaultError> {
        // Non-empty by construction; the error only keeps this free of panics.
        self.keys.first().ok_or_else(|| VaultError::Empty {
            origin: "keyring".to_owned(),
        })
    }

    /// Encrypts `plaintext` with the current key, bound to `aad` (the owner, e.g.
    /// `workspace_id/credential_name`). Fails only if the OS random generator does.
    pub fn seal(&self, plaintext: &str, aad: &str) -> Result<String, VaultError> {
        let key = self.current()?;
        let mut nonce = [0u8; NONCE_LEN];
        fill_random(&mut nonce)?;
        // nonce || ciphertext || tag, encrypted in place: exact capacity, no reallocation, so
        // no stray copy of the plaintext is left in freed memory.
        let mut buf = Zeroizing::new(Vec::with_capacity(NONCE_LEN + plaintext.len() + TAG_LEN));
        buf.extend_from_slice(&nonce);
        buf.extend_from_slice(plaintext.as_bytes());
        let full_aad = associated_data(&key.kid, aad);
        let tag = key
            .cipher()
            .encrypt_inout_detached(
                &Nonce::<Aes256Gcm>::from(nonce),
                &full_aad,
                (&mut buf[NONCE_LEN..]).into(),
            )
            .map_err(|_| VaultError::TooLarge)?;
        buf.extend_from_slice(&tag);
        Ok(format!(
            "{BLOB_VERSION}:{}:{}",
            key.kid,
            URL_SAFE_NO_PAD.encode(&buf)
        ))
    }

    /// Decrypts a blob made by [`Keyring::seal`] with the same `aad`, using the key its kid
    /// names.
    pub fn open(&self, blob: &str, aad: &str) -> Result<SecretString, VaultError> {
        let (kid, data) = split_blob(blob).ok_or(VaultError::Malformed)?;
        let key = self.key(kid).ok_or_else(|| VaultError::UnknownKid {
            kid: kid.to_owned(),
        })?;
        let raw = URL_SAFE_NO_PAD
            .decode(data)
            .map_err(|_| VaultError::Malformed)?;
        if raw.len() < NONCE_LEN + TAG_LEN {
            return Err(VaultError::Malformed);
        }
        let (nonce, rest) = raw.split_at(NONCE_LEN);
        let (ciphertext, tag) = rest.split_at(rest.len() - TAG_LEN);
        let nonce = <&Nonce<Aes256Gcm>>::try_from(nonce).map_err(|_| VaultError::Malformed)?;
        let tag = <&Tag<Aes256Gcm>>::try_from(tag).map_err(|_| VaultError::Malformed)?;
        let mut plain = Zeroizing::new(ciphertext.to_vec());
        let full_aad = associated_data(kid, aad);
        key.cipher()
            .decrypt_inout_detached(nonce, &full_aad, (&mut plain[..]).into(), tag)
            .map_err(|_| VaultError::Decrypt {
                kid: kid.to_owned(),
            })?;
        let text = std::str::from_utf8(&plain).map_err(|_| VaultError::Decrypt {
            kid: kid.to_owned(),
        })?;
        // `From<&str>` allocates exactly `len` bytes: the box is not reallocated later.
        Ok(SecretString::from(text))
    }

    /// Whether `blob` is a well-formed blob sealed with a key other than the current one.
    /// (A value that is not a blob at all, e.g. a legacy plaintext, needs sealing, not rotation:
    /// see [`is_sealed`].)
    pub fn needs_rotation(&self, blob: &str) -> bool {
        split_blob(blob).is_some_and(|(kid, _)| kid != self.current_kid())
    }

    /// Re-seals `blob` with the current key. It is opened (and so verified against `aad`) in
    /// every case; a blob already under the current key is returned unchanged.
    pub fn rotate(&self, blob: &str, aad: &str) -> Result<String, VaultError> {
        let plain = self.open(blob, aad)?;
        if !self.needs_rotation(blob) {
            return Ok(blob.to_owned());
        }
        self.seal(plain.expose_secret(), aad)
    }
}

/// Whether `value` has the shape of a sealed blob (`kv1:<kid>:<data>`); says nothing about
/// whether it opens.
pub fn is_sealed(value: &str) -> bool {
    split_blob(value).is_some()
}

/// The kid a blob was sealed with, if `value` is shaped like a blob.
pub fn blob_kid(value: &str) -> Option<&str> {
    split_blob(value).map(|(kid, _)| kid)
}

fn split_blob(blob: &str) -> Option<(&str, &str)> {
    let rest = blob.strip_prefix(BLOB_VERSION)?.strip_prefix(':')?;
    let (kid, data) = rest.split_once(':')?;
    (valid_kid(kid) && !data.is_empty()).then_some((kid, data))
}

fn associated_data(kid: &str, aad: &str) -> Vec<u8> {
    // kid never contains ':', so this is unambiguous.
    format!("{BLOB_VERSION}:{kid}:{aad}").into_bytes()
}

fn valid_kid(kid: &str) -> bool {
    !kid.is_empty()
        && kid.len() <= MAX_KID_LEN
        && kid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

enum KeyProblem {
    Base64,
    Length(usize),
}

fn decode_key(b64: &str) -> Result<SecretBox<[u8; KEY_LEN]>, KeyProblem> {
    // Decoded into a buffer with room to spare (never reallocated) that is zeroized on drop,
    // the decoder's error (which quotes the offending byte) is dropped unseen.
    let decode = |engine: &base64::engine::GeneralPurpose| {
        let mut buf = Zeroizing::new(Vec::with_capacity(b64.len() + 4));
        engine.decode_vec(b64, &mut buf).map(|()| buf)
    };
    let bytes = decode(&STANDARD_PAD_INDIFFERENT)
        .or_else(|_| decode(&URL_SAFE_PAD_INDIFFERENT))
        .map_err(|_| KeyProblem::Base64)?;
    if bytes.len() != KEY_LEN {
        return Err(KeyProblem::Length(bytes.len()));
    }
    Ok(SecretBox::init_with_mut(|k: &mut [u8; KEY_LEN]| {
        k.copy_from_slice(&bytes)
    }))
}

fn fill_random(buf: &mut [u8]) -> Result<(), VaultError> {
    rand::rngs::SysRng
        .try_fill_bytes(buf)
        .map_err(|e| VaultError::Random(e.to_string()))
}

#[cfg(test)]
mod tests;

use super::*;

use proptest::prelude::*;

/// Two fixed keys (base64 of 32 bytes 0x01.. and 0x02..), so failures are reproducible.
fn key_b64(fill: u8) -> String {
    STANDARD.encode([fill; KEY_LEN])
}

fn ring(spec: &str) -> Keyring {
    Keyring::parse(spec).unwrap()
}

fn k1() -> String {
    format!("k1:{}", key_b64(1))
}

fn k2() -> String {
    format!("k2:{}", key_b64(2))
}

const AAD: &str = "ws_123/openai";

fn raw_bytes(blob: &str) -> Vec<u8> {
    let (_, data) = split_blob(blob).unwrap();
    URL_SAFE_NO_PAD.decode(data).unwrap()
}

fn with_raw(blob: &str, raw: &[u8]) -> String {
    let kid = blob_kid(blob).unwrap();
    format!("{BLOB_VERSION}:{kid}:{}", URL_SAFE_NO_PAD.encode(raw))
}

#[test]
fn round_trip() {
    let r = ring(&k1());
    let blob = r.seal("sk-live-abc", AAD).unwrap();
    assert!(blob.starts_with("kv1:k1:"), "{blob}");
    assert!(!blob.contains("sk-live-abc"));
    assert_eq!(r.open(&blob, AAD).unwrap().expose_secret(), "sk-live-abc");
    // nonce 12 + plaintext 11 + tag 16
    assert_eq!(raw_bytes(&blob).len(), 12 + 11 + 16);
    assert!(is_sealed(&blob));
    assert_eq!(blob_kid(&blob), Some("k1"));
}

#[test]
fn wrong_aad_fails() {
    let r = ring(&k1());
    let blob = r.seal("sk-live-abc", "ws_1/openai").unwrap();
    for aad in ["ws_2/openai", "ws_1/anthropic", "", "ws_1/openai "] {
        let err = r.open(&blob, aad).unwrap_err();
        assert!(
            matches!(err, VaultError::Decrypt { ref kid } if kid == "k1"),
            "{err:?}"
        );
        assert!(!err.to_string().contains("sk-live"));
    }
}

#[test]
fn tampered_byte_fails() {
    let r = ring(&k1());
    let blob = r.seal("sk-live-abc", AAD).unwrap();
    let raw = raw_bytes(&blob);
    // Flip one bit in every position: nonce, ciphertext and tag.
    for i in 0..raw.len() {
        let mut t = raw.clone();
        t[i] ^= 0x01;
        let err = r.open(&with_raw(&blob, &t), AAD).unwrap_err();
        assert!(
            matches!(err, VaultError::Decrypt { .. }),
            "byte {i}: {err:?}"
        );
    }
    // Truncated and extended.
    let err = r
        .open(&with_raw(&blob, &raw[..raw.len() - 1]), AAD)
        .unwrap_err();
    assert!(matches!(err, VaultError::Decrypt { .. }), "{err:?}");
    let mut longer = raw.clone();
    longer.push(0);
    assert!(r.open(&with_raw(&blob, &longer), AAD).is_err());
    // Too short to hold a nonce and a tag.
    let err = r.open(&with_raw(&blob, &raw[..20]), AAD).unwrap_err();
    assert!(matches!(err, VaultError::Malformed), "{err:?}");
}

#[test]
fn edited_kid_fails_even_with_the_same_key() {
    // The same key under two kids: rewriting the kid in the blob still fails (kid is in the AAD).
    let r = ring(&format!("a:{},b:{}", key_b64(7), key_b64(7)));
    let blob = r.seal("secret", AAD).unwrap();
    let edited = blob.replacen("kv1:a:", "kv1:b:", 1);
    assert!(matches!(
        r.open(&edited, AAD).unwrap_err(),
        VaultError::Decrypt { .. }
    ));
}

#[test]
fn unknown_kid_fails() {
    let blob = ring(&k1()).seal("secret", AAD).unwrap();
    let err = ring(&k2()).open(&blob, AAD).unwrap_err();
    assert!(
        matches!(err, VaultError::UnknownKid { ref kid } if kid == "k1"),
        "{err:?}"
    );
    assert!(err.to_string().contains("`k1`"), "{err}");
}

#[test]
fn malformed_blobs_fail_without_echoing_them() {
    let r = ring(&k1());
    for bad in [
        "",
        "sk-live-plaintext-credential",
        "kv1:",
        "kv1:k1",
        "kv1:k1:",
        "kv2:k1:AAAA",
        "kv1:bad kid:AAAA",
        "kv1:k1:not*base64*sk-live",
    ] {
        let err = r.open(bad, AAD).unwrap_err();
        assert!(matches!(err, VaultError::Malformed), "{bad:?}: {err:?}");
        assert!(!err.to_string().contains("sk-live"));
        assert!(!r.needs_rotation(bad));
    }
    assert!(!is_sealed("sk-live-plaintext-credential"));
}

#[test]
fn rotation() {
    let old = ring(&k1());
    let blob_k1 = old.seal("sk-rotate-me", AAD).unwrap();

    let both = ring(&format!("{},{}", k2(), k1()));
    assert_eq!(both.current_kid(), "k2");
    assert_eq!(both.kids().collect::<Vec<_>>(), ["k2", "k1"]);
    // The new ring still opens k1 blobs...
    assert_eq!(
        both.open(&blob_k1, AAD).unwrap().expose_secret(),
        "sk-rotate-me"
    );
    assert!(both.needs_rotation(&blob_k1));
    assert!(!old.needs_rotation(&blob_k1));
    // ...and rotation re-seals them under k2.
    let blob_k2 = both.rotate(&blob_k1, AAD).unwrap();
    assert_eq!(blob_kid(&blob_k2), Some("k2"));
    assert!(!both.needs_rotation(&blob_k2));
    // Rotating a current blob returns it unchanged (no pointless writes).
    assert_eq!(both.rotate(&blob_k2, AAD).unwrap(), blob_k2);
    // Rotation verifies the owner.
    assert!(matches!(
        both.rotate(&blob_k1, "ws_other/openai").unwrap_err(),
        VaultError::Decrypt { .. }
    ));

    // Once everything is rotated, k1 can go.
    let new = ring(&k2());
    assert_eq!(
        new.open(&blob_k2, AAD).unwrap().expose_secret(),
        "sk-rotate-me"
    );
    assert!(matches!(
        new.open(&blob_k1, AAD).unwrap_err(),
        VaultError::UnknownKid { .. }
    ));
    // And the old ring cannot open the new blob.
    assert!(old.open(&blob_k2, AAD).is_err());
}

#[test]
fn nonces_differ() {
    let r = ring(&k1());
    let a = r.seal("same plaintext", AAD).unwrap();
    let b = r.seal("same plaintext", AAD).unwrap();
    assert_ne!(a, b);
    assert_ne!(raw_bytes(&a)[..NONCE_LEN], raw_bytes(&b)[..NONCE_LEN]);
    // Many seals, no repeated nonce.
    let mut seen = std::collections::HashSet::new();
    for _ in 0..1000 {
        let blob = r.seal("x", AAD).unwrap();
        assert!(seen.insert(raw_bytes(&blob)[..NONCE_LEN].to_vec()));
    }
}

#[test]
fn parse_accepts_the_documented_forms() {
    // A bare key is kid k1.
    let r = ring(&key_b64(1));
    assert_eq!(r.kids().collect::<Vec<_>>(), ["k1"]);
    // Whitespace, newlines, a trailing comma, unpadded and URL-safe base64.
    let unpadded = STANDARD
        .encode([3u8; KEY_LEN])
        .trim_end_matches('=')
        .to_owned();
    let url_safe = URL_SAFE_NO_PAD.encode([0xfbu8; KEY_LEN]);
    let r = ring(&format!(
        "  new-2026.01 : {unpadded} ,\n old_1:{url_safe}\r\n,"
    ));
    assert_eq!(r.kids().collect::<Vec<_>>(), ["new-2026.01", "old_1"]);
    assert!(r.contains("old_1"));
    assert!(!r.contains("k1"));
    // What was sealed with a key parsed one way opens with it parsed another way.
    let blob = ring(&format!("k:{}", STANDARD.encode([0xfbu8; KEY_LEN])))
        .seal("x", AAD)
        .unwrap();
    let same = ring(&format!("k:{url_safe}"));
    assert_eq!(same.open(&blob, AAD).unwrap().expose_secret(), "x");
}

#[test]
fn parse_errors() {
    let key = key_b64(1);
    let short = STANDARD.encode([1u8; 16]);
    let long = STANDARD.encode([1u8; 33]);

    let err = Keyring::parse("").unwrap_err();
    assert!(matches!(err, VaultError::Empty { .. }), "{err:?}");
    let err = Keyring::parse(" , \n ").unwrap_err();
    assert!(matches!(err, VaultError::Empty { .. }), "{err:?}");

    let err = Keyring::parse(&format!("k1:{short}")).unwrap_err();
    assert!(
        matches!(
            err,
            VaultError::InvalidKeyLength {
                len: 16,
                entry: 1,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("16 bytes, expected 32"), "{err}");
    let err = Keyring::parse(&format!("k2:{key},k1:{long}")).unwrap_err();
    assert!(
        matches!(err, VaultError::InvalidKeyLength { len: 33, entry: 2, ref kid, .. } if kid == "k1"),
        "{err:?}"
    );

    let err = Keyring::parse("k1:this is not base64!").unwrap_err();
    assert!(matches!(err, VaultError::InvalidBase64 { .. }), "{err:?}");

    let err = Keyring::parse(&format!("k1:{key},k1:{}", key_b64(2))).unwrap_err();
    assert!(
        matches!(err, VaultError::DuplicateKid { ref kid, .. } if kid == "k1"),
        "{err:?}"
    );
    // A bare key is k1, so it collides with an explicit k1.
    let err = Keyring::parse(&format!("k1:{key},{}", key_b64(2))).unwrap_err();
    assert!(matches!(err, VaultError::DuplicateKid { .. }), "{err:?}");

    for bad_kid in ["", "has space", "a/b", &"x".repeat(33), "ünï"] {
        let err = Keyring::parse(&format!("{bad_kid}:{key}")).unwrap_err();
        assert!(
            matches!(err, VaultError::InvalidKid { entry: 1, .. }),
            "{bad_kid:?}: {err:?}"
        );
    }

    // The origin prefixes the message.
    let err = Keyring::parse_with_origin("", ENV_VAR).unwrap_err();
    assert!(err.to_string().starts_with("KAIROS_SECRET_KEY: "), "{err}");
}

#[test]
fn errors_never_echo_key_material() {
    // Key-ish strings that are wrong in various ways; none may appear in the message.
    let secret_ish = "c2VjcmV0LWtleS1tYXRlcmlhbC10aGF0LWlzLXRvby1zaG9ydA";
    let cases = [
        format!("k1:{secret_ish}"),
        format!("k1:{secret_ish}!!"),
        secret_ish.to_owned(),
        format!("k1:{}", key_b64(9)) + "," + &format!("k1:{secret_ish}"),
    ];
    for spec in &cases {
        let err = Keyring::parse(spec).unwrap_err();
        let text = format!("{err} {err:?}");
        assert!(!text.contains(secret_ish), "{text}");
        assert!(!text.contains(&key_b64(9)), "{text}");
    }
}

#[test]
fn debug_shows_no_key_material() {
    let (a, b) = (key_b64(0x5a), key_b64(0xa5));
    let r = ring(&format!("k2:{a},k1:{b}"));
    let dbg = format!("{r:?} {r:#?}");
    assert!(!dbg.contains(&a), "{dbg}");
    assert!(!dbg.contains(&b), "{dbg}");
    // Nor the raw bytes as a decimal array.
    assert!(!dbg.contains("90, 90"), "{dbg}");
    assert!(!dbg.contains("165"), "{dbg}");
    assert!(dbg.contains("k2") && dbg.contains("k1"), "{dbg}");
    // Decrypted values redact themselves too.
    let opened = r.open(&r.seal("sk-live-xyz", AAD).unwrap(), AAD).unwrap();
    assert!(!format!("{opened:?}").contains("sk-live-xyz"));
}

#[test]
fn generate_entry_makes_a_usable_key() {
    let e1 = Keyring::generate_entry("k2026").unwrap();
    let e2 = Keyring::generate_entry("k2026").unwrap();
    assert_ne!(e1, e2);
    let (kid, b64) = e1.split_once(':').unwrap();
    assert_eq!(kid, "k2026");
    assert_eq!(STANDARD.decode(b64).unwrap().len(), KEY_LEN);
    let r = ring(&e1);
    assert_eq!(
        r.open(&r.seal("x", AAD).unwrap(), AAD)
            .unwrap()
            .expose_secret(),
        "x"
    );
    assert!(matches!(
        Keyring::generate_entry("bad:kid").unwrap_err(),
        VaultError::InvalidKid { .. }
    ));
}

#[test]
fn from_file_and_load() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyring");
    std::fs::write(&path, "# only a comment\n\n").unwrap();
    assert!(matches!(
        Keyring::from_file(&path).unwrap_err(),
        VaultError::Empty { .. }
    ));
    std::fs::write(
        &path,
        format!("# added 2026-05\n{}\n  # old\n{}\n", k2(), k1()),
    )
    .unwrap();
    let r = Keyring::load(Some(&path)).unwrap().unwrap();
    assert_eq!(r.kids().collect::<Vec<_>>(), ["k2", "k1"]);

    let missing = dir.path().join("missing");
    let err = Keyring::from_file(&missing).unwrap_err();
    assert!(matches!(err, VaultError::ReadFile { .. }), "{err:?}");
    assert!(err.to_string().contains("missing"), "{err}");

    std::fs::write(&path, format!("k1:{}", STANDARD.encode([1u8; 8]))).unwrap();
    let err = Keyring::from_file(&path).unwrap_err();
    assert!(
        err.to_string().starts_with(&path.display().to_string()),
        "{err}"
    );

    std::fs::write(&path, [0xffu8, 0xfe, 0x00]).unwrap();
    assert!(matches!(
        Keyring::from_file(&path).unwrap_err(),
        VaultError::NotUtf8 { .. }
    ));
}

#[test]
fn round_trip_assorted_plaintexts() {
    let r = ring(&format!("{},{}", k2(), k1()));
    let long = "x".repeat(100_000);
    let plaintexts = [
        "",
        " ",
        "sk-proj-0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOP",
        "ключ-🔑-密钥-キー",
        "line1\nline2\r\n\ttab",
        "\0nul\0inside",
        "kv1:k1:looks-like-a-blob",
        "{\"type\":\"service_account\",\"private_key\":\"-----BEGIN PRIVATE KEY-----\\n...\"}",
        long.as_str(),
    ];
    for p in plaintexts {
        for aad in ["", "ws/cred", "wörkspace/名前"] {
            let blob = r.seal(p, aad).unwrap();
            assert_eq!(r.open(&blob, aad).unwrap().expose_secret(), p);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn prop_round_trip(plain in any::<String>(), aad in any::<String>(), other in any::<String>()) {
        let r = ring(&k1());
        let blob = r.seal(&plain, &aad).unwrap();
        prop_assert!(is_sealed(&blob));
        let opened = r.open(&blob, &aad).unwrap();
        prop_assert_eq!(opened.expose_secret(), plain.as_str());
        if other != aad {
            prop_assert!(r.open(&blob, &other).is_err());
        }
    }
}

#[test]
fn keyring_is_shareable_across_tasks() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<Keyring>();
    assert_send_sync::<VaultError>();
}

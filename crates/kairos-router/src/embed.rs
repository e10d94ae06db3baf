//! Static prompt embeddings, computed in process in microseconds.
//!
//! A prompt's embedding is the L2-normalised mean of the vectors of its WordPiece tokens, read
//! from a static table distilled offline from sentence-transformers/all-MiniLM-L6-v2 by
//! `scripts/distill_embeddings.py` (model2vec-style: each vocabulary token run through the model
//! on its own, PCA, SIF frequency weighting, int8 with one scale per token). The table ships in
//! the binary (`data/embed.bin`); its dimension is whatever the file's header says.
//!
//! The tokenizer reproduces the script's `tokenize()`, i.e. HuggingFace `BertTokenizer`
//! (uncased): control characters, U+0000 and U+FFFD dropped; whitespace splits; CJK ideographs
//! are tokens of their own; lower-case; accents stripped (NFD, then non-spacing marks dropped);
//! punctuation split off; greedy longest-match-first WordPiece with `##` continuations, a word of
//! more than 100 chars or with no match being `[UNK]`. A golden test checks tokens and vectors
//! against the script's output (`data/embed_golden.json`).
//!
//! **Only the first [`MAX_EMBED_BYTES`] (8 KiB) of a text are embedded** (cut at a char
//! boundary, so a word straddling the cut is seen truncated): the cost is linear in the text up
//! to that cap and flat after it. The router wants the gist of a prompt, and 8 KiB is ~1,500
//! words. No allocation per token: one word buffer, one scratch buffer and one piece buffer per
//! call, lookups by `&str`. In release, a 2 KB English prompt embeds in ~13 µs and a 200 B one in
//! ~1.1 µs (`benches/embed.rs`); text that is mostly accented or non-Latin takes ~2x as long, and
//! the cap bounds any call at ~50 µs. The table is parsed on the first use of
//! [`Embedder::builtin`] and takes `4 x dim` bytes per token (7.8 MB at 64 dimensions).

use std::sync::LazyLock;

use crate::classifier::model::digest;
use base64::Engine as _;
use rustc_hash::FxHashMap;
use unicode_general_category::{GeneralCategory, get_general_category};
use unicode_normalization::char::decompose_canonical;

/// Only this many leading bytes of a text are embedded (see the module docs).
pub const MAX_EMBED_BYTES: usize = 8 * 1024;

/// A word (after punctuation splitting) longer than this many chars is `[UNK]`, as in
/// `BertTokenizer`.
const MAX_WORD_CHARS: usize = 100;

const MAGIC: &[u8; 4] = b"KEMB";
const FORMAT_VERSION: u32 = 1;
const UNK: &str = "[UNK]";
/// Dimension assumed by the fallback embedder if the built-in table's header is unreadable.
const FALLBACK_DIM: usize = 64;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EmbedError {
    #[error("not an embedding table (bad magic)")]
    BadMagic,
    #[error("embedding table format v{0} is not supported (this build reads v{FORMAT_VERSION})")]
    UnsupportedVersion(u32),
    #[error("embedding table is truncated ({0})")]
    Truncated(&'static str),
    #[error("embedding table has {0} trailing bytes after the last token")]
    TrailingBytes(usize),
    #[error("invalid embedding table: {0}")]
    Invalid(&'static str),
    #[error("invalid embedding table: token #{index}: {reason}")]
    BadToken { index: usize, reason: &'static str },
    #[error("invalid embedding table: token {0:?} appears twice")]
    DuplicateToken(String),
}

/// A loaded static embedding table and its tokenizer. Cheap to share (`&'static` via
/// [`Embedder::builtin`]); every method takes `&self`.
pub struct Embedder {
    dim: usize,
    /// Token text -> id (row).
    vocab: FxHashMap<Box<str>, u32>,
    /// Id -> token text.
    tokens: Vec<Box<str>>,
    /// `n_tokens x dim`, row-major, dequantised at load time. (Keeping the file's int8 rows and
    /// scales would take a quarter of the memory, but embedding was ~12% slower.)
    table: Vec<f32>,
    unk: u32,
    /// Byte length of the longest token (`##` included): longer substrings are not looked up.
    max_token_bytes: usize,
    version: String,
}

impl std::fmt::Debug for Embedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the table.
        f.debug_struct("Embedder")
            .field("version", &self.version)
            .field("dim", &self.dim)
            .field("tokens", &self.tokens.len())
            .finish_non_exhaustive()
    }
}

static BUILTIN_BYTES: &[u8] = include_bytes!("../data/embed.bin");

static BUILTIN: LazyLock<Embedder> = LazyLock::new(|| {
    Embedder::from_bytes(BUILTIN_BYTES).unwrap_or_else(|_| {
        let dim = BUILTIN_BYTES
            .get(8..12)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes)
            .and_then(|d| usize::try_from(d).ok())
            .filter(|d| (1..=MAX_DIM).contains(d))
            .unwrap_or(FALLBACK_DIM);
        Embedder::untrained(dim)
    })
});

/// Upper bound on a table's dimension (a guard against a corrupt header).
const MAX_DIM: usize = 4096;

/// Reads the little-endian fields of a table file.
struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], EmbedError> {
        let end = self.pos.checked_add(n).ok_or(EmbedError::Truncated(what))?;
        let s = self
            .b
            .get(self.pos..end)
            .ok_or(EmbedError::Truncated(what))?;
        self.pos = end;
        Ok(s)
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, EmbedError> {
        let s = self.take(4, what)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }

    fn f32(&mut self, what: &'static str) -> Result<f32, EmbedError> {
        Ok(f32::from_bits(self.u32(what)?))
    }

    fn remaining(&self) -> usize {
        self.b.len() - self.pos
    }
}

impl Embedder {
    /// The table distilled by `scripts/distill_embeddings.py`, embedded in the binary and parsed
    /// once, on first use. (Were the embedded file unreadable — a test guarantees it is not —
    /// this would be an embedder that maps every text to the zero vector, whose
    /// [`version`](Self::version) is `"untrained"`.) Parsing takes ~7 ms in release: call this
    /// once at start-up to keep that off the first request.
    pub fn builtin() -> &'static Embedder {
        &BUILTIN
    }

    /// Parses a table file: `b"KEMB" | u32 version=1 | u32 dim | u32 n_tokens |
    /// n_tokens x (u8 len | utf-8 token | f32 scale | dim x i8)`, little-endian. The vocabulary
    /// must contain `[UNK]` and no token twice.
    pub fn from_bytes(b: &[u8]) -> Result<Embedder, EmbedError> {
        let mut r = Reader { b, pos: 0 };
        if r.take(4, "magic").map_err(|_| EmbedError::BadMagic)? != MAGIC {
            return Err(EmbedError::BadMagic);
        }
        let version = r.u32("header")?;
        if version != FORMAT_VERSION {
            return Err(EmbedError::UnsupportedVersion(version));
        }
        let dim = r.u32("header")? as usize;
        let n = r.u32("header")? as usize;
        if dim == 0 || dim > MAX_DIM {
            return Err(EmbedError::Invalid("dimension must be 1..=4096"));
        }
        if n == 0 {
            return Err(EmbedError::Invalid("no tokens"));
        }
        // Each record is at least 1 + 1 + 4 + dim bytes: check before allocating, so that a
        // corrupt count cannot ask for more memory than the file could describe.
        if n.checked_mul(dim + 6).is_none_or(|min| min > r.remaining()) {
            return Err(EmbedError::Truncated(
                "fewer token records than the header says",
            ));
        }
        let mut vocab = FxHashMap::with_capacity_and_hasher(n, Default::default());
        let mut tokens = Vec::with_capacity(n);
        let mut table = Vec::with_capacity(n * dim);
        let mut max_token_bytes = 0;
        for index in 0..n {
            let len = r.take(1, "token length")?[0] as usize;
            if len == 0 {
                return Err(EmbedError::BadToken {
                    index,
                    reason: "empty",
                });
            }
            let text = std::str::from_utf8(r.take(len, "token text")?).map_err(|_| {
                EmbedError::BadToken {
                    index,
                    reason: "not UTF-8",
                }
            })?;
            let scale = r.f32("token scale")?;
            if !scale.is_finite() {
                return Err(EmbedError::BadToken {
                    index,
                    reason: "scale is not finite",
                });
            }
            let row = r.take(dim, "token vector")?;
            table.extend(row.iter().map(|&x| scale * f32::from(x as i8)));
            let text: Box<str> = text.into();
            max_token_bytes = max_token_bytes.max(text.len());
            // `index < n <= u32::MAX`, so this never truncates.
            if vocab.insert(text.clone(), index as u32).is_some() {
                return Err(EmbedError::DuplicateToken(text.into()));
            }
            tokens.push(text);
        }
        if r.remaining() != 0 {
            return Err(EmbedError::TrailingBytes(r.remaining()));
        }
        let unk = *vocab
            .get(UNK)
            .ok_or(EmbedError::Invalid("the vocabulary has no [UNK]"))?;
        Ok(Embedder {
            dim,
            vocab,
            tokens,
            table,
            unk,
            max_token_bytes,
            version: format!("emb1-{dim}-{:016x}", digest(b)),
        })
    }

    /// A vocabulary of `[UNK]` alone, with a zero vector: every text embeds to zero.
    fn untrained(dim: usize) -> Embedder {
        let mut vocab = FxHashMap::default();
        vocab.insert(UNK.into(), 0);
        Embedder {
            dim,
            vocab,
            tokens: vec![UNK.into()],
            table: vec![0.0; dim],
            unk: 0,
            max_token_bytes: UNK.len(),
            version: "untrained".to_owned(),
        }
    }

    /// The embedding dimension (from the table's header).
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Identifies the table (its dimension and a hash of the file), to store beside embeddings:
    /// vectors made by different tables are not comparable.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Writes the embedding of `text` into `out`: the mean of its tokens' vectors, L2-normalised,
    /// or all zeros if `text` has no tokens. Only the first [`MAX_EMBED_BYTES`] are read.
    ///
    /// # Panics
    /// If `out.len() != self.dim()`.
    pub fn embed(&self, text: &str, out: &mut [f32]) {
        assert_eq!(out.len(), self.dim, "embedding buffer has the wrong length");
        out.fill(0.0);
        let dim = self.dim;
        // The mean's 1/n does not change the direction, so the sum is normalised directly.
        self.for_each_token(text, |id| {
            let id = id as usize;
            let row = &self.table[id * dim..(id + 1) * dim];
            for (o, &x) in out.iter_mut().zip(row) {
                *o += x;
            }
        });
        normalise(out);
    }

    /// [`embed`](Self::embed) into a new vector of length [`dim`](Self::dim).
    pub fn embed_vec(&self, text: &str) -> Vec<f32> {
        let mut v = vec![0.0; self.dim];
        self.embed(text, &mut v);
        v
    }

    /// The WordPiece tokens of `text` (of its first [`MAX_EMBED_BYTES`], as embedded).
    pub fn tokens(&self, text: &str) -> Vec<String> {
        let mut out = Vec::new();
        self.for_each_token(text, |id| out.push(self.tokens[id as usize].to_string()));
        out
    }

    /// Calls `sink` with the id of each WordPiece token of the first [`MAX_EMBED_BYTES`] of
    /// `text`, in order. Mirrors `basic_tokens` + `wordpiece` of the distillation script.
    fn for_each_token(&self, text: &str, mut sink: impl FnMut(u32)) {
        let text = &text[..text.floor_char_boundary(MAX_EMBED_BYTES)];
        let mut wp = WordPiece {
            word: String::with_capacity(64),
            chars: 0,
            scratch: String::with_capacity(64),
            pieces: Vec::with_capacity(16),
        };
        for ch in text.chars() {
            if ch.is_ascii() {
                // ASCII: lower-casing and NFD are trivial, categories are known.
                match ch {
                    ' ' | '\t' | '\n' | '\r' => self.flush(&mut wp, &mut sink),
                    '\0'..='\x1f' | '\x7f' => {} // control (\x0b and \x0c too: dropped, not spaces)
                    _ if ch.is_ascii_punctuation() => {
                        self.flush(&mut wp, &mut sink);
                        self.single(ch, &mut sink);
                    }
                    _ => wp.push(ch.to_ascii_lowercase()),
                }
                continue;
            }
            let cat = get_general_category(ch);
            if ch == '\u{FFFD}' || is_other(cat) {
                continue;
            }
            if ch.is_whitespace() || cat == GeneralCategory::SpaceSeparator {
                self.flush(&mut wp, &mut sink);
                continue;
            }
            if is_cjk(ch) {
                self.flush(&mut wp, &mut sink);
                self.single(ch, &mut sink);
                continue;
            }
            // Lower-case, then NFD, then drop non-spacing marks. NFD is applied char by char (as
            // in the script, which normalises each lower-cased input char on its own), so
            // `decompose_canonical` is enough: it skips only NFD's canonical reordering of the
            // marks within one char's decomposition, and the marks that reordering could swap
            // are non-spacing ones, dropped anyway.
            let mut emit = |c: char| {
                let cat = if c == ch {
                    cat
                } else {
                    get_general_category(c)
                };
                if cat == GeneralCategory::NonspacingMark {
                    return;
                }
                if c.is_ascii_punctuation() || is_punctuation(cat) {
                    self.flush(&mut wp, &mut sink);
                    self.single(c, &mut sink);
                } else {
                    wp.push(c);
                }
            };
            if has_lowercase_mapping(cat) {
                ch.to_lowercase()
                    .for_each(|lc| decompose_canonical(lc, &mut emit));
            } else {
                decompose_canonical(ch, &mut emit);
            }
        }
        self.flush(&mut wp, &mut sink);
    }

    /// A one-char word (punctuation, CJK ideograph): its token, or `[UNK]`.
    #[inline]
    fn single(&self, c: char, sink: &mut impl FnMut(u32)) {
        let mut buf = [0u8; 4];
        sink(
            self.vocab
                .get(&*c.encode_utf8(&mut buf))
                .copied()
                .unwrap_or(self.unk),
        );
    }

    /// Emits the WordPiece tokens of the word collected so far, and clears it.
    fn flush(&self, wp: &mut WordPiece, sink: &mut impl FnMut(u32)) {
        if wp.word.is_empty() {
            return;
        }
        if wp.chars > MAX_WORD_CHARS {
            sink(self.unk);
        } else if self.wordpiece(wp) {
            for &id in &wp.pieces {
                sink(id);
            }
        } else {
            sink(self.unk);
        }
        wp.word.clear();
        wp.chars = 0;
    }

    /// Greedy longest-match-first split of `wp.word` into `wp.pieces`; false if some part of the
    /// word matches no token (the whole word is then `[UNK]`).
    fn wordpiece(&self, wp: &mut WordPiece) -> bool {
        let WordPiece {
            word,
            scratch,
            pieces,
            ..
        } = wp;
        pieces.clear();
        let mut start = 0;
        while start < word.len() {
            let rest = &word[start..];
            let (key, prefix) = if start == 0 {
                (rest, 0)
            } else {
                scratch.clear();
                scratch.push_str("##");
                scratch.push_str(rest);
                (scratch.as_str(), 2)
            };
            // No token is longer than `max_token_bytes`: start from there.
            let mut end = rest.floor_char_boundary(self.max_token_bytes.saturating_sub(prefix));
            loop {
                if end == 0 {
                    return false;
                }
                if let Some(&id) = self.vocab.get(&key[..prefix + end]) {
                    pieces.push(id);
                    start += end;
                    break;
                }
                end = rest.floor_char_boundary(end - 1);
            }
        }
        true
    }
}

/// Per-call buffers of the tokenizer.
struct WordPiece {
    /// The current word, lower-cased and accent-stripped (at most `MAX_WORD_CHARS + 1` chars are
    /// kept: a longer word is `[UNK]` whatever it holds).
    word: String,
    /// Chars in the current word (counted past the ones kept).
    chars: usize,
    /// `##` + the rest of the word, for continuation lookups.
    scratch: String,
    /// Token ids of the word being split.
    pieces: Vec<u32>,
}

impl WordPiece {
    #[inline]
    fn push(&mut self, c: char) {
        if self.chars <= MAX_WORD_CHARS {
            self.word.push(c);
        }
        self.chars += 1;
    }
}

/// General category C* (control, format, unassigned, private use, surrogate).
fn is_other(cat: GeneralCategory) -> bool {
    matches!(
        cat,
        GeneralCategory::Control
            | GeneralCategory::Format
            | GeneralCategory::Unassigned
            | GeneralCategory::PrivateUse
            | GeneralCategory::Surrogate
    )
}

/// Whether chars of this category may lower-case to something else (upper- and title-case
/// letters, Roman numerals, circled letters); `char::to_lowercase` is skipped for the others, a
/// table search saved per char. A test checks this over every char.
fn has_lowercase_mapping(cat: GeneralCategory) -> bool {
    matches!(
        cat,
        GeneralCategory::UppercaseLetter
            | GeneralCategory::TitlecaseLetter
            | GeneralCategory::LetterNumber
            | GeneralCategory::OtherSymbol
    )
}

/// General category P*.
fn is_punctuation(cat: GeneralCategory) -> bool {
    matches!(
        cat,
        GeneralCategory::ConnectorPunctuation
            | GeneralCategory::DashPunctuation
            | GeneralCategory::OpenPunctuation
            | GeneralCategory::ClosePunctuation
            | GeneralCategory::InitialPunctuation
            | GeneralCategory::FinalPunctuation
            | GeneralCategory::OtherPunctuation
    )
}

/// The CJK ideograph blocks of `BertTokenizer._is_chinese_char`.
fn is_cjk(c: char) -> bool {
    matches!(
        c as u32,
        0x4E00..=0x9FFF
            | 0x3400..=0x4DBF
            | 0x20000..=0x2A6DF
            | 0x2A700..=0x2B73F
            | 0x2B740..=0x2B81F
            | 0x2B820..=0x2CEAF
            | 0xF900..=0xFAFF
            | 0x2F800..=0x2FA1F
    )
}

/// Scales `v` to unit length; leaves a zero (or non-finite) vector all zeros.
fn normalise(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 && norm.is_finite() {
        v.iter_mut().for_each(|x| *x /= norm);
    } else {
        v.fill(0.0);
    }
}

/// Packs an embedding for storage (e.g. on a ledger row): each component × 127, rounded and
/// clamped to `-127..=127`, as one byte each, base64 (standard alphabet, padded). A 64-dim
/// vector takes 88 chars.
pub fn quantize(v: &[f32]) -> String {
    let bytes: Vec<u8> = v
        .iter()
        // `as i8` maps NaN to 0.
        .map(|&x| (x * 127.0).round().clamp(-127.0, 127.0) as i8 as u8)
        .collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Unpacks a [`quantize`]d embedding and renormalises it to unit length (all zeros stays all
/// zeros). `None` if `s` is not base64 or does not hold exactly `dim` components.
pub fn dequantize(s: &str, dim: usize) -> Option<Vec<f32>> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(s).ok()?;
    if bytes.len() != dim {
        return None;
    }
    let mut v: Vec<f32> = bytes.iter().map(|&b| f32::from(b as i8) / 127.0).collect();
    normalise(&mut v);
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn norm(v: &[f32]) -> f32 {
        v.iter().map(|x| x * x).sum::<f32>().sqrt()
    }

    fn cosine(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    /// A table file with the given tokens; token i's vector is `vectors[i]`, quantised with a
    /// per-row scale like the script does.
    fn table_bytes(dim: u32, rows: &[(&str, Vec<f32>)]) -> Vec<u8> {
        let mut b = MAGIC.to_vec();
        b.extend(FORMAT_VERSION.to_le_bytes());
        b.extend(dim.to_le_bytes());
        b.extend((rows.len() as u32).to_le_bytes());
        for (tok, v) in rows {
            assert_eq!(v.len(), dim as usize);
            b.push(tok.len() as u8);
            b.extend(tok.as_bytes());
            let max = v.iter().fold(0.0f32, |m, x| m.max(x.abs()));
            let scale = if max == 0.0 { 1.0 } else { max / 127.0 };
            b.extend(scale.to_le_bytes());
            b.extend(v.iter().map(|x| (x / scale).round() as i8 as u8));
        }
        b
    }

    /// A tiny vocabulary with one-hot vectors, to test the tokenizer on hand-picked cases.
    fn tiny() -> Embedder {
        let toks = [
            "[UNK]", "un", "##aff", "##able", "aff", "a", "##a", "hello", ",", "world", "!", "中",
            "cafe", "i", "##²", "x",
        ];
        let dim = toks.len();
        let rows: Vec<(&str, Vec<f32>)> = toks
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let mut v = vec![0.0; dim];
                v[i] = 1.0;
                (*t, v)
            })
            .collect();
        Embedder::from_bytes(&table_bytes(dim as u32, &rows)).unwrap()
    }

    #[derive(serde::Deserialize)]
    struct Golden {
        dim: usize,
        prompts: Vec<GoldenPrompt>,
    }

    #[derive(serde::Deserialize)]
    struct GoldenPrompt {
        text: String,
        tokens: Vec<String>,
        vector: Vec<f32>,
    }

    #[test]
    fn builtin_table_loads() {
        let e = Embedder::from_bytes(BUILTIN_BYTES).unwrap();
        assert!(e.tokens.len() > 30_000, "{e:?}");
        assert_eq!(Embedder::builtin().version(), e.version());
        assert!(e.version().starts_with(&format!("emb1-{}-", e.dim())));
    }

    #[test]
    fn golden_tokens_and_vectors_match_the_script() {
        let golden: Golden =
            serde_json::from_str(include_str!("../data/embed_golden.json")).unwrap();
        let e = Embedder::builtin();
        assert_eq!(e.dim(), golden.dim);
        assert!(!golden.prompts.is_empty());
        for p in &golden.prompts {
            assert_eq!(e.tokens(&p.text), p.tokens, "tokens of {:?}", p.text);
            let v = e.embed_vec(&p.text);
            assert_eq!(v.len(), p.vector.len());
            for (i, (got, want)) in v.iter().zip(&p.vector).enumerate() {
                assert!(
                    (got - want).abs() <= 1e-4,
                    "{:?}: component {i}: {got} vs {want}",
                    p.text
                );
            }
        }
    }

    #[test]
    fn wordpiece_is_greedy_longest_match_first() {
        let e = tiny();
        assert_eq!(e.tokens("unaffable"), ["un", "##aff", "##able"]);
        // A word whose tail matches nothing is [UNK] as a whole, its matched head dropped.
        assert_eq!(e.tokens("unaffablez hello"), ["[UNK]", "hello"]);
        assert_eq!(e.tokens("zzz"), ["[UNK]"]);
        assert_eq!(e.tokens("x²"), ["x", "##²"]);
    }

    #[test]
    fn basic_tokenizer_rules() {
        let e = tiny();
        // Lower-case, punctuation split off, accents stripped, CJK on its own.
        assert_eq!(e.tokens("HeLLo,World!"), ["hello", ",", "world", "!"]);
        assert_eq!(e.tokens("CAFÉ"), ["cafe"]);
        assert_eq!(e.tokens("Cafe\u{301}"), ["cafe"]);
        assert_eq!(e.tokens("hello中world"), ["hello", "中", "world"]);
        // Control and format chars are dropped without splitting (\x0b and \x0c included, as in
        // BertTokenizer); tabs, newlines and Unicode spaces split.
        assert_eq!(
            e.tokens("hel\x0blo\u{200b} wor\0ld\u{fffd}"),
            ["hello", "world"]
        );
        assert_eq!(
            e.tokens("hello\tworld\u{3000}hello\u{2028}!"),
            ["hello", "world", "hello", "!"]
        );
        // Unicode punctuation (P*) splits; a punctuation char not in the vocabulary is [UNK].
        assert_eq!(e.tokens("hello\u{2014}world"), ["hello", "[UNK]", "world"]);
        // İ lower-cases to i + U+0307, whose mark is then stripped.
        assert_eq!(e.tokens("İ"), ["i"]);
        assert!(e.tokens(" \t\n ").is_empty());
    }

    #[test]
    fn only_the_categories_said_to_have_lowercase_mappings_have_them() {
        for c in (0..=0x10FFFFu32).filter_map(char::from_u32) {
            let cat = get_general_category(c);
            if !has_lowercase_mapping(cat) && !is_other(cat) {
                assert!(
                    c.to_lowercase().eq([c]),
                    "{c:?} ({cat:?}) lower-cases to {:?}",
                    c.to_lowercase().to_string()
                );
            }
        }
    }

    #[test]
    fn words_over_100_chars_are_unk() {
        let e = tiny();
        let hundred = "a".repeat(100);
        let toks = e.tokens(&hundred);
        assert_eq!(toks.len(), 100);
        assert_eq!(toks[0], "a");
        assert!(toks[1..].iter().all(|t| t == "##a"));
        // 101 chars once the accent of the last one is stripped.
        assert_eq!(e.tokens(&format!("{hundred}á")), ["[UNK]"]);
        assert_eq!(
            e.tokens(&format!("{hundred}a, hello")),
            ["[UNK]", ",", "hello"]
        );
    }

    #[test]
    fn embedding_is_the_normalised_mean() {
        let e = tiny();
        let v = e.embed_vec("hello world hello");
        // One-hot rows: hello twice, world once.
        let (h, w) = (e.vocab["hello"] as usize, e.vocab["world"] as usize);
        let n = 5f32.sqrt();
        assert!(
            (v[h] - 2.0 / n).abs() < 1e-6 && (v[w] - 1.0 / n).abs() < 1e-6,
            "{v:?}"
        );
        assert!((norm(&v) - 1.0).abs() < 1e-6);
        assert!(e.embed_vec("").iter().all(|&x| x == 0.0));
        assert!(e.embed_vec("\u{1}\u{2}").iter().all(|&x| x == 0.0));
    }

    #[test]
    fn only_the_first_8_kib_are_embedded() {
        let e = Embedder::builtin();
        let head = "the quick brown fox jumps over the lazy dog. ".repeat(200);
        let head = &head[..MAX_EMBED_BYTES];
        let long = format!(
            "{head}zebra giraffe elephant {}",
            "mathematics ".repeat(1000)
        );
        assert_eq!(e.embed_vec(&long), e.embed_vec(head));
        assert_eq!(e.tokens(&long), e.tokens(head));
        // A multi-byte char straddling the cut is dropped, not split.
        let straddle = format!("{}bé", "a ".repeat((MAX_EMBED_BYTES - 1) / 2));
        assert_eq!(straddle.len(), MAX_EMBED_BYTES + 1);
        assert_eq!(e.tokens(&straddle).last().map(String::as_str), Some("b"));
        assert_ne!(e.tokens("bé").last().map(String::as_str), Some("b"));
    }

    #[test]
    fn similar_prompts_are_closer_than_unrelated_ones() {
        let e = Embedder::builtin();
        let a = e.embed_vec("Write a Python function that sorts a list of integers.");
        let b = e.embed_vec("Implement a function in Python to sort an array of numbers.");
        let c = e.embed_vec("What was the capital of the Roman empire in the fifth century?");
        assert!(
            cosine(&a, &b) > cosine(&a, &c),
            "{} vs {}",
            cosine(&a, &b),
            cosine(&a, &c)
        );
    }

    #[test]
    #[should_panic(expected = "wrong length")]
    fn embed_checks_the_buffer_length() {
        let e = tiny();
        e.embed("hello", &mut vec![0.0; e.dim() + 1]);
    }

    #[test]
    fn bad_tables_are_rejected() {
        let good = table_bytes(2, &[("[UNK]", vec![1.0, 0.0]), ("a", vec![0.0, 1.0])]);
        assert!(Embedder::from_bytes(&good).is_ok());
        let err = |b: &[u8]| Embedder::from_bytes(b).unwrap_err();

        assert_eq!(err(b""), EmbedError::BadMagic);
        assert_eq!(err(b"KEM"), EmbedError::BadMagic);
        let mut b = good.clone();
        b[0] = b'X';
        assert_eq!(err(&b), EmbedError::BadMagic);

        let mut b = good.clone();
        b[4..8].copy_from_slice(&2u32.to_le_bytes());
        assert_eq!(err(&b), EmbedError::UnsupportedVersion(2));

        // Every proper prefix past the magic is truncated.
        for cut in 4..good.len() {
            assert!(
                matches!(err(&good[..cut]), EmbedError::Truncated(_)),
                "cut at {cut}: {:?}",
                err(&good[..cut])
            );
        }
        let mut b = good.clone();
        b.push(0);
        assert_eq!(err(&b), EmbedError::TrailingBytes(1));

        // A huge token count fails cleanly instead of allocating.
        let mut b = good.clone();
        b[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(err(&b), EmbedError::Truncated(_)));

        let mut b = good.clone();
        b[8..12].copy_from_slice(&0u32.to_le_bytes());
        assert!(matches!(err(&b), EmbedError::Invalid(_)));

        let no_unk = table_bytes(1, &[("a", vec![1.0])]);
        assert!(matches!(err(&no_unk), EmbedError::Invalid(_)));
        let dup = table_bytes(
            1,
            &[("[UNK]", vec![1.0]), ("a", vec![1.0]), ("a", vec![0.5])],
        );
        assert_eq!(err(&dup), EmbedError::DuplicateToken("a".into()));
        let mut bad_utf8 = table_bytes(1, &[("[UNK]", vec![1.0]), ("a", vec![1.0])]);
        let a_at = bad_utf8.len() - 1 - 4 - 1;
        assert_eq!(bad_utf8[a_at], b'a');
        bad_utf8[a_at] = 0xff;
        assert_eq!(
            err(&bad_utf8),
            EmbedError::BadToken {
                index: 1,
                reason: "not UTF-8"
            }
        );
    }

    #[test]
    fn dimension_comes_from_the_header() {
        let rows: Vec<(&str, Vec<f32>)> = vec![
            ("[UNK]", vec![0.0; 128]),
            ("hello", (0..128).map(|i| i as f32).collect()),
        ];
        let e = Embedder::from_bytes(&table_bytes(128, &rows)).unwrap();
        assert_eq!(e.dim(), 128);
        let v = e.embed_vec("hello");
        assert_eq!(v.len(), 128);
        assert!((norm(&v) - 1.0).abs() < 1e-5);
        assert!(v[127] > v[1] && v[0] == 0.0);
    }

    #[test]
    fn quantize_round_trips() {
        let e = Embedder::builtin();
        let v = e.embed_vec("Summarise this article in three bullet points.");
        let s = quantize(&v);
        assert_eq!(s.len(), e.dim().div_ceil(3) * 4);
        let w = dequantize(&s, e.dim()).unwrap();
        assert!((norm(&w) - 1.0).abs() < 1e-5);
        assert!(cosine(&v, &w) > 0.999, "{}", cosine(&v, &w));
        for (a, b) in v.iter().zip(&w) {
            assert!((a - b).abs() < 0.02, "{a} vs {b}");
        }
        // Exact on the grid; out-of-range and NaN components are clamped / zeroed.
        assert_eq!(
            quantize(&[1.0, -1.0, 0.0]),
            quantize(&[3.0, -2.0, f32::NAN])
        );
        // 0.6 -> 76, -0.8 -> -102, renormalised.
        let w = dequantize(&quantize(&[0.6, -0.8]), 2).unwrap();
        let n = 76f32.hypot(102.0);
        assert!(
            (w[0] - 76.0 / n).abs() < 1e-6 && (w[1] + 102.0 / n).abs() < 1e-6,
            "{w:?}"
        );
        assert_eq!(dequantize(&quantize(&[0.0; 4]), 4).unwrap(), [0.0; 4]);
        assert_eq!(dequantize(&s, e.dim() + 1), None);
        assert_eq!(dequantize("not base64!", 3), None);
    }

    /// Strings mixing ASCII, control chars, accents, CJK, marks, emoji and odd spaces.
    fn nasty_string() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            any::<String>(),
            "[a-zA-Z0-9 .,!?'\"()-]{0,40}",
            "[\\x00-\\x1f\\x7f\u{80}-\u{9f}\u{200b}-\u{200f}\u{fffd}\u{feff}]{0,8}",
            "[àéîõüçñÅØß\u{300}-\u{36f}İΣσς中文字日本語한국어😀👍🏽\u{2028}\u{3000}\u{a0}]{0,20}",
            "[a-z]{90,130}",
        ];
        (proptest::collection::vec(piece, 0..8), 0usize..3).prop_map(|(parts, rep)| {
            let s = parts.concat();
            // Sometimes far past the 8 KiB cap.
            if rep == 2 {
                s.repeat(20_000 / (s.len() + 1) + 1)
            } else {
                s
            }
        })
    }

    proptest! {
        #[test]
        fn any_text_embeds_to_a_unit_or_zero_vector(text in nasty_string()) {
            let e = Embedder::builtin();
            let v = e.embed_vec(&text);
            prop_assert_eq!(v.len(), e.dim());
            prop_assert!(v.iter().all(|x| x.is_finite()));
            let n = norm(&v);
            prop_assert!(n == 0.0 || (n - 1.0).abs() < 1e-4, "norm {}", n);
            let toks = e.tokens(&text);
            prop_assert_eq!(n == 0.0, toks.is_empty());
            prop_assert!(toks.iter().all(|t| e.vocab.contains_key(t.as_str())));
        }

        #[test]
        fn quantize_round_trips_any_unit_vector(raw in proptest::collection::vec(-1.0f32..1.0, 1..=256)) {
            let mut v = raw;
            normalise(&mut v);
            let w = dequantize(&quantize(&v), v.len()).unwrap();
            let n = norm(&v);
            if n == 0.0 {
                prop_assert!(w.iter().all(|&x| x == 0.0));
            } else {
                prop_assert!((norm(&w) - 1.0).abs() < 1e-4);
                // Rounding moves each component by at most 0.5/127, so the error vector is at
                // most 16 * 0.5/127 = 0.063 long (256 dims); renormalising adds < 0.07.
                prop_assert!(cosine(&v, &w) > 0.99);
                prop_assert!(v.iter().zip(&w).all(|(a, b)| (a - b).abs() < 0.075));
            }
        }
    }
}

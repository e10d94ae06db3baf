"""Reproduce crates/kairos-router/src/embed.rs in Python (same table, same tokenizer)."""
import os as _os
HERE = _os.path.dirname(_os.path.abspath(__file__))
ROOT = _os.path.abspath(_os.path.join(HERE, "..", "..", ".."))
OUT = _os.environ.get("KAIROS_ANALYSIS_DIR", _os.path.join(ROOT, "target", "analysis"))
_os.makedirs(OUT, exist_ok=True)
import struct, sys, json
import numpy as np
sys.path.insert(0, _os.path.join(ROOT, "scripts"))
from distill_embeddings import tokenize  # BertTokenizer-compatible, as the Rust reader mirrors

MAX_EMBED_BYTES = 8 * 1024

def load(path=_os.path.join(ROOT, "crates/kairos-router/data/embed.bin")):
    b = open(path, "rb").read()
    assert b[:4] == b"KEMB"
    ver, dim, n = struct.unpack_from("<III", b, 4)
    pos = 16
    vocab = {}
    table = np.zeros((n, dim), dtype=np.float32)
    for i in range(n):
        l = b[pos]; pos += 1
        tok = b[pos:pos + l].decode("utf-8"); pos += l
        scale = struct.unpack_from("<f", b, pos)[0]; pos += 4
        row = np.frombuffer(b, dtype=np.int8, count=dim, offset=pos); pos += dim
        table[i] = np.float32(scale) * row.astype(np.float32)
        vocab[tok] = i
    assert pos == len(b)
    return vocab, table

def truncate(text):
    bs = text.encode("utf-8")
    if len(bs) <= MAX_EMBED_BYTES:
        return text
    cut = MAX_EMBED_BYTES
    while cut > 0 and (bs[cut] & 0xC0) == 0x80:
        cut -= 1
    return bs[:cut].decode("utf-8")

def embed(text, vocab, table):
    toks = tokenize(truncate(text), vocab)
    v = np.zeros(table.shape[1], dtype=np.float32)
    for t in toks:
        v += table[vocab[t]]
    n = np.linalg.norm(v)
    return v / n if n > 0 else v

if __name__ == "__main__":
    vocab, table = load()
    g = json.load(open(_os.path.join(ROOT, "crates/kairos-router/data/embed_golden.json")))
    for p in g["prompts"]:
        v = embed(p["text"], vocab, table)
        assert tokenize(p["text"], vocab) == p["tokens"]
        print("golden max abs diff", np.abs(v - np.array(p["vector"])).max())
    recs = [json.loads(l) for l in open(_os.path.join(OUT, "mmlu.jsonl"))][1:]
    E = np.stack([embed(r["prompt"], vocab, table) for r in recs])
    np.save(_os.path.join(OUT, "emb.npy"), E)
    print(E.shape)

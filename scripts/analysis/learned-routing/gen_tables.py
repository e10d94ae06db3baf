"""Re-run the steps of /work/main/scripts/distill_embeddings.py (same code, imported) and keep
the static per-token vectors at 64 (check against embed.bin), 128 and 384 (no PCA cut) dims.
Then embed every MMLU prompt exactly as embed.rs does (8 KiB cut, sum of rows, L2 norm) and
write emb{64r,128,384}.npy plus toks.npy (token ids per prompt, for the text features)."""
import os as _os
HERE = _os.path.dirname(_os.path.abspath(__file__))
ROOT = _os.path.abspath(_os.path.join(HERE, "..", "..", ".."))
OUT = _os.environ.get("KAIROS_ANALYSIS_DIR", _os.path.join(ROOT, "target", "analysis"))
_os.makedirs(OUT, exist_ok=True)
import sys, time, json, collections
sys.path.insert(0, _os.path.join(ROOT, "scripts"))
import numpy as np
import distill_embeddings as de
from safetensors.numpy import load_file
from embed import load as load_bin, truncate

t0 = time.time()
mdir = de.model_dir()
vocab_list = [l.rstrip("\n") for l in open(mdir / "vocab.txt", encoding="utf-8")]
vocab = {t: i for i, t in enumerate(vocab_list)}
n = len(vocab_list)
try:
    raw = np.load(_os.path.join(OUT, "raw384.npy"))
except FileNotFoundError:
    enc = de.Encoder(load_file(str(mdir / "model.safetensors")))
    cls, sep = vocab["[CLS]"], vocab["[SEP]"]
    raw = np.zeros((n, 384), dtype=np.float64)
    for s in range(0, n, 2048):
        ids = np.array([[cls, t, sep] for t in range(s, min(n, s + 2048))])
        raw[s:s + len(ids)] = enc(ids, np.ones(ids.shape, dtype=np.float32)).mean(1)
    np.save(_os.path.join(OUT, "raw384.npy"), raw)
print(f"raw token table {raw.shape} in {time.time()-t0:.0f}s", flush=True)

mean = raw.mean(0); centred = raw - mean
cov = centred.T @ centred / n
vals, vecs = np.linalg.eigh(cov)
order = np.argsort(vals)[::-1]; vals, vecs = vals[order], vecs[:, order]
vecs = vecs * np.sign(vecs[np.abs(vecs).argmax(0), range(vecs.shape[1])])

counts = collections.Counter()
for text in de.corpus_texts():
    counts.update(de.tokenize(text[:4000], vocab))
total = sum(counts.values())
weights = np.array([de.SIF_A / (de.SIF_A + counts.get(t, 0) / max(total, 1)) for t in vocab_list])
print(f"SIF from {total:,} tokens, {time.time()-t0:.0f}s", flush=True)

def quant(table):
    scales = np.abs(table).max(1) / 127.0
    scales[scales == 0] = 1.0
    q = np.clip(np.rint(table / scales[:, None]), -127, 127).astype(np.int8)
    return (np.float32(1) * scales.astype(np.float32)[:, None] * q.astype(np.float32)).astype(np.float32)

tables = {}
for dim in (64, 128, 384):
    proj = centred @ vecs[:, :dim]   # dim=384: a pure rotation of the centred table (no cut)
    print(f"PCA 384->{dim}: {vals[:dim].sum()/vals.sum():.1%} variance", flush=True)
    tables[dim] = quant(proj * weights[:, None])

# check against the shipped table
bvocab, btable = load_bin()
assert [t for t, _ in sorted(bvocab.items(), key=lambda kv: kv[1])] == vocab_list
d = np.abs(btable - tables[64])
print(f"64-d regenerated vs embed.bin: max abs diff {d.max():.2e}, rows differing {(d.max(1) > 1e-6).sum()}", flush=True)

recs = [json.loads(l) for l in open(_os.path.join(OUT, "mmlu.jsonl")) if l.strip()][1:]
toks = [np.array([vocab[t] for t in de.tokenize(truncate(r["prompt"]), vocab)], dtype=np.int32) for r in recs]
print(f"tokenised {len(toks)} prompts, {time.time()-t0:.0f}s", flush=True)
np.save(_os.path.join(OUT, "toks.npy"), np.array(toks, dtype=object), allow_pickle=True)
for dim, tab in tables.items():
    E = np.stack([tab[t].sum(0) for t in toks]).astype(np.float32)
    E /= np.maximum(np.linalg.norm(E, axis=1, keepdims=True), 1e-30)
    name = "64r" if dim == 64 else str(dim)
    np.save(f_os.path.join(OUT, "emb{name}.npy"), E)
E0 = np.load(_os.path.join(OUT, "emb.npy"))
print("emb64r vs emb.npy max abs diff", np.abs(np.load(_os.path.join(OUT, "emb64r.npy")) - E0).max())
print(f"done {time.time()-t0:.0f}s")

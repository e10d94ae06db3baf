"""Simulation of `kairos eval routing --warm` (eval.rs warm_run + value_sweep) with pluggable
estimators. Single task (no classifier; see REPORT.md). Models: 0 = gpt-4-1106-preview
(reference), 1 = Mixtral-8x7B."""
import os as _os
HERE = _os.path.dirname(_os.path.abspath(__file__))
ROOT = _os.path.abspath(_os.path.join(HERE, "..", "..", ".."))
OUT = _os.environ.get("KAIROS_ANALYSIS_DIR", _os.path.join(ROOT, "target", "analysis"))
_os.makedirs(OUT, exist_ok=True)
import json, math
import numpy as np

MASK = (1 << 64) - 1

def split_unit(id_, seed):
    h = 0xcbf29ce484222325
    for b in seed.to_bytes(8, "little") + id_.encode():
        h ^= b
        h = (h * 0x00000100000001b3) & MASK
    h ^= h >> 30; h = (h * 0xbf58476d1ce4e5b9) & MASK
    h ^= h >> 27; h = (h * 0x94d049bb133111eb) & MASK
    h ^= h >> 31
    return (h >> 11) / float(1 << 53)

def load():
    lines = [l for l in open(_os.path.join(OUT, "mmlu.jsonl")).read().split("\n") if l.strip()]
    meta = json.loads(lines[0])
    recs = [json.loads(l) for l in lines[1:]]
    names = sorted(meta["models"])  # BTreeMap order: gpt-4 first
    assert names[0].startswith("gpt-4")
    pin = np.array([round(meta["models"][m]["input_usd_per_mtok"] * 1e6) for m in names], dtype=np.int64)
    pout = np.array([round(meta["models"][m]["output_usd_per_mtok"] * 1e6) for m in names], dtype=np.int64)
    ids = [r["id"] for r in recs]
    tin = np.array([r["input_tokens"] for r in recs], dtype=np.int64)
    Y = np.array([[r["outcomes"][m]["quality"] for m in names] for r in recs])
    out = np.array([[r["outcomes"][m]["output_tokens"] for m in names] for r in recs], dtype=np.int64)
    # decision cost (micro-USD, div_ceil), est output tokens = max_tokens = 1
    tot = tin[:, None] * pin[None] + 1 * pout[None]
    cost_dec = (-(-tot // 1_000_000)).astype(np.float64) / 1e6
    cost_true = (tin[:, None] * pin[None] + out * pout[None]) / 1e12
    E = np.load(_os.path.join(OUT, "emb.npy"))
    Q = np.clip(np.round(E * 127.0), -127, 127).astype(np.float32)  # i16 quantised
    return dict(ids=ids, Y=Y, cost_dec=cost_dec, cost_true=cost_true, E=E, Q=Q, names=names)

def value_grid(lo=1e-4, hi=1.0, per=8):
    dec = math.log10(hi / lo)
    n = round(dec * per)
    return [lo * 10 ** (dec * i / n) for i in range(n + 1)]

class Split:
    def __init__(self, D, seed):
        ids = D["ids"]
        tr = [i for i in range(len(ids)) if split_unit(ids[i], seed) < 0.5]
        te = [i for i in range(len(ids)) if not split_unit(ids[i], seed) < 0.5]
        tr.sort(key=lambda i: split_unit(ids[i], seed ^ 0x5eed))
        self.tr = np.array(tr); self.te = np.array(te)
        Q = D["Q"]
        # integer dot products / 127^2 (exact in float32)
        self.S_tr = (Q[self.tr] @ Q[self.tr].T) * np.float32(1 / (127 * 127))
        self.S_te = (Q[self.te] @ Q[self.tr].T) * np.float32(1 / (127 * 127))
        self.seed = seed

def replay(D, sp, est_factory, value, seed, explore=0.05, max_points=4096, explore_policy=None):
    """One warm run at one value. est_factory() -> estimator with
    estimate(sims, ring_idx, rm, ry, qi) -> (mean[2], n[2]) and observe(...)."""
    rng = np.random.default_rng(seed * 1_000_003 + int(round(math.log(value) * 1000)) + 100_000)
    Y = D["Y"]; C = D["cost_dec"]
    tr, te = sp.tr, sp.te
    ntr = len(tr)
    chosen = np.zeros(ntr, dtype=np.int64)
    ys = np.zeros(ntr)
    est = est_factory()
    est.reset(D, sp)
    explored = 0
    obs = [0, 0]
    for t in range(ntr):
        lo = max(0, t - max_points)
        p = tr[t]
        sims = sp.S_tr[t, lo:t]
        mean, n = est.estimate(sims, chosen[lo:t], ys[lo:t], p, lo, t)
        q = mean
        if explore_policy is not None:
            q, did = explore_policy(rng, mean, n, value, C[p], t, ntr, est)
            explored += did
        elif explore > 0 and rng.random() < explore:
            explored += 1
            a = np.maximum(mean * n, 1e-3); b = np.maximum((1 - mean) * n, 1e-3)
            q = np.clip(rng.beta(a, b), 0, 1)
        vals = value * np.maximum(q, 0) - C[p]
        m = choose(vals, C[p])
        chosen[t] = m
        ys[t] = Y[p, m]
        obs[m] += 1
        est.observe(t, p, m, Y[p, m])
    # test: final ring
    lo = max(0, ntr - max_points)
    ch = np.zeros(len(te), dtype=np.int64)
    est.finalize(chosen, ys, lo, ntr)
    for j, p in enumerate(te):
        sims = sp.S_te[j, lo:ntr]
        mean, n = est.estimate(sims, chosen[lo:ntr], ys[lo:ntr], p, lo, ntr, test=True)
        ch[j] = choose(value * np.maximum(mean, 0) - C[p], C[p])
    return ch, explored, obs

def choose(vals, cost):
    # max value, ties -> cheaper (better_value)
    best = 0
    for i in range(1, len(vals)):
        if vals[i] > vals[best] or (vals[i] == vals[best] and cost[i] < cost[best]):
            best = i
    return best

def score(D, idx, ch):
    Y = D["Y"]; CT = D["cost_true"]
    q = Y[idx, ch].mean(); c = CT[idx, ch].sum()
    qr = Y[idx, 0].mean(); cr = CT[idx, 0].sum()
    return 100 * q / qr, 100 * (1 - c / cr), 100 * (ch == 0).mean()

def sweep(D, sp, est_factory, seed, values=None, **kw):
    values = values or value_grid()
    rows = []
    for v in values:
        ch, ex, obs = replay(D, sp, est_factory, v, seed, **kw)
        r, s, g = score(D, sp.te, ch)
        rows.append((v, r, s, g, ex, obs))
    best = lambda m: max([x[2] for x in rows if x[1] >= m], default=float("nan"))
    return best(95.0), best(99.0), rows

class DevSplit:
    """Selection without the test half: the first 70% of the training half (replay order) is
    the traffic, the last 30% of it the evaluation set."""
    def __init__(self, sp, frac=0.7):
        n = len(sp.tr); c = int(n * frac)
        self.tr = sp.tr[:c]; self.te = sp.tr[c:]
        self.S_tr = sp.S_tr[:c, :c]; self.S_te = sp.S_tr[c:, :c]
        self.seed = sp.seed

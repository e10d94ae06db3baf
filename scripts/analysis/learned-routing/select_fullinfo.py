"""Estimator selection WITHOUT the test half: within each seed's training half (in replay order),
the first 4096 prompts are the ring (full information: both outcomes), the rest (~2.9k) the
validation set. Metric: best saved at >=95% / >=99% over the value grid on validation."""
import os as _os
HERE = _os.path.dirname(_os.path.abspath(__file__))
ROOT = _os.path.abspath(_os.path.join(HERE, "..", "..", ".."))
OUT = _os.environ.get("KAIROS_ANALYSIS_DIR", _os.path.join(ROOT, "target", "analysis"))
_os.makedirs(OUT, exist_ok=True)
import sys
sys.path.insert(0, HERE)
from sim import *
import numpy as np
D = load(); Y = D["Y"]; C = D["cost_dec"]; E = D["E"]
def sig(z): return 1 / (1 + np.exp(-z))
def sweep_idx(idx, qhat):
    rows = []
    for v in value_grid(1e-4, 1, 8):
        u = v * qhat - C[idx]
        ch = np.where(u[:, 1] >= u[:, 0], 1, 0)
        rows.append(score(D, idx, ch))
    b = lambda m: max([s for r, s, g in rows if r >= m], default=np.nan)
    return b(95), b(99)
res = {}
def add(name, r):
    res.setdefault(name, []).append(r)
for seed in range(6):
    sp = Split(D, seed)
    ring = sp.tr[:4096]; val = sp.tr[4096:]
    S = sp.S_tr[4096:, :4096]
    Yr = Y[ring]; mu = Yr.mean(0)
    order = np.argsort(-S, axis=1)
    for k in [20, 50, 100]:
        idx = order[:, :k]
        sraw = np.take_along_axis(S, idx, 1)
        for kern in ["lin", "exp0.05"]:
            if kern == "lin": s = np.clip(sraw, 0, 1)
            else:
                tau = float(kern[3:]); s = np.exp((sraw - sraw[:, :1]) / tau)
            for a in [2, 10]:
                q = np.stack([(s * Yr[idx, m]).sum(1) for m in range(2)], 1)
                qh = (q + a * mu) / (s.sum(1, keepdims=True) + a)
                add(f"knn k{k} {kern} a{a}", sweep_idx(val, qh))
            # pooled IRT (full info here: both outcomes of each neighbour)
            th = np.log(mu / (1 - mu))
            for ab in [0.3, 1.0, 3.0]:
                b = np.zeros(len(val))
                for _ in range(4):
                    p = sig(th[None, None] - b[:, None, None])
                    g = (s[:, :, None] * (Yr[idx] - p)).sum((1, 2)) + ab * b
                    h = (s[:, :, None] * p * (1 - p)).sum((1, 2)) + ab
                    b -= g / h
                add(f"irt k{k} {kern} ab{ab}", sweep_idx(val, sig(th[None] - b[:, None])))
    print("seed", seed, flush=True)
out = sorted(((np.nanmean([r[0] for r in v]), np.nanmean([r[1] for r in v]), k) for k, v in res.items()), reverse=True)
for m95, m99, k in out:
    print(f"{k:30s} val95 {m95:5.1f}  val99 {m99:5.1f}   per-seed95 {[round(r[0],1) for r in res[k]]}")

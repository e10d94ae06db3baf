import os as _os
HERE = _os.path.dirname(_os.path.abspath(__file__))
ROOT = _os.path.abspath(_os.path.join(HERE, "..", "..", ".."))
OUT = _os.environ.get("KAIROS_ANALYSIS_DIR", _os.path.join(ROOT, "target", "analysis"))
_os.makedirs(OUT, exist_ok=True)
import sys
sys.path.insert(0, HERE)
from sim import *
import numpy as np
D = load()
Y = D["Y"]; C = D["cost_dec"]; E = D["E"]
print("joint (G,M):", {(a, b): round(float(((Y[:, 0] == a) & (Y[:, 1] == b)).mean()), 3) for a in (0, 1) for b in (0, 1)})
def sweep_est(sp, qhat):
    te = sp.te
    rows = []
    for v in value_grid(1e-4, 1, 8):
        u = v * qhat - C[te]
        ch = np.where(u[:, 1] >= u[:, 0], 1, 0)
        rows.append(score(D, te, ch))
    b = lambda m: max([s for r, s, g in rows if r >= m], default=np.nan)
    return round(b(95), 1), round(b(99), 1)
def sig(z): return 1 / (1 + np.exp(-z))
def fit_lr(X, y, lam=1.0, iters=200):
    # Newton / IRLS with L2
    w = np.zeros(X.shape[1])
    for _ in range(iters):
        p = sig(X @ w)
        g = X.T @ (p - y) + lam * w
        H = (X * (p * (1 - p))[:, None]).T @ X + lam * np.eye(X.shape[1])
        step = np.linalg.solve(H, g)
        w -= step
        if np.abs(step).max() < 1e-8: break
    return w
ntok = np.log(np.array([1.0]) if False else np.log1p(D["cost_true"][:, 1] * 1e12 / 0.6e6))  # log input tokens-ish
X = np.hstack([E, np.ones((len(E), 1))])
X2 = np.hstack([E, ntok[:, None] - ntok.mean(), np.ones((len(E), 1))])
for seed in [0, 1, 2]:
    sp = Split(D, seed); tr, te = sp.tr, sp.te
    out = {}
    for lam in [0.1, 1, 10]:
        qh = np.stack([sig(X[te] @ fit_lr(X[tr], Y[tr, m], lam)) for m in range(2)], 1)
        out[f"lr{lam}"] = sweep_est(sp, qh)
        qh = np.stack([sig(X2[te] @ fit_lr(X2[tr], Y[tr, m], lam)) for m in range(2)], 1)
        out[f"lr+len{lam}"] = sweep_est(sp, qh)
    # IRT pooled: b(x) via kNN over both models, de-biased by theta
    th = np.log(Y[tr].mean(0) / (1 - Y[tr].mean(0)))
    for k in [20, 50, 100, 200]:
        S = sp.S_te
        idx = np.argpartition(-S, k, axis=1)[:, :k]
        s = np.clip(np.take_along_axis(S, idx, 1), 0, 1)
        # residual logit approach: average of y - sigma(theta_m) over both models -> shift
        r = (Y[tr][idx] - sig(th)[None, None]).sum(2)  # k x both
        d = (s * r).sum(1) / (2 * s.sum(1) + 2 * 2)   # shrink
        # map to difficulty: solve approx b = -d / mean slope
        slope = (sig(th) * (1 - sig(th))).mean()
        b = -d / slope
        qh = sig(th[None] - b[:, None])
        out[f"irt{k}"] = sweep_est(sp, qh)
    print(seed, out, flush=True)

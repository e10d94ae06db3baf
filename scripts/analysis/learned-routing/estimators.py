import os as _os
HERE = _os.path.dirname(_os.path.abspath(__file__))
ROOT = _os.path.abspath(_os.path.join(HERE, "..", "..", ".."))
OUT = _os.environ.get("KAIROS_ANALYSIS_DIR", _os.path.join(ROOT, "target", "analysis"))
_os.makedirs(OUT, exist_ok=True)
import numpy as np

def topk(sims, mask, k):
    idx = np.flatnonzero(mask)
    if len(idx) > k:
        part = np.argpartition(-sims[idx], k - 1)[:k]
        idx = idx[part]
    return idx

class Base:
    def reset(self, D, sp):
        self.sy = np.zeros(2); self.n = np.zeros(2)
        self.D = D; self.sp = sp
    def observe(self, t, p, m, y):
        self.sy[m] += y; self.n[m] += 1
    def finalize(self, chosen, ys, lo, hi):
        pass
    def task_mean(self):
        # prior 0.5 worth 2 (models not in the quality table), single task
        model_mean = (2 * 0.5 + self.sy) / (2 + self.n)
        mm = np.minimum(10.0, 2 + self.n)
        tm = (mm * model_mean + self.sy) / (mm + self.n)
        return tm, mm + self.n

class KNN(Base):
    """learn.rs Learner::estimate: per-model top-k, sim-weighted, shrunk to the task mean."""
    def __init__(self, k=20, a=2.0):
        self.k = k; self.a = a
    def estimate(self, sims, rm, ry, p, lo, hi, test=False):
        tm, tn = self.task_mean()
        mean = tm.copy(); n = tn.copy()
        for m in range(2):
            idx = topk(sims, rm == m, self.k)
            if len(idx) == 0:
                continue
            s = np.clip(sims[idx], 0, 1)
            sw = s.sum()
            if sw > 0:
                mean[m] = (s @ ry[idx] + self.a * tm[m]) / (sw + self.a)
                n[m] = sw + self.a
        return np.clip(mean, 0, 1), n

def sig(z):
    return 1.0 / (1.0 + np.exp(-z))

class Pooled(Base):
    """IRT-like pooled difficulty.
    q_m(x) = sig(theta_m - b(x) + delta_m(x)).
    b(x): Newton MAP (prior N(0, 1/a_b)) on the top-k neighbours of ANY model, each neighbour's
          outcome explained by sig(theta_{m_i} - b).
    theta_m: online Newton on the model's own outcomes given the b of the prompt at decision time.
    delta_m(x): optional per-model correction from the model's own top-k_m neighbours (one Newton
          step around theta_m - b(x), prior precision a_d).
    n (for Thompson / exploration) is returned as the logit-scale variance in self.var."""
    def __init__(self, k=40, a_b=1.0, newton=3, kd=20, a_d=None, h0=0.5, theta_lr=1.0, sim_pow=1.0):
        self.k = k; self.a_b = a_b; self.newton = newton; self.kd = kd; self.a_d = a_d
        self.h0 = h0; self.sim_pow = sim_pow
    def reset(self, D, sp):
        super().reset(D, sp)
        self.theta = np.zeros(2); self.H = np.zeros(2)
        self.last_b = 0.0
    def _b(self, sims, rm, ry):
        if len(sims) == 0:
            return 0.0, self.a_b
        idx = topk(sims, np.ones(len(sims), bool), self.k)
        s = np.clip(sims[idx], 0, 1) ** self.sim_pow
        th = self.theta[rm[idx]]; y = ry[idx]
        b = 0.0
        for _ in range(self.newton):
            p = sig(th - b)
            g = (s * (y - p)).sum() + self.a_b * b   # d/db of negative log-post
            h = (s * p * (1 - p)).sum() + self.a_b
            b -= g / h
        p = sig(th - b)
        return b, (s * p * (1 - p)).sum() + self.a_b
    def estimate(self, sims, rm, ry, p_, lo, hi, test=False):
        b, hb = self._b(sims, rm, ry)
        z = self.theta - b
        var = 1.0 / hb + 1.0 / (self.H + self.h0)
        if self.a_d is not None:
            for m in range(2):
                idx = topk(sims, rm == m, self.kd)
                if len(idx) == 0:
                    continue
                s = np.clip(sims[idx], 0, 1) ** self.sim_pow
                p = sig(z[m])
                d = (s * (ry[idx] - p)).sum() / ((s.sum()) * p * (1 - p) + self.a_d)
                z[m] += d
                var[m] += 0  # keep simple
        self.last_b = b
        q = sig(z)
        self.var = var
        # pseudo-count so that Beta sampling has matching variance: q(1-q)/(n+1) = var*(q(1-q))^2
        n = 1.0 / np.maximum(var * q * (1 - q), 1e-9) - 1
        return q, np.maximum(n, 1e-3)
    def observe(self, t, p_, m, y):
        super().observe(t, p_, m, y)
        p = sig(self.theta[m] - self.last_b)
        self.H[m] += p * (1 - p)
        self.theta[m] += (y - p) / (self.H[m] + self.h0)

def fit_lr(X, y, lam, w0=None, iters=20):
    w = np.zeros(X.shape[1]) if w0 is None else w0.copy()
    for _ in range(iters):
        p = sig(X @ w)
        g = X.T @ (p - y) + lam * w
        H = (X * (p * (1 - p))[:, None]).T @ X + lam * np.eye(X.shape[1])
        step = np.linalg.solve(H, g)
        w -= step
        if np.abs(step).max() < 1e-6:
            break
    return w

class LRBlend(Base):
    """Per-model ridge logistic regression on [embedding, 1], refit every `every` outcomes on
    all outcomes so far (production: online Newton with a 65x65 precision matrix per model),
    optionally blended 50/50 (probability scale) with an inner estimator."""
    def __init__(self, inner=None, lam=1.0, every=250, wlr=0.5):
        self.inner = inner; self.lam = lam; self.every = every; self.wlr = wlr
    def reset(self, D, sp):
        super().reset(D, sp)
        if self.inner: self.inner.reset(D, sp)
        self.X = np.hstack([D["E"], np.ones((len(D["E"]), 1))])
        self.obs = [[], []]
        self.w = [np.zeros(65), np.zeros(65)]
        self.since = 0
    def estimate(self, sims, rm, ry, p, lo, hi, test=False):
        qlr = np.array([sig(self.X[p] @ self.w[m]) for m in range(2)])
        if self.inner is None:
            return qlr, self.n + 2
        qi, ni = self.inner.estimate(sims, rm, ry, p, lo, hi, test)
        return self.wlr * qlr + (1 - self.wlr) * qi, ni
    def observe(self, t, p, m, y):
        super().observe(t, p, m, y)
        if self.inner: self.inner.observe(t, p, m, y)
        self.obs[m].append((p, y))
        self.since += 1
        if self.since >= self.every:
            self.since = 0
            for mm in range(2):
                if self.obs[mm]:
                    ps, ys = zip(*self.obs[mm])
                    self.w[mm] = fit_lr(self.X[list(ps)], np.array(ys), self.lam, self.w[mm])

import os as _os
HERE = _os.path.dirname(_os.path.abspath(__file__))
ROOT = _os.path.abspath(_os.path.join(HERE, "..", "..", ".."))
OUT = _os.environ.get("KAIROS_ANALYSIS_DIR", _os.path.join(ROOT, "target", "analysis"))
_os.makedirs(OUT, exist_ok=True)
import numpy as np
from math import erf, sqrt

def beta_draw(rng, mean, n):
    a = np.maximum(mean * n, 1e-3); b = np.maximum((1 - mean) * n, 1e-3)
    return np.clip(rng.beta(a, b), 0, 1)

def make_policy(rate=0.05, min_obs=0, decay=None, ts_all=False, flip_scale=None):
    """rate: share of decisions with Thompson draws (current Rust rule).
    min_obs: while a model has fewer than min_obs outcomes, a decision explores it with prob 0.5.
    decay: rate_t = min(rate, decay / sqrt(t+1))... (rate used as cap)
    flip_scale: decision-aimed: take the non-greedy arm with prob flip_scale * P(it is better)."""
    def pol(rng, mean, n, value, cost, t, ntr, est):
        counts = est.n
        if min_obs > 0:
            low = np.flatnonzero(counts < min_obs)
            if len(low) and rng.random() < 0.5:
                q = mean.copy(); q[low[rng.integers(len(low))]] = 2.0  # force
                return q, 1
        if flip_scale is not None:
            u = value * mean - cost
            g = int(np.argmax(u)); o = 1 - g
            var = mean * (1 - mean) / (n + 1)
            if hasattr(est, "var_logit"):
                var = est.var_logit
            sd = value * np.sqrt(var.sum()) + 1e-12
            pflip = 0.5 * (1 + erf(-(u[g] - u[o]) / sd / sqrt(2)))
            if rng.random() < flip_scale * pflip:
                q = mean.copy(); q[o] = 2.0
                return q, 1
            return mean, 0
        r = rate
        if decay is not None:
            r = min(rate, decay / np.sqrt(t + 1))
        if ts_all or rng.random() < r:
            return beta_draw(rng, mean, n), 1
        return mean, 0
    return pol

def uniform_policy(eps=0.05, decay_to=None):
    """With probability eps the decision picks a model uniformly at random (its estimate is not
    used): unbiased data for the model-level parameters, no lock-in."""
    def pol(rng, mean, n, value, cost, t, ntr, est):
        e = eps
        if rng.random() < e:
            q = mean.copy(); q[rng.integers(len(q))] = 2.0
            return q, 1
        return mean, 0
    return pol

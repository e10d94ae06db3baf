import os as _os
HERE = _os.path.dirname(_os.path.abspath(__file__))
ROOT = _os.path.abspath(_os.path.join(HERE, "..", "..", ".."))
OUT = _os.environ.get("KAIROS_ANALYSIS_DIR", _os.path.join(ROOT, "target", "analysis"))
_os.makedirs(OUT, exist_ok=True)
import sys, time
sys.path.insert(0, HERE)
from sim import *
from estimators import *
D = load()
for seed in [0, 1, 2]:
    t0 = time.time()
    sp = Split(D, seed)
    b95, b99, rows = sweep(D, sp, lambda: KNN(), seed)
    print(f"seed {seed}: at95 {b95:.1f} at99 {b99:.1f}  ({time.time()-t0:.0f}s)", flush=True)
    for v, r, s, g, ex, obs in rows:
        print(f"   v={v:.5f} ret={r:.2f} saved={s:.1f} gpt%={g:.1f} explored={ex} obs={obs}")

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
seed = int(sys.argv[2]) if len(sys.argv) > 2 else 0
sp = Split(D, seed)
fac, kw = eval(sys.argv[1])
b95, b99, rows = sweep(D, sp, fac, seed, **kw)
print(b95, b99)
for v, r, s, g, ex, obs in rows:
    print(f"   v={v:.5f} ret={r:.2f} saved={s:.1f} gpt%={g:.1f} explored={ex} obs={obs}")

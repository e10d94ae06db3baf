import os as _os
HERE = _os.path.dirname(_os.path.abspath(__file__))
ROOT = _os.path.abspath(_os.path.join(HERE, "..", "..", ".."))
OUT = _os.environ.get("KAIROS_ANALYSIS_DIR", _os.path.join(ROOT, "target", "analysis"))
_os.makedirs(OUT, exist_ok=True)
import sys, time, json
sys.path.insert(0, HERE)
from sim import *
from estimators import *
from explore import *
D = load()
variants = eval(sys.argv[1])  # dict name -> (factory, kwargs)
modes = sys.argv[2].split(",") if len(sys.argv) > 2 else ["dev", "test"]
seeds = [int(x) for x in sys.argv[3].split(",")] if len(sys.argv) > 3 else [0, 1, 2]
res = {}
for seed in seeds:
    sp = Split(D, seed)
    for mode in modes:
        s = DevSplit(sp) if mode == "dev" else sp
        for name, (fac, kw) in variants.items():
            t0 = time.time()
            b95, b99, rows = sweep(D, s, fac, seed, **kw)
            res.setdefault((mode, name), []).append((b95, b99))
            print(f"{mode:4s} {name:40s} seed {seed}: at95 {b95:5.1f} at99 {b99:5.1f} ({time.time()-t0:.0f}s)", flush=True)
print("SUMMARY")
for (mode, name), v in sorted(res.items()):
    a = np.array(v)
    print(f"{mode:4s} {name:40s} 95: {' '.join(f'{x:5.1f}' for x in a[:,0])} mean {np.nanmean(a[:,0]):5.1f} | 99: {' '.join(f'{x:5.1f}' for x in a[:,1])} mean {np.nanmean(a[:,1]):5.1f}")

"""Collect fullinfo_emb.log (seeds 0-2) + fullinfo_emb_s345.log (seeds 3-5) into one markdown table.
In the 0-2 run the train-selected feature weight was 0.1 (seed 0), 0.2 (seeds 1, 2); lines were
printed under 'emb64+feat(w=0.1)' / 'emb64+feat(w=0.2)'."""
import os as _os
HERE = _os.path.dirname(_os.path.abspath(__file__))
ROOT = _os.path.abspath(_os.path.join(HERE, "..", "..", ".."))
OUT = _os.environ.get("KAIROS_ANALYSIS_DIR", _os.path.join(ROOT, "target", "analysis"))
_os.makedirs(OUT, exist_ok=True)
import re, numpy as np
R = {}
pat = re.compile(r"^seed (\d) (.+?)\s+ring (\S+)\s+k(\d+):\s+(\S+)\s+(\S+)")
for f in ["fullinfo_emb.log", "fullinfo_emb_s345.log"]:
    for l in open(f):
        m = pat.match(l)
        if not m: continue
        s, name, ring, k, a, b = m.groups(); s = int(s)
        names = [name]
        if f == "fullinfo_emb.log":
            if name == "emb64+feat(w=0.1)": names = ["emb64+feat(w=train-sel)"]
            if name == "emb64+feat(w=0.2)" and s in (1, 2): names = [name, "emb64+feat(w=train-sel)"]
        for n in names:
            R.setdefault((n, ring, int(k)), {})[s] = (float(a), float(b))
order = ["emb64", "emb128", "emb384", "emb64+feat(w=0.2)", "emb64+feat(w=train-sel)", "feat only"]
dims = {"emb64": 64, "emb128": 128, "emb384": 384, "emb64+feat(w=0.2)": 70, "emb64+feat(w=train-sel)": 70, "feat only": 6}
print("| signal | ring | k | ≥95 %: s0 | s1 | s2 | mean 0–2 | s3 | s4 | s5 | mean 0–5 | ≥99 %: s0 | s1 | s2 | mean 0–2 | mean 0–5 |")
print("|---|---|---|" + "---|" * 13)
fm = lambda x: "–" if np.isnan(x) else f"{x:.1f}"
for n in order:
    for ring in ["4096", "all"]:
        for k in [20, 50]:
            v = R[(n, ring, k)]
            a = [v[s][0] for s in range(6)]; b = [v[s][1] for s in range(6)]
            print(f"| {n} | {ring} | {k} | " + " | ".join(fm(x) for x in a[:3]) + f" | **{fm(np.nanmean(a[:3]))}** | "
                  + " | ".join(fm(x) for x in a[3:]) + f" | **{fm(np.nanmean(a))}** | "
                  + " | ".join(fm(x) for x in b[:3]) + f" | {fm(np.nanmean(b[:3]))} | {fm(np.nanmean(b))} |")

#!/usr/bin/env python3
"""Convert the routing development set (../shared/data/routing-dev) into the JSONL that
`kairos eval routing --data FILE` reads (format: docs/routing.md (offline evaluation)).

Input:  ../shared/data/routing-dev/routellm-mmlu/mmlu_responses.csv          (14,042 MMLU prompts,
        a correctness flag for Mixtral-8x7B-Instruct and for GPT-4-1106-preview each)
        ../shared/data/routing-dev/routellm-mmlu/mmlu_contaminated_prompts.jsonl  (5 prompts)
Output: target/routing-dev/mmlu.jsonl (generated data: never commit it).

What it writes:
  - a meta line with the two models' prices (USD per 1M tokens, input/output; sources below) and
    GPT-4-1106-preview as the reference model;
  - one record per prompt, minus the contaminated ones (dropped exactly as RouteLLM's
    benchmarks.py does: every row whose `prompt` equals a contaminated `eval_prompt`):
      id            "<subject>-<index within the subject, 4 digits>"
      prompt        the question as RouteLLM's router saw it (question, choices, "Answer:")
      input_tokens  ceil(chars / 4) of that prompt (an estimate: the data has no token counts;
                    RouteLLM also sent a 5-shot prefix which the CSV does not keep, so real input
                    was longer; both models pay for the same tokens, so the cost *ratio* and the
                    percentages saved barely move)
      max_tokens    1: the requests' own output cap (RouteLLM asked for one token), which the
                    router budgets instead of the task's typical answer length, as the gateway
                    does with a request's max_tokens
      outcomes      per model {"quality": 1.0 if correct else 0.0, "output_tokens": 1}
                    (RouteLLM generated the answers with max_new_tokens=1: a single letter)

Prices (litellm 1.109.1's table, vendored in ../shared/data/priors/litellm-prices/):
  mistralai/Mixtral-8x7B-Instruct-v0.1  $0.60 in / $0.60 out per 1M  (together_ai's listing)
  gpt-4-1106-preview                    $10.00 in / $30.00 out per 1M (OpenAI's listing)

Usage:
    python3 scripts/routing_dev_to_jsonl.py [--data DIR] [--out FILE]

Python 3.11, standard library only. Deterministic: same input, same bytes.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "routing-dev" / "routellm-mmlu"
DEFAULT_OUT = REPO_ROOT / "target" / "routing-dev" / "mmlu.jsonl"

WEAK = "mistralai/Mixtral-8x7B-Instruct-v0.1"
STRONG = "gpt-4-1106-preview"
PRICES = {
    WEAK: {"input_usd_per_mtok": 0.6, "output_usd_per_mtok": 0.6},
    STRONG: {"input_usd_per_mtok": 10.0, "output_usd_per_mtok": 30.0},
}
OUTPUT_TOKENS = 1


def flag(value: str, row: int, column: str) -> float:
    if value == "True":
        return 1.0
    if value == "False":
        return 0.0
    raise SystemExit(f"row {row}: column {column!r} is {value!r}, expected True or False")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the routellm-mmlu folder")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the JSONL to write")
    args = ap.parse_args()

    contaminated = set()
    with open(args.data / "mmlu_contaminated_prompts.jsonl", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                contaminated.add(json.loads(line)["eval_prompt"])

    args.out.parent.mkdir(parents=True, exist_ok=True)
    per_subject: dict[str, int] = {}
    kept = dropped = 0
    correct = {WEAK: 0, STRONG: 0}
    with (
        open(args.data / "mmlu_responses.csv", encoding="utf-8", newline="") as f,
        open(args.out, "w", encoding="utf-8", newline="\n") as out,
    ):
        meta = {
            "kind": "meta",
            "name": "routellm-mmlu",
            "models": PRICES,
            "reference": STRONG,
        }
        out.write(json.dumps(meta, ensure_ascii=False) + "\n")
        reader = csv.DictReader(f)
        for n, row in enumerate(reader, start=2):
            subject = row["subject"]
            index = per_subject.get(subject, 0)
            per_subject[subject] = index + 1
            prompt = row["prompt"]
            if prompt in contaminated:
                dropped += 1
                continue
            outcomes = {}
            for model in (WEAK, STRONG):
                q = flag(row[model], n, model)
                correct[model] += int(q)
                outcomes[model] = {"quality": q, "output_tokens": OUTPUT_TOKENS}
            record = {
                "id": f"{subject}-{index:04d}",
                "prompt": prompt,
                "input_tokens": max(1, math.ceil(len(prompt) / 4)),
                "max_tokens": OUTPUT_TOKENS,
                "outcomes": outcomes,
            }
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
            kept += 1
    print(
        f"wrote {args.out}: {kept} prompts ({dropped} contaminated dropped); accuracy "
        + ", ".join(f"{m} {correct[m] / kept:.3f}" for m in (WEAK, STRONG)),
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

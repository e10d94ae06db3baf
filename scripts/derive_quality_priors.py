#!/usr/bin/env python3
"""Derive the quality priors for `model="auto"` from public leaderboards.

For every chat model of the built-in catalog and every task type this writes an expected quality
(mean), its uncertainty (std), a Beta pseudo-count (n_equiv) and a source line, plus the expected
output length per task type and the bar of each named tier.

Scale: quality(model, task) = P(model's answer is preferred to the reference model's answer on a
prompt of that task), under the Bradley-Terry model behind the LMArena ratings (logistic, 400 Elo
scale). The reference is the same for every task: gpt-4o-2024-05-13 (REFERENCE). 0.5 = as good as
the May-2024 GPT-4o, 0.64 = 100 Elo better, 0.36 = 100 Elo worse.

Inputs (defaults: the copies under ../shared/data/priors/, see their SOURCE.md):
  arena-leaderboard/arena_text_ratings_by_category.csv   LMArena text leaderboard, data of 2025-12-11
  wildbench-leaderboard/wb_score_by_task_category.csv     WildBench v2 leaderboard, 2024-08-01
  crates/kairos-core/data/catalog.json                    the catalog whose chat models we cover
Output: crates/kairos-router/data/quality_priors.json (deterministic: same inputs, same bytes) and,
with --markdown, the generated tables inside docs/routing-quality.md (between the GENERATED markers).

Usage:
    python3 scripts/derive_quality_priors.py [--markdown docs/routing-quality.md]
    python3 scripts/derive_quality_priors.py --check [--markdown docs/routing-quality.md]
        # exit 1 if the committed file(s) differ from what would be generated

Method (docs/routing-quality.md has the reasoning):
  1. Per task, a weighted composite of arena categories (TASKS); style-controlled ratings.
  2. d = composite(model) - composite(reference), over the categories both have, in Elo.
     se = weighted sum of the model's CI half-widths / 1.96 (categories treated as fully correlated).
  3. WildBench second opinion where the exact snapshot is in both leaderboards: the task's WildBench
     category score is mapped onto the arena scale by a least-squares line fitted on the models
     present in both, then inverse-variance combined with the arena value; when the two disagree by
     more than their uncertainties allow (chi2 > 1) the combined variance is multiplied by chi2.
  4. Variance terms added in Elo^2: evaluation transfer (half the squared residual of the WildBench
     calibration: how much two evaluations of the same models disagree), category-mapping mismatch
     (TAU, estimated from how much a model's category ratings deviate from its overall rating, times
     a per-mapping multiplier) and, for
     models imputed from an older family member k releases back, k*s^2 + (k*mu)^2 with mu, s the mean
     and std of the rating change between consecutive releases in SUCCESSIONS. Imputed means are NOT
     shifted: a new release gets its predecessor's mean (a deliberately conservative prior).
  5. quality = E[logistic(d)] and its std under d ~ N(d, var) (numerical quadrature);
     n_equiv = mean*(1-mean)/std^2 - 1 (the Beta distribution with that mean and std).

Python 3.11, standard library only.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import math
import statistics
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PRIORS_DIR = REPO_ROOT.parent / "shared" / "data" / "priors"
DEFAULT_ARENA = PRIORS_DIR / "arena-leaderboard" / "arena_text_ratings_by_category.csv"
DEFAULT_WILDBENCH = PRIORS_DIR / "wildbench-leaderboard" / "wb_score_by_task_category.csv"
DEFAULT_CATALOG = REPO_ROOT / "crates" / "kairos-core" / "data" / "catalog.json"
DEFAULT_OUTPUT = REPO_ROOT / "crates" / "kairos-router" / "data" / "quality_priors.json"

SCHEMA_VERSION = 1
AS_OF = "2026-11-21"
ARENA_VERSION = "lmarena/arena-catalog c9558b60647217fafa878cb7ee14f8f43c355594 (leaderboard data of 2025-12-11)"
WILDBENCH_VERSION = "allenai/WildBench d6b8dcaf377d173d031980f97c16e1a82618c03d (2024-08-01)"

VARIANT = "style_control"
REFERENCE = "gpt-4o-2024-05-13"
ELO_SCALE = 400.0
Z95 = 1.959964

GEN_BEGIN = "<!-- BEGIN GENERATED TABLES (scripts/derive_quality_priors.py --markdown docs/routing-quality.md) -->"
GEN_END = "<!-- END GENERATED TABLES -->"

TASK_ORDER = [
    "code",
    "math",
    "summarization",
    "extraction",
    "classification",
    "translation",
    "creative_writing",
    "rewriting",
    "open_qa",
    "closed_qa",
    "brainstorming",
    "chat",
]

LANGUAGES = ["chinese", "french", "german", "japanese", "korean", "russian", "spanish"]

# Task type -> arena categories (weights), how well they match, the WildBench category (or None),
# and why. "direct": an arena category built for this kind of prompt. "proxy": related prompts.
# "weak": only a correlate (no arena category is about this task).
TASKS: dict[str, dict] = {
    "code": {
        "categories": {"coding": 1.0},
        "mapping": "direct",
        "wildbench": "Coding & Debugging",
        "why": "arena `coding`: prompts its classifier tags as programming",
    },
    "math": {
        "categories": {"math": 1.0},
        "mapping": "direct",
        "wildbench": "Math & Data Analysis",
        "why": "arena `math`",
    },
    "summarization": {
        "categories": {"if": 0.5, "long_user": 0.5},
        "mapping": "weak",
        "wildbench": None,
        "why": "no summarization category; a summary is a constrained rewrite of a long input: "
        "instruction following + long user prompts",
    },
    "extraction": {
        "categories": {"if": 0.5, "long_user": 0.5},
        "mapping": "weak",
        "wildbench": None,
        "why": "no extraction category; following a format over a given (often long) text",
    },
    "classification": {
        "categories": {"if": 1.0},
        "mapping": "weak",
        "wildbench": None,
        "why": "no classification category; answering in a prescribed label set is instruction following",
    },
    "translation": {
        "categories": {lang: 1.0 / len(LANGUAGES) for lang in LANGUAGES},
        "mapping": "weak",
        "wildbench": None,
        "why": "no translation category; the mean over the non-English language categories (prompts "
        "written in that language) measures multilingual ability",
    },
    "creative_writing": {
        "categories": {"creative_writing": 1.0},
        "mapping": "direct",
        "wildbench": "Creative Tasks",
        "why": "arena `creative_writing`",
    },
    "rewriting": {
        "categories": {"if": 0.5, "industry_writing_and_literature_and_language": 0.5},
        "mapping": "proxy",
        "wildbench": "Creative Tasks",
        "why": "editing = following edit instructions on a given text (`if`) + writing/language prompts "
        "(`industry_writing_and_literature_and_language`); WildBench files editing under Creative Tasks",
    },
    "open_qa": {
        "categories": {"expert": 0.5, "full": 0.5},
        "mapping": "proxy",
        "wildbench": "Information/Advice seeking",
        "why": "knowledge questions: all prompts (`full`) + expert-level prompts (`expert`)",
    },
    "closed_qa": {
        "categories": {"long_user": 0.5, "if": 0.5},
        "mapping": "weak",
        "wildbench": "Information/Advice seeking",
        "why": "answering from a given context: long user prompts + instruction following",
    },
    "brainstorming": {
        "categories": {"creative_writing": 0.5, "full": 0.5},
        "mapping": "proxy",
        "wildbench": "Creative Tasks",
        "why": "idea generation is open-ended like creative writing but less literary; "
        "WildBench files brainstorming under Creative Tasks",
    },
    "chat": {
        "categories": {"full": 0.5, "multiturn": 0.5},
        "mapping": "direct",
        "wildbench": "overall",
        "why": "arena's whole distribution is chat; `multiturn` for conversations",
    },
}

# Mapping mismatch std = multiplier * TAU (TAU estimated from the data, see estimate_tau).
MAPPING_MULTIPLIER = {"direct": 0.5, "proxy": 1.0, "weak": 1.5}
# Categories used to estimate TAU (how far a model's category rating strays from its overall one).
TAU_CATEGORIES = [
    "coding",
    "math",
    "creative_writing",
    "if",
    "expert",
    "multiturn",
    "long_user",
    "hard_6",
    "industry_writing_and_literature_and_language",
]

# WildBench column per WildBench category name.
WB_COLUMNS = {
    "Coding & Debugging": "WB_score.Coding & Debugging",
    "Math & Data Analysis": "WB_score.Math & Data Analysis",
    "Creative Tasks": "WB_score.Creative Tasks",
    "Information/Advice seeking": "WB_score.Information/Advice seeking",
    "overall": "WB_score",
}

# WildBench model name -> arena model name, for the models in both leaderboards (same snapshot).
WB_TO_ARENA = {
    "gpt-4o-2024-05-13": "gpt-4o-2024-05-13",
    "gpt-4-turbo-2024-04-09": "gpt-4-turbo-2024-04-09",
    "gpt-4-0125-preview": "gpt-4-0125-preview",
    "claude-3-opus-20240229": "claude-3-opus-20240229",
    "Meta-Llama-3-70B-Instruct": "llama-3-70b-instruct",
    "Qwen1.5-72B-Chat-greedy": "qwen1.5-72b-chat",
    "claude-3-sonnet-20240229": "claude-3-sonnet-20240229",
    "mistral-large-2402": "mistral-large-2402",
    "claude-3-haiku-20240307": "claude-3-haiku-20240307",
    "dbrx-instruct@together": "dbrx-instruct-preview",
    "Mixtral-8x7B-Instruct-v0.1": "mixtral-8x7b-instruct-v0.1",
    "Starling-LM-7B-beta": "starling-lm-7b-beta",
    "command-r": "command-r",
    "command-r-plus": "command-r-plus",
    "Meta-Llama-3-8B-Instruct": "llama-3-8b-instruct",
    "tulu-2-dpo-70b": "tulu-2-dpo-70b",
    "Nous-Hermes-2-Mixtral-8x7B-DPO": "nous-hermes-2-mixtral-8x7b-dpo",
    "Mistral-7B-Instruct-v0.2": "mistral-7b-instruct-v0.2",
    "gpt-3.5-turbo-0125": "gpt-3.5-turbo-0125",
    "Qwen1.5-7B-Chat@together": "qwen1.5-7b-chat",
    "Llama-2-70b-chat-hf": "llama-2-70b-chat",
    "Llama-2-7b-chat-hf": "llama-2-7b-chat",
    "gemma-7b-it": "gemma-7b-it",
    "gemma-2b-it": "gemma-2b-it",
    "Qwen2-72B-Instruct": "qwen2-72b-instruct",
    "Yi-1.5-34B-Chat": "yi-1.5-34b-chat",
    "reka-flash-20240226": "reka-flash-21b-20240226",
    "gemini-1.5-pro": "gemini-1.5-pro-001",
    "gemini-1.5-flash": "gemini-1.5-flash-001",
    "nemotron-4-340b-instruct": "nemotron-4-340b-instruct",
    "claude-3-5-sonnet-20240620": "claude-3-5-sonnet-20240620",
    "deepseek-coder-v2": "deepseek-coder-v2",
    "gemma-2-9b-it": "gemma-2-9b-it",
    "Athene-70B": "athene-70b-0725",
    "gpt-4o-mini-2024-07-18": "gpt-4o-mini-2024-07-18",
    "Mistral-Large-2": "mistral-large-2407",
    "gemma-2-9b-it-SimPO": "gemma-2-9b-it-simpo",
    "gemma-2-27b-it@together": "gemma-2-27b-it",
    "gemma-2-2b-it": "gemma-2-2b-it",
}

# Consecutive releases of one product line (predecessor, successor), both in the arena data: the
# rating change per release step sizes the uncertainty of imputing a newer release from an older one.
SUCCESSIONS = [
    ("claude-3-5-sonnet-20240620", "claude-3-5-sonnet-20241022"),
    ("claude-3-5-sonnet-20241022", "claude-3-7-sonnet-20250219"),
    ("claude-3-7-sonnet-20250219", "claude-sonnet-4-20250514"),
    ("claude-sonnet-4-20250514", "claude-sonnet-4-5-20250929"),
    ("claude-opus-4-20250514", "claude-opus-4-1-20250805"),
    ("claude-opus-4-1-20250805", "claude-opus-4-5-20251101"),
    ("claude-3-haiku-20240307", "claude-3-5-haiku-20241022"),
    ("claude-3-5-haiku-20241022", "claude-haiku-4-5-20251001"),
    ("gpt-4o-2024-05-13", "gpt-4o-2024-08-06"),
    ("gpt-5-high", "gpt-5.1-high"),
    ("o1-2024-12-17", "o3-2025-04-16"),
    ("o3-mini", "o4-mini-2025-04-16"),
    ("gemini-1.5-pro-002", "gemini-2.5-pro"),
    ("gemini-2.5-pro", "gemini-3-pro"),
    ("gemini-1.5-flash-002", "gemini-2.0-flash-001"),
    ("gemini-2.0-flash-001", "gemini-2.5-flash"),
    ("gemini-2.5-flash", "gemini-3-flash"),
    ("gemini-2.0-flash-lite-preview-02-05", "gemini-2.5-flash-lite-preview-06-17-thinking"),
    ("deepseek-v3", "deepseek-v3-0324"),
    ("deepseek-v3-0324", "deepseek-v3.1"),
    ("deepseek-v3.1", "deepseek-v3.1-terminus"),
    ("deepseek-v3.1-terminus", "deepseek-v3.2-exp"),
    ("deepseek-v3.2-exp", "deepseek-v3.2"),
    ("deepseek-r1", "deepseek-r1-0528"),
    ("grok-2-2024-08-13", "grok-3-preview-02-24"),
    ("grok-3-preview-02-24", "grok-4-0709"),
    ("grok-4-0709", "grok-4.1-thinking"),
    ("kimi-k2-0711-preview", "kimi-k2-0905-preview"),
    ("glm-4.5", "glm-4.6"),
    ("qwen3-max-preview", "qwen3-max-2025-09-23"),
    ("mistral-large-2407", "mistral-large-2411"),
    ("mistral-large-2411", "mistral-large-3"),
    ("mistral-medium-2505", "mistral-medium-2508"),
    ("mistral-small-24b-instruct-2501", "mistral-small-3.1-24b-instruct-2503"),
    ("mistral-small-3.1-24b-instruct-2503", "mistral-small-2506"),
    ("llama-3-70b-instruct", "llama-3.1-70b-instruct"),
    ("llama-3.1-70b-instruct", "llama-3.3-70b-instruct"),
    ("gemma-2-27b-it", "gemma-3-27b-it"),
]

# Catalog chat model id -> how it gets its prior. Every chat model of the catalog must be listed
# (the script fails otherwise, so a catalog refresh forces a decision here).
#   ("rated", arena_name, note)          the arena rated this model (or the snapshot the id serves)
#   ("imputed", arena_name, k, note)     a newer release of the same product line and size class,
#                                        k releases after arena_name; wider uncertainty
#   ("none", reason)                     no prior: the router treats the model as unknown
RATED = "rated"
IMPUTED = "imputed"
NONE = "none"
CATALOG_MAP: dict[str, tuple] = {
    # OpenAI
    "gpt-4o": (RATED, "gpt-4o-2024-08-06", "the `gpt-4o` alias serves the 2024-08-06 snapshot (since 2024-10-02)"),
    "gpt-4o-mini": (RATED, "gpt-4o-mini-2024-07-18", "the only gpt-4o-mini snapshot"),
    "gpt-4.1": (RATED, "gpt-4.1-2025-04-14", "the only gpt-4.1 snapshot"),
    "gpt-4.1-mini": (RATED, "gpt-4.1-mini-2025-04-14", "the only gpt-4.1-mini snapshot"),
    "gpt-5": (RATED, "gpt-5-high", "arena rated reasoning_effort=high; the API default is medium (optimistic)"),
    "gpt-5-mini": (RATED, "gpt-5-mini-high", "arena rated reasoning_effort=high; the API default is medium (optimistic)"),
    "gpt-5-nano": (RATED, "gpt-5-nano-high", "arena rated reasoning_effort=high; the API default is medium (optimistic)"),
    "gpt-5.1": (RATED, "gpt-5.1", "arena's default-effort entry, not `gpt-5.1-high`: requests without reasoning_effort"),
    "gpt-5.2": (IMPUTED, "gpt-5.1", 1, "gpt-5.x line: 5.1 -> 5.2"),
    "gpt-5.4": (IMPUTED, "gpt-5.1", 2, "gpt-5.x line: 5.1 -> 5.2 -> 5.4"),
    "gpt-5.5": (IMPUTED, "gpt-5.1", 3, "gpt-5.x line: 5.1 -> 5.2 -> 5.4 -> 5.5"),
    "gpt-5.6": (IMPUTED, "gpt-5.1", 4, "gpt-5.x line: 5.1 -> 5.2 -> 5.4 -> 5.5 -> 5.6"),
    "gpt-5.4-mini": (IMPUTED, "gpt-5-mini-high", 3, "mini size class: 5 -> 5.1 -> 5.2 -> 5.4"),
    "gpt-5.4-nano": (IMPUTED, "gpt-5-nano-high", 3, "nano size class: 5 -> 5.1 -> 5.2 -> 5.4"),
    "o3": (RATED, "o3-2025-04-16", "the only o3 snapshot"),
    "gpt-oss-120b": (RATED, "gpt-oss-120b", "open weights, served by Groq"),
    "gpt-oss-20b": (RATED, "gpt-oss-20b", "open weights, served by Groq"),
    # Anthropic (release ladder seen in the catalog: 4.5, 4.6, 4.7, 4.8, 5, 5.5)
    "claude-haiku-4-5": (RATED, "claude-haiku-4-5-20251001", "non-thinking entry: extended thinking is off unless requested"),
    "claude-sonnet-4-5": (RATED, "claude-sonnet-4-5-20250929", "non-thinking entry: extended thinking is off unless requested"),
    "claude-opus-4-5": (RATED, "claude-opus-4-5-20251101", "non-thinking entry: extended thinking is off unless requested"),
    "claude-opus-4-6": (IMPUTED, "claude-opus-4-5-20251101", 1, "opus line: 4.5 -> 4.6"),
    "claude-opus-4-7": (IMPUTED, "claude-opus-4-5-20251101", 2, "opus line: 4.5 -> 4.7"),
    "claude-opus-4-8": (IMPUTED, "claude-opus-4-5-20251101", 3, "opus line: 4.5 -> 4.8"),
    "claude-opus-5": (IMPUTED, "claude-opus-4-5-20251101", 4, "opus line: 4.5 -> 5"),
    "claude-opus-5-5": (IMPUTED, "claude-opus-4-5-20251101", 5, "opus line: 4.5 -> 5.5"),
    "claude-sonnet-4-6": (IMPUTED, "claude-sonnet-4-5-20250929", 1, "sonnet line: 4.5 -> 4.6"),
    "claude-sonnet-5": (IMPUTED, "claude-sonnet-4-5-20250929", 4, "sonnet line: 4.5 -> 5 (ladder 4.6, 4.7, 4.8, 5)"),
    "claude-sonnet-5-5": (IMPUTED, "claude-sonnet-4-5-20250929", 5, "sonnet line: 4.5 -> 5.5"),
    "claude-haiku-5-5": (IMPUTED, "claude-haiku-4-5-20251001", 5, "haiku line: 4.5 -> 5.5 (same ladder as opus)"),
    # Google
    "gemini-2.5-pro": (RATED, "gemini-2.5-pro", "GA model"),
    "gemini-2.5-flash": (RATED, "gemini-2.5-flash", "GA model"),
    "gemini-2.5-flash-lite": (
        RATED,
        "gemini-2.5-flash-lite-preview-06-17-thinking",
        "the GA model is the 06-17 preview; arena rated it with thinking on, the API default is off (optimistic)",
    ),
    "gemini-3-flash-preview": (RATED, "gemini-3-flash", "arena had only rated `full` by 2025-12-11"),
    "gemini-3.1-pro-preview": (IMPUTED, "gemini-3-pro", 1, "pro line: 3 -> 3.1"),
    "gemini-pro-latest": (IMPUTED, "gemini-3-pro", 1, "alias of the newest pro (priced like 3.1-pro-preview): 3 -> 3.1"),
    "gemini-3.5-flash": (IMPUTED, "gemini-3-flash", 2, "flash line: 3 -> 3.1 -> 3.5"),
    "gemini-flash-latest": (IMPUTED, "gemini-3-flash", 2, "alias of the newest flash, assumed 3.5: 3 -> 3.1 -> 3.5"),
    "gemini-3.1-flash-lite": (
        IMPUTED,
        "gemini-2.5-flash-lite-preview-09-2025-no-thinking",
        2,
        "flash-lite line, newest rated (09-2025 preview, thinking off): 2.5 -> 3 -> 3.1",
    ),
    "gemini-3.5-flash-lite": (
        IMPUTED,
        "gemini-2.5-flash-lite-preview-09-2025-no-thinking",
        3,
        "flash-lite line: 2.5 -> 3 -> 3.1 -> 3.5",
    ),
    "gemini-flash-lite-latest": (
        IMPUTED,
        "gemini-2.5-flash-lite-preview-09-2025-no-thinking",
        3,
        "alias of the newest flash-lite (priced like 3.5-flash-lite): 2.5 -> 3.5",
    ),
    # DeepSeek
    "deepseek-v3.2": (RATED, "deepseek-v3.2", "non-thinking entry (the chat endpoint's default)"),
    "deepseek-v4-flash": (IMPUTED, "deepseek-v3.2", 1, "v3.2 -> v4; flash priced like v3.2"),
    "deepseek-v4-pro": (IMPUTED, "deepseek-v3.2", 1, "v3.2 -> v4"),
    "deepseek-ai/DeepSeek-V4-Pro-0813": (IMPUTED, "deepseek-v3.2", 1, "v3.2 -> v4 (served by Together)"),
    # xAI (ladder: 4.1, 4.20, 4.3, 4.5, 4.6, 4.7)
    "grok-4.20-non-reasoning": (IMPUTED, "grok-4.1", 1, "non-reasoning line: 4.1 -> 4.20"),
    "grok-4.20-reasoning": (IMPUTED, "grok-4.1-thinking", 1, "reasoning line: 4.1 -> 4.20"),
    "grok-4.3": (IMPUTED, "grok-4.1-thinking", 2, "4.1 -> 4.20 -> 4.3"),
    "grok-4.5": (IMPUTED, "grok-4.1-thinking", 3, "4.1 -> 4.20 -> 4.3 -> 4.5"),
    "grok-4.6": (IMPUTED, "grok-4.1-thinking", 4, "4.1 -> ... -> 4.6"),
    "grok-4.7": (IMPUTED, "grok-4.1-thinking", 5, "4.1 -> ... -> 4.7"),
    "grok-code-fast": (NONE, "code-specialised line; arena has no grok-code entry"),
    # Mistral (`-latest` aliases: the newest rated snapshot, k=1 because the alias may have moved on)
    "mistral-large-latest": (IMPUTED, "mistral-large-3", 1, "alias; newest rated: Mistral Large 3"),
    "mistral-medium-latest": (IMPUTED, "mistral-medium-2508", 1, "alias; newest rated: 2508"),
    "mistral-small-latest": (IMPUTED, "mistral-small-2506", 1, "alias; newest rated: 2506"),
    "magistral-medium-latest": (IMPUTED, "magistral-medium-2506", 1, "alias; newest rated: 2506"),
    "ministral-8b-latest": (IMPUTED, "ministral-8b-2410", 1, "alias; newest rated: 2410"),
    "magistral-small-latest": (NONE, "arena rated only magistral-medium; no same-size member of the line"),
    "ministral-3b-latest": (NONE, "arena rated only ministral-8b; no same-size member of the line"),
    "ministral-14b-latest": (NONE, "arena rated only ministral-8b; no same-size member of the line"),
    "codestral-latest": (NONE, "code-specialised line; not rated by arena"),
    "devstral-medium-latest": (NONE, "agentic-coding line; not rated by arena"),
    "devstral-small-latest": (NONE, "agentic-coding line; not rated by arena"),
    "pixtral-large-latest": (NONE, "vision line; not rated by arena"),
    # Others (open weights, served by Together / Groq)
    "moonshotai/Kimi-K3": (IMPUTED, "kimi-k2-thinking-turbo", 1, "K2 (thinking) -> K3"),
    "Qwen/Qwen3.7-Max": (IMPUTED, "qwen3-max-2025-09-23", 3, "max line: 3 -> 3.5 -> 3.6 -> 3.7"),
    "Qwen/Qwen3.5-9B": (NONE, "no rated Qwen of this size (smallest rated Qwen3: 30B-A3B, 32B)"),
    "qwen3.8-27b": (IMPUTED, "qwen3-32b", 4, "dense ~30B class: 3 -> 3.5 -> 3.6 -> 3.7 -> 3.8"),
    "zai-org/GLM-5.3": (IMPUTED, "glm-4.6", 5, "GLM line: 4.6 -> 4.7 -> 5 -> 5.1 -> 5.2 -> 5.3"),
    "zai-org/GLM-5.3-Flash": (NONE, "no rated GLM 'Flash' (small) model; glm-4.5-air is a larger class"),
}

# Named tiers: the bar as an Elo margin over the reference, converted to the quality scale.
TIERS_ELO = {
    "economy": (-70.0, "GPT-4o-mini class and up (GPT-4o-mini: -20 to -45 vs the reference)"),
    "balanced": (50.0, "clearly above the May-2024 GPT-4o: GPT-4.1 / Gemini 2.5 Flash / DeepSeek V3.2 class"),
    "premium": (100.0, "top of the late-2025 leaderboard: Claude Sonnet/Opus 4.5, Gemini 2.5 Pro, Gemini 3, GPT-5.1"),
}

# Expected visible output tokens per task type (for cost estimates; reasoning tokens not included).
# These are estimates; see docs/routing-quality.md. WildBench's average answer length is reported
# alongside as a cross-check for long-form answers.
EXPECTED_OUTPUT_TOKENS = {
    "code": (400, "a function or patch plus a short explanation"),
    "math": (350, "step-by-step working and the result"),
    "summarization": (150, "a paragraph or a few bullets"),
    "extraction": (120, "a small JSON object or a short list of fields"),
    "classification": (20, "a label, maybe with one sentence of reason"),
    "translation": (250, "about the input's length; prefer the input size when known"),
    "creative_writing": (600, "a poem is shorter, a story longer"),
    "rewriting": (250, "about the input's length"),
    "open_qa": (300, "an explained answer of a few paragraphs"),
    "closed_qa": (100, "a short answer from the given context"),
    "brainstorming": (350, "a list of 10-20 ideas with a line each"),
    "chat": (120, "a conversational turn"),
}


class PriorsError(Exception):
    pass


# ---------------------------------------------------------------------------------------------
# Inputs


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def load_arena(data: bytes) -> dict[str, dict[str, tuple[float, float]]]:
    """model -> category -> (rating, standard error) for VARIANT."""
    out: dict[str, dict[str, tuple[float, float]]] = {}
    for row in csv.DictReader(io.StringIO(data.decode("utf-8"))):
        if row["variant"] != VARIANT:
            continue
        rating = float(row["rating"])
        se = (float(row["rating_q975"]) - float(row["rating_q025"])) / (2 * Z95)
        out.setdefault(row["model"], {})[row["category"]] = (rating, se)
    if REFERENCE not in out:
        raise PriorsError(f"reference model {REFERENCE} not in the arena data")
    return out


def load_wildbench(data: bytes) -> dict[str, dict[str, float]]:
    """WildBench model -> column -> value (only numeric cells)."""
    out: dict[str, dict[str, float]] = {}
    for row in csv.DictReader(io.StringIO(data.decode("utf-8"))):
        cells = {}
        for key, value in row.items():
            if key == "model":
                continue
            try:
                cells[key] = float(value)
            except ValueError:
                pass
        out[row["model"]] = cells
    return out


def catalog_chat_models(data: bytes) -> tuple[list[str], dict]:
    doc = json.loads(data)
    ids = sorted(m["id"] for m in doc["models"] if m["mode"] == "chat")
    return ids, doc["source"]


# ---------------------------------------------------------------------------------------------
# Statistics


def composite(arena: dict, model: str, weights: dict[str, float]) -> tuple[float, float, list[str]] | None:
    """Weighted rating difference vs REFERENCE over the categories the model has.

    Returns (d, se, categories used) or None when the model has none of them.
    """
    ref = arena[REFERENCE]
    used = [c for c in weights if c in arena[model] and c in ref]
    if not used:
        return None
    total = sum(weights[c] for c in used)
    d = sum(weights[c] * (arena[model][c][0] - ref[c][0]) for c in used) / total
    se = sum(weights[c] * arena[model][c][1] for c in used) / total
    return d, se, used


def estimate_tau(arena: dict, models: list[str]) -> tuple[float, dict[str, float]]:
    """Std of a model's category-specific deviation from its overall rating (Elo), net of noise."""
    per_cat = {}
    for cat in TAU_CATEGORIES:
        devs = []
        noise = []
        for m in models:
            if cat in arena[m] and "full" in arena[m]:
                devs.append(arena[m][cat][0] - arena[m]["full"][0])
                noise.append(arena[m][cat][1] ** 2)
        if len(devs) < 5:
            continue
        var = statistics.variance(devs) - statistics.fmean(noise)
        per_cat[cat] = math.sqrt(max(var, 0.0))
    tau = math.sqrt(statistics.fmean(v * v for v in per_cat.values()))
    return tau, per_cat


def estimate_step(arena: dict) -> tuple[float, float, int]:
    """Mean and std of the `full` rating change between consecutive releases (SUCCESSIONS)."""
    deltas = []
    for old, new in SUCCESSIONS:
        if old not in arena or new not in arena:
            raise PriorsError(f"succession pair not in arena data: {old} -> {new}")
        deltas.append(arena[new]["full"][0] - arena[old]["full"][0])
    return statistics.fmean(deltas), statistics.stdev(deltas), len(deltas)


def fit_line(xs: list[float], ys: list[float]) -> dict:
    n = len(xs)
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    slope = sxy / sxx
    intercept = my - slope * mx
    rss = sum((y - intercept - slope * x) ** 2 for x, y in zip(xs, ys))
    return {"slope": slope, "intercept": intercept, "resid_sd": math.sqrt(rss / (n - 2)), "n": n, "mean_x": mx, "sxx": sxx}


def calibrate_wildbench(arena: dict, wb: dict) -> dict[str, dict]:
    """Per task with a WildBench category: arena composite d = intercept + slope * WB score."""
    out = {}
    for task, spec in TASKS.items():
        wb_cat = spec["wildbench"]
        if wb_cat is None:
            continue
        column = WB_COLUMNS[wb_cat]
        xs, ys = [], []
        for wb_name, arena_name in WB_TO_ARENA.items():
            if wb_name not in wb or arena_name not in arena or column not in wb[wb_name]:
                raise PriorsError(f"WildBench/arena pair missing: {wb_name} / {arena_name}")
            if not all(c in arena[arena_name] for c in spec["categories"]):
                continue
            comp = composite(arena, arena_name, spec["categories"])
            if comp is None:
                continue
            xs.append(wb[wb_name][column])
            ys.append(comp[0])
        out[task] = fit_line(xs, ys)
    return out


def wildbench_opinion(fit: dict, score: float) -> tuple[float, float]:
    """Predicted d and its variance for a WildBench score, from the fitted line."""
    d = fit["intercept"] + fit["slope"] * score
    var = fit["resid_sd"] ** 2 * (1 + 1 / fit["n"] + (score - fit["mean_x"]) ** 2 / fit["sxx"])
    return d, var


# Standard-normal quadrature grid: z in [-8, 8], step 0.02.
_GRID = [i / 50.0 for i in range(-400, 401)]
_WEIGHTS = [math.exp(-0.5 * z * z) for z in _GRID]
_WSUM = sum(_WEIGHTS)


def win_probability(d: float) -> float:
    return 1.0 / (1.0 + 10.0 ** (-d / ELO_SCALE))


def quality_distribution(d: float, sd: float) -> tuple[float, float]:
    """Mean and std of win_probability(D) for D ~ N(d, sd^2)."""
    m1 = m2 = 0.0
    for z, w in zip(_GRID, _WEIGHTS):
        q = win_probability(d + sd * z)
        m1 += w * q
        m2 += w * q * q
    m1 /= _WSUM
    m2 /= _WSUM
    return m1, math.sqrt(max(m2 - m1 * m1, 0.0))


# ---------------------------------------------------------------------------------------------
# Derivation


def derive(arena_bytes: bytes, wb_bytes: bytes, catalog_bytes: bytes) -> dict:
    arena = load_arena(arena_bytes)
    wb = load_wildbench(wb_bytes)
    chat_ids, catalog_source = catalog_chat_models(catalog_bytes)

    missing = [m for m in chat_ids if m not in CATALOG_MAP]
    if missing:
        raise PriorsError(f"catalog chat models without a decision in CATALOG_MAP: {missing}")
    stale = [m for m in CATALOG_MAP if m not in chat_ids]
    if stale:
        raise PriorsError(f"CATALOG_MAP lists models that are not catalog chat models: {stale}")
    for model_id, spec in CATALOG_MAP.items():
        if spec[0] in (RATED, IMPUTED) and spec[1] not in arena:
            raise PriorsError(f"{model_id}: arena model {spec[1]} not in the data")

    rated_arena = sorted({spec[1] for spec in CATALOG_MAP.values() if spec[0] == RATED} | {REFERENCE})
    tau, tau_per_cat = estimate_tau(arena, rated_arena)
    step_mean, step_sd, step_n = estimate_step(arena)
    wb_fits = calibrate_wildbench(arena, wb)
    # Evaluation transfer: two evaluations (arena's human votes, WildBench's checklist judge) of the
    # same models on matching categories disagree by the calibration residuals. Splitting that
    # disagreement evenly between the two, one evaluation's deviation from a third (this
    # deployment's notion of quality) has variance resid^2 / 2.
    eval_sd = math.sqrt(statistics.fmean(f["resid_sd"] ** 2 for f in wb_fits.values()) / 2.0)
    arena_to_wb = {a: w for w, a in WB_TO_ARENA.items()}

    models: dict[str, dict] = {}
    unrated: dict[str, str] = {}
    for model_id in chat_ids:
        spec = CATALOG_MAP[model_id]
        if spec[0] == NONE:
            unrated[model_id] = spec[1]
            continue
        kind, arena_name = spec[0], spec[1]
        k = spec[2] if kind == IMPUTED else 0
        note = spec[3] if kind == IMPUTED else spec[2]
        imp_var = k * step_sd**2 + (k * step_mean) ** 2
        tasks_out = {}
        for task in TASK_ORDER:
            tspec = TASKS[task]
            comp = composite(arena, arena_name, tspec["categories"])
            map_sd = MAPPING_MULTIPLIER[tspec["mapping"]] * tau
            fallback = False
            if comp is None:
                comp = composite(arena, arena_name, {"full": 1.0})
                if comp is None:
                    raise PriorsError(f"{arena_name} has no `full` rating")
                fallback = True
                map_sd = math.hypot(map_sd, tau)
            d, se, used = comp
            meas_var = se * se
            parts = [f"arena {VARIANT} {'+'.join(used)}"]
            if fallback:
                parts[0] += " (task categories unrated; fallback)"
            wb_name = arena_to_wb.get(arena_name)
            wb_cat = tspec["wildbench"]
            if wb_name is not None and wb_cat is not None and task in wb_fits:
                d_wb, v_wb = wildbench_opinion(wb_fits[task], wb[wb_name][WB_COLUMNS[wb_cat]])
                v_a = max(meas_var, 1e-9)
                combined_var = 1.0 / (1.0 / v_a + 1.0 / v_wb)
                combined_d = combined_var * (d / v_a + d_wb / v_wb)
                chi2 = (d - d_wb) ** 2 / (v_a + v_wb)
                if chi2 > 1.0:
                    combined_var *= chi2
                d, meas_var = combined_d, combined_var
                parts.append(f"WildBench {wb_cat} (chi2 {chi2:.1f})")
            total_sd = math.sqrt(meas_var + eval_sd**2 + map_sd**2 + imp_var)
            mean, sd = quality_distribution(d, total_sd)
            n_equiv = mean * (1 - mean) / (sd * sd) - 1
            if kind == IMPUTED:
                source = f"imputed from {arena_name} ({k} release{'s' if k > 1 else ''} older); " + "; ".join(parts)
            else:
                source = f"{arena_name}: " + "; ".join(parts)
            tasks_out[task] = {
                "mean": round(mean, 4),
                "std": round(sd, 4),
                "n_equiv": round(max(n_equiv, 0.0), 1),
                "elo_vs_reference": round(d, 1),
                "source": source,
            }
        models[model_id] = {
            "kind": kind,
            "arena_model": arena_name,
            "releases_after": k,
            "note": note,
            "tasks": tasks_out,
        }

    inputs = {
        "arena": {
            "file": "arena-leaderboard/arena_text_ratings_by_category.csv",
            "version": ARENA_VERSION,
            "sha256": sha256(arena_bytes),
            "variant": VARIANT,
        },
        "wildbench": {
            "file": "wildbench-leaderboard/wb_score_by_task_category.csv",
            "version": WILDBENCH_VERSION,
            "sha256": sha256(wb_bytes),
        },
        "catalog": {
            "file": "crates/kairos-core/data/catalog.json",
            "version": catalog_source.get("version", ""),
            "sha256": sha256(catalog_bytes),
        },
    }
    wb_lengths = sorted(v["avg_length_chars"] for v in wb.values() if "avg_length_chars" in v)
    wb_median_tokens = statistics.median(wb_lengths) / 4.0
    provenance = (
        f"quality priors v{SCHEMA_VERSION} (scripts/derive_quality_priors.py, as of {AS_OF}): "
        f"LMArena text {VARIANT} 2025-12-11 (arena-catalog c9558b6, sha256 {inputs['arena']['sha256'][:12]}) "
        f"+ WildBench 2024-08-01 (d6b8dca, sha256 {inputs['wildbench']['sha256'][:12]}); "
        f"quality = P(preferred over {REFERENCE}) per task"
    )
    return {
        "schema_version": SCHEMA_VERSION,
        "as_of": AS_OF,
        "provenance": provenance,
        "scale": f"P(the model's answer is preferred to {REFERENCE}'s on a prompt of the task), "
        f"Bradley-Terry / Elo with scale {ELO_SCALE:g}; 0.5 = parity with the reference",
        "reference_model": REFERENCE,
        "inputs": inputs,
        "method": {
            "tau_elo": round(tau, 2),
            "tau_per_category_elo": {c: round(v, 2) for c, v in tau_per_cat.items()},
            "mapping_multiplier": MAPPING_MULTIPLIER,
            "evaluation_transfer_sd_elo": round(eval_sd, 2),
            "release_step_mean_elo": round(step_mean, 2),
            "release_step_sd_elo": round(step_sd, 2),
            "release_step_pairs": step_n,
            "imputation_var_elo2": "k*sd^2 + (k*mean)^2 (mean not shifted)",
            "n_equiv": "mean*(1-mean)/std^2 - 1 (Beta pseudo-count)",
            "wildbench_calibration": {
                t: {
                    "wildbench_category": TASKS[t]["wildbench"],
                    "slope": round(f["slope"], 3),
                    "intercept": round(f["intercept"], 2),
                    "resid_sd_elo": round(f["resid_sd"], 2),
                    "n": f["n"],
                }
                for t, f in wb_fits.items()
            },
        },
        "tiers": {
            name: {"bar": round(win_probability(elo), 2), "elo_vs_reference": elo, "meaning": meaning}
            for name, (elo, meaning) in TIERS_ELO.items()
        },
        "expected_output_tokens": {t: n for t, (n, _) in EXPECTED_OUTPUT_TOKENS.items()},
        "expected_output_tokens_note": {
            "basis": "estimates of visible output per request (reasoning tokens excluded)",
            "wildbench_median_answer_tokens": round(wb_median_tokens),
            "per_task": {t: why for t, (_, why) in EXPECTED_OUTPUT_TOKENS.items()},
        },
        "tasks": {
            t: {
                "arena_categories": TASKS[t]["categories"],
                "mapping": TASKS[t]["mapping"],
                "mapping_sd_elo": round(MAPPING_MULTIPLIER[TASKS[t]["mapping"]] * tau, 2),
                "wildbench_category": TASKS[t]["wildbench"],
                "why": TASKS[t]["why"],
            }
            for t in TASK_ORDER
        },
        "models": models,
        "unrated": unrated,
    }


def render_json(doc: dict) -> str:
    return json.dumps(doc, indent=1, ensure_ascii=False) + "\n"


# ---------------------------------------------------------------------------------------------
# Markdown


SHORT = {
    "code": "code",
    "math": "math",
    "summarization": "summ",
    "extraction": "extr",
    "classification": "class",
    "translation": "transl",
    "creative_writing": "creat",
    "rewriting": "rewr",
    "open_qa": "openqa",
    "closed_qa": "closqa",
    "brainstorming": "brain",
    "chat": "chat",
}


def render_tables(doc: dict) -> str:
    lines = [GEN_BEGIN, ""]
    lines.append("#### Task type → arena categories")
    lines.append("")
    lines.append("| task | arena categories (weight) | mapping | mapping sd (Elo) | WildBench category | why |")
    lines.append("|---|---|---|---|---|---|")
    for t in TASK_ORDER:
        spec = doc["tasks"][t]
        cats = ", ".join(f"`{c}` {w:.2g}" for c, w in spec["arena_categories"].items())
        wbc = spec["wildbench_category"] or "–"
        lines.append(f"| {t} | {cats} | {spec['mapping']} | {spec['mapping_sd_elo']} | {wbc} | {spec['why']} |")
    lines.append("")
    lines.append("#### Catalog model → prior (mean quality per task; ± is the std of the `code` entry)")
    lines.append("")
    header = "| catalog id | from arena entry | kind | " + " | ".join(SHORT[t] for t in TASK_ORDER) + " | note |"
    lines.append(header)
    lines.append("|---|---|---|" + "---|" * len(TASK_ORDER) + "---|")
    for model_id, m in doc["models"].items():
        kind = m["kind"] if m["kind"] == RATED else f"imputed (k={m['releases_after']})"
        cells = []
        for t in TASK_ORDER:
            e = m["tasks"][t]
            cells.append(f"{e['mean']:.2f}" + (f" ±{e['std']:.2f}" if t == "code" else ""))
        lines.append(f"| `{model_id}` | `{m['arena_model']}` | {kind} | " + " | ".join(cells) + f" | {m['note']} |")
    for model_id, reason in doc["unrated"].items():
        lines.append(f"| `{model_id}` | – | no prior | " + " | ".join("–" for _ in TASK_ORDER) + f" | {reason} |")
    lines.append("")
    lines.append("#### Tiers and expected output tokens")
    lines.append("")
    lines.append("| tier | bar | Elo vs reference | meaning |")
    lines.append("|---|---|---|---|")
    for name, tier in doc["tiers"].items():
        lines.append(f"| {name} | {tier['bar']:.2f} | {tier['elo_vs_reference']:+g} | {tier['meaning']} |")
    lines.append("")
    lines.append("| task | expected output tokens | basis |")
    lines.append("|---|---|---|")
    for t in TASK_ORDER:
        n = doc["expected_output_tokens"][t]
        lines.append(f"| {t} | {n} | {doc['expected_output_tokens_note']['per_task'][t]} |")
    lines.append("")
    lines.append(GEN_END)
    return "\n".join(lines)


def splice_markdown(existing: str, tables: str) -> str:
    start = existing.find(GEN_BEGIN)
    end = existing.find(GEN_END)
    if start < 0 or end < 0 or end < start:
        raise PriorsError("markdown file lacks the GENERATED TABLES markers")
    return existing[:start] + tables + existing[end + len(GEN_END) :]


# ---------------------------------------------------------------------------------------------


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arena", type=Path, default=DEFAULT_ARENA)
    parser.add_argument("--wildbench", type=Path, default=DEFAULT_WILDBENCH)
    parser.add_argument("--catalog", type=Path, default=DEFAULT_CATALOG)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--markdown", type=Path, help="markdown doc whose generated tables to refresh")
    parser.add_argument("--check", action="store_true", help="exit 1 if the file(s) are not up to date")
    args = parser.parse_args(argv)

    try:
        doc = derive(args.arena.read_bytes(), args.wildbench.read_bytes(), args.catalog.read_bytes())
        rendered = render_json(doc)
        outputs = [(args.output, rendered)]
        if args.markdown is not None:
            existing = args.markdown.read_text(encoding="utf-8")
            outputs.append((args.markdown, splice_markdown(existing, render_tables(doc))))
    except (OSError, PriorsError, KeyError, ValueError) as err:
        print(f"derive_quality_priors: error: {err}", file=sys.stderr)
        return 2

    if args.check:
        stale = [str(p) for p, text in outputs if not p.exists() or p.read_text(encoding="utf-8") != text]
        if stale:
            print(f"derive_quality_priors: out of date: {', '.join(stale)} (re-run the script)", file=sys.stderr)
            return 1
        print(f"derive_quality_priors: up to date ({len(doc['models'])} models with priors, {len(doc['unrated'])} without)")
        return 0

    for path, text in outputs:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(f"derive_quality_priors: wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

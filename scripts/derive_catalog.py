#!/usr/bin/env python3
"""Derive KairosRoute's built-in model catalog from litellm's price table.

Input:  litellm's model_prices_and_context_window.json (default: the copy vendored
        under ../shared/data/priors/litellm-prices/, litellm 1.109.1 wheel, MIT).
Output: crates/kairos-core/data/catalog.json (deterministic: re-running on the same
        input yields a byte-identical file) and, with --markdown, the generated model
        table inside docs/catalog.md (between the GENERATED markers).

Usage:
    python3 scripts/derive_catalog.py [INPUT_JSON]              # write catalog.json
    python3 scripts/derive_catalog.py --markdown docs/catalog.md  # also refresh the doc table
    python3 scripts/derive_catalog.py --check [--markdown docs/catalog.md]
        # exit 1 if the committed file(s) differ from what would be generated

Python 3.11, standard library only.
"""

from __future__ import annotations

import argparse
import decimal
import hashlib
import json
import re
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_INPUT = (
    REPO_ROOT.parent / "shared" / "data" / "priors" / "litellm-prices" / "model_prices_and_context_window.json"
)
DEFAULT_OUTPUT = REPO_ROOT / "crates" / "kairos-core" / "data" / "catalog.json"

SOURCE_NAME = "litellm model_prices_and_context_window.json"
SOURCE_VERSION = "litellm 1.109.1"

# Models whose deprecation_date is strictly before this day are dropped. This is a
# constant (not "today") so that the output only depends on the input file: bump it
# deliberately when you refresh the catalog.
AS_OF = "2026-11-21"

# litellm_provider -> our provider name.
PROVIDER_MAP = {
    "openai": "openai",
    "anthropic": "anthropic",
    "gemini": "gemini",
    "mistral": "mistral",
    "deepseek": "deepseek",
    "groq": "groq",
    "together_ai": "together",
    "openrouter": "openrouter",
    "xai": "xai",
}

# Providers whose chat API accepts `response_format: {"type": "json_object"}` for
# every chat model (so json_mode is true even when litellm does not flag
# supports_response_schema). Anthropic has no JSON mode; Groq and Together only
# support it per model, so for those we rely on litellm's flag.
JSON_MODE_PROVIDERS = {"openai", "gemini", "mistral", "deepseek", "xai"}

# The curated list. Each row: (id, litellm key, extra aliases).
#   id         the name clients send; also the provider's API model id
#              (upstream_model) unless UPSTREAM overrides it.
#   litellm key the key in the litellm table (often provider-prefixed).
#   aliases    extra names besides "<provider>/<id>" and the litellm key.
# Rows whose litellm entry is deprecated as of AS_OF are skipped (reported on
# stderr); rows whose key is missing are an error, so a refresh against a newer
# litellm surfaces removals instead of silently shrinking the catalog.
CURATED: list[tuple[str, str, tuple[str, ...]]] = [
    # --- OpenAI, chat ---
    ("gpt-4o", "gpt-4o", ()),
    ("gpt-4o-mini", "gpt-4o-mini", ()),
    ("gpt-4.1", "gpt-4.1", ()),
    ("gpt-4.1-mini", "gpt-4.1-mini", ()),
    ("gpt-4.1-nano", "gpt-4.1-nano", ()),  # deprecated 2026-10-23 in 1.109.1
    ("gpt-5", "gpt-5", ()),
    ("gpt-5-mini", "gpt-5-mini", ()),
    ("gpt-5-nano", "gpt-5-nano", ()),
    ("gpt-5.1", "gpt-5.1", ()),
    ("gpt-5.2", "gpt-5.2", ()),
    ("gpt-5.4", "gpt-5.4", ()),
    ("gpt-5.4-mini", "gpt-5.4-mini", ()),
    ("gpt-5.4-nano", "gpt-5.4-nano", ()),
    ("gpt-5.5", "gpt-5.5", ()),
    ("gpt-5.6", "gpt-5.6", ()),
    ("o1", "o1", ()),  # deprecated 2026-10-23
    ("o3", "o3", ()),
    ("o3-mini", "o3-mini", ()),  # deprecated 2026-10-23
    ("o4-mini", "o4-mini", ()),  # deprecated 2026-10-23
    # --- OpenAI, embeddings ---
    ("text-embedding-3-small", "text-embedding-3-small", ()),
    ("text-embedding-3-large", "text-embedding-3-large", ()),
    ("text-embedding-ada-002", "text-embedding-ada-002", ()),
    # --- Anthropic ---
    ("claude-haiku-4-5", "claude-haiku-4-5", ()),
    ("claude-sonnet-4-5", "claude-sonnet-4-5", ()),
    ("claude-sonnet-4-6", "claude-sonnet-4-6", ()),
    ("claude-opus-4-5", "claude-opus-4-5", ()),
    ("claude-opus-4-6", "claude-opus-4-6", ()),
    ("claude-opus-4-7", "claude-opus-4-7", ()),
    ("claude-opus-4-8", "claude-opus-4-8", ()),
    ("claude-sonnet-5", "claude-sonnet-5", ()),
    ("claude-opus-5", "claude-opus-5", ()),
    ("claude-sonnet-5-5", "claude-sonnet-5-5", ()),
    ("claude-opus-5-5", "claude-opus-5-5", ()),
    ("claude-haiku-5-5", "claude-haiku-5-5", ()),
    # --- Google Gemini (AI Studio API) ---
    ("gemini-2.5-pro", "gemini/gemini-2.5-pro", ()),
    ("gemini-2.5-flash", "gemini/gemini-2.5-flash", ()),
    ("gemini-2.5-flash-lite", "gemini/gemini-2.5-flash-lite", ()),
    ("gemini-3-flash-preview", "gemini/gemini-3-flash-preview", ()),
    ("gemini-3.1-pro-preview", "gemini/gemini-3.1-pro-preview", ()),
    ("gemini-3.1-flash-lite", "gemini/gemini-3.1-flash-lite", ()),
    ("gemini-3.5-flash", "gemini/gemini-3.5-flash", ()),
    ("gemini-3.5-flash-lite", "gemini/gemini-3.5-flash-lite", ()),
    ("gemini-pro-latest", "gemini/gemini-pro-latest", ()),
    ("gemini-flash-latest", "gemini/gemini-flash-latest", ()),
    ("gemini-flash-lite-latest", "gemini/gemini-flash-lite-latest", ()),
    ("gemini-embedding-001", "gemini/gemini-embedding-001", ()),
    ("gemini-embedding-2", "gemini/gemini-embedding-2", ()),
    # --- Mistral ---
    ("mistral-large-latest", "mistral/mistral-large-latest", ("mistral-large",)),
    ("mistral-medium-latest", "mistral/mistral-medium-latest", ("mistral-medium",)),
    ("mistral-small-latest", "mistral/mistral-small-latest", ("mistral-small",)),
    ("magistral-medium-latest", "mistral/magistral-medium-latest", ("magistral-medium",)),
    ("magistral-small-latest", "mistral/magistral-small-latest", ("magistral-small",)),
    ("codestral-latest", "mistral/codestral-latest", ("codestral",)),
    ("devstral-medium-latest", "mistral/devstral-medium-latest", ("devstral-medium",)),
    ("devstral-small-latest", "mistral/devstral-small-latest", ("devstral-small",)),
    ("ministral-14b-latest", "mistral/ministral-14b-latest", ("ministral-14b",)),
    ("ministral-8b-latest", "mistral/ministral-8b-latest", ("ministral-8b",)),
    ("ministral-3b-latest", "mistral/ministral-3b-latest", ("ministral-3b",)),
    ("pixtral-large-latest", "mistral/pixtral-large-latest", ("pixtral-large",)),
    ("mistral-embed", "mistral/mistral-embed", ()),
    ("codestral-embed", "mistral/codestral-embed", ()),
    # --- DeepSeek ---
    ("deepseek-chat", "deepseek/deepseek-chat", ()),  # deprecated 2026-07-24
    ("deepseek-reasoner", "deepseek/deepseek-reasoner", ()),  # deprecated 2026-07-24
    ("deepseek-v4-pro", "deepseek/deepseek-v4-pro", ()),
    ("deepseek-v4-flash", "deepseek/deepseek-v4-flash", ()),
    ("deepseek-v3.2", "deepseek/deepseek-v3.2", ()),
    # --- Groq (litellm 1.109.1 no longer lists groq llama-3.x chat models) ---
    ("gpt-oss-120b", "groq/openai/gpt-oss-120b", ()),
    ("gpt-oss-20b", "groq/openai/gpt-oss-20b", ()),
    ("qwen3.8-27b", "groq/qwen/qwen3.8-27b", ()),
    # --- Together AI (ids are Together's own org/model ids) ---
    ("moonshotai/Kimi-K3", "together_ai/moonshotai/Kimi-K3", ()),
    ("deepseek-ai/DeepSeek-V4-Pro-0813", "together_ai/deepseek-ai/DeepSeek-V4-Pro-0813", ()),
    ("zai-org/GLM-5.3", "together_ai/zai-org/GLM-5.3", ()),
    ("zai-org/GLM-5.3-Flash", "together_ai/zai-org/GLM-5.3-Flash", ()),
    ("Qwen/Qwen3.7-Max", "together_ai/Qwen/Qwen3.7-Max", ()),
    ("Qwen/Qwen3.5-9B", "together_ai/Qwen/Qwen3.5-9B", ()),
    ("BAAI/bge-base-en-v1.5", "together_ai/BAAI/bge-base-en-v1.5", ()),
    # --- xAI ---
    ("grok-4.7", "xai/grok-4.7", ()),
    ("grok-4.6", "xai/grok-4.6", ()),
    ("grok-4.5", "xai/grok-4.5", ()),
    ("grok-4.3", "xai/grok-4.3", ()),
    ("grok-4.20-reasoning", "xai/grok-4.20-reasoning", ()),
    ("grok-4.20-non-reasoning", "xai/grok-4.20-non-reasoning", ()),
    ("grok-code-fast", "xai/grok-code-fast", ()),
]

# id -> provider API model id, where it differs from the id.
UPSTREAM = {
    "gpt-oss-120b": "openai/gpt-oss-120b",
    "gpt-oss-20b": "openai/gpt-oss-20b",
    "qwen3.8-27b": "qwen/qwen3.8-27b",
}

MODES = {"chat": "chat", "embedding": "embedding"}

MICROS_PER_USD_PER_1M = decimal.Decimal(10) ** 12  # USD/token -> micro-USD per 1M tokens

GEN_BEGIN = "<!-- BEGIN GENERATED TABLE (scripts/derive_catalog.py --markdown docs/catalog.md) -->"
GEN_END = "<!-- END GENERATED TABLE -->"


class CatalogError(Exception):
    pass


def micros_per_1m(usd_per_token: object) -> int | None:
    """USD per token (a JSON number) -> integer micro-USD per 1M tokens, half-up."""
    if usd_per_token is None:
        return None
    if isinstance(usd_per_token, bool) or not isinstance(usd_per_token, (int, float)):
        raise CatalogError(f"price is not a number: {usd_per_token!r}")
    value = decimal.Decimal(str(usd_per_token)) * MICROS_PER_USD_PER_1M
    if value < 0:
        raise CatalogError(f"negative price: {usd_per_token!r}")
    return int(value.quantize(decimal.Decimal(1), rounding=decimal.ROUND_HALF_UP))


def cache_price(usd_per_token: object) -> int | None:
    """Cache prices of 0 in litellm mean "no separate rate" (e.g. DeepSeek's
    cache_creation_input_token_cost: 0.0, where a cache miss is billed as input);
    we store None so cost maths falls back to the input price."""
    micros = micros_per_1m(usd_per_token)
    return None if micros == 0 else micros


def positive_int(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise CatalogError(f"not a positive integer: {value!r}")
    return value


def long_context_threshold(raw: dict) -> int | None:
    """Smallest N for which litellm lists input_cost_per_token_above_<N>k_tokens."""
    thresholds = []
    for key in raw:
        m = re.fullmatch(r"input_cost_per_token_above_(\d+)k_tokens", key)
        if m:
            thresholds.append(int(m.group(1)) * 1000)
    return min(thresholds) if thresholds else None


def build_model(model_id: str, key: str, extra_aliases: tuple[str, ...], raw: dict) -> dict:
    litellm_provider = raw.get("litellm_provider")
    provider = PROVIDER_MAP.get(litellm_provider)
    if provider is None:
        raise CatalogError(f"{key}: unmapped litellm_provider {litellm_provider!r}")
    mode = MODES.get(raw.get("mode"))
    if mode is None:
        raise CatalogError(f"{key}: unsupported mode {raw.get('mode')!r}")

    input_price = micros_per_1m(raw.get("input_cost_per_token"))
    output_price = micros_per_1m(raw.get("output_cost_per_token"))
    if mode == "embedding" and input_price is not None and output_price is None:
        output_price = 0
    if input_price is None or output_price is None:
        raise CatalogError(f"{key}: missing input/output price")
    price = {
        "input": input_price,
        "output": output_price,
        "cached_input": cache_price(raw.get("cache_read_input_token_cost")),
        "cache_write": cache_price(raw.get("cache_creation_input_token_cost")),
    }

    context_window = positive_int(raw.get("max_input_tokens") or raw.get("max_tokens"))
    max_output = positive_int(raw.get("max_output_tokens")) if mode == "chat" else None

    is_chat = mode == "chat"
    json_mode = is_chat and (bool(raw.get("supports_response_schema")) or provider in JSON_MODE_PROVIDERS)
    capabilities = {
        "tools": is_chat and bool(raw.get("supports_function_calling")),
        "vision": bool(raw.get("supports_vision")),
        "json_mode": json_mode,
        "reasoning": is_chat and bool(raw.get("supports_reasoning")),
    }

    aliases = {f"{provider}/{model_id}", key, *extra_aliases}
    upstream = UPSTREAM.get(model_id, model_id)
    aliases.add(f"{provider}/{upstream}")
    aliases.discard(model_id)

    deprecation = raw.get("deprecation_date")
    if deprecation is not None and not re.fullmatch(r"\d{4}-\d{2}-\d{2}", str(deprecation)):
        raise CatalogError(f"{key}: bad deprecation_date {deprecation!r}")

    model = {
        "id": model_id,
        "provider": provider,
        "upstream_model": upstream,
        "mode": mode,
        "context_window": context_window,
        "max_output_tokens": max_output,
        "price": price,
        "capabilities": capabilities,
        "aliases": sorted(aliases),
        "deprecation_date": deprecation,
    }
    if mode == "embedding" and raw.get("output_vector_size") is not None:
        model["output_vector_size"] = positive_int(raw["output_vector_size"])
    return model


def derive(input_bytes: bytes, as_of: str = AS_OF) -> tuple[dict, list[str], dict[str, int]]:
    """Returns (catalog document, notes for stderr, id -> long-context threshold)."""
    table = json.loads(input_bytes)
    notes: list[str] = []
    models = []
    tiers: dict[str, int] = {}
    seen_ids: set[str] = set()
    for model_id, key, extra in CURATED:
        if model_id in seen_ids:
            raise CatalogError(f"duplicate id in CURATED: {model_id}")
        seen_ids.add(model_id)
        raw = table.get(key)
        if not isinstance(raw, dict):
            raise CatalogError(f"{key}: not in the input (curated id {model_id})")
        deprecation = raw.get("deprecation_date")
        if deprecation is not None and str(deprecation) < as_of:
            notes.append(f"skipped {model_id} ({key}): deprecated {deprecation}")
            continue
        models.append(build_model(model_id, key, extra, raw))
        threshold = long_context_threshold(raw)
        if threshold is not None:
            tiers[model_id] = threshold

    models.sort(key=lambda m: m["id"])
    names: dict[str, str] = {}
    for m in models:
        for name in [m["id"], *m["aliases"]]:
            if name in names:
                raise CatalogError(f"name {name!r} used by both {names[name]} and {m['id']}")
            names[name] = m["id"]

    doc = {
        "source": {
            "name": SOURCE_NAME,
            "version": SOURCE_VERSION,
            "sha256": hashlib.sha256(input_bytes).hexdigest(),
        },
        "models": models,
    }
    return doc, notes, tiers


def render_json(doc: dict) -> str:
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def usd(micros: int | None) -> str:
    """micro-USD per 1M tokens -> '$ per 1M tokens' text, no float noise."""
    if micros is None:
        return "–"
    text = format(decimal.Decimal(micros) / decimal.Decimal(1_000_000), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def tokens(n: int | None) -> str:
    return "–" if n is None else f"{n:,}"


def render_table(doc: dict, tiers: dict[str, int]) -> str:
    models = doc["models"]
    chat = [m for m in models if m["mode"] == "chat"]
    providers = sorted({m["provider"] for m in models})
    lines = [
        GEN_BEGIN,
        "",
        f"Source: {doc['source']['name']} ({doc['source']['version']}), "
        f"sha256 `{doc['source']['sha256']}`; deprecations as of {AS_OF}.",
        f"{len(models)} models ({len(chat)} chat, {len(models) - len(chat)} embedding) "
        f"from {len(providers)} providers: {', '.join(providers)}.",
        "",
        "Prices in USD per 1M tokens (the catalog stores them as integer micro-USD per 1M tokens). "
        "Caps: T tools, V vision, J JSON mode, R reasoning.",
        "",
        "| id | provider | mode | context | max out | in | out | cached in | cache write | caps | notes |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for m in models:
        p = m["price"]
        c = m["capabilities"]
        caps = "".join(
            flag for flag, on in (("T", c["tools"]), ("V", c["vision"]), ("J", c["json_mode"]), ("R", c["reasoning"])) if on
        )
        notes = []
        if m["deprecation_date"]:
            notes.append(f"deprecated {m['deprecation_date']}")
        if m["id"] in tiers:
            notes.append(f"higher rate above {tiers[m['id']] // 1000}k input (not modelled)")
        if "output_vector_size" in m:
            notes.append(f"{m['output_vector_size']} dims")
        lines.append(
            f"| `{m['id']}` | {m['provider']} | {m['mode']} | {tokens(m['context_window'])} "
            f"| {tokens(m['max_output_tokens'])} | {usd(p['input'])} | {usd(p['output'])} "
            f"| {usd(p['cached_input'])} | {usd(p['cache_write'])} | {caps or '–'} | {'; '.join(notes)} |"
        )
    lines += ["", GEN_END]
    return "\n".join(lines)


def splice_markdown(existing: str | None, table: str) -> str:
    if existing is None:
        return f"# Model catalog\n\n{table}\n"
    begin = existing.find(GEN_BEGIN)
    end = existing.find(GEN_END)
    if begin < 0 or end < begin:
        raise CatalogError("markdown file lacks the GENERATED TABLE markers")
    return existing[:begin] + table + existing[end + len(GEN_END) :]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", nargs="?", type=Path, default=DEFAULT_INPUT, help="litellm price JSON")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="catalog.json to write")
    parser.add_argument("--markdown", type=Path, help="markdown doc whose generated table to refresh")
    parser.add_argument("--check", action="store_true", help="exit 1 if the file(s) are not up to date")
    args = parser.parse_args(argv)

    try:
        input_bytes = args.input.read_bytes()
    except OSError as e:
        print(f"derive_catalog: cannot read {args.input}: {e}", file=sys.stderr)
        return 2
    try:
        doc, notes, tiers = derive(input_bytes)
        outputs = [(args.output, render_json(doc))]
        if args.markdown is not None:
            existing = args.markdown.read_text(encoding="utf-8") if args.markdown.exists() else None
            outputs.append((args.markdown, splice_markdown(existing, render_table(doc, tiers))))
    except CatalogError as e:
        print(f"derive_catalog: {e}", file=sys.stderr)
        return 2

    if args.check:
        stale = []
        for path, text in outputs:
            current = path.read_text(encoding="utf-8") if path.exists() else None
            if current != text:
                stale.append(str(path))
        if stale:
            print(
                "derive_catalog: out of date: " + ", ".join(stale) + " (run scripts/derive_catalog.py"
                + (" --markdown " + str(args.markdown) if args.markdown else "") + ")",
                file=sys.stderr,
            )
            return 1
        return 0

    for note in notes:
        print(f"derive_catalog: {note}", file=sys.stderr)
    for path, text in outputs:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    chat = sum(1 for m in doc["models"] if m["mode"] == "chat")
    print(f"derive_catalog: wrote {len(doc['models'])} models ({chat} chat) to {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

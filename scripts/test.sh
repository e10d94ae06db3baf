#!/usr/bin/env bash
# The whole test suite, as on CI: Rust unit + integration tests (cargo-nextest when installed,
# else cargo test), then the real-client tests with the official openai and anthropic Python SDKs
# (pinned in clients/python/requirements.lock, installed into .venv-clients on first run).
#
# PostgreSQL-backed tests run when KAIROS_TEST_POSTGRES_URL is set (CI sets it); otherwise they
# print a SKIP line.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${KAIROS_TEST_POSTGRES_URL:-}" ]; then
  echo "note: KAIROS_TEST_POSTGRES_URL is unset: PostgreSQL tests will be skipped (they say so)."
fi

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
else
  echo "note: cargo-nextest not found, using cargo test"
  cargo test --workspace --no-fail-fast
fi

# The shipped classifier weights are exactly what the training script produces from the public
# data (reproducibility check, ~20 s).
if [ -d ../shared/data/classifier-sources ]; then
  cargo run -q -p kairos-router --example train_classifier -- --check
else
  echo "SKIP classifier --check: ../shared/data/classifier-sources not found"
fi

# The client tests drive the real binary (the debug build above already produced it).
cargo build -p kairos-server --bin kairos --quiet
KAIROS_BIN="$PWD/target/debug/kairos" bash clients/python/run.sh

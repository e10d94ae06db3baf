#!/usr/bin/env bash
# Real-client tests: the official openai and anthropic Python SDKs against a spawned `kairos`.
#
#   bash clients/python/run.sh [pytest args...]
#
# - Python: $PYTHON, else python3.11, else python3 (3.11 or newer).
# - Virtualenv: $REPO/.venv-clients, (re)built from requirements.lock (exact pins, transitive
#   dependencies included, installed with --no-deps, then `pip check`) whenever the lock or the
#   interpreter changed; a stamp file in the venv records what it was built from.
# - Binary: $KAIROS_BIN if set (nothing is built: CI and scripts/test.sh pass it); otherwise
#   `cargo build -p kairos-server` when cargo is available, then target/debug/kairos.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
VENV="$REPO/.venv-clients"
LOCK="$HERE/requirements.lock"
STAMP="$VENV/.kairos-lock-stamp"

pick_python() {
  local c
  for c in ${PYTHON:-} python3.11 python3; do
    if command -v "$c" >/dev/null 2>&1 \
      && "$c" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
      echo "$c"
      return 0
    fi
  done
  echo "run.sh: Python 3.11 or newer is required (set PYTHON=/path/to/python3.11)" >&2
  return 1
}

PY="$(pick_python)"
# What the venv must have been built from: the lock's content and the interpreter.
WANT="$("$PY" - "$LOCK" <<'EOF'
import hashlib, sys
lock = open(sys.argv[1], "rb").read()
print(hashlib.sha256(lock).hexdigest(), sys.executable, sys.version.split()[0])
EOF
)"

if [ ! -x "$VENV/bin/python" ] || [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
  echo "run.sh: building $VENV from requirements.lock"
  rm -rf "$VENV"
  if ! "$PY" -m venv "$VENV"; then
    echo "run.sh: '$PY -m venv' failed (on Debian/Ubuntu: apt-get install python3.11-venv)" >&2
    exit 1
  fi
  "$VENV/bin/python" -m pip install --disable-pip-version-check --no-input -q \
    --require-virtualenv --no-deps -r "$LOCK"
  "$VENV/bin/python" -m pip check --disable-pip-version-check
  echo "$WANT" >"$STAMP"
fi

if [ -z "${KAIROS_BIN:-}" ]; then
  if command -v cargo >/dev/null 2>&1; then
    (cd "$REPO" && cargo build -p kairos-server --bin kairos --quiet)
  fi
  export KAIROS_BIN="$REPO/target/debug/kairos"
fi

cd "$REPO"
export PYTHONDONTWRITEBYTECODE=1
exec "$VENV/bin/python" -m pytest -q clients/python "$@"

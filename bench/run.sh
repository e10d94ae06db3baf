#!/usr/bin/env bash
# Load benchmark: KairosRoute next to LiteLLM and Portkey in one run, with ../shared/peerbench
# (nginx mock upstream + wrk; load generator and mock on CPU 0, each gateway pinned to CPU 1).
#
#   bench/run.sh                      # RUNS=3, targets: direct, kairos, litellm, portkey (~30 min)
#   RUNS=1 PEERS="" bench/run.sh      # direct and kairos only (~5 min)
#   SKIP_SETUP=1 KAIROS_BIN=... bench/run.sh
#
# Results: ../shared/peerbench/results/<stamp>/summary.md, copied to bench/results/<stamp>/.
# The kairos ledger is ON (SQLite). Numbers go to docs/benchmarks.md by hand, with the machine.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
PB="${PEERBENCH:-$ROOT/../shared/peerbench}"
RUN_DIR="${RUN_DIR:-/tmp/peerbench}"
PEERS="${PEERS-litellm:litellm:litellm:1 portkey:portkey:portkey:1}"
export RUNS="${RUNS:-3}"
STAMP="${STAMP:-$(date -u +%Y%m%d-%H%M)}"
export STAMP

[ -d "$PB" ] || { echo "peerbench not found at $PB" >&2; exit 1; }
[ "${SKIP_SETUP:-0}" = 1 ] || "$PB/setup.sh"
if [ -z "${KAIROS_BIN:-}" ]; then
  (cd "$ROOT" && cargo build --release --bin kairos)
  KAIROS_BIN="$ROOT/target/release/kairos"
fi
mkdir -p "$RUN_DIR"
rm -rf "$RUN_DIR/kairos-data"

export KAIROS_MASTER_KEY=kr-bench-master-key-0123456789
setsid taskset -c 1 "$KAIROS_BIN" serve --config "$HERE/kairos-bench.toml" >"$RUN_DIR/gw-kairos.log" 2>&1 </dev/null &
echo $! >"$RUN_DIR/gw-ours.pid"
stop_kairos() {
  local pid; pid=$(cat "$RUN_DIR/gw-ours.pid" 2>/dev/null || true)
  [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
}
trap stop_kairos EXIT
for _ in $(seq 100); do curl -fsS -o /dev/null http://127.0.0.1:8080/healthz 2>/dev/null && break; sleep 0.1; done

TARGETS="direct:-:direct kairos:-:$HERE/ours.env $PEERS" "$PB/bench-all.sh"

mkdir -p "$HERE/results/$STAMP"
cp "$PB/results/$STAMP"/* "$HERE/results/$STAMP/" 2>/dev/null || true
cp "$RUN_DIR/gw-kairos.log" "$HERE/results/$STAMP/" 2>/dev/null || true
stop_kairos
trap - EXIT
# Ledger check: every measured request has its row.
if command -v sqlite3 >/dev/null; then
  echo "ledger rows: $(sqlite3 "$RUN_DIR/kairos-data/kairos.db" 'select count(*) from requests')" | tee -a "$HERE/results/$STAMP/env.txt"
fi
echo "results: $HERE/results/$STAMP/summary.md"

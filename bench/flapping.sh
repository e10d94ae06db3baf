#!/usr/bin/env bash
# A flapping provider: two upstreams (kairos mock, 20 ms latency) behind a `loadbalance`
# strategy; in the second phase one of them answers 30% of requests with 503. Measures what the
# client sees (failed requests, latency) with wrk, and what the gateway did (ledger: attempts).
#
#   bench/flapping.sh                 # builds release, 20 s per phase
#   DURATION=10 CONNS=16 KAIROS_BIN=target/release/kairos bench/flapping.sh
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
DURATION="${DURATION:-20}"
CONNS="${CONNS:-16}"
RUN=/tmp/kairos-flapping
command -v wrk >/dev/null || { echo "wrk not found (apt-get install wrk, or ../shared/peerbench/setup.sh)" >&2; exit 1; }
if [ -z "${KAIROS_BIN:-}" ]; then
  (cd "$ROOT" && cargo build --release --bin kairos)
  KAIROS_BIN="$ROOT/target/release/kairos"
fi
mkdir -p "$RUN"
export KAIROS_MASTER_KEY=kr-bench-master-key-0123456789
cat > "$RUN/post.lua" <<'LUA'
wrk.method = "POST"
wrk.body = '{"model":"pair","messages":[{"role":"user","content":"Hello! Please answer briefly."}],"max_tokens":64}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer kr-bench-master-key-0123456789"
LUA
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

phase() { # $1 label, $2 fault rate of the flappy upstream, $3 gateway config
  rm -rf "$RUN/data"
  taskset -c 0 "$KAIROS_BIN" mock-upstream --listen 127.0.0.1:18091 --latency-ms 20 --fault-rate "$2" >"$RUN/mock-a.log" 2>&1 &
  pids+=($!)
  taskset -c 0 "$KAIROS_BIN" mock-upstream --listen 127.0.0.1:18092 --latency-ms 20 >"$RUN/mock-b.log" 2>&1 &
  pids+=($!)
  taskset -c 1 "$KAIROS_BIN" serve --config "$3" >"$RUN/gw.log" 2>&1 &
  local gw=$!; pids+=($gw)
  for _ in $(seq 100); do curl -fsS -o /dev/null http://127.0.0.1:8081/healthz 2>/dev/null && break; sleep 0.1; done
  echo "== $1 (flappy upstream fault rate $2, $CONNS connections, ${DURATION}s)"
  taskset -c 0 wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency -s "$RUN/post.lua" http://127.0.0.1:8081/v1/chat/completions \
    >"$RUN/wrk.txt"
  grep -E "Requests/sec|50%|90%|99%|requests in|Socket errors" "$RUN/wrk.txt"
  grep -E "Non-2xx" "$RUN/wrk.txt" || echo "  Non-2xx or 3xx responses: 0"
  kill -TERM "$gw"; wait "$gw" 2>/dev/null || true
  if command -v sqlite3 >/dev/null; then
    sqlite3 "$RUN/data/kairos.db" "select 'ledger: ' || count(*) || ' rows, ' || sum(status_code = 200) || ' ok, ' || sum(attempts > 1) || ' needed >1 attempt, served by flappy ' || sum(served_model = 'm-flappy') from requests"
  fi
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  pids=()
  sleep 0.5
}

CFG="$HERE/kairos-flapping.toml"
# The same with outlier ejection effectively off: retries and health weights alone.
sed 's/^\[resilience\]$/[resilience]\neject_after_failures = 1000000/' "$CFG" >"$RUN/no-eject.toml"

phase "both upstreams healthy" 0 "$CFG"
phase "one upstream flapping" 0.3 "$CFG"
phase "one upstream flapping, ejection off" 0.3 "$RUN/no-eject.toml"

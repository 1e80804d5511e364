#!/usr/bin/env bash
# Two builds of the server side by side, pinned (server on CPU 0, load
# generator on CPU 1), back to back: idle memory per joined connection and
# relay CPU per message, and the same for the PeerJS dialect of AFTER driven by
# the `peerjs` adapter. For checking that a change keeps a bound (issue #11:
# within 5%; issue #12: the dialect within 10% of /ws).
#
#   bench/before-after.sh BEFORE_BINARY AFTER_BINARY [REPS]
#
# Results (JSON, one per run) go to target/before-after/; a summary is printed.
set -euo pipefail
cd "$(dirname "$0")/.."
BEFORE=${1:?usage: bench/before-after.sh BEFORE_BINARY AFTER_BINARY [REPS]}
AFTER=${2:?usage: bench/before-after.sh BEFORE_BINARY AFTER_BINARY [REPS]}
REPS=${3:-2}
cargo build --quiet --release -p switchboard-bench --bin switchboard-bench
BENCH=$PWD/target/release/switchboard-bench
OUT=$PWD/target/before-after
mkdir -p "$OUT"

run() { # NAME BINARY SCENARIO ADAPTER ARGS...
  local name=$1 bin=$2 scenario=$3 adapter=$4
  shift 4
  local port=$((21000 + RANDOM % 9000))
  taskset -c 0 "$bin" serve --listen "127.0.0.1:$port" --log warn --rate-limit-messages 0 --rate-limit-bytes 0 \
    --max-connections 100000 --max-connections-per-ip 100000 --shutdown-timeout 2s >"$OUT/$name.server.log" 2>&1 &
  local pid=$!
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
  sleep 0.3
  taskset -c 1 "$BENCH" "$scenario" --adapter "$adapter" --url "ws://127.0.0.1:$port" --server-pid "$pid" "$@" \
    --json >"$OUT/$name.json" 2>"$OUT/$name.log" || echo "$name: checks failed (see $OUT/$name.log)" >&2
  kill "$pid"
  wait "$pid" 2>/dev/null || true
}

for rep in $(seq "$REPS"); do
  run "idle-before-$rep" "$BEFORE" idle switchboard --connections 15000
  run "idle-after-$rep" "$AFTER" idle switchboard --connections 15000
  run "idle-peerjs-$rep" "$AFTER" idle peerjs --connections 15000
  run "relay-before-$rep" "$BEFORE" relay switchboard --pairs 100 --duration 10s
  run "relay-after-$rep" "$AFTER" relay switchboard --pairs 100 --duration 10s
  run "relay-peerjs-$rep" "$AFTER" relay peerjs --pairs 100 --duration 10s
done

for f in "$OUT"/*.json; do
  printf '%-20s %s\n' "$(basename "$f" .json)" \
    "$(grep -oE '"server_(rss_per_connection_kib|cpu_us_per_op)": [0-9.]+' "$f" | tr '\n' ' ')"
done

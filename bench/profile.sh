#!/usr/bin/env bash
# bench/profile.sh: the profiles behind docs/benchmarks.md's "Profiles" section.
#
# `perf stat -e instructions` is not supported on this machine (no hardware
# counters in the VM), so instruction counts come from valgrind's callgrind,
# which hold steady on a noisy machine; heap bytes per idle connection come from
# valgrind's DHAT. For each profile the server runs under valgrind (30-50x
# slower), the load generator drives a small, fixed load, and the script prints
# instructions per operation and the top functions by their own instructions.
#
#   bench/profile.sh                # all profiles, about 5 minutes
#   bench/profile.sh echo relay     # some of them: echo-bare echo relay relay-matchbox fanout churn
#                                   # idle-heap idle-heap-bare
#
# Needs valgrind (apt-get install valgrind) and the release binaries
# (bench/compare.sh builds them). BENCH_SWITCHBOARD picks another server binary.
# DHAT (idle-heap) sees only the system allocator's heap: for it, measure a server built
# without jemalloc (cargo build --release -p switchboard-server --no-default-features),
# named with BENCH_SWITCHBOARD; with jemalloc it reports almost nothing.
# Output goes to target/bench-profiles/.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BENCH=$ROOT/target/release/switchboard-bench
SWITCHBOARD=${BENCH_SWITCHBOARD:-$ROOT/target/release/switchboard}
BARE=$ROOT/target/release/switchboard-bench-bare-echo
OUT=${BENCH_PROFILES:-$ROOT/target/bench-profiles}
mkdir -p "$OUT"
command -v valgrind >/dev/null || { apt-get update -q && apt-get install -y -q valgrind; }

PORT=
PID=

stop() {
  if [[ -n $PID ]]; then
    kill -TERM "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
  fi
  PID=
}
trap stop EXIT INT TERM

wait_port() {
  for _ in $(seq 600); do
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on $PORT" >&2
  return 1
}

# under TOOL NAME SERVER...: starts SERVER under valgrind's TOOL on PORT.
under() {
  local tool=$1 name=$2
  shift 2
  PORT=$((20000 + RANDOM % 12000))
  local args=("$@")
  args=("${args[@]//@ADDR@/127.0.0.1:$PORT}")
  case $tool in
    callgrind) valgrind --tool=callgrind --callgrind-out-file="$OUT/$name.callgrind" "${args[@]}" \
      >"$OUT/$name.server.log" 2>&1 & ;;
    dhat) valgrind --tool=dhat --dhat-out-file="$OUT/$name.dhat.json" "${args[@]}" \
      >"$OUT/$name.server.log" 2>&1 & ;;
  esac
  PID=$!
  wait_port
}

switchboard() {
  echo "$SWITCHBOARD" serve --listen @ADDR@ --log warn --workers 2 --rate-limit-messages 0 --rate-limit-bytes 0 \
    --max-connections-per-ip 100000 --shutdown-timeout 1s
}

# profile NAME OPS_FIELD SERVER_ARGS -- BENCH_ARGS: one callgrind profile.
profile() {
  local name=$1
  shift
  local server=()
  while [[ $1 != -- ]]; do server+=("$1"); shift; done
  shift
  echo "== $name" >&2
  under callgrind "$name" "${server[@]}"
  "$BENCH" "$@" --url "ws://127.0.0.1:$PORT" --json >"$OUT/$name.json" 2>"$OUT/$name.log" || true
  stop
  local ops total
  ops=$(grep -m1 -o '"operations": [0-9]*' "$OUT/$name.json" | awk '{print $2}')
  callgrind_annotate "$OUT/$name.callgrind" >"$OUT/$name.annotate" 2>/dev/null || true
  total=$(grep -m1 'PROGRAM TOTALS' "$OUT/$name.annotate" | awk '{gsub(",","",$1); print $1}')
  awk -v t="$total" -v o="$ops" -v n="$name" \
    'BEGIN { printf "%s: %s instructions / %s operations = %.0f instructions per operation\n", n, t, o, t / o }' \
    | tee "$OUT/$name.summary"
  sed -n '/file:function/,$p' "$OUT/$name.annotate" | head -45 >"$OUT/$name.top" || true
  head -25 "$OUT/$name.top" >&2 || true
}

# heap NAME SERVER_ARGS -- BENCH_ARGS: bytes live per idle connection (DHAT, at the heap's peak).
heap() {
  local name=$1
  shift
  local server=()
  while [[ $1 != -- ]]; do server+=("$1"); shift; done
  shift
  echo "== $name" >&2
  under dhat "$name" "${server[@]}"
  "$BENCH" "$@" --url "ws://127.0.0.1:$PORT" --server-pid "$PID" --ramp-concurrency 16 --json \
    >"$OUT/$name.json" 2>"$OUT/$name.log" || true
  stop
  python3 "$ROOT/bench/dhat_by_site.py" "$OUT/$name.dhat.json" "$(grep -m1 -o '"connections": [0-9]*' "$OUT/$name.json" | awk '{print $2}')" \
    | tee "$OUT/$name.summary"
}

ALL="echo-bare echo relay relay-matchbox fanout churn idle-heap idle-heap-bare"
for what in ${*:-$ALL}; do
  case $what in
    echo-bare) profile echo-bare "$BARE" --listen @ADDR@ -- echo --adapter bare --clients 10 --duration 10s ;;
    echo) profile echo $(switchboard) -- echo --clients 10 --duration 10s ;;
    relay) profile relay $(switchboard) -- relay --pairs 10 --size-mix mixed --window 4 --duration 10s ;;
    relay-matchbox)
      RUST_LOG=warn profile relay-matchbox "$ROOT/bench/.tools/bin/matchbox_server" @ADDR@ -- \
        relay --adapter matchbox --pairs 10 --size-mix mixed --window 4 --duration 10s ;;
    fanout) profile fanout $(switchboard) -- fanout --room-size 100 --rooms 1 --window 4 --duration 10s ;;
    churn) profile churn $(switchboard) -- churn --concurrency 4 --duration 10s ;;
    idle-heap) heap idle-heap $(switchboard) -- idle --connections 1000 --rooms 100 --duration 5s ;;
    idle-heap-bare) heap idle-heap-bare "$BARE" --listen @ADDR@ -- idle --adapter bare --connections 1000 --duration 5s ;;
    *) echo "unknown profile $what (one of: $ALL)" >&2; exit 2 ;;
  esac
done

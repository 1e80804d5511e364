#!/usr/bin/env bash
# bench/compare.sh: Switchboard side by side with the servers people use.
#
# Builds the release binaries, installs the peer servers if they are missing
# (matchbox_server into bench/.tools, the Node.js peers into bench/peers/node_modules),
# then for each scenario and each target: starts the target fresh on a free
# loopback port, runs the scenario with switchboard-bench, stops the target.
# Finally writes docs/benchmarks.md and docs/benchmarks.svg from the results.
#
#   bench/compare.sh                       # the full run, about 10-15 minutes
#   BENCH_DURATION=3s BENCH_IDLE_CONNECTIONS=2000 bench/compare.sh   # a quick one
#
# Sizes (environment variables, defaults in brackets):
#   BENCH_DURATION [10s]            measured time of echo, relay, fanout, churn
#   BENCH_IDLE_CONNECTIONS [15000]  idle connections (each process has 20,000 fds)
#   BENCH_IDLE_ROOM_SIZE [10]       peers per room in idle
#   BENCH_IDLE_HOLD [10s]           how long idle holds before reading the RSS
#   BENCH_ECHO_CLIENTS [100]        echo clients, one message in flight each
#   BENCH_RELAY_PAIRS [500]         relay pairs (2 connections each)
#   BENCH_RELAY_WINDOW [16]         relay messages in flight per sender (closed loop)
#   BENCH_FANOUT_ROOM_SIZE [100]    peers per fanout room
#   BENCH_FANOUT_ROOMS [10]         fanout rooms
#   BENCH_CHURN_CONCURRENCY [50]    concurrent churn loops
#   BENCH_LATENCY_RATES ["2000 20000 50000 100000"]   relay-rates: the offered rates (msgs/s)
#   BENCH_LATENCY_REPS [3]          relay-rates: runs per rate and target (the report gives
#                                   the best and the median: the VM stalls for milliseconds
#                                   at times, and a stall only ever adds latency)
#   BENCH_LATENCY_DURATION [5s]     relay-rates: measured time of each run
#   BENCH_LATENCY_PAIRS [100]       relay-rates: relay pairs
#   BENCH_PACER [thread]            how open-loop runs are paced (switchboard-bench --pacer):
#                                   thread (sleep, then spin, then send) or tokio (1 ms timer)
#   BENCH_PACER_SPIN_US [150]       the thread pacer spins this long before each due time
#   BENCH_PIN [1]                   pin the server to BENCH_SERVER_CPU and the load generator to
#                                   BENCH_CLIENT_CPU with taskset (0: no pinning)
#   BENCH_SERVER_CPU [0]            the server's CPU (every thread of it: one server core)
#   BENCH_CLIENT_CPU [1]            the load generator's CPU
#   BENCH_TARGETS ["switchboard switchboard-peerjs bare bare-relay seed matchbox peerjs"]
#                                   switchboard-peerjs: the same Switchboard binary and flags,
#                                   driven through its PeerJS dialect (/peerjs) by the adapter
#                                   that drives peerjs-server (relay, relay-open, relay-rates,
#                                   idle, churn): the same-protocol comparison of issue #12
#   BENCH_SCENARIOS ["idle echo relay relay-open fanout churn relay-rates"]
#   BENCH_RESULTS [target/bench-results/DATE]   where the JSON results and logs go
#   BENCH_OUT [docs/benchmarks.md]  the report (the chart goes beside it, .svg)
#   BENCH_REPORT_ONLY []            set to 1 with BENCH_RESULTS: only rewrite the report from
#                                   those results (after editing bench/notes.md, say)
#   BENCH_CARGO_PROFILE [release]   the cargo profile to build and run; `dev` (debug binaries)
#                                   only for a trial of the tooling, never for figures
#   BENCH_SWITCHBOARD []            a prebuilt `switchboard` binary to measure instead
#                                   of building crates/switchboard-server from this tree
#                                   (BENCH_SWITCHBOARD_DESC: how the report names it)
#
# Pinned (the default), each server runs on one core and the load generator on
# the other, so a throughput is one server core's capacity; the report records the
# CPUs each process was allowed (read back from /proc by the load generator).
#
# relay-rates: relay at each of BENCH_LATENCY_RATES offered, BENCH_LATENCY_REPS
# times per target, latency from each message's due time; the report's fixed-rate
# table gives p50/p99/p99.9 best and median, and the pacer's own lateness.
#
# Traffic stays on 127.0.0.1. The report's ratios come from this one run.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

DURATION=${BENCH_DURATION:-10s}
IDLE_CONNECTIONS=${BENCH_IDLE_CONNECTIONS:-15000}
IDLE_ROOM_SIZE=${BENCH_IDLE_ROOM_SIZE:-10}
IDLE_HOLD=${BENCH_IDLE_HOLD:-10s}
ECHO_CLIENTS=${BENCH_ECHO_CLIENTS:-100}
RELAY_PAIRS=${BENCH_RELAY_PAIRS:-500}
RELAY_WINDOW=${BENCH_RELAY_WINDOW:-16}
FANOUT_ROOM_SIZE=${BENCH_FANOUT_ROOM_SIZE:-100}
FANOUT_ROOMS=${BENCH_FANOUT_ROOMS:-10}
CHURN_CONCURRENCY=${BENCH_CHURN_CONCURRENCY:-50}
LATENCY_RATES=${BENCH_LATENCY_RATES:-2000 20000 50000 100000}
LATENCY_REPS=${BENCH_LATENCY_REPS:-3}
LATENCY_DURATION=${BENCH_LATENCY_DURATION:-5s}
LATENCY_PAIRS=${BENCH_LATENCY_PAIRS:-100}
PACER=${BENCH_PACER:-thread}
PACER_SPIN_US=${BENCH_PACER_SPIN_US:-150}
PIN=${BENCH_PIN:-1}
SERVER_CPU=${BENCH_SERVER_CPU:-0}
CLIENT_CPU=${BENCH_CLIENT_CPU:-1}
TARGETS=${BENCH_TARGETS:-switchboard switchboard-peerjs bare bare-relay seed matchbox peerjs}
SCENARIOS=${BENCH_SCENARIOS:-idle echo relay relay-open fanout churn relay-rates}
RESULTS=${BENCH_RESULTS:-target/bench-results/$(date -u +%Y%m%dT%H%M%SZ)}
OUT=${BENCH_OUT:-docs/benchmarks.md}
SVG=${OUT%.md}.svg

MATCHBOX_VERSION=0.15.0
TOOLS=$ROOT/bench/.tools
PROFILE=${BENCH_CARGO_PROFILE:-release}
BIN_DIR=$ROOT/target/$([[ $PROFILE == dev ]] && echo debug || echo "$PROFILE")
BENCH=$BIN_DIR/switchboard-bench
SWITCHBOARD=${BENCH_SWITCHBOARD:-$BIN_DIR/switchboard}
BARE=$BIN_DIR/switchboard-bench-bare-echo
BARE_RELAY=$BIN_DIR/switchboard-bench-bare-relay
MATCHBOX=$TOOLS/bin/matchbox_server

log() { printf '\n== %s\n' "$*" >&2; }

if [[ -n ${BENCH_REPORT_ONLY:-} ]]; then
  [[ -n ${BENCH_RESULTS:-} && -f $RESULTS/run.env ]] || { echo "BENCH_REPORT_ONLY needs BENCH_RESULTS=<a run's directory>" >&2; exit 2; }
  cargo build --profile "$PROFILE" --locked -p switchboard-bench
  # The settings, date and command of the run that made the results.
  # shellcheck disable=SC1091
  source "$RESULTS/run.env"
  "$BENCH" compare --results "$RESULTS" --out "$OUT" --svg "$SVG" --notes bench/notes.md \
    --command "$RUN_COMMAND" "${RUN_SETTINGS[@]}"
  exit 0
fi

# --- build and install ---------------------------------------------------------

log "building the $PROFILE binaries"
if [[ -n ${BENCH_SWITCHBOARD:-} ]]; then
  cargo build --profile "$PROFILE" --locked -p switchboard-bench
  measured=${BENCH_SWITCHBOARD_DESC:-"the prebuilt binary $BENCH_SWITCHBOARD ($("$SWITCHBOARD" --version))"}
else
  cargo build --profile "$PROFILE" --locked -p switchboard-server -p switchboard-bench
  measured="commit $(git rev-parse --short HEAD)"
  if ! git diff --quiet HEAD -- crates/switchboard-server crates/switchboard-protocol 2>/dev/null; then
    measured="$measured with uncommitted changes to the server"
  fi
fi

wants() { [[ " $TARGETS " == *" $1 "* ]]; }
if wants matchbox && [[ ! -x $MATCHBOX ]]; then
  log "installing matchbox_server $MATCHBOX_VERSION into bench/.tools"
  cargo install matchbox_server --version "$MATCHBOX_VERSION" --locked --root "$TOOLS"
fi
if { wants seed || wants peerjs; } && { ! command -v node >/dev/null || ! command -v npm >/dev/null; }; then
  log "installing Node.js"
  apt-get update -q && apt-get install -y -q nodejs npm
fi
if { wants seed || wants peerjs; } && [[ ! -d bench/peers/node_modules/ws || ! -d bench/peers/node_modules/peer ]]; then
  log "installing the Node.js peers (ws, peer)"
  (cd bench/peers && npm ci --no-audit --no-fund)
fi

# --- pinning -------------------------------------------------------------------

SERVER_PIN=()
CLIENT_PIN=()
pinning="not pinned (BENCH_PIN=0): the server and the load generator share every core"
if [[ $PIN != 0 ]]; then
  command -v taskset >/dev/null || { echo "BENCH_PIN needs taskset (util-linux), or set BENCH_PIN=0" >&2; exit 2; }
  [[ $SERVER_CPU != "$CLIENT_CPU" ]] || { echo "BENCH_SERVER_CPU and BENCH_CLIENT_CPU must differ" >&2; exit 2; }
  for cpu in "$SERVER_CPU" "$CLIENT_CPU"; do
    taskset -c "$cpu" true 2>/dev/null || { echo "cannot pin to CPU $cpu (online: $(cat /sys/devices/system/cpu/online))" >&2; exit 2; }
  done
  SERVER_PIN=(taskset -c "$SERVER_CPU")
  CLIENT_PIN=(taskset -c "$CLIENT_CPU")
  pinning="server on CPU $SERVER_CPU, load generator on CPU $CLIENT_CPU (taskset -c)"
fi

mkdir -p "$RESULTS"
log "results in $RESULTS"
log "pinning: $pinning"
started_at=$(date -u '+%Y-%m-%d %H:%M UTC')

# --- servers -------------------------------------------------------------------

SERVER_PID=
SERVER_PORT=
REP=

stop_server() {
  if [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 100); do
      kill -0 "$SERVER_PID" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  SERVER_PID=
}
trap stop_server EXIT INT TERM

# A free loopback port below the ephemeral range the load generator binds from.
free_port() {
  local port
  for _ in $(seq 200); do
    port=$((20000 + RANDOM % 12000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port"
      return
    fi
  done
  echo "no free port found" >&2
  return 1
}

# start_server TARGET SCENARIO LOGFILE: starts the server TARGET runs SCENARIO
# on; sets SERVER_PID and SERVER_PORT. Returns 1 if TARGET has no server for it.
start_server() {
  local target=$1 scenario=$2 logfile=$3
  SERVER_PORT=$(free_port)
  local addr=127.0.0.1:$SERVER_PORT
  case $target in
    switchboard | switchboard-peerjs)
      # Caps above the run's connections: every benchmark connection comes
      # from 127.0.0.1. No rate limits where the load generator sends more
      # than a browser would; idle keeps the default settings (rate limits
      # and keepalive on), as issue #16's memory target asks.
      # switchboard-peerjs is the same server, spoken to in its PeerJS
      # dialect (which has no echo and no room broadcast).
      [[ $target == switchboard || ($scenario != echo && $scenario != fanout) ]] || return 1
      local limits=(--rate-limit-messages 0 --rate-limit-bytes 0)
      [[ $scenario == idle ]] && limits=()
      "${SERVER_PIN[@]}" "$SWITCHBOARD" serve --listen "$addr" --log warn \
        "${limits[@]}" \
        --max-connections 100000 --max-connections-per-ip 100000 \
        --shutdown-timeout 2s >"$logfile" 2>&1 &
      ;;
    bare)
      [[ $scenario == echo || $scenario == idle ]] || return 1
      "${SERVER_PIN[@]}" "$BARE" --listen "$addr" >"$logfile" 2>&1 &
      ;;
    bare-relay)
      [[ $scenario == relay* || $scenario == fanout ]] || return 1
      "${SERVER_PIN[@]}" "$BARE_RELAY" --listen "$addr" >"$logfile" 2>&1 &
      ;;
    seed)
      local script
      case $scenario in
        echo) script=echo.js ;;
        fanout) script=broadcast.js ;;
        *) script=signaling.js ;;
      esac
      "${SERVER_PIN[@]}" node "bench/peers/$script" --port "$SERVER_PORT" >"$logfile" 2>&1 &
      ;;
    matchbox)
      [[ $scenario != echo && $scenario != fanout ]] || return 1
      RUST_LOG=warn "${SERVER_PIN[@]}" "$MATCHBOX" "$addr" >"$logfile" 2>&1 &
      ;;
    peerjs)
      [[ $scenario != echo && $scenario != fanout ]] || return 1
      "${SERVER_PIN[@]}" node bench/peers/peerjs.js --port "$SERVER_PORT" >"$logfile" 2>&1 &
      ;;
    *)
      echo "unknown target $target" >&2
      exit 2
      ;;
  esac
  SERVER_PID=$!
  for _ in $(seq 200); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$SERVER_PORT") 2>/dev/null; then
      sleep 0.3
      return 0
    fi
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
      echo "$target did not start; its log:" >&2
      cat "$logfile" >&2
      return 2
    fi
    sleep 0.1
  done
  echo "$target did not listen on $addr within 20 s" >&2
  return 2
}

# The first "value" of a report is its throughput.
throughput_of() {
  grep -m1 -o '"value": [0-9.e+]*' "$1" 2>/dev/null | awk '{print $2}'
}

# run_one SCENARIO TARGET ARGS...: one run, its JSON in RESULTS/SCENARIO.TARGET.json
# (RESULTS/SCENARIO.TARGET.REP.json when REP is set).
run_one() {
  local scenario=$1 target=$2
  shift 2
  local name=$scenario.$target${REP:+.$REP}
  local json=$RESULTS/$name.json
  local logfile=$RESULTS/$name.log
  local serverlog=$RESULTS/$name.server.log
  local adapter=$target url status=0
  # The same protocol as peerjs-server, so the same adapter.
  [[ $target == switchboard-peerjs ]] && adapter=peerjs
  log "$scenario on $target${REP:+ (run $REP)}"
  if start_server "$target" "$scenario" "$serverlog"; then
    url=ws://127.0.0.1:$SERVER_PORT
  else
    status=$?
    if [[ $status == 2 ]]; then
      stop_server
      printf '{"failed": "%s did not start (see %s)"}\n' "$target" "$serverlog" >"$json"
      return
    fi
    # No server for this scenario: the load generator says why ("n/a").
    url=ws://127.0.0.1:9
  fi
  local pid_args=()
  [[ -n $SERVER_PID ]] && pid_args=(--server-pid "$SERVER_PID")
  local bench_scenario=$scenario
  [[ $scenario == relay-* ]] && bench_scenario=relay
  status=0
  timeout 600 "${CLIENT_PIN[@]}" "$BENCH" "$bench_scenario" --adapter "$adapter" --target-name "$target" \
    --url "$url" --pacer "$PACER" --pacer-spin-us "$PACER_SPIN_US" \
    "${pid_args[@]}" "$@" --json >"$json" 2>"$logfile" || status=$?
  stop_server
  case $status in
    0) grep -v '^  ' "$logfile" | tail -n 4 >&2 || true ;;
    3) echo "n/a" >&2 ;;
    1) echo "checks FAILED (see $logfile)" >&2 ;;
    *)
      echo "the run failed with status $status (see $logfile)" >&2
      if ! grep -q '"throughput"' "$json" 2>/dev/null; then
        local why
        why=$(grep -m1 '^error' "$logfile" | tr -d '"\\' | cut -c1-300 || true)
        printf '{"failed": "exit status %s: %s"}\n' "$status" "${why:-see $logfile}" >"$json"
      fi
      ;;
  esac
  sleep 1
}

# --- the scenarios ------------------------------------------------------------

for scenario in $SCENARIOS; do
  for target in $TARGETS; do
    case $scenario in
      idle)
        run_one idle "$target" --connections "$IDLE_CONNECTIONS" \
          --rooms $(((IDLE_CONNECTIONS + IDLE_ROOM_SIZE - 1) / IDLE_ROOM_SIZE)) --duration "$IDLE_HOLD"
        ;;
      echo)
        run_one echo "$target" --clients "$ECHO_CLIENTS" --duration "$DURATION"
        ;;
      relay)
        run_one relay "$target" --pairs "$RELAY_PAIRS" --window "$RELAY_WINDOW" --size-mix mixed \
          --duration "$DURATION"
        ;;
      relay-open)
        # Half of this target's own closed-loop rate from this run.
        max=$(throughput_of "$RESULTS/relay.$target.json" || true)
        if [[ -z $max ]]; then
          run_one relay-open "$target" --pairs "$RELAY_PAIRS" --size-mix mixed --duration "$DURATION"
        else
          rate=$(awk -v m="$max" 'BEGIN { printf "%.0f", m / 2 }')
          run_one relay-open "$target" --pairs "$RELAY_PAIRS" --size-mix mixed --rate "$rate" \
            --duration "$DURATION"
        fi
        ;;
      fanout)
        run_one fanout "$target" --room-size "$FANOUT_ROOM_SIZE" --rooms "$FANOUT_ROOMS" \
          --window "$RELAY_WINDOW" --size-mix candidate --duration "$DURATION"
        ;;
      churn)
        run_one churn "$target" --concurrency "$CHURN_CONCURRENCY" --duration "$DURATION"
        ;;
      relay-rates)
        # Latency at fixed offered rates, several runs each: relay-rate-RATE.TARGET.REP.json.
        for rate in $LATENCY_RATES; do
          for REP in $(seq "$LATENCY_REPS"); do
            run_one "relay-rate-$rate" "$target" --pairs "$LATENCY_PAIRS" --size-mix mixed --rate "$rate" \
              --duration "$LATENCY_DURATION"
            # A target without relay says so once.
            grep -q '"unsupported"' "$RESULTS/relay-rate-$rate.$target.$REP.json" 2>/dev/null && break
          done
          REP=
        done
        ;;
      *)
        echo "unknown scenario $scenario" >&2
        exit 2
        ;;
    esac
  done
done

# --- the report -----------------------------------------------------------------

command="bench/compare.sh"
overrides=
while IFS= read -r line; do
  [[ -n $line ]] && overrides+="${line%%=*}=$(printf '%q' "${line#*=}") "
done < <(env | grep '^BENCH_' | grep -v '^BENCH_RESULTS=\|^BENCH_OUT=\|^BENCH_REPORT_ONLY=' | sort || true)
command="$overrides$command"
settings=(
  --setting "date=$started_at"
  --setting "switchboard=$measured"
  --setting "BENCH_DURATION=$DURATION"
  --setting "BENCH_IDLE_CONNECTIONS=$IDLE_CONNECTIONS"
  --setting "BENCH_IDLE_ROOM_SIZE=$IDLE_ROOM_SIZE"
  --setting "BENCH_IDLE_HOLD=$IDLE_HOLD"
  --setting "BENCH_ECHO_CLIENTS=$ECHO_CLIENTS"
  --setting "BENCH_RELAY_PAIRS=$RELAY_PAIRS"
  --setting "BENCH_RELAY_WINDOW=$RELAY_WINDOW"
  --setting "BENCH_FANOUT_ROOM_SIZE=$FANOUT_ROOM_SIZE"
  --setting "BENCH_FANOUT_ROOMS=$FANOUT_ROOMS"
  --setting "BENCH_CHURN_CONCURRENCY=$CHURN_CONCURRENCY"
  --setting "BENCH_LATENCY_RATES=$LATENCY_RATES"
  --setting "BENCH_LATENCY_REPS=$LATENCY_REPS"
  --setting "BENCH_LATENCY_DURATION=$LATENCY_DURATION"
  --setting "BENCH_LATENCY_PAIRS=$LATENCY_PAIRS"
  --setting "BENCH_PACER=$PACER"
  --setting "BENCH_PACER_SPIN_US=$PACER_SPIN_US"
  --setting "pinning=$pinning"
)
{
  printf 'RUN_COMMAND=%q\n' "$command"
  printf 'RUN_SETTINGS=('
  printf '%q ' "${settings[@]}"
  printf ')\n'
} >"$RESULTS/run.env"
log "writing $OUT"
"$BENCH" compare --results "$RESULTS" --out "$OUT" --svg "$SVG" --notes bench/notes.md \
  --command "$command" "${settings[@]}"

#!/usr/bin/env bash
# Cross-node relay over Redis: 1, 2 and 3 Switchboard nodes sharing rooms through
# one redis-server, driven by the same load generator as bench/compare.sh.
#
# Each relay pair has one peer on each of two different nodes (the load generator
# connects to the nodes in turn, one connection at a time), so with 2 and 3 nodes
# every message crosses Redis; with 1 node none does (the baseline). For each node
# count: closed loop for the highest rate, then open loop at half of it for the
# latency a deployment would see, and Redis's CPU use during the closed loop.
#
# Also open loop at a fixed moderate rate (CLUSTER_LOW_RATE, 10,000 msgs/s), where
# the latency is the hop's own cost rather than queueing on saturated cores.
#
# Writes docs/benchmarks-cluster.md. Sizes: CLUSTER_PAIRS (200), CLUSTER_DURATION (10s).
set -euo pipefail
cd "$(dirname "$0")/.."

PAIRS="${CLUSTER_PAIRS:-200}"
DURATION="${CLUSTER_DURATION:-10s}"
LOW_RATE="${CLUSTER_LOW_RATE:-10000}"
OUT="target/bench-cluster"
mkdir -p "$OUT"

command -v redis-server >/dev/null || { echo "bench/cluster.sh: redis-server is required (apt-get install redis-server)" >&2; exit 1; }
cargo build --release --bin switchboard -p switchboard-server >&2
cargo build --release --bin switchboard-bench -p switchboard-bench >&2
SERVER="$PWD/target/release/switchboard"
BENCH="$PWD/target/release/switchboard-bench"

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
cpu_seconds() { awk '{ print ($14 + $15) / 100 }' "/proc/$1/stat"; }

pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

redis_port="$(free_port)"
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --dir "$OUT" >"$OUT/redis.log" 2>&1 &
redis_pid=$!
pids+=("$redis_pid")
until redis-cli -p "$redis_port" ping >/dev/null 2>&1; do sleep 0.1; done

for nodes in 1 2 3; do
  urls=()
  node_pids=()
  for _ in $(seq "$nodes"); do
    port="$(free_port)"
    "$SERVER" serve --listen "127.0.0.1:$port" --redis "redis://127.0.0.1:$redis_port" \
      --rate-limit-messages 0 --rate-limit-bytes 0 --max-connections-per-ip 100000 --log warn &
    node_pids+=($!)
    pids+=($!)
    urls+=("ws://127.0.0.1:$port")
    until curl -fs "http://127.0.0.1:$port/readyz" 2>/dev/null | grep -q '"broker":"up"'; do sleep 0.1; done
  done
  url_list="$(IFS=,; echo "${urls[*]}")"
  echo "== $nodes node(s): closed loop" >&2
  before="$(cpu_seconds "$redis_pid")"
  start="$(date +%s.%N)"
  "$BENCH" relay --url "$url_list" --pairs "$PAIRS" --duration "$DURATION" --ramp-concurrency 1 --json >"$OUT/max.$nodes.json"
  end="$(date +%s.%N)"
  after="$(cpu_seconds "$redis_pid")"
  echo "$before $after $start $end" >"$OUT/redis-cpu.$nodes"
  max="$(python3 -c "import json; print(json.load(open('$OUT/max.$nodes.json'))['throughput']['value'])")"
  rate="$(python3 -c "print(round($max / 2))")"
  echo "== $nodes node(s): open loop at $rate msgs/s" >&2
  "$BENCH" relay --url "$url_list" --pairs "$PAIRS" --duration "$DURATION" --ramp-concurrency 1 --rate "$rate" \
    --json >"$OUT/half.$nodes.json"
  echo "== $nodes node(s): open loop at $LOW_RATE msgs/s" >&2
  "$BENCH" relay --url "$url_list" --pairs "$PAIRS" --duration "$DURATION" --ramp-concurrency 1 --rate "$LOW_RATE" \
    --json >"$OUT/low.$nodes.json"
  for pid in "${node_pids[@]}"; do kill "$pid"; wait "$pid" 2>/dev/null || true; done
done

python3 - "$OUT" "$PAIRS" "$DURATION" "$LOW_RATE" <<'EOF'
import json, os, platform, subprocess, sys, datetime
out, pairs, duration, low_rate = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
def load(name):
    with open(os.path.join(out, name)) as f:
        return json.load(f)
cpu_model = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
rows = []
base = None
for nodes in (1, 2, 3):
    closed, half, low = load(f"max.{nodes}.json"), load(f"half.{nodes}.json"), load(f"low.{nodes}.json")
    before, after, start, end = map(float, open(os.path.join(out, f"redis-cpu.{nodes}")).read().split())
    redis_cpu = 100 * (after - before) / (end - start)
    ok = closed["ok"] and half["ok"] and low["ok"]
    rate = closed["throughput"]["value"]
    base = base or rate
    lat = half["latency_us"]
    rows.append(f"| {nodes} | {'no' if nodes == 1 else 'yes'} | {rate:,.0f} | {rate / base:.2f}× | {half['throughput']['value']:,.0f} "
                f"| {lat['p50'] / 1000:.2f} | {lat['p99'] / 1000:.2f} | {low['latency_us']['p50'] / 1000:.2f} "
                f"| {low['latency_us']['p99'] / 1000:.2f} | {low['latency_us']['p999'] / 1000:.2f} | {redis_cpu:.0f}% | {'yes' if ok else 'NO'} |")
now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
redis_version = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.split()[2]
text = f"""# Cross-node relay over Redis

Produced by `bench/cluster.sh` (`CLUSTER_PAIRS={pairs} CLUSTER_DURATION={duration}`) on {now}:
{os.cpu_count()} cores ({cpu_model}), Linux {platform.release()}, Redis {redis_version.removeprefix('v=')}, every process on
this one machine (the nodes, Redis and the load generator share its {os.cpu_count()} cores, so adding nodes adds
processes, not hardware). {pairs} relay pairs; with 2 and 3 nodes the two peers of every pair are on
different nodes, so each message goes node → Redis → node. Mixed SDP-sized and candidate-sized
messages; every message checked (exactly once, in order per sender).

| nodes | crosses Redis | closed-loop msgs/s | vs 1 node | open loop at 50%: msgs/s | p50 ms | p99 ms | at {low_rate:,} msgs/s: p50 ms | p99 ms | p99.9 ms | Redis CPU (closed loop) | checks |
|---|---|---|---|---|---|---|---|---|---|---|---|
""" + "\n".join(rows) + """

Target (issue #5): cross-node relay p99 ≤ 5 ms at 50% of the maximum rate; capacity that grows
with nodes until Redis is the limit. On one 2-core machine the nodes, Redis and the load
generator compete for the same cores, so the closed-loop column cannot grow with nodes here:
it shows the cost of the extra hop (serialisation into Redis and out again) rather than the
scaling a deployment with one machine per node would see. The Redis CPU column is the share of
one core Redis used: the headroom before Redis itself is the limit. At half the closed-loop
maximum the two cores are saturated (the load generator alone takes about one), so that
latency is queueing; the fixed moderate rate shows what the hop itself costs.
"""
with open("docs/benchmarks-cluster.md", "w") as f:
    f.write(text)
print(text)
EOF

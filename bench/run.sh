#!/usr/bin/env bash
# Throughput and latency of the hello handlers, sync (pool) and async (loop), next to
# a native hyper server returning the same bytes; plus the per-request instantiation
# cost. Prints Markdown rows for docs/benchmarks.md.
#
#   bench/run.sh            # 3 runs of 10 s per system after a 3 s warm-up
#   RUNS=5 DURATION=20s CONNS=128 bench/run.sh
#
# The server is pinned to CPU 0 and wrk to CPU 1 (taskset). Needs wrk (Debian: wrk).
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-3}
DURATION=${DURATION:-10s}
CONNS=${CONNS:-64}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}

# A captured backtrace per internal error (RUST_BACKTRACE=1) would be measured too.
unset RUST_BACKTRACE RUST_LIB_BACKTRACE
command -v wrk >/dev/null || { echo "wrk is missing (apt-get install wrk)" >&2; exit 1; }
cargo build --release -q -p wasmloop -p wasmloop-bench
cargo build --release -q --manifest-path examples/Cargo.toml --target wasm32-wasip2
wasm=examples/target/wasm32-wasip2/release
log=$(mktemp)
server_pid=
trap 'kill $server_pid 2>/dev/null || true; rm -f "$log"' EXIT

start_server() {
  : >"$log"
  taskset -c "$SERVER_CPU" "$@" 2>"$log" &
  server_pid=$!
  for _ in $(seq 200); do
    addr=$(sed -n 's/^listening on http:\/\///p' "$log")
    [ -n "$addr" ] && return 0
    sleep 0.05
  done
  echo "server did not start:" >&2; cat "$log" >&2; exit 1
}

median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# wrk prints latencies as 1.23ms / 456.78us / 1.02s; normalise to ms.
to_ms() { awk '{v=$1; if (v ~ /us$/) {sub(/us/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v*=1000}; printf "%.3f\n", v}'; }

measure() { # name, then the server command
  local name=$1; shift
  start_server "$@"
  taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d3s "http://$addr/" >/dev/null
  local rps=() p50=() p99=()
  for _ in $(seq "$RUNS"); do
    out=$(taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"$DURATION" --latency "http://$addr/")
    if echo "$out" | grep -q "Non-2xx"; then echo "$name: non-2xx answers" >&2; echo "$out" >&2; exit 1; fi
    rps+=("$(echo "$out" | awk '/Requests\/sec/ {print $2}')")
    p50+=("$(echo "$out" | awk '$1 == "50%" {print $2}' | to_ms)")
    p99+=("$(echo "$out" | awk '$1 == "99%" {print $2}' | to_ms)")
  done
  kill "$server_pid"; wait "$server_pid" 2>/dev/null || true
  local r m50 m99
  r=$(printf '%s\n' "${rps[@]}" | median)
  m50=$(printf '%s\n' "${p50[@]}" | median)
  m99=$(printf '%s\n' "${p99[@]}" | median)
  echo "$name $r $m50 $m99 ${rps[*]}"
}

results=$(
  measure native target/release/native-hello 127.0.0.1:0
  measure pool target/release/wasmloop serve --listen 127.0.0.1:0 --workers 1 --log-level warn "$wasm/hello.wasm"
  measure loop target/release/wasmloop serve --listen 127.0.0.1:0 --workers 1 --log-level warn "$wasm/hello_async.wasm"
)
native_rps=$(echo "$results" | awk '$1 == "native" {print $2}')

echo "| system | requests/s (median of $RUNS) | vs native | p50 ms | p99 ms | all runs (req/s) |"
echo "|---|---|---|---|---|---|"
echo "$results" | while read -r name rps p50 p99 all; do
  label=$name
  case $name in
    native) label="native hyper (current-thread)";;
    pool) label="wasmloop, sync hello (pool)";;
    loop) label="wasmloop, async hello (loop)";;
  esac
  ratio=$(awk -v a="$rps" -v b="$native_rps" 'BEGIN {printf "%.2fx", a/b}')
  echo "| $label | $rps | $ratio | $p50 | $p99 | $all |"
done

echo
echo "Instantiation (fresh store + instance from the pooling allocator), pinned to CPU $SERVER_CPU:"
for component in "$wasm/hello.wasm" "$wasm/hello_async.wasm"; do
  taskset -c "$SERVER_CPU" target/release/instantiate "$component" 20000 | sed 's/^.*release\//- /'
done

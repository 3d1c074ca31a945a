#!/usr/bin/env bash
# The benchmark suite: wasmloop next to native hyper, `wasmtime serve` 48.0.8 and
# Uvicorn + FastAPI on the same machine, in one run (about 30 minutes on 2 cores,
# plus a one-time ~13 minute build of wasmtime-cli). Writes its tables into
# docs/benchmarks.md between the results markers; what the scenarios are and how they
# are measured is in bench/compare.py.
#
#   bench/run.sh            # the full run
#   bench/run.sh --quick    # every scenario once, briefly: checks that it all runs
#   bench/run.sh --only python,tiers   # just those sections (hello, timer, computing,
#                                      # python, tiers, deploy, memory), replacing
#                                      # their tables
#
# Needs wrk (Debian: apt-get install wrk) and python3. Installs into target/:
# wasmtime-cli (cargo install, target/bench-tools), FastAPI and Uvicorn
# (target/bench-venv), componentize-py (target/compat-venv, for a >10 MB component).
set -euo pipefail
cd "$(dirname "$0")/.."

# A captured backtrace per internal error (RUST_BACKTRACE=1) would be measured too.
unset RUST_BACKTRACE RUST_LIB_BACKTRACE
command -v wrk >/dev/null || { echo "wrk is missing (apt-get install wrk)" >&2; exit 1; }
# 1,000 connections for the memory measurement.
ulimit -n 65536 2>/dev/null || ulimit -n 4096 2>/dev/null || true

cargo build --release -q -p wasmloop -p wasmloop-bench
cargo build --release -q --manifest-path examples/Cargo.toml --target wasm32-wasip2
cargo build --release -q --manifest-path bench/guests/Cargo.toml --target wasm32-wasip2

# Sections without `wasmtime serve` need no wasmtime-cli build.
no_wasmtime=
case " $* " in *" --only "*) no_wasmtime=1 ;; esac
case " $* " in *hello*|*timer*|*computing*) no_wasmtime= ;; esac

tools=target/bench-tools
if [ -z "$no_wasmtime" ] && ! "$tools/bin/wasmtime" --version 2>/dev/null | grep -q "48.0.8"; then
  cargo install wasmtime-cli --version 48.0.8 --locked --root "$tools"
fi

venv=target/bench-venv
if ! "$venv/bin/python" -c "import fastapi, uvicorn, uvloop, httptools" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "fastapi==0.165.0" "uvicorn[standard]==0.54.0"
fi

# A component over 10 MB: the Python handler of tests/compat, built with componentize-py.
large=target/bench-large.wasm
if [ ! -f "$large" ]; then
  compat=target/compat-venv
  if ! "$compat/bin/componentize-py" --version 2>/dev/null | grep -q 0.25.1; then
    python3 -m venv "$compat"
    "$compat/bin/pip" install -q "componentize-py==0.25.1"
  fi
  work=$(mktemp -d)
  cp tests/compat/python/app.py "$work/"
  (cd "$work" && "$OLDPWD/$compat/bin/componentize-py" -d "$OLDPWD/wit" \
    -w wasmloop:handler/sync-handler@0.1.0 componentize app -o app.wasm >/dev/null)
  mv "$work/app.wasm" "$large"
  rm -rf "$work"
fi

# bench/python-sdk's apps, built with the Python SDK as its README says (setuptools
# builds in the tree: a stale build/ would be installed too).
pysdk=target/python-sdk/venv
[ -x "$pysdk/bin/python" ] || python3 -m venv "$pysdk"
rm -rf guest-sdk-python/build guest-sdk-python/src/wasmloop.egg-info
"$pysdk/bin/pip" install -q --disable-pip-version-check ./guest-sdk-python
for style in sync async; do
  (cd "bench/python-sdk/$style" && "$OLDPWD/$pysdk/bin/python" -m wasmloop build \
    -o "$OLDPWD/target/bench-py-$style.wasm" >/dev/null)
done

exec python3 bench/compare.py --out docs/benchmarks.md --large "$large" "$@"

#!/usr/bin/env bash
# Compatibility check: a wasi:http 0.2 handler written in Python and built with
# componentize-py (from PyPI) against wit/, served by the real wasmloop binary.
#
#   tests/compat/python.sh [path/to/wasmloop]   # default: target/debug/wasmloop
#
# Installs componentize-py into a virtual environment under target/ when missing.
set -euo pipefail
cd "$(dirname "$0")/../.."

wasmloop=${1:-target/debug/wasmloop}
venv=target/compat-venv
version=0.25.1
work=$(mktemp -d)
trap 'kill "$server" 2>/dev/null || true; rm -rf "$work"' EXIT
server=

if ! "$venv/bin/componentize-py" --version 2>/dev/null | grep -q "$version"; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "componentize-py==$version"
fi

cp tests/compat/python/app.py "$work/"
(cd "$work" && "$OLDPWD/$venv/bin/componentize-py" -d "$OLDPWD/wit" -w wasmloop:handler/sync-handler@0.1.0 \
  componentize app -o app.wasm >/dev/null)

"$wasmloop" serve --listen 127.0.0.1:0 --admin-listen off --workers 1 "$work/app.wasm" 2>"$work/log" &
server=$!
for _ in $(seq 600); do
  addr=$(sed -n 's/^listening on http:\/\///p' "$work/log")
  [ -n "$addr" ] && break
  kill -0 "$server" 2>/dev/null || { cat "$work/log"; echo "python: the server exited" >&2; exit 1; }
  sleep 0.2
done
[ -n "$addr" ] || { cat "$work/log"; echo "python: the server did not start" >&2; exit 1; }

body=$(curl -sS --max-time 30 "http://$addr/from/python")
if [ "$body" != "hello from python at /from/python" ]; then
  echo "python: unexpected answer: $body" >&2
  exit 1
fi
grep -q "mode=pool" "$work/log" || { echo "python: the handler was not classified sync" >&2; exit 1; }
echo "python: 1 passed, 0 failed"

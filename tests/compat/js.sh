#!/usr/bin/env bash
# Compatibility check: a wasi:http 0.2 handler written in JavaScript and built with
# componentize-js (StarlingMonkey, from the npm registry), served by the real wasmloop
# binary on the pool.
#
#   tests/compat/js.sh [path/to/wasmloop]   # default: target/debug/wasmloop
#
# Installs componentize-js under target/ when missing; needs node and npm.
set -euo pipefail
cd "$(dirname "$0")/../.."

wasmloop=${1:-target/debug/wasmloop}
tools=target/compat-js
version=0.23.0
cli=$tools/node_modules/@bytecodealliance/componentize-js/src/cli.js
work=$(mktemp -d)
trap 'kill "$server" 2>/dev/null || true; rm -rf "$work"' EXIT
server=

command -v node >/dev/null && command -v npm >/dev/null \
  || { echo "js: node and npm are needed (Debian: apt-get install nodejs npm)" >&2; exit 1; }
if ! grep -q "\"version\": \"$version\"" "$tools/node_modules/@bytecodealliance/componentize-js/package.json" 2>/dev/null; then
  mkdir -p "$tools"
  (cd "$tools" && npm install --silent --no-audit --no-fund "@bytecodealliance/componentize-js@$version")
fi

# StarlingMonkey in componentize-js 0.23.0 exports wasi:http 0.2.10, and the build
# checks the world against the module's exports; wit/ pins 0.2.12, the same API (patch
# releases only add). The build gets wit/'s WASI packages under 0.2.10; the host
# serves any 0.2.x.
mkdir -p "$work/wit/deps"
for f in wit/deps/*-0.2.12.wit; do
  sed 's/0\.2\.12/0.2.10/g' "$f" > "$work/wit/deps/$(basename "${f/0.2.12/0.2.10}")"
done
printf 'package wasmloop:compat-js@0.1.0;\n\nworld sync-handler {\n  include wasi:http/proxy@0.2.10;\n}\n' \
  > "$work/wit/world.wit"
cp tests/compat/js/app.js "$work/"
node "$cli" "$work/app.js" --wit "$work/wit" -n sync-handler -o "$work/app.wasm" >/dev/null

# A 13 MB component: the fast compile tier.
"$wasmloop" serve --listen 127.0.0.1:0 --admin-listen off --workers 1 --compiler winch \
  "$work/app.wasm" 2>"$work/log" &
server=$!
for _ in $(seq 600); do
  addr=$(sed -n 's/^listening on http:\/\///p' "$work/log")
  [ -n "$addr" ] && break
  kill -0 "$server" 2>/dev/null || { cat "$work/log"; echo "js: the server exited" >&2; exit 1; }
  sleep 0.2
done
[ -n "$addr" ] || { cat "$work/log"; echo "js: the server did not start" >&2; exit 1; }

body=$(curl -sS --max-time 30 "http://$addr/from/js")
if [ "$body" != "hello from js at /from/js" ]; then
  cat "$work/log"
  echo "js: unexpected answer: $body" >&2
  exit 1
fi
grep -q "mode=pool" "$work/log" || { echo "js: the handler was not classified sync" >&2; exit 1; }
echo "js: 1 passed, 0 failed"

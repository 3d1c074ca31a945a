#!/usr/bin/env python3
"""wasmloop next to its peers, on one machine, in one run.

Systems: a native hyper server (current-thread runtime, the ceiling for one core),
wasmloop with the handler on its loop (wasi:http 0.3) and on its pool (0.2),
`wasmtime serve` 48.0.8 on the 0.2 component, and Uvicorn + FastAPI. All answer the
same bytes (bench/guests, bench/python/app.py, bench/src/bin/native-hello.rs).

Scenarios: hello; an awaited 10 ms timer at high concurrency; 2 ms of computing per
request; the mixed case (hello latency while the pool is saturated by computing
requests); a guest computing without awaiting next to hello requests on the same
worker. Extras: instantiation time, deploy-to-first-response, memory per 1,000
in-flight async requests.

Every server is pinned to CPU 0 and wrk to CPU 1; after a warm-up, each measurement
is RUNS runs of DURATION, and the tables report medians. The throughput tables run
their systems in interleaved rounds (each round one run of each, every system
started afresh), so a drift of a shared machine's speed reaches all of them alike.
`--quick` runs every scenario once for 2 s: a smoke test that checks each ran and
answered 2xx, not how fast.

Run it through bench/run.sh, which builds and installs what this needs.
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WASM = ROOT / "bench/guests/target/wasm32-wasip2/release"
EXAMPLES = ROOT / "examples/target/wasm32-wasip2/release"
WASMLOOP = ROOT / "target/release/wasmloop"
NATIVE = ROOT / "target/release/native-hello"
INSTANTIATE = ROOT / "target/release/instantiate"
WASMTIME = ROOT / "target/bench-tools/bin/wasmtime"
UVICORN = ROOT / "target/bench-venv/bin/uvicorn"
# bench/python-sdk's apps, built by bench/run.sh with the Python SDK.
PY_SYNC, PY_ASYNC = ROOT / "target/bench-py-sync.wasm", ROOT / "target/bench-py-async.wasm"
SERVER_CPU, LOAD_CPU = "0", "1"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def descendants(pid):
    """pid and every process below it."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            children = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except OSError:
            children = []
        todo.extend(int(c) for c in children)
    return out


def cpu_seconds(pid):
    total = 0
    for p in descendants(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime + stime
        except (OSError, IndexError):
            pass
    return total / CLK_TCK


def pss_kib(pid):
    """The process's proportional set size: each page counted once, however many
    times it is mapped. RSS counts a page once per mapping of it, so 1,000 instances
    mapping the same copy-on-write memory image count its pages 1,000 times."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


def rss_kib(pid, field="VmRSS"):
    total = 0
    for p in descendants(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith(field + ":"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


class Server:
    """A system under test, pinned to the server CPU (unless `pin` is false: the
    compile-time figures, where a node's compiler uses every core), ready when `GET /`
    answers."""

    def __init__(self, name, argv, port, cwd=ROOT, env=None, pin=True):
        self.name, self.port = name, port
        self.log = tempfile.TemporaryFile()
        full_env = dict(os.environ, **(env or {}))
        full_env.pop("RUST_BACKTRACE", None)
        self.proc = subprocess.Popen(
            ["taskset", "-c", SERVER_CPU, *argv] if pin else argv,
            cwd=cwd,
            env=full_env,
            stdout=self.log,
            stderr=self.log,
            start_new_session=True,
        )
        deadline = time.time() + 120
        while time.time() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).read()
                return
            except urllib.error.HTTPError:
                return  # it answers HTTP (a registry with nothing deployed says 404)
            except OSError:
                time.sleep(0.1)
        self.log.seek(0)
        raise SystemExit(f"{name} did not start:\n{self.log.read().decode(errors='replace')}")

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self):
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def wasmloop(name, component=None, extra=(), env=None, pin=True):
    port = free_port()
    argv = [str(WASMLOOP), "serve", f"--listen=127.0.0.1:{port}", "--admin-listen=off",
            "--workers=1", "--log-level=warn", *extra]
    if component:
        argv.append(str(component))
    return Server(name, argv, port, env=env, pin=pin)


SYSTEMS = {
    "native": lambda: Server("native", [str(NATIVE), f"127.0.0.1:{(p := free_port())}"], p),
    "loop": lambda: wasmloop("loop", WASM / "bench_async.wasm"),
    "pool": lambda: wasmloop("pool", WASM / "bench_sync.wasm"),
    "loop-serial": lambda: wasmloop("loop-serial", WASM / "bench_async.wasm", extra=["--reuse=serial"]),
    "pool-serial": lambda: wasmloop("pool-serial", WASM / "bench_sync.wasm", extra=["--reuse=serial"]),
    "loop-concurrent": lambda: wasmloop("loop-concurrent", WASM / "bench_async.wasm", extra=["--reuse=concurrent"]),
    "wasmtime": lambda: Server(
        "wasmtime",
        [str(WASMTIME), "serve", "-Scli", f"--addr=127.0.0.1:{(p := free_port())}",
         str(WASM / "bench_sync.wasm")],
        p,
    ),
    # The 0.3 component, with wasmtime serve's default 0.3 reuse (128 requests per
    # instance, 16 at once), and with a fresh instance per request.
    "wasmtime-p3": lambda: Server(
        "wasmtime-p3",
        [str(WASMTIME), "serve", "-Scli", "-Sp3", f"--addr=127.0.0.1:{(p := free_port())}",
         str(WASM / "bench_async.wasm")],
        p,
    ),
    "wasmtime-p3-fresh": lambda: Server(
        "wasmtime-p3-fresh",
        [str(WASMTIME), "serve", "-Scli", "-Sp3", "--max-instance-reuse-count=1",
         f"--addr=127.0.0.1:{(p := free_port())}", str(WASM / "bench_async.wasm")],
        p,
    ),
    "uvicorn": lambda: Server(
        "uvicorn",
        [str(UVICORN), "app:app", "--host=127.0.0.1", f"--port={(p := free_port())}",
         "--workers=1", "--no-access-log", "--log-level=warning"],
        p,
        cwd=ROOT / "bench/python",
    ),
}

LABELS = {
    "native": "native hyper (current-thread)",
    "loop": "wasmloop, loop (async fn, wasi:http 0.3)",
    "pool": "wasmloop, pool (fn, wasi:http 0.2)",
    "loop-serial": "wasmloop, loop, `--reuse=serial`",
    "pool-serial": "wasmloop, pool, `--reuse=serial`",
    "loop-concurrent": "wasmloop, loop, `--reuse=concurrent` (16 at once)",
    "wasmtime-p3": "wasmtime serve 48.0.8 (0.3 component, its default reuse)",
    "wasmtime-p3-fresh": "wasmtime serve 48.0.8 (0.3 component, fresh instances)",
    "wasmtime": "wasmtime serve 48.0.8 (0.2 component)",
    "uvicorn": "Uvicorn + FastAPI (uvloop, httptools)",
    "mixed": "wasmloop: async hello on the loop, /cpu on the pool",
    "py-pool": "wasmloop, Python SDK, `def` (pool)",
    "py-loop": "wasmloop, Python SDK, `async def` (loop)",
    "py-pool-serial": "wasmloop, Python SDK, `def`, `--reuse=serial`",
    "py-loop-serial": "wasmloop, Python SDK, `async def`, `--reuse=serial`",
    "py-loop-concurrent": "wasmloop, Python SDK, `async def`, `--reuse=concurrent`",
}

SYSTEMS.update({
    "py-pool": lambda: wasmloop("py-pool", PY_SYNC),
    "py-loop": lambda: wasmloop("py-loop", PY_ASYNC),
    "py-pool-serial": lambda: wasmloop("py-pool-serial", PY_SYNC, extra=["--reuse=serial"]),
    "py-loop-serial": lambda: wasmloop("py-loop-serial", PY_ASYNC, extra=["--reuse=serial"]),
    "py-loop-concurrent": lambda: wasmloop("py-loop-concurrent", PY_ASYNC, extra=["--reuse=concurrent"]),
})


def to_ms(text):
    value = float(re.match(r"[\d.]+", text).group())
    if text.endswith("us"):
        return value / 1000
    if text.endswith("ms"):
        return value
    if text.endswith("s"):
        return value * 1000
    return value


# Requests that failed (non-2xx, socket errors) in every wrk run so far, warm-ups
# included: what `--quick` checks.
FAILED = 0


def wrk(url, conns, duration, threads=1):
    global FAILED
    out = subprocess.run(
        ["taskset", "-c", LOAD_CPU, "wrk", f"-t{threads}", f"-c{conns}", f"-d{duration}",
         "--timeout=10s", "--latency", url],
        capture_output=True, text=True, check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    lat = {m.group(1): to_ms(m.group(2)) for m in re.finditer(r"^\s+(50|99)%\s+(\S+)", out, re.M)}
    result = {
        "rps": rps,
        "requests": total,
        "non2xx": int(bad.group(1)) if bad else 0,
        "errors": sum(map(int, errors.groups())) if errors else 0,
        "p50": lat.get("50"),
        "p99": lat.get("99"),
    }
    FAILED += result["non2xx"] + result["errors"]
    return result


def measure(server, path, conns, cfg):
    """Warm-up, then cfg.runs runs: median req/s, p50, p99, CPU per request."""
    wrk(server.url(path), conns, cfg.warmup)
    return summary([one_run(server, path, conns, cfg) for _ in range(cfg.runs)],
                   rss_kib(server.proc.pid, "VmHWM"))


def one_run(server, path, conns, cfg):
    """One run of cfg.duration, with the server's CPU per request."""
    cpu0 = cpu_seconds(server.proc.pid)
    result = wrk(server.url(path), conns, cfg.duration)
    result["cpu_us"] = (cpu_seconds(server.proc.pid) - cpu0) / max(result["requests"], 1) * 1e6
    if result["non2xx"] or result["errors"]:
        print(f"  {server.name} {path}: {result['non2xx']} non-2xx, {result['errors']} socket errors", file=sys.stderr)
    return result


def summary(runs, peak_rss_kib):
    med = lambda key: statistics.median(r[key] for r in runs if r[key] is not None)
    return {
        "rps": med("rps"), "p50": med("p50"), "p99": med("p99"), "cpu_us": med("cpu_us"),
        "rss_mib": peak_rss_kib / 1024,
        "all": [round(r["rps"]) for r in runs],
        "failed": sum(r["non2xx"] + r["errors"] for r in runs),
    }


def table(title, rows, base=None, base2=None):
    lines = [f"### {title}", "",
             "| system | req/s | vs native | vs wasmtime serve | p50 ms | p99 ms | CPU µs/req | peak RSS MiB | failed | runs (req/s) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in rows:
        ratio = lambda b: f"{r['rps'] / b['rps']:.2f}x" if b else "-"
        lines.append(
            f"| {LABELS[name]} | {r['rps']:.0f} | {ratio(base)} | {ratio(base2)} | {r['p50']:.2f} | "
            f"{r['p99']:.2f} | {r['cpu_us']:.0f} | {r['rss_mib']:.0f} | {r['failed']} | {', '.join(map(str, r['all']))} |"
        )
    return "\n".join(lines) + "\n"


def throughput(title, path, conns, systems, cfg):
    """The systems in rounds: each round starts each system afresh, warms it up and
    measures one run, and the next round does the same (A B C, A B C, ...). A shared
    machine's speed drifts over minutes; run back to back, a system's three runs
    would all land in one stretch of it and the ratios between systems would carry
    the drift. Interleaved, every system samples every stretch alike."""
    runs = {name: [] for name in systems}
    rss = dict.fromkeys(systems, 0)
    for round_no in range(cfg.runs):
        for name in systems:
            print(f"{title}: {name} (round {round_no + 1} of {cfg.runs})", file=sys.stderr)
            with SYSTEMS[name]() as server:
                wrk(server.url(path), conns, cfg.warmup)
                runs[name].append(one_run(server, path, conns, cfg))
                rss[name] = max(rss[name], rss_kib(server.proc.pid, "VmHWM"))
    rows = [(name, summary(runs[name], rss[name])) for name in systems]
    got = dict(rows)
    return table(f"{title} (`GET {path}`, {conns} connections)", rows, got.get("native"), got.get("wasmtime"))


REUSE_ROWS = ["loop-serial", "pool-serial", "loop-concurrent", "wasmtime-p3", "wasmtime-p3-fresh"]


def hello(cfg):
    return throughput("Hello", "/", 64, ["native", "loop", "pool", "wasmtime", "uvicorn", *REUSE_ROWS], cfg)


def timer(cfg):
    return throughput("An awaited 10 ms timer", "/sleep", 256, ["native", "loop", "pool", "wasmtime", "uvicorn", *REUSE_ROWS], cfg)


def computing(cfg):
    return throughput("2 ms of computing", "/cpu", 16, ["native", "pool", "loop", "wasmtime", "uvicorn"], cfg)


def latency_under(server, background_path, background_conns, cfg):
    """p50/p99 of hello from 4 connections, idle and with background load."""
    idle = wrk(server.url("/"), 4, cfg.duration)
    load = subprocess.Popen(
        ["taskset", "-c", LOAD_CPU, "wrk", "-t1", f"-c{background_conns}",
         f"-d{int(cfg.seconds) + 4}s", "--timeout=30s", server.url(background_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    time.sleep(2)
    busy = wrk(server.url("/"), 4, cfg.duration)
    out, _ = load.communicate()
    bg = re.search(r"Requests/sec:\s+([\d.]+)", out)
    return idle, busy, float(bg.group(1)) if bg else 0.0


def mixed(cfg):
    """Hello latency while the pool is saturated by 2 ms computing requests."""
    print("mixed", file=sys.stderr)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        manifest = Path(tmp) / "wasmloop.toml"
        manifest.write_text(
            f'[[app]]\nname = "hello"\ncomponent = "{WASM / "bench_async.wasm"}"\nroutes = ["/"]\n'
            f'[[app]]\nname = "cpu"\ncomponent = "{WASM / "bench_sync.wasm"}"\nroutes = ["/cpu"]\n'
        )
        systems = [("mixed", lambda: wasmloop("mixed", extra=[f"--manifest={manifest}"])),
                   ("uvicorn", SYSTEMS["uvicorn"]), ("wasmtime", SYSTEMS["wasmtime"])]
        for name, start in systems:
            with start() as server:
                rows.append((name, latency_under(server, "/cpu", 32, cfg)))
    lines = ["### Mixed: hello latency while the pool is saturated", "",
             "Four connections send `GET /` (async hello) while 32 connections keep `GET /cpu` (2 ms of computing, a sync/`def` handler) busy.", "",
             "| system | idle p50 / p99 ms | loaded p50 / p99 ms | p99 loaded/idle | /cpu req/s meanwhile |", "|---|---|---|---|---|"]
    for name, (idle, busy, bg) in rows:
        lines.append(f"| {LABELS[name]} | {idle['p50']:.2f} / {idle['p99']:.2f} | {busy['p50']:.2f} / {busy['p99']:.2f} | "
                     f"{busy['p99'] / idle['p99']:.1f}x | {bg:.0f} |")
    return "\n".join(lines) + "\n"


def spinning(cfg):
    """Hello latency next to a guest computing 50 ms at a time without awaiting."""
    print("spinning", file=sys.stderr)
    rows = []
    for name in ["loop", "native", "wasmtime", "uvicorn"]:
        with SYSTEMS[name]() as server:
            rows.append((name, latency_under(server, "/spin?ms=50", 1, cfg)))
    lines = ["### A handler computing without awaiting, next to hello requests", "",
             "Four connections send `GET /` while one connection keeps `GET /spin?ms=50` (50 ms of computing without an await) running on the same worker.", "",
             "| system | idle p50 / p99 ms | with the spinner p50 / p99 ms | p99 added ms |", "|---|---|---|---|"]
    for name, (idle, busy, _) in rows:
        lines.append(f"| {LABELS[name]} | {idle['p50']:.2f} / {idle['p99']:.2f} | {busy['p50']:.2f} / {busy['p99']:.2f} | {busy['p99'] - idle['p99']:.1f} |")
    return "\n".join(lines) + "\n"


def instantiation():
    lines = ["### Instantiation per request", "", "Fresh store and instance from the pooling allocator (`target/release/instantiate COMPONENT 20000`), pinned to CPU 0:", ""]
    for component in [WASM / "bench_sync.wasm", WASM / "bench_async.wasm"]:
        out = subprocess.run(["taskset", "-c", SERVER_CPU, str(INSTANTIATE), str(component), "20000"],
                             capture_output=True, text=True, check=True).stdout.strip()
        lines.append(f"- `{component.name}`: {out.split(':', 1)[-1].strip()}")
    return "\n".join(lines) + "\n"


def deploy_to_first_response(large):
    """A deploy's steps, timed from the upload's start by the API's NDJSON stream: the
    baseline tier's compile, the deploy answered (live on the worker), the first 200
    of the new route, and with tiers the optimized tier live. Then a second, different
    Python app on the same node (its Cranelift compile takes CPython's functions from
    the compile cache), and the large component on Cranelift alone for reference."""
    print("deploy", file=sys.stderr)
    token = "bench-admin-token-0123456789abcdef"
    lines = ["### Deploy to first response", "",
             "`POST /v1/apps/APP/versions` with `Accept: application/x-ndjson`, timed from the upload's start: the step "
             "`compiled` (the baseline tier, in the compile child), `done` (stored, published, live on the worker), the "
             "first `GET` of the new route that answers 200, and `optimized` (Cranelift's code live, compiled in the "
             "background); one worker, registry mode, one node, not pinned (the compile children use both cores, as on "
             "a real node). Rows in order on one server: the Python apps after the first find CPython's functions in "
             "the node's compile cache.", "",
             "| component | size | `--compiler` | compiled | deploy answered | first response | optimized live | cache hits |",
             "|---|---|---|---|---|---|---|---|"]

    def deploy_all(compiler, components):
        port, admin = free_port(), free_port()
        with tempfile.TemporaryDirectory() as data:
            argv = [str(WASMLOOP), "serve", f"--listen=127.0.0.1:{port}", f"--admin-listen=127.0.0.1:{admin}",
                    "--workers=1", "--log-level=warn", f"--data-dir={data}", f"--compiler={compiler}"]
            server = Server("registry", argv, port, env={"WASMLOOP_ADMIN_TOKEN": token}, pin=False)
            try:
                req = urllib.request.Request(f"http://127.0.0.1:{admin}/v1/tenants", data=b'{"name":"bench"}', method="POST",
                                             headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
                with urllib.request.urlopen(req, timeout=60) as r:
                    tenant = json.loads(r.read())["token"]
                for name, path in components:
                    if path is None or not path.exists():
                        lines.append(f"| {name} | - | {compiler} | skipped: component not built | | | | |")
                        continue
                    body = path.read_bytes()
                    steps, first = {}, None
                    start = time.perf_counter()
                    req = urllib.request.Request(
                        f"http://127.0.0.1:{admin}/v1/apps/{name}/versions?route={name}.bench/", data=body, method="POST",
                        headers={"Authorization": f"Bearer {tenant}", "Content-Type": "application/wasm",
                                 "Accept": "application/x-ndjson"})
                    with urllib.request.urlopen(req, timeout=900) as r:
                        for line in r:
                            step = json.loads(line)
                            steps[step["step"]] = (time.perf_counter() - start, step)
                            if step["step"] == "done":
                                # Until the app answers (any status but the host's
                                # own 404 for a host no app serves yet).
                                get = urllib.request.Request(server.url("/"), headers={"Host": f"{name}.bench"})
                                while True:
                                    try:
                                        urllib.request.urlopen(get, timeout=5).read()
                                        break
                                    except urllib.error.HTTPError as e:
                                        if e.code != 404 or e.read() != b"no_app\n":
                                            break
                                first = time.perf_counter() - start
                    if "done" not in steps:
                        lines.append(f"| `{path.name}` | {len(body) / 2**20:.1f} MiB | {compiler} | failed: {steps.get('failed')} | | | | |")
                        continue
                    ms = lambda key: f"{steps[key][0] * 1000:.0f} ms" if key in steps else "-"
                    compiled = steps["compiled"][1]
                    # The Cranelift compile's use of the compile cache: the optimized
                    # tier's, or the only compile's (Winch uses no cache).
                    cranelift = steps["optimized"][1] if "optimized" in steps else compiled
                    cache = cranelift.get("cache") or {}
                    hits = f"{cache.get('hits', 0)} of {cache.get('lookups', 0)}" if cache.get("lookups") else "-"
                    lines.append(f"| `{path.name}` | {len(body) / 2**20:.1f} MiB | {compiler} | "
                                 f"{compiled.get('compiler')} {compiled.get('ms')} ms | {ms('done')} | "
                                 f"{first * 1000:.0f} ms | {ms('optimized')} | {hits} |")
            finally:
                server.stop()

    deploy_all("auto", [("small", EXAMPLES / "hello.wasm"), ("large", large), ("py-sync", PY_SYNC), ("py-async", PY_ASYNC)])
    deploy_all("cranelift", [("small", EXAMPLES / "hello.wasm"), ("large", large), ("py-sync", PY_SYNC)])
    return "\n".join(lines) + "\n"


def python_reuse(large, cfg):
    """The componentize-py handler (CPython in the component), fresh and reused."""
    if not large:
        return ""
    rows = []
    for name, extra in [("fresh", []), ("reuse=serial", ["--reuse=serial"])]:
        print(f"python: {name}", file=sys.stderr)
        with wasmloop(f"python-{name}", large, extra=extra) as server:
            rows.append((name, measure(server, "/", 8, cfg)))
    fresh = rows[0][1]["rps"]
    lines = ["### A componentize-py handler, fresh and reused", "",
             f"`{large.name}` (the Python handler of tests/compat, CPython inside), on the pool, 8 connections, `GET /`.", "",
             "| wasmloop | req/s | vs fresh | p50 ms | p99 ms | CPU µs/req | failed |", "|---|---|---|---|---|---|---|"]
    for name, r in rows:
        lines.append(f"| {name} | {r['rps']:.0f} | {r['rps'] / fresh:.1f}x | {r['p50']:.2f} | {r['p99']:.2f} | {r['cpu_us']:.0f} | {r['failed']} |")
    return "\n".join(lines) + "\n"


def tiers(large, cfg):
    """Tiered compilation: time to the first response of `serve FILE` on each compiler,
    and what the baseline tier's code costs per request."""
    lines = ["### Compilers and tiers", "",
             "`wasmloop serve FILE` (one worker, not pinned: the worker compiles on both cores, as on a real node) "
             "from start until the first `GET /` answers, and with `--compiler auto` until the optimized tier is live "
             "(from its log line). The throughput rows below are pinned like every server here.", "",
             "| component | `--compiler` | first response | optimized tier live |", "|---|---|---|---|"]
    for component in [WASM / "bench_async.wasm", large]:
        if not component:
            continue
        for compiler in ["auto", "cranelift", "winch"]:
            print(f"tiers: {component.name} {compiler}", file=sys.stderr)
            started = time.time()
            # The tier's log line is at info; the rest stays at warn.
            env = {"RUST_LOG": "warn,wasmloop::worker::tier=info"}
            with wasmloop(f"tier-{compiler}", component, extra=[f"--compiler={compiler}"], env=env, pin=False) as server:
                first = time.time() - started
                live = "-"
                if compiler == "auto":
                    deadline = time.time() + 180
                    while time.time() < deadline:
                        server.log.seek(0)
                        if b"optimized tier live" in server.log.read():
                            live = f"{(time.time() - started) * 1000:.0f} ms"
                            break
                        time.sleep(0.05)
            lines.append(f"| `{component.name}` | {compiler} | {first * 1000:.0f} ms | {live} |")
    lines += ["", "Requests on each compiler's code, fresh sandbox per request (`GET /`):", "",
              "| component | `--compiler` | connections | req/s | p50 ms | p99 ms | CPU µs/req | failed |",
              "|---|---|---|---|---|---|---|---|"]
    cases = [(WASM / "bench_async.wasm", 64), (WASM / "bench_sync.wasm", 64)] + ([(large, 8)] if large else [])
    for component, conns in cases:
        for compiler in ["cranelift", "winch"]:
            print(f"tiers: {component.name} on {compiler}", file=sys.stderr)
            with wasmloop(f"run-{compiler}", component, extra=[f"--compiler={compiler}"]) as server:
                r = measure(server, "/", conns, cfg)
            lines.append(f"| `{component.name}` | {compiler} | {conns} | {r['rps']:.0f} | {r['p50']:.2f} | {r['p99']:.2f} | {r['cpu_us']:.0f} | {r['failed']} |")
    return "\n".join(lines) + "\n"


def python_sdk(cfg):
    """Python hello in both SDK styles, fresh and reused, next to Uvicorn + FastAPI with
    the same routes; and the seed's pitfall for each."""
    if not (PY_SYNC.exists() and PY_ASYNC.exists()):
        return ""
    rows = []
    for name in ["uvicorn", "py-pool", "py-loop", "py-pool-serial", "py-loop-serial", "py-loop-concurrent"]:
        print(f"python sdk: {name}", file=sys.stderr)
        with SYSTEMS[name]() as server:
            r = measure(server, "/", 8, cfg)
            worker = descendants(server.proc.pid)
            r["worker_mib"] = rss_kib(worker[-1] if worker else server.proc.pid, "VmHWM") / 1024
            rows.append((name, r))
    uvicorn = rows[0][1]["rps"]
    lines = ["### Python: the SDK's two styles next to Uvicorn + FastAPI", "",
             "`GET /` answering `Hello, world!` from bench/python-sdk (built with the Python SDK, componentize-py 0.25.1, "
             "CPython in the component) and from bench/python/app.py under Uvicorn; 8 connections, one worker. "
             "Peak RSS is the serving process's (wasmloop's worker; Uvicorn's own).", "",
             "| system | req/s | vs Uvicorn | p50 ms | p99 ms | CPU µs/req | peak RSS MiB | failed |", "|---|---|---|---|---|---|---|---|"]
    for name, r in rows:
        lines.append(f"| {LABELS[name]} | {r['rps']:.0f} | {r['rps'] / uvicorn:.2f}x | {r['p50']:.2f} | {r['p99']:.2f} | "
                     f"{r['cpu_us']:.0f} | {r['worker_mib']:.0f} | {r['failed']} |")
    pit = []
    for name in ["uvicorn", "py-loop", "py-loop-concurrent"]:
        print(f"python sdk pitfall: {name}", file=sys.stderr)
        with SYSTEMS[name]() as server:
            pit.append((name, latency_under(server, "/spin?ms=50", 1, cfg)))
    lines += ["", "The seed's pitfall: four connections send `GET /` while one keeps `GET /spin?ms=50` (an `async def` "
              "computing 50 ms without an await) running on the same worker.", "",
              "| system | idle p50 / p99 ms | with the spinner p50 / p99 ms | p99 added ms |", "|---|---|---|---|"]
    for name, (idle, busy, _) in pit:
        lines.append(f"| {LABELS[name]} | {idle['p50']:.2f} / {idle['p99']:.2f} | {busy['p50']:.2f} / {busy['p99']:.2f} | "
                     f"{busy['p99'] - idle['p99']:.1f} |")
    return "\n".join(lines) + "\n"


def memory_in_flight(cfg):
    hold = max(6, int(cfg.seconds) + 2)
    lines = ["### Memory per 1,000 in-flight async requests", "",
             f"wasmloop, one worker, `examples/sleepy` (each request awaits a {hold} s timer), 1,000 connections: "
             "worker RSS idle and with 1,000 requests in flight, for each reuse mode.", "",
             "RSS counts a page once for each mapping of it: every instance maps the component's copy-on-write "
             "memory image, whose pages the 1,000 instances share, so PSS (each page once) is the memory used.", "",
             "| reuse | idle RSS MiB | 1,000 in flight RSS MiB | RSS per 1,000 | idle PSS MiB | 1,000 in flight PSS MiB | **PSS per 1,000** |",
             "|---|---|---|---|---|---|---|"]
    for mode in ["none", "serial", "concurrent"]:
        print(f"memory: {mode}", file=sys.stderr)
        # One compiler: an optimized tier compiled in the worker during the load
        # would land in the figure.
        extra = ["--limit-concurrency=2000", f"--reuse={mode}", "--compiler=cranelift"]
        with wasmloop(f"sleepy-{mode}", EXAMPLES / "sleepy.wasm", extra=extra) as server:
            worker = descendants(server.proc.pid)[-1]
            idle, idle_pss = rss_kib(worker), pss_kib(worker)
            load = subprocess.Popen(["taskset", "-c", LOAD_CPU, "wrk", "-t1", "-c1000", f"-d{hold}s", "--timeout=30s",
                                     server.url(f"/?ms={hold * 1000}")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            time.sleep(hold / 2)
            peak, peak_pss = rss_kib(worker), pss_kib(worker)
            load.communicate()
        lines.append(f"| {mode} | {idle / 1024:.1f} | {peak / 1024:.1f} | {(peak - idle) / 1024:.1f} | "
                     f"{idle_pss / 1024:.1f} | {peak_pss / 1024:.1f} | **{(peak_pss - idle_pss) / 1024:.1f}** |")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="every scenario once, 2 s each: a smoke test")
    parser.add_argument("--out", type=Path, help="write the results between the markers of this Markdown file")
    parser.add_argument("--large", type=Path, help="a component over 10 MB for the deploy measurement")
    parser.add_argument("--only", help="comma-separated sections to run (hello, timer, computing, python, tiers, deploy, memory); with --out they replace "
                        "their own tables in the results and the rest stays")
    cfg = parser.parse_args()
    cfg.runs, cfg.seconds = (1, 2) if cfg.quick else (3, 10)
    cfg.duration, cfg.warmup = f"{cfg.seconds}s", ("1s" if cfg.quick else "3s")
    needed = [("wrk", shutil.which("wrk")), ("wasmloop", WASMLOOP), ("uvicorn", UVICORN)]
    if not cfg.only or {"hello", "timer", "computing"} & set(cfg.only.split(",")):
        needed.append(("wasmtime", WASMTIME))
    for tool, path in needed:
        if not path or not Path(path).exists():
            raise SystemExit(f"{tool} is missing; run bench/run.sh, which installs it")

    started = time.time()
    if cfg.only:
        return run_only(cfg, started)
    sections = []
    sections.append(hello(cfg))
    sections.append(timer(cfg))
    sections.append(computing(cfg))
    sections.append(mixed(cfg))
    sections.append(spinning(cfg))
    sections.append(instantiation())
    sections.append(deploy_to_first_response(cfg.large))
    sections.append(python_reuse(cfg.large, cfg))
    sections.append(tiers(cfg.large, cfg))
    sections.append(python_sdk(cfg))
    sections.append(memory_in_flight(cfg))

    report = describe(cfg, started, "") + "\n" + "\n".join(sections)
    print(report)
    if cfg.out and not cfg.quick:
        text = cfg.out.read_text()
        start, end = "<!-- results:start -->", "<!-- results:end -->"
        if start in text and end in text:
            text = text[: text.index(start) + len(start)] + "\n" + report + "\n" + text[text.index(end):]
            cfg.out.write_text(text)
    if cfg.quick:
        check_quick()


def check_quick():
    """A smoke run passes when every scenario ran and no request of any failed."""
    if FAILED:
        raise SystemExit(f"quick run: {FAILED} requests failed")
    print("quick run: every scenario ran", file=sys.stderr)


def describe(cfg, started, only):
    cpu = open("/proc/cpuinfo").read()
    model = re.search(r"model name\s*:\s*(.*)", cpu)
    flags = (" --quick" if cfg.quick else "") + (f" --only {only}" if only else "")
    return (f"Measured {time.strftime('%Y-%m-%d')} on {os.cpu_count()} vCPU ({model.group(1) if model else 'unknown CPU'}), "
            f"Linux {os.uname().release}; {'quick smoke run' if cfg.quick else f'{cfg.runs} runs of {cfg.duration} after a {cfg.warmup} warm-up, medians'}; "
            f"server on CPU {SERVER_CPU}, wrk on CPU {LOAD_CPU}; {'these sections' if only else 'whole run'} {time.time() - started:.0f} s. "
            f"Command: `bench/run.sh{flags}`.\n")


def run_only(cfg, started):
    """Runs the named sections; with --out, each replaces the section of the same title
    in the results (the rest of which keep their own run's header), preceded by a line
    saying when and how these were measured."""
    known = {"hello": lambda: hello(cfg), "timer": lambda: timer(cfg), "computing": lambda: computing(cfg),
             "python": lambda: python_sdk(cfg), "tiers": lambda: tiers(cfg.large, cfg),
             "deploy": lambda: deploy_to_first_response(cfg.large), "memory": lambda: memory_in_flight(cfg)}
    names = cfg.only.split(",")
    for name in names:
        if name not in known:
            raise SystemExit(f"--only: unknown section {name!r} (known: {', '.join(known)})")
    sections = [known[name]() for name in names]
    note = "_" + describe(cfg, started, cfg.only).strip() + "_\n"
    print("\n".join([note, *sections]))
    if cfg.quick:
        return check_quick()
    if not cfg.out:
        return
    text = cfg.out.read_text()
    start, end = "<!-- results:start -->", "<!-- results:end -->"
    head, block, tail = text[: text.index(start) + len(start)], text[text.index(start) + len(start): text.index(end)], text[text.index(end):]
    for section in filter(None, sections):
        title = section.splitlines()[0]
        fresh = note + "\n" + section
        pattern = re.compile(r"(?:_Measured[^\n]*_\n\n)?" + re.escape(title) + r"\n.*?(?=\n_Measured|\n### |\Z)", re.S)
        # A blank line after the table: a line right below one would be read as a row.
        block, n = pattern.subn(lambda _: fresh.rstrip("\n") + "\n", block, count=1)
        if not n:
            block = block.rstrip("\n") + "\n\n" + fresh
    cfg.out.write_text(head + block.rstrip("\n") + "\n\n" + tail)


if __name__ == "__main__":
    main()

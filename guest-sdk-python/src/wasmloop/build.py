"""`python -m wasmloop build`: an app module to a component. Imports the app here
(plain CPython) to learn its style, stages the app's modules, this SDK and the
pure-Python requirements, and runs the pinned componentize-py against the world of
that style: `def` handlers -> `wasmloop:python/sync-app` (the host's pool),
`async def` handlers -> `wasmloop:python/async-app` (its event loop).
"""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from wasmloop.core import App

COMPONENTIZE_PY = "0.25.1"
WORLDS = {"sync": "wasmloop:python/sync-app@0.1.0", "async": "wasmloop:python/async-app@0.1.0"}
EXPORTS = {
    "sync": ("wasmloop._p2", "IncomingHandler"),
    "async": ("wasmloop._p3", "Handler"),
}
_SKIP = {"__pycache__", "build", "dist", "node_modules", "site-packages", "venv"}


class BuildError(Exception):
    """A build that cannot go on; the message says why and what to do."""


def load_app(path: Path, name: str) -> App:
    """Imports `path` (a module file) and returns its `App` named `name`."""
    if not path.is_file():
        raise BuildError(f"{path}: no such file")
    sys.path.insert(0, str(path.parent.resolve()))
    sys.dont_write_bytecode = True  # leave no __pycache__ in the project
    try:
        module = importlib.import_module(path.stem)
    except Exception as e:  # noqa: BLE001 - any import failure is the app's
        raise BuildError(f"importing {path} failed: {type(e).__name__}: {e}") from e
    finally:
        sys.path.pop(0)
    app = getattr(module, name, None)
    if not isinstance(app, App):
        raise BuildError(f"{path} has no `{name} = wasmloop.App()` (use --name NAME)")
    return app


def style_of(app: App) -> str:
    try:
        return app.style()
    except ValueError as e:
        raise BuildError(str(e)) from None


def componentize_py() -> str:
    """The componentize-py next to this interpreter, else on PATH."""
    here = Path(sys.executable).parent / "componentize-py"
    found = str(here) if here.exists() else shutil.which("componentize-py")
    if not found:
        raise BuildError(
            f"componentize-py is not installed: pip install componentize-py=={COMPONENTIZE_PY}"
        )
    version = subprocess.run([found, "--version"], capture_output=True, text=True).stdout
    if COMPONENTIZE_PY not in version:
        raise BuildError(
            f"{found} is {version.strip() or 'of an unknown version'}; this SDK is built "
            f"and tested with {COMPONENTIZE_PY}: pip install componentize-py=={COMPONENTIZE_PY}"
        )
    return found


def _stage_app(project: Path, into: Path) -> None:
    """The project's modules and packages, without environments or caches."""
    into.mkdir()
    for entry in project.iterdir():
        if entry.name.startswith(".") or entry.name in _SKIP:
            continue
        if entry.is_file() and entry.suffix == ".py":
            shutil.copy2(entry, into / entry.name)
        elif entry.is_dir() and (entry / "__init__.py").exists():
            shutil.copytree(entry, into / entry.name, ignore=shutil.ignore_patterns("__pycache__"))


def _stage_requirements(project: Path, into: Path) -> None:
    into.mkdir()
    requirements = project / "requirements.txt"
    if not requirements.exists():
        return
    wanted = [
        line
        for line in requirements.read_text().splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    if not wanted:
        return
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-compile",
         "--target", str(into), "-r", str(requirements)],
        check=True,
    )


def build(app_file: Path, output: Path | None, app_name: str = "app") -> tuple[Path, str]:
    """Builds `app_file` into a component; returns its path and the app's style."""
    app = load_app(app_file, app_name)
    style = style_of(app)
    output = output or app_file.with_suffix(".wasm")
    sdk = Path(__file__).resolve().parent
    tool = componentize_py()
    with tempfile.TemporaryDirectory(prefix="wasmloop-build-") as work:
        work_dir = Path(work)
        _stage_app(app_file.parent.resolve(), work_dir / "app")
        _stage_requirements(app_file.parent.resolve(), work_dir / "deps")
        shutil.copytree(
            sdk,
            work_dir / "sdk" / "wasmloop",
            ignore=shutil.ignore_patterns("__pycache__", "wit", "build.py", "__main__.py"),
        )
        module, export = EXPORTS[style]
        entry = work_dir / "entry"
        entry.mkdir()
        (entry / "wasmloop_entry.py").write_text(
            "# Written by `python -m wasmloop build`: the component's export.\n"
            "from wit_world import exports as _exports\n"
            "from wasmloop import logs as _logs\n"
            f"from {module} import Handler as _Handler\n"
            f"from {app_file.stem} import {app_name} as _app\n\n"
            "_logs.install()\n\n\n"
            f"class {export}(_Handler, _exports.{export}):\n"
            "    app = _app\n"
        )
        command = [
            tool, "-d", str(sdk / "wit"), "-w", WORLDS[style], "componentize",
            "-p", str(entry), "-p", str(work_dir / "app"), "-p", str(work_dir / "sdk"),
            "-p", str(work_dir / "deps"), "wasmloop_entry", "-o", str(output.resolve()),
        ]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise BuildError(f"componentize-py failed:\n{done.stdout}{done.stderr}")
    return output, style


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m wasmloop")
    commands = parser.add_subparsers(dest="command", required=True)
    b = commands.add_parser("build", help="build an app into a wasmloop component")

    b.add_argument("module", nargs="?", default="app.py", help="the app's file (app.py)")
    b.add_argument("-o", "--output", type=Path, help="the component (APP.wasm)")
    b.add_argument("--name", default="app", help="the App's variable in it (app)")
    args = parser.parse_args(argv)
    try:
        output, style = build(Path(args.module), args.output, args.name)
    except BuildError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    where = "the event loop (async def)" if style == "async" else "the thread pool (def)"
    print(f"built {output} ({os.path.getsize(output) // 1024} KiB): runs on {where}")
    print(output)
    return 0

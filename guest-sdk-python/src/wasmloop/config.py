"""Configuration variables: what the operator set with `--var KEY=VALUE` (or per app),
read through the standard wasi:config interface.

    from wasmloop import config
    greeting = config.get("GREETING", "hello")
"""

from __future__ import annotations


def get(key: str, default: str | None = None) -> str | None:
    """The value of variable `key`, or `default` when the operator did not set it."""
    from componentize_py_types import Err
    from wit_world.imports import store  # loaded by the export module

    try:
        value = store.get(key)
    except Err as e:
        raise RuntimeError(f"reading configuration variable {key!r}: {e.value}") from None
    return default if value is None else value


def get_all() -> dict[str, str]:
    """Every variable the app was given."""
    from componentize_py_types import Err
    from wit_world.imports import store

    try:
        return dict(store.get_all())
    except Err as e:
        raise RuntimeError(f"reading the configuration: {e.value}") from None

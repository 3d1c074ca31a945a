"""wasi:http's `method` and `scheme` variants (generated classes in both worlds) as
the strings the SDK uses."""

from __future__ import annotations

from typing import Any


def method_name(method: Any) -> str:
    """A wasi:http `method` variant as its name."""
    name = type(method).__name__.removeprefix("Method_")
    return str(method.value) if name == "Other" else name.upper()


def scheme_name(scheme: Any) -> str:
    if scheme is None:
        return "http"
    name = type(scheme).__name__.removeprefix("Scheme_")
    return str(scheme.value) if name == "Other" else name.lower()

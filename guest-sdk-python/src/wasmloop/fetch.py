"""Outbound HTTP: `await fetch(url)` in an `async def` app (wasi:http 0.3, holds no
thread while it waits), `fetch_sync(url)` in a `def` app (wasi:http 0.2). The host
allows only the hosts the operator listed (`--allow-outbound`); any other request
raises `FetchError` naming the host's reason (`HTTP-request-denied`).
"""

from __future__ import annotations

import json as _json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from wasmloop.core import Headers


class FetchError(Exception):
    """An outbound request that got no response: denied, unreachable, timed out."""


@dataclass
class FetchResponse:
    status: int
    headers: Headers
    body: bytes = field(repr=False)

    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return _json.loads(self.body)

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


def _parts(url: str) -> tuple[str, str, str]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise FetchError(f"{url!r} is not an http:// or https:// URL")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return parts.scheme, parts.netloc, path


def _headers(headers: dict[str, str] | None, body: bytes | None) -> list[tuple[str, bytes]]:
    items = [(k.lower(), str(v).encode("latin-1")) for k, v in (headers or {}).items()]
    if body and not any(k == "content-length" for k, _ in items):
        items.append(("content-length", str(len(body)).encode()))
    return items


_METHODS = {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}


def _method(module: Any, name: str) -> Any:
    name = name.upper()
    if name in _METHODS:
        return getattr(module, "Method_" + name.capitalize())()
    return module.Method_Other(name)


def _scheme(module: Any, name: str) -> Any:
    return module.Scheme_Https() if name == "https" else module.Scheme_Http()


def _reason(error: Any) -> str:
    name = type(error).__name__.removeprefix("ErrorCode_")
    words = "".join(" " + c.lower() if c.isupper() else c for c in name).strip()
    value = getattr(error, "value", None)
    return f"{words}: {value}" if value else words


def fetch_sync(
    url: str,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    body: bytes | str | None = None,
) -> FetchResponse:
    """Sends a request from a `def` handler and waits for the whole response."""
    try:
        from wasmloop._p2 import Err, outgoing_handler, read_all, types, write_all
    except ImportError:
        raise RuntimeError("fetch_sync is for `def` apps; use `await fetch(...)`") from None

    scheme, authority, path = _parts(url)
    data = body.encode("utf-8") if isinstance(body, str) else body
    request = types.OutgoingRequest(types.Fields.from_list(_headers(headers, data)))
    request.set_method(_method(types, method))
    request.set_scheme(_scheme(types, scheme))
    request.set_authority(authority)
    request.set_path_with_query(path)
    outgoing_body = request.body()
    try:
        future = outgoing_handler.handle(request, None)
        if data:
            with outgoing_body.write() as stream:
                write_all(stream, data)
        types.OutgoingBody.finish(outgoing_body, None)
        with future:
            with future.subscribe() as pollable:
                pollable.block()
            result = future.get()
    except Err as e:
        raise FetchError(f"{method} {url}: {_reason(e.value)}") from None
    # option<result<result<incoming-response, error-code>>>: the outer result is
    # an error only if the response was taken before, which this code never does.
    if result is None or isinstance(result, Err):
        raise FetchError(f"{method} {url}: no response")
    inner = result.value
    if isinstance(inner, Err):
        raise FetchError(f"{method} {url}: {_reason(inner.value)}")
    response = inner.value
    status = response.status()
    got = Headers((k, v.decode("latin-1")) for k, v in response.headers().entries())
    incoming = response.consume()
    with incoming.stream() as stream:
        payload = read_all(stream)
    return FetchResponse(status, got, payload)


async def fetch(
    url: str,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    body: bytes | str | None = None,
) -> FetchResponse:
    """Sends a request from an `async def` handler; awaiting it holds no thread."""
    try:
        from wasmloop._p3 import (
            Err,
            Ok,
            client,
            componentize_py_async_support,
            read_all,
            trailers_future,
            types,
            unit_future,
            wit_world,
        )
    except ImportError:
        raise RuntimeError("fetch is for `async def` apps; use fetch_sync(...)") from None

    scheme, authority, path = _parts(url)
    data = body.encode("utf-8") if isinstance(body, str) else body
    writer, contents = wit_world.byte_stream() if data else (None, None)
    trailers_writer, trailers = trailers_future()

    async def send_body() -> None:
        if writer is not None:
            with writer:
                await writer.write_all(data)
        await trailers_writer.write(Ok(None))

    request, _sent = types.Request.new(
        types.Fields.from_list(_headers(headers, data)), contents, trailers, None
    )
    request.set_method(_method(types, method))
    request.set_scheme(_scheme(types, scheme))
    request.set_authority(authority)
    request.set_path_with_query(path)
    componentize_py_async_support.spawn(send_body())
    try:
        response = await client.send(request)
    except Err as e:
        raise FetchError(f"{method} {url}: {_reason(e.value)}") from None
    status = response.get_status_code()
    got = Headers((k, v.decode("latin-1")) for k, v in response.get_headers().copy_all())
    done, done_reader = unit_future()
    stream, _trailers = types.Response.consume_body(response, done_reader)
    payload = await read_all(stream)
    await done.write(Ok(None))
    return FetchResponse(status, got, payload)

"""The async component's export: wasi:http 0.3 `handler`, an `async func` the host
runs on its event loop. Reads the request body, awaits the app's `async def`
handler, returns the response, and writes its body after returning (the host reads
it as the guest writes). Imported only inside the component.
"""

from __future__ import annotations

import asyncio
from typing import Any

import componentize_py_async_support
import wit_world
from componentize_py_types import Err, Ok
# Loaded now for wasmloop.fetch and wasmloop.config: nothing imports at run time.
from wit_world.imports import client, monotonic_clock, store  # noqa: F401
from wit_world.imports import wasi_http_types as types  # noqa: F401
from wit_world.imports.wasi_http_types import ErrorCode_InternalError, Fields
from wit_world.imports.wasi_http_types import Request as WasiRequest
from wit_world.imports.wasi_http_types import Response as WasiResponse

from wasmloop import logs
from wasmloop._variants import method_name, scheme_name
from wasmloop.core import (
    App,
    PlainTextResponse,
    Request,
    Response,
    chunk_bytes,
    empty_body_is_whole,
    log,
)


_asyncio_sleep = asyncio.sleep


async def sleep(delay: float, result: Any = None) -> Any:
    """`asyncio.sleep` on the host's clock: the component's event loop has no timers
    of its own, so a timed wait is a wasi:clocks `wait-for` that holds no thread."""
    if delay <= 0:
        return await _asyncio_sleep(0, result)
    await monotonic_clock.wait_for(int(delay * 1_000_000_000))
    return result


# Code written for asyncio (and FastAPI) awaits asyncio.sleep: make it work.
asyncio.sleep = sleep


def unit_future() -> tuple[Any, Any]:
    """A (writer, reader) pair of `future<result<_, error-code>>`, Ok by default."""
    return wit_world.result_unit_wasi_http_types_error_code_future(lambda: Ok(None))


def trailers_future() -> tuple[Any, Any]:
    """A (writer, reader) pair of the trailers future, no trailers by default."""
    return wit_world.result_option_wasi_http_types_fields_wasi_http_types_error_code_future(
        lambda: Ok(None)
    )


async def read_all(stream: Any) -> bytes:
    chunks = []
    with stream:
        while not stream.writer_dropped:
            chunks.append(await stream.read(65536))
    return b"".join(chunks)


class BodyError(Exception):
    """The request body did not arrive whole (the client left, or it was too large)."""


async def _request(incoming: WasiRequest) -> Request:
    method = method_name(incoming.get_method())
    path = incoming.get_path_with_query() or "/"
    scheme = scheme_name(incoming.get_scheme())
    authority = incoming.get_authority()
    headers = [(k, v.decode("latin-1")) for k, v in incoming.get_headers().copy_all()]
    done, done_reader = unit_future()
    body, trailers = WasiRequest.consume_body(incoming, done_reader)
    data = await read_all(body)
    # A body the host cut off (its client left, or it passed the size limit) ends
    # like a whole one; only its trailers future tells them apart.
    if not data and empty_body_is_whole(method, headers):
        trailers.__exit__(None, None, None)
    else:
        verdict = await trailers.read()
        if isinstance(verdict, Err):
            raise BodyError(f"failed to read the body: {verdict.value}")
        if verdict.value is not None:
            verdict.value.__exit__(None, None, None)
    await done.write(Ok(None))
    return Request(method, path, headers, data, scheme, authority)


async def _write_body(
    writer: Any, trailers: Any, response: Response, head_only: bool
) -> None:
    # A HEAD reply's body is dropped by the server, but it must match the length
    # the head declares; a streamed one (no length) is not produced at all.
    with writer:
        if head_only and response.streaming:
            pass
        elif not response.streaming:
            await writer.write_all(response.body)
        else:
            iterator = response.iterator
            try:
                if hasattr(iterator, "__aiter__"):
                    async for chunk in iterator:
                        await writer.write_all(chunk_bytes(chunk))
                else:
                    for chunk in iterator:
                        await writer.write_all(chunk_bytes(chunk))
            except Exception as e:  # noqa: BLE001 - the head is sent: end the body
                log.error("the streamed body failed", exc_info=e)
                await trailers.write(Err(ErrorCode_InternalError(str(e))))
                return
    await trailers.write(Ok(None))


def _response(response: Response, head_only: bool) -> WasiResponse:
    headers = list(response.headers)
    if not response.streaming and not any(k == "content-length" for k, _ in headers):
        headers.append(("content-length", str(len(response.body))))
    writer, reader = wit_world.byte_stream()
    trailers_writer, trailers = trailers_future()
    outgoing, _sent = WasiResponse.new(
        Fields.from_list([(k, v.encode("latin-1")) for k, v in headers]), reader, trailers
    )
    outgoing.set_status_code(response.status_code)
    componentize_py_async_support.spawn(
        _write_body(writer, trailers_writer, response, head_only)
    )
    return outgoing


class Handler:
    """wasi:http/handler for one `App` (the build names it)."""

    app: App

    async def handle(self, request: WasiRequest) -> WasiResponse:
        logs.install()
        try:
            req = await _request(request)
        except BodyError as e:
            return _response(PlainTextResponse(f"{e}\n", status_code=400), False)
        response = await self.app.handle_async(req)
        return _response(response, req.method == "HEAD")

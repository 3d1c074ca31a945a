"""The sync component's export: wasi:http 0.2 `incoming-handler`, which the host runs
on its thread pool. Reads the request whole, runs the app's `def` handler, and
writes the response (streamed ones chunk by chunk). Imported only inside the
component, where componentize-py provides `wit_world`.
"""

from __future__ import annotations

import sys
from typing import Any

from componentize_py_types import Err, Ok
# Loaded now for wasmloop.fetch and wasmloop.config: nothing imports at run time.
from wit_world.imports import outgoing_handler, poll, store, streams, types  # noqa: F401
from wit_world.imports.types import (
    Fields,
    IncomingRequest,
    OutgoingBody,
    OutgoingResponse,
    ResponseOutparam,
)

from wasmloop import logs
from wasmloop._variants import method_name, scheme_name
from wasmloop.core import App, Request, Response, chunk_bytes, log

# blocking-write-and-flush takes at most this many bytes per call.
_WRITE_MAX = 4096


def read_all(stream: Any) -> bytes:
    """A wasi:io input stream read to its end."""
    chunks = []
    while True:
        try:
            chunks.append(stream.blocking_read(65536))
        except Err as e:
            if isinstance(e.value, streams.StreamError_Closed):
                return b"".join(chunks)
            raise


def write_all(stream: Any, data: bytes) -> None:
    for start in range(0, len(data), _WRITE_MAX):
        stream.blocking_write_and_flush(data[start : start + _WRITE_MAX])


def _request(incoming: IncomingRequest) -> Request:
    headers = [(k, v.decode("latin-1")) for k, v in incoming.headers().entries()]
    body = incoming.consume()
    with body.stream() as stream:
        data = read_all(stream)
    return Request(
        method_name(incoming.method()),
        incoming.path_with_query() or "/",
        headers,
        data,
        scheme_name(incoming.scheme()),
        incoming.authority(),
    )


def _send(response: Response, out: ResponseOutparam, head_only: bool) -> None:
    headers = list(response.headers)
    if not response.streaming and not any(k == "content-length" for k, _ in headers):
        headers.append(("content-length", str(len(response.body))))
    outgoing = OutgoingResponse(
        Fields.from_list([(k, v.encode("latin-1")) for k, v in headers])
    )
    outgoing.set_status_code(response.status_code)
    body = outgoing.body()
    ResponseOutparam.set(out, Ok(outgoing))
    # A HEAD reply's body is dropped by the server, but it must match the length
    # the head declares; a streamed one (no length) is not produced at all.
    with body.write() as stream:
        if head_only and response.streaming:
            pass
        elif response.streaming:
            try:
                for chunk in response.iterator:
                    write_all(stream, chunk_bytes(chunk))
            except Exception as e:  # noqa: BLE001 - the head is sent: end the body
                log.error("the streamed body failed", exc_info=e)
                return
        else:
            write_all(stream, response.body)
    OutgoingBody.finish(body, None)


class Handler:
    """wasi:http/incoming-handler for one `App` (the build names it)."""

    app: App

    def handle(self, request: IncomingRequest, response_out: ResponseOutparam) -> None:
        logs.install()
        req = _request(request)
        response = self.app.handle_sync(req)
        _send(response, response_out, req.method == "HEAD")
        sys.stderr.flush()

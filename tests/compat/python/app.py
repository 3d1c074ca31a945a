"""A wasi:http 0.2 handler in Python, built with componentize-py."""
from componentize_py_types import Ok
from wit_world import exports
from wit_world.imports.types import (
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
)


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: IncomingRequest, response_out: ResponseOutparam) -> None:
        path = request.path_with_query() or "/"
        response = OutgoingResponse(Fields.from_list([("content-type", b"text/plain")]))
        body = response.body()
        ResponseOutparam.set(response_out, Ok(response))
        # The stream must be dropped (end of `with`) before the body is finished.
        with body.write() as stream:
            stream.blocking_write_and_flush(f"hello from python at {path}\n".encode())
        OutgoingBody.finish(body, None)

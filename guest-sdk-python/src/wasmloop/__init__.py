"""wasmloop's Python SDK: write HTTP handlers the FastAPI way and build them into a
WebAssembly component that wasmloop serves. `def` handlers run on the host's thread
pool under a fuel limit; `async def` handlers run on its event loop, where a handler
that computes without awaiting is preempted instead of stalling its neighbours.

    from wasmloop import App

    app = App()

    @app.get("/items/{item_id}")
    async def read_item(item_id: int, q: str | None = None):
        return {"item_id": item_id, "q": q}

Build with `python -m wasmloop build app.py` (see README.md).
"""

from wasmloop import config
from wasmloop.core import (
    App,
    Headers,
    HTMLResponse,
    HTTPException,
    JSONResponse,
    PlainTextResponse,
    Request,
    RequestValidationError,
    Response,
    StreamingResponse,
)
from wasmloop.fetch import FetchError, FetchResponse, fetch, fetch_sync

__version__ = "0.1.0"


async def sleep(seconds: float) -> None:
    """Waits `seconds` in an `async def` handler without holding a thread (inside a
    component `asyncio.sleep` does the same)."""
    from wasmloop._p3 import sleep as host_sleep

    await host_sleep(seconds)


__all__ = [
    "App",
    "FetchError",
    "FetchResponse",
    "HTMLResponse",
    "HTTPException",
    "Headers",
    "JSONResponse",
    "PlainTextResponse",
    "Request",
    "RequestValidationError",
    "Response",
    "StreamingResponse",
    "config",
    "fetch",
    "fetch_sync",
    "sleep",
]

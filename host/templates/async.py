"""{{name}}: a wasmloop app written with `async def` handlers. wasmloop runs it on
its event loop: a request that awaits (a sleep, an outbound call) holds no thread,
and a handler that computes without awaiting is preempted instead of stalling its
neighbours.

    python -m wasmloop build      # writes app.wasm
    wasmloop serve app.wasm
    curl http://127.0.0.1:8080/hello/world
"""

import asyncio
import logging

from wasmloop import App, HTTPException

app = App()
log = logging.getLogger("{{name}}")


@app.get("/hello/{name}")
async def hello(name: str, excited: bool = False):
    # Waiting costs no thread: other requests run meanwhile.
    await asyncio.sleep(0.001)
    log.info("greeting %s", name)
    return {"greeting": f"Hello, {name}{'!' if excited else '.'}"}


@app.get("/items/{item_id}")
async def read_item(item_id: int, q: str | None = None):
    if item_id < 0:
        raise HTTPException(404, "no such item")
    return {"item_id": item_id, "q": q}

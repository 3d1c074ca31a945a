"""{{name}}: a wasmloop app written with plain `def` handlers. wasmloop runs it on
its bounded thread pool, under a fuel (CPU) limit, a memory limit and a deadline.

    python -m wasmloop build      # writes app.wasm
    wasmloop serve app.wasm
    curl http://127.0.0.1:8080/hello/world
"""

import logging

from wasmloop import App, HTTPException

app = App()
log = logging.getLogger("{{name}}")


@app.get("/hello/{name}")
def hello(name: str, excited: bool = False):
    log.info("greeting %s", name)
    return {"greeting": f"Hello, {name}{'!' if excited else '.'}"}


@app.get("/items/{item_id}")
def read_item(item_id: int, q: str | None = None):
    if item_id < 0:
        raise HTTPException(404, "no such item")
    return {"item_id": item_id, "q": q}

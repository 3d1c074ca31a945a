"""The Python SDK's test routes as `def` handlers (the host's pool). async/app.py
has the same routes as `async def` handlers (its loop); tests/tests/python_sdk.rs
checks that both answer alike. Routes beyond the shared set are marked."""

import logging
from dataclasses import dataclass

from wasmloop import (
    App,
    FetchError,
    HTMLResponse,
    HTTPException,
    Request,
    Response,
    config,
    fetch_sync,
)

app = App()
log = logging.getLogger("sdk-test")


@dataclass
class Greet:
    name: str
    n: int


@app.get("/")
def hello():
    return "hello from the sdk\n"


@app.get("/users/{user_id}")
def user(user_id: int):
    return {"id": user_id}


@app.post("/greet")
def greet(body: Greet):
    return {"greeting": f"hello {body.name}", "double": body.n * 2}


@app.post("/items", status_code=201)
def create_item(item: dict, dry_run: bool = False):
    return {"item": item, "dry_run": dry_run}


@app.get("/add")
def add(a: int, b: int):
    return f"{a + b}\n"


@app.get("/search")
def search(q: str | None = None, limit: float = 10, tag: list[str] = []):  # noqa: B006
    return {"q": q, "limit": limit, "tags": tag}


@app.get("/status/{code}")
def status(code: int):
    return Response(f"status {code}\n", status_code=code, media_type="text/plain")


@app.get("/headers")
def headers():
    return HTMLResponse("<p>hi</p>", 202, headers={"x-custom": "yes"})


@app.get("/bytes")
def raw_bytes():
    return b"\x00\x01\xff"


@app.get("/config/{key}")
def read_config(key: str):
    value = config.get(key)
    if value is None:
        raise HTTPException(404, f"{key} is not set")
    return value


@app.get("/stream")
def stream(chunks: int):
    def lines():
        for i in range(chunks):
            yield f"chunk {i}\n"

    return lines()


@app.get("/error")
def error():
    raise HTTPException(400, "this route always fails")


@app.get("/log")
def logs(request: Request):
    log.debug("sdk debug line")
    log.info("sdk info line")
    log.warning("sdk warn line")
    log.error("sdk error line")
    return "logged\n"


@app.get("/panic")
def panic():
    raise RuntimeError("the handler failed")


@app.put("/shout")
def shout(request: Request):
    log.info("shout of %d bytes", len(request.body))
    return request.text().upper()


@app.get("/files/{rest:path}")
def files(rest: str):
    return {"path": rest}


@app.get("/whoami")
def whoami(request: Request):
    return {"method": request.method, "client": request.client, "scheme": request.scheme}


# -- beyond the shared set -------------------------------------------------------


@app.get("/fetch")
def outbound(url: str):
    try:
        got = fetch_sync(url)
    except FetchError as e:
        raise HTTPException(502, str(e)) from None
    return {"status": got.status, "body": got.text()}


@app.get("/spin")
def spin(n: int):
    return {"sum": sum(range(n))}


@app.get("/forever")
def forever():
    while True:
        pass

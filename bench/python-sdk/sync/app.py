"""The benchmark routes with the wasmloop Python SDK, as `def` handlers (the
pool): the same bytes as bench/python/app.py answers under Uvicorn + FastAPI.

    /        Hello, world!
    /spin    done, after ?ms=N (default 50) of computing without an await
"""

import time

from wasmloop import App

app = App()


def spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    x = 1
    while time.perf_counter() < end:
        for i in range(100):
            x = (x * 6364136223846793005 + i) & 0xFFFFFFFFFFFFFFFF


@app.get("/")
def hello():
    return "Hello, world!\n"


@app.get("/spin")
def spin_route(ms: int = 50):
    spin(ms / 1000)
    return "done\n"

"""The benchmark routes for Uvicorn + FastAPI, answering the same bytes as the wasm
handlers (bench/guests) and the native baseline:

    /        Hello, world!          async def
    /sleep   slept, after an awaited 10 ms sleep          async def
    /cpu     done, after 2 ms of computing                def (thread pool)
    /spin    done, after ?ms=N (default 50) of computing  async def (blocks the loop)

Run: uvicorn app:app --workers 1 --no-access-log --log-level warning
"""

import asyncio
import time

from fastapi import FastAPI
from fastapi.responses import PlainTextResponse

app = FastAPI()


def spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    x = 1
    while time.perf_counter() < end:
        for i in range(100):
            x = (x * 6364136223846793005 + i) & 0xFFFFFFFFFFFFFFFF


@app.get("/", response_class=PlainTextResponse)
async def hello() -> str:
    return "Hello, world!\n"


@app.get("/sleep", response_class=PlainTextResponse)
async def sleep() -> str:
    await asyncio.sleep(0.010)
    return "slept\n"


@app.get("/cpu", response_class=PlainTextResponse)
def cpu() -> str:
    spin(0.002)
    return "done\n"


@app.get("/spin", response_class=PlainTextResponse)
async def spin_route(ms: int = 50) -> str:
    spin(ms / 1000)
    return "done\n"

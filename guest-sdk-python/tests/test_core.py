"""The SDK's pure-Python core under plain CPython: routing, parameters, bodies,
return values and the app's style. The component glue is tested end to end in
tests/tests/python_sdk.rs."""

import asyncio
import enum
import json
import sys
import unittest
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from wasmloop.core import empty_body_is_whole  # noqa: E402
from wasmloop import (  # noqa: E402
    App,
    HTTPException,
    JSONResponse,
    Request,
    Response,
    StreamingResponse,
)


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclass
class Item:
    name: str
    price: float
    tags: list[str]
    note: Optional[str] = None


def call(app, method, path, body=b"", headers=()):
    request = Request(method, path, headers, body)
    return app.handle_sync(request)


def body(response):
    return json.loads(response.body)


class Routing(unittest.TestCase):
    def setUp(self):
        app = App()

        @app.get("/items/{item_id}")
        def read_item(item_id: int, q: str | None = None, short: bool = False):
            return {"item_id": item_id, "q": q, "short": short}

        @app.post("/items", status_code=201)
        def create(item: Item):
            return item

        @app.get("/colors/{color}")
        def color(color: Color, mode: Literal["a", "b"] = "a"):
            return {"color": color.value, "mode": mode}

        @app.get("/files/{rest:path}")
        def files(rest: str):
            return rest

        @app.route("/both", methods=["PUT", "PATCH"])
        def both(request: Request):
            return request.method

        self.app = app

    def test_path_and_query_parameters_convert_by_annotation(self):
        r = call(self.app, "GET", "/items/5?q=x&short=on")
        self.assertEqual((r.status_code, body(r)), (200, {"item_id": 5, "q": "x", "short": True}))
        r = call(self.app, "GET", "/items/5")
        self.assertEqual(body(r), {"item_id": 5, "q": None, "short": False})
        r = call(self.app, "GET", "/colors/blue?mode=b")
        self.assertEqual(body(r), {"color": "blue", "mode": "b"})

    def test_bad_parameters_are_422_naming_them(self):
        r = call(self.app, "GET", "/items/five?short=perhaps")
        self.assertEqual(r.status_code, 422)
        locs = [d["loc"] for d in body(r)["detail"]]
        self.assertEqual(locs, [["path", "item_id"], ["query", "short"]])
        r = call(self.app, "GET", "/colors/green")
        self.assertEqual(r.status_code, 422)
        self.assertIn("'red'", body(r)["detail"][0]["msg"])
        r = call(self.app, "GET", "/colors/red?mode=c")
        self.assertEqual(r.status_code, 422)

    def test_404_405_and_head(self):
        self.assertEqual(call(self.app, "GET", "/nope").status_code, 404)
        r = call(self.app, "DELETE", "/items/1")
        self.assertEqual(r.status_code, 405)
        self.assertIn(("allow", "GET, HEAD"), r.headers)
        r = call(self.app, "GET", "/both")
        self.assertIn(("allow", "PUT, PATCH"), r.headers)
        self.assertEqual(call(self.app, "HEAD", "/items/1").status_code, 200)
        self.assertEqual(call(self.app, "PATCH", "/both").body, b"PATCH")
        # Segments do not match across slashes, except {name:path}.
        self.assertEqual(call(self.app, "GET", "/items/1/2").status_code, 404)
        self.assertEqual(call(self.app, "GET", "/files/a/b%2Fc").body, b"a/b/c")

    def test_dataclass_bodies_are_checked_field_by_field(self):
        json_ct = [("content-type", "application/json")]
        r = call(self.app, "POST", "/items", b'{"name":"x","price":2,"tags":["a"]}', json_ct)
        self.assertEqual(r.status_code, 201)
        self.assertEqual(body(r), {"name": "x", "price": 2.0, "tags": ["a"], "note": None})
        r = call(self.app, "POST", "/items", b'{"name":1,"tags":"a"}', json_ct)
        self.assertEqual(r.status_code, 422)
        locs = sorted(tuple(d["loc"]) for d in body(r)["detail"])
        self.assertEqual(locs, [("body", "name"), ("body", "price"), ("body", "tags")])
        r = call(self.app, "POST", "/items", b"[1]", json_ct)
        self.assertEqual(r.status_code, 422)
        r = call(self.app, "POST", "/items", b"{", json_ct)
        self.assertEqual(body(r)["detail"][0]["type"], "json_invalid")
        r = call(self.app, "POST", "/items", b"{}", [("content-type", "text/plain")])
        self.assertEqual(r.status_code, 415)


class ReturnValues(unittest.TestCase):
    def test_each_kind_of_value_has_its_response(self):
        app = App()

        @app.get("/{kind}")
        def value(kind: str):
            if kind == "raise":
                raise HTTPException(418, {"why": "teapot"}, {"x-tea": "1"})
            if kind == "fail":
                raise ValueError("boom")
            return {
                "str": "text",
                "bytes": b"\x00",
                "dict": {"a": (1, 2)},
                "none": None,
                "response": Response("made", 203, {"x-a": "b"}, media_type="text/csv"),
                "json": JSONResponse([1], 207),
                "stream": (c for c in ["a", b"b"]),
            }[kind]

        cases = {
            "str": (200, "text/plain; charset=utf-8", b"text"),
            "bytes": (200, "application/octet-stream", b"\x00"),
            "dict": (200, "application/json", b'{"a":[1,2]}'),
            "none": (200, "application/json", b"null"),
            "response": (203, "text/csv; charset=utf-8", b"made"),
            "json": (207, "application/json", b"[1]"),
            "raise": (418, "application/json", b'{"detail":{"why":"teapot"}}'),
            "fail": (500, "text/plain; charset=utf-8", b"Internal Server Error"),
        }
        for kind, (status, media, content) in cases.items():
            r = call(app, "GET", f"/{kind}")
            self.assertEqual(
                (r.status_code, dict(r.headers)["content-type"], r.body),
                (status, media, content),
                kind,
            )
        self.assertIn(("x-tea", "1"), call(app, "GET", "/raise").headers)
        r = call(app, "GET", "/stream")
        self.assertIsInstance(r, StreamingResponse)
        self.assertEqual(list(r.iterator), ["a", b"b"])

    def test_async_handlers_are_awaited(self):
        app = App()

        @app.get("/")
        async def root(n: int = 1):
            return {"n": n}

        @app.get("/gen")
        async def gen():
            yield "x"

        r = asyncio.run(app.handle_async(Request("GET", "/?n=3")))
        self.assertEqual(body(r), {"n": 3})
        r = asyncio.run(app.handle_async(Request("GET", "/gen")))
        self.assertTrue(r.streaming)


class Style(unittest.TestCase):
    def test_the_style_is_all_def_or_all_async_def(self):
        app = App()

        @app.get("/a")
        def a():
            return ""

        self.assertEqual(app.style(), "sync")

        @app.get("/b")
        async def b():
            return ""

        with self.assertRaises(ValueError) as e:
            app.style()
        self.assertIn("mixes `def` handlers (a) with `async def` handlers (b)", str(e.exception))
        with self.assertRaises(ValueError):
            App().style()

    def test_routes_that_cannot_work_are_refused_when_declared(self):
        app = App()
        with self.assertRaises(ValueError):
            app.get("no-slash")(lambda: "")
        with self.assertRaises(ValueError):
            app.get("/{a:path}/b")(lambda a: "")

        def wants_set(s: set[int]):
            return ""

        with self.assertRaises(ValueError):
            app.get("/s/{s}")(wants_set)

        def two_bodies(a: dict, b: dict):
            return ""

        with self.assertRaises(ValueError):
            app.post("/t")(two_bodies)


class EmptyBodyTest(unittest.TestCase):
    """When an empty request body may skip its trailers read (an async app's cost)."""

    def test_an_empty_body_is_whole_only_where_the_framing_says_so(self):
        for method in ("GET", "HEAD", "DELETE", "OPTIONS"):
            self.assertTrue(empty_body_is_whole(method, []), method)
        # A method that carries content, with no length: maybe an upload cut short.
        for method in ("POST", "PUT", "PATCH", "PROPFIND"):
            self.assertFalse(empty_body_is_whole(method, []), method)
        self.assertTrue(empty_body_is_whole("POST", [("Content-Length", "0")]))
        for framing in (
            [("content-length", "5")],
            [("content-length", "00")],
            [("content-length", "0"), ("content-length", "0")],
            [("transfer-encoding", "chunked")],
            [("content-length", "0"), ("Transfer-Encoding", "chunked")],
        ):
            self.assertFalse(empty_body_is_whole("GET", framing), framing)
            self.assertFalse(empty_body_is_whole("PUT", framing), framing)


if __name__ == "__main__":
    unittest.main()

"""The application object: routes by method and path pattern, handler parameters
filled from the path, the query and the JSON body by their annotations, and return
values turned into responses. Pure Python: nothing here touches the component's
imports, so it runs (and is tested) under any CPython, and the build imports it to
learn the app's style.

Every module the SDK needs is imported at the top: a component is snapshotted after
its modules load, and at run time it has no files to import more from.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import json
import logging
import types
import typing
from http import HTTPStatus
from typing import Any, Callable, Iterable
from urllib.parse import parse_qsl, unquote

log = logging.getLogger("wasmloop")

_MISSING = object()


class Headers:
    """Case-insensitive, multi-valued headers, kept in order."""

    def __init__(self, items: Iterable[tuple[str, str]] = ()):
        self._items = [(k.lower(), v) for k, v in items]

    def get(self, name: str, default: str | None = None) -> str | None:
        name = name.lower()
        for k, v in self._items:
            if k == name:
                return v
        return default

    def get_all(self, name: str) -> list[str]:
        name = name.lower()
        return [v for k, v in self._items if k == name]

    def items(self) -> list[tuple[str, str]]:
        return list(self._items)

    def __getitem__(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"


class Request:
    """One request, its body read whole (the host bounds its size)."""

    def __init__(
        self,
        method: str,
        path_with_query: str,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        scheme: str = "http",
        authority: str | None = None,
    ):
        self.method = method.upper()
        path, _, query = path_with_query.partition("?")
        self.path = path or "/"
        self.query_string = query
        self.query: dict[str, list[str]] = {}
        for key, value in parse_qsl(query, keep_blank_values=True):
            self.query.setdefault(key, []).append(value)
        self.headers = Headers(headers)
        self.body = body
        self.scheme = scheme
        self.authority = authority
        self.path_params: dict[str, str] = {}

    @property
    def url(self) -> str:
        query = f"?{self.query_string}" if self.query_string else ""
        return f"{self.scheme}://{self.authority or ''}{self.path}{query}"

    @property
    def client(self) -> str | None:
        """The client's address as the host resolved it (proxies included)."""
        return self.headers.get("x-real-ip")

    @property
    def request_id(self) -> str | None:
        return self.headers.get("x-request-id")

    def text(self) -> str:
        try:
            return self.body.decode("utf-8")
        except UnicodeDecodeError:
            raise HTTPException(400, "the request body is not UTF-8 text") from None

    def json(self) -> Any:
        media = (self.headers.get("content-type") or "").split(";")[0].strip().lower()
        if media != "application/json" and not media.endswith("+json"):
            raise HTTPException(
                415, "expected a JSON body (content-type: application/json)"
            )
        try:
            return json.loads(self.body)
        except (ValueError, UnicodeDecodeError) as e:
            raise RequestValidationError(
                [_problem(("body",), f"JSON decode error: {e}", "json_invalid")]
            ) from None


class HTTPException(Exception):
    """Raise to answer with `status_code` and `{"detail": detail}` as JSON."""

    def __init__(
        self,
        status_code: int,
        detail: Any = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(status_code, detail)
        self.status_code = status_code
        self.detail = detail if detail is not None else _reason(status_code)
        self.headers = headers or {}


class RequestValidationError(Exception):
    """A parameter or body that does not fit its annotation: answered 422."""

    def __init__(self, errors: list[dict[str, Any]]):
        super().__init__(errors)
        self.errors = errors


def _problem(loc: tuple[str, ...], msg: str, kind: str, value: Any = _MISSING):
    problem: dict[str, Any] = {"type": kind, "loc": list(loc), "msg": msg}
    if value is not _MISSING:
        problem["input"] = value
    return problem


class Response:
    """A response: a status, headers and a body (`bytes`, or `str` sent as UTF-8)."""

    media_type: str | None = None

    def __init__(
        self,
        content: bytes | str | None = None,
        status_code: int = 200,
        headers: dict[str, str] | Iterable[tuple[str, str]] | None = None,
        media_type: str | None = None,
    ):
        self.status_code = status_code
        self.body = self.render(content)
        items = headers.items() if isinstance(headers, dict) else (headers or ())
        self.headers: list[tuple[str, str]] = [(k.lower(), str(v)) for k, v in items]
        media_type = media_type or self.media_type
        if media_type and not any(k == "content-type" for k, _ in self.headers):
            if media_type.startswith("text/") and "charset" not in media_type:
                media_type += "; charset=utf-8"
            self.headers.append(("content-type", media_type))

    def render(self, content: Any) -> bytes:
        if content is None:
            return b""
        if isinstance(content, bytes):
            return content
        if isinstance(content, str):
            return content.encode("utf-8")
        raise TypeError(f"a Response body must be bytes or str, not {type(content).__name__}")

    def chunks(self) -> Iterable[bytes]:
        """The body, as the host receives it."""
        return [self.body] if self.body else []

    @property
    def streaming(self) -> bool:
        return False


class PlainTextResponse(Response):
    media_type = "text/plain"


class HTMLResponse(Response):
    media_type = "text/html"


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return json.dumps(
            jsonable(content), ensure_ascii=False, separators=(",", ":")
        ).encode("utf-8")


class StreamingResponse(Response):
    """A body sent as it is produced, from a generator (in a `def` app) or an async
    generator (in an `async def` app) of `str` or `bytes` chunks."""

    media_type = "text/plain"

    def __init__(
        self,
        content: Any,
        status_code: int = 200,
        headers: dict[str, str] | Iterable[tuple[str, str]] | None = None,
        media_type: str | None = None,
    ):
        super().__init__(None, status_code, headers, media_type)
        self.iterator = content

    @property
    def streaming(self) -> bool:
        return True


# Methods whose request body has no defined meaning: without a length, they carry none.
_BODILESS = frozenset({"GET", "HEAD", "DELETE", "OPTIONS", "TRACE"})


def empty_body_is_whole(method: str, headers: list[tuple[str, str]]) -> bool:
    """Whether a body that ended with no bytes is whole without asking its trailers
    future (where a failed body says so): `Content-Length: 0`, or no length and no
    `Transfer-Encoding` on a method whose body means nothing. That read costs a turn
    through the host's event loop; any other request still waits for the verdict."""
    lengths = [v for k, v in headers if k.lower() == "content-length"]
    if any(k.lower() == "transfer-encoding" for k, _ in headers):
        return False
    if lengths:
        return lengths == ["0"]
    return method in _BODILESS


def chunk_bytes(chunk: Any) -> bytes:
    """One streamed chunk as bytes."""
    if isinstance(chunk, bytes):
        return chunk
    if isinstance(chunk, str):
        return chunk.encode("utf-8")
    raise TypeError(f"a streamed chunk must be bytes or str, not {type(chunk).__name__}")


def jsonable(value: Any) -> Any:
    """Dataclasses as dicts, tuples and sets as lists, the rest as json knows it."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return jsonable(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    return value


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def to_response(value: Any, status_code: int = 200) -> Response:
    """A handler's return value as a response: a `Response` as it is; `str` as text;
    `bytes` as octets; a generator or async generator streamed; anything else
    (dict, list, dataclass, number, None) as JSON."""
    if isinstance(value, Response):
        return value
    if isinstance(value, str):
        return PlainTextResponse(value, status_code)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return Response(bytes(value), status_code, media_type="application/octet-stream")
    if inspect.isgenerator(value) or inspect.isasyncgen(value):
        return StreamingResponse(value, status_code)
    return JSONResponse(value, status_code)


def error_response(exc: BaseException) -> Response:
    """What a client sees for an exception a handler (or its parameters) raised."""
    if isinstance(exc, HTTPException):
        return JSONResponse({"detail": exc.detail}, exc.status_code, exc.headers)
    if isinstance(exc, RequestValidationError):
        return JSONResponse({"detail": exc.errors}, 422)
    log.error("the handler raised", exc_info=exc)
    return PlainTextResponse("Internal Server Error", 500)


# -- parameters ------------------------------------------------------------------

_TRUE = {"1", "true", "on", "yes"}
_FALSE = {"0", "false", "off", "no"}


def _optional(annotation: Any) -> tuple[Any, bool]:
    """`X | None` / `Optional[X]` -> (X, True)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(annotation)) == 2:
            return args[0], True
    return annotation, False


def _convert(raw: str, annotation: Any) -> Any:
    """A path or query string as `annotation`; ValueError with a message if not."""
    if annotation in (inspect.Parameter.empty, str, Any):
        return raw
    if annotation is bool:
        lowered = raw.lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ValueError("Input should be a valid boolean")
    if annotation is int:
        try:
            return int(raw)
        except ValueError:
            raise ValueError("Input should be a valid integer") from None
    if annotation is float:
        try:
            return float(raw)
        except ValueError:
            raise ValueError("Input should be a valid number") from None
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        for member in annotation:
            if str(member.value) == raw:
                return member
        allowed = ", ".join(repr(str(m.value)) for m in annotation)
        raise ValueError(f"Input should be {allowed}")
    if typing.get_origin(annotation) is typing.Literal:
        for choice in typing.get_args(annotation):
            if str(choice) == raw:
                return choice
        raise ValueError(f"Input should be one of {list(typing.get_args(annotation))}")
    raise TypeError(f"a parameter annotated {annotation!r} cannot come from a URL")


def _from_json(value: Any, annotation: Any, loc: tuple[str, ...]) -> Any:
    """A decoded JSON body as `annotation`: a dataclass (fields checked), dict, list,
    or anything."""
    annotation, optional = _optional(annotation)
    if value is None and optional:
        return None
    if dataclasses.is_dataclass(annotation) and isinstance(annotation, type):
        if not isinstance(value, dict):
            raise RequestValidationError(
                [_problem(loc, "Input should be an object", "model_type", value)]
            )
        hints = typing.get_type_hints(annotation)
        kwargs, errors = {}, []
        for field in dataclasses.fields(annotation):
            if field.name in value:
                try:
                    kwargs[field.name] = _from_json(
                        value[field.name], hints.get(field.name, Any), loc + (field.name,)
                    )
                except RequestValidationError as e:
                    errors.extend(e.errors)
            elif (
                field.default is dataclasses.MISSING
                and field.default_factory is dataclasses.MISSING
            ):
                errors.append(_problem(loc + (field.name,), "Field required", "missing"))
        if errors:
            raise RequestValidationError(errors)
        return annotation(**kwargs)
    origin = typing.get_origin(annotation) or annotation
    checks = {
        dict: (dict, "an object"),
        list: (list, "a list"),
        str: (str, "a string"),
        bool: (bool, "a boolean"),
        float: ((int, float), "a number"),
        int: (int, "an integer"),
    }
    if origin in checks:
        kind, name = checks[origin]
        bad = not isinstance(value, kind) or (
            origin in (int, float) and isinstance(value, bool)
        )
        if bad:
            raise RequestValidationError(
                [_problem(loc, f"Input should be {name}", "type_error", value)]
            )
        if origin is float:
            return float(value)
        if origin is list and typing.get_args(annotation):
            (item,) = typing.get_args(annotation)[:1]
            return [_from_json(v, item, loc + (str(i),)) for i, v in enumerate(value)]
    return value


@dataclasses.dataclass
class _Param:
    name: str
    source: str  # "path", "query", "body", "request"
    annotation: Any
    default: Any
    optional: bool


_SCALARS = (str, int, float, bool)


def _body_type(annotation: Any) -> bool:
    """Dataclasses, dicts and lists of those come from the JSON body; scalars and
    lists of scalars (`tag: list[str]`: `?tag=a&tag=b`) from the URL."""
    inner, _ = _optional(annotation)
    if dataclasses.is_dataclass(inner) and isinstance(inner, type):
        return True
    origin = typing.get_origin(inner) or inner
    if origin is dict:
        return True
    if origin is list:
        args = typing.get_args(inner)
        return not (args and args[0] in _SCALARS)
    return False


@dataclasses.dataclass
class Route:
    methods: tuple[str, ...]
    pattern: str
    endpoint: Callable[..., Any]
    status_code: int
    segments: list[tuple[str, str]]  # ("lit", text) | ("param", name) | ("path", name)
    params: list[_Param]

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.endpoint) or inspect.isasyncgenfunction(
            self.endpoint
        )

    def match(self, path: str) -> dict[str, str] | None:
        parts = path.strip("/").split("/") if path.strip("/") else []
        out: dict[str, str] = {}
        for i, (kind, text) in enumerate(self.segments):
            if kind == "path":
                out[text] = unquote("/".join(parts[i:]))
                return out
            if i >= len(parts):
                return None
            if kind == "lit":
                if unquote(parts[i]) != text:
                    return None
            else:
                if parts[i] == "":
                    return None
                out[text] = unquote(parts[i])
        return out if len(parts) == len(self.segments) else None


def _compile(pattern: str) -> list[tuple[str, str]]:
    if not pattern.startswith("/"):
        raise ValueError(f"route {pattern!r}: a path starts with /")
    segments = []
    parts = pattern.strip("/").split("/") if pattern.strip("/") else []
    for i, part in enumerate(parts):
        if part.startswith("{") and part.endswith("}"):
            name, _, kind = part[1:-1].partition(":")
            if not name.isidentifier():
                raise ValueError(f"route {pattern!r}: {{{name}}} is not a parameter name")
            if kind == "path":
                if i != len(parts) - 1:
                    raise ValueError(f"route {pattern!r}: {{{name}:path}} must come last")
                segments.append(("path", name))
            elif kind:
                raise ValueError(f"route {pattern!r}: unknown converter {kind!r}")
            else:
                segments.append(("param", name))
        else:
            segments.append(("lit", part))
    return segments


class App:
    """A set of routes, used like FastAPI's:

        app = App()

        @app.get("/items/{item_id}")
        async def read_item(item_id: int, q: str | None = None):
            return {"item_id": item_id, "q": q}
    """

    def __init__(self) -> None:
        self.routes: list[Route] = []

    def route(
        self, path: str, methods: Iterable[str] = ("GET",), status_code: int = 200
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def register(endpoint: Callable[..., Any]) -> Callable[..., Any]:
            segments = _compile(path)
            names = {text for kind, text in segments if kind != "lit"}
            self.routes.append(
                Route(
                    tuple(m.upper() for m in methods),
                    path,
                    endpoint,
                    status_code,
                    segments,
                    _params(endpoint, names, path),
                )
            )
            return endpoint

        return register

    def get(self, path: str, status_code: int = 200):
        return self.route(path, ("GET",), status_code)

    def post(self, path: str, status_code: int = 200):
        return self.route(path, ("POST",), status_code)

    def put(self, path: str, status_code: int = 200):
        return self.route(path, ("PUT",), status_code)

    def patch(self, path: str, status_code: int = 200):
        return self.route(path, ("PATCH",), status_code)

    def delete(self, path: str, status_code: int = 200):
        return self.route(path, ("DELETE",), status_code)

    # -- the style ---------------------------------------------------------------

    def style(self) -> str:
        """`"sync"` when every handler is a `def`, `"async"` when every one is an
        `async def`; a mix (or no route) is a ValueError saying what to do."""
        if not self.routes:
            raise ValueError("the app has no routes: add one with @app.get(...)")
        kinds = {r.is_async for r in self.routes}
        if len(kinds) == 2:
            sync = ", ".join(r.endpoint.__name__ for r in self.routes if not r.is_async)
            async_ = ", ".join(r.endpoint.__name__ for r in self.routes if r.is_async)
            raise ValueError(
                "the app mixes `def` handlers (" + sync + ") with `async def` handlers ("
                + async_ + "). A wasmloop component is one or the other: `def` handlers "
                "run on the host's thread pool under a fuel limit, `async def` ones on "
                "its event loop, preempted when they compute. Make them all `async def` "
                "(a `def` body works unchanged inside an `async def`), or split the app "
                "in two and deploy each under its own route."
            )
        return "async" if kinds == {True} else "sync"

    # -- dispatch ----------------------------------------------------------------

    def resolve(self, request: Request) -> tuple[Route, dict[str, Any]]:
        """The route for `request` and its arguments; HTTPException 404/405 or
        RequestValidationError 422 when there is none or they do not fit."""
        method = "GET" if request.method == "HEAD" else request.method
        allowed: list[str] = []
        for route in self.routes:
            params = route.match(request.path)
            if params is None:
                continue
            if method not in route.methods:
                allowed.extend(m for m in route.methods if m not in allowed)
                continue
            request.path_params = params
            return route, _arguments(route, request)
        if allowed:
            if "GET" in allowed and "HEAD" not in allowed:
                allowed.append("HEAD")
            raise HTTPException(405, "Method Not Allowed", {"allow": ", ".join(allowed)})
        raise HTTPException(404, "Not Found")

    def handle_sync(self, request: Request) -> Response:
        """Runs a `def` app's handler for `request`."""
        try:
            route, kwargs = self.resolve(request)
            return to_response(route.endpoint(**kwargs), route.status_code)
        except Exception as e:  # noqa: BLE001 - every failure becomes a response
            return error_response(e)

    async def handle_async(self, request: Request) -> Response:
        """Runs an `async def` app's handler for `request`."""
        try:
            route, kwargs = self.resolve(request)
            if inspect.isasyncgenfunction(route.endpoint):
                return to_response(route.endpoint(**kwargs), route.status_code)
            return to_response(await route.endpoint(**kwargs), route.status_code)
        except Exception as e:  # noqa: BLE001 - every failure becomes a response
            return error_response(e)


def _params(endpoint: Callable[..., Any], path_names: set[str], pattern: str) -> list[_Param]:
    try:
        hints = typing.get_type_hints(endpoint)
    except Exception:  # noqa: BLE001 - unresolvable hints: fall back to the raw ones
        hints = {}
    params = []
    bodies = 0
    for p in inspect.signature(endpoint).parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise ValueError(f"{endpoint.__name__}: *args and **kwargs are not parameters")
        annotation = hints.get(p.name, p.annotation)
        inner, optional = _optional(annotation)
        default = p.default if p.default is not inspect.Parameter.empty else _MISSING
        if inner is Request:
            source = "request"
        elif p.name in path_names:
            source = "path"
        elif _body_type(annotation):
            source = "body"
            bodies += 1
        else:
            source = "query"
        if source in ("path", "query"):
            # Fail at import (so at build), not on the first request.
            scalar = typing.get_origin(inner) is list and typing.get_args(inner)
            _check_convertible(typing.get_args(inner)[0] if scalar else inner, endpoint)
        params.append(_Param(p.name, source, inner, default, optional))
    missing = path_names - {p.name for p in params if p.source == "path"}
    if missing:
        raise ValueError(
            f"route {pattern!r}: {endpoint.__name__} has no parameter for "
            + ", ".join(sorted(missing))
        )
    if bodies > 1:
        raise ValueError(f"{endpoint.__name__}: at most one parameter takes the JSON body")
    return params


def _check_convertible(annotation: Any, endpoint: Callable[..., Any]) -> None:
    try:
        _convert("0", annotation)
    except ValueError:
        pass
    except TypeError as e:
        raise ValueError(f"{endpoint.__name__}: {e}") from None


def _arguments(route: Route, request: Request) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    errors: list[dict[str, Any]] = []
    for p in route.params:
        if p.source == "request":
            kwargs[p.name] = request
            continue
        if p.source == "body":
            if not request.body:
                if p.default is not _MISSING or p.optional:
                    kwargs[p.name] = None if p.default is _MISSING else p.default
                else:
                    errors.append(_problem(("body",), "Field required", "missing"))
                continue
            try:
                kwargs[p.name] = _from_json(request.json(), p.annotation, ("body",))
            except RequestValidationError as e:
                errors.extend(e.errors)
            continue
        if p.source == "path":
            raw: list[str] = [request.path_params[p.name]]
        else:
            raw = request.query.get(p.name, [])
        many = typing.get_origin(p.annotation) is list
        if not raw:
            if p.default is not _MISSING:
                kwargs[p.name] = p.default
            elif p.optional:
                kwargs[p.name] = None
            elif many:
                kwargs[p.name] = []
            else:
                errors.append(_problem((p.source, p.name), "Field required", "missing"))
            continue
        item = typing.get_args(p.annotation)[0] if many else p.annotation
        try:
            values = [_convert(v, item) for v in (raw if many else raw[-1:])]
        except ValueError as e:
            errors.append(_problem((p.source, p.name), str(e), "parsing", raw[-1]))
            continue
        kwargs[p.name] = values if many else values[0]
    if errors:
        raise RequestValidationError(errors)
    return kwargs

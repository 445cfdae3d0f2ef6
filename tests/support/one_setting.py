"""Helpers for the "one service, one setting" suites (tests/test_one_setting*.py).

What is here:

- :class:`SharedTracing`: one SDK provider and one in-memory exporter for every service in
  the process (upstream apps, their clients, the downstream), spans looked up by trace id;
- :func:`incoming`: a fresh W3C / b3 / b3multi parent to send in, and :func:`outgoing_ids` /
  :func:`trace_header_names` to read what a hop received;
- :class:`Downstream`: a real uvicorn server that records the headers of every request it
  gets, itself traced by tracewire with the propagators named in the URL
  (``/<tracecontext+b3multi>/hop?case=...``), so its SERVER span shows whether the trace
  held together;
- :class:`Clients`: the outgoing clients a service uses (httpx sync and async transports,
  a requests session, the two global switches), built without settings unless told;
- app builders (Starlette, FastAPI, Flask, raw WSGI) answering ``GET /call`` (make one
  outgoing call), ``GET /inject`` (``opentelemetry.propagate.inject`` into a dict),
  ``GET /extract`` (``opentelemetry.propagate.extract`` from the query parameters) and
  ``GET /health``; :func:`build_app` mounts tracewire on them the way each framework's users
  choose settings, and :func:`serve` runs any of them under a real server.

Every wait has a deadline (``wait_for``); servers bind to 127.0.0.1 on free ports.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
import requests
from opentelemetry import propagate, trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.config import Config
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

import tracewire.defaults
import tracewire.httpx
import tracewire.requests
from tests.support.servers import HOST, ServerThread, UvicornThread, WerkzeugThread, wait_for
from tracewire import Settings, TracewireMiddleware, TracewireWSGIMiddleware
from tracewire.flask import Tracewire
from tracewire.starlette import settings_from_config

__all__ = [
    "CLIENTS",
    "FORMATS",
    "MODES",
    "TRACE_HEADERS",
    "Clients",
    "Downstream",
    "Incoming",
    "Service",
    "SharedTracing",
    "Trace",
    "assert_hop",
    "assert_root_hop",
    "build_app",
    "call_outside",
    "call_through",
    "clean_globals",
    "fastapi_app",
    "flask_app",
    "global_switch",
    "incoming",
    "new_fastapi",
    "outgoing_ids",
    "record_client_hook",
    "serve",
    "starlette_app",
    "trace_header_names",
    "wsgi_app",
]

TIMEOUT = 10.0
BARRIER_TIMEOUT = 20.0

# Every request header any propagator tracewire knows may write.
TRACE_HEADERS = frozenset(
    {
        "traceparent",
        "tracestate",
        "baggage",
        "b3",
        "x-b3-traceid",
        "x-b3-spanid",
        "x-b3-sampled",
        "x-b3-flags",
        "x-b3-parentspanid",
    }
)
# What each format writes for a sampled context without baggage.
WRITES = {
    "tracecontext": frozenset({"traceparent"}),
    "b3": frozenset({"b3"}),
    "b3multi": frozenset({"x-b3-traceid", "x-b3-spanid", "x-b3-sampled"}),
    "baggage": frozenset(),  # only when the context holds baggage
}

FORMATS = ("tracecontext", "b3", "b3multi")
CLIENTS = ("httpx", "httpx_async", "requests", "httpx_global", "requests_global")

Headers = dict[str, list[str]]


# ------------------------------------------------------------------------- global state
@contextlib.contextmanager
def clean_globals(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """An environment without ``TRACEWIRE_*`` / ``OTEL_PROPAGATORS``, no process default,
    and afterwards OpenTelemetry's global textmap as it was and both global switches off,
    whatever the test did (each suite wraps every test in this with an autouse fixture)."""
    for name in list(os.environ):
        if name.startswith("TRACEWIRE_") or name == "OTEL_PROPAGATORS":
            monkeypatch.delenv(name)
    previous = propagate.get_global_textmap()
    tracewire.defaults.reset()
    try:
        yield
    finally:
        tracewire.defaults.reset()
        propagate.set_global_textmap(previous)
        tracewire.httpx.uninstrument()
        tracewire.requests.uninstrument()


# ----------------------------------------------------------------------------- tracing
class SharedTracing:
    """One provider and one in-memory exporter for every service of a test module."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))

    def spans(self, trace_id: int) -> list[ReadableSpan]:
        return [
            s
            for s in self.exporter.get_finished_spans()
            if s.context is not None and s.context.trace_id == trace_id
        ]

    def wait_spans(self, trace_id: int, count: int, timeout: float = TIMEOUT) -> list[ReadableSpan]:
        """The spans of ``trace_id`` once at least ``count`` have ended (deadline: timeout)."""
        wait_for(lambda: len(self.spans(trace_id)) >= count, timeout=timeout)
        return self.spans(trace_id)

    def shutdown(self) -> None:
        self.provider.shutdown()

    def __enter__(self) -> SharedTracing:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


@dataclass(frozen=True)
class Trace:
    """The three spans of one hop: upstream SERVER, its CLIENT, the downstream SERVER."""

    upstream: ReadableSpan
    client: ReadableSpan
    downstream: ReadableSpan

    @classmethod
    def of(cls, spans: Sequence[ReadableSpan], incoming_span_id: int | None) -> Trace:
        servers = [s for s in spans if s.kind is SpanKind.SERVER]
        clients = [s for s in spans if s.kind is SpanKind.CLIENT]
        assert len(servers) == 2 and len(clients) == 1, [(s.name, s.kind) for s in spans]
        client = clients[0]
        assert client.parent is not None
        upstream = [s for s in servers if s.context.span_id == client.parent.span_id]
        assert len(upstream) == 1, "the CLIENT span's parent is not a SERVER span of this trace"
        downstream = [s for s in servers if s is not upstream[0]]
        if incoming_span_id is not None:
            assert upstream[0].parent is not None
            assert upstream[0].parent.span_id == incoming_span_id
            assert upstream[0].parent.is_remote
        return cls(upstream[0], client, downstream[0])

    def assert_chain(self) -> None:
        """The downstream SERVER span is the CLIENT span's child, in the same trace."""
        client, downstream = self.client, self.downstream
        assert downstream.parent is not None, "downstream started a new trace"
        assert downstream.context.trace_id == client.context.trace_id
        assert downstream.parent.span_id == client.context.span_id
        assert downstream.parent.is_remote


def assert_hop(
    tracing: SharedTracing, sent: Incoming, got: Headers, propagators: Sequence[str]
) -> Trace:
    """A call made while serving ``sent``: exactly ``propagators``' headers went out, carrying
    the CLIENT span's id, and the chain incoming > SERVER > CLIENT > downstream SERVER holds."""
    assert trace_header_names(got) == expected_names(propagators), (
        f"sent {sorted(trace_header_names(got))}, expected {list(propagators)}"
    )
    hop = Trace.of(tracing.wait_spans(sent.trace_id, 3), sent.span_id)
    for name in propagators:
        if name in FORMATS:
            assert outgoing_ids(got, name) == (sent.trace_id, hop.client.context.span_id), name
    hop.assert_chain()
    return hop


def assert_root_hop(tracing: SharedTracing, got: Headers, propagators: Sequence[str]) -> None:
    """A call made outside any request: exactly ``propagators``' headers, from a root CLIENT
    span, and the downstream SERVER span is its child."""
    assert trace_header_names(got) == expected_names(propagators), (
        f"sent {sorted(trace_header_names(got))}, expected {list(propagators)}"
    )
    formats = [name for name in propagators if name in FORMATS]
    trace_id, span_id = outgoing_ids(got, formats[0])
    for name in formats[1:]:
        assert outgoing_ids(got, name) == (trace_id, span_id)
    spans = tracing.wait_spans(trace_id, 2)
    (client,) = [s for s in spans if s.kind is SpanKind.CLIENT]
    assert client.context.span_id == span_id and client.parent is None
    (server,) = [s for s in spans if s.kind is SpanKind.SERVER]
    assert server.parent is not None and server.parent.span_id == span_id


# ------------------------------------------------------------------------------ headers
@dataclass(frozen=True)
class Incoming:
    """A sampled parent sent to the upstream service in one format."""

    fmt: str
    trace_id: int
    span_id: int
    headers: dict[str, str]


def incoming(fmt: str, *, baggage: str | None = None) -> Incoming:
    trace_id = random.getrandbits(128) | 1
    span_id = random.getrandbits(64) | 1
    tid, sid = f"{trace_id:032x}", f"{span_id:016x}"
    if fmt == "tracecontext":
        headers = {"traceparent": f"00-{tid}-{sid}-01"}
    elif fmt == "b3":
        headers = {"b3": f"{tid}-{sid}-1"}
    elif fmt == "b3multi":
        headers = {"X-B3-TraceId": tid, "X-B3-SpanId": sid, "X-B3-Sampled": "1"}
    else:
        raise ValueError(fmt)
    if baggage is not None:
        headers["baggage"] = baggage
    return Incoming(fmt, trace_id, span_id, headers)


def trace_header_names(headers: Mapping[str, Any]) -> frozenset[str]:
    """The trace-propagation headers among ``headers`` (names lowercased)."""
    return frozenset(name.lower() for name in headers) & TRACE_HEADERS


def expected_names(propagators: Iterable[str], *, baggage: bool = False) -> frozenset[str]:
    names: set[str] = set()
    for name in propagators:
        names |= WRITES[name]
        if name == "baggage" and baggage:
            names.add("baggage")
    return frozenset(names)


def _one(headers: Headers, name: str) -> str:
    values = headers.get(name, [])
    assert len(values) == 1, f"{name}: {len(values)} values"
    return values[0]


def outgoing_ids(headers: Headers, fmt: str) -> tuple[int, int]:
    """``(trace id, parent span id)`` that ``fmt``'s headers in ``headers`` carry."""
    if fmt == "tracecontext":
        version, tid, sid, _flags = _one(headers, "traceparent").split("-")
        assert version == "00"
    elif fmt == "b3":
        tid, sid, *_rest = _one(headers, "b3").split("-")
    elif fmt == "b3multi":
        tid, sid = _one(headers, "x-b3-traceid"), _one(headers, "x-b3-spanid")
    else:
        raise ValueError(fmt)
    return int(tid, 16), int(sid, 16)


# --------------------------------------------------------------------------- downstream
class Downstream:
    """A real ASGI server (uvicorn) that records the headers each request brought.

    ``url(propagators, case)`` is served by a ``TracewireMiddleware`` with exactly those
    propagators (explicit settings, so nothing a test configures changes it).
    """

    def __init__(self, provider: TracerProvider, host: str = HOST) -> None:
        self.provider = provider
        self.lock = threading.Lock()
        self.records: dict[str, Headers] = {}
        self.apps: dict[str, Any] = {}
        self.server = UvicornThread(self, host=host)

    def __enter__(self) -> Downstream:
        self.server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop()

    @property
    def authority(self) -> str:
        return f"{self.server.host}:{self.server.port}"

    def url(self, propagators: Sequence[str], case: str | None = None) -> str:
        key = "+".join(propagators)
        with self.lock:
            if key not in self.apps:
                self.apps[key] = TracewireMiddleware(
                    self._record,
                    settings=Settings(propagators=list(propagators)),
                    tracer_provider=self.provider,
                )
        return f"{self.server.url}/{key}/hop?case={case or new_case()}"

    def got(self, case: str, timeout: float = TIMEOUT) -> Headers:
        """The headers request ``case`` arrived with (waits for it, with a deadline)."""
        wait_for(lambda: case in self.records, timeout=timeout)
        with self.lock:
            return self.records[case]

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        with self.lock:
            app = self.apps.get(scope["path"].split("/")[1])
        if app is None:
            await PlainTextResponse("no such downstream", status_code=404)(scope, receive, send)
            return
        await app(scope, receive, send)

    async def _record(self, scope: Any, receive: Any, send: Any) -> None:
        case = parse_qs(scope["query_string"].decode("latin-1")).get("case", [""])[0]
        headers: Headers = {}
        for raw_name, raw_value in scope["headers"]:
            name = raw_name.decode("latin-1").lower()
            headers.setdefault(name, []).append(raw_value.decode("latin-1"))
        with self.lock:
            self.records[case] = headers
        await PlainTextResponse("ok")(scope, receive, send)


def new_case() -> str:
    return uuid.uuid4().hex


# ------------------------------------------------------------------------------ clients
class Clients:
    """The outgoing clients one service uses; built with the service.

    ``settings=None`` (the default) builds every hook without settings, the way the issue's
    users wrote them. ``httpx_global`` / ``requests_global`` make a fresh client inside the
    request, so they are traced only while :func:`global_switch` is on.
    """

    def __init__(self, provider: TracerProvider, settings: Settings | None = None) -> None:
        self.provider = provider
        self.settings = settings
        self.httpx = httpx.Client(
            transport=tracewire.httpx.TracewireTransport(
                settings=settings, tracer_provider=provider
            ),
            timeout=TIMEOUT,
        )
        self.session = tracewire.requests.instrument_session(
            requests.Session(), settings, tracer_provider=provider
        )

    def close(self) -> None:
        self.httpx.close()
        self.session.close()

    def call(self, kind: str, url: str) -> int:
        """One GET to ``url`` with the client ``kind``, from synchronous code."""
        if kind == "httpx":
            return self.httpx.get(url).status_code
        if kind == "requests":
            return self.session.get(url, timeout=TIMEOUT).status_code
        if kind == "httpx_async":
            return asyncio.run(self.acall(kind, url))
        if kind == "httpx_global":
            with httpx.Client(timeout=TIMEOUT) as client:
                return client.get(url).status_code
        if kind == "requests_global":
            return requests.get(url, timeout=TIMEOUT).status_code
        raise ValueError(kind)

    async def acall(self, kind: str, url: str) -> int:
        """The same from async code; the synchronous clients run in Starlette's threadpool."""
        if kind == "httpx_async":
            transport = tracewire.httpx.AsyncTracewireTransport(
                settings=self.settings, tracer_provider=self.provider
            )
            async with httpx.AsyncClient(transport=transport, timeout=TIMEOUT) as client:
                return (await client.get(url)).status_code
        if kind == "httpx_global":  # the switch covers AsyncClient too
            async with httpx.AsyncClient(timeout=TIMEOUT) as client:
                return (await client.get(url)).status_code
        return await run_in_threadpool(self.call, kind, url)


@contextlib.contextmanager
def global_switch(
    kind: str, provider: TracerProvider, settings: Settings | None = None
) -> Iterator[None]:
    """Turn on the global switch ``kind`` needs (none for per-client kinds); always off after."""
    if kind == "httpx_global":
        tracewire.httpx.instrument(settings, tracer_provider=provider)
        try:
            yield
        finally:
            tracewire.httpx.uninstrument()
    elif kind == "requests_global":
        tracewire.requests.instrument(settings, tracer_provider=provider)
        try:
            yield
        finally:
            tracewire.requests.uninstrument()
    else:
        yield


def call_through(
    url: str,
    kind: str,
    sent: Incoming | None,
    downstream: Downstream,
    propagators: Sequence[str],
    provider: TracerProvider,
    switch_settings: Settings | None = None,
) -> tuple[Headers, dict[str, Any]]:
    """Ask the app at ``url`` to call the downstream (served with ``propagators``) with client
    ``kind`` while serving a request that carries ``sent``; the headers the downstream got and
    the app's answer. The driver is made before any switch is on, so it stays untraced."""
    case = new_case()
    target = downstream.url(propagators, case)
    with (
        httpx.Client(timeout=TIMEOUT) as driver,
        global_switch(kind, provider, switch_settings),
    ):
        r = driver.get(
            f"{url}/call",
            params={"kind": kind, "target": target},
            headers=sent.headers if sent is not None else {},
        )
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    assert body["status"] == 200
    return downstream.got(case), body


def call_outside(
    clients: Clients,
    kind: str,
    downstream: Downstream,
    propagators: Sequence[str],
    switch_settings: Settings | None = None,
) -> Headers:
    """One call with client ``kind`` from the test itself, outside any request."""
    case = new_case()
    with global_switch(kind, clients.provider, switch_settings):
        assert clients.call(kind, downstream.url(propagators, case)) == 200
    return downstream.got(case)


# Calls of the client request hook named in Flask config as a string (see the tests).
HOOK_CALLS: list[tuple[str, str]] = []
_hook_lock = threading.Lock()


def record_client_hook(span: Any, request: Any) -> None:
    """A ``client_request_hook`` importable as ``tests.support.one_setting:record_client_hook``."""
    url = getattr(request, "url", "")
    with _hook_lock:
        HOOK_CALLS.append((span.name, str(url)))
    span.set_attribute("test.hook", "flask-config")


# --------------------------------------------------------------------------------- apps
@dataclass
class Service:
    """What an app's handlers use: its clients, and an optional barrier that ``sync=1``
    requests wait at before calling out (to keep concurrent requests overlapping)."""

    clients: Clients
    barrier: threading.Barrier | None = None

    def wait(self, args: Mapping[str, str]) -> None:
        if args.get("sync") == "1" and self.barrier is not None:
            self.barrier.wait(BARRIER_TIMEOUT)


def seen() -> dict[str, Any]:
    """The span current in the app's code."""
    sc = trace.get_current_span().get_span_context()
    return {"trace_id": f"{sc.trace_id:032x}", "span_id": f"{sc.span_id:016x}"}


def injected() -> dict[str, Any]:
    """What ``opentelemetry.propagate.inject`` writes in the app's code."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return {"carrier": carrier, **seen()}


def extracted(carrier: Mapping[str, str]) -> dict[str, Any]:
    """What ``opentelemetry.propagate.extract`` finds in ``carrier`` in the app's code."""
    sc = trace.get_current_span(propagate.extract(dict(carrier))).get_span_context()
    return {"valid": sc.is_valid, "trace_id": f"{sc.trace_id:032x}"}


def _asgi_routes(service: Service) -> list[tuple[str, Callable[..., Any]]]:
    async def call(request: Request) -> Response:
        args = dict(request.query_params)
        if args.get("sync") == "1":
            await run_in_threadpool(service.wait, args)
        status = await service.clients.acall(args["kind"], args["target"])
        return JSONResponse({"status": status, **seen()})

    async def inject(request: Request) -> Response:
        return JSONResponse(injected())

    async def extract(request: Request) -> Response:
        return JSONResponse(extracted(request.query_params))

    async def health(request: Request) -> Response:
        return PlainTextResponse("ok")

    return [("/call", call), ("/inject", inject), ("/extract", extract), ("/health", health)]


def starlette_app(service: Service) -> Starlette:
    """A Starlette app (no middleware yet: the test mounts tracewire its way)."""
    return Starlette(routes=[Route(path, fn) for path, fn in _asgi_routes(service)])


def new_fastapi() -> Any:
    """``FastAPI(telemetry={"tracing": False})`` where FastAPI has its own tracing, so
    tracewire's is the only SERVER span; a plain ``FastAPI()`` on older versions."""
    from fastapi import FastAPI

    try:
        return FastAPI(telemetry={"tracing": False})
    except TypeError:
        return FastAPI()


def fastapi_app(service: Service) -> Any:
    app = new_fastapi()
    for path, fn in _asgi_routes(service):
        app.get(path)(fn)
    return app


def flask_app(service: Service, name: str = "one_setting") -> Any:
    from flask import Flask, jsonify, request

    app = Flask(name)

    @app.get("/call")
    def call() -> Any:
        args = request.args.to_dict()
        service.wait(args)
        status = service.clients.call(args["kind"], args["target"])
        return jsonify(status=status, **seen())

    @app.get("/inject")
    def inject() -> Any:
        return jsonify(injected())

    @app.get("/extract")
    def extract() -> Any:
        return jsonify(extracted(request.args.to_dict()))

    @app.get("/health")
    def health() -> str:
        return "ok"

    return app


def wsgi_app(service: Service) -> Callable[..., Iterable[bytes]]:
    """A raw WSGI callable with the same three routes."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        args = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
        if path == "/call":
            service.wait(args)
            status = service.clients.call(args["kind"], args["target"])
            body: Any = {"status": status, **seen()}
        elif path == "/inject":
            body = injected()
        elif path == "/extract":
            body = extracted(args)
        elif path == "/health":
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"ok"]
        else:
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found"]
        data = json.dumps(body).encode()
        start_response(
            "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
        )
        return [data]

    return app


# How each framework's users choose settings (see build_app).
ASGI_MODES = ("code", "kwargs", "config", "env_tracewire", "env_otel")
MODES = {
    "starlette": ASGI_MODES,
    "fastapi": ASGI_MODES,
    "flask": ("code", "config", "env_tracewire", "env_otel"),
    "wsgi": ("code", "kwargs", "env_tracewire", "env_otel"),
}


def build_app(
    framework: str,
    mode: str,
    propagators: tuple[str, ...],
    service: Service,
    provider: TracerProvider,
    tmp_path: Path,
) -> tuple[Any, bool]:
    """The app with tracewire mounted as a user of ``framework`` would for ``mode``; and
    whether it is WSGI. ``code``: ``Settings``; ``kwargs``: keyword settings; ``config``: the
    framework's config (a Starlette ``Config`` env file in ``tmp_path``, Flask ``app.config``);
    ``env_*``: nothing given (the caller sets the environment first)."""
    text = ",".join(propagators)
    if framework in ("starlette", "fastapi"):
        app = starlette_app(service) if framework == "starlette" else fastapi_app(service)
        if mode == "code":
            settings = Settings(propagators=list(propagators))
            app.add_middleware(TracewireMiddleware, settings=settings, tracer_provider=provider)
        elif mode == "kwargs":
            app.add_middleware(
                TracewireMiddleware, propagators=list(propagators), tracer_provider=provider
            )
        elif mode == "config":
            env_file = tmp_path / ".env"
            env_file.write_text(f"TRACEWIRE_PROPAGATORS={text}\n")
            settings = settings_from_config(Config(env_file))
            app.add_middleware(TracewireMiddleware, settings=settings, tracer_provider=provider)
        else:
            app.add_middleware(TracewireMiddleware, tracer_provider=provider)
        return app, False
    if framework == "flask":
        app = flask_app(service)
        if mode == "code":
            Tracewire(
                app, settings=Settings(propagators=list(propagators)), tracer_provider=provider
            )
        else:
            if mode == "config":
                app.config["TRACEWIRE_PROPAGATORS"] = text
            Tracewire(app, tracer_provider=provider)
        return app, True
    assert framework == "wsgi"
    raw = wsgi_app(service)
    if mode == "code":
        settings = Settings(propagators=list(propagators))
        return TracewireWSGIMiddleware(raw, settings, tracer_provider=provider), True
    if mode == "kwargs":
        return TracewireWSGIMiddleware(
            raw, propagators=list(propagators), tracer_provider=provider
        ), True
    return TracewireWSGIMiddleware(raw, tracer_provider=provider), True


def serve(app: Any, *, wsgi: bool) -> ServerThread:
    """A real server for ``app``: werkzeug (threaded) for WSGI, uvicorn for ASGI. Not started."""
    return WerkzeugThread(app) if wsgi else UvicornThread(app)

"""The app's own faults stay the app's: table-driven over ASGI and WSGI, and every user hook
raising at every call site (server and client).

Each case runs the same app twice, bare and behind tracewire, with a driver that plays the
server by the protocol (ASGI 3 / PEP 3333): what the server receives (status, headers, body)
and what escapes the app (exception type and arguments, cancellation) must be identical.
Behind tracewire, additionally: exactly one SERVER span, ended exactly once (the SDK's
"Calling end() on an ended span" never appears), with the status the case calls for, and the
context current in the server's task/thread afterwards is the one before the call.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import requests
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import tracewire.requests
from tests.support.reliability import new_ids, traceparent
from tests.support.servers import WerkzeugThread, free_port
from tracewire import Settings, TracewireMiddleware, TracewireWSGIMiddleware
from tracewire.httpx import AsyncTracingTransport, TracingTransport


class Ledger(SpanProcessor):
    """Counts starts and ends per span id."""

    def __init__(self) -> None:
        self.started: dict[int, int] = {}
        self.ended: dict[int, int] = {}

    def on_start(self, span: Span, parent_context: Any = None) -> None:
        sid = span.get_span_context().span_id
        self.started[sid] = self.started.get(sid, 0) + 1

    def on_end(self, span: ReadableSpan) -> None:
        sid = span.get_span_context().span_id
        self.ended[sid] = self.ended.get(sid, 0) + 1


class Sink:
    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.ledger = Ledger()
        self.provider = TracerProvider()
        self.provider.add_span_processor(self.ledger)
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))

    def spans(self, kind: SpanKind) -> list[ReadableSpan]:
        return [s for s in self.exporter.get_finished_spans() if s.kind == kind]


@pytest.fixture
def sink(caplog: pytest.LogCaptureFixture) -> Iterator[Sink]:
    made = Sink()
    with caplog.at_level(logging.WARNING, logger="opentelemetry.sdk.trace"):
        yield made
    # Ended twice would be logged by the SDK and never reach on_end a second time.
    assert not [r for r in caplog.records if "ended span" in r.getMessage()]
    assert all(v == 1 for v in made.ledger.ended.values()), made.ledger.ended
    assert set(made.ledger.started) == set(made.ledger.ended)  # every started span ended
    made.provider.shutdown()


def _exc(error: BaseException | None) -> tuple[str, tuple[Any, ...]] | None:
    return None if error is None else (type(error).__qualname__, error.args)


# ====================================================================================== ASGI
@dataclass
class AsgiOutcome:
    sent: list[dict[str, Any]] = field(default_factory=list)
    error: tuple[str, tuple[Any, ...]] | None = None
    context_kept: bool = True


AsgiApp = Callable[..., Any]


async def _start(send: Any, status: int = 200) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [(b"x-app", b"1")]})


async def raise_before_start(scope: Any, receive: Any, send: Any) -> None:
    raise RuntimeError("before start")


async def raise_after_start(scope: Any, receive: Any, send: Any) -> None:
    await _start(send)
    raise RuntimeError("after start")


async def raise_mid_body(scope: Any, receive: Any, send: Any) -> None:
    await _start(send)
    await send({"type": "http.response.body", "body": b"part", "more_body": True})
    raise ValueError("mid body")


async def stream_until_disconnect(scope: Any, receive: Any, send: Any) -> None:
    await _start(send)
    await send({"type": "http.response.body", "body": b"first", "more_body": True})
    while (await receive())["type"] != "http.disconnect":
        pass  # the client left: stop without finishing the body


async def send_fails_after_disconnect(scope: Any, receive: Any, send: Any) -> None:
    await _start(send)
    for i in range(5):
        await send({"type": "http.response.body", "body": b"%d" % i, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


async def endless(scope: Any, receive: Any, send: Any) -> None:
    await _start(send)
    await send({"type": "http.response.body", "body": b"tick", "more_body": True})
    await asyncio.sleep(30)  # cancelled or timed out by the "server"


async def service_unavailable(scope: Any, receive: Any, send: Any) -> None:
    await _start(send, 503)
    await send({"type": "http.response.body", "body": b"busy"})


def _scope(path: str = "/", kind: str = "http") -> dict[str, Any]:
    trace_id, parent_id = new_ids()
    return {
        "type": kind,
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http" if kind == "http" else "ws",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1:8000"),
            (b"traceparent", traceparent(trace_id, parent_id).encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


def drive_asgi(app: AsgiApp, mode: str = "normal", kind: str = "http") -> AsgiOutcome:
    """Run ``app`` once as a server would. ``mode``: ``normal``; ``disconnect`` (the client
    leaves after the first body chunk: receive says so, later sends raise ``OSError`` as
    uvicorn's do); ``cancel`` (the task is cancelled after the first chunk); ``timeout``
    (``asyncio.wait_for`` with 50 ms around the app)."""
    outcome = AsgiOutcome()
    gone = asyncio.Event()

    async def receive() -> dict[str, Any]:
        if kind == "websocket":
            return {"type": "websocket.connect"}
        if mode == "disconnect":
            await gone.wait()
            return {"type": "http.disconnect"}
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if gone.is_set() and mode == "disconnect":
            raise OSError("client disconnected")
        outcome.sent.append(dict(message))
        if message.get("more_body") and mode == "disconnect":
            gone.set()

    async def server() -> None:
        token = otel_context.attach(otel_context.set_value("server-key", "kept"))
        before = otel_context.get_current()
        try:
            call = app(_scope(kind=kind), receive, send)
            if mode == "cancel":
                task = asyncio.ensure_future(call)
                while not any(m.get("more_body") for m in outcome.sent):
                    await asyncio.sleep(0.001)
                task.cancel()
                await task
            elif mode == "timeout":
                await asyncio.wait_for(call, 0.05)
            else:
                await call
        except BaseException as exc:
            outcome.error = _exc(exc)
        outcome.context_kept = otel_context.get_current() == before
        otel_context.detach(token)

    asyncio.run(server())
    return outcome


# case id: (app, mode, expected span status, expected error.type, expected status code)
ASGI_CASES: dict[str, tuple[AsgiApp, str, StatusCode, str | None, int | None]] = {
    "raise-before-start": (raise_before_start, "normal", StatusCode.ERROR, "RuntimeError", 500),
    "raise-after-start": (raise_after_start, "normal", StatusCode.ERROR, "RuntimeError", 200),
    "raise-mid-body": (raise_mid_body, "normal", StatusCode.ERROR, "ValueError", 200),
    "client-disconnect": (stream_until_disconnect, "disconnect", StatusCode.UNSET, None, 200),
    "send-raises-after-disconnect": (
        send_fails_after_disconnect, "disconnect", StatusCode.ERROR, "OSError", 200,
    ),
    "task-cancelled": (
        endless, "cancel", StatusCode.ERROR, "asyncio.exceptions.CancelledError", 200,
    ),
    "asyncio-timeout": (
        endless, "timeout", StatusCode.ERROR, "asyncio.exceptions.CancelledError", 200,
    ),
    "5xx-response": (service_unavailable, "normal", StatusCode.ERROR, "503", 503),
}  # fmt: skip


@pytest.mark.parametrize("case", list(ASGI_CASES))
def test_asgi_app_faults_stay_the_apps(case: str, sink: Sink) -> None:
    app, mode, status, error_type, code = ASGI_CASES[case]
    plain = drive_asgi(app, mode)
    traced = drive_asgi(TracewireMiddleware(app, Settings(), tracer_provider=sink.provider), mode)
    assert traced.sent == plain.sent
    assert traced.error == plain.error
    assert traced.context_kept and plain.context_kept
    (span,) = sink.spans(SpanKind.SERVER)
    assert span.status.status_code == status
    assert span.attributes.get("error.type") == error_type
    assert span.attributes.get("http.response.status_code") == code


if sys.version_info >= (3, 11):

    def test_asyncio_timeout_context_manager_around_the_app(sink: Sink) -> None:
        async def server(app: AsgiApp) -> tuple[str | None, bool]:
            before = otel_context.get_current()
            sent: list[dict[str, Any]] = []

            async def receive() -> dict[str, Any]:
                return {"type": "http.request", "body": b""}

            async def send(message: dict[str, Any]) -> None:
                sent.append(message)

            error = None
            try:
                async with asyncio.timeout(0.05):
                    await app(_scope(), receive, send)
            except TimeoutError as exc:
                error = type(exc).__name__
            return error, otel_context.get_current() == before

        plain = asyncio.run(server(endless))
        traced = asyncio.run(
            server(TracewireMiddleware(endless, Settings(), tracer_provider=sink.provider))
        )
        assert traced == plain == ("TimeoutError", True)
        (span,) = sink.spans(SpanKind.SERVER)
        assert span.attributes["error.type"] == "asyncio.exceptions.CancelledError"


def test_websocket_raising_before_accept_records_a_status(sink: Sink) -> None:
    async def ws_app(scope: Any, receive: Any, send: Any) -> None:
        await receive()  # websocket.connect
        raise RuntimeError("refused by a bug")

    plain = drive_asgi(ws_app, kind="websocket")
    traced = drive_asgi(
        TracewireMiddleware(ws_app, Settings(), tracer_provider=sink.provider), kind="websocket"
    )
    assert traced == plain
    (span,) = sink.spans(SpanKind.SERVER)
    assert span.status.status_code == StatusCode.ERROR
    assert span.attributes.get("error.type") == "RuntimeError"
    assert span.attributes.get("http.response.status_code") == 500


# ====================================================================================== WSGI
@dataclass
class WsgiOutcome:
    statuses: list[str] = field(default_factory=list)
    headers: list[list[tuple[str, str]]] = field(default_factory=list)
    body: list[bytes] = field(default_factory=list)
    error: tuple[str, tuple[Any, ...]] | None = None
    close_error: tuple[str, tuple[Any, ...]] | None = None
    context_kept: bool = True


WsgiApp = Callable[..., Iterable[bytes]]


def _environ() -> dict[str, Any]:
    trace_id, parent_id = new_ids()
    return {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/",
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "127.0.0.1:8000",
        "HTTP_TRACEPARENT": traceparent(trace_id, parent_id),
        "wsgi.url_scheme": "http",
        "wsgi.version": (1, 0),
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }


def drive_wsgi(app: WsgiApp, disconnect_after: int | None = None) -> WsgiOutcome:
    """Run ``app`` once as a PEP 3333 server: headers go out with the first non-empty chunk;
    ``start_response`` with ``exc_info`` after that re-raises; ``close()`` is always called.
    ``disconnect_after``: the client leaves after that many chunks (iteration stops)."""
    outcome = WsgiOutcome()
    sent_headers = False

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        if exc_info is not None and sent_headers:
            raise exc_info[1].with_traceback(exc_info[2])
        outcome.statuses.append(status)
        outcome.headers.append(list(headers))
        return outcome.body.append

    token = otel_context.attach(otel_context.set_value("server-key", "kept"))
    before = otel_context.get_current()
    result: Any = None
    try:
        result = app(_environ(), start_response)
        for chunk in result:
            if chunk:
                sent_headers = True
            outcome.body.append(chunk)
            if disconnect_after is not None and len(outcome.body) >= disconnect_after:
                break
    except Exception as exc:
        outcome.error = _exc(exc)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            try:
                close()
            except Exception as exc:
                outcome.close_error = _exc(exc)
    outcome.context_kept = otel_context.get_current() == before
    otel_context.detach(token)
    return outcome


def wsgi_raise_before_start(environ: Any, start_response: Any) -> list[bytes]:
    raise RuntimeError("before start_response")


def wsgi_exc_info_before_body(environ: Any, start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    try:
        raise KeyError("lookup failed")
    except KeyError:
        start_response(
            "500 Internal Server Error", [("Content-Type", "text/plain")], sys.exc_info()
        )
    return [b"sorry"]


def wsgi_exc_info_after_body(environ: Any, start_response: Any) -> Iterator[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    yield b"half"
    try:
        raise KeyError("too late")
    except KeyError:
        # Headers are out: the server re-raises exc_info from start_response.
        start_response("500 Internal Server Error", [], sys.exc_info())
    yield b"never"


class CloseRaises:
    def __init__(self) -> None:
        self.parts = [b"a", b"b"]

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.parts)

    def close(self) -> None:
        raise OSError("close failed")


def wsgi_close_raises(environ: Any, start_response: Any) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return CloseRaises()


def wsgi_generator_raises(environ: Any, start_response: Any) -> Iterator[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    yield b"one"
    yield b"two"
    raise ValueError("generator failed midway")


def wsgi_endless(environ: Any, start_response: Any) -> Iterator[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    for i in range(10_000):
        yield b"%d\n" % i


# case id: (app, disconnect_after, span status, error.type, status code)
WSGI_CASES: dict[str, tuple[WsgiApp, int | None, StatusCode, str | None, int | None]] = {
    "raise-before-start": (wsgi_raise_before_start, None, StatusCode.ERROR, "RuntimeError", 500),
    "start_response-twice-exc_info": (
        wsgi_exc_info_before_body, None, StatusCode.ERROR, "500", 500,
    ),
    "exc_info-after-headers-sent": (
        wsgi_exc_info_after_body, None, StatusCode.ERROR, "KeyError", 200,
    ),
    "close-raises": (wsgi_close_raises, None, StatusCode.ERROR, "OSError", 200),
    "generator-raises-midway": (
        wsgi_generator_raises, None, StatusCode.ERROR, "ValueError", 200,
    ),
    "client-disconnect": (wsgi_endless, 3, StatusCode.UNSET, None, 200),
}  # fmt: skip


WSGI_KNOWN_DEFECTS: dict[str, Any] = {}


@pytest.mark.parametrize(
    "case", [pytest.param(c, marks=WSGI_KNOWN_DEFECTS.get(c, ())) for c in WSGI_CASES]
)
def test_wsgi_app_faults_stay_the_apps(case: str, sink: Sink) -> None:
    app, disconnect_after, status, error_type, code = WSGI_CASES[case]
    plain = drive_wsgi(app, disconnect_after)
    traced = drive_wsgi(
        TracewireWSGIMiddleware(app, Settings(), tracer_provider=sink.provider), disconnect_after
    )
    assert traced == plain
    (span,) = sink.spans(SpanKind.SERVER)
    assert span.status.status_code == status
    assert span.attributes.get("error.type") == error_type
    assert span.attributes.get("http.response.status_code") == code


# ============================================================================ hooks raising
class HookBug(Exception):
    pass


class RaisingHook:
    """A user hook with a bug; counts its calls, so a test knows the call site was reached."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, *args: Any) -> None:
        self.calls += 1
        raise HookBug("hook bug")


SERVER_HOOKS = ["server_request_hook", "server_response_hook"]


async def ws_echo(scope: Any, receive: Any, send: Any) -> None:
    await receive()
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.close", "code": 1000})


ASGI_HOOK_APPS: dict[str, tuple[AsgiApp, str, str]] = {
    # name: (app, mode, scope type)
    "ok": (service_unavailable, "normal", "http"),
    "raise-before-start": (raise_before_start, "normal", "http"),
    "raise-mid-body": (raise_mid_body, "normal", "http"),
    "cancelled": (endless, "cancel", "http"),
    "websocket": (ws_echo, "normal", "websocket"),
}


@pytest.mark.parametrize("hook", SERVER_HOOKS)
@pytest.mark.parametrize("case", list(ASGI_HOOK_APPS))
def test_asgi_server_hooks_raising_change_nothing(hook: str, case: str, sink: Sink) -> None:
    app, mode, kind = ASGI_HOOK_APPS[case]
    quiet = Sink()
    raising = RaisingHook()
    settings = Settings(**{hook: raising})
    reference = drive_asgi(
        TracewireMiddleware(app, Settings(), tracer_provider=quiet.provider), mode, kind
    )
    plain = drive_asgi(app, mode, kind)
    traced = drive_asgi(
        TracewireMiddleware(app, settings, tracer_provider=sink.provider), mode, kind
    )
    assert traced == plain
    assert raising.calls == 1
    (span,) = sink.spans(SpanKind.SERVER)
    (expected,) = quiet.spans(SpanKind.SERVER)
    assert reference == plain
    # The span says what it would have said with a working hook.
    assert span.status.status_code == expected.status.status_code
    assert span.attributes.get("error.type") == expected.attributes.get("error.type")
    assert span.attributes.get("http.response.status_code") == expected.attributes.get(
        "http.response.status_code"
    )


WSGI_HOOK_APPS: dict[str, tuple[WsgiApp, int | None]] = {
    "ok": (wsgi_close_raises, None),
    "raise-before-start": (wsgi_raise_before_start, None),
    "exc_info": (wsgi_exc_info_before_body, None),
    "generator-raises": (wsgi_generator_raises, None),
    "disconnect": (wsgi_endless, 2),
}


@pytest.mark.parametrize("hook", SERVER_HOOKS)
@pytest.mark.parametrize("case", list(WSGI_HOOK_APPS))
def test_wsgi_server_hooks_raising_change_nothing(hook: str, case: str, sink: Sink) -> None:
    app, disconnect_after = WSGI_HOOK_APPS[case]
    quiet = Sink()
    raising = RaisingHook()
    plain = drive_wsgi(app, disconnect_after)
    traced = drive_wsgi(
        TracewireWSGIMiddleware(app, Settings(**{hook: raising}), tracer_provider=sink.provider),
        disconnect_after,
    )
    drive_wsgi(
        TracewireWSGIMiddleware(app, Settings(), tracer_provider=quiet.provider), disconnect_after
    )
    assert traced == plain
    # The response hook runs for each start_response call (twice with exc_info).
    twice = (case, hook) == ("exc_info", "server_response_hook")
    assert raising.calls == (2 if twice else 1)
    (span,) = sink.spans(SpanKind.SERVER)
    (expected,) = quiet.spans(SpanKind.SERVER)
    assert span.status.status_code == expected.status.status_code
    assert span.attributes.get("error.type") == expected.attributes.get("error.type")


# ---------------------------------------------------------------------------- client hooks
def _downstream(environ: Any, start_response: Any) -> list[bytes]:
    path = environ.get("PATH_INFO", "")
    status = {"/ok": "200 OK", "/missing": "404 Not Found", "/fail": "500 Internal Server Error"}
    start_response(status.get(path, "200 OK"), [("Content-Type", "text/plain")])
    return [f"{path} answered".encode()]


@pytest.fixture(scope="module")
def downstream() -> Iterator[str]:
    with WerkzeugThread(_downstream) as server:
        yield server.url


CLIENT_HOOKS = ["client_request_hook", "client_response_hook"]
CLIENTS = ["httpx", "httpx-async", "requests"]
TARGETS = ["/ok", "/missing", "/fail", "refused"]


def _call(client: str, settings: Settings | None, provider: TracerProvider, url: str) -> Any:
    """One GET; (status, body) or the exception's type name, and whether the context was
    kept. ``settings=None``: the library without tracewire."""
    before = otel_context.get_current()
    outcome: Any
    try:
        if client == "httpx":
            transport = (
                httpx.HTTPTransport()
                if settings is None
                else TracingTransport(settings=settings, tracer_provider=provider)
            )
            with httpx.Client(transport=transport, timeout=5) as c:
                r = c.get(url)
            outcome = (r.status_code, r.text)
        elif client == "httpx-async":

            async def go() -> Any:
                transport: Any = (
                    httpx.AsyncHTTPTransport()
                    if settings is None
                    else AsyncTracingTransport(settings=settings, tracer_provider=provider)
                )
                async with httpx.AsyncClient(transport=transport, timeout=5) as c:
                    r = await c.get(url)
                return (r.status_code, r.text)

            outcome = asyncio.run(go())
        else:
            session = requests.Session()
            if settings is not None:
                tracewire.requests.instrument_session(
                    session, settings=settings, tracer_provider=provider
                )
            with session:
                r = session.get(url, timeout=5)
            outcome = (r.status_code, r.text)
    except Exception as exc:
        outcome = type(exc).__qualname__
    return outcome, otel_context.get_current() == before


@pytest.mark.parametrize("hook", CLIENT_HOOKS)
@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("target", TARGETS)
def test_client_hooks_raising_change_nothing(
    hook: str, client: str, target: str, sink: Sink, downstream: str
) -> None:
    url = f"http://127.0.0.1:{free_port()}/x" if target == "refused" else downstream + target
    plain = _call(client, None, sink.provider, url)
    parent = sink.provider.get_tracer("test").start_span("request")
    raising = RaisingHook()
    with trace.use_span(parent, end_on_exit=True):
        traced = _call(client, Settings(**{hook: raising}), sink.provider, url)
    assert traced == plain
    # Every call site reached: no response hook for a connection that was refused.
    assert raising.calls == (0 if (hook, target) == ("client_response_hook", "refused") else 1)
    assert plain[1]
    clients = sink.spans(SpanKind.CLIENT)
    assert len(clients) == 1
    (span,) = clients
    assert span.parent is not None and span.parent.span_id == parent.get_span_context().span_id
    if target == "/ok":
        assert span.status.status_code == StatusCode.UNSET
    else:  # 4xx and 5xx are client errors; so is a refused connection
        assert span.status.status_code == StatusCode.ERROR

"""When the ASGI SERVER span starts and ends, and what it says, with real servers.

Streaming bodies inside the span, errors, client disconnects, background tasks after the span,
WebSockets, lifespan passed through, keep-alive and pipelined requests starting clean, nested
middlewares making one span, ASGI 2 apps.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode

from tests.support.asgi_apps import (
    COMBOS,
    Probe,
    Service,
    SpanSink,
    fetch,
    http_client,
    new_ids,
    running_service,
    serve,
    starlette_app,
    traceparent,
    websocket_session,
)
from tests.support.servers import wait_for
from tracewire import Settings, TracewireMiddleware
from tracewire.server import SPAN_KEY


@pytest.fixture(scope="module", params=COMBOS, ids=[f"{a}-{s}" for a, s in COMBOS])
def service(request: pytest.FixtureRequest) -> Iterator[Service]:
    with running_service(*request.param, Settings()) as svc:
        yield svc


@pytest.fixture
def svc(service: Service) -> Service:
    return service.fresh()


# -------------------------------------------------------------------------------- streaming
def test_streaming_response_is_inside_the_span(svc: Service) -> None:
    trace_id, parent_id = new_ids()
    with svc.client.stream(
        "GET", "/stream", headers={"traceparent": traceparent(trace_id, parent_id)}
    ) as response:
        body = b"".join(response.iter_bytes())
    assert body.count(b"chunk") == 20
    span = svc.sink.of_trace(trace_id)
    last_chunk_ns = svc.probe.get("last_chunk_ns")
    assert last_chunk_ns is not None
    assert span.start_time < last_chunk_ns <= span.end_time
    assert span.attributes["http.response.status_code"] == 200
    assert span.status.status_code == StatusCode.UNSET


def test_client_disconnect_mid_stream_ends_the_span(svc: Service) -> None:
    trace_id, parent_id = new_ids()
    started = time.time_ns()
    with svc.client.stream(
        "GET", "/endless", headers={"traceparent": traceparent(trace_id, parent_id)}
    ) as response:
        first = next(response.iter_bytes())
        assert first.startswith(b"tick")
    # Leaving the block closes the connection mid-body. The endless stream would run for 10 s;
    # the span must end (and be exported) long before that.
    span = svc.sink.of_trace(trace_id, timeout=5)
    assert span.end_time - started < 5e9
    assert wait_for(lambda: svc.probe.get("endless_stopped"), timeout=5)
    assert not svc.probe.get("endless_finished")
    # The span did not outlive the app's stream.
    assert span.end_time >= svc.probe.get("endless_started_ns")


# ----------------------------------------------------------------------------------- errors
def test_exception_gives_error_span_and_the_apps_own_500(svc: Service) -> None:
    trace_id, parent_id = new_ids()
    response = svc.get_once("/boom", {"traceparent": traceparent(trace_id, parent_id)})
    assert response.status_code == 500
    if svc.kind != "raw":  # a raw app has no handler: the server answers its own 500
        assert response.text == "app says no"
    span = svc.sink.of_trace(trace_id)
    assert span.status.status_code == StatusCode.ERROR
    assert span.attributes["error.type"] == "RuntimeError"
    assert span.attributes["http.response.status_code"] == 500
    events = [e for e in span.events if e.name == "exception"]
    assert len(events) == 1
    assert events[0].attributes["exception.message"] == "the app failed"
    assert span.start_time <= events[0].timestamp <= span.end_time


def test_4xx_is_not_an_error(svc: Service) -> None:
    trace_id, parent_id = new_ids()
    response = svc.get("/teapot", {"traceparent": traceparent(trace_id, parent_id)})
    assert response.status_code == 418
    span = svc.sink.of_trace(trace_id)
    assert span.status.status_code == StatusCode.UNSET
    assert span.attributes["http.response.status_code"] == 418
    assert "error.type" not in span.attributes


def test_a_404_is_named_by_method_only(svc: Service) -> None:
    trace_id, parent_id = new_ids()
    response = svc.get("/no/such/thing", {"traceparent": traceparent(trace_id, parent_id)})
    assert response.status_code == 404
    span = svc.sink.of_trace(trace_id)
    assert span.name == "GET"  # never the raw path
    assert "http.route" not in span.attributes


# ------------------------------------------------------------------------- background tasks
@pytest.mark.parametrize("kind", ["starlette", "fastapi"])
@pytest.mark.parametrize("server", ["uvicorn", "hypercorn"])
def test_background_task_runs_in_the_trace_after_the_span(kind: str, server: str) -> None:
    with running_service(kind, server, Settings()) as svc:
        trace_id, parent_id = new_ids()
        response = svc.get("/background", {"traceparent": traceparent(trace_id, parent_id)})
        assert response.text == "done"
        span = svc.sink.of_trace(trace_id)
        task = wait_for(lambda: svc.probe.get("background"))
        handler = svc.probe.get("handler")
        # The task runs in the request's trace, under a span of its own (a child of the
        # server span: docs/server-asgi.md "A span per background task") ...
        assert task["trace_id"] == trace_id == handler["trace_id"]
        assert handler["span_id"] == f"{span.context.span_id:016x}"
        task_span = wait_for(
            lambda: [s for s in svc.sink.spans() if f"{s.context.span_id:016x}" == task["span_id"]]
        )[0]
        assert task_span.kind == SpanKind.INTERNAL
        assert task_span.parent.span_id == span.context.span_id
        # ... after the server span's end.
        assert task["at_ns"] >= span.end_time
        assert task_span.start_time >= span.end_time


# ------------------------------------------------------------------------------- websocket
def test_websocket_span_covers_handshake_and_life(svc: Service) -> None:
    trace_id, parent_id = new_ids()
    host, port = svc.url.rsplit("//", 1)[1].split(":")
    replies = websocket_session(
        host,
        int(port),
        "/ws",
        [("traceparent", traceparent(trace_id, parent_id)), ("baggage", "room=blue")],
        ["one", "two"],
    )
    assert replies == ["echo one", "echo two"]
    span = svc.sink.of_trace(trace_id)
    assert f"{span.parent.span_id:016x}" == parent_id
    assert span.attributes["http.response.status_code"] == 101
    assert span.status.status_code == StatusCode.UNSET
    seen = svc.probe.get("ws")
    assert seen["trace_id"] == trace_id
    assert seen["span_id"] == f"{span.context.span_id:016x}"
    assert seen["baggage"] == {"room": "blue"}
    # The span lasts until the app saw the connection close.
    closed_ns = wait_for(lambda: svc.probe.get("ws_closed_ns"))
    assert span.end_time >= closed_ns
    if svc.kind != "raw":
        assert span.name == "GET /ws"


# ---------------------------------------------------------------- keep-alive and pipelining
class ContextAtEntry:
    """Outermost raw ASGI wrapper: notes whether a span was current when the server called in
    (i.e. whether the server leaked an earlier request's context into this task)."""

    def __init__(self, app: Any, probe: Probe) -> None:
        self.app = app
        self.probe = probe

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            current = trace.get_current_span().get_span_context()
            self.probe.note(f"entry {scope['path']}", current.is_valid)
        await self.app(scope, receive, send)


def _record_client_port(span: Any, scope: Any) -> None:
    span.set_attribute("client.port", scope["client"][1])


@pytest.mark.parametrize("kind", ["starlette", "fastapi", "raw"])
@pytest.mark.parametrize("server", ["uvicorn", "hypercorn"])
def test_large_body_after_traced_request_on_same_connection_starts_clean(
    kind: str, server: str
) -> None:
    from tests.support.asgi_apps import APPS

    sink, probe = SpanSink(), Probe()
    app = ContextAtEntry(
        TracewireMiddleware(
            APPS[kind](probe),
            # client.port is opt-in: a hook records it to prove both used one connection.
            Settings(server_request_hook=_record_client_port),
            tracer_provider=sink.provider,
        ),
        probe,
    )
    body = b"x" * (4 * 1024 * 1024)
    with serve(app, server) as running, http_client(base_url=running.url) as client:
        # A large body makes the server pause reading; the first request's task resumes it,
        # which under uvicorn hands that task's context to the connection's next request.
        trace_id, parent_id = new_ids()
        first = client.post(
            "/upload", content=body, headers={"traceparent": traceparent(trace_id, parent_id)}
        )
        assert first.json()["trace_id"] == trace_id
        second = client.post("/upload", content=body)
        assert second.status_code == 200
        resets = getattr(getattr(running, "server", None), "config", None)
        resets = bool(getattr(resets, "reset_contextvars", False))
        seen = second.json()
    assert seen["size"] == len(body)
    assert seen["trace_id"] != trace_id
    assert (seen["after"]["trace_id"], seen["after"]["span_id"]) == (
        seen["trace_id"],
        seen["span_id"],
    )
    span = sink.of_trace(seen["trace_id"])
    assert span.parent is None
    first_span = sink.of_trace(trace_id)
    assert f"{first_span.parent.span_id:016x}" == parent_id
    # One connection served both (keep-alive), so this is the scenario that matters.
    assert span.attributes["client.port"] == first_span.attributes["client.port"]
    if server == "uvicorn" and not resets:
        # uvicorn (without its opt-in reset_contextvars) started the second request in the
        # first one's context: the leak is real, and tracewire ignored it.
        assert probe.get("entry /upload") is True


def _read_until(sock: socket.socket, done: Any, timeout: float = 10.0) -> bytes:
    deadline = time.monotonic() + timeout
    data = b""
    while not done(data):
        if time.monotonic() > deadline:
            raise TimeoutError(f"incomplete responses: {data[-200:]!r}")
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


@pytest.mark.parametrize("server", ["uvicorn", "hypercorn"])
def test_pipelined_request_starts_clean(server: str) -> None:
    sink, probe = SpanSink(), Probe()
    app = ContextAtEntry(
        TracewireMiddleware(starlette_app(probe), Settings(), tracer_provider=sink.provider),
        probe,
    )
    trace_id, parent_id = new_ids()
    requests = (
        b"GET /stream HTTP/1.1\r\nHost: t\r\n"
        b"traceparent: " + traceparent(trace_id, parent_id).encode() + b"\r\n\r\n"
        b"GET /items/2 HTTP/1.1\r\nHost: t\r\n\r\n"
    )
    with serve(app, server) as running:
        with socket.create_connection((running.host, running.port), timeout=5) as sock:
            sock.sendall(requests)  # the second arrives while the first is streaming
            data = _read_until(sock, lambda d: b'"item_id":"2"' in d)
        second = re.search(rb'"trace_id":"([0-9a-f]{32})"', data)
        assert second is not None
        second_trace = second.group(1).decode()
        assert second_trace != trace_id
        assert sink.of_trace(second_trace).parent is None
        assert sink.of_trace(trace_id).parent is not None


# --------------------------------------------------------------------------------- lifespan
class Recorder:
    """Notes the exact objects an app receives, to prove the middleware passed them through."""

    def __init__(self, app: Any, probe: Probe, key: str) -> None:
        self.app, self.probe, self.key = app, probe, key

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            self.probe.note(self.key, (scope, receive, send, dict(scope)))
        await self.app(scope, receive, send)


@pytest.mark.parametrize("server", ["uvicorn", "hypercorn"])
def test_lifespan_passes_through_untouched(server: str) -> None:
    from tests.support.asgi_apps import raw_app

    sink, probe = SpanSink(), Probe()
    inner = Recorder(raw_app(probe), probe, "inner")
    app = Recorder(TracewireMiddleware(inner, tracer_provider=sink.provider), probe, "outer")
    config = {"lifespan": "on"} if server == "uvicorn" else {}
    with serve(app, server, **config) as running:
        assert fetch(running.url + "/items/1", timeout=5).status_code == 200
        outer, inner_seen = wait_for(lambda: probe.get("outer")), probe.get("inner")
    assert inner_seen is not None
    for a, b in zip(outer[:3], inner_seen[:3], strict=True):
        assert a is b  # the same scope, receive and send objects
    assert SPAN_KEY not in inner_seen[3]
    assert inner_seen[3] == outer[3]
    assert [s.name for s in sink.server_spans()] == ["GET"]  # only the HTTP request


# ------------------------------------------------------------------------------- nesting
@pytest.mark.parametrize("server", ["uvicorn", "hypercorn"])
def test_nested_middlewares_make_one_span(server: str) -> None:
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.routing import Mount

    sink, probe = SpanSink(), Probe()
    inner = starlette_app(probe)
    inner.add_middleware(TracewireMiddleware, tracer_provider=sink.provider)
    outer = Starlette(
        routes=[Mount("/sub", app=inner)],
        middleware=[Middleware(TracewireMiddleware, tracer_provider=sink.provider)],
    )
    trace_id, parent_id = new_ids()
    with serve(outer, server) as running:
        response = fetch(
            running.url + "/sub/items/5",
            headers={"traceparent": traceparent(trace_id, parent_id)},
            timeout=5,
        )
        assert response.status_code == 200
        span = sink.of_trace(trace_id)
        # Give a would-be second span every chance to land before counting.
        assert fetch(running.url + "/sub/items/6", timeout=5).status_code == 200
        sink.wait_count(2)
    assert len(sink.server_spans()) == 2  # one per request, none nested
    assert span.name == "GET /sub/items/{item_id}"
    assert f"{span.parent.span_id:016x}" == parent_id
    assert response.json()["span_id"] == f"{span.context.span_id:016x}"


# ---------------------------------------------------------------------------------- ASGI 2
@pytest.mark.parametrize("server", ["uvicorn", "hypercorn"])
def test_asgi2_app_is_adapted(server: str) -> None:
    sink = SpanSink()

    class Asgi2App:
        def __init__(self, scope: Any) -> None:
            self.scope = scope

        async def __call__(self, receive: Any, send: Any) -> None:
            if self.scope["type"] == "lifespan":
                while (await receive())["type"] != "lifespan.shutdown":
                    await send({"type": "lifespan.startup.complete"})
                await send({"type": "lifespan.shutdown.complete"})
                return
            sc = trace.get_current_span().get_span_context()
            body = f"{sc.trace_id:032x}".encode()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": body})

    app = TracewireMiddleware(Asgi2App, tracer_provider=sink.provider)
    trace_id, parent_id = new_ids()
    with serve(app, server) as running:
        response = fetch(
            running.url + "/", headers={"traceparent": traceparent(trace_id, parent_id)}
        )
    assert response.text == trace_id
    assert sink.of_trace(trace_id).attributes["http.response.status_code"] == 200


# ----------------------------------------------------------------- mounted with add_middleware
@pytest.mark.parametrize("kind", ["starlette", "fastapi"])
@pytest.mark.parametrize("server", ["uvicorn", "hypercorn"])
def test_add_middleware_mounting(kind: str, server: str) -> None:
    from tests.support.asgi_apps import APPS

    sink, probe = SpanSink(), Probe()
    app = APPS[kind](probe)
    app.add_middleware(TracewireMiddleware, Settings(), tracer_provider=sink.provider)
    with serve(app, server) as running:
        trace_id, parent_id = new_ids()
        headers = {"traceparent": traceparent(trace_id, parent_id)}
        assert fetch(running.url + "/items/3", headers=headers).json()["trace_id"] == trace_id
        assert sink.of_trace(trace_id).name == "GET /items/{item_id}"
        trace_id, parent_id = new_ids()
        headers = {"traceparent": traceparent(trace_id, parent_id)}
        response = fetch(running.url + "/boom", headers=headers)
        # Starlette answers an unhandled error from its outermost ServerErrorMiddleware, which
        # add_middleware puts outside tracewire: the app's own 500 still reaches the client,
        # and the span still records it.
        assert (response.status_code, response.text) == (500, "app says no")
        span = sink.of_trace(trace_id)
    assert span.name == "GET /boom"
    assert span.status.status_code == StatusCode.ERROR
    assert span.attributes["http.response.status_code"] == 500
    assert span.attributes["error.type"] == "RuntimeError"
    assert [e.name for e in span.events] == ["exception"]


# ------------------------------------------------------------------ response extensions
class ExtensionShim:
    """Plays a server that supports the pathsend and trailers extensions (as Granian and
    HTTP/2 servers do) in front of uvicorn: advertises them in the scope and turns the
    extension messages into plain body messages, noting when each arrived."""

    def __init__(self, app: Any, probe: Probe) -> None:
        self.app, self.probe = app, probe

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope["extensions"] = {
            **scope.get("extensions", {}),
            "http.response.pathsend": {},
            "http.response.trailers": {},
        }

        async def server_send(message: Any) -> None:
            kind = message["type"]
            if kind == "http.response.start":
                message = {k: v for k, v in message.items() if k != "trailers"}
            elif kind == "http.response.pathsend":
                self.probe.note("pathsend_ns", time.time_ns())
                with open(message["path"], "rb") as f:
                    message = {"type": "http.response.body", "body": f.read()}
            elif kind == "http.response.trailers":
                self.probe.note("trailers_ns", time.time_ns())
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            elif kind == "http.response.body" and scope["path"] == "/trailers":
                message = {**message, "more_body": True}  # the trailers message ends it
            await send(message)

        await self.app(scope, receive, server_send)


def test_pathsend_and_trailers_end_the_span(tmp_path: Any) -> None:
    from starlette.applications import Starlette
    from starlette.responses import FileResponse
    from starlette.routing import Route

    file = tmp_path / "report.txt"
    file.write_bytes(b"report body")

    async def report(request: Any) -> FileResponse:
        return FileResponse(file)

    class WithTrailers:  # a raw ASGI endpoint (an object, so Route does not wrap it)
        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            await send({"type": "http.response.start", "status": 200, "trailers": True})
            await send({"type": "http.response.body", "body": b"data"})
            await send({"type": "http.response.trailers", "headers": [(b"x-checksum", b"1")]})
            await asyncio.sleep(0.05)  # the span must not wait for the app to return
            probe.note("returned_ns", time.time_ns())

    sink, probe = SpanSink(), Probe()
    routes = [Route("/report.txt", report), Route("/trailers", WithTrailers())]
    app = ExtensionShim(
        TracewireMiddleware(Starlette(routes=routes), tracer_provider=sink.provider), probe
    )
    with serve(app, "uvicorn") as running:
        trace_id, parent_id = new_ids()
        headers = {"traceparent": traceparent(trace_id, parent_id)}
        assert fetch(running.url + "/report.txt", headers=headers).content == b"report body"
        span = sink.of_trace(trace_id)
        assert span.end_time >= probe.get("pathsend_ns")
        assert span.name == "GET /report.txt"

        trace_id, parent_id = new_ids()
        headers = {"traceparent": traceparent(trace_id, parent_id)}
        assert fetch(running.url + "/trailers", headers=headers).content == b"data"
        span = sink.of_trace(trace_id)
        returned = wait_for(lambda: probe.get("returned_ns"))
        assert probe.get("trailers_ns") <= span.end_time < returned


# ------------------------------------------------------------------- detached on every path
@pytest.mark.parametrize(
    "path", ["/ok", "/raise", "/cancel", "/excluded", "/unsampled", "/ws-raise", "/lifespan"]
)
def test_context_is_detached_on_every_path(path: str) -> None:
    """What is current in the server's task after the middleware returned (or raised) is what
    was current before: only observable from the caller, so the test plays the server."""
    from opentelemetry import context as otel_context

    sink = SpanSink()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert trace.get_current_span().get_span_context().is_valid or path == "/lifespan"
        if scope["path"] in ("/raise", "/ws-raise"):
            raise RuntimeError("app failed")
        if scope["path"] == "/cancel":
            await send({"type": "http.response.start", "status": 200})
            await send({"type": "http.response.body", "body": b"x", "more_body": True})
            await asyncio.sleep(30)  # cancelled by the "server"
        await send({"type": "http.response.start", "status": 200})
        await send({"type": "http.response.body", "body": b"ok"})

    middleware = TracewireMiddleware(
        app, Settings(excluded_paths=["/excluded"]), tracer_provider=sink.provider
    )
    kind = {"/ws-raise": "websocket", "/lifespan": "lifespan"}.get(path, "http")
    flags = "00" if path == "/unsampled" else "01"
    trace_id, parent_id = new_ids()

    def scope(kind: str, path: str) -> dict[str, Any]:
        return {
            "type": kind,
            "path": path,
            "method": "GET",
            "headers": [(b"traceparent", traceparent(trace_id, parent_id, flags).encode())],
        }

    async def receive() -> Any:
        return {"type": "http.request", "body": b""}

    async def send(message: Any) -> None:
        pass

    async def server() -> tuple[bool, str]:
        token = otel_context.attach(otel_context.set_value("sentinel", "kept"))
        before = otel_context.get_current()
        task = asyncio.ensure_future(middleware(scope(kind, path), receive, send))
        if path == "/cancel":
            await asyncio.sleep(0.05)
            task.cancel()
            path_of_second = "/ok"
        else:
            path_of_second = path
        outcome = "returned"
        try:
            await task
        except asyncio.CancelledError:
            outcome = "cancelled"
        except RuntimeError:
            outcome = "raised"
        # That call ran in a task of its own (a copy of this context); call again in this
        # very task, so a missing detach would show here.
        with contextlib.suppress(RuntimeError):
            await middleware(scope(kind, path_of_second), receive, send)
        same = otel_context.get_current() == before
        otel_context.detach(token)
        return same, outcome

    same, outcome = asyncio.run(server())
    assert same
    expected = {"/raise": "raised", "/ws-raise": "raised", "/cancel": "cancelled"}
    assert outcome == expected.get(path, "returned")
    spans = [s for s in sink.server_spans() if f"{s.context.trace_id:032x}" == trace_id]
    assert len(spans) == (2 if path in ("/ok", "/raise", "/cancel", "/ws-raise") else 0)
    errors = sorted(str(s.attributes.get("error.type")) for s in spans)
    if path == "/cancel":  # the second call ran /ok
        assert errors == ["None", "asyncio.exceptions.CancelledError"]
    elif path in ("/raise", "/ws-raise"):
        assert errors == ["RuntimeError", "RuntimeError"]


@pytest.mark.parametrize("server", ["uvicorn", "hypercorn"])
def test_rejected_and_failing_websockets(server: str) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        await receive()  # websocket.connect
        if scope["path"] == "/deny":
            await send({"type": "websocket.close", "code": 1008})
            return
        raise RuntimeError("websocket handler failed")

    sink = SpanSink()
    wrapped = TracewireMiddleware(app, tracer_provider=sink.provider)
    with serve(wrapped, server) as running:
        for path in ("/deny", "/fail"):
            trace_id, parent_id = new_ids()
            with pytest.raises(ConnectionError):
                websocket_session(
                    running.host,
                    running.port,
                    path,
                    [("traceparent", traceparent(trace_id, parent_id))],
                    ["never answered"],
                )
            span = sink.of_trace(trace_id)
            if path == "/deny":  # refused by the app: a 403, not a server error
                assert span.attributes["http.response.status_code"] == 403
                assert span.status.status_code == StatusCode.UNSET
            else:
                assert span.status.status_code == StatusCode.ERROR
                assert span.attributes["error.type"] == "RuntimeError"

"""The same small service written three ways (Starlette, FastAPI, raw ASGI) for the ASGI tests.

Every app answers:

- ``GET /items/{item_id}``: JSON with the trace id, span id and baggage the app code sees;
- ``POST /upload``: reads the whole body, answers its size and the trace ids it saw;
- ``GET /stream``: ``STREAM_CHUNKS`` chunks, recording when the last one was produced;
- ``GET /endless``: one chunk every 10 ms until the client goes away (bounded at 10 s);
- ``GET /boom``: raises; the app's own handler answers ``500 app says no``;
- ``GET /teapot``: a plain 418 (a 4xx is not an error for a SERVER span);
- ``GET /gather``: waits until ``Probe.expected`` requests are inside the app at once;
- ``GET /background`` (Starlette/FastAPI): a background task after the response;
- ``WS /ws``: echoes text messages.

The ``Probe`` records what the app saw, for the test to compare with the exported spans.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

from fastapi import BackgroundTasks, WebSocket
from fastapi import Request as FastAPIRequest
from opentelemetry import baggage, trace
from opentelemetry.context import get_current

STREAM_CHUNKS = 20
GATHER_TIMEOUT = 20.0


def seen() -> dict[str, Any]:
    """What the app's code sees of the current context."""
    sc = trace.get_current_span().get_span_context()
    return {
        "trace_id": f"{sc.trace_id:032x}",
        "span_id": f"{sc.span_id:016x}",
        "valid": sc.is_valid,
        "baggage": {k: str(v) for k, v in baggage.get_all(get_current()).items()},
    }


class Probe:
    """Thread-safe notes from inside the app (it runs on the server's thread and loop)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.notes: dict[str, Any] = {}
        self.expected = 0
        self._arrived = 0
        self.max_inside = 0
        self._inside = 0
        self._event: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def note(self, key: str, value: Any) -> None:
        with self.lock:
            self.notes[key] = value

    def get(self, key: str) -> Any:
        with self.lock:
            return self.notes.get(key)

    def reset(self, expected: int = 0) -> None:
        with self.lock:
            self.notes.clear()
            self.expected = expected
            self._arrived = 0
            self.max_inside = 0
            self._inside = 0
            self._event = None
            self._loop = None

    async def gather(self) -> bool:
        """Wait (bounded) until ``expected`` requests are inside at the same time."""
        loop = asyncio.get_running_loop()
        if self._event is None or self._loop is not loop:
            self._event, self._loop = asyncio.Event(), loop
        event = self._event
        self._arrived += 1
        self._inside += 1
        self.max_inside = max(self.max_inside, self._inside)
        if self._arrived >= self.expected:
            event.set()
        try:
            await asyncio.wait_for(event.wait(), GATHER_TIMEOUT)
            return True
        except asyncio.TimeoutError:
            return False
        finally:
            self._inside -= 1


def _stream_chunks(probe: Probe) -> AsyncIterator[bytes]:
    async def chunks() -> AsyncIterator[bytes]:
        for i in range(STREAM_CHUNKS):
            await asyncio.sleep(0.005)
            if i == STREAM_CHUNKS - 1:
                probe.note("last_chunk_ns", time.time_ns())
            yield b"chunk %d\n" % i

    return chunks()


def _endless(probe: Probe) -> AsyncIterator[bytes]:
    async def chunks() -> AsyncIterator[bytes]:
        probe.note("endless_started_ns", time.time_ns())
        try:
            for i in range(1000):  # 10 s at most
                yield b"tick %d\n" % i
                await asyncio.sleep(0.01)
            probe.note("endless_finished", True)
        except BaseException as exc:
            probe.note("endless_stopped", type(exc).__name__)
            probe.note("endless_stopped_ns", time.time_ns())
            raise

    return chunks()


# ----------------------------------------------------------------------------------- Starlette
def starlette_app(probe: Probe, middleware: Any = (), **app_kwargs: Any) -> Any:
    from starlette.applications import Starlette
    from starlette.background import BackgroundTask
    from starlette.requests import Request
    from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
    from starlette.routing import Route, WebSocketRoute
    from starlette.websockets import WebSocketDisconnect

    async def item(request: Request) -> JSONResponse:
        return JSONResponse({**seen(), "item_id": request.path_params["item_id"]})

    async def upload(request: Request) -> JSONResponse:
        before = seen()
        body = await request.body()
        return JSONResponse({**before, "size": len(body), "after": seen()})

    async def stream(request: Request) -> StreamingResponse:
        return StreamingResponse(_stream_chunks(probe), media_type="text/plain")

    async def endless(request: Request) -> StreamingResponse:
        return StreamingResponse(_endless(probe), media_type="text/plain")

    async def boom(request: Request) -> None:
        raise RuntimeError("the app failed")

    async def teapot(request: Request) -> PlainTextResponse:
        return PlainTextResponse("short and stout", status_code=418)

    async def gather(request: Request) -> JSONResponse:
        return JSONResponse({**seen(), "gathered": await probe.gather()})

    def task() -> None:  # a sync task: Starlette runs it in its thread pool
        probe.note("background", {**seen(), "at_ns": time.time_ns()})

    async def background(request: Request) -> PlainTextResponse:
        probe.note("handler", seen())
        return PlainTextResponse("done", background=BackgroundTask(task))

    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        probe.note("ws", seen())
        try:
            while True:
                text = await websocket.receive_text()
                await websocket.send_text(f"echo {text}")
        except WebSocketDisconnect:
            probe.note("ws_closed_ns", time.time_ns())

    async def app_500(request: Request, exc: Exception) -> PlainTextResponse:
        return PlainTextResponse("app says no", status_code=500)

    return Starlette(
        routes=[
            Route("/items/{item_id}", item),
            Route("/upload", upload, methods=["POST"]),
            Route("/stream", stream),
            Route("/endless", endless),
            Route("/boom", boom),
            Route("/teapot", teapot),
            Route("/gather", gather),
            Route("/background", background),
            WebSocketRoute("/ws", ws),
        ],
        middleware=list(middleware),
        exception_handlers={500: app_500},
        **app_kwargs,
    )


# ------------------------------------------------------------------------------------- FastAPI
def fastapi_app(probe: Probe, middleware: Any = ()) -> Any:
    # FastAPI reads the endpoints' (string) annotations from this module's globals.
    from fastapi import FastAPI, WebSocketDisconnect
    from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
    from starlette.middleware import Middleware

    mw: list[Middleware] = list(middleware)

    async def app_500(request: FastAPIRequest, exc: Exception) -> PlainTextResponse:
        return PlainTextResponse("app says no", status_code=500)

    app = FastAPI(middleware=mw, exception_handlers={500: app_500})

    @app.get("/items/{item_id}")
    async def item(item_id: str) -> dict[str, Any]:
        return {**seen(), "item_id": item_id}

    @app.post("/upload")
    async def upload(request: FastAPIRequest) -> dict[str, Any]:
        before = seen()
        body = await request.body()
        return {**before, "size": len(body), "after": seen()}

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        return StreamingResponse(_stream_chunks(probe), media_type="text/plain")

    @app.get("/endless")
    async def endless() -> StreamingResponse:
        return StreamingResponse(_endless(probe), media_type="text/plain")

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("the app failed")

    @app.get("/teapot")
    async def teapot() -> PlainTextResponse:
        return PlainTextResponse("short and stout", status_code=418)

    @app.get("/gather")
    async def gather() -> JSONResponse:
        return JSONResponse({**seen(), "gathered": await probe.gather()})

    def task() -> None:
        probe.note("background", {**seen(), "at_ns": time.time_ns()})

    @app.get("/background")
    async def background(tasks: BackgroundTasks) -> PlainTextResponse:
        probe.note("handler", seen())
        tasks.add_task(task)
        return PlainTextResponse("done")

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        probe.note("ws", seen())
        try:
            while True:
                text = await websocket.receive_text()
                await websocket.send_text(f"echo {text}")
        except WebSocketDisconnect:
            probe.note("ws_closed_ns", time.time_ns())

    return app


# ----------------------------------------------------------------------------------- raw ASGI
def raw_app(probe: Probe) -> Any:
    """A hand-written ASGI 3 callable: no framework, its own routing and lifespan."""

    async def respond(send: Any, status: int, body: bytes, ctype: bytes = b"text/plain") -> None:
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", ctype), (b"content-length", b"%d" % len(body))],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def read_body(receive: Any) -> bytes:
        parts = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            parts.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        return b"".join(parts)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if kind == "websocket":
            await receive()  # websocket.connect
            await send({"type": "websocket.accept"})
            probe.note("ws", seen())
            while True:
                message = await receive()
                if message["type"] == "websocket.disconnect":
                    probe.note("ws_closed_ns", time.time_ns())
                    return
                await send({"type": "websocket.send", "text": f"echo {message.get('text')}"})
        path: str = scope["path"]
        if path.startswith("/items/"):
            body = json.dumps({**seen(), "item_id": path[len("/items/") :]}).encode()
            await respond(send, 200, body, b"application/json")
        elif path == "/upload":
            before = seen()
            data = await read_body(receive)
            body = json.dumps({**before, "size": len(data), "after": seen()}).encode()
            await respond(send, 200, body, b"application/json")
        elif path in ("/stream", "/endless"):
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"text/plain")],
                }
            )
            chunks = _stream_chunks(probe) if path == "/stream" else _endless(probe)
            gone = asyncio.Event()

            async def watch() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                gone.set()

            watcher = asyncio.ensure_future(watch())
            try:
                async for chunk in chunks:
                    if gone.is_set():
                        await chunks.aclose()  # type: ignore[attr-defined]
                        return
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b""})
            finally:
                watcher.cancel()
        elif path == "/boom":
            raise RuntimeError("the app failed")
        elif path == "/teapot":
            await respond(send, 418, b"short and stout")
        elif path == "/gather":
            gathered = await probe.gather()
            await respond(send, 200, json.dumps({**seen(), "gathered": gathered}).encode())
        else:
            await respond(send, 404, b"not found")

    return app


APPS = {"starlette": starlette_app, "fastapi": fastapi_app, "raw": raw_app}


# ------------------------------------------------------------------------------ test helpers
def http_client(**kwargs: Any) -> Any:
    """An httpx client for the plain-HTTP test servers. ``verify=False`` skips loading the CA
    bundle, which costs a quarter of a second per client and checks nothing over plain HTTP."""
    import httpx

    kwargs.setdefault("timeout", 10)
    return httpx.Client(verify=False, **kwargs)


def fetch(url: str, **kwargs: Any) -> Any:
    """One GET on a connection of its own."""
    with http_client() as client:
        return client.get(url, **kwargs)


class SpanSink:
    """An SDK provider whose finished spans land in memory (shareable across a module)."""

    def __init__(self) -> None:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))

    def spans(self) -> list[Any]:
        return list(self.exporter.get_finished_spans())

    def server_spans(self) -> list[Any]:
        return [s for s in self.spans() if s.kind == trace.SpanKind.SERVER]

    def clear(self) -> None:
        self.exporter.clear()

    def of_trace(self, trace_id: str, timeout: float = 10.0) -> Any:
        """The one SERVER span of ``trace_id`` once it ended (a span ends after the last byte
        went out, so it can land a moment after the client read the response)."""
        from tests.support.servers import wait_for

        wanted = int(trace_id, 16)
        found = wait_for(
            lambda: [s for s in self.server_spans() if s.context.trace_id == wanted],
            timeout=timeout,
        )
        assert len(found) == 1, f"{len(found)} server spans in trace {trace_id}"
        return found[0]

    def wait_count(self, n: int, timeout: float = 10.0) -> list[Any]:
        from tests.support.servers import wait_for

        return wait_for(  # type: ignore[no-any-return]
            lambda: spans if len(spans := self.server_spans()) >= n else None, timeout=timeout
        )


def new_ids() -> tuple[str, str]:
    """A fresh (trace id, parent span id) pair in lowercase hex."""
    import secrets

    return secrets.token_hex(16), secrets.token_hex(8)


def traceparent(trace_id: str, parent_id: str, flags: str = "01") -> str:
    return f"00-{trace_id}-{parent_id}-{flags}"


def serve(app: Any, server: str, **config: Any) -> Any:
    """A started-on-enter server thread of kind ``server`` ("uvicorn" or "hypercorn")."""
    from tests.support.servers import HypercornThread, UvicornThread

    if server == "uvicorn":
        return UvicornThread(app, **config)
    if server == "hypercorn":
        return HypercornThread(app)
    raise ValueError(server)


COMBOS = [(app, server) for app in APPS for server in ("uvicorn", "hypercorn")]


class Service:
    """One app behind ``TracewireMiddleware`` on a running server, with its sink and probe."""

    def __init__(self, kind: str, server: str, url: str, sink: SpanSink, probe: Probe) -> None:
        self.kind = kind
        self.server = server
        self.url = url
        self.sink = sink
        self.probe = probe
        self.client = http_client(base_url=url)

    def get(self, path: str, headers: Any = None) -> Any:
        return self.client.get(path, headers=headers)

    def get_once(self, path: str, headers: Any = None) -> Any:
        """On a connection of its own: servers close the connection of a request whose app
        raised, and a pooled client could pick that dying connection for its next request."""
        return fetch(self.url + path, headers=headers)

    def fresh(self, expected: int = 0) -> Service:
        self.sink.clear()
        self.probe.reset(expected)
        return self


@contextlib.contextmanager
def running_service(
    kind: str, server: str, settings: Any = None, **config: Any
) -> Iterator[Service]:
    """``APPS[kind]`` wrapped in ``TracewireMiddleware`` and served by ``server``."""
    from tracewire import TracewireMiddleware

    sink, probe = SpanSink(), Probe()
    app = TracewireMiddleware(APPS[kind](probe), settings=settings, tracer_provider=sink.provider)
    with serve(app, server, **config) as running:
        svc = Service(kind, server, running.url, sink, probe)
        try:
            yield svc
        finally:
            svc.client.close()
            sink.provider.shutdown()


def websocket_session(
    host: str, port: int, path: str, headers: list[tuple[str, str]], texts: list[str]
) -> list[str]:
    """Open a WebSocket (wsproto over a plain socket), send ``texts``, return the replies, close
    cleanly. Every socket read is bounded by a timeout."""
    import socket

    from wsproto import ConnectionType, WSConnection
    from wsproto.events import (
        AcceptConnection,
        CloseConnection,
        Event,
        RejectConnection,
        Request,
        TextMessage,
    )

    ws = WSConnection(ConnectionType.CLIENT)
    replies: list[str] = []
    with socket.create_connection((host, port), timeout=5) as sock:

        def next_event() -> Event:
            while True:
                for event in ws.events():
                    return event
                data = sock.recv(65536)
                if not data:
                    raise ConnectionError("server closed the socket")
                ws.receive_data(data)

        extra = [(k.encode(), v.encode()) for k, v in headers]
        sock.sendall(ws.send(Request(host=f"{host}:{port}", target=path, extra_headers=extra)))
        event = next_event()
        if isinstance(event, RejectConnection):
            raise ConnectionError(f"rejected with {event.status_code}")
        assert isinstance(event, AcceptConnection), event
        for text in texts:
            sock.sendall(ws.send(TextMessage(data=text)))
            reply = next_event()
            assert isinstance(reply, TextMessage), reply
            replies.append(reply.data)
        sock.sendall(ws.send(CloseConnection(code=1000)))
        while not isinstance(next_event(), CloseConnection):
            pass
    return replies

"""Drive ASGI and WSGI apps in-process, and answer client requests without any network.

The middlewares are the real ones; only the server in front of them is replaced by a few lines
that build the scope / environ the protocol specifies and collect what the app sends back.
The client helpers are real httpx transports and requests adapters that answer from memory
(``httpx.MockTransport``, a small ``BaseAdapter``), recording what they were asked to send.
"""

from __future__ import annotations

import asyncio
import io
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import requests
from requests.adapters import BaseAdapter

ASGI_TIMEOUT = 10.0

Headers = Sequence[tuple[str, str]]


# ----------------------------------------------------------------------------------- ASGI
def asgi_scope(
    *,
    kind: str = "http",
    method: str = "GET",
    path: str = "/",
    raw_path: bytes | None = None,
    query: bytes = b"",
    headers: Headers = (),
    server: tuple[str, int] | None = ("127.0.0.9", 8009),
    client: tuple[str, int] | None = ("127.0.0.2", 50000),
    scheme: str | None = None,
) -> dict[str, Any]:
    """An ASGI 3 ``http`` or ``websocket`` scope as a server builds it (lowercase names)."""
    scope: dict[str, Any] = {
        "type": kind,
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "scheme": scheme or ("ws" if kind == "websocket" else "http"),
        "path": path,
        "raw_path": raw_path if raw_path is not None else path.encode("utf-8"),
        "query_string": query,
        "root_path": "",
        "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers],
    }
    if kind == "http":
        scope["method"] = method
    if server is not None:
        scope["server"] = server
    if client is not None:
        scope["client"] = client
    return scope


@dataclass
class AsgiResult:
    """What the app sent, and what escaped it."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    error: BaseException | None = None

    @property
    def status(self) -> int | None:
        for message in self.messages:
            if message["type"] == "http.response.start":
                return int(message["status"])
        return None

    @property
    def body(self) -> bytes:
        return b"".join(
            m.get("body", b"") for m in self.messages if m["type"] == "http.response.body"
        )


def run_asgi(
    app: Any, scope: dict[str, Any], body: bytes = b"", incoming: Iterable[dict[str, Any]] = ()
) -> AsgiResult:
    """Call ``app(scope, receive, send)`` once, in a fresh event loop, bounded in time.

    ``receive`` gives ``incoming`` (default: the body as one ``http.request``, or
    ``websocket.connect``), then the disconnect message of the scope's type.
    """
    queue = list(incoming) or (
        [{"type": "http.request", "body": body, "more_body": False}]
        if scope["type"] == "http"
        else [{"type": "websocket.connect"}]
    )
    gone = (
        {"type": "http.disconnect"}
        if scope["type"] == "http"
        else {
            "type": "websocket.disconnect",
            "code": 1000,
        }
    )
    result = AsgiResult()

    async def receive() -> dict[str, Any]:
        if queue:
            return queue.pop(0)
        return gone

    async def send(message: Any) -> None:
        result.messages.append(dict(message))

    async def main() -> None:
        try:
            await asyncio.wait_for(app(scope, receive, send), ASGI_TIMEOUT)
        except Exception as exc:
            result.error = exc

    asyncio.run(main())
    return result


async def respond(send: Any, status: int, body: bytes = b"", headers: Headers = ()) -> None:
    """Send a whole ASGI HTTP response."""
    encoded = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]
    await send({"type": "http.response.start", "status": status, "headers": encoded})
    await send({"type": "http.response.body", "body": body})


# ----------------------------------------------------------------------------------- WSGI
def wsgi_environ(
    *,
    method: str = "GET",
    path: str = "/",
    query: str = "",
    headers: Headers = (),
    server_name: str | None = "127.0.0.9",
    server_port: str | None = "8009",
    scheme: str = "http",
    remote_addr: str = "127.0.0.2",
    body: bytes = b"",
) -> dict[str, Any]:
    """A PEP 3333 environ; header ``X-Y`` becomes ``HTTP_X_Y`` (a repeated one is joined
    with ``", "``, as servers do)."""
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": "",
        "PATH_INFO": path.encode("utf-8").decode("latin-1"),
        "QUERY_STRING": query,
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": remote_addr,
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scheme,
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    if server_name is not None:
        environ["SERVER_NAME"] = server_name
    if server_port is not None:
        environ["SERVER_PORT"] = server_port
    if body:
        environ["CONTENT_LENGTH"] = str(len(body))
    for name, value in headers:
        key = name.upper().replace("-", "_")
        if key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            key = "HTTP_" + key
        environ[key] = f"{environ[key]}, {value}" if key in environ else value
    return environ


@dataclass
class WsgiResult:
    status: str | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    error: BaseException | None = None


def run_wsgi(app: Any, environ: dict[str, Any]) -> WsgiResult:
    """Call a WSGI app as a server does: iterate the body, then ``close()`` it."""
    result = WsgiResult()

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        result.status = status
        result.headers = list(headers)
        return lambda data: None

    try:
        body = app(environ, start_response)
        try:
            result.body = b"".join(body)
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()
    except Exception as exc:
        result.error = exc
    return result


# --------------------------------------------------------------------------------- clients
@dataclass
class Seen:
    """One request a local transport / adapter answered."""

    method: str
    url: str
    headers: dict[str, str]


def mock_transport(
    seen: list[Seen], answer: Callable[[httpx.Request], int] = lambda request: 200
) -> httpx.MockTransport:
    """An httpx transport answering from memory with ``answer(request)`` as the status."""

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(Seen(request.method, str(request.url), dict(request.headers.items())))
        return httpx.Response(answer(request), content=b"ok")

    return httpx.MockTransport(handler)


class LocalAdapter(BaseAdapter):
    """A requests transport adapter that answers from memory (no socket is opened)."""

    def __init__(
        self,
        seen: list[Seen],
        answer: Callable[[requests.PreparedRequest], int] = lambda request: 200,
    ) -> None:
        super().__init__()
        self.seen = seen
        self.answer = answer

    def send(  # type: ignore[override]
        self, request: requests.PreparedRequest, **kwargs: Any
    ) -> requests.Response:
        headers: Mapping[str, str] = request.headers
        self.seen.append(Seen(request.method or "", request.url or "", dict(headers.items())))
        response = requests.Response()
        response.status_code = self.answer(request)
        response.url = request.url or ""
        response.request = request
        response.raw = io.BytesIO(b"ok")
        return response

    def close(self) -> None:
        pass

"""A plain HTTP server (no tracing) that answers with the request headers it received.

Used as the destination of outgoing calls: what it echoes is what went over the wire. It
binds to any loopback address (``127.0.0.3`` ...), so host-based rules (``propagate_to``,
``inject_to``) can be told apart by the destination's address. ``/redirect?to=URL`` answers
``302`` to ``URL`` (the request is recorded all the same).
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

from tests.support.servers import free_port, port_open, wait_for


def _headers(handler: BaseHTTPRequestHandler) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for name, value in handler.headers.items():
        found.setdefault(name.lower(), []).append(value)
    return found


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body are separate writes: without this, Nagle's algorithm and the client's
    # delayed ACK stall every keep-alive response by ~40 ms.
    disable_nagle_algorithm = True
    server: _Server

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        seen = {"path": self.path, "method": self.command, "headers": _headers(self)}
        self.server.seen.append(seen)
        body = json.dumps(seen).encode()
        if self.path.startswith("/redirect?to="):
            self.send_response(302)
            self.send_header("location", unquote(self.path.partition("=")[2]))
        else:
            self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = _answer
    do_POST = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    seen: list[dict[str, Any]]


class EchoServer:
    """``with EchoServer("127.0.0.3") as echo: ... echo.url ... echo.seen``"""

    def __init__(self, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.url = f"http://{host}:{self.port}"
        self.server = _Server((host, self.port), _Handler)
        self.server.seen = []
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def seen(self) -> list[dict[str, Any]]:
        return self.server.seen

    def __enter__(self) -> EchoServer:
        self.thread.start()
        wait_for(lambda: port_open(self.host, self.port), timeout=10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)

"""A real HTTP server on 127.0.0.1 that fails the first attempts of a request on purpose.

``FlakyServer`` answers ``503`` to the first ``fail_first`` requests of a path and ``200``
after that, and records the headers of every attempt, so a test can check what each retry
carried. Started bound but not listening (``listening=False``), it refuses connections until
``listen()`` is called: a connection-refused attempt that a later retry gets through.
"""

from __future__ import annotations

import socketserver
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.support.servers import HOST, wait_for


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        status = self.server.owner.record(self.command, self.path, self.headers.items())
        body = b"ok" if status == 200 else b"try again"
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: FlakyServer

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks the host's name up (getfqdn): no lookups here.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = HOST, int(self.server_address[1])


class Attempt:
    """One request the server received."""

    def __init__(self, method: str, path: str, headers: list[tuple[str, str]], status: int):
        self.method = method
        self.path = path
        self.headers = headers
        self.status = status

    def values(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name]


class FlakyServer:
    """See the module docstring. Use as a context manager; ``url`` is ``http://host:port``."""

    def __init__(self, fail_first: int = 0, *, listening: bool = True) -> None:
        self.fail_first = fail_first
        self.attempts: list[Attempt] = []
        self._lock = threading.Lock()
        self._server = _Server((HOST, 0), _Handler, bind_and_activate=False)
        self._server.owner = self
        self._server.server_bind()
        self.port = int(self._server.server_address[1])
        self.url = f"http://{HOST}:{self.port}"
        self._thread: threading.Thread | None = None
        self._listening = False
        if listening:
            self.listen()

    def record(self, method: str, path: str, headers: Any) -> int:
        with self._lock:
            seen = sum(1 for a in self.attempts if a.path == path)
            status = 503 if seen < self.fail_first else 200
            self.attempts.append(Attempt(method, path, list(headers), status))
            return status

    def listen(self) -> None:
        """Start accepting connections (until now they were refused)."""
        if self._listening:
            return
        self._listening = True
        self._server.server_activate()
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.01},
            daemon=True,
            name="flaky-server",
        )
        self._thread.start()
        wait_for(lambda: self._thread is not None and self._thread.is_alive(), timeout=10)

    def __enter__(self) -> FlakyServer:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._listening:
            self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

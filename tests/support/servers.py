"""Real servers on 127.0.0.1 with free ports, for tests and benchmarks.

Every start waits on a condition (the server says it is serving, or its port accepts a
connection) with a deadline; nothing sleeps and hopes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

HOST = "127.0.0.1"


def free_port(host: str = HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for(condition: Callable[[], Any], timeout: float = 10.0, interval: float = 0.01) -> Any:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout}s: {condition!r}")
        time.sleep(interval)


def port_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


class ServerThread:
    """Base: a server running in a daemon thread; ``url`` once started."""

    def __init__(self, host: str = HOST, port: int | None = None) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.url = f"http://{host}:{self.port}"
        self.thread: threading.Thread | None = None

    def __enter__(self) -> ServerThread:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError


class UvicornThread(ServerThread):
    """An ASGI app under uvicorn, in a thread with its own event loop."""

    def __init__(self, app: Any, host: str = HOST, port: int | None = None, **config: Any) -> None:
        super().__init__(host, port)
        import uvicorn

        config.setdefault("log_level", "warning")
        config.setdefault("lifespan", "off")
        self.server = uvicorn.Server(uvicorn.Config(app, host=self.host, port=self.port, **config))

    def start(self) -> None:
        self.thread = threading.Thread(target=self.server.run, daemon=True, name="uvicorn")
        self.thread.start()
        wait_for(lambda: self.server.started or not self.thread.is_alive(), timeout=15)  # type: ignore[union-attr]
        if not self.server.started:
            raise RuntimeError("uvicorn failed to start")

    def stop(self) -> None:
        self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(timeout=15)


class HypercornThread(ServerThread):
    """An ASGI app under hypercorn (asyncio worker), in a thread with its own event loop."""

    def __init__(self, app: Any, host: str = HOST, port: int | None = None) -> None:
        super().__init__(host, port)
        self.app = app
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None

    def _run(self) -> None:
        from hypercorn.asyncio import serve
        from hypercorn.config import Config

        config = Config()
        config.bind = [f"{self.host}:{self.port}"]
        config.loglevel = "WARNING"
        config.accesslog = None
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._stop = asyncio.Event()
        stop = self._stop
        try:
            loop.run_until_complete(serve(self.app, config, shutdown_trigger=stop.wait))  # type: ignore[arg-type]
        finally:
            loop.close()

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, daemon=True, name="hypercorn")
        self.thread.start()
        wait_for(lambda: port_open(self.host, self.port) or not self.thread.is_alive(), timeout=15)  # type: ignore[union-attr]

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self.thread is not None:
            self.thread.join(timeout=15)


class WerkzeugThread(ServerThread):
    """A WSGI app under werkzeug's threaded development server."""

    def __init__(self, app: Any, host: str = HOST, port: int | None = None) -> None:
        super().__init__(host, port)
        from werkzeug.serving import make_server

        self.server = make_server(self.host, self.port, app, threaded=True)
        self._count_handlers()

    def _count_handlers(self) -> None:
        """Count the requests in flight, so that ``stop`` can wait for them to end.

        A WSGI span ends when the server closes the response, which may come after the client
        has read it; the server's handler threads are daemons that ``server_close`` does not
        join, so without this a test could read the spans before the last one ended.
        """
        self._in_flight = 0
        lock = threading.Lock()
        server = self.server
        start_handler, run_handler = server.process_request, server.process_request_thread

        def process_request(request: Any, address: Any) -> None:
            with lock:
                self._in_flight += 1
            start_handler(request, address)

        def process_request_thread(request: Any, address: Any) -> None:
            try:
                run_handler(request, address)
            finally:
                with lock:
                    self._in_flight -= 1

        server.process_request = process_request  # type: ignore[method-assign]
        server.process_request_thread = process_request_thread  # type: ignore[method-assign]

    def start(self) -> None:
        self.thread = threading.Thread(
            target=self.server.serve_forever,
            kwargs={"poll_interval": 0.01},
            daemon=True,
            name="werkzeug",
        )
        self.thread.start()
        wait_for(lambda: port_open(self.host, self.port), timeout=15)

    def stop(self) -> None:
        self.server.shutdown()
        if self.thread is not None:
            self.thread.join(timeout=15)
        # After shutdown no request starts; the ones started end (their spans too) first.
        wait_for(lambda: self._in_flight == 0, timeout=15)
        self.server.server_close()


class SubprocessServer:
    """A server in a child process (gunicorn, uvicorn CLI, ...), ready when its port accepts.

    ``{port}`` in ``argv`` is replaced by the chosen port. On failure the log tail is in the
    exception message.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        host: str = HOST,
        port: int | None = None,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.url = f"http://{host}:{self.port}"
        self.argv = [a.replace("{port}", str(self.port)).replace("{host}", host) for a in argv]
        self.env = {**os.environ, **(env or {})}
        self.cwd = cwd
        self.timeout = timeout
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in __exit__
        self.proc: subprocess.Popen[bytes] | None = None

    def log_tail(self, lines: int = 40) -> str:
        self.log.seek(0)
        return "\n".join(self.log.read().decode("utf-8", "replace").splitlines()[-lines:])

    def __enter__(self) -> SubprocessServer:
        self.proc = subprocess.Popen(
            self.argv, stdout=self.log, stderr=subprocess.STDOUT, env=self.env, cwd=self.cwd
        )
        try:
            wait_for(
                lambda: port_open(self.host, self.port) or self.proc.poll() is not None,  # type: ignore[union-attr]
                timeout=self.timeout,
            )
        except TimeoutError:
            self.__exit__()
            raise RuntimeError(f"server did not start: {self.argv}\n{self.log_tail()}") from None
        if self.proc.poll() is not None:
            raise RuntimeError(f"server exited early: {self.argv}\n{self.log_tail()}")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)
        self.log.close()


PYTHON = sys.executable


@contextlib.contextmanager
def serving(server: ServerThread) -> Iterator[ServerThread]:
    server.start()
    try:
        yield server
    finally:
        server.stop()

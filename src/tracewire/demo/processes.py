"""Start the demo's services as child processes, wait until they answer, always stop them.

Usage::

    with ServiceGroup() as group:
        group.add(Service("my-server", argv, port, env))
        group.start_all(timeout=30)      # ServiceFailed with the log tail if one does not come up
        ...
    # every process is terminated (then killed if it lingers) on the way out, whatever happened
"""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from typing import IO

import httpx

__all__ = ["Service", "ServiceFailed", "ServiceGroup", "free_port"]

HOST = "127.0.0.1"
STOP_TIMEOUT = 10.0
POLL_INTERVAL = 0.05


def free_port(host: str = HOST) -> int:
    """A port nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class ServiceFailed(RuntimeError):
    """A service did not come up, or died; the message ends with its log tail."""

    def __init__(self, service: Service, reason: str) -> None:
        tail = service.log_tail()
        text = f"{service.name} {reason}"
        if tail:
            indented = "\n".join("    " + line for line in tail.splitlines())
            text += f"\n  last lines of its log:\n{indented}"
        super().__init__(text)
        self.service = service


class Service:
    """One child process serving HTTP on ``HOST:port``, ready when ``health_path`` answers 200.

    Args:
        name: the service name, for messages.
        argv: the command line.
        port: the port the command makes it listen on.
        env: the complete environment of the child.
        health_path: a path answered with 200 once the app is loaded.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        port: int,
        env: Mapping[str, str],
        health_path: str = "/health",
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.port = port
        self.env = dict(env)
        self.health_path = health_path
        self.url = f"http://{HOST}:{port}"
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> None:
        # Closed in wait_stopped: the log must outlive start() for the failure report.
        self._log = tempfile.TemporaryFile(prefix=f"tracewire-demo-{self.name}-")  # noqa: SIM115
        try:
            self.process = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                env=self.env,
            )
        except OSError as exc:
            raise ServiceFailed(self, f"could not be started ({self.argv[0]}): {exc}") from exc

    def ready(self, client: httpx.Client) -> bool:
        """One readiness probe; ``ServiceFailed`` if the process already exited."""
        if self.process is None:
            return False
        code = self.process.poll()
        if code is not None:
            raise ServiceFailed(self, f"exited with code {code} while starting")
        try:
            return client.get(self.url + self.health_path).status_code == 200
        except httpx.TransportError:
            return False

    def check_alive(self) -> None:
        if self.process is not None and (code := self.process.poll()) is not None:
            raise ServiceFailed(self, f"exited with code {code}")

    def log_tail(self, lines: int = 15) -> str:
        if self._log is None or self._log.closed:
            return ""
        self._log.seek(0)
        text = self._log.read().decode("utf-8", "replace")
        self._log.seek(0, os.SEEK_END)
        return "\n".join(text.splitlines()[-lines:])

    def terminate(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=STOP_TIMEOUT)

    def wait_stopped(self, timeout: float = STOP_TIMEOUT) -> None:
        if self.process is not None:
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=timeout)
        if self._log is not None:
            self._log.close()


class ServiceGroup:
    """The demo's services: started together, waited for together, stopped together."""

    def __init__(self) -> None:
        self.services: list[Service] = []

    def add(self, service: Service) -> Service:
        self.services.append(service)
        return service

    def start_all(self, timeout: float) -> None:
        """Start every service, then wait until all answer; bounded by ``timeout`` seconds."""
        for service in self.services:
            service.start()
        deadline = time.monotonic() + timeout
        waiting = list(self.services)
        with httpx.Client(timeout=2.0) as client:
            while waiting:
                waiting = [s for s in waiting if not s.ready(client)]
                if not waiting:
                    break
                if time.monotonic() > deadline:
                    raise ServiceFailed(waiting[0], f"did not answer within {timeout:g}s")
                time.sleep(POLL_INTERVAL)

    def check_alive(self) -> None:
        for service in self.services:
            service.check_alive()

    def stop_all(self) -> None:
        # Terminate all first so they shut down in parallel, then reap each (kill if stuck).
        try:
            for service in self.services:
                service.terminate()
            for service in self.services:
                service.wait_stopped()
        except BaseException:
            # A second Ctrl-C while waiting: no more patience, but no orphans either.
            for service in self.services:
                service.kill()
            raise

    def __enter__(self) -> ServiceGroup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()

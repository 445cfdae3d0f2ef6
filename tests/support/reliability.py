"""Shared pieces of the reliability suites: server command lines, environments, waiting."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from tests.support.servers import PYTHON, SubprocessServer, wait_for

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(PYTHON)
GUNICORN = os.path.join(BIN, "gunicorn")
APPS = "tests.support.reliability_apps"
GUNICORN_CONF = "python:tests.support.reliability_gunicorn_conf"

# Each server as its users start it, serving the app of tests.support.reliability_apps.
SERVERS: dict[str, list[str]] = {
    "uvicorn": [
        PYTHON, "-m", "uvicorn", f"{APPS}:asgi_app",
        "--host", "{host}", "--port", "{port}", "--log-level", "warning",
    ],
    # With workers, each worker imports the app inside uvicorn's signal capture (the handler
    # tracewire chains to is uvicorn's own); without, the app is imported before it.
    "uvicorn-workers": [
        PYTHON, "-m", "uvicorn", f"{APPS}:asgi_app", "--workers", "2",
        "--host", "{host}", "--port", "{port}", "--log-level", "warning",
    ],
    "hypercorn": [PYTHON, "-m", "hypercorn", f"{APPS}:asgi_app", "-b", "{host}:{port}"],
    "gunicorn-sync": [
        GUNICORN, "-c", GUNICORN_CONF, "-k", "sync", "-w", "1",
        "-b", "{host}:{port}", "--graceful-timeout", "20", f"{APPS}:wsgi_app",
    ],
    "gunicorn-gthread": [
        GUNICORN, "-c", GUNICORN_CONF, "-k", "gthread", "--threads", "4", "-w", "1",
        "-b", "{host}:{port}", "--graceful-timeout", "20", f"{APPS}:wsgi_app",
    ],
    # --preload: configure runs in the master, before the fork.
    "gunicorn-sync-preload": [
        GUNICORN, "-c", GUNICORN_CONF, "-k", "sync", "-w", "1", "--preload",
        "-b", "{host}:{port}", "--graceful-timeout", "20", f"{APPS}:wsgi_app",
    ],
    "werkzeug": [PYTHON, "-m", APPS, "werkzeug", "{host}", "{port}"],
    "django": [
        PYTHON, "-m", "django", "runserver", "--noreload", "{host}:{port}",
        "--settings=tests.support.reliability_django",
    ],
}  # fmt: skip

HELLO = {"django": "/hello"}  # every other app answers /hello too


def new_ids() -> tuple[str, str]:
    return secrets.token_hex(16), secrets.token_hex(8)


def traceparent(trace_id: str, parent_id: str, flags: str = "01") -> str:
    return f"00-{trace_id}-{parent_id}-{flags}"


def server_env(endpoint: str | None, **extra: str) -> dict[str, str]:
    """The environment of a server subprocess: OTLP to ``endpoint``, the repo importable."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("OTEL_", "TRACEWIRE_", "RELIABILITY_"))
    }
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    if endpoint is not None:
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = endpoint
    env.update(extra)
    return env


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@contextmanager
def running(name: str, env: dict[str, str], argv: list[str] | None = None) -> Iterator[Any]:
    """A server subprocess, ready when its app answers ``/hello``; stopped by PID at the end."""
    server = SubprocessServer(argv or SERVERS[name], env=env, cwd=ROOT, timeout=60)
    # SubprocessServer replaces os.environ's copy with ours merged over it: pass ours whole.
    server.env = env
    with server:
        wait_for(lambda: answers(server.url + "/hello"), timeout=60, interval=0.1)
        yield server


def terminate(server: Any, timeout: float = 60.0) -> tuple[int, float]:
    """SIGTERM to the server's PID; its exit status and how long it took to exit."""
    proc: subprocess.Popen[bytes] = server.proc
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=timeout)
    return code, time.monotonic() - started

"""Two tiny apps, one per protocol, for tests about what tracewire records rather than about
the app: every path answers 200 with ``x-resp`` set twice, except ``/boom`` (the app raises)
and ``/wait`` (blocks until ``GATE`` is set, so a test can look while the request is active)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterable
from typing import Any

GATE = threading.Event()
ENTERED = threading.Event()
GATE_TIMEOUT = 10.0


class Boom(RuntimeError):
    pass


async def asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    path = scope["path"]
    if path == "/boom":
        raise Boom("the app failed")
    if path == "/wait":
        ENTERED.set()
        await asyncio.get_running_loop().run_in_executor(None, GATE.wait, GATE_TIMEOUT)
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"text/plain"),
                (b"x-resp", b"one"),
                (b"x-resp", b"two"),
                (b"x-secret-token", b"hidden"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": b"ok"})


def wsgi_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    path = environ["PATH_INFO"]
    if path == "/boom":
        raise Boom("the app failed")
    if path == "/wait":
        ENTERED.set()
        GATE.wait(GATE_TIMEOUT)
    start_response(
        "200 OK",
        [
            ("Content-Type", "text/plain"),
            ("X-Resp", "one"),
            ("X-Resp", "two"),
            ("X-Secret-Token", "hidden"),
        ],
    )
    return [b"ok"]


def reset_gate() -> None:
    GATE.clear()
    ENTERED.clear()

"""Any ASGI 3 app (Quart, Litestar, your own callable): wrap it.

Run::

    python examples/raw_asgi.py                 # then: curl http://127.0.0.1:8000/hello
"""

from __future__ import annotations

import os
from typing import Any

import uvicorn
from opentelemetry.trace import TracerProvider

import tracewire.sdk
from tracewire import TracewireMiddleware


async def hello(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain")],
        }
    )
    await send({"type": "http.response.body", "body": b"hello\n"})


def create_app(tracer_provider: TracerProvider | None = None) -> TracewireMiddleware:
    return TracewireMiddleware(hello, tracer_provider=tracer_provider)  # <- the line


if __name__ == "__main__":
    tracewire.sdk.configure(service_name="raw-asgi-example")
    uvicorn.run(
        create_app(), host="127.0.0.1", port=int(os.environ.get("PORT", "8000")), lifespan="off"
    )

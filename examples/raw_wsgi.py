"""Any WSGI app (Falcon, Bottle, Pyramid, your own callable): wrap it.

Run::

    python examples/raw_wsgi.py                 # then: curl http://127.0.0.1:8000/hello
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import make_server

from opentelemetry.trace import TracerProvider

import tracewire.sdk
from tracewire import TracewireWSGIMiddleware


def hello(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello\n"]


def create_app(tracer_provider: TracerProvider | None = None) -> TracewireWSGIMiddleware:
    return TracewireWSGIMiddleware(hello, tracer_provider=tracer_provider)  # <- the line


if __name__ == "__main__":
    tracewire.sdk.configure(service_name="raw-wsgi-example")
    make_server("127.0.0.1", int(os.environ.get("PORT", "8000")), create_app()).serve_forever()

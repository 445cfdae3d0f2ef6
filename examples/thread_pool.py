"""A thread pool keeps the request's context with ``ContextExecutor`` (a plain
``ThreadPoolExecutor`` would lose it: its calls would start new traces), and each call gets
its own span, named after the function, a child of the request's span. ``wrap(fn)`` does the
same for a single callable, e.g. ``threading.Thread(target=wrap(fn))``.

Run::

    python examples/thread_pool.py              # then: curl http://127.0.0.1:8000/fan-out
"""

from __future__ import annotations

import os
from typing import Any

import requests
from flask import Flask, request
from opentelemetry.trace import TracerProvider

import tracewire.sdk
from tracewire.context import ContextExecutor
from tracewire.flask import Tracewire
from tracewire.requests import instrument_session


def create_app(tracer_provider: TracerProvider | None = None) -> Flask:
    app = Flask(__name__)
    Tracewire(app, tracer_provider=tracer_provider)
    session = instrument_session(requests.Session(), tracer_provider=tracer_provider)
    pool = ContextExecutor(max_workers=3)  # <- the line

    def fetch(url: str) -> int:  # each call: a span "create_app.<locals>.fetch"
        return session.get(url, timeout=10).status_code

    @app.get("/fan-out")
    def fan_out() -> dict[str, Any]:
        urls = [f"{request.host_url}part/{n}" for n in range(3)]
        return {"statuses": list(pool.map(fetch, urls))}

    @app.get("/part/<int:n>")
    def part(n: int) -> dict[str, int]:
        return {"part": n}

    return app


if __name__ == "__main__":
    tracewire.sdk.configure(service_name="thread-pool-example")
    create_app().run(host="127.0.0.1", port=int(os.environ.get("PORT", "8000")), threaded=True)

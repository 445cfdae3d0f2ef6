"""One setting for the whole process: ``tracewire.configure`` at start-up.

Every tracewire component built without settings uses it (middlewares, httpx and requests
hooks), and so does OpenTelemetry's own ``propagate`` API, which other instrumentations and
hand-written code (a message queue, say) inject with.

Run::

    python examples/propagators_configure.py
    curl -H 'X-B3-TraceId: 80f198ee56343ba864fe8b2a57d3eff7' \\
         -H 'X-B3-SpanId: e457b5a2e4d86bd1' -H 'X-B3-Sampled: 1' http://127.0.0.1:8000/
"""

from __future__ import annotations

import os

import requests
from flask import Flask, jsonify
from opentelemetry import propagate
from opentelemetry.trace import TracerProvider

import tracewire
import tracewire.requests
import tracewire.sdk
from tracewire.flask import Tracewire


def create_app(
    downstream: str | None = None, tracer_provider: TracerProvider | None = None
) -> Flask:
    tracewire.configure(propagators=["b3multi", "baggage"])  # <- the setting, once
    session = tracewire.requests.instrument_session(
        requests.Session(), tracer_provider=tracer_provider
    )
    app = Flask(__name__)
    Tracewire(app, tracer_provider=tracer_provider)

    @app.get("/")
    def home() -> object:
        message: dict[str, str] = {}
        propagate.inject(message)  # what a queue producer would put in a message's headers
        status = session.get(downstream).status_code if downstream else None
        return jsonify({"message_headers": message, "downstream_status": status})

    return app


if __name__ == "__main__":
    tracewire.sdk.configure(service_name="propagators-configure")
    create_app(os.environ.get("DOWNSTREAM_URL")).run(
        host="127.0.0.1", port=int(os.environ.get("PORT", "8000"))
    )

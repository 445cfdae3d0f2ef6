"""Propagators chosen in Flask's config: ``TRACEWIRE_*`` keys, read when ``Tracewire(app)`` runs
(they win over the environment).

Run::

    python examples/propagators_flask_config.py
    curl -H 'b3: 80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1' http://127.0.0.1:8000/hello
"""

from __future__ import annotations

import os

from flask import Flask
from opentelemetry.trace import TracerProvider

import tracewire.sdk
from tracewire.flask import Tracewire


def create_app(tracer_provider: TracerProvider | None = None) -> Flask:
    app = Flask(__name__)
    app.config["TRACEWIRE_PROPAGATORS"] = "tracecontext,b3,baggage"  # <- the setting
    app.config["TRACEWIRE_EXCLUDED_PATHS"] = "/health"
    Tracewire(app, tracer_provider=tracer_provider)

    @app.get("/hello")
    def hello() -> str:
        return "hello\n"

    @app.get("/health")
    def health() -> str:
        return "ok\n"

    return app


if __name__ == "__main__":
    tracewire.sdk.configure(service_name="propagators-flask-config")
    create_app().run(host="127.0.0.1", port=int(os.environ.get("PORT", "8000")))

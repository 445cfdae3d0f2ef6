"""Flask: ``Tracewire(app)``. Spans are named after the URL rule: ``GET /items/<int:item_id>``.

Run::

    python examples/flask_app.py                # then: curl http://127.0.0.1:8000/items/42
    gunicorn 'examples.flask_app:create_app()'  # or any WSGI server
"""

from __future__ import annotations

import os

from flask import Flask
from opentelemetry.trace import TracerProvider

import tracewire.sdk
from tracewire.flask import Tracewire


def create_app(tracer_provider: TracerProvider | None = None) -> Flask:
    app = Flask(__name__)
    Tracewire(app, tracer_provider=tracer_provider)  # <- the line

    @app.get("/items/<int:item_id>")
    def item(item_id: int) -> dict[str, int]:
        return {"item_id": item_id}

    return app


if __name__ == "__main__":
    tracewire.sdk.configure(service_name="flask-example")
    create_app().run(host="127.0.0.1", port=int(os.environ.get("PORT", "8000")))

"""Apps run under ``opentelemetry-instrument`` by tests/test_launcher*.py: no tracing code.

Each request makes one httpx and one requests call to the echo server at ``LAUNCHER_ECHO``
and answers with the headers the echo server saw. ``python launcher_app.py PORT`` serves the
Flask app under Flask's development server; ``uvicorn --factory`` serves the others.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import httpx
import requests


def calls() -> dict[str, Any]:
    echo = os.environ["LAUNCHER_ECHO"]
    via_httpx = httpx.get(f"{echo}/httpx", timeout=10).json()
    via_requests = requests.get(f"{echo}/requests", timeout=10).json()
    return {"httpx": via_httpx["headers"], "requests": via_requests["headers"]}


def flask_app() -> Any:
    import flask

    app = flask.Flask(__name__)

    @app.get("/items/<int:item_id>")
    def item(item_id: int) -> Any:
        return flask.jsonify(calls())

    return app


def starlette_app() -> Any:
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    def item(request: Any) -> JSONResponse:  # sync: Starlette runs it in a thread
        return JSONResponse(calls())

    return Starlette(routes=[Route("/items/{item_id}", item)])


def fastapi_app() -> Any:
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/items/{item_id}")
    def item(item_id: int) -> dict[str, Any]:
        return calls()

    return app


if __name__ == "__main__":
    flask_app().run(host="127.0.0.1", port=int(sys.argv[1]))

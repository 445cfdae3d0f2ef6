"""Starlette: one middleware line. Spans are named after the route: ``GET /items/{item_id}``.

Run::

    python examples/starlette_app.py            # then: curl http://127.0.0.1:8000/items/42

Spans go where ``tracewire.sdk.configure`` sends them: OTLP to http://localhost:4318 by default,
``OTEL_TRACES_EXPORTER=console`` to print them instead.
"""

from __future__ import annotations

import os

import uvicorn
from opentelemetry.trace import TracerProvider
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import tracewire.sdk
from tracewire import TracewireMiddleware


async def item(request: Request) -> JSONResponse:
    return JSONResponse({"item_id": request.path_params["item_id"]})


def create_app(tracer_provider: TracerProvider | None = None) -> Starlette:
    app = Starlette(routes=[Route("/items/{item_id}", item)])
    app.add_middleware(TracewireMiddleware, tracer_provider=tracer_provider)  # <- the line
    return app


if __name__ == "__main__":
    tracewire.sdk.configure(service_name="starlette-example")
    uvicorn.run(create_app(), host="127.0.0.1", port=int(os.environ.get("PORT", "8000")))

"""FastAPI: the same line as Starlette. Spans are named ``GET /items/{item_id}``.

Run::

    python examples/fastapi_app.py              # then: curl http://127.0.0.1:8000/items/42
"""

from __future__ import annotations

import inspect
import os
from typing import Any

import uvicorn
from fastapi import FastAPI
from opentelemetry.trace import TracerProvider

import tracewire.sdk
from tracewire import TracewireMiddleware

# Recent FastAPI versions make a SERVER span of their own once a global provider is set; next
# to tracewire's it would be a duplicate, so it is switched off where the option exists.
NO_NATIVE_TRACING: dict[str, Any] = (
    {"telemetry": {"tracing": False}}
    if "telemetry" in inspect.signature(FastAPI).parameters
    else {}
)


def create_app(tracer_provider: TracerProvider | None = None) -> FastAPI:
    app = FastAPI(**NO_NATIVE_TRACING)
    app.add_middleware(TracewireMiddleware, tracer_provider=tracer_provider)  # <- the line

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        return {"item_id": item_id}

    return app


if __name__ == "__main__":
    tracewire.sdk.configure(service_name="fastapi-example")
    uvicorn.run(create_app(), host="127.0.0.1", port=int(os.environ.get("PORT", "8000")))

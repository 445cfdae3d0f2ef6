"""Propagators chosen by the environment: nothing in code. Every tracewire class without
``settings=`` reads ``OTEL_PROPAGATORS`` (and ``TRACEWIRE_PROPAGATORS`` / ``_EXTRACT`` /
``_INJECT``, which win) once, when it is built.

Run::

    OTEL_PROPAGATORS=b3multi python examples/propagators_env.py
    curl -H 'X-B3-TraceId: 80f198ee56343ba864fe8b2a57d3eff7' -H 'X-B3-SpanId: e457b5a2e4d86bd1' \
         -H 'X-B3-Sampled: 1' http://127.0.0.1:8000/items/42
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
    app.add_middleware(TracewireMiddleware, tracer_provider=tracer_provider)  # settings: env

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        return {"item_id": item_id}

    return app


if __name__ == "__main__":
    tracewire.sdk.configure(service_name="propagators-from-env")
    uvicorn.run(create_app(), host="127.0.0.1", port=int(os.environ.get("PORT", "8000")))

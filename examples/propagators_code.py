"""Propagators chosen in code: read W3C and B3 from callers, send W3C and B3 multi onwards.

The setting is given once, to the middleware; the httpx transport has no settings of its own
and so sends what the app serving the request chose.

Run::

    python examples/propagators_code.py
    curl -H 'b3: 80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1' http://127.0.0.1:8000/
"""

from __future__ import annotations

import os

import httpx
import uvicorn
from opentelemetry.trace import TracerProvider
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import tracewire.sdk
from tracewire import TracewireMiddleware
from tracewire.httpx import AsyncTracewireTransport


def create_app(
    downstream: str | None = None, tracer_provider: TracerProvider | None = None
) -> Starlette:
    transport = AsyncTracewireTransport(tracer_provider=tracer_provider)  # no settings: the app's

    async def home(request: Request) -> JSONResponse:
        if downstream is None:
            return JSONResponse({"called": None})
        async with httpx.AsyncClient(transport=transport) as client:
            answer = await client.get(downstream)
        return JSONResponse({"called": downstream, "status": answer.status_code})

    app = Starlette(routes=[Route("/", home)])
    app.add_middleware(
        TracewireMiddleware,
        extract=["tracecontext", "b3"],  # <- the setting, once
        inject=["tracecontext", "b3multi"],
        tracer_provider=tracer_provider,
    )
    return app


if __name__ == "__main__":
    tracewire.sdk.configure(service_name="propagators-in-code")
    app = create_app(os.environ.get("DOWNSTREAM_URL"))
    uvicorn.run(app, host="127.0.0.1", port=int(os.environ.get("PORT", "8000")))

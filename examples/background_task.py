"""Work after the response stays in the request's trace: Starlette ``BackgroundTask`` and
``asyncio.create_task`` carry the context on their own, and tracewire gives each background
task its own span (``send_receipt``), a child of the request's
span that ends when the task ends, after the response; ``background_spans="linked"`` would
make it a new trace linked to the request instead.

Run::

    python examples/background_task.py          # then: curl -X POST http://127.0.0.1:8000/orders
"""

from __future__ import annotations

import asyncio
import os

import uvicorn
from opentelemetry import trace
from opentelemetry.trace import TracerProvider
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import tracewire.sdk
from tracewire import TracewireMiddleware


def create_app(tracer_provider: TracerProvider | None = None) -> Starlette:
    tracer = trace.get_tracer("example.orders", tracer_provider=tracer_provider)
    pending: set[asyncio.Task[None]] = set()

    async def send_receipt() -> None:
        with tracer.start_as_current_span("send receipt"):  # a child of the task's span
            await asyncio.sleep(0.01)

    async def reserve_stock() -> None:
        with tracer.start_as_current_span("reserve stock"):  # also a child
            await asyncio.sleep(0.01)

    async def order(request: Request) -> JSONResponse:
        task = asyncio.create_task(reserve_stock())
        pending.add(task)
        task.add_done_callback(pending.discard)
        return JSONResponse({"accepted": True}, background=BackgroundTask(send_receipt))

    app = Starlette(routes=[Route("/orders", order, methods=["POST"])])
    app.add_middleware(TracewireMiddleware, tracer_provider=tracer_provider)
    return app


if __name__ == "__main__":
    tracewire.sdk.configure(service_name="background-example")
    uvicorn.run(create_app(), host="127.0.0.1", port=int(os.environ.get("PORT", "8000")))

"""httpx, sync and async: a tracing transport per client. The next hop receives ``traceparent``
(or whatever propagators the settings name) pointing at the CLIENT span.

Run::

    python examples/httpx_client.py http://127.0.0.1:8000/items/42
"""

from __future__ import annotations

import asyncio
import sys

import httpx
from opentelemetry import trace
from opentelemetry.trace import TracerProvider

import tracewire.sdk
from tracewire.httpx import AsyncTracewireTransport, TracewireTransport


def fetch(url: str, tracer_provider: TracerProvider | None = None) -> httpx.Response:
    transport = TracewireTransport(tracer_provider=tracer_provider)  # <- the line (sync)
    with httpx.Client(transport=transport) as client:
        return client.get(url)


async def afetch(url: str, tracer_provider: TracerProvider | None = None) -> httpx.Response:
    transport = AsyncTracewireTransport(tracer_provider=tracer_provider)  # <- the line (async)
    async with httpx.AsyncClient(transport=transport) as client:
        return await client.get(url)


if __name__ == "__main__":
    tracewire.sdk.configure(service_name="httpx-example")
    target = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8000/items/42"
    with trace.get_tracer("example").start_as_current_span("two calls"):
        print(fetch(target).status_code, asyncio.run(afetch(target)).status_code)

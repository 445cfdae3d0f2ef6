"""The views; each answers with the trace it saw current, so tests compare it with the span."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from opentelemetry import trace

from tracewire.httpx import TracewireTransport


def note(key: str, value: Any) -> None:
    """What the app saw, for the test to read (a child process writes a file)."""
    notes = os.environ.get("TW_NOTES")
    if notes:
        with open(notes, "a") as f:
            f.write(json.dumps({"key": key, "value": value}) + "\n")


def seen() -> dict[str, Any]:
    sc = trace.get_current_span().get_span_context()
    return {"trace_id": f"{sc.trace_id:032x}", "span_id": f"{sc.span_id:016x}"}


def plain(request: HttpRequest) -> JsonResponse:
    return JsonResponse(seen())


def item(request: HttpRequest, pk: int) -> JsonResponse:
    return JsonResponse({**seen(), "pk": pk})


def order(request: HttpRequest, user: str, order: int) -> JsonResponse:
    return JsonResponse({**seen(), "user": user, "order": order})


def boom(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("the view failed")


def missing(request: HttpRequest) -> HttpResponse:
    raise Http404("no such thing")  # a 404, not a server error


def stream(request: HttpRequest) -> StreamingHttpResponse:
    trace_id = seen()["trace_id"]

    def chunks() -> Iterator[bytes]:
        for i in range(10):
            time.sleep(0.02)
            yield f"chunk {i} {seen()['trace_id']}\n".encode()
        note(f"last_chunk_ns:{trace_id}", time.time_ns())

    return StreamingHttpResponse(chunks(), content_type="text/plain")


def astream(request: HttpRequest) -> StreamingHttpResponse:
    """The same body from an async iterator (what Django wants under ASGI)."""
    trace_id = seen()["trace_id"]

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(10):
            await asyncio.sleep(0.02)
            yield f"chunk {i} {seen()['trace_id']}\n".encode()
        note(f"last_chunk_ns:{trace_id}", time.time_ns())

    return StreamingHttpResponse(chunks(), content_type="text/plain")


def endless(request: HttpRequest) -> StreamingHttpResponse:
    """Ten seconds of ticks, unless the client goes away first (bounded either way)."""

    def ticks() -> Iterator[bytes]:
        for i in range(1000):
            yield b"tick %d\n" % i
            time.sleep(0.01)

    return StreamingHttpResponse(ticks(), content_type="text/plain")


def aendless(request: HttpRequest) -> StreamingHttpResponse:
    async def ticks() -> AsyncIterator[bytes]:
        for i in range(1000):
            yield b"tick %d\n" % i
            await asyncio.sleep(0.01)

    return StreamingHttpResponse(ticks(), content_type="text/plain")


async def async_view(request: HttpRequest, name: str) -> JsonResponse:
    await asyncio.sleep(0)
    return JsonResponse({**seen(), "name": name})


async def async_boom(request: HttpRequest) -> HttpResponse:
    await asyncio.sleep(0)
    raise ValueError("the async view failed")


def outgoing(request: HttpRequest) -> JsonResponse:
    # A transport built without settings: it takes the serving middleware's.
    with httpx.Client(transport=TracewireTransport()) as client:
        echoed = client.get(request.GET["to"]).json()
    return JsonResponse({**seen(), "echoed": echoed["headers"]})

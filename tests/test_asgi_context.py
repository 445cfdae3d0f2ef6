"""What carries the request's context into threads and background work, and what does not.

A Starlette app under a real server hands work off in every common way and reports which trace
each piece of work saw. ``asyncio.to_thread``, ``run_in_threadpool``, sync endpoints and sync
streaming bodies, asgiref's ``sync_to_async``, ``create_task``, ``ContextExecutor`` and ``wrap``
carry it; a plain ``ThreadPoolExecutor``, ``loop.run_in_executor`` and ``threading.Thread`` do
not (docs/server-asgi.md says so and shows the fix).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from opentelemetry import context as otel_context
from opentelemetry import trace
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from tests.support.asgi_apps import SpanSink, http_client, new_ids, serve, traceparent
from tracewire import Settings, TracewireMiddleware
from tracewire.context import ContextExecutor, wrap


def _trace() -> str:
    sc = trace.get_current_span().get_span_context()
    return f"{sc.trace_id:032x}" if sc.is_valid else "none"


def _in_thread(fn: Any) -> str:
    result: list[str] = []
    thread = threading.Thread(target=lambda: result.append(fn()))
    thread.start()
    thread.join(timeout=5)
    return result[0]


def build_app(
    plain: ThreadPoolExecutor, carrying: ContextExecutor, notes: dict[str, Any]
) -> Starlette:
    async def handoff(request: Request) -> JSONResponse:
        loop = asyncio.get_running_loop()
        seen = {
            "here": _trace(),
            "asyncio.to_thread": await asyncio.to_thread(_trace),
            "run_in_threadpool": await run_in_threadpool(_trace),
            "sync_to_async": await sync_to_async(_trace)(),
            "create_task": await asyncio.create_task(asyncio.to_thread(_trace)),
            "ContextExecutor.submit": await asyncio.wrap_future(carrying.submit(_trace)),
            "run_in_executor(ContextExecutor)": await loop.run_in_executor(carrying, _trace),
            "ContextExecutor.map": next(iter(carrying.map(lambda _: _trace(), [1]))),
            "wrap+Thread": _in_thread(wrap(_trace)),
            "ThreadPoolExecutor.submit": await asyncio.wrap_future(plain.submit(_trace)),
            "run_in_executor(ThreadPoolExecutor)": await loop.run_in_executor(plain, _trace),
            "run_in_executor(None)": await loop.run_in_executor(None, _trace),
            "Thread": _in_thread(_trace),
        }
        return JSONResponse(seen)

    def sync_endpoint(request: Request) -> JSONResponse:  # Starlette runs it in a thread
        return JSONResponse({"sync endpoint": _trace()})

    def sync_body() -> Iterator[bytes]:  # iterated in a thread, chunk by chunk
        for _ in range(3):
            notes.setdefault("sync body", []).append(_trace())
            yield b"x"

    async def sync_stream(request: Request) -> StreamingResponse:
        return StreamingResponse(sync_body())

    return Starlette(
        routes=[
            Route("/handoff", handoff),
            Route("/sync", sync_endpoint),
            Route("/sync-stream", sync_stream),
        ]
    )


CARRY = [
    "asyncio.to_thread",
    "run_in_threadpool",
    "sync_to_async",
    "create_task",
    "ContextExecutor.submit",
    "run_in_executor(ContextExecutor)",
    "ContextExecutor.map",
    "wrap+Thread",
]
DO_NOT_CARRY = [
    "ThreadPoolExecutor.submit",
    "run_in_executor(ThreadPoolExecutor)",
    "run_in_executor(None)",
    "Thread",
]


@pytest.fixture(scope="module", params=["uvicorn", "hypercorn"])
def site(request: pytest.FixtureRequest) -> Iterator[Any]:
    sink, notes = SpanSink(), {}
    with ThreadPoolExecutor(2) as plain, ContextExecutor(2) as carrying:
        app = TracewireMiddleware(
            build_app(plain, carrying, notes), Settings(), tracer_provider=sink.provider
        )
        with serve(app, request.param) as running, http_client(base_url=running.url) as client:
            yield client, sink, notes


def test_what_carries_the_context(site: Any) -> None:
    client, sink, _ = site
    for _ in range(3):  # reused pool threads must not keep an earlier request's context
        trace_id, parent_id = new_ids()
        seen = client.get("/handoff", headers={"traceparent": traceparent(trace_id, parent_id)})
        seen = seen.json()
        assert seen["here"] == trace_id
        assert {k: seen[k] for k in CARRY} == dict.fromkeys(CARRY, trace_id)
        assert {k: seen[k] for k in DO_NOT_CARRY} == dict.fromkeys(DO_NOT_CARRY, "none")
        sink.of_trace(trace_id)


def test_sync_endpoint_and_sync_streaming_body(site: Any) -> None:
    client, _, notes = site
    trace_id, parent_id = new_ids()
    headers = {"traceparent": traceparent(trace_id, parent_id)}
    assert client.get("/sync", headers=headers).json() == {"sync endpoint": trace_id}
    notes.clear()
    assert client.get("/sync-stream", headers=headers).content == b"xxx"
    assert notes["sync body"] == [trace_id] * 3


# ------------------------------------------------------------------ the helpers on their own
def test_wrap_restores_the_callers_context_in_the_thread() -> None:
    tracer = SpanSink().provider.get_tracer("t")
    after: list[object] = []
    with tracer.start_as_current_span("work") as span:
        wrapped = wrap(trace.get_current_span)

    def run() -> None:
        before = otel_context.get_current()
        after.append(wrapped() is span)
        after.append(otel_context.get_current() == before)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout=5)
    assert after == [True, True]


def test_wrap_with_an_explicit_context() -> None:
    tracer = SpanSink().provider.get_tracer("t")
    with tracer.start_as_current_span("chosen") as chosen:
        ctx = otel_context.get_current()
    with tracer.start_as_current_span("other"):
        assert wrap(trace.get_current_span, ctx)() is chosen


def test_context_executor_uses_the_submitters_context_per_task() -> None:
    tracer = SpanSink().provider.get_tracer("t")
    with ContextExecutor(max_workers=1) as executor:  # one reused thread for every task
        futures = []
        for name in ("a", "b", "c"):
            with tracer.start_as_current_span(name):
                futures.append(executor.submit(lambda: trace.get_current_span().name))
        outside = executor.submit(lambda: trace.get_current_span().get_span_context().is_valid)
        assert [f.result(timeout=5) for f in futures] == ["a", "b", "c"]
        assert outside.result(timeout=5) is False

"""Many requests in flight at once on one worker, each in its own trace.

The app holds every request until all ``IN_FLIGHT`` of them are inside it at the same time (a
bounded wait), so their contexts really overlap on one event loop; each carries its own
traceparent and must land in its own trace with its own parent, and the app's code in each
must see its own span.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from tests.support.asgi_apps import COMBOS, new_ids, running_service, traceparent
from tracewire import Settings

IN_FLIGHT = 200


PER_CLIENT = 25


async def _fire(url: str, n: int) -> list[tuple[str, str, Any]]:
    # Several clients of PER_CLIENT connections each: one httpx pool of hundreds of connections
    # spends seconds of its own bookkeeping per batch, which would only measure httpx.
    limits = httpx.Limits(max_connections=PER_CLIENT, max_keepalive_connections=PER_CLIENT)
    clients = [
        httpx.AsyncClient(base_url=url, limits=limits, timeout=30, verify=False)
        for _ in range(-(-n // PER_CLIENT))
    ]

    async def one(i: int) -> tuple[str, str, Any]:
        trace_id, parent_id = new_ids()
        response = await clients[i // PER_CLIENT].get(
            "/gather", headers={"traceparent": traceparent(trace_id, parent_id)}
        )
        return trace_id, parent_id, response

    try:
        return await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(n))), 60)
    finally:
        for client in clients:
            await client.aclose()


@pytest.mark.parametrize(("kind", "server"), COMBOS, ids=[f"{a}-{s}" for a, s in COMBOS])
def test_requests_in_flight_together_keep_their_own_traces(kind: str, server: str) -> None:
    with running_service(kind, server, Settings()) as svc:
        svc.fresh(expected=IN_FLIGHT)
        results = asyncio.run(_fire(svc.url, IN_FLIGHT))
        spans = svc.sink.wait_count(IN_FLIGHT, timeout=20)
        assert svc.probe.max_inside >= IN_FLIGHT  # they really overlapped
    assert len(results) == IN_FLIGHT
    by_trace = {f"{s.context.trace_id:032x}": s for s in spans}
    assert len(by_trace) == len(spans) == IN_FLIGHT
    for trace_id, parent_id, response in results:
        assert response.status_code == 200
        seen = response.json()
        assert seen["gathered"] is True
        span = by_trace[trace_id]
        assert f"{span.parent.span_id:016x}" == parent_id
        assert (seen["trace_id"], seen["span_id"]) == (trace_id, f"{span.context.span_id:016x}")

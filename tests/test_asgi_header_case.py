"""Header names a non-conforming ASGI server did not lowercase still carry the trace."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tracewire import Settings, TracewireMiddleware

TID, SID = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"


async def _app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.mark.parametrize("name", [b"traceparent", b"TraceParent", b"TRACEPARENT"])
def test_any_case_of_traceparent_is_read(tracing: Any, name: bytes) -> None:
    settings = Settings(capture_request_headers=["x-tenant"])
    middleware = TracewireMiddleware(_app, settings, tracer_provider=tracing.provider)
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/",
        "headers": [
            (b"host", b"svc"),
            (name, f"00-{TID}-{SID}-01".encode()),
            (b"X-Tenant", b"acme"),
        ],
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: Any) -> None:
        return None

    asyncio.run(middleware(scope, receive, send))
    (span,) = tracing.spans()
    assert f"{span.context.trace_id:032x}" == TID
    assert span.parent is not None and f"{span.parent.span_id:016x}" == SID
    assert span.attributes["http.request.header.x-tenant"] == ("acme",)

"""Responses whose body is already in memory (mock transports, caches) still end their span."""

from __future__ import annotations

import asyncio

import httpx
import requests
from requests.adapters import BaseAdapter

from tracewire import Settings
from tracewire.httpx import AsyncTracewireTransport, TracewireTransport
from tracewire.requests import instrument_session


def _handler(request: httpx.Request) -> httpx.Response:
    return httpx.Response(
        200, content=b"cached", headers={"x-seen": request.headers["traceparent"]}
    )


def test_httpx_mock_transport_response_ends_the_span(tracing) -> None:  # type: ignore[no-untyped-def]
    transport = TracewireTransport(
        httpx.MockTransport(_handler), Settings(), tracer_provider=tracing.provider
    )
    with httpx.Client(transport=transport) as client:
        response = client.get("http://svc.test/item")
    assert response.text == "cached"
    (span,) = tracing.spans()
    assert span.kind.name == "CLIENT"
    assert span.attributes["http.response.status_code"] == 200
    assert response.headers["x-seen"].split("-")[2] == f"{span.context.span_id:016x}"


def test_async_httpx_mock_transport_response_ends_the_span(tracing) -> None:  # type: ignore[no-untyped-def]
    transport = AsyncTracewireTransport(
        httpx.MockTransport(_handler), Settings(), tracer_provider=tracing.provider
    )

    async def go() -> httpx.Response:
        async with httpx.AsyncClient(transport=transport) as client:
            return await client.get("http://svc.test/item")

    response = asyncio.run(go())
    assert response.text == "cached"
    assert len(tracing.spans()) == 1


class _CachedAdapter(BaseAdapter):
    """Answers from memory, with the body already read (as requests-mock and caches do)."""

    def send(self, request, **kwargs):  # type: ignore[no-untyped-def]
        response = requests.Response()
        response.status_code = 200
        response._content = b"cached"
        response.request = request
        response.url = request.url
        return response

    def close(self) -> None:
        pass


def test_requests_adapter_with_content_already_read_ends_the_span(tracing) -> None:  # type: ignore[no-untyped-def]
    session = requests.Session()
    session.mount("http://", _CachedAdapter())
    instrument_session(session, Settings(), tracer_provider=tracing.provider)
    response = session.get("http://svc.test/item", stream=True)
    assert response.content == b"cached"
    (span,) = tracing.spans()
    assert span.attributes["http.response.status_code"] == 200

"""The wire rules through real servers: what a request's headers become on the next hop.

A service under uvicorn (ASGI, ``TracewireMiddleware`` + httpx) and one under werkzeug (WSGI,
``TracewireWSGIMiddleware`` + requests) each call an echo server for every request; the test
reads the headers the echo server received and the SERVER span at the exporter.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import requests
from opentelemetry.trace import SpanKind

from tests.support.servers import UvicornThread, WerkzeugThread, wait_for
from tests.test_client_core import EchoServer
from tracewire import Settings, TracewireMiddleware, TracewireWSGIMiddleware
from tracewire.httpx import AsyncTracewireTransport
from tracewire.requests import instrument_session

TID = "4bf92f3577b34da6a3ce929d0e0e4736"
OTHER_TID = "80f198ee56343ba864fe8b2a57d3eff7"
SID = "00f067aa0ba902b7"
OTHER_SID = "e457b5a2e4d86bd1"
SETTINGS = Settings(propagators=["tracecontext", "baggage", "b3multi"])


def asgi_service(echo_url: str, provider: Any) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        transport = AsyncTracewireTransport(settings=SETTINGS, tracer_provider=provider)
        async with httpx.AsyncClient(transport=transport) as client:
            response = await client.get(f"{echo_url}/echo")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": response.content})

    return TracewireMiddleware(app, SETTINGS, tracer_provider=provider)


def wsgi_service(echo_url: str, provider: Any) -> Any:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        with requests.Session() as session:
            instrument_session(session, SETTINGS, tracer_provider=provider)
            body = session.get(f"{echo_url}/echo", timeout=10).content
        start_response("200 OK", [("content-type", "application/json")])
        return [body]

    return TracewireWSGIMiddleware(app, SETTINGS, tracer_provider=provider)


@pytest.fixture(scope="module")
def echo() -> Iterator[EchoServer]:
    server = EchoServer("127.0.0.1")
    server.thread.start()
    try:
        yield server
    finally:
        server.thread.stop()


@pytest.fixture(params=["uvicorn", "werkzeug"])
def service(request: pytest.FixtureRequest, echo: EchoServer, tracing: Any) -> Iterator[Any]:
    if request.param == "uvicorn":
        server: Any = UvicornThread(asgi_service(echo.url, tracing.provider))
    else:
        server = WerkzeugThread(wsgi_service(echo.url, tracing.provider))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def next_hop(service: Any, headers: list[tuple[str, str]]) -> dict[str, list[str]]:
    """The headers the echo server got from ``service`` for a request with ``headers``."""
    response = httpx.get(f"{service.url}/in", headers=headers, timeout=10)
    assert response.status_code == 200
    seen: dict[str, list[str]] = {}
    for name, value in json.loads(response.content)["headers"]:
        seen.setdefault(name, []).append(value)
    return seen


def server_span(tracing: Any) -> Any:
    def found() -> Any:
        spans = [s for s in tracing.spans() if s.kind == SpanKind.SERVER]
        return spans[0] if spans else None

    return wait_for(found, timeout=10)


def test_baggage_properties_reach_the_next_hop(service: Any) -> None:
    seen = next_hop(
        service,
        [
            ("traceparent", f"00-{TID}-{SID}-01"),
            ("baggage", "user=alice;source=edge, flag=1;x"),
            ("baggage", "plain=2"),
        ],
    )
    assert seen["baggage"] == ["user=alice;source=edge,flag=1;x,plain=2"]


def test_8190_byte_baggage_member_reaches_the_next_hop(service: Any) -> None:
    member = "big=" + "x" * 8186
    seen = next_hop(service, [("baggage", member)])
    assert seen["baggage"] == [member]


def test_repeated_b3_multi_headers_first_value_wins(service: Any, tracing: Any) -> None:
    headers = [
        ("X-B3-TraceId", TID),
        ("X-B3-TraceId", OTHER_TID),
        ("X-B3-SpanId", SID),
        ("X-B3-SpanId", OTHER_SID),
        ("X-B3-Sampled", "1"),
        ("X-B3-Sampled", "0"),
    ]
    seen = next_hop(service, headers)
    assert seen["x-b3-traceid"] == [TID]
    assert seen["x-b3-sampled"] == ["1"]
    assert seen["traceparent"][0].startswith(f"00-{TID}-")
    span = server_span(tracing)
    assert f"{span.context.trace_id:032x}" == TID
    assert f"{span.parent.span_id:016x}" == SID

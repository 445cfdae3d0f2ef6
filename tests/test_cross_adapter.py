"""The same requests through both server middlewares and both clients give the same spans.

A raw ASGI app under uvicorn behind ``TracewireMiddleware`` and its raw WSGI twin under
werkzeug behind ``TracewireWSGIMiddleware`` (tests/support/twin_apps.py) are each called by
httpx (``TracewireTransport``) and requests (``instrument_session``) with the same set of
requests: GET / POST / the unknown method ``FETCH``, a query with a redacted parameter, a user
agent, a percent-encoded path, 200 / 404 / 500 and an exception in the app.

What must be identical:

* SERVER spans, ASGI against WSGI: name, status, every attribute;
* CLIENT spans, httpx against requests: name, status, every attribute;
* SERVER spans for the same server whichever client called.

What legitimately differs, and is normalised before comparing:

* ``server.port`` (and the port inside ``url.full``): the two servers listen on different
  ports; each span is first checked to carry its own server's port;
* ``error.type`` of a client-side exception (connection refused): each library raises its own
  class (``httpx.ConnectError``, ``requests.exceptions.ConnectionError``); checked apart.

A status description never holds the exception's message, only its class name.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import requests
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

import tracewire.requests
from tests.conftest import Tracing
from tests.support import twin_apps
from tests.support.servers import HOST, UvicornThread, WerkzeugThread, free_port, wait_for
from tracewire import TracewireMiddleware, TracewireWSGIMiddleware
from tracewire.httpx import TracewireTransport

USER_AGENT = "tracewire-consistency/1.0"
FAILURE = f"{twin_apps.__name__}.AppFailure"


@dataclass(frozen=True)
class Call:
    name: str
    method: str
    target: str  # path and query as sent
    body: bytes | None = None


CALLS = [
    Call("get-query", "GET", "/ok?token=secret&x=1"),
    Call("post", "POST", "/ok", b"hello"),
    Call("unknown-method", "FETCH", "/ok"),
    Call("encoded-path", "GET", "/caf%C3%A9"),
    Call("not-found", "GET", "/missing"),
    Call("server-error", "GET", "/fail"),
    Call("exception", "GET", "/raise?token=secret"),
]
SERVERS = ("asgi", "wsgi")
CLIENTS = ("httpx", "requests")


def send(client: str, base: str, call: Call, tracing: Tracing) -> int:
    """One call on a connection of its own (a server closes the connection after an app
    exception); the response status."""
    url = base + call.target
    headers = {"User-Agent": USER_AGENT}
    if client == "httpx":
        transport = TracewireTransport(
            httpx.HTTPTransport(verify=False), tracer_provider=tracing.provider
        )
        with httpx.Client(transport=transport, timeout=10) as http:
            return http.request(call.method, url, content=call.body, headers=headers).status_code
    with tracewire.requests.instrument_session(
        requests.Session(), tracer_provider=tracing.provider
    ) as session:
        return session.request(
            call.method, url, data=call.body, headers=headers, timeout=10
        ).status_code


@dataclass
class Exchange:
    """One call: the status the client got, its CLIENT span and the SERVER span under it."""

    status: int
    client: ReadableSpan
    server: ReadableSpan
    port: int  # the server's


@pytest.fixture(scope="module")
def exchanges() -> Iterator[dict[tuple[str, str, str], Exchange]]:
    tracing = Tracing()
    asgi = UvicornThread(TracewireMiddleware(twin_apps.asgi_app, tracer_provider=tracing.provider))
    wsgi = WerkzeugThread(
        TracewireWSGIMiddleware(twin_apps.wsgi_app, tracer_provider=tracing.provider)
    )
    found: dict[tuple[str, str, str], Exchange] = {}
    with asgi, wsgi:
        for server, running in (("asgi", asgi), ("wsgi", wsgi)):
            for client in CLIENTS:
                for call in CALLS:
                    tracing.exporter.clear()
                    status = send(client, running.url, call, tracing)

                    def pair() -> tuple[ReadableSpan, ReadableSpan] | None:
                        spans = tracing.spans()
                        clients = [s for s in spans if s.kind == SpanKind.CLIENT]
                        servers = [s for s in spans if s.kind == SpanKind.SERVER]
                        return (clients[0], servers[0]) if clients and servers else None

                    client_span, server_span = wait_for(pair, timeout=10)
                    assert len(tracing.spans()) == 2, tracing.spans()
                    found[(server, client, call.name)] = Exchange(
                        status, client_span, server_span, running.port
                    )
    tracing.provider.shutdown()
    yield found


def normalised(span: ReadableSpan, port: int) -> dict[str, Any]:
    """The span's attributes with its server's port replaced by ``PORT`` (checked first)."""
    attributes = dict(span.attributes or {})
    assert attributes.get("server.port") == port, attributes
    attributes["server.port"] = "PORT"
    if "url.full" in attributes:
        url = str(attributes["url.full"])
        assert f"{HOST}:{port}/" in url, url
        attributes["url.full"] = url.replace(f"{HOST}:{port}/", f"{HOST}:PORT/")
    return attributes


def outline(span: ReadableSpan, port: int) -> dict[str, Any]:
    return {
        "name": span.name,
        "kind": span.kind,
        "status": span.status.status_code,
        "description": span.status.description,
        "attributes": normalised(span, port),
        "events": [event.name for event in span.events],
    }


@pytest.mark.parametrize("call", CALLS, ids=[c.name for c in CALLS])
@pytest.mark.parametrize("client", CLIENTS)
def test_server_spans_are_identical_between_asgi_and_wsgi(
    exchanges: dict[tuple[str, str, str], Exchange], client: str, call: Call
) -> None:
    asgi, wsgi = (exchanges[(server, client, call.name)] for server in SERVERS)
    assert asgi.status == wsgi.status
    assert outline(asgi.server, asgi.port) == outline(wsgi.server, wsgi.port)


@pytest.mark.parametrize("call", CALLS, ids=[c.name for c in CALLS])
@pytest.mark.parametrize("server", SERVERS)
def test_client_spans_are_identical_between_httpx_and_requests(
    exchanges: dict[tuple[str, str, str], Exchange], server: str, call: Call
) -> None:
    via_httpx, via_requests = (exchanges[(server, client, call.name)] for client in CLIENTS)
    assert via_httpx.status == via_requests.status
    assert outline(via_httpx.client, via_httpx.port) == outline(
        via_requests.client, via_requests.port
    )
    # And the server could not tell the two clients apart either.
    assert outline(via_httpx.server, via_httpx.port) == outline(
        via_requests.server, via_requests.port
    )


EXPECTED_SERVER: dict[str, dict[str, Any]] = {
    "get-query": {
        "http.request.method": "GET",
        "url.path": "/ok",
        "url.query": "token=REDACTED&x=1",
    },
    "post": {"http.request.method": "POST", "url.path": "/ok"},
    "unknown-method": {
        "http.request.method": "_OTHER",
        "http.request.method_original": "FETCH",
        "url.path": "/ok",
    },
    "encoded-path": {"http.request.method": "GET", "url.path": "/caf%C3%A9"},
    "not-found": {"http.request.method": "GET", "url.path": "/missing"},
    "server-error": {"http.request.method": "GET", "url.path": "/fail", "error.type": "500"},
    "exception": {
        "http.request.method": "GET",
        "url.path": "/raise",
        "url.query": "token=REDACTED",
        "error.type": FAILURE,
    },
}
STATUS = {"not-found": 404, "server-error": 500, "exception": 500}


@pytest.mark.parametrize("call", CALLS, ids=[c.name for c in CALLS])
def test_the_shared_spans_say_what_the_conventions_say(
    exchanges: dict[tuple[str, str, str], Exchange], call: Call
) -> None:
    """Identical is not enough: the common answer is also the right one."""
    exchange = exchanges[("asgi", "httpx", call.name)]
    server, client = exchange.server, exchange.client
    status = STATUS.get(call.name, 200)
    assert exchange.status == status
    assert server.parent is not None and server.parent.span_id == client.context.span_id
    assert server.context.trace_id == client.context.trace_id
    expected_name = "_OTHER" if call.method == "FETCH" else call.method
    assert server.name == client.name == expected_name
    assert dict(server.attributes or {}) == {
        "url.scheme": "http",
        "network.protocol.version": "1.1",
        "server.address": HOST,
        "server.port": exchange.port,
        "client.address": HOST,
        "user_agent.original": USER_AGENT,
        "tracewire.propagation.format": "tracecontext",
        "tracewire.parent.source": "header:tracecontext",
        "http.response.status_code": status,
        **EXPECTED_SERVER[call.name],
    }
    assert server.status.status_code == (StatusCode.ERROR if status >= 500 else StatusCode.UNSET)
    client_attributes = dict(client.attributes or {})
    query = call.target.partition("?")[2].replace("token=secret", "token=REDACTED")
    path = call.target.partition("?")[0]
    expected_client: dict[str, Any] = {
        "http.request.method": expected_name,
        "url.full": f"http://{HOST}:{exchange.port}{path}" + (f"?{query}" if query else ""),
        "server.address": HOST,
        "server.port": exchange.port,
        "http.response.status_code": status,
        "network.protocol.version": "1.1",
    }
    if call.method == "FETCH":
        expected_client["http.request.method_original"] = "FETCH"
    if status >= 400:
        expected_client["error.type"] = str(status)
    assert client_attributes == expected_client
    assert client.status.status_code == (StatusCode.ERROR if status >= 400 else StatusCode.UNSET)


@pytest.mark.parametrize("server", SERVERS)
@pytest.mark.parametrize("client", CLIENTS)
def test_status_description_names_the_class_never_the_message(
    exchanges: dict[tuple[str, str, str], Exchange], server: str, client: str
) -> None:
    exchange = exchanges[(server, client, "exception")]
    span = exchange.server
    assert span.status.status_code == StatusCode.ERROR
    assert span.status.description == FAILURE
    # The message is in the exception event (that is what events are for), not the status.
    (event,) = [e for e in span.events if e.name == "exception"]
    assert event.attributes is not None
    assert event.attributes["exception.type"] == FAILURE
    for exchanged in exchanges.values():
        for recorded in (exchanged.server, exchanged.client):
            description = recorded.status.description or ""
            assert "hunter2" not in description and "password" not in description


@pytest.mark.parametrize("client", CLIENTS)
def test_client_exception_status_names_the_class_never_the_message(
    client: str, tracing: Tracing
) -> None:
    port = free_port()  # nothing listens there: connection refused
    with pytest.raises((httpx.ConnectError, requests.exceptions.ConnectionError)) as raised:
        send(client, f"http://{HOST}:{port}", Call("refused", "GET", "/x?token=secret"), tracing)
    (span,) = tracing.spans()
    assert span.kind == SpanKind.CLIENT
    assert span.status.status_code == StatusCode.ERROR
    expected = {"httpx": "httpx.ConnectError", "requests": "requests.exceptions.ConnectionError"}
    assert span.attributes is not None
    assert span.attributes["error.type"] == expected[client]
    assert span.status.description == expected[client]
    assert str(raised.value)  # the message exists (and names the target) ...
    assert str(raised.value) not in span.status.description  # ... but is not in the status
    assert str(port) not in span.status.description
    assert span.attributes["url.full"] == f"http://{HOST}:{port}/x?token=REDACTED"

"""tracewire.httpx against real loopback servers: sync and async clients, real sockets."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from opentelemetry import baggage, context
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.trace import SpanKind, StatusCode

import tracewire.httpx as tw_httpx
from tests import test_client_core as core
from tests.support.servers import free_port
from tests.test_client_core import EchoServer, client_spans, parse_traceparent
from tracewire import Settings
from tracewire.httpx import AsyncTracewireTransport, TracewireTransport

# The echo servers (127.0.0.1 and 127.0.0.2) shared with the core tests, one pair per module.
_echo_servers = core._echo_servers
echo = core.echo
other = core.other


def make_client(tracing: Any, settings: Settings | None = None, **kwargs: Any) -> httpx.Client:
    transport = TracewireTransport(
        settings=settings or Settings(), tracer_provider=tracing.provider
    )
    return httpx.Client(transport=transport, **kwargs)


def make_async_client(
    tracing: Any, settings: Settings | None = None, **kwargs: Any
) -> httpx.AsyncClient:
    transport = AsyncTracewireTransport(
        settings=settings or Settings(), tracer_provider=tracing.provider
    )
    return httpx.AsyncClient(transport=transport, **kwargs)


def assert_child_of_client_span(seen_traceparent: str, span: Any, root: Any) -> None:
    trace_id, parent_id = parse_traceparent(seen_traceparent)
    assert trace_id == root.get_span_context().trace_id == span.context.trace_id
    assert parent_id == span.context.span_id
    assert span.parent.span_id == root.get_span_context().span_id


# ------------------------------------------------------------------------------ basics


def test_sync_headers_arrive_and_parent_is_the_client_span(tracing: Any, echo: EchoServer) -> None:
    with make_client(tracing) as client:
        with tracing.provider.get_tracer("t").start_as_current_span("root") as root:
            response = client.get(f"{echo.url}/echo?q=1")
    assert response.status_code == 200
    (seen,) = echo.seen
    (span,) = client_spans(tracing.spans())
    assert_child_of_client_span(seen.one("traceparent"), span, root)
    assert span.name == "GET" and span.kind is SpanKind.CLIENT
    assert dict(span.attributes) == {
        "http.request.method": "GET",
        "url.full": f"{echo.url}/echo?q=1",
        "server.address": "127.0.0.1",
        "server.port": echo.port,
        "http.response.status_code": 200,
        "network.protocol.version": "1.1",
    }
    assert span.status.status_code is StatusCode.UNSET
    # tracewire's headers are not left on the request object (redirects copy it).
    assert "traceparent" not in response.request.headers


def test_async_headers_arrive_and_parent_is_the_client_span(tracing: Any, echo: EchoServer) -> None:
    async def main() -> Any:
        async with make_async_client(tracing) as client:
            with tracing.provider.get_tracer("t").start_as_current_span("root") as root:
                response = await client.post(f"{echo.url}/echo", content=b"hi")
        return root, response

    root, response = asyncio.run(main())
    assert response.status_code == 200
    (seen,) = echo.seen
    (span,) = client_spans(tracing.spans())
    assert seen.method == "POST" and span.name == "POST"
    assert_child_of_client_span(seen.one("traceparent"), span, root)


def test_without_a_parent_the_client_span_is_a_root(tracing: Any, echo: EchoServer) -> None:
    with make_client(tracing) as client:
        client.get(f"{echo.url}/echo")
    (span,) = client_spans(tracing.spans())
    assert span.parent is None
    trace_id, parent_id = parse_traceparent(echo.seen[0].one("traceparent"))
    assert (trace_id, parent_id) == (span.context.trace_id, span.context.span_id)


@pytest.mark.parametrize("status", [404, 503])
def test_error_status_codes(tracing: Any, echo: EchoServer, status: int) -> None:
    with make_client(tracing) as client:
        assert client.get(f"{echo.url}/status/{status}").status_code == status
    (span,) = client_spans(tracing.spans())
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes["error.type"] == str(status)


def test_unknown_method_and_redacted_url(tracing: Any, echo: EchoServer) -> None:
    url = f"http://user:secret@127.0.0.1:{echo.port}/echo?sig=abc&keep=1"
    with make_client(tracing) as client:
        client.request("PURGE", url)
    (span,) = client_spans(tracing.spans())
    assert span.name == "_OTHER"
    assert span.attributes["http.request.method"] == "_OTHER"
    assert span.attributes["http.request.method_original"] == "PURGE"
    assert span.attributes["url.full"] == (
        f"http://REDACTED:REDACTED@127.0.0.1:{echo.port}/echo?sig=REDACTED&keep=1"
    )
    assert echo.seen[0].method == "PURGE"


# --------------------------------------------------------------------------- redirects


def test_each_redirect_hop_is_a_span_with_fresh_headers(tracing: Any, echo: EchoServer) -> None:
    with make_client(tracing, follow_redirects=True) as client:
        with tracing.provider.get_tracer("t").start_as_current_span("root") as root:
            response = client.get(f"{echo.url}/redirect?to=/echo")
    assert response.status_code == 200 and len(response.history) == 1
    hop1, hop2 = echo.seen
    span1, span2 = client_spans(tracing.spans())
    assert span1.attributes["http.response.status_code"] == 302
    assert span1.status.status_code is StatusCode.UNSET
    assert span2.attributes["http.response.status_code"] == 200
    assert_child_of_client_span(hop1.one("traceparent"), span1, root)
    assert_child_of_client_span(hop2.one("traceparent"), span2, root)


def test_redirect_to_a_host_outside_propagate_to_gets_nothing(
    tracing: Any, echo: EchoServer, other: EchoServer
) -> None:
    settings = Settings(propagate_to=["127.0.0.1"])
    token = context.attach(baggage.set_baggage("user", "alice"))
    try:
        with make_client(tracing, settings, follow_redirects=True) as client:
            client.get(f"{echo.url}/redirect?to={other.url}/echo")
    finally:
        context.detach(token)
    (first,) = echo.seen
    (second,) = other.seen
    assert first.values("traceparent") and first.values("baggage") == ["user=alice"]
    # Nothing copied over from the first hop's request either.
    assert second.values("traceparent") == [] and second.values("baggage") == []
    spans = client_spans(tracing.spans())
    assert [s.attributes["server.address"] for s in spans] == ["127.0.0.1", "127.0.0.2"]


# ----------------------------------------------------------------- propagate_to / baggage_to


def test_propagate_to_and_baggage_to_per_host(
    tracing: Any, echo: EchoServer, other: EchoServer
) -> None:
    settings = Settings(propagate_to=["127.0.0.1", "127.0.0.2"], baggage_to=["127.0.0.1"])
    token = context.attach(baggage.set_baggage("tenant", "t1"))
    try:
        with make_client(tracing, settings) as client:
            client.get(f"{echo.url}/echo")
            client.get(f"{other.url}/echo")
    finally:
        context.detach(token)
    assert echo.seen[0].values("baggage") == ["tenant=t1"]
    assert other.seen[0].values("baggage") == []
    assert other.seen[0].values("traceparent")


def test_host_outside_propagate_to_still_gets_a_span(tracing: Any, other: EchoServer) -> None:
    with make_client(tracing, Settings(propagate_to=["localhost"])) as client:
        client.get(f"{other.url}/echo")
    assert other.seen[0].values("traceparent") == []
    (span,) = client_spans(tracing.spans())
    assert span.attributes["server.address"] == "127.0.0.2"


# -------------------------------------------------------------------------------- failures


def test_connection_refused(tracing: Any) -> None:
    port = free_port()
    with make_client(tracing) as client, pytest.raises(httpx.ConnectError):
        client.get(f"http://127.0.0.1:{port}/")
    (span,) = client_spans(tracing.spans())
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes["error.type"] == "httpx.ConnectError"
    assert "http.response.status_code" not in span.attributes


def test_async_connection_refused(tracing: Any) -> None:
    port = free_port()

    async def main() -> None:
        async with make_async_client(tracing) as client:
            await client.get(f"http://127.0.0.1:{port}/")

    with pytest.raises(httpx.ConnectError):
        asyncio.run(main())
    (span,) = client_spans(tracing.spans())
    assert span.attributes["error.type"] == "httpx.ConnectError"


def test_timeout(tracing: Any, echo: EchoServer) -> None:
    with make_client(tracing, timeout=0.2) as client, pytest.raises(httpx.ReadTimeout):
        client.get(f"{echo.url}/slow?delay=1")
    (span,) = client_spans(tracing.spans())
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes["error.type"] == "httpx.ReadTimeout"


class _Refusing(httpx.BaseTransport):
    """A transport that fails with one given exception object."""

    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        raise self.exc


def test_the_original_exception_object_is_raised(tracing: Any) -> None:
    original = httpx.ConnectError("refused")
    transport = TracewireTransport(
        _Refusing(original), Settings(), tracer_provider=tracing.provider
    )
    with httpx.Client(transport=transport) as client, pytest.raises(httpx.ConnectError) as info:
        client.get("http://127.0.0.1:1/")
    assert info.value is original
    (span,) = client_spans(tracing.spans())
    assert span.attributes["error.type"] == "httpx.ConnectError"


# ------------------------------------------------------------------------------- streaming


def test_stream_span_ends_at_close(tracing: Any, echo: EchoServer) -> None:
    with make_client(tracing) as client:
        with client.stream("GET", f"{echo.url}/stream?chunks=4") as response:
            assert response.status_code == 200
            assert client_spans(tracing.spans()) == []  # headers are in, body is not
            first = next(response.iter_raw(1024))
            assert first and client_spans(tracing.spans()) == []
        (span,) = client_spans(tracing.spans())
    assert span.attributes["http.response.status_code"] == 200


def test_stream_span_ends_when_body_is_read(tracing: Any, echo: EchoServer) -> None:
    with make_client(tracing) as client:
        with client.stream("GET", f"{echo.url}/stream?chunks=3") as response:
            assert client_spans(tracing.spans()) == []
            assert len(response.read()) == 3 * 1024
            assert len(client_spans(tracing.spans())) == 1


def test_async_stream_span_ends_at_close(tracing: Any, echo: EchoServer) -> None:
    async def main() -> list[int]:
        counts = []
        async with make_async_client(tracing) as client:
            async with client.stream("GET", f"{echo.url}/stream?chunks=3") as response:
                counts.append(len(client_spans(tracing.spans())))
                async for _ in response.aiter_raw():
                    break
                counts.append(len(client_spans(tracing.spans())))
            counts.append(len(client_spans(tracing.spans())))
        return counts

    assert asyncio.run(main()) == [0, 0, 1]


def test_body_failing_midway_makes_the_span_an_error(tracing: Any, echo: EchoServer) -> None:
    timeout = httpx.Timeout(5.0, read=1.0)
    with make_client(tracing, timeout=timeout) as client:
        with pytest.raises(httpx.ReadTimeout):
            client.get(f"{echo.url}/stream?chunks=1&stall=2.5")
    (span,) = client_spans(tracing.spans())
    assert span.attributes["http.response.status_code"] == 200
    assert span.attributes["error.type"] == "httpx.ReadTimeout"
    assert span.status.status_code is StatusCode.ERROR


def test_non_streaming_span_ends_with_the_call(tracing: Any, echo: EchoServer) -> None:
    with make_client(tracing) as client:
        response = client.get(f"{echo.url}/stream?chunks=2")
        assert len(client_spans(tracing.spans())) == 1
    assert len(response.content) == 2048


# ----------------------------------------------------------------------------------- hooks


def test_hooks(tracing: Any, echo: EchoServer) -> None:
    def on_request(span: Any, request: httpx.Request) -> None:
        span.set_attribute("test.request_path", request.url.path)

    def on_response(span: Any, request: httpx.Request, response: httpx.Response) -> None:
        span.set_attribute("test.status", response.status_code)

    settings = Settings(client_request_hook=on_request, client_response_hook=on_response)
    with make_client(tracing, settings) as client:
        client.get(f"{echo.url}/echo")
    (span,) = client_spans(tracing.spans())
    assert span.attributes["test.request_path"] == "/echo"
    assert span.attributes["test.status"] == 200


def test_raising_hooks_leave_the_request_alone(
    tracing: Any, echo: EchoServer, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args: Any) -> None:
        raise KeyError("bug in hook")

    settings = Settings(client_request_hook=broken, client_response_hook=broken)
    with (
        caplog.at_level(logging.WARNING, logger="tracewire"),
        make_client(tracing, settings) as client,
    ):
        responses = [client.get(f"{echo.url}/echo") for _ in range(3)]
    assert [r.status_code for r in responses] == [200, 200, 200]
    assert all(seen.values("traceparent") for seen in echo.seen)
    assert len(client_spans(tracing.spans())) == 3
    messages = [r.getMessage() for r in caplog.records]
    assert sum("client_request_hook raised" in m for m in messages) == 1  # rate limited
    assert sum("client_response_hook raised" in m for m in messages) == 1


# ---------------------------------------------------------------------- explicit headers


def test_caller_set_traceparent_is_sent_unchanged(
    tracing: Any, echo: EchoServer, caplog: pytest.LogCaptureFixture
) -> None:
    explicit = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    token = context.attach(baggage.set_baggage("k", "v"))
    try:
        with caplog.at_level(logging.WARNING, logger="tracewire"), make_client(tracing) as client:
            client.get(f"{echo.url}/echo", headers={"TraceParent": explicit})
    finally:
        context.detach(token)
    (seen,) = echo.seen
    assert seen.values("traceparent") == [explicit]
    assert seen.values("baggage") == ["k=v"]  # other propagators are unaffected
    assert "'traceparent'" in caplog.text and explicit not in caplog.text
    assert len(client_spans(tracing.spans())) == 1


# ------------------------------------------------------------------ require_parent, sampling


def test_require_parent(tracing: Any, echo: EchoServer) -> None:
    with make_client(tracing, Settings(require_parent=True)) as client:
        client.get(f"{echo.url}/echo")
        assert echo.seen[0].values("traceparent") == []
        assert client_spans(tracing.spans()) == []
        with tracing.provider.get_tracer("t").start_as_current_span("root"):
            client.get(f"{echo.url}/echo")
    assert echo.seen[1].values("traceparent")
    assert len(client_spans(tracing.spans())) == 1


def test_suppressed_instrumentation(tracing: Any, echo: EchoServer) -> None:
    from opentelemetry.instrumentation.utils import suppress_instrumentation

    with make_client(tracing) as client, suppress_instrumentation():
        client.get(f"{echo.url}/echo")
    assert echo.seen[0].values("traceparent") == []
    assert tracing.spans() == []


# ------------------------------------------------------------- existing clients, global switch


def test_instrument_client_wraps_transport_and_mounts(tracing: Any, echo: EchoServer) -> None:
    mounted = httpx.HTTPTransport()
    client = httpx.Client(mounts={"http://127.0.0.2": mounted})
    tw_httpx.instrument_client(client, Settings(), tracer_provider=tracing.provider)
    tw_httpx.instrument_client(client, Settings(), tracer_provider=tracing.provider)  # no-op
    assert isinstance(client._transport, TracewireTransport)
    assert not isinstance(client._transport.transport, TracewireTransport)
    (wrapped,) = client._mounts.values()
    assert isinstance(wrapped, TracewireTransport) and wrapped.transport is mounted
    with client:
        client.get(f"{echo.url}/echo")
    assert len(client_spans(tracing.spans())) == 1
    assert echo.seen[0].values("traceparent")
    tw_httpx.uninstrument_client(client)
    assert client._mounts[next(iter(client._mounts))] is mounted


def test_instrument_async_client(tracing: Any, echo: EchoServer) -> None:
    async def main() -> None:
        client = tw_httpx.instrument_client(
            httpx.AsyncClient(), Settings(), tracer_provider=tracing.provider
        )
        assert isinstance(client._transport, AsyncTracewireTransport)
        async with client:
            await client.get(f"{echo.url}/echo")

    asyncio.run(main())
    assert len(client_spans(tracing.spans())) == 1


@pytest.fixture
def global_switch() -> Iterator[None]:
    yield
    tw_httpx.uninstrument()


def test_global_instrument_and_uninstrument(
    tracing: Any, echo: EchoServer, global_switch: None
) -> None:
    original_init = httpx.Client.__init__
    tw_httpx.instrument(Settings(), tracer_provider=tracing.provider)
    tw_httpx.instrument(Settings(), tracer_provider=tracing.provider)  # idempotent
    with httpx.Client() as client:
        client.get(f"{echo.url}/echo")

    async def use_async() -> None:
        async with httpx.AsyncClient() as aclient:
            await aclient.get(f"{echo.url}/echo")

    asyncio.run(use_async())
    assert len(client_spans(tracing.spans())) == 2
    assert all(len(seen.values("traceparent")) == 1 for seen in echo.seen)
    tw_httpx.uninstrument()
    assert httpx.Client.__init__ is original_init and not tw_httpx.is_instrumented()
    with httpx.Client() as client:
        client.get(f"{echo.url}/echo")
    assert len(client_spans(tracing.spans())) == 2
    assert echo.seen[-1].values("traceparent") == []


# -------------------------------------------------------------------- contrib coexistence


@pytest.fixture
def contrib(tracing: Any) -> Iterator[HTTPXClientInstrumentor]:
    instrumentor = HTTPXClientInstrumentor()
    yield instrumentor
    if instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.uninstrument()


def test_contrib_patching_the_transport_inside_tracewire(
    tracing: Any, echo: EchoServer, contrib: HTTPXClientInstrumentor
) -> None:
    contrib.instrument(tracer_provider=tracing.provider)
    with make_client(tracing) as client:
        with tracing.provider.get_tracer("t").start_as_current_span("root") as root:
            client.get(f"{echo.url}/echo")
    # tracewire is the outer layer: its span is the one, contrib steps aside.
    (span,) = client_spans(tracing.spans())
    assert span.instrumentation_scope.name == "tracewire"
    assert_child_of_client_span(echo.seen[0].one("traceparent"), span, root)
    # Contrib is really active: a client without tracewire gets contrib's span.
    with httpx.Client() as plain:
        plain.get(f"{echo.url}/echo")
    assert len(client_spans(tracing.spans())) == 2
    assert client_spans(tracing.spans())[1].instrumentation_scope.name != "tracewire"


def test_contrib_wrapping_the_client_outside_tracewire(
    tracing: Any, echo: EchoServer, contrib: HTTPXClientInstrumentor
) -> None:
    client = make_client(tracing)
    HTTPXClientInstrumentor.instrument_client(client, tracer_provider=tracing.provider)
    with client, tracing.provider.get_tracer("t").start_as_current_span("root") as root:
        client.get(f"{echo.url}/echo")
    # contrib is the outer layer here: its span is the one, tracewire adds none.
    (span,) = client_spans(tracing.spans())
    assert span.instrumentation_scope.name.startswith("opentelemetry.instrumentation.httpx")
    assert_child_of_client_span(echo.seen[0].one("traceparent"), span, root)


def test_tracing_fault_never_breaks_the_request(tracing: Any, echo: EchoServer) -> None:
    from opentelemetry.propagators.textmap import TextMapPropagator

    class Exploding(TextMapPropagator):
        def extract(self, carrier: Any, context: Any = None, getter: Any = None) -> Any:
            return context

        def inject(self, carrier: Any, context: Any = None, setter: Any = None) -> None:
            raise RuntimeError("propagator bug")

        @property
        def fields(self) -> set[str]:
            return {"x-exploding"}

    settings = Settings(propagators=[Exploding(), "tracecontext"])
    with make_client(tracing, settings) as client:
        response = client.get(f"{echo.url}/echo")
    assert response.status_code == 200
    assert echo.seen[0].values("traceparent")
    assert len(client_spans(tracing.spans())) == 1

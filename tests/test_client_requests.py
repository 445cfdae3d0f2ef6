"""tracewire.requests against real loopback servers: sessions, module-level calls, retries."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from opentelemetry import baggage, context
from opentelemetry.instrumentation.requests import RequestsInstrumentor
from opentelemetry.trace import SpanKind, StatusCode
from requests.adapters import BaseAdapter, HTTPAdapter
from urllib3.util.retry import Retry

import tracewire.requests as tw_requests
from tests import test_client_core as core
from tests.support.servers import free_port
from tests.test_client_core import EchoServer, client_spans, parse_traceparent
from tracewire import Settings
from tracewire.requests import TracewireAdapter, instrument_session, uninstrument_session

# The echo servers (127.0.0.1 and 127.0.0.2) shared with the core tests, one pair per module.
_echo_servers = core._echo_servers
echo = core.echo
other = core.other


def make_session(
    tracing: Any, settings: Settings | None = None, retries: Retry | None = None
) -> requests.Session:
    session = requests.Session()
    if retries is not None:
        adapter = HTTPAdapter(max_retries=retries)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
    return instrument_session(session, settings or Settings(), tracer_provider=tracing.provider)


def assert_child_of_client_span(seen_traceparent: str, span: Any, root: Any) -> None:
    trace_id, parent_id = parse_traceparent(seen_traceparent)
    assert trace_id == root.get_span_context().trace_id == span.context.trace_id
    assert parent_id == span.context.span_id
    assert span.parent.span_id == root.get_span_context().span_id


def root_span(tracing: Any) -> Any:
    return tracing.provider.get_tracer("t").start_as_current_span("root")


# ------------------------------------------------------------------------------ basics


def test_session_headers_arrive_and_parent_is_the_client_span(
    tracing: Any, echo: EchoServer
) -> None:
    with make_session(tracing) as session, root_span(tracing) as root:
        response = session.get(f"{echo.url}/echo?q=1")
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
    assert "traceparent" not in response.request.headers


@pytest.fixture
def global_switch() -> Iterator[None]:
    yield
    tw_requests.uninstrument()


def test_module_level_functions_after_instrument(
    tracing: Any, echo: EchoServer, global_switch: None
) -> None:
    original_init = requests.Session.__init__
    tw_requests.instrument(Settings(), tracer_provider=tracing.provider)
    tw_requests.instrument(Settings(), tracer_provider=tracing.provider)  # idempotent
    with root_span(tracing) as root:
        assert requests.get(f"{echo.url}/echo").status_code == 200
        assert requests.post(f"{echo.url}/echo", data=b"x").status_code == 200
    spans = client_spans(tracing.spans())
    assert [s.name for s in spans] == ["GET", "POST"]
    for seen, span in zip(echo.seen, spans, strict=True):
        assert_child_of_client_span(seen.one("traceparent"), span, root)
    tw_requests.uninstrument()
    assert requests.Session.__init__ is original_init and not tw_requests.is_instrumented()
    requests.get(f"{echo.url}/echo")
    assert echo.seen[-1].values("traceparent") == []
    assert len(client_spans(tracing.spans())) == 2


@pytest.mark.parametrize("status", [404, 500])
def test_error_status_codes(tracing: Any, echo: EchoServer, status: int) -> None:
    with make_session(tracing) as session:
        assert session.get(f"{echo.url}/status/{status}").status_code == status
    (span,) = client_spans(tracing.spans())
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes["error.type"] == str(status)


# --------------------------------------------------------------------------- redirects


def test_each_redirect_hop_is_a_span_with_fresh_headers(tracing: Any, echo: EchoServer) -> None:
    with make_session(tracing) as session, root_span(tracing) as root:
        response = session.get(f"{echo.url}/redirect?to=/echo")
    assert response.status_code == 200 and len(response.history) == 1
    hop1, hop2 = echo.seen
    span1, span2 = client_spans(tracing.spans())
    assert span1.attributes["http.response.status_code"] == 302
    assert span2.attributes["http.response.status_code"] == 200
    assert_child_of_client_span(hop1.one("traceparent"), span1, root)
    assert_child_of_client_span(hop2.one("traceparent"), span2, root)


def test_redirect_to_a_host_outside_propagate_to_gets_nothing(
    tracing: Any, echo: EchoServer, other: EchoServer
) -> None:
    token = context.attach(baggage.set_baggage("user", "alice"))
    try:
        with make_session(tracing, Settings(propagate_to=["127.0.0.1"])) as session:
            session.get(f"{echo.url}/redirect?to={other.url}/echo")
    finally:
        context.detach(token)
    assert echo.seen[0].values("baggage") == ["user=alice"]
    assert other.seen[0].values("traceparent") == []
    assert other.seen[0].values("baggage") == []
    assert len(client_spans(tracing.spans())) == 2


# ----------------------------------------------------------------------------- retries


def test_each_retry_is_a_span_with_fresh_headers(tracing: Any, echo: EchoServer) -> None:
    retries = Retry(total=3, status_forcelist=[503], backoff_factor=0)
    with make_session(tracing, retries=retries) as session, root_span(tracing) as root:
        response = session.get(f"{echo.url}/flaky?key=a&fail=2")
    assert response.status_code == 200
    assert len(echo.seen) == 3
    spans = client_spans(tracing.spans())
    assert len(spans) == 3
    for seen, span in zip(echo.seen, spans, strict=True):
        assert_child_of_client_span(seen.one("traceparent"), span, root)
    assert len({s.context.span_id for s in spans}) == 3
    assert [s.attributes["http.response.status_code"] for s in spans] == [503, 503, 200]
    assert [s.status.status_code for s in spans] == [
        StatusCode.ERROR,
        StatusCode.ERROR,
        StatusCode.UNSET,
    ]


def test_connect_retries_are_spans_and_the_error_is_the_callers(tracing: Any) -> None:
    port = free_port()
    retries = Retry(total=2, connect=2, backoff_factor=0)
    with make_session(tracing, retries=retries) as session:
        with pytest.raises(requests.exceptions.ConnectionError):
            session.get(f"http://127.0.0.1:{port}/")
    spans = client_spans(tracing.spans())
    assert len(spans) == 3
    assert all(s.status.status_code is StatusCode.ERROR for s in spans)
    assert [s.attributes["error.type"] for s in spans] == [
        "urllib3.exceptions.NewConnectionError",
        "urllib3.exceptions.NewConnectionError",
        "requests.exceptions.ConnectionError",
    ]


def test_instrument_session_keeps_the_adapters_configuration(tracing: Any) -> None:
    session = requests.Session()
    inner = HTTPAdapter(max_retries=Retry(total=5, status_forcelist=[502]), pool_maxsize=3)
    session.mount("https://", inner)
    instrument_session(session, Settings(), tracer_provider=tracing.provider)
    instrument_session(session, Settings(), tracer_provider=tracing.provider)  # no-op
    wrapped = session.get_adapter("https://example.com/")
    assert isinstance(wrapped, TracewireAdapter) and wrapped.adapter is inner
    assert wrapped.max_retries.total == 5 and wrapped._pool_maxsize == 3
    assert list(session.adapters) == ["https://", "http://"]  # prefix order kept
    uninstrument_session(session)
    assert session.get_adapter("https://example.com/") is inner
    assert not any(isinstance(a, TracewireAdapter) for a in session.adapters.values())


# -------------------------------------------------------------------------------- failures


def test_connection_refused(tracing: Any) -> None:
    port = free_port()
    with make_session(tracing) as session, pytest.raises(requests.exceptions.ConnectionError):
        session.get(f"http://127.0.0.1:{port}/")
    (span,) = client_spans(tracing.spans())
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes["error.type"] == "requests.exceptions.ConnectionError"


def test_timeout(tracing: Any, echo: EchoServer) -> None:
    with make_session(tracing) as session, pytest.raises(requests.exceptions.ReadTimeout):
        session.get(f"{echo.url}/slow?delay=1", timeout=0.2)
    (span,) = client_spans(tracing.spans())
    assert span.attributes["error.type"] == "requests.exceptions.ReadTimeout"


class _Failing(BaseAdapter):
    """An adapter (e.g. for a custom scheme) that fails with one given exception object."""

    def __init__(self, exc: Exception) -> None:
        super().__init__()
        self.exc = exc

    def send(self, request: Any, *args: Any, **kwargs: Any) -> requests.Response:
        raise self.exc

    def close(self) -> None:
        pass


def test_the_original_exception_object_is_raised(tracing: Any) -> None:
    original = requests.exceptions.ConnectionError("refused")
    session = requests.Session()
    session.mount("http://", _Failing(original))
    instrument_session(session, Settings(), tracer_provider=tracing.provider)
    with pytest.raises(requests.exceptions.ConnectionError) as info:
        session.get("http://127.0.0.1:1/")
    assert info.value is original
    (span,) = client_spans(tracing.spans())
    assert span.attributes["error.type"] == "requests.exceptions.ConnectionError"


# ------------------------------------------------------------------------------- streaming


def test_stream_span_ends_at_close(tracing: Any, echo: EchoServer) -> None:
    with make_session(tracing) as session:
        response = session.get(f"{echo.url}/stream?chunks=4", stream=True)
        assert response.status_code == 200
        assert client_spans(tracing.spans()) == []
        assert len(next(response.iter_content(1024))) == 1024
        assert client_spans(tracing.spans()) == []
        response.close()
        (span,) = client_spans(tracing.spans())
    assert span.attributes["http.response.status_code"] == 200


def test_stream_span_ends_when_body_is_read(tracing: Any, echo: EchoServer) -> None:
    with make_session(tracing) as session:
        response = session.get(f"{echo.url}/stream?chunks=3", stream=True)
        assert client_spans(tracing.spans()) == []
        assert len(response.content) == 3 * 1024
        assert len(client_spans(tracing.spans())) == 1
        response.close()
    assert len(client_spans(tracing.spans())) == 1


def test_body_failing_midway_makes_the_span_an_error(tracing: Any, echo: EchoServer) -> None:
    with make_session(tracing) as session, pytest.raises(requests.exceptions.ConnectionError):
        session.get(f"{echo.url}/stream?chunks=1&stall=2.5", timeout=(5, 1.0))
    (span,) = client_spans(tracing.spans())
    assert span.attributes["http.response.status_code"] == 200
    assert span.attributes["error.type"] == "requests.exceptions.ConnectionError"
    assert span.status.status_code is StatusCode.ERROR


def test_non_streaming_span_ends_with_the_call(tracing: Any, echo: EchoServer) -> None:
    with make_session(tracing) as session:
        response = session.get(f"{echo.url}/stream?chunks=2")
        assert len(client_spans(tracing.spans())) == 1
    assert len(response.content) == 2048
    assert isinstance(response, requests.Response)


# ----------------------------------------------------------------------------------- hooks


def test_hooks(tracing: Any, echo: EchoServer) -> None:
    def on_request(span: Any, request: requests.PreparedRequest) -> None:
        span.set_attribute("test.url", request.url or "")

    def on_response(span: Any, request: Any, response: requests.Response) -> None:
        span.set_attribute("test.status", response.status_code)

    settings = Settings(client_request_hook=on_request, client_response_hook=on_response)
    with make_session(tracing, settings) as session:
        session.get(f"{echo.url}/echo")
    (span,) = client_spans(tracing.spans())
    assert span.attributes["test.url"] == f"{echo.url}/echo"
    assert span.attributes["test.status"] == 200


def test_raising_hooks_leave_the_request_alone(
    tracing: Any, echo: EchoServer, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args: Any) -> None:
        raise KeyError("bug in hook")

    settings = Settings(client_request_hook=broken, client_response_hook=broken)
    with (
        caplog.at_level(logging.WARNING, logger="tracewire"),
        make_session(tracing, settings) as session,
    ):
        responses = [session.get(f"{echo.url}/echo") for _ in range(2)]
    assert [r.status_code for r in responses] == [200, 200]
    assert all(seen.values("traceparent") for seen in echo.seen)
    assert len(client_spans(tracing.spans())) == 2
    assert caplog.text.count("client_request_hook raised") == 1


# ---------------------------------------------------------------- explicit headers, targets


def test_caller_set_traceparent_is_sent_unchanged(
    tracing: Any, echo: EchoServer, caplog: pytest.LogCaptureFixture
) -> None:
    explicit = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    with caplog.at_level(logging.WARNING, logger="tracewire"), make_session(tracing) as session:
        response = session.get(f"{echo.url}/echo", headers={"traceparent": explicit})
    assert echo.seen[0].values("traceparent") == [explicit]
    assert response.request.headers["traceparent"] == explicit  # the caller's stays
    assert "'traceparent'" in caplog.text and explicit not in caplog.text


def test_propagate_to_and_baggage_to_per_host(
    tracing: Any, echo: EchoServer, other: EchoServer
) -> None:
    settings = Settings(propagate_to=["127.0.0.*"], baggage_to=["127.0.0.2"])
    token = context.attach(baggage.set_baggage("tenant", "t1"))
    try:
        with make_session(tracing, settings) as session:
            session.get(f"{echo.url}/echo")
            session.get(f"{other.url}/echo")
    finally:
        context.detach(token)
    assert echo.seen[0].values("traceparent") and echo.seen[0].values("baggage") == []
    assert other.seen[0].values("baggage") == ["tenant=t1"]


def test_require_parent(tracing: Any, echo: EchoServer) -> None:
    with make_session(tracing, Settings(require_parent=True)) as session:
        session.get(f"{echo.url}/echo")
        with root_span(tracing):
            session.get(f"{echo.url}/echo")
    assert echo.seen[0].values("traceparent") == []
    assert echo.seen[1].values("traceparent")
    assert len(client_spans(tracing.spans())) == 1


# -------------------------------------------------------------------- contrib coexistence


@pytest.fixture
def contrib() -> Iterator[RequestsInstrumentor]:
    instrumentor = RequestsInstrumentor()
    yield instrumentor
    if instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.uninstrument()


def test_contrib_requests_instrumentation_wins(
    tracing: Any,
    echo: EchoServer,
    contrib: RequestsInstrumentor,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("tracewire.client._told_outer", False)
    contrib.instrument(tracer_provider=tracing.provider)
    with caplog.at_level(logging.INFO, logger="tracewire"):
        with make_session(tracing) as session, root_span(tracing) as root:
            session.get(f"{echo.url}/echo")
            session.get(f"{echo.url}/echo")
    assert caplog.text.count("another HTTP instrumentation") == 1  # said once
    # contrib wraps Session.send, above every adapter: its span is the one.
    spans = client_spans(tracing.spans())
    assert len(spans) == 2
    for seen, span in zip(echo.seen, spans, strict=True):
        assert span.instrumentation_scope.name.startswith("opentelemetry.instrumentation.requests")
        assert_child_of_client_span(seen.one("traceparent"), span, root)

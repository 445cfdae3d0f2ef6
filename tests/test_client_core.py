"""The framework-neutral client core, plus the echo server the httpx/requests tests share.

The core is exercised directly (real SDK, real propagators, real header mappings); the
adapters' behaviour against real servers is in test_client_httpx.py / test_client_requests.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
import requests
from opentelemetry import baggage, context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import SpanKind, StatusCode
from requests.structures import CaseInsensitiveDict

from tests.support.servers import UvicornThread
from tracewire import Settings
from tracewire.client import (
    SUPPRESS_HTTP_KEY,
    SUPPRESS_KEY,
    SUPPRESS_PLAIN_KEY,
    ClientTracer,
    OutgoingRequest,
    error_type,
    protocol_version,
    sanitize_url,
    split_url,
)
from tracewire.matching import ORIGIN_KEY

# ----------------------------------------------------------------------------- echo server


@dataclass
class Seen:
    """One request as the server received it."""

    method: str
    path: str
    headers: list[tuple[str, str]]

    def values(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k == name]

    def one(self, name: str) -> str:
        found = self.values(name)
        assert len(found) == 1, f"{name}: {found}"
        return found[0]


@dataclass
class EchoApp:
    """An ASGI app that records every request and answers with what it received.

    Routes: ``/echo`` (anything else too), ``/status/<code>``, ``/redirect?to=<url>``,
    ``/flaky?key=<k>&fail=<n>`` (503 the first n times per key), ``/slow?delay=<s>``,
    ``/stream?chunks=<n>[&stall=<s>]`` (a body in n chunks, the end after s seconds).
    """

    seen: list[Seen] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        path = scope["path"]
        with self.lock:
            self.seen.append(Seen(scope["method"], path, headers))
        query = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
        body = json.dumps({"path": path, "headers": headers}).encode()
        status = 200
        extra: list[tuple[bytes, bytes]] = []
        if path.startswith("/status/"):
            status = int(path.rsplit("/", 1)[1])
        elif path == "/redirect":
            status = 302
            extra.append((b"location", query["to"].encode()))
        elif path == "/flaky":
            with self.lock:
                n = self.counts[query["key"]] = self.counts.get(query["key"], 0) + 1
            if n <= int(query.get("fail", "1")):
                status = 503
        elif path == "/slow":
            await asyncio.sleep(float(query.get("delay", "1")))
        elif path == "/stream":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            for _ in range(int(query.get("chunks", "3"))):
                await send({"type": "http.response.body", "body": b"x" * 1024, "more_body": True})
            if "stall" in query:  # the rest of the body comes late (a read timeout mid-body)
                await asyncio.sleep(float(query["stall"]))
            await send({"type": "http.response.body", "body": b""})
            return
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json"), *extra],
            }
        )
        await send({"type": "http.response.body", "body": body})

    def clear(self) -> None:
        with self.lock:
            self.seen.clear()
            self.counts.clear()


class EchoServer:
    def __init__(self, host: str) -> None:
        self.app = EchoApp()
        self.thread = UvicornThread(self.app, host=host, timeout_graceful_shutdown=2)
        self.host = host
        self.port = self.thread.port
        self.url = self.thread.url

    @property
    def seen(self) -> list[Seen]:
        return self.app.seen


@pytest.fixture(scope="module")
def _echo_servers() -> Iterator[tuple[EchoServer, EchoServer]]:
    main, other = EchoServer("127.0.0.1"), EchoServer("127.0.0.2")
    main.thread.start()
    other.thread.start()
    try:
        yield main, other
    finally:
        main.thread.stop()
        other.thread.stop()


@pytest.fixture
def echo(_echo_servers: tuple[EchoServer, EchoServer]) -> EchoServer:
    """The echo server on 127.0.0.1, its record cleared."""
    _echo_servers[0].app.clear()
    return _echo_servers[0]


@pytest.fixture
def other(_echo_servers: tuple[EchoServer, EchoServer]) -> EchoServer:
    """A second echo server on 127.0.0.2 (another host for propagate_to / baggage_to)."""
    _echo_servers[1].app.clear()
    return _echo_servers[1]


def parse_traceparent(value: str) -> tuple[int, int]:
    """``(trace_id, parent_id)`` of a traceparent value."""
    version, trace_id, parent_id, flags = value.split("-")
    assert version == "00" and len(flags) == 2
    return int(trace_id, 16), int(parent_id, 16)


def client_spans(spans: list[Any]) -> list[Any]:
    return [s for s in spans if s.kind is SpanKind.CLIENT]


# ------------------------------------------------------------------------------ pure helpers


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://example.com/a", ("http", "example.com", None)),
        ("HTTPS://Example.com:8443/a?b=c", ("https", "Example.com", 8443)),
        ("http://user:pw@host:81", ("http", "host", 81)),
        ("http://[::1]:8080/x", ("http", "::1", 8080)),
        ("http://[::1]/x", ("http", "::1", None)),
        ("http://host?x=1@evil", ("http", "host", None)),
        ("http://host#frag", ("http", "host", None)),
        # A malformed authority names no host (the same rule as the server side's Host).
        ("http://host:notaport/", ("http", "", None)),
        ("http://[::1/", ("http", "", None)),
        ("no-scheme", ("", "", None)),
    ],
)
def test_split_url(url: str, expected: tuple[str, str, int | None]) -> None:
    assert split_url(url) == expected


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://h/p", "http://h/p"),
        ("http://user:pw@h:1/p", "http://REDACTED:REDACTED@h:1/p"),
        ("http://user@h/p", "http://REDACTED:REDACTED@h/p"),
        ("http://h/p?sig=abc&x=1", "http://h/p?sig=REDACTED&x=1"),
        ("http://h/p?x=1&Signature=s#f", "http://h/p?x=1&Signature=REDACTED#f"),
        ("http://h/p?x=sig=1", "http://h/p?x=sig=1"),
        ("http://h/p?sig=", "http://h/p?sig="),
        ("http://h/p?a@b=1", "http://h/p?a@b=1"),
    ],
)
def test_sanitize_url(url: str, expected: str) -> None:
    assert sanitize_url(url, frozenset({"sig", "Signature"})) == expected


def test_sanitize_url_uses_the_settings_defaults() -> None:
    tracer = ClientTracer(Settings())
    url = "https://h/p?X-Amz-Signature=secret&AWSAccessKeyId=key&keep=1"
    assert sanitize_url(url, tracer.source.current().redact_query) == (
        "https://h/p?X-Amz-Signature=REDACTED&AWSAccessKeyId=REDACTED&keep=1"
    )


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"HTTP/1.1", "1.1"),
        ("HTTP/2", "2"),
        (11, "1.1"),
        (10, "1.0"),
        (20, "2"),
        (None, None),
        (0, None),
    ],
)
def test_protocol_version(raw: object, expected: str | None) -> None:
    assert protocol_version(raw) == expected


def test_error_type_prefers_the_public_path() -> None:
    assert error_type(httpx.ConnectError("x")) == "httpx.ConnectError"
    assert (
        error_type(requests.exceptions.ConnectionError("x"))
        == "requests.exceptions.ConnectionError"
    )
    assert error_type(ValueError("x")) == "ValueError"
    assert error_type(asyncio.CancelledError()) == "asyncio.exceptions.CancelledError"


# ------------------------------------------------------------------------------ the tracer


def _headers(**values: str) -> CaseInsensitiveDict[str]:
    return CaseInsensitiveDict(values)


def _start(tracer: ClientTracer, headers: Any, url: str = "http://api.local:8080/x?y=1") -> Any:
    scheme, host, port = split_url(url)
    return tracer.start(OutgoingRequest("GET", scheme, host, port, url, headers, object()))


def test_start_injects_and_describes(tracing: Any) -> None:
    tracer = ClientTracer(Settings(), tracer_provider=tracing.provider)
    root_tracer = tracing.provider.get_tracer("test")
    with root_tracer.start_as_current_span("root") as root:
        headers = _headers(accept="*/*")
        call = _start(tracer, headers)
    assert call is not None and call.span is not None and call.recording
    trace_id, parent_id = parse_traceparent(headers["traceparent"])
    span_context = call.span.get_span_context()
    assert trace_id == root.get_span_context().trace_id
    assert parent_id == span_context.span_id
    call.respond(200, "1.1", None)
    call.cleanup()
    assert "traceparent" not in headers and headers["accept"] == "*/*"
    call.end()
    (span,) = client_spans(tracing.spans())
    assert span.name == "GET"
    assert span.parent.span_id == root.get_span_context().span_id
    assert dict(span.attributes) == {
        "http.request.method": "GET",
        "url.full": "http://api.local:8080/x?y=1",
        "server.address": "api.local",
        "server.port": 8080,
        "http.response.status_code": 200,
        "network.protocol.version": "1.1",
    }
    assert span.status.status_code is StatusCode.UNSET


def test_default_port_and_unknown_method(tracing: Any) -> None:
    tracer = ClientTracer(Settings(), tracer_provider=tracing.provider)
    headers = _headers()
    call = tracer.start(OutgoingRequest("FETCH", "https", "h", None, "https://h/", headers, None))
    call.end()
    (span,) = client_spans(tracing.spans())
    assert span.name == "_OTHER"
    assert span.attributes["http.request.method"] == "_OTHER"
    assert span.attributes["http.request.method_original"] == "FETCH"
    assert span.attributes["server.port"] == 443
    lower = tracer.start(OutgoingRequest("get", "http", "h", None, "http://h/", _headers(), None))
    lower.end()
    span = client_spans(tracing.spans())[-1]
    assert span.name == "GET" and span.attributes["http.request.method_original"] == "get"


@pytest.mark.parametrize("status", [404, 500])
def test_error_statuses(tracing: Any, status: int) -> None:
    call = _start(ClientTracer(Settings(), tracer_provider=tracing.provider), _headers())
    call.respond(status, None, None)
    call.end()
    (span,) = client_spans(tracing.spans())
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes["error.type"] == str(status)


def test_exception_ends_once_with_error_type(tracing: Any) -> None:
    call = _start(ClientTracer(Settings(), tracer_provider=tracing.provider), _headers())
    call.end(httpx.ReadTimeout("slow"))
    call.end()  # later calls do nothing
    (span,) = client_spans(tracing.spans())
    assert span.attributes["error.type"] == "httpx.ReadTimeout"
    assert span.status.status_code is StatusCode.ERROR
    assert "slow" not in (span.status.description or "")


@pytest.mark.parametrize("key", [SUPPRESS_KEY, SUPPRESS_HTTP_KEY, SUPPRESS_PLAIN_KEY])
def test_suppressed_context_means_untouched(tracing: Any, key: str) -> None:
    tracer = ClientTracer(Settings(), tracer_provider=tracing.provider)
    headers = _headers()
    token = context.attach(context.set_value(key, True))
    try:
        assert _start(tracer, headers) is None
    finally:
        context.detach(token)
    assert dict(headers) == {}
    assert tracing.spans() == []


def test_require_parent(tracing: Any) -> None:
    tracer = ClientTracer(Settings(require_parent=True), tracer_provider=tracing.provider)
    headers = _headers()
    assert _start(tracer, headers) is None
    assert "traceparent" not in headers
    with tracing.provider.get_tracer("t").start_as_current_span("root"):
        call = _start(tracer, headers)
    assert call is not None and "traceparent" in headers
    call.end()
    assert len(client_spans(tracing.spans())) == 1


def test_propagate_to_and_baggage_to(tracing: Any) -> None:
    settings = Settings(propagate_to=["api.local", "*.trusted"], baggage_to=["api.local"])
    tracer = ClientTracer(settings, tracer_provider=tracing.provider)
    token = context.attach(baggage.set_baggage("user", "alice"))
    try:
        allowed, no_baggage, outside = _headers(), _headers(), _headers()
        calls = [
            _start(tracer, allowed, "http://api.local/"),
            _start(tracer, no_baggage, "http://x.trusted/"),
            _start(tracer, outside, "https://elsewhere.example/"),
        ]
    finally:
        context.detach(token)
    assert "traceparent" in allowed and allowed["baggage"] == "user=alice"
    assert "traceparent" in no_baggage and "baggage" not in no_baggage
    assert dict(outside) == {}
    for call in calls:
        call.end()
    # A host outside propagate_to still gets its CLIENT span.
    assert len(client_spans(tracing.spans())) == 3


def test_host_port_pin_and_same_origin(tracing: Any) -> None:
    settings = Settings(propagate_to=["api.local:8080", "same-origin"])
    tracer = ClientTracer(settings, tracer_provider=tracing.provider)
    pinned, other_port = _headers(), _headers()
    _start(tracer, pinned, "http://api.local:8080/").end()
    _start(tracer, other_port, "http://api.local:9090/").end()
    assert "traceparent" in pinned and "traceparent" not in other_port
    token = context.attach(context.set_value(ORIGIN_KEY, ("https", "self.local", 443)))
    try:
        same, cross = _headers(), _headers()
        _start(tracer, same, "https://self.local/x").end()
        _start(tracer, cross, "http://self.local/x").end()
    finally:
        context.detach(token)
    assert "traceparent" in same and "traceparent" not in cross


def test_explicit_header_skips_only_its_propagator(
    tracing: Any, caplog: pytest.LogCaptureFixture
) -> None:
    tracer = ClientTracer(
        Settings(propagators=["tracecontext", "b3"]), tracer_provider=tracing.provider
    )
    explicit = "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"
    headers = _headers(B3=explicit)
    with caplog.at_level(logging.WARNING, logger="tracewire"):
        call = _start(tracer, headers)
        _start(tracer, _headers(b3=explicit)).end()
    assert headers["b3"] == explicit
    assert "traceparent" in headers
    call.cleanup()
    assert dict(headers) == {"B3": explicit}  # the caller's header stays, ours is gone
    call.end()
    warnings = [r for r in caplog.records if "'b3'" in r.getMessage()]
    assert len(warnings) == 1  # rate limited
    assert explicit not in caplog.text  # names only, never values


def test_hooks_called_and_contained(tracing: Any, caplog: pytest.LogCaptureFixture) -> None:
    got: list[Any] = []

    def on_request(span: Any, request: Any) -> None:
        got.append(("request", request))
        span.set_attribute("hooked", True)

    def on_response(span: Any, request: Any, response: Any) -> None:
        got.append(("response", response))
        raise RuntimeError("hook bug")

    settings = Settings(client_request_hook=on_request, client_response_hook=on_response)
    tracer = ClientTracer(settings, tracer_provider=tracing.provider)
    marker = object()
    with caplog.at_level(logging.WARNING, logger="tracewire"):
        call = tracer.start(
            OutgoingRequest("GET", "http", "h", None, "http://h/", _headers(), marker)
        )
        call.respond(200, None, "the-response")
        call.end()
    assert got == [("request", marker), ("response", "the-response")]
    (span,) = client_spans(tracing.spans())
    assert span.attributes["hooked"] is True
    assert "client_response_hook raised builtins.RuntimeError" in caplog.text or (
        "client_response_hook raised RuntimeError" in caplog.text
    )


def test_request_hook_values_win_over_tracewires(tracing: Any) -> None:
    def rename(span: Any, request: Any) -> None:
        span.set_attribute("url.full", "https://example/redacted-by-hook")

    tracer = ClientTracer(Settings(client_request_hook=rename), tracer_provider=tracing.provider)
    call = _start(tracer, _headers())
    call.respond(200, "1.1", None)
    call.end()
    (span,) = client_spans(tracing.spans())
    assert span.attributes["url.full"] == "https://example/redacted-by-hook"
    assert span.attributes["http.response.status_code"] == 200


def test_attributes_without_a_response(tracing: Any) -> None:
    call = _start(ClientTracer(Settings(), tracer_provider=tracing.provider), _headers())
    call.end(ConnectionRefusedError())
    (span,) = client_spans(tracing.spans())
    assert span.attributes["url.full"] == "http://api.local:8080/x?y=1"
    assert span.attributes["error.type"] == "ConnectionRefusedError"


def test_unsampled_span_injects_but_builds_nothing() -> None:
    provider = TracerProvider(sampler=ALWAYS_OFF)
    called: list[object] = []
    settings = Settings(client_request_hook=lambda span, request: called.append(request))
    tracer = ClientTracer(settings, tracer_provider=provider)
    headers = _headers()
    call = _start(tracer, headers)
    assert call is not None and call.span is not None and not call.recording
    _, parent_id = parse_traceparent(headers["traceparent"])
    assert parent_id == call.span.get_span_context().span_id
    assert headers["traceparent"].endswith("-00") or headers["traceparent"].endswith("-02")
    call.end()
    assert called == []


def _remote_parent(flags: int) -> Any:
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, set_span_in_context

    span_context = SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=TraceFlags(flags))
    return set_span_in_context(NonRecordingSpan(span_context))


@pytest.mark.parametrize(("flags", "sent"), [(0x00, "00"), (0x02, "02")])
def test_unsampled_parent_skips_the_sampler(tracing: Any, flags: int, sent: str) -> None:
    tracer = ClientTracer(Settings(), tracer_provider=tracing.provider)
    headers = _headers()
    token = context.attach(_remote_parent(flags))
    try:
        call = _start(tracer, headers)
    finally:
        context.detach(token)
    assert call.span is not None and not call.recording
    span_context = call.span.get_span_context()
    assert span_context.trace_id == 0xABC and span_context.span_id not in (0, 0xDEF)
    trace_id, parent_id = parse_traceparent(headers["traceparent"])
    assert (trace_id, parent_id) == (0xABC, span_context.span_id)
    assert headers["traceparent"].endswith("-" + sent)  # the random flag is kept
    call.end()
    assert tracing.spans() == []


def test_without_an_sdk_the_parent_context_still_goes_downstream() -> None:
    from opentelemetry.trace import NoOpTracerProvider

    tracer = ClientTracer(Settings(), tracer_provider=NoOpTracerProvider())
    headers = _headers()
    token = context.attach(_remote_parent(0x01))
    try:
        call = _start(tracer, headers)
    finally:
        context.detach(token)
    assert call is not None and not call.recording
    assert parse_traceparent(headers["traceparent"]) == (0xABC, 0xDEF)


def test_a_sampler_that_records_unsampled_parents_is_asked(tracing: Any) -> None:
    from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased

    provider = TracerProvider(sampler=ParentBased(ALWAYS_ON, remote_parent_not_sampled=ALWAYS_ON))
    tracer = ClientTracer(Settings(), tracer_provider=provider)
    token = context.attach(_remote_parent(0))
    try:
        call = _start(tracer, _headers())
    finally:
        context.detach(token)
    assert call.recording


def test_next_attempt_is_a_sibling_with_fresh_headers(tracing: Any) -> None:
    tracer = ClientTracer(Settings(), tracer_provider=tracing.provider)
    with tracing.provider.get_tracer("t").start_as_current_span("root") as root:
        headers = _headers()
        first = _start(tracer, headers)
        first_value = headers["traceparent"]
        first.cleanup()
        first.end()
        retry_headers = _headers()
        second = first.next_attempt(retry_headers)
        second.end()
    assert "traceparent" not in headers
    assert retry_headers["traceparent"] != first_value
    spans = client_spans(tracing.spans())
    assert len(spans) == 2
    assert {s.parent.span_id for s in spans} == {root.get_span_context().span_id}
    _, parent_id = parse_traceparent(retry_headers["traceparent"])
    assert parent_id == spans[1].context.span_id


def test_outer_http_client_span_gets_no_duplicate(tracing: Any) -> None:
    tracer = ClientTracer(Settings(), tracer_provider=tracing.provider)
    other = tracing.provider.get_tracer("another.instrumentation")
    with other.start_as_current_span(
        "GET", kind=SpanKind.CLIENT, attributes={"http.method": "GET"}
    ) as outer:
        headers = _headers()
        call = _start(tracer, headers)
    assert call is not None and call.span is None
    _, parent_id = parse_traceparent(headers["traceparent"])
    assert parent_id == outer.get_span_context().span_id
    call.end()
    assert len(client_spans(tracing.spans())) == 1


def test_non_http_client_span_is_a_parent(tracing: Any) -> None:
    tracer = ClientTracer(Settings(), tracer_provider=tracing.provider)
    sdk_tracer = tracing.provider.get_tracer("my.sdk")
    with sdk_tracer.start_as_current_span("charge", kind=SpanKind.CLIENT) as outer:
        call = _start(tracer, _headers())
    call.end()
    spans = client_spans(tracing.spans())
    inner = next(s for s in spans if s.name == "GET")
    assert inner.parent.span_id == outer.get_span_context().span_id


def test_failing_propagator_is_contained(tracing: Any, caplog: pytest.LogCaptureFixture) -> None:
    from opentelemetry.propagators.textmap import TextMapPropagator

    class Broken(TextMapPropagator):
        def extract(self, carrier: Any, context: Any = None, getter: Any = None) -> Any:
            raise AssertionError("not used")

        def inject(self, carrier: Any, context: Any = None, setter: Any = None) -> None:
            setter.set(carrier, "x-broken", "1")
            raise RuntimeError("bug")

        @property
        def fields(self) -> set[str]:
            return {"x-broken"}

    tracer = ClientTracer(
        Settings(propagators=["tracecontext", Broken()]), tracer_provider=tracing.provider
    )
    headers = _headers()
    with caplog.at_level(logging.WARNING, logger="tracewire"):
        call = _start(tracer, headers)
    assert call is not None
    # The broken propagator's half-done header is taken back; the others still inject.
    assert "x-broken" not in headers and "traceparent" in headers
    call.end()
    assert "tracewire fault in client-inject:Broken" in caplog.text
    assert len(client_spans(tracing.spans())) == 1


def test_settings_type_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(TypeError, match=r"tracewire\.Settings"):
        ClientTracer({"propagators": "b3"})  # type: ignore[arg-type]
    monkeypatch.setenv("TRACEWIRE_PROPAGATE_TO", "only.example")
    tracer = ClientTracer()
    plan = tracer.source.current()
    assert plan.may_propagate("only.example") and not plan.may_propagate("other.example")

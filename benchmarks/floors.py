"""The SDK floors: the least the OpenTelemetry SDK itself costs for one span per request.

References, not products. Each does only what the SDK must do for a span-per-request
instrumentation, with everything a real instrumentation has to work out from the request given
to it pre-built (the request of the benchmarks is the same every time):

- server floor (ASGI, WSGI): one ``tracer.start_span`` SERVER span with the same 9 attributes
  tracewire sets at the start of a request, passed to ``start_span``; the parent is a
  pre-built ``Context`` holding the remote parent ``SpanContext`` (no header parsing); the span
  is made current (``attach``) around the app and detached after it; the response status is
  recorded (``http.response.status_code``, what an instrumentation records for a 200: the span
  status of a 200 SERVER span stays UNSET); ``end``.
- client floor (httpx sync and async, requests): one ``start_span`` CLIENT span (the current
  context is its parent) with its 4 request attributes, ``traceparent`` injected into the
  outgoing headers (formatted from the span context, no propagator objects), the status code
  recorded from the response, ``end``.

In the not-recorded modes the same code runs: the SDK's sampler decides and returns a
non-recording span, on which ``set_attribute`` and ``end`` do nothing. That is the
"not-sampled floor" the budget of issue 11 compares with.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

import httpx
from opentelemetry.context import attach, detach
from opentelemetry.trace import Span, SpanKind, TracerProvider, set_span_in_context
from opentelemetry.util.types import AttributeValue
from requests.adapters import BaseAdapter

from benchmarks._harness import HOST, USER_AGENT, parent_context

PATH = "/items/42"
QUERY = "q=1"
URL = f"http://{HOST}{PATH}?{QUERY}"
STATUS_CODE = "http.response.status_code"

# The 9 attributes tracewire puts on the SERVER span of the benchmark request at its start
# (stable HTTP semantic conventions); tracewire's own `tracewire.propagation.format` and the
# response's status code come on top.
SERVER_ATTRIBUTES: dict[str, AttributeValue] = {
    "http.request.method": "GET",
    "url.path": PATH,
    "url.query": QUERY,
    "url.scheme": "http",
    "network.protocol.version": "1.1",
    "server.address": "127.0.0.1",
    "server.port": 8000,
    "client.address": "127.0.0.1",
    "user_agent.original": USER_AGENT,
}
# The CLIENT span's request attributes; the status code comes with the response.
CLIENT_ATTRIBUTES: dict[str, AttributeValue] = {
    "http.request.method": "GET",
    "url.full": URL,
    "server.address": "127.0.0.1",
    "server.port": 8000,
}

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Environ = dict[str, Any]
WSGIApp = Callable[[Environ, Callable[..., Any]], Iterable[bytes]]


def _traceparent(span: Span) -> str:
    sc = span.get_span_context()
    return f"00-{sc.trace_id:032x}-{sc.span_id:016x}-{sc.trace_flags & 0x01:02x}"


class AsgiServerFloor:
    """The server floor as an ASGI middleware."""

    def __init__(self, app: ASGIApp, provider: TracerProvider, mode: str) -> None:
        self.app = app
        self.tracer = provider.get_tracer("benchmarks.floor")
        self.parent = parent_context(mode)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        parent = self.parent
        span = self.tracer.start_span(
            "GET", parent, kind=SpanKind.SERVER, attributes=SERVER_ATTRIBUTES
        )
        token = attach(set_span_in_context(span, parent))
        try:
            await self.app(scope, receive, send)
        finally:
            detach(token)
            span.set_attribute(STATUS_CODE, 200)
            span.end()


class WsgiServerFloor:
    """The server floor as a WSGI middleware."""

    def __init__(self, app: WSGIApp, provider: TracerProvider, mode: str) -> None:
        self.app = app
        self.tracer = provider.get_tracer("benchmarks.floor")
        self.parent = parent_context(mode)

    def __call__(self, environ: Environ, start_response: Callable[..., Any]) -> Iterable[bytes]:
        parent = self.parent
        span = self.tracer.start_span(
            "GET", parent, kind=SpanKind.SERVER, attributes=SERVER_ATTRIBUTES
        )
        token = attach(set_span_in_context(span, parent))
        try:
            return self.app(environ, start_response)
        finally:
            detach(token)
            span.set_attribute(STATUS_CODE, 200)
            span.end()


class HttpxClientFloor(httpx.BaseTransport):
    """The client floor as an httpx transport around the real one."""

    def __init__(self, inner: httpx.BaseTransport, provider: TracerProvider) -> None:
        self.inner = inner
        self.tracer = provider.get_tracer("benchmarks.floor")

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        span = self.tracer.start_span("GET", kind=SpanKind.CLIENT, attributes=CLIENT_ATTRIBUTES)
        try:
            request.headers["traceparent"] = _traceparent(span)
            response = self.inner.handle_request(request)
            span.set_attribute(STATUS_CODE, response.status_code)
            return response
        finally:
            span.end()

    def close(self) -> None:
        self.inner.close()


class AsyncHttpxClientFloor(httpx.AsyncBaseTransport):
    """Async twin of ``HttpxClientFloor``."""

    def __init__(self, inner: httpx.AsyncBaseTransport, provider: TracerProvider) -> None:
        self.inner = inner
        self.tracer = provider.get_tracer("benchmarks.floor")

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        span = self.tracer.start_span("GET", kind=SpanKind.CLIENT, attributes=CLIENT_ATTRIBUTES)
        try:
            request.headers["traceparent"] = _traceparent(span)
            response = await self.inner.handle_async_request(request)
            span.set_attribute(STATUS_CODE, response.status_code)
            return response
        finally:
            span.end()

    async def aclose(self) -> None:
        await self.inner.aclose()


class RequestsClientFloor(BaseAdapter):
    """The client floor as a requests adapter around the real one."""

    def __init__(self, inner: BaseAdapter, provider: TracerProvider) -> None:
        super().__init__()
        self.inner = inner
        self.tracer = provider.get_tracer("benchmarks.floor")

    def send(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        span = self.tracer.start_span("GET", kind=SpanKind.CLIENT, attributes=CLIENT_ATTRIBUTES)
        try:
            request.headers["traceparent"] = _traceparent(span)
            response = self.inner.send(request, *args, **kwargs)
            span.set_attribute(STATUS_CODE, response.status_code)
            return response
        finally:
            span.end()

    def close(self) -> None:
        self.inner.close()

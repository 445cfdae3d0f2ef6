"""httpx client tracing: a transport wrapper, per client or for every client.

One line per client::

    client = httpx.Client(transport=TracingTransport())
    aclient = httpx.AsyncClient(transport=AsyncTracingTransport())

An existing client (its transport and every mounted transport)::

    instrument_client(client)

Every client made afterwards (a thin switch over ``instrument_client``; reversible)::

    tracewire.httpx.instrument()
    ...
    tracewire.httpx.uninstrument()

Each call of the transport is one attempt: each redirect hop is its own CLIENT span with
freshly injected headers. The span ends when the response body has been read or closed
(``client.stream(...)`` included), not when the headers arrive.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
from opentelemetry.context import attach, detach
from opentelemetry.trace import TracerProvider

from tracewire._switch import GlobalSwitch
from tracewire.client import ClientCall, ClientTracer, protocol_version
from tracewire.settings import Settings

__all__ = [
    "AsyncTracingTransport",
    "TracingTransport",
    "instrument",
    "instrument_client",
    "uninstrument",
    "uninstrument_client",
]

_VERSIONS = {b"HTTP/1.0": "1.0", b"HTTP/1.1": "1.1", b"HTTP/2": "2", b"HTTP/3": "3"}


def _client_tracer(
    tracer: ClientTracer | None,
    settings: Settings | None,
    tracer_provider: TracerProvider | None,
) -> ClientTracer:
    if tracer is not None:
        if not isinstance(tracer, ClientTracer):
            raise TypeError(f"tracer must be a ClientTracer, got {type(tracer).__name__}")
        return tracer
    return ClientTracer(settings, tracer_provider)


def _start(tracer: ClientTracer, request: httpx.Request) -> ClientCall | None:
    url = request.url
    return tracer.start(
        request.method, url.scheme, url.host, url.port, url, request.headers, request, _NAMES
    )


_NAMES = httpx.Headers.keys  # lowercase names already


def _respond(call: ClientCall, response: httpx.Response) -> None:
    raw: object = response.extensions.get("http_version")
    version = _VERSIONS.get(raw) if isinstance(raw, bytes) else None
    if version is None:
        version = protocol_version(raw)
    call.respond(response.status_code, version, response)


class _TracedStream(httpx.SyncByteStream):
    """The response body; the span ends when it is exhausted, fails, or is closed."""

    __slots__ = ("call", "stream")

    def __init__(self, stream: httpx.SyncByteStream, call: ClientCall) -> None:
        self.stream = stream
        self.call = call

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self.stream
        except GeneratorExit:  # the reader stopped early; close() ends the span
            raise
        except BaseException as exc:
            self.call.end(exc)
            raise
        self.call.end()

    def close(self) -> None:
        try:
            self.stream.close()
        finally:
            self.call.end()


class _AsyncTracedStream(httpx.AsyncByteStream):
    """The async response body; the span ends when it is exhausted, fails, or is closed."""

    __slots__ = ("call", "stream")

    def __init__(self, stream: httpx.AsyncByteStream, call: ClientCall) -> None:
        self.stream = stream
        self.call = call

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self.stream:
                yield chunk
        except GeneratorExit:
            raise
        except BaseException as exc:
            self.call.end(exc)
            raise
        self.call.end()

    async def aclose(self) -> None:
        try:
            await self.stream.aclose()
        finally:
            self.call.end()


class TracingTransport(httpx.BaseTransport):
    """Wraps an httpx transport so every request through it is traced.

    Usage::

        client = httpx.Client(transport=TracingTransport())

    Parameters:
        transport: the transport that sends the requests; ``None`` means a standard
            ``httpx.HTTPTransport()``. Pass your own to keep its options
            (``HTTPTransport(retries=2, http2=True)``, a proxy, ...).
        settings: a :class:`~tracewire.Settings`; ``None`` means ``Settings.from_env()``.
        tracer_provider: where spans go; ``None`` means the global provider.
        tracer: a :class:`~tracewire.client.ClientTracer` to share between transports
            (then ``settings`` and ``tracer_provider`` are not used).
    """

    def __init__(
        self,
        transport: httpx.BaseTransport | None = None,
        settings: Settings | None = None,
        *,
        tracer_provider: TracerProvider | None = None,
        tracer: ClientTracer | None = None,
    ) -> None:
        if transport is None:
            transport = httpx.HTTPTransport()
        elif not isinstance(transport, httpx.BaseTransport):
            raise TypeError(
                f"transport must be an httpx.BaseTransport, got {type(transport).__name__}"
            )
        self.transport = transport
        self.tracer = _client_tracer(tracer, settings, tracer_provider)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        call = _start(self.tracer, request)
        if call is None:
            return self.transport.handle_request(request)
        ctx = call.context
        token = None if ctx is None else attach(ctx)
        try:
            response = self.transport.handle_request(request)
        except BaseException as exc:
            call.end(exc)
            raise
        finally:
            if token is not None:
                detach(token)
            call.cleanup()
        if call.recording:  # a non-recording span has nothing to end or describe
            _respond(call, response)
            stream = response.stream
            # A response built with its content (MockTransport, a cache) is already read.
            if isinstance(stream, httpx.SyncByteStream) and not response.is_stream_consumed:
                response.stream = _TracedStream(stream, call)
            else:
                call.end()
        return response

    def close(self) -> None:
        self.transport.close()

    def __repr__(self) -> str:
        return f"TracingTransport({self.transport!r})"


class AsyncTracingTransport(httpx.AsyncBaseTransport):
    """Wraps an async httpx transport so every request through it is traced.

    Usage::

        client = httpx.AsyncClient(transport=AsyncTracingTransport())

    Parameters:
        transport: the transport that sends the requests; ``None`` means a standard
            ``httpx.AsyncHTTPTransport()``.
        settings: a :class:`~tracewire.Settings`; ``None`` means ``Settings.from_env()``.
        tracer_provider: where spans go; ``None`` means the global provider.
        tracer: a :class:`~tracewire.client.ClientTracer` to share between transports.
    """

    def __init__(
        self,
        transport: httpx.AsyncBaseTransport | None = None,
        settings: Settings | None = None,
        *,
        tracer_provider: TracerProvider | None = None,
        tracer: ClientTracer | None = None,
    ) -> None:
        if transport is None:
            transport = httpx.AsyncHTTPTransport()
        elif not isinstance(transport, httpx.AsyncBaseTransport):
            raise TypeError(
                f"transport must be an httpx.AsyncBaseTransport, got {type(transport).__name__}"
            )
        self.transport = transport
        self.tracer = _client_tracer(tracer, settings, tracer_provider)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        call = _start(self.tracer, request)
        if call is None:
            return await self.transport.handle_async_request(request)
        ctx = call.context
        token = None if ctx is None else attach(ctx)
        try:
            response = await self.transport.handle_async_request(request)
        except BaseException as exc:
            call.end(exc)
            raise
        finally:
            if token is not None:
                detach(token)
            call.cleanup()
        if call.recording:
            _respond(call, response)
            stream = response.stream
            if isinstance(stream, httpx.AsyncByteStream) and not response.is_stream_consumed:
                response.stream = _AsyncTracedStream(stream, call)
            else:
                call.end()
        return response

    async def aclose(self) -> None:
        await self.transport.aclose()

    def __repr__(self) -> str:
        return f"AsyncTracingTransport({self.transport!r})"


# ------------------------------------------------------------------------ existing clients
AnyClient = httpx.Client | httpx.AsyncClient


def _wrap(transport: Any, tracer: ClientTracer, is_async: bool) -> Any:
    if transport is None or isinstance(transport, TracingTransport | AsyncTracingTransport):
        return transport
    if is_async:
        return AsyncTracingTransport(transport, tracer=tracer)
    return TracingTransport(transport, tracer=tracer)


def instrument_client(
    client: AnyClient,
    settings: Settings | None = None,
    *,
    tracer_provider: TracerProvider | None = None,
    tracer: ClientTracer | None = None,
) -> AnyClient:
    """Trace an existing ``httpx.Client`` or ``AsyncClient``; returns the same client.

    Wraps its transport and every mounted transport (proxies, ``mounts=``). Transports
    mounted later are not wrapped. Calling it again on the same client does nothing.
    """
    if not isinstance(client, httpx.Client | httpx.AsyncClient):
        raise TypeError(f"client must be an httpx.Client or AsyncClient, got {client!r}")
    tracer = _client_tracer(tracer, settings, tracer_provider)
    is_async = isinstance(client, httpx.AsyncClient)
    # httpx has no public way to reach a client's transports once it is built.
    client._transport = _wrap(client._transport, tracer, is_async)
    mounts: dict[Any, Any] = client._mounts
    for pattern, transport in list(mounts.items()):
        mounts[pattern] = _wrap(transport, tracer, is_async)
    return client


def uninstrument_client(client: AnyClient) -> AnyClient:
    """Undo :func:`instrument_client`: the client's own transports are put back."""

    def unwrap(transport: Any) -> Any:
        while isinstance(transport, TracingTransport | AsyncTracingTransport):
            transport = transport.transport
        return transport

    client._transport = unwrap(client._transport)
    mounts: dict[Any, Any] = client._mounts
    for pattern, transport in list(mounts.items()):
        mounts[pattern] = unwrap(transport)
    return client


# ---------------------------------------------------------------------------- global switch
_switch = GlobalSwitch(
    lambda: (httpx.Client, httpx.AsyncClient),
    lambda client, tracer: instrument_client(client, tracer=tracer),
)


def instrument(
    settings: Settings | None = None, *, tracer_provider: TracerProvider | None = None
) -> None:
    """Trace every ``httpx.Client`` and ``AsyncClient`` created from now on.

    Idempotent: calling it again only replaces the settings and provider used for clients
    created afterwards. Clients made before are not touched (use :func:`instrument_client`).
    """
    _switch.on(ClientTracer(settings, tracer_provider))


def uninstrument() -> None:
    """Stop tracing clients created from now on; clients already traced stay traced."""
    _switch.off()


def is_instrumented() -> bool:
    """Whether the global switch is on."""
    return _switch.is_on

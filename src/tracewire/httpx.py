"""httpx client tracing: a transport wrapper, per client or for every client.

One line per client::

    client = httpx.Client(transport=TracewireTransport())
    aclient = httpx.AsyncClient(transport=AsyncTracewireTransport())

An existing client (its transport and every mounted transport)::

    instrument_client(client)

Every client made afterwards (a thin switch over ``instrument_client``; reversible)::

    tracewire.httpx.instrument()
    ...
    tracewire.httpx.uninstrument()

Each call of the transport is one attempt: each redirect hop is its own CLIENT span with
freshly injected headers. The span ends when the response body has been read or closed
(``client.stream(...)`` included), not when the headers arrive.

A transport built without settings uses those of the tracewire middleware serving the current
request, else the process default (``tracewire.configure``), else the environment.
"""

from __future__ import annotations

import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from contextvars import Token
from typing import Any, TypeVar

import httpx
from opentelemetry.context import Context, attach, detach
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import TracerProvider

from tracewire._instrument import check_type
from tracewire._switch import GlobalSwitch
from tracewire.authority import parse_authority
from tracewire.client import ClientCall, ClientTracer, OutgoingRequest, protocol_version
from tracewire.settings import Settings

__all__ = [
    "AsyncTracewireTransport",
    "TracewireTransport",
    "instrument",
    "instrument_client",
    "is_instrumented",
    "uninstrument",
    "uninstrument_client",
]

_VERSIONS = {b"HTTP/1.0": "1.0", b"HTTP/1.1": "1.1", b"HTTP/2": "2", b"HTTP/3": "3"}


def _client_tracer(
    tracer: ClientTracer | None,
    settings: Settings | None,
    tracer_provider: TracerProvider | None,
    meter_provider: MeterProvider | None = None,
) -> ClientTracer:
    check_type("tracer", tracer, ClientTracer, "a tracewire.client.ClientTracer")
    if tracer is not None:
        return tracer
    return ClientTracer(
        settings, tracer_provider=tracer_provider, meter_provider=meter_provider, library="HTTPX"
    )


_NAMES = httpx.Headers.keys  # lowercase names already

T = TypeVar("T")


def _transport(transport: object, base: type[T], default: Callable[[], T]) -> T:
    """The transport to wrap: ``transport``, checked, or a new ``default()`` one."""
    if transport is None:
        return default()
    if not isinstance(transport, base):
        raise TypeError(
            f"transport must be an httpx.{base.__name__}, got {type(transport).__name__}"
        )
    return transport


def _start(tracer: ClientTracer, request: httpx.Request) -> tuple[ClientCall | None, Any]:
    """Begin the attempt; the call (``None``: send untouched) and the token to detach."""
    url = request.url
    # The one authority rule every adapter shares (httpx itself accepts ports 0 and 99999).
    host, port = parse_authority(url.netloc.decode("ascii", "replace")) or ("", None)
    call = tracer.start(
        OutgoingRequest(
            request.method, url.scheme, host, port, url, request.headers, request, _NAMES
        )
    )
    if call is None or call.context is None:
        return call, None
    return call, attach(call.context)


def _sent(call: ClientCall, token: Token[Context] | None) -> None:
    if token is not None:
        detach(token)
    call.cleanup()


def _follow(call: ClientCall, response: httpx.Response, streams: type, traced: type) -> None:
    """Describe the response; the span ends with its body (now, if it is already read)."""
    if not call.recording:  # a non-recording span has nothing to end or describe
        if call.measuring:
            _respond(call, response)
        return
    _respond(call, response)
    stream = response.stream
    # A response built with its content (MockTransport, a cache) is already read.
    if isinstance(stream, streams) and not response.is_stream_consumed:
        response.stream = traced(stream, call)
    else:
        call.end()


def _respond(call: ClientCall, response: httpx.Response) -> None:
    raw: object = response.extensions.get("http_version")
    version = _VERSIONS.get(raw) if isinstance(raw, bytes) else None
    if version is None:
        version = protocol_version(raw)
    call.respond(response.status_code, version, response, headers=response.headers)


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


class TracewireTransport(httpx.BaseTransport):
    """Wraps an httpx transport so every request through it is traced.

    Usage::

        client = httpx.Client(transport=TracewireTransport())

    Parameters:
        transport: the transport that sends the requests; ``None`` means a standard
            ``httpx.HTTPTransport()``. Pass your own to keep its options
            (``HTTPTransport(retries=2, http2=True)``, a proxy, ...).
        settings: a :class:`~tracewire.Settings`; ``None``: the serving middleware's, else the
            process default (``tracewire.configure``), else ``Settings.from_env()``.
        tracer_provider: where spans go; ``None`` means the global provider.
        meter_provider: where ``http.client.request.duration`` goes; default the global one.
        tracer: a :class:`~tracewire.client.ClientTracer` to share between transports
            (then ``settings`` and ``tracer_provider`` are not used).
    """

    def __init__(
        self,
        transport: httpx.BaseTransport | None = None,
        settings: Settings | None = None,
        *,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        tracer: ClientTracer | None = None,
    ) -> None:
        self.transport: httpx.BaseTransport = _transport(
            transport, httpx.BaseTransport, httpx.HTTPTransport
        )
        self.tracer = _client_tracer(tracer, settings, tracer_provider, meter_provider)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        call, token = _start(self.tracer, request)
        if call is None:
            return self.transport.handle_request(request)
        try:
            response = self.transport.handle_request(request)
        except BaseException as exc:
            call.end(exc)
            raise
        finally:
            _sent(call, token)
        _follow(call, response, httpx.SyncByteStream, _TracedStream)
        return response

    def close(self) -> None:
        self.transport.close()

    def __repr__(self) -> str:
        return f"TracewireTransport({self.transport!r})"


class AsyncTracewireTransport(httpx.AsyncBaseTransport):
    """Wraps an async httpx transport so every request through it is traced.

    Usage::

        client = httpx.AsyncClient(transport=AsyncTracewireTransport())

    Parameters:
        transport: the transport that sends the requests; ``None`` means a standard
            ``httpx.AsyncHTTPTransport()``.
        settings: a :class:`~tracewire.Settings`; ``None``: as for :class:`TracewireTransport`.
        tracer_provider: where spans go; ``None`` means the global provider.
        meter_provider: where ``http.client.request.duration`` goes; default the global one.
        tracer: a :class:`~tracewire.client.ClientTracer` to share between transports.
    """

    def __init__(
        self,
        transport: httpx.AsyncBaseTransport | None = None,
        settings: Settings | None = None,
        *,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        tracer: ClientTracer | None = None,
    ) -> None:
        self.transport: httpx.AsyncBaseTransport = _transport(
            transport, httpx.AsyncBaseTransport, httpx.AsyncHTTPTransport
        )
        self.tracer = _client_tracer(tracer, settings, tracer_provider, meter_provider)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        call, token = _start(self.tracer, request)
        if call is None:
            return await self.transport.handle_async_request(request)
        try:
            response = await self.transport.handle_async_request(request)
        except BaseException as exc:
            call.end(exc)
            raise
        finally:
            _sent(call, token)
        _follow(call, response, httpx.AsyncByteStream, _AsyncTracedStream)
        return response

    async def aclose(self) -> None:
        await self.transport.aclose()

    def __repr__(self) -> str:
        return f"AsyncTracewireTransport({self.transport!r})"


# ------------------------------------------------------------------------ existing clients
AnyClient = httpx.Client | httpx.AsyncClient


def _wrap(transport: Any, tracer: ClientTracer, is_async: bool) -> Any:
    if transport is None or isinstance(transport, TracewireTransport | AsyncTracewireTransport):
        return transport
    if is_async:
        return AsyncTracewireTransport(transport, tracer=tracer)
    return TracewireTransport(transport, tracer=tracer)


def instrument_client(
    client: AnyClient,
    settings: Settings | None = None,
    *,
    tracer_provider: TracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
    tracer: ClientTracer | None = None,
) -> AnyClient:
    """Trace an existing ``httpx.Client`` or ``AsyncClient``; returns the same client.

    Wraps its transport and every mounted transport (proxies, ``mounts=``). Transports
    mounted later are not wrapped. Calling it again on the same client does nothing.
    """
    if not isinstance(client, httpx.Client | httpx.AsyncClient):
        raise TypeError(f"client must be an httpx.Client or AsyncClient, got {client!r}")
    tracer = _client_tracer(tracer, settings, tracer_provider, meter_provider)
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
        while isinstance(transport, TracewireTransport | AsyncTracewireTransport):
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
    settings: Settings | None = None,
    *,
    tracer_provider: TracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
) -> None:
    """Trace every ``httpx.Client`` and ``AsyncClient`` created from now on.

    Idempotent: calling it again only replaces the settings and provider used for clients
    created afterwards. Clients made before are not touched (use :func:`instrument_client`).
    """
    _switch.on(_client_tracer(None, settings, tracer_provider, meter_provider))


def uninstrument() -> None:
    """Stop tracing clients created from now on; clients already traced stay traced."""
    _switch.off()


def is_instrumented() -> bool:
    """Whether the global switch is on."""
    return _switch.is_on


# ----------------------------------------------------------------------- deprecated names
_DEPRECATED = {
    "TracingTransport": "TracewireTransport",
    "AsyncTracingTransport": "AsyncTracewireTransport",
}


def __getattr__(name: str) -> Any:
    new = _DEPRECATED.get(name)
    if new is None:
        raise AttributeError(f"module 'tracewire.httpx' has no attribute {name!r}")
    warnings.warn(
        f"tracewire.httpx.{name} is deprecated; use tracewire.httpx.{new}",
        DeprecationWarning,
        stacklevel=2,
    )
    return globals()[new]

"""requests tracing: a tracing adapter around a session's adapters, per session or for all.

One session (returns it; its adapters keep their configuration, retries included)::

    session = instrument_session(requests.Session())

Every session made afterwards, module-level ``requests.get`` & co. included (reversible)::

    tracewire.requests.instrument()
    ...
    tracewire.requests.uninstrument()

Each attempt is its own CLIENT span with freshly injected headers: each redirect hop (requests
sends one adapter call per hop) and each retry that ``urllib3.Retry`` makes inside an
``HTTPAdapter`` (seen at the connection pool, below the adapter). The span ends when the body
has been read (``.content``, ``.json()``, ``iter_content``, ``iter_lines``) or the response is
closed, so ``stream=True`` responses are timed to the end of the body.
"""

from __future__ import annotations

import warnings
from collections.abc import Collection, Iterator, Mapping
from typing import Any

import requests
from opentelemetry.context import attach, detach, set_value
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import TracerProvider
from requests.adapters import BaseAdapter, HTTPAdapter

from tracewire._instrument import check_type, fault
from tracewire._switch import GlobalSwitch
from tracewire._urllib3_retries import (
    EXCHANGE_KEY,
    Exchange,
    final_status,
    restore_pools,
    trace_pools,
)
from tracewire.authority import split_url
from tracewire.client import (
    ClientCall,
    ClientTracer,
    OutgoingRequest,
    lower_names,
    protocol_version,
)
from tracewire.settings import Settings

__all__ = [
    "TracewireAdapter",
    "instrument",
    "instrument_session",
    "is_instrumented",
    "uninstrument",
    "uninstrument_session",
]


class _TracedResponse(requests.Response):
    """A ``requests.Response`` whose span ends with its body (read to the end, or closed)."""

    _tracewire_call: ClientCall | None = None

    def iter_content(
        self, chunk_size: int | None = 1, decode_unicode: bool = False
    ) -> Iterator[Any]:
        chunks = super().iter_content(chunk_size, decode_unicode)
        call = self._tracewire_call
        if call is None or call.ended:
            return chunks
        return _ending(chunks, call)

    def close(self) -> None:
        try:
            super().close()
        finally:
            call = self._tracewire_call
            if call is not None:
                call.end()


def _ending(chunks: Iterator[Any], call: ClientCall) -> Iterator[Any]:
    try:
        yield from chunks
    except GeneratorExit:  # the reader stopped early; close() ends the span
        raise
    except BaseException as exc:
        call.end(exc)
        raise
    call.end()


def _bind(response: requests.Response, call: ClientCall) -> requests.Response:
    """End ``call`` with the body of ``response``, or now if the body cannot be followed."""
    # An adapter that answered with the body already in memory (requests-mock, a cache) leaves
    # no read to wait for.
    if type(response) is requests.Response and getattr(response, "_content", False) is False:
        try:
            response.__class__ = _TracedResponse
            response._tracewire_call = call  # type: ignore[attr-defined]
            return response
        except Exception as exc:
            fault("client-response-body", exc)
    call.end()
    return response


def _client_tracer(
    settings: Settings | None,
    tracer_provider: TracerProvider | None,
    meter_provider: MeterProvider | None,
) -> ClientTracer:
    return ClientTracer(
        settings, tracer_provider=tracer_provider, meter_provider=meter_provider, library="REQUESTS"
    )


def _header_names(headers: Any) -> Collection[str]:
    # CaseInsensitiveDict keeps its entries in a dict keyed by lowercase name.
    store = getattr(headers, "_store", None)
    return store.keys() if isinstance(store, dict) else lower_names(headers)


class TracewireAdapter(BaseAdapter):
    """Wraps a requests transport adapter so every attempt through it is traced.

    Usage (what :func:`instrument_session` does for each mounted adapter)::

        session.mount("https://", TracewireAdapter(HTTPAdapter(max_retries=Retry(3))))

    Parameters:
        adapter: the adapter that sends the requests; ``None`` means a new ``HTTPAdapter()``.
            Its configuration is kept. For an ``HTTPAdapter`` the pools of its pool manager
            are made to report retries (one span per attempt); any other adapter gets one
            span per call.
        settings: a :class:`~tracewire.Settings`; ``None``: the serving middleware's, else the
            process default (``tracewire.configure``), else ``Settings.from_env()``.
        tracer_provider: where spans go; ``None`` means the global provider.
        meter_provider: where ``http.client.request.duration`` goes; default the global one.
        tracer: a :class:`~tracewire.client.ClientTracer` to share between adapters.

    Attributes the wrapped adapter has (``max_retries``, ``poolmanager``, ...) are readable
    through this one.
    """

    def __init__(
        self,
        adapter: BaseAdapter | None = None,
        settings: Settings | None = None,
        *,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        tracer: ClientTracer | None = None,
    ) -> None:
        super().__init__()
        if adapter is None:
            adapter = HTTPAdapter()
        elif not isinstance(adapter, BaseAdapter):
            raise TypeError(f"adapter must be a requests BaseAdapter, got {type(adapter).__name__}")
        check_type("tracer", tracer, ClientTracer, "a tracewire.client.ClientTracer")
        self.adapter = adapter
        self.tracer = (
            tracer
            if tracer is not None
            else _client_tracer(settings, tracer_provider, meter_provider)
        )
        # pool manager -> the pool classes it had, for unwrap()
        self._managers: list[tuple[Any, dict[str, type[Any]]]] = []
        proxies = getattr(adapter, "proxy_manager", None)
        self._proxies: Mapping[Any, Any] = proxies if isinstance(proxies, Mapping) else {}
        self._proxies_seen = -1
        self._trace_managers()

    def _trace_managers(self) -> None:
        managers = [getattr(self.adapter, "poolmanager", None)]
        self._proxies_seen = len(self._proxies)
        managers.extend(self._proxies.values())
        known = {id(m) for m, _ in self._managers}
        for manager in managers:
            if manager is not None and id(manager) not in known:
                original = trace_pools(manager)
                if original is not None:
                    self._managers.append((manager, original))

    def send(  # noqa: PLR0913, PLR0917 - requests' own adapter signature
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: Any = None,
        verify: Any = True,
        cert: Any = None,
        proxies: Any = None,
    ) -> requests.Response:
        options = {
            "stream": stream,
            "timeout": timeout,
            "verify": verify,
            "cert": cert,
            "proxies": proxies,
        }
        call = self._start(request)
        if call is None:
            return self.adapter.send(request, **options)
        if not call.recording:
            # Nothing to describe or end, and no retry of it would be exported.
            try:
                response = self.adapter.send(request, **options)
            except BaseException as exc:
                call.end(exc)
                raise
            finally:
                call.cleanup()
            if call.measuring:
                call.respond(response.status_code, None, response)
            return response
        return self._send_traced(call, request, options)

    def _send_traced(
        self, call: ClientCall, request: requests.PreparedRequest, options: dict[str, Any]
    ) -> requests.Response:
        exchange = Exchange(call)
        token = attach(set_value(EXCHANGE_KEY, exchange, call.context))
        try:
            response = self.adapter.send(request, **options)
        except BaseException as exc:
            status = final_status(exc)
            if status is not None:
                exchange.call.respond(status, None, None, hook=False)
            exchange.call.end(exc)
            raise
        finally:
            detach(token)
            call.cleanup()
            exchange.call.cleanup()
            if exchange.pool_calls == 0 and len(self._proxies) != self._proxies_seen:
                # A pool built untraced (e.g. a proxy manager made on first use): trace it now
                # so that this adapter's next requests through it show their retries.
                self._trace_managers()
        final = exchange.call
        version = protocol_version(getattr(response.raw, "version", None))
        final.respond(response.status_code, version, response, headers=response.headers)
        return _bind(response, final)

    def _start(self, request: requests.PreparedRequest) -> ClientCall | None:
        url = request.url or ""
        try:
            scheme, host, port = split_url(url)
        except Exception as exc:
            fault("client-url", exc)
            return None
        return self.tracer.start(
            OutgoingRequest(
                request.method or "",
                scheme,
                host,
                port,
                url,
                request.headers,
                request,
                _header_names,
            )
        )

    def close(self) -> None:
        self.adapter.close()

    def unwrap(self) -> BaseAdapter:
        """The wrapped adapter, with its pool managers' own pool classes put back."""
        for manager, original in self._managers:
            try:
                restore_pools(manager, original)
            except Exception as exc:
                fault("client-unwrap", exc)
        self._managers = []
        return self.adapter

    def __getattr__(self, name: str) -> Any:
        # Only reached for names this class lacks; "adapter" itself must not recurse.
        if name == "adapter" or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.adapter, name)

    def __repr__(self) -> str:
        return f"TracewireAdapter({self.adapter!r})"


# ------------------------------------------------------------------------------- sessions
def instrument_session(
    session: requests.Session,
    settings: Settings | None = None,
    *,
    tracer_provider: TracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
    tracer: ClientTracer | None = None,
) -> requests.Session:
    """Trace one ``requests.Session``; returns the same session.

    Every adapter mounted on it now (by default those for ``http://`` and ``https://``) is
    wrapped in a :class:`TracewireAdapter`; adapters mounted later are not. Calling it again on
    the same session does nothing.
    """
    if not isinstance(session, requests.Session):
        raise TypeError(f"session must be a requests.Session, got {type(session).__name__}")
    check_type("tracer", tracer, ClientTracer, "a tracewire.client.ClientTracer")
    if tracer is None:
        tracer = _client_tracer(settings, tracer_provider, meter_provider)
    adapters = session.adapters
    for prefix, adapter in list(adapters.items()):
        if not isinstance(adapter, TracewireAdapter):
            # Same key, same position: the prefix order requests relies on is unchanged.
            adapters[prefix] = TracewireAdapter(adapter, tracer=tracer)
    return session


def uninstrument_session(session: requests.Session) -> requests.Session:
    """Undo :func:`instrument_session`: the session's own adapters are put back."""
    adapters = session.adapters
    for prefix, adapter in list(adapters.items()):
        inner: BaseAdapter = adapter
        while isinstance(inner, TracewireAdapter):
            inner = inner.unwrap()
        adapters[prefix] = inner
    return session


# ---------------------------------------------------------------------------- global switch
_switch = GlobalSwitch(
    lambda: (requests.Session,),
    lambda session, tracer: instrument_session(session, tracer=tracer),
)


def instrument(
    settings: Settings | None = None,
    *,
    tracer_provider: TracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
) -> None:
    """Trace every ``requests.Session`` created from now on, and so ``requests.get`` & co.

    Idempotent: calling it again only replaces the settings and provider used for sessions
    created afterwards. Sessions made before are not touched (use :func:`instrument_session`).
    """
    _switch.on(_client_tracer(settings, tracer_provider, meter_provider))


def uninstrument() -> None:
    """Stop tracing sessions created from now on; sessions already traced stay traced."""
    _switch.off()


def is_instrumented() -> bool:
    """Whether the global switch is on."""
    return _switch.is_on


def __getattr__(name: str) -> Any:
    if name != "TracingAdapter":
        raise AttributeError(f"module 'tracewire.requests' has no attribute {name!r}")
    warnings.warn(
        "tracewire.requests.TracingAdapter is deprecated; use tracewire.requests.TracewireAdapter",
        DeprecationWarning,
        stacklevel=2,
    )
    return TracewireAdapter

"""``TracewireMiddleware``: the ASGI 3 server middleware (http and websocket)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from asgiref.compatibility import guarantee_single_callable
from opentelemetry.context import attach, detach
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import TracerProvider

from tracewire._instrument import fault
from tracewire._starlette_tasks import switch_on_by_default
from tracewire.carriers import asgi_getter, scanned_getter
from tracewire.compiled import Compiled
from tracewire.defaults import SettingsSource
from tracewire.server import (
    ROUTE_KEY,
    SPAN_KEY,
    RequestView,
    ServerCall,
    check_route,
    component_tracer,
)
from tracewire.settings import Settings

__all__ = ["TracewireASGIMiddleware", "TracewireMiddleware", "route_from_scope"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
RouteOf = Callable[[Scope], "str | None"]

_TRACED = frozenset(("http", "websocket"))
_BODY = frozenset(("http.response.body", "http.response.zerocopysend"))


def route_from_scope(scope: Scope) -> str | None:
    """The matched route template: what an integration left under ``ROUTE_KEY``, else what
    Starlette's (and so FastAPI's) router left in the scope."""
    route = scope.get(ROUTE_KEY)
    if isinstance(route, str):
        return route
    if "route" in scope:
        from tracewire.starlette import route_template

        return route_template(scope)
    return None


def _scan(headers: Any, wanted: frozenset[bytes] | None) -> tuple[Any, str | None, str | None]:
    """One pass over the request headers: those the propagators and header capture read, as
    a ``{name: [values]}`` dict (or the list itself when ``wanted`` is unknown), the ``Host``
    (``None`` if absent or repeated) and the ``User-Agent``.

    The propagators then read the few headers they want by key instead of scanning every
    header of the request. Names are lowercase by ASGI's rules; a server that breaks them is
    still matched.
    """
    found: dict[str, list[str]] = {}
    host: bytes | None = None
    hosts = 0
    agent: bytes | None = None
    for raw, value in headers:
        name = raw if raw.islower() else raw.lower()
        if name == b"host":
            host, hosts = value, hosts + 1
        elif name == b"user-agent":
            agent = value
        if wanted is not None and name in wanted:
            key = name.decode("latin-1")
            text = value.decode("latin-1")
            values = found.get(key)
            if values is None:
                found[key] = [text]
            else:
                values.append(text)
    return (
        headers if wanted is None else found,
        host.decode("latin-1") if host is not None and hosts == 1 else None,
        agent.decode("latin-1") if agent is not None else None,
    )


def _view(scope: Scope, plan: Compiled, route_of: RouteOf) -> RequestView:
    wanted = plan.wanted_headers
    carrier, host, agent = _scan(scope.get("headers", ()), wanted)
    raw = scope.get("raw_path")
    query = scope.get("query_string")
    server = scope.get("server")
    client = scope.get("client")
    # Positional, in RequestView's field order: this runs for every request.
    return RequestView(
        scope.get("method", "GET"),
        scope.get("scheme", "ws" if scope["type"] == "websocket" else "http"),
        scope.get("path", ""),
        carrier,
        asgi_getter if wanted is None else scanned_getter,
        scope,
        raw.decode("latin-1") if raw else None,
        query.decode("latin-1") if query else None,
        host,
        server if type(server) is tuple else (tuple(server) if server else None),
        client[0] if client else None,
        agent,
        scope.get("http_version", "1.1"),
        route_of,
    )


class _Response:
    """The per-request ``send`` wrapper: reports the response to the call."""

    __slots__ = ("call", "send", "trailers")

    def __init__(self, call: ServerCall, send: Send) -> None:
        self.call = call
        self.send = send
        self.trailers = False

    def __call__(self, message: Message) -> Awaitable[None]:
        # A plain function returning the server's awaitable: only the last message of a
        # response needs a coroutine of its own (to act once it was sent).
        kind = message["type"]
        if kind == "http.response.start":
            return self.send(self._started(message, int(message.get("status", 0))))
        if kind == "websocket.accept":
            message = self._started(message, 101)
        elif kind == "websocket.http.response.start":  # the denial response extension
            message = self._started(message, int(message.get("status", 0)))
        elif kind == "websocket.close" and not self.call.status:
            self._started(message, 403)  # rejected before the handshake completed
        if self._done(kind, message):
            return self._last(message)
        return self.send(message)

    async def _last(self, message: Message) -> None:
        await self.send(message)
        self.call.response_sent()

    def _started(self, message: Message, status: int) -> Message:
        try:
            self.trailers = bool(message.get("trailers", False))
            headers = message.get("headers", ())
            extra = self.call.response_started(status, headers)
            if extra:
                encoded = [(n.encode("latin-1"), v.encode("latin-1")) for n, v in extra]
                message = {**message, "headers": [*headers, *encoded]}
        except Exception as exc:
            fault("asgi-response", exc)
        return message

    def _done(self, kind: str, message: Message) -> bool:
        if kind in _BODY:
            return not message.get("more_body", False) and not self.trailers
        if kind == "http.response.trailers":
            return not message.get("more_trailers", False)
        return kind == "http.response.pathsend"


class TracewireMiddleware:
    """ASGI middleware that puts every request in the right trace.

    One line::

        app = TracewireMiddleware(app)                                  # any ASGI app
        app.add_middleware(TracewireMiddleware)                         # Starlette / FastAPI
        app.add_middleware(TracewireMiddleware, propagators=["b3"])     # with settings

    For each ``http`` and ``websocket`` request it extracts the incoming trace context from the
    headers alone (never from whatever context happens to be current), starts one SERVER span
    in it, makes it current for the app's code and ends it when the last byte of the response
    was sent. Outgoing calls made while serving the request (tracewire's httpx and requests
    hooks, ``opentelemetry.propagate``) use this middleware's settings. ``lifespan`` and other
    scope types pass through untouched, and so does a request already traced by an outer
    tracewire middleware.

    Args:
        app: the ASGI 3 application (an ASGI 2 one is adapted with asgiref).
        settings: a ``tracewire.Settings``; default: the process default
            (``tracewire.configure``), else ``Settings.from_env()``.
        tracer_provider: the OpenTelemetry ``TracerProvider``; default the global one.
        meter_provider: the ``MeterProvider`` for the HTTP server metrics; default the global
            one (metrics are recorded once an SDK provider is set).
        route: ``route(scope) -> str | None`` giving the matched route template for the span
            name; the default reads ``scope["tracewire.route"]``, else Starlette's and
            FastAPI's routing result.
        **overrides: settings fields (``propagators=["b3"]``, ``excluded_paths=[...]``),
            applied over ``settings``, or over the process default (also when
            ``tracewire.configure`` is called later).
    """

    def __init__(
        self,
        app: Any,
        /,
        settings: Settings | SettingsSource | None = None,
        *,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        route: RouteOf | None = None,
        **overrides: Any,
    ) -> None:
        check_route(route)
        self.app: ASGIApp = guarantee_single_callable(app)  # type: ignore[no-untyped-call]
        self.route_of: RouteOf = route or route_from_scope
        self._tracer = component_tracer(app, settings, overrides, tracer_provider, meter_provider)
        # Starlette runs a response's background tasks where no middleware reaches them.
        switch_on_by_default()

    @property
    def settings(self) -> Settings:
        """The settings in force for the next request, with where each value came from."""
        return self._tracer.source.settings()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in _TRACED or SPAN_KEY in scope:
            await self.app(scope, receive, send)
            return
        tracer = self._tracer
        plan = tracer.plan()
        call = tracer.begin(_view(scope, plan, self.route_of), plan)
        scope[SPAN_KEY] = call.span
        if "fastapi.telemetry" in scope:
            from tracewire.starlette import check_fastapi_tracing

            check_fastapi_tracing(scope)
        token = attach(call.context)
        try:
            # Excluded or not sampled: nothing to report, so the app gets the plain send.
            await self.app(scope, receive, _Response(call, send) if call.observing else send)
        except BaseException as exc:
            call.finished(exc)
            raise
        else:
            call.finished()
        finally:
            detach(token)


# One naming scheme: Tracewire + the host's word for the extension point. The ASGI middleware
# is also reachable under its protocol's name, like the WSGI one.
TracewireASGIMiddleware = TracewireMiddleware

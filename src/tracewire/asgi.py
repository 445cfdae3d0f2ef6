"""``TracewireMiddleware``: the ASGI 3 server middleware."""

from __future__ import annotations

import contextlib
import time
import weakref
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from asgiref.compatibility import guarantee_single_callable
from opentelemetry.context import attach, detach
from opentelemetry.trace import Span, TracerProvider

from tracewire import semconv
from tracewire._log import warn_limited
from tracewire.carriers import asgi_getter
from tracewire.matching import Origin
from tracewire.server import SPAN_KEY, Attributes, ServerTracer, _fault
from tracewire.settings import Settings

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
RouteOf = Callable[[Scope], "str | None"]

_TRACED = frozenset(("http", "websocket"))
_BODY = frozenset(("http.response.body", "http.response.zerocopysend"))
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def route_template(scope: Scope) -> str | None:
    """The matched route template, e.g. ``/items/{item_id}``, or ``None``.

    Reads what Starlette's (and so FastAPI's) router leaves in the scope: ``scope["route"]``,
    and for requests that went through ``Mount``s the templates of those mounts, so a route
    under ``Mount("/users/{user_id}", ...)`` is named ``/users/{user_id}/posts/{post_id}``,
    never after the raw path. ``None`` when no route matched or the mounts cannot be told.
    """
    route = scope.get("route")
    path = getattr(route, "path", None)
    if not isinstance(path, str):
        return None
    root = scope.get("root_path", "")
    app_root = scope.get("app_root_path", root)
    prefix = ""
    if root != app_root:
        if not root.startswith(app_root):
            return None
        found = _mount_prefix(scope, root[len(app_root) :])
        if found is None:
            return None
        prefix = found
    if hasattr(route, "routes"):  # the matched route is a Mount: what it serves is below it
        return f"{prefix}/{{path}}"
    return prefix + path


# (id of the top router, concrete mount prefix) -> (the router, weakly; its template). Only
# parameter-free prefixes are kept, so the size is bounded by the app's static mounts.
_PREFIXES: dict[tuple[int, str], tuple[weakref.ref[Any], str]] = {}
_PREFIXES_MAX = 512
_MAX_MOUNT_DEPTH = 16


def _mount_prefix(scope: Scope, concrete: str) -> str | None:
    """The template of the mount path ``concrete`` (``/users/42`` -> ``/users/{user_id}``)."""
    router = scope.get("router")
    if router is None:
        return None
    key = (id(router), concrete)
    cached = _PREFIXES.get(key)
    if cached is not None and cached[0]() is router:
        return cached[1]
    template = _walk_mounts(router, concrete, scope)
    if template == concrete and len(_PREFIXES) < _PREFIXES_MAX:
        # A router that cannot be weakly referenced is just not cached.
        with contextlib.suppress(TypeError):
            _PREFIXES[key] = (weakref.ref(router), template)
    return template


def _walk_mounts(router: Any, rest: str, scope: Scope) -> str | None:
    # Re-trace the router's choice among mounts (first match wins, as in Starlette), using
    # only the part of the path the mounts consumed.
    template = ""
    routes = getattr(router, "routes", None)
    for _ in range(_MAX_MOUNT_DEPTH):
        if not rest:
            return template
        if not routes:
            return None
        for candidate in routes:
            sub = getattr(candidate, "routes", None)
            if sub is None:
                continue
            regex = getattr(candidate, "path_regex", None)
            if regex is None:  # a Host route: matched on the Host header, consumes no path
                matches = getattr(candidate, "matches", None)
                if matches is not None and matches(scope)[0].name == "FULL":
                    routes = sub
                    break
                continue
            match = regex.match(rest + "/")
            if match is None:
                continue
            consumed = len(rest) - len(match.group("path"))
            template += getattr(candidate, "path", "")
            rest = rest[consumed:]
            routes = sub
            break
        else:
            return None
    return None


def _only(headers: Any, wanted: frozenset[bytes]) -> list[tuple[bytes, bytes]]:
    """The request headers the propagators and header capture read, in one pass.

    Each propagator then scans this short list instead of every header of the request.
    Names are lowercase by ASGI's rules; a server that breaks them is still matched.
    """
    found: list[tuple[bytes, bytes]] = []
    for pair in headers:
        name = pair[0]
        if name in wanted or (not name.islower() and name.lower() in wanted):
            found.append(pair)
    return found


def _host_port(scope: Scope) -> tuple[str | None, int | None, str | None]:
    """Host and port the client addressed (Host header, else the socket), and the user agent."""
    host_header: bytes | None = None
    agent: bytes | None = None
    for name, value in scope.get("headers", ()):
        if name == b"host":
            host_header = value
        elif name == b"user-agent":
            agent = value
    user_agent = agent.decode("latin-1") if agent is not None else None
    if host_header:
        text = host_header.decode("latin-1")
        if text.startswith("["):  # IPv6 literal
            end = text.find("]")
            host, rest = text[1:end], text[end + 1 :]
        else:
            host, _, port_text = text.rpartition(":") if ":" in text else (text, "", "")
            rest = ":" + port_text if port_text else ""
        port_part = rest[1:] if rest.startswith(":") else ""
        if port_part.isdigit():
            return host, int(port_part), user_agent
        return host, _DEFAULT_PORTS.get(scope.get("scheme", "http")), user_agent
    server = scope.get("server")
    if server:
        return server[0], server[1], user_agent
    return None, None, user_agent


def _attributes(scope: Scope) -> Attributes:
    attributes: Attributes = {
        semconv.URL_PATH: scope.get("path", ""),
        semconv.URL_SCHEME: scope.get("scheme", "http"),
        semconv.NETWORK_PROTOCOL_VERSION: scope.get("http_version", "1.1"),
    }
    query = scope.get("query_string")
    if query:
        attributes[semconv.URL_QUERY] = query.decode("latin-1")
    host, port, user_agent = _host_port(scope)
    if host is not None:
        attributes[semconv.SERVER_ADDRESS] = host
    if port is not None:
        attributes[semconv.SERVER_PORT] = port
    if user_agent is not None:
        attributes[semconv.USER_AGENT_ORIGINAL] = user_agent
    client = scope.get("client")
    if client:
        attributes[semconv.CLIENT_ADDRESS] = client[0]
    return attributes


def _origin(scope: Scope) -> Origin:
    host, port, _ = _host_port(scope)
    return scope.get("scheme", "http"), (host or "").lower(), port


class _HttpResponse:
    """The per-request ``send`` wrapper: sees the status, ends the span with the last byte."""

    __slots__ = ("end_time", "route_of", "scope", "send", "span", "status", "tracer", "trailers")

    def __init__(
        self, tracer: ServerTracer, span: Span, scope: Scope, send: Send, route_of: RouteOf
    ) -> None:
        self.tracer = tracer
        self.span = span
        self.scope = scope
        self.send = send
        self.route_of = route_of
        self.status = 0
        self.trailers = False
        self.end_time: int | None = None

    async def __call__(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            await self.send(self._started(message))
            return
        await self.send(message)
        if kind in _BODY:
            if not message.get("more_body", False) and not self.trailers:
                self._completed()
        elif kind == "http.response.pathsend" or (
            kind == "http.response.trailers" and not message.get("more_trailers", False)
        ):
            self._completed()

    def _started(self, message: Message) -> Message:
        try:
            self.status = int(message["status"])
            self.trailers = bool(message.get("trailers", False))
            headers = message.get("headers", ())
            self.tracer.response_started(self.span, self.status, headers)
            extra = self.tracer.propagation_headers(self.span)
            if extra:
                encoded = [(n.encode("latin-1"), v.encode("latin-1")) for n, v in extra]
                message = {**message, "headers": [*headers, *encoded]}
        except Exception as exc:
            _fault("asgi-response", exc)
        return message

    def _completed(self) -> None:
        if self.end_time is not None:
            return
        self.end_time = time.time_ns()
        self._name()
        if self.status < 500:
            # The response is done: work after it (background tasks) is outside the span.
            self.tracer.end(self.span)
        # A 5xx stays open until the app returns, so the exception that usually follows can be
        # recorded; its end time is still the moment the response finished.

    def finish(self, exc: BaseException | None) -> None:
        """The app returned or raised: end the span if the response did not already."""
        if self.end_time is not None and self.status < 500:
            return
        if self.end_time is None:
            self._name()
        self.tracer.end(self.span, exc, self.end_time, responded=bool(self.status))

    def _name(self) -> None:
        self.tracer.name_after_route(
            self.span, self.scope.get("method", "GET"), self.route_of, self.scope
        )


class _WebSocket:
    """``send`` wrapper for a WebSocket: the span covers the handshake and the connection."""

    __slots__ = ("accepted", "send", "span", "tracer")

    def __init__(self, tracer: ServerTracer, span: Span, send: Send) -> None:
        self.tracer = tracer
        self.span = span
        self.send = send
        self.accepted = False

    async def __call__(self, message: Message) -> None:
        if not self.accepted:
            self._handshake(message)
        await self.send(message)

    def _handshake(self, message: Message) -> None:
        kind = message["type"]
        try:
            if kind == "websocket.accept":
                self.accepted = True
                self.tracer.response_started(self.span, 101, message.get("headers", ()))
            elif kind == "websocket.close":
                self.accepted = True  # rejected before the handshake completed
                self.tracer.response_started(self.span, 403, ())
            elif kind == "websocket.http.response.start":  # the denial response extension
                self.accepted = True
                self.tracer.response_started(
                    self.span, int(message["status"]), message.get("headers", ())
                )
        except Exception as exc:
            _fault("asgi-websocket", exc)


# FastAPI (>= 0.16x) has tracing of its own, on by default once an SDK provider is set; it
# leaves its per-request state here.
_FASTAPI_TELEMETRY = "fastapi.telemetry"


def _warn_fastapi_tracing(state: Any) -> None:
    span = getattr(state, "span", None)
    if span is not None and getattr(span, "is_recording", lambda: False)():
        warn_limited(
            "fastapi-native-tracing",
            "FastAPI's own tracing is on too, so each request gets a second SERVER span; "
            "create the app with FastAPI(telemetry={'tracing': False}) to keep tracewire's only",
        )


class TracewireMiddleware:
    """ASGI middleware that puts every request in the right trace.

    One line::

        app = TracewireMiddleware(app)                 # any ASGI app
        app.add_middleware(TracewireMiddleware)        # Starlette / FastAPI

    For each ``http`` and ``websocket`` request it extracts the incoming trace context from the
    headers alone (never from whatever context happens to be current), starts one SERVER span
    in it, makes it current for the app's code and ends it when the last byte of the response
    was sent. ``lifespan`` and other scope types pass through untouched, and so does a request
    already traced by an outer ``TracewireMiddleware``.

    Args:
        app: the ASGI 3 application (an ASGI 2 one is adapted with asgiref).
        settings: a ``tracewire.Settings``; default ``Settings.from_env()``.
        tracer_provider: the OpenTelemetry ``TracerProvider``; default the global one.
        route: ``route(scope) -> str | None`` giving the matched route template for the span
            name; the default reads Starlette's and FastAPI's routing result.
    """

    def __init__(
        self,
        app: Any,
        settings: Settings | None = None,
        *,
        tracer_provider: TracerProvider | None = None,
        route: RouteOf | None = None,
    ) -> None:
        if settings is None:
            settings = Settings.from_env()
        elif not isinstance(settings, Settings):
            raise TypeError(f"settings must be a tracewire.Settings, got {type(settings).__name__}")
        if route is not None and not callable(route):
            raise TypeError(f"route must be a callable or None, got {type(route).__name__}")
        self.app: ASGIApp = guarantee_single_callable(app)  # type: ignore[no-untyped-call]
        self.settings = settings
        self.route_of: RouteOf = route or route_template
        self._tracer = ServerTracer(settings, tracer_provider)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in _TRACED or SPAN_KEY in scope:
            await self.app(scope, receive, send)
            return
        if scope.get(_FASTAPI_TELEMETRY) is not None:
            _warn_fastapi_tracing(scope[_FASTAPI_TELEMETRY])
        tracer = self._tracer
        headers = scope.get("headers", ())
        wanted = tracer.wanted_headers
        ctx, span = tracer.begin(
            headers if wanted is None else _only(headers, wanted),
            asgi_getter,
            scope.get("method", "GET"),
            scope.get("path", ""),
            _attributes,
            scope,
            _origin,
        )
        scope[SPAN_KEY] = span
        token = attach(ctx)
        try:
            if span is None or (not span.is_recording() and not tracer.response_propagation_on):
                # Excluded, or not sampled: nothing to record, so no send wrapper either.
                await self.app(scope, receive, send)
                return
            if kind == "websocket":
                try:
                    await self.app(scope, receive, _WebSocket(tracer, span, send))
                except BaseException as exc:
                    tracer.name_after_route(span, "GET", self.route_of, scope)
                    tracer.end(span, exc)
                    raise
                tracer.name_after_route(span, "GET", self.route_of, scope)
                tracer.end(span)
                return
            response = _HttpResponse(tracer, span, scope, send, self.route_of)
            try:
                await self.app(scope, receive, response)
            except BaseException as exc:
                response.finish(exc)
                raise
            response.finish(None)
        finally:
            detach(token)

"""``TracewireWSGIMiddleware``: the WSGI (PEP 3333) server middleware."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Any, Optional

from opentelemetry.context import Context, attach, detach
from opentelemetry.trace import Span, TracerProvider

from tracewire import semconv
from tracewire.carriers import wsgi_getter
from tracewire.matching import Origin
from tracewire.server import SPAN_KEY, Attributes, ServerTracer, _fault
from tracewire.settings import Settings

__all__ = [
    "EXCEPTION_KEY",
    "ROUTE_KEY",
    "SPAN_KEY",
    "TracewireWSGIMiddleware",
    "request_path",
    "route_from_environ",
]

Environ = dict[str, Any]
ExcInfo = tuple[type[BaseException], BaseException, Optional[TracebackType]]  # noqa: UP045
StartResponse = Callable[..., Callable[[bytes], object]]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]
RouteOf = Callable[[Environ], "str | None"]

# Where a framework integration (``tracewire.flask``, or a few lines of Django or Falcon
# middleware) leaves the matched route template, e.g. ``/items/<int:item_id>``.
ROUTE_KEY = "tracewire.route"
# Where an integration leaves an exception its framework turned into a 500 response itself
# (Flask's error handling does), so the span still records it and names its type.
EXCEPTION_KEY = "tracewire.exception"

_DEFAULT_PORTS = {"http": 80, "https": 443}


def route_from_environ(environ: Environ) -> str | None:
    """The route template an integration stored under ``ROUTE_KEY``, if any."""
    route = environ.get(ROUTE_KEY)
    return route if isinstance(route, str) else None


def _text(value: str) -> str:
    # WSGI strings are bytes decoded as latin-1; paths are UTF-8 on the wire.
    if value.isascii():
        return value
    try:
        return value.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return value


def request_path(environ: Environ) -> str:
    """The decoded request path, the same value ASGI has in ``scope["path"]``."""
    return _text(environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", ""))


def _host_port(environ: Environ) -> tuple[str, int | None]:
    host = environ.get("HTTP_HOST")
    scheme = environ.get("wsgi.url_scheme", "http")
    if host:
        if host.startswith("["):
            end = host.find("]")
            name, rest = host[1:end], host[end + 1 :]
            port_text = rest[1:] if rest.startswith(":") else ""
        else:
            name, _, port_text = host.partition(":")
        if port_text.isdigit():
            return name, int(port_text)
        return name, _DEFAULT_PORTS.get(scheme)
    port = environ.get("SERVER_PORT", "")
    return environ.get("SERVER_NAME", ""), int(port) if port.isdigit() else None


def _attributes(environ: Environ) -> Attributes:
    # The request target as received (gunicorn: RAW_URI, werkzeug: REQUEST_URI) keeps the
    # client's percent-encoding; an absolute-form target (proxy requests) is not a path.
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    path = raw.partition("?")[0] if raw and raw[0] == "/" else request_path(environ)
    protocol = environ.get("SERVER_PROTOCOL", "")
    attributes: Attributes = {
        semconv.URL_PATH: path,
        semconv.URL_SCHEME: environ.get("wsgi.url_scheme", "http"),
    }
    if protocol.startswith("HTTP/"):
        attributes[semconv.NETWORK_PROTOCOL_VERSION] = protocol[5:]
    query = environ.get("QUERY_STRING")
    if query:
        attributes[semconv.URL_QUERY] = query
    host, port = _host_port(environ)
    if host:
        attributes[semconv.SERVER_ADDRESS] = host
    if port is not None:
        attributes[semconv.SERVER_PORT] = port
    agent = environ.get("HTTP_USER_AGENT")
    if agent:
        attributes[semconv.USER_AGENT_ORIGINAL] = agent
    client = environ.get("REMOTE_ADDR")
    if client:
        attributes[semconv.CLIENT_ADDRESS] = client
    return attributes


def _origin(environ: Environ) -> Origin:
    host, port = _host_port(environ)
    return environ.get("wsgi.url_scheme", "http"), host.lower(), port


class _Request:
    """Per-request state. Calling it is the ``start_response`` the app gets."""

    __slots__ = ("ended", "environ", "route_of", "span", "start_response", "status", "tracer")

    def __init__(
        self,
        tracer: ServerTracer,
        span: Span,
        environ: Environ,
        start_response: StartResponse,
        route_of: RouteOf,
    ) -> None:
        self.tracer = tracer
        self.span = span
        self.environ = environ
        self.start_response = start_response
        self.route_of = route_of
        self.status = 0
        self.ended = False

    def __call__(
        self, status: str, headers: list[tuple[str, str]], exc_info: ExcInfo | None = None
    ) -> Callable[[bytes], object]:
        try:
            code = int(status[:3])
            self.status = code
            self.tracer.response_started(self.span, code, headers)
            extra = self.tracer.propagation_headers(self.span)
            if extra:
                headers = [*headers, *extra]
        except Exception as exc:
            _fault("wsgi-response", exc)
        if exc_info is not None:
            return self.start_response(status, headers, exc_info)
        return self.start_response(status, headers)

    def end(self, exc: BaseException | None = None) -> None:
        if self.ended:
            return
        self.ended = True
        span, environ = self.span, self.environ
        if span.is_recording():
            self.tracer.name_after_route(
                span, environ.get("REQUEST_METHOD", "GET"), self.route_of, environ
            )
            if exc is None:
                handled = environ.get(EXCEPTION_KEY)
                if isinstance(handled, BaseException):
                    exc = handled  # one a framework turned into its own error page
        self.tracer.end(span, exc, responded=bool(self.status))


class _Body:
    """Wraps the response iterable: the request's context is current while the body is
    produced, and the span ends when the server calls ``close()`` (PEP 3333)."""

    __slots__ = ("_context", "_iterator", "_result", "_state")

    def __init__(self, result: Iterable[bytes], context: Context, state: _Request | None) -> None:
        self._result = result
        self._context = context
        self._state = state  # None: the context only (an excluded or non-recording request)
        self._iterator: Iterator[bytes] | None = None

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        token = attach(self._context)
        try:
            if self._iterator is None:
                self._iterator = iter(self._result)
            return next(self._iterator)
        except StopIteration:
            raise
        except BaseException as exc:
            if self._state is not None:
                self._state.end(exc)
            raise
        finally:
            detach(token)

    def close(self) -> None:
        token = attach(self._context)
        try:
            close = getattr(self._result, "close", None)
            if close is not None:
                close()
        except BaseException as exc:
            if self._state is not None:
                self._state.end(exc)
            raise
        finally:
            detach(token)
            if self._state is not None:
                self._state.end()


class _ListBody(_Body):
    """A body that is already produced (a list or tuple): no app code runs while it is sent,
    so the server gets the plain list iterator, and its length (servers set Content-Length
    from a one-item body)."""

    __slots__ = ()

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._result)

    def __len__(self) -> int:
        return len(self._result)  # type: ignore[arg-type]


def _hook_close(result: Any, state: _Request) -> bool:
    """Make ``result.close()`` end the span without changing the object's type.

    Used for ``wsgi.file_wrapper`` responses: servers send those with ``sendfile`` only when
    the object is still an instance of their wrapper class.
    """
    original = getattr(result, "close", None)

    def close() -> None:
        try:
            if original is not None:
                original()
        finally:
            state.end()

    try:
        result.close = close
    except Exception:  # __slots__, a read-only property: fall back to wrapping
        return False
    return True


def _body(
    result: Iterable[bytes], context: Context, state: _Request | None, environ: Environ
) -> Iterable[bytes]:
    kind = type(result)
    if kind is list or kind is tuple:
        return result if state is None else _ListBody(result, context, state)
    file_wrapper = environ.get("wsgi.file_wrapper")
    if (
        file_wrapper is not None
        and isinstance(file_wrapper, type)
        and isinstance(result, file_wrapper)
        and (state is None or _hook_close(result, state))
    ):
        return result
    return _Body(result, context, state)


class TracewireWSGIMiddleware:
    """WSGI middleware that puts every request in the right trace.

    One line::

        app.wsgi_app = TracewireWSGIMiddleware(app.wsgi_app)   # Flask
        application = TracewireWSGIMiddleware(get_wsgi_application())   # Django

    It extracts the incoming trace context from the request headers alone, starts one SERVER
    span in it, makes it current for the app's code (also while a streamed body is produced)
    and ends it when the server closes the response iterable, so streaming responses are fully
    inside the span. ``wsgi.file_wrapper`` responses are returned as they are, so the server's
    ``sendfile`` fast path still applies. A request already traced by an outer
    ``TracewireWSGIMiddleware`` passes through; an excluded path gets the incoming context but
    no span.

    Args:
        app: the WSGI application.
        settings: a ``tracewire.Settings``; default ``Settings.from_env()``.
        tracer_provider: the OpenTelemetry ``TracerProvider``; default the global one.
        route: ``route(environ) -> str | None`` giving the matched route template for the span
            name, called when the response is done; the default reads ``environ[ROUTE_KEY]``,
            which ``tracewire.flask`` sets.
    """

    def __init__(
        self,
        app: WSGIApp,
        settings: Settings | None = None,
        *,
        tracer_provider: TracerProvider | None = None,
        route: RouteOf | None = None,
    ) -> None:
        if not callable(app):
            raise TypeError(f"app must be a WSGI callable, got {type(app).__name__}")
        if settings is None:
            settings = Settings.from_env()
        elif not isinstance(settings, Settings):
            raise TypeError(f"settings must be a tracewire.Settings, got {type(settings).__name__}")
        if route is not None and not callable(route):
            raise TypeError(f"route must be a callable or None, got {type(route).__name__}")
        self.app = app
        self.settings = settings
        self.route_of: RouteOf = route or route_from_environ
        self._tracer = ServerTracer(settings, tracer_provider)

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        if SPAN_KEY in environ:
            return self.app(environ, start_response)
        tracer = self._tracer
        ctx, span = tracer.begin(
            environ,
            wsgi_getter,
            environ.get("REQUEST_METHOD", "GET"),
            # The path only matters for excluded_paths; decoding it costs on every request.
            "" if tracer.excluded is None else request_path(environ),
            _attributes,
            environ,
            _origin,
        )
        environ[SPAN_KEY] = span
        token = attach(ctx)
        try:
            if span is None or not (span.is_recording() or tracer.response_propagation_on):
                # Excluded, or nothing to record and no header to add: only the context counts.
                return _body(self.app(environ, start_response), ctx, None, environ)
            state = _Request(tracer, span, environ, start_response, self.route_of)
            try:
                result = self.app(environ, state)
            except BaseException as exc:
                state.end(exc)
                raise
            return _body(result, ctx, state, environ)
        finally:
            detach(token)

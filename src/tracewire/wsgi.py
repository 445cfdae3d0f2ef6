"""``TracewireWSGIMiddleware``: the WSGI (PEP 3333) server middleware."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Any, Optional

from opentelemetry.context import attach, detach
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import TracerProvider

from tracewire._instrument import fault
from tracewire.carriers import wsgi_getter
from tracewire.defaults import SettingsSource
from tracewire.server import (
    EXCEPTION_KEY,
    ROUTE_KEY,
    SPAN_KEY,
    RequestView,
    ServerCall,
    check_route,
    component_tracer,
)
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


def _view(environ: Environ, route_of: RouteOf) -> RequestView:
    # The request target as received (gunicorn: RAW_URI, werkzeug: REQUEST_URI) keeps the
    # client's percent-encoding; an absolute-form target (proxy requests) is not a path.
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    protocol = environ.get("SERVER_PROTOCOL", "")
    port = environ.get("SERVER_PORT", "")
    name = environ.get("SERVER_NAME")
    # Positional, in RequestView's field order: this runs for every request.
    return RequestView(
        environ.get("REQUEST_METHOD", "GET"),
        environ.get("wsgi.url_scheme", "http"),
        request_path(environ),
        environ,
        wsgi_getter,
        environ,
        raw.partition("?")[0] if raw and raw[0] == "/" else None,
        environ.get("QUERY_STRING") or None,
        environ.get("HTTP_HOST"),
        (name, int(port) if port.isascii() and port.isdigit() else None) if name else None,
        environ.get("REMOTE_ADDR") or None,
        environ.get("HTTP_USER_AGENT"),
        protocol[5:] if protocol.startswith("HTTP/") else None,
        route_of,
    )


class _StartResponse:
    """The ``start_response`` the app gets: reports the status, adds tracewire's headers."""

    __slots__ = ("call", "start_response")

    def __init__(self, call: ServerCall, start_response: StartResponse) -> None:
        self.call = call
        self.start_response = start_response

    def __call__(
        self, status: str, headers: list[tuple[str, str]], exc_info: ExcInfo | None = None
    ) -> Callable[[bytes], object]:
        call = self.call
        extra = call.response_headers(headers)
        sent = [*headers, *extra] if extra else headers
        if exc_info is not None:
            # After the headers went out the server re-raises: the status the client got stays.
            write = self.start_response(status, sent, exc_info)
        else:
            write = self.start_response(status, sent)
        try:
            call.record_status(int(status[:3]), headers)
        except Exception as exc:
            fault("wsgi-response", exc)
        return write


class _Body:
    """Wraps the response iterable: the request's context is current while the body is
    produced, and the call finishes when the server calls ``close()`` (PEP 3333)."""

    __slots__ = ("_call", "_iterator", "_result")

    def __init__(self, result: Iterable[bytes], call: ServerCall) -> None:
        self._result = result
        self._call = call
        self._iterator: Iterator[bytes] | None = None

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        token = attach(self._call.context)
        try:
            if self._iterator is None:
                self._iterator = iter(self._result)
            return next(self._iterator)
        except StopIteration:
            raise
        except BaseException as exc:
            self._call.finished(exc)
            raise
        finally:
            detach(token)

    def close(self) -> None:
        token = attach(self._call.context)
        try:
            close = getattr(self._result, "close", None)
            if close is not None:
                close()
        except BaseException as exc:
            self._call.finished(exc)
            raise
        finally:
            detach(token)
            self._call.finished()


class _ListBody(_Body):
    """A body that is already produced (a list or tuple): no app code runs while it is sent,
    so the server gets the plain list iterator, and its length (servers set Content-Length
    from a one-item body)."""

    __slots__ = ()

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._result)

    def __len__(self) -> int:
        return len(self._result)  # type: ignore[arg-type]


def _hook_close(result: Any, call: ServerCall) -> bool:
    """Make ``result.close()`` finish the call without changing the object's type.

    Used for ``wsgi.file_wrapper`` responses: servers send those with ``sendfile`` only when
    the object is still an instance of their wrapper class.
    """
    original = getattr(result, "close", None)

    def close() -> None:
        try:
            if original is not None:
                original()
        finally:
            call.finished()

    try:
        result.close = close
    except Exception:  # __slots__, a read-only property: fall back to wrapping
        return False
    return True


def _body(result: Iterable[bytes], call: ServerCall, environ: Environ) -> Iterable[bytes]:
    kind = type(result)
    if kind is list or kind is tuple:
        # Nothing left to run in the request's context: only the end needs to be seen.
        return _ListBody(result, call) if call.observing else result
    file_wrapper = environ.get("wsgi.file_wrapper")
    if (
        isinstance(file_wrapper, type)
        and isinstance(result, file_wrapper)
        and (not call.observing or _hook_close(result, call))
    ):
        return result
    return _Body(result, call)


class TracewireWSGIMiddleware:
    """WSGI middleware that puts every request in the right trace.

    One line::

        app.wsgi_app = TracewireWSGIMiddleware(app.wsgi_app)   # Flask
        application = TracewireWSGIMiddleware(get_wsgi_application())   # Django

    It extracts the incoming trace context from the request headers alone, starts one SERVER
    span in it, makes it current for the app's code (also while a streamed body is produced)
    and ends it when the server closes the response iterable, so streaming responses are fully
    inside the span. Outgoing calls made while serving the request use this middleware's
    settings. ``wsgi.file_wrapper`` responses are returned as they are, so the server's
    ``sendfile`` fast path still applies. A request already traced by an outer tracewire
    middleware passes through; an excluded path gets the incoming context but no span.

    Args:
        app: the WSGI application.
        settings: a ``tracewire.Settings``; default: the process default
            (``tracewire.configure``), else ``Settings.from_env()``.
        tracer_provider: the OpenTelemetry ``TracerProvider``; default the global one.
        meter_provider: the ``MeterProvider`` for the HTTP server metrics; default the global
            one (metrics are recorded once an SDK provider is set).
        route: ``route(environ) -> str | None`` giving the matched route template for the span
            name, called when the response is done; the default reads ``environ[ROUTE_KEY]``,
            which ``tracewire.flask`` sets.
        **overrides: settings fields, applied over ``settings``, or over the process default
            (also when ``tracewire.configure`` is called later).
    """

    def __init__(
        self,
        app: WSGIApp,
        /,
        settings: Settings | SettingsSource | None = None,
        *,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        route: RouteOf | None = None,
        **overrides: Any,
    ) -> None:
        if not callable(app):
            raise TypeError(f"app must be a WSGI callable, got {type(app).__name__}")
        check_route(route)
        self.app = app
        self.route_of: RouteOf = route or route_from_environ
        self._tracer = component_tracer(app, settings, overrides, tracer_provider, meter_provider)

    @property
    def settings(self) -> Settings:
        """The settings in force for the next request, with where each value came from."""
        return self._tracer.source.settings()

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        if SPAN_KEY in environ:
            return self.app(environ, start_response)
        tracer = self._tracer
        call = tracer.begin(_view(environ, self.route_of), tracer.plan())
        environ[SPAN_KEY] = call.span
        token = attach(call.context)
        try:
            result = self.app(
                environ, _StartResponse(call, start_response) if call.observing else start_response
            )
        except BaseException as exc:
            call.finished(exc)
            raise
        finally:
            detach(token)
        return _body(result, call, environ)

"""Django integration: ``TracewireMiddleware`` for ``settings.MIDDLEWARE``, and settings from
Django's settings.

One line in ``settings.py``, for WSGI and ASGI alike::

    MIDDLEWARE = ["tracewire.django.TracewireMiddleware", ...]   # first, to see the most

tracewire's settings are ``TRACEWIRE_*`` names or one ``TRACEWIRE`` dict::

    TRACEWIRE_PROPAGATORS = "tracecontext,baggage,b3multi"
    TRACEWIRE = {"propagators": ["b3multi"], "excluded_paths": ["/health"]}   # or this

They are read over the process default (``tracewire.configure``, else the environment, with
``OTEL_PROPAGATORS``); an unknown name raises ``ImproperlyConfigured`` at start-up.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from opentelemetry.context import attach, detach
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import TracerProvider

from tracewire import asgi, wsgi
from tracewire._framework import ConfigSource, framework_settings, framework_values
from tracewire._instrument import fault
from tracewire.compiled import Compiled
from tracewire.defaults import SettingsSource
from tracewire.server import (
    EXCEPTION_KEY,
    ROUTE_KEY,
    SPAN_KEY,
    RequestView,
    ServerCall,
    ServerTracer,
)
from tracewire.settings import PREFIX, Settings

__all__ = ["DICT_SETTING", "TracewireMiddleware", "listed_settings", "settings_from_django"]

# The one-dict form: ``TRACEWIRE = {"propagators": [...], ...}``.
DICT_SETTING = "TRACEWIRE"
# Where ``process_exception`` keeps a view's exception until the response shows whether
# Django turned it into a server error (an ``Http404`` is not one).
_PENDING = "_tracewire_exception"

Native = dict[str, Any]  # the ASGI scope or the WSGI environ behind the request


def _improperly_configured() -> type[Exception]:
    from django.core.exceptions import ImproperlyConfigured

    error: type[Exception] = ImproperlyConfigured
    return error


def _where() -> ConfigSource:
    return ConfigSource("Django settings", "settings.{key}", _improperly_configured())


def _collect(source: Any) -> dict[str, Any]:
    """The ``TRACEWIRE_*`` names of Django's settings, with the ``TRACEWIRE`` dict's entries."""
    found = {name: getattr(source, name) for name in dir(source) if name.startswith(PREFIX)}
    table = getattr(source, DICT_SETTING, None)
    if table is None:
        return found
    if not isinstance(table, Mapping):
        raise _improperly_configured()(
            f"settings.{DICT_SETTING} must be a dict of tracewire settings, "
            f"got {type(table).__name__}"
        )
    for key, value in table.items():
        name = PREFIX + str(key).upper()
        if name in found:
            raise _improperly_configured()(
                f"{key!r} is set twice: in settings.{DICT_SETTING} and as settings.{name}"
            )
        found[name] = value
    return found


def _django_settings(django_settings: Any) -> Any:
    if django_settings is not None:
        return django_settings
    from django.conf import settings

    return settings


def settings_from_django(
    django_settings: Any = None, *, base: Settings | None = None, **overrides: Any
) -> Settings:
    """``Settings`` from Django's settings (default ``django.conf.settings``).

    Raises ``ImproperlyConfigured`` for an unknown ``TRACEWIRE_*`` name (or dict key), and
    ``ValueError``/``TypeError`` naming the setting for a bad value.
    """
    mapping = _collect(_django_settings(django_settings))
    return framework_settings(mapping, _where(), base=base, **overrides)


def _django_source(django_settings: Any = None) -> SettingsSource:
    """The middleware's settings: Django's ``TRACEWIRE*`` over the process default (also when
    ``tracewire.configure`` is called later), checked now."""
    values, labels = framework_values(_collect(_django_settings(django_settings)), _where())
    return SettingsSource(None, values, labels, frameworks=("DJANGO",))


def listed_settings() -> tuple[str, Settings] | None:
    """The dotted path of the tracewire middleware in ``settings.MIDDLEWARE`` and the settings
    it would use (for ``tracewire check``), or ``None`` when none is listed."""
    from django.conf import settings
    from django.utils.module_loading import import_string

    for entry in getattr(settings, "MIDDLEWARE", None) or ():
        try:
            found = import_string(entry)
        except ImportError:
            continue
        if isinstance(found, type) and issubclass(found, TracewireMiddleware):
            return entry, _django_source().settings()
    return None


def _native(request: Any) -> tuple[Native, bool]:
    """The protocol's own request and whether it is ASGI: Django keeps the ASGI scope, or
    the WSGI environ (which is ``request.META`` itself)."""
    scope = getattr(request, "scope", None)
    if isinstance(scope, dict) and "type" in scope:
        return scope, True
    environ = getattr(request, "environ", None)
    return (environ if isinstance(environ, dict) else request.META), False


def _view(native: Native, is_asgi: bool, tracer: ServerTracer) -> tuple[RequestView, Compiled]:
    """The request as the ASGI or WSGI adapter describes it (the raw ``Host``, never
    ``get_host()``, which raises ``DisallowedHost``), and the settings for it."""
    plan = tracer.plan()
    if is_asgi:
        return asgi._view(native, plan, _noted_route), plan
    return wsgi._view(native, _noted_route), plan


def _noted_route(native: Any) -> str | None:
    route = native.get(ROUTE_KEY)
    return route if isinstance(route, str) else None


def _route_of(request: Any) -> str | None:
    """The resolved URL pattern, includes joined (``/api/items/<int:pk>``), below the script
    prefix the app is mounted at; ``None`` when nothing matched (a 404)."""
    match = getattr(request, "resolver_match", None)
    route = getattr(match, "route", None)
    if not isinstance(route, str):
        return None
    path, info = request.path, request.path_info
    prefix = path[: len(path) - len(info)] if info and path.endswith(info) else ""
    return prefix.rstrip("/") + "/" + route.removeprefix("^")


def _note(request: Any, native: Native, response: Any) -> None:
    """Leave the route, and a view's exception that became a server error, where the span's
    end reads them (this middleware's span, or an outer tracewire middleware's)."""
    try:
        status = getattr(response, "status_code", 0)
        route = _route_of(request)
        if route is not None:
            native[ROUTE_KEY] = route
        exc = getattr(request, _PENDING, None)
        if isinstance(exc, BaseException) and isinstance(status, int) and status >= 500:
            native[EXCEPTION_KEY] = exc
    except Exception as exc:
        fault("django-route", exc)


def _add_header(response: Any, name: str, value: str) -> None:
    if name.lower() == "access-control-expose-headers" and response.has_header(name):
        value = f"{response[name]}, {value}"
    response[name] = value


def _sync_body(chunks: Iterable[Any], call: ServerCall) -> Iterator[Any]:
    """The streamed body, produced with the request's context current (not across yields)."""
    iterator = iter(chunks)
    while True:
        token = attach(call.context)
        try:
            chunk = next(iterator)
        except StopIteration:
            return
        except BaseException as exc:
            call.finished(exc)
            raise
        finally:
            detach(token)
        yield chunk


async def _async_body(chunks: AsyncIterator[Any], call: ServerCall) -> AsyncIterator[Any]:
    iterator = aiter(chunks)
    while True:
        token = attach(call.context)
        try:
            chunk = await anext(iterator)
        except StopAsyncIteration:
            return
        except BaseException as exc:
            call.finished(exc)
            raise
        finally:
            detach(token)
        yield chunk


def _report(call: ServerCall, response: Any) -> None:
    """The status and headers, the request's context for a streamed body, and the span's end
    when Django closes the response: after the last byte, under WSGI and ASGI alike."""
    try:
        extra = call.response_started(int(response.status_code), list(response.items()))
        for name, value in extra:
            _add_header(response, name, value)
        if response.streaming and getattr(response, "file_to_stream", None) is None:
            # Django's setter keeps closing the original iterator (``_resource_closers``).
            content = response.streaming_content
            wrap = _async_body if getattr(response, "is_async", False) else _sync_body
            response.streaming_content = wrap(content, call)
        closers = getattr(response, "_resource_closers", None)
        if isinstance(closers, list):
            closers.append(call.finished)  # last, after the body's own closers
            return
    except Exception as exc:
        fault("django-response", exc)
    call.finished()


def _respond(call: ServerCall, request: Any, native: Native, response: Any) -> Any:
    _note(request, native, response)
    if call.observing:
        _report(call, response)
    return response


class TracewireMiddleware:
    """Django middleware that puts every request in the right trace, under WSGI and ASGI.

    One line in ``settings.py``::

        MIDDLEWARE = ["tracewire.django.TracewireMiddleware", ...]

    It extracts the incoming trace context from the request headers alone, with the settings
    of ``settings.TRACEWIRE*`` (over the process default), starts one SERVER span, makes it
    current for the view (and for a streamed body) and ends it when Django closes the
    response, so a ``StreamingHttpResponse`` or ``FileResponse`` is inside the span. The span
    is named after the resolved URL pattern (``GET /items/<int:pk>``, ``http.route``); an
    exception a view raised that Django turned into a 5xx is recorded with its class
    (``error.type``). Outgoing calls made by the view (tracewire's httpx and requests hooks)
    use these settings. A request an outer tracewire middleware (``TracewireMiddleware`` around
    the ASGI app, ``TracewireWSGIMiddleware`` around the WSGI one) already traces gets no
    second span: its span gets the route and the exception. Bad settings raise
    ``ImproperlyConfigured`` (or ``ValueError``/``TypeError`` naming the setting) when Django
    loads its middleware, at start-up.

    Subclass to choose providers: ``tracer_provider`` / ``meter_provider`` class attributes
    (default: the global ones).
    """

    sync_capable = True
    async_capable = True
    tracer_provider: TracerProvider | None = None
    meter_provider: MeterProvider | None = None

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)
        self._tracer = ServerTracer(_django_source(), self.tracer_provider, self.meter_provider)

    @property
    def settings(self) -> Settings:
        """The settings in force for the next request, with where each value came from."""
        return self._tracer.source.settings()

    def __call__(self, request: Any) -> Any:
        if self.is_async:
            return self._acall(request)
        native, call = self._begin(request)
        if call is None:
            response = self.get_response(request)
            _note(request, native, response)
            return response
        token = attach(call.context)
        try:
            response = self.get_response(request)
        except BaseException as exc:
            call.finished(exc)
            raise
        finally:
            detach(token)
        return _respond(call, request, native, response)

    async def _acall(self, request: Any) -> Any:
        native, call = self._begin(request)
        if call is None:
            response = await self.get_response(request)
            _note(request, native, response)
            return response
        token = attach(call.context)
        try:
            response = await self.get_response(request)
        except BaseException as exc:  # a client disconnect cancels the view, too
            call.finished(exc)
            raise
        finally:
            detach(token)
        return _respond(call, request, native, response)

    def _begin(self, request: Any) -> tuple[Native, ServerCall | None]:
        """The request's span, or ``None``: an outer tracewire middleware traces it already
        (it gets the route and exception), or describing the request failed (contained)."""
        native: Native = {}
        try:
            native, is_asgi = _native(request)
            if SPAN_KEY in native:
                return native, None
            view, plan = _view(native, is_asgi, self._tracer)
            call = self._tracer.begin(view, plan)
            native[SPAN_KEY] = call.span
        except Exception as exc:
            fault("django-request", exc)
            return native, None
        return native, call

    def process_exception(self, request: Any, exception: Exception) -> None:
        """Remember the view's exception (Django's exception stack is synchronous, under ASGI
        too); whether it counts is known from the response's status."""
        try:
            setattr(request, _PENDING, exception)
        except Exception as exc:
            fault("django-exception", exc)

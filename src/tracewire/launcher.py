"""tracewire under ``opentelemetry-instrument``: one instrumentor per library, by entry point.

``pyproject.toml`` registers these classes in the ``opentelemetry_instrumentor`` group, as
``tracewire_httpx``, ``tracewire_requests``, ``tracewire_flask``, ``tracewire_starlette`` (also
FastAPI) and ``tracewire_django``, and :func:`after_instrumentors` in the
``opentelemetry_post_instrument`` group. The launcher (opentelemetry-instrumentation) loads the
SDK configurator first, then each instrumentor entry point not named in
``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS`` (exact names, comma-separated; ``*`` skips all), as
``entry_point.load()().instrument(skip_dep_check=True)``, then the post-instrument hooks.

Protocol, not base class: these classes do not subclass opentelemetry-instrumentation's
``BaseInstrumentor``, so tracewire never depends on that package. They implement what the
launcher and distros call: a no-argument constructor, ``instrument(**kwargs)`` (unknown keys
such as ``skip_dep_check`` are ignored; ``tracer_provider`` and ``meter_provider`` are used),
``uninstrument(**kwargs)``, ``instrumentation_dependencies()`` and
``is_instrumented_by_opentelemetry``. The launcher's dependency check reads the distribution's
``instruments`` extra, which tracewire does not declare (one per library would make every
library required), so each instrumentor checks for its library itself and does nothing when it
is not installed.

One instrumentor per library: when the OpenTelemetry contrib instrumentor of the same library
is installed too, tracewire's wins (you installed tracewire on purpose). Entry points load in
no promised order, so the rule is applied twice: tracewire's ``instrument()`` undoes a contrib
instrumentor that ran before it, and :func:`after_instrumentors` undoes one that ran after.
Each undo is said once, with the variable that keeps the contrib one instead
(``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=tracewire_httpx``).

Servers are wrapped the contrib way: ``flask.Flask``, ``starlette.applications.Starlette`` and
``fastapi.FastAPI`` are replaced by subclasses whose apps get tracewire's middleware, so apps
created after start-up are traced; Django gets ``tracewire.django.TracewireMiddleware`` at the
top of ``settings.MIDDLEWARE``.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
import threading
from collections.abc import Callable, Collection
from importlib.metadata import entry_points
from typing import Any, ClassVar

from opentelemetry import trace

from tracewire import _diagnostics
from tracewire._log import warn_limited, warn_once
from tracewire.semconv import qualified_name

__all__ = [
    "DjangoInstrumentor",
    "FlaskInstrumentor",
    "HttpxInstrumentor",
    "RequestsInstrumentor",
    "StarletteInstrumentor",
    "after_instrumentors",
]

logger = logging.getLogger("tracewire")

GROUP = "opentelemetry_instrumentor"
DJANGO_MIDDLEWARE = "tracewire.django.TracewireMiddleware"
_MARK = "__tracewire_launcher__"  # on the classes and functions this module put in place
_FAILED = "_tracewire_launcher_failed"  # on a Flask app whose config tracewire refused


class _Instrumentor:
    """What the launcher calls. Each subclass is one library; its state is per class, so a new
    instance (the launcher makes one per call) sees what an earlier one did."""

    name: ClassVar[str]  # tracewire's entry point name
    library: ClassVar[str]  # the module that must be importable
    contrib: ClassVar[tuple[str, ...]]  # the contrib entry point names for the same library
    _on: ClassVar[bool] = False
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def instrumentation_dependencies(self) -> Collection[str]:
        return ()  # checked in instrument(): an absent library is skipped, not an error

    @property
    def is_instrumented_by_opentelemetry(self) -> bool:
        return type(self)._on

    def instrument(self, **kwargs: Any) -> None:
        cls = type(self)
        with cls._lock:
            if cls._on or importlib.util.find_spec(cls.library) is None:
                return
            _step_aside(cls)
            try:
                self._instrument(kwargs.get("tracer_provider"), kwargs.get("meter_provider"))
            except Exception as exc:
                # Raised into the launcher, it would stop every instrumentor after this one.
                logger.error(
                    "[launcher] %s could not instrument %s: %r", cls.name, cls.library, exc
                )
                return
            cls._on = True

    def uninstrument(self, **kwargs: Any) -> None:
        cls = type(self)
        with cls._lock:
            if cls._on:
                self._uninstrument()
                cls._on = False

    def _instrument(self, tracer_provider: Any, meter_provider: Any) -> None:
        raise NotImplementedError

    def _uninstrument(self) -> None:
        raise NotImplementedError


# ----------------------------------------------------------------------------- clients
class HttpxInstrumentor(_Instrumentor):
    """Every ``httpx.Client`` / ``AsyncClient`` made afterwards (``tracewire.httpx.instrument``)."""

    name = "tracewire_httpx"
    library = "httpx"
    contrib = ("httpx",)

    def _instrument(self, tracer_provider: Any, meter_provider: Any) -> None:
        from tracewire import httpx

        httpx.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)

    def _uninstrument(self) -> None:
        from tracewire import httpx

        httpx.uninstrument()


class RequestsInstrumentor(_Instrumentor):
    """Every ``requests.Session`` made afterwards: ``tracewire.requests.instrument()``."""

    name = "tracewire_requests"
    library = "requests"
    contrib = ("requests",)

    def _instrument(self, tracer_provider: Any, meter_provider: Any) -> None:
        from tracewire import requests

        requests.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)

    def _uninstrument(self) -> None:
        from tracewire import requests

        requests.uninstrument()


# ----------------------------------------------------------------------------- servers
def _replace(module: Any, attribute: str, make: Callable[[type[Any]], type[Any]]) -> None:
    """``module.attribute = make(module.attribute)``, remembering the original."""
    original = getattr(module, attribute)
    replacement = make(original)
    setattr(replacement, _MARK, original)
    setattr(module, attribute, replacement)


def _restore(module: Any, attribute: str) -> None:
    # Only if nobody replaced it after us: theirs stays, ours inside it is then inert.
    current = getattr(module, attribute)
    original = current.__dict__.get(_MARK) if isinstance(current, type) else None
    if original is not None:
        setattr(module, attribute, original)


class FlaskInstrumentor(_Instrumentor):
    """``flask.Flask`` apps made afterwards get ``tracewire.flask.Tracewire`` at their first
    request, so ``app.config`` set after ``Flask(__name__)`` is read, and an app that calls
    ``Tracewire(app, ...)`` itself keeps its own."""

    name = "tracewire_flask"
    library = "flask"
    contrib = ("flask",)

    def _instrument(self, tracer_provider: Any, meter_provider: Any) -> None:
        import flask

        _replace(flask, "Flask", lambda base: _traced_flask(base, tracer_provider, meter_provider))

    def _uninstrument(self) -> None:
        import flask

        _restore(flask, "Flask")


def _traced_flask(base: type[Any], tracer_provider: Any, meter_provider: Any) -> type[Any]:
    from tracewire.flask import EXTENSION_KEY, Tracewire

    lock = threading.Lock()

    def set_up(app: Any) -> None:
        with lock:
            if EXTENSION_KEY in app.extensions or app.__dict__.get(_FAILED):
                return
            try:
                Tracewire(app, tracer_provider=tracer_provider, meter_provider=meter_provider)
            except Exception as exc:  # bad app.config: served untraced, said loudly
                setattr(app, _FAILED, True)
                logger.error("[launcher:flask] not tracing the app %r: %s", app.name, exc)

    class TracewireFlask(base):  # type: ignore[misc]
        def __call__(self, environ: Any, start_response: Any) -> Any:
            if EXTENSION_KEY not in self.extensions and not self.__dict__.get(_FAILED):
                set_up(self)
            return super().__call__(environ, start_response)

    TracewireFlask.__name__ = TracewireFlask.__qualname__ = base.__name__
    TracewireFlask.__module__ = base.__module__
    return TracewireFlask


class StarletteInstrumentor(_Instrumentor):
    """``Starlette`` and ``FastAPI`` apps made afterwards get ``TracewireMiddleware`` as their
    outermost middleware at construction (one added later by the app is outside it and wins).
    A FastAPI app with tracing of its own is made with ``telemetry={"tracing": False,
    "metrics": False}`` (the keys it does not set itself), so each request has one SERVER span
    and is counted once in ``http.server.request.duration``."""

    name = "tracewire_starlette"
    library = "starlette"
    contrib = ("starlette", "fastapi")

    def _instrument(self, tracer_provider: Any, meter_provider: Any) -> None:
        # FastAPI first: its class must subclass the real Starlette, not our replacement.
        fastapi = _import_if_installed("fastapi")
        from starlette import applications

        def make(base: type[Any]) -> type[Any]:
            return _traced_starlette(base, tracer_provider, meter_provider)

        _replace(applications, "Starlette", make)
        if fastapi is not None:
            _replace(fastapi, "FastAPI", make)

    def _uninstrument(self) -> None:
        from starlette import applications

        _restore(applications, "Starlette")
        if "fastapi" in sys.modules:
            _restore(sys.modules["fastapi"], "FastAPI")


def _import_if_installed(name: str) -> Any:
    if importlib.util.find_spec(name) is None:
        return None
    return importlib.import_module(name)


def _traced_starlette(base: type[Any], tracer_provider: Any, meter_provider: Any) -> type[Any]:
    native = _has_native_tracing(base)

    class TracewireStarlette(base):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            if native:
                # tracewire records the same spans and HTTP metrics: one source of each.
                given = kwargs.get("telemetry") or {}
                kwargs["telemetry"] = {"tracing": False, "metrics": False, **given}
            super().__init__(*args, **kwargs)
            if getattr(self, "_tracewire_added", False):
                return  # a FastAPI made after start-up subclasses our Starlette as well
            from tracewire.asgi import TracewireMiddleware

            self.add_middleware(
                TracewireMiddleware, tracer_provider=tracer_provider, meter_provider=meter_provider
            )
            self._tracewire_added = True

    TracewireStarlette.__name__ = TracewireStarlette.__qualname__ = base.__name__
    TracewireStarlette.__module__ = base.__module__
    return TracewireStarlette


def _has_native_tracing(cls: type[Any]) -> bool:
    """FastAPI >= 0.16x takes ``telemetry=`` and traces requests itself."""
    import inspect

    try:
        return "telemetry" in inspect.signature(cls.__init__).parameters
    except (TypeError, ValueError):
        return False


class DjangoInstrumentor(_Instrumentor):
    """``tracewire.django.TracewireMiddleware`` first in ``settings.MIDDLEWARE``: now if the
    settings are configured, else when ``django.setup()`` runs (``manage.py``,
    ``get_wsgi_application()``, ``get_asgi_application()`` all call it), because
    ``DJANGO_SETTINGS_MODULE`` is often set only by the program the launcher starts."""

    name = "tracewire_django"
    library = "django"
    contrib = ("django",)

    def _instrument(self, tracer_provider: Any, meter_provider: Any) -> None:
        import django
        from django.conf import settings

        if settings.configured:
            _insert_middleware(settings)
            return
        original = django.setup

        def setup(*args: Any, **kwargs: Any) -> Any:
            _insert_middleware(settings)
            return original(*args, **kwargs)

        setattr(setup, _MARK, original)
        django.setup = setup

    def _uninstrument(self) -> None:
        import django
        from django.conf import settings

        original = getattr(django.setup, _MARK, None)
        if original is not None:
            django.setup = original
        if settings.configured:
            settings.MIDDLEWARE = [m for m in settings.MIDDLEWARE if m != DJANGO_MIDDLEWARE]


def _insert_middleware(settings: Any) -> None:
    try:
        middleware = list(getattr(settings, "MIDDLEWARE", None) or ())
        if DJANGO_MIDDLEWARE not in middleware:
            settings.MIDDLEWARE = [DJANGO_MIDDLEWARE, *middleware]
    except Exception as exc:  # settings that cannot be read: Django itself will say why
        warn_limited("launcher:django", f"could not add tracewire's middleware: {exc}")


# ---------------------------------------------------------------- one instrumentor per library
INSTRUMENTORS: tuple[type[_Instrumentor], ...] = (
    HttpxInstrumentor,
    RequestsInstrumentor,
    FlaskInstrumentor,
    StarletteInstrumentor,
    DjangoInstrumentor,
)


def _step_aside(ours: type[_Instrumentor]) -> None:
    """Undo the contrib instrumentors of ``ours``'s library that are on, saying so once."""
    for entry in entry_points(group=GROUP):
        if entry.name not in ours.contrib or entry.module.split(".")[0] == "tracewire":
            continue
        if entry.module not in sys.modules:
            continue  # never loaded, so it instrumented nothing (yet)
        try:
            other = entry.load()()
            if not getattr(other, "is_instrumented_by_opentelemetry", False):
                continue
            other.uninstrument()
        except Exception as exc:
            message = f"could not undo {entry.name!r}: {qualified_name(exc)}"
            warn_limited("launcher:contrib", message)
            continue
        warn_once(
            f"launcher:contrib:{entry.name}",
            f"OpenTelemetry's {entry.name!r} instrumentor is installed next to tracewire's "
            f"{ours.name!r}: tracewire instruments {entry.name} and the contrib one was undone "
            f"(to keep it instead: OTEL_PYTHON_DISABLED_INSTRUMENTATIONS={ours.name})",
        )


def after_instrumentors() -> None:
    """The launcher's post-instrument hook: undo contrib instrumentors that ran after ours, and
    say when no span will leave the process."""
    try:
        on = [cls for cls in INSTRUMENTORS if cls._on]
        for cls in on:
            with cls._lock:
                _step_aside(cls)
        if on:
            _check_sdk()
    except Exception as exc:  # the launcher must go on starting the program
        warn_limited("internal:launcher", f"post-instrument check failed: {qualified_name(exc)}")


def _check_sdk() -> None:
    """Say once what is missing when the launcher set up no SDK, or no exporter."""
    provider = trace.get_tracer_provider()
    if type(provider).__name__ in ("ProxyTracerProvider", "NoOpTracerProvider"):
        # The app may still set one; the first request says so if it did not.
        _diagnostics.set_no_sdk_fix(
            "opentelemetry-instrument ran without an SDK configurator: install "
            "opentelemetry-distro (it sets one up from the OTEL_* variables), or set a "
            "TracerProvider in the app"
        )
        return
    processors = getattr(getattr(provider, "_active_span_processor", None), "_span_processors", ())
    if processors == ():
        warn_once(
            "launcher:no-exporter",
            "opentelemetry-instrument set up the SDK without a span exporter "
            "(OTEL_TRACES_EXPORTER=none?), so spans are recorded but never leave the process; "
            "set OTEL_TRACES_EXPORTER=otlp (or console)",
        )

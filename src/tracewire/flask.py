"""Flask integration: ``Tracewire(app)``, settings from ``app.config``, route-named spans."""

from __future__ import annotations

from typing import Any

from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import TracerProvider

from tracewire._framework import ConfigSource, framework_settings, framework_values
from tracewire._instrument import check_type, fault
from tracewire.defaults import SettingsSource
from tracewire.server import EXCEPTION_KEY, ROUTE_KEY
from tracewire.settings import Settings
from tracewire.wsgi import TracewireWSGIMiddleware

__all__ = ["EXTENSION_KEY", "Tracewire", "settings_from_config"]

EXTENSION_KEY = "tracewire"
FLASK_CONFIG = ConfigSource("app.config", "app.config['{key}']")


def settings_from_config(
    config: Any, *, base: Settings | None = None, **overrides: Any
) -> Settings:
    """``Settings`` from the ``TRACEWIRE_*`` keys of a Flask ``app.config`` over ``base``
    (default: the process default, ``tracewire.configure``, else ``Settings.from_env()``).

    Values may be strings (parsed as in the environment) or Python values (lists, callables,
    compiled patterns). A bad value or an unknown ``TRACEWIRE_*`` key raises ``ValueError``
    (``TypeError`` for a value of the wrong type) naming the key.
    """
    return framework_settings(config, FLASK_CONFIG, base=base, **overrides)


class Tracewire:
    """Flask extension in the usual shape.

    One line::

        Tracewire(app)

    or, with an application factory::

        tracewire_ext = Tracewire()
        tracewire_ext.init_app(app)

    Settings come from ``app.config`` keys ``TRACEWIRE_*`` (e.g.
    ``app.config["TRACEWIRE_PROPAGATORS"] = "b3multi,tracecontext"``) over the process default
    (``tracewire.configure``, also when called later, else the environment), unless
    ``settings`` is given; the config is read once, in ``init_app``, where a bad value raises
    ``ValueError`` naming its key. ``app.extensions["tracewire"]`` is the middleware; its
    ``.settings`` are those in force. They are the app's
    settings for its outgoing calls too: tracewire's httpx and requests hooks built without
    settings, used while serving a request, take them. Spans are named after
    ``request.url_rule`` (``GET /items/<int:item_id>``), and an exception that Flask turns into
    its 500 response is recorded on the span (``error.type`` is its class name).

    Args:
        app: the Flask app (optional; see ``init_app``).
        settings: a ``tracewire.Settings`` used for every app, instead of ``app.config``.
        tracer_provider: the OpenTelemetry ``TracerProvider``; default the global one.
        meter_provider: the ``MeterProvider`` for the HTTP server metrics; default the global.
    """

    def __init__(
        self,
        app: Any = None,
        settings: Settings | None = None,
        *,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        check_type("settings", settings, Settings, "a tracewire.Settings")
        self.settings = settings
        self.tracer_provider = tracer_provider
        self.meter_provider = meter_provider
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Any) -> None:
        """Wrap ``app.wsgi_app`` and remember each request's URL rule. Bad settings raise here."""
        from flask import got_request_exception

        if EXTENSION_KEY in app.extensions:
            return  # already set up: a second middleware would add nothing
        if self.settings is not None:
            source = SettingsSource(self.settings)
        else:
            # app.config over the process default, also when configure() comes later.
            values, labels = framework_values(app.config, FLASK_CONFIG)
            source = SettingsSource(None, values, labels, frameworks=("FLASK",))
        middleware = TracewireWSGIMiddleware(
            app.wsgi_app,
            source,
            tracer_provider=self.tracer_provider,
            meter_provider=self.meter_provider,
        )
        app.wsgi_app = middleware
        # First in line, so an earlier before_request that answers early still names the span.
        app.before_request_funcs.setdefault(None, []).insert(0, _remember_route)
        got_request_exception.connect(_remember_exception, app, weak=False)
        app.extensions[EXTENSION_KEY] = middleware


def _remember_route() -> None:
    from flask import request

    try:
        rule = request.url_rule
        if rule is not None:
            # A Flask app mounted under a prefix (SCRIPT_NAME) serves its rules below it.
            request.environ[ROUTE_KEY] = request.root_path + rule.rule
    except Exception as exc:
        fault("flask-route", exc)


def _remember_exception(sender: Any, exception: BaseException | None = None, **extra: Any) -> None:
    from flask import request

    try:
        if exception is not None:
            request.environ[EXCEPTION_KEY] = exception
    except Exception as exc:
        fault("flask-exception", exc)

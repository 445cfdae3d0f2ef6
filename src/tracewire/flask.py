"""Flask integration: ``Tracewire(app)``, settings from ``app.config``, route-named spans."""

from __future__ import annotations

from typing import Any

from opentelemetry.trace import TracerProvider

from tracewire.settings import Settings
from tracewire.wsgi import ROUTE_KEY, TracewireWSGIMiddleware

EXTENSION_KEY = "tracewire"


class Tracewire:
    """Flask extension in the usual shape.

    One line::

        Tracewire(app)

    or, with an application factory::

        tracewire_ext = Tracewire()
        tracewire_ext.init_app(app)

    Settings come from ``app.config`` keys ``TRACEWIRE_*`` (e.g.
    ``app.config["TRACEWIRE_PROPAGATORS"] = "b3multi,tracecontext"``) over the environment
    (``Settings.from_env()``), unless ``settings`` is given. Spans are named after
    ``request.url_rule`` (``GET /items/<int:item_id>``).

    Args:
        app: the Flask app (optional; see ``init_app``).
        settings: a ``tracewire.Settings`` used for every app, instead of ``app.config``.
        tracer_provider: the OpenTelemetry ``TracerProvider``; default the global one.
    """

    def __init__(
        self,
        app: Any = None,
        settings: Settings | None = None,
        *,
        tracer_provider: TracerProvider | None = None,
    ) -> None:
        if settings is not None and not isinstance(settings, Settings):
            raise TypeError(f"settings must be a tracewire.Settings, got {type(settings).__name__}")
        self.settings = settings
        self.tracer_provider = tracer_provider
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Any) -> None:
        """Wrap ``app.wsgi_app`` and remember each request's URL rule. Bad settings raise here."""
        if EXTENSION_KEY in app.extensions:
            return  # already set up: a second middleware would add nothing
        settings = self.settings or Settings.from_mapping(app.config, base=Settings.from_env())
        app.wsgi_app = TracewireWSGIMiddleware(
            app.wsgi_app, settings, tracer_provider=self.tracer_provider
        )
        # First in line, so an earlier before_request that answers early still names the span.
        app.before_request_funcs.setdefault(None, []).insert(0, _remember_route)
        app.extensions[EXTENSION_KEY] = settings


def _remember_route() -> None:
    from flask import request

    rule = request.url_rule
    if rule is not None:
        request.environ[ROUTE_KEY] = rule.rule

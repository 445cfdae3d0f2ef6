"""Starlette (and FastAPI) integration: settings from a Starlette ``Config``, route templates.

Mounting is Starlette's own one line::

    app.add_middleware(TracewireMiddleware, settings=settings_from_config(config))

Spans are named after the matched route template (``GET /items/{item_id}``), including the
prefix of ``Mount``s, by :func:`tracewire.asgi.route_template`, which the middleware uses by
default.
"""

from __future__ import annotations

from typing import Any

from starlette.config import Config

from tracewire.asgi import TracewireMiddleware, route_template
from tracewire.settings import OTEL_PROPAGATORS, PREFIX, Settings

__all__ = ["TracewireMiddleware", "route_template", "settings_from_config"]


def settings_from_config(config: Config, prefix: str = PREFIX, **overrides: Any) -> Settings:
    """``Settings`` from a Starlette ``Config`` (environment first, then its ``.env`` file).

    Reads ``prefix + FIELD_NAME`` keys (``TRACEWIRE_PROPAGATORS``, ...), the same names as
    ``Settings.from_env``, and falls back to ``OTEL_PROPAGATORS`` for the propagators; keyword
    ``overrides`` win over both. A bad value raises ``ValueError`` naming the key as written.
    """
    found: dict[str, str] = {}
    for f in Settings.env_fields():
        key = prefix + f.name.upper()
        value = config(key, default=None)
        if value is not None and str(value).strip():
            found[key] = str(value)
    base = None
    otel = config(OTEL_PROPAGATORS, default=None)
    if (
        otel is not None
        and str(otel).strip()
        and "propagators" not in overrides
        and prefix + "PROPAGATORS" not in found
    ):
        base = Settings.from_env({OTEL_PROPAGATORS: str(otel)})
    return Settings.from_mapping(found, prefix, base=base, **overrides)

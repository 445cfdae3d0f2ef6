"""Django integration: settings from Django's settings.

``settings.py`` holds tracewire's settings as ``TRACEWIRE_*`` names or one ``TRACEWIRE`` dict::

    TRACEWIRE_PROPAGATORS = "tracecontext,baggage,b3multi"
    TRACEWIRE = {"propagators": ["b3multi"], "excluded_paths": ["/health"]}   # or this

They are read over the process default (``tracewire.configure``, else the environment, with
``OTEL_PROPAGATORS``); an unknown name raises ``ImproperlyConfigured`` at start-up::

    # asgi.py / wsgi.py
    from tracewire.django import settings_from_django
    application = TracewireMiddleware(get_asgi_application(), settings_from_django())
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tracewire._framework import ConfigSource, framework_settings
from tracewire.settings import PREFIX, Settings

__all__ = ["DICT_SETTING", "settings_from_django"]

# The one-dict form: ``TRACEWIRE = {"propagators": [...], ...}``.
DICT_SETTING = "TRACEWIRE"


def _improperly_configured() -> type[Exception]:
    from django.core.exceptions import ImproperlyConfigured

    error: type[Exception] = ImproperlyConfigured
    return error


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


def settings_from_django(
    django_settings: Any = None, *, base: Settings | None = None, **overrides: Any
) -> Settings:
    """``Settings`` from Django's settings (default ``django.conf.settings``).

    Raises ``ImproperlyConfigured`` for an unknown ``TRACEWIRE_*`` name (or dict key), and
    ``ValueError``/``TypeError`` naming the setting for a bad value.
    """
    source = django_settings
    if source is None:
        from django.conf import settings

        source = settings
    where = ConfigSource("Django settings", "settings.{key}", _improperly_configured())
    return framework_settings(_collect(source), where, base=base, **overrides)

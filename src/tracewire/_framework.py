"""Settings from a framework's configuration, the same way for every framework.

Flask's ``app.config``, a Starlette ``Config`` and Django's settings all hold the service's own
configuration, so they are read alike: their ``TRACEWIRE_*`` keys over the process default
(``tracewire.configure``, else the environment, ``OTEL_PROPAGATORS`` included), keyword
overrides over both, and an unknown ``TRACEWIRE_*`` key is an error naming the source (unlike
an environment variable, a config key belongs to this app, so a typo is a mistake).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tracewire.defaults import default_settings
from tracewire.settings import OTEL_PROPAGATORS, PREFIX, Settings

__all__ = ["framework_settings", "unknown_keys_message"]


def unknown_keys_message(unknown: list[str], where: str, prefix: str = PREFIX) -> str:
    return (
        f"unknown tracewire setting {', '.join(unknown)} in {where}; "
        f"valid keys: {', '.join(Settings.keys(prefix))}"
    )


def framework_settings(
    mapping: Mapping[str, Any],
    where: str,
    *,
    base: Settings | None = None,
    prefix: str = PREFIX,
    error: type[Exception] = ValueError,
    **overrides: Any,
) -> Settings:
    """``Settings`` from the ``prefix`` keys of ``mapping`` (a framework's config).

    Args:
        mapping: the config; string values are parsed as in the environment, other values
            (lists, callables, compiled patterns) taken as they are.
        where: how the user knows the config (``app.config``, ``Django settings``), for errors.
        base: what keys missing from ``mapping`` fall back to; default the process default.
        error: the exception raised for an unknown key (Django wants ``ImproperlyConfigured``).
        overrides: settings fields that win over the config.
    """
    unknown = Settings.unknown_keys(mapping, prefix)
    if unknown:
        raise error(unknown_keys_message(unknown, where, prefix))
    if base is None:
        base = default_settings()
    otel = Settings.otel_base(mapping)
    if otel is not None and prefix + "PROPAGATORS" not in mapping:
        # OpenTelemetry's own variable, when the config holds it (a Starlette .env file).
        base = base.replace_from(OTEL_PROPAGATORS, propagators=otel.propagators)
    return Settings.from_mapping(mapping, prefix, base=base, **overrides)

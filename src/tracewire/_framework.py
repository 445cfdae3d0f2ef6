"""Settings from a framework's configuration, the same way for every framework.

Flask's ``app.config``, a Starlette ``Config`` and Django's settings all hold the service's own
configuration, so they are read alike: their ``TRACEWIRE_*`` keys over the process default
(``tracewire.configure``, else the environment, ``OTEL_PROPAGATORS`` included), keyword
overrides over both, and an unknown ``TRACEWIRE_*`` key is an error naming the source (unlike
an environment variable, a config key belongs to this app, so a typo is a mistake).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from tracewire.defaults import default_settings
from tracewire.settings import OTEL_PROPAGATORS, PREFIX, Settings

__all__ = ["ConfigSource", "framework_settings", "unknown_keys_message"]


def unknown_keys_message(unknown: list[str], where: str, prefix: str = PREFIX) -> str:
    return (
        f"unknown tracewire setting {', '.join(unknown)} in {where}; "
        f"valid keys: {', '.join(Settings.keys(prefix))}"
    )


class ConfigSource(NamedTuple):
    """How the user knows a framework's config, for messages and ``tracewire check``.

    Attributes:
        where: the config as a whole (``app.config``, ``Django settings``).
        label: one key of it, ``{key}`` replaced (``"app.config['{key}']"``).
        error: the exception for an unknown key (Django wants ``ImproperlyConfigured``).
    """

    where: str
    label: str
    error: type[Exception] = ValueError


def framework_settings(
    mapping: Mapping[str, Any],
    source: ConfigSource,
    *,
    base: Settings | None = None,
    prefix: str = PREFIX,
    **overrides: Any,
) -> Settings:
    """``Settings`` from the ``prefix`` keys of ``mapping`` (a framework's config).

    Args:
        mapping: the config; string values are parsed as in the environment, other values
            (lists, callables, compiled patterns) taken as they are.
        source: how the user knows the config.
        base: what keys missing from ``mapping`` fall back to; default the process default.
        overrides: settings fields that win over the config.
    """
    unknown = Settings.unknown_keys(mapping, prefix)
    if unknown:
        raise source.error(unknown_keys_message(unknown, source.where, prefix))
    if base is None:
        base = default_settings()
    otel = Settings.otel_base(mapping)
    if otel is not None and prefix + "PROPAGATORS" not in mapping:
        # OpenTelemetry's own variable, when the config holds it (a Starlette .env file).
        base = base.replace_from(
            source.label.format(key=OTEL_PROPAGATORS), propagators=otel.propagators
        )
    return Settings.from_mapping(mapping, prefix, base=base, label=source.label, **overrides)

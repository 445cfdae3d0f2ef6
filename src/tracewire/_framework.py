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

__all__ = ["ConfigSource", "framework_settings", "framework_values", "unknown_keys_message"]


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


def framework_values(
    mapping: Mapping[str, Any], source: ConfigSource, prefix: str = PREFIX
) -> tuple[dict[str, Any], dict[str, str]]:
    """The ``(values, labels)`` a framework's config sets: its ``prefix`` keys, parsed, and
    ``OTEL_PROPAGATORS`` where it holds that (a Starlette ``.env`` file) and no propagators of
    ours. An unknown key raises ``source.error``; an empty string is checked like any value
    (in a config, ``""`` is written on purpose)."""
    unknown = Settings.unknown_keys(mapping, prefix)
    if unknown:
        raise source.error(unknown_keys_message(unknown, source.where, prefix))
    values, labels = Settings.read_mapping(
        mapping, prefix, label=source.label, empty_is_unset=False
    )
    otel = Settings.otel_base(mapping)
    if otel is not None and "propagators" not in values:
        values["propagators"] = otel.propagators
        labels["propagators"] = source.label.format(key=OTEL_PROPAGATORS)
    return values, labels


def framework_settings(
    mapping: Mapping[str, Any],
    source: ConfigSource,
    *,
    base: Settings | None = None,
    prefix: str = PREFIX,
    **overrides: Any,
) -> Settings:
    """``Settings`` from the ``prefix`` keys of ``mapping`` (a framework's config), over
    ``base`` (default: the process default, ``tracewire.configure``, else the environment);
    keyword ``overrides`` win over both."""
    values, labels = framework_values(mapping, source, prefix)
    values.update(overrides)
    for name in overrides:
        labels.pop(name, None)
    return (default_settings() if base is None else base).with_values(values, labels)

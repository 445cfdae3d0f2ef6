"""One service, one setting: the process default, and which settings a component uses.

Precedence, highest first, for every server middleware and client hook:

1. ``settings=`` given to the component (or keyword settings / framework config, which are
   merged over the default when the component is built);
2. for an outgoing call (or ``opentelemetry.propagate``) made while a tracewire middleware
   serves a request: that middleware's settings, carried in the request's context;
3. the process default set by :func:`configure`;
4. ``Settings.from_env()``, read when the component was built.

A component given no settings follows the process default as it is when the component serves
a request or makes a call, so :func:`configure` may come before or after the app is built.
A component given settings keeps them.

:func:`configure` also installs :class:`ServicePropagator` as OpenTelemetry's global textmap,
so ``opentelemetry.propagate.inject``/``extract`` (and every OpenTelemetry instrumentation that
uses them: Celery, gRPC, aiohttp, hand-written code) speak what tracewire speaks.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from typing import Any

from opentelemetry.context import Context, get_current
from opentelemetry.propagators.textmap import (
    CarrierT,
    Getter,
    Setter,
    TextMapPropagator,
    default_getter,
    default_setter,
)

from tracewire import otel_env
from tracewire._log import logger
from tracewire.compiled import Compiled, compile_settings, settings_in
from tracewire.settings import Settings

__all__ = [
    "ServicePropagator",
    "SettingsSource",
    "configure",
    "configured",
    "default_settings",
    "effective",
    "reset",
]

_lock = threading.Lock()
_default: Compiled | None = None
_told_reconfigured = False


def configure(
    settings: Settings | None = None, /, *, set_global_textmap: bool = True, **overrides: Any
) -> Settings:
    """Set the settings every tracewire component built without explicit settings uses.

    Usage::

        tracewire.configure(propagators=["b3multi", "tracecontext"])
        tracewire.configure(Settings.from_env(), excluded_paths=["/health"])

    Args:
        settings: the settings; ``None`` means ``Settings.from_env(**overrides)``.
        set_global_textmap: also make tracewire OpenTelemetry's global propagator (the inject
            list on inject; the extract list and policy on extract), so that
            ``opentelemetry.propagate`` agrees with tracewire. ``False`` leaves it alone.
        overrides: settings fields, applied over ``settings``.

    Returns the settings now in force. Raises ``ValueError``/``TypeError`` for bad settings,
    naming the setting. Calling it again replaces the default (logged once).
    """
    global _default, _told_reconfigured
    if settings is None:
        chosen = Settings.from_env(**overrides)
    elif not isinstance(settings, Settings):
        raise TypeError(f"settings must be a tracewire.Settings, got {type(settings).__name__}")
    else:
        chosen = settings.replace(**overrides) if overrides else settings
    if not isinstance(set_global_textmap, bool):
        raise TypeError("set_global_textmap must be a bool")
    compiled = compile_settings(chosen)
    with _lock:
        previous, _default = _default, compiled
        tell = previous is not None and previous.settings != chosen and not _told_reconfigured
        if tell:
            _told_reconfigured = True
    if tell:
        logger.info(
            "tracewire.configure() called again with other settings; components built without "
            "settings= use the new ones from now on"
        )
    if set_global_textmap:
        # Imported here: importing opentelemetry.propagate builds OpenTelemetry's own default
        # from OTEL_PROPAGATORS, and raises for a name it does not know.
        from opentelemetry import propagate

        if not isinstance(propagate.get_global_textmap(), ServicePropagator):
            propagate.set_global_textmap(ServicePropagator())
    return chosen


def configured() -> Settings | None:
    """The settings :func:`configure` set, or ``None`` if it was not called."""
    default = _default
    return None if default is None else default.settings


def default_settings(**overrides: Any) -> Settings:
    """The process default with ``overrides``: :func:`configure`'s, else the environment's."""
    default = _default
    if default is None:
        return Settings.from_env(**overrides)
    return default.settings.replace(**overrides) if overrides else default.settings


def reset() -> None:
    """Forget the process default (for tests). OpenTelemetry's global textmap is left as is."""
    global _default, _told_reconfigured, _env_fallback
    with _lock:
        _default = None
        _told_reconfigured = False
        _env_fallback = None


class SettingsSource:
    """Which settings one component uses; built with the component, asked per request/call.

    Args:
        settings: explicit settings, kept for the component's life (``overrides`` applied
            once); or ``None``: the component follows the process default.
        overrides: settings fields applied over the process default (or over ``settings``):
            keyword settings, or the values a framework's config sets.
        labels: where each override came from (``app.config['TRACEWIRE_...']``), for messages
            and ``tracewire check``; an override without one came from code.

    Overrides are checked against the defaults in force when the component is built, so a bad
    one fails at start-up; a later ``configure()`` applies them over its settings.
    """

    __slots__ = ("_built", "_framework", "fallback", "labels", "overrides", "own")

    def __init__(
        self,
        settings: Settings | None = None,
        overrides: Mapping[str, Any] | None = None,
        labels: Mapping[str, str] | None = None,
        frameworks: tuple[str, ...] = (),
    ) -> None:
        if settings is not None and not isinstance(settings, Settings):
            raise TypeError(f"settings must be a tracewire.Settings, got {type(settings).__name__}")
        self.overrides = dict(overrides or {})
        self.labels = dict(labels or {})
        self.own: tuple[Settings, Compiled] | None = None
        if settings is not None:
            own = settings.with_values(self.overrides, self.labels)
            self.own = (own, compile_settings(own))
            return
        # The component's own OTEL_PYTHON_<FRAMEWORK>_EXCLUDED_URLS, for when it follows a
        # default whose exclusions are OpenTelemetry's generic ones (or none).
        self._framework = otel_env.framework_exclusions(os.environ, frameworks)
        # Read now, so that a bad environment (or override) fails at start-up.
        env = self._apply(Settings.from_env(frameworks=frameworks))
        self.fallback = (env, compile_settings(env))
        default = _default
        # (the default it was built from, the settings, their compiled form)
        self._built = (default, *self._over(default)) if default is not None else None

    def _apply(self, base: Settings) -> Settings:
        framework = self._framework
        if (
            framework is not None
            and "excluded_urls" not in self.overrides
            and base.source("excluded_urls") in ("default", otel_env.EXCLUDED_URLS)
        ):
            base = base.replace_from(framework[1], excluded_urls=framework[0])
        return base.with_values(self.overrides, self.labels)

    def _over(self, default: Compiled) -> tuple[Settings, Compiled]:
        settings = self._apply(default.settings)
        if settings is default.settings:
            return settings, default
        return settings, compile_settings(settings)

    @property
    def follows_default(self) -> bool:
        """Whether this component follows the process default (it was given no settings)."""
        return self.own is None

    def _current(self) -> tuple[Settings, Compiled]:
        own = self.own
        if own is not None:
            return own
        default = _default
        if default is None:
            return self.fallback
        built = self._built
        if built is not None and built[0] is default:
            return built[1], built[2]
        try:
            settings, compiled = self._over(default)
        except (ValueError, TypeError) as exc:
            # The new default does not go with this component's overrides: keep what it had.
            from tracewire._instrument import fault

            fault("settings", exc)
            return self.fallback if built is None else (built[1], built[2])
        self._built = (default, settings, compiled)
        return settings, compiled

    def current(self) -> Compiled:
        """The compiled settings in force for this component now."""
        own = self.own
        if own is not None:
            return own[1]
        return self._current()[1]

    def settings(self) -> Settings:
        """The settings in force for this component now, with their sources."""
        return self._current()[0]

    def for_call(self, context: Context) -> Compiled:
        """The settings of an outgoing call made in ``context`` (the serving middleware's
        settings win over the default, never over the component's own)."""
        own = self.own
        if own is not None:
            return own[1]
        if not self.overrides and self._framework is None:
            serving = settings_in(context)
            if serving is not None:
                return serving
        return self._current()[1]


_env_fallback: Compiled | None = None


def effective(context: Context | None) -> Compiled:
    """The settings in force in ``context`` (default: the current one): the serving
    middleware's, else the process default, else the environment."""
    global _env_fallback
    serving = settings_in(get_current() if context is None else context)
    if serving is not None:
        return serving
    default = _default
    if default is not None:
        return default
    if _env_fallback is None:
        _env_fallback = compile_settings(Settings.from_env())
    return _env_fallback


class ServicePropagator(TextMapPropagator):
    """OpenTelemetry's global propagator as :func:`configure` installs it.

    Injects with the inject list, and extracts with the extract list and policy, of the
    settings in force: those of the tracewire middleware serving the current request, else the
    process default.
    """

    def extract(
        self,
        carrier: CarrierT,
        context: Context | None = None,
        getter: Getter[CarrierT] = default_getter,
    ) -> Context:
        return effective(context).propagator.extract(carrier, context, getter)

    def inject(
        self,
        carrier: CarrierT,
        context: Context | None = None,
        setter: Setter[CarrierT] = default_setter,
    ) -> None:
        effective(context).injector.inject(carrier, context, setter)

    @property
    def fields(self) -> set[str]:
        return effective(None).injector.fields

    def __repr__(self) -> str:
        return f"ServicePropagator({effective(None).propagator!r})"

"""Starlette (and FastAPI) integration: settings from a Starlette ``Config``, route templates.

Mounting is Starlette's own one line::

    app.add_middleware(TracewireMiddleware)                                   # env / default
    app.add_middleware(TracewireMiddleware, propagators=["b3"])               # in code
    app.add_middleware(TracewireMiddleware, settings=settings_from_config(Config(".env")))

Spans are named after the matched route template (``GET /items/{item_id}``), including the
prefix of ``Mount``s, by :func:`route_template`, which the middleware uses by default.

Background tasks get a span each: building the middleware switches on
``trace_background_tasks()`` (see :mod:`tracewire.background`).
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import MutableMapping
from typing import Any

from starlette.config import Config

from tracewire._framework import ConfigSource, framework_settings, unknown_keys_message
from tracewire._log import warn_once
from tracewire._starlette_tasks import trace_background_tasks
from tracewire.asgi import TracewireMiddleware
from tracewire.settings import OTEL_PROPAGATORS, PREFIX, Settings

__all__ = [
    "FASTAPI_TELEMETRY",
    "STARLETTE_CONFIG",
    "Scope",
    "TracewireMiddleware",
    "check_fastapi_tracing",
    "route_template",
    "settings_from_config",
    "trace_background_tasks",
]

Scope = MutableMapping[str, Any]
STARLETTE_CONFIG = ConfigSource("the Starlette Config", "Config('{key}')")


def settings_from_config(
    config: Config, *, base: Settings | None = None, prefix: str = PREFIX, **overrides: Any
) -> Settings:
    """``Settings`` from a Starlette ``Config``: its environment first, then its ``.env`` file,
    over ``base`` (default: the process default, ``tracewire.configure``, else the environment).

    Reads ``prefix + FIELD_NAME`` keys (``TRACEWIRE_PROPAGATORS``, ...) and falls back to
    ``OTEL_PROPAGATORS`` for the propagators; keyword ``overrides`` win over both. A bad value,
    or an unknown ``TRACEWIRE_*`` key in the ``.env`` file, raises ``ValueError`` naming the key.
    (Unknown variables in the process environment are only warned about, as everywhere.)
    """
    env_prefix = config.env_prefix
    wanted = (env_prefix + prefix, env_prefix + OTEL_PROPAGATORS)

    def ours(source: Any) -> dict[str, Any]:
        return {
            key[len(env_prefix) :]: value
            for key, value in source.items()
            if isinstance(key, str) and key.startswith(wanted)
        }

    from_file = ours(config.file_values)
    unknown = Settings.unknown_keys(from_file, prefix)
    if unknown:
        raise ValueError(unknown_keys_message(unknown, "the Starlette Config's env file", prefix))
    from_env = ours(config.environ)
    known = set(Settings.keys(prefix)) | {OTEL_PROPAGATORS}
    mapping = {k: v for k, v in {**from_file, **from_env}.items() if k in known}
    return framework_settings(mapping, STARLETTE_CONFIG, base=base, prefix=prefix, **overrides)


# ---------------------------------------------------------------------------- route names
def route_template(scope: Scope) -> str | None:
    """The matched route template, e.g. ``/items/{item_id}``, or ``None``.

    Reads what Starlette's (and so FastAPI's) router leaves in the scope: ``scope["route"]``,
    and for requests that went through ``Mount``s the templates of those mounts, so a route
    under ``Mount("/users/{user_id}", ...)`` is named ``/users/{user_id}/posts/{post_id}``,
    never after the raw path. ``None`` when no route matched or the mounts cannot be told.
    """
    route = scope.get("route")
    path = getattr(route, "path", None)
    if not isinstance(path, str):
        return None
    root = scope.get("root_path", "")
    app_root = scope.get("app_root_path", root)
    prefix = ""
    if root != app_root:
        if not root.startswith(app_root):
            return None
        found = _mount_prefix(scope, root[len(app_root) :])
        if found is None:
            return None
        prefix = found
    if hasattr(route, "routes"):  # the matched route is a Mount: what it serves is below it
        return f"{prefix}/{{path}}"
    return prefix + path


# (id of the top router, concrete mount prefix) -> (the router, weakly; its template). Only
# parameter-free prefixes are kept, so the size is bounded by the app's static mounts.
_PREFIXES: dict[tuple[int, str], tuple[weakref.ref[Any], str]] = {}
_PREFIXES_MAX = 512
_MAX_MOUNT_DEPTH = 16


def _mount_prefix(scope: Scope, concrete: str) -> str | None:
    """The template of the mount path ``concrete`` (``/users/42`` -> ``/users/{user_id}``)."""
    router = scope.get("router")
    if router is None:
        return None
    key = (id(router), concrete)
    cached = _PREFIXES.get(key)
    if cached is not None and cached[0]() is router:
        return cached[1]
    template = _walk_mounts(router, concrete, scope)
    if template == concrete and len(_PREFIXES) < _PREFIXES_MAX:
        # A router that cannot be weakly referenced is just not cached.
        with contextlib.suppress(TypeError):
            _PREFIXES[key] = (weakref.ref(router), template)
    return template


def _walk_mounts(router: Any, rest: str, scope: Scope) -> str | None:
    # Re-trace the router's choice among mounts (first match wins, as in Starlette), using
    # only the part of the path the mounts consumed.
    template = ""
    routes = getattr(router, "routes", None)
    for _ in range(_MAX_MOUNT_DEPTH):
        if not rest:
            return template
        step = _next_mount(routes, rest, scope)
        if step is None:
            return None
        part, consumed, routes = step
        template += part
        rest = rest[consumed:]
    return None


def _next_mount(routes: Any, rest: str, scope: Scope) -> tuple[str, int, Any] | None:
    """``(template part, characters consumed, sub-routes)`` of the mount ``rest`` went into."""
    for candidate in routes or ():
        sub = getattr(candidate, "routes", None)
        if sub is None:
            continue
        regex = getattr(candidate, "path_regex", None)
        if regex is None:  # a Host route: matched on the Host header, consumes no path
            matches = getattr(candidate, "matches", None)
            if matches is not None and matches(scope)[0].name == "FULL":
                return "", 0, sub
            continue
        match = regex.match(rest + "/")
        if match is not None:
            consumed = len(rest) - len(match.group("path"))
            return getattr(candidate, "path", ""), consumed, sub
    return None


# ------------------------------------------------------------------ FastAPI's own tracing
# FastAPI (>= 0.16x) has tracing of its own, on by default once an SDK provider is set; it
# leaves its per-request state under this scope key.
FASTAPI_TELEMETRY = "fastapi.telemetry"


def check_fastapi_tracing(scope: Scope) -> None:
    """Warn (once) when FastAPI's own tracing records a second SERVER span for requests."""
    span = getattr(scope.get(FASTAPI_TELEMETRY), "span", None)
    if span is not None and getattr(span, "is_recording", lambda: False)():
        warn_once(
            "fastapi-native-tracing",
            "FastAPI's own tracing is on too, so each request gets a second SERVER span; "
            "create the app with FastAPI(telemetry={'tracing': False}) to keep tracewire's only",
        )

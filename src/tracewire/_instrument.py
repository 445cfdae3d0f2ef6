"""What every tracer of tracewire shares: its name, its tracer, its argument checks, and the
one way a fault or a user hook is contained.

Containment is the rule that keeps tracing from harming the host app: a fault of ours, or an
exception from a user's hook, is reported through :func:`tracewire._log.warn_limited` (once per
kind per interval, never with header values) and the request goes on.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from opentelemetry.context import Context, create_key
from opentelemetry.trace import Status, StatusCode, Tracer, TracerProvider, get_tracer

from tracewire._log import warn_limited
from tracewire.semconv import qualified_name

INSTRUMENTATION_NAME = "tracewire"

Hook = Callable[..., Any]

# The tracer of the middleware serving the request a context belongs to: spans tracewire
# starts later on the request's behalf (background work) come from the same provider.
TRACER_KEY = create_key("tracewire-tracer")


def fault(where: str, exc: BaseException) -> None:
    """Report a fault inside tracewire (rate limited); the caller carries on."""
    warn_limited(f"internal:{where}", f"tracewire fault in {where}: {qualified_name(exc)}")


def safe_hook(name: str, hook: Hook | None) -> Hook | None:
    """``hook`` wrapped once, at start-up, so that calling it can never raise."""
    if hook is None:
        return None

    @functools.wraps(hook)
    def contained(*args: Any) -> None:
        try:
            hook(*args)
        except Exception as exc:
            warn_limited(f"hook:{name}", f"{name} raised {qualified_name(exc)}; request unaffected")

    return contained


def error_status(exc: BaseException) -> Status:
    """An ERROR status naming only the exception's class: messages can carry URLs and secrets."""
    return Status(StatusCode.ERROR, qualified_name(exc))


def make_tracer(tracer_provider: TracerProvider | None) -> Tracer:
    """tracewire's tracer from ``tracer_provider`` (``None``: the global provider, resolved
    when the first span starts, so it may be set after this call)."""
    from tracewire import __version__

    if tracer_provider is not None and not isinstance(tracer_provider, TracerProvider):
        raise TypeError(
            "tracer_provider must be an OpenTelemetry TracerProvider or None, "
            f"got {type(tracer_provider).__name__}"
        )
    return get_tracer(INSTRUMENTATION_NAME, __version__, tracer_provider=tracer_provider)


def check_type(name: str, value: object, expected: type | tuple[type, ...], what: str) -> None:
    """``TypeError`` naming the argument unless ``value`` is ``None`` or an ``expected``."""
    if value is not None and not isinstance(value, expected):
        raise TypeError(f"{name} must be {what} or None, got {type(value).__name__}")


def tracer_in(context: Context) -> Tracer | None:
    """The tracer of the middleware serving the request ``context`` belongs to, if any."""
    found = context.get(TRACER_KEY)
    return found if isinstance(found, Tracer) else None

"""Say when a trace is about to break: the silent breakers users hit most, each said once.

Each check is cheap enough for the request path (a set lookup, a flag) and reports once per
process through :func:`tracewire._log.warn_once`, with the setting that fixes it.
``tracewire check`` asks :func:`static_breakers` for the ones that can be seen before any
request arrives.
"""

from __future__ import annotations

from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, get_current_span

from tracewire._log import warn_once
from tracewire.compiled import Compiled

__all__ = [
    "format_not_injected",
    "no_sdk",
    "second_server_span",
    "set_no_sdk_fix",
    "settings_differ",
    "started_nothing",
    "static_breakers",
]


def format_not_injected(name: str, plan: Compiled) -> None:
    """A request arrived in format ``name``, which this service does not send on."""
    warn_once(
        f"breaker:not-injected:{name}",
        f"requests arrive with {name} trace headers, but this service injects only "
        f"{_names(plan)}: downstream services that read only {name} start new traces; add "
        f"{name!r} to the inject list (TRACEWIRE_INJECT / Settings(inject=[...]))",
    )


def second_server_span(other: Span) -> None:
    """Another instrumentation's SERVER span is open around or inside ours."""
    name = getattr(getattr(other, "instrumentation_scope", None), "name", None) or "another"
    warn_once(
        "breaker:second-server-span",
        f"{name} instrumentation also starts a SERVER span for requests tracewire traces, so "
        "each request has two; remove one of them (e.g. the OpenTelemetry contrib middleware)",
    )


NO_SDK_FIX = (
    "call tracewire.sdk.configure(service_name=...) at start-up (or set one yourself), or pass "
    "tracer_provider="
)
_NO_SDK_FIX = [NO_SDK_FIX]


def set_no_sdk_fix(fix: str | None) -> None:
    """What :func:`no_sdk` advises (``tracewire.launcher`` names the launcher's fix); ``None``:
    the usual advice."""
    _NO_SDK_FIX[0] = NO_SDK_FIX if fix is None else fix


def no_sdk() -> None:
    """Spans are no-ops: no SDK ``TracerProvider`` is set."""
    warn_once(
        "breaker:no-sdk",
        f"no OpenTelemetry SDK TracerProvider is set, so no span is recorded; {_NO_SDK_FIX[0]}",
    )


def started_nothing(span: Span, parent: Context) -> bool:
    """Whether ``span`` came from a no-op tracer: no span id, or its parent's (an SDK that
    drops a span still gives it an id of its own)."""
    own = span.get_span_context()
    return not own.is_valid or own.span_id == get_current_span(parent).get_span_context().span_id


def settings_differ(own: Compiled, serving: Compiled) -> None:
    """A client with settings of its own injects other formats than the app it runs in."""
    warn_once(
        "breaker:client-settings",
        f"an outgoing call injects {_names(own)} while the app serving the request uses "
        f"{_names(serving)}; build the client without settings= to use the app's",
    )


def is_foreign_server_span(span: Span, ours: Span | None) -> bool:
    """Whether ``span`` is a recording SERVER span that tracewire did not start."""
    return (
        span is not ours and span.is_recording() and getattr(span, "kind", None) is SpanKind.SERVER
    )


def _names(plan: Compiled) -> str:
    return ", ".join(name for name, _, _ in plan.injectors) or "none"


def static_breakers(
    plan: Compiled, tracer_provider: Any = None, *, check_sdk: bool = True
) -> list[str]:
    """What can be seen to break traces before any request: for ``tracewire check``."""
    found = [
        f"extracts {name} but does not inject it: downstream services that read only {name} "
        f"start new traces (add {name!r} to inject)"
        for name in sorted(plan.not_injected)
    ]
    provider = tracer_provider if tracer_provider is not None else trace.get_tracer_provider()
    if check_sdk and type(provider).__name__ in ("ProxyTracerProvider", "NoOpTracerProvider"):
        found.append(
            "no OpenTelemetry SDK TracerProvider is set (yet): spans are no-ops unless the app "
            "sets one up at start-up (tracewire.sdk.configure)"
        )
    textmap = _global_textmap_breaker(plan)
    if textmap:
        found.append(textmap)
    return found


def _global_textmap_breaker(plan: Compiled) -> str | None:
    try:
        # Importing it builds OpenTelemetry's default from OTEL_PROPAGATORS, which may fail.
        from opentelemetry import propagate
    except Exception as exc:
        return f"OpenTelemetry's own propagation cannot start: {exc}"
    from tracewire.defaults import ServicePropagator

    textmap = propagate.get_global_textmap()
    if isinstance(textmap, ServicePropagator) or set(textmap.fields) == plan.injector.fields:
        return None
    return (
        "OpenTelemetry's global propagator injects "
        f"{', '.join(sorted(textmap.fields)) or 'nothing'}, not what tracewire injects: other "
        "instrumentations (Celery, gRPC, propagate.inject) send other headers; call "
        "tracewire.configure() at start-up"
    )

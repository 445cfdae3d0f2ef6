"""Propagator names, and the composite that combines them under a conflict policy.

One place decides which incoming context becomes the parent when several formats are present:
every adapter (ASGI, WSGI, httpx, requests) goes through ``CompositePropagator``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache
from importlib.metadata import entry_points
from typing import Any, NamedTuple

from opentelemetry.context import Context
from opentelemetry.propagators.textmap import (
    CarrierT,
    Getter,
    Setter,
    TextMapPropagator,
    default_getter,
    default_setter,
)
from opentelemetry.trace import (
    INVALID_SPAN,
    NonRecordingSpan,
    SpanContext,
    get_current_span,
    set_span_in_context,
)

from tracewire._log import warn_limited
from tracewire.propagators import (
    INVALID_KEY,
    B3Propagator,
    BaggagePropagator,
    TraceContextPropagator,
)

__all__ = [
    "BUILTINS",
    "ENTRY_POINT_GROUP",
    "NONE",
    "POLICIES",
    "PROVIDED_BY",
    "CompositePropagator",
    "Extracted",
    "known_names",
    "resolve",
]

ENTRY_POINT_GROUP = "opentelemetry_propagator"

BUILTINS: dict[str, Callable[[], TextMapPropagator]] = {
    "tracecontext": TraceContextPropagator,
    "baggage": BaggagePropagator,
    "b3": lambda: B3Propagator(single_header=True),
    "b3multi": lambda: B3Propagator(single_header=False),
}
NONE = "none"

# Well-known propagators that come from other packages, for a helpful error when missing.
PROVIDED_BY = {
    "jaeger": "opentelemetry-propagator-jaeger",
    "xray": "opentelemetry-propagator-aws-xray",
    "xray-lambda": "opentelemetry-propagator-aws-xray",
    "ottrace": "opentelemetry-propagator-ot-trace",
}

POLICIES = ("first", "last")


@lru_cache(maxsize=1)
def _entry_point_names() -> dict[str, object]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def known_names() -> list[str]:
    """Every name that ``resolve`` accepts: built-ins, ``none``, installed entry points."""
    return sorted({*BUILTINS, NONE, *_entry_point_names()})


def resolve(name: str, setting: str) -> TextMapPropagator:
    """The propagator called ``name``; ``ValueError`` naming ``setting`` if there is none."""
    factory = BUILTINS.get(name)
    if factory is not None:
        return factory()
    entry_point = _entry_point_names().get(name)
    if entry_point is not None:
        try:
            loaded = entry_point.load()  # type: ignore[attr-defined]
            propagator = loaded()
        except Exception as exc:
            raise ValueError(
                f"propagator {name!r} in {setting} could not be loaded: {exc!r}"
            ) from exc
        if not isinstance(propagator, TextMapPropagator):
            raise TypeError(
                f"propagator {name!r} in {setting} is not a TextMapPropagator "
                f"(got {type(propagator).__name__})"
            )
        return propagator
    if name in PROVIDED_BY:
        raise ValueError(
            f"propagator {name!r} in {setting} is not installed; "
            f"install the package {PROVIDED_BY[name]!r} to use it"
        )
    raise ValueError(f"unknown propagator {name!r} in {setting}; known: {', '.join(known_names())}")


class Extracted(NamedTuple):
    """What the server side needs from the incoming headers.

    Attributes:
        context: the context to start the server span in (parent + baggage + format state).
        format: name of the propagator that supplied the parent span context, or ``None``.
        conflicts: span contexts of *other* traces found in the same request (for span links).
        parent: the parent span context that ``context`` carries, or ``None``.
        invalid: the first format whose header was present but unusable, if any (as far as
            its propagator says: tracewire's own do).
    """

    context: Context
    format: str | None
    conflicts: tuple[SpanContext, ...]
    parent: SpanContext | None = None
    invalid: str | None = None


_EMPTY: tuple[SpanContext, ...] = ()


class _Merge:
    """The running result of one extraction: the context so far and the parent it carries."""

    __slots__ = ("before", "conflicts", "ctx", "fmt", "invalid", "winner")

    def __init__(self, ctx: Context, empty: bool) -> None:
        self.ctx = ctx
        # The span in ``ctx``, tracked rather than looked up again for every propagator.
        self.before = INVALID_SPAN if empty else get_current_span(ctx)
        self.winner: SpanContext | None = None
        self.fmt: str | None = None
        self.invalid: str | None = None
        self.conflicts: list[SpanContext] = []

    def add(self, name: str, new_ctx: Context, last: bool) -> None:
        """Fold in what propagator ``name`` returned (a context other than ``self.ctx``)."""
        found = get_current_span(new_ctx)
        if found is self.before:  # it added no span context (e.g. baggage): keep the rest
            if self.invalid is None and new_ctx.get(INVALID_KEY) and not self.ctx.get(INVALID_KEY):
                self.invalid = name
            self.ctx = new_ctx
            return
        span_context = found.get_span_context()
        winner = self.winner
        if winner is None:  # the first span context, valid or not, is taken as it is
            self.ctx, self.before = new_ctx, found
            if span_context.is_valid:
                self.winner, self.fmt = span_context, name
            return
        if span_context.is_valid and (last or span_context.trace_id != winner.trace_id):
            if span_context.trace_id != winner.trace_id:
                self.conflicts.append(winner if last else span_context)
            if last:
                self.ctx, self.before, self.winner, self.fmt = new_ctx, found, span_context, name
                return
        elif span_context.is_valid and span_context.trace_state and not winner.trace_state:
            # The same trace in another format may lend the tracestate the winner lacks.
            self.winner = SpanContext(
                winner.trace_id,
                winner.span_id,
                is_remote=True,
                trace_flags=winner.trace_flags,
                trace_state=span_context.trace_state,
            )
            self.before = NonRecordingSpan(self.winner)
        # An invalid or losing span context never replaces the parent; the rest is kept.
        self.ctx = set_span_in_context(self.before, new_ctx)

    def result(self) -> Extracted:
        if not self.conflicts:
            return Extracted(self.ctx, self.fmt, _EMPTY, self.winner, self.invalid)
        # Only other traces count, once each (under "last" an early loser may share the final
        # winner's trace; two B3 propagators read the same headers).
        trace_id = self.winner.trace_id if self.winner is not None else 0
        unique: dict[tuple[int, int], SpanContext] = {}
        for other in self.conflicts:
            if other.trace_id != trace_id:
                unique.setdefault((other.trace_id, other.span_id), other)
        return Extracted(self.ctx, self.fmt, tuple(unique.values()), self.winner, self.invalid)


class CompositePropagator(TextMapPropagator):
    """Runs named propagators in order, resolving disagreements by ``policy``.

    ``"first"``: the first propagator that yields a valid span context supplies the parent; a
    later one that names another trace is reported as a conflict; one that names the same
    trace may only contribute a ``tracestate`` the winner lacks. ``"last"``: each propagator
    overwrites the previous one, as OpenTelemetry's own composite does; a parent it replaces
    that names another trace is reported as a conflict.

    Under both policies an invalid span context never replaces a valid one, and everything else
    a propagator adds to the context (baggage, format state) is kept.

    Usage::

        composite = CompositePropagator([("tracecontext", TraceContextPropagator())],
                                        [("tracecontext", TraceContextPropagator())])
        extracted = composite.extract_detailed(scope["headers"], asgi_getter)

    Args:
        extractors: ``(name, propagator)`` pairs tried in order on extract.
        injectors: ``(name, propagator)`` pairs that all write on inject.
        policy: ``"first"`` (default) or ``"last"``.
    """

    def __init__(
        self,
        extractors: Sequence[tuple[str, TextMapPropagator]],
        injectors: Sequence[tuple[str, TextMapPropagator]],
        policy: str = "first",
    ) -> None:
        if policy not in POLICIES:
            raise ValueError(f"unknown extract policy {policy!r}; known: {', '.join(POLICIES)}")
        self.extractors = tuple(extractors)
        self.injectors = tuple(injectors)
        self.policy = policy
        self._fields = frozenset(f for _, p in self.injectors for f in p.fields)
        # Every header name extraction may read, when all extractors say (ours do); lets an
        # adapter hand the propagators only those headers. None: unknown, read them all.
        names: set[str] | None = set()
        for _, propagator in self.extractors:
            known = getattr(propagator, "extract_fields", None)
            if names is None or not isinstance(known, frozenset):
                names = None
                break
            names.update(known)
        self.extract_fields: frozenset[str] | None = None if names is None else frozenset(names)
        # With at most one format that carries a span context (the others are baggage), no
        # two parents can disagree: extraction is a plain chain, with nothing to merge.
        spans = [name for name, p in self.extractors if not isinstance(p, BaggagePropagator)]
        self._single: str | None = spans[0] if len(spans) == 1 else None
        self._chain = len(spans) <= 1

    def extract_detailed(
        self,
        carrier: CarrierT,
        getter: Getter[CarrierT] = default_getter,
        context: Context | None = None,
    ) -> Extracted:
        """Extract into ``context`` (default: a new, empty one, never the current one)."""
        if self._chain and (context is None or get_current_span(context) is INVALID_SPAN):
            return self.extract_fresh(carrier, getter, Context() if context is None else context)
        merge = _Merge(Context() if context is None else context, context is None)
        last = self.policy == "last"
        for name, propagator in self.extractors:
            try:
                found = propagator.extract(carrier, merge.ctx, getter)
            except Exception as exc:
                # A third-party propagator's bug costs only its own format, not the others'.
                warn_limited(
                    f"propagator:{name}", f"propagator {name!r} raised {type(exc).__name__}"
                )
                continue
            if found is not merge.ctx:
                merge.add(name, found, last)
        return merge.result()

    def extract_fresh(self, carrier: Any, getter: Getter[Any], ctx: Context) -> Extracted:
        """``extract_detailed`` into ``ctx``, a context known to hold no span (a middleware's
        base context): the per-request entry point of the server side."""
        if not self._chain:
            return self.extract_detailed(carrier, getter, ctx)
        for name, propagator in self.extractors:
            try:
                ctx = propagator.extract(carrier, ctx, getter)
            except Exception as exc:
                warn_limited(
                    f"propagator:{name}", f"propagator {name!r} raised {type(exc).__name__}"
                )
        span_context = get_current_span(ctx).get_span_context()
        if span_context.is_valid:
            return Extracted(ctx, self._single, _EMPTY, span_context)
        invalid = self._single if ctx.get(INVALID_KEY) else None
        return Extracted(ctx, None, _EMPTY, None, invalid)

    def extract(
        self,
        carrier: CarrierT,
        context: Context | None = None,
        getter: Getter[CarrierT] = default_getter,
    ) -> Context:
        return self.extract_detailed(carrier, getter, context).context

    def inject(
        self,
        carrier: CarrierT,
        context: Context | None = None,
        setter: Setter[CarrierT] = default_setter,
    ) -> None:
        for name, propagator in self.injectors:
            try:
                propagator.inject(carrier, context, setter)
            except Exception as exc:
                warn_limited(
                    f"propagator:{name}", f"propagator {name!r} raised {type(exc).__name__}"
                )

    @property
    def fields(self) -> set[str]:
        return set(self._fields)

    def __repr__(self) -> str:
        return (
            f"CompositePropagator(extract={[n for n, _ in self.extractors]}, "
            f"inject={[n for n, _ in self.injectors]}, policy={self.policy!r})"
        )

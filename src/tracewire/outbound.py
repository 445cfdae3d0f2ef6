"""What crosses the edge outward: which trace headers an outgoing call (or message) carries.

One rule for every outgoing path (the httpx and requests hooks, their global switches, and
:func:`tracewire.inject` for messages):

* ``inject_to`` picks the propagators by destination (B3 to the legacy mesh, W3C elsewhere,
  ``none`` to the internet); a destination it does not list gets the ``inject`` list;
* ``propagate_to`` decides whether the destination gets trace headers at all, and
  ``baggage_to`` whether it gets ``baggage`` (the context is injected with its baggage
  cleared otherwise);
* with ``tracestate_key`` set, our own ``tracestate`` member goes at the left of the list
  (W3C Trace Context, "Mutating the tracestate Field": an updated entry moves to the left;
  at most 32 entries, the right-most dropped), so the next tracewire service of the same
  system recognises the caller;
* a propagator whose header the carrier already has is skipped (the caller's value is sent
  unchanged), and one that raises takes back what it wrote.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any, NamedTuple

from opentelemetry.baggage import clear as clear_baggage
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Setter, TextMapPropagator
from opentelemetry.trace import NonRecordingSpan, SpanContext, get_current_span, set_span_in_context

from tracewire._instrument import fault
from tracewire._log import warn_limited
from tracewire.matching import ORIGIN_KEY, HostMatcher, Origin
from tracewire.propagators.tracecontext import MAX_TRACESTATE_MEMBERS, _ValidatedTraceState

__all__ = [
    "Destination",
    "Injector",
    "Outbound",
    "Recorder",
    "Route",
    "prepare",
    "with_our_member",
    "write",
]

Injector = tuple[str, TextMapPropagator, frozenset[str]]


class Destination(NamedTuple):
    """Where a call goes: its host, its port (``None``: the scheme's default), its scheme."""

    host: str
    port: int | None
    scheme: str | None


class Outbound(NamedTuple):
    """The context to inject for one destination, with the propagators that may write it."""

    context: Context
    injectors: tuple[Injector, ...]
    fields: frozenset[str]


class Route(NamedTuple):
    """One ``inject_to`` entry, compiled."""

    hosts: HostMatcher
    injectors: tuple[Injector, ...]
    fields: frozenset[str]


def _origin(parent: Context) -> Origin | None:
    found = parent.get(ORIGIN_KEY)
    return found if isinstance(found, tuple) else None


def prepare(plan: Any, context: Context, parent: Context, to: Destination) -> Outbound | None:
    """What goes to ``to`` from ``context`` (``parent``: the caller's, for ``same-origin``);
    ``None`` when nothing may go there."""
    injectors, fields = plan.injectors, plan.inject_fields
    for route in plan.routes:
        if route.hosts(to.host, to.port, to.scheme):
            injectors, fields = route.injectors, route.fields
            break
    if not injectors:
        return None
    if not plan.open_to_all:
        origin = _origin(parent) if plan.wants_origin else None
        if not plan.may_propagate(to.host, to.port, to.scheme, origin):
            return None
        if not plan.may_send_baggage(to.host, to.port, to.scheme, origin):
            context = clear_baggage(context)
    if plan.tracestate_key is not None:
        context = with_our_member(context, plan.tracestate_key)
    return Outbound(context, injectors, fields)


def with_our_member(context: Context, key: str) -> Context:
    """``context`` whose span context carries ``key=<span id>`` at the left of tracestate."""
    span_context = get_current_span(context).get_span_context()
    if not span_context.is_valid:
        return context
    others = [(k, v) for k, v in span_context.trace_state.items() if k != key]
    entries = [(key, f"{span_context.span_id:016x}"), *others][:MAX_TRACESTATE_MEMBERS]
    ours = SpanContext(
        span_context.trace_id,
        span_context.span_id,
        is_remote=span_context.is_remote,
        trace_flags=span_context.trace_flags,
        trace_state=_ValidatedTraceState(entries),
    )
    return set_span_in_context(NonRecordingSpan(ours), context)


class Recorder(Setter[Any]):
    """Writes through ``setter``, remembering the keys; ``remove(carrier, keys)`` takes them
    back (after a propagator raised, or once the request was sent)."""

    __slots__ = ("keys", "remove", "setter")

    def __init__(self, setter: Setter[Any], remove: Callable[[Any, list[str]], None]) -> None:
        self.setter = setter
        self.remove = remove
        self.keys: list[str] = []

    def set(self, carrier: Any, key: str, value: str) -> None:
        self.setter.set(carrier, key, value)
        self.keys.append(key)

    def take_back(self, carrier: Any, start: int = 0) -> None:
        self.remove(carrier, self.keys[start:])
        del self.keys[start:]


def write(
    carrier: Any,
    outbound: Outbound,
    recorder: Recorder,
    present: Collection[str],
    *,
    quiet: bool = False,
) -> None:
    """Inject ``outbound`` into ``carrier`` through ``recorder``.

    ``present`` are the lowercase names the carrier already has: a propagator that would
    write one of them is skipped. ``quiet`` skips the note about the caller's own headers.
    """
    taken = outbound.fields.intersection(present) if present else frozenset()
    for name, propagator, fields in outbound.injectors:
        if taken and not taken.isdisjoint(fields):
            if not quiet:
                warn_limited(
                    f"client-explicit-header:{name}",
                    f"outgoing request already has a {min(taken & fields)!r} header; tracewire "
                    f"does not inject {name} for it and sends the caller's headers unchanged",
                )
            continue
        done = len(recorder.keys)
        try:
            propagator.inject(carrier, outbound.context, recorder)
        except Exception as exc:
            # One broken propagator must not cost the others: take back what it set.
            fault(f"client-inject:{name}", exc)
            recorder.take_back(carrier, done)

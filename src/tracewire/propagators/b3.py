"""B3 propagation, single (``b3``) and multi (``X-B3-*``) header forms.

Follows the B3 specification and the "B3 Requirements" of the OpenTelemetry specification.
Differences from ``opentelemetry-propagator-b3``:

* ids must be lowercase hex, as B3 requires;
* the debug flag is preserved and sent on (``-d`` / ``X-B3-Flags: 1``), not just mapped to sampled;
* "defer" (no sampling state) stays distinct from "deny" (``0``): a deferred decision that this
  service did not turn into "sampled" is sent on as deferred again;
* ``b3: 0`` alone (deny, no ids) makes the request unsampled instead of being ignored;
* a repeated ``X-B3-*`` header: the first value wins, as the B3 specification says, also when
  a WSGI server or requests joined the repeats with ``,`` into one value; a repeated ``b3``
  single header is ignored (the specification says nothing of repeats there);
* nothing from the header is logged.

When B3 headers are present but give no usable context (malformed, a repeated ``b3`` header,
a sampling state other than deny without ids), ``extract`` returns the context with
``tracewire.propagators.INVALID_KEY`` set to ``True`` and no parent, so the request starts a
new trace. The key is set on that path only.
"""

from __future__ import annotations

import random

from opentelemetry.context import Context, create_key, get_value, set_value
from opentelemetry.propagators.textmap import (
    CarrierT,
    Getter,
    Setter,
    TextMapPropagator,
    default_getter,
    default_setter,
)
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    TraceFlags,
    get_current_span,
    set_span_in_context,
)

from tracewire._log import warn_limited
from tracewire.propagators import INVALID_KEY
from tracewire.propagators._hex import first, is_lower_hex, single

__all__ = [
    "DEBUG_KEY",
    "DEFER_KEY",
    "FLAGS",
    "SAMPLED",
    "SINGLE",
    "SPAN_ID",
    "TRACE_ID",
    "B3Propagator",
    "parse_multi",
    "parse_single",
]

SINGLE = "b3"
TRACE_ID = "x-b3-traceid"
SPAN_ID = "x-b3-spanid"
SAMPLED = "x-b3-sampled"
FLAGS = "x-b3-flags"

# Context keys holding the trace id that arrived with B3 debug / with a deferred decision.
DEBUG_KEY = create_key("tracewire-b3-debug")
DEFER_KEY = create_key("tracewire-b3-defer")

_ACCEPT, _DENY, _DEBUG, _DEFER = "1", "0", "d", ""
_MULTI_SAMPLED = {"1": _ACCEPT, "true": _ACCEPT, "0": _DENY, "false": _DENY}


def _trace_id(value: str) -> int:
    """The trace id (64-bit ids left-padded to 128) or 0 when invalid."""
    if len(value) not in (16, 32) or not is_lower_hex(value):
        return 0
    return int(value, 16)


def _span_id(value: str) -> int:
    if len(value) != 16 or not is_lower_hex(value):
        return 0
    return int(value, 16)


def parse_single(value: str) -> tuple[int, int, str] | None:
    """``(trace_id, span_id, state)`` from a ``b3`` value; ids are 0 for a bare "deny"."""
    if value == _DENY:
        return 0, 0, _DENY
    parts = value.split("-")
    if not 2 <= len(parts) <= 4:
        return None
    trace_id, span_id = _trace_id(parts[0]), _span_id(parts[1])
    state = parts[2] if len(parts) > 2 else _DEFER
    if not trace_id or not span_id or state not in (_ACCEPT, _DENY, _DEBUG, _DEFER):
        return None
    if len(parts) == 4 and not _span_id(parts[3]):
        return None
    if len(parts) > 2 and not state:
        return None
    return trace_id, span_id, state


def parse_multi(
    trace_id: str | None, span_id: str | None, sampled: str | None, flags: str | None
) -> tuple[int, int, str] | None:
    """``(trace_id, span_id, state)`` from ``X-B3-*`` values; ids are 0 for a bare decision."""
    if flags == "1":
        state = _DEBUG
    elif sampled is None:
        state = _DEFER
    else:
        found = _MULTI_SAMPLED.get(sampled.lower())
        if found is None:
            return None
        state = found
    if trace_id is None and span_id is None:
        return (0, 0, _DENY) if state == _DENY else None
    tid = _trace_id(trace_id or "")
    sid = _span_id(span_id or "")
    if not tid or not sid:
        return None
    return tid, sid, state


def _read(carrier: CarrierT, getter: Getter[CarrierT]) -> tuple[tuple[int, int, str] | None, bool]:
    """The parsed B3 context (single header, else multi) and whether any B3 header was there."""
    values = getter.get(carrier, SINGLE)
    if values:
        header = single(values)
        parsed = parse_single(header) if header is not None else None
        if parsed is not None:
            return parsed, True
        warn_limited("b3", "ignored an invalid b3 header")
    trace_values = getter.get(carrier, TRACE_ID)
    span_values = getter.get(carrier, SPAN_ID)
    sampled_values = getter.get(carrier, SAMPLED)
    flag_values = getter.get(carrier, FLAGS)
    if not (trace_values or span_values or sampled_values or flag_values):
        return None, bool(values)
    # "When extracting state headers, the first value wins" (B3 specification).
    parsed = parse_multi(
        first(trace_values), first(span_values), first(sampled_values), first(flag_values)
    )
    if parsed is None:
        warn_limited("b3", "ignored invalid X-B3-* headers")
    return parsed, True


class B3Propagator(TextMapPropagator):
    """B3 propagator. Extracts the single header, else the multi headers; injects one form.

    Args:
        single_header: inject ``b3`` (default, as OpenTelemetry recommends) instead of
            ``X-B3-TraceId``/``X-B3-SpanId``/``X-B3-Sampled``/``X-B3-Flags``.
    """

    def __init__(self, single_header: bool = True) -> None:
        self.single_header = single_header

    def extract(
        self,
        carrier: CarrierT,
        context: Context | None = None,
        getter: Getter[CarrierT] = default_getter,
    ) -> Context:
        """The B3 parent (single header first, then multi) in ``context`` (default: empty).

        Headers present but unusable: ``context`` with ``INVALID_KEY`` set to ``True``.
        """
        if context is None:
            context = Context()
        parsed, present = _read(carrier, getter)
        if parsed is None:
            return set_value(INVALID_KEY, True, context) if present else context
        trace_id, span_id, state = parsed
        if not trace_id:
            # A bare "deny": no ids to continue, but the caller asked for no sampling. A
            # not-sampled remote parent with fresh ids makes parent-based samplers drop it.
            trace_id, span_id = random.getrandbits(128), random.getrandbits(64) or 1
        flags = TraceFlags.SAMPLED if state in (_ACCEPT, _DEBUG) else TraceFlags.DEFAULT
        if state == _DEBUG:
            context = set_value(DEBUG_KEY, trace_id, context)
        elif state == _DEFER:
            context = set_value(DEFER_KEY, trace_id, context)
        span_context = SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(flags))
        return set_span_in_context(NonRecordingSpan(span_context), context)

    def inject(
        self,
        carrier: CarrierT,
        context: Context | None = None,
        setter: Setter[CarrierT] = default_setter,
    ) -> None:
        span_context = get_current_span(context).get_span_context()
        if not span_context.is_valid:
            return
        trace_id = span_context.trace_id
        if get_value(DEBUG_KEY, context) == trace_id:
            state = _DEBUG
        elif span_context.trace_flags.sampled:
            state = _ACCEPT
        elif get_value(DEFER_KEY, context) == trace_id:
            state = _DEFER
        else:
            state = _DENY
        tid, sid = f"{trace_id:032x}", f"{span_context.span_id:016x}"
        if self.single_header:
            setter.set(carrier, SINGLE, f"{tid}-{sid}-{state}" if state else f"{tid}-{sid}")
            return
        setter.set(carrier, TRACE_ID, tid)
        setter.set(carrier, SPAN_ID, sid)
        if state == _DEBUG:
            setter.set(carrier, FLAGS, "1")
        elif state:
            setter.set(carrier, SAMPLED, state)

    @property
    def extract_fields(self) -> frozenset[str]:
        """Every header ``extract`` may read (``fields`` lists what ``inject`` writes)."""
        return frozenset((SINGLE, TRACE_ID, SPAN_ID, SAMPLED, FLAGS))

    @property
    def fields(self) -> set[str]:
        if self.single_header:
            return {SINGLE}
        return {TRACE_ID, SPAN_ID, SAMPLED, FLAGS}

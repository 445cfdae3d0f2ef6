"""W3C Trace Context (``traceparent`` / ``tracestate``), Level 2 rules.

Differences from ``opentelemetry.trace.propagation.tracecontext``:

* unknown flag bits are never sent on (only ``sampled`` and ``random-trace-id``);
* the ``random-trace-id`` flag of an incoming trace is carried to the next hop, also with SDKs
  that rebuild the flags of child spans without it;
* a repeated ``traceparent`` header is invalid, also when a WSGI server joined the repeats
  with ``,`` into one value;
* a ``traceparent`` of a higher version longer than 8192 characters is invalid;
* ``tracestate`` keys follow the full grammar (digits first, ``@`` anywhere), duplicated keys
  keep the left-most entry, the 32-member limit counts the members received (before
  duplicates are removed), and nothing about a bad header is logged per request.

When a ``traceparent`` is present but invalid, ``extract`` returns the context with
``tracewire.propagators.INVALID_KEY`` set to ``True`` and no parent, so the request starts a
new trace; the key is set on that path only. A bad ``tracestate`` never sets it.

Both parsers take time linear in the header's length: a ``traceparent`` is judged on its first
56 characters (plus one scan for ``,`` in a higher version's tail), a ``tracestate`` stops at
its first invalid member or at its 33rd member.
"""

from __future__ import annotations

from collections.abc import Iterable

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
    TraceState,
    get_current_span,
    set_span_in_context,
)

from tracewire._log import warn_limited
from tracewire.propagators import INVALID_KEY
from tracewire.propagators._hex import single

__all__ = [
    "FLAG_RANDOM",
    "FLAG_SAMPLED",
    "MAX_TRACEPARENT_LENGTH",
    "MAX_TRACESTATE_LENGTH",
    "MAX_TRACESTATE_MEMBERS",
    "RANDOM_TRACE_ID_KEY",
    "TRACEPARENT",
    "TRACEPARENT_LENGTH",
    "TRACESTATE",
    "TraceContextPropagator",
    "format_tracestate",
    "parse_traceparent",
    "parse_tracestate",
]

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"

FLAG_SAMPLED = 0x01
FLAG_RANDOM = 0x02
_KNOWN_FLAGS = FLAG_SAMPLED | FLAG_RANDOM

# Version 00 is exactly this long; a higher version at least this long.
TRACEPARENT_LENGTH = 55
# The spec sets no maximum for higher versions (their fields are "additive") and lets a
# service "only disallow prohibitively large headers"; 8192 is the field-size limit of common
# HTTP servers (gunicorn's limit_request_field_size is 8190), so nothing longer crossed a hop.
MAX_TRACEPARENT_LENGTH = 8192

# Counted on the non-empty members received, before duplicates are removed.
MAX_TRACESTATE_MEMBERS = 32
# What we send on at most; the spec asks for at least 512 characters to be propagated.
MAX_TRACESTATE_LENGTH = 8192
_LONG_MEMBER = 128

_KEY_FIRST = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")
_KEY_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789_-*/@"

# Context key holding the trace id whose incoming traceparent had the random-trace-id flag.
# The SDK rebuilds trace flags for each child span, so the flag is kept beside the span.
RANDOM_TRACE_ID_KEY = create_key("tracewire-w3c-random-trace-id")


class _ValidatedTraceState(TraceState):
    """A ``TraceState`` built from entries this module already validated.

    OpenTelemetry's own constructor checks keys against an older grammar (it rejects ``foo@``
    and ``foo@@bar``) and logs every rejected entry with its raw value.
    """

    def __init__(self, entries: Iterable[tuple[str, str]]) -> None:
        super().__init__()
        self._dict = dict(entries)


# TraceState is immutable: one empty instance serves every request without a tracestate.
_EMPTY_STATE = _ValidatedTraceState(())


class _LazyTraceState(TraceState):
    """A ``TraceState`` parsed from its header fields the first time something reads it.

    Most requests never read their caller's tracestate (it is only sent on, if at all, and
    exported in the background), so the parse is not paid on the request path. An invalid
    list reads as empty, exactly as if it had been dropped at extraction.
    """

    def __init__(self, values: list[str]) -> None:  # no super().__init__(): nothing to check
        self._values: list[str] | None = values
        self._parsed: dict[str, str] | None = None

    @property
    def _dict(self) -> dict[str, str]:  # type: ignore[override]
        parsed = self._parsed
        if parsed is None:
            entries = parse_tracestate(self._values or [])
            if entries is None:
                warn_limited("tracestate", "dropped an invalid tracestate header")
            parsed = self._parsed = dict(entries or ())
            self._values = None
        return parsed


# Whether this API's TraceFlags carry the random-trace-id bit to child spans themselves (the
# SDK then keeps it); older ones need the context key below.
_FLAGS_KEEP_RANDOM = hasattr(TraceFlags, "RANDOM_TRACE_ID")


def _fields(value: str) -> bytes | None:
    """The 26 bytes of version, trace id, parent id and flags, if the text is well formed."""
    if len(value) < 55 or value[2] != "-" or value[35] != "-" or value[52] != "-":
        return None
    # The four fields without their dashes: 52 characters, unless a field held a "-".
    digits = value[:55].replace("-", "")
    if len(digits) != 52:
        return None
    # Lowercase hex only: fromhex() rejects other characters, and hex() gives back the same
    # text only if there was no uppercase digit and no whitespace (which fromhex() skips).
    try:
        raw = bytes.fromhex(digits)
    except ValueError:
        return None
    return raw if raw.hex() == digits else None


def parse_traceparent(value: str) -> tuple[int, int, int] | None:
    """``(trace_id, span_id, flags)`` from one ``traceparent`` value, or ``None`` if invalid.

    ``flags`` are the raw 8 bits; the caller keeps only the ones it knows.
    """
    raw = _fields(value)
    if raw is None or raw[0] == 0xFF:
        return None
    # A later version may append "-..." fields; a "," there means a server joined two
    # traceparent fields into one value, which is a repeated header, so invalid.
    if len(value) > TRACEPARENT_LENGTH and (
        raw[0] == 0
        or value[TRACEPARENT_LENGTH] != "-"
        or len(value) > MAX_TRACEPARENT_LENGTH
        or "," in value
    ):
        return None
    trace_id = int.from_bytes(raw[1:17], "big")
    span_id = int.from_bytes(raw[17:25], "big")
    if not trace_id or not span_id:
        return None
    return trace_id, span_id, raw[25]


def parse_tracestate(values: list[str]) -> list[tuple[str, str]] | None:
    """The entries of a ``tracestate`` list (all header fields joined), or ``None`` if invalid.

    One invalid member, or more than ``MAX_TRACESTATE_MEMBERS`` non-empty members as received
    (duplicates included), makes the whole list unusable; a duplicated key keeps the left-most.
    """
    entries: list[tuple[str, str]] = []
    seen: set[str] = set()
    received = 0
    text = values[0] if len(values) == 1 else ",".join(values)
    for raw in text.split(","):
        member = raw.strip(" \t")
        if not member:
            continue
        received += 1
        if received > MAX_TRACESTATE_MEMBERS:
            return None
        key, eq, val = member.partition("=")
        if (
            not eq
            or not 0 < len(key) <= 256
            or key[0] not in _KEY_FIRST
            or key.strip(_KEY_CHARS)
            or not 0 < len(val) <= 256
            or "=" in val
            or val[-1] == " "
            or not val.isascii()
            or not val.isprintable()
        ):
            return None
        if key in seen:
            continue
        seen.add(key)
        entries.append((key, val))
    return entries


def format_tracestate(state: TraceState) -> str:
    """Serialise ``state``, truncating whole entries past ``MAX_TRACESTATE_LENGTH``.

    At most 32 entries are sent. When the text is too long, entries longer than 128 characters
    go first, then entries from the right; both passes start at the right because the left-most
    entries are the most recently updated ones.
    """
    members = [f"{key}={value}" for key, value in state.items()][:MAX_TRACESTATE_MEMBERS]
    header = ",".join(members)
    if len(header) <= MAX_TRACESTATE_LENGTH:
        return header
    size = len(header)
    keep = [True] * len(members)
    for i in range(len(members) - 1, -1, -1):
        if size <= MAX_TRACESTATE_LENGTH:
            break
        if len(members[i]) > _LONG_MEMBER:
            keep[i] = False
            size -= len(members[i]) + 1
    for i in range(len(members) - 1, -1, -1):
        if size <= MAX_TRACESTATE_LENGTH:
            break
        if keep[i]:
            keep[i] = False
            size -= len(members[i]) + 1
    return ",".join(m for m, k in zip(members, keep, strict=True) if k)


class TraceContextPropagator(TextMapPropagator):
    """Extracts and injects W3C ``traceparent`` and ``tracestate``.

    ``extract`` of a present but invalid ``traceparent`` (or of a repeated one) returns the
    context with ``INVALID_KEY`` set to ``True`` and no parent: a new trace starts.
    """

    def extract(
        self,
        carrier: CarrierT,
        context: Context | None = None,
        getter: Getter[CarrierT] = default_getter,
    ) -> Context:
        if context is None:
            context = Context()
        values = getter.get(carrier, TRACEPARENT)
        if not values:
            return context
        header = single(values)
        parsed = parse_traceparent(header) if header is not None else None
        if parsed is None:
            warn_limited("traceparent", "ignored an invalid traceparent header; new trace")
            return set_value(INVALID_KEY, True, context)
        trace_id, span_id, flags = parsed
        state_values = getter.get(carrier, TRACESTATE)
        span_context = SpanContext(
            trace_id,
            span_id,
            True,  # is_remote
            # Unknown bits are dropped here so that nothing downstream can send them on.
            TraceFlags(flags & _KNOWN_FLAGS),
            _LazyTraceState(state_values) if state_values else _EMPTY_STATE,
        )
        if flags & FLAG_RANDOM and not _FLAGS_KEEP_RANDOM:
            # Older SDKs build a child's flags from the sampling decision alone.
            context = set_value(RANDOM_TRACE_ID_KEY, trace_id, context)
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
        flags = span_context.trace_flags & _KNOWN_FLAGS
        if get_value(RANDOM_TRACE_ID_KEY, context) == span_context.trace_id:
            flags |= FLAG_RANDOM
        setter.set(
            carrier,
            TRACEPARENT,
            f"00-{span_context.trace_id:032x}-{span_context.span_id:016x}-{flags:02x}",
        )
        if span_context.trace_state:
            setter.set(carrier, TRACESTATE, format_tracestate(span_context.trace_state))

    @property
    def extract_fields(self) -> frozenset[str]:
        """Every header ``extract`` may read (``fields`` lists what ``inject`` writes)."""
        return frozenset((TRACEPARENT, TRACESTATE))

    @property
    def fields(self) -> set[str]:
        return {TRACEPARENT, TRACESTATE}

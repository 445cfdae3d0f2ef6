"""W3C Trace Context: every traceparent/tracestate rule, valid and invalid, on every carrier."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.context import Context, get_value
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from tests.test_carriers import SHAPES, outgoing_carriers, sent_headers, shape_names
from tracewire.propagators import INVALID_KEY, TraceContextPropagator
from tracewire.propagators import tracecontext as tc
from tracewire.propagators.tracecontext import format_tracestate, parse_traceparent

TID = "4bf92f3577b34da6a3ce929d0e0e4736"
SID = "00f067aa0ba902b7"
TP = f"00-{TID}-{SID}-01"
PROPAGATOR = TraceContextPropagator()


def extract(headers: list[tuple[str, str]], shape: str = "asgi") -> tuple[SpanContext, Context]:
    carrier, getter = SHAPES[shape](headers)
    context = PROPAGATOR.extract(carrier, getter=getter)
    return trace.get_current_span(context).get_span_context(), context


def inject(context: Context | None) -> dict[str, str]:
    out: dict[str, str] = {}
    PROPAGATOR.inject(out, context)
    return out


# ------------------------------------------------------------------------------ traceparent

VALID_TRACEPARENTS = [
    # (id, value, sampled, random)
    ("sampled", TP, True, False),
    ("not-sampled", f"00-{TID}-{SID}-00", False, False),
    ("random-flag", f"00-{TID}-{SID}-02", False, True),
    ("both-flags", f"00-{TID}-{SID}-03", True, True),
    ("unknown-flag-bits", f"00-{TID}-{SID}-ff", True, True),
    ("unknown-bits-only", f"00-{TID}-{SID}-fc", False, False),
    ("ows-around", f" \t{TP} \t", True, False),
    ("higher-version-exact-length", f"01-{TID}-{SID}-01", True, False),
    ("higher-version-dash-more", f"01-{TID}-{SID}-01-what-the-future-holds", True, False),
    ("higher-version-dash-only", f"cc-{TID}-{SID}-00-", False, False),
    ("version-fe", f"fe-{TID}-{SID}-01-x", True, False),
    ("max-ids", f"00-{'f' * 32}-{'f' * 16}-01", True, False),
    # Higher versions: no maximum in the spec but "prohibitively large"; ours is 8192.
    ("higher-version-8192", f"01-{TID}-{SID}-01-" + "x" * (8192 - 56), True, False),
]

INVALID_TRACEPARENTS = [
    ("empty", ""),
    ("garbage", "not-a-traceparent"),
    ("short-54", TP[:-1]),
    ("version-ff", f"ff-{TID}-{SID}-01"),
    ("version-ff-long", f"ff-{TID}-{SID}-01-x"),
    ("uppercase-version", f"0A-{TID}-{SID}-01"),
    ("uppercase-trace-id", f"00-{TID.upper()}-{SID}-01"),
    ("uppercase-span-id", f"00-{TID}-{SID.upper()}-01"),
    ("uppercase-flags", f"00-{TID}-{SID}-0A"),
    ("zero-trace-id", f"00-{'0' * 32}-{SID}-01"),
    ("zero-span-id", f"00-{TID}-{'0' * 16}-01"),
    ("v00-trailing-dash", f"{TP}-"),
    ("v00-trailing-data", f"{TP}-extra"),
    ("v00-trailing-char", f"{TP}x"),
    ("higher-version-no-dash", f"01-{TID}-{SID}-01x"),
    ("higher-version-short", f"01-{TID}-{SID}-0"),
    ("higher-version-joined", f"01-{TID}-{SID}-01-a,01-{TID}-{SID}-01"),
    ("bad-separator", f"00_{TID}-{SID}-01"),
    ("short-trace-id", f"00-{TID[:-1]}-{SID}0-01"),
    ("long-trace-id", f"00-{TID}0-{SID[:-1]}-01"),
    ("non-hex", f"00-{TID[:-1]}g-{SID}-01"),
    ("non-ascii", f"00-{TID[:-1]}\u00e9-{SID}-01"),
    ("inner-space", f"00-{TID[:-1]} -{SID}-01"),
    ("superscript-digit", f"00-{TID[:-1]}\u00b2-{SID}-01"),
    ("dash-inside-field", f"00-{TID[:-1]}--{SID[1:]}-01"),
    ("mixed-case", f"00-{TID[:-1]}A-{SID}-01"),
    ("version-one-digit", f"0-{TID}-{SID}-01-"),
    ("flags-one-digit", f"00-{TID}-{SID}-1"),
    ("v00-56-hex-characters", TP + "0"),
    ("higher-version-8193", f"01-{TID}-{SID}-01-" + "x" * (8193 - 56)),
    ("higher-version-100k", f"01-{TID}-{SID}-01-" + "x" * 100_000),
    ("v00-100k", TP + "0" * 100_000),
]


@pytest.mark.parametrize("shape", shape_names)
@pytest.mark.parametrize(
    ("value", "sampled", "random"),
    [pytest.param(v, s, r, id=i) for i, v, s, r in VALID_TRACEPARENTS],
)
def test_valid_traceparent(shape: str, value: str, sampled: bool, random: bool) -> None:
    span_context, context = extract([("traceparent", value)], shape)
    assert span_context.is_valid
    assert get_value(INVALID_KEY, context) is None
    assert span_context.is_remote
    assert span_context.trace_id == int(value.strip()[3:35], 16)
    assert span_context.span_id == int(value.strip()[36:52], 16)
    assert span_context.trace_flags.sampled is sampled
    # Only the known bits survive extraction; unknown ones are never sent on.
    out = inject(context)
    expected_flags = (1 if sampled else 0) | (2 if random else 0)
    assert out["traceparent"] == f"00-{value.strip()[3:52]}-{expected_flags:02x}"


@pytest.mark.parametrize("shape", shape_names)
@pytest.mark.parametrize(("value"), [pytest.param(v, id=i) for i, v in INVALID_TRACEPARENTS])
def test_invalid_traceparent_starts_new_trace(shape: str, value: str) -> None:
    span_context, context = extract([("traceparent", value), ("tracestate", "a=1")], shape)
    assert not span_context.is_valid
    assert inject(context) == {}
    # Present but unusable: marked, for the server span's parent-source attribute.
    assert get_value(INVALID_KEY, context) is True


@pytest.mark.parametrize("shape", shape_names)
@pytest.mark.parametrize(
    "second",
    [TP, f"00-{TID}-{SID}-00", "garbage"],
    ids=["identical", "different", "garbage"],
)
def test_repeated_traceparent_is_invalid(shape: str, second: str) -> None:
    span_context, context = extract(
        [("traceparent", TP), ("tracestate", "a=1"), ("traceparent", second)], shape
    )
    assert not span_context.is_valid
    assert get_value(INVALID_KEY, context) is True


def test_invalid_marker_only_on_the_invalid_path() -> None:
    base = Context()
    assert PROPAGATOR.extract({}, base) is base  # no traceparent: the context as it was
    assert get_value(INVALID_KEY, PROPAGATOR.extract({"tracestate": "a=1"})) is None
    for tracestate in ("a=1", "@bad", ",".join(f"k{i}=1" for i in range(40))):
        # A bad tracestate never invalidates the traceparent, and is not marked.
        context = PROPAGATOR.extract({"traceparent": TP, "tracestate": tracestate})
        assert trace.get_current_span(context).get_span_context().is_valid
        assert get_value(INVALID_KEY, context) is None


def test_parse_traceparent_length_bounds() -> None:
    assert parse_traceparent(TP) is not None
    assert parse_traceparent(TP + "-") is None  # version 00: exactly 55 characters
    longest = f"01-{TID}-{SID}-01-" + "x" * (tc.MAX_TRACEPARENT_LENGTH - 56)
    assert len(longest) == tc.MAX_TRACEPARENT_LENGTH
    assert parse_traceparent(longest) is not None
    assert parse_traceparent(longest + "x") is None


def test_digits_outside_ascii_are_not_hex() -> None:
    # str.isdigit() accepts them; on the wire they only arrive from a str carrier.
    for digit in ("\u0663", "\u00b2", "\uff11"):
        assert parse_traceparent(f"00-{TID[:-1]}{digit}-{SID}-01") is None


def test_parse_traceparent_returns_raw_flags() -> None:
    assert parse_traceparent(f"00-{TID}-{SID}-ff") == (int(TID, 16), int(SID, 16), 0xFF)
    assert parse_traceparent(f"00-{TID}-{SID}-ff ") is None  # callers strip OWS first


def test_emits_version_00_lowercase() -> None:
    _, context = extract([("TRACEPARENT", f"7a-{TID}-{SID}-01-future")])
    out = inject(context)
    assert out["traceparent"] == TP
    assert list(out) == ["traceparent"]  # lowercase name, no empty tracestate


# ----------------------------------------------------------------------- random-trace-id


def test_random_flag_carried_through_sdk_child(tracing: Any) -> None:
    tracer = tracing.provider.get_tracer("t")
    for flags in ("02", "03"):
        _, context = extract([("traceparent", f"00-{TID}-{SID}-{flags}")])
        with tracer.start_as_current_span("child", context=context) as span:
            out = inject(None)
            child = span.get_span_context()
        assert out["traceparent"] == f"00-{TID}-{child.span_id:016x}-{flags}"


def test_random_flag_not_invented(tracing: Any) -> None:
    tracer = tracing.provider.get_tracer("t")
    _, context = extract([("traceparent", f"00-{TID}-{SID}-01")])
    with tracer.start_as_current_span("child", context=context):
        assert inject(None)["traceparent"].endswith("-01")


def test_random_flag_kept_when_sdk_drops_it(monkeypatch: pytest.MonkeyPatch) -> None:
    # Older SDKs build a child's flags from the sampling decision only; the flag must still go
    # on for the trace it arrived with, and not for another trace.
    monkeypatch.setattr(tc, "_FLAGS_KEEP_RANDOM", False)
    _, context = extract([("traceparent", f"00-{TID}-{SID}-03")])
    child = SpanContext(int(TID, 16), 0x42, is_remote=False, trace_flags=TraceFlags(1))
    child_ctx = trace.set_span_in_context(NonRecordingSpan(child), context)
    assert inject(child_ctx)["traceparent"] == f"00-{TID}-{0x42:016x}-03"
    other = SpanContext(0x99, 0x42, is_remote=False, trace_flags=TraceFlags(1))
    other_ctx = trace.set_span_in_context(NonRecordingSpan(other), context)
    assert inject(other_ctx)["traceparent"].endswith("-01")


def test_random_flag_kept_by_the_sdk_itself() -> None:
    # This SDK carries the flag to child spans: no context key needed (and none is set).
    _, context = extract([("traceparent", f"00-{TID}-{SID}-03")])
    assert context.get(tc.RANDOM_TRACE_ID_KEY) is None
    provider = TracerProvider(sampler=ALWAYS_ON)
    with provider.get_tracer("t").start_as_current_span("child", context=context):
        assert inject(None)["traceparent"].endswith("-03")


def test_unknown_bits_of_local_span_not_sent() -> None:
    local = SpanContext(int(TID, 16), int(SID, 16), is_remote=False, trace_flags=TraceFlags(0xFD))
    out = inject(trace.set_span_in_context(NonRecordingSpan(local)))
    assert out["traceparent"] == f"00-{TID}-{SID}-01"


def test_sdk_root_span_round_trips() -> None:
    provider = TracerProvider(sampler=ALWAYS_ON)
    with provider.get_tracer("t").start_as_current_span("root") as span:
        out = inject(None)
        root = span.get_span_context()
    span_context, _ = extract([("traceparent", out["traceparent"])])
    assert (span_context.trace_id, span_context.span_id) == (root.trace_id, root.span_id)
    assert span_context.trace_flags.sampled


# ------------------------------------------------------------------------------ tracestate


def state_of(tracestate: list[str], shape: str = "asgi") -> list[tuple[str, str]] | None:
    """The tracestate entries extracted next to a valid traceparent (None: traceparent lost)."""
    headers = [("traceparent", TP)] + [("tracestate", v) for v in tracestate]
    span_context, _ = extract(headers, shape)
    if not span_context.is_valid:
        return None
    return list(span_context.trace_state.items())


KEY_256 = "k" + "x" * 255
VALUE_256 = "v" * 256
PRINTABLE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in ",=")
MEMBERS_32 = ",".join(f"k{i}={i}" for i in range(32))
MEMBERS_33 = ",".join(f"k{i}={i}" for i in range(33))

VALID_TRACESTATES = [
    # (id, header fields, entries)
    ("one", ["a=1"], [("a", "1")]),
    ("order-kept", ["b=2,a=1"], [("b", "2"), ("a", "1")]),
    ("ows", [" a=1 ,\tb=2\t"], [("a", "1"), ("b", "2")]),
    ("empty-members", [",a=1,, ,b=2,"], [("a", "1"), ("b", "2")]),
    ("empty-header", [""], []),
    ("only-commas", [" , ,"], []),
    ("fields-joined", ["a=1", "b=2,c=3"], [("a", "1"), ("b", "2"), ("c", "3")]),
    ("key-at-tenant", ["t@v=1"], [("t@v", "1")]),
    ("key-at-end", ["foo@=1"], [("foo@", "1")]),
    ("key-double-at", ["foo@@bar=1"], [("foo@@bar", "1")]),
    ("key-digit-first", ["0ab=1"], [("0ab", "1")]),
    ("key-all-chars", ["a0_-*/@z=1"], [("a0_-*/@z", "1")]),
    ("key-256", [f"{KEY_256}=1"], [(KEY_256, "1")]),
    ("value-256", [f"a={VALUE_256}"], [("a", VALUE_256)]),
    ("value-inner-space", ["a=b c"], [("a", "b c")]),
    ("value-leading-space", ["a= b"], [("a", " b")]),
    ("value-printable", [f"a={PRINTABLE}"], [("a", PRINTABLE)]),
    ("duplicate-left-most", ["a=1,b=2,a=3"], [("a", "1"), ("b", "2")]),
    ("duplicate-across-fields", ["a=1", "a=2"], [("a", "1")]),
    ("32-members", [MEMBERS_32], [(f"k{i}", str(i)) for i in range(32)]),
    # 32 received, one of them a duplicate: within the limit, 31 entries kept.
    (
        "32-with-duplicate",
        [",".join(f"k{i}={i}" for i in range(31)) + ",k0=x"],
        [(f"k{i}", str(i)) for i in range(31)],
    ),
    # Empty members are not list-members that count.
    (
        "32-members-and-empties",
        [",, ," + MEMBERS_32.replace(",", ", ,") + ", ,"],
        [(f"k{i}", str(i)) for i in range(32)],
    ),
    (
        "32-members-over-fields",
        [",".join(f"k{i}={i}" for i in range(16)), ",".join(f"k{i}={i}" for i in range(16, 32))],
        [(f"k{i}", str(i)) for i in range(32)],
    ),
]

INVALID_TRACESTATES = [
    ("key-at-first", ["@foo=1"]),
    ("key-uppercase", ["Foo=1"]),
    ("key-underscore-first", ["_a=1"]),
    ("key-257", [f"{KEY_256}x=1"]),
    ("key-space", ["a b=1"]),
    ("key-empty", ["=1"]),
    ("key-dot", ["a.b=1"]),
    ("no-equals", ["a"]),
    ("value-empty", ["a="]),
    ("value-257", [f"a={VALUE_256}x"]),
    ("value-equals", ["a=b=c"]),
    ("value-tab", ["a=b\tc"]),
    ("value-del", ["a=b\x7f"]),
    ("value-non-ascii", ["a=caf\u00e9"]),
    ("33-members", [MEMBERS_33]),
    # The limit counts the members received, before duplicates are removed.
    ("33-with-duplicate", [MEMBERS_32 + ",k0=x"]),
    ("33-over-fields", [MEMBERS_32, "k99=1"]),
    ("33-all-duplicates", [",".join(["a=1"] * 33)]),
    ("one-bad-among-good", ["a=1,B=2,c=3"]),
    ("bad-in-second-field", ["a=1", "@x=2"]),
]


@pytest.mark.parametrize("shape", shape_names)
@pytest.mark.parametrize(
    ("fields", "entries"),
    [pytest.param(f, e, id=i) for i, f, e in VALID_TRACESTATES],
)
def test_valid_tracestate(shape: str, fields: list[str], entries: list[tuple[str, str]]) -> None:
    assert state_of(fields, shape) == entries


@pytest.mark.parametrize("shape", shape_names)
@pytest.mark.parametrize("fields", [pytest.param(f, id=i) for i, f in INVALID_TRACESTATES])
def test_bad_tracestate_dropped_traceparent_kept(shape: str, fields: list[str]) -> None:
    assert state_of(fields, shape) == []


def test_tracestate_without_traceparent_ignored() -> None:
    span_context, context = extract([("tracestate", "a=1")])
    assert not span_context.is_valid
    assert inject(context) == {}


def test_tracestate_reinjected() -> None:
    _, context = extract([("traceparent", TP), ("tracestate", "foo@@bar=1, t@v=2,a=1,a=9")])
    assert inject(context)["tracestate"] == "foo@@bar=1,t@v=2,a=1"


def test_tracestate_lenient_keys_not_logged(caplog: pytest.LogCaptureFixture) -> None:
    # OpenTelemetry's TraceState rejects these keys and logs the raw entries; ours must not.
    with caplog.at_level(logging.DEBUG):
        state_of(["foo@=secret-value"])
    assert "secret-value" not in caplog.text


# --------------------------------------------------------------------------- truncation


def _state(entries: list[tuple[str, str]]) -> TraceState:
    return tc._ValidatedTraceState(entries)


def test_512_characters_propagate_untouched() -> None:
    entries = [(f"k{i}", "v" * 61) for i in range(8)]  # 8 * 64 + 7 commas = 519
    header = format_tracestate(_state(entries))
    assert len(header) >= 512
    assert header == ",".join(f"{k}={v}" for k, v in entries)


def test_truncation_at_default_limit_drops_long_entries_from_the_right() -> None:
    entries = [(f"k{i:02d}", "v" * 256) for i in range(32)]  # 32 * 260 + 31 = 8351 chars
    header = format_tracestate(_state(entries))
    assert len(header) <= tc.MAX_TRACESTATE_LENGTH
    assert header == ",".join(f"k{i:02d}={'v' * 256}" for i in range(31))


@pytest.mark.parametrize(
    ("limit", "expected"),
    [
        # Long entries (> 128 chars) go first, right-most first, only as many as needed.
        (400, ["s0", "l0", "s1", "l1", "s2", "s3"]),
        (300, ["s0", "l0", "s1", "s2", "s3"]),
        (180, ["s0", "s1", "s2", "s3"]),
        # Then whole entries from the right.
        (30, ["s0", "s1", "s2"]),
        (28, ["s0", "s1"]),
        (10, ["s0"]),
        (5, []),
    ],
)
def test_truncation_order(monkeypatch: pytest.MonkeyPatch, limit: int, expected: list[str]) -> None:
    monkeypatch.setattr(tc, "MAX_TRACESTATE_LENGTH", limit)
    entries = [
        ("s0", "aaaaaa"),
        ("l0", "x" * 140),
        ("s1", "bbbbbb"),
        ("l1", "y" * 140),
        ("s2", "cccccc"),
        ("s3", "dddddd"),
    ]
    header = format_tracestate(_state(entries))
    assert len(header) <= limit
    kept = [member.partition("=")[0] for member in header.split(",") if member]
    assert kept == expected
    for member in header.split(","):  # whole members only
        if member:
            assert member in {f"{k}={v}" for k, v in entries}


def test_at_most_32_members_sent() -> None:
    entries = [(f"k{i}", "v") for i in range(40)]
    header = format_tracestate(_state(entries))
    assert header.split(",") == [f"k{i}=v" for i in range(32)]


# ------------------------------------------------------------------- inject on carriers


@pytest.mark.parametrize("kind", list(outgoing_carriers()))
def test_inject_on_every_carrier(kind: str) -> None:
    _, context = extract([("traceparent", TP), ("tracestate", "a=1")])
    carrier, setter = outgoing_carriers()[kind]()
    PROPAGATOR.inject(carrier, context, setter)
    assert sent_headers(carrier) == {"traceparent": [TP], "tracestate": ["a=1"]}


def test_inject_without_span_writes_nothing() -> None:
    assert inject(Context()) == {}


def test_extract_ignores_current_context() -> None:
    current = SpanContext(0x1, 0x2, is_remote=False, trace_flags=TraceFlags(1))
    token = trace.use_span(NonRecordingSpan(current))
    with token:
        span_context, _ = extract([("traceparent", "garbage")])
    assert not span_context.is_valid


def test_fields() -> None:
    assert PROPAGATOR.fields == {"traceparent", "tracestate"}


# ------------------------------------------------------- where OpenTelemetry's differs


@pytest.mark.parametrize(
    "headers",
    [
        [("traceparent", f"00-{TID}-{SID}-ff")],
        [("traceparent", f"01-{TID}-{SID}-01-a,01-{TID}-{SID}-01")],
        [("traceparent", TP), ("tracestate", "foo@=1")],
    ],
    ids=["unknown-bits", "joined-higher-version", "key-grammar"],
)
def test_differs_from_opentelemetry(headers: list[tuple[str, str]]) -> None:
    """Each case is one where OpenTelemetry Python's propagator sends something else."""
    carrier = dict(headers)
    ours: dict[str, str] = {}
    theirs: dict[str, str] = {}
    PROPAGATOR.inject(ours, PROPAGATOR.extract(carrier))
    otel = TraceContextTextMapPropagator()
    otel.inject(theirs, otel.extract(carrier, Context()))
    assert ours != theirs


def test_long_higher_version_compared_with_opentelemetry() -> None:
    # OpenTelemetry rejects any traceparent over 512 characters; the spec sets no maximum for
    # higher versions, and tracewire's is 8192.
    carrier = {"traceparent": f"01-{TID}-{SID}-01-" + "x" * 600}
    theirs = TraceContextTextMapPropagator().extract(carrier, Context())
    assert not trace.get_current_span(theirs).get_span_context().is_valid
    assert trace.get_current_span(PROPAGATOR.extract(carrier)).get_span_context().is_valid

"""B3 single and multi header: extract, the sampling states, and what is sent on."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.context import Context, get_value
from opentelemetry.propagators.b3 import B3MultiFormat, B3SingleFormat
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from tests.test_carriers import SHAPES, outgoing_carriers, sent_headers, shape_names
from tracewire.propagators import INVALID_KEY, B3Propagator

TID = "80f198ee56343ba864fe8b2a57d3eff7"
TID64 = "a3ce929d0e0e4736"
SID = "e457b5a2e4d86bd1"
PID = "05e3ac9a4f6e3b90"
IDS = [("X-B3-TraceId", TID), ("X-B3-SpanId", SID)]
SINGLE = B3Propagator(single_header=True)
MULTI = B3Propagator(single_header=False)


def extract(headers: list[tuple[str, str]], shape: str = "asgi") -> tuple[SpanContext, Context]:
    carrier, getter = SHAPES[shape](headers)
    context = SINGLE.extract(carrier, getter=getter)
    return trace.get_current_span(context).get_span_context(), context


def resend(context: Context, propagator: B3Propagator = SINGLE) -> dict[str, str]:
    out: dict[str, str] = {}
    propagator.inject(out, context)
    return out


# (id, headers, trace id, span id, sampled, state sent on: "1" | "0" | "d" | "")
VALID = [
    ("single-accept", [("b3", f"{TID}-{SID}-1")], TID, SID, True, "1"),
    ("single-deny", [("b3", f"{TID}-{SID}-0")], TID, SID, False, "0"),
    ("single-debug", [("b3", f"{TID}-{SID}-d")], TID, SID, True, "d"),
    ("single-defer", [("b3", f"{TID}-{SID}")], TID, SID, False, ""),
    ("single-parent", [("b3", f"{TID}-{SID}-1-{PID}")], TID, SID, True, "1"),
    ("single-64bit", [("b3", f"{TID64}-{SID}-1")], TID64, SID, True, "1"),
    ("single-ows", [("b3", f" {TID}-{SID}-1\t")], TID, SID, True, "1"),
    (
        "multi-accept",
        [("X-B3-TraceId", TID), ("X-B3-SpanId", SID), ("X-B3-Sampled", "1")],
        TID,
        SID,
        True,
        "1",
    ),
    (
        "multi-true",
        [("X-B3-TraceId", TID), ("X-B3-SpanId", SID), ("X-B3-Sampled", "true")],
        TID,
        SID,
        True,
        "1",
    ),
    (
        "multi-false",
        [("X-B3-TraceId", TID), ("X-B3-SpanId", SID), ("X-B3-Sampled", "false")],
        TID,
        SID,
        False,
        "0",
    ),
    (
        "multi-deny",
        [("X-B3-TraceId", TID), ("X-B3-SpanId", SID), ("X-B3-Sampled", "0")],
        TID,
        SID,
        False,
        "0",
    ),
    (
        "multi-debug",
        [("X-B3-TraceId", TID), ("X-B3-SpanId", SID), ("X-B3-Flags", "1")],
        TID,
        SID,
        True,
        "d",
    ),
    (
        "multi-debug-and-sampled",
        [("X-B3-TraceId", TID), ("X-B3-SpanId", SID), ("X-B3-Sampled", "1"), ("X-B3-Flags", "1")],
        TID,
        SID,
        True,
        "d",
    ),
    ("multi-defer", [("X-B3-TraceId", TID), ("X-B3-SpanId", SID)], TID, SID, False, ""),
    (
        "multi-parent-ignored",
        [("X-B3-TraceId", TID), ("X-B3-SpanId", SID), ("X-B3-ParentSpanId", PID)],
        TID,
        SID,
        False,
        "",
    ),
    (
        "multi-64bit",
        [("X-B3-TraceId", TID64), ("X-B3-SpanId", SID), ("X-B3-Sampled", "1")],
        TID64,
        SID,
        True,
        "1",
    ),
    (
        "single-wins-over-multi",
        [("b3", f"{TID}-{SID}-1"), ("X-B3-TraceId", "1" * 32), ("X-B3-SpanId", "1" * 16)],
        TID,
        SID,
        True,
        "1",
    ),
    (
        "bad-single-falls-back-to-multi",
        [("b3", "garbage"), ("X-B3-TraceId", TID), ("X-B3-SpanId", SID), ("X-B3-Sampled", "1")],
        TID,
        SID,
        True,
        "1",
    ),
    (
        "repeated-single-falls-back-to-multi",
        [
            ("b3", f"{TID}-{SID}-1"),
            ("b3", f"{TID}-{SID}-1"),
            ("X-B3-TraceId", TID64),
            ("X-B3-SpanId", SID),
        ],
        TID64,
        SID,
        False,
        "",
    ),
    # "When extracting state headers, the first value wins" (B3 specification); also when a
    # WSGI server or requests joined the repeats into one value.
    (
        "multi-repeated-trace-same",
        [("X-B3-TraceId", TID), ("X-B3-SpanId", SID), ("X-B3-TraceId", TID)],
        TID,
        SID,
        False,
        "",
    ),
    (
        "multi-repeated-trace-first-wins",
        [("X-B3-TraceId", TID), ("X-B3-SpanId", SID), ("X-B3-TraceId", TID64)],
        TID,
        SID,
        False,
        "",
    ),
    (
        "multi-repeated-trace-garbage-second",
        [("X-B3-TraceId", TID), ("X-B3-TraceId", "garbage"), ("X-B3-SpanId", SID)],
        TID,
        SID,
        False,
        "",
    ),
    (
        "multi-repeated-span-first-wins",
        [("X-B3-TraceId", TID), ("X-B3-SpanId", SID), ("X-B3-SpanId", PID)],
        TID,
        SID,
        False,
        "",
    ),
    (
        "multi-repeated-sampled-first-wins",
        [*IDS, ("X-B3-Sampled", "1"), ("X-B3-Sampled", "0")],
        TID,
        SID,
        True,
        "1",
    ),
    (
        "multi-repeated-sampled-deny-first",
        [*IDS, ("X-B3-Sampled", "0"), ("X-B3-Sampled", "1")],
        TID,
        SID,
        False,
        "0",
    ),
    (
        "multi-repeated-flags-first-wins",
        [("X-B3-TraceId", TID), ("X-B3-SpanId", SID), ("X-B3-Flags", "1"), ("X-B3-Flags", "0")],
        TID,
        SID,
        True,
        "d",
    ),
    (
        "multi-repeated-flags-not-debug-first",
        [*IDS, ("X-B3-Sampled", "0"), ("X-B3-Flags", "0"), ("X-B3-Flags", "1")],
        TID,
        SID,
        False,
        "0",
    ),
]

INVALID = [
    ("single-uppercase-trace", [("b3", f"{TID.upper()}-{SID}-1")]),
    ("single-uppercase-span", [("b3", f"{TID}-{SID.upper()}-1")]),
    ("single-zero-trace", [("b3", f"{'0' * 32}-{SID}-1")]),
    ("single-zero-span", [("b3", f"{TID}-{'0' * 16}-1")]),
    ("single-short-trace", [("b3", f"{TID[:20]}-{SID}-1")]),
    ("single-short-span", [("b3", f"{TID}-{SID[:15]}-1")]),
    ("single-empty-state", [("b3", f"{TID}-{SID}-")]),
    ("single-bad-state", [("b3", f"{TID}-{SID}-true")]),
    ("single-bad-parent", [("b3", f"{TID}-{SID}-1-xyz")]),
    ("single-zero-parent", [("b3", f"{TID}-{SID}-1-{'0' * 16}")]),
    ("single-five-parts", [("b3", f"{TID}-{SID}-1-{PID}-x")]),
    ("single-accept-alone", [("b3", "1")]),
    ("single-debug-alone", [("b3", "d")]),
    ("single-empty", [("b3", "")]),
    ("single-repeated", [("b3", f"{TID}-{SID}-1"), ("b3", f"{TID}-{SID}-1")]),
    ("multi-no-span", [("X-B3-TraceId", TID), ("X-B3-Sampled", "1")]),
    ("multi-uppercase", [("X-B3-TraceId", TID.upper()), ("X-B3-SpanId", SID)]),
    ("multi-bad-sampled", [("X-B3-TraceId", TID), ("X-B3-SpanId", SID), ("X-B3-Sampled", "2")]),
    ("multi-sampled-d", [("X-B3-TraceId", TID), ("X-B3-SpanId", SID), ("X-B3-Sampled", "d")]),
    ("multi-accept-alone", [("X-B3-Sampled", "1")]),
    ("multi-debug-alone", [("X-B3-Flags", "1")]),
    ("multi-span-alone", [("X-B3-SpanId", SID)]),
    # The first value wins, even when it is the bad one.
    (
        "multi-repeated-trace-garbage-first",
        [("X-B3-TraceId", "garbage"), ("X-B3-TraceId", TID), ("X-B3-SpanId", SID)],
    ),
    (
        "multi-repeated-sampled-bad-first",
        [*IDS, ("X-B3-Sampled", "2"), ("X-B3-Sampled", "1")],
    ),
]


@pytest.mark.parametrize("shape", shape_names)
@pytest.mark.parametrize(
    ("headers", "trace_id", "span_id", "sampled", "state"),
    [pytest.param(h, t, s, smp, st, id=i) for i, h, t, s, smp, st in VALID],
)
def test_valid(
    shape: str,
    headers: list[tuple[str, str]],
    trace_id: str,
    span_id: str,
    sampled: bool,
    state: str,
) -> None:
    span_context, context = extract(headers, shape)
    assert span_context.is_valid and span_context.is_remote
    assert get_value(INVALID_KEY, context) is None
    assert span_context.trace_id == int(trace_id, 16)  # 64-bit ids left-padded with zeros
    assert span_context.span_id == int(span_id, 16)
    assert span_context.trace_flags.sampled is sampled

    tid = f"{int(trace_id, 16):032x}"
    single = resend(context)
    assert single == {"b3": f"{tid}-{SID}-{state}" if state else f"{tid}-{SID}"}
    multi = resend(context, MULTI)
    expected = {"x-b3-traceid": tid, "x-b3-spanid": SID}
    if state == "d":
        expected["x-b3-flags"] = "1"  # debug implies accept: no X-B3-Sampled with it
    elif state:
        expected["x-b3-sampled"] = state
    assert multi == expected


@pytest.mark.parametrize("shape", shape_names)
@pytest.mark.parametrize("headers", [pytest.param(h, id=i) for i, h in INVALID])
def test_invalid_ignored(shape: str, headers: list[tuple[str, str]]) -> None:
    span_context, context = extract(headers, shape)
    assert not span_context.is_valid
    assert resend(context) == {}
    # Present but unusable: marked, for the server span's parent-source attribute.
    assert get_value(INVALID_KEY, context) is True


@pytest.mark.parametrize("propagator", [SINGLE, MULTI], ids=["b3", "b3multi"])
def test_invalid_marker_only_on_the_invalid_path(propagator: B3Propagator) -> None:
    base = Context()
    assert propagator.extract({}, base) is base  # no B3 header: the context as it was
    assert get_value(INVALID_KEY, propagator.extract({"other": "x"})) is None
    valid = propagator.extract({"b3": f"{TID}-{SID}-1"})
    assert get_value(INVALID_KEY, valid) is None
    invalid = propagator.extract({"x-b3-traceid": "nope", "x-b3-spanid": SID})
    assert get_value(INVALID_KEY, invalid) is True
    assert not trace.get_current_span(invalid).get_span_context().is_valid


@pytest.mark.parametrize("shape", shape_names)
@pytest.mark.parametrize(
    "headers",
    [[("b3", "0")], [("X-B3-Sampled", "0")], [("x-b3-sampled", "false")]],
    ids=["single", "multi", "multi-false"],
)
def test_bare_deny(shape: str, headers: list[tuple[str, str]], tracing: Any) -> None:
    """A deny without ids: nothing of this request is recorded, and "deny" is sent on."""
    span_context, context = extract(headers, shape)
    assert span_context.is_valid
    assert not span_context.trace_flags.sampled
    assert get_value(INVALID_KEY, context) is None  # a valid decision, not a broken header
    tracer = tracing.provider.get_tracer("t")  # default sampler: parent-based, always on
    span = tracer.start_span("server", context=context)
    assert not span.is_recording()
    out = resend(trace.set_span_in_context(span, context))
    span.end()
    assert out["b3"].endswith("-0")
    assert tracing.spans() == []


def test_bare_deny_ids_differ_per_request() -> None:
    first, _ = extract([("b3", "0")])
    second, _ = extract([("b3", "0")])
    assert first.trace_id != second.trace_id


# ---------------------------------------------------------------- through an SDK child span


def _child_headers(
    headers: list[tuple[str, str]], provider: TracerProvider, propagator: B3Propagator
) -> tuple[dict[str, str], SpanContext]:
    # As the server middleware does: the span goes into the *extracted* context, which also
    # holds the B3 state (debug, defer) that the next hop must get.
    _, context = extract(headers)
    span = provider.get_tracer("t").start_span("server", context=context)
    try:
        return resend(trace.set_span_in_context(span, context), propagator), span.get_span_context()
    finally:
        span.end()


def test_debug_preserved_through_child(tracing: Any) -> None:
    out, child = _child_headers([("b3", f"{TID}-{SID}-d")], tracing.provider, SINGLE)
    assert out == {"b3": f"{TID}-{child.span_id:016x}-d"}
    out, child = _child_headers(
        [("X-B3-TraceId", TID), ("X-B3-SpanId", SID), ("X-B3-Flags", "1")], tracing.provider, MULTI
    )
    assert out == {"x-b3-traceid": TID, "x-b3-spanid": f"{child.span_id:016x}", "x-b3-flags": "1"}


def test_span_id_never_reused(tracing: Any) -> None:
    out, child = _child_headers([("b3", f"{TID}-{SID}-1-{PID}")], tracing.provider, MULTI)
    assert child.span_id != int(SID, 16)
    assert out["x-b3-spanid"] == f"{child.span_id:016x}"
    assert "x-b3-parentspanid" not in out  # never sent
    server = tracing.spans()[0]
    assert server.parent.span_id == int(SID, 16)


def test_defer_stays_defer_unless_this_service_samples(tracing: Any) -> None:
    # Parent-based default: a deferred (unsampled) remote parent is not sampled here; the
    # decision is still open for the next hop, so "defer" is sent on, not "deny".
    out, _ = _child_headers([("b3", f"{TID}-{SID}")], tracing.provider, SINGLE)
    assert out["b3"].count("-") == 1
    out, _ = _child_headers([("X-B3-TraceId", TID), ("X-B3-SpanId", SID)], tracing.provider, MULTI)
    assert "x-b3-sampled" not in out and "x-b3-flags" not in out

    # A service whose own sampler decides "sampled" sends "accept".
    sampling = TracerProvider(sampler=ALWAYS_ON)
    out, _ = _child_headers([("b3", f"{TID}-{SID}")], sampling, SINGLE)
    assert out["b3"].endswith("-1")


def test_deny_stays_deny(tracing: Any) -> None:
    out, _ = _child_headers([("b3", f"{TID}-{SID}-0")], tracing.provider, SINGLE)
    assert out["b3"].endswith("-0")
    # Even a sampler that ignores the parent: the flags decide.
    provider = TracerProvider(sampler=ParentBased(ALWAYS_ON, remote_parent_not_sampled=ALWAYS_ON))
    out, _ = _child_headers([("b3", f"{TID}-{SID}-0")], provider, SINGLE)
    assert out["b3"].endswith("-1")


def test_state_only_for_its_own_trace() -> None:
    # Debug/defer markers are tied to the trace they arrived with.
    _, context = extract([("b3", f"{TID}-{SID}-d")])
    other = SpanContext(0x1234, 0x5678, is_remote=False, trace_flags=TraceFlags(0))
    out = resend(trace.set_span_in_context(NonRecordingSpan(other), context))
    assert out["b3"].endswith("-0")


def test_local_root_injects_128_bit_ids() -> None:
    provider = TracerProvider(sampler=ALWAYS_ON)
    with provider.get_tracer("t").start_as_current_span("root") as span:
        out = resend(trace.set_span_in_context(span), MULTI)
        ids = span.get_span_context()
    assert out == {
        "x-b3-traceid": f"{ids.trace_id:032x}",
        "x-b3-spanid": f"{ids.span_id:016x}",
        "x-b3-sampled": "1",
    }


@pytest.mark.parametrize("kind", list(outgoing_carriers()))
def test_inject_on_every_carrier(kind: str) -> None:
    _, context = extract([("b3", f"{TID}-{SID}-d")])
    carrier, setter = outgoing_carriers()[kind]()
    MULTI.inject(carrier, context, setter)
    assert sent_headers(carrier) == {
        "x-b3-traceid": [TID],
        "x-b3-spanid": [SID],
        "x-b3-flags": ["1"],
    }


def test_fields() -> None:
    assert SINGLE.fields == {"b3"}
    assert MULTI.fields == {"x-b3-traceid", "x-b3-spanid", "x-b3-sampled", "x-b3-flags"}


def test_invalid_header_logged_once_without_value(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        for _ in range(5):
            extract([("b3", "s3cr3t-value")])
    records = [r for r in caplog.records if r.name == "tracewire"]
    assert len(records) == 1
    assert "s3cr3t" not in caplog.text


# ------------------------------------------------------- where OpenTelemetry's differs


def _trace_id(propagator: Any, headers: list[tuple[str, str]], shape: str) -> int | None:
    carrier, getter = SHAPES[shape](headers)
    span_context = trace.get_current_span(
        propagator.extract(carrier, Context(), getter)
    ).get_span_context()
    return span_context.trace_id if span_context.is_valid else None


def test_repeated_multi_headers_compared_with_opentelemetry() -> None:
    headers = [*IDS, ("X-B3-TraceId", TID64)]
    # Kept apart (ASGI): both take the first value.
    assert _trace_id(B3MultiFormat(), headers, "asgi") == int(TID, 16)
    assert _trace_id(SINGLE, headers, "asgi") == int(TID, 16)
    # Joined by the server into "a,b" (WSGI): OpenTelemetry finds no valid id; tracewire
    # takes the first value.
    assert _trace_id(B3MultiFormat(), headers, "wsgi") is None
    assert _trace_id(SINGLE, headers, "wsgi") == int(TID, 16)


def test_repeated_single_header_compared_with_opentelemetry() -> None:
    headers = [("b3", f"{TID}-{SID}-1"), ("b3", f"{TID64}-{SID}-1")]
    assert _trace_id(B3SingleFormat(), headers, "asgi") == int(TID, 16)
    assert _trace_id(SINGLE, headers, "asgi") is None

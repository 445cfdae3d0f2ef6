"""Hostile headers: every parser's time is linear in the header's length, and the limits cut.

Each case builds a header of about 1 KB and of about 100 KB with the same shape, and compares
the cost per byte of extracting it (see ``tests/support/linear.py``): a linear parser costs
about the same per byte at both sizes (about 2x at most, from allocating more objects); a
quadratic one, or a regex that backtracks, costs 15x to 100x more per byte at 100 KB.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from opentelemetry import baggage, trace
from opentelemetry.context import Context, get_value

from tests.support.linear import growth
from tracewire import Settings
from tracewire.carriers import headers_getter
from tracewire.propagators import (
    INVALID_KEY,
    B3Propagator,
    BaggagePropagator,
    TraceContextPropagator,
)
from tracewire.propagators.baggage import MAX_HEADER_BYTES, MAX_MEMBERS

TID = "4bf92f3577b34da6a3ce929d0e0e4736"
SID = "00f067aa0ba902b7"
TP = f"00-{TID}-{SID}-01"
# Linear parsers measure about 1 to 2.5 here; the bound leaves room for a busy machine and
# still fails a quadratic parser (15x or more at 100 KB).
GROWTH_BOUND = 6.0

TRACECONTEXT = TraceContextPropagator()
BAGGAGE = BaggagePropagator()
B3 = B3Propagator()
EVERYTHING = Settings(propagators=["tracecontext", "baggage", "b3"]).composite

Headers = dict[str, str]


def repeat(unit: str, size: int, prefix: str = "") -> str:
    """``prefix`` then ``unit`` repeated to about ``size`` characters."""
    return prefix + unit * max(1, (size - len(prefix)) // len(unit))


def members(size: int, template: str) -> str:
    """Numbered members ``template.format(i)`` joined with commas, about ``size`` characters."""
    out: list[str] = []
    length = 0
    i = 0
    while length < size:
        member = template.format(i)
        out.append(member)
        length += len(member) + 1
        i += 1
    return ",".join(out)


# (id, propagator, headers of about the given size)
CASES: list[tuple[str, Any, Callable[[int], Headers]]] = [
    ("traceparent-v00-long", TRACECONTEXT, lambda n: {"traceparent": repeat("0", n, TP)}),
    (
        "traceparent-higher-version-long",
        TRACECONTEXT,
        lambda n: {"traceparent": repeat("-x", n, f"01-{TID}-{SID}-01")},
    ),
    ("traceparent-whitespace", TRACECONTEXT, lambda n: {"traceparent": repeat(" ", n) + TP}),
    (
        "tracestate-empty-members",
        TRACECONTEXT,
        lambda n: {"traceparent": TP, "tracestate": repeat(" , \t", n, "a=1")},
    ),
    (
        "tracestate-many-members",
        TRACECONTEXT,
        lambda n: {"traceparent": TP, "tracestate": members(n, "k{}=v")},
    ),
    (
        "tracestate-one-duplicate-many-times",
        TRACECONTEXT,
        lambda n: {"traceparent": TP, "tracestate": repeat(",a=1", n, "a=1")},
    ),
    (
        "tracestate-one-huge-member",
        TRACECONTEXT,
        lambda n: {"traceparent": TP, "tracestate": repeat("x", n, "a=")},
    ),
    (
        "tracestate-huge-key",
        TRACECONTEXT,
        lambda n: {"traceparent": TP, "tracestate": repeat("k", n) + "=1"},
    ),
    ("baggage-many-members", BAGGAGE, lambda n: {"baggage": members(n, "k{}=v")}),
    ("baggage-many-invalid-members", BAGGAGE, lambda n: {"baggage": members(n, "k{}=v v")}),
    ("baggage-empty-members", BAGGAGE, lambda n: {"baggage": repeat(" , ", n, "a=1")}),
    ("baggage-one-huge-member", BAGGAGE, lambda n: {"baggage": repeat("x", n, "a=")}),
    ("baggage-huge-properties", BAGGAGE, lambda n: {"baggage": repeat(";p=1", n, "a=1")}),
    (
        "baggage-members-with-properties",
        BAGGAGE,
        lambda n: {"baggage": members(n, "k{}=v;p=1;flag")},
    ),
    (
        "baggage-percent-escapes",
        BAGGAGE,
        lambda n: {"baggage": members(n, "k{}=%E2%9C%93%FF")},
    ),
    ("b3-single-long", B3, lambda n: {"b3": repeat("-1", n, f"{TID}-{SID}")}),
    ("b3-multi-long", B3, lambda n: {"x-b3-traceid": repeat("a", n), "x-b3-spanid": SID}),
    (
        "b3-multi-joined-repeats",
        B3,
        lambda n: {"x-b3-traceid": repeat(f",{TID}", n, TID), "x-b3-spanid": SID},
    ),
    (
        "composite-everything",
        EVERYTHING,
        lambda n: {
            "traceparent": TP,
            "tracestate": members(n // 3, "k{}=v"),
            "baggage": members(n // 3, "k{}=v;p"),
            "b3": repeat("-1", n // 3, f"{TID}-{SID}"),
        },
    ),
]


def _size(headers: Headers) -> int:
    return sum(len(v) for v in headers.values())


@pytest.mark.parametrize(("propagator", "make"), [pytest.param(p, m, id=i) for i, p, m in CASES])
def test_extract_time_is_linear_in_header_length(
    propagator: Any, make: Callable[[int], Headers]
) -> None:
    for size in (1024, 100 * 1024):  # the shapes are what the ids say
        assert 0.9 * size <= _size(make(size)) <= 1.1 * size

    def extract(headers: Headers) -> object:
        return propagator.extract(headers, getter=headers_getter)

    ratio = growth(extract, lambda n: (make(n), _size(make(n))))
    assert ratio <= GROWTH_BOUND, f"{ratio:.1f}x more per byte at 100 KB than at 1 KB"


def _app_baggage(size: int) -> tuple[Context, int]:
    context = Context()
    length = 0
    i = 0
    while length < size:
        context = baggage.set_baggage(f"k{i}", "v" * 8, context)
        length += len(f"k{i}") + 9
        i += 1
    return context, length


def test_inject_time_is_linear_in_baggage_size() -> None:
    def inject(context: Context) -> object:
        out: dict[str, str] = {}
        BAGGAGE.inject(out, context)
        return out

    ratio = growth(inject, _app_baggage)
    assert ratio <= GROWTH_BOUND, f"{ratio:.1f}x more per byte at 100 KB than at 1 KB"


# ------------------------------------------------------------------ what the limits leave


def _extract(propagator: Any, headers: Headers) -> Context:
    context: Context = propagator.extract(headers, getter=headers_getter)
    return context


def test_100k_tracestate_is_dropped_and_the_traceparent_kept() -> None:
    for tracestate in (members(100 * 1024, "k{}=v"), repeat(" , ", 100 * 1024, "a=1,b")):
        context = _extract(TRACECONTEXT, {"traceparent": TP, "tracestate": tracestate})
        span_context = trace.get_current_span(context).get_span_context()
        assert span_context.is_valid
        assert list(span_context.trace_state.items()) == []
        assert get_value(INVALID_KEY, context) is None


def test_100k_of_empty_tracestate_members_around_valid_ones() -> None:
    tracestate = repeat(" ,", 50 * 1024) + "a=1,b=2" + repeat(", ", 50 * 1024)
    context = _extract(TRACECONTEXT, {"traceparent": TP, "tracestate": tracestate})
    state = trace.get_current_span(context).get_span_context().trace_state
    assert list(state.items()) == [("a", "1"), ("b", "2")]


def test_100k_traceparents_are_invalid() -> None:
    for value in (repeat("0", 100 * 1024, TP), repeat("-x", 100 * 1024, f"01-{TID}-{SID}-01")):
        context = _extract(TRACECONTEXT, {"traceparent": value})
        assert not trace.get_current_span(context).get_span_context().is_valid
        assert get_value(INVALID_KEY, context) is True


def test_10000_baggage_members_cut_to_whole_members_within_the_limits() -> None:
    header = ",".join(f"k{i}=" + "v" * (i % 50) for i in range(10_000))
    context = _extract(BAGGAGE, {"baggage": header})
    kept = dict(baggage.get_all(context))
    assert 0 < len(kept) <= MAX_MEMBERS
    assert list(kept) == [f"k{i}" for i in range(len(kept))]  # left to right, none skipped
    assert all(v == "v" * (int(k[1:]) % 50) for k, v in kept.items())  # whole values
    out: dict[str, str] = {}
    BAGGAGE.inject(out, context)
    assert len(out["baggage"]) <= MAX_HEADER_BYTES
    assert out["baggage"] == header[: len(out["baggage"])]  # the same members, uncut


def test_100k_b3_headers_are_invalid() -> None:
    for headers in (
        {"b3": repeat("-1", 100 * 1024, f"{TID}-{SID}")},
        {"x-b3-traceid": repeat("a", 100 * 1024), "x-b3-spanid": SID},
    ):
        context = _extract(B3, headers)
        assert not trace.get_current_span(context).get_span_context().is_valid
        assert get_value(INVALID_KEY, context) is True

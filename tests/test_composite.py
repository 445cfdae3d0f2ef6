"""The composite: which incoming context becomes the parent when several formats are present."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from opentelemetry import baggage, trace
from opentelemetry.context import Context, attach, detach, get_value
from opentelemetry.propagators.composite import CompositePropagator as OtelComposite
from opentelemetry.propagators.textmap import (
    CarrierT,
    Getter,
    Setter,
    TextMapPropagator,
    default_getter,
    default_setter,
)
from opentelemetry.trace import INVALID_SPAN, NonRecordingSpan, SpanContext, TraceFlags

from tests.test_carriers import SHAPES, shape_names
from tracewire import CompositePropagator, Extracted, Settings
from tracewire.carriers import headers_getter
from tracewire.propagators import (
    INVALID_KEY,
    B3Propagator,
    BaggagePropagator,
    TraceContextPropagator,
)

W3C_TID = "4bf92f3577b34da6a3ce929d0e0e4736"
W3C_SID = "00f067aa0ba902b7"
B3_TID = "80f198ee56343ba864fe8b2a57d3eff7"
B3_SID = "e457b5a2e4d86bd1"
TRACEPARENT = ("traceparent", f"00-{W3C_TID}-{W3C_SID}-01")
TRACESTATE = ("tracestate", "vendor=x")
B3_OTHER = ("b3", f"{B3_TID}-{B3_SID}-1")
B3_SAME = ("b3", f"{W3C_TID}-{B3_SID}-0")
BAGGAGE = ("baggage", "user=alice")

NAMED = {
    "tracecontext": TraceContextPropagator(),
    "baggage": BaggagePropagator(),
    "b3": B3Propagator(),
    "b3multi": B3Propagator(single_header=False),
}


def composite(names: list[str], policy: str = "first") -> CompositePropagator:
    pairs = [(n, NAMED[n]) for n in names]
    return CompositePropagator(pairs, pairs, policy)


def parent(extracted: Extracted) -> SpanContext:
    return trace.get_current_span(extracted.context).get_span_context()


def ids(span_context: SpanContext) -> tuple[str, str]:
    return f"{span_context.trace_id:032x}", f"{span_context.span_id:016x}"


# ----------------------------------------------------------------------------------- first


@pytest.mark.parametrize("shape", shape_names)
def test_first_valid_wins_and_other_trace_is_a_conflict(shape: str) -> None:
    carrier, getter = SHAPES[shape]([B3_OTHER, TRACEPARENT, TRACESTATE, BAGGAGE])
    found = composite(["tracecontext", "b3", "baggage"]).extract_detailed(carrier, getter)
    assert found.format == "tracecontext"
    assert ids(parent(found)) == (W3C_TID, W3C_SID)
    assert parent(found).trace_state.to_header() == "vendor=x"
    assert [ids(c) for c in found.conflicts] == [(B3_TID, B3_SID)]
    assert baggage.get_all(found.context) == {"user": "alice"}

    found = composite(["b3", "tracecontext", "baggage"]).extract_detailed(carrier, getter)
    assert found.format == "b3"
    assert ids(parent(found)) == (B3_TID, B3_SID)
    assert [ids(c) for c in found.conflicts] == [(W3C_TID, W3C_SID)]
    assert baggage.get_all(found.context) == {"user": "alice"}


def test_first_skips_invalid_formats() -> None:
    carrier = dict([("traceparent", "garbage"), B3_OTHER])
    found = composite(["tracecontext", "b3"]).extract_detailed(carrier, headers_getter)
    assert found.format == "b3"
    assert found.conflicts == ()


def test_first_same_trace_keeps_w3c_tracestate() -> None:
    carrier = dict([B3_SAME, TRACEPARENT, TRACESTATE])
    found = composite(["b3", "tracecontext"]).extract_detailed(carrier, headers_getter)
    assert found.format == "b3"
    span_context = parent(found)
    assert ids(span_context) == (W3C_TID, B3_SID)  # the winner's span id
    assert not span_context.trace_flags.sampled  # and its sampling decision
    assert span_context.trace_state.to_header() == "vendor=x"
    assert found.conflicts == ()


def test_first_same_trace_does_not_replace_winner_tracestate() -> None:
    first = [("tracecontext", TraceContextPropagator())]
    pairs = [*first, ("tracecontext2", _FixedPropagator(int(W3C_TID, 16), state="other=y"))]
    carrier = dict([TRACEPARENT, TRACESTATE])
    found = CompositePropagator(pairs, []).extract_detailed(carrier, headers_getter)
    assert parent(found).trace_state.to_header() == "vendor=x"


def test_nothing_found() -> None:
    found = composite(["tracecontext", "b3", "baggage"]).extract_detailed({}, headers_getter)
    assert found.format is None
    assert not parent(found).is_valid
    assert found.conflicts == ()


def test_conflicts_reported_once_per_span_context() -> None:
    # b3 and b3multi both read a single b3 header: one conflict, not two.
    carrier = dict([TRACEPARENT, B3_OTHER])
    found = composite(["tracecontext", "b3", "b3multi"]).extract_detailed(carrier, headers_getter)
    assert [ids(c) for c in found.conflicts] == [(B3_TID, B3_SID)]


# ------------------------------------------------------------------------------------ last


def test_last_overwrites_like_opentelemetry() -> None:
    carrier = dict([TRACEPARENT, TRACESTATE, B3_OTHER, BAGGAGE])
    names = ["tracecontext", "b3", "baggage"]
    found = composite(names, "last").extract_detailed(carrier, headers_getter)
    theirs = OtelComposite([NAMED[n] for n in names]).extract(carrier, Context())
    assert parent(found) == trace.get_current_span(theirs).get_span_context()
    assert found.format == "b3"
    assert baggage.get_all(found.context) == baggage.get_all(theirs)
    # tracewire also reports the trace it overwrote, for a span link.
    assert [ids(c) for c in found.conflicts] == [(W3C_TID, W3C_SID)]


def test_last_same_trace_no_conflict() -> None:
    carrier = dict([TRACEPARENT, TRACESTATE, B3_SAME])
    found = composite(["tracecontext", "b3"], "last").extract_detailed(carrier, headers_getter)
    assert found.format == "b3"
    assert ids(parent(found)) == (W3C_TID, B3_SID)
    assert found.conflicts == ()


def test_last_final_winner_never_its_own_conflict() -> None:
    pairs = [
        ("a", _FixedPropagator(0xA)),
        ("b", _FixedPropagator(0xB)),
        ("a2", _FixedPropagator(0xA, span_id=0x77)),
    ]
    found = CompositePropagator(pairs, [], "last").extract_detailed({}, headers_getter)
    assert found.format == "a2"
    assert [c.trace_id for c in found.conflicts] == [0xB]


# ---------------------------------------------------------------------- both policies


class _FixedPropagator(TextMapPropagator):
    """Always "finds" the given span context (or the invalid span), and a baggage entry."""

    def __init__(self, trace_id: int, span_id: int = 0x1, state: str | None = None) -> None:
        self.trace_id, self.span_id, self.state = trace_id, span_id, state

    def extract(
        self,
        carrier: CarrierT,
        context: Context | None = None,
        getter: Getter[CarrierT] = default_getter,
    ) -> Context:
        from opentelemetry.trace import TraceState

        context = baggage.set_baggage(f"from-{self.trace_id:x}", "1", context or Context())
        if not self.trace_id:
            return trace.set_span_in_context(INVALID_SPAN, context)
        state = TraceState.from_header([self.state]) if self.state else None
        span_context = SpanContext(
            self.trace_id, self.span_id, True, TraceFlags(1), trace_state=state
        )
        return trace.set_span_in_context(NonRecordingSpan(span_context), context)

    def inject(
        self,
        carrier: CarrierT,
        context: Context | None = None,
        setter: Setter[CarrierT] = default_setter,
    ) -> None:
        setter.set(carrier, f"x-fixed-{self.trace_id:x}", "1")

    @property
    def fields(self) -> set[str]:
        return {f"x-fixed-{self.trace_id:x}"}


@pytest.mark.parametrize("policy", ["first", "last"])
def test_invalid_span_context_never_replaces_a_parent(policy: str) -> None:
    pairs = [("good", _FixedPropagator(0xA)), ("bad", _FixedPropagator(0))]
    found = CompositePropagator(pairs, [], policy).extract_detailed({}, headers_getter)
    assert found.format == "good"
    assert parent(found).trace_id == 0xA
    assert dict(baggage.get_all(found.context)) == {"from-a": "1", "from-0": "1"}


@pytest.mark.parametrize("policy", ["first", "last"])
def test_extraction_never_uses_the_current_context(policy: str) -> None:
    current = SpanContext(0xC0FFEE, 0xBEEF, is_remote=False, trace_flags=TraceFlags(1))
    token = attach(
        trace.set_span_in_context(NonRecordingSpan(current), baggage.set_baggage("ambient", "1"))
    )
    try:
        found = composite(["tracecontext", "baggage"], policy).extract_detailed(
            {"traceparent": "garbage"}, headers_getter
        )
        assert not parent(found).is_valid
        assert dict(baggage.get_all(found.context)) == {}
        plain = composite(["tracecontext", "baggage"], policy).extract({}, getter=headers_getter)
        assert not trace.get_current_span(plain).get_span_context().is_valid
        assert dict(baggage.get_all(plain)) == {}
    finally:
        detach(token)


def test_explicit_base_context_is_used() -> None:
    base = baggage.set_baggage("base", "1", Context())
    found = composite(["baggage"]).extract_detailed({"baggage": "k=v"}, headers_getter, base)
    assert dict(baggage.get_all(found.context)) == {"base": "1", "k": "v"}


def test_inject_writes_every_injector() -> None:
    both = CompositePropagator([], [("tc", NAMED["tracecontext"]), ("b3", NAMED["b3multi"])])
    _, context = _extracted([TRACEPARENT])
    out: dict[str, str] = {}
    both.inject(out, context)
    assert out == {
        "traceparent": TRACEPARENT[1],
        "x-b3-traceid": W3C_TID,
        "x-b3-spanid": W3C_SID,
        "x-b3-sampled": "1",
    }
    assert both.fields == {"traceparent", "tracestate", *NAMED["b3multi"].fields}


def _extracted(headers: list[tuple[str, str]]) -> tuple[Extracted, Context]:
    found = composite(["tracecontext", "b3", "baggage"]).extract_detailed(
        dict(headers), headers_getter
    )
    return found, found.context


def test_unknown_policy() -> None:
    with pytest.raises(ValueError, match="unknown extract policy 'middle'; known: first, last"):
        CompositePropagator([], [], "middle")


def test_repr_names_formats() -> None:
    assert repr(composite(["tracecontext", "b3"], "last")) == (
        "CompositePropagator(extract=['tracecontext', 'b3'], "
        "inject=['tracecontext', 'b3'], policy='last')"
    )


# ------------------------------------------------------------------- through Settings


def test_settings_none_disables_everything() -> None:
    settings = Settings(propagators="none")
    carrier = dict([TRACEPARENT, B3_OTHER, BAGGAGE])
    found = settings.composite.extract_detailed(carrier, headers_getter)
    assert found.format is None and not parent(found).is_valid
    assert dict(baggage.get_all(found.context)) == {}
    out: dict[str, str] = {}
    _, context = _extracted([TRACEPARENT, BAGGAGE])
    settings.inject_propagator.inject(out, context)
    assert out == {}
    assert settings.composite.fields == set()


def test_settings_extract_and_inject_lists() -> None:
    settings = Settings(extract=["b3multi", "tracecontext"], inject=["tracecontext"])
    carrier = {
        "X-B3-TraceId": B3_TID,
        "X-B3-SpanId": B3_SID,
        "X-B3-Flags": "1",
        "traceparent": TRACEPARENT[1],
    }
    found = settings.composite.extract_detailed(carrier, headers_getter)
    assert found.format == "b3multi"
    assert [ids(c) for c in found.conflicts] == [(W3C_TID, W3C_SID)]
    out: dict[str, Any] = {}
    settings.inject_propagator.inject(out, found.context)
    assert out == {"traceparent": f"00-{B3_TID}-{B3_SID}-01"}
    assert settings.inject_propagator.extractors == ()


def test_settings_policy_last() -> None:
    settings = Settings(propagators=["tracecontext", "b3"], extract_policy="LAST")
    found = settings.composite.extract_detailed(dict([TRACEPARENT, B3_OTHER]), headers_getter)
    assert found.format == "b3"


# ------------------------------------------------------------ the invalid-header marker

BAD_TRACEPARENT = ("traceparent", f"00-{W3C_TID}-{W3C_SID}-01-extra")


@pytest.mark.parametrize("policy", ["first", "last"])
@pytest.mark.parametrize(
    ("headers", "fmt", "invalid"),
    [
        ([], None, None),
        ([BAGGAGE], None, None),
        ([TRACEPARENT, BAGGAGE], "tracecontext", None),
        ([BAD_TRACEPARENT], None, True),
        ([BAD_TRACEPARENT, BAGGAGE], None, True),
        ([("b3", "garbage")], None, True),
        ([("x-b3-traceid", B3_TID)], None, True),
        # Another format supplied the parent: the marker still says a header was unusable.
        ([BAD_TRACEPARENT, B3_OTHER], "b3", True),
        ([TRACEPARENT, ("b3", "garbage")], "tracecontext", True),
        # A bad tracestate or baggage never invalidates the trace context.
        ([TRACEPARENT, ("tracestate", "@bad"), ("baggage", "bad member")], "tracecontext", None),
    ],
    ids=[
        "none",
        "baggage-only",
        "valid",
        "bad-traceparent",
        "bad-traceparent-with-baggage",
        "bad-b3",
        "bad-b3-multi",
        "bad-traceparent-good-b3",
        "good-traceparent-bad-b3",
        "bad-tracestate-and-baggage",
    ],
)
def test_invalid_marker_reaches_the_extracted_context(
    policy: str, headers: list[tuple[str, str]], fmt: str | None, invalid: bool | None
) -> None:
    found = composite(["tracecontext", "b3", "baggage"], policy).extract_detailed(
        dict(headers), headers_getter
    )
    assert found.format == fmt
    assert parent(found).is_valid is (fmt is not None)
    assert get_value(INVALID_KEY, found.context) is invalid
    if headers == [BAD_TRACEPARENT, BAGGAGE]:
        assert dict(baggage.get_all(found.context)) == {"user": "alice"}


def test_baggage_properties_through_the_composite() -> None:
    settings = Settings(propagators=["tracecontext", "baggage"])
    carrier = {"traceparent": TRACEPARENT[1], "baggage": "user=alice;source=edge, n=1;x"}
    found = settings.composite.extract_detailed(carrier, headers_getter)
    assert dict(baggage.get_all(found.context)) == {"user": "alice", "n": "1"}
    out: dict[str, str] = {}
    settings.inject_propagator.inject(out, found.context)
    assert out["baggage"] == "user=alice;source=edge,n=1;x"


# ---------------------------------------------------------------------------------- warnings


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


def test_warnings_rate_limited_and_never_show_values(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tracewire import _log

    clock = _Clock()
    monkeypatch.setattr(_log, "time", clock)
    secret = "s3cr3tvalue"
    headers = {
        "traceparent": f"00-{secret}",
        "b3": secret,
        "baggage": f"ok=1,{secret} x",
    }
    both = Settings(propagators=["tracecontext", "b3", "baggage"]).composite
    with_state = {"traceparent": TRACEPARENT[1], "tracestate": f"{secret}=Bad Value,A=1"}

    def warnings() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == "tracewire"]

    def read(found: Any) -> None:  # tracestate and baggage are parsed when first read
        if found.parent is not None:
            len(found.parent.trace_state)
        dict(baggage.get_all(found.context))

    with caplog.at_level(logging.DEBUG, logger="tracewire"):
        for _ in range(10):
            read(both.extract_detailed(headers, headers_getter))
            read(both.extract_detailed(with_state, headers_getter))
        first = warnings()
        assert len(first) == 4  # one per kind: traceparent, b3, baggage, tracestate
        assert {m.split("]")[0] for m in first} == {
            "[traceparent",
            "[b3",
            "[baggage",
            "[tracestate",
        }
        clock.now += _log.INTERVAL_SECONDS + 1
        read(both.extract_detailed(headers, headers_getter))
        later = warnings()[4:]
        assert len(later) == 3
        assert all("9 similar events suppressed" in m for m in later)
    assert secret not in caplog.text
    for record in caplog.records:
        assert secret not in str(record.args)


class _Broken(TextMapPropagator):
    """A third-party propagator with a bug."""

    def extract(self, carrier, context=None, getter=None):  # type: ignore[no-untyped-def]
        raise RuntimeError("bug")

    def inject(self, carrier, context=None, setter=None):  # type: ignore[no-untyped-def]
        raise RuntimeError("bug")

    @property
    def fields(self):  # type: ignore[no-untyped-def]
        return set()


def test_a_raising_propagator_costs_only_its_own_format(caplog):  # type: ignore[no-untyped-def]
    from tracewire import Settings
    from tracewire.carriers import headers_getter, headers_setter

    settings = Settings(propagators=[_Broken(), "tracecontext"])
    tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    extracted = settings.composite.extract_detailed({"traceparent": tp}, headers_getter)
    assert extracted.format == "tracecontext"
    assert trace.get_current_span(extracted.context).get_span_context().trace_id == int(
        tp[3:35], 16
    )
    out: dict[str, str] = {}
    settings.composite.inject(out, extracted.context, headers_setter)
    assert out["traceparent"].split("-")[1] == tp[3:35]
    assert "raised RuntimeError" in caplog.text

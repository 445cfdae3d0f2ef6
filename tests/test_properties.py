"""Property-based tests: round-trips for every format and carrier, and garbage never escapes.

Two promises are checked on generated input:

* whatever tracewire injects, it extracts again unchanged, from every carrier shape;
* no header text, however broken, makes ``extract`` raise, and nothing extracted from it can
  make ``inject`` send a header that breaks its format's grammar.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry import baggage, trace
from opentelemetry.context import Context, set_value
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from tests.test_carriers import SHAPES, outgoing_carriers, sent_headers, shape_names, to_incoming
from tracewire import CompositePropagator, Settings
from tracewire.propagators import B3Propagator, BaggagePropagator, TraceContextPropagator
from tracewire.propagators.b3 import DEBUG_KEY, DEFER_KEY
from tracewire.propagators.tracecontext import RANDOM_TRACE_ID_KEY, _ValidatedTraceState

SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])

TRACECONTEXT = TraceContextPropagator()
BAGGAGE = BaggagePropagator()
B3_SINGLE = B3Propagator(single_header=True)
B3_MULTI = B3Propagator(single_header=False)
PROPAGATORS: dict[str, Any] = {
    "tracecontext": TRACECONTEXT,
    "baggage": BAGGAGE,
    "b3": B3_SINGLE,
    "b3multi": B3_MULTI,
}
EVERYTHING = Settings(propagators=["tracecontext", "baggage", "b3", "b3multi"])

# ------------------------------------------------------------------------------ strategies

trace_ids = st.integers(1, 2**128 - 1)
span_ids = st.integers(1, 2**64 - 1)
LC_DIGIT = "abcdefghijklmnopqrstuvwxyz0123456789"
ts_keys = st.builds(
    lambda first, rest: first + rest,
    st.sampled_from(LC_DIGIT),
    st.text(LC_DIGIT + "_-*/@", max_size=30),
)
ts_values = st.builds(
    lambda body, last: body + last,
    st.text(
        st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters=",="), max_size=40
    ),
    st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters=",="),
)
tracestates = st.lists(st.tuples(ts_keys, ts_values), max_size=32, unique_by=lambda kv: kv[0])
TOKEN = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
bg_keys = st.text(TOKEN, min_size=1, max_size=20)
bg_values = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)
baggages = st.dictionaries(bg_keys, bg_values, max_size=20)
b3_states = st.sampled_from(["1", "0", "d", ""])


def ship(carrier: Any, shape: str) -> tuple[Any, Any]:
    """What the receiving side sees of an injected carrier, in the given shape."""
    return SHAPES[shape](to_incoming(sent_headers(carrier)))


def parent(context: Context) -> SpanContext:
    return trace.get_current_span(context).get_span_context()


# ------------------------------------------------------------------------------ round-trips


@SETTINGS
@given(
    trace_id=trace_ids,
    span_id=span_ids,
    sampled=st.booleans(),
    random_flag=st.booleans(),
    entries=tracestates,
    out=st.sampled_from(list(outgoing_carriers())),
    shape=st.sampled_from(shape_names),
)
def test_tracecontext_round_trip(
    trace_id: int,
    span_id: int,
    sampled: bool,
    random_flag: bool,
    entries: list[tuple[str, str]],
    out: str,
    shape: str,
) -> None:
    span_context = SpanContext(
        trace_id,
        span_id,
        is_remote=False,
        trace_flags=TraceFlags(1 if sampled else 0),
        trace_state=_ValidatedTraceState(entries),
    )
    context = trace.set_span_in_context(NonRecordingSpan(span_context))
    if random_flag:
        context = set_value(RANDOM_TRACE_ID_KEY, trace_id, context)
    carrier, setter = outgoing_carriers()[out]()
    TRACECONTEXT.inject(carrier, context, setter)
    received, getter = ship(carrier, shape)
    back = parent(TRACECONTEXT.extract(received, getter=getter))
    assert (back.trace_id, back.span_id) == (trace_id, span_id)
    assert back.trace_flags.sampled is sampled
    assert back.trace_flags.random_trace_id is random_flag
    assert list(back.trace_state.items()) == entries


@SETTINGS
@given(
    items=baggages,
    out=st.sampled_from(list(outgoing_carriers())),
    shape=st.sampled_from(shape_names),
)
def test_baggage_round_trip(items: dict[str, str], out: str, shape: str) -> None:
    context = Context()
    for key, value in items.items():
        context = baggage.set_baggage(key, value, context)
    carrier, setter = outgoing_carriers()[out]()
    BAGGAGE.inject(carrier, context, setter)
    received, getter = ship(carrier, shape)
    assert dict(baggage.get_all(BAGGAGE.extract(received, getter=getter))) == items


# Member text tracewire sends on byte for byte: canonical values (characters it never
# percent-encodes) and properties of token keys and baggage-octet values.
SAFE_VALUE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in '",;\\%=')
bg_properties = st.lists(
    st.one_of(
        bg_keys,
        st.builds(lambda k, v: f"{k}={v}", bg_keys, st.text(SAFE_VALUE + "%=", max_size=20)),
    ),
    max_size=3,
).map(lambda props: "".join(f";{p}" for p in props))
bg_members = st.lists(
    st.tuples(bg_keys, st.text(SAFE_VALUE, max_size=40), bg_properties),
    max_size=20,
    unique_by=lambda member: member[0],
)


@SETTINGS
@given(members=bg_members, out=st.sampled_from(list(outgoing_carriers())))
def test_baggage_with_properties_sent_on_byte_for_byte(
    members: list[tuple[str, str, str]], out: str
) -> None:
    header = ",".join(f"{k}={v}{p}" for k, v, p in members)
    for shape in shape_names:
        received, getter = SHAPES[shape]([("baggage", header)] if header else [])
        context = BAGGAGE.extract(received, getter=getter)
        assert dict(baggage.get_all(context)) == {k: v for k, v, _ in members}
        carrier, setter = outgoing_carriers()[out]()
        BAGGAGE.inject(carrier, context, setter)
        assert sent_headers(carrier) == ({"baggage": [header]} if header else {})


@SETTINGS
@given(
    trace_id=st.one_of(trace_ids, st.integers(1, 2**64 - 1)),
    span_id=span_ids,
    state=b3_states,
    name=st.sampled_from(["b3", "b3multi"]),
    out=st.sampled_from(list(outgoing_carriers())),
    shape=st.sampled_from(shape_names),
)
def test_b3_round_trip(
    trace_id: int, span_id: int, state: str, name: str, out: str, shape: str
) -> None:
    span_context = SpanContext(
        trace_id,
        span_id,
        is_remote=False,
        trace_flags=TraceFlags(1 if state in ("1", "d") else 0),
    )
    context = trace.set_span_in_context(NonRecordingSpan(span_context))
    if state == "d":
        context = set_value(DEBUG_KEY, trace_id, context)
    elif state == "":
        context = set_value(DEFER_KEY, trace_id, context)
    propagator = PROPAGATORS[name]
    carrier, setter = outgoing_carriers()[out]()
    propagator.inject(carrier, context, setter)
    first = sent_headers(carrier)
    received, getter = ship(carrier, shape)
    extracted = propagator.extract(received, getter=getter)
    back = parent(extracted)
    assert (back.trace_id, back.span_id) == (trace_id, span_id)
    assert back.trace_flags.sampled is (state in ("1", "d"))
    again: dict[str, str] = {}
    propagator.inject(again, extracted)
    assert {k: [v] for k, v in again.items()} == first  # the state survives, not just the ids


@SETTINGS
@given(
    trace_id=trace_ids,
    span_id=span_ids,
    sampled=st.booleans(),
    items=baggages,
    shape=st.sampled_from(shape_names),
)
def test_composite_round_trip(
    trace_id: int, span_id: int, sampled: bool, items: dict[str, str], shape: str
) -> None:
    span_context = SpanContext(trace_id, span_id, False, TraceFlags(1 if sampled else 0))
    context = trace.set_span_in_context(NonRecordingSpan(span_context))
    for key, value in items.items():
        context = baggage.set_baggage(key, value, context)
    carrier: dict[str, str] = {}
    EVERYTHING.inject_propagator.inject(carrier, context)
    received, getter = ship(carrier, shape)
    found = EVERYTHING.composite.extract_detailed(received, getter)
    assert found.format == "tracecontext"
    assert found.conflicts == ()
    back = parent(found.context)
    assert (back.trace_id, back.span_id, back.trace_flags.sampled) == (trace_id, span_id, sampled)
    assert dict(baggage.get_all(found.context)) == items


# ------------------------------------------------------------------------ output grammars

HEX = "0123456789abcdef"
TRACEPARENT_RE = re.compile(r"00-[0-9a-f]{32}-[0-9a-f]{16}-0[0-3]")
TS_KEY_RE = re.compile(r"[a-z0-9][a-z0-9_\-*/@]{0,255}")
TS_VALUE_RE = re.compile(r"[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]")
BAGGAGE_KEY_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9a-zA-Z]+")
BAGGAGE_VALUE_RE = re.compile(
    r"(?:[\x21\x23-\x24\x26-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]|%[0-9A-F]{2})*"
)
B3_RE = re.compile(r"[0-9a-f]{32}-[0-9a-f]{16}(?:-[01d])?")


def nonzero_hex(text: str) -> bool:
    return bool(text.strip("0"))


def check_traceparent(value: str) -> None:
    assert TRACEPARENT_RE.fullmatch(value), value
    assert nonzero_hex(value[3:35]) and nonzero_hex(value[36:52])


def check_tracestate(value: str) -> None:
    assert value, "an empty tracestate is never sent"
    assert len(value) <= 8192
    members = value.split(",")
    assert len(members) <= 32
    keys = []
    for member in members:
        key, eq, val = member.partition("=")
        assert eq and TS_KEY_RE.fullmatch(key) and TS_VALUE_RE.fullmatch(val), member
        keys.append(key)
    assert len(set(keys)) == len(keys)


BAGGAGE_PROPERTY_RE = re.compile(
    r"[ \t]*[!#$%&'*+\-.^_`|~0-9a-zA-Z]+[ \t]*"
    r"(?:=[ \t]*[\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]*[ \t]*)?"
)


def check_baggage(value: str) -> None:
    """Whole, well-formed members within the limits (no limit per member: the spec has none)."""
    assert value, "an empty baggage header is never sent"
    assert len(value.encode()) <= 8192
    members = value.split(",")
    assert len(members) <= 180
    for member in members:
        pair, _, properties = member.partition(";")
        key, eq, val = pair.partition("=")
        assert eq and BAGGAGE_KEY_RE.fullmatch(key) and BAGGAGE_VALUE_RE.fullmatch(val), member
        if properties:  # sent on as received: the grammar's properties, OWS included
            for prop in properties.split(";"):
                assert BAGGAGE_PROPERTY_RE.fullmatch(prop), member
        bytes_ = re.sub("%([0-9A-F]{2})", lambda m: chr(int(m[1], 16)), val).encode("latin-1")
        bytes_.decode("utf-8")  # what is encoded is UTF-8


def check_b3(value: str) -> None:
    assert B3_RE.fullmatch(value), value
    assert nonzero_hex(value[:32]) and nonzero_hex(value[33:49])


def check_outgoing(headers: dict[str, str]) -> None:
    """Every header tracewire would send is well-formed for its format."""
    for name, value in headers.items():
        assert name == name.lower()
        assert value.isascii() and "\r" not in value and "\n" not in value
    if "traceparent" in headers:
        check_traceparent(headers["traceparent"])
    else:
        assert "tracestate" not in headers
    if "tracestate" in headers:
        check_tracestate(headers["tracestate"])
    if "baggage" in headers:
        check_baggage(headers["baggage"])
    if "b3" in headers:
        check_b3(headers["b3"])
    if "x-b3-traceid" in headers:
        assert re.fullmatch("[0-9a-f]{32}", headers["x-b3-traceid"])
        assert re.fullmatch("[0-9a-f]{16}", headers["x-b3-spanid"])
        assert headers.get("x-b3-sampled") in (None, "0", "1")
        assert headers.get("x-b3-flags") in (None, "1")
        assert not ("x-b3-sampled" in headers and "x-b3-flags" in headers)
    assert "x-b3-parentspanid" not in headers


# ---------------------------------------------------------------------------- garbage in

NAMES = [
    "traceparent",
    "tracestate",
    "baggage",
    "b3",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-sampled",
    "x-b3-flags",
    "x-b3-parentspanid",
]
# Characters that sit near the grammars' edges, by kind, so that each kind comes up often.
EDITS = st.one_of(
    st.sampled_from(HEX),
    st.sampled_from("ABCDEFXZ"),
    st.sampled_from("-,=;@%+*/_. \t"),
    st.sampled_from('\u00e9\u00ff\x00\x7f\r\n"'),
)
TP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
TEMPLATES = {
    "traceparent": [TP, "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-ff-xx"],
    "tracestate": [
        "vendor=abc,t@v=1,foo@@bar=x y",
        "abc=1,def=2,t@v=3,foo@@bar=4",
        ",".join(f"k{i}=v" for i in range(32)),
    ],
    "baggage": ["user=alice,note=caf%C3%A9;prop=1,n=%FF", "a=1 , b = 2;p"],
    "b3": [
        "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-d-05e3ac9a4f6e3b90",
        "a3ce929d0e0e4736-e457b5a2e4d86bd1",
        "0",
    ],
    "x-b3-traceid": ["80f198ee56343ba864fe8b2a57d3eff7", "a3ce929d0e0e4736"],
    "x-b3-spanid": ["e457b5a2e4d86bd1"],
    "x-b3-sampled": ["1", "0", "true"],
    "x-b3-flags": ["1"],
    "x-b3-parentspanid": ["05e3ac9a4f6e3b90"],
}
FAMILY = {
    "tracecontext": ["traceparent", "tracestate"],
    "baggage": ["baggage"],
    "b3": ["b3", "x-b3-traceid", "x-b3-spanid", "x-b3-sampled", "x-b3-flags"],
    "b3multi": ["x-b3-traceid", "x-b3-spanid", "x-b3-sampled", "x-b3-flags", "b3"],
    "composite": NAMES,
}
ANCHORS = {
    "traceparent": [("traceparent", TP)],
    "b3": [
        ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"),
        ("x-b3-spanid", "e457b5a2e4d86bd1"),
    ],
}


@st.composite
def near_valid(draw: st.DrawFn, name: str) -> str:
    """A valid header value for ``name`` with a few edits at random places."""
    text = list(draw(st.sampled_from(TEMPLATES.get(name, ["x"]))))
    for _ in range(draw(st.integers(0, 4))):
        position = draw(st.integers(0, len(text)))
        action = draw(st.sampled_from(["insert", "replace", "delete"]))
        char = draw(EDITS)
        if action == "insert":
            text.insert(position, char)
        elif text and position < len(text):
            if action == "replace":
                text[position] = char
            else:
                del text[position]
    return "".join(text)


latin1_text = st.text(st.characters(max_codepoint=0xFF), max_size=80)


@st.composite
def header_lists(draw: st.DrawFn, family: str) -> list[tuple[str, str]]:
    """Headers as a peer might send them: often a valid anchor, then broken neighbours.

    The anchor matters: a tracestate is only read next to one valid traceparent, and B3
    sampling headers only next to valid ids, so without it most rules would never be reached.
    """
    names = FAMILY[family]
    headers: list[tuple[str, str]] = []
    anchor = draw(st.sampled_from([None, *ANCHORS, *ANCHORS]))
    if anchor is not None:
        headers.extend(ANCHORS[anchor])
        # Don't bury the anchor under repeats of itself (that is tested, but rarely useful).
        names = [n for n in names if n not in {h for h, _ in ANCHORS[anchor]}] or names
    for _ in range(draw(st.integers(1, 4))):
        name = draw(st.sampled_from(names))
        value = draw(st.one_of(near_valid(name), near_valid(name), near_valid(name), latin1_text))
        spelled = draw(st.sampled_from([name, name.upper(), name.title()]))
        position = draw(st.integers(0, len(headers)))
        headers.insert(position, (spelled, value))
    if anchor is not None and draw(st.integers(0, 9)) == 0:
        # Now repeated: a repeated traceparent is ignored; for X-B3-* the first value wins.
        headers.append(ANCHORS[anchor][0])
    return headers


def _extract_and_resend(propagator: Any, headers: list[tuple[str, str]], shape: str) -> None:
    carrier, getter = SHAPES[shape](headers)
    if isinstance(propagator, CompositePropagator):
        found = propagator.extract_detailed(carrier, getter)
        context = found.context
        for conflict in found.conflicts:
            assert conflict.is_valid
    else:
        context = propagator.extract(carrier, getter=getter)
    out: dict[str, str] = {}
    propagator.inject(out, context)
    check_outgoing(out)
    # And through the next hop again: still well-formed, still the same parent.
    received, getter = SHAPES[shape](list(out.items()))
    again = propagator.extract(received, getter=getter)
    assert parent(again) == parent(context) or not parent(context).is_valid
    out_again: dict[str, str] = {}
    propagator.inject(out_again, again)
    check_outgoing(out_again)


@pytest.mark.parametrize("family", list(FAMILY))
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), shape=st.sampled_from(shape_names))
def test_garbage_never_raises_nor_escapes(family: str, data: st.DataObject, shape: str) -> None:
    headers = data.draw(header_lists(family), label="headers")
    propagator = EVERYTHING.composite if family == "composite" else PROPAGATORS[family]
    _extract_and_resend(propagator, headers, shape)


@SETTINGS
@given(
    values=st.lists(st.text(max_size=200), min_size=1, max_size=3),
    name=st.sampled_from(NAMES),
)
def test_any_unicode_in_str_carriers(values: list[str], name: str) -> None:
    # A dict or environ can hold any str at all, not only what came off the wire.
    headers = [(name, v) for v in values]
    for shape in ("dict", "wsgi"):
        _extract_and_resend(EVERYTHING.composite, headers, shape)


@SETTINGS
@given(values=st.lists(st.text(max_size=200), max_size=30))
def test_any_baggage_values_inject_safely(values: list[str]) -> None:
    context = Context()
    for i, value in enumerate(values):
        context = baggage.set_baggage(f"k{i}", value, context)
    out: dict[str, str] = {}
    BAGGAGE.inject(out, context)
    if out:
        check_baggage(out["baggage"])

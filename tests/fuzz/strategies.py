"""Hypothesis strategies for the fuzz invariants: requests a hostile or broken peer might send.

Values start from valid headers and get edited with the characters that sit at the grammars'
edges (CR, LF, NUL, DEL, non-ASCII, separators, uppercase hex), or are made huge, repeated or
spread over many header lines, so that the rules are reached and not only the first check.
"""

from __future__ import annotations

from hypothesis import strategies as st

from tests.fuzz.inputs import CLIENTS, FAILURES, NAMES, RESPONSE_MODES, STATUSES, Case
from tests.fuzz.seeds import B3S, BAGGAGES, MULTI, TRACEPARENTS, TRACESTATES

TEMPLATES: dict[bytes, list[bytes]] = {
    b"traceparent": [v.encode() for v in TRACEPARENTS[:6]],
    b"tracestate": [v.encode() for v in TRACESTATES[:3]],
    b"baggage": [v.encode() for v in BAGGAGES[:4]],
    b"b3": [v.encode() for v in B3S[:5]],
    b"x-b3-traceid": [MULTI[0][1], b"a3ce929d0e0e4736"],
    b"x-b3-spanid": [MULTI[1][1]],
    b"x-b3-sampled": [b"1", b"0", b"true", b"False"],
    b"x-b3-flags": [b"1", b"0"],
    b"host": [b"api.internal:8080", b"[::1]:8000", b"mock.test"],
}
CONTROL = [b"\r", b"\n", b"\r\n", b"\x00", b"\x7f", b"\xe9", b"\xff", b"\xc3\xa9", b" ", b"\t"]
SEPARATORS = [b",", b"=", b";", b"-", b"%", b"@", b"A", b"F", b"0", b"f", b'"', b"\\"]
EDGE = st.sampled_from(CONTROL + SEPARATORS)


@st.composite
def edited(draw: st.DrawFn, name: bytes) -> bytes:
    """A valid value of ``name`` with up to four edits at random places."""
    value = bytearray(draw(st.sampled_from(TEMPLATES.get(name, [b"plain value"]))))
    for _ in range(draw(st.integers(0, 4))):
        at = draw(st.integers(0, len(value)))
        action = draw(st.sampled_from(["insert", "replace", "delete"]))
        piece = draw(EDGE)
        if action == "insert":
            value[at:at] = piece
        elif at < len(value):
            value[at : at + (1 if action == "delete" else len(piece))] = (
                b"" if action == "delete" else piece
            )
    return bytes(value)


@st.composite
def header_value(draw: st.DrawFn, name: bytes) -> bytes:
    kind = draw(st.sampled_from(["edited", "edited", "edited", "raw", "huge"]))
    if kind == "raw":
        return draw(st.binary(max_size=80))
    value = draw(edited(name))
    if kind == "huge":
        # Up to ~100 KB: one long value, or a long list of copies of a member.
        copies = draw(st.integers(2, 2000))
        joiner = draw(st.sampled_from([b"", b",", b" "]))
        value = joiner.join([value] * copies)
    return value


@st.composite
def header_lines(draw: st.DrawFn) -> tuple[tuple[bytes, bytes], ...]:
    """Often one valid traceparent (tracestate is only read next to one), then the rest."""
    lines: list[tuple[bytes, bytes]] = []
    if draw(st.booleans()):
        lines.append((b"traceparent", TRACEPARENTS[0].encode()))
    for _ in range(draw(st.integers(0, 6))):
        name = draw(st.sampled_from(NAMES))
        spelled = draw(st.sampled_from([name, name.upper(), name.title()]))
        value = draw(header_value(name))
        repeat = draw(st.sampled_from([1, 1, 1, 2, 3, 50]))
        at = draw(st.integers(0, len(lines)))
        lines[at:at] = [(spelled, value)] * repeat
    return tuple(lines)


cases = st.builds(
    Case,
    config=st.integers(0, 7),
    response_mode=st.sampled_from(RESPONSE_MODES[:3]),
    status=st.sampled_from(STATUSES),
    streamed=st.booleans(),
    client_call=st.booleans(),
    client=st.sampled_from(CLIENTS),
    failure=st.sampled_from(FAILURES),
    headers=header_lines(),
)


@st.composite
def value_lines(draw: st.DrawFn, name: bytes) -> bytes:
    """Input for the single-header targets: a decoding byte, then newline-separated values."""
    utf8 = draw(st.integers(0, 1))
    values = draw(st.lists(header_value(name), min_size=1, max_size=3))
    return bytes((utf8,)) + b"\n".join(v.replace(b"\n", b"") for v in values)

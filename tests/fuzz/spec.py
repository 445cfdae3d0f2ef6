"""What a header tracewire emits must look like, written from SPECS.md (not from tracewire).

Each ``check_*`` raises ``AssertionError`` naming the rule that broke. The ``oracle_*``
functions are independent readings of the parsing rules, for differential checks against the
parsers in ``tracewire.propagators``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

# Header names tracewire may add to an outgoing request, and to a response.
INJECT_FIELDS = frozenset(("traceparent", "tracestate", "baggage", "b3")) | frozenset(
    ("x-b3-traceid", "x-b3-spanid", "x-b3-sampled", "x-b3-flags")
)
RESPONSE_FIELDS = frozenset(("traceresponse", "server-timing"))

HEX = "0123456789abcdef"
TOKEN_CHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"

# Version 00, flags with only the two known bits (sampled, random-trace-id) ever sent.
TRACEPARENT_RE = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-0[0-3]")
TS_KEY_RE = re.compile(r"[a-z0-9][a-z0-9_\-*/@]{0,255}")
TS_VALUE_RE = re.compile(r"[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]")
BAGGAGE_KEY_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9a-zA-Z]+")
# What tracewire sends: baggage-octets, with "%" only as the start of an escape.
BAGGAGE_VALUE_RE = re.compile(
    r"(?:[\x21\x23-\x24\x26-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]|%[0-9A-F]{2})*"
)
# A property value is sent on exactly as received, so it is held to the grammar only:
# baggage-octets, "%" included, escapes not checked (tracewire never decodes it).
BAGGAGE_OCTETS_RE = re.compile(r"[\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]*")
B3_RE = re.compile(r"([0-9a-f]{32})-([0-9a-f]{16})(?:-[01d])?")
# traceresponse (Level 2 draft): the server span's ids, version 00, the sampled bit only.
TRACERESPONSE_RE = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-0[01]")


def _nonzero(hex_text: str) -> bool:
    return bool(hex_text.strip("0"))


def check_visible(name: str, value: str) -> None:
    """Never CR, LF, NUL or anything but visible ASCII (and inner spaces) in what we send."""
    assert name, "empty header name"
    assert not name.strip(TOKEN_CHARS), f"header name {name!r} is not an RFC 9110 token"
    assert name == name.lower(), f"header name {name!r} is not lowercase"
    for char in value:
        code = ord(char)
        assert 0x20 <= code <= 0x7E, f"{name}: non-visible character U+{code:04X} in the value"
    assert value == value.strip(" \t"), f"{name}: leading or trailing whitespace"


def check_traceparent(value: str) -> None:
    match = TRACEPARENT_RE.fullmatch(value)
    assert match, f"traceparent {value!r} breaks the version-00 grammar"
    assert _nonzero(match[1]), "all-zero trace id"
    assert _nonzero(match[2]), "all-zero parent id"


def check_tracestate(value: str) -> None:
    assert value, "an empty tracestate is never sent"
    assert len(value) <= 8192, "tracestate longer than tracewire's own cap"
    members = value.split(",")
    assert len(members) <= 32, "more than 32 tracestate members"
    keys = []
    for member in members:
        key, eq, val = member.partition("=")
        assert eq, "tracestate member without '='"
        assert TS_KEY_RE.fullmatch(key), "bad tracestate key"
        assert TS_VALUE_RE.fullmatch(val), "bad tracestate value"
        keys.append(key)
    assert len(set(keys)) == len(keys), "duplicate tracestate key"


def check_baggage(value: str) -> None:
    assert value, "an empty baggage header is never sent"
    assert len(value.encode()) <= 8192, "baggage header over 8192 bytes"
    members = value.split(",")
    assert len(members) <= 180, "more baggage members than tracewire's cap"
    for member in members:
        # A member received with properties is sent on with them, exactly as received.
        pair, _, properties = member.partition(";")
        key, eq, val = pair.partition("=")
        assert eq, "baggage member without '='"
        assert BAGGAGE_KEY_RE.fullmatch(key), "bad baggage key"
        assert BAGGAGE_VALUE_RE.fullmatch(val), "bad baggage value"
        for prop in properties.split(";") if properties else ():
            name, _, prop_value = prop.strip(" \t").partition("=")
            assert BAGGAGE_KEY_RE.fullmatch(name.strip(" \t")), "bad baggage property key"
            assert BAGGAGE_OCTETS_RE.fullmatch(prop_value.strip(" \t")), (
                "bad baggage property value"
            )
        raw = re.sub("%([0-9A-F]{2})", lambda m: chr(int(m[1], 16)), val).encode("latin-1")
        raw.decode("utf-8")  # what is percent-encoded is UTF-8


def check_b3(value: str) -> None:
    match = B3_RE.fullmatch(value)
    assert match, f"b3 {value!r} breaks the grammar tracewire sends"
    assert _nonzero(match[1]) and _nonzero(match[2]), "all-zero b3 id"


def check_outgoing(headers: Mapping[str, str]) -> None:
    """Every header in ``headers`` (what tracewire added to a request) is valid for its format."""
    for name, value in headers.items():
        check_visible(name, value)
        assert name in INJECT_FIELDS, f"tracewire added an unexpected header {name!r}"
    if "traceparent" in headers:
        check_traceparent(headers["traceparent"])
    if "tracestate" in headers:
        check_tracestate(headers["tracestate"])
    if "baggage" in headers:
        check_baggage(headers["baggage"])
    if "b3" in headers:
        check_b3(headers["b3"])
    if "x-b3-traceid" in headers or "x-b3-spanid" in headers:
        assert re.fullmatch("[0-9a-f]{32}", headers.get("x-b3-traceid", "")), "x-b3-traceid"
        assert re.fullmatch("[0-9a-f]{16}", headers.get("x-b3-spanid", "")), "x-b3-spanid"
        assert _nonzero(headers["x-b3-traceid"]) and _nonzero(headers["x-b3-spanid"])
    assert headers.get("x-b3-sampled") in (None, "0", "1"), "x-b3-sampled"
    assert headers.get("x-b3-flags") in (None, "1"), "x-b3-flags"
    assert not ("x-b3-sampled" in headers and "x-b3-flags" in headers), "sampled and debug"
    assert "x-b3-parentspanid" not in headers


def check_response_header(name: str, value: str) -> tuple[int, int]:
    """A ``traceresponse`` / ``server-timing`` value tracewire added; returns its ids."""
    check_visible(name, value)
    assert name in RESPONSE_FIELDS, f"tracewire added an unexpected response header {name!r}"
    text = value
    if name == "server-timing":
        assert value.startswith("trace;desc="), "server-timing metric is not trace;desc=..."
        text = value[len("trace;desc=") :]
    match = TRACERESPONSE_RE.fullmatch(text)
    assert match, f"{name} {value!r} breaks the grammar"
    assert _nonzero(match[1]) and _nonzero(match[2]), f"{name}: all-zero id"
    return int(match[1], 16), int(match[2], 16)


# ------------------------------------------------------------------------ parsing oracles

_ANY_VERSION_RE = re.compile(
    r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?", re.DOTALL
)


def oracle_traceparent(value: str) -> tuple[int, int, int] | None:
    """SPECS.md's traceparent rules, read independently of tracewire's parser."""
    match = _ANY_VERSION_RE.fullmatch(value)
    if match is None:
        return None
    version, trace_id, span_id, flags, rest = match.groups()
    if version == "ff":
        return None
    if version == "00" and rest is not None:
        return None  # version 00 is exactly 55 characters
    if len(value) > 8192:
        return None  # "disallow prohibitively large headers": tracewire's bound for later versions
    if rest is not None and "," in value:
        return None  # two fields joined by a server: a repeated header
    if not _nonzero(trace_id) or not _nonzero(span_id):
        return None
    return int(trace_id, 16), int(span_id, 16), int(flags, 16)


_B3_SINGLE_RE = re.compile(
    r"([0-9a-f]{32}|[0-9a-f]{16})-([0-9a-f]{16})(?:-([01d])(?:-([0-9a-f]{16}))?)?"
)


def oracle_b3_single(value: str) -> tuple[int, int, str] | None:
    """The ``b3`` single-header grammar: ids (state) (parent), or a bare ``0``."""
    if value == "0":
        return 0, 0, "0"
    match = _B3_SINGLE_RE.fullmatch(value)
    if match is None:
        return None
    trace_id, span_id, state, parent = match.groups()
    if not _nonzero(trace_id) or not _nonzero(span_id):
        return None
    if parent is not None and not _nonzero(parent):
        return None
    return int(trace_id, 16), int(span_id, 16), state or ""


def oracle_b3_multi(
    trace_id: str | None, span_id: str | None, sampled: str | None, flags: str | None
) -> tuple[int, int, str] | None:
    """``X-B3-*``: ``Flags: 1`` is debug; ``Sampled`` 1/0/true/false; ids as in ``b3``."""
    if flags == "1":
        state = "d"
    elif sampled is None:
        state = ""
    else:
        words = {"1": "1", "true": "1", "0": "0", "false": "0"}
        if sampled.lower() not in words:
            return None
        state = words[sampled.lower()]
    if trace_id is None and span_id is None:
        return (0, 0, "0") if state == "0" else None
    if trace_id is None or span_id is None:
        return None
    if not re.fullmatch("[0-9a-f]{32}|[0-9a-f]{16}", trace_id) or not _nonzero(trace_id):
        return None
    if not re.fullmatch("[0-9a-f]{16}", span_id) or not _nonzero(span_id):
        return None
    return int(trace_id, 16), int(span_id, 16), state


def oracle_tracestate(values: list[str]) -> list[tuple[str, str]] | None:
    """All ``tracestate`` fields as one list; any bad member drops it all; left-most key wins."""
    entries: dict[str, str] = {}
    received = 0
    for raw in ",".join(values).split(","):
        member = raw.strip(" \t")
        if not member:
            continue
        key, eq, val = member.partition("=")
        if not eq or not TS_KEY_RE.fullmatch(key) or not TS_VALUE_RE.fullmatch(val):
            return None
        entries.setdefault(key, val)
        received += 1
        if received > 32:  # counted as received, duplicates included
            return None
    return list(entries.items())

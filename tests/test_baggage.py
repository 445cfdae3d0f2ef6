"""W3C Baggage: grammar, percent-decoding, limits without partial members, member properties,
on every carrier."""

from __future__ import annotations

import logging
from urllib.parse import unquote

import pytest
from opentelemetry import baggage
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context, attach, detach, get_value

from tests.test_carriers import SHAPES, outgoing_carriers, sent_headers, shape_names
from tracewire.propagators import INVALID_KEY, BaggagePropagator
from tracewire.propagators.baggage import (
    MAX_HEADER_BYTES,
    MAX_MEMBERS,
    PROPERTIES_KEY,
    format_baggage,
    parse_baggage,
    parse_members,
)

PROPAGATOR = BaggagePropagator()


def extract(fields: list[str], shape: str = "asgi") -> dict[str, object]:
    carrier, getter = SHAPES[shape]([("baggage", f) for f in fields])
    return dict(baggage.get_all(PROPAGATOR.extract(carrier, getter=getter)))


def inject(items: dict[str, object]) -> str | None:
    context = Context()
    for key, value in items.items():
        context = baggage.set_baggage(key, value, context)
    out: dict[str, str] = {}
    PROPAGATOR.inject(out, context)
    return out.get("baggage")


CASES = [
    # (id, header fields, expected baggage)
    ("one", ["k=v"], {"k": "v"}),
    ("several", ["a=1,b=2"], {"a": "1", "b": "2"}),
    ("ows", [" a = 1 ,\tb=2\t"], {"a": "1", "b": "2"}),
    ("empty-members", [",a=1,, ,b=2,"], {"a": "1", "b": "2"}),
    ("fields-joined", ["a=1", "b=2"], {"a": "1", "b": "2"}),
    ("empty-value", ["a="], {"a": ""}),
    ("token-key-chars", ["!#$%&'*+-.^_`|~Az09=1"], {"!#$%&'*+-.^_`|~Az09": "1"}),
    # Properties are not part of the value (they are kept beside it: see "properties" below).
    ("properties-not-in-value", ["a=1;p1;p2=x;p3 = y , b=2"], {"a": "1", "b": "2"}),
    ("percent-space", ["a=hello%20world"], {"a": "hello world"}),
    ("plus-stays-plus", ["a=1+1"], {"a": "1+1"}),
    ("percent-2b", ["a=1%2B1"], {"a": "1+1"}),
    ("utf8", ["a=%E2%9C%93%20caf%C3%A9"], {"a": "\u2713 caf\u00e9"}),
    ("bad-utf8-replaced", ["a=x%FFy"], {"a": "x\ufffdy"}),
    ("truncated-utf8-replaced", ["a=%E2%9C"], {"a": "\ufffd"}),
    ("lone-percent-kept", ["a=100%"], {"a": "100%"}),
    ("encoded-separators", ["a=%2C%3B%3D%22%5C"], {"a": ',;="\\'}),
    ("equals-in-value", ["a=b=c"], {"a": "b=c"}),
    ("last-duplicate-wins", ["a=1,a=2"], {"a": "2"}),
    # Malformed members go one by one; the rest stays.
    ("no-equals", ["good=1,bad,also=2"], {"good": "1", "also": "2"}),
    ("empty-key", ["=v,ok=1"], {"ok": "1"}),
    ("key-space", ["a b=1,ok=1"], {"ok": "1"}),
    ("key-separator", ["a(b=1,a@b=1,ok=1"], {"ok": "1"}),
    ("value-space", ["a=b c,ok=1"], {"ok": "1"}),
    ("value-quote", ['a=b"c,ok=1'], {"ok": "1"}),
    ("value-backslash", ["a=b\\c,ok=1"], {"ok": "1"}),
    ("value-raw-non-ascii", ["a=caf\u00e9,ok=1"], {"ok": "1"}),
    ("value-control", ["a=b\x01,ok=1"], {"ok": "1"}),
    ("bad-property", ["a=1;@=x,ok=1"], {"ok": "1"}),
    ("bad-property-value", ["a=1;p=x y,ok=1"], {"ok": "1"}),
    ("empty-property", ["a=1;,ok=1"], {"ok": "1"}),
]


@pytest.mark.parametrize("shape", shape_names)
@pytest.mark.parametrize(("fields", "expected"), [pytest.param(f, e, id=i) for i, f, e in CASES])
def test_extract(shape: str, fields: list[str], expected: dict[str, str]) -> None:
    assert extract(fields, shape) == expected


def test_no_header_leaves_context_alone() -> None:
    context = Context()
    assert PROPAGATOR.extract({}, context) is context


def test_extract_ignores_current_context() -> None:
    token = attach(baggage.set_baggage("ambient", "x"))
    try:
        assert extract(["a=1"]) == {"a": "1"}
    finally:
        detach(token)


# ---------------------------------------------------------------------------------- limits


def extract_context(fields: list[str], shape: str = "asgi") -> Context:
    carrier, getter = SHAPES[shape]([("baggage", f) for f in fields])
    return PROPAGATOR.extract(carrier, getter=getter)


def resend(context: Context) -> str | None:
    out: dict[str, str] = {}
    PROPAGATOR.inject(out, context)
    return out.get("baggage")


def test_member_count_limit() -> None:
    header = ",".join(f"k{i}=v" for i in range(MAX_MEMBERS + 5))
    found = extract([header])
    assert found == {f"k{i}": "v" for i in range(MAX_MEMBERS)}


@pytest.mark.parametrize("shape", shape_names)
def test_one_member_of_8190_bytes_round_trips(shape: str) -> None:
    # The spec has no limit per member: "MUST propagate all list-members" while the header is
    # at most 8192 bytes. OpenTelemetry Python drops members over 4096 bytes.
    member = "a=" + "x" * 8188
    assert len(member) == 8190
    context = extract_context([member], shape)
    assert resend(context) == member  # byte-identical


def test_member_of_exactly_8192_bytes_round_trips() -> None:
    member = "k=" + "0123456789" * 819  # 2 + 8190
    assert len(member) == MAX_HEADER_BYTES
    assert resend(extract_context([member])) == member


def test_member_over_8192_bytes_dropped_whole() -> None:
    too_big = "b=" + "y" * (MAX_HEADER_BYTES - 1)
    assert extract([f"{too_big},c=1"]) == {"c": "1"}
    assert inject({"b": "y" * (MAX_HEADER_BYTES - 1), "c": "1"}) == "c=1"


def test_member_size_counts_properties() -> None:
    member = "a=1;p=" + "x" * (MAX_HEADER_BYTES - 6)
    assert len(member) == MAX_HEADER_BYTES
    context = extract_context([f"{member},b=2"])
    assert dict(baggage.get_all(context)) == {"a": "1"}  # b=2 no longer fits
    assert resend(context) == member
    assert extract([member + "x"]) == {}


def test_header_size_limit_whole_members_only() -> None:
    # Two members of 4000 bytes, one of 190: 8190 + 2 commas = 8192 fits exactly.
    a, b = "a=" + "1" * 3998, "b=" + "2" * 3998
    c = "c=" + "3" * 188
    found = extract([f"{a},{b},{c},d=4"])
    assert set(found) == {"a", "b", "c"}
    assert found["c"] == "3" * 188  # never a part of a member


def test_limits_apply_to_all_fields_together() -> None:
    a, b = "a=" + "1" * 5000, "b=" + "2" * 5000
    assert set(extract([a, b, "c=3"])) == {"a", "c"}


def test_dropped_members_do_not_use_the_budget() -> None:
    too_big = "x=" + "y" * MAX_HEADER_BYTES
    a, b = "a=" + "1" * 3998, "b=" + "2" * 3998
    assert set(extract([f"{too_big},{a},bad member,{b}"])) == {"a", "b"}


def test_64_members_and_8192_bytes_propagate() -> None:
    # The spec's floor: 64 members, 8192 bytes in all.
    members = [f"k{i:02d}=" + "v" * 123 for i in range(64)]  # 64 * 127 + 63 = 8191
    header = ",".join(members)
    assert len(header) <= MAX_HEADER_BYTES
    found = extract([header])
    assert len(found) == 64
    assert inject(found) == header


def test_10000_members_stop_at_the_member_limit() -> None:
    header = ",".join(f"k{i}=v" for i in range(10_000))
    members, dropped = parse_members([header])
    assert [k for k, _, _ in members] == [f"k{i}" for i in range(MAX_MEMBERS)]
    assert dropped == 10_000 - MAX_MEMBERS


def test_parse_reports_dropped_count() -> None:
    entries, dropped = parse_baggage(["a=1,bad,c=é", "d=2"])
    assert entries == [("a", "1"), ("d", "2")]
    assert dropped == 2


# ---------------------------------------------------------------------------------- inject


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        ("plain", "plain"),
        ("a b", "a%20b"),
        ("1+1", "1+1"),
        ("50%", "50%25"),
        (',;="\\', "%2C%3B%3D%22%5C"),
        ("caf\u00e9 \u2713", "caf%C3%A9%20%E2%9C%93"),
        ("", ""),
        ("tab\there", "tab%09here"),
    ],
)
def test_inject_encodes_values(value: str, encoded: str) -> None:
    header = inject({"k": value})
    assert header == f"k={encoded}"
    assert extract([header]) == {"k": value}
    assert unquote(encoded) == value


def test_inject_skips_keys_that_are_not_tokens() -> None:
    assert inject({"bad key": "1", "ok": "2", "": "3", "caf\u00e9": "4"}) == "ok=2"


def test_inject_nothing_without_baggage() -> None:
    assert inject({}) is None
    assert inject({"bad key": "1"}) is None


def test_inject_limits_whole_members() -> None:
    items: dict[str, object] = {f"k{i}": "v" for i in range(MAX_MEMBERS + 20)}
    header = inject(items)
    assert header is not None
    assert header.split(",") == [f"k{i}=v" for i in range(MAX_MEMBERS)]

    big = {"a": "x" * MAX_HEADER_BYTES, "b": "1" * 4000, "c": "2" * 4000, "d": "3" * 500}
    header = inject(big)
    assert header is not None
    assert len(header) <= MAX_HEADER_BYTES
    assert [m.partition("=")[0] for m in header.split(",")] == ["b", "c"]


def test_format_skips_oversized_and_keeps_smaller_ones() -> None:
    header = format_baggage([("a", "1" * 9000), ("b", "2" * 8188), ("c", "3"), ("d", "")])
    assert header == "b=" + "2" * 8188  # 8190 bytes: "c=3" (4 more with its comma) is over
    header = format_baggage([("a", "1" * 9000), ("b", "2" * 8000), ("c", "3")])
    assert header == "b=" + "2" * 8000 + ",c=3"


def test_encoded_length_counts_on_inject() -> None:
    # 3000 spaces are 9000 bytes once encoded: over the limit, so dropped whole.
    assert inject({"a": " " * 3000, "b": "1"}) == "b=1"


@pytest.mark.parametrize("kind", list(outgoing_carriers()))
def test_inject_on_every_carrier(kind: str) -> None:
    context = baggage.set_baggage("user", "alice b", Context())
    carrier, setter = outgoing_carriers()[kind]()
    PROPAGATOR.inject(carrier, context, setter)
    assert sent_headers(carrier) == {"baggage": ["user=alice%20b"]}


def test_fields() -> None:
    assert PROPAGATOR.fields == {"baggage"}


# ----------------------------------------------------------------------------- properties


@pytest.mark.parametrize("shape", shape_names)
@pytest.mark.parametrize(
    ("header", "sent"),
    [
        ("k=v;p=1", "k=v;p=1"),
        ("k=v;flag", "k=v;flag"),
        ("k=v;p1;p2=x;p3=y", "k=v;p1;p2=x;p3=y"),
        ("a=1,k=v;p=1,b=2", "a=1,k=v;p=1,b=2"),
        # Properties are sent on as received, whitespace inside them included (it is OWS the
        # grammar allows); OWS around the key and value is trimmed.
        (" k = v ; p = 1 ", "k=v; p = 1"),
        ("k=caf%C3%A9;p=%41", "k=caf%C3%A9;p=%41"),
        # A duplicated key: the right-most member wins, with its own properties (or none).
        ("k=1;p=x,k=2", "k=2"),
        ("k=1,k=2;p=y", "k=2;p=y"),
    ],
)
def test_properties_sent_on_with_their_member(shape: str, header: str, sent: str) -> None:
    assert resend(extract_context([header], shape)) == sent


def test_properties_across_fields() -> None:
    assert resend(extract_context(["a=1;p", "b=2;q=3"])) == "a=1;p,b=2;q=3"


def test_changed_value_is_sent_without_properties() -> None:
    context = extract_context(["k=v;p=1,other=o;q"])
    changed = baggage.set_baggage("k", "new", context)
    assert resend(changed) == "k=new,other=o;q"


def test_added_member_is_sent_without_properties() -> None:
    context = extract_context(["k=v;p=1"])
    added = baggage.set_baggage("extra", "v", context)  # same value, but not received
    assert resend(added) == "k=v;p=1,extra=v"


def test_removed_member_is_not_sent() -> None:
    context = extract_context(["k=v;p=1,a=1"])
    assert resend(baggage.remove_baggage("k", context)) == "a=1"


def test_value_set_again_to_what_was_received_keeps_properties() -> None:
    # "The value is still the one received": the properties still describe it.
    context = extract_context(["k=v;p=1"])
    assert resend(baggage.set_baggage("k", "v", context)) == "k=v;p=1"


def test_value_of_another_type_drops_properties() -> None:
    context = extract_context(["k=1;p"])
    assert resend(baggage.set_baggage("k", 1, context)) == "k=1"


def test_properties_kept_only_when_some_member_has_properties() -> None:
    from tracewire.propagators.baggage import _kept

    assert _kept(extract_context(["a=1,b=2"])) is None
    assert _kept(extract_context(["a=1;p,b=2"])) == {"a": ("1", ";p")}
    assert _kept(extract_context(["a=1;p,a=2"])) is None


def test_baggage_is_parsed_only_when_read() -> None:
    # A request that never reads its baggage does not pay for parsing it; a read gives the
    # same as an eager parse, through every way OpenTelemetry's API reads it.
    context = extract_context(["a=1;p, b=%E2%82%AC ,bad member, a=2"])
    lazy = get_value(PROPERTIES_KEY, context)
    assert type(lazy).__name__ == "_LazyBaggage" and lazy._values is not None
    assert baggage.get_baggage("b", context) == "€"
    assert lazy._values is None
    assert dict(baggage.get_all(context)) == {"a": "2", "b": "€"}
    assert sorted(baggage.get_all(context)) == ["a", "b"]
    assert len(baggage.get_all(context)) == 2
    changed = baggage.set_baggage("c", "3", context)
    assert dict(baggage.get_all(changed)) == {"a": "2", "b": "€", "c": "3"}
    assert dict(baggage.get_all(context)) == {"a": "2", "b": "€"}  # the original is unchanged
    assert dict(baggage.get_all(baggage.remove_baggage("a", context))) == {"b": "€"}


def test_properties_of_an_earlier_extraction_follow_their_members() -> None:
    base = extract_context(["a=1;p,b=2;q"])
    # A second header over the same context: its members replace the earlier ones.
    carrier = {"baggage": "b=2,c=3"}
    context = PROPAGATOR.extract(carrier, base)
    assert dict(baggage.get_all(context)) == {"a": "1", "b": "2", "c": "3"}
    assert resend(context) == "a=1;p,b=2,c=3"


def test_member_that_fits_only_without_its_properties_is_dropped_whole() -> None:
    properties = {"b": ("x" * 8000, ";p=" + "y" * 200)}
    header = format_baggage([("a", "1"), ("b", "x" * 8000), ("c", "2")], properties)
    assert header == "a=1,c=2"  # never "b=xxx" without its properties


def test_parse_members_returns_properties() -> None:
    members, dropped = parse_members(["a=1;p;q=2, b=2 ,c=3;bad=x y"])
    assert members == [("a", "1", ";p;q=2"), ("b", "2", "")]
    assert dropped == 1


def test_baggage_never_sets_the_invalid_marker() -> None:
    context = extract_context(["bad member,=x,a=1;@"])
    assert get_value(INVALID_KEY, context) is None


# ------------------------------------------------------------------------------- logging


def test_malformed_members_logged_without_values(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        extract(["ok=1,secret-key=s3cr3t value,other=s3cr3t\x01"])
        extract(["secret2=s3cr3t value"])
    records = [r for r in caplog.records if r.name == "tracewire"]
    assert len(records) == 1  # rate limited: one report per interval
    assert "dropped 2" in records[0].getMessage()
    assert "s3cr3t" not in caplog.text
    assert "secret" not in caplog.text


# ------------------------------------------------------- where OpenTelemetry's differs


@pytest.mark.parametrize(
    "fields",
    [
        ["a=1+1"],
        ["a=1", "b=2"],
        ["ok=1,bad value=2" + ",x" * 5000],
        ["a=" + "x" * 8188],
        ["k=v;p=1"],
    ],
    ids=["plus", "second-field", "oversized-header", "8190-byte-member", "properties"],
)
def test_differs_from_opentelemetry(fields: list[str]) -> None:
    carrier = {"baggage": fields if len(fields) > 1 else fields[0]}
    theirs = dict(baggage.get_all(W3CBaggagePropagator().extract(carrier, Context())))
    assert extract(fields) != theirs


def test_opentelemetry_sends_properties_as_part_of_the_value() -> None:
    carrier = {"baggage": "k=v;p=1"}
    otel = W3CBaggagePropagator()
    theirs: dict[str, str] = {}
    otel.inject(theirs, otel.extract(carrier, Context()))
    assert theirs == {"baggage": "k=v%3Bp%3D1"}
    assert resend(PROPAGATOR.extract(carrier)) == "k=v;p=1"

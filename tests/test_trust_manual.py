"""``tracewire.inject`` / ``tracewire.extract`` for carriers that are not HTTP requests.

Dict carriers (message headers) and gRPC-style lists of pairs; the destination rules
(``propagate_to``, ``baggage_to``, ``inject_to``, ``tracestate_key``); no destination while
destinations are restricted (nothing injected, one warning); ``extract`` with ``source`` for
``net:`` rules and trusted proxies; and, inside a request served by a real server, the
serving middleware's settings rather than the process default.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from urllib.parse import parse_qs, quote

import httpx
import pytest
from opentelemetry import baggage, context, trace
from opentelemetry.sdk.trace import TracerProvider

import tracewire
import tracewire.defaults
from tests.support.servers import UvicornThread, WerkzeugThread, serving
from tracewire import Settings, TracewireMiddleware, TracewireWSGIMiddleware

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{SPAN_ID}-01"

RESTRICTED = Settings(
    propagate_to=["*.internal", "*.legacy.mesh", "*.partner.example"],
    baggage_to=["orders.internal"],
    inject_to={"*.legacy.mesh": ["b3multi"], "*.partner.example": ["none"]},
    tracestate_key="acme",
)


@pytest.fixture
def default() -> Iterator[Callable[..., Settings]]:
    """``tracewire.configure`` for one test; the process default is forgotten afterwards."""
    from opentelemetry import propagate

    before = propagate.get_global_textmap()
    yield tracewire.configure
    tracewire.defaults.reset()
    propagate.set_global_textmap(before)


@pytest.fixture
def in_span(tracing: Any) -> Iterator[trace.SpanContext]:
    """A current SDK span (with baggage) for the producer side."""
    tracer = tracing.provider.get_tracer("test")
    token = context.attach(baggage.set_baggage("tenant", "acme"))
    try:
        with tracer.start_as_current_span("produce") as span:
            yield span.get_span_context()
    finally:
        context.detach(token)


def _tp(sc: trace.SpanContext) -> str:
    return f"00-{sc.trace_id:032x}-{sc.span_id:016x}-{int(sc.trace_flags):02x}"


# ---------------------------------------------------------------------------------- inject
def test_inject_into_a_dict(default: Any, in_span: trace.SpanContext) -> None:
    default(Settings())
    headers: dict[str, str] = {"x-request-id": "42"}
    tracewire.inject(headers, destination="orders.queue.internal")
    assert headers["traceparent"] == _tp(in_span)
    assert headers["baggage"] == "tenant=acme"
    assert headers["x-request-id"] == "42"


def test_inject_into_grpc_metadata_pairs(default: Any, in_span: trace.SpanContext) -> None:
    default(Settings(propagators=["tracecontext", "baggage", "b3multi"]))
    metadata: list[tuple[str, str]] = [("x-request-id", "42")]
    tracewire.inject(metadata, destination="grpc.internal:50051")
    names = [name for name, _ in metadata]
    assert names[0] == "x-request-id"
    assert all(name == name.lower() for name in names)  # gRPC metadata keys are lowercase
    found = dict(metadata)
    assert found["traceparent"] == _tp(in_span)
    assert found["x-b3-traceid"] == f"{in_span.trace_id:032x}"
    assert found["baggage"] == "tenant=acme"


@pytest.mark.parametrize(
    ("destination", "expected"),
    [
        # in propagate_to and baggage_to; our tracestate member.
        ("orders.internal", {"traceparent", "tracestate", "baggage"}),
        ("https://orders.internal:8443/queue", {"traceparent", "tracestate", "baggage"}),
        # in propagate_to, not in baggage_to.
        ("grpc.internal:50051", {"traceparent", "tracestate"}),
        # inject_to b3multi.
        ("http://a.legacy.mesh/x", {"x-b3-traceid", "x-b3-spanid", "x-b3-sampled"}),
        # inject_to none, and a host outside propagate_to.
        ("api.partner.example", set()),
        ("evil.example", set()),
        ("https://evil.example/?to=orders.internal", set()),
    ],
)
def test_inject_follows_the_destination_rules(
    default: Any, in_span: trace.SpanContext, destination: str, expected: set[str]
) -> None:
    default(RESTRICTED)
    headers: dict[str, str] = {}
    tracewire.inject(headers, destination=destination)
    assert set(headers) == expected
    if "tracestate" in expected:
        assert headers["tracestate"] == f"acme={in_span.span_id:016x}"


def test_inject_without_destination_while_restricted_injects_nothing_and_warns_once(
    default: Any, in_span: trace.SpanContext, caplog: pytest.LogCaptureFixture
) -> None:
    default(RESTRICTED)
    with caplog.at_level(logging.WARNING, logger="tracewire"):
        for _ in range(3):
            headers: dict[str, str] = {}
            tracewire.inject(headers)
            assert headers == {}
            pairs: list[tuple[str, str]] = []
            tracewire.inject(pairs)
            assert pairs == []
    warnings = [r for r in caplog.records if "destination" in r.getMessage()]
    assert len(warnings) == 1
    assert "destination=" in warnings[0].getMessage()


@pytest.mark.parametrize(
    "settings",
    [Settings(inject_to={"*.legacy.mesh": ["b3multi"]}), Settings(baggage_to=["x.internal"])],
)
def test_any_destination_rule_counts_as_restricted(
    default: Any, in_span: trace.SpanContext, settings: Settings
) -> None:
    default(settings)
    headers: dict[str, str] = {}
    tracewire.inject(headers)
    assert headers == {}


def test_inject_without_destination_when_open(default: Any, in_span: trace.SpanContext) -> None:
    default(Settings())
    headers: dict[str, str] = {}
    tracewire.inject(headers)
    assert headers["traceparent"] == _tp(in_span)


def test_inject_keeps_a_header_the_carrier_already_has(
    default: Any, in_span: trace.SpanContext
) -> None:
    default(Settings())
    headers = {"Traceparent": TRACEPARENT}
    tracewire.inject(headers, destination="orders.internal")
    assert headers["Traceparent"] == TRACEPARENT
    assert "traceparent" not in headers
    assert headers["baggage"] == "tenant=acme"


def test_inject_an_explicit_context(default: Any, in_span: trace.SpanContext) -> None:
    default(Settings())
    remote = trace.SpanContext(
        int(TRACE_ID, 16), int(SPAN_ID, 16), is_remote=True, trace_flags=trace.TraceFlags(1)
    )
    ctx = trace.set_span_in_context(trace.NonRecordingSpan(remote), context.Context())
    headers: dict[str, str] = {}
    tracewire.inject(headers, destination="orders.internal", context=ctx)
    assert headers == {"traceparent": TRACEPARENT}


@pytest.mark.parametrize("carrier", [None, "traceparent=x", 42, ("a", "b")])
def test_inject_rejects_other_carriers(default: Any, carrier: Any) -> None:
    default(Settings())
    with pytest.raises(TypeError, match="carrier"):
        tracewire.inject(carrier, destination="orders.internal")


@pytest.mark.parametrize("destination", ["a b", "host:99999", "host/path"])
def test_inject_rejects_a_bad_destination(default: Any, destination: str) -> None:
    default(Settings())
    with pytest.raises(ValueError, match="destination"):
        tracewire.inject({}, destination=destination)


# --------------------------------------------------------------------------------- extract
INCOMING = Settings(
    incoming=["net:10.0.0.0/8 continue", "* restart baggage=drop"],
    trusted_proxies=["10.0.0.1"],
)


def _parent(ctx: context.Context) -> trace.SpanContext:
    return trace.get_current_span(ctx).get_span_context()


def test_extract_from_a_dict_and_from_pairs(default: Any) -> None:
    default(Settings())
    for carrier in (
        {"traceparent": TRACEPARENT, "baggage": "tenant=acme"},
        [("traceparent", TRACEPARENT), ("baggage", "tenant=acme")],
        [(b"traceparent", TRACEPARENT.encode()), (b"baggage", b"tenant=acme")],
        {"Traceparent": TRACEPARENT, "BAGGAGE": "tenant=acme"},
    ):
        ctx = tracewire.extract(carrier)
        sc = _parent(ctx)
        assert (f"{sc.trace_id:032x}", f"{sc.span_id:016x}") == (TRACE_ID, SPAN_ID), carrier
        assert sc.is_remote
        assert baggage.get_baggage("tenant", ctx) == "acme"


@pytest.mark.parametrize(
    ("source", "continued"),
    [("10.1.2.3", True), ("203.0.113.9", False), (None, False), ("not an address", False)],
)
def test_extract_applies_net_rules_to_the_source(
    default: Any, source: str | None, continued: bool
) -> None:
    default(INCOMING)
    ctx = tracewire.extract({"traceparent": TRACEPARENT, "baggage": "tenant=acme"}, source=source)
    sc = _parent(ctx)
    if continued:
        assert f"{sc.trace_id:032x}" == TRACE_ID
        assert baggage.get_baggage("tenant", ctx) == "acme"
    else:
        assert not sc.is_valid  # restart: no caller's span; a new trace starts from it
        assert baggage.get_all(ctx) == {}


@pytest.mark.parametrize(
    ("source", "forwarded", "continued"),
    [
        ("10.0.0.1", "10.9.9.9", True),  # trusted proxy forwarding an inside client
        ("10.0.0.1", "203.0.113.9", False),  # trusted proxy forwarding an outside client
        ("10.0.0.1", "203.0.113.9, 10.0.0.1", False),
        ("10.0.0.7", "203.0.113.9", True),  # not a proxy: the header is not read
    ],
)
def test_extract_behind_a_trusted_proxy(
    default: Any, source: str, forwarded: str, continued: bool
) -> None:
    default(INCOMING)
    carrier = [("traceparent", TRACEPARENT), ("x-forwarded-for", forwarded)]
    ctx = tracewire.extract(carrier, source=source)
    assert _parent(ctx).is_valid is continued


def test_path_and_method_rules_never_match_a_message(default: Any) -> None:
    default(Settings(incoming=["path:/* continue", "method:GET,POST continue", "* ignore"]))
    ctx = tracewire.extract({"traceparent": TRACEPARENT}, source="10.1.2.3")
    assert not _parent(ctx).is_valid


def test_extract_without_rules_is_plain(default: Any) -> None:
    default(Settings())
    ctx = tracewire.extract({"traceparent": TRACEPARENT}, source="203.0.113.9")
    assert f"{_parent(ctx).trace_id:032x}" == TRACE_ID


def test_a_new_trace_starts_from_a_restarted_context(default: Any, tracing: Any) -> None:
    default(INCOMING)
    ctx = tracewire.extract({"traceparent": TRACEPARENT}, source="203.0.113.9")
    span = tracing.provider.get_tracer("t").start_span("consume", ctx, kind=trace.SpanKind.CONSUMER)
    span.end()
    (record,) = tracing.spans()
    assert record.parent is None
    assert f"{record.context.trace_id:032x}" != TRACE_ID


# ------------------------------------------------------ inside a request: the middleware's
SERVING = Settings(
    propagate_to=["allowed.internal"],
    tracestate_key="svc",
    incoming=["net:203.0.113.0/24 ignore"],
)


def _inside(query: dict[str, list[str]]) -> dict[str, Any]:
    """What app code gets from the helpers during a request."""
    headers: dict[str, str] = {}
    tracewire.inject(headers, destination=query["to"][0])
    pairs: list[tuple[str, str]] = [("x-id", "1")]
    tracewire.inject(pairs, destination=query["to"][0])
    none: dict[str, str] = {}
    tracewire.inject(none)  # restricted by the middleware's settings: nothing
    message = {"traceparent": TRACEPARENT}
    extracted = _parent(tracewire.extract(message, source=query["from"][0]))
    current = trace.get_current_span().get_span_context()
    return {
        "headers": headers,
        "pairs": pairs,
        "none": none,
        "extracted": f"{extracted.trace_id:032x}" if extracted.is_valid else None,
        "span_id": f"{current.span_id:016x}",
    }


def asgi_app(provider: TracerProvider) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = json.dumps(_inside(parse_qs(scope["query_string"].decode()))).encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    return TracewireMiddleware(app, SERVING, tracer_provider=provider)


def wsgi_app(provider: TracerProvider) -> Any:
    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        body = json.dumps(_inside(parse_qs(environ["QUERY_STRING"]))).encode()
        start_response("200 OK", [("content-type", "application/json")])
        return [body]

    return TracewireWSGIMiddleware(app, SERVING, tracer_provider=provider)


@pytest.mark.parametrize("kind", ["uvicorn", "werkzeug"])
@pytest.mark.parametrize(
    ("to", "sent"), [("allowed.internal", True), ("other.internal:443", False)]
)
def test_inside_a_request_the_serving_middlewares_settings_apply(
    default: Any, tracing: Any, kind: str, to: str, sent: bool
) -> None:
    # The process default is wide open and has no rules: the middleware's settings must win.
    default(Settings())
    if kind == "uvicorn":
        server: Any = UvicornThread(asgi_app(tracing.provider), proxy_headers=False)
    else:
        server = WerkzeugThread(wsgi_app(tracing.provider))
    with serving(server):
        query = f"to={quote(to)}&from=203.0.113.9"
        answer = httpx.get(f"{server.url}/?{query}", timeout=10).json()
        cont = httpx.get(f"{server.url}/?to={quote(to)}&from=10.0.0.1", timeout=10).json()
    if sent:
        tid = answer["headers"]["traceparent"].split("-")[1]
        assert answer["headers"]["tracestate"] == f"svc={answer['span_id']}"
        assert dict(answer["pairs"])["traceparent"].split("-")[1] == tid
    else:
        assert answer["headers"] == {}
        assert answer["pairs"] == [["x-id", "1"]]
    assert answer["none"] == {}
    assert answer["extracted"] is None  # the middleware's net: rule ignored the message
    assert cont["extracted"] == TRACE_ID  # no rule matched this source


@pytest.mark.parametrize(("hops", "client_outside"), [(31, True), (32, False), (40, False)])
def test_at_most_32_forwarded_addresses_are_looked_at(
    default: Any, hops: int, client_outside: bool
) -> None:
    """docs/trust.md: beyond 32 forwarded addresses the rest is not read (here: the client's
    address, left of ``hops`` trusted proxies, is out of reach once there are 32 of them)."""
    default(Settings(incoming=["net:203.0.113.0/24 ignore"], trusted_proxies=["10.0.0.0/8"]))
    chain = ", ".join(["203.0.113.9", *(["10.0.0.2"] * hops)])
    carrier = {"traceparent": TRACEPARENT, "x-forwarded-for": chain}
    ctx = tracewire.extract(carrier, source="10.0.0.1")
    assert _parent(ctx).is_valid is not client_outside


@pytest.mark.parametrize(
    ("source", "continued"),
    [("10.1.2.3:5000", True), ("[::ffff:10.1.2.3]:5000", True), ("203.0.113.9:443", False)],
)
def test_extract_source_with_a_port(default: Any, source: str, continued: bool) -> None:
    default(INCOMING)
    ctx = tracewire.extract({"traceparent": TRACEPARENT}, source=source)
    assert _parent(ctx).is_valid is continued

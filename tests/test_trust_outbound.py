"""What crosses the edge outward: ``propagate_to``, ``baggage_to``, ``inject_to`` and
``tracestate_key``, through real servers and every client path.

A "caller" service (uvicorn; gunicorn in the slow suite, settings from the environment) makes
outgoing calls while serving a request, to echo servers on distinct loopback addresses:

=============  ====================================================================
127.0.0.3      allowed: trace headers and baggage (the default ``inject`` list)
127.0.0.4      not in ``propagate_to``: no trace header at all, a CLIENT span still
127.0.0.5      ``inject_to`` b3multi (and not in ``baggage_to``)
127.0.0.6      ``inject_to`` none (a ``host:port`` glob)
127.0.0.7      allowed, but not in ``baggage_to``: traceparent without baggage
=============  ====================================================================

Then a tracewire-to-tracewire hop: service A (``tracestate_key="acme"``) calls service B,
whose rules are ``["ours continue", "* restart"]``.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest

import tracewire.httpx
import tracewire.requests
from tests.support.echo import EchoServer
from tests.support.trust_services import (
    LOCAL,
    Service,
    ask,
    client,
    downstream_headers,
    gunicorn_service,
    uvicorn_service,
)
from tracewire import Settings

ALLOWED, DENIED, B3_HOST, NONE_HOST, NO_BAGGAGE = (
    "127.0.0.3",
    "127.0.0.4",
    "127.0.0.5",
    "127.0.0.6",
    "127.0.0.7",
)
HOSTS = (ALLOWED, DENIED, B3_HOST, NONE_HOST, NO_BAGGAGE)

CALLER = {
    "propagate_to": [ALLOWED, B3_HOST, NONE_HOST, NO_BAGGAGE],
    "baggage_to": [ALLOWED],
    "inject_to": {B3_HOST: ["b3multi"], f"{NONE_HOST}:*": ["none"]},
}
CALLER_ENV = {
    "TRACEWIRE_PROPAGATE_TO": ", ".join(CALLER["propagate_to"]),  # type: ignore[arg-type]
    "TRACEWIRE_BAGGAGE_TO": ALLOWED,
    "TRACEWIRE_INJECT_TO": f"{B3_HOST}=b3multi; {NONE_HOST}:*=none",
}

TRACE_HEADERS = ("traceparent", "tracestate", "baggage", "b3", "x-b3-traceid", "x-b3-spanid")


def new_ids() -> tuple[str, str]:
    return secrets.token_hex(16), secrets.token_hex(8)


def unique(prefix: str) -> str:
    return f"{prefix}/{secrets.token_hex(4)}"


@pytest.fixture(scope="module")
def echoes() -> Iterator[dict[str, EchoServer]]:
    with contextlib.ExitStack() as stack:
        yield {host: stack.enter_context(EchoServer(host)) for host in HOSTS}


@pytest.fixture(
    scope="module", params=["uvicorn", pytest.param("gunicorn", marks=pytest.mark.slow)]
)
def caller(request: pytest.FixtureRequest) -> Iterator[Service]:
    if request.param == "uvicorn":
        with uvicorn_service(Settings(**CALLER)) as service:  # type: ignore[arg-type]
            yield service
    else:
        with gunicorn_service(CALLER_ENV) as service:
            yield service


@pytest.fixture
def global_switches(caller: Service) -> Iterator[None]:
    """tracewire's global switches on (in this process: the uvicorn caller's)."""
    if caller.name != "uvicorn":
        pytest.skip("the global switches are process-wide: tested in-process")
    client(LOCAL)  # the test's own client exists before the switch: it stays untraced
    tracer_provider = caller.provider
    tracewire.httpx.instrument(tracer_provider=tracer_provider)
    tracewire.requests.instrument(tracer_provider=tracer_provider)
    try:
        yield
    finally:
        tracewire.httpx.uninstrument()
        tracewire.requests.uninstrument()


def _call_all(caller: Service, echoes: dict[str, EchoServer], via: str) -> dict[str, Any]:
    trace_id, span_id = new_ids()
    path = unique("/out")
    answer = ask(
        caller.url,
        path,
        headers={"traceparent": f"00-{trace_id}-{span_id}-01", "baggage": "tenant=acme"},
        calls=[echoes[host].url + "/down" for host in HOSTS],
        via=via,
    )
    got = {host: downstream_headers(answer, i) for i, host in enumerate(HOSTS)}
    return {"trace_id": trace_id, "path": path, "answer": answer, "headers": got}


def _check_destinations(caller: Service, result: dict[str, Any]) -> None:
    trace_id, got = result["trace_id"], result["headers"]
    # Allowed: W3C trace context and baggage.
    assert got[ALLOWED]["traceparent"][0].split("-")[1] == trace_id
    assert got[ALLOWED]["baggage"] == ["tenant=acme"]
    # Not in propagate_to: nothing of ours.
    assert not [h for h in TRACE_HEADERS if h in got[DENIED]], got[DENIED]
    # inject_to b3multi: B3 multi headers only (and b3multi carries no baggage).
    assert got[B3_HOST]["x-b3-traceid"] == [trace_id]
    assert "traceparent" not in got[B3_HOST]
    assert "baggage" not in got[B3_HOST]
    # inject_to none: nothing, though the host is in propagate_to.
    assert not [h for h in TRACE_HEADERS if h in got[NONE_HOST]], got[NONE_HOST]
    # In propagate_to, not in baggage_to: trace context without baggage.
    assert got[NO_BAGGAGE]["traceparent"][0].split("-")[1] == trace_id
    assert "baggage" not in got[NO_BAGGAGE]
    # Every call has its CLIENT span, the denied and the none destinations included.
    server = caller.spans.server(result["path"])
    clients = [r for r in caller.spans.clients_in(trace_id) if r["parent_id"] == server["span_id"]]
    assert sorted(r["attributes"]["server.address"] for r in clients) == sorted(HOSTS)


@pytest.mark.parametrize("via", ["httpx", "httpx-sync", "requests"])
def test_destination_rules_per_client(
    caller: Service, echoes: dict[str, EchoServer], via: str
) -> None:
    _check_destinations(caller, _call_all(caller, echoes, via))


@pytest.mark.parametrize("via", ["plain-httpx", "plain-requests"])
def test_destination_rules_through_the_global_switches(
    caller: Service, echoes: dict[str, EchoServer], global_switches: None, via: str
) -> None:
    _check_destinations(caller, _call_all(caller, echoes, via))


def test_headers_of_the_disallowed_call_are_the_callers_own(
    caller: Service, echoes: dict[str, EchoServer]
) -> None:
    """The denied destination's request carries exactly the headers a client sends anyway."""
    result = _call_all(caller, echoes, "httpx-sync")
    names = set(result["headers"][DENIED])
    assert names <= {"host", "accept", "accept-encoding", "connection", "user-agent"}, names


# ------------------------------------------------------------------------ tracestate_key
@pytest.fixture(scope="module")
def hop() -> Iterator[tuple[Service, Service]]:
    a = Settings(tracestate_key="acme")
    b = Settings(tracestate_key="acme", incoming=["ours continue", "* restart"])
    with uvicorn_service(a, name="a") as service_a, uvicorn_service(b, name="b") as service_b:
        yield service_a, service_b


def _tracestate(headers: dict[str, list[str]]) -> list[tuple[str, str]]:
    joined = ",".join(headers.get("tracestate", []))
    members = [m.strip() for m in joined.split(",") if m.strip()]
    return [(k, v) for k, _, v in (m.partition("=") for m in members)]


def test_a_tracewire_hop_is_recognised_by_our_tracestate_member(
    hop: tuple[Service, Service], echoes: dict[str, EchoServer]
) -> None:
    a, b = hop
    trace_id, span_id = new_ids()
    a_path, b_path = unique("/a"), unique("/b")
    b_url = f"{b.url}{b_path}?call={quote(echoes[ALLOWED].url + '/end', safe='')}"
    answer = ask(
        a.url,
        a_path,
        headers={"traceparent": f"00-{trace_id}-{span_id}-01", "tracestate": "other=1"},
        calls=[b_url],
    )
    a_server = a.spans.server(a_path)
    (a_client,) = a.spans.clients_in(trace_id)
    b_server = b.spans.server(b_path)
    # B continued A's call: one trace, B's SERVER span is A's CLIENT span's child.
    assert b_server["trace_id"] == trace_id
    assert b_server["parent_id"] == a_client["span_id"]
    assert a_client["parent_id"] == a_server["span_id"]
    assert b_server["attributes"]["tracewire.parent.source"] == "header:tracecontext"
    assert b_server["attributes"]["tracewire.policy.rule"] == "ours continue"
    # B's own call: B's member at the left, replacing A's; the foreign member kept.
    end = answer["calls"][0]["body"]["calls"][0]["body"]["headers"]
    (b_client,) = b.spans.clients_in(trace_id)
    assert _tracestate(end) == [("acme", b_client["span_id"]), ("other", "1")]
    assert end["traceparent"][0].split("-")[2] == b_client["span_id"]


@pytest.mark.parametrize("tracestate", [None, "other=1", "acmex=1,x@acme=2"])
def test_a_direct_call_without_our_member_is_restarted(
    hop: tuple[Service, Service], echoes: dict[str, EchoServer], tracestate: str | None
) -> None:
    _, b = hop
    trace_id, span_id = new_ids()
    path = unique("/b")
    headers = {"traceparent": f"00-{trace_id}-{span_id}-01"}
    if tracestate is not None:
        headers["tracestate"] = tracestate
    ask(b.url, path, headers=headers)
    span = b.spans.server(path)
    assert span["trace_id"] != trace_id
    assert span["attributes"]["tracewire.policy.rule"] == "* restart"
    assert span["attributes"]["tracewire.parent.source"] == "policy:restart"
    assert [(ln["trace_id"], ln["span_id"]) for ln in span["links"]] == [(trace_id, span_id)]


def test_a_copied_member_is_continued_it_is_a_hint_not_authentication(
    hop: tuple[Service, Service],
) -> None:
    """docs/trust.md: a caller can copy the member; combine ``ours`` with ``net:``."""
    _, b = hop
    trace_id, span_id = new_ids()
    path = unique("/b")
    headers = {"traceparent": f"00-{trace_id}-{span_id}-01", "tracestate": "acme=0123456789abcdef"}
    ask(b.url, path, headers=headers)
    span = b.spans.server(path)
    assert (span["trace_id"], span["parent_id"]) == (trace_id, span_id)
    assert span["attributes"]["tracewire.policy.rule"] == "ours continue"


@pytest.mark.parametrize(
    ("incoming", "expected"),
    [
        # An older member of ours (anywhere in the list) is replaced; ours goes to the left.
        ("foo=1,acme=0000000000000001,bar=2", ["acme", "foo", "bar"]),
        ("acme=0000000000000001", ["acme"]),
        ("", ["acme"]),
        # 32 foreign members: ours at the left, the right-most dropped (at most 32).
        (",".join(f"k{i}=v{i}" for i in range(32)), ["acme"] + [f"k{i}" for i in range(31)]),
        # 31 foreign and an old one of ours: all kept, ours moved.
        (
            ",".join([*(f"k{i}=v{i}" for i in range(31)), "acme=0000000000000001"]),
            ["acme"] + [f"k{i}" for i in range(31)],
        ),
    ],
)
def test_our_member_is_at_the_left_and_the_list_stays_bounded(
    hop: tuple[Service, Service], echoes: dict[str, EchoServer], incoming: str, expected: list[str]
) -> None:
    a, _ = hop
    trace_id, span_id = new_ids()
    headers = {"traceparent": f"00-{trace_id}-{span_id}-01"}
    if incoming:
        headers["tracestate"] = incoming
    answer = ask(a.url, unique("/a"), headers=headers, calls=[echoes[ALLOWED].url + "/down"])
    members = _tracestate(downstream_headers(answer))
    (a_client,) = a.spans.clients_in(trace_id)
    assert [k for k, _ in members] == expected
    assert members[0] == ("acme", a_client["span_id"])
    assert len(members) <= 32
    foreign = dict(m.partition("=")[::2] for m in incoming.split(",") if m and "acme" not in m)
    assert dict(members[1:]) == {k: foreign[k] for k in expected[1:]}


def test_a_new_trace_gets_our_member_too(
    hop: tuple[Service, Service], echoes: dict[str, EchoServer]
) -> None:
    a, _ = hop
    path = unique("/a")
    answer = ask(a.url, path, calls=[echoes[ALLOWED].url + "/down"])
    server = a.spans.server(path)
    (a_client,) = a.spans.clients_in(server["trace_id"])
    assert _tracestate(downstream_headers(answer)) == [("acme", a_client["span_id"])]


# -------------------------------------------------------------------------------- redirects
@pytest.mark.parametrize("via", ["httpx", "httpx-sync", "requests"])
def test_a_redirect_to_a_disallowed_host_carries_nothing(
    caller: Service, echoes: dict[str, EchoServer], via: str
) -> None:
    """An allowed host answers 302 to a denied one: each hop gets the headers of its own
    destination, so nothing of ours follows the redirect to the third party."""
    start = len(echoes[ALLOWED].seen)
    target = quote(echoes[DENIED].url + "/landed", safe="")
    trace_id, span_id = new_ids()
    answer = ask(
        caller.url,
        unique("/out"),
        headers={"traceparent": f"00-{trace_id}-{span_id}-01", "baggage": "tenant=acme"},
        calls=[f"{echoes[ALLOWED].url}/redirect?to={target}"],
        via=via,
    )
    first = echoes[ALLOWED].seen[start]["headers"]
    assert first["traceparent"][0].split("-")[1] == trace_id
    assert first["baggage"] == ["tenant=acme"]
    landed = downstream_headers(answer)
    assert answer["calls"][0]["body"]["path"] == "/landed"
    assert not [h for h in TRACE_HEADERS if h in landed], landed
    hops = sorted(r["attributes"]["server.address"] for r in caller.spans.clients_in(trace_id))
    assert hops == sorted([ALLOWED, DENIED])

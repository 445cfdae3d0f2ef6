"""The inbound continuation policy (``incoming``, ``trusted_proxies``) on real servers.

One "edge" service, with the same rules, runs under uvicorn (settings in code, uvicorn's own
proxy-header rewriting off) and under gunicorn (gthread; settings from the ``TRACEWIRE_*``
environment). Requests come from 127.0.0.1 and from a second loopback address, 127.0.0.2,
directly, with forged forwarded headers, and through a real reverse-proxy hop. Each SERVER
span is read back (links included) and the probe app reports what its code sees and what its
downstream call (to an echo server) carried.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.echo import EchoServer
from tests.support.trust_services import (
    LOCAL,
    OTHER,
    Service,
    ask,
    downstream_headers,
    gunicorn_service,
    proxy_for,
    uvicorn_service,
)
from tracewire import Settings

# The edge's rules, first match wins. Path rules first; then the client's network.
EDGE_RULES = [
    "path:/restart/* restart",
    "path:/with-link/* restart_with_link",
    "path:/without-link/* RESTART_WITHOUT_LINK",
    "path:/ignore/* ignore",
    "path:/drop/* baggage=drop",
    "path:/allow/* continue baggage=tenant",
    "path:/resample/* continue sampled=ignore",
    "net:203.0.113.0/24 restart baggage=drop",
    "net:127.0.0.2 ignore",
    "net:10.0.0.0/8 continue",
]
EDGE = {
    "incoming": EDGE_RULES,
    "trusted_proxies": ["127.0.0.1/32"],
    "baggage_attributes": ["tenant", "user"],
}
EDGE_ENV = {
    "TRACEWIRE_INCOMING": "; ".join(EDGE_RULES),
    "TRACEWIRE_TRUSTED_PROXIES": "127.0.0.1/32",
    "TRACEWIRE_BAGGAGE_ATTRIBUTES": "tenant, user",
}

BAGGAGE = "tenant=acme,user=u1,secret=s3"

PARENT_SOURCE = "tracewire.parent.source"
POLICY_RULE = "tracewire.policy.rule"
PEER = "network.peer.address"
CLIENT = "client.address"


def new_ids() -> tuple[str, str]:
    return secrets.token_hex(16), secrets.token_hex(8)


def traceparent(trace_id: str, span_id: str, flags: str = "01") -> str:
    return f"00-{trace_id}-{span_id}-{flags}"


def unique(prefix: str) -> str:
    return f"{prefix}/{secrets.token_hex(4)}"


def parse_traceparent(value: str) -> tuple[str, str, str]:
    _, trace_id, span_id, flags = value.split("-")
    return trace_id, span_id, flags


def parse_baggage(headers: dict[str, list[str]]) -> dict[str, str]:
    found: dict[str, str] = {}
    for value in headers.get("baggage", []):
        for member in value.split(","):
            if member.strip():
                key, _, rest = member.strip().partition("=")
                found[key.strip()] = rest.strip()
    return found


# ------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def echo() -> Iterator[EchoServer]:
    with EchoServer("127.0.0.3") as server:
        yield server


class Edges:
    """The edge service under each server, started on first use, with a proxy in front."""

    def __init__(self) -> None:
        self.stack = contextlib.ExitStack()
        self.found: dict[str, tuple[Service, str]] = {}

    def get(self, kind: str) -> tuple[Service, str]:
        if kind not in self.found:
            if kind == "uvicorn":
                service = self.stack.enter_context(uvicorn_service(Settings(**EDGE)))
            else:
                service = self.stack.enter_context(gunicorn_service(EDGE_ENV))
            proxy = self.stack.enter_context(proxy_for(service))
            self.found[kind] = (service, proxy)
        return self.found[kind]


@pytest.fixture(scope="module")
def edges() -> Iterator[Edges]:
    pool = Edges()
    with pool.stack:
        yield pool


@pytest.fixture(params=["uvicorn", "gunicorn"])
def edge(request: pytest.FixtureRequest, edges: Edges) -> Service:
    return edges.get(request.param)[0]


@pytest.fixture
def proxied(request: pytest.FixtureRequest, edges: Edges, edge: Service) -> str:
    """The URL of the real proxy hop in front of ``edge``."""
    return edges.get(edge.name)[1]


def call(
    service: Service | str,
    path: str,
    echo: EchoServer,
    *,
    source: str = LOCAL,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    base = service if isinstance(service, str) else service.url
    return ask(base, path, source=source, headers=headers, calls=[echo.url + "/down"])


# ------------------------------------------------------------------------- no rule at all
def test_no_rule_matched_continues_with_everything(edge: Service, echo: EchoServer) -> None:
    trace_id, span_id = new_ids()
    path = unique("/open")
    answer = call(
        edge,
        path,
        echo,
        headers={"traceparent": traceparent(trace_id, span_id), "baggage": BAGGAGE},
    )
    span = edge.spans.server(path)
    assert (span["trace_id"], span["parent_id"]) == (trace_id, span_id)
    attrs = span["attributes"]
    assert attrs[PARENT_SOURCE] == "header:tracecontext"
    assert POLICY_RULE not in attrs
    assert attrs[CLIENT] == LOCAL
    assert PEER not in attrs
    assert span["links"] == []
    # Opt-in attributes for the listed keys only; "secret" is not listed.
    assert attrs["baggage.tenant"] == "acme"
    assert attrs["baggage.user"] == "u1"
    assert "baggage.secret" not in attrs
    down = downstream_headers(answer)
    down_trace, down_parent, down_flags = parse_traceparent(down["traceparent"][0])
    assert down_trace == trace_id
    client_span = edge.spans.one(lambda r: r["kind"] == "CLIENT" and r["span_id"] == down_parent)
    assert client_span["parent_id"] == span["span_id"]
    assert int(down_flags, 16) & 1 == 1
    assert parse_baggage(down) == {"tenant": "acme", "user": "u1", "secret": "s3"}


def test_no_headers_is_a_new_trace_with_source_none(edge: Service, echo: EchoServer) -> None:
    path = unique("/open")
    call(edge, path, echo)
    span = edge.spans.server(path)
    assert span["parent_id"] is None
    assert span["attributes"][PARENT_SOURCE] == "none"
    assert POLICY_RULE not in span["attributes"]


# ------------------------------------------------------------------------------- actions
@pytest.mark.parametrize(
    ("prefix", "rule"),
    [
        ("/restart", "path:/restart/* restart"),
        # The OTEP 5055 name is the same action; the rule is shown in tracewire's words.
        ("/with-link", "path:/with-link/* restart"),
    ],
)
def test_restart_starts_a_linked_new_trace(
    edge: Service, echo: EchoServer, prefix: str, rule: str
) -> None:
    trace_id, span_id = new_ids()
    path = unique(prefix)
    answer = call(
        edge,
        path,
        echo,
        headers={"traceparent": traceparent(trace_id, span_id), "baggage": BAGGAGE},
    )
    span = edge.spans.server(path)
    assert span["trace_id"] != trace_id
    assert span["parent_id"] is None
    assert [(ln["trace_id"], ln["span_id"]) for ln in span["links"]] == [(trace_id, span_id)]
    assert span["links"][0]["attributes"] == {"tracewire.link.reason": "restart"}
    assert span["attributes"][PARENT_SOURCE] == "policy:restart"
    assert span["attributes"][POLICY_RULE] == rule
    # The app and its downstream call are in the new trace; baggage=accept (the default).
    assert answer["trace_id"] == span["trace_id"]
    down = downstream_headers(answer)
    assert parse_traceparent(down["traceparent"][0])[0] == span["trace_id"]
    assert parse_baggage(down)["tenant"] == "acme"


@pytest.mark.parametrize(
    ("prefix", "rule"),
    [("/ignore", "path:/ignore/* ignore"), ("/without-link", "path:/without-link/* ignore")],
)
def test_ignore_starts_a_new_trace_without_link(
    edge: Service, echo: EchoServer, prefix: str, rule: str
) -> None:
    trace_id, span_id = new_ids()
    path = unique(prefix)
    answer = call(edge, path, echo, headers={"traceparent": traceparent(trace_id, span_id)})
    span = edge.spans.server(path)
    assert span["trace_id"] != trace_id
    assert span["parent_id"] is None
    assert span["links"] == []
    assert span["attributes"][PARENT_SOURCE] == "policy:ignore"
    assert span["attributes"][POLICY_RULE] == rule
    assert trace_id not in str(downstream_headers(answer))


def test_restart_without_trace_headers_says_none(edge: Service, echo: EchoServer) -> None:
    path = unique("/restart")
    call(edge, path, echo)
    span = edge.spans.server(path)
    assert span["links"] == []
    assert span["attributes"][PARENT_SOURCE] == "none"
    assert span["attributes"][POLICY_RULE] == "path:/restart/* restart"


# ------------------------------------------------------------------------------- baggage
def test_baggage_drop(edge: Service, echo: EchoServer) -> None:
    trace_id, span_id = new_ids()
    path = unique("/drop")
    answer = call(
        edge,
        path,
        echo,
        headers={"traceparent": traceparent(trace_id, span_id), "baggage": BAGGAGE},
    )
    span = edge.spans.server(path)
    assert span["trace_id"] == trace_id  # the action is still continue
    assert span["attributes"][PARENT_SOURCE] == "header:tracecontext"
    assert span["attributes"][POLICY_RULE] == "path:/drop/* continue baggage=drop"
    assert not [k for k in span["attributes"] if k.startswith("baggage.")]
    assert answer["baggage"] == {}
    assert "baggage" not in downstream_headers(answer)


def test_baggage_allowlist(edge: Service, echo: EchoServer) -> None:
    path = unique("/allow")
    answer = call(edge, path, echo, headers={"baggage": BAGGAGE})
    span = edge.spans.server(path)
    assert span["attributes"][POLICY_RULE] == "path:/allow/* continue baggage=tenant"
    assert span["attributes"]["baggage.tenant"] == "acme"
    assert "baggage.user" not in span["attributes"]
    assert answer["baggage"] == {"tenant": "acme"}
    assert parse_baggage(downstream_headers(answer)) == {"tenant": "acme"}


# ------------------------------------------------------------------------------ sampling
def test_sampled_ignore_a_not_sampled_caller_cannot_suppress_recording(
    edge: Service, echo: EchoServer
) -> None:
    """ParentBased(ALWAYS_ON): with sampled=ignore the root sampler decides: recorded."""
    trace_id, span_id = new_ids()
    path = unique("/resample")
    answer = call(edge, path, echo, headers={"traceparent": traceparent(trace_id, span_id, "00")})
    span = edge.spans.server(path)
    assert (span["trace_id"], span["parent_id"]) == (trace_id, span_id)  # ids continued
    assert span["attributes"][PARENT_SOURCE] == "header:tracecontext"
    assert span["attributes"][POLICY_RULE] == "path:/resample/* continue sampled=ignore"
    assert answer["sampled"] is True
    down_trace, _, flags = parse_traceparent(downstream_headers(answer)["traceparent"][0])
    assert down_trace == trace_id
    assert int(flags, 16) & 1 == 1


def test_without_the_rule_a_not_sampled_caller_suppresses_recording(
    edge: Service, echo: EchoServer
) -> None:
    """The control for the test above: sampled=honor (no rule) follows the caller's -00."""
    trace_id, span_id = new_ids()
    path = unique("/open")
    answer = call(edge, path, echo, headers={"traceparent": traceparent(trace_id, span_id, "00")})
    assert answer["sampled"] is False
    assert answer["trace_id"] == trace_id
    marker = unique("/open")
    call(edge, marker, echo)
    edge.spans.server(marker)
    assert edge.spans.none_for(path)


# ---------------------------------------------------------- client address and proxies
def test_rule_by_network_of_the_socket_peer(edge: Service, echo: EchoServer) -> None:
    trace_id, span_id = new_ids()
    path = unique("/net")
    call(edge, path, echo, source=OTHER, headers={"traceparent": traceparent(trace_id, span_id)})
    span = edge.spans.server(path)
    assert span["attributes"][CLIENT] == OTHER
    assert PEER not in span["attributes"]
    assert span["attributes"][POLICY_RULE] == "net:127.0.0.2 ignore"
    assert span["attributes"][PARENT_SOURCE] == "policy:ignore"
    assert span["trace_id"] != trace_id


@pytest.mark.parametrize("forged", ["10.0.0.5", "203.0.113.9", "127.0.0.1", "10.0.0.5, 10.0.0.6"])
@pytest.mark.parametrize("header", ["X-Forwarded-For", "Forwarded"])
def test_forged_forwarded_header_from_an_untrusted_peer_changes_nothing(
    edge: Service, echo: EchoServer, forged: str, header: str
) -> None:
    value = forged if header == "X-Forwarded-For" else f"for={forged.split(',', maxsplit=1)[0]}"
    trace_id, span_id = new_ids()
    plain_path, forged_path = unique("/net"), unique("/net")
    tp = traceparent(trace_id, span_id)
    call(edge, plain_path, echo, source=OTHER, headers={"traceparent": tp})
    call(edge, forged_path, echo, source=OTHER, headers={"traceparent": tp, header: value})
    plain, forged_span = edge.spans.server(plain_path), edge.spans.server(forged_path)
    keys = (CLIENT, PEER, POLICY_RULE, PARENT_SOURCE)
    assert (
        [plain["attributes"].get(k) for k in keys]
        == [forged_span["attributes"].get(k) for k in keys]
        == [OTHER, None, "net:127.0.0.2 ignore", "policy:ignore"]
    )


@pytest.mark.parametrize(
    ("forwarded", "client", "rule", "source"),
    [
        # The trusted proxy (127.0.0.1) says the client is an internet address: restart.
        ("203.0.113.9", "203.0.113.9", "net:203.0.113.0/24 restart baggage=drop", "policy:restart"),
        # ... or an internal one: continue.
        ("10.0.0.5", "10.0.0.5", "net:10.0.0.0/8 continue", "header:tracecontext"),
        # Trusted hops are skipped from the right; the first other address is the client.
        (
            "203.0.113.9, 127.0.0.1",
            "203.0.113.9",
            "net:203.0.113.0/24 restart baggage=drop",
            "policy:restart",
        ),
        # A client that prepends an inside address is its real (right-most untrusted) address.
        (
            "10.0.0.5, 203.0.113.9",
            "203.0.113.9",
            "net:203.0.113.0/24 restart baggage=drop",
            "policy:restart",
        ),
        # The forwarded address is 127.0.0.2: the same rule as a direct request from it.
        ("127.0.0.2", "127.0.0.2", "net:127.0.0.2 ignore", "policy:ignore"),
    ],
)
def test_client_behind_the_trusted_proxy(
    edge: Service, echo: EchoServer, forwarded: str, client: str, rule: str, source: str
) -> None:
    trace_id, span_id = new_ids()
    path = unique("/net")
    answer = call(
        edge,
        path,
        echo,
        headers={
            "traceparent": traceparent(trace_id, span_id),
            "X-Forwarded-For": forwarded,
            "baggage": BAGGAGE,
        },
    )
    span = edge.spans.server(path)
    attrs = span["attributes"]
    assert attrs[CLIENT] == client
    assert attrs[PEER] == LOCAL
    assert attrs[POLICY_RULE] == rule
    assert attrs[PARENT_SOURCE] == source
    if source == "policy:restart":
        assert span["trace_id"] != trace_id
        assert span["links"][0]["attributes"] == {"tracewire.link.reason": "restart"}
        assert "baggage" not in downstream_headers(answer)  # baggage=drop
    elif source == "header:tracecontext":
        assert span["parent_id"] == span_id
        assert parse_baggage(downstream_headers(answer))["tenant"] == "acme"


def test_through_a_real_proxy_hop(edge: Service, proxied: str, echo: EchoServer) -> None:
    """Client 127.0.0.2 -> proxy (appends the peer) -> edge: the client is 127.0.0.2."""
    trace_id, span_id = new_ids()
    path = unique("/net")
    call(proxied, path, echo, source=OTHER, headers={"traceparent": traceparent(trace_id, span_id)})
    span = edge.spans.server(path)
    attrs = span["attributes"]
    assert (attrs[CLIENT], attrs[PEER]) == (OTHER, LOCAL)
    assert attrs[POLICY_RULE] == "net:127.0.0.2 ignore"


@pytest.mark.parametrize("fake", ["10.0.0.5", "127.0.0.1", "10.0.0.5, 127.0.0.1"])
def test_a_client_prepending_fake_entries_through_the_proxy_is_its_real_address(
    edge: Service, proxied: str, echo: EchoServer, fake: str
) -> None:
    trace_id, span_id = new_ids()
    path = unique("/net")
    call(
        proxied,
        path,
        echo,
        source=OTHER,
        headers={"traceparent": traceparent(trace_id, span_id), "X-Forwarded-For": fake},
    )
    span = edge.spans.server(path)
    attrs = span["attributes"]
    assert (attrs[CLIENT], attrs[PEER]) == (OTHER, LOCAL)
    assert attrs[POLICY_RULE] == "net:127.0.0.2 ignore"  # not "net:10.0.0.0/8 continue"
    assert span["trace_id"] != trace_id


def test_proxy_hop_from_an_allowed_client(edge: Service, proxied: str, echo: EchoServer) -> None:
    """Client 127.0.0.1 through the proxy: every hop is trusted; no rule matches 127.0.0.1."""
    trace_id, span_id = new_ids()
    path = unique("/net")
    call(proxied, path, echo, headers={"traceparent": traceparent(trace_id, span_id)})
    span = edge.spans.server(path)
    assert span["attributes"][CLIENT] == LOCAL
    assert POLICY_RULE not in span["attributes"]
    assert span["parent_id"] == span_id


def test_only_the_configured_header_is_read(edge: Service, echo: EchoServer) -> None:
    """The edge's proxies write X-Forwarded-For: a Forwarded header, even from the trusted
    peer, is the client's own and is not read."""
    path = unique("/net")
    call(edge, path, echo, headers={"Forwarded": "for=203.0.113.9"})
    attrs = edge.spans.server(path)["attributes"]
    assert attrs[CLIENT] == LOCAL
    assert PEER not in attrs
    assert POLICY_RULE not in attrs


# ------------------------------------------------------------------- Forwarded (RFC 7239)
FORWARDED_RULES = [
    "net:203.0.113.0/24 restart",
    "net:2001:db8::/32 ignore",
    "net:10.0.0.0/8 continue",
]


@pytest.fixture(scope="module")
def forwarded_edge() -> Iterator[tuple[Service, str]]:
    settings = Settings(
        incoming=FORWARDED_RULES, trusted_proxies=["127.0.0.1/32"], client_ip_header="forwarded"
    )
    with (
        uvicorn_service(settings, name="forwarded") as service,
        proxy_for(service, "forwarded") as proxy,
    ):
        yield service, proxy


@pytest.mark.parametrize(
    ("value", "client", "rule"),
    [
        ("for=203.0.113.9", "203.0.113.9", "net:203.0.113.0/24 restart"),
        (
            'for="[2001:db8::7]:4711";proto=http;by=10.1.1.1',
            "2001:db8::7",
            "net:2001:db8::/32 ignore",
        ),
        ("for=10.0.0.5, for=127.0.0.1", "10.0.0.5", "net:10.0.0.0/8 continue"),
        ('For="203.0.113.9:8080"', "203.0.113.9", "net:203.0.113.0/24 restart"),
        # Not an address: that is the client, and no net: rule matches it.
        ("for=unknown", "unknown", None),
        ("for=_hidden, for=10.0.0.5", "10.0.0.5", "net:10.0.0.0/8 continue"),
    ],
)
def test_forwarded_header_from_the_trusted_proxy(
    forwarded_edge: tuple[Service, str], echo: EchoServer, value: str, client: str, rule: str | None
) -> None:
    service, _ = forwarded_edge
    path = unique("/fwd")
    call(service, path, echo, headers={"Forwarded": value})
    attrs = service.spans.server(path)["attributes"]
    assert attrs[CLIENT] == client
    assert attrs[PEER] == LOCAL
    assert attrs.get(POLICY_RULE) == rule


def test_forwarded_mode_ignores_x_forwarded_for(
    forwarded_edge: tuple[Service, str], echo: EchoServer
) -> None:
    service, _ = forwarded_edge
    path = unique("/fwd")
    call(service, path, echo, headers={"X-Forwarded-For": "203.0.113.9"})
    attrs = service.spans.server(path)["attributes"]
    assert attrs[CLIENT] == LOCAL
    assert POLICY_RULE not in attrs


def test_forwarded_from_an_untrusted_peer_is_ignored(
    forwarded_edge: tuple[Service, str], echo: EchoServer
) -> None:
    service, _ = forwarded_edge
    path = unique("/fwd")
    call(service, path, echo, source=OTHER, headers={"Forwarded": "for=203.0.113.9"})
    attrs = service.spans.server(path)["attributes"]
    assert attrs[CLIENT] == OTHER
    assert POLICY_RULE not in attrs


def test_forwarded_through_a_real_proxy_hop(
    forwarded_edge: tuple[Service, str], echo: EchoServer
) -> None:
    """The client's own ``Forwarded: for=203.0.113.9`` is left of its real address."""
    service, proxy = forwarded_edge
    path = unique("/fwd")
    call(proxy, path, echo, source=OTHER, headers={"Forwarded": "for=10.0.0.5"})
    attrs = service.spans.server(path)["attributes"]
    assert (attrs[CLIENT], attrs[PEER]) == (OTHER, LOCAL)
    assert POLICY_RULE not in attrs


# ----------------------------------------------- sampled=ignore under a never-sampling root
RATIO0_RULES = [
    "path:/resample/* continue sampled=ignore",
    "path:/restart/* restart sampled=ignore",
]
RATIO0 = {"incoming": RATIO0_RULES, "propagators": ["tracecontext", "b3", "baggage"]}
RATIO0_ENV = {
    "TRACEWIRE_INCOMING": "; ".join(RATIO0_RULES),
    "TRACEWIRE_PROPAGATORS": "tracecontext,b3,baggage",
}


@pytest.fixture(
    scope="module", params=["uvicorn", pytest.param("gunicorn", marks=pytest.mark.slow)]
)
def ratio0(request: pytest.FixtureRequest) -> Iterator[Service]:
    """ParentBased(TraceIdRatioBased(0.0)): only a caller's sampled flag could make it record."""
    if request.param == "uvicorn":
        with uvicorn_service(Settings(**RATIO0), sampler="ratio0") as service:
            yield service
    else:
        with gunicorn_service(RATIO0_ENV, sampler="ratio0") as service:
            yield service


def _recorded(service: Service, path: str, echo: EchoServer) -> bool:
    """Whether ``path``'s SERVER span was recorded, once a later recorded request's was."""
    trace_id, span_id = new_ids()
    marker = unique("/honor")
    call(service, marker, echo, headers={"traceparent": traceparent(trace_id, span_id)})
    service.spans.server(marker)
    return not service.spans.none_for(path)


def test_sampled_ignore_a_sampled_caller_cannot_force_recording(
    ratio0: Service, echo: EchoServer
) -> None:
    trace_id, span_id = new_ids()
    path = unique("/resample")
    answer = call(ratio0, path, echo, headers={"traceparent": traceparent(trace_id, span_id)})
    assert answer["sampled"] is False
    assert answer["trace_id"] == trace_id  # continue: the ids are still the caller's
    down_trace, _, flags = parse_traceparent(downstream_headers(answer)["traceparent"][0])
    assert down_trace == trace_id
    assert int(flags, 16) & 1 == 0
    assert not _recorded(ratio0, path, echo)


def test_honored_sampled_flag_forces_recording(ratio0: Service, echo: EchoServer) -> None:
    """The control: without the rule, the caller's -01 makes a never-sampling service record."""
    trace_id, span_id = new_ids()
    path = unique("/honor")
    answer = call(ratio0, path, echo, headers={"traceparent": traceparent(trace_id, span_id)})
    assert answer["sampled"] is True
    span = ratio0.spans.server(path)
    assert span["parent_id"] == span_id


@pytest.mark.parametrize("prefix", ["/resample", "/restart"])
def test_sampled_ignore_drops_b3_debug(ratio0: Service, echo: EchoServer, prefix: str) -> None:
    trace_id, span_id = new_ids()
    path = unique(prefix)
    answer = call(ratio0, path, echo, headers={"b3": f"{trace_id}-{span_id}-d"})
    assert answer["sampled"] is False
    b3 = downstream_headers(answer)["b3"][0].split("-")
    assert b3[2] == "0", b3  # neither debug nor sampled goes on
    if prefix == "/resample":
        assert b3[0] == trace_id
    assert not _recorded(ratio0, path, echo)


def test_b3_debug_is_honored_without_the_rule(ratio0: Service, echo: EchoServer) -> None:
    trace_id, span_id = new_ids()
    path = unique("/honor")
    answer = call(ratio0, path, echo, headers={"b3": f"{trace_id}-{span_id}-d"})
    assert answer["sampled"] is True
    assert ratio0.spans.server(path)["trace_id"] == trace_id
    assert downstream_headers(answer)["b3"][0].split("-")[2] == "d"


# ------------------------------------------------------------------- invalid:<format>
@pytest.mark.parametrize(
    "value",
    [
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",  # uppercase hex
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # all-zero trace id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",  # 00 is 55 chars
    ],
)
def test_an_unusable_traceparent_says_invalid(edge: Service, echo: EchoServer, value: str) -> None:
    path = unique("/open")
    call(edge, path, echo, headers={"traceparent": value})
    span = edge.spans.server(path)
    assert span["parent_id"] is None
    assert span["attributes"][PARENT_SOURCE] == "invalid:tracecontext"


# ------------------------------------------------------------------ conflicts and links
@pytest.fixture(scope="module")
def two_formats() -> Iterator[Service]:
    settings = Settings(
        propagators=["tracecontext", "b3", "baggage"], incoming="path:/restart/* restart"
    )
    with uvicorn_service(settings, name="two-formats") as service:
        yield service


def test_a_conflict_keeps_the_first_and_links_the_other(
    two_formats: Service, echo: EchoServer
) -> None:
    (w3c_trace, w3c_span), (b3_trace, b3_span) = new_ids(), new_ids()
    path = unique("/open")
    headers = {"traceparent": traceparent(w3c_trace, w3c_span), "b3": f"{b3_trace}-{b3_span}-1"}
    call(two_formats, path, echo, headers=headers)
    span = two_formats.spans.server(path)
    assert (span["trace_id"], span["parent_id"]) == (w3c_trace, w3c_span)
    assert span["attributes"][PARENT_SOURCE] == "conflict"
    assert [(ln["trace_id"], ln["span_id"]) for ln in span["links"]] == [(b3_trace, b3_span)]
    assert span["links"][0]["attributes"] == {}


def test_restart_links_the_caller_and_the_other_trace(
    two_formats: Service, echo: EchoServer
) -> None:
    (w3c_trace, w3c_span), (b3_trace, b3_span) = new_ids(), new_ids()
    path = unique("/restart")
    headers = {"traceparent": traceparent(w3c_trace, w3c_span), "b3": f"{b3_trace}-{b3_span}-1"}
    call(two_formats, path, echo, headers=headers)
    span = two_formats.spans.server(path)
    assert span["parent_id"] is None
    assert span["trace_id"] not in (w3c_trace, b3_trace)
    assert span["attributes"][PARENT_SOURCE] == "policy:restart"
    links = {(ln["trace_id"], ln["span_id"]): ln["attributes"] for ln in span["links"]}
    assert links == {
        (w3c_trace, w3c_span): {"tracewire.link.reason": "restart"},
        (b3_trace, b3_span): {},
    }


def test_uvicorns_own_proxy_headers_rewrite_the_peer_before_tracewire(echo: EchoServer) -> None:
    """docs/trust.md: with uvicorn's proxy_headers on (it trusts 127.0.0.1 by default) the
    scope's client is already the forwarded address: tracewire sees no proxy at all."""
    from tests.support.servers import UvicornThread, serving
    from tests.support.trust_apps import asgi_probe, provider_with
    from tests.support.trust_spans import memory_sink
    from tracewire import TracewireMiddleware

    provider, exporter = provider_with()
    app = TracewireMiddleware(
        asgi_probe(provider),
        Settings(incoming="net:203.0.113.0/24 ignore"),
        tracer_provider=provider,
    )
    with serving(UvicornThread(app, proxy_headers=True)) as server:
        path = unique("/uv")
        ask(server.url, path, headers={"X-Forwarded-For": "203.0.113.9"})
        attrs = memory_sink(exporter).server(path)["attributes"]
    provider.shutdown()
    assert attrs[CLIENT] == "203.0.113.9"
    assert PEER not in attrs
    assert attrs[POLICY_RULE] == "net:203.0.113.0/24 ignore"


def test_first_match_wins(edge: Service, echo: EchoServer) -> None:
    """From 127.0.0.2 (the ``net:127.0.0.2 ignore`` rule) to /restart/*: the path rule comes
    first, so it decides."""
    trace_id, span_id = new_ids()
    path = unique("/restart")
    call(edge, path, echo, source=OTHER, headers={"traceparent": traceparent(trace_id, span_id)})
    span = edge.spans.server(path)
    assert span["attributes"][POLICY_RULE] == "path:/restart/* restart"
    assert span["links"][0]["span_id"] == span_id


def test_ipv6_peer_and_trusted_proxy(echo: EchoServer) -> None:
    import socket

    from tests.support.servers import UvicornThread, serving
    from tests.support.trust_apps import asgi_probe, provider_with
    from tests.support.trust_spans import memory_sink
    from tracewire import TracewireMiddleware

    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
        sock.bind(("::1", 0))
        port = int(sock.getsockname()[1])
    provider, exporter = provider_with()
    settings = Settings(
        trusted_proxies=["::1"],
        incoming=["net:2001:db8::/32 ignore", "net:::1 restart"],
    )
    app = TracewireMiddleware(asgi_probe(provider), settings, tracer_provider=provider)
    sink = memory_sink(exporter)
    with serving(UvicornThread(app, host="::1", port=port, proxy_headers=False)):
        base = f"http://[::1]:{port}"
        direct, forwarded = unique("/v6"), unique("/v6")
        with httpx.Client(timeout=10) as c:
            assert c.get(base + direct).status_code == 200
            assert c.get(base + forwarded, headers={"X-Forwarded-For": "2001:db8::5"}).is_success
        direct_attrs = sink.server(direct)["attributes"]
        forwarded_attrs = sink.server(forwarded)["attributes"]
    provider.shutdown()
    assert direct_attrs[CLIENT] == "::1"
    assert direct_attrs[POLICY_RULE] == "net:::1 restart"
    assert (forwarded_attrs[CLIENT], forwarded_attrs[PEER]) == ("2001:db8::5", "::1")
    assert forwarded_attrs[POLICY_RULE] == "net:2001:db8::/32 ignore"

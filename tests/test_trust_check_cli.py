"""``tracewire check --request`` through the installed console script, settings from
``TRACEWIRE_*`` variables: the rule that matches, how each propagator reads the headers,
which context wins, the client behind trusted proxies and the parent source; and that its
answer is what a real server does with the same request and settings.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Sequence

import pytest

from tests.support.servers import PYTHON
from tests.support.trust_services import ask, uvicorn_service
from tracewire import Settings

TRACEWIRE = os.path.join(os.path.dirname(PYTHON), "tracewire")

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{SPAN_ID}-01"
B3_TRACE = "a" * 32
B3 = f"{B3_TRACE}-{'b' * 16}-1"

GATEWAY = {
    "TRACEWIRE_TRUSTED_PROXIES": "10.0.0.0/8",
    "TRACEWIRE_INCOMING": (
        "path:/public/* restart sampled=ignore baggage=drop; "
        "net:10.0.0.0/8,192.168.0.0/16 continue baggage=tenant; * restart"
    ),
}


def run(
    env: dict[str, str], request: str | None, *headers: str, args: Sequence[str] = ()
) -> subprocess.CompletedProcess[str]:
    # Only what the test sets: no TRACEWIRE_* or OTEL_* from the outer environment.
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("TRACEWIRE_", "OTEL_"))}
    argv = [TRACEWIRE, "check", *args]
    if request is not None:
        argv += ["--request", request]
    for header in headers:
        argv += ["-H", header]
    return subprocess.run(
        argv, env={**clean, **env}, capture_output=True, text=True, timeout=60, check=False
    )


def lines(env: dict[str, str], request: str, *headers: str) -> list[str]:
    done = run(env, request, *headers)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_the_public_gateway_restarts_an_internet_caller() -> None:
    out = lines(
        GATEWAY,
        "GET /public/x from 203.0.113.9",
        f"traceparent: {TRACEPARENT}",
        "baggage: tenant=acme,user=u1",
    )
    assert out[0] == "request: GET /public/x from 203.0.113.9"
    assert out[1] == "each propagator, alone:"
    assert f"  tracecontext: trace {TRACE_ID}, parent {SPAN_ID}, sampled" in out
    assert any(line.startswith("  baggage: ") and "tenant" in line for line in out)
    assert (
        "winner: tracecontext (the first valid one in extract order, extract_policy=first)" in out
    )
    assert "client address: 203.0.113.9 (the socket peer)" in out
    assert "incoming rule: path:/public/* restart sampled=ignore baggage=drop" in out
    assert "tracewire.parent.source = policy:restart" in out
    assert "the SERVER span starts a new trace" in out
    assert "span links: 1" in out
    assert "baggage the app sees: none" in out


def test_the_internal_network_continues_with_allowed_baggage() -> None:
    out = lines(
        GATEWAY,
        "GET /v1/orders from 10.1.2.3",
        f"traceparent: {TRACEPARENT}",
        "baggage: tenant=acme,user=u1",
    )
    assert "incoming rule: net:10.0.0.0/8,192.168.0.0/16 continue baggage=tenant" in out
    assert "tracewire.parent.source = header:tracecontext" in out
    assert f"the SERVER span's parent: {SPAN_ID} (sampled)" in out
    assert "baggage the app sees: tenant" in out
    assert not [line for line in out if line.startswith("span links")]


@pytest.mark.parametrize(
    ("forwarded", "client", "rule"),
    [
        ("203.0.113.9", "203.0.113.9", "* restart"),
        ("192.168.1.1", "192.168.1.1", "net:10.0.0.0/8,192.168.0.0/16 continue baggage=tenant"),
        ("10.9.9.9, 203.0.113.9", "203.0.113.9", "* restart"),
        ("203.0.113.9, 10.9.9.9", "203.0.113.9", "* restart"),
    ],
)
def test_the_client_behind_trusted_proxies(forwarded: str, client: str, rule: str) -> None:
    out = lines(
        GATEWAY,
        "GET /v1/orders from 10.1.2.3",
        f"traceparent: {TRACEPARENT}",
        f"X-Forwarded-For: {forwarded}",
    )
    assert f"client address: {client} (forwarded by the trusted proxy 10.1.2.3)" in out
    assert f"incoming rule: {rule}" in out


def test_a_forwarded_header_from_an_untrusted_peer_is_not_read() -> None:
    out = lines(GATEWAY, "GET /v1/orders from 203.0.113.9", "X-Forwarded-For: 10.1.2.3")
    assert "client address: 203.0.113.9 (the socket peer)" in out
    assert "incoming rule: * restart" in out


def test_each_propagator_and_the_conflict() -> None:
    env = {"TRACEWIRE_PROPAGATORS": "tracecontext,b3,baggage"}
    out = lines(env, "GET /x", f"traceparent: {TRACEPARENT}", f"b3: {B3}")
    assert f"  tracecontext: trace {TRACE_ID}, parent {SPAN_ID}, sampled" in out
    assert f"  b3: trace {B3_TRACE}, parent {'b' * 16}, sampled" in out
    assert "  baggage: nothing found" in out
    assert (
        "winner: tracecontext (the first valid one in extract order, extract_policy=first)" in out
    )
    assert f"  another trace, kept as a span link: {B3_TRACE}" in out
    assert "incoming rule: no rule matched: continue as received" in out
    assert "tracewire.parent.source = conflict" in out
    assert "span links: 1" in out


def test_extract_policy_last() -> None:
    env = {"TRACEWIRE_PROPAGATORS": "tracecontext,b3", "TRACEWIRE_EXTRACT_POLICY": "last"}
    out = lines(env, "GET /x", f"traceparent: {TRACEPARENT}", f"b3: {B3}")
    assert "winner: b3 (the last valid one, extract_policy=last)" in out
    assert f"  another trace, kept as a span link: {TRACE_ID}" in out


def test_no_trace_headers() -> None:
    out = lines({}, "POST /x")
    assert "winner: none: the request starts a new trace" in out
    assert "tracewire.parent.source = none" in out
    assert not [line for line in out if line.startswith("client address")]


def test_the_ours_condition() -> None:
    env = {"TRACEWIRE_TRACESTATE_KEY": "acme", "TRACEWIRE_INCOMING": "ours continue; * restart"}
    ours = lines(env, "GET /x", f"traceparent: {TRACEPARENT}", "tracestate: foo=1,acme=abc")
    theirs = lines(env, "GET /x", f"traceparent: {TRACEPARENT}", "tracestate: foo=1")
    assert "incoming rule: ours continue" in ours
    assert "incoming rule: * restart" in theirs


def test_an_invalid_header_is_reported() -> None:
    out = lines(
        {}, "GET /x", "traceparent: 00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01"
    )
    assert "  tracecontext: its header is present but invalid: ignored" in out
    assert "tracewire.parent.source = invalid:tracecontext" in out


@pytest.mark.parametrize(
    ("request_text", "headers", "message"),
    [
        ("GET", (), "expected 'METHOD PATH [from ADDRESS]'"),
        ("GET /x to 1.2.3.4", (), "expected 'METHOD PATH [from ADDRESS]'"),
        ("GET /x", ("traceparent",), "-H 'traceparent': expected 'NAME: VALUE'"),
    ],
)
def test_bad_request_arguments(request_text: str, headers: tuple[str, ...], message: str) -> None:
    done = run({}, request_text, *headers)
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_bad_settings_are_reported_with_the_rule() -> None:
    done = run({"TRACEWIRE_INCOMING": "* continue; paht:/x restart"}, "GET /x")
    assert done.returncode == 2
    assert "invalid rule 2 'paht:/x restart' in TRACEWIRE_INCOMING: unknown part 'paht:/x'" in (
        done.stderr
    )


def test_check_prints_the_rules_in_their_text_form() -> None:
    done = run(GATEWAY, None)
    assert done.returncode == 0, done.stderr
    (row,) = [line for line in done.stdout.splitlines() if line.strip().startswith("incoming ")]
    assert GATEWAY["TRACEWIRE_INCOMING"] in row


def test_check_prints_inject_to_in_its_text_form() -> None:
    done = run({"TRACEWIRE_INJECT_TO": "*.legacy.mesh=b3multi; *.partner.example=none"}, None)
    (row,) = [line for line in done.stdout.splitlines() if line.strip().startswith("inject_to ")]
    assert "*.legacy.mesh=b3multi" in row


def test_check_lists_the_trust_settings_with_their_source() -> None:
    env = {**GATEWAY, "TRACEWIRE_TRACESTATE_KEY": "acme"}
    done = run(env, None)
    assert done.returncode == 0, done.stderr
    rows = {line.split()[0]: line for line in done.stdout.splitlines() if line.startswith("  ")}
    assert rows["incoming"].endswith("[TRACEWIRE_INCOMING]")
    assert "10.0.0.0/8" in rows["trusted_proxies"]
    assert rows["tracestate_key"].split()[1] == "acme"


# -------------------------------------------- check --request agrees with a real server
AGREE_ENV = {
    "TRACEWIRE_TRUSTED_PROXIES": "127.0.0.1/32",
    "TRACEWIRE_PROPAGATORS": "tracecontext,b3,baggage",
    "TRACEWIRE_INCOMING": "path:/public/* restart; net:127.0.0.2 ignore; net:10.0.0.0/8 continue",
}


@pytest.mark.parametrize(
    ("path", "source", "headers"),
    [
        ("/public/a", "127.0.0.1", {"traceparent": TRACEPARENT}),
        ("/x", "127.0.0.2", {"traceparent": TRACEPARENT}),
        ("/x", "127.0.0.1", {"traceparent": TRACEPARENT, "x-forwarded-for": "10.1.1.1"}),
        ("/x", "127.0.0.1", {"traceparent": TRACEPARENT, "x-forwarded-for": "127.0.0.2"}),
        ("/x", "127.0.0.2", {"traceparent": TRACEPARENT, "x-forwarded-for": "10.1.1.1"}),
        ("/x", "127.0.0.1", {"traceparent": TRACEPARENT, "b3": B3}),
        ("/x", "127.0.0.1", {}),
    ],
)
def test_check_agrees_with_a_real_server(path: str, source: str, headers: dict[str, str]) -> None:
    out = lines(AGREE_ENV, f"GET {path} from {source}", *(f"{k}: {v}" for k, v in headers.items()))
    told = {
        key: line.split(key, 1)[1]
        for line in out
        for key in ("incoming rule: ", "tracewire.parent.source = ")
        if line.startswith(key)
    }
    with uvicorn_service(Settings.from_env(AGREE_ENV)) as service:
        unique = f"{path}/{secrets.token_hex(4)}"
        ask(service.url, unique, source=source, headers=headers)
        span = service.spans.server(unique)
    attrs = span["attributes"]
    rule = attrs.get("tracewire.policy.rule", "no rule matched: continue as received")
    assert told["incoming rule: "] == rule
    assert told["tracewire.parent.source = "] == attrs["tracewire.parent.source"]

"""Hostile headers through a real server: a 100 KB ``tracestate``, 10,000 baggage members and
other shapes a parser could choke on.

Each request must succeed, its SERVER span must be recorded (the valid ``traceparent``
continued: a bad tracestate or baggage never costs the parent), what goes on downstream must
be within the specs' bounds (whole members only), and the time per request must stay close to
that of a request carrying a harmless header of the same size, measured interleaved in the
same run. The ratio is generous (no absolute timings); a quadratic parser on these sizes
would be hundreds of times slower.
"""

from __future__ import annotations

import secrets
import statistics
import time
from collections.abc import Callable, Iterator
from urllib.parse import quote

import httpx
import pytest

from tests.support.echo import EchoServer
from tests.support.trust_services import Service, gunicorn_service, uvicorn_service
from tracewire import Settings

ROUNDS = 5
RATIO = 25.0  # hostile median / same-size harmless median, at most

SETTINGS = {
    "tracestate_key": "acme",
    "baggage_attributes": ["k1"],
    "incoming": ["path:/never/* restart"],  # rules are evaluated, none matches
}
ENV = {
    "TRACEWIRE_TRACESTATE_KEY": "acme",
    "TRACEWIRE_BAGGAGE_ATTRIBUTES": "k1",
    "TRACEWIRE_INCOMING": "path:/never/* restart",
}

TRACESTATES: dict[str, str] = {
    "420 members of 240 chars": ",".join(f"k{i}={'v' * 240}" for i in range(420)),
    "one 100 KB member": "k=" + "v" * 100_000,
    "100 KB without =": "a" * 100_000,
    "50,000 empty members": "," * 50_000,
    "spaces and tabs": "k=v" + " \t," * 33_000 + "k=w",
    "keys with @ and /": ",".join(f"t{i}@s{'/' * 200}=v" for i in range(450)),
}
BAGGAGES: dict[str, str] = {
    "10,000 members": ",".join(f"k{i}=v{i}" for i in range(10_000)),
    "10,000 members with properties": ",".join(f"k{i}=v{i};p{i}=1;q" for i in range(10_000)),
    "one 100 KB member": "k=" + "v" * 100_000,
    "percent escapes": "k=" + "%zz%4" * 20_000,
    "100 KB of separators": ",;=" * 34_000,
}


def new_traceparent() -> tuple[str, str, str]:
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return trace_id, span_id, f"00-{trace_id}-{span_id}-01"


@pytest.fixture(scope="module")
def echo() -> Iterator[EchoServer]:
    with EchoServer("127.0.0.3") as server:
        yield server


@pytest.fixture(
    scope="module", params=["uvicorn", pytest.param("gunicorn", marks=pytest.mark.slow)]
)
def service(request: pytest.FixtureRequest) -> Iterator[Service]:
    if request.param == "uvicorn":
        # h11 refuses header blocks over 16 KB by default; let them reach tracewire.
        with uvicorn_service(Settings(**SETTINGS), h11_max_incomplete_event_size=1 << 21) as s:  # type: ignore[arg-type]
            yield s
    else:
        # (gunicorn 27 reads 0 as its 8190-byte default, not as "unlimited".)
        args = ["--limit-request-field_size", "262144", "--limit-request-fields", "200"]
        with gunicorn_service(ENV, args=args) as s:
            yield s


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=60) as client:
        yield client


def timed(send: Callable[[], httpx.Response]) -> tuple[float, httpx.Response]:
    start = time.perf_counter()
    response = send()
    return time.perf_counter() - start, response


def compare(
    http: httpx.Client, service: Service, echo: EchoServer, name: str, value: str
) -> tuple[dict[str, list[str]], dict[str, object], str, float]:
    """Interleaved rounds of (same-size harmless header, hostile header); the last hostile
    answer's downstream headers, its probe answer, its path, and the medians' ratio."""
    harmless, hostile = [], []
    call = quote(echo.url + "/down", safe="")
    for _ in range(ROUNDS):
        _, _, tp = new_traceparent()
        base, _ = timed(
            lambda tp=tp, call=call: http.get(
                f"{service.url}/base?call={call}", headers={"traceparent": tp, "x-pad": value}
            )
        )
        harmless.append(base)
        trace_id, span_id, tp = new_traceparent()
        path = f"/hostile/{secrets.token_hex(4)}"
        took, response = timed(
            lambda tp=tp, path=path, call=call: http.get(
                f"{service.url}{path}?call={call}", headers={"traceparent": tp, name: value}
            )
        )
        assert response.status_code == 200, response.text[:200]
        hostile.append(took)
    answer = response.json()
    span = service.spans.server(path)
    assert (span["trace_id"], span["parent_id"]) == (trace_id, span_id)
    assert span["attributes"]["tracewire.parent.source"] == "header:tracecontext"
    ratio = statistics.median(hostile) / statistics.median(harmless)
    return answer["calls"][0]["body"]["headers"], answer, span["span_id"], ratio


@pytest.mark.parametrize("shape", list(TRACESTATES))
def test_hostile_tracestate(
    http: httpx.Client, service: Service, echo: EchoServer, shape: str
) -> None:
    down, _, _, ratio = compare(http, service, echo, "tracestate", TRACESTATES[shape])
    members = [m for m in ",".join(down.get("tracestate", [])).split(",") if m.strip()]
    assert 1 <= len(members) <= 32
    assert members[0].startswith("acme=")  # ours, at the left
    assert all(len(m) <= 512 for m in members)
    assert ratio < RATIO, f"{shape}: {ratio:.1f}x the time of a harmless header of that size"


@pytest.mark.parametrize("shape", list(BAGGAGES))
def test_hostile_baggage(
    http: httpx.Client, service: Service, echo: EchoServer, shape: str
) -> None:
    sent = BAGGAGES[shape]
    down, answer, _, ratio = compare(http, service, echo, "baggage", sent)
    forwarded = ",".join(down.get("baggage", []))
    assert len(forwarded.encode()) <= 8192  # W3C Baggage, "Limits"
    members = [m.strip() for m in forwarded.split(",") if m.strip()]
    received = {m.strip() for m in sent.split(",")}
    for member in members:
        key = member.partition("=")[0]
        # A forwarded member is one that was received, or that member without its
        # properties (a known gap, see the wire-rules branch), never a cut one.
        assert member in received or any(r.startswith(member + ";") for r in received), member
        assert answer["baggage"].get(key.strip()) is not None  # type: ignore[attr-defined]
    assert ratio < RATIO, f"{shape}: {ratio:.1f}x the time of a harmless header of that size"


def test_many_members_keep_the_first_ones(
    http: httpx.Client, service: Service, echo: EchoServer
) -> None:
    """Beyond the bounds a platform may drop members; it keeps whole ones, in order, and the
    opt-in attribute of a kept key is recorded."""
    down, _, span_id, _ = compare(http, service, echo, "baggage", BAGGAGES["10,000 members"])
    members = [m.strip() for m in ",".join(down["baggage"]).split(",")]
    assert members == [f"k{i}=v{i}" for i in range(len(members))]
    assert len(members) >= 64  # W3C Baggage: at least 64 members are propagated
    span = service.spans.one(lambda r: r["span_id"] == span_id)
    assert span["attributes"]["baggage.k1"] == "v1"

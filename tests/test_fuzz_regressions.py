"""Bugs the fuzz invariants found, each kept as a test with its input.

The raw inputs are under ``tests/fuzz/regressions/<target>/`` too (replayed by
``test_fuzz_corpus.py``). Bugs in files the fuzzing work may not change are strict xfails
here until they are fixed (the superscript Host port below is: tracewire.authority checks
the port is ASCII digits).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import pytest

from tests.conftest import Tracing
from tests.fuzz import targets
from tests.fuzz.inputs import Case, encode
from tests.fuzz.seeds import REGRESSIONS, TP
from tracewire import Settings, TracewireMiddleware, TracewireWSGIMiddleware

# "Host: mock.test:\xb2": latin-1 0xB2 is SUPERSCRIPT TWO, for which str.isdigit() is True
# and int() raises ValueError.
SUPERSCRIPT_PORT = Case(headers=((b"host", b"mock.test:\xb2"), (b"traceparent", TP.encode())))
SUPERSCRIPT_PORT_SAME_ORIGIN = Case(config=6, headers=SUPERSCRIPT_PORT.headers)


def test_the_regression_inputs_are_on_disk() -> None:
    for target, case in (("asgi", SUPERSCRIPT_PORT_SAME_ORIGIN), ("wsgi", SUPERSCRIPT_PORT)):
        path = REGRESSIONS / target / "host-superscript-port"
        assert path.read_bytes() == encode(case)
        targets.TARGETS[target](path.read_bytes())


def _asgi_request(app: Any, headers: list[tuple[bytes, bytes]]) -> int:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/", "headers": headers}
    asyncio.run(app(scope, receive, send))
    return int(sent[0]["status"])


async def _ok(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def _wsgi_ok(environ: Any, start_response: Any) -> Iterable[bytes]:
    start_response("200 OK", [])
    return [b"ok"]


def _server_span(tracing: Tracing) -> Any:
    spans = [s for s in tracing.spans() if s.kind.name == "SERVER"]
    assert len(spans) == 1, "no SERVER span for the request"
    return spans[0]


@pytest.mark.parametrize("settings", [{}, {"propagate_to": ["same-origin"]}])
def test_asgi_superscript_host_port_keeps_a_described_span(
    tracing: Tracing, settings: dict[str, Any]
) -> None:
    app = TracewireMiddleware(_ok, Settings(**settings), tracer_provider=tracing.provider)
    assert _asgi_request(app, list(SUPERSCRIPT_PORT.headers)) == 200  # the app is unharmed
    span = _server_span(tracing)
    assert span.attributes["http.request.method"] == "GET"
    # A malformed Host names no server.address (tracewire.authority); no socket address here.
    assert "server.address" not in span.attributes


@pytest.mark.parametrize("settings", [{}, {"propagate_to": ["same-origin"]}])
def test_wsgi_superscript_host_port_keeps_a_described_span(
    tracing: Tracing, settings: dict[str, Any]
) -> None:
    app = TracewireWSGIMiddleware(_wsgi_ok, Settings(**settings), tracer_provider=tracing.provider)
    statuses: list[str] = []
    body = app(
        targets.environ_for(SUPERSCRIPT_PORT), lambda status, headers: statuses.append(status)
    )
    assert b"".join(body) == b"ok" and statuses == ["200 OK"]  # the app is unharmed
    getattr(body, "close", lambda: None)()
    span = _server_span(tracing)
    assert span.attributes["http.request.method"] == "GET"
    # A malformed Host names no server.address: the socket's address stands in.
    assert span.attributes["server.address"] == targets.environ_for(SUPERSCRIPT_PORT)["SERVER_NAME"]

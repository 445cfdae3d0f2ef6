"""Load and isolation: real services with a downstream hop, every request with its own trace.

A service (uvicorn with 2 workers; gunicorn gthread; gunicorn sync) calls a downstream service
(uvicorn) on each request (``/call``: httpx for the ASGI service, requests for the WSGI ones),
under a bounded load of LOAD_REQUESTS requests over CONCURRENCY concurrent connections. Each
request carries its own ``traceparent``, or none, or an invalid one, or an unsampled one
(``-00``). Checked for every request: the answer (zero failures), the trace the app and the
downstream saw, and at the OTLP receiver the full chain SERVER -> CLIENT -> downstream SERVER
of its own trace; zero spans of unsampled requests; no trace shared by two requests.
"""

from __future__ import annotations

import asyncio
import json
import random
import secrets
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from tests.support import loadgen
from tests.support.asgi_apps import SpanSink
from tests.support.figures import record
from tests.support.reliability import (
    APPS,
    GUNICORN,
    PYTHON,
    new_ids,
    running,
    server_env,
    traceparent,
)
from tests.support.servers import UvicornThread
from tracewire import Settings, TracewireMiddleware
from tracewire.demo.receiver import OTLPReceiver, ReceivedSpan

LOAD_REQUESTS = 5000
CONCURRENCY = 200
FAST_BATCHES = {"OTEL_BSP_SCHEDULE_DELAY": "200", "OTEL_BSP_MAX_QUEUE_SIZE": "20000"}

UVICORN = [PYTHON, "-m", "uvicorn", f"{APPS}:asgi_app", "--host", "{host}", "--port", "{port}"]
SERVICES: dict[str, list[str]] = {
    "uvicorn-2-workers": [
        *UVICORN, "--workers", "2", "--log-level", "warning", "--backlog", "2048",
    ],
    "gunicorn-gthread": [
        GUNICORN, "-k", "gthread", "-w", "2", "--threads", "32", "--backlog", "2048",
        "-b", "{host}:{port}", f"{APPS}:wsgi_app",
    ],
    "gunicorn-sync": [
        GUNICORN, "-k", "sync", "-w", "4", "--backlog", "2048",
        "-b", "{host}:{port}", f"{APPS}:wsgi_app",
    ],
}  # fmt: skip
# One process: uvicorn --workers answers each request on a connection ~40 ms late here
# (a Nagle / delayed-ACK stall of its inherited socket), which would make the hop the bottleneck.
DOWNSTREAM = [*UVICORN, "--log-level", "warning", "--backlog", "2048"]

KINDS = ["traced"] * 7 + ["none", "invalid", "unsampled"]
INVALID = [
    "00-00000000000000000000000000000000-0000000000000001-01",  # all-zero trace id
    "00-" + "A" * 32 + "-" + "B" * 16 + "-01",  # uppercase hex
    "ff-" + "1" * 32 + "-" + "2" * 16 + "-01",  # version ff
    "garbage",
]


def _plan(n: int) -> list[dict[str, Any]]:
    rng = random.Random(12)
    plan = []
    for i in range(n):
        kind = KINDS[i % len(KINDS)]
        trace_id, parent_id = new_ids()
        headers = {}
        if kind == "traced":
            headers["traceparent"] = traceparent(trace_id, parent_id)
        elif kind == "unsampled":
            headers["traceparent"] = traceparent(trace_id, parent_id, "00")
        elif kind == "invalid":
            headers["traceparent"] = rng.choice(INVALID)
        plan.append(
            {"kind": kind, "trace_id": trace_id, "parent_id": parent_id, "headers": headers}
        )
    rng.shuffle(plan)
    return plan


def _load(server: Any, plan: list[dict[str, Any]]) -> list[Any]:
    raw = asyncio.run(
        loadgen.run(server.host, server.port, "/call", [p["headers"] for p in plan], CONCURRENCY)
    )
    return [(r[0], json.loads(r[1])) if r[0] == 200 else r for r in raw]


def _check(
    plan: list[dict[str, Any]], results: list[Any], spans: list[ReceivedSpan]
) -> tuple[int, int]:
    """Every request's answer and span chain; the number of cross-request leaks (requests
    that found themselves in a trace another request had) and of spans checked."""
    failures = [r for r in results if r is None or r[0] != 200]
    assert not failures, failures[:5]
    # The readiness probes' spans (GET /hello before the load) may land in a later batch.
    spans = [s for s in spans if s.attributes.get("url.path") != "/hello"]
    by_trace: dict[str, list[ReceivedSpan]] = {}
    for span in spans:
        by_trace.setdefault(span.trace_id, []).append(span)
    service_traces = Counter(body["trace_id"] for _, body in results)
    leaks = sum(count - 1 for count in service_traces.values() if count > 1)
    sampled = 0
    for item, (_, body) in zip(plan, results, strict=True):
        down = body["downstream"]
        assert down["trace_id"] == body["trace_id"], (item, body)
        if item["kind"] in ("traced", "unsampled"):
            assert body["trace_id"] == item["trace_id"], (item, body)
        else:  # a new trace, of this request alone
            assert body["trace_id"] != item["trace_id"]
        if item["kind"] == "unsampled":
            assert not body["sampled"] and not down["sampled"]
            assert down["traceparent"].endswith("-00")
            assert body["trace_id"] not in by_trace  # nothing exported
            continue
        sampled += 1
        assert body["sampled"] and down["sampled"]
        chain = sorted(by_trace.get(body["trace_id"], []), key=lambda s: s.start_ns)
        kinds = [s.kind for s in chain]
        assert kinds == ["SERVER", "CLIENT", "SERVER"], (item, chain)
        server, client, downstream = chain
        expected_parent = item["parent_id"] if item["kind"] == "traced" else None
        assert server.parent_id == expected_parent
        assert server.span_id == body["span_id"]
        assert client.parent_id == server.span_id
        assert downstream.parent_id == client.span_id
        assert downstream.span_id == down["span_id"]
        # Flags 01, or 03 for a trace started here (W3C Level 2 random-trace-id bit).
        expected_flags = ("01",) if item["kind"] == "traced" else ("01", "03")
        prefix, _, flags = down["traceparent"].rpartition("-")
        assert prefix == f"00-{body['trace_id']}-{client.span_id}", (item, body)
        assert flags in expected_flags, (item, body)
    assert len(spans) == 3 * sampled  # every sampled span, nothing else
    return leaks, len(spans)


@pytest.mark.slow
@pytest.mark.parametrize("service", list(SERVICES))
def test_load_with_a_downstream_hop_keeps_every_request_in_its_own_trace(service: str) -> None:
    plan = _plan(LOAD_REQUESTS)
    sampled = sum(1 for p in plan if p["kind"] != "unsampled")
    with OTLPReceiver() as receiver:
        env = server_env(receiver.endpoint, RELIABILITY_SERVICE="downstream", **FAST_BATCHES)
        with running("downstream", env, DOWNSTREAM) as downstream:
            env = server_env(
                receiver.endpoint,
                RELIABILITY_SERVICE="service",
                RELIABILITY_DOWNSTREAM=downstream.url,
                **FAST_BATCHES,
            )
            with running(service, env, SERVICES[service]) as server:
                receiver.clear()  # the readiness probes' spans
                started = time.monotonic()
                results = _load(server, plan)
                seconds = time.monotonic() - started
                receiver.wait_for(lambda s: len(s) >= 3 * sampled, timeout=120)
        # Both stopped by SIGTERM, which flushes: whatever was still queued is in now, so an
        # extra span (a defect) would be counted too.
        spans = receiver.spans()
    leaks, checked = _check(plan, results, spans)
    record(
        "load_requests",
        len(plan),
        service=service,
        spans=checked,
        leaks=leaks,
        concurrency=CONCURRENCY,
        seconds=round(seconds, 1),
    )
    assert leaks == 0


# ----------------------------------------------------------------------- keep-alive mixing
def _keepalive_app() -> Any:
    import json

    from opentelemetry import baggage, trace

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        sc = trace.get_current_span().get_span_context()
        body = json.dumps(
            {
                "trace_id": f"{sc.trace_id:032x}",
                "span_id": f"{sc.span_id:016x}",
                "sampled": bool(sc.trace_flags.sampled),
                "baggage": dict(baggage.get_all()),
                "port": scope["client"][1],
            }
        ).encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    return app


@contextmanager
def _uvicorn(reset: bool, sink: SpanSink) -> Iterator[str]:
    app = TracewireMiddleware(_keepalive_app(), Settings(), tracer_provider=sink.provider)
    with UvicornThread(app, reset_contextvars=reset) as server:
        yield server.url


MIX = ["traced", "none", "invalid", "unsampled", "traced-baggage", "none", "traced", "invalid"]


@pytest.mark.parametrize("reset", [False, True], ids=["reset-contextvars-off", "reset-on"])
def test_keep_alive_mix_of_traced_untraced_and_invalid_requests_never_leaks(reset: bool) -> None:
    sink = SpanSink()
    seen_traces: set[str] = set()
    ports: set[int] = set()
    with (
        _uvicorn(reset, sink) as url,
        httpx.Client(base_url=url, limits=httpx.Limits(max_connections=1), timeout=10) as client,
    ):
        for round_ in range(5):
            for kind in MIX:
                trace_id, parent_id = new_ids()
                headers = {}
                if kind.startswith("traced"):
                    headers["traceparent"] = traceparent(trace_id, parent_id)
                if kind == "traced-baggage":
                    headers["baggage"] = f"round={round_}"
                if kind == "unsampled":
                    headers["traceparent"] = traceparent(trace_id, parent_id, "00")
                if kind == "invalid":
                    headers["traceparent"] = f"00-{secrets.token_hex(15)}-{parent_id}-01"
                seen = client.get("/", headers=headers).json()
                if kind in ("traced", "traced-baggage", "unsampled"):
                    assert seen["trace_id"] == trace_id, (kind, seen)
                else:
                    assert seen["trace_id"] not in seen_traces, (kind, seen)  # fresh
                    span = sink.of_trace(seen["trace_id"])
                    assert span.parent is None, (kind, seen)
                assert seen["sampled"] is (kind != "unsampled")
                expected_baggage = {"round": str(round_)} if kind == "traced-baggage" else {}
                assert seen["baggage"] == expected_baggage, (kind, seen)
                seen_traces.add(seen["trace_id"])
                ports.add(seen["port"])
    assert len(ports) == 1  # one keep-alive connection served all of them
    sink.provider.shutdown()

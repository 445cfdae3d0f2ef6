"""Time per request grows linearly with the size of the trace headers, through both middlewares.

For each header shape (one huge value, a long list, many header lines, many repeats) a request
with 1 KB, 10 KB and 100 KB of it is timed against the same request without it, in the same
process. The extra cost per byte must stay flat: from 1 KB to 100 KB it may not grow more
than ``BOUND`` times (quadratic work would grow it ~100 times). Absolute times are not asserted;
the measured constants (ns per byte) are printed, and docs/fuzzing.md quotes one run.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from typing import Any

import pytest

from tests.fuzz.inputs import Case
from tests.fuzz.targets import EXPORTER, PROVIDER, environ_for
from tracewire import Settings, TracewireMiddleware, TracewireWSGIMiddleware
from tracewire.wsgi import SPAN_KEY

TP = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
SIZES = (1_000, 10_000, 100_000)
BOUND = 5.0
SETTINGS = Settings(
    propagators=["tracecontext", "baggage", "b3", "b3multi"],
    capture_request_headers=["traceparent", "tracestate", "baggage", "b3", "x-b3-traceid"],
    response_propagation="traceresponse",
)

Headers = list[tuple[bytes, bytes]]


def _fill(unit: bytes, size: int) -> bytes:
    return (unit * (size // len(unit) + 1))[:size]


SHAPES: dict[str, Callable[[int], Headers]] = {
    "traceparent: one huge value": lambda n: [(b"traceparent", TP + b"-" + _fill(b"a", n))],
    "tracestate: a long list": lambda n: [(b"traceparent", TP), (b"tracestate", _fill(b"k=v,", n))],
    "tracestate: many lines": lambda n: [(b"traceparent", TP)]
    + [(b"tracestate", b"k=v")] * (n // 13),
    "baggage: a long list": lambda n: [(b"baggage", _fill(b"key=value,", n))],
    "baggage: many lines": lambda n: [(b"baggage", b"key=value")] * (n // 16),
    "b3: one huge value": lambda n: [(b"b3", _fill(b"a3ce929d0e0e4736-", n))],
    "x-b3-traceid: one huge value": lambda n: [(b"x-b3-traceid", _fill(b"f", n))],
    "many other header lines": lambda n: [(b"traceparent", TP)]
    + [(f"x-f{i}".encode(), b"v") for i in range(n // 8)],
}
BASELINE = [(b"traceparent", TP)]


async def _asgi_app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def _wsgi_app(environ: Any, start_response: Any) -> Iterable[bytes]:
    start_response("200 OK", [])
    return [b"ok"]


ASGI = TracewireMiddleware(_asgi_app, SETTINGS, tracer_provider=PROVIDER)
WSGI = TracewireWSGIMiddleware(_wsgi_app, SETTINGS, tracer_provider=PROVIDER)
LOOP = asyncio.new_event_loop()


def _asgi_timer(headers: Headers, n: int) -> float:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: Any) -> None:
        pass

    async def run() -> None:
        for _ in range(n):
            scope = {"type": "http", "method": "GET", "path": "/", "headers": headers}
            await ASGI(scope, receive, send)

    started = time.perf_counter()
    LOOP.run_until_complete(run())
    return (time.perf_counter() - started) / n


def _wsgi_timer(headers: Headers, n: int) -> float:
    environ = environ_for(Case(headers=tuple(headers)))

    def start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
        return None

    started = time.perf_counter()
    for _ in range(n):
        body = WSGI(environ, start_response)
        close = getattr(body, "close", None)
        if close is not None:
            close()
        # The middleware marks the environ it traced; the next request reuses it unmarked
        # (copying an environ of 12,000 headers would cost more than what is measured).
        del environ[SPAN_KEY]
    return (time.perf_counter() - started) / n


def _per_request(timer: Callable[[Headers, int], float], headers: Headers, size: int) -> float:
    """Best of five batches (the least disturbed by other work on the machine)."""
    n = 300 if size < 1_000 else max(3, 100_000 // size)
    best = min(timer(headers, n) for _ in range(5))
    EXPORTER.clear()
    return best


@pytest.mark.parametrize("server", ["asgi", "wsgi"])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_time_per_request_is_linear_in_header_size(server: str, shape: str) -> None:
    timer = _asgi_timer if server == "asgi" else _wsgi_timer
    base = _per_request(timer, BASELINE, 0)
    extra = {size: _per_request(timer, SHAPES[shape](size), size) - base for size in SIZES}
    # Differences below 10% of a plain request are noise; never divide by less than that.
    floor = 0.1 * base
    per_byte = {size: max(extra[size], floor) / size for size in SIZES}
    growth_1k = per_byte[100_000] / per_byte[1_000]
    growth_10k = per_byte[100_000] / per_byte[10_000]
    report = (
        f"{server} {shape}: base {base * 1e6:.1f} us; extra ns/byte "
        + ", ".join(f"{s // 1000} KB {extra[s] / s * 1e9:.2f}" for s in SIZES)
        + f"; growth 1->100 KB x{growth_1k:.2f}, 10->100 KB x{growth_10k:.2f}"
    )
    print(report)
    assert growth_1k <= BOUND, report
    assert growth_10k <= BOUND, report

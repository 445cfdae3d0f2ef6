"""Time per request grows linearly with the size of the trace headers, through both middlewares.

For each header shape (one huge value, a long list, many header lines, many repeats) a request
with 1 KB, 10 KB and 100 KB of it is timed against the same request without it, in the same
process. The extra cost per byte must stay flat: from 1 KB to 100 KB it may not grow more
than ``BOUND`` (10) times, where work quadratic in the header size grows it ~100 times.
Absolute times are not asserted; the measured constants (ns per header byte) are printed
(``pytest -s``), and docs/fuzzing.md quotes one run.
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
BOUND = 10.0
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
    "tracestate: many lines": lambda n: (
        [(b"traceparent", TP)] + [(b"tracestate", b"k=v")] * (n // 13)
    ),
    "baggage: a long list": lambda n: [(b"baggage", _fill(b"key=value,", n))],
    "baggage: many lines": lambda n: [(b"baggage", b"key=value")] * (n // 16),
    "b3: one huge value": lambda n: [(b"b3", _fill(b"a3ce929d0e0e4736-", n))],
    "x-b3-traceid: one huge value": lambda n: [(b"x-b3-traceid", _fill(b"f", n))],
    "many other header lines": lambda n: (
        [(b"traceparent", TP)] + [(f"x-f{i}".encode(), b"v") for i in range(n // 8)]
    ),
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


def _batch(size: int) -> int:
    return 300 if size < 1_000 else max(3, 100_000 // size)


def _measure(timer: Callable[[Headers, int], float], shape: str) -> dict[int, float]:
    """Seconds per request at each size (0: the baseline), best of seven rounds.

    The sizes take turns within each round, so a burst of other work on the machine slows all
    of them alike instead of one size only.
    """
    requests = {0: BASELINE, **{size: SHAPES[shape](size) for size in SIZES}}
    best = dict.fromkeys(requests, float("inf"))
    for _ in range(7):
        for size, headers in requests.items():
            best[size] = min(best[size], timer(headers, _batch(size)))
        EXPORTER.clear()
    return best


def _growth(best: dict[int, float]) -> tuple[float, str]:
    base = best[0]
    extra = {size: best[size] - base for size in SIZES}
    # Differences below 10% of the quickest request are noise: never divide by less. (The
    # quickest, not the baseline: a disturbed baseline must not raise the floor.)
    floor = 0.1 * min(best.values())
    per_byte = {size: max(extra[size], floor) / size for size in SIZES}
    growth = per_byte[100_000] / per_byte[1_000]
    report = (
        f"base {base * 1e6:.1f} us; extra ns/byte "
        + ", ".join(f"{s // 1000} KB {extra[s] / s * 1e9:.2f}" for s in SIZES)
        + f"; per-byte growth 1->100 KB x{growth:.2f}"
        + f" (10->100 KB x{per_byte[100_000] / per_byte[10_000]:.2f})"
    )
    return growth, report


@pytest.mark.parametrize("server", ["asgi", "wsgi"])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_time_per_request_is_linear_in_header_size(server: str, shape: str) -> None:
    timer = _asgi_timer if server == "asgi" else _wsgi_timer
    growth, report = _growth(_measure(timer, shape))
    if growth > BOUND:
        # Measured once more before failing: a machine shared with other work can disturb
        # one run; work that really grows faster than the input fails both.
        print(f"{server} {shape}: first measurement over the bound: {report}")
        growth, report = _growth(_measure(timer, shape))
    print(f"{server} {shape}: {report}")
    assert growth <= BOUND, report

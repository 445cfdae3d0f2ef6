"""ASGI server middleware: bare app vs tracewire vs OpenTelemetry contrib.

In-process: the ASGI callable is driven directly with a synthetic scope, ``receive`` and
``send`` in one event loop, so the numbers are the middleware's own cost and nothing of a
server or a socket. End-to-end (``run_e2e``): the same apps under uvicorn on 127.0.0.1, loaded
with ``wrk`` when it is installed (else sequential httpx requests), as a sanity ratio.

Run alone::

    python -m benchmarks.bench_asgi                # in-process, both sampling modes
    python -m benchmarks.bench_asgi --e2e          # plus the uvicorn run
    python -m benchmarks.bench_asgi serve --port 8000   # the e2e server, for your own load
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

from opentelemetry.context import attach, detach
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.trace import SpanKind, TracerProvider, set_span_in_context

from benchmarks._harness import (
    MODES,
    Measurement,
    SuiteResult,
    Tracing,
    Variant,
    measure,
    pair_with,
    parent_context,
    traceparent,
)

Scope = dict[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

PATH = "/items/42"
ROUTE = "/items/{item_id}"
REPO = Path(__file__).resolve().parent.parent

_START: Message = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"text/plain"), (b"content-length", b"2")],
}
_BODY: Message = {"type": "http.response.body", "body": b"ok", "more_body": False}
_REQUEST: Message = {"type": "http.request", "body": b"", "more_body": False}


# ------------------------------------------------------------------------------------ apps
async def raw_app(scope: Scope, receive: Receive, send: Send) -> None:
    """The smallest honest ASGI app: answers every http request with ``200 ok``."""
    if scope["type"] != "http":
        return
    await send(_START)
    await send(_BODY)


def starlette_app() -> ASGIApp:
    """A one-route Starlette app, so route templates take part (``GET /items/{item_id}``)."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def item(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    return Starlette(routes=[Route(ROUTE, item)])


APPS: dict[str, Callable[[], ASGIApp]] = {"raw": lambda: raw_app, "starlette": starlette_app}


class SpanFloor:
    """Reference, not a product: one SDK span per request with the parent already known.

    No header parsing, no attributes: the least any span-per-request instrumentation pays.
    """

    def __init__(self, app: ASGIApp, provider: TracerProvider, mode: str) -> None:
        self.app = app
        self.tracer = provider.get_tracer("benchmarks.floor")
        self.parent = parent_context(mode)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        span = self.tracer.start_span("GET", self.parent, kind=SpanKind.SERVER)
        token = attach(set_span_in_context(span, self.parent))
        try:
            await self.app(scope, receive, send)
        finally:
            detach(token)
            span.end()


def wrap(variant: str, app: ASGIApp, provider: TracerProvider, mode: str) -> ASGIApp:
    """``app`` wrapped as ``variant`` would deploy it."""
    if variant == "bare":
        return app
    if variant == "sdk-span floor":
        return SpanFloor(app, provider, mode)
    if variant == "tracewire":
        from tracewire import Settings, TracewireMiddleware

        return TracewireMiddleware(app, Settings(), tracer_provider=provider)
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    # No metrics for contrib: tracewire records none, so contrib is measured at its cheapest.
    meters = NoOpMeterProvider()
    if variant == "contrib":
        return OpenTelemetryMiddleware(app, tracer_provider=provider, meter_provider=meters)
    if variant == "contrib (no send/receive spans)":
        return OpenTelemetryMiddleware(
            app, tracer_provider=provider, meter_provider=meters, exclude_spans=["receive", "send"]
        )
    raise ValueError(f"unknown variant {variant!r}")


VARIANTS = (
    ("bare", "bare", "the app alone"),
    ("sdk-span floor", "floor", "one SDK span, parent given, no headers/attributes"),
    ("tracewire", "tracewire", "TracewireMiddleware(app, Settings())"),
    ("contrib", "contrib", "contrib OpenTelemetryMiddleware, defaults"),
    (
        "contrib (no send/receive spans)",
        "other",
        "contrib with exclude_spans=['receive', 'send']",
    ),
)


def scope_template(mode: str, path: str = PATH) -> Scope:
    """A GET as uvicorn would present it, with a handful of ordinary headers."""
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 51234),
        "scheme": "http",
        "method": "GET",
        "root_path": "",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"q=1",
        "headers": [
            (b"host", b"127.0.0.1:8000"),
            (b"user-agent", b"tracewire-bench/1.0"),
            (b"accept", b"*/*"),
            (b"accept-encoding", b"gzip, deflate"),
            (b"connection", b"keep-alive"),
            (b"traceparent", traceparent(mode).encode()),
        ],
        "state": {},
    }


async def _receive() -> Message:
    return _REQUEST


async def _send(message: Message) -> None:
    return None


def _runner(
    app: ASGIApp, template: Scope, loop: asyncio.AbstractEventLoop
) -> Callable[[int], None]:
    async def many(n: int) -> None:
        for _ in range(n):
            # A fresh shallow copy per request, as a server makes a fresh scope; the copy is in
            # every variant, bare included, so it cancels out of the overhead.
            await app(template.copy(), _receive, _send)

    def run(n: int) -> None:
        loop.run_until_complete(many(n))

    return run


def run_inprocess(
    iterations: int,
    rounds: int,
    modes: tuple[str, ...] = MODES,
    app_name: str = "raw",
    processor: str = "simple",
    variants: tuple[str, ...] | None = None,
    clock: str = "cpu",
) -> list[SuiteResult]:
    """The in-process suite: one ``SuiteResult`` per sampling mode."""
    results = []
    loop = asyncio.new_event_loop()
    try:
        for mode in modes:
            template = scope_template(mode)
            chosen = [v for v in VARIANTS if variants is None or v[0] in variants]
            tracings: dict[str, Tracing] = {}
            plan = []
            for name, role, note in chosen:
                tracing = tracings[name] = Tracing(processor)
                app = wrap(name, APPS[app_name](), tracing.provider, mode)
                _check(app, template, loop, tracing, mode, name)
                plan.append(Variant(name, _runner(app, template, loop), role, note))
            measured = measure(plan, iterations, rounds, clock)
            suite = SuiteResult(
                f"asgi[{app_name}]", mode, "in-process", measured, iterations, rounds
            )
            for name, tracing in tracings.items():
                tracing.flush()
                suite.exported[name] = tracing.exporter.count
                tracing.shutdown()
            suite.notes.append(f"span processor: {processor}; clock: {clock}")
            results.append(suite)
    finally:
        loop.close()
    return results


def _check(
    app: ASGIApp,
    template: Scope,
    loop: asyncio.AbstractEventLoop,
    tracing: Tracing,
    mode: str,
    name: str,
) -> None:
    """Before timing: the variant answers, and a sampled request continues the incoming trace."""
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    loop.run_until_complete(app(template.copy(), _receive, send))
    if [m["type"] for m in sent] != ["http.response.start", "http.response.body"]:
        raise RuntimeError(f"{name}: unexpected response {sent!r}")
    tracing.flush()
    last = tracing.exporter.last
    if name == "bare":
        return
    if mode == "sampled":
        if (
            last is None
            or last.context is None
            or last.context.trace_id != int(traceparent(mode)[3:35], 16)
        ):
            raise RuntimeError(f"{name}: the sampled request did not continue the incoming trace")
    elif tracing.exporter.count:
        raise RuntimeError(f"{name}: an unsampled request exported {tracing.exporter.count} spans")


# -------------------------------------------------------------------------------- e2e
E2E_VARIANTS = ("bare", "tracewire", "contrib")


class Dispatch:
    """One server process serving every variant under ``/<variant>/...``.

    The variants share the process, the server and the loop, so a load run against each path
    differs only by the middleware. The provider's sampler follows the incoming traceparent.
    """

    def __init__(self, app_name: str, processor: str) -> None:
        self.tracing = Tracing(processor)
        self.apps: dict[str, ASGIApp] = {
            name: wrap(name, APPS[app_name](), self.tracing.provider, "sampled")
            for name in E2E_VARIANTS
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        prefix = scope["path"].split("/", 2)[1]
        app = self.apps.get(prefix)
        if app is None:
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        await app(scope, receive, send)


def serve(port: int, app_name: str, processor: str) -> None:
    import uvicorn

    dispatch = Dispatch(app_name, processor)
    uvicorn.run(
        dispatch,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="off",
    )


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"e2e server exited with {proc.returncode}")
        with socket.socket() as sock:
            sock.settimeout(0.2)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)
    raise TimeoutError(f"e2e server did not listen on {port} within {timeout}s")


_RPS = re.compile(r"Requests/sec:\s+([0-9.]+)")


def _wrk(url: str, mode: str, seconds: float, connections: int) -> float:
    """Microseconds of server time per request: the inverse of wrk's saturated throughput."""
    wrk = shutil.which("wrk")
    assert wrk is not None
    out = subprocess.run(
        [
            wrk,
            "-t1",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "-H",
            f"traceparent: {traceparent(mode)}",
            url,
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=seconds + 30,
    ).stdout
    match = _RPS.search(out)
    if match is None or "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError(f"wrk run failed:\n{out}")
    return 1e6 / float(match.group(1))


def _httpx_latency(client: Any, url: str, mode: str, seconds: float) -> float:
    """Mean microseconds per sequential keep-alive request (client time included)."""
    headers = {"traceparent": traceparent(mode)}
    count = 0
    deadline = time.perf_counter() + seconds
    start = time.perf_counter_ns()
    while time.perf_counter() < deadline:
        response = client.get(url, headers=headers)
        if response.status_code != 200:
            raise RuntimeError(f"{url}: HTTP {response.status_code}")
        count += 1
    return (time.perf_counter_ns() - start) / 1000.0 / max(count, 1)


def run_e2e(
    seconds: float,
    rounds: int,
    modes: tuple[str, ...] = MODES,
    app_name: str = "raw",
    processor: str = "simple",
    load: str = "auto",
) -> list[SuiteResult]:
    """Uvicorn in a subprocess (one worker, one core), loaded from this process."""
    if load == "auto":
        load = "wrk" if shutil.which("wrk") else "httpx"
    port = _free_port()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    command = [
        sys.executable,
        "-m",
        "benchmarks.bench_asgi",
        "serve",
        "--port",
        str(port),
        "--app",
        app_name,
        "--processor",
        processor,
    ]
    proc = subprocess.Popen(command, cwd=REPO, env=env)
    client: Any = None
    try:
        _wait_port(port, proc)
        if load == "httpx":
            import httpx

            client = httpx.Client()

        def one(variant: str, mode: str, duration: float) -> float:
            url = f"http://127.0.0.1:{port}/{variant}{PATH}"
            if load == "wrk":
                return _wrk(url, mode, duration, connections=16)
            return _httpx_latency(client, url, mode, duration)

        import httpx

        with httpx.Client() as warm:  # every path once through: imports, caches
            for variant in E2E_VARIANTS:
                for _ in range(50):
                    warm.get(f"http://127.0.0.1:{port}/{variant}{PATH}").raise_for_status()
        results = []
        for mode in modes:
            rounds_us: dict[str, list[float]] = {v: [] for v in E2E_VARIANTS}
            for index in range(rounds):
                shift = index % len(E2E_VARIANTS)
                for variant in (*E2E_VARIANTS[shift:], *E2E_VARIANTS[:shift]):
                    rounds_us[variant].append(one(variant, mode, seconds))
            measured = [Measurement(v, v, "", rounds_us[v]) for v in E2E_VARIANTS]
            for m in measured[1:]:
                pair_with(m, measured[0])
            suite = SuiteResult(
                f"asgi[{app_name}] uvicorn", mode, "end-to-end", measured, 0, rounds
            )
            if load == "wrk":
                suite.notes.append(
                    "wrk -t1 -c16, one uvicorn worker: us/request = 1e6 / requests per second"
                )
            else:
                suite.notes.append(
                    "httpx load (wrk not found, or --load httpx): sequential keep-alive "
                    "requests, us/request = mean latency including the client"
                )
            suite.notes.append(f"{seconds:g} s per variant per round; span processor: {processor}")
            results.append(suite)
        return results
    finally:
        if client is not None:
            client.close()
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_asgi", description=__doc__)
    parser.add_argument("command", nargs="?", default="bench", choices=("bench", "serve"))
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--app", choices=sorted(APPS), default="raw")
    parser.add_argument("--processor", choices=("simple", "batch"), default="simple")
    parser.add_argument("--iterations", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--e2e", action="store_true", help="also run under uvicorn")
    parser.add_argument("--seconds", type=float, default=3.0, help="e2e seconds per run")
    args = parser.parse_args(argv)
    if args.command == "serve":
        serve(args.port, args.app, args.processor)
        return 0
    from benchmarks.run import print_table

    suites = run_inprocess(
        args.iterations, args.rounds, app_name=args.app, processor=args.processor
    )
    if args.e2e:
        suites += run_e2e(args.seconds, 3, app_name=args.app, processor=args.processor)
    print_table(suites)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""ASGI server middleware, in process: bare app vs SDK floor vs tracewire vs contrib.

The ASGI callable is driven directly with a synthetic scope (a GET with the 8 request headers
of the workload, see ``_harness.request_headers``), ``receive`` and ``send`` in one event loop,
so the numbers are the middleware's own cost and nothing of a server or a socket. Apps: ``raw``
(a two-message ASGI app) and ``starlette`` (a one-route Starlette app, so route templates take
part). The uvicorn run is in ``bench_e2e``.

Run alone::

    python -m benchmarks.bench_asgi --app raw --iterations 2000 --rounds 7
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.trace import TracerProvider

from benchmarks._harness import (
    MODES,
    SuiteResult,
    Tracing,
    Variant,
    check_exports,
    finish,
    measure,
    request_headers,
)
from benchmarks.floors import PATH, QUERY, AsgiServerFloor

Scope = dict[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

ROUTE = "/items/{item_id}"

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
    """A one-route Starlette app (``GET /items/{item_id}``)."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def item(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    return Starlette(routes=[Route(ROUTE, item)])


APPS: dict[str, Callable[[], ASGIApp]] = {"raw": lambda: raw_app, "starlette": starlette_app}

VARIANTS = (
    ("bare", "bare", "the app alone"),
    ("sdk floor", "floor", "one SDK SERVER span, 9 attributes, parent given (floors.py)"),
    ("tracewire", "tracewire", "TracewireMiddleware(app, Settings())"),
    ("contrib", "contrib", "opentelemetry.instrumentation.asgi.OpenTelemetryMiddleware"),
)


def wrap(variant: str, app: ASGIApp, provider: TracerProvider, mode: str) -> ASGIApp:
    """``app`` wrapped as ``variant`` would deploy it."""
    if variant == "bare":
        return app
    if variant == "sdk floor":
        return AsgiServerFloor(app, provider, mode)
    if variant == "tracewire":
        from tracewire import Settings, TracewireMiddleware

        return TracewireMiddleware(app, Settings(), tracer_provider=provider)
    if variant == "contrib":
        from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

        # No metrics for contrib: tracewire records none, so contrib is measured at its
        # cheapest; its other defaults (two internal `http send` spans per request) stay.
        return OpenTelemetryMiddleware(
            app, tracer_provider=provider, meter_provider=NoOpMeterProvider()
        )
    raise ValueError(f"unknown variant {variant!r}")


def scope_template(mode: str, path: str = PATH) -> Scope:
    """A GET as uvicorn would present it, with the workload's 8 request headers."""
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
        "query_string": QUERY.encode(),
        "headers": [(n.encode("latin-1"), v.encode("latin-1")) for n, v in request_headers(mode)],
        "state": {},
    }


async def _receive() -> Message:
    return _REQUEST


async def _send(message: Message) -> None:
    return None


def runner(app: ASGIApp, template: Scope, loop: asyncio.AbstractEventLoop) -> Callable[[int], None]:
    """``run(n)``: ``n`` requests through ``app``, each with a fresh copy of the scope."""

    async def many(n: int) -> None:
        for _ in range(n):
            # A fresh shallow copy per request, as a server makes a fresh scope; the copy is in
            # every variant, bare included, so it cancels out of the overhead.
            await app(template.copy(), _receive, _send)

    def run(n: int) -> None:
        loop.run_until_complete(many(n))

    return run


def check(
    app: ASGIApp,
    template: Scope,
    loop: asyncio.AbstractEventLoop,
    tracing: Tracing,
    mode: str,
    name: str,
    role: str,
) -> None:
    """Before timing: the variant answers, and exports exactly when the mode records."""
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    loop.run_until_complete(app(template.copy(), _receive, send))
    if [m["type"] for m in sent] != ["http.response.start", "http.response.body"]:
        raise RuntimeError(f"{name}: unexpected response {sent!r}")
    check_exports(name, role, mode, tracing)


def build(
    app_name: str, mode: str, processor: str, loop: asyncio.AbstractEventLoop
) -> tuple[list[Variant], dict[str, Tracing]]:
    """The checked variants of one app in one mode, each with its own tracer provider."""
    template = scope_template(mode)
    tracings: dict[str, Tracing] = {}
    plan: list[Variant] = []
    for name, role, note in VARIANTS:
        tracing = tracings[name] = Tracing(processor, mode)
        app = wrap(name, APPS[app_name](), tracing.provider, mode)
        check(app, template, loop, tracing, mode, name, role)
        plan.append(Variant(name, runner(app, template, loop), role, note))
    return plan, tracings


def run_inprocess(
    iterations: int,
    rounds: int,
    modes: tuple[str, ...] = MODES,
    app_name: str = "raw",
    processor: str = "batch",
    clock: str = "cpu",
) -> list[SuiteResult]:
    """The in-process suite of one app: one ``SuiteResult`` per sampling mode."""
    results = []
    loop = asyncio.new_event_loop()
    try:
        for mode in modes:
            plan, tracings = build(app_name, mode, processor, loop)
            measured = measure(plan, iterations, rounds, clock)
            suite = SuiteResult(
                f"asgi[{app_name}]", mode, "in-process", measured, iterations, rounds
            )
            finish(suite, tracings, processor, clock)
            results.append(suite)
    finally:
        loop.close()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_asgi", description=__doc__)
    parser.add_argument("--app", choices=sorted(APPS), default="raw")
    parser.add_argument("--processor", choices=("batch", "simple"), default="batch")
    parser.add_argument("--mode", choices=(*MODES, "all"), default="all")
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)
    from benchmarks.report import print_suites

    modes = MODES if args.mode == "all" else (args.mode,)
    print_suites(
        run_inprocess(args.iterations, args.rounds, modes, args.app, processor=args.processor)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

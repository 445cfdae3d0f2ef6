"""WSGI server middleware: bare app vs tracewire vs OpenTelemetry contrib, in-process.

The WSGI callable is driven directly: a fresh ``environ`` per request, a no-op
``start_response``, the body iterated and ``close()`` called as a PEP 3333 server does.

Run alone::

    python -m benchmarks.bench_wsgi --iterations 5000 --rounds 7
"""

from __future__ import annotations

import argparse
import io
import sys
from collections.abc import Callable, Iterable
from typing import Any

from opentelemetry.context import attach, detach
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.trace import SpanKind, TracerProvider, set_span_in_context

from benchmarks._harness import (
    MODES,
    SuiteResult,
    Tracing,
    Variant,
    measure,
    parent_context,
    traceparent,
)

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]

PATH = "/items/42"
_HEADERS = [("Content-Type", "text/plain"), ("Content-Length", "2")]


def raw_app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    """The smallest honest WSGI app: ``200 ok``."""
    start_response("200 OK", _HEADERS)
    return [b"ok"]


class SpanFloor:
    """Reference: one SDK span per request with the parent already known (see bench_asgi)."""

    def __init__(self, app: WSGIApp, provider: TracerProvider, mode: str) -> None:
        self.app = app
        self.tracer = provider.get_tracer("benchmarks.floor")
        self.parent = parent_context(mode)

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        span = self.tracer.start_span("GET", self.parent, kind=SpanKind.SERVER)
        token = attach(set_span_in_context(span, self.parent))
        try:
            return self.app(environ, start_response)
        finally:
            detach(token)
            span.end()


def wrap(variant: str, app: WSGIApp, provider: TracerProvider, mode: str) -> WSGIApp:
    if variant == "bare":
        return app
    if variant == "sdk-span floor":
        return SpanFloor(app, provider, mode)
    if variant == "tracewire":
        from tracewire import Settings, TracewireWSGIMiddleware

        return TracewireWSGIMiddleware(app, Settings(), tracer_provider=provider)
    if variant == "contrib":
        from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware

        return OpenTelemetryMiddleware(
            app, tracer_provider=provider, meter_provider=NoOpMeterProvider()
        )
    raise ValueError(f"unknown variant {variant!r}")


VARIANTS = (
    ("bare", "bare", "the app alone"),
    ("sdk-span floor", "floor", "one SDK span, parent given, no headers/attributes"),
    ("tracewire", "tracewire", "TracewireWSGIMiddleware(app, Settings())"),
    ("contrib", "contrib", "contrib OpenTelemetryMiddleware, defaults"),
)


def environ_template(mode: str, path: str = PATH) -> Environ:
    """What a WSGI server (werkzeug, gunicorn) puts in ``environ`` for a plain GET."""
    return {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": "q=1",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "REMOTE_PORT": "51234",
        "HTTP_HOST": "127.0.0.1:8000",
        "HTTP_USER_AGENT": "tracewire-bench/1.0",
        "HTTP_ACCEPT": "*/*",
        "HTTP_ACCEPT_ENCODING": "gzip, deflate",
        "HTTP_CONNECTION": "keep-alive",
        "HTTP_TRACEPARENT": traceparent(mode),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }


def _start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
    return None


def serve_once(app: WSGIApp, environ: Environ, start_response: StartResponse) -> list[bytes]:
    """What a server does with one request: call, iterate, close."""
    result = app(environ, start_response)
    try:
        return list(result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()


def _runner(app: WSGIApp, template: Environ) -> Callable[[int], None]:
    def run(n: int) -> None:
        for _ in range(n):
            result = app(template.copy(), _start_response)
            for _chunk in result:
                pass
            close = getattr(result, "close", None)
            if close is not None:
                close()

    return run


def _check(app: WSGIApp, template: Environ, tracing: Tracing, mode: str, name: str) -> None:
    seen: list[str] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        seen.append(status)

    body = serve_once(app, template.copy(), start_response)
    if seen != ["200 OK"] or body != [b"ok"]:
        raise RuntimeError(f"{name}: unexpected response {seen!r} {body!r}")
    tracing.flush()
    if name == "bare":
        return
    last = tracing.exporter.last
    if mode == "sampled":
        expected = int(traceparent(mode)[3:35], 16)
        if last is None or last.context is None or last.context.trace_id != expected:
            raise RuntimeError(f"{name}: the sampled request did not continue the incoming trace")
    elif tracing.exporter.count:
        raise RuntimeError(f"{name}: an unsampled request exported {tracing.exporter.count} spans")


def run_inprocess(
    iterations: int,
    rounds: int,
    modes: tuple[str, ...] = MODES,
    processor: str = "simple",
    clock: str = "cpu",
) -> list[SuiteResult]:
    results = []
    for mode in modes:
        template = environ_template(mode)
        tracings: dict[str, Tracing] = {}
        plan = []
        for name, role, note in VARIANTS:
            tracing = tracings[name] = Tracing(processor)
            app = wrap(name, raw_app, tracing.provider, mode)
            _check(app, template, tracing, mode, name)
            plan.append(Variant(name, _runner(app, template), role, note))
        suite = SuiteResult(
            "wsgi[raw]",
            mode,
            "in-process",
            measure(plan, iterations, rounds, clock),
            iterations,
            rounds,
        )
        for name, tracing in tracings.items():
            tracing.flush()
            suite.exported[name] = tracing.exporter.count
            tracing.shutdown()
        suite.notes.append(f"span processor: {processor}; clock: {clock}")
        results.append(suite)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_wsgi", description=__doc__)
    parser.add_argument("--processor", choices=("simple", "batch"), default="simple")
    parser.add_argument("--iterations", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)
    from benchmarks.run import print_table

    print_table(run_inprocess(args.iterations, args.rounds, processor=args.processor))
    return 0


if __name__ == "__main__":
    sys.exit(main())

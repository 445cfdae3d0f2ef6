"""Where tracewire's time per request goes: cProfile of its request paths, plus a breakdown.

Usage (from the repository root)::

    python -m benchmarks.profiling                       # every path, both modes
    python -m benchmarks.profiling asgi --mode unsampled --top 25
    python -m benchmarks.profiling --breakdown-only      # the component timings only

The profile drives the same synthetic requests as the benchmarks (bench_asgi, bench_wsgi,
bench_client) through the tracewire variant only. cProfile inflates every call, so read its
numbers as shares; the breakdown times the building blocks one by one with ``timeit`` and is
the better guide to absolute microseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import pstats
import sys
import timeit
from collections.abc import Callable
from typing import Any

from opentelemetry.context import Context, attach, detach
from opentelemetry.trace import SpanKind, set_span_in_context

from benchmarks._harness import MODES, Tracing, parent_context

PATHS = ("asgi", "asgi-starlette", "wsgi", "httpx", "requests")


def _asgi_runner(app_name: str, mode: str, tracing: Tracing) -> Callable[[int], None]:
    from benchmarks import bench_asgi

    app = bench_asgi.wrap("tracewire", bench_asgi.APPS[app_name](), tracing.provider, mode)
    loop = asyncio.new_event_loop()
    run = bench_asgi._runner(app, bench_asgi.scope_template(mode), loop)
    return run


def _wsgi_runner(mode: str, tracing: Tracing) -> Callable[[int], None]:
    from benchmarks import bench_wsgi

    app = bench_wsgi.wrap("tracewire", bench_wsgi.raw_app, tracing.provider, mode)
    return bench_wsgi._runner(app, bench_wsgi.environ_template(mode))


def _client_runner(kind: str, mode: str, tracing: Tracing) -> Callable[[int], None] | None:
    from benchmarks import bench_client

    if bench_client.missing(f"tracewire.{kind}") is not None:
        return None
    if kind == "httpx":
        client, _ = bench_client.httpx_client("tracewire", tracing.provider)
        return bench_client._under_parent(mode, bench_client._httpx_runner(client))
    session, _, _ = bench_client.requests_session("tracewire", tracing.provider)
    return bench_client._under_parent(mode, bench_client._requests_runner(session))


def runner(path: str, mode: str, tracing: Tracing) -> Callable[[int], None] | None:
    if path == "asgi":
        return _asgi_runner("raw", mode, tracing)
    if path == "asgi-starlette":
        return _asgi_runner("starlette", mode, tracing)
    if path == "wsgi":
        return _wsgi_runner(mode, tracing)
    return _client_runner(path, mode, tracing)


def profile(path: str, mode: str, requests: int, top: int, sort: str) -> str:
    tracing = Tracing()
    run = runner(path, mode, tracing)
    if run is None:
        return f"## {path} ({mode}): skipped, tracewire.{path} does not exist yet\n"
    run(max(requests // 10, 50))  # warm caches and imports outside the profile
    profiler = cProfile.Profile()
    profiler.enable()
    run(requests)
    profiler.disable()
    tracing.shutdown()
    out = io.StringIO()
    print(f"## {path} ({mode}), {requests} requests, sorted by {sort}", file=out)
    stats = pstats.Stats(profiler, stream=out)
    stats.strip_dirs().sort_stats(sort).print_stats(top)
    return out.getvalue()


def breakdown(mode: str, number: int = 2000, repeat: int = 25) -> list[tuple[str, float]]:
    """Microseconds per call of the building blocks of a traced request (best of ``repeat``).

    The best of many short repeats is the cost with the least interference from other work
    on the machine; the blocks overlap, so they do not add up to a variant's overhead.
    """
    import httpx

    from benchmarks.bench_asgi import scope_template
    from tracewire import Settings
    from tracewire.asgi import _attributes
    from tracewire.carriers import asgi_getter

    settings = Settings()
    tracing = Tracing()
    tracer = tracing.provider.get_tracer("breakdown")
    scope = scope_template(mode)
    headers = scope["headers"]
    composite = settings.composite
    extract = composite.extract_detailed
    (_, tracecontext), (_, baggage) = composite.extractors[:2]
    ctx = extract(headers, asgi_getter).context
    empty = Context()
    span = tracer.start_span("GET", ctx, kind=SpanKind.SERVER)
    attributes = _attributes(scope)
    parent = parent_context(mode)
    client_ctx = set_span_in_context(span, ctx)
    outgoing = httpx.Headers({"host": "example.com", "accept": "*/*", "user-agent": "bench"})
    fields = sorted(settings.inject_propagator.fields)
    inject = settings.inject_propagator.inject

    def start_end() -> None:
        tracer.start_span("GET", ctx, kind=SpanKind.SERVER).end()

    def start_set_end() -> None:
        started = tracer.start_span("GET", ctx, kind=SpanKind.SERVER)
        started.set_attributes(attributes)
        started.end()

    def start_with_attributes_end() -> None:
        tracer.start_span("GET", ctx, kind=SpanKind.SERVER, attributes=attributes).end()

    def inject_httpx() -> None:
        inject(outgoing, client_ctx)
        for name in fields:
            outgoing.pop(name, None)

    def inject_dict() -> None:
        inject({}, client_ctx)

    def contains_httpx() -> None:
        for name in fields:
            _ = name in outgoing

    n = len(attributes)
    items: list[tuple[str, Callable[[], Any]]] = [
        (
            "server: composite.extract_detailed (tracecontext+baggage)",
            lambda: extract(headers, asgi_getter),
        ),
        (
            "server: tracecontext extract alone",
            lambda: tracecontext.extract(headers, empty, asgi_getter),
        ),
        (
            "server: baggage extract alone (no baggage header)",
            lambda: baggage.extract(headers, empty, asgi_getter),
        ),
        (
            "server: one asgi_getter.get over 6 headers",
            lambda: asgi_getter.get(headers, "traceparent"),
        ),
        ("server: asgi._attributes(scope)", lambda: _attributes(scope)),
        ("SDK: start_span + end, no attributes", start_end),
        (f"SDK: start_span + set_attributes({n}) + end", start_set_end),
        (f"SDK: start_span(attributes={n}) + end", start_with_attributes_end),
        ("API: set_span_in_context", lambda: set_span_in_context(span, ctx)),
        ("API: attach + detach", lambda: detach(attach(parent))),
        ("client: inject tracecontext+baggage into httpx.Headers + pop", inject_httpx),
        ("client: inject tracecontext+baggage into a dict", inject_dict),
        ("client: 'name in httpx.Headers' for each injected field", contains_httpx),
    ]
    results = []
    for name, fn in items:
        best = min(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e6
        results.append((name, best))
    span.end()
    tracing.shutdown()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profiling", description=__doc__)
    parser.add_argument("paths", nargs="*", choices=[*PATHS, []], default=[])
    parser.add_argument("--mode", choices=(*MODES, "both"), default="both")
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--sort", choices=("tottime", "cumulative"), default="tottime")
    parser.add_argument("--breakdown-only", action="store_true")
    args = parser.parse_args(argv)
    modes = MODES if args.mode == "both" else (args.mode,)
    for mode in modes:
        print(f"## breakdown ({mode}): best of 25 x 2000 calls")
        for name, us in breakdown(mode):
            print(f"  {us:7.2f} us  {name}")
        print()
    if args.breakdown_only:
        return 0
    for path in args.paths or PATHS:
        for mode in modes:
            print(profile(path, mode, args.requests, args.top, args.sort))
    return 0


if __name__ == "__main__":
    sys.exit(main())

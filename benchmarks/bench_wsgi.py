"""WSGI server middleware, in process: bare app vs SDK floor vs tracewire vs contrib.

The WSGI callable is driven directly: a fresh ``environ`` per request (the workload's 8 request
headers as ``HTTP_*`` keys), a no-op ``start_response``, the body iterated and ``close()``
called as a PEP 3333 server does. Apps: ``raw`` (a three-line WSGI app) and ``flask`` (a
one-route Flask app, traced with ``tracewire.flask.Tracewire``).

Run alone::

    python -m benchmarks.bench_wsgi --app flask --iterations 2000 --rounds 7
"""

from __future__ import annotations

import argparse
import io
import sys
from collections.abc import Callable, Iterable
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
from benchmarks.floors import PATH, QUERY, WsgiServerFloor

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]

_HEADERS = [("Content-Type", "text/plain"), ("Content-Length", "2")]


def raw_app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    """The smallest honest WSGI app: ``200 ok``."""
    start_response("200 OK", _HEADERS)
    return [b"ok"]


def flask_app() -> Any:
    """A one-route Flask app (``GET /items/<int:item_id>``)."""
    from flask import Flask

    app = Flask("bench")

    @app.get("/items/<int:item_id>")
    def item(item_id: int) -> str:
        return "ok"

    return app


APPS = ("raw", "flask")

VARIANTS = (
    ("bare", "bare", "the app alone"),
    ("sdk floor", "floor", "one SDK SERVER span, 9 attributes, parent given (floors.py)"),
    ("tracewire", "tracewire", "TracewireWSGIMiddleware(app) / tracewire.flask.Tracewire(app)"),
    ("contrib", "contrib", "opentelemetry.instrumentation.wsgi.OpenTelemetryMiddleware"),
)


def build_app(app_name: str, variant: str, provider: TracerProvider, mode: str) -> WSGIApp:
    """A fresh app of ``app_name`` traced as ``variant`` deploys it."""
    from tracewire import Settings

    if app_name == "raw":
        app: WSGIApp = raw_app
        if variant == "bare":
            return app
        if variant == "sdk floor":
            return WsgiServerFloor(app, provider, mode)
        if variant == "tracewire":
            from tracewire import TracewireWSGIMiddleware

            return TracewireWSGIMiddleware(app, Settings(), tracer_provider=provider)
        if variant == "contrib":
            from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware

            return OpenTelemetryMiddleware(
                app, tracer_provider=provider, meter_provider=NoOpMeterProvider()
            )
        raise ValueError(f"unknown variant {variant!r}")
    if app_name != "flask":
        raise ValueError(f"unknown app {app_name!r}")
    flask = flask_app()
    if variant == "sdk floor":
        flask.wsgi_app = WsgiServerFloor(flask.wsgi_app, provider, mode)
    elif variant == "tracewire":
        from tracewire.flask import Tracewire

        Tracewire(flask, Settings(), tracer_provider=provider)
    elif variant == "contrib":
        # contrib's FlaskInstrumentor wraps `wsgi_app` in this same middleware (plus route
        # naming); its releases lag the other contrib packages, so the middleware is used as is.
        from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware

        flask.wsgi_app = OpenTelemetryMiddleware(
            flask.wsgi_app, tracer_provider=provider, meter_provider=NoOpMeterProvider()
        )
    elif variant != "bare":
        raise ValueError(f"unknown variant {variant!r}")
    return flask  # type: ignore[no-any-return]


def environ_template(mode: str, path: str = PATH) -> Environ:
    """What a WSGI server (werkzeug, gunicorn) puts in ``environ`` for the workload's GET."""
    environ: Environ = {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": QUERY,
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "REMOTE_PORT": "51234",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    for name, value in request_headers(mode):
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    return environ


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


def runner(app: WSGIApp, template: Environ) -> Callable[[int], None]:
    def run(n: int) -> None:
        for _ in range(n):
            result = app(template.copy(), _start_response)
            for _chunk in result:
                pass
            close = getattr(result, "close", None)
            if close is not None:
                close()

    return run


def check(
    app: WSGIApp, template: Environ, tracing: Tracing, mode: str, name: str, role: str
) -> None:
    seen: list[str] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        seen.append(status)

    body = serve_once(app, template.copy(), start_response)
    if seen != ["200 OK"] or b"".join(body) != b"ok":
        raise RuntimeError(f"{name}: unexpected response {seen!r} {body!r}")
    check_exports(name, role, mode, tracing)


def build(app_name: str, mode: str, processor: str) -> tuple[list[Variant], dict[str, Tracing]]:
    template = environ_template(mode)
    tracings: dict[str, Tracing] = {}
    plan = []
    for name, role, note in VARIANTS:
        tracing = tracings[name] = Tracing(processor, mode)
        app = build_app(app_name, name, tracing.provider, mode)
        check(app, template, tracing, mode, name, role)
        plan.append(Variant(name, runner(app, template), role, note))
    return plan, tracings


def run_inprocess(
    iterations: int,
    rounds: int,
    modes: tuple[str, ...] = MODES,
    app_name: str = "raw",
    processor: str = "batch",
    clock: str = "cpu",
) -> list[SuiteResult]:
    results = []
    for mode in modes:
        plan, tracings = build(app_name, mode, processor)
        suite = SuiteResult(
            f"wsgi[{app_name}]",
            mode,
            "in-process",
            measure(plan, iterations, rounds, clock),
            iterations,
            rounds,
        )
        if app_name == "flask":
            suite.notes.append(
                "contrib = the contrib WSGI middleware around flask.wsgi_app (what "
                "FlaskInstrumentor installs, minus its route naming)"
            )
        finish(suite, tracings, processor, clock)
        results.append(suite)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_wsgi", description=__doc__)
    parser.add_argument("--app", choices=APPS, default="raw")
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

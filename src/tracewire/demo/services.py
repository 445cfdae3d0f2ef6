"""The demo's services. ``tracewire demo`` runs each in its own process:

==============  ======================  =====================================================
service         what                    started as
==============  ======================  =====================================================
my-server       Starlette under uvicorn ``uvicorn --factory tracewire.demo.services:create_server``
my-downstream   Flask under gunicorn    ``gunicorn 'tracewire.demo.services:create_downstream()'``
my-third        Flask under werkzeug    ``python -m tracewire.demo.services my-third --port N``
==============  ======================  =====================================================

``GET /process`` on my-server waits ~100 ms, then calls ``GET /downstream`` on my-downstream
with httpx; my-downstream (with ``--hops 3``, after calling ``GET /third`` on my-third with
requests) answers after ~50 ms. Every answer is JSON and reports the trace headers that service
received, so the demo can show what went over the wire.

Each service sets up the SDK with ``tracewire.sdk.configure(service_name=..., exporter="otlp")``
(endpoint from the standard ``OTEL_EXPORTER_OTLP_*`` variables). tracewire's propagators are
set the way ``TWDEMO_CONFIG`` says, as users set them:

* ``env``: the environment (``TRACEWIRE_PROPAGATORS`` / ``OTEL_PROPAGATORS``);
* ``code``: ``tracewire.configure(propagators=...)`` at start-up;
* ``framework``: the app's own config: a Starlette ``Config`` reading an env file, Flask's
  ``app.config["TRACEWIRE_PROPAGATORS"]``.

In every mode the HTTP clients are built without settings: they use the settings of the
middleware serving the request, so each service has one setting. The URLs of the next hop and
an optional second OTLP endpoint come from the ``TWDEMO_*`` variables below.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from opentelemetry.sdk.trace import TracerProvider

from tracewire.sdk import ExporterSpec, configure, otlp_exporter
from tracewire.settings import Settings

if TYPE_CHECKING:
    from flask import Flask

__all__ = [
    "CALL_TIMEOUT",
    "CONFIG_MODES",
    "DOWNSTREAM_DELAY",
    "ENV_CONFIG",
    "ENV_DOWNSTREAM_URL",
    "ENV_EXTRA_OTLP",
    "ENV_FILE",
    "ENV_PROPAGATORS",
    "ENV_THIRD_URL",
    "FACTORIES",
    "HEALTH_PATH",
    "SERVER_DELAY",
    "THIRD_DELAY",
    "TRACE_HEADERS",
    "config_mode",
    "configure_propagation",
    "configure_tracing",
    "create_downstream",
    "create_server",
    "create_third",
    "main",
    "received",
    "serve_werkzeug",
    "trace_header_names",
]

ENV_DOWNSTREAM_URL = "TWDEMO_DOWNSTREAM_URL"
ENV_THIRD_URL = "TWDEMO_THIRD_URL"
ENV_EXTRA_OTLP = "TWDEMO_EXTRA_OTLP_ENDPOINT"
ENV_CONFIG = "TWDEMO_CONFIG"  # env | code | framework
ENV_PROPAGATORS = "TWDEMO_PROPAGATORS"  # the propagators, for the code and framework modes
ENV_FILE = "TWDEMO_ENV_FILE"  # the Starlette env file, for the framework mode
CONFIG_MODES = ("env", "code", "framework")

HEALTH_PATH = "/health"
SERVER_DELAY = 0.100
DOWNSTREAM_DELAY = 0.050
THIRD_DELAY = 0.020
CALL_TIMEOUT = 15.0

# Headers the built-in propagators read; installed ones add their own fields.
TRACE_HEADERS = (
    "traceparent",
    "tracestate",
    "baggage",
    "b3",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
)


def configure_tracing(service_name: str) -> TracerProvider:
    """The SDK for one demo service: OTLP to the demo, and to ``TWDEMO_EXTRA_OTLP_ENDPOINT``."""
    exporters: list[ExporterSpec] = ["otlp"]
    extra = os.environ.get(ENV_EXTRA_OTLP, "").strip()
    if extra:
        # A second processor: a slow or absent collector cannot delay the demo's own copy.
        exporters.append(otlp_exporter(extra))
    return configure(service_name=service_name, exporter=exporters)


def config_mode() -> str:
    mode = os.environ.get(ENV_CONFIG, "env")
    return mode if mode in CONFIG_MODES else "env"


def configure_propagation() -> None:
    """The ``code`` mode's one line: the process default every tracewire component uses."""
    if config_mode() == "code":
        import tracewire

        tracewire.configure(propagators=os.environ[ENV_PROPAGATORS])


def trace_header_names(settings: Settings) -> tuple[str, ...]:
    fields = {f.lower() for _, p in settings.composite.extractors for f in p.fields}
    return (*TRACE_HEADERS, *sorted(fields.difference(TRACE_HEADERS)))


def received(get: Callable[[str], str | None], names: Sequence[str]) -> dict[str, str]:
    """The trace headers of a request, by lowercase name (only those present)."""
    found: dict[str, str] = {}
    for name in names:
        value = get(name)
        if value is not None:
            found[name] = value
    return found


# --------------------------------------------------------------------------- my-server (ASGI)


def create_server() -> Any:
    """my-server: Starlette, ``GET /process`` -> httpx -> my-downstream ``GET /downstream``."""
    import httpx
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import JSONResponse, PlainTextResponse
    from starlette.routing import Route

    from tracewire.asgi import TracewireMiddleware
    from tracewire.httpx import AsyncTracewireTransport

    configure_tracing("my-server")
    configure_propagation()
    middleware = _starlette_middleware()
    names = trace_header_names(middleware.settings)
    downstream = os.environ[ENV_DOWNSTREAM_URL].rstrip("/") + "/downstream"

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # No settings: the transport uses those of the middleware serving each request.
        transport = AsyncTracewireTransport()
        async with httpx.AsyncClient(transport=transport, timeout=CALL_TIMEOUT) as client:
            app.state.client = client
            yield

    async def process(request: Request) -> JSONResponse:
        headers = received(request.headers.get, names)
        await asyncio.sleep(SERVER_DELAY)
        client: httpx.AsyncClient = request.app.state.client
        try:
            response = await client.get(downstream)
            answer: Any = response.json()
            status = 200 if response.status_code == 200 else 502
        except (httpx.HTTPError, ValueError) as exc:
            answer, status = {"error": f"{type(exc).__name__}: {exc}"}, 502
        body = {"service": "my-server", "received": headers, "downstream": answer}
        return JSONResponse(body, status_code=status)

    async def health(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    return Starlette(
        routes=[Route("/process", process), Route(HEALTH_PATH, health)],
        middleware=[Middleware(TracewireMiddleware, **middleware.kwargs)],
        lifespan=lifespan,
    )


class _MiddlewareSettings:
    """What my-server passes to ``TracewireMiddleware``, and the settings that gives."""

    def __init__(self, kwargs: dict[str, Any]) -> None:
        from tracewire.asgi import TracewireMiddleware

        self.kwargs = kwargs
        self.settings = TracewireMiddleware(_no_app, **kwargs).settings


async def _no_app(scope: Any, receive: Any, send: Any) -> None:  # pragma: no cover
    return None


def _starlette_middleware() -> _MiddlewareSettings:
    # The probe path is excluded the way a Starlette user would write it: keyword settings,
    # merged over the environment / the configure() default / the app's Config.
    excluded: dict[str, Any] = {"excluded_paths": [HEALTH_PATH]}
    if config_mode() != "framework":
        return _MiddlewareSettings(excluded)
    from starlette.config import Config

    from tracewire.starlette import settings_from_config

    settings = settings_from_config(Config(os.environ[ENV_FILE]), excluded_paths=[HEALTH_PATH])
    return _MiddlewareSettings({"settings": settings})


# ------------------------------------------------------------------- my-downstream (WSGI)


def _flask_app(name: str) -> tuple[Flask, Settings]:
    from flask import Flask

    from tracewire.flask import EXTENSION_KEY, Tracewire

    configure_propagation()
    app = Flask(name)
    app.config["TRACEWIRE_EXCLUDED_PATHS"] = HEALTH_PATH
    if config_mode() == "framework":
        app.config["TRACEWIRE_PROPAGATORS"] = os.environ[ENV_PROPAGATORS]
    Tracewire(app)  # app.config over the configure() default / the environment
    app.add_url_rule(HEALTH_PATH, "health", lambda: "ok")
    settings: Settings = app.extensions[EXTENSION_KEY].settings
    return app, settings


def create_downstream() -> Any:
    """my-downstream: Flask, ``GET /downstream`` [-> requests -> my-third ``GET /third``]."""
    import requests
    from flask import jsonify, request

    configure_tracing("my-downstream")
    app, settings = _flask_app("my-downstream")
    names = trace_header_names(settings)
    third_url = os.environ.get(ENV_THIRD_URL, "").strip()
    session: requests.Session | None = None
    if third_url:
        from tracewire.requests import instrument_session

        # No settings: the session uses those of the app serving each request.
        session = instrument_session(requests.Session())

    @app.get("/downstream")
    def downstream() -> Any:
        headers = received(request.headers.get, names)
        body: dict[str, Any] = {"service": "my-downstream", "received": headers}
        status = 200
        if session is not None:
            try:
                response = session.get(third_url.rstrip("/") + "/third", timeout=CALL_TIMEOUT)
                body["third"] = response.json()
                status = 200 if response.status_code == 200 else 502
            except (requests.RequestException, ValueError) as exc:
                body["third"], status = {"error": f"{type(exc).__name__}: {exc}"}, 502
        time.sleep(DOWNSTREAM_DELAY)
        return jsonify(body), status

    return app


def create_third() -> Any:
    """my-third: Flask, ``GET /third`` answers JSON after ~20 ms."""
    from flask import jsonify, request

    configure_tracing("my-third")
    app, settings = _flask_app("my-third")
    names = trace_header_names(settings)

    @app.get("/third")
    def third() -> Any:
        headers = received(request.headers.get, names)
        time.sleep(THIRD_DELAY)
        return jsonify({"service": "my-third", "received": headers})

    return app


# ------------------------------------------------------------- werkzeug runner (my-third etc.)


def serve_werkzeug(factory: Callable[[], Any], host: str, port: int) -> None:
    """Serve a WSGI app from ``factory`` with werkzeug's threaded server until SIGTERM/SIGINT."""
    from werkzeug.serving import make_server

    server = make_server(host, port, factory(), threaded=True)

    def stop(signum: int, frame: object) -> None:
        # Leave serve_forever normally so that atexit (the SDK's flush) runs.
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    try:
        server.serve_forever(poll_interval=0.1)
    except (SystemExit, KeyboardInterrupt):
        pass
    finally:
        server.server_close()


FACTORIES: dict[str, Callable[[], Any]] = {
    "my-downstream": create_downstream,
    "my-third": create_third,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tracewire.demo.services",
        description="Run one WSGI demo service under werkzeug's server.",
    )
    parser.add_argument("service", choices=sorted(FACTORIES))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    serve_werkzeug(FACTORIES[args.service], args.host, args.port)
    return 0


if __name__ == "__main__":  # pragma: no cover - run as a child process
    sys.exit(main())

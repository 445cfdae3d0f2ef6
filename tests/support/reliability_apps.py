"""Small ASGI, WSGI and Django services for the reliability suites, run by real servers.

Importing this module sets up the SDK with ``tracewire.sdk.configure`` (as a service's own
module would) unless ``RELIABILITY_CONFIGURE`` says otherwise:

* ``import`` (default): configure at import; under gunicorn ``--preload`` that is the master,
  before the fork;
* ``post_fork``: not at import; ``tests.support.reliability_gunicorn_conf`` configures in each
  worker;
* ``no``: no SDK at all (the same app without tracewire's SDK set-up, for comparisons).

Spans go over OTLP/HTTP to ``OTEL_EXPORTER_OTLP_ENDPOINT`` (a test receiver);
``RELIABILITY_FLUSH_TIMEOUT`` sets ``flush_timeout``; ``RELIABILITY_SERVICE`` the service name;
``RELIABILITY_DOWNSTREAM`` the base URL that ``/call`` calls.

Every app answers:

* ``GET /hello``: JSON with the current ``trace_id``, ``span_id``, ``sampled``, ``pid``;
* ``GET /slow?ms=N``: the same after N milliseconds;
* ``GET /call``: calls ``RELIABILITY_DOWNSTREAM + /echo`` (httpx for ASGI, requests for WSGI)
  and answers its own view plus the downstream's, and the client span's ids;
* ``GET /echo``: its view plus the ``traceparent`` it received.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import time
from typing import Any
from urllib.parse import parse_qs

from opentelemetry import trace

from tracewire import TracewireMiddleware, TracewireWSGIMiddleware

MODE = os.environ.get("RELIABILITY_CONFIGURE", "import")
SERVICE = os.environ.get("RELIABILITY_SERVICE", "reliability")
DOWNSTREAM = os.environ.get("RELIABILITY_DOWNSTREAM", "")


def configure_sdk() -> None:
    from tracewire import sdk

    sdk.configure(
        service_name=SERVICE,
        exporter="otlp",
        flush_timeout=float(os.environ.get("RELIABILITY_FLUSH_TIMEOUT", "5")),
    )


if MODE == "import":
    configure_sdk()


def view(**extra: Any) -> dict[str, Any]:
    sc = trace.get_current_span().get_span_context()
    return {
        "trace_id": f"{sc.trace_id:032x}",
        "span_id": f"{sc.span_id:016x}",
        "sampled": bool(sc.trace_flags.sampled),
        "valid": sc.is_valid,
        "pid": os.getpid(),
        **extra,
    }


def mark_started() -> None:
    """Under ``RELIABILITY_MARKS``, leave a file named after the current trace: a test waits
    for it to know the request is in flight."""
    marks = os.environ.get("RELIABILITY_MARKS")
    if marks:
        sc = trace.get_current_span().get_span_context()
        with open(os.path.join(marks, f"{sc.trace_id:032x}"), "w") as f:
            f.write(str(os.getpid()))


def _query_ms(query: str) -> float:
    values = parse_qs(query).get("ms", ["0"])
    return min(float(values[0]), 60_000.0) / 1000.0


# ------------------------------------------------------------------------------------ ASGI
_async_client: Any = None
_hops: asyncio.Semaphore | None = None
# httpx's async pool slows down sharply with ~100 requests in flight at once (about 150/s
# against 600/s with 10 here): the app bounds its own concurrent downstream calls.
HOP_CONCURRENCY = 16


def _httpx_client() -> Any:
    global _async_client
    if _async_client is None:
        import httpx

        from tracewire.httpx import AsyncTracingTransport

        limits = httpx.Limits(max_connections=400, max_keepalive_connections=400)
        _async_client = httpx.AsyncClient(
            transport=AsyncTracingTransport(httpx.AsyncHTTPTransport(limits=limits)),
            timeout=30,
        )
    return _async_client


async def _plain_asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    path = scope["path"]
    query = scope.get("query_string", b"").decode("latin-1")
    status = 200
    if path == "/hello":
        body = view()
    elif path == "/slow":
        mark_started()
        await asyncio.sleep(_query_ms(query))
        body = view()
    elif path == "/echo":
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        body = view(traceparent=headers.get("traceparent"))
    elif path == "/call":
        global _hops
        if _hops is None:
            _hops = asyncio.Semaphore(HOP_CONCURRENCY)
        mine = view()
        async with _hops:
            response = await _httpx_client().get(DOWNSTREAM + "/echo")
        body = {**mine, "downstream": response.json()}
    else:
        status, body = 404, {"error": "not found"}
    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", b"%d" % len(data)),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})


asgi_app = TracewireMiddleware(_plain_asgi)


# ------------------------------------------------------------------------------------ WSGI
_local = threading.local()


def _session() -> Any:
    session = getattr(_local, "session", None)
    if session is None:
        import requests

        import tracewire.requests

        session = tracewire.requests.instrument_session(requests.Session())
        _local.session = session
    return session


def _plain_wsgi(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    path = environ.get("PATH_INFO", "")
    status = "200 OK"
    if path == "/hello":
        body = view()
    elif path == "/slow":
        mark_started()
        time.sleep(_query_ms(environ.get("QUERY_STRING", "")))
        body = view()
    elif path == "/echo":
        body = view(traceparent=environ.get("HTTP_TRACEPARENT"))
    elif path == "/call":
        mine = view()
        response = _session().get(DOWNSTREAM + "/echo", timeout=30)
        body = {**mine, "downstream": response.json()}
    else:
        status, body = "404 Not Found", {"error": "not found"}
    data = json.dumps(body).encode()
    start_response(
        status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
    )
    return [data]


wsgi_app = TracewireWSGIMiddleware(_plain_wsgi)


# ------------------------------------------------------------------------------- runners
def main(argv: list[str]) -> None:
    """``python -m tests.support.reliability_apps werkzeug HOST PORT``."""
    kind, host, port = argv
    if kind == "werkzeug":
        from werkzeug.serving import run_simple

        run_simple(host, int(port), wsgi_app, threaded=True)
    else:
        raise SystemExit(f"unknown runner {kind!r}")


if __name__ == "__main__":
    main(sys.argv[1:])

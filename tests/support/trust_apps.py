"""Small services for the trust-boundary tests, as ASGI (uvicorn) and WSGI (gunicorn) apps.

Every probe answers any path with JSON describing what the app code sees::

    {"trace_id": ..., "span_id": ..., "sampled": bool, "valid": bool,
     "baggage": {key: value}, "calls": [{"url": ..., "status": int, "body": <json>}]}

and first makes one outgoing call (redirects followed) per ``call=URL`` query parameter,
with tracewire's client hooks built without settings (so the serving middleware's settings
apply): ``via=httpx`` (the default; the async transport under ASGI), ``via=httpx-sync`` or
``via=requests``; or a client made during the request with no tracing of its own, traced
only while a global switch is on (``via=plain-httpx``, ``via=plain-requests``).

:func:`reverse_proxy` is a real proxy hop (ASGI) that appends the socket peer to
``X-Forwarded-For`` (or ``Forwarded``) the way a load balancer does.

:func:`gunicorn_app` is what gunicorn serves: the WSGI probe in ``TracewireWSGIMiddleware``
with settings from the ``TRACEWIRE_*`` environment, an SDK provider with an in-memory
exporter (sampler from ``TRUST_SAMPLER``: ``always_on`` or ``ratio0``), and, outside the
middleware, ``/_spans`` (the finished spans as JSON records) and ``/_probe``.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Awaitable, Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

import httpx
import requests
from opentelemetry import baggage, trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased, Sampler, TraceIdRatioBased

from tests.support.trust_spans import records
from tracewire.httpx import AsyncTracewireTransport, TracewireTransport
from tracewire.requests import instrument_session
from tracewire.wsgi import TracewireWSGIMiddleware

ASGIApp = Callable[[dict[str, Any], Any, Any], Awaitable[None]]
WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

SAMPLERS: dict[str, Callable[[], Sampler]] = {
    "always_on": lambda: ParentBased(ALWAYS_ON),
    "ratio0": lambda: ParentBased(TraceIdRatioBased(0.0)),
}


def provider_with(sampler: str = "always_on") -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=SAMPLERS[sampler]())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def seen(calls: list[dict[str, Any]]) -> dict[str, Any]:
    """What the app code sees of the trace, and what its outgoing calls got back."""
    sc = trace.get_current_span().get_span_context()
    return {
        "trace_id": f"{sc.trace_id:032x}",
        "span_id": f"{sc.span_id:016x}",
        "sampled": sc.trace_flags.sampled,
        "valid": sc.is_valid,
        "baggage": {k: str(v) for k, v in baggage.get_all().items()},
        "calls": calls,
    }


def _reply(url: str, status: int, content: bytes) -> dict[str, Any]:
    try:
        body = json.loads(content)
    except ValueError:
        body = content.decode("utf-8", "replace")
    return {"url": url, "status": status, "body": body}


def _query(raw: str) -> tuple[list[str], str]:
    query = parse_qs(raw)
    return query.get("call", []), query.get("via", ["httpx"])[0]


class Clients:
    """One app's outgoing clients, made once (an httpx client costs an SSL context)."""

    def __init__(self, provider: TracerProvider) -> None:
        self.provider = provider
        self._sync: httpx.Client | None = None
        self._async: httpx.AsyncClient | None = None
        self._session: requests.Session | None = None

    def call_sync(self, url: str, via: str) -> dict[str, Any]:
        # plain-*: a client made now, traced only if a global switch (instrument()) is on.
        if via == "plain-requests":
            r = requests.get(url, timeout=10)
            return _reply(url, r.status_code, r.content)
        if via == "plain-httpx":
            with httpx.Client(timeout=10, follow_redirects=True) as plain:
                response = plain.get(url)
            return _reply(url, response.status_code, response.content)
        if via == "requests":
            if self._session is None:
                self._session = instrument_session(
                    requests.Session(), tracer_provider=self.provider
                )
            r = self._session.get(url, timeout=10)
            return _reply(url, r.status_code, r.content)
        if self._sync is None:
            transport = TracewireTransport(tracer_provider=self.provider)
            self._sync = httpx.Client(transport=transport, timeout=10, follow_redirects=True)
        response = self._sync.get(url)
        return _reply(url, response.status_code, response.content)

    async def call_async(self, url: str, via: str) -> dict[str, Any]:
        if via != "httpx":
            return self.call_sync(url, via)  # blocks the loop briefly; fine for a probe
        if self._async is None:  # made in the server's event loop, used only there
            transport = AsyncTracewireTransport(tracer_provider=self.provider)
            self._async = httpx.AsyncClient(transport=transport, timeout=10, follow_redirects=True)
        response = await self._async.get(url)
        return _reply(url, response.status_code, response.content)


async def _drain(receive: Any) -> bytes:
    chunks = []
    more = True
    while more:
        message = await receive()
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    return b"".join(chunks)


async def _send_json(send: Any, status: int, payload: Any) -> None:
    body = json.dumps(payload).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", b"%d" % len(body)),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def asgi_probe(provider: TracerProvider) -> ASGIApp:
    """The probe as a raw ASGI app (wrap it in ``TracewireMiddleware``)."""

    clients = Clients(provider)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await _drain(receive)
        urls, via = _query(scope.get("query_string", b"").decode("latin-1"))
        calls = [await clients.call_async(url, via) for url in urls]
        await _send_json(send, 200, seen(calls))

    return app


def wsgi_probe(provider: TracerProvider) -> WSGIApp:
    """The probe as a WSGI app (wrap it in ``TracewireWSGIMiddleware``)."""

    clients = Clients(provider)
    lock = threading.Lock()  # gthread: one request at a time may use the shared clients

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        urls, via = _query(environ.get("QUERY_STRING", ""))
        with lock:
            calls = [clients.call_sync(url, via) for url in urls]
        body = json.dumps(seen(calls)).encode()
        start_response(
            "200 OK", [("content-type", "application/json"), ("content-length", str(len(body)))]
        )
        return [body]

    return app


def gunicorn_app() -> WSGIApp:
    """The gunicorn service (see the module docstring); built in the worker."""
    provider, exporter = provider_with(os.environ.get("TRUST_SAMPLER", "always_on"))
    traced = TracewireWSGIMiddleware(wsgi_probe(provider), tracer_provider=provider)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path in ("/_spans", "/_probe"):
            payload = records(exporter) if path == "/_spans" else "ok"
            body = json.dumps(payload).encode()
            start_response("200 OK", [("content-type", "application/json")])
            return [body]
        return traced(environ, start_response)

    return app


# --------------------------------------------------------------------------------- a proxy
def _forwarded_for(peer: str) -> str:
    return f'for="[{peer}]"' if ":" in peer else f"for={peer}"


def reverse_proxy(upstream: str, header: str = "x-forwarded-for") -> ASGIApp:
    """An ASGI reverse proxy to ``upstream`` that appends the peer to ``header``."""
    skip = {"host", "content-length", "connection", "transfer-encoding"}
    made: list[httpx.AsyncClient] = []  # one client, made in the server's event loop

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = await _drain(receive)
        peer = scope["client"][0]
        headers: list[tuple[str, str]] = []
        chain: list[str] = []
        for raw_name, raw_value in scope["headers"]:
            name, value = raw_name.decode("latin-1"), raw_value.decode("latin-1")
            if name == header:
                chain.append(value)
            elif name not in skip:
                headers.append((name, value))
        chain.append(peer if header == "x-forwarded-for" else _forwarded_for(peer))
        headers.append((header, ", ".join(chain)))
        target = upstream + scope["raw_path"].decode("latin-1")
        if scope.get("query_string"):
            target += "?" + scope["query_string"].decode("latin-1")
        if not made:
            made.append(httpx.AsyncClient(timeout=10))
        response = await made[0].request(scope["method"], target, headers=headers, content=body)
        await send(
            {
                "type": "http.response.start",
                "status": response.status_code,
                "headers": [
                    (b"content-type", response.headers.get("content-type", "").encode()),
                    (b"content-length", b"%d" % len(response.content)),
                ],
            }
        )
        await send({"type": "http.response.body", "body": response.content})

    return app

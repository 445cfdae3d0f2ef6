"""Starting the trust-test services on real servers, and asking them from a chosen address.

* :func:`uvicorn_service`: the ASGI probe in ``TracewireMiddleware`` (settings in code) under
  uvicorn with ``proxy_headers=False``, so tracewire's own trusted-proxy logic is what runs;
* :func:`gunicorn_service`: the WSGI probe under gunicorn (gthread), settings from the
  ``TRACEWIRE_*`` environment (their text form);
* :func:`proxy_for`: a real reverse-proxy hop (uvicorn on 127.0.0.1) in front of a service;
* :func:`ask`: a GET from a given loopback source address (``local_address``), the probe's
  JSON back.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
from opentelemetry.sdk.trace import TracerProvider

from tests.support.servers import PYTHON, SubprocessServer, UvicornThread, serving, wait_for
from tests.support.trust_apps import asgi_probe, provider_with, reverse_proxy
from tests.support.trust_spans import SpanSink, http_sink, memory_sink
from tracewire import Settings, TracewireMiddleware

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GUNICORN = os.path.join(os.path.dirname(PYTHON), "gunicorn")

# A second loopback address for "another machine": Linux routes all of 127/8 to lo.
OTHER = "127.0.0.2"
LOCAL = "127.0.0.1"


@dataclass
class Service:
    name: str
    url: str
    spans: SpanSink
    provider: TracerProvider | None = None  # in-process services only


@contextlib.contextmanager
def uvicorn_service(
    settings: Settings, sampler: str = "always_on", name: str = "uvicorn", **config: Any
) -> Iterator[Service]:
    """``config``: more ``uvicorn.Config`` options (``h11_max_incomplete_event_size``)."""
    provider, exporter = provider_with(sampler)
    app = TracewireMiddleware(asgi_probe(provider), settings, tracer_provider=provider)
    try:
        with serving(UvicornThread(app, proxy_headers=False, **config)) as server:
            yield Service(name, server.url, memory_sink(exporter), provider)
    finally:
        provider.shutdown()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


@contextlib.contextmanager
def gunicorn_service(
    env: Mapping[str, str],
    sampler: str = "always_on",
    name: str = "gunicorn",
    args: Sequence[str] = (),
) -> Iterator[Service]:
    """``args``: more gunicorn options (``--limit-request-field_size 0``)."""
    argv = [GUNICORN, "-w", "1", "-k", "gthread", "--threads", "8", "-b", "{host}:{port}", *args]
    argv += [
        "--timeout",
        "60",
        "--graceful-timeout",
        "1",
        "tests.support.trust_apps:gunicorn_app()",
    ]
    full_env = {**env, "TRUST_SAMPLER": sampler, "PYTHONPATH": ROOT}
    with SubprocessServer(argv, env=full_env, cwd=ROOT, timeout=60) as server:
        # Ready when the worker answers, not only when the master listens.
        wait_for(lambda: _answers(server.url + "/_probe"), timeout=60, interval=0.1)
        yield Service(name, server.url, http_sink(server.url + "/_spans"))


@contextlib.contextmanager
def proxy_for(service: Service, header: str = "x-forwarded-for") -> Iterator[str]:
    """A reverse proxy on 127.0.0.1 in front of ``service``; yields its URL."""
    with serving(UvicornThread(reverse_proxy(service.url, header), proxy_headers=False)) as srv:
        yield srv.url


_clients: dict[str, httpx.Client] = {}


def client(source: str = LOCAL) -> httpx.Client:
    """A plain httpx client whose connections come from ``source`` (one per source, kept:
    each new client costs an SSL context)."""
    found = _clients.get(source)
    if found is None:
        transport = httpx.HTTPTransport(local_address=source)
        found = _clients[source] = httpx.Client(transport=transport, timeout=15)
    return found


def ask(
    base: str,
    path: str,
    *,
    source: str = LOCAL,
    headers: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
    calls: Sequence[str] = (),
    via: str = "httpx",
) -> dict[str, Any]:
    """GET ``base + path`` from ``source``; the probe's JSON (its calls to ``calls`` made)."""
    query = "&".join(f"call={quote(url, safe='')}" for url in calls)
    if calls:
        query += f"&via={via}"
    url = base + path + (f"?{query}" if query else "")
    response = client(source).get(url, headers=headers)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def downstream_headers(answer: dict[str, Any], index: int = 0) -> dict[str, list[str]]:
    """The headers the echo server got from the probe's ``index``-th call."""
    headers: dict[str, list[str]] = answer["calls"][index]["body"]["headers"]
    return headers

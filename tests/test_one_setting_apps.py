"""Two apps with different settings in one process: each app's calls follow its own settings.

The apps share the very same client objects (one httpx client, one requests session, the
global switches) and serve requests at the same time (every request waits at a barrier
until all of them are inside their app before calling out), so a setting that leaked
through a global, or from one request to another, would show in the headers a downstream
server records, or as a broken parent chain at the shared exporter.
"""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from werkzeug.middleware.dispatcher import DispatcherMiddleware

import tracewire.httpx
from tests.support.one_setting import (
    BARRIER_TIMEOUT,
    CLIENTS,
    TIMEOUT,
    Clients,
    Downstream,
    Incoming,
    Service,
    SharedTracing,
    Trace,
    clean_globals,
    expected_names,
    flask_app,
    global_switch,
    incoming,
    new_case,
    outgoing_ids,
    seen,
    starlette_app,
    trace_header_names,
)
from tests.support.servers import UvicornThread, WerkzeugThread
from tracewire import TracewireMiddleware
from tracewire.flask import Tracewire


@pytest.fixture(scope="module")
def shared() -> Iterator[SharedTracing]:
    with SharedTracing() as tracing:
        yield tracing


@pytest.fixture(scope="module")
def downstream(shared: SharedTracing) -> Iterator[Downstream]:
    with Downstream(shared.provider) as server:
        yield server


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    with clean_globals(monkeypatch):
        yield


class Planned:
    """One request of the batch: which app, in what format, calling out how."""

    def __init__(self, url: str, kind: str, fmt: str, propagators: tuple[str, ...]) -> None:
        self.url = url
        self.kind = kind
        self.propagators = propagators
        self.sent: Incoming = incoming(fmt)
        self.case = new_case()


def _send_all(planned: list[Planned], downstream: Downstream) -> list[httpx.Response]:
    """Send every request at once (the driver client is untraced: made before any switch)."""
    with (
        httpx.Client(timeout=BARRIER_TIMEOUT + TIMEOUT) as driver,
        concurrent.futures.ThreadPoolExecutor(len(planned)) as pool,
    ):

        def send(p: Planned) -> httpx.Response:
            target = downstream.url(p.propagators, p.case)
            params = {"kind": p.kind, "target": target, "sync": "1"}
            return driver.get(p.url, params=params, headers=p.sent.headers)

        return list(pool.map(send, planned))


def _check(p: Planned, response: httpx.Response, shared: SharedTracing, ds: Downstream) -> None:
    assert response.status_code == 200, f"{p.kind}: {response.text}"
    assert response.json()["status"] == 200
    got = ds.got(p.case)
    assert trace_header_names(got) == expected_names(p.propagators), (p.kind, p.propagators)
    hop = Trace.of(shared.wait_spans(p.sent.trace_id, 3), p.sent.span_id)
    for name in p.propagators:
        assert outgoing_ids(got, name) == (p.sent.trace_id, hop.client.context.span_id)
    hop.assert_chain()


def test_starlette_and_flask_apps_share_clients_but_not_settings(
    shared: SharedTracing, downstream: Downstream
) -> None:
    # One set of clients for both apps, built without settings.
    clients = Clients(shared.provider)
    barrier = threading.Barrier(2 * len(CLIENTS))
    service = Service(clients, barrier)

    asgi = starlette_app(service)
    asgi.add_middleware(TracewireMiddleware, propagators=["b3"], tracer_provider=shared.provider)
    flask = flask_app(service)
    flask.config["TRACEWIRE_PROPAGATORS"] = "tracecontext"
    Tracewire(flask, tracer_provider=shared.provider)

    with UvicornThread(asgi) as a, WerkzeugThread(flask) as b:
        planned = [Planned(f"{a.url}/call", kind, "b3", ("b3",)) for kind in CLIENTS] + [
            Planned(f"{b.url}/call", kind, "tracecontext", ("tracecontext",)) for kind in CLIENTS
        ]
        with (
            global_switch("httpx_global", shared.provider),
            global_switch("requests_global", shared.provider),
        ):
            responses = _send_all(planned, downstream)
    clients.close()
    assert not barrier.broken, "the requests did not all overlap"
    for p, response in zip(planned, responses, strict=True):
        _check(p, response, shared, downstream)


def _sub_app(shared_client: dict[str, Any], barrier: threading.Barrier) -> Any:
    async def call(request: Request) -> Response:
        await run_in_threadpool(barrier.wait, BARRIER_TIMEOUT)
        client = shared_client.get("client")
        if client is None:  # one AsyncClient for both apps, made on the server's loop
            client = shared_client["client"] = httpx.AsyncClient(
                transport=tracewire.httpx.AsyncTracewireTransport(
                    tracer_provider=shared_client["provider"]
                ),
                timeout=TIMEOUT,
            )
        r = await client.get(request.query_params["target"])
        return JSONResponse({"status": r.status_code, **seen()})

    return Starlette(routes=[Route("/call", call)])


def test_two_starlette_apps_mounted_in_one_server_share_one_async_client(
    shared: SharedTracing, downstream: Downstream
) -> None:
    holder: dict[str, Any] = {"provider": shared.provider}
    per_app = 4
    barrier = threading.Barrier(2 * per_app)
    p = shared.provider

    async def close(request: Request) -> Response:
        await holder["client"].aclose()
        return JSONResponse({})

    root = Starlette(
        routes=[
            Route("/close", close, methods=["POST"]),
            Mount(
                "/a",
                app=TracewireMiddleware(
                    _sub_app(holder, barrier), propagators=["b3"], tracer_provider=p
                ),
            ),
            Mount(
                "/b",
                app=TracewireMiddleware(
                    _sub_app(holder, barrier),
                    propagators=["tracecontext", "b3multi"],
                    tracer_provider=p,
                ),
            ),
        ]
    )
    with UvicornThread(root) as server:
        planned = []
        for i in range(per_app):
            planned.append(Planned(f"{server.url}/a/call", f"a{i}", "b3", ("b3",)))
            planned.append(
                Planned(
                    f"{server.url}/b/call", f"b{i}", "tracecontext", ("tracecontext", "b3multi")
                )
            )
        responses = _send_all(planned, downstream)
        assert isinstance(holder.get("client"), httpx.AsyncClient), "the shared client unused"
        assert httpx.post(f"{server.url}/close", timeout=TIMEOUT).status_code == 200
    assert not barrier.broken
    for p_, response in zip(planned, responses, strict=True):
        _check(p_, response, shared, downstream)


def test_two_flask_apps_in_one_wsgi_server_with_one_session(
    shared: SharedTracing, downstream: Downstream
) -> None:
    clients = Clients(shared.provider)
    barrier = threading.Barrier(6)
    service = Service(clients, barrier)
    b3 = flask_app(service, "b3_app")
    b3.config["TRACEWIRE_PROPAGATORS"] = "b3multi"
    Tracewire(b3, tracer_provider=shared.provider)
    w3c = flask_app(service, "w3c_app")
    w3c.config["TRACEWIRE_PROPAGATORS"] = "tracecontext"
    Tracewire(w3c, tracer_provider=shared.provider)
    root = DispatcherMiddleware(b3, {"/w3c": w3c})
    with WerkzeugThread(root) as server:
        planned = []
        for kind in ("requests", "httpx", "httpx_async"):
            planned.append(Planned(f"{server.url}/call", kind, "b3multi", ("b3multi",)))
            planned.append(
                Planned(f"{server.url}/w3c/call", kind, "tracecontext", ("tracecontext",))
            )
        responses = _send_all(planned, downstream)
    clients.close()
    assert not barrier.broken
    for p, response in zip(planned, responses, strict=True):
        _check(p, response, shared, downstream)

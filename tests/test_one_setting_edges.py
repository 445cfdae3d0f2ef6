"""The request-scoped settings reach the outgoing calls made on the less common paths too.

An excluded path (no SERVER span, the incoming context still current), a WSGI body produced
after the app returned, a Starlette background task run after the response, an unsampled
incoming parent, a global switch turned on before ``configure()``, and a Flask app set up
before ``configure()``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from opentelemetry.trace import SpanKind
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

import tracewire
import tracewire.httpx
from tests.support.one_setting import (
    TIMEOUT,
    Clients,
    Downstream,
    Service,
    SharedTracing,
    assert_hop,
    assert_root_hop,
    call_through,
    clean_globals,
    expected_names,
    flask_app,
    incoming,
    new_case,
    outgoing_ids,
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


@pytest.fixture
def clients(shared: SharedTracing) -> Iterator[Clients]:
    built = Clients(shared.provider)
    yield built
    built.close()


@pytest.mark.parametrize("kind", ["httpx", "requests"])
def test_a_call_from_an_excluded_path_uses_the_apps_settings(
    kind: str, shared: SharedTracing, downstream: Downstream, clients: Clients
) -> None:
    app = starlette_app(Service(clients))
    app.add_middleware(
        TracewireMiddleware,
        propagators=["b3"],
        excluded_paths=["/call"],
        tracer_provider=shared.provider,
    )
    sent = incoming("b3")
    with UvicornThread(app) as server:
        got, _ = call_through(server.url, kind, sent, downstream, ["b3"], shared.provider)
    assert trace_header_names(got) == {"b3"}
    spans = shared.wait_spans(sent.trace_id, 2)
    (client,) = [s for s in spans if s.kind is SpanKind.CLIENT]
    assert client.parent is not None and client.parent.span_id == sent.span_id  # no SERVER span
    assert outgoing_ids(got, "b3") == (sent.trace_id, client.context.span_id)
    (server_span,) = [s for s in spans if s.kind is SpanKind.SERVER]  # the downstream's
    assert server_span.parent is not None and server_span.parent.span_id == client.context.span_id


def test_a_call_made_while_a_wsgi_body_streams_uses_the_apps_settings(
    shared: SharedTracing, downstream: Downstream, clients: Clients
) -> None:
    app = flask_app(Service(clients))
    app.config["TRACEWIRE_PROPAGATORS"] = "b3multi"

    @app.get("/stream-call")  # type: ignore[untyped-decorator]
    def stream_call() -> Any:
        from flask import request

        target = request.args["target"]

        def body() -> Iterator[bytes]:
            yield b"start;"
            # After the view returned: only the middleware's context is current here.
            yield str(clients.call("httpx", target)).encode()

        return app.response_class(body())

    Tracewire(app, tracer_provider=shared.provider)
    sent = incoming("b3multi")
    case = new_case()
    with WerkzeugThread(app) as server:
        r = httpx.get(
            f"{server.url}/stream-call",
            params={"target": downstream.url(["b3multi"], case)},
            headers=sent.headers,
            timeout=TIMEOUT,
        )
    assert r.text == "start;200"
    assert_hop(shared, sent, downstream.got(case), ["b3multi"])


def _call_from_a_background_task(
    shared: SharedTracing, downstream: Downstream, clients: Clients, **settings: Any
) -> tuple[Any, Any]:
    """A Starlette app with ``propagators=["b3"]`` whose task calls downstream: (sent, got)."""

    async def later(request: Request) -> Response:
        task = BackgroundTask(clients.acall, "httpx_async", request.query_params["target"])
        return PlainTextResponse("accepted", background=task)

    app = Starlette(routes=[Route("/later", later)])
    app.add_middleware(
        TracewireMiddleware, propagators=["b3"], tracer_provider=shared.provider, **settings
    )
    sent = incoming("b3")
    case = new_case()
    with UvicornThread(app) as server:
        r = httpx.get(
            f"{server.url}/later",
            params={"target": downstream.url(["b3"], case)},
            headers=sent.headers,
            timeout=TIMEOUT,
        )
        assert r.text == "accepted"
        return sent, downstream.got(case)


def test_a_call_from_a_starlette_background_task_uses_the_apps_settings(
    shared: SharedTracing, downstream: Downstream, clients: Clients
) -> None:
    # No task span of its own here, so the CLIENT span is the SERVER span's child as in every
    # hop of this file (task spans: tests/test_background_spans.py).
    sent, got = _call_from_a_background_task(shared, downstream, clients, background_spans="off")
    assert_hop(shared, sent, got, ["b3"])


def test_a_call_from_a_background_task_with_its_own_span_uses_the_apps_settings(
    shared: SharedTracing, downstream: Downstream, clients: Clients
) -> None:
    sent, got = _call_from_a_background_task(shared, downstream, clients)
    assert trace_header_names(got) == expected_names(["b3"])
    # upstream SERVER > the task's INTERNAL span > CLIENT > downstream SERVER, one trace.
    spans = shared.wait_spans(sent.trace_id, 4)
    by_id = {s.context.span_id: s for s in spans}
    (client,) = [s for s in spans if s.kind is SpanKind.CLIENT]
    task = by_id[client.parent.span_id]
    assert task.kind is SpanKind.INTERNAL
    upstream = by_id[task.parent.span_id]
    assert upstream.kind is SpanKind.SERVER
    assert upstream.parent.span_id == sent.span_id
    assert outgoing_ids(got, "b3") == (sent.trace_id, client.context.span_id)


def test_an_unsampled_parent_goes_on_in_the_apps_formats(
    shared: SharedTracing, downstream: Downstream, clients: Clients
) -> None:
    app = starlette_app(Service(clients))
    app.add_middleware(
        TracewireMiddleware, propagators=["b3", "b3multi"], tracer_provider=shared.provider
    )
    trace_id, span_id = 0x5B3A5B3A5B3A5B3A5B3A5B3A5B3A5B3A, 0x00F067AA0BA902B7
    headers = {"b3": f"{trace_id:032x}-{span_id:016x}-0"}
    with UvicornThread(app) as server:
        for kind in ("httpx", "requests", "httpx_async"):
            case = new_case()
            r = httpx.get(
                f"{server.url}/call",
                params={"kind": kind, "target": downstream.url(["b3", "b3multi"], case)},
                headers=headers,
                timeout=TIMEOUT,
            )
            assert r.status_code == 200 and int(r.json()["trace_id"], 16) == trace_id
            got = downstream.got(case)
            assert trace_header_names(got) == {"b3", "x-b3-traceid", "x-b3-spanid", "x-b3-sampled"}
            assert got["b3"][0].startswith(f"{trace_id:032x}-") and got["b3"][0].endswith("-0")
            assert got["x-b3-sampled"] == ["0"]
            assert outgoing_ids(got, "b3multi")[0] == trace_id
    assert shared.spans(trace_id) == []  # nothing sampled, nothing exported


def test_a_global_switch_turned_on_before_configure_follows_it(
    shared: SharedTracing, downstream: Downstream
) -> None:
    tracewire.httpx.instrument(tracer_provider=shared.provider)
    try:
        tracewire.configure(propagators=["b3multi"])
        case = new_case()
        with httpx.Client(timeout=TIMEOUT) as client:
            assert client.get(downstream.url(["b3multi"], case)).status_code == 200
    finally:
        tracewire.httpx.uninstrument()
    assert_root_hop(shared, downstream.got(case), ["b3multi"])


def test_a_flask_app_without_tracewire_config_follows_a_later_configure(
    shared: SharedTracing, downstream: Downstream, clients: Clients
) -> None:
    app = flask_app(Service(clients))
    Tracewire(app, tracer_provider=shared.provider)  # e.g. at import, in create_app()
    tracewire.configure(propagators=["b3"])  # e.g. later, in main() or gunicorn's post_fork
    sent = incoming("b3")
    with WerkzeugThread(app) as server:
        got, body = call_through(server.url, "httpx", sent, downstream, ["b3"], shared.provider)
    assert int(body["trace_id"], 16) == sent.trace_id, "the app did not read b3"
    assert_hop(shared, sent, got, ["b3"])

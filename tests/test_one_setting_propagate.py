"""OpenTelemetry's own propagation API agrees with tracewire after ``tracewire.configure()``.

``opentelemetry.propagate.inject`` / ``extract`` are what every other instrumentation (Celery,
gRPC, aiohttp, hand-written code) uses. After ``configure()``, inside a request they speak the
serving app's formats, outside any request the process default's; with
``set_global_textmap=False`` OpenTelemetry's global textmap is left exactly as it was.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from opentelemetry import propagate
from opentelemetry.trace import SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

import tracewire
from tests.support.one_setting import (
    TIMEOUT,
    Clients,
    Downstream,
    Service,
    SharedTracing,
    build_app,
    clean_globals,
    expected_names,
    incoming,
    new_case,
    outgoing_ids,
    serve,
    starlette_app,
    trace_header_names,
)
from tests.support.servers import UvicornThread
from tracewire import TracewireMiddleware
from tracewire.defaults import ServicePropagator


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


def _lists(carrier: dict[str, str]) -> dict[str, list[str]]:
    return {k.lower(): [v] for k, v in carrier.items()}


def _inject_outside(shared: SharedTracing) -> tuple[dict[str, str], int, int]:
    tracer = shared.provider.get_tracer("test")
    with tracer.start_as_current_span("job", kind=SpanKind.PRODUCER) as span:
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
    sc = span.get_span_context()
    return carrier, sc.trace_id, sc.span_id


APPS = [
    pytest.param("starlette", "kwargs", ("b3multi",), "b3multi", id="starlette-kwargs-b3multi"),
    pytest.param("fastapi", "code", ("b3",), "b3", id="fastapi-code-b3"),
    pytest.param("flask", "config", ("b3multi", "b3"), "b3", id="flask-config-b3multi+b3"),
    pytest.param("wsgi", "kwargs", ("b3",), "b3", id="wsgi-kwargs-b3"),
]


@pytest.mark.parametrize(("framework", "mode", "chosen", "fmt"), APPS)
def test_inject_in_a_request_uses_the_serving_app_and_outside_the_default(
    framework: str,
    mode: str,
    chosen: tuple[str, ...],
    fmt: str,
    shared: SharedTracing,
    downstream: Downstream,
    tmp_path: Path,
) -> None:
    tracewire.configure(propagators=["tracecontext"])  # the process default: W3C only
    assert isinstance(propagate.get_global_textmap(), ServicePropagator)
    service = Service(Clients(shared.provider))
    app, wsgi = build_app(framework, mode, chosen, service, shared.provider, tmp_path)
    sent = incoming(fmt)
    try:
        with serve(app, wsgi=wsgi) as server:
            r = httpx.get(f"{server.url}/inject", headers=sent.headers, timeout=TIMEOUT)
    finally:
        service.clients.close()
    assert r.status_code == 200, r.text
    body = r.json()
    carrier = body["carrier"]
    assert int(body["trace_id"], 16) == sent.trace_id
    assert trace_header_names(carrier) == expected_names(chosen), carrier
    for name in chosen:
        assert outgoing_ids(_lists(carrier), name) == (sent.trace_id, int(body["span_id"], 16))

    # Hand-written propagation with that carrier continues the trace at the next service.
    case = new_case()
    hop = httpx.get(downstream.url(chosen, case), headers=carrier, timeout=TIMEOUT)
    assert hop.status_code == 200
    spans = shared.wait_spans(sent.trace_id, 2)
    children = [
        s for s in spans if s.parent is not None and s.parent.span_id == int(body["span_id"], 16)
    ]
    assert [s.kind for s in children] == [SpanKind.SERVER]

    # Outside any request: the process default (W3C only).
    outside, trace_id, span_id = _inject_outside(shared)
    assert trace_header_names(outside) == {"traceparent"}
    assert outgoing_ids(_lists(outside), "tracecontext") == (trace_id, span_id)
    assert propagate.get_global_textmap().fields == {"traceparent", "tracestate"}


def test_inject_in_an_app_without_settings_uses_the_default(shared: SharedTracing) -> None:
    tracewire.configure(propagators=["b3"])
    app = starlette_app(Service(Clients(shared.provider)))
    app.add_middleware(TracewireMiddleware, tracer_provider=shared.provider)
    sent = incoming("b3")
    with UvicornThread(app) as server:
        body = httpx.get(f"{server.url}/inject", headers=sent.headers, timeout=TIMEOUT).json()
    assert int(body["trace_id"], 16) == sent.trace_id
    assert trace_header_names(body["carrier"]) == {"b3"}
    assert outgoing_ids(_lists(body["carrier"]), "b3") == (sent.trace_id, int(body["span_id"], 16))


def test_extract_in_a_request_uses_the_serving_apps_extract_list(shared: SharedTracing) -> None:
    tracewire.configure(propagators=["tracecontext"])
    app = starlette_app(Service(Clients(shared.provider)))
    app.add_middleware(TracewireMiddleware, propagators=["b3"], tracer_provider=shared.provider)
    b3 = incoming("b3")
    w3c = incoming("tracecontext")
    with UvicornThread(app) as server:

        def extract_there(params: dict[str, str]) -> dict[str, object]:
            r = httpx.get(f"{server.url}/extract", params=params, timeout=TIMEOUT)
            assert r.status_code == 200
            return dict(r.json())

        assert extract_there(b3.headers) == {"valid": True, "trace_id": f"{b3.trace_id:032x}"}
        assert extract_there(w3c.headers)["valid"] is False
    outside_w3c = propagate.extract(w3c.headers)
    outside_b3 = propagate.extract(b3.headers)
    from opentelemetry.trace import get_current_span

    assert get_current_span(outside_w3c).get_span_context().trace_id == w3c.trace_id
    assert not get_current_span(outside_b3).get_span_context().is_valid


def test_set_global_textmap_false_leaves_opentelemetry_alone(
    shared: SharedTracing, downstream: Downstream
) -> None:
    mine = TraceContextTextMapPropagator()
    propagate.set_global_textmap(mine)
    chosen = tracewire.configure(propagators=["b3"], set_global_textmap=False)
    assert chosen.propagators == ("b3",)
    assert propagate.get_global_textmap() is mine
    app = starlette_app(Service(Clients(shared.provider)))
    app.add_middleware(
        TracewireMiddleware, propagators=["b3multi"], tracer_provider=shared.provider
    )
    sent = incoming("b3multi")
    with UvicornThread(app) as server:
        body = httpx.get(f"{server.url}/inject", headers=sent.headers, timeout=TIMEOUT).json()
    # OpenTelemetry's API still speaks what the user installed, in a request too...
    assert trace_header_names(body["carrier"]) == {"traceparent"}
    outside, _, _ = _inject_outside(shared)
    assert trace_header_names(outside) == {"traceparent"}
    # ...while tracewire's own clients follow the default that configure() set.
    clients = Clients(shared.provider)
    case = new_case()
    try:
        assert clients.call("httpx", downstream.url(["b3"], case)) == 200
    finally:
        clients.close()
    assert trace_header_names(downstream.got(case)) == {"b3"}


def test_configure_installs_one_service_propagator() -> None:
    tracewire.configure(propagators=["b3"])
    first = propagate.get_global_textmap()
    assert isinstance(first, ServicePropagator)
    tracewire.configure(propagators=["b3multi"])
    assert propagate.get_global_textmap() is first  # replaced settings, not stacked wrappers
    assert propagate.get_global_textmap().fields == {
        "x-b3-traceid",
        "x-b3-spanid",
        "x-b3-sampled",
        "x-b3-flags",
    }


def test_a_contrib_instrumentation_inside_a_request_speaks_the_apps_formats(
    shared: SharedTracing, downstream: Downstream
) -> None:
    """OpenTelemetry's own httpx instrumentation injects with ``propagate.inject``: after
    ``configure()`` it sends what the serving app sends, and the trace holds together."""
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    tracewire.configure(propagators=["tracecontext"])
    contrib = httpx.AsyncClient(timeout=TIMEOUT)
    HTTPXClientInstrumentor.instrument_client(contrib, tracer_provider=shared.provider)

    async def call(request: Request) -> Response:
        r = await contrib.get(request.query_params["target"])
        return JSONResponse({"status": r.status_code})

    async def close(request: Request) -> Response:
        await contrib.aclose()
        return JSONResponse({})

    app = Starlette(routes=[Route("/call", call), Route("/close", close)])
    app.add_middleware(
        TracewireMiddleware, propagators=["b3multi"], tracer_provider=shared.provider
    )
    sent = incoming("b3multi")
    case = new_case()
    with UvicornThread(app) as server:
        r = httpx.get(
            f"{server.url}/call",
            params={"target": downstream.url(["b3multi"], case)},
            headers=sent.headers,
            timeout=TIMEOUT,
        )
        assert r.status_code == 200 and r.json() == {"status": 200}
        assert httpx.get(f"{server.url}/close", timeout=TIMEOUT).status_code == 200
    got = downstream.got(case)
    assert trace_header_names(got) == expected_names(["b3multi"])
    spans = shared.wait_spans(sent.trace_id, 3)
    (client,) = [s for s in spans if s.kind is SpanKind.CLIENT]
    assert client.instrumentation_scope is not None
    assert client.instrumentation_scope.name == "opentelemetry.instrumentation.httpx"
    assert outgoing_ids(got, "b3multi") == (sent.trace_id, client.context.span_id)
    servers = {s.context.span_id: s for s in spans if s.kind is SpanKind.SERVER}
    assert client.parent is not None and client.parent.span_id in servers  # tracewire's
    (down,) = [
        s for s in servers.values() if s.parent and s.parent.span_id == client.context.span_id
    ]
    assert down.context.trace_id == sent.trace_id

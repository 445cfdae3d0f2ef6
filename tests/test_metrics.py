"""HTTP metrics end to end: real servers and clients, an SDK ``MeterProvider`` with an
``InMemoryMetricReader``, and the OTLP path to the demo's real OTLP/HTTP receiver."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import requests
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import SpanKind

from tests.conftest import Tracing
from tests.support import plain_apps
from tests.support.echo import EchoServer
from tests.support.servers import UvicornThread, free_port, serving, wait_for
from tests.wsgi_apps import QuickWerkzeug
from tracewire import TracewireMiddleware, TracewireWSGIMiddleware, defaults
from tracewire.httpx import AsyncTracewireTransport, TracewireTransport
from tracewire.metrics import DURATION_BUCKETS
from tracewire.requests import instrument_session

SERVER_DURATION = "http.server.request.duration"
ACTIVE = "http.server.active_requests"
CLIENT_DURATION = "http.client.request.duration"
SEMCONV_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10)


class Meters:
    """An SDK meter provider whose metrics are read in memory."""

    def __init__(self) -> None:
        self.reader = InMemoryMetricReader()
        self.provider = MeterProvider(metric_readers=[self.reader])

    def metrics(self) -> dict[str, Any]:
        data = self.reader.get_metrics_data()
        if data is None:
            return {}
        return {
            metric.name: metric
            for resource in data.resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
        }

    def points(self, name: str) -> list[Any]:
        metric = self.metrics().get(name)
        return [] if metric is None else list(metric.data.data_points)


@pytest.fixture(autouse=True)
def _no_process_default(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # A process default another test configured, or variables of the shell, would change
    # what is excluded and where sdk.configure sends the metrics.
    for name in list(os.environ):
        if name.startswith(("TRACEWIRE_", "OTEL_PYTHON_", "OTEL_EXPORTER_", "OTEL_METRIC")):
            monkeypatch.delenv(name)
    monkeypatch.delenv("OTEL_SDK_DISABLED", raising=False)
    defaults.reset()
    yield
    defaults.reset()


@pytest.fixture
def meters() -> Iterator[Meters]:
    m = Meters()
    yield m
    m.provider.shutdown()


@contextlib.contextmanager
def running(protocol: str, app: Any) -> Iterator[httpx.Client]:
    server = UvicornThread(app) if protocol == "asgi" else QuickWerkzeug(app)
    with serving(server) as srv, httpx.Client(base_url=srv.url, timeout=10) as client:
        yield client


def plain(protocol: str, tracer_provider: Any, meters: Meters, **overrides: Any) -> Any:
    middleware = TracewireMiddleware if protocol == "asgi" else TracewireWSGIMiddleware
    app = plain_apps.asgi_app if protocol == "asgi" else plain_apps.wsgi_app
    return middleware(
        app, tracer_provider=tracer_provider, meter_provider=meters.provider, **overrides
    )


def measured(meters: Meters, name: str, count: int) -> list[Any]:
    """The data points of ``name`` once ``count`` measurements were recorded in all."""

    def enough() -> list[Any] | None:
        points = meters.points(name)
        return points if sum(p.count for p in points) >= count else None

    return wait_for(enough, 10)  # type: ignore[no-any-return]


PROTOCOLS = ["asgi", "wsgi"]


# ------------------------------------------------------------------------------- server
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_server_duration_has_the_conventions_shape(
    protocol: str, tracing: Tracing, meters: Meters
) -> None:
    with running(protocol, plain(protocol, tracing.provider, meters)) as client:
        assert client.get("/items/42?q=secret").status_code == 200
        assert client.request("PURGE", "/items/43").status_code == 200
    points = measured(meters, SERVER_DURATION, 2)
    metric = meters.metrics()[SERVER_DURATION]
    assert metric.unit == "s"
    assert tuple(points[0].explicit_bounds) == SEMCONV_BUCKETS == DURATION_BUCKETS
    by_method = {p.attributes["http.request.method"]: p for p in points}
    assert set(by_method) == {"GET", "_OTHER"}  # unknown methods are one bucket, not many
    assert dict(by_method["GET"].attributes) == {
        "http.request.method": "GET",
        "url.scheme": "http",
        "http.response.status_code": 200,
        "network.protocol.version": "1.1",
    }
    # Bounded cardinality: no path, query or method text of the caller's anywhere.
    for point in points:
        values = " ".join(str(v) for v in point.attributes.values())
        assert "items" not in values and "secret" not in values and "PURGE" not in values
        assert 0 < point.sum < 10


def test_server_route_is_recorded_when_the_framework_knows_it(
    tracing: Tracing, meters: Meters
) -> None:
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def item(request: Any) -> Any:
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/items/{item_id}", item)])
    wrapped = TracewireMiddleware(
        app, tracer_provider=tracing.provider, meter_provider=meters.provider
    )
    with running("asgi", wrapped) as client:
        for n in (1, 2, 3):
            client.get(f"/items/{n}")
        client.get("/nowhere")
    points = measured(meters, SERVER_DURATION, 4)
    routes = {p.attributes.get("http.route"): p.count for p in points}
    # Three item requests are one series; the unmatched path has no route, not its path.
    assert routes == {"/items/{item_id}": 3, None: 1}


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_active_requests_go_up_during_a_request_and_back_to_zero(
    protocol: str, tracing: Tracing, meters: Meters
) -> None:
    plain_apps.reset_gate()
    with running(protocol, plain(protocol, tracing.provider, meters)) as client:
        done: list[int] = []
        worker = threading.Thread(target=lambda: done.append(client.get("/wait").status_code))
        worker.start()
        try:
            assert plain_apps.ENTERED.wait(10)
            (point,) = meters.points(ACTIVE)
            assert point.value == 1
            assert dict(point.attributes) == {"http.request.method": "GET", "url.scheme": "http"}
        finally:
            plain_apps.GATE.set()
            worker.join(10)
        assert done == [200]
        measured(meters, SERVER_DURATION, 1)
    (point,) = meters.points(ACTIVE)
    assert point.value == 0
    assert meters.metrics()[ACTIVE].unit == "{request}"


def test_a_websocket_is_traced_but_not_measured(tracing: Tracing, meters: Meters) -> None:
    from tests.support.asgi_apps import Probe, starlette_app, websocket_session

    app = TracewireMiddleware(
        starlette_app(Probe()), tracer_provider=tracing.provider, meter_provider=meters.provider
    )
    server = UvicornThread(app)
    with serving(server):
        assert websocket_session(server.host, server.port, "/ws", [], ["hi"]) == ["echo hi"]
        with httpx.Client(base_url=server.url) as client:
            assert client.get("/items/1").status_code == 200
        wait_for(lambda: len([s for s in tracing.spans() if s.kind == SpanKind.SERVER]) == 2, 10)
    # The WebSocket has its span; the duration histogram holds the HTTP request alone, and
    # nothing is left counted as active.
    (point,) = measured(meters, SERVER_DURATION, 1)
    assert (point.count, point.attributes["url.scheme"]) == (1, "http")
    assert [p.value for p in meters.points(ACTIVE)] == [0]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_failing_request_has_error_type(protocol: str, tracing: Tracing, meters: Meters) -> None:
    with running(protocol, plain(protocol, tracing.provider, meters)) as client:
        assert client.get("/boom").status_code == 500
    (point,) = measured(meters, SERVER_DURATION, 1)
    assert point.attributes["error.type"] == "tests.support.plain_apps.Boom"
    assert point.attributes["http.response.status_code"] == 500
    assert wait_for(lambda: meters.points(ACTIVE)[0].value == 0, 10)


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("unsampled", ["always_off", "not-sampled-parent"])
def test_unsampled_requests_are_measured_excluded_ones_are_not(
    protocol: str, unsampled: str, meters: Meters
) -> None:
    headers = {}
    if unsampled == "always_off":
        provider = TracerProvider(sampler=ALWAYS_OFF)
    else:
        # The default parent-based sampler with a not-sampled parent: the shortcut that skips
        # the SDK (tracewire._fastpath) must not skip the measurement.
        provider = TracerProvider()
        headers = {"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-00"}
    app = plain(protocol, provider, meters, excluded_paths=["/health"])
    with running(protocol, app) as client:
        for path in ("/a", "/health", "/b", "/c"):
            assert client.get(path, headers=headers).status_code == 200
    # The server has stopped: every measurement is in.
    (point,) = measured(meters, SERVER_DURATION, 3)
    assert point.count == 3
    provider.shutdown()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_failing_instrument_never_reaches_the_request(
    protocol: str, tracing: Tracing, meters: Meters, caplog: pytest.LogCaptureFixture
) -> None:
    app = plain(protocol, tracing.provider, meters)
    metrics = app._tracer.metrics

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("the exporter's instrument failed")

    metrics.duration.record = broken
    metrics.active.add = broken
    with running(protocol, app) as client:
        response = client.get("/ok")
        assert (response.status_code, response.text) == (200, "ok")
    # The span is still whole; the fault was reported, not raised.
    spans = wait_for(lambda: [s for s in tracing.spans() if s.kind == SpanKind.SERVER], 10)
    assert spans[0].attributes["http.response.status_code"] == 200
    assert "metrics" in caplog.text


def test_one_failing_instrument_does_not_cost_the_other_its_measurement(
    tracing: Tracing, meters: Meters
) -> None:
    app = plain("asgi", tracing.provider, meters)
    metrics = app._tracer.metrics
    real_add = metrics.active.add

    def add(amount: int, attributes: Any = None) -> None:
        if amount < 0:
            raise RuntimeError("the counter failed on the way down")
        real_add(amount, attributes)

    metrics.active.add = add
    with running("asgi", app) as client:
        assert client.get("/ok").status_code == 200
    (point,) = measured(meters, SERVER_DURATION, 1)
    assert point.attributes["http.response.status_code"] == 200


def test_no_meter_provider_means_no_metrics_and_no_harm(tracing: Tracing) -> None:
    # The global provider is the API's proxy until an SDK one is set (another test in this
    # process may have set one): nothing records until then, and requests work either way.
    from opentelemetry.metrics import get_meter_provider

    app = TracewireMiddleware(plain_apps.asgi_app, tracer_provider=tracing.provider)
    sdk_is_global = isinstance(get_meter_provider(), MeterProvider)
    assert app._tracer.metrics.gate.open() is sdk_is_global
    with running("asgi", app) as client:
        assert client.get("/x").status_code == 200


def test_meter_provider_must_be_a_meter_provider() -> None:
    with pytest.raises(TypeError, match="meter_provider"):
        TracewireMiddleware(plain_apps.asgi_app, meter_provider="otlp")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------- client
def _client_attributes(echo: EchoServer, status: int = 200) -> dict[str, Any]:
    return {
        "http.request.method": "GET",
        "url.scheme": "http",
        "server.address": "127.0.0.1",
        "server.port": echo.port,
        "http.response.status_code": status,
        "network.protocol.version": "1.1",
    }


def test_httpx_sync_client_duration(tracing: Tracing, meters: Meters) -> None:
    transport = TracewireTransport(tracer_provider=tracing.provider, meter_provider=meters.provider)
    with EchoServer() as echo, httpx.Client(transport=transport) as client:
        client.get(echo.url + "/a?token=x")
        client.get(echo.url + "/b")
    (point,) = measured(meters, CLIENT_DURATION, 2)
    assert dict(point.attributes) == _client_attributes(echo)
    assert tuple(point.explicit_bounds) == SEMCONV_BUCKETS
    assert meters.metrics()[CLIENT_DURATION].unit == "s"


def test_httpx_async_client_duration(tracing: Tracing, meters: Meters) -> None:
    transport = AsyncTracewireTransport(
        tracer_provider=tracing.provider, meter_provider=meters.provider
    )

    async def calls(url: str) -> None:
        async with httpx.AsyncClient(transport=transport) as client:
            await asyncio.gather(client.get(url + "/a"), client.get(url + "/b"))

    with EchoServer() as echo:
        asyncio.run(calls(echo.url))
    (point,) = measured(meters, CLIENT_DURATION, 2)
    assert dict(point.attributes) == _client_attributes(echo)


def test_requests_client_duration(tracing: Tracing, meters: Meters) -> None:
    with EchoServer() as echo, requests.Session() as session:
        instrument_session(
            session, tracer_provider=tracing.provider, meter_provider=meters.provider
        )
        session.get(echo.url + "/a", timeout=10)
        session.request("BREW", echo.url + "/b", timeout=10)
    points = measured(meters, CLIENT_DURATION, 2)
    by_method = {p.attributes["http.request.method"]: p for p in points}
    assert set(by_method) == {"GET", "_OTHER"}
    assert dict(by_method["GET"].attributes) == _client_attributes(echo)
    # The echo server answers an unknown method 501: an error, by its status.
    assert by_method["_OTHER"].attributes["error.type"] == "501"


def test_client_failure_has_error_type_and_no_status(tracing: Tracing, meters: Meters) -> None:
    closed = f"http://127.0.0.1:{free_port()}/x"
    transport = TracewireTransport(tracer_provider=tracing.provider, meter_provider=meters.provider)
    with httpx.Client(transport=transport) as client, pytest.raises(httpx.ConnectError):
        client.get(closed)
    with requests.Session() as session:
        instrument_session(
            session, tracer_provider=tracing.provider, meter_provider=meters.provider
        )
        with pytest.raises(requests.ConnectionError):
            session.get(closed, timeout=5)
    points = measured(meters, CLIENT_DURATION, 2)
    types = sorted(p.attributes["error.type"] for p in points)
    assert types == ["httpx.ConnectError", "requests.exceptions.ConnectionError"]
    assert all("http.response.status_code" not in p.attributes for p in points)


def test_client_metrics_without_a_current_span_and_unsampled(meters: Meters) -> None:
    unsampled = TracerProvider(sampler=ALWAYS_OFF)
    transport = TracewireTransport(tracer_provider=unsampled, meter_provider=meters.provider)
    with EchoServer() as echo, httpx.Client(transport=transport) as client:
        assert client.get(echo.url + "/a").status_code == 200
    (point,) = measured(meters, CLIENT_DURATION, 1)
    assert point.attributes["http.response.status_code"] == 200


# ------------------------------------------------------------------- OTLP, the real receiver
def test_sdk_configure_sends_the_metrics_to_an_otlp_receiver() -> None:
    from tracewire import sdk
    from tracewire.demo.receiver import OTLPReceiver

    with OTLPReceiver() as receiver:
        provider = sdk.configure(
            "metrics-test",
            exporter="otlp",
            endpoint=receiver.endpoint,
            set_global=False,
            shutdown_on_exit=False,
            limit_export_logs=False,  # process-wide; not this test's business
        )
        meter_provider = sdk.get_meter_provider(provider)
        assert meter_provider is not None
        app = TracewireMiddleware(
            plain_apps.asgi_app, tracer_provider=provider, meter_provider=meter_provider
        )
        transport = TracewireTransport(tracer_provider=provider, meter_provider=meter_provider)
        try:
            with serving(UvicornThread(app)) as srv, httpx.Client(transport=transport) as c:
                assert c.get(srv.url + "/x").status_code == 200
            assert meter_provider.force_flush(10_000)
            wanted = {SERVER_DURATION, ACTIVE, CLIENT_DURATION}
            assert wait_for(lambda: wanted <= receiver.metric_names, 10)
            assert receiver.metric_exports >= 1
        finally:
            meter_provider.shutdown()
            provider.shutdown()


def test_grpc_protocol_sends_metrics_over_grpc_or_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sys

    from tracewire import sdk

    # A gRPC collector does not speak OTLP/HTTP: metrics must follow the traces' protocol.
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.grpc.metric_exporter", None)
    with pytest.raises(ImportError, match=r"metrics over gRPC.*pip install opentelemetry-exporter"):
        sdk.configure("grpc-metrics", exporter="none", metrics="otlp", set_global=False)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "carrier-pigeon")
    with pytest.raises(ValueError, match="OTEL_EXPORTER_OTLP_METRICS_PROTOCOL"):
        sdk.configure("grpc-metrics", exporter="none", metrics="otlp", set_global=False)

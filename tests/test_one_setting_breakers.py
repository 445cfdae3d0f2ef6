"""Say when a trace is about to break: each breaker is warned about once, naming the fix.

Real servers and clients; the warnings are read from the ``tracewire`` logger:

* a request in a format the service extracts but does not inject (once per format);
* a client with explicit settings injecting other formats than the app serving the request;
* no SDK configured (a ``NoOpTracerProvider``): every span is a no-op;
* OpenTelemetry's contrib ASGI middleware around (or inside) tracewire's: two SERVER spans.

Each breaker only warns: the requests are answered as without it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import httpx
import pytest
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.trace import NoOpTracerProvider, SpanKind

from tests.support.one_setting import (
    TIMEOUT,
    Clients,
    Downstream,
    Service,
    SharedTracing,
    assert_hop,
    call_through,
    clean_globals,
    incoming,
    outgoing_ids,
    starlette_app,
    wsgi_app,
)
from tests.support.servers import UvicornThread, WerkzeugThread
from tracewire import Settings, TracewireMiddleware, TracewireWSGIMiddleware


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


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.WARNING, logger="tracewire")
    return caplog


def _warnings(caplog: pytest.LogCaptureFixture, *words: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "tracewire"
        and r.levelno >= logging.WARNING
        and all(w in r.getMessage() for w in words)
    ]


def _get(url: str, headers: dict[str, str] | None = None) -> httpx.Response:
    r = httpx.get(url, headers=headers or {}, timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    return r


# --------------------------------------------------------- extracted but not injected
def test_a_format_extracted_but_not_injected_warns_once_per_format(
    shared: SharedTracing, clients: Clients, logs: pytest.LogCaptureFixture
) -> None:
    asgi = starlette_app(Service(clients))
    asgi.add_middleware(
        TracewireMiddleware,
        settings=Settings(extract=["tracecontext", "b3"], inject=["tracecontext"]),
        tracer_provider=shared.provider,
    )
    wsgi = TracewireWSGIMiddleware(
        wsgi_app(Service(clients)),
        extract=["b3multi", "tracecontext"],
        inject=["tracecontext"],
        tracer_provider=shared.provider,
    )
    with UvicornThread(asgi) as a, WerkzeugThread(wsgi) as b:
        for _ in range(3):
            _get(f"{a.url}/health", incoming("tracecontext").headers)
        assert _warnings(logs, "inject") == [], "W3C is injected: nothing to say"
        for _ in range(3):
            sent = incoming("b3")
            body = _get(f"{a.url}/inject", sent.headers).json()
            assert int(body["trace_id"], 16) == sent.trace_id  # the request itself is served
        for _ in range(2):
            _get(f"{b.url}/health", incoming("b3multi").headers)
    b3 = _warnings(logs, "b3 trace headers")
    assert len(b3) == 1, b3
    assert "TRACEWIRE_INJECT" in b3[0] and "'b3'" in b3[0]
    multi = _warnings(logs, "b3multi trace headers")
    assert len(multi) == 1, multi
    assert "'b3multi'" in multi[0]


def test_the_same_family_injected_in_the_other_b3_form_does_not_warn(
    shared: SharedTracing, clients: Clients, logs: pytest.LogCaptureFixture
) -> None:
    app = TracewireWSGIMiddleware(
        wsgi_app(Service(clients)),
        extract=["tracecontext", "b3multi"],
        inject=["tracecontext", "b3"],
        tracer_provider=shared.provider,
    )
    with WerkzeugThread(app) as server:
        for _ in range(2):
            _get(f"{server.url}/health", incoming("b3multi").headers)
    assert _warnings(logs, "trace headers") == []


# ----------------------------------------------------- client settings differ from the app
def test_a_client_with_other_settings_than_the_serving_app_warns_once(
    shared: SharedTracing, downstream: Downstream, logs: pytest.LogCaptureFixture
) -> None:
    differing = Clients(shared.provider, Settings(propagators=["tracecontext"]))
    app = starlette_app(Service(differing))
    app.add_middleware(TracewireMiddleware, propagators=["b3"], tracer_provider=shared.provider)
    try:
        with UvicornThread(app) as server:
            for kind in ("httpx", "requests", "httpx_async"):
                sent = incoming("b3")
                got, _ = call_through(
                    server.url, kind, sent, downstream, ["tracecontext"], shared.provider
                )
                assert_hop(shared, sent, got, ["tracecontext"])  # explicit settings still win
    finally:
        differing.close()
    told = _warnings(logs, "while the app serving the request uses")
    assert len(told) == 1, told
    assert "tracecontext" in told[0] and "b3" in told[0] and "settings=" in told[0]


def test_a_client_with_the_apps_inject_list_does_not_warn(
    shared: SharedTracing, downstream: Downstream, logs: pytest.LogCaptureFixture
) -> None:
    same = Clients(shared.provider, Settings(propagators=["b3"], propagate_to=["127.0.0.1:*"]))
    app = starlette_app(Service(same))
    app.add_middleware(TracewireMiddleware, propagators=["b3"], tracer_provider=shared.provider)
    try:
        with UvicornThread(app) as server:
            sent = incoming("b3")
            got, _ = call_through(server.url, "httpx", sent, downstream, ["b3"], shared.provider)
        assert_hop(shared, sent, got, ["b3"])
        # Outside any request there is no app to differ from.
        assert same.call("httpx", downstream.url(["b3"])) == 200
    finally:
        same.close()
    assert _warnings(logs, "while the app serving the request uses") == []


# ------------------------------------------------------------------------------ no SDK
@pytest.mark.parametrize("protocol", ["asgi", "wsgi"])
def test_no_sdk_warns_once_that_spans_are_no_ops(
    protocol: str, clients: Clients, downstream: Downstream, logs: pytest.LogCaptureFixture
) -> None:
    noop = NoOpTracerProvider()
    service = Service(clients)
    server = (
        UvicornThread(TracewireMiddleware(starlette_app(service), tracer_provider=noop))
        if protocol == "asgi"
        else WerkzeugThread(TracewireWSGIMiddleware(wsgi_app(service), tracer_provider=noop))
    )
    with server:
        for _ in range(3):
            _get(f"{server.url}/health")
        # The incoming context still goes on downstream (headers), with no spans made here.
        sent = incoming("tracecontext")
        got, body = call_through(
            server.url, "httpx", sent, downstream, ["tracecontext"], clients.provider
        )
    assert int(body["trace_id"], 16) == sent.trace_id
    assert outgoing_ids(got, "tracecontext")[0] == sent.trace_id
    told = _warnings(logs, "no OpenTelemetry SDK")
    assert len(told) == 1, told
    assert "tracewire.sdk.configure" in told[0] and "tracer_provider" in told[0]


# ------------------------------------------------------------------ a second SERVER span
def test_a_contrib_asgi_middleware_around_tracewire_warns_once(
    shared: SharedTracing, clients: Clients, logs: pytest.LogCaptureFixture
) -> None:
    p = shared.provider
    inner = TracewireMiddleware(starlette_app(Service(clients)), tracer_provider=p)
    app = OpenTelemetryMiddleware(inner, tracer_provider=p)
    sent = [incoming("tracecontext") for _ in range(3)]
    with UvicornThread(app) as server:
        for s in sent:
            _get(f"{server.url}/health", s.headers)
    for s in sent:
        servers = [x for x in shared.wait_spans(s.trace_id, 2) if x.kind is SpanKind.SERVER]
        scopes = sorted(x.instrumentation_scope.name for x in servers if x.instrumentation_scope)
        assert len(servers) == 2 and "tracewire" in scopes, scopes  # the case being reported
    told = _warnings(logs, "SERVER span")
    assert len(told) == 1, told
    assert "opentelemetry.instrumentation.asgi" in told[0]


def test_a_contrib_asgi_middleware_inside_tracewire_adds_no_server_span_and_no_warning(
    shared: SharedTracing, clients: Clients, logs: pytest.LogCaptureFixture
) -> None:
    # Contrib sees tracewire's span current and makes an INTERNAL span under it: no breaker.
    p = shared.provider
    inner = OpenTelemetryMiddleware(starlette_app(Service(clients)), tracer_provider=p)
    app = TracewireMiddleware(inner, tracer_provider=p)
    sent = incoming("tracecontext")
    with UvicornThread(app) as server:
        _get(f"{server.url}/health", sent.headers)
    spans = shared.wait_spans(sent.trace_id, 2)
    servers = [x for x in spans if x.kind is SpanKind.SERVER]
    assert len(servers) == 1 and servers[0].instrumentation_scope is not None
    assert servers[0].instrumentation_scope.name == "tracewire"
    assert _warnings(logs, "SERVER span") == []


def test_a_contrib_wsgi_middleware_around_tracewire_warns_once(
    shared: SharedTracing, clients: Clients, logs: pytest.LogCaptureFixture
) -> None:
    from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware as ContribWSGI

    p = shared.provider
    inner = TracewireWSGIMiddleware(wsgi_app(Service(clients)), tracer_provider=p)
    app = ContribWSGI(inner, tracer_provider=p)
    sent = [incoming("tracecontext") for _ in range(3)]
    with WerkzeugThread(app) as server:
        for s in sent:
            _get(f"{server.url}/health", s.headers)
    for s in sent:
        servers = [x for x in shared.wait_spans(s.trace_id, 2) if x.kind is SpanKind.SERVER]
        assert len(servers) == 2
    told = _warnings(logs, "SERVER span")
    assert len(told) == 1, told
    assert "opentelemetry.instrumentation.wsgi" in told[0]

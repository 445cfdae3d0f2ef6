"""Every row of the precedence rule (src/tracewire/defaults.py), with real servers and clients.

For a client hook: explicit ``settings=`` > the settings of the tracewire middleware serving
the current request > ``tracewire.configure()`` > ``Settings.from_env()`` read when the
component was built. A middleware given no settings follows the process default lazily;
given settings (keyword settings, framework config) it keeps them. Keyword settings merge
over the process default (the environment when ``configure`` was not called).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import tracewire
from tests.support.one_setting import (
    CLIENTS,
    TIMEOUT,
    Clients,
    Downstream,
    Service,
    SharedTracing,
    assert_hop,
    assert_root_hop,
    build_app,
    call_outside,
    call_through,
    clean_globals,
    flask_app,
    incoming,
    serve,
    starlette_app,
    wsgi_app,
)
from tests.support.servers import UvicornThread, WerkzeugThread
from tracewire import Settings, TracewireMiddleware, TracewireWSGIMiddleware
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
    """Clients built without settings (at the start of the test)."""
    built = Clients(shared.provider)
    yield built
    built.close()


def _continued(body: dict[str, Any], trace_id: int) -> bool:
    return int(body["trace_id"], 16) == trace_id


# ------------------------------------------------------------------ 1. explicit > serving
@pytest.mark.parametrize("kind", CLIENTS)
def test_explicit_client_settings_beat_the_serving_middleware(
    kind: str, shared: SharedTracing, downstream: Downstream
) -> None:
    explicit = Settings(propagators=["tracecontext"])
    own = Clients(shared.provider, explicit)
    app = starlette_app(Service(own))
    app.add_middleware(TracewireMiddleware, propagators=["b3"], tracer_provider=shared.provider)
    sent = incoming("b3")
    try:
        with UvicornThread(app) as server:
            got, body = call_through(
                server.url, kind, sent, downstream, ["tracecontext"], shared.provider, explicit
            )
    finally:
        own.close()
    assert _continued(body, sent.trace_id)
    assert_hop(shared, sent, got, ["tracecontext"])


# ----------------------------------------------------------------- 2. serving > configure
@pytest.mark.parametrize(
    ("framework", "mode"),
    [("starlette", "kwargs"), ("fastapi", "config"), ("flask", "config"), ("wsgi", "code")],
)
@pytest.mark.parametrize("kind", ["httpx", "requests"])
def test_the_serving_middleware_beats_configure(
    framework: str,
    mode: str,
    kind: str,
    shared: SharedTracing,
    downstream: Downstream,
    clients: Clients,
    tmp_path: Path,
) -> None:
    tracewire.configure(propagators=["tracecontext"])
    app, wsgi = build_app(
        framework, mode, ("b3multi",), Service(clients), shared.provider, tmp_path
    )
    sent = incoming("b3multi")
    with serve(app, wsgi=wsgi) as server:
        got, body = call_through(server.url, kind, sent, downstream, ["b3multi"], shared.provider)
    assert _continued(body, sent.trace_id)
    assert_hop(shared, sent, got, ["b3multi"])
    # The same client object, outside any request: the process default.
    assert_root_hop(
        shared, call_outside(clients, kind, downstream, ["tracecontext"]), ["tracecontext"]
    )


# --------------------------------------------------------------------- 3. configure > env
@pytest.mark.parametrize("variable", ["TRACEWIRE_PROPAGATORS", "OTEL_PROPAGATORS"])
def test_configure_beats_the_environment(
    variable: str,
    shared: SharedTracing,
    downstream: Downstream,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(variable, "b3")
    clients = Clients(shared.provider)  # built under the environment, without settings
    app = TracewireWSGIMiddleware(wsgi_app(Service(clients)), tracer_provider=shared.provider)
    tracewire.configure(propagators=["tracecontext"])
    try:
        assert app.settings.propagators == ("tracecontext",)
        assert_root_hop(
            shared, call_outside(clients, "httpx", downstream, ["tracecontext"]), ["tracecontext"]
        )
        with WerkzeugThread(app) as server:
            w3c = incoming("tracecontext")
            got, body = call_through(
                server.url, "requests", w3c, downstream, ["tracecontext"], shared.provider
            )
            assert _continued(body, w3c.trace_id)
            assert_hop(shared, w3c, got, ["tracecontext"])
            b3 = incoming("b3")  # the environment's format is no longer read
            _, body = call_through(
                server.url, "httpx", b3, downstream, ["tracecontext"], shared.provider
            )
            assert not _continued(body, b3.trace_id)
    finally:
        clients.close()


# ------------------------------------------------------------------------ 4. environment
@pytest.mark.parametrize("variable", ["TRACEWIRE_PROPAGATORS", "OTEL_PROPAGATORS"])
def test_the_environment_applies_when_nothing_else_is_set(
    variable: str,
    shared: SharedTracing,
    downstream: Downstream,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(variable, "b3multi")
    clients = Clients(shared.provider)
    app = starlette_app(Service(clients))
    app.add_middleware(TracewireMiddleware, tracer_provider=shared.provider)
    try:
        assert_root_hop(
            shared, call_outside(clients, "httpx_async", downstream, ["b3multi"]), ["b3multi"]
        )
        with UvicornThread(app) as server:
            sent = incoming("b3multi")
            got, body = call_through(
                server.url, "httpx_async", sent, downstream, ["b3multi"], shared.provider
            )
        assert _continued(body, sent.trace_id)
        assert_hop(shared, sent, got, ["b3multi"])
    finally:
        clients.close()


def test_tracewire_propagators_beat_otel_propagators(
    shared: SharedTracing, downstream: Downstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_PROPAGATORS", "b3multi")
    monkeypatch.setenv("TRACEWIRE_PROPAGATORS", "b3")
    clients = Clients(shared.provider)
    try:
        assert_root_hop(shared, call_outside(clients, "requests", downstream, ["b3"]), ["b3"])
    finally:
        clients.close()


def test_the_environment_is_read_when_the_component_is_built(
    shared: SharedTracing, downstream: Downstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRACEWIRE_PROPAGATORS", "b3")
    before = Clients(shared.provider)
    monkeypatch.setenv("TRACEWIRE_PROPAGATORS", "b3multi")
    after = Clients(shared.provider)
    try:
        assert_root_hop(shared, call_outside(before, "httpx", downstream, ["b3"]), ["b3"])
        assert_root_hop(shared, call_outside(after, "httpx", downstream, ["b3multi"]), ["b3multi"])
    finally:
        before.close()
        after.close()


# ------------------------------------------------ 5. configure() after building is followed
def test_configure_after_an_asgi_app_and_its_clients_were_built_is_followed(
    shared: SharedTracing, downstream: Downstream, clients: Clients
) -> None:
    app = starlette_app(Service(clients))
    app.add_middleware(TracewireMiddleware, tracer_provider=shared.provider)
    with UvicornThread(app) as server:
        # Served (so built: Starlette builds its middleware on the first request) before
        # configure(): the environment's default, W3C.
        w3c = incoming("tracecontext")
        got, body = call_through(
            server.url, "httpx", w3c, downstream, ["tracecontext"], shared.provider
        )
        assert _continued(body, w3c.trace_id)
        assert_hop(shared, w3c, got, ["tracecontext"])

        tracewire.configure(propagators=["b3"])
        sent = incoming("b3")
        for kind in ("httpx", "httpx_async", "requests"):
            sent = incoming("b3")
            got, body = call_through(server.url, kind, sent, downstream, ["b3"], shared.provider)
            assert _continued(body, sent.trace_id), kind
            assert_hop(shared, sent, got, ["b3"])
    assert_root_hop(shared, call_outside(clients, "requests", downstream, ["b3"]), ["b3"])


def test_configure_after_a_wsgi_middleware_was_built_is_followed(
    shared: SharedTracing, downstream: Downstream, clients: Clients
) -> None:
    app = TracewireWSGIMiddleware(wsgi_app(Service(clients)), tracer_provider=shared.provider)
    before = app.settings
    assert before.propagators == ("tracecontext", "baggage")
    tracewire.configure(propagators=["b3multi"], excluded_paths=["/health"])
    after = app.settings
    assert after.propagators == ("b3multi",)
    assert after.excluded_paths == ("/health",)
    with WerkzeugThread(app) as server:
        sent = incoming("b3multi")
        got, body = call_through(
            server.url, "httpx", sent, downstream, ["b3multi"], shared.provider
        )
    assert _continued(body, sent.trace_id)
    assert_hop(shared, sent, got, ["b3multi"])


# ------------------------------------------ 6. explicit settings ignore a later configure()
@pytest.mark.parametrize(
    ("framework", "mode"),
    [("starlette", "code"), ("starlette", "kwargs"), ("flask", "config"), ("wsgi", "kwargs")],
)
def test_a_component_with_settings_ignores_a_later_configure(
    framework: str,
    mode: str,
    shared: SharedTracing,
    downstream: Downstream,
    clients: Clients,
    tmp_path: Path,
) -> None:
    explicit = Clients(shared.provider, Settings(propagators=["b3multi"]))
    app, wsgi = build_app(
        framework, mode, ("tracecontext",), Service(clients), shared.provider, tmp_path
    )
    try:
        with serve(app, wsgi=wsgi) as server:
            # One request first: the middleware exists before configure() (Starlette builds
            # its middleware stack on the first request).
            assert httpx.get(f"{server.url}/health", timeout=TIMEOUT).status_code == 200
            tracewire.configure(propagators=["b3"])
            b3 = incoming("b3")
            _, body = call_through(
                server.url, "httpx", b3, downstream, ["tracecontext"], shared.provider
            )
            assert not _continued(body, b3.trace_id), "the app took configure()'s propagators"
            w3c = incoming("tracecontext")
            got, body = call_through(
                server.url, "requests", w3c, downstream, ["tracecontext"], shared.provider
            )
            assert _continued(body, w3c.trace_id)
            assert_hop(shared, w3c, got, ["tracecontext"])
        assert_root_hop(
            shared, call_outside(explicit, "httpx", downstream, ["b3multi"]), ["b3multi"]
        )
        # ...while a client without settings follows the new default outside a request.
        assert_root_hop(shared, call_outside(clients, "httpx", downstream, ["b3"]), ["b3"])
    finally:
        explicit.close()


# ------------------------------------------- 7. keyword settings merge over the environment
def _no_spans_for(shared: SharedTracing, trace_id: int) -> bool:
    return not shared.spans(trace_id)


@pytest.mark.parametrize("framework", ["starlette", "wsgi"])
@pytest.mark.parametrize("source", ["environment", "configure"])
def test_keyword_settings_merge_over_the_process_default(
    framework: str,
    source: str,
    shared: SharedTracing,
    downstream: Downstream,
    clients: Clients,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if source == "environment":
        monkeypatch.setenv("TRACEWIRE_EXCLUDED_PATHS", "/health")
        monkeypatch.setenv("TRACEWIRE_PROPAGATORS", "tracecontext")
    else:
        tracewire.configure(propagators=["tracecontext"], excluded_paths=["/health"])
    service = Service(clients)
    app: Any
    if framework == "starlette":
        app = starlette_app(service)
        app.add_middleware(TracewireMiddleware, propagators=["b3"], tracer_provider=shared.provider)
    else:
        app = TracewireWSGIMiddleware(
            wsgi_app(service), propagators=["b3"], tracer_provider=shared.provider
        )
        assert app.settings.excluded_paths == ("/health",)
        assert app.settings.propagators == ("b3",)
    with serve(app, wsgi=framework == "wsgi") as server:
        health = incoming("b3")
        r = httpx.get(f"{server.url}/health", headers=health.headers, timeout=TIMEOUT)
        assert r.status_code == 200
        sent = incoming("b3")
        got, body = call_through(server.url, "httpx", sent, downstream, ["b3"], shared.provider)
    assert _continued(body, sent.trace_id)
    assert_hop(shared, sent, got, ["b3"])
    assert _no_spans_for(shared, health.trace_id), "/health was excluded by the environment"


def test_flask_config_merges_over_configure_called_before_init_app(
    shared: SharedTracing, downstream: Downstream, clients: Clients
) -> None:
    tracewire.configure(propagators=["tracecontext"], excluded_paths=["/health"])
    app = flask_app(Service(clients))
    app.config["TRACEWIRE_PROPAGATORS"] = "b3"
    Tracewire(app, tracer_provider=shared.provider)
    with WerkzeugThread(app) as server:
        health = incoming("b3")
        assert httpx.get(f"{server.url}/health", headers=health.headers, timeout=TIMEOUT).is_success
        sent = incoming("b3")
        got, body = call_through(server.url, "httpx", sent, downstream, ["b3"], shared.provider)
    assert _continued(body, sent.trace_id)
    assert_hop(shared, sent, got, ["b3"])
    assert _no_spans_for(shared, health.trace_id)


# ------------------------------------------------------------- 8. configure twice: log once
def test_configure_again_with_other_settings_logs_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="tracewire")

    def told() -> list[logging.LogRecord]:
        return [r for r in caplog.records if "configure() called again" in r.getMessage()]

    tracewire.configure(propagators=["b3"])
    tracewire.configure(propagators=["b3"])  # the same settings: nothing to say
    assert told() == []
    tracewire.configure(propagators=["b3multi"])
    tracewire.configure(propagators=["tracecontext"])
    tracewire.configure(Settings(), excluded_paths=["/x"])
    assert len(told()) == 1
    assert tracewire.configured() == Settings(excluded_paths=["/x"])


def test_flask_config_beats_the_environment_and_merges_over_it(
    shared: SharedTracing,
    downstream: Downstream,
    clients: Clients,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TRACEWIRE_PROPAGATORS", "b3")
    monkeypatch.setenv("OTEL_PROPAGATORS", "tracecontext")
    monkeypatch.setenv("TRACEWIRE_EXCLUDED_PATHS", "/health")
    app = flask_app(Service(clients))
    app.config["TRACEWIRE_PROPAGATORS"] = "b3multi"
    Tracewire(app, tracer_provider=shared.provider)
    with WerkzeugThread(app) as server:
        health = incoming("b3multi")
        assert httpx.get(f"{server.url}/health", headers=health.headers, timeout=TIMEOUT).is_success
        sent = incoming("b3multi")
        got, body = call_through(
            server.url, "requests", sent, downstream, ["b3multi"], shared.provider
        )
    assert _continued(body, sent.trace_id)
    assert_hop(shared, sent, got, ["b3multi"])
    assert _no_spans_for(shared, health.trace_id), "TRACEWIRE_EXCLUDED_PATHS from the environment"


def test_a_middleware_keeps_the_provenance_of_its_own_settings(clients: Clients) -> None:
    from_env = Settings.from_env({"TRACEWIRE_PROPAGATORS": "b3"})
    in_code = Settings(propagators=["b3"])
    assert from_env == in_code  # equal values, different sources
    first = TracewireWSGIMiddleware(wsgi_app(Service(clients)), from_env)
    second = TracewireWSGIMiddleware(wsgi_app(Service(clients)), in_code)
    assert first.settings.source("propagators") == "TRACEWIRE_PROPAGATORS"
    assert second.settings.source("propagators") == "code"

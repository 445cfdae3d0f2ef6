"""tracewire's instrumentors in-process: the protocol the launcher calls, the entry points it
finds, the classes they replace and restore, and the contrib rule (contrib httpx/requests)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from importlib.metadata import entry_points

import httpx
import pytest
import requests

from tests.support.echo import EchoServer
from tests.support.servers import UvicornThread, WerkzeugThread
from tracewire import _diagnostics, launcher
from tracewire.semconv import qualified_name

NAMES = {
    "tracewire_httpx": launcher.HttpxInstrumentor,
    "tracewire_requests": launcher.RequestsInstrumentor,
    "tracewire_flask": launcher.FlaskInstrumentor,
    "tracewire_starlette": launcher.StarletteInstrumentor,
    "tracewire_django": launcher.DjangoInstrumentor,
}


@pytest.fixture
def undo() -> Iterator[None]:
    yield
    _diagnostics.set_no_sdk_fix(None)  # after_instrumentors() under no SDK names the launcher
    for cls in launcher.INSTRUMENTORS:
        if cls is not launcher.DjangoInstrumentor:
            cls().uninstrument()


def test_entry_points_name_each_instrumentor_and_the_hook() -> None:
    ours = {
        ep.name: ep.load()
        for ep in entry_points(group="opentelemetry_instrumentor")
        if ep.module == "tracewire.launcher"
    }
    assert ours == NAMES
    hooks = list(entry_points(group="opentelemetry_post_instrument"))
    assert [ep.load() for ep in hooks if ep.name == "tracewire"] == [launcher.after_instrumentors]


def test_launcher_loads_them_as_its_distro_does(undo: None) -> None:
    # The launcher's own loading path: its default distro and its dependency check.
    instrumentation = pytest.importorskip("opentelemetry.instrumentation.distro")
    from opentelemetry.instrumentation.auto_instrumentation._load import _EntryPointDistFinder
    from opentelemetry.instrumentation.dependencies import get_dist_dependency_conflicts

    distro = instrumentation.DefaultDistro()
    finder = _EntryPointDistFinder()
    for ep in entry_points(group="opentelemetry_instrumentor"):
        if ep.name in ("tracewire_httpx", "tracewire_requests"):
            assert get_dist_dependency_conflicts(finder.dist_for(ep)) is None
            distro.load_instrumentor(ep, skip_dep_check=True)
    import tracewire.httpx
    import tracewire.requests

    assert tracewire.httpx.is_instrumented() and tracewire.requests.is_instrumented()
    assert launcher.HttpxInstrumentor().is_instrumented_by_opentelemetry
    assert list(launcher.HttpxInstrumentor().instrumentation_dependencies()) == []


def test_httpx_and_requests_trace_new_clients_until_uninstrumented(tracing, undo: None) -> None:  # type: ignore[no-untyped-def]
    launcher.HttpxInstrumentor().instrument(tracer_provider=tracing.provider)
    launcher.RequestsInstrumentor().instrument(tracer_provider=tracing.provider, unknown=1)
    with EchoServer() as echo:
        seen = httpx.get(echo.url, timeout=10).json()["headers"]
        assert "traceparent" in seen
        assert "traceparent" in requests.get(echo.url, timeout=10).json()["headers"]
        assert len([s for s in tracing.spans() if s.kind.name == "CLIENT"]) == 2
        launcher.HttpxInstrumentor().uninstrument()
        launcher.RequestsInstrumentor().uninstrument()
        assert "traceparent" not in httpx.get(echo.url, timeout=10).json()["headers"]
        assert "traceparent" not in requests.get(echo.url, timeout=10).json()["headers"]
    assert len(tracing.spans()) == 2


def test_flask_apps_made_afterwards_get_one_server_span(tracing, undo: None) -> None:  # type: ignore[no-untyped-def]
    import flask

    original = flask.Flask
    launcher.FlaskInstrumentor().instrument(tracer_provider=tracing.provider)
    launcher.FlaskInstrumentor().instrument()  # idempotent: still one wrapper
    assert flask.Flask is not original and flask.Flask.__mro__[1] is original
    app = flask.Flask("shop")

    @app.get("/items/<int:item_id>")
    def item(item_id: int) -> str:
        return str(item_id)

    with WerkzeugThread(app) as server:
        assert httpx.get(f"{server.url}/items/7", timeout=10).text == "7"
    [span] = tracing.spans()
    assert (span.kind.name, span.name) == ("SERVER", "GET /items/<int:item_id>")
    launcher.FlaskInstrumentor().uninstrument()
    assert flask.Flask is original


def test_flask_app_that_sets_up_tracewire_itself_keeps_its_own(tracing, undo: None) -> None:  # type: ignore[no-untyped-def]
    import flask

    from tracewire.flask import Tracewire

    launcher.FlaskInstrumentor().instrument()
    app = flask.Flask("own")
    app.add_url_rule("/", "root", lambda: "ok")
    Tracewire(app, tracer_provider=tracing.provider)
    with WerkzeugThread(app) as server:
        assert httpx.get(server.url, timeout=10).text == "ok"
    assert app.extensions["tracewire"] is app.wsgi_app  # nobody wrapped it a second time
    assert [s.kind.name for s in tracing.spans()] == ["SERVER"]


def test_starlette_apps_made_afterwards_get_the_middleware(tracing, undo: None) -> None:  # type: ignore[no-untyped-def]
    from starlette import applications
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    original = applications.Starlette
    launcher.StarletteInstrumentor().instrument(tracer_provider=tracing.provider)
    app = applications.Starlette(
        routes=[Route("/items/{item_id}", lambda request: PlainTextResponse("x"))]
    )
    with UvicornThread(app) as server:
        assert httpx.get(f"{server.url}/items/3", timeout=10).status_code == 200
    [span] = tracing.spans()
    assert (span.kind.name, span.name) == ("SERVER", "GET /items/{item_id}")
    launcher.StarletteInstrumentor().uninstrument()
    assert applications.Starlette is original


def test_fastapi_app_has_its_own_tracing_off_unless_it_asks(tracing, undo: None) -> None:  # type: ignore[no-untyped-def]
    fastapi = pytest.importorskip("fastapi")
    original = fastapi.FastAPI
    launcher.StarletteInstrumentor().instrument(tracer_provider=tracing.provider)
    app = fastapi.FastAPI()
    if not hasattr(app, "_telemetry"):
        pytest.skip("this FastAPI has no native telemetry")
    assert app._telemetry["tracing"] is False and app._telemetry["metrics"] is False
    asked = fastapi.FastAPI(telemetry={"tracing": True, "logs": False})
    assert asked._telemetry["tracing"] is True and asked._telemetry["metrics"] is False
    assert asked._telemetry["logs"] is False
    launcher.StarletteInstrumentor().uninstrument()
    assert fastapi.FastAPI is original


def test_a_library_that_is_not_installed_is_skipped(monkeypatch, undo: None) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(launcher.FlaskInstrumentor, "library", "no_such_library_here")
    launcher.FlaskInstrumentor().instrument()
    assert not launcher.FlaskInstrumentor().is_instrumented_by_opentelemetry


def test_contrib_instrumentor_that_ran_first_is_undone_once(tracing, caplog, undo: None) -> None:  # type: ignore[no-untyped-def]
    contrib = pytest.importorskip("opentelemetry.instrumentation.httpx")
    caplog.set_level(logging.WARNING, logger="tracewire")
    contrib.HTTPXClientInstrumentor().instrument(tracer_provider=tracing.provider)
    try:
        launcher.HttpxInstrumentor().instrument(tracer_provider=tracing.provider)
        launcher.after_instrumentors()
        assert not contrib.HTTPXClientInstrumentor().is_instrumented_by_opentelemetry
        with EchoServer() as echo:
            httpx.get(echo.url, timeout=10)
    finally:
        contrib.HTTPXClientInstrumentor().uninstrument()
    assert [s.instrumentation_scope.name for s in tracing.spans()] == ["tracewire"]
    lines = [r.getMessage() for r in caplog.records if "launcher:contrib:httpx" in r.getMessage()]
    assert len(lines) == 1 and "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=tracewire_httpx" in lines[0]


def test_contrib_instrumentor_that_ran_after_is_undone_by_the_hook(tracing, undo: None) -> None:  # type: ignore[no-untyped-def]
    contrib = pytest.importorskip("opentelemetry.instrumentation.requests")
    launcher.RequestsInstrumentor().instrument(tracer_provider=tracing.provider)
    contrib.RequestsInstrumentor().instrument(tracer_provider=tracing.provider)
    try:
        launcher.after_instrumentors()
        with EchoServer() as echo:
            requests.get(echo.url, timeout=10)
    finally:
        contrib.RequestsInstrumentor().uninstrument()
    assert [s.instrumentation_scope.name for s in tracing.spans()] == ["tracewire"]


def test_a_contrib_instrumentor_that_fails_to_undo_is_reported_not_raised(  # type: ignore[no-untyped-def]
    caplog, monkeypatch, undo: None
) -> None:
    contrib = pytest.importorskip("opentelemetry.instrumentation.httpx")
    caplog.set_level(logging.WARNING, logger="tracewire")

    def broken(self, **kwargs):  # type: ignore[no-untyped-def]
        raise RuntimeError("cannot")

    contrib.HTTPXClientInstrumentor().instrument()
    monkeypatch.setattr(contrib.HTTPXClientInstrumentor, "uninstrument", broken)
    try:
        launcher.HttpxInstrumentor().instrument()
    finally:
        monkeypatch.undo()
        contrib.HTTPXClientInstrumentor().uninstrument()
    assert launcher.HttpxInstrumentor().is_instrumented_by_opentelemetry
    assert f"could not undo 'httpx': {qualified_name(RuntimeError())}" in caplog.text


def test_a_flask_app_with_bad_config_is_served_untraced_and_told(
    tracing, caplog, undo: None
) -> None:  # type: ignore[no-untyped-def]
    import flask

    caplog.set_level(logging.ERROR, logger="tracewire")
    launcher.FlaskInstrumentor().instrument(tracer_provider=tracing.provider)
    app = flask.Flask("bad")
    app.config["TRACEWIRE_PROPAGATORS"] = "no-such-format"
    app.add_url_rule("/", "root", lambda: "ok")
    with WerkzeugThread(app) as server:
        for _ in range(2):
            assert httpx.get(server.url, timeout=10).text == "ok"
    assert tracing.spans() == []
    told = [r.getMessage() for r in caplog.records if "[launcher:flask]" in r.getMessage()]
    assert len(told) == 1 and "TRACEWIRE_PROPAGATORS" in told[0]


def test_an_instrumentor_that_fails_logs_and_does_not_raise(
    caplog, monkeypatch, undo: None
) -> None:  # type: ignore[no-untyped-def]
    import tracewire.httpx

    def broken(**kwargs):  # type: ignore[no-untyped-def]
        raise RuntimeError("no")

    monkeypatch.setattr(tracewire.httpx, "instrument", broken)
    launcher.HttpxInstrumentor().instrument()  # the launcher would stop at an exception
    assert not launcher.HttpxInstrumentor().is_instrumented_by_opentelemetry
    assert "tracewire_httpx could not instrument httpx" in caplog.text


@pytest.mark.parametrize("contrib_first", [True, False], ids=["contrib-first", "contrib-after"])
def test_contrib_fastapi_either_order_leaves_tracewire_s_one_server_span(  # type: ignore[no-untyped-def]
    contrib_first: bool, tracing, undo: None
) -> None:
    fastapi = pytest.importorskip("fastapi")
    contrib = pytest.importorskip("opentelemetry.instrumentation.fastapi")
    original = fastapi.FastAPI
    steps = [
        lambda: contrib.FastAPIInstrumentor().instrument(tracer_provider=tracing.provider),
        lambda: launcher.StarletteInstrumentor().instrument(tracer_provider=tracing.provider),
    ]
    for step in steps if contrib_first else reversed(steps):
        step()
    try:
        launcher.after_instrumentors()
        assert not contrib.FastAPIInstrumentor().is_instrumented_by_opentelemetry
        app = fastapi.FastAPI()

        @app.get("/items/{item_id}")
        async def item(item_id: int) -> dict[str, int]:
            return {"item_id": item_id}

        with UvicornThread(app) as server:
            assert httpx.get(f"{server.url}/items/5", timeout=10).json() == {"item_id": 5}
    finally:
        contrib.FastAPIInstrumentor().uninstrument()
    spans = [s for s in tracing.spans() if s.kind.name == "SERVER"]
    assert [(s.name, s.instrumentation_scope.name) for s in spans] == [
        ("GET /items/{item_id}", "tracewire")
    ]
    launcher.StarletteInstrumentor().uninstrument()
    assert fastapi.FastAPI is original


def test_no_sdk_is_said_also_when_every_request_carries_a_traceparent(caplog) -> None:  # type: ignore[no-untyped-def]
    # A no-op tracer hands back the caller's span context: valid, yet no span of ours.
    from opentelemetry.trace import NoOpTracerProvider

    from tracewire import TracewireWSGIMiddleware

    caplog.set_level(logging.WARNING, logger="tracewire")

    def app(environ, start_response):  # type: ignore[no-untyped-def]
        start_response("200 OK", [("content-type", "text/plain")])
        return [b"ok"]

    traced = TracewireWSGIMiddleware(app, tracer_provider=NoOpTracerProvider())
    tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    with WerkzeugThread(traced) as server:
        for _ in range(3):
            assert httpx.get(server.url, headers={"traceparent": tp}, timeout=10).text == "ok"
    told = [r.getMessage() for r in caplog.records if "[breaker:no-sdk]" in r.getMessage()]
    assert len(told) == 1 and "tracewire.sdk.configure" in told[0]

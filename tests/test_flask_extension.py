"""tracewire.flask.Tracewire under werkzeug's server: settings from app.config, span names from
url_rule, Flask's own error handling, the application-factory shape."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from flask import Blueprint, Flask, Response, abort, request, stream_with_context
from opentelemetry import trace
from werkzeug.middleware.dispatcher import DispatcherMiddleware

from tests import wsgi_apps
from tests.support.servers import wait_for
from tracewire import Settings
from tracewire.flask import EXTENSION_KEY, Tracewire, settings_from_config


class Boom(RuntimeError):
    pass


def new_ids() -> tuple[str, str]:
    return secrets.token_hex(16), secrets.token_hex(8)


def traceparent(trace_id: str, parent_id: str) -> str:
    return f"00-{trace_id}-{parent_id}-01"


def current_ids() -> dict[str, str]:
    sc = trace.get_current_span().get_span_context()
    return {"trace_id": f"{sc.trace_id:032x}", "span_id": f"{sc.span_id:016x}"}


def make_app(**config: Any) -> Flask:
    app = Flask("flask_extension_tests")
    app.config.update(config)

    @app.get("/items/<int:item_id>")
    def item(item_id: int) -> Any:
        return {**current_ids(), "item_id": item_id}

    @app.post("/submit")
    def submit() -> Any:
        return current_ids()

    @app.get("/boom")
    def boom() -> Any:
        raise Boom("view failed")

    @app.get("/unavailable")
    def unavailable() -> Any:
        abort(503)

    @app.get("/gone")
    def gone() -> Any:
        abort(404)

    @app.get("/health")
    def health() -> Any:
        return current_ids()

    @app.get("/stream")
    def stream() -> Any:
        @stream_with_context
        def chunks() -> Iterator[str]:
            for i in range(int(request.args.get("n", "3"))):
                yield f"{i} {current_ids()['span_id']}\n"

        return Response(chunks(), mimetype="text/plain")

    users = Blueprint("users", __name__, url_prefix="/api")

    @users.before_request
    def require_token() -> Any:
        if request.headers.get("x-token") != "ok":
            return {"error": "no token"}, 401
        return None

    @users.get("/users/<name>")
    def user(name: str) -> Any:
        return {**current_ids(), "name": name}

    app.register_blueprint(users)
    return app


served = wsgi_apps.served


def spans_of(tracing: Any, trace_id: str) -> list[Any]:
    return [s for s in tracing.spans() if f"{s.context.trace_id:032x}" == trace_id]


def get_span(tracing: Any, client: httpx.Client, method: str, path: str, **kwargs: Any) -> Any:
    """Send a traced request; return (response, its one server span)."""
    trace_id, parent_id = new_ids()
    headers = {"traceparent": traceparent(trace_id, parent_id), **kwargs.pop("headers", {})}
    response = client.request(method, path, headers=headers, **kwargs)
    (span,) = wait_for(lambda: spans_of(tracing, trace_id), timeout=10)
    assert f"{span.parent.span_id:016x}" == parent_id
    return response, span


# ------------------------------------------------------------------------------- settings
def test_factory_shape_with_settings_from_app_config(tracing: Any) -> None:
    def request_hook(span: Any, environ: Any) -> None:
        span.set_attribute("test.hooked", environ["PATH_INFO"])

    ext = Tracewire(tracer_provider=tracing.provider)
    app = make_app(
        TRACEWIRE_PROPAGATORS=["b3multi", "tracecontext"],  # Python values are taken as they are
        TRACEWIRE_RESPONSE_PROPAGATION="traceresponse",
        TRACEWIRE_SERVER_REQUEST_HOOK=request_hook,
        TRACEWIRE_CAPTURE_REQUEST_HEADERS="x-tenant, Authorization",
        TRACEWIRE_EXCLUDED_PATHS="/health",
    )
    ext.init_app(app)
    trace_id, parent_id = new_ids()
    with served(app) as client:
        response = client.get(
            "/items/1",
            headers={
                "X-B3-TraceId": trace_id,
                "X-B3-SpanId": parent_id,
                "X-B3-Sampled": "1",
                "x-tenant": "acme",
                "authorization": "Basic c2VjcmV0",
            },
        )
        health = client.get("/health", headers={"traceparent": traceparent(*new_ids())})
    (span,) = wait_for(lambda: spans_of(tracing, trace_id), timeout=10)
    assert response.json()["trace_id"] == trace_id
    assert response.headers["traceresponse"] == f"00-{trace_id}-{span.context.span_id:016x}-01"
    assert span.attributes["tracewire.propagation.format"] == "b3multi"
    assert span.attributes["test.hooked"] == "/items/1"
    assert span.attributes["http.request.header.x-tenant"] == ("acme",)
    assert span.attributes["http.request.header.authorization"] == ("REDACTED",)
    assert "traceresponse" not in health.headers
    assert len(tracing.spans()) == 1
    assert isinstance(app.extensions[EXTENSION_KEY].settings, Settings)


def test_app_config_wins_over_the_environment(
    tracing: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRACEWIRE_RESPONSE_PROPAGATION", "server-timing")
    monkeypatch.setenv("TRACEWIRE_EXCLUDED_PATHS", "/health")
    monkeypatch.setenv("OTEL_PROPAGATORS", "b3")
    app = make_app(TRACEWIRE_RESPONSE_PROPAGATION="traceresponse")
    Tracewire(app, tracer_provider=tracing.provider)
    settings = app.extensions[EXTENSION_KEY].settings
    assert settings.response_propagation == "traceresponse"  # app.config
    assert settings.excluded_paths == ("/health",)  # environment
    assert [name for name, _ in settings.composite.extractors] == ["b3"]  # OTEL_PROPAGATORS
    with served(app) as client:
        assert "traceresponse" in client.get("/items/2").headers
        assert "traceresponse" not in client.get("/health").headers


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("TRACEWIRE_PROPAGATORS", "tracecontext,nonesuch"),
        ("TRACEWIRE_RESPONSE_PROPAGATION", "sometimes"),
        ("TRACEWIRE_EXTRACT_POLICY", "middle"),
        ("TRACEWIRE_SERVER_REQUEST_HOOK", "no_such_module_here:hook"),
        ("TRACEWIRE_REQUIRE_PARENT", "maybe"),
        ("TRACEWIRE_EXCLUDED_PATHS", "re:(unclosed"),
        ("TRACEWIRE_PROPAGATOR", "b3"),  # a typo of a real key
    ],
)
def test_bad_config_fails_at_init_app_naming_the_key(key: str, value: str) -> None:
    app = make_app(**{key: value})
    original = app.wsgi_app
    with pytest.raises(ValueError, match=key):
        Tracewire(app)
    assert app.wsgi_app == original  # nothing half set up
    assert EXTENSION_KEY not in app.extensions


def test_unknown_key_error_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"valid keys: .*TRACEWIRE_PROPAGATORS"):
        settings_from_config({"TRACEWIRE_PROPAGATOR": "b3"})


def test_explicit_settings_ignore_app_config(tracing: Any) -> None:
    app = make_app(TRACEWIRE_PROPAGATORS="not-a-propagator")
    Tracewire(app, Settings(propagators=["b3"]), tracer_provider=tracing.provider)
    trace_id, parent_id = new_ids()
    with served(app) as client:
        seen = client.get("/items/3", headers={"b3": f"{trace_id}-{parent_id}-1"}).json()
    assert seen["trace_id"] == trace_id


def test_one_extension_for_several_apps(tracing: Any) -> None:
    ext = Tracewire(tracer_provider=tracing.provider)
    first = make_app(TRACEWIRE_RESPONSE_PROPAGATION="traceresponse")
    second = make_app(TRACEWIRE_RESPONSE_PROPAGATION="server-timing")
    ext.init_app(first)
    ext.init_app(second)
    with served(first) as a, served(second) as b:
        assert "traceresponse" in a.get("/items/1").headers
        assert "server-timing" in b.get("/items/1").headers


def test_init_app_twice_still_one_span(tracing: Any) -> None:
    app = make_app()
    Tracewire(app, tracer_provider=tracing.provider)
    Tracewire(app, tracer_provider=tracing.provider)
    with served(app) as client:
        _, span = get_span(tracing, client, "GET", "/items/4")
    assert span.name == "GET /items/<int:item_id>"
    wait_for(lambda: len(tracing.spans()) >= 1)
    assert len(tracing.spans()) == 1


# ------------------------------------------------------------------------------ span names
def test_span_names_come_from_the_url_rule(tracing: Any) -> None:
    app = make_app()
    Tracewire(app, tracer_provider=tracing.provider)
    with served(app) as client:
        _, blueprint = get_span(
            tracing, client, "GET", "/api/users/alice", headers={"x-token": "ok"}
        )
        refused, early = get_span(tracing, client, "GET", "/api/users/bob")
        _, post = get_span(tracing, client, "POST", "/submit")
        not_allowed, wrong_method = get_span(tracing, client, "GET", "/submit")
        _, missing = get_span(tracing, client, "GET", "/nowhere/42")
    assert blueprint.name == "GET /api/users/<name>"
    assert blueprint.attributes["http.route"] == "/api/users/<name>"
    # A before_request that answers early still names the span after the rule.
    assert refused.status_code == 401
    assert early.name == "GET /api/users/<name>"
    assert early.status.is_unset
    assert post.name == "POST /submit"
    # No rule matched: the method alone, never the raw path.
    assert not_allowed.status_code == 405
    assert wrong_method.name == "GET"
    assert missing.name == "GET"
    assert "http.route" not in missing.attributes


def test_app_mounted_under_a_prefix_names_the_full_route(tracing: Any) -> None:
    app = make_app()
    Tracewire(app, tracer_provider=tracing.provider)
    root = Flask("root")
    mounted = DispatcherMiddleware(root, {"/shop": app})
    with served(mounted) as client:
        response, span = get_span(tracing, client, "GET", "/shop/items/9")
    assert response.json()["item_id"] == 9
    assert span.name == "GET /shop/items/<int:item_id>"
    assert span.attributes["url.path"] == "/shop/items/9"


# ---------------------------------------------------------------------------------- errors
def test_flask_error_handler_answers_and_the_span_records_the_exception(tracing: Any) -> None:
    app = make_app()

    @app.errorhandler(500)
    def failed(error: Any) -> Any:
        return "custom failure page", 500

    Tracewire(app, tracer_provider=tracing.provider)
    with served(app) as client:
        response, span = get_span(tracing, client, "GET", "/boom")
        unavailable, aborted = get_span(tracing, client, "GET", "/unavailable")
        gone, not_found = get_span(tracing, client, "GET", "/gone")
    assert (response.status_code, response.text) == (500, "custom failure page")
    assert span.name == "GET /boom"
    assert span.status.status_code.name == "ERROR"
    assert span.attributes["http.response.status_code"] == 500
    assert span.attributes["error.type"] == f"{__name__}.Boom"
    assert [e.attributes["exception.type"] for e in span.events] == [f"{__name__}.Boom"]
    # abort(503) is an HTTP answer, not an exception of the app: the status is the error.
    assert unavailable.status_code == 503
    assert aborted.status.status_code.name == "ERROR"
    assert aborted.attributes["error.type"] == "503"
    assert aborted.events == ()
    assert gone.status_code == 404
    assert not_found.status.is_unset
    assert "error.type" not in not_found.attributes


def test_propagated_exception_reaches_the_server(tracing: Any) -> None:
    app = make_app(PROPAGATE_EXCEPTIONS=True)
    Tracewire(app, tracer_provider=tracing.provider)
    with served(app) as client:
        response, span = get_span(tracing, client, "GET", "/boom")
    assert response.status_code == 500  # werkzeug's own answer
    assert span.attributes["error.type"] == f"{__name__}.Boom"
    assert len(span.events) == 1  # recorded once, though both the signal and the raise saw it


def test_stream_with_context_runs_inside_the_span(tracing: Any) -> None:
    app = make_app()
    Tracewire(app, tracer_provider=tracing.provider)
    with served(app) as client:
        response, span = get_span(tracing, client, "GET", "/stream?n=4")
    lines = response.text.splitlines()
    assert [line.split()[0] for line in lines] == ["0", "1", "2", "3"]
    assert {line.split()[1] for line in lines} == {f"{span.context.span_id:016x}"}
    assert span.name == "GET /stream"

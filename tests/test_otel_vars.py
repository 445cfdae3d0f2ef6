"""OpenTelemetry's own environment variables, end to end: real servers and clients, spans read
at an in-memory exporter. Each test sets the environment before the middleware or client is
built (that is when the environment is read)."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
from opentelemetry.trace import SpanKind

from tests.conftest import Tracing
from tests.support import plain_apps
from tests.support.echo import EchoServer
from tests.support.servers import UvicornThread, serving, wait_for
from tests.wsgi_apps import QuickWerkzeug
from tracewire import Settings, TracewireMiddleware, TracewireWSGIMiddleware, defaults
from tracewire.httpx import TracewireTransport
from tracewire.requests import instrument_session

OTEL_CLEAN = (
    "OTEL_PROPAGATORS",
    "OTEL_PYTHON_EXCLUDED_URLS",
    "OTEL_SEMCONV_STABILITY_OPT_IN",
    *(f"OTEL_PYTHON_{n}_EXCLUDED_URLS" for n in ("FLASK", "DJANGO", "STARLETTE", "FASTAPI")),
    *(f"OTEL_PYTHON_{n}_EXCLUDED_URLS" for n in ("FALCON", "HTTPX", "REQUESTS")),
    *(
        f"OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_{n}"
        for n in (
            "SERVER_REQUEST",
            "SERVER_RESPONSE",
            "CLIENT_REQUEST",
            "CLIENT_RESPONSE",
            "SANITIZE_FIELDS",
        )
    ),
)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # Only what each test sets: nothing from the shell, from TRACEWIRE_* or from a process
    # default another test configured leaks in (a component without settings follows it).
    for name in (*OTEL_CLEAN, *(k for k in os.environ if k.startswith("TRACEWIRE_"))):
        monkeypatch.delenv(name, raising=False)
    defaults.reset()
    yield
    defaults.reset()


# ------------------------------------------------------------------------------ helpers
def server_spans(tracing: Tracing) -> list[Any]:
    return [s for s in tracing.spans() if s.kind == SpanKind.SERVER]


def client_spans(tracing: Tracing) -> list[Any]:
    return [s for s in tracing.spans() if s.kind == SpanKind.CLIENT]


def traced_paths(tracing: Tracing, expected: int) -> list[str]:
    """The ``url.path`` of every SERVER span once ``expected`` of them ended."""
    spans = wait_for(lambda: s if len(s := server_spans(tracing)) >= expected else None, 10)
    return sorted(str(s.attributes["url.path"]) for s in spans)


@contextlib.contextmanager
def running(protocol: str, app: Any) -> Iterator[httpx.Client]:
    server = UvicornThread(app) if protocol == "asgi" else QuickWerkzeug(app)
    with serving(server) as srv, httpx.Client(base_url=srv.url, timeout=10) as client:
        yield client


def plain(protocol: str, tracing: Tracing, **overrides: Any) -> Any:
    """The protocol's plain app behind tracewire's raw middleware, settings from the env."""
    if protocol == "asgi":
        return TracewireMiddleware(
            plain_apps.asgi_app, tracer_provider=tracing.provider, **overrides
        )
    return TracewireWSGIMiddleware(
        plain_apps.wsgi_app, tracer_provider=tracing.provider, **overrides
    )


PROTOCOLS = ["asgi", "wsgi"]


# ------------------------------------------------------------------- OTEL_PYTHON_EXCLUDED_URLS
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_generic_excluded_urls_are_regexes_searched_in_the_full_url(
    protocol: str, tracing: Tracing, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As in contrib: a comma list, each entry searched (not anchored) in scheme://host/path?q.
    monkeypatch.setenv(
        "OTEL_PYTHON_EXCLUDED_URLS", r"healthz, /internal/.*\?debug=1 , 127\.0\.0\.1:\d+/root$"
    )
    with running(protocol, plain(protocol, tracing)) as client:
        for path in ("/healthz", "/api/healthz/deep", "/internal/x?debug=1", "/root"):
            assert client.get(path).status_code == 200
        for path in ("/internal/x", "/root/child", "/items"):
            assert client.get(path).status_code == 200
        assert traced_paths(tracing, 3) == ["/internal/x", "/items", "/root/child"]


def test_tracewire_variable_wins_over_otel_and_code_over_both(
    tracing: Tracing, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_PYTHON_EXCLUDED_URLS", "from-otel")
    monkeypatch.setenv("TRACEWIRE_EXCLUDED_URLS", "from-tracewire")
    env_app = plain("asgi", tracing)
    assert env_app.settings.source("excluded_urls") == "TRACEWIRE_EXCLUDED_URLS"
    with running("asgi", env_app) as client:
        for path in ("/from-otel", "/from-tracewire", "/plain"):
            client.get(path)
        assert traced_paths(tracing, 2) == ["/from-otel", "/plain"]
    tracing.exporter.clear()
    code_app = plain("asgi", tracing, excluded_urls=["from-code"])
    assert code_app.settings.source("excluded_urls") == "code"
    with running("asgi", code_app) as client:
        for path in ("/from-otel", "/from-tracewire", "/from-code"):
            client.get(path)
        assert traced_paths(tracing, 2) == ["/from-otel", "/from-tracewire"]


# ------------------------------------------------------- OTEL_PYTHON_<FRAMEWORK>_EXCLUDED_URLS
def _flask(tracing: Tracing) -> Any:
    from flask import Flask

    from tracewire.flask import Tracewire

    app = Flask("otel-vars")

    @app.route("/<path:anything>")
    def anything(anything: str) -> str:
        return "ok"

    Tracewire(app, tracer_provider=tracing.provider)
    return app


def _starlette(tracing: Tracing) -> Any:
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def anything(request: Any) -> Any:
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/{anything:path}", anything)])
    return TracewireMiddleware(app, tracer_provider=tracing.provider)


def _fastapi_app() -> Any:
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/{anything:path}")
    async def anything(anything: str) -> str:
        return "ok"

    return app


def _fastapi(tracing: Tracing) -> Any:
    return TracewireMiddleware(_fastapi_app(), tracer_provider=tracing.provider)


def _fastapi_added(tracing: Tracing) -> Any:
    # The usual FastAPI form: the middleware wraps FastAPI's inner (Starlette) stack.
    app = _fastapi_app()
    app.add_middleware(TracewireMiddleware, tracer_provider=tracing.provider)
    return app


def _django(tracing: Tracing) -> Any:
    from django.core.handlers.wsgi import WSGIHandler

    from tests.wsgi_apps import ensure_django

    ensure_django()
    return TracewireWSGIMiddleware(WSGIHandler(), tracer_provider=tracing.provider)


def _falcon(tracing: Tracing) -> Any:
    import falcon

    class Anything:
        def on_get(self, req: Any, resp: Any, **params: str) -> None:
            resp.text = "ok"

    app = falcon.App()
    app.add_route("/{anything}", Anything())
    app.add_route("/{anything}/{more}", Anything())
    return TracewireWSGIMiddleware(app, tracer_provider=tracing.provider)


FRAMEWORK_APPS: dict[str, tuple[str, str, Callable[[Tracing], Any]]] = {
    # name: (contrib's variable name part, protocol, app builder)
    "flask": ("FLASK", "wsgi", _flask),
    "django": ("DJANGO", "wsgi", _django),
    "falcon": ("FALCON", "wsgi", _falcon),
    "starlette": ("STARLETTE", "asgi", _starlette),
    "fastapi": ("FASTAPI", "asgi", _fastapi),
    "fastapi-add_middleware": ("FASTAPI", "asgi", _fastapi_added),
}


@pytest.mark.parametrize("framework", list(FRAMEWORK_APPS))
def test_framework_variable_comes_before_the_generic_one(
    framework: str, tracing: Tracing, monkeypatch: pytest.MonkeyPatch
) -> None:
    name, protocol, build = FRAMEWORK_APPS[framework]
    other = "DJANGO" if name != "DJANGO" else "FLASK"
    monkeypatch.setenv(f"OTEL_PYTHON_{name}_EXCLUDED_URLS", "fw-skip,fw-also")
    monkeypatch.setenv("OTEL_PYTHON_EXCLUDED_URLS", "generic-skip")
    monkeypatch.setenv(f"OTEL_PYTHON_{other}_EXCLUDED_URLS", "other-skip")
    with running(protocol, build(tracing)) as client:
        for path in ("/fw-skip", "/x/fw-also", "/generic-skip", "/other-skip"):
            assert client.get(path).status_code in (200, 404)
        # The framework's own variable replaces the generic one (contrib reads only its own,
        # falling back to the generic one when it is unset); another framework's is ignored.
        assert traced_paths(tracing, 2) == ["/generic-skip", "/other-skip"]


def test_generic_variable_applies_to_a_framework_without_its_own(
    tracing: Tracing, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_PYTHON_EXCLUDED_URLS", "generic-skip")
    with running("wsgi", _flask(tracing)) as client:
        for path in ("/generic-skip", "/kept"):
            client.get(path)
        assert traced_paths(tracing, 1) == ["/kept"]


# ------------------------------------------------------------ client exclusion variables
def _httpx_get(tracing: Tracing, url: str) -> None:
    with httpx.Client(transport=TracewireTransport(tracer_provider=tracing.provider)) as c:
        assert c.get(url).status_code == 200


def _requests_get(tracing: Tracing, url: str) -> None:
    with requests.Session() as session:
        instrument_session(session, tracer_provider=tracing.provider)
        assert session.get(url, timeout=10).status_code == 200


CLIENTS = {"HTTPX": _httpx_get, "REQUESTS": _requests_get}


@pytest.mark.parametrize("library", list(CLIENTS))
def test_client_excluded_url_has_no_span_but_keeps_the_trace_headers(
    library: str, tracing: Tracing, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = "REQUESTS" if library == "HTTPX" else "HTTPX"
    monkeypatch.setenv(f"OTEL_PYTHON_{library}_EXCLUDED_URLS", r"/skip\?x=1")
    monkeypatch.setenv(f"OTEL_PYTHON_{other}_EXCLUDED_URLS", "/kept")
    get = CLIENTS[library]
    with EchoServer() as echo, tracing.provider.get_tracer("t").start_as_current_span("parent"):
        get(tracing, echo.url + "/skip?x=1")
        get(tracing, echo.url + "/kept")
    assert [s.attributes["url.full"] for s in client_spans(tracing)] == [echo.url + "/kept"]
    # The excluded call still carries the trace on: the next service stays in it.
    assert [("traceparent" in seen["headers"]) for seen in echo.seen] == [True, True]


@pytest.mark.parametrize("library", list(CLIENTS))
def test_client_excluded_headers_false_sends_nothing_to_an_excluded_url(
    library: str, tracing: Tracing, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_PYTHON_EXCLUDED_URLS", "/skip")  # the generic one: clients too
    monkeypatch.setenv("TRACEWIRE_CLIENT_EXCLUDED_HEADERS", "false")
    with EchoServer() as echo, tracing.provider.get_tracer("t").start_as_current_span("parent"):
        CLIENTS[library](tracing, echo.url + "/skip")
        CLIENTS[library](tracing, echo.url + "/kept")
    assert len(client_spans(tracing)) == 1
    assert [("traceparent" in seen["headers"]) for seen in echo.seen] == [False, True]


# --------------------------------------------------------------------------- header capture
CAPTURE = "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_"


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_server_header_capture_and_sanitize(
    protocol: str, tracing: Tracing, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CAPTURE + "SERVER_REQUEST", "X-Req, x-session-id, x-api-.*")
    monkeypatch.setenv(CAPTURE + "SERVER_RESPONSE", "x-resp,X-SECRET-.*")
    # Searched in the name, case-insensitively, plain names too (as in contrib).
    monkeypatch.setenv(CAPTURE + "SANITIZE_FIELDS", "SESSION,secret-t.ken")
    with running(protocol, plain(protocol, tracing)) as client:
        headers = {"X-Req": "r1", "X-Session-Id": "s1", "X-Api-Version": "2", "X-Other": "o"}
        assert client.get("/h", headers=headers).status_code == 200
    (span,) = wait_for(lambda: server_spans(tracing) or None, 10)
    attrs = {k: v for k, v in span.attributes.items() if ".header." in k}
    assert attrs == {
        "http.request.header.x-req": ("r1",),
        "http.request.header.x-session-id": ("REDACTED",),
        "http.request.header.x-api-version": ("2",),
        # Every value of a repeated header, each a list entry (WSGI servers may join them).
        "http.response.header.x-resp": ("one", "two"),
        "http.response.header.x-secret-token": ("REDACTED",),
    }


def test_sanitize_keeps_tracewire_default_redactions(
    tracing: Tracing, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CAPTURE + "SERVER_REQUEST", "authorization,x-session-id")
    monkeypatch.setenv(CAPTURE + "SANITIZE_FIELDS", "session")
    with running("asgi", plain("asgi", tracing)) as client:
        client.get("/h", headers={"Authorization": "Bearer t", "X-Session-Id": "s"})
    (span,) = wait_for(lambda: server_spans(tracing) or None, 10)
    assert span.attributes["http.request.header.authorization"] == ("REDACTED",)
    assert span.attributes["http.request.header.x-session-id"] == ("REDACTED",)


@pytest.mark.parametrize("library", list(CLIENTS))
def test_client_header_capture_and_sanitize(
    library: str, tracing: Tracing, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CAPTURE + "CLIENT_REQUEST", "accept,user-agent")
    monkeypatch.setenv(CAPTURE + "CLIENT_RESPONSE", "content-.*")
    monkeypatch.setenv(CAPTURE + "SANITIZE_FIELDS", "agent")
    with EchoServer() as echo:
        CLIENTS[library](tracing, echo.url + "/c")
    (span,) = client_spans(tracing)
    sent = echo.seen[0]["headers"]
    assert span.attributes["http.request.header.accept"] == tuple(sent["accept"])
    assert span.attributes["http.request.header.user-agent"] == ("REDACTED",)
    assert span.attributes["http.response.header.content-type"] == ("application/json",)
    assert int(span.attributes["http.response.header.content-length"][0]) > 0


# --------------------------------------------------------------- OTEL_SEMCONV_STABILITY_OPT_IN
OLD_SERVER = {"http.method", "http.status_code", "http.target", "http.scheme", "net.host.name"}
OLD_CLIENT = {"http.method", "http.status_code", "http.url", "net.peer.name", "net.peer.port"}


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("opt_in", ["http/dup", "database,http/dup", None, "http"])
def test_server_semconv_opt_in(
    protocol: str, opt_in: str | None, tracing: Tracing, monkeypatch: pytest.MonkeyPatch
) -> None:
    if opt_in is not None:
        monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", opt_in)
    with running(protocol, plain(protocol, tracing)) as client:
        client.get("/p/q?a=1")
    (span,) = wait_for(lambda: server_spans(tracing) or None, 10)
    attrs = span.attributes
    assert attrs["http.request.method"] == "GET"
    assert attrs["http.response.status_code"] == 200
    if opt_in is not None and "http/dup" in opt_in:
        assert set(attrs) >= OLD_SERVER
        assert attrs["http.method"] == "GET"
        assert attrs["http.status_code"] == 200
        assert attrs["http.target"] == "/p/q?a=1"
        assert attrs["net.host.name"] == attrs["server.address"]
    else:
        assert not OLD_SERVER & set(attrs)


@pytest.mark.parametrize("library", list(CLIENTS))
@pytest.mark.parametrize("opt_in", ["http/dup", None])
def test_client_semconv_opt_in(
    library: str, opt_in: str | None, tracing: Tracing, monkeypatch: pytest.MonkeyPatch
) -> None:
    if opt_in is not None:
        monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", opt_in)
    with EchoServer() as echo:
        CLIENTS[library](tracing, echo.url + "/c?x=1")
    (span,) = client_spans(tracing)
    attrs = span.attributes
    assert attrs["url.full"] == echo.url + "/c?x=1"
    if opt_in:
        assert set(attrs) >= OLD_CLIENT
        assert attrs["http.url"] == attrs["url.full"]
        assert attrs["net.peer.name"] == "127.0.0.1"
        assert attrs["net.peer.port"] == echo.port
        assert attrs["http.status_code"] == 200
    else:
        assert not OLD_CLIENT & set(attrs)


# ----------------------------------------------------------------------- malformed values
def test_bad_regex_in_excluded_urls_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_PYTHON_EXCLUDED_URLS", "ok,bad(")
    with pytest.raises(ValueError, match=r"OTEL_PYTHON_EXCLUDED_URLS"):
        TracewireMiddleware(plain_apps.asgi_app)
    with pytest.raises(ValueError) as caught:
        TracewireWSGIMiddleware(plain_apps.wsgi_app)
    assert "OTEL_PYTHON_EXCLUDED_URLS" in str(caught.value)
    assert "bad(" in str(caught.value)


@pytest.mark.parametrize(
    "variable", ["OTEL_PYTHON_FLASK_EXCLUDED_URLS", "OTEL_PYTHON_HTTPX_EXCLUDED_URLS"]
)
def test_bad_regex_in_a_specific_variable_names_it(
    variable: str, tracing: Tracing, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(variable, "[unclosed")
    with pytest.raises(ValueError, match=re.escape(variable)):
        if "FLASK" in variable:
            _flask(tracing)
        else:
            TracewireTransport(tracer_provider=tracing.provider)


def test_bad_header_regex_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CAPTURE + "SERVER_REQUEST", "x-ok,x-(bad")
    with pytest.raises(ValueError, match=CAPTURE + "SERVER_REQUEST"):
        Settings.from_env()


@pytest.mark.parametrize("value", ["http/dupe", "http/stable", "HTTP/DUPLICATE"])
def test_unknown_http_semconv_token_is_an_error(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A misspelt HTTP token would silently give other attribute names than asked for.
    monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", value)
    with pytest.raises(ValueError, match="OTEL_SEMCONV_STABILITY_OPT_IN") as caught:
        TracewireMiddleware(plain_apps.asgi_app)
    assert "http/dup" in str(caught.value)


def test_other_signals_semconv_tokens_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    # The variable is shared with other instrumentations: their tokens are not ours to judge.
    monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", "database/dup, gen_ai_latest_experimental")
    settings = Settings.from_env()
    assert settings.semconv == "http"
    assert settings.source("semconv") == "default"


async def async_hook(span: Any, request: Any) -> None:
    """What contrib's httpx ``async_request_hook`` looks like, moved over as it is."""


def test_an_async_hook_is_refused_at_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    # tracewire calls hooks, never awaits them: an async one would silently do nothing.
    with pytest.raises(TypeError, match=r"client_request_hook.*async"):
        Settings(client_request_hook=async_hook)
    with pytest.raises(TypeError, match="server_response_hook"):
        TracewireMiddleware(plain_apps.asgi_app, server_response_hook=async_hook)
    monkeypatch.setenv("TRACEWIRE_CLIENT_RESPONSE_HOOK", "tests.test_otel_vars:async_hook")
    with pytest.raises(TypeError, match="TRACEWIRE_CLIENT_RESPONSE_HOOK"):
        TracewireTransport()


def test_framework_config_wins_over_the_framework_variable(
    tracing: Tracing, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flask import Flask

    from tracewire.flask import Tracewire

    monkeypatch.setenv("OTEL_PYTHON_FLASK_EXCLUDED_URLS", "from-otel")
    app = Flask("config-wins")
    app.config["TRACEWIRE_EXCLUDED_URLS"] = "from-config"

    @app.route("/<path:anything>")
    def anything(anything: str) -> str:
        return "ok"

    Tracewire(app, tracer_provider=tracing.provider)
    with running("wsgi", app) as client:
        for path in ("/from-otel", "/from-config"):
            assert client.get(path).status_code == 200
        assert traced_paths(tracing, 1) == ["/from-otel"]


def test_tracewire_semconv_wins_over_the_opt_in(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", "http/dup")
    assert Settings.from_env().semconv == "http/dup"
    monkeypatch.setenv("TRACEWIRE_SEMCONV", "http")
    settings = Settings.from_env()
    assert (settings.semconv, settings.source("semconv")) == ("http", "TRACEWIRE_SEMCONV")
    # Shadowed, the opt-in is not even read: a broken one does no harm.
    monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", "http/broken")
    assert Settings.from_env().semconv == "http"


# ----------------------------------------------------------------------- tracewire check
TRACEWIRE = Path(sys.executable).parent / "tracewire"


def _check(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("TRACEWIRE_", "OTEL_PYTHON_", "OTEL_INSTRUMENTATION_", "OTEL_SEMCONV"))
        and k != "OTEL_PROPAGATORS"
    }
    return subprocess.run(
        [str(TRACEWIRE), "check", *args],
        cwd=Path(__file__).resolve().parent.parent,  # --app modules import from here
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _sources(output: str) -> dict[str, str]:
    found = {}
    for line in output.split("what would break", 1)[0].splitlines():
        match = re.match(r"^  (\w+)\s+.*\[([^\]]+)\]$", line)
        if match:
            found[match.group(1)] = match.group(2)
    return found


def test_check_names_the_source_of_each_value() -> None:
    result = _check(
        {
            "OTEL_PYTHON_EXCLUDED_URLS": "health",
            "TRACEWIRE_EXCLUDED_URLS": "ready",
            CAPTURE + "SERVER_REQUEST": "x-req",
            CAPTURE + "SANITIZE_FIELDS": "session",
            "OTEL_SEMCONV_STABILITY_OPT_IN": "http/dup",
            "OTEL_PROPAGATORS": "b3,tracecontext",
        }
    )
    assert result.returncode == 0, result.stderr
    sources = _sources(result.stdout)
    assert sources["excluded_urls"] == "TRACEWIRE_EXCLUDED_URLS"
    # The generic variable is also the clients' one; TRACEWIRE_EXCLUDED_URLS is the server's.
    assert sources["client_excluded_urls"] == "OTEL_PYTHON_EXCLUDED_URLS"
    assert sources["capture_request_headers"] == CAPTURE + "SERVER_REQUEST"
    assert sources["redact_headers"] == CAPTURE + "SANITIZE_FIELDS"
    assert sources["semconv"] == "OTEL_SEMCONV_STABILITY_OPT_IN"
    assert sources["propagators"] == "OTEL_PROPAGATORS"
    assert sources["capture_response_headers"] == "default"
    assert "semconv                          http/dup" in result.stdout


@pytest.mark.parametrize(
    ("variable", "value"),
    [("OTEL_PYTHON_EXCLUDED_URLS", "fine,(broken"), ("OTEL_SEMCONV_STABILITY_OPT_IN", "http/dupe")],
)
def test_check_fails_on_a_malformed_variable_and_names_it(variable: str, value: str) -> None:
    result = _check({variable: value})
    assert result.returncode == 2
    assert variable in result.stdout + result.stderr
    assert "Traceback" not in result.stderr


def test_check_shows_the_framework_and_library_variables() -> None:
    result = _check(
        {
            "OTEL_PYTHON_FLASK_EXCLUDED_URLS": "flask-only",
            "OTEL_PYTHON_HTTPX_EXCLUDED_URLS": "httpx-only",
        }
    )
    assert result.returncode == 0, result.stderr
    # Not in the environment's rows (they hold the generic variable's value) but below them.
    assert _sources(result.stdout)["excluded_urls"] == "default"
    assert "excluded_urls (flask)  re:flask-only    [OTEL_PYTHON_FLASK_EXCLUDED_URLS]" in (
        result.stdout
    )
    assert "client_excluded_urls (httpx)  re:httpx-only    [OTEL_PYTHON_HTTPX_EXCLUDED_URLS]" in (
        result.stdout
    )
    assert "then OpenTelemetry's OTEL_* variables" in result.stdout


def test_check_fails_on_a_bad_library_variable() -> None:
    # Only the client would have read it, at its construction: check finds it first.
    result = _check({"OTEL_PYTHON_REQUESTS_EXCLUDED_URLS": "ok,[bad"})
    assert result.returncode == 2
    assert "OTEL_PYTHON_REQUESTS_EXCLUDED_URLS" in result.stderr


@pytest.mark.parametrize(
    ("app", "variable"),
    [
        ("flask_app()", "OTEL_PYTHON_FLASK_EXCLUDED_URLS"),
        ("starlette_added()", "OTEL_PYTHON_STARLETTE_EXCLUDED_URLS"),
        ("fastapi_added()", "OTEL_PYTHON_FASTAPI_EXCLUDED_URLS"),
    ],
)
def test_check_app_shows_its_framework_variable(app: str, variable: str) -> None:
    # What the running middleware would use (test_framework_variable_comes_before_...).
    result = _check(
        {variable: "fw-only", "OTEL_PYTHON_EXCLUDED_URLS": "generic"},
        "--app",
        f"tests.support.check_apps:{app}",
    )
    assert result.returncode == 0, result.stderr
    assert re.search(rf"excluded_urls\s+re:fw-only\s+\[{variable}\]", result.stdout), result.stdout

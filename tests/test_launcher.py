"""``opentelemetry-instrument`` turns tracewire on: real apps in child processes (Flask's
development server, uvicorn), the SDK set up by opentelemetry-distro, spans exported over
OTLP/HTTP to the demo's receiver, outgoing httpx and requests calls to an echo server.

The contrib httpx and requests instrumentors are installed in the test environment, so every
run here also shows the rule "tracewire's instrumentor wins".
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import textwrap
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.echo import EchoServer
from tests.support.servers import PYTHON, SubprocessServer, wait_for
from tracewire.demo.receiver import OTLPReceiver, ReceivedSpan

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(PYTHON).parent
LAUNCHER = shutil.which("opentelemetry-instrument", path=str(BIN))
if LAUNCHER is None:
    pytest.skip("opentelemetry-instrument is not installed", allow_module_level=True)

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
INCOMING = "b7ad6b7169203331"
TRACEPARENT = f"00-{TRACE_ID}-{INCOMING}-01"
CONTRIB_SCOPES = ("opentelemetry.instrumentation.httpx", "opentelemetry.instrumentation.requests")

FLASK = [PYTHON, "tests/support/launcher_app.py", "{port}"]


def uvicorn(factory: str) -> list[str]:
    return [str(BIN / "uvicorn"), "--factory", f"tests.support.launcher_app:{factory}",
            "--host", "127.0.0.1", "--port", "{port}"]  # fmt: skip


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    with EchoServer() as server:
        yield server


@pytest.fixture
def receiver() -> Iterator[OTLPReceiver]:
    with OTLPReceiver() as r:
        yield r


def launch(
    command: list[str], echo: EchoServer, receiver: OTLPReceiver, **env: str
) -> SubprocessServer:
    """The app under ``opentelemetry-instrument``, exporting to ``receiver`` (OTLP/HTTP)."""
    server = SubprocessServer([str(LAUNCHER), *command], cwd=str(ROOT))
    # Only what the child needs: an OTEL_* variable of the test run would change the launch.
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TRACEWIRE_"))}
    server.env = {
        **base,
        "LAUNCHER_ECHO": echo.url,
        "OTEL_SERVICE_NAME": "launched",
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": receiver.traces_url,
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        "OTEL_BSP_SCHEDULE_DELAY": "50",
        "PYTHONUNBUFFERED": "1",
        **env,
    }
    return server


def get(server: SubprocessServer) -> dict[str, dict[str, list[str]]]:
    r = httpx.get(f"{server.url}/items/7", headers={"traceparent": TRACEPARENT}, timeout=15)
    assert r.status_code == 200, server.log_tail()
    return r.json()  # type: ignore[no-any-return]


def spans_of_one_request(receiver: OTLPReceiver, count: int) -> list[ReceivedSpan]:
    return receiver.wait_for(lambda s: s if len(s) >= count else None, timeout=15)


def log_lines(server: SubprocessServer, marker: str) -> list[str]:
    return [line for line in server.log_tail(400).splitlines() if marker in line]


def check_one_request(
    seen: dict[str, dict[str, list[str]]], spans: list[ReceivedSpan], route: str
) -> None:
    """One SERVER span in the caller's trace, a tracewire CLIENT child per outgoing call, and
    each child's id in the headers the echo server received."""
    [server] = [s for s in spans if s.kind == "SERVER"]
    assert (server.name, server.scope, server.service) == (route, "tracewire", "launched")
    assert (server.trace_id, server.parent_id) == (TRACE_ID, INCOMING)
    clients = [s for s in spans if s.kind == "CLIENT"]
    assert len(clients) == 2 and {c.scope for c in clients} == {"tracewire"}
    assert all(c.parent_id == server.span_id for c in clients)
    sent = {seen[lib]["traceparent"][0].split("-")[2] for lib in ("httpx", "requests")}
    assert sent == {c.span_id for c in clients}
    assert all(seen[lib]["traceparent"][0].split("-")[1] == TRACE_ID for lib in seen)


@pytest.mark.parametrize(
    ("command", "route"),
    [
        pytest.param(FLASK, "GET /items/<int:item_id>", id="flask-dev-server"),
        pytest.param(uvicorn("starlette_app"), "GET /items/{item_id}", id="starlette-uvicorn"),
        pytest.param(uvicorn("fastapi_app"), "GET /items/{item_id}", id="fastapi-uvicorn"),
    ],
)
def test_one_server_span_per_request_with_client_children(  # type: ignore[no-untyped-def]
    command, route, echo, receiver
) -> None:
    with launch(command, echo, receiver) as server:
        for _ in range(2):
            receiver.clear()
            seen = get(server)
            spans = spans_of_one_request(receiver, 3)
            check_one_request(seen, spans, route)
        # Nothing else arrives (a second SERVER span, a contrib CLIENT span) once they are in.
        wait_for(lambda: receiver.requests >= 1, timeout=5)
        assert len(receiver.spans()) == 3
        # The contrib instrumentors of httpx and requests were undone, each said once.
        for lib in ("httpx", "requests"):
            [line] = log_lines(server, f"[launcher:contrib:{lib}]")
            assert f"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=tracewire_{lib}" in line
        if importlib.util.find_spec("opentelemetry.instrumentation.fastapi"):
            # The contrib FastAPI instrumentor, undone: the one SERVER span above is tracewire's.
            [line] = log_lines(server, "[launcher:contrib:fastapi]")
            assert "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=tracewire_starlette" in line
        assert not log_lines(server, "[breaker:")


def test_disabled_instrumentations_are_honoured_for_tracewire_names(echo, receiver) -> None:  # type: ignore[no-untyped-def]
    # tracewire's httpx instrumentor off: the contrib one instruments httpx, untouched; the
    # contrib requests one is off: tracewire's instruments requests, with nothing to undo.
    env = {"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "tracewire_httpx , requests"}
    with launch(FLASK, echo, receiver, **env) as server:
        seen = get(server)
        spans = spans_of_one_request(receiver, 3)
        [root] = [s for s in spans if s.kind == "SERVER"]
        by_scope = {s.scope: s for s in spans if s.kind == "CLIENT"}
        assert set(by_scope) == {"tracewire", CONTRIB_SCOPES[0]}
        assert all(s.parent_id == root.span_id for s in by_scope.values())
        assert seen["httpx"]["traceparent"][0].split("-")[2] == by_scope[CONTRIB_SCOPES[0]].span_id
        assert not log_lines(server, "[launcher:contrib:httpx]")
        assert not log_lines(server, "[launcher:contrib:requests]")


def test_all_of_tracewire_disabled_leaves_the_app_untraced_by_it(echo, receiver) -> None:  # type: ignore[no-untyped-def]
    names = "tracewire_httpx,tracewire_requests,tracewire_flask,tracewire_starlette"
    with launch(FLASK, echo, receiver, OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=names) as server:
        get(server)
        spans = spans_of_one_request(receiver, 2)
        assert {s.scope for s in spans} == set(CONTRIB_SCOPES)  # no SERVER span: no contrib Flask
        assert not log_lines(server, "[launcher:")


def test_without_an_sdk_the_first_request_says_so_once(echo, receiver) -> None:  # type: ignore[no-untyped-def]
    # A configurator name that matches none: the launcher sets up no SDK, as without the distro.
    with launch(FLASK, echo, receiver, OTEL_PYTHON_CONFIGURATOR="nothing") as server:
        for _ in range(3):
            seen = get(server)
            assert "traceparent" in seen["httpx"]  # the trace still goes on downstream
        lines = wait_for(lambda: log_lines(server, "[breaker:no-sdk]"), timeout=10)
        assert len(lines) == 1
        assert "opentelemetry-instrument ran without an SDK configurator" in lines[0]
        assert "opentelemetry-distro" in lines[0]
    assert receiver.spans() == []


def test_with_no_span_exporter_start_up_says_so_once(echo, receiver) -> None:  # type: ignore[no-untyped-def]
    with launch(FLASK, echo, receiver, OTEL_TRACES_EXPORTER="none") as server:
        for _ in range(2):
            get(server)
        [line] = log_lines(server, "[launcher:no-exporter]")
        assert "OTEL_TRACES_EXPORTER" in line
        assert not log_lines(server, "[breaker:no-sdk]")
    assert receiver.spans() == []


DJANGO_APP = '''
"""A Django project in one file, started the way manage.py starts one."""
import os
import sys
from wsgiref.simple_server import WSGIRequestHandler, make_server

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "djangoapp")  # after the launcher ran

DEBUG = False
SECRET_KEY = "launcher-test"
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "djangoapp"
MIDDLEWARE = ["django.middleware.common.CommonMiddleware"]
INSTALLED_APPS = []


def item(request, item_id):
    from django.http import JsonResponse
    sys.path.insert(0, os.environ["LAUNCHER_ROOT"])
    from tests.support.launcher_app import calls
    return JsonResponse(calls())


def urlpatterns_():
    from django.urls import path
    return [path("items/<int:item_id>", item)]


if __name__ == "__main__":
    from django.core.wsgi import get_wsgi_application
    application = get_wsgi_application()
    from django.conf import settings
    print("MIDDLEWARE", settings.MIDDLEWARE, flush=True)

    class Quiet(WSGIRequestHandler):
        def log_message(self, *args):
            pass

    make_server("127.0.0.1", int(sys.argv[1]), application, handler_class=Quiet).serve_forever()
else:
    urlpatterns = urlpatterns_()
'''


def test_django_gets_tracewire_middleware_first(tmp_path, echo, receiver) -> None:  # type: ignore[no-untyped-def]
    import tracewire.django

    if not hasattr(tracewire.django, "TracewireMiddleware"):
        pytest.skip("tracewire.django has no TracewireMiddleware in this tree")
    (tmp_path / "djangoapp.py").write_text(textwrap.dedent(DJANGO_APP))
    command = [PYTHON, str(tmp_path / "djangoapp.py"), "{port}"]
    env = {"PYTHONPATH": str(tmp_path), "LAUNCHER_ROOT": str(ROOT)}
    with launch(command, echo, receiver, **env) as server:
        [line] = wait_for(lambda: log_lines(server, "MIDDLEWARE"), timeout=10)
        assert line.startswith("MIDDLEWARE ['tracewire.django.TracewireMiddleware', 'django.")
        seen = get(server)
        spans = spans_of_one_request(receiver, 3)
        [root] = [s for s in spans if s.kind == "SERVER"]
        assert root.scope == "tracewire" and root.parent_id == INCOMING
        clients = [s for s in spans if s.kind == "CLIENT"]
        assert len(clients) == 2 and all(c.parent_id == root.span_id for c in clients)
        assert seen["requests"]["traceparent"][0].split("-")[1] == TRACE_ID

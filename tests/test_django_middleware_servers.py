"""The Django project of ``tests/django_project`` with tracewire as one line in ``MIDDLEWARE``,
served by gunicorn (WSGI) and uvicorn (ASGI) in child processes; the child exports its spans
as JSON lines to a file the test reads."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.asgi_apps import http_client, new_ids, traceparent
from tests.support.echo import EchoServer
from tests.support.servers import PYTHON, SubprocessServer, free_port, wait_for

ROOT = str(Path(__file__).resolve().parent.parent)
COMMANDS = {
    "gunicorn": [
        PYTHON, "-m", "gunicorn", "tests.django_project.wsgi:application",
        "--bind", "127.0.0.1:{port}", "--workers", "1", "--threads", "4",
        "--log-level", "warning",
    ],
    "uvicorn": [
        PYTHON, "-m", "uvicorn", "tests.django_project.asgi:application",
        "--host", "127.0.0.1", "--port", "{port}", "--lifespan", "off", "--log-level", "warning",
    ],
}  # fmt: skip
# The streaming view each protocol wants (Django consumes a sync iterator whole under ASGI).
STREAM = {"gunicorn": "/stream", "uvicorn": "/astream"}
ENDLESS = {"gunicorn": "/endless", "uvicorn": "/aendless"}


class Service:
    def __init__(self, kind: str, server: SubprocessServer, folder: Path) -> None:
        self.kind, self.server, self.url = kind, server, server.url
        self.spans_file, self.notes_file = folder / "spans.jsonl", folder / "notes.jsonl"
        self.client = http_client(base_url=server.url)

    @staticmethod
    def _lines(path: Path) -> list[dict[str, Any]]:
        if not path.exists():
            return []
        lines = path.read_text().splitlines(keepends=True)
        return [json.loads(line) for line in lines if line.endswith("\n")]

    def all_spans(self) -> list[dict[str, Any]]:
        return self._lines(self.spans_file)

    def span_of(self, trace_id: str) -> dict[str, Any]:
        """The one SERVER span of the trace (a CLIENT span inside it is exported first)."""
        servers = wait_for(
            lambda: [
                s for s in self.all_spans() if s["trace_id"] == trace_id and s["kind"] == "SERVER"
            ]
        )
        assert len(servers) == 1, servers
        return servers[0]  # type: ignore[no-any-return]

    def note(self, key: str) -> Any:
        values = [n["value"] for n in self._lines(self.notes_file) if n["key"] == key]
        return values[-1] if values else None


def child_env(folder: Path, **env: str) -> dict[str, str]:
    return {
        "TW_SPANS": str(folder / "spans.jsonl"),
        "TW_NOTES": str(folder / "notes.jsonl"),
        "PYTHONPATH": ROOT,
        "OTEL_PROPAGATORS": "",
        **env,
    }


def serve(
    request: pytest.FixtureRequest, factory: pytest.TempPathFactory, propagators: str
) -> Iterator[Service]:
    folder = factory.mktemp(f"django-{request.param}")
    env = child_env(folder, TW_PROPAGATORS=propagators)
    with SubprocessServer(COMMANDS[request.param], env=env, cwd=ROOT) as server:
        service = Service(request.param, server, folder)
        try:
            yield service
        finally:
            service.client.close()


@pytest.fixture(scope="module", params=["gunicorn", "uvicorn"])
def tc(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    """The project with the default propagators (tracecontext, baggage)."""
    yield from serve(request, tmp_path_factory, "tracecontext,baggage")


@pytest.fixture(scope="module", params=["gunicorn", "uvicorn"])
def b3(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    """The project whose ``settings.TRACEWIRE`` says b3 only."""
    yield from serve(request, tmp_path_factory, "b3")


@pytest.fixture(scope="module")
def echo() -> Iterator[EchoServer]:
    with EchoServer() as server:
        yield server


@pytest.mark.parametrize(
    ("path", "route"),
    [
        ("/", "/"),
        ("/items/42", "/items/<int:pk>"),
        ("/api/v1/users/bob/orders/7", "/api/v1/users/<slug:user>/orders/<int:order>"),
        ("/async/hello", "/async/<str:name>"),
    ],
)
def test_names_routes_and_the_traceparent_parent(tc: Service, path: str, route: str) -> None:
    trace_id, parent_id = new_ids()
    seen = tc.client.get(path, headers={"traceparent": traceparent(trace_id, parent_id)}).json()
    span = tc.span_of(trace_id)
    assert (span["name"], span["attributes"]["http.route"]) == (f"GET {route}", route)
    assert span["parent_id"] == parent_id
    assert seen["span_id"] == span["span_id"]  # current in the view (sync, or async)
    assert span["status"] == "UNSET"


def test_b3_parent_when_the_settings_say_b3(b3: Service) -> None:
    trace_id, parent_id = new_ids()
    ignored, _ = new_ids()
    headers = {"b3": f"{trace_id}-{parent_id}-1", "traceparent": traceparent(ignored, parent_id)}
    seen = b3.client.get("/items/5", headers=headers).json()
    assert seen["trace_id"] == trace_id
    span = b3.span_of(trace_id)
    assert span["parent_id"] == parent_id
    assert span["attributes"]["tracewire.propagation.format"] == "b3"


@pytest.mark.parametrize("path", ["/boom", "/async-boom"])
def test_the_exception_type_is_recorded(tc: Service, path: str) -> None:
    trace_id, parent_id = new_ids()
    response = tc.client.get(path, headers={"traceparent": traceparent(trace_id, parent_id)})
    assert response.status_code == 500
    span = tc.span_of(trace_id)
    expected = "RuntimeError" if path == "/boom" else "ValueError"
    assert span["status"] == "ERROR"
    assert span["attributes"]["error.type"] == expected  # under WSGI and ASGI alike
    assert span["attributes"]["http.response.status_code"] == 500
    assert "exception" in span["events"]
    assert span["name"] == f"GET {path}"


def test_the_streaming_span_ends_after_the_body(tc: Service) -> None:
    trace_id, parent_id = new_ids()
    response = tc.client.get(
        STREAM[tc.kind], headers={"traceparent": traceparent(trace_id, parent_id)}
    )
    assert response.text.count(trace_id) == 10  # every chunk made in the request's context
    span = tc.span_of(trace_id)
    last_chunk = wait_for(lambda: tc.note(f"last_chunk_ns:{trace_id}"))
    assert span["start"] < last_chunk <= span["end"]


def test_a_client_gone_mid_stream_ends_the_span(tc: Service) -> None:
    trace_id, parent_id = new_ids()
    started = time.time_ns()
    headers = {"traceparent": traceparent(trace_id, parent_id)}
    with tc.client.stream("GET", ENDLESS[tc.kind], headers=headers) as response:
        assert next(response.iter_bytes()).startswith(b"tick")
    span = tc.span_of(trace_id)  # the body alone would take 10 s
    assert span["end"] - started < 8e9


def test_outgoing_call_carries_the_services_propagators(b3: Service, echo: EchoServer) -> None:
    trace_id, parent_id = new_ids()
    headers = {"b3": f"{trace_id}-{parent_id}-1"}
    seen = b3.client.get("/outgoing", params={"to": echo.url}, headers=headers).json()
    echoed = seen["echoed"]
    assert "traceparent" not in echoed
    sent_trace, sent_span, sampled = echoed["b3"][0].split("-")
    assert (sent_trace, sampled) == (trace_id, "1")
    server = b3.span_of(trace_id)
    assert server["span_id"] == seen["span_id"]
    client = [s for s in b3.all_spans() if s["span_id"] == sent_span]
    assert client and client[0]["parent_id"] == server["span_id"]  # the CLIENT span, inside


@pytest.mark.parametrize("kind", ["gunicorn", "uvicorn"])
def test_an_unknown_key_stops_the_server_at_start_up(kind: str, tmp_path: Path) -> None:
    # gunicorn's worker fails to boot and the arbiter gives up; uvicorn fails its import.
    argv = [a.replace("{port}", str(free_port())) for a in COMMANDS[kind]]
    env = {**os.environ, **child_env(tmp_path, TW_BAD_KEY="1")}
    done = subprocess.run(
        argv, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode != 0
    assert "ImproperlyConfigured: unknown tracewire setting TRACEWIRE_PROPAGATOR" in done.stderr


def test_tracewire_check_finds_the_middleware_in_settings(tmp_path: Path) -> None:
    argv = [PYTHON, "-m", "tracewire", "check", "--app", "tests.django_project.wsgi:application"]
    env = {**os.environ, **child_env(tmp_path, TW_PROPAGATORS="b3")}
    done = subprocess.run(
        argv, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "settings.MIDDLEWARE: tracewire.django.TracewireMiddleware" in done.stdout
    assert "CompositePropagator(extract=['b3'], inject=['b3']" in done.stdout

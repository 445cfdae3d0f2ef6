"""Every example in examples/ runs against a real server and produces the trace it promises.

In-process where the example takes a ``tracer_provider`` (spans land in the ``tracing``
fixture); as a subprocess, exactly as its docstring says to run it, where the example needs a
process of its own (Django's one-per-process settings) or to cover its ``__main__`` block:
those export over OTLP to the demo's receiver.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import random
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from opentelemetry.trace import SpanKind
from starlette.config import Config

from tests.support.servers import (
    SubprocessServer,
    UvicornThread,
    WerkzeugThread,
    free_port,
    wait_for,
)
from tracewire.demo.receiver import OTLPReceiver, ReceivedSpan

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load(name: str) -> ModuleType:
    """Import ``examples/<name>.py`` under a private module name."""
    module_name = f"tracewire_example_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def incoming() -> tuple[str, str]:
    """A fresh (trace id, span id) pair as lowercase hex."""
    return f"{random.getrandbits(128) | 1:032x}", f"{random.getrandbits(64) | 1:016x}"


def traceparent(trace_id: str, span_id: str) -> dict[str, str]:
    return {"traceparent": f"00-{trace_id}-{span_id}-01"}


def of_kind(spans: Iterable[Any], kind: SpanKind) -> list[Any]:
    return [s for s in spans if s.kind == kind]


def assert_continues(span: Any, trace_id: str, span_id: str) -> None:
    assert f"{span.context.trace_id:032x}" == trace_id
    assert span.parent is not None and f"{span.parent.span_id:016x}" == span_id
    assert span.parent.is_remote


class Echo:
    """A plain (untraced) WSGI server that records the headers of every request it gets."""

    def __init__(self) -> None:
        self.seen: list[dict[str, str]] = []
        self._lock = threading.Lock()
        self.server = WerkzeugThread(self.app)

    def app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        headers = {
            k[5:].replace("_", "-").lower(): v for k, v in environ.items() if k.startswith("HTTP_")
        }
        with self._lock:
            self.seen.append(headers)
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps(headers).encode()]


@pytest.fixture
def echo() -> Iterator[Echo]:
    e = Echo()
    e.server.start()
    yield e
    e.server.stop()


# ------------------------------------------------------------------------ servers, in-process


@pytest.mark.parametrize(
    ("name", "span_name"),
    [
        ("starlette_app", "GET /items/{item_id}"),
        ("fastapi_app", "GET /items/{item_id}"),
    ],
)
def test_asgi_framework_examples(tracing, name, span_name):
    app = load(name).create_app(tracer_provider=tracing.provider)
    trace_id, span_id = incoming()
    with UvicornThread(app) as server:
        response = httpx.get(f"{server.url}/items/42", headers=traceparent(trace_id, span_id))
    assert response.status_code == 200
    assert response.json() == {"item_id": 42} or response.json() == {"item_id": "42"}
    (span,) = of_kind(tracing.spans(), SpanKind.SERVER)
    assert span.name == span_name
    assert span.attributes["http.route"] == "/items/{item_id}"
    assert_continues(span, trace_id, span_id)


def test_flask_example(tracing):
    app = load("flask_app").create_app(tracer_provider=tracing.provider)
    trace_id, span_id = incoming()
    with WerkzeugThread(app) as server:
        response = httpx.get(f"{server.url}/items/42", headers=traceparent(trace_id, span_id))
    assert response.json() == {"item_id": 42}
    (span,) = of_kind(tracing.spans(), SpanKind.SERVER)
    assert span.name == "GET /items/<int:item_id>"
    assert_continues(span, trace_id, span_id)


@pytest.mark.parametrize(
    ("name", "runner"), [("raw_asgi", UvicornThread), ("raw_wsgi", WerkzeugThread)]
)
def test_raw_app_examples(tracing, name, runner):
    app = load(name).create_app(tracer_provider=tracing.provider)
    trace_id, span_id = incoming()
    with runner(app) as server:
        response = httpx.get(f"{server.url}/hello", headers=traceparent(trace_id, span_id))
    assert response.text == "hello\n"
    (span,) = of_kind(tracing.spans(), SpanKind.SERVER)
    assert span.name == "GET"
    assert span.attributes["url.path"] == "/hello"
    assert span.attributes["http.response.status_code"] == 200
    assert_continues(span, trace_id, span_id)


# ------------------------------------------------------------------------- clients, in-process


def sent_traceparent(span: Any) -> str:
    """The traceparent a hop should receive from ``span`` (flags as the SDK set them)."""
    context = span.context
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def assert_client_call(tracing: Any, echo: Echo, root: Any, calls: int) -> None:
    clients = of_kind(tracing.spans(), SpanKind.CLIENT)
    assert len(clients) == calls == len(echo.seen)
    root_context = root.get_span_context()
    for client, seen in zip(clients, echo.seen, strict=True):
        assert client.parent.span_id == root_context.span_id
        assert client.context.trace_id == root_context.trace_id
        assert seen["traceparent"] == sent_traceparent(client)


def test_httpx_example_sync_and_async(tracing, echo):
    example = load("httpx_client")
    url = f"{echo.server.url}/items/42"
    with tracing.provider.get_tracer("t").start_as_current_span("root") as root:
        assert example.fetch(url, tracer_provider=tracing.provider).status_code == 200
        response = asyncio.run(example.afetch(url, tracer_provider=tracing.provider))
        assert response.status_code == 200
    assert_client_call(tracing, echo, root, calls=2)


def test_requests_example(tracing, echo):
    session = load("requests_client").make_session(tracer_provider=tracing.provider)
    with tracing.provider.get_tracer("t").start_as_current_span("root") as root:
        assert session.get(f"{echo.server.url}/items/42", timeout=10).status_code == 200
    assert_client_call(tracing, echo, root, calls=1)


# ------------------------------------------------------------------ propagators in settings


def test_propagators_in_code_read_b3_and_send_w3c_and_b3multi(tracing, echo):
    app = load("propagators_code").create_app(echo.server.url, tracer_provider=tracing.provider)
    trace_id, span_id = incoming()
    with UvicornThread(app) as server:
        response = httpx.get(f"{server.url}/", headers={"b3": f"{trace_id}-{span_id}-1"})
    assert response.json()["status"] == 200
    (server_span,) = of_kind(tracing.spans(), SpanKind.SERVER)
    (client_span,) = of_kind(tracing.spans(), SpanKind.CLIENT)
    assert_continues(server_span, trace_id, span_id)
    (seen,) = echo.seen
    client_id = f"{client_span.context.span_id:016x}"
    assert seen["traceparent"] == sent_traceparent(client_span)
    assert seen["traceparent"].startswith(f"00-{trace_id}-{client_id}-")
    assert (seen["x-b3-traceid"], seen["x-b3-spanid"]) == (trace_id, client_id)
    assert "b3" not in seen  # single-header B3 is read, not sent


@pytest.fixture
def fresh_default() -> Iterator[None]:
    from opentelemetry import propagate

    import tracewire.defaults

    before = propagate.get_global_textmap()
    yield
    tracewire.defaults.reset()
    propagate.set_global_textmap(before)


def test_propagators_configured_once_for_the_process(tracing, echo, fresh_default):
    app = load("propagators_configure").create_app(
        f"{echo.server.url}/x", tracer_provider=tracing.provider
    )
    trace_id, span_id = incoming()
    b3 = {"X-B3-TraceId": trace_id, "X-B3-SpanId": span_id, "X-B3-Sampled": "1"}
    with WerkzeugThread(app) as server:
        answer = httpx.get(f"{server.url}/", headers=b3).json()
    (server_span,) = of_kind(tracing.spans(), SpanKind.SERVER)
    (client_span,) = of_kind(tracing.spans(), SpanKind.CLIENT)
    assert_continues(server_span, trace_id, span_id)
    # The session (no settings of its own) and OpenTelemetry's propagate API send B3 multi.
    (seen,) = echo.seen
    assert seen["x-b3-traceid"] == trace_id
    assert seen["x-b3-spanid"] == f"{client_span.context.span_id:016x}"
    assert "traceparent" not in seen
    message = answer["message_headers"]
    assert message["x-b3-traceid"] == trace_id
    assert message["x-b3-spanid"] == f"{server_span.context.span_id:016x}"
    assert "traceparent" not in message


def test_propagators_from_the_environment(tracing, monkeypatch):
    monkeypatch.delenv("TRACEWIRE_PROPAGATORS", raising=False)
    monkeypatch.setenv("OTEL_PROPAGATORS", "b3multi")
    app = load("propagators_env").create_app(tracer_provider=tracing.provider)
    trace_id, span_id = incoming()
    other_trace, other_span = incoming()
    b3 = {"X-B3-TraceId": trace_id, "X-B3-SpanId": span_id, "X-B3-Sampled": "1"}
    with UvicornThread(app) as server:
        assert httpx.get(f"{server.url}/items/1", headers=b3).status_code == 200
        w3c = traceparent(other_trace, other_span)
        assert httpx.get(f"{server.url}/items/2", headers=w3c).status_code == 200
    first, second = sorted(of_kind(tracing.spans(), SpanKind.SERVER), key=lambda s: s.start_time)
    assert_continues(first, trace_id, span_id)
    # traceparent is not among the propagators: a new trace starts
    assert f"{second.context.trace_id:032x}" != other_trace
    assert second.parent is None


def test_propagators_in_flask_config(tracing):
    app = load("propagators_flask_config").create_app(tracer_provider=tracing.provider)
    trace_id, span_id = incoming()
    with WerkzeugThread(app) as server:
        b3 = {"b3": f"{trace_id}-{span_id}-1"}
        assert httpx.get(f"{server.url}/hello", headers=b3).text == "hello\n"
        assert httpx.get(f"{server.url}/health").text == "ok\n"
    (span,) = of_kind(tracing.spans(), SpanKind.SERVER)  # /health is excluded
    assert span.name == "GET /hello"
    assert_continues(span, trace_id, span_id)


def test_propagators_in_a_starlette_config(tracing):
    example = load("propagators_starlette_config")
    config = Config(environ={"TRACEWIRE_PROPAGATORS": "b3multi,tracecontext"})
    app = example.create_app(config, tracer_provider=tracing.provider)
    trace_id, span_id = incoming()
    b3 = {"X-B3-TraceId": trace_id, "X-B3-SpanId": span_id, "X-B3-Sampled": "1"}
    with UvicornThread(app) as server:
        assert httpx.get(f"{server.url}/hello", headers=b3).text == "hello\n"
    (span,) = of_kind(tracing.spans(), SpanKind.SERVER)
    assert_continues(span, trace_id, span_id)


def test_a_bad_starlette_config_fails_at_start_up():
    example = load("propagators_starlette_config")
    with pytest.raises(ValueError, match="TRACEWIRE_PROPAGATORS"):
        example.create_app(Config(environ={"TRACEWIRE_PROPAGATORS": "b3mutli"}))


# ------------------------------------------------------------- context in background work


def test_background_task_and_created_task_stay_in_the_trace(tracing):
    app = load("background_task").create_app(tracer_provider=tracing.provider)
    trace_id, span_id = incoming()
    with UvicornThread(app) as server:
        response = httpx.post(f"{server.url}/orders", headers=traceparent(trace_id, span_id))
        assert response.json() == {"accepted": True}
        wait_for(lambda: len(tracing.spans()) >= 4, timeout=10)
    (request_span,) = of_kind(tracing.spans(), SpanKind.SERVER)
    assert_continues(request_span, trace_id, span_id)
    children = {s.name: s for s in of_kind(tracing.spans(), SpanKind.INTERNAL)}
    task = "create_app.<locals>.send_receipt"  # the background task's own span
    assert set(children) == {"send receipt", "reserve stock", task}
    for name in ("reserve stock", task):
        assert children[name].parent.span_id == request_span.context.span_id
    assert children["send receipt"].parent.span_id == children[task].context.span_id
    assert children[task].end_time > request_span.end_time
    for child in children.values():
        assert child.context.trace_id == request_span.context.trace_id


def test_thread_pool_calls_are_children_of_the_request(tracing):
    app = load("thread_pool").create_app(tracer_provider=tracing.provider)
    with WerkzeugThread(app) as server:
        response = httpx.get(f"{server.url}/fan-out", timeout=30)
        assert response.json() == {"statuses": [200, 200, 200]}
        wait_for(lambda: len(tracing.spans()) >= 10, timeout=10)
    spans = tracing.spans()
    (fan_out,) = [s for s in spans if s.name == "GET /fan-out"]
    clients = of_kind(spans, SpanKind.CLIENT)
    parts = [s for s in spans if s.name == "GET /part/<int:n>"]
    calls = [s for s in spans if s.name == "create_app.<locals>.fetch"]  # one span per call
    assert len(clients) == len(parts) == len(calls) == 3
    assert {s.context.trace_id for s in spans} == {fan_out.context.trace_id}
    assert all(c.parent.span_id == fan_out.context.span_id for c in calls)
    assert {c.parent.span_id for c in clients} == {c.context.span_id for c in calls}
    assert {p.parent.span_id for p in parts} == {c.context.span_id for c in clients}


# --------------------------------------------------------- as a user runs them (subprocesses)


def example_env(receiver: OTLPReceiver, port: int, **extra: str) -> dict[str, str]:
    return {
        "PORT": str(port),
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "50",
        "OTEL_PROPAGATORS": "tracecontext,baggage",
        **extra,
    }


def run_example(name: str, *args: str, **env: str) -> Callable[[OTLPReceiver], SubprocessServer]:
    def start(receiver: OTLPReceiver) -> SubprocessServer:
        port = free_port()
        argv = [sys.executable, str(EXAMPLES / f"{name}.py"), *args]
        return SubprocessServer(argv, port=port, env=example_env(receiver, port, **env))

    return start


def server_spans(receiver: OTLPReceiver, trace_id: str) -> list[ReceivedSpan]:
    spans = receiver.wait_for_spans(1, trace_id=trace_id, timeout=20)
    return [s for s in spans if s.kind == "SERVER"]


@pytest.mark.parametrize(
    ("name", "args", "path", "service", "span_name"),
    [
        ("django_app", ("asgi",), "/items/42", "django-asgi-example", "GET /items/<int:item_id>"),
        ("django_app", ("wsgi",), "/items/42", "django-wsgi-example", "GET /items/<int:item_id>"),
        ("starlette_app", (), "/items/42", "starlette-example", "GET /items/{item_id}"),
        pytest.param(
            "fastapi_app", (), "/items/42", "fastapi-example", "GET /items/{item_id}",
            marks=pytest.mark.slow,
        ),
        pytest.param(
            "flask_app", (), "/items/42", "flask-example", "GET /items/<int:item_id>",
            marks=pytest.mark.slow,
        ),
        pytest.param(
            "raw_asgi", (), "/hello", "raw-asgi-example", "GET", marks=pytest.mark.slow
        ),
        pytest.param(
            "raw_wsgi", (), "/hello", "raw-wsgi-example", "GET", marks=pytest.mark.slow
        ),
    ],
)  # fmt: skip
def test_server_example_as_a_process(name, args, path, service, span_name):
    trace_id, span_id = incoming()
    with OTLPReceiver() as receiver, run_example(name, *args)(receiver) as server:
        response = httpx.get(server.url + path, headers=traceparent(trace_id, span_id), timeout=30)
        assert response.status_code == 200, response.text
        (span,) = server_spans(receiver, trace_id)
    assert (span.service, span.name, span.parent_id) == (service, span_name, span_id)
    assert span.attributes["url.path"] == path


@pytest.mark.slow
@pytest.mark.parametrize("client", ["httpx_client", "requests_client"])
def test_client_example_and_server_example_make_one_trace_across_processes(client):
    with OTLPReceiver() as receiver, run_example("flask_app")(receiver) as server:
        port = server.port
        result = subprocess.run(
            [sys.executable, str(EXAMPLES / f"{client}.py"), f"{server.url}/items/42"],
            env={**os.environ, **example_env(receiver, port)},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        calls = 2 if client == "httpx_client" else 1
        spans = receiver.wait_for(
            lambda got: got if len([s for s in got if s.kind == "SERVER"]) >= calls else None, 20
        )
    (root,) = [s for s in spans if s.parent_id is None]
    assert {s.trace_id for s in spans} == {root.trace_id}
    clients = [s for s in spans if s.kind == "CLIENT"]
    servers = [s for s in spans if s.kind == "SERVER"]
    assert len(clients) == len(servers) == calls
    assert {s.parent_id for s in servers} == {c.span_id for c in clients}
    assert {c.parent_id for c in clients} == {root.span_id}
    assert {s.service for s in servers} == {"flask-example"}

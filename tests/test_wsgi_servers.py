"""The WSGI middleware under real servers: the same service as a raw WSGI app, Flask, Django and
Falcon, each under werkzeug's threaded server (in-process, in-memory spans) and under gunicorn
(gthread worker in a subprocess, spans over OTLP/HTTP to a receiver in the test).

Every scenario runs against every stack. See tests/wsgi_apps.py for what the apps answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests import wsgi_apps
from tests.support.servers import PYTHON, SubprocessServer, serving, wait_for
from tracewire.demo.receiver import OTLPReceiver, ReceivedSpan

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GUNICORN = os.path.join(os.path.dirname(PYTHON), "gunicorn")
CONCURRENCY = 200

# Every app under werkzeug and Flask under gunicorn run by default; the other apps under
# gunicorn add a subprocess each and run with the slow suite.
STACKS = [
    *(f"{kind}-werkzeug" for kind in wsgi_apps.KINDS),
    "flask-gunicorn",
    *(
        pytest.param(f"{kind}-gunicorn", marks=pytest.mark.slow)
        for kind in wsgi_apps.KINDS
        if kind != "flask"
    ),
]


def new_ids() -> tuple[str, str]:
    return secrets.token_hex(16), secrets.token_hex(8)


def traceparent(trace_id: str, parent_id: str, flags: str = "01") -> str:
    return f"00-{trace_id}-{parent_id}-{flags}"


def from_sdk(span: Any) -> ReceivedSpan:
    """An SDK span in the receiver's shape, so both kinds of stack are checked alike."""
    parent = span.parent
    return ReceivedSpan(
        trace_id=f"{span.context.trace_id:032x}",
        span_id=f"{span.context.span_id:016x}",
        parent_id=f"{parent.span_id:016x}" if parent is not None else None,
        name=span.name,
        kind=span.kind.name,
        start_ns=span.start_time,
        end_ns=span.end_time,
        service=None,
        attributes=dict(span.attributes),
        status=span.status.status_code.name,
        scope=span.instrumentation_scope.name,
    )


@dataclass
class Stack:
    kind: str
    server: str
    url: str
    all_spans: Callable[[], list[ReceivedSpan]]

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, **kwargs)

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        with self.client() as client:
            return client.get(path, **kwargs)

    def spans(self, trace_id: str) -> list[ReceivedSpan]:
        return [s for s in self.all_spans() if s.trace_id == trace_id]

    def span(self, trace_id: str, timeout: float = 15.0) -> ReceivedSpan:
        """The span of ``trace_id``, once it arrived; fails if there are more."""
        found = wait_for(lambda: self.spans(trace_id), timeout=timeout)
        assert len(found) == 1, [s.name for s in found]
        return found[0]

    def probe(self) -> dict[str, int]:
        return self.get("/_probe").json()  # type: ignore[no-any-return]

    def settle(self) -> None:
        """Wait until every request so far was closed and its span exported: all requests
        are closed, then a last request's span arrives (exports keep their order)."""
        wait_for(lambda: (p := self.probe())["closed"] == p["requests"], timeout=15)
        trace_id, parent_id = new_ids()
        self.get("/hello", headers={"traceparent": traceparent(trace_id, parent_id)})
        wait_for(lambda: self.spans(trace_id), timeout=15)


# ------------------------------------------------------------------------------- fixtures
class Gunicorns:
    """One gunicorn per app kind, started on first use, all sending to one OTLP receiver."""

    def __init__(self, receiver: OTLPReceiver) -> None:
        self.receiver = receiver
        self.servers: dict[tuple[str, str], SubprocessServer] = {}

    def get(self, kind: str, worker: str = "gthread") -> SubprocessServer:
        key = (kind, worker)
        if key not in self.servers:
            argv = [GUNICORN, "-c", "python:tests.wsgi_gunicorn_conf", "--preload"]
            argv += ["-w", "1", "-b", "{host}:{port}", "--timeout", "60", "--graceful-timeout", "1"]
            if worker == "gthread":
                argv += ["-k", "gthread", "--threads", str(CONCURRENCY + 8)]
            else:
                argv += ["-k", "sync"]
            argv.append("tests.wsgi_apps:gunicorn_app_factory()")
            env = {
                **wsgi_apps.SETTINGS_TEXT,
                "WSGI_TEST_APP": kind,
                "WSGI_TEST_OTLP": self.receiver.endpoint,
                "OTEL_BSP_SCHEDULE_DELAY": "50",
                "PYTHONPATH": ROOT,
            }
            server = SubprocessServer(argv, env=env, cwd=ROOT, timeout=60)
            server.__enter__()
            self.servers[key] = server
            # Ready when the worker answers, not only when the master listens.
            wait_for(lambda: _answers(server.url), timeout=60, interval=0.1)
        return self.servers[key]

    def close(self) -> None:
        for server in self.servers.values():
            server.__exit__()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url + "/_probe", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def receiver() -> Iterator[OTLPReceiver]:
    with OTLPReceiver() as r:
        yield r


@pytest.fixture(scope="module")
def gunicorns(receiver: OTLPReceiver) -> Iterator[Gunicorns]:
    pool = Gunicorns(receiver)
    try:
        yield pool
    finally:
        pool.close()


class Werkzeugs:
    """One werkzeug server per app kind, each with its own SDK provider and in-memory spans,
    started on first use and kept for the module (a server per test costs more than the
    test)."""

    def __init__(self) -> None:
        self.stacks: dict[str, Stack] = {}
        self._exit = contextlib.ExitStack()

    def get(self, kind: str) -> Stack:
        if kind not in self.stacks:
            exporter = InMemorySpanExporter()
            provider = TracerProvider()
            provider.add_span_processor(SimpleSpanProcessor(exporter))
            self._exit.callback(provider.shutdown)
            self._exit.enter_context(wsgi_apps.django_settings(kind))
            app = wsgi_apps.Probe(wsgi_apps.build(kind, wsgi_apps.SETTINGS_TEXT, provider))
            server = self._exit.enter_context(serving(wsgi_apps.QuickWerkzeug(app)))

            def spans() -> list[ReceivedSpan]:
                return [from_sdk(s) for s in exporter.get_finished_spans()]

            self.stacks[kind] = Stack(kind, "werkzeug", server.url, spans)
        return self.stacks[kind]

    def close(self) -> None:
        self._exit.close()


@pytest.fixture(scope="module")
def werkzeugs() -> Iterator[Werkzeugs]:
    pool = Werkzeugs()
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture(params=STACKS)
def stack(request: pytest.FixtureRequest) -> Stack:
    kind, server = request.param.split("-")
    if kind == "falcon":
        pytest.importorskip("falcon")
    if server == "werkzeug":
        werkzeugs: Werkzeugs = request.getfixturevalue("werkzeugs")
        return werkzeugs.get(kind)
    gunicorns: Gunicorns = request.getfixturevalue("gunicorns")
    srv = gunicorns.get(kind)
    return Stack(kind, server, srv.url, gunicorns.receiver.spans)


# ------------------------------------------------------------------------------ scenarios
def test_traceparent_continues_the_trace(stack: Stack) -> None:
    trace_id, parent_id = new_ids()
    response = stack.get(
        "/hello",
        headers={
            "traceparent": traceparent(trace_id, parent_id),
            "tracestate": "vendor=opaque",
            "user-agent": "wsgi-tests/1",
        },
    )
    assert response.status_code == 200
    seen = response.json()
    span = stack.span(trace_id)
    stack.settle()
    assert len(stack.spans(trace_id)) == 1  # one span per request, however late
    assert (span.trace_id, span.parent_id, span.kind) == (trace_id, parent_id, "SERVER")
    assert seen["trace_id"] == trace_id and seen["span_id"] == span.span_id  # current in the app
    assert span.name == "GET /hello"
    assert span.status == "UNSET"
    a = span.attributes
    assert a["http.request.method"] == "GET"
    assert a["url.path"] == "/hello"
    assert a["url.scheme"] == "http"
    assert a["http.route"] == "/hello"
    assert a["http.response.status_code"] == 200
    assert a["network.protocol.version"] == "1.1"
    assert a["server.address"] == "127.0.0.1"
    assert a["server.port"] == int(stack.url.rsplit(":", 1)[1])
    assert a["client.address"] == "127.0.0.1"
    assert a["user_agent.original"] == "wsgi-tests/1"
    assert a["tracewire.propagation.format"] == "tracecontext"
    assert "error.type" not in a


def test_response_propagation_hooks_and_captured_headers(stack: Stack) -> None:
    trace_id, parent_id = new_ids()
    response = stack.get(
        "/hello?q=1",
        headers={
            "traceparent": traceparent(trace_id, parent_id),
            "x-hook": "from-client",
            "x-request-id": "req-42",
            "authorization": "Bearer secret-token",
        },
    )
    span = stack.span(trace_id)
    assert response.headers["traceresponse"] == f"00-{trace_id}-{span.span_id}-01"
    a = span.attributes
    assert a["url.query"] == "q=1"
    assert a["test.request_hook"] == "from-client"
    assert a["test.response_hook"] == 200
    assert tuple(a["http.request.header.x-request-id"]) == ("req-42",)
    assert tuple(a["http.request.header.authorization"]) == ("REDACTED",)
    assert tuple(a["http.response.header.x-visible"]) == ("yes",)
    assert tuple(a["http.response.header.set-cookie"]) == ("REDACTED",)
    assert "secret-token" not in json.dumps(dict(a), default=str)


def test_no_header_starts_a_new_trace(stack: Stack) -> None:
    seen = stack.get("/hello").json()
    assert seen["valid"] and not seen["remote"]
    span = stack.span(seen["trace_id"])
    assert span.parent_id is None
    assert "tracewire.propagation.format" not in span.attributes


BAD_TRACEPARENTS = [
    "00-{t}-{p}-01-extra",  # version 00 must be exactly 55 characters
    "00-{T}-{p}-01",  # uppercase hex
    "ff-{t}-{p}-01",  # version ff
    "00-00000000000000000000000000000000-{p}-01",  # all-zero trace id
    "00-{t}-0000000000000000-01",  # all-zero parent id
    "00-{t}-{p}",  # no flags
    "00-{t}-{p}-01,00-{t}-{p}-01",  # two values in one request
]


def test_invalid_traceparent_starts_a_new_trace(stack: Stack) -> None:
    # Each parsing rule has its own unit tests; here the bad value reaches a real server.
    sent: list[tuple[str, str]] = []
    with stack.client() as client:
        for bad in BAD_TRACEPARENTS:
            trace_id, parent_id = new_ids()
            header = bad.format(t=trace_id, T=trace_id.upper(), p=parent_id)
            seen = client.get("/hello", headers={"traceparent": header, "tracestate": "k=v"}).json()
            assert seen["valid"] and seen["trace_id"] != trace_id, header
            sent.append((header, seen["trace_id"]))
    for header, new_trace in sent:
        assert stack.span(new_trace).parent_id is None, header


@pytest.mark.parametrize("form", ["b3", "b3multi"])
def test_b3_continues_the_trace(stack: Stack, form: str) -> None:
    trace_id, parent_id = new_ids()
    if form == "b3":
        headers = {"b3": f"{trace_id}-{parent_id}-1"}
    else:
        headers = {"X-B3-TraceId": trace_id, "X-B3-SpanId": parent_id, "X-B3-Sampled": "1"}
    seen = stack.get("/hello", headers=headers).json()
    assert seen["trace_id"] == trace_id
    span = stack.span(trace_id)
    assert span.parent_id == parent_id
    assert span.span_id != parent_id  # never reuse the B3 span id
    # Both B3 propagators read both forms (single header first); the first listed one wins.
    assert span.attributes["tracewire.propagation.format"] == "b3"


def test_unsampled_parent_is_followed_and_not_recorded(stack: Stack) -> None:
    trace_id, parent_id = new_ids()
    response = stack.get("/hello", headers={"traceparent": traceparent(trace_id, parent_id, "00")})
    seen = response.json()
    assert seen["trace_id"] == trace_id and not seen["sampled"]
    assert response.headers["traceresponse"] == f"00-{trace_id}-{seen['span_id']}-00"
    stack.settle()
    assert stack.spans(trace_id) == []


def test_baggage_reaches_app_code(stack: Stack) -> None:
    trace_id, parent_id = new_ids()
    seen = stack.get(
        "/hello",
        headers={
            "traceparent": traceparent(trace_id, parent_id),
            "baggage": "user.id=alice, tenant=acme%20corp;prop=1",
        },
    ).json()
    assert seen["baggage"] == {"user.id": "alice", "tenant": "acme corp"}


def test_route_template_names_the_span(stack: Stack) -> None:
    trace_id, parent_id = new_ids()
    seen = stack.get("/items/42", headers={"traceparent": traceparent(trace_id, parent_id)}).json()
    assert seen["item_id"] == 42
    span = stack.span(trace_id)
    route = wsgi_apps.ITEM_ROUTES[stack.kind]
    assert span.name == f"GET {route}"
    assert span.attributes["http.route"] == route
    assert span.attributes["url.path"] == "/items/42"


def test_not_found_is_not_an_error(stack: Stack) -> None:
    trace_id, parent_id = new_ids()
    response = stack.get("/no/such/page", headers={"traceparent": traceparent(trace_id, parent_id)})
    assert response.status_code == 404
    span = stack.span(trace_id)
    assert span.name == "GET"  # no route matched: never the raw path
    assert span.status == "UNSET"
    assert span.attributes["http.response.status_code"] == 404
    assert "error.type" not in span.attributes


def test_streamed_body_is_inside_the_span(stack: Stack) -> None:
    trace_id, parent_id = new_ids()
    with (
        stack.client() as client,
        client.stream(
            "GET", "/stream?n=6", headers={"traceparent": traceparent(trace_id, parent_id)}
        ) as response,
    ):
        assert response.headers["content-type"].startswith("text/event-stream")
        chunks = [
            json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: ")
        ]
    assert [c["i"] for c in chunks] == list(range(6))
    span = stack.span(trace_id)
    # Each chunk was produced with the request's span current, between its start and end.
    assert {c["span_id"] for c in chunks} == {span.span_id}
    assert span.start_ns <= chunks[0]["t"]
    assert chunks[-1]["t"] <= span.end_ns


def test_failure_while_streaming_is_recorded(stack: Stack) -> None:
    trace_id, parent_id = new_ids()
    received = b""
    with stack.client() as client:
        try:
            with client.stream(
                "GET", "/stream-fail", headers={"traceparent": traceparent(trace_id, parent_id)}
            ) as response:
                for chunk in response.iter_bytes():
                    received += chunk
        except httpx.HTTPError:
            pass  # the server cut the response short: the status line was already sent
    assert received.startswith(b"data: first")
    span = stack.span(trace_id)
    assert span.status == "ERROR"
    assert span.attributes["error.type"] == "tests.wsgi_apps.Boom"
    assert span.attributes["http.response.status_code"] == 200


# What each framework (or the server, for the raw app) answers for an unhandled exception.
OWN_500 = {
    "raw": "Internal Server Error",
    "flask": "Internal Server Error",
    "django": "Server Error (500)",
    "falcon": "500 Internal Server Error",
}


def test_exception_gives_the_apps_own_500_and_an_error_span(stack: Stack) -> None:
    trace_id, parent_id = new_ids()
    response = stack.get("/boom", headers={"traceparent": traceparent(trace_id, parent_id)})
    assert response.status_code == 500
    assert OWN_500[stack.kind] in response.text
    span = stack.span(trace_id)
    assert span.status == "ERROR"
    assert span.attributes["http.response.status_code"] == 500
    assert span.attributes["error.type"] == "tests.wsgi_apps.Boom"
    assert span.name == "GET /boom"


def test_excluded_path_has_the_context_but_no_span(stack: Stack) -> None:
    trace_id, parent_id = new_ids()
    response = stack.get(
        "/health",
        headers={"traceparent": traceparent(trace_id, parent_id), "baggage": "probe=yes"},
    )
    seen = response.json()
    # The app sees the caller's context as it came: its span is the remote parent.
    assert (seen["trace_id"], seen["span_id"], seen["remote"]) == (trace_id, parent_id, True)
    assert seen["baggage"] == {"probe": "yes"}
    assert "traceresponse" not in response.headers
    stack.settle()
    assert stack.spans(trace_id) == []


def test_file_wrapper_response(stack: Stack) -> None:
    trace_id, parent_id = new_ids()
    before = stack.probe()["sendfile_calls"]
    response = stack.get("/file", headers={"traceparent": traceparent(trace_id, parent_id)})
    assert response.status_code == 200
    with open(wsgi_apps.FILE_PATH, "rb") as f:
        assert response.content == f.read()
    span = stack.span(trace_id)
    assert span.attributes["http.response.status_code"] == 200
    assert span.name == "GET /file"
    if stack.server == "gunicorn":
        # The object gunicorn got is still its FileWrapper, so it used sendfile(2).
        assert response.headers["x-file-wrapper"] == "yes"
        assert stack.probe()["sendfile_calls"] == before + 1


def test_concurrent_requests_each_in_their_own_trace(stack: Stack) -> None:
    group = secrets.token_hex(4)
    ids = [new_ids() for _ in range(CONCURRENCY)]

    async def run() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=CONCURRENCY + 10)
        async with httpx.AsyncClient(base_url=stack.url, timeout=60, limits=limits) as client:
            return await asyncio.gather(
                *(
                    client.get(
                        f"/barrier?n={CONCURRENCY}&group={group}",
                        headers={"traceparent": traceparent(t, p), "baggage": f"n={i}"},
                    )
                    for i, (t, p) in enumerate(ids)
                )
            )

    responses = asyncio.run(asyncio.wait_for(run(), timeout=90))
    # The barrier only opens with all of them in flight at once.
    assert [r.status_code for r in responses] == [200] * CONCURRENCY
    for i, ((trace_id, _), response) in enumerate(zip(ids, responses, strict=True)):
        seen = response.json()
        assert seen["trace_id"] == trace_id
        assert seen["baggage"] == {"n": str(i)}
    wanted = {t for t, _ in ids}
    wait_for(lambda: wanted <= {s.trace_id for s in stack.all_spans()}, timeout=30, interval=0.05)
    stack.settle()
    by_trace: dict[str, list[ReceivedSpan]] = {}
    for s in stack.all_spans():
        if s.trace_id in wanted:
            by_trace.setdefault(s.trace_id, []).append(s)
    for trace_id, parent_id in ids:
        (span,) = by_trace[trace_id]
        assert span.parent_id == parent_id
    assert stack.probe()["leaks"] == 0


def test_keep_alive_request_after_a_traced_one_starts_clean(stack: Stack) -> None:
    if stack.server == "werkzeug":
        pytest.skip("werkzeug's development server closes every connection (no keep-alive)")
    trace_id, parent_id = new_ids()
    body = os.urandom(1024 * 1024)
    with stack.client() as client:
        first = client.get(
            "/hello",
            headers={"traceparent": traceparent(trace_id, parent_id), "baggage": "a=1"},
        ).json()
        with client.stream(
            "GET", "/stream?n=2", headers={"traceparent": traceparent(trace_id, parent_id)}
        ) as response:
            response.read()
        second = client.post("/echo", content=body).json()
    assert first["remote_port"] == second["remote_port"]  # one keep-alive connection
    assert second["length"] == len(body)
    assert second["trace_id"] != trace_id and second["baggage"] == {}
    span = stack.span(second["trace_id"])
    assert span.parent_id is None and span.name == "POST /echo"
    assert stack.probe()["leaks"] == 0


def test_no_context_is_left_behind_on_any_path(stack: Stack) -> None:
    # Worker threads serve one request after another (gunicorn's pool reuses idle threads):
    # the probe outside tracewire sees any context a request leaves behind.
    trace_id, parent_id = new_ids()
    headers = {"traceparent": traceparent(trace_id, parent_id), "baggage": "a=1"}
    with stack.client() as client:
        for path in ("/hello", "/boom", "/health", "/file", "/no/such/page", "/items/1"):
            client.get(path, headers=headers)
        with contextlib.suppress(httpx.HTTPError):
            client.get("/stream-fail", headers=headers)
        with client.stream("GET", "/stream?n=50", headers=headers) as response:
            next(response.iter_bytes())  # leave after the first chunk: the server stops
    wait_for(lambda: (p := stack.probe())["closed"] == p["requests"], timeout=15)
    probe = stack.probe()
    assert probe["requests"] >= 8 and probe["leaks"] == 0


def test_sync_worker_traces_and_sends_files(gunicorns: Gunicorns) -> None:
    server = gunicorns.get("flask", worker="sync")
    stack = Stack("flask", "gunicorn", server.url, gunicorns.receiver.spans)
    trace_id, parent_id = new_ids()
    seen = stack.get("/hello", headers={"traceparent": traceparent(trace_id, parent_id)}).json()
    assert seen["trace_id"] == trace_id
    assert stack.span(trace_id).parent_id == parent_id
    before = stack.probe()["sendfile_calls"]
    response = stack.get("/file")
    assert response.headers["x-file-wrapper"] == "yes"
    assert stack.probe()["sendfile_calls"] == before + 1
    assert stack.probe()["leaks"] == 0

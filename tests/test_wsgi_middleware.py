"""TracewireWSGIMiddleware in detail, under werkzeug's threaded server (and wsgiref where a
server behaviour matters): nesting, conflicts, faults that must stay inside tracewire, the
body wrapper, exclusions, settings from the environment."""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import httpx
import pytest
from opentelemetry import baggage, trace
from opentelemetry.sdk.trace import SpanProcessor
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from tests import wsgi_apps
from tests.support.servers import port_open, wait_for
from tracewire import Settings, TracewireWSGIMiddleware

Environ = dict[str, Any]
StartResponse = Callable[..., Any]


def new_ids() -> tuple[str, str]:
    return secrets.token_hex(16), secrets.token_hex(8)


def traceparent(trace_id: str, parent_id: str, flags: str = "01") -> str:
    return f"00-{trace_id}-{parent_id}-{flags}"


def hex_ids(span: Any) -> tuple[str, str, str | None]:
    parent = span.parent
    return (
        f"{span.context.trace_id:032x}",
        f"{span.context.span_id:016x}",
        f"{parent.span_id:016x}" if parent is not None else None,
    )


def spans_of(tracing: Any, trace_id: str) -> list[Any]:
    return [s for s in tracing.spans() if f"{s.context.trace_id:032x}" == trace_id]


def wait_span(tracing: Any, trace_id: str) -> Any:
    (span,) = wait_for(lambda: spans_of(tracing, trace_id), timeout=10)
    return span


served = wsgi_apps.served


def json_app(environ: Environ, start_response: StartResponse) -> list[bytes]:
    """Answers what the app code sees: the current span and baggage."""
    sc = trace.get_current_span().get_span_context()
    body = json.dumps(
        {
            "trace_id": f"{sc.trace_id:032x}",
            "span_id": f"{sc.span_id:016x}",
            "sampled": sc.trace_flags.sampled,
            "baggage": dict(baggage.get_all()),
        }
    ).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]


def stream_app(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
    """A generator body; each chunk names the trace and span current while it is produced."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    n = int(environ.get("QUERY_STRING", "").partition("=")[2] or 3)
    for i in range(n):
        sc = trace.get_current_span().get_span_context()
        yield f"{i} {sc.trace_id:032x} {sc.span_id:016x}\n".encode()
        if n > 10:
            time.sleep(0.005)  # a long stream, at its own pace


# ------------------------------------------------------------------------------- structure
@pytest.mark.parametrize("kind", wsgi_apps.KINDS)
def test_nested_middlewares_make_one_span(tracing: Any, kind: str) -> None:
    if kind == "falcon":
        pytest.importorskip("falcon")
    settings = Settings.from_env(wsgi_apps.SETTINGS_TEXT)
    with wsgi_apps.django_settings(kind):
        inner = wsgi_apps.build(kind, wsgi_apps.SETTINGS_TEXT, tracing.provider)
        outer = TracewireWSGIMiddleware(inner, settings, tracer_provider=tracing.provider)
        with served(wsgi_apps.Probe(outer)) as client:
            trace_id, parent_id = new_ids()
            seen = client.get(
                "/items/5", headers={"traceparent": traceparent(trace_id, parent_id)}
            ).json()
            wait_for(lambda: (p := client.get("/_probe").json())["closed"] == p["requests"])
    (span,) = spans_of(tracing, trace_id)
    assert hex_ids(span) == (trace_id, seen["span_id"], parent_id)
    if kind != "raw":  # the route stored by the framework integration names the outer span
        assert span.name == f"GET {wsgi_apps.ITEM_ROUTES[kind]}"


@pytest.mark.parametrize("policy", ["first", "last"])
def test_conflicting_contexts_become_links(tracing: Any, policy: str) -> None:
    settings = Settings(propagators=["tracecontext", "b3"], extract_policy=policy)
    app = TracewireWSGIMiddleware(json_app, settings, tracer_provider=tracing.provider)
    (w3c_trace, w3c_parent), (b3_trace, b3_parent) = new_ids(), new_ids()
    with served(app) as client:
        seen = client.get(
            "/",
            headers={
                "traceparent": traceparent(w3c_trace, w3c_parent),
                "b3": f"{b3_trace}-{b3_parent}-1",
            },
        ).json()
    winner, loser = ((w3c_trace, w3c_parent), (b3_trace, b3_parent))[
        :: 1 if policy == "first" else -1
    ]
    assert seen["trace_id"] == winner[0]
    span = wait_span(tracing, winner[0])
    assert hex_ids(span)[2] == winner[1]
    assert [
        (f"{link.context.trace_id:032x}", f"{link.context.span_id:016x}") for link in span.links
    ] == [loser]
    fmt = "tracecontext" if policy == "first" else "b3"
    assert span.attributes["tracewire.propagation.format"] == fmt


def test_unknown_method(tracing: Any) -> None:
    app = TracewireWSGIMiddleware(json_app, Settings(), tracer_provider=tracing.provider)
    with served(app) as client:
        seen = client.request("PURGE", "/cache").json()
    span = wait_span(tracing, seen["trace_id"])
    assert span.name == "_OTHER"
    assert span.attributes["http.request.method"] == "_OTHER"
    assert span.attributes["http.request.method_original"] == "PURGE"


def test_settings_default_to_the_environment(tracing: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_PROPAGATORS", "b3multi")
    monkeypatch.setenv("TRACEWIRE_RESPONSE_PROPAGATION", "server-timing")
    monkeypatch.setenv("TRACEWIRE_EXCLUDED_PATHS", "re:^/internal/")
    app = TracewireWSGIMiddleware(json_app, tracer_provider=tracing.provider)
    trace_id, parent_id = new_ids()
    with served(app) as client:
        ignored = client.get("/", headers={"traceparent": traceparent(trace_id, parent_id)})
        followed = client.get(
            "/", headers={"X-B3-TraceId": trace_id, "X-B3-SpanId": parent_id, "X-B3-Sampled": "1"}
        )
        internal = client.get("/internal/x", headers={"traceparent": traceparent(*new_ids())})
    assert ignored.json()["trace_id"] != trace_id  # tracecontext is not configured
    span = wait_span(tracing, trace_id)
    assert followed.headers["server-timing"] == f"trace;desc=00-{trace_id}-{hex_ids(span)[1]}-01"
    assert "server-timing" not in internal.headers
    wait_for(lambda: len(tracing.spans()) == 2)


def test_constructor_validates() -> None:
    with pytest.raises(TypeError, match="WSGI callable"):
        TracewireWSGIMiddleware("app")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"tracewire\.Settings"):
        TracewireWSGIMiddleware(json_app, {"propagators": "b3"})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="route must be a callable"):
        TracewireWSGIMiddleware(json_app, Settings(), route="/x")  # type: ignore[arg-type]


# -------------------------------------------------------------------------- never harm the app
@pytest.mark.parametrize("kind", wsgi_apps.KINDS)
def test_responses_are_the_same_with_and_without_tracewire(tracing: Any, kind: str) -> None:
    if kind == "falcon":
        pytest.importorskip("falcon")

    def answers(app: Any) -> list[tuple[Any, ...]]:
        got = []
        with served(app) as client:
            for path in ("/boom", "/no/such/page", "/file", "/stream-fail"):
                status, headers, body, cut = 0, [], b"", False
                try:
                    with client.stream("GET", path) as r:
                        status = r.status_code
                        headers = [(k, v) for k, v in r.headers.items() if k != "date"]
                        for chunk in r.iter_bytes():
                            body += chunk
                except httpx.HTTPError:
                    cut = True  # the failing stream: the server drops the connection
                got.append((path, status, headers, body, cut))
        return got

    with wsgi_apps.django_settings(kind):
        plain = answers(wsgi_apps.build(kind, None))
        traced = answers(wsgi_apps.build(kind, {}, tracing.provider))
    assert [status for _, status, *_ in plain] == [500, 404, 200, 200]
    assert traced == plain


class _Exploding(SpanExporter):
    def export(self, spans: Any) -> SpanExportResult:
        raise RuntimeError("exporter down")


class _FailingProcessor(SpanProcessor):
    def __init__(self, where: str) -> None:
        self.where = where

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        if self.where == "start":
            raise RuntimeError("processor failed on start")

    def on_end(self, span: Any) -> None:
        if self.where == "end":
            raise RuntimeError("processor failed on end")


@pytest.mark.parametrize("fault", ["exporter", "processor-start", "processor-end"])
def test_broken_sdk_never_changes_the_response(
    tracing: Any, caplog: pytest.LogCaptureFixture, fault: str
) -> None:
    if fault == "exporter":
        tracing.provider.add_span_processor(SimpleSpanProcessor(_Exploding()))
    else:
        tracing.provider.add_span_processor(_FailingProcessor(fault.split("-")[1]))
    app = TracewireWSGIMiddleware(json_app, Settings(), tracer_provider=tracing.provider)
    trace_id, parent_id = new_ids()
    with served(app) as client, caplog.at_level(logging.WARNING):
        for _ in range(3):
            response = client.get("/", headers={"traceparent": traceparent(trace_id, parent_id)})
            assert response.status_code == 200
            assert response.json()["trace_id"] == trace_id  # the context still reaches the app
    if fault != "exporter":  # the SDK logs its own export failures
        ours = [r for r in caplog.records if r.name == "tracewire"]
        assert len(ours) == 1, [r.getMessage() for r in ours]  # once per kind
        assert "RuntimeError" in ours[0].getMessage()


def test_raising_hooks_and_route_are_contained(
    tracing: Any, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args: Any) -> None:
        raise ValueError("hook bug")

    def broken_route(environ: Environ) -> str:
        raise KeyError("route bug")

    settings = Settings(server_request_hook=broken, server_response_hook=broken)
    app = TracewireWSGIMiddleware(
        json_app, settings, tracer_provider=tracing.provider, route=broken_route
    )
    with served(app) as client, caplog.at_level(logging.WARNING, logger="tracewire"):
        seen = [client.get("/").json() for _ in range(4)]
    wait_for(lambda: len(tracing.spans()) == 4)
    for span in tracing.spans():
        assert span.attributes["http.response.status_code"] == 200
        assert span.name == "GET"
    assert {s["trace_id"] for s in seen} == {f"{s.context.trace_id:032x}" for s in tracing.spans()}
    messages = [r.getMessage() for r in caplog.records if r.name == "tracewire"]
    assert len(messages) == 3, messages  # one per kind: two hooks and the route
    assert not any("hook bug" in m or "route bug" in m for m in messages)  # no raw values


def test_hostile_header_values_start_a_new_trace(tracing: Any) -> None:
    app = TracewireWSGIMiddleware(
        json_app,
        Settings(propagators=["tracecontext", "b3", "baggage"]),
        tracer_provider=tracing.provider,
    )
    trace_id, parent_id = new_ids()
    with served(app) as client:
        for headers in (
            {"traceparent": f"00-{trace_id}-{parent_id}-01".encode() + b"\xff"},
            {"traceparent": ("00-" + "é" * 32 + f"-{parent_id}-01").encode()},
            {"b3": "x" * 10_000},
            {"tracestate": "a=" + "b" * 60_000, "traceparent": "garbage"},
        ):
            response = client.get("/", headers=headers)
            assert response.status_code == 200
            assert response.json()["trace_id"] != trace_id
        # Malformed baggage members are dropped one by one; good ones still arrive.
        seen = client.get("/", headers={"baggage": "good=1,bad key=2,=3,also=ok"}).json()
    assert seen["baggage"] == {"good": "1", "also": "ok"}


# -------------------------------------------------------------------------------- the body
def test_client_leaving_mid_stream_ends_the_span(tracing: Any) -> None:
    app = TracewireWSGIMiddleware(stream_app, Settings(), tracer_provider=tracing.provider)
    trace_id, parent_id = new_ids()
    started = time.monotonic()
    with served(app) as client:
        with client.stream(
            "GET", "/?n=400", headers={"traceparent": traceparent(trace_id, parent_id)}
        ) as response:
            first = next(response.iter_lines())
        assert first.split()[1] == trace_id
        # 400 chunks take two seconds; the server notices the closed connection and closes
        # the body, which ends the span.
        span = wait_span(tracing, trace_id)
    assert time.monotonic() - started < 2
    assert span.status.is_unset
    assert span.attributes["http.response.status_code"] == 200


def test_unsampled_and_excluded_streams_still_have_their_context(tracing: Any) -> None:
    settings = Settings(excluded_paths=["/static/*"])
    app = TracewireWSGIMiddleware(stream_app, settings, tracer_provider=tracing.provider)
    trace_id, parent_id = new_ids()
    with served(app) as client:
        unsampled = client.get(
            "/page", headers={"traceparent": traceparent(trace_id, parent_id, "00")}
        ).text.splitlines()
        excluded = client.get(
            "/static/app.js", headers={"traceparent": traceparent(trace_id, parent_id)}
        ).text.splitlines()
    # Unsampled: a child span (not recorded) is current in every chunk.
    ids = {tuple(line.split()[1:]) for line in unsampled}
    assert len(ids) == 1
    ((seen_trace, seen_span),) = ids
    assert seen_trace == trace_id and seen_span != parent_id
    # Excluded: the incoming context as it came.
    assert {tuple(line.split()[1:]) for line in excluded} == {(trace_id, parent_id)}
    assert tracing.spans() == []


class SlottedFileWrapper:
    """A server's file wrapper whose instances take no new attributes."""

    __slots__ = ("blksize", "filelike")

    def __init__(self, filelike: Any, blksize: int = 8192) -> None:
        self.filelike = filelike
        self.blksize = blksize

    def __iter__(self) -> Iterator[bytes]:
        return iter(lambda: self.filelike.read(self.blksize), b"")

    def close(self) -> None:
        self.filelike.close()


def test_file_wrapper_that_cannot_be_hooked_is_wrapped(tracing: Any) -> None:
    def server_with_slotted_wrapper(app: Any) -> Any:
        def call(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
            environ["wsgi.file_wrapper"] = SlottedFileWrapper
            return app(environ, start_response)  # type: ignore[no-any-return]

        return call

    traced = TracewireWSGIMiddleware(
        wsgi_apps.raw_app, Settings(), tracer_provider=tracing.provider
    )
    trace_id, parent_id = new_ids()
    with served(server_with_slotted_wrapper(traced)) as client:
        response = client.get("/file", headers={"traceparent": traceparent(trace_id, parent_id)})
    with open(wsgi_apps.FILE_PATH, "rb") as f:
        assert response.content == f.read()
    span = wait_span(tracing, trace_id)
    assert span.end_time is not None


@contextlib.contextmanager
def wsgiref_server(app: Any) -> Iterator[str]:
    class Quiet(WSGIRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

    server = make_server("127.0.0.1", 0, app, handler_class=Quiet)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
    )
    thread.start()
    try:
        port = server.server_address[1]
        wait_for(lambda: port_open("127.0.0.1", port))
        yield f"http://127.0.0.1:{port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_one_item_list_keeps_its_length_for_the_server(tracing: Any) -> None:
    # wsgiref (like waitress) sets Content-Length itself for a one-item body it can len().
    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"hello"]

    traced = TracewireWSGIMiddleware(app, Settings(), tracer_provider=tracing.provider)
    for wsgi_app in (app, traced):
        with wsgiref_server(wsgi_app) as url:
            response = httpx.get(url + "/")
        assert response.headers.get("content-length") == "5"
        assert response.text == "hello"
    wait_for(lambda: len(tracing.spans()) == 1)


def test_exception_before_the_response_is_recorded(tracing: Any) -> None:
    app = TracewireWSGIMiddleware(wsgi_apps.raw_app, Settings(), tracer_provider=tracing.provider)
    trace_id, parent_id = new_ids()
    with served(app) as client:
        response = client.get("/boom", headers={"traceparent": traceparent(trace_id, parent_id)})
    assert response.status_code == 500  # the server's own answer
    span = wait_span(tracing, trace_id)
    assert not span.status.is_ok and not span.status.is_unset
    assert span.attributes["error.type"] == "tests.wsgi_apps.Boom"
    assert span.attributes["http.response.status_code"] == 500
    (event,) = span.events
    assert event.name == "exception"
    assert event.attributes["exception.type"] == "tests.wsgi_apps.Boom"

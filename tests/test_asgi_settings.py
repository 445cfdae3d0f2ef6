"""ASGI server settings with real servers: excluded paths, hooks, header capture with
redaction, response propagation, and faults inside tracing that must not reach the app."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.trace import StatusCode

from tests.support.asgi_apps import (
    SpanSink,
    fetch,
    http_client,
    new_ids,
    raw_app,
    running_service,
    serve,
    starlette_app,
    traceparent,
)
from tests.support.servers import free_port, wait_for
from tracewire import Settings, TracewireMiddleware
from tracewire.server import ResponseInfo


@pytest.fixture(params=["starlette", "raw"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _service(kind: str, **settings: Any) -> Any:
    return running_service(kind, "uvicorn", Settings(**settings))


# ---------------------------------------------------------------------------- excluded paths
def test_excluded_path_has_the_incoming_context_but_no_span(kind: str) -> None:
    with _service(kind, excluded_paths=["/items/health", "re:^/items/skip-.*$"]) as svc:
        trace_id, parent_id = new_ids()
        headers = {"traceparent": traceparent(trace_id, parent_id), "baggage": "who=probe"}
        for path in ("/items/health", "/items/skip-me"):
            seen = svc.get(path, headers).json()
            # The app runs in the caller's context (outgoing calls would continue the trace) ...
            assert (seen["trace_id"], seen["span_id"]) == (trace_id, parent_id)
            assert seen["baggage"] == {"who": "probe"}
        # ... and without a header, in no trace at all, whatever ran before on this worker.
        assert svc.get("/items/health").json()["valid"] is False
        # A traced request proves the exporter works; the excluded ones produced nothing.
        traced = svc.get("/items/1", headers).json()
        assert traced["trace_id"] == trace_id
        svc.sink.of_trace(trace_id)
        assert [s.attributes["url.path"] for s in svc.sink.server_spans()] == ["/items/1"]


def test_excluded_request_after_a_leaking_one_sees_no_stale_context() -> None:
    # uvicorn hands a connection's next request the context of a large-body request before it
    # (see test_asgi_lifecycle); an excluded request must still see only its own headers.
    with _service("starlette", excluded_paths=["/upload"]) as svc:
        trace_id, parent_id = new_ids()
        headers = {"traceparent": traceparent(trace_id, parent_id)}
        body = b"y" * (1024 * 1024)
        traced = svc.client.post("/items/1", headers=headers, content=body)
        assert traced.status_code == 405  # POST on a GET route: still a traced request
        seen = svc.client.post("/upload", content=body).json()
        assert seen["valid"] is False
        assert svc.sink.of_trace(trace_id).attributes["http.response.status_code"] == 405


# ------------------------------------------------------------------------------------- hooks
def test_hooks_see_span_scope_and_response(kind: str) -> None:
    calls: list[Any] = []

    def on_request(span: Any, scope: Any) -> None:
        calls.append(("request", scope["type"], scope["path"]))
        span.set_attribute("app.tenant", scope["path"].rsplit("/", 1)[-1])

    def on_response(span: Any, info: ResponseInfo) -> None:
        calls.append(("response", info.status_code))
        names = [bytes(name).decode() for name, _ in info.headers]
        span.set_attribute("app.response_headers", len(names))
        span.set_attribute("app.has_content_type", "content-type" in names)

    with _service(kind, server_request_hook=on_request, server_response_hook=on_response) as svc:
        trace_id, parent_id = new_ids()
        svc.get("/items/acme", {"traceparent": traceparent(trace_id, parent_id)})
        span = svc.sink.of_trace(trace_id)
    assert calls == [("request", "http", "/items/acme"), ("response", 200)]
    assert span.attributes["app.tenant"] == "acme"
    assert span.attributes["app.has_content_type"] is True
    assert span.attributes["app.response_headers"] >= 2


def test_raising_hooks_change_nothing_and_are_logged_once(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    def bad_request_hook(span: Any, scope: Any) -> None:
        raise ValueError("request hook bug")

    def bad_response_hook(span: Any, info: Any) -> None:
        raise ZeroDivisionError("response hook bug")

    with _service(kind) as plain:
        reference = plain.get("/teapot")
    with (
        caplog.at_level(logging.WARNING, logger="tracewire"),
        _service(
            kind, server_request_hook=bad_request_hook, server_response_hook=bad_response_hook
        ) as svc,
    ):
        for _ in range(5):
            trace_id, parent_id = new_ids()
            response = svc.get("/teapot", {"traceparent": traceparent(trace_id, parent_id)})
            assert response.status_code == reference.status_code == 418
            assert response.content == reference.content
            without_date = [(k, v) for k, v in response.headers.multi_items() if k != "date"]
            assert without_date == [
                (k, v) for k, v in reference.headers.multi_items() if k != "date"
            ]
            span = svc.sink.of_trace(trace_id)
            assert span.attributes["http.response.status_code"] == 418
    messages = [r.getMessage() for r in caplog.records]
    assert len([m for m in messages if "server_request_hook raised" in m]) == 1
    assert len([m for m in messages if "server_response_hook raised" in m]) == 1
    assert not any("request hook bug" in m for m in messages)  # no exception text logged


# ---------------------------------------------------------------------------- header capture
def test_capture_headers_with_redaction(kind: str) -> None:
    with _service(
        kind,
        capture_request_headers=["X-Request-Id", "authorization", "x-multi", "x-absent"],
        capture_response_headers=["content-type", "set-cookie", "content-length"],
    ) as svc:
        trace_id, parent_id = new_ids()
        headers = [
            ("traceparent", traceparent(trace_id, parent_id)),
            ("x-request-id", "req-1"),
            ("Authorization", "Bearer secret-token"),
            ("x-multi", "a"),
            ("x-multi", "b"),
        ]
        svc.client.get("/items/1", headers=headers)
        span = svc.sink.of_trace(trace_id)
    attrs = span.attributes
    assert attrs["http.request.header.x-request-id"] == ("req-1",)
    assert attrs["http.request.header.authorization"] == ("REDACTED",)
    assert attrs["http.request.header.x-multi"] == ("a", "b")
    assert "http.request.header.x-absent" not in attrs
    assert attrs["http.response.header.content-type"] == ("application/json",)
    assert int(attrs["http.response.header.content-length"][0]) > 0
    assert not any("secret-token" in str(v) for v in attrs.values())


def test_response_headers_set_by_the_app_are_redacted() -> None:
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def login(request: Any) -> PlainTextResponse:
        response = PlainTextResponse("hi")
        response.set_cookie("session", "s3cr3t")
        return response

    sink = SpanSink()
    app = TracewireMiddleware(
        Starlette(routes=[Route("/login", login)]),
        Settings(capture_response_headers=["set-cookie"]),
        tracer_provider=sink.provider,
    )
    with serve(app, "hypercorn") as running:
        trace_id, parent_id = new_ids()
        headers = {"traceparent": traceparent(trace_id, parent_id)}
        response = fetch(running.url + "/login", headers=headers, timeout=5)
        assert "s3cr3t" in response.headers["set-cookie"]
        span = sink.of_trace(trace_id)
    assert span.attributes["http.response.header.set-cookie"] == ("REDACTED",)


# ---------------------------------------------------------------------- response propagation
@pytest.mark.parametrize("flags", ["01", "00"])
def test_traceresponse_header(kind: str, flags: str) -> None:
    with _service(kind, response_propagation="traceresponse") as svc:
        trace_id, parent_id = new_ids()
        response = svc.get("/items/1", {"traceparent": traceparent(trace_id, parent_id, flags)})
        value = response.headers["traceresponse"]
        version, got_trace, span_id, got_flags = value.split("-")
        assert (version, got_trace, got_flags) == ("00", trace_id, flags)
        assert span_id == response.json()["span_id"] != parent_id
        if flags == "01":
            assert f"{svc.sink.of_trace(trace_id).context.span_id:016x}" == span_id


def test_server_timing_header_also_on_errors(kind: str) -> None:
    with _service(kind, response_propagation="server-timing") as svc:
        trace_id, parent_id = new_ids()
        response = svc.get_once("/boom", {"traceparent": traceparent(trace_id, parent_id)})
        assert response.status_code == 500
        span = svc.sink.of_trace(trace_id)
        if kind == "starlette":  # the app's own 500 went through the middleware
            expected = f"trace;desc=00-{trace_id}-{span.context.span_id:016x}-01"
            assert response.headers["server-timing"] == expected
        ok = svc.get("/items/1", {"traceparent": traceparent(trace_id, parent_id)})
        assert ok.headers["server-timing"].startswith(f"trace;desc=00-{trace_id}-")


def test_no_response_propagation_by_default(kind: str) -> None:
    with _service(kind) as svc:
        response = svc.get("/items/1")
        assert "traceresponse" not in response.headers
        assert "server-timing" not in response.headers


# ---------------------------------------------------------------------------------- faults
class ExplodingProcessor(SpanProcessor):
    def __init__(self, where: str) -> None:
        self.where = where

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        if self.where == "start":
            raise RuntimeError("processor on_start bug")

    def on_end(self, span: ReadableSpan) -> None:
        if self.where == "end":
            raise RuntimeError("processor on_end bug")


class ExplodingExporter(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        raise OSError("exporter bug")


@pytest.fixture
def plain_reference() -> Iterator[dict[str, Any]]:
    """Responses of the same app without tracewire, to compare with."""
    from tests.support.asgi_apps import Probe

    with serve(starlette_app(Probe()), "uvicorn") as running:
        with http_client(base_url=running.url) as client:
            answers = {p: client.get(p) for p in ("/items/1", "/teapot", "/stream")}
        answers["/boom"] = fetch(running.url + "/boom", timeout=5)
        yield answers


@pytest.mark.parametrize("fault", ["on_start", "on_end", "exporter", "closed_port"])
def test_broken_sdk_pieces_never_change_the_response(
    fault: str, plain_reference: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    from opentelemetry.sdk.trace import TracerProvider

    from tests.support.asgi_apps import Probe

    provider = TracerProvider()
    batch: BatchSpanProcessor | None = None
    if fault == "on_start":
        provider.add_span_processor(ExplodingProcessor("start"))
    elif fault == "on_end":
        provider.add_span_processor(ExplodingProcessor("end"))
    elif fault == "exporter":
        provider.add_span_processor(SimpleSpanProcessor(ExplodingExporter()))
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=f"http://127.0.0.1:{free_port()}/v1/traces", timeout=1)
        batch = BatchSpanProcessor(exporter, schedule_delay_millis=50)
        provider.add_span_processor(batch)
    probe = Probe()
    app = TracewireMiddleware(starlette_app(probe), Settings(), tracer_provider=provider)
    with caplog.at_level(logging.WARNING, logger="tracewire"), serve(app, "uvicorn") as running:
        with http_client(base_url=running.url) as client:
            for _ in range(3):
                for path in ("/items/1", "/teapot", "/stream"):
                    trace_id, parent_id = new_ids()
                    headers = {"traceparent": traceparent(trace_id, parent_id)}
                    response = client.get(path, headers=headers)
                    expected = plain_reference[path]
                    assert response.status_code == expected.status_code
                    if path != "/items/1":  # that body names the trace ids
                        assert response.content == expected.content
                    else:
                        assert response.json()["trace_id"] == trace_id
        boom = fetch(running.url + "/boom", timeout=5)
        assert (boom.status_code, boom.content) == (500, plain_reference["/boom"].content)
    if fault == "on_end":
        faults = [r for r in caplog.records if "internal:end" in r.getMessage()]
        assert len(faults) == 1
    if fault == "on_start":
        assert len([r for r in caplog.records if "internal:start" in r.getMessage()]) == 1
    if batch is not None:
        batch.shutdown()


def test_hostile_headers_change_nothing(kind: str, caplog: pytest.LogCaptureFixture) -> None:
    import socket

    with (
        caplog.at_level(logging.WARNING, logger="tracewire"),
        _service(kind, propagators=["tracecontext", "baggage", "b3"]) as svc,
    ):
        host, port = svc.url.rsplit("//", 1)[1].split(":")
        junk = (
            b"traceparent: 00-\xff\xfe" + b"a" * 50 + b"\r\n"
            b"tracestate: " + b"x=" * 3000 + b"\r\n"
            b"baggage: " + b"%ZZ=%FF;;;,=,," * 200 + b"\r\n"
            b"b3: " + b"-" * 500 + b"\r\n"
            b"x-b3-traceid: \x80\x81\r\n"
        )
        request = b"GET /items/1 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n" + junk + b"\r\n"
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            sock.sendall(request)
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        assert data.startswith(b"HTTP/1.1 200")
        body = data.split(b"\r\n\r\n", 1)[1]
        import json

        seen = json.loads(body)
        assert seen["valid"] and seen["baggage"] == {}
        span = svc.sink.of_trace(seen["trace_id"])
        assert span.parent is None
        assert span.status.status_code == StatusCode.UNSET
    # Nothing of the hostile values made it into the log.
    assert not any("\\xff" in r.getMessage() or "%ZZ" in r.getMessage() for r in caplog.records)


def test_settings_type_is_checked() -> None:
    with pytest.raises(TypeError, match=r"tracewire\.Settings"):
        TracewireMiddleware(raw_app(None), settings={"propagators": "b3"})  # type: ignore[arg-type]


def test_default_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_PROPAGATORS", "b3multi")
    monkeypatch.setenv("TRACEWIRE_RESPONSE_PROPAGATION", "traceresponse")
    sink = SpanSink()
    from tests.support.asgi_apps import Probe

    app = TracewireMiddleware(raw_app(Probe()), tracer_provider=sink.provider)
    assert app.settings.response_propagation == "traceresponse"
    with serve(app, "uvicorn") as running:
        trace_id, parent_id = new_ids()
        headers = {"X-B3-TraceId": trace_id, "X-B3-SpanId": parent_id, "X-B3-Sampled": "1"}
        response = fetch(running.url + "/items/1", headers=headers, timeout=5)
        assert response.json()["trace_id"] == trace_id
        assert response.headers["traceresponse"].startswith(f"00-{trace_id}-")
        # traceparent is not read when only B3 is configured.
        other, other_parent = new_ids()
        tp = {"traceparent": traceparent(other, other_parent)}
        seen = fetch(running.url + "/items/2", headers=tp, timeout=5).json()
        assert seen["trace_id"] != other
        wait_for(lambda: sink.of_trace(seen["trace_id"]))


class ExplodingPropagator(TextMapPropagator):
    """A third-party propagator with a bug on some input."""

    def extract(self, carrier: Any, context: Any = None, getter: Any = None) -> Any:
        raise IndexError("propagator bug")

    def inject(self, carrier: Any, context: Any = None, setter: Any = None) -> None:
        pass

    @property
    def fields(self) -> set[str]:
        return set()


def test_raising_propagator_costs_only_its_own_format(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The other propagators still supply the parent; the request is traced and answered.
    with (
        caplog.at_level(logging.WARNING, logger="tracewire"),
        _service(kind, propagators=[ExplodingPropagator(), "tracecontext"]) as svc,
    ):
        for _ in range(3):
            trace_id, parent_id = new_ids()
            response = svc.get("/items/1", {"traceparent": traceparent(trace_id, parent_id)})
            assert response.status_code == 200
            seen = response.json()
            assert seen["valid"] and seen["trace_id"] == trace_id
            span = svc.sink.of_trace(seen["trace_id"])
            assert span.parent is not None and span.parent.span_id == int(parent_id, 16)
            assert span.attributes["http.response.status_code"] == 200
    assert len([r for r in caplog.records if "raised IndexError" in r.getMessage()]) == 1

"""The demo's OTLP/HTTP receiver, fed by the real OTLP exporter and by raw HTTP requests."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
import textwrap
import threading
import time
import zlib

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

from tracewire.demo.receiver import OTLPReceiver

PROTOBUF = {"Content-Type": "application/x-protobuf"}


@pytest.fixture
def receiver():
    with OTLPReceiver() as r:
        yield r


def provider_for(receiver: OTLPReceiver, service: str, **exporter_kwargs) -> TracerProvider:
    provider = TracerProvider(
        resource=Resource.create({"service.name": service}), shutdown_on_exit=False
    )
    exporter = OTLPSpanExporter(endpoint=receiver.traces_url, **exporter_kwargs)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


def one_request_body() -> bytes:
    """The body the OTLP exporter would send for one span named "raw" (its own encoder)."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    memory = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(memory))
    with provider.get_tracer("t").start_as_current_span("raw"):
        pass
    provider.shutdown()
    return encode_spans(memory.get_finished_spans()).SerializeToString()


# ------------------------------------------------------------------ with the real exporter


def test_real_exporter_spans_arrive_with_ids_kinds_service_and_attributes(receiver):
    provider = provider_for(receiver, "shop")
    tracer = provider.get_tracer("demo.scope")
    with tracer.start_as_current_span("GET /process", kind=SpanKind.SERVER) as server:
        with tracer.start_as_current_span(
            "GET",
            kind=SpanKind.CLIENT,
            attributes={
                "http.request.method": "GET",
                "http.response.status_code": 503,
                "ratio": 0.25,
                "flag": True,
                "tags": ["a", "b"],
            },
        ) as client:
            client.set_status(Status(StatusCode.ERROR))
    provider.shutdown()

    spans = receiver.wait_for_spans(2, timeout=10)
    by_name = {s.name: s for s in spans}
    root, child = by_name["GET /process"], by_name["GET"]
    server_ctx, client_ctx = server.get_span_context(), client.get_span_context()
    assert root.trace_id == child.trace_id == f"{server_ctx.trace_id:032x}"
    assert root.span_id == f"{server_ctx.span_id:016x}"
    assert child.span_id == f"{client_ctx.span_id:016x}"
    assert root.parent_id is None
    assert child.parent_id == root.span_id
    assert (root.kind, child.kind) == ("SERVER", "CLIENT")
    assert root.service == child.service == "shop"
    assert child.scope == "demo.scope"
    assert child.status == "ERROR"
    assert root.status == "UNSET"
    assert child.attributes == {
        "http.request.method": "GET",
        "http.response.status_code": 503,
        "ratio": 0.25,
        "flag": True,
        "tags": ("a", "b"),
    }
    assert 0 < root.start_ns <= child.start_ns <= child.end_ns <= root.end_ns
    assert child.duration_ns == child.end_ns - child.start_ns


@pytest.mark.parametrize("compression", [Compression.Gzip, Compression.Deflate])
def test_compressed_exports_are_decoded(receiver, compression):
    provider = provider_for(receiver, "zipped", compression=compression)
    with provider.get_tracer("t").start_as_current_span("compressed"):
        pass
    provider.shutdown()
    (span,) = receiver.wait_for_spans(1, timeout=10)
    assert (span.name, span.service) == ("compressed", "zipped")


def test_exporters_on_many_threads_lose_nothing(receiver):
    provider = provider_for(receiver, "busy")
    tracer = provider.get_tracer("t")

    def work(n: int) -> None:
        for i in range(10):
            with tracer.start_as_current_span(f"t{n}-{i}"):
                pass

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    provider.shutdown()
    spans = receiver.wait_for_spans(60, timeout=15)
    assert sorted(s.name for s in spans) == sorted(f"t{n}-{i}" for n in range(6) for i in range(10))
    assert receiver.requests == 60


def test_spans_from_another_process_arrive(receiver):
    code = textwrap.dedent(
        """
        from tracewire.sdk import configure
        provider = configure(service_name="child-process", exporter="otlp")
        with provider.get_tracer("t").start_as_current_span("from-child"):
            pass
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["OTEL_EXPORTER_OTLP_ENDPOINT"] = receiver.endpoint
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    (span,) = receiver.wait_for_spans(1, timeout=10)
    assert (span.name, span.service) == ("from-child", "child-process")


# -------------------------------------------------------------------------- the HTTP surface


def test_answer_is_an_export_trace_service_response(receiver):
    body = one_request_body()
    response = httpx.post(receiver.traces_url, content=body, headers=PROTOBUF, timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-protobuf"
    parsed = ExportTraceServiceResponse.FromString(response.content)
    assert not parsed.HasField("partial_success")
    assert [s.name for s in receiver.spans()] == ["raw"]


def test_keep_alive_connection_serves_several_exports(receiver):
    body = one_request_body()
    with httpx.Client(timeout=10) as client:
        for _ in range(3):
            assert client.post(receiver.traces_url, content=body, headers=PROTOBUF).is_success
    assert len(receiver.spans()) == 3


@pytest.mark.parametrize(
    ("path", "headers", "content", "status"),
    [
        ("/v1/logs", PROTOBUF, b"", 404),
        ("/v1/traces", {"Content-Type": "application/json"}, b"{}", 415),
        ("/v1/traces", PROTOBUF, b"\xff\xff\xff not protobuf", 400),
        ("/v1/traces", {**PROTOBUF, "Content-Encoding": "br"}, b"x", 415),
        ("/v1/traces", {**PROTOBUF, "Content-Encoding": "gzip"}, b"not gzip", 400),
    ],
)
def test_bad_requests_get_4xx_and_store_nothing(receiver, path, headers, content, status):
    response = httpx.post(receiver.endpoint + path, content=content, headers=headers, timeout=10)
    assert response.status_code == status
    assert receiver.spans() == []


def test_get_is_not_allowed(receiver):
    assert httpx.get(receiver.traces_url, timeout=10).status_code == 405


def test_oversized_and_bomb_bodies_are_refused():
    with OTLPReceiver(max_body=1024) as small:
        big = httpx.post(small.traces_url, content=b"\0" * 2048, headers=PROTOBUF, timeout=10)
        assert big.status_code == 413
        bomb = gzip.compress(b"\0" * 100_000)
        assert len(bomb) < 1024
        headers = {**PROTOBUF, "Content-Encoding": "gzip"}
        response = httpx.post(small.traces_url, content=bomb, headers=headers, timeout=10)
        assert response.status_code == 413
        assert small.spans() == []


def test_zlib_wrapped_deflate_body(receiver):
    body = zlib.compress(one_request_body())
    headers = {**PROTOBUF, "Content-Encoding": "deflate"}
    assert httpx.post(receiver.traces_url, content=body, headers=headers, timeout=10).is_success
    assert [s.name for s in receiver.spans()] == ["raw"]


def test_empty_request_is_valid_and_adds_nothing(receiver):
    empty = ExportTraceServiceRequest().SerializeToString()
    response = httpx.post(receiver.traces_url, content=empty, headers=PROTOBUF, timeout=10)
    assert response.status_code == 200
    assert receiver.spans() == [] and receiver.requests == 1


# ------------------------------------------------------------------------------------ waiting


def test_wait_for_wakes_when_spans_arrive_from_another_thread(receiver):
    provider = provider_for(receiver, "late")

    def later() -> None:
        time.sleep(0.2)
        with provider.get_tracer("t").start_as_current_span("late-span"):
            pass

    thread = threading.Thread(target=later)
    started = time.monotonic()
    thread.start()
    names = receiver.wait_for(lambda spans: [s.name for s in spans if s.name == "late-span"], 10)
    elapsed = time.monotonic() - started
    thread.join(timeout=10)
    provider.shutdown()
    assert names == ["late-span"]
    assert elapsed < 5


def test_wait_for_times_out_with_a_count(receiver):
    started = time.monotonic()
    with pytest.raises(TimeoutError, match=r"0 spans received in 0 requests"):
        receiver.wait_for_spans(1, timeout=0.3)
    assert 0.3 <= time.monotonic() - started < 3


def test_spans_filter_by_trace_and_clear(receiver):
    provider = provider_for(receiver, "svc")
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("a") as a:
        pass
    with tracer.start_as_current_span("b"):
        pass
    provider.shutdown()
    receiver.wait_for_spans(2, timeout=10)
    trace_a = f"{a.get_span_context().trace_id:032x}"
    assert [s.name for s in receiver.spans(trace_a)] == ["a"]
    assert [s.name for s in receiver.wait_for_spans(1, trace_id=trace_a, timeout=1)] == ["a"]
    receiver.clear()
    assert receiver.spans() == [] and receiver.requests == 0


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="port"):
        OTLPReceiver(port=70000)
    with pytest.raises(ValueError, match="max_body"):
        OTLPReceiver(max_body=0)


def test_stop_frees_the_port_and_is_idempotent():
    receiver = OTLPReceiver().start()
    url = receiver.traces_url
    receiver.stop()
    receiver.stop()
    with pytest.raises(httpx.TransportError):
        httpx.post(url, content=b"", headers=PROTOBUF, timeout=2)

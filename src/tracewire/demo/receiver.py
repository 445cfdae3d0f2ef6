"""A small OTLP/HTTP trace receiver that keeps what it gets in memory.

Usage::

    with OTLPReceiver() as receiver:            # listens on 127.0.0.1, a free port
        ...  # point exporters at receiver.endpoint (base URL) or receiver.traces_url
        spans = receiver.wait_for_spans(3, trace_id=tid, timeout=10)

It speaks the part of OTLP/HTTP that SDK exporters use: ``POST /v1/traces`` with a binary
protobuf ``ExportTraceServiceRequest`` (``Content-Type: application/x-protobuf``), optionally
``Content-Encoding: gzip`` or ``deflate``, answered by an ``ExportTraceServiceResponse``.
Anything else gets a 4xx with a one-line reason. It is a demo and test tool, not a collector.
"""

from __future__ import annotations

import threading
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

__all__ = [
    "MAX_BODY",
    "PROTOBUF",
    "TRACES_PATH",
    "OTLPReceiver",
    "ReceivedSpan",
    "decode_spans",
    "metric_names",
]

TRACES_PATH = "/v1/traces"
METRICS_PATH = "/v1/metrics"
PROTOBUF = "application/x-protobuf"
MAX_BODY = 16 * 1024 * 1024

T = TypeVar("T")


@dataclass(frozen=True)
class ReceivedSpan:
    """One span as it arrived, with ids as lowercase hex (``parent_id`` ``None`` for roots)."""

    trace_id: str
    span_id: str
    parent_id: str | None
    name: str
    kind: str  # SERVER, CLIENT, INTERNAL, PRODUCER, CONSUMER or UNSPECIFIED
    start_ns: int
    end_ns: int
    service: str | None
    attributes: Mapping[str, Any] = field(default_factory=dict)
    status: str = "UNSET"  # UNSET, OK or ERROR
    scope: str = ""

    @property
    def duration_ns(self) -> int:
        return max(0, self.end_ns - self.start_ns)


def _value(value: AnyValue) -> Any:
    which = value.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return tuple(_value(v) for v in value.array_value.values)
    if which == "kvlist_value":
        return _attributes(value.kvlist_value.values)
    return getattr(value, which)


def _attributes(pairs: Sequence[KeyValue]) -> dict[str, Any]:
    return {pair.key: _value(pair.value) for pair in pairs}


def _kind(kind: Span.SpanKind.ValueType) -> str:
    return Span.SpanKind.Name(kind).removeprefix("SPAN_KIND_")


def _status(code: Status.StatusCode.ValueType) -> str:
    return Status.StatusCode.Name(code).removeprefix("STATUS_CODE_")


def decode_spans(request: ExportTraceServiceRequest) -> list[ReceivedSpan]:
    """The spans of one export request, flattened, each with its resource's service name."""
    found: list[ReceivedSpan] = []
    for resource_spans in request.resource_spans:
        resource = _attributes(resource_spans.resource.attributes)
        service = resource.get("service.name")
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                found.append(
                    ReceivedSpan(
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_id=span.parent_span_id.hex() or None,
                        name=span.name,
                        kind=_kind(span.kind),
                        start_ns=span.start_time_unix_nano,
                        end_ns=span.end_time_unix_nano,
                        service=service if isinstance(service, str) else None,
                        attributes=_attributes(span.attributes),
                        status=_status(span.status.code),
                        scope=scope_spans.scope.name,
                    )
                )
    return found


def metric_names(request: ExportMetricsServiceRequest) -> set[str]:
    """The names of the metrics in one OTLP metrics export."""
    return {
        metric.name
        for resource in request.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
    }


class _BodyError(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _decompress(body: bytes, encoding: str, limit: int) -> bytes:
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "deflate"):
        raise _BodyError(415, f"unsupported Content-Encoding {encoding!r}; use gzip or deflate")
    # wbits 47 accepts gzip and zlib headers alike; max_length stops decompression bombs.
    inflater = zlib.decompressobj(47)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise _BodyError(400, f"bad {encoding} body: {exc}") from None
    if len(out) > limit:
        raise _BodyError(413, f"decompressed body larger than {limit} bytes")
    return out


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as exporters' sessions expect
    server: _Server

    def _metrics(self) -> None:
        # Metric exports are accepted, counted and their metric names kept (the demo shows
        # traces only); an empty protobuf body is an ExportMetricsServiceResponse with nothing
        # rejected.
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length)
        encoding = self.headers.get("Content-Encoding", "").strip().lower()
        try:
            names = metric_names(
                ExportMetricsServiceRequest.FromString(
                    _decompress(body, encoding, self.server.owner.max_body)
                )
            )
        except (_BodyError, DecodeError):
            names = set()  # still counted: the demo never refuses an export
        self.server.owner._add_metrics(names)
        self._reply(200, b"", PROTOBUF)

    def do_POST(self) -> None:
        if self.path.partition("?")[0] == METRICS_PATH:
            self._metrics()
            return
        if self.path.partition("?")[0] != TRACES_PATH:
            self.close_connection = True  # the unread body would corrupt the next request
            self._reply(404, b"only POST /v1/traces is served here\n", "text/plain")
            return
        owner = self.server.owner
        owner._attempted()
        try:
            request = self._read_request()
        except _BodyError as exc:
            self._reply(exc.status, (exc.reason + "\n").encode(), "text/plain")
            return
        if owner.stall_seconds > 0:
            time.sleep(owner.stall_seconds)  # a slow collector: the exporter waits for this
        if owner.reply_status != 200:
            self._reply(owner.reply_status, b"refused by test setting\n", "text/plain")
            return
        owner._add(decode_spans(request))
        self._reply(200, ExportTraceServiceResponse().SerializeToString(), PROTOBUF)

    def _read_request(self) -> ExportTraceServiceRequest:
        length_text = self.headers.get("Content-Length")
        if length_text is None:
            self.close_connection = True
            raise _BodyError(411, "Content-Length required")
        try:
            length = int(length_text)
        except ValueError:
            self.close_connection = True
            raise _BodyError(400, "bad Content-Length") from None
        limit = self.server.owner.max_body
        if length < 0 or length > limit:
            self.close_connection = True
            raise _BodyError(413, f"body larger than {limit} bytes")
        body = self.rfile.read(length)
        content_type = self.headers.get("Content-Type", "").partition(";")[0].strip().lower()
        if content_type != PROTOBUF:
            raise _BodyError(415, f"unsupported Content-Type {content_type!r}; use {PROTOBUF}")
        encoding = self.headers.get("Content-Encoding", "").strip().lower()
        body = _decompress(body, encoding, limit)
        try:
            return ExportTraceServiceRequest.FromString(body)
        except DecodeError as exc:
            raise _BodyError(400, f"not an ExportTraceServiceRequest: {exc}") from None

    def do_GET(self) -> None:
        self._reply(405, b"use POST /v1/traces\n", "text/plain")

    def _reply(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # exporters call often; the demo's terminal is for the trace


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # many exporting processes may connect at once

    def __init__(self, address: tuple[str, int], owner: OTLPReceiver) -> None:
        self.owner = owner
        super().__init__(address, _Handler)


class OTLPReceiver:
    """An OTLP/HTTP receiver on ``host`` (default ``127.0.0.1``) and a free (or given) port.

    Args:
        host: interface to listen on; keep it on loopback.
        port: ``0`` (default) picks a free port; see ``port`` after ``start()``.
        max_body: largest accepted request body, compressed and decompressed (bytes).
        stall_seconds: wait this long before answering each export (a slow collector).
        reply_status: answer each export with this status; anything but 200 keeps no spans
            (503 plays an overloaded collector, which exporters retry).

    Spans are kept in arrival order; reading and waiting are thread-safe. ``requests`` counts
    the exports accepted, ``attempts`` every ``POST /v1/traces`` that arrived. Both settings
    can be changed while the receiver runs.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        max_body: int = MAX_BODY,
        stall_seconds: float = 0.0,
        reply_status: int = 200,
    ):
        if not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"port must be 0..65535, got {port!r}")
        if not isinstance(max_body, int) or max_body <= 0:
            raise ValueError(f"max_body must be a positive int, got {max_body!r}")
        self.host = host
        self.port = port
        self.max_body = max_body
        self.stall_seconds = stall_seconds
        self.reply_status = reply_status
        self.metric_exports = 0  # POST /v1/metrics received (accepted; only names kept)
        self.metric_names: set[str] = set()
        self.requests = 0
        self.attempts = 0
        self._spans: list[ReceivedSpan] = []
        self._changed = threading.Condition()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -------------------------------------------------------------------------- lifecycle
    def start(self) -> OTLPReceiver:
        if self._server is not None:
            return self
        self._server = _Server((self.host, self.port), self)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="tracewire-otlp-receiver",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> OTLPReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def endpoint(self) -> str:
        """Base URL, as for ``OTEL_EXPORTER_OTLP_ENDPOINT``."""
        return f"http://{self.host}:{self.port}"

    @property
    def traces_url(self) -> str:
        """Full URL, as for ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``."""
        return self.endpoint + TRACES_PATH

    # ---------------------------------------------------------------------------- reading
    def _attempted(self) -> None:
        with self._changed:
            self.attempts += 1

    def _add(self, spans: list[ReceivedSpan]) -> None:
        with self._changed:
            self.requests += 1
            self._spans.extend(spans)
            self._changed.notify_all()

    def _add_metrics(self, names: set[str]) -> None:
        with self._changed:
            self.metric_exports += 1
            self.metric_names |= names
            self._changed.notify_all()

    def spans(self, trace_id: str | None = None) -> list[ReceivedSpan]:
        """A snapshot of the spans received so far (of one trace if ``trace_id`` is given)."""
        with self._changed:
            if trace_id is None:
                return list(self._spans)
            return [s for s in self._spans if s.trace_id == trace_id]

    def clear(self) -> None:
        with self._changed:
            self._spans.clear()
            self.requests = 0

    def wait_for(self, condition: Callable[[list[ReceivedSpan]], T], timeout: float) -> T:
        """Return ``condition(spans)`` once it is truthy; ``TimeoutError`` after ``timeout``.

        ``condition`` is re-evaluated each time spans arrive, on a snapshot of all spans.
        """
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                result = condition(list(self._spans))
                if result:
                    return result
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"condition not met within {timeout}s "
                        f"({len(self._spans)} spans received in {self.requests} requests)"
                    )
                self._changed.wait(remaining)

    def wait_for_spans(
        self, count: int, trace_id: str | None = None, timeout: float = 10.0
    ) -> list[ReceivedSpan]:
        """At least ``count`` spans (of ``trace_id`` if given); ``TimeoutError`` otherwise."""

        def enough(spans: list[ReceivedSpan]) -> list[ReceivedSpan]:
            chosen = spans if trace_id is None else [s for s in spans if s.trace_id == trace_id]
            return chosen if len(chosen) >= count else []

        return self.wait_for(enough, timeout)

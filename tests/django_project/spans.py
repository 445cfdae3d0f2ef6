"""The SDK set-up of the served project: every finished span as one JSON line in ``TW_SPANS``."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


class JsonLines(SpanExporter):
    def __init__(self, path: str) -> None:
        self.path = path

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = []
        for s in spans:
            sc, parent = s.get_span_context(), s.parent
            record = {
                "name": s.name,
                "kind": s.kind.name,
                "trace_id": f"{sc.trace_id:032x}",
                "span_id": f"{sc.span_id:016x}",
                "parent_id": f"{parent.span_id:016x}" if parent else None,
                "start": s.start_time,
                "end": s.end_time,
                "status": s.status.status_code.name,
                "attributes": {k: _plain(v) for k, v in (s.attributes or {}).items()},
                "events": [e.name for e in s.events],
            }
            lines.append(json.dumps(record) + "\n")
        with open(self.path, "a") as f:
            f.write("".join(lines))
        return SpanExportResult.SUCCESS


def configure() -> None:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(JsonLines(os.environ["TW_SPANS"])))
    trace.set_tracer_provider(provider)

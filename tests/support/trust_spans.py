"""Finished spans as plain, JSON-safe records, and sinks to wait on them (trust tests).

The same record shape comes from an in-process ``InMemorySpanExporter`` and from a gunicorn
worker's ``/_spans`` endpoint (tests/support/trust_apps.py), so one assertion works for both
servers. Links are kept (the OTLP test receiver drops them), which the restart checks need.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

Record = dict[str, Any]


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def span_record(span: ReadableSpan) -> Record:
    """One finished SDK span as a dict: ids as lowercase hex, attributes and links plain."""
    ctx = span.get_span_context()
    assert ctx is not None
    parent = span.parent
    return {
        "name": span.name,
        "kind": span.kind.name,
        "trace_id": f"{ctx.trace_id:032x}",
        "span_id": f"{ctx.span_id:016x}",
        "parent_id": f"{parent.span_id:016x}" if parent is not None else None,
        "attributes": {k: _plain(v) for k, v in (span.attributes or {}).items()},
        "links": [
            {
                "trace_id": f"{link.context.trace_id:032x}",
                "span_id": f"{link.context.span_id:016x}",
                "attributes": {k: _plain(v) for k, v in (link.attributes or {}).items()},
            }
            for link in span.links
        ],
        "status": span.status.status_code.name,
    }


def records(exporter: InMemorySpanExporter) -> list[Record]:
    return [span_record(s) for s in exporter.get_finished_spans()]


class SpanSink:
    """Where one service's finished spans can be read: ``fetch()`` returns all records."""

    def __init__(self, fetch: Callable[[], list[Record]]) -> None:
        self.fetch = fetch

    def all(self) -> list[Record]:
        return self.fetch()

    def where(self, kind: str | None = None, **attributes: Any) -> list[Record]:
        found = []
        for record in self.fetch():
            if kind is not None and record["kind"] != kind:
                continue
            attrs = record["attributes"]
            if all(attrs.get(k.replace("__", ".")) == v for k, v in attributes.items()):
                found.append(record)
        return found

    def server(self, path: str, timeout: float = 10.0) -> Record:
        """The one SERVER span of ``path`` (waits for it; exactly one must arrive)."""
        return self.one(lambda r: r["kind"] == "SERVER" and _path(r) == path, timeout)

    def one(self, match: Callable[[Record], bool], timeout: float = 10.0) -> Record:
        deadline = time.monotonic() + timeout
        while True:
            found = [r for r in self.fetch() if match(r)]
            if found:
                assert len(found) == 1, found
                return found[0]
            if time.monotonic() > deadline:
                raise TimeoutError(f"no matching span within {timeout}s")
            time.sleep(0.01)

    def none_for(self, path: str) -> bool:
        """No span at all of ``path`` (call after a later request's span arrived)."""
        return not [r for r in self.fetch() if _path(r) == path]

    def clients_in(self, trace_id: str) -> list[Record]:
        return [r for r in self.fetch() if r["kind"] == "CLIENT" and r["trace_id"] == trace_id]


def _path(record: Record) -> str | None:
    path: str | None = record["attributes"].get("url.path")
    return path


def memory_sink(exporter: InMemorySpanExporter) -> SpanSink:
    return SpanSink(lambda: records(exporter))


def http_sink(url: str) -> SpanSink:
    """Spans served as JSON records by ``url`` (a gunicorn worker's ``/_spans``)."""

    def fetch() -> list[Record]:
        with urllib.request.urlopen(url, timeout=10) as response:
            found: list[Record] = json.loads(response.read())
            return found

    return SpanSink(fetch)


def link_pairs(record: Record) -> Sequence[tuple[str, str, dict[str, Any]]]:
    return [(ln["trace_id"], ln["span_id"], ln["attributes"]) for ln in record["links"]]

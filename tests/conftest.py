"""Shared fixtures: an SDK tracer provider whose spans land in memory."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tracewire import _log


class Tracing:
    """A provider plus its in-memory sink."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))

    def spans(self):  # type: ignore[no-untyped-def]
        return list(self.exporter.get_finished_spans())


@pytest.fixture
def tracing() -> Iterator[Tracing]:
    t = Tracing()
    yield t
    t.provider.shutdown()


@pytest.fixture(autouse=True)
def _fresh_rate_limits() -> Iterator[None]:
    # Each test sees its own first warning of a kind.
    _log.reset()
    yield


@pytest.fixture(autouse=True)
def _background_switch_restored() -> Iterator[None]:
    # Building an ASGI middleware switches task spans on for the process: each test starts
    # from the state a fresh process has (off, nobody chose) and leaves it so.
    from tracewire import _starlette_tasks

    _starlette_tasks._chosen.clear()
    _starlette_tasks._switch(False)
    yield
    _starlette_tasks._chosen.clear()
    _starlette_tasks._switch(False)

"""Exporters that survive ``fork()`` (gunicorn ``--preload``, ``multiprocessing`` with fork).

The SDK's ``BatchSpanProcessor`` already starts a new worker thread in a forked child. What it
cannot renew is the exporter: an OTLP exporter built before the fork shares its HTTP connection
pool (or gRPC channel) with the parent and every sibling. ``tracewire.sdk.configure`` wraps each
exporter it attaches:

* an exporter it built from a name (``"otlp"``) is built again, from the same arguments, the
  first time it is used in a new process;
* an exporter instance the caller passed cannot be rebuilt: its first use in a forked child
  logs one warning per process saying how to configure after the fork instead.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

logger = logging.getLogger("tracewire")

# Exporters that hold no connection and no thread: nothing to renew, nothing to warn about.
FORK_SAFE: tuple[type[SpanExporter], ...] = (InMemorySpanExporter, ConsoleSpanExporter)

_warned_pid: int | None = None
_warned_lock = threading.Lock()


def _after_fork_in_child() -> None:
    global _warned_lock
    _warned_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class ForkAwareExporter(SpanExporter):
    """Delegates to ``current``; renews it (or warns) on first use in a forked child."""

    def __init__(
        self, exporter: SpanExporter, factory: Callable[[], SpanExporter] | None = None
    ) -> None:
        self.current = exporter
        self._factory = factory
        self._pid = os.getpid()
        self.renewed = 0  # how many times this process built a fresh exporter

    def _for_this_process(self) -> SpanExporter:
        pid = os.getpid()
        if pid == self._pid:
            return self.current
        self._pid = pid
        if self._factory is not None:
            try:
                self.current = self._factory()
                self.renewed += 1
                logger.info(
                    "tracewire.sdk: process %d was forked after configure(); its %s was "
                    "re-created for this process",
                    pid,
                    type(self.current).__name__,
                )
            except Exception as exc:  # keep the old one rather than lose export entirely
                logger.warning(
                    "tracewire.sdk: could not re-create %s after fork (%s); using the one "
                    "inherited from the parent",
                    type(self.current).__name__,
                    type(exc).__name__,
                )
        elif not isinstance(self.current, FORK_SAFE):
            _warn_once(pid, type(self.current).__name__)
        return self.current

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self._for_this_process().export(spans)

    def shutdown(self) -> None:
        self._for_this_process().shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._for_this_process().force_flush(timeout_millis)


def _warn_once(pid: int, name: str) -> None:
    global _warned_pid
    with _warned_lock:
        if _warned_pid == pid:
            return
        _warned_pid = pid
    logger.warning(
        "tracewire.sdk: the %s passed to configure() was created before this process (pid %d) "
        "was forked and is now used here; tracewire cannot re-create an exporter instance. If "
        "it holds connections or threads (gRPC channels do), call tracewire.sdk.configure() "
        "after the fork (gunicorn: in post_fork; uvicorn: in the app module or factory), or "
        "pass exporter='otlp', which is re-created in each process",
        name,
        pid,
    )


def unwrap(exporter: SpanExporter) -> SpanExporter:
    return exporter.current if isinstance(exporter, ForkAwareExporter) else exporter

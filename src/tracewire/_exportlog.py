"""A rate limit on the OpenTelemetry export path's own log records.

With the collector down, the OTLP exporter logs a retry warning every couple of seconds per
process, and the batch processor logs each failed export: thousands of lines a day that say
the same thing. ``tracewire.sdk.configure`` puts :class:`ExportLogLimiter` on those loggers:
each *kind* of record (logger, level, message template) passes at most once per interval;
the next one that passes says how many were suppressed in between. Records from other
loggers are untouched.
"""

from __future__ import annotations

import logging
import os
import threading
import time

from tracewire._log import INTERVAL_SECONDS

# The loggers of the span export path (HTTP and gRPC exporters, batch and simple processors).
EXPORT_LOGGERS = (
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.proto.http._common",
    "opentelemetry.exporter.otlp.common.http",
    "opentelemetry.exporter.otlp.proto.grpc.exporter",
    "opentelemetry.exporter.otlp.proto.grpc.trace_exporter",
    "opentelemetry.sdk._shared_internal",
    "opentelemetry.sdk.trace.export",
)


class ExportLogLimiter(logging.Filter):
    """Lets each kind of record through once per ``interval`` seconds; counts the rest."""

    def __init__(self, interval: float = INTERVAL_SECONDS) -> None:
        super().__init__()
        self.interval = interval
        self._lock = threading.Lock()
        # (logger, level, template) -> (monotonic time it last passed, suppressed since)
        self._state: dict[tuple[str, int, str], tuple[float, int]] = {}
        self.suppressed: dict[str, int] = {}  # logger name -> records suppressed in total

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.levelno, str(record.msg))
        now = time.monotonic()
        with self._lock:
            last, count = self._state.get(key, (-self.interval, 0))
            if now - last < self.interval:
                self._state[key] = (last, count + 1)
                self.suppressed[record.name] = self.suppressed.get(record.name, 0) + 1
                return False
            self._state[key] = (now, 0)
        if count:
            try:
                text = record.getMessage()
            except Exception:
                text = str(record.msg)
            record.msg = (
                f"{text} ({count} similar records suppressed by tracewire in the last "
                f"{self.interval:.0f} s)"
            )
            record.args = None
        return True

    def reset(self) -> None:
        with self._lock:
            self._state.clear()
            self.suppressed.clear()


_limiter: ExportLogLimiter | None = None
_install_lock = threading.Lock()


def install() -> ExportLogLimiter:
    """Put the one process-wide limiter on every export-path logger (idempotent)."""
    global _limiter
    with _install_lock:
        if _limiter is None:
            _limiter = ExportLogLimiter()
        for name in EXPORT_LOGGERS:
            target = logging.getLogger(name)
            if _limiter not in target.filters:
                target.addFilter(_limiter)
        return _limiter


def suppressed() -> dict[str, int]:
    with _install_lock:
        return {} if _limiter is None else dict(_limiter.suppressed)


def _after_fork_in_child() -> None:
    global _install_lock
    _install_lock = threading.Lock()
    if _limiter is not None:
        _limiter._lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)

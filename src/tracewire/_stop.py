"""Flush the spans of providers set up by ``tracewire.sdk.configure`` when the process stops.

``atexit`` alone is not enough: a process killed by SIGTERM's default action runs no ``atexit``
handler, and uvicorn (like any server that restores the previous handler and re-raises the
signal after its own graceful shutdown) ends that way. So, for each registered provider:

* **at interpreter exit** (``atexit``): the provider is shut down, waiting at most the
  provider's ``flush_timeout`` (the SDK's own shutdown waits up to 30 s per processor);
* **on SIGTERM**: the spans already queued are flushed (bounded by the same budget); then the
  handler that was there before ours runs (a server's graceful shutdown) or, if there was none,
  the signal is re-raised with its default action, so the process still dies *by* SIGTERM;
* **while a server drains after SIGTERM**: every span that ends before the deadline is flushed
  as it ends, so the last requests' spans are out before the server re-raises the signal.

Nothing here ever raises into the caller; a flush that does not finish in time is abandoned
(its daemon thread goes on until the process ends).
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import signal
import threading
import time
import weakref
from collections.abc import Callable
from types import FrameType
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider

logger = logging.getLogger("tracewire")

STOP_SIGNALS = (signal.SIGTERM,)

_Handler = Callable[[int, FrameType | None], Any] | int | None

_lock = threading.RLock()
# provider -> its flush budget in seconds
# (tracer providers, and the meter providers built with them)
_providers: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()
_atexit_registered = False
_installed: dict[int, _Handler] = {}  # signal -> the handler that was there before ours
_stop_deadline: float | None = None  # monotonic; set once a stop signal arrived
_in_handler = False
_stats = {"signal_flushes": 0, "drain_flushes": 0, "timeouts": 0}


def register_flushable(provider: Any, flush_timeout: float) -> None:
    """Flush and shut down ``provider`` (a ``MeterProvider``) with the tracer providers."""
    global _atexit_registered
    with _lock:
        _providers[provider] = flush_timeout
        _runner.start()
        if not _atexit_registered:
            atexit.register(_at_exit)
            _atexit_registered = True
        _install_signal_handlers()


def register(provider: TracerProvider, flush_timeout: float) -> None:
    """Flush ``provider`` (within ``flush_timeout`` seconds) at exit and on SIGTERM."""
    global _atexit_registered
    with _lock:
        _providers[provider] = flush_timeout
        provider.add_span_processor(_DrainProcessor(provider))
        _runner.start()
        if not _atexit_registered:
            atexit.register(_at_exit)
            _atexit_registered = True
        _install_signal_handlers()


def _after_fork_in_child() -> None:
    # A lock held by another thread at fork time would stay held forever in the child.
    global _lock, _stop_deadline, _in_handler
    _lock = threading.RLock()
    _stop_deadline = None
    _in_handler = False


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


# --------------------------------------------------------------------------------- signals


def _install_signal_handlers() -> None:
    if threading.current_thread() is not threading.main_thread():
        # signal.signal works only there; atexit still flushes a normal exit.
        logger.debug("tracewire.sdk: not on the main thread, SIGTERM flush not installed")
        return
    for signum in STOP_SIGNALS:
        try:
            current = signal.getsignal(signum)
        except (ValueError, OSError):
            continue
        if current is _on_signal:
            continue
        if current is None or current == signal.SIG_IGN:
            # Installed outside Python (cannot be chained) or deliberately ignored: leave it.
            continue
        try:
            signal.signal(signum, _on_signal)
        except (ValueError, OSError):
            continue
        _installed[signum] = current


def _on_signal(signum: int, frame: FrameType | None) -> None:
    global _in_handler, _stop_deadline
    previous = _installed.get(signum, signal.SIG_DFL)
    if not _in_handler:
        _in_handler = True
        try:
            with _lock:
                if _stop_deadline is None:
                    _stop_deadline = time.monotonic() + _budget()
                _stats["signal_flushes"] += 1
            _flush_until(_stop_deadline)
        except Exception:  # never let tracing break the stop
            logger.debug("tracewire.sdk: flush on signal failed", exc_info=True)
        finally:
            _in_handler = False
    if callable(previous):
        previous(signum, frame)
        return
    if previous == signal.SIG_IGN:
        return
    # The default action (for SIGTERM: terminate): restore it and raise again, so the process
    # ends exactly as it would have without tracewire (killed by the signal).
    signal.signal(signum, signal.SIG_DFL)
    signal.raise_signal(signum)


def _budget() -> float:
    with _lock:
        return max(_providers.values(), default=0.0)


# ---------------------------------------------------------------------------------- flushing


class _Runner:
    """One daemon thread, started when a provider is registered, that runs the flushes and
    the shutdown the stop waits for with a deadline.

    The SDK's ``force_flush`` and ``shutdown`` ignore their timeouts (they block for as long as
    the exporter retries), so they run here while the stop waits at most until its deadline.
    The thread exists before the stop: Python 3.12 refuses to start a thread from an
    ``atexit`` callback.
    """

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[[], None], threading.Event]] = (
            queue.SimpleQueue()
        )
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._pending: threading.Event | None = None  # the flush queued or running

    def start(self) -> None:
        """Make sure the thread runs in this process (again, after a fork)."""
        thread = self._thread
        if thread is not None and thread.is_alive() and self._pid == os.getpid():
            return
        self._jobs = queue.SimpleQueue()
        self._pending = None
        self._pid = os.getpid()
        self._thread = threading.Thread(target=self._loop, name="tracewire-stop", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            job, done = self._jobs.get()
            try:
                job()
            except Exception:
                logger.debug("tracewire.sdk: flush failed", exc_info=True)
            finally:
                done.set()

    def run(self, job: Callable[[], None], deadline: float, *, share: bool = False) -> bool:
        """Run ``job`` on the thread; ``True`` if it ended before ``deadline`` (monotonic).

        ``share``: a job of this kind already queued or running is waited for instead.
        """
        try:
            self.start()
        except RuntimeError:  # no thread to be had (the interpreter is ending): run inline
            job()
            return True
        with _lock:
            done = self._pending if share else None
            if done is None or done.is_set():
                done = threading.Event()
                self._jobs.put((job, done))
                if share:
                    self._pending = done
        return done.wait(max(0.0, deadline - time.monotonic()))


_runner = _Runner()


def _flush_until(deadline: float) -> bool:
    """Force-flush every registered provider; wait until ``deadline`` at most.

    One flush at a time: a flush still running from an earlier call is waited for, not
    duplicated.
    """
    with _lock:
        providers = list(_providers)
    if _runner.run(lambda: _force_flush_all(providers), deadline, share=True):
        return True
    with _lock:
        _stats["timeouts"] += 1
    return False


def _force_flush_all(providers: list[TracerProvider]) -> None:
    for provider in providers:
        try:
            provider.force_flush()
        except Exception:
            logger.debug("tracewire.sdk: force_flush failed", exc_info=True)


def _at_exit() -> None:
    # One deadline for the whole stop: counted from the stop signal if one came first, so a
    # SIGTERM followed by a normal exit waits at most flush_timeout in total.
    budget = _budget()
    with _lock:
        providers = list(_providers)
        _providers.clear()
        deadline = _stop_deadline if _stop_deadline is not None else time.monotonic() + budget
    if not providers:
        return
    if not _runner.run(lambda: _shutdown_quietly(providers), deadline):
        with _lock:
            _stats["timeouts"] += 1
        logger.warning(
            "tracewire.sdk: spans not exported within %.1f s of the stop (exporter down or "
            "slow); the rest is dropped",
            budget,
        )


def _shutdown_quietly(providers: list[TracerProvider]) -> None:
    for provider in providers:
        try:
            provider.shutdown()
        except Exception:
            logger.debug("tracewire.sdk: provider shutdown failed", exc_info=True)


class _DrainProcessor(SpanProcessor):
    """Last processor of a registered provider: after a stop signal, flush as spans end."""

    def __init__(self, provider: TracerProvider) -> None:
        self._provider = weakref.ref(provider)

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        deadline = _stop_deadline
        if deadline is None or time.monotonic() >= deadline or _in_handler:
            return
        with _lock:
            _stats["drain_flushes"] += 1
        try:
            _flush_until(deadline)
        except Exception:
            logger.debug("tracewire.sdk: drain flush failed", exc_info=True)

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True

"""Rate-limited warnings for faults caused by the outside world.

Hostile or broken peers can send a bad header with every request; logging each one would let
them flood the host's logs. Each *kind* of fault is reported at most once per interval, with a
count of what was suppressed in between. Messages never contain raw header values.
"""

from __future__ import annotations

import logging
import threading
import time

logger = logging.getLogger("tracewire")

INTERVAL_SECONDS = 60.0

_lock = threading.Lock()
# kind -> (monotonic time of the last report, occurrences suppressed since)
_state: dict[str, tuple[float, int]] = {}


def warn_limited(kind: str, message: str, *, exc_info: bool = False) -> None:
    """Log ``message`` for ``kind`` unless that kind was already reported in this interval."""
    now = time.monotonic()
    with _lock:
        last, suppressed = _state.get(kind, (-INTERVAL_SECONDS, 0))
        if now - last < INTERVAL_SECONDS:
            _state[kind] = (last, suppressed + 1)
            return
        _state[kind] = (now, 0)
    if suppressed:
        message = f"{message} ({suppressed} similar events suppressed in the last interval)"
    logger.warning("[%s] %s", kind, message, exc_info=exc_info)


_once: set[str] = set()


def warn_once(kind: str, message: str) -> None:
    """Log ``message`` the first time ``kind`` happens in this process (configuration advice
    that would only repeat itself)."""
    with _lock:
        if kind in _once:
            return
        _once.add(kind)
    logger.warning("[%s] %s", kind, message)


def reset() -> None:
    """Forget what was reported (for tests)."""
    with _lock:
        _state.clear()
        _once.clear()

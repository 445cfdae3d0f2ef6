"""Is a parser's time linear in its input's length? Per-byte costs compared in one run.

No absolute timings: the cost per byte of a large input is compared with the cost per byte of
a small one, measured alternately in the same process so that a busy machine slows both. A
linear parser costs about the same per byte at both sizes (less at the large one, where the
fixed cost per call is spread thin); a quadratic one costs ~100x more per byte at 100 KB than
at 1 KB.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

# Each timed batch runs at least this long, so the clock's resolution does not matter.
_BATCH_SECONDS = 0.01
_MAX_CALLS = 200_000


def _batch(fn: Callable[[Any], object], arg: Any, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn(arg)
    return time.perf_counter() - start


def _calls_per_batch(fn: Callable[[Any], object], arg: Any) -> int:
    calls = 1
    while calls < _MAX_CALLS:
        if _batch(fn, arg, calls) >= _BATCH_SECONDS:
            return calls
        calls *= 2
    return calls


def per_byte_costs(
    fn: Callable[[Any], object],
    small: tuple[Any, int],
    large: tuple[Any, int],
    rounds: int = 5,
) -> tuple[float, float]:
    """Best seconds per byte of ``fn(arg)`` for the small and the large ``(arg, length)``."""
    (small_arg, small_len), (large_arg, large_len) = small, large
    small_calls = _calls_per_batch(fn, small_arg)
    large_calls = _calls_per_batch(fn, large_arg)
    best_small = best_large = float("inf")
    for _ in range(rounds):  # alternate, so that load on the machine hits both alike
        best_small = min(best_small, _batch(fn, small_arg, small_calls) / small_calls)
        best_large = min(best_large, _batch(fn, large_arg, large_calls) / large_calls)
    return best_small / small_len, best_large / large_len


def growth(fn: Callable[[Any], object], make: Callable[[int], tuple[Any, int]]) -> float:
    """Per-byte cost at 100 KB divided by per-byte cost at 1 KB (about 1 or less: linear)."""
    small, large = per_byte_costs(fn, make(1024), make(100 * 1024))
    return large / small

"""Carry the current trace context into work the app hands off.

What already carries it (nothing to do): ``asyncio.create_task``, ``asyncio.to_thread``,
Starlette's ``run_in_threadpool`` and sync endpoints, Starlette ``BackgroundTasks``, asgiref's
``sync_to_async``/``async_to_sync``. What does not: ``ThreadPoolExecutor.submit``,
``loop.run_in_executor`` with such an executor, ``threading.Thread``, callbacks stored and run
later by a library: use :func:`wrap` or :class:`ContextExecutor` there.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import ParamSpec, TypeVar

from opentelemetry.context import Context, attach, detach, get_current

__all__ = [
    "ContextExecutor",
    "wrap",
]

P = ParamSpec("P")
R = TypeVar("R")


def wrap(fn: Callable[P, R], context: Context | None = None) -> Callable[P, R]:
    """``fn``, made to run in the context current now (or ``context``), wherever it is called.

    Safe to call concurrently from several threads; the caller's own context is restored after.
    """
    captured = get_current() if context is None else context

    @functools.wraps(fn)
    def run_in_context(*args: P.args, **kwargs: P.kwargs) -> R:
        token = attach(captured)
        try:
            return fn(*args, **kwargs)
        finally:
            detach(token)

    return run_in_context


class ContextExecutor(ThreadPoolExecutor):
    """A ``ThreadPoolExecutor`` whose tasks run in the context of the code that submitted them.

    One line::

        executor = ContextExecutor(max_workers=4)   # also for loop.run_in_executor(executor, ...)
    """

    def submit(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> Future[R]:
        return super().submit(wrap(fn), *args, **kwargs)

"""Carry the current trace context into work the app hands off, each call in its own span.

What already carries it (nothing to do): ``asyncio.create_task``, ``asyncio.to_thread``,
Starlette's ``run_in_threadpool`` and sync endpoints, Starlette ``BackgroundTasks``, asgiref's
``sync_to_async``/``async_to_sync``. What does not: ``ThreadPoolExecutor.submit``,
``loop.run_in_executor`` with such an executor, ``threading.Thread``, callbacks stored and run
later by a library: use :func:`wrap` or :class:`ContextExecutor` there.

Each call they carry also gets a background span of its own (:mod:`tracewire.background`):
an INTERNAL span named after the function, a child of the span current where the work was
handed off (``background_spans="child"``, the default), or a new trace linked to it
(``"linked"``); ``"off"`` carries the context only. The setting is the one in force where
the work was handed off: the serving middleware's, else the process default.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import ParamSpec, TypeVar

from opentelemetry.context import Context, get_current

from tracewire import background

__all__ = [
    "ContextExecutor",
    "wrap",
]

P = ParamSpec("P")
R = TypeVar("R")


def wrap(
    fn: Callable[P, R], context: Context | None = None, *, name: str | None = None
) -> Callable[P, R]:
    """``fn``, made to run in the context current now (or ``context``), wherever it is called,
    each call in its own background span (named ``name``, default ``fn``'s ``__qualname__``).

    Safe to call concurrently from several threads; the caller's own context is restored
    after. The result and any exception are ``fn``'s own.
    """
    captured = get_current() if context is None else context
    # A function traced() already makes its own span: carry the context only.
    span_name = None if background.is_traced(fn) else name or background.task_name(fn)

    @functools.wraps(fn)
    def run_in_context(*args: P.args, **kwargs: P.kwargs) -> R:
        return background.call(fn, span_name, captured, *args, **kwargs)

    # Handed on as a Starlette background task, it still makes one span, not two.
    return background.mark_traced(run_in_context)


class ContextExecutor(ThreadPoolExecutor):
    """A ``ThreadPoolExecutor`` whose tasks run in the context of the code that submitted them,
    each in its own background span.

    One line::

        executor = ContextExecutor(max_workers=4)   # also for loop.run_in_executor(executor, ...)
    """

    def submit(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> Future[R]:
        return super().submit(wrap(fn), *args, **kwargs)

"""The switch that gives every Starlette / FastAPI background task its own span.

``BackgroundTask.__call__`` is the one place every task passes through: a ``BackgroundTask``
given to a response, and each task of a ``BackgroundTasks`` (FastAPI's ``add_task`` included,
whose container calls its tasks one by one). The response runs them after its last body
message, inside the app's call, where no middleware can reach them; so the switch replaces
that one method, keeping the original to call and to put back. The replacement starts the
task's span on the event loop (where the request's context is current), then runs the
original, which awaits an async task there or runs a sync one in the thread pool with a copy
of the context, so the task's own spans are the task span's children either way.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Coroutine
from typing import Any

from starlette.background import BackgroundTask

from tracewire import background

__all__ = ["switch_on_by_default", "trace_background_tasks"]

_ORIGINAL: Callable[[BackgroundTask], Coroutine[Any, Any, None]] = BackgroundTask.__call__
_lock = threading.Lock()
# The user's own call of the switch, if any: building a middleware never overrides it.
_chosen: list[bool] = []


async def _traced_call(self: BackgroundTask) -> None:
    func: Any = getattr(self, "func", None)
    if func is None or background.is_traced(func):  # its own span already (or not a task)
        await _ORIGINAL(self)
        return
    await background.acall(_ORIGINAL, background.task_name(func), self)


def trace_background_tasks(enabled: bool = True) -> bool:
    """Give each Starlette / FastAPI background task its own span (``False``: undo).

    Building a tracewire ASGI middleware (``TracewireMiddleware``, ``add_middleware``) turns
    it on already; call it to decide yourself, before or after the app is built (a call wins
    over every middleware built later)::

        from tracewire.starlette import trace_background_tasks

        trace_background_tasks(False)   # no task spans, in any app of this process

    The span follows the ``background_spans`` setting of the middleware serving the request
    (``child``, ``linked``, ``off``), so each app keeps its own choice. Calling it again with
    the same value does nothing. Returns whether it was on before.
    """
    if not isinstance(enabled, bool):
        raise TypeError(f"enabled must be a bool, got {type(enabled).__name__}")
    with _lock:
        _chosen[:] = [enabled]
        return _switch(enabled)


def switch_on_by_default() -> None:
    """What building a tracewire ASGI middleware does: the switch on, unless the user said.

    Harmless for apps that never use it: a task run outside a tracewire request, or in one
    whose ``background_spans`` is ``off``, runs exactly as before.
    """
    with _lock:
        if not _chosen:
            _switch(True)


def _switch(enabled: bool) -> bool:
    was = vars(BackgroundTask).get("__call__") is _traced_call
    if enabled != was:
        setattr(BackgroundTask, "__call__", _traced_call if enabled else _ORIGINAL)  # noqa: B010
    return was

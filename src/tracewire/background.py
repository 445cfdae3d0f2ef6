"""A span of its own for work a request hands off and that outlives the response.

A Starlette / FastAPI background task, or a call made through :func:`tracewire.context.wrap`
/ :class:`~tracewire.context.ContextExecutor`, runs with the request's context but after the
SERVER span ended: without help its spans hang under a finished span and the request's
duration hides them. Here each such piece of work gets one INTERNAL span, named after the
function (its ``__qualname__``), started when the work starts and ended when it ends, with an
exception recorded (``exception`` event, status ERROR, ``error.type``) and then re-raised as
it was; the work's result is returned unchanged. The setting ``background_spans`` of the
middleware serving the request (else the process default) decides the shape:

* ``child`` (default): the span is a child of the request's SERVER span, in its trace;
* ``linked``: the span starts a new trace, linked to the request's span
  (``tracewire.link.reason=background``) so long jobs do not stretch the request's trace;
* ``off``: no span; the work still runs in the request's context.

A span is made only when the context holds a span of this process (a SERVER span, or one
the app started): work with no span around it, or in a request ``excluded_paths`` left
without one, runs as before.

How it is switched on (the design):

* :func:`traced` is the building block: a decorator for one function, sync or async, with no
  patching at all; it works in any framework (``@traced`` on a function given to
  ``BackgroundTasks.add_task``, ``threading.Thread``, a library's callback).
* :func:`tracewire.context.wrap` and :class:`~tracewire.context.ContextExecutor` use it for
  every call they carry, as tracewire's own hand-off helpers.
* :func:`tracewire.starlette.trace_background_tasks` serves Starlette and FastAPI users, who
  write ``background_tasks.add_task(fn)`` and expect spans without touching each call: the
  response's tasks are reachable neither from an ASGI middleware (the app runs them after the
  last body message, inside its own call) nor from the app's public API, so it wraps
  ``BackgroundTask.__call__`` (one method). Building a tracewire ASGI middleware switches it
  on; the user's own ``trace_background_tasks(False)`` wins. Each app still chooses its shape
  with its own ``background_spans``.

The tracer is the one of the middleware that served the request (it rides in the request's
context), else tracewire's tracer from the global provider. Tracing never harms the work: a
fault here is logged (rate limited) and the work runs untraced.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Coroutine
from contextvars import Token
from typing import Any, ParamSpec, TypeVar, cast, overload

from opentelemetry.context import Context, attach, detach, get_current
from opentelemetry.trace import (
    INVALID_SPAN,
    Link,
    Span,
    SpanKind,
    Tracer,
    get_current_span,
    set_span_in_context,
)

from tracewire import _diagnostics, semconv
from tracewire._instrument import error_status, fault, make_tracer, tracer_in
from tracewire.defaults import effective

__all__ = [
    "LINK_REASON_BACKGROUND",
    "BackgroundSpan",
    "acall",
    "call",
    "is_traced",
    "mark_traced",
    "running",
    "start",
    "task_name",
    "traced",
]

P = ParamSpec("P")
R = TypeVar("R")

# The value of ``tracewire.link.reason`` on a linked background span's link.
LINK_REASON_BACKGROUND = "background"
# Set on what traced() returns, so that a second layer (the Starlette switch) adds no span.
_TRACED_MARK = "__tracewire_traced__"

_global_tracer: Tracer | None = None


def task_name(fn: Callable[..., Any]) -> str:
    """The span name for ``fn``: its ``__qualname__`` (through ``functools.partial``), else
    its class's."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    name = getattr(fn, "__qualname__", None)
    return name if isinstance(name, str) and name else type(fn).__qualname__


class BackgroundSpan:
    """One piece of background work's span: ``context`` is what the work runs in."""

    __slots__ = ("context", "span")

    def __init__(self, span: Span, context: Context) -> None:
        self.span = span
        self.context = context

    def end(self, exc: BaseException | None = None) -> None:
        """End the span, recording ``exc`` (what the work raised) if any; never raises."""
        span = self.span
        try:
            if exc is not None and span.is_recording():
                span.record_exception(exc)
                span.set_attribute(semconv.ERROR_TYPE, semconv.qualified_name(exc))
                span.set_status(error_status(exc))
            span.end()
        except Exception as fault_exc:
            fault("background-end", fault_exc)


def start(name: str, context: Context | None = None) -> BackgroundSpan | None:
    """Start the span of background work named ``name`` that runs in ``context`` (default: the
    current one), as the settings in force there say; ``None`` when it gets no span
    (``background_spans="off"``, no span of this process around it, or a fault)."""
    ctx = get_current() if context is None else context
    try:
        mode = effective(ctx).settings.background_spans
        if mode == "off":
            return None
        parent = get_current_span(ctx).get_span_context()
        if not parent.is_valid or parent.is_remote:
            return None
        tracer = tracer_in(ctx) or _tracer()
        if mode == "linked":
            link = Link(parent, {semconv.LINK_REASON: LINK_REASON_BACKGROUND})
            # The request's baggage stays; only the parent goes.
            root = set_span_in_context(INVALID_SPAN, ctx)
            span = tracer.start_span(name, root, kind=SpanKind.INTERNAL, links=[link])
        else:
            span = tracer.start_span(name, ctx, kind=SpanKind.INTERNAL)
        if _diagnostics.started_nothing(span, ctx):
            # No SDK behind the tracer: the work keeps the request's context as it is.
            return None
        return BackgroundSpan(span, set_span_in_context(span, ctx))
    except Exception as exc:
        fault("background-start", exc)
        return None


def _tracer() -> Tracer:
    global _global_tracer
    if _global_tracer is None:
        _global_tracer = make_tracer(None)
    return _global_tracer


class running:  # lower case: it reads as a function, ``with running("job"):``
    """``with running(name, context):``: the block runs in ``context`` (default: the current
    one) inside a background span named ``name`` (none when ``name`` is ``None``), which
    records an exception leaving the block and lets it go on untouched."""

    __slots__ = ("context", "name", "started", "token")

    def __init__(self, name: str | None, context: Context | None = None) -> None:
        self.name = name
        self.context = context
        self.started: BackgroundSpan | None = None
        self.token: Token[Context] | None = None

    def __enter__(self) -> BackgroundSpan | None:
        started = None if self.name is None else start(self.name, self.context)
        run_in = self.context if started is None else started.context
        self.started = started
        self.token = None if run_in is None else attach(run_in)
        return started

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> None:
        # Returns None: whatever the block raised goes on as it was (traceback included).
        started = self.started
        if started is not None:
            started.end(exc)
        token = self.token
        if token is not None:
            detach(token)


def call(
    fn: Callable[P, R],
    name: str | None,
    context: Context | None,
    /,
    *args: P.args,
    **kwargs: P.kwargs,
) -> R:
    """Run ``fn(*args, **kwargs)`` in ``context`` (default: the current one) inside its
    background span (none when ``name`` is ``None``); the result and any exception are the
    function's own."""
    with running(name, context):
        return fn(*args, **kwargs)


async def acall(fn: Callable[..., Awaitable[R]], name: str, /, *args: Any, **kwargs: Any) -> R:
    """``await fn(*args, **kwargs)`` inside its background span, in the current context."""
    with running(name):
        return await fn(*args, **kwargs)


@overload
def traced(fn: Callable[P, R], /) -> Callable[P, R]: ...
@overload
def traced(
    fn: None = None, /, *, name: str | None = None
) -> Callable[[Callable[P, R]], Callable[P, R]]: ...


def traced(
    fn: Callable[P, R] | None = None, /, *, name: str | None = None
) -> Callable[P, R] | Callable[[Callable[P, R]], Callable[P, R]]:
    """Give each call of ``fn`` (sync or async) its own background span.

    Usage::

        @traced
        def send_receipt(order_id: str) -> None: ...

        @traced(name="receipt")
        async def send_receipt_async(order_id: str) -> None: ...

        background_tasks.add_task(send_receipt, order_id)

    Args:
        fn: the function; an ``async def`` stays a coroutine function (Starlette still awaits
            it on the event loop).
        name: the span name; default the function's ``__qualname__``.
    """
    if fn is None:
        return functools.partial(_traced, name=name)
    return _traced(fn, name=name)


def _traced(fn: Callable[P, R], name: str | None = None) -> Callable[P, R]:
    if not callable(fn):
        raise TypeError(f"traced() needs a callable, got {type(fn).__name__}")
    if name is not None and not isinstance(name, str):
        raise TypeError(f"name must be a str or None, got {type(name).__name__}")
    if getattr(fn, _TRACED_MARK, False):
        return fn
    span_name = name or task_name(fn)
    if inspect.iscoroutinefunction(fn):
        coroutine_fn = cast(Callable[..., Coroutine[Any, Any, Any]], fn)

        @functools.wraps(fn)
        async def run_async(*args: Any, **kwargs: Any) -> Any:
            return await acall(coroutine_fn, span_name, *args, **kwargs)

        wrapper: Callable[..., Any] = run_async
    else:

        @functools.wraps(fn)
        def run(*args: P.args, **kwargs: P.kwargs) -> R:
            return call(fn, span_name, None, *args, **kwargs)

        wrapper = run
    return cast(Callable[P, R], mark_traced(wrapper))


def mark_traced(fn: Callable[P, R]) -> Callable[P, R]:
    """Mark ``fn`` as making its own background span, so no other layer adds one."""
    setattr(fn, _TRACED_MARK, True)
    return fn


def is_traced(fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` already makes its own background span (it came from :func:`traced`)."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    return bool(getattr(fn, _TRACED_MARK, False))

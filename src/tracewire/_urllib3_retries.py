"""One CLIENT span per urllib3 retry: where ``requests`` cannot see attempts, the pool can.

``requests.adapters.HTTPAdapter`` hands a request to urllib3 once; ``urllib3.Retry`` then
retries inside, by calling ``HTTPConnectionPool.urlopen`` again on the same pool. So the
pools of a traced adapter report each ``urlopen`` to the exchange in flight (carried in the
context), and from the second one on, the previous attempt ends and a new one starts with
fresh headers.

urllib3 internals this relies on (checked by ``tests/test_urllib3_retries.py`` against every
urllib3 major version CI installs, 1.26 and 2.x):

* ``PoolManager.pool_classes_by_scheme``, the classes it builds pools from, and
  ``PoolManager.clear()``, which drops pools already built;
* ``HTTPConnectionPool.urlopen(method, url, body, headers, retries, ...)``, called again for
  each retry with its own copy of the headers, and ``Retry.history`` entries with ``error`` and
  ``status``;
* the text of the ``ResponseError`` that ``MaxRetryError`` gives as its reason when the last
  attempt got a retryable status (``"too many 503 error responses"``), the only place the
  status of that attempt is left.

When any of these is missing, the adapter still traces one span per adapter call.
"""

from __future__ import annotations

import re
from typing import Any

from opentelemetry.context import create_key, get_current
from urllib3.connectionpool import HTTPConnectionPool

from tracewire._instrument import fault
from tracewire.client import ClientCall

__all__ = ["EXCHANGE_KEY", "Exchange", "final_status", "restore_pools", "trace_pools"]

# The exchange (one adapter call) in flight, for the connection pools below the adapter.
EXCHANGE_KEY = create_key("tracewire-requests-exchange")


class Exchange:
    """One ``adapter.send``: its current attempt, and how often the pool was entered."""

    __slots__ = ("call", "pool_calls")

    def __init__(self, call: ClientCall) -> None:
        self.call = call
        self.pool_calls = 0

    def pool_call(self, headers: Any, retries: Any) -> None:
        """The connection pool is about to send; from the second time on, that is a retry."""
        self.pool_calls += 1
        if self.pool_calls == 1:
            return  # the first attempt was started (and injected) by the adapter
        try:
            previous = self.call
            keys = previous.injected
            previous.cleanup()
            # urllib3 sends a retry with its own copy of the headers, which still has ours.
            for key in keys:
                headers.pop(key, None)
            history = getattr(retries, "history", None)
            last = history[-1] if history else None
            if last is not None and last.error is not None:
                previous.end(last.error)
            else:
                if last is not None and last.status is not None:
                    previous.respond(last.status, None, None, hook=False)
                previous.end()
            self.call = previous.next_attempt(headers)
        except Exception as exc:
            fault("client-retry", exc)


_TOO_MANY = re.compile(r"too many (\d{3}) error responses")


def final_status(exc: BaseException) -> int | None:
    """The status the last attempt got, when urllib3 gave up on it (``MaxRetryError``)."""
    for error in (exc, *exc.args):
        reason = getattr(error, "reason", None)
        if reason is not None:
            found = _TOO_MANY.fullmatch(str(reason))
            return int(found.group(1)) if found else None
    return None


class _TracedPool(HTTPConnectionPool):
    """A connection pool that reports each ``urlopen`` to the exchange in flight, if any.

    Without a tracewire exchange in the context it is the plain pool.
    """

    def urlopen(  # type: ignore[override]
        self,
        method: str,
        url: str,
        body: Any = None,
        headers: Any = None,
        retries: Any = None,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        exchange = get_current().get(EXCHANGE_KEY)
        if type(exchange) is Exchange and headers is not None:
            exchange.pool_call(headers, retries)
        return super().urlopen(method, url, body, headers, retries, *args, **kwargs)


_POOL_CLASSES: dict[type[Any], type[Any]] = {HTTPConnectionPool: _TracedPool}


def _traced_pool_class(cls: type[Any]) -> type[Any]:
    if issubclass(cls, _TracedPool) or not issubclass(cls, HTTPConnectionPool):
        return cls
    traced = _POOL_CLASSES.get(cls)
    if traced is None:
        traced = type(f"Traced{cls.__name__}", (_TracedPool, cls), {})
        _POOL_CLASSES[cls] = traced
    return traced


def trace_pools(manager: Any) -> dict[str, type[Any]] | None:
    """Make ``manager`` (a urllib3 PoolManager) build traced pools; its old classes, or None."""
    classes = getattr(manager, "pool_classes_by_scheme", None)
    if not isinstance(classes, dict):
        return None
    traced = {scheme: _traced_pool_class(cls) for scheme, cls in classes.items()}
    if traced == classes:
        return None
    manager.pool_classes_by_scheme = traced
    manager.clear()  # pools built before would keep sending untraced retries
    return classes


def restore_pools(manager: Any, classes: dict[str, type[Any]]) -> None:
    """Undo :func:`trace_pools`."""
    manager.pool_classes_by_scheme = classes
    manager.clear()

"""The thin global layer over per-object instrumentation (``instrument()`` / ``uninstrument()``).

Composition stays the model: a client or session is traced by wrapping its transport or
adapters. The global switch only wraps the classes' constructors so that every object made
while it is on gets that same per-object wrapping; it never patches how requests are sent.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any

from tracewire._log import warn_limited
from tracewire.client import ClientTracer
from tracewire.semconv import qualified_name

_ORIGINAL = "__tracewire_original__"


class GlobalSwitch:
    """Wraps the ``__init__`` of ``classes()`` to call ``instrument_one(obj, tracer)``.

    Idempotent; ``off()`` restores a constructor only if nobody wrapped it after us (theirs is
    left in place, and ours is inert without a tracer).
    """

    def __init__(
        self,
        classes: Callable[[], tuple[type[Any], ...]],
        instrument_one: Callable[[Any, ClientTracer], object],
    ) -> None:
        self._classes = classes
        self._instrument_one = instrument_one
        self._lock = threading.Lock()
        self._tracer: ClientTracer | None = None
        self._originals: dict[type[Any], Callable[..., None]] = {}

    @property
    def is_on(self) -> bool:
        return self._tracer is not None

    def on(self, tracer: ClientTracer) -> None:
        with self._lock:
            self._tracer = tracer
            for cls in self._classes():
                if cls not in self._originals:
                    original = cls.__init__
                    self._originals[cls] = original
                    cls.__init__ = self._wrap(original)

    def off(self) -> None:
        with self._lock:
            self._tracer = None
            for cls, original in list(self._originals.items()):
                current = cls.__dict__.get("__init__")
                if getattr(current, _ORIGINAL, None) is original:
                    cls.__init__ = original
                    del self._originals[cls]

    def _wrap(self, original: Callable[..., None]) -> Callable[..., None]:
        switch = self

        @functools.wraps(original)
        def __init__(obj: Any, *args: Any, **kwargs: Any) -> None:
            original(obj, *args, **kwargs)
            tracer = switch._tracer
            if tracer is not None:
                try:
                    switch._instrument_one(obj, tracer)
                except Exception as exc:  # the object must be usable even if wrapping failed
                    warn_limited(
                        "internal:instrument", f"could not instrument: {qualified_name(exc)}"
                    )

        setattr(__init__, _ORIGINAL, original)
        return __init__

"""tracewire: distributed traces that hold together across service boundaries.

Server side::

    app = TracewireMiddleware(app)          # any ASGI 3 app (Starlette, FastAPI, Django, ...)
    app.wsgi_app = TracewireWSGIMiddleware(app.wsgi_app)   # any WSGI app (Flask, Django, ...)

Client side::

    client = httpx.Client(transport=tracewire.httpx.TracewireTransport())
    tracewire.requests.instrument_session(session)

One service, one setting::

    tracewire.configure(propagators=["b3multi", "tracecontext"])

Settings come from code, the environment (``OTEL_PROPAGATORS``, ``TRACEWIRE_*``) or a
framework's config: see :class:`Settings`. A middleware's settings reach the outgoing calls
made while it serves a request, and ``configure`` makes OpenTelemetry's own propagation API
agree with them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tracewire.defaults import configure, configured
from tracewire.propagation import CompositePropagator, Extracted
from tracewire.settings import Settings

if TYPE_CHECKING:
    from tracewire.asgi import TracewireASGIMiddleware, TracewireMiddleware
    from tracewire.manual import extract, inject
    from tracewire.wsgi import TracewireWSGIMiddleware

__version__ = "0.1.0"

__all__ = [
    "CompositePropagator",
    "Extracted",
    "Settings",
    "TracewireASGIMiddleware",
    "TracewireMiddleware",
    "TracewireWSGIMiddleware",
    "__version__",
    "configure",
    "configured",
    "extract",
    "inject",
]

_LAZY = {
    "TracewireMiddleware": "tracewire.asgi",
    "TracewireASGIMiddleware": "tracewire.asgi",
    "TracewireWSGIMiddleware": "tracewire.wsgi",
    "inject": "tracewire.manual",
    "extract": "tracewire.manual",
}


def __getattr__(name: str) -> Any:
    # The middlewares are imported on first use so that `import tracewire` stays light.
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'tracewire' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)

"""Propagators chosen in a Starlette ``Config``: environment first, then a ``.env`` file.

For example::

    # .env
    TRACEWIRE_PROPAGATORS=b3multi,tracecontext

Run::

    python examples/propagators_starlette_config.py
"""

from __future__ import annotations

import os

import uvicorn
from opentelemetry.trace import TracerProvider
from starlette.applications import Starlette
from starlette.config import Config
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import tracewire.sdk
from tracewire import TracewireMiddleware
from tracewire.starlette import settings_from_config


async def hello(request: Request) -> PlainTextResponse:
    return PlainTextResponse("hello\n")


def create_app(config: Config, tracer_provider: TracerProvider | None = None) -> Starlette:
    settings = settings_from_config(config)  # <- the setting; a bad value fails here
    app = Starlette(routes=[Route("/hello", hello)])
    app.add_middleware(TracewireMiddleware, settings=settings, tracer_provider=tracer_provider)
    return app


if __name__ == "__main__":
    tracewire.sdk.configure(service_name="propagators-starlette-config")
    app = create_app(Config(".env") if os.path.exists(".env") else Config())
    uvicorn.run(app, host="127.0.0.1", port=int(os.environ.get("PORT", "8000")))

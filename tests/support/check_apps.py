"""Apps for ``tracewire check --app`` in a subprocess (factories: built when asked)."""

from __future__ import annotations

from typing import Any


def starlette_added() -> Any:
    from starlette.applications import Starlette

    from tracewire import TracewireMiddleware

    app = Starlette()
    app.add_middleware(TracewireMiddleware)
    return app


def fastapi_added() -> Any:
    from fastapi import FastAPI

    from tracewire import TracewireMiddleware

    app = FastAPI()
    app.add_middleware(TracewireMiddleware)
    return app


def flask_app() -> Any:
    from flask import Flask

    from tracewire.flask import Tracewire

    app = Flask("check-apps")
    Tracewire(app)
    return app

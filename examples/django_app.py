"""Django, ASGI and WSGI, in one file: tracewire is one line in ``MIDDLEWARE`` (settings via
``settings.configure`` here; a real project puts that line in ``settings.py`` and keeps its
``asgi.py`` / ``wsgi.py`` as Django generated them).

Run::

    python examples/django_app.py asgi          # uvicorn;  curl http://127.0.0.1:8000/items/42
    python examples/django_app.py wsgi          # werkzeug; same URL

The span is named after the URL pattern: ``GET /items/<int:item_id>``.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import django
from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.urls import path

import tracewire.sdk

settings.configure(
    ROOT_URLCONF=__name__,
    ALLOWED_HOSTS=["*"],
    SECRET_KEY="example-only",
    DEBUG=False,
    MIDDLEWARE=["tracewire.django.TracewireMiddleware"],  # <- the line, in settings.py
    TRACEWIRE={"excluded_paths": ["/health"]},  # tracewire's settings, optional
)
django.setup()


def item(request: HttpRequest, item_id: int) -> JsonResponse:
    return JsonResponse({"item_id": item_id})


urlpatterns = [path("items/<int:item_id>", item)]


def asgi_application() -> Any:
    from django.core.asgi import get_asgi_application

    return get_asgi_application()  # asgi.py, unchanged


def wsgi_application() -> Any:
    from django.core.wsgi import get_wsgi_application

    return get_wsgi_application()  # wsgi.py, unchanged


if __name__ == "__main__":
    kind = sys.argv[1] if len(sys.argv) > 1 else "asgi"
    tracewire.sdk.configure(service_name=f"django-{kind}-example")
    port = int(os.environ.get("PORT", "8000"))
    if kind == "asgi":
        import uvicorn

        uvicorn.run(asgi_application(), host="127.0.0.1", port=port, lifespan="off")
    else:
        from werkzeug.serving import run_simple

        run_simple("127.0.0.1", port, wsgi_application(), threaded=True)

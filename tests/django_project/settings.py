"""Django settings: tracewire is one line in ``MIDDLEWARE``; its settings come from
``TRACEWIRE`` (``TW_PROPAGATORS`` picks the propagators, ``TW_BAD_KEY`` adds a typo)."""

from __future__ import annotations

import os

SECRET_KEY = "django-project-tests"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]
INSTALLED_APPS: list[str] = []
MIDDLEWARE = ["tracewire.django.TracewireMiddleware"]
ROOT_URLCONF = "tests.django_project.urls"
USE_TZ = True
LOGGING_CONFIG = None

TRACEWIRE: dict[str, object] = {
    "propagators": os.environ.get("TW_PROPAGATORS", "tracecontext,baggage"),
}
if os.environ.get("TW_BAD_KEY"):
    TRACEWIRE["propagator"] = "b3"  # the typo: ImproperlyConfigured when Django starts

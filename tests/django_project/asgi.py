"""The ASGI entry point (``uvicorn tests.django_project.asgi:application``)."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

from tests.django_project import spans

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.django_project.settings")
spans.configure()
application = get_asgi_application()

"""The WSGI entry point (``gunicorn tests.django_project.wsgi:application``): nothing wraps
the application; tracewire is in ``MIDDLEWARE``."""

from __future__ import annotations

import os

from django.core.wsgi import get_wsgi_application

from tests.django_project import spans

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.django_project.settings")
spans.configure()
application = get_wsgi_application()

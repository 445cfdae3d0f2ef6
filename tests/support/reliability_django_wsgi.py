"""The WSGI application Django's runserver loads (``WSGI_APPLICATION``): Django behind
``TracewireWSGIMiddleware``, with the SDK set up on import of ``reliability_apps``."""

from __future__ import annotations

from django.core.wsgi import get_wsgi_application

import tests.support.reliability_apps  # noqa: F401  (configures the SDK)
from tracewire import TracewireWSGIMiddleware

application = TracewireWSGIMiddleware(get_wsgi_application())

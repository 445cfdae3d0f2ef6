"""Django settings (and URLconf) for ``manage.py runserver`` in the reliability suites:
``python -m django runserver --noreload --settings=tests.support.reliability_django``."""

from __future__ import annotations

from typing import Any

from django.urls import path

SECRET_KEY = "reliability-tests"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS: list[str] = []
MIDDLEWARE: list[str] = []
ROOT_URLCONF = "tests.support.reliability_django"
WSGI_APPLICATION = "tests.support.reliability_django_wsgi.application"
USE_TZ = True


def hello(request: Any) -> Any:
    from django.http import JsonResponse

    from tests.support.reliability_apps import view

    return JsonResponse(view())


urlpatterns = [path("hello", hello)]

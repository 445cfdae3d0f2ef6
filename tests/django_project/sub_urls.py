"""An included URLconf: its routes are named with the include's prefix."""

from __future__ import annotations

from django.urls import path

from tests.django_project import views

urlpatterns = [path("users/<slug:user>/orders/<int:order>", views.order)]

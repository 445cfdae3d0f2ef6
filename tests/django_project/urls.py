"""The project's URLconf: plain, parametrised, included, raising, streaming, async, outgoing."""

from __future__ import annotations

from django.urls import include, path

from tests.django_project import views

urlpatterns = [
    path("", views.plain),
    path("items/<int:pk>", views.item),
    path("api/v1/", include("tests.django_project.sub_urls")),
    path("boom", views.boom),
    path("missing", views.missing),
    path("stream", views.stream),
    path("astream", views.astream),
    path("endless", views.endless),
    path("aendless", views.aendless),
    path("async/<str:name>", views.async_view),
    path("async-boom", views.async_boom),
    path("outgoing", views.outgoing),
]

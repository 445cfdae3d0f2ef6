"""``tracewire.django.settings_from_django``: Django's settings read like every framework's."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured

from tracewire.django import settings_from_django


def django(**names: Any) -> SimpleNamespace:
    return SimpleNamespace(DEBUG=False, INSTALLED_APPS=[], **names)


def test_names_and_the_dict_form(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_PROPAGATORS", raising=False)
    settings = settings_from_django(
        django(TRACEWIRE_PROPAGATORS="b3multi", TRACEWIRE={"excluded_paths": ["/health"]})
    )
    assert settings.propagators == ("b3multi",)
    assert settings.excluded_paths == ("/health",)
    sources = {name: source for name, _, source in settings.describe()}
    assert sources["propagators"] == "settings.TRACEWIRE_PROPAGATORS"


def test_unknown_names_are_improperly_configured() -> None:
    with pytest.raises(ImproperlyConfigured, match=r"TRACEWIRE_PROPAGATOR\b.*valid keys"):
        settings_from_django(django(TRACEWIRE_PROPAGATOR="b3"))
    with pytest.raises(ImproperlyConfigured, match="TRACEWIRE_NOPE"):
        settings_from_django(django(TRACEWIRE={"nope": 1}))
    with pytest.raises(ImproperlyConfigured, match="must be a dict"):
        settings_from_django(django(TRACEWIRE=["propagators"]))
    with pytest.raises(ImproperlyConfigured, match="set twice"):
        settings_from_django(django(TRACEWIRE_PROPAGATORS="b3", TRACEWIRE={"PROPAGATORS": "b3"}))


def test_a_bad_value_names_the_django_setting() -> None:
    with pytest.raises(ValueError, match=r"unknown propagator 'b3mutli' in settings\.TRACEWIRE_"):
        settings_from_django(django(TRACEWIRE_PROPAGATORS="b3mutli"))


def test_the_environment_fills_in(monkeypatch: pytest.MonkeyPatch) -> None:
    # Unlike a bare Settings.from_mapping, OTEL_PROPAGATORS applies where settings.py is silent.
    monkeypatch.delenv("TRACEWIRE_PROPAGATORS", raising=False)
    monkeypatch.setenv("OTEL_PROPAGATORS", "b3")
    settings = settings_from_django(django(TRACEWIRE_EXCLUDED_PATHS="/health"))
    assert settings.propagators == ("b3",)
    assert {n: s for n, _, s in settings.describe()}["propagators"] == "OTEL_PROPAGATORS"
    assert settings_from_django(django(TRACEWIRE_PROPAGATORS="b3multi")).propagators == ("b3multi",)

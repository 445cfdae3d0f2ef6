"""Old names kept for one release: they still work, and say which name replaces them."""

from __future__ import annotations

import importlib
import warnings

import httpx
import pytest
import requests

import tracewire
import tracewire.httpx
import tracewire.requests
from tests.conftest import Tracing
from tests.support.inprocess import LocalAdapter, Seen, mock_transport
from tracewire import Settings
from tracewire.compiled import compile_settings
from tracewire.matching import HostMatcher, PathMatcher


@pytest.mark.parametrize(
    ("module", "old", "new"),
    [
        ("tracewire.httpx", "TracingTransport", "TracewireTransport"),
        ("tracewire.httpx", "AsyncTracingTransport", "AsyncTracewireTransport"),
        ("tracewire.requests", "TracingAdapter", "TracewireAdapter"),
    ],
)
def test_old_class_names_are_the_new_classes_with_a_warning(
    module: str, old: str, new: str
) -> None:
    mod = importlib.import_module(module)
    with pytest.warns(DeprecationWarning) as caught:
        found = getattr(mod, old)
    assert found is getattr(mod, new)
    messages = [str(w.message) for w in caught]
    assert any(f"{module}.{new}" in m and old in m for m in messages), messages
    # The warning points at the caller, not at tracewire's module.
    assert all(w.filename == __file__ for w in caught), [w.filename for w in caught]


def test_from_import_of_an_old_name_warns() -> None:
    with pytest.warns(DeprecationWarning, match="TracewireTransport"):
        from tracewire.httpx import TracingTransport  # noqa: F401
    with pytest.warns(DeprecationWarning, match="TracewireAdapter"):
        from tracewire.requests import TracingAdapter  # noqa: F401


def test_new_names_do_not_warn() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert tracewire.httpx.TracewireTransport
        assert tracewire.httpx.AsyncTracewireTransport
        assert tracewire.requests.TracewireAdapter
        assert tracewire.TracewireASGIMiddleware is tracewire.TracewireMiddleware
        assert tracewire.TracewireWSGIMiddleware


@pytest.mark.parametrize("module", ["tracewire.httpx", "tracewire.requests", "tracewire"])
def test_unknown_names_are_still_attribute_errors(module: str) -> None:
    mod = importlib.import_module(module)
    with pytest.raises(AttributeError, match="NoSuchThing"):
        mod.NoSuchThing  # noqa: B018


def test_old_transport_still_traces(tracing: Tracing) -> None:
    seen: list[Seen] = []
    with pytest.warns(DeprecationWarning):
        old = tracewire.httpx.TracingTransport
    transport = old(mock_transport(seen), tracer_provider=tracing.provider)
    with httpx.Client(transport=transport) as client:
        assert client.get("http://downstream.test/x").status_code == 200
    (span,) = tracing.spans()
    assert f"{span.context.span_id:016x}" in seen[0].headers["traceparent"]


def test_old_adapter_still_traces(tracing: Tracing) -> None:
    seen: list[Seen] = []
    with pytest.warns(DeprecationWarning):
        old = tracewire.requests.TracingAdapter
    with requests.Session() as session:
        session.mount("http://", old(LocalAdapter(seen), tracer_provider=tracing.provider))
        assert session.get("http://downstream.test/x").status_code == 200
    (span,) = tracing.spans()
    assert f"{span.context.span_id:016x}" in seen[0].headers["traceparent"]


# ----------------------------------------------------------- derived objects on Settings
SETTINGS = Settings(
    excluded_paths=["/health", "/static/*"],
    propagate_to=["*.internal", "same-origin"],
    baggage_to=["api.internal"],
)


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("path_excluded", PathMatcher),
        ("may_propagate", HostMatcher),
        ("may_send_baggage", HostMatcher),
    ],
)
def test_settings_derived_objects_warn_and_point_at_compile_settings(name: str, kind: type) -> None:
    with pytest.warns(DeprecationWarning) as caught:
        found = getattr(SETTINGS, name)
    assert isinstance(found, kind)
    messages = [str(w.message) for w in caught]
    assert any(f"Settings.{name}" in m and "compile_settings" in m for m in messages), messages
    assert all(w.filename == __file__ for w in caught)


def test_settings_derived_objects_still_answer() -> None:
    with pytest.warns(DeprecationWarning):
        excluded = SETTINGS.path_excluded
    assert excluded("/health") and excluded("/static/app.js") and not excluded("/api")
    with pytest.warns(DeprecationWarning):
        propagate = SETTINGS.may_propagate
    assert propagate("db.internal") and not propagate("example.com")
    with pytest.warns(DeprecationWarning):
        baggage = SETTINGS.may_send_baggage
    assert baggage("api.internal") and not baggage("db.internal")
    # The same objects the compiled form holds.
    compiled = compile_settings(SETTINGS)
    assert compiled.may_propagate is propagate
    assert compiled.may_send_baggage is baggage


def test_settings_without_excluded_paths_have_no_matcher() -> None:
    with pytest.warns(DeprecationWarning):
        assert Settings().path_excluded is None


def test_settings_unknown_attribute_is_an_attribute_error() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(AttributeError, match="no_such_field"):
            Settings().no_such_field  # type: ignore[attr-defined]  # noqa: B018

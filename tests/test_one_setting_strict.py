"""The same strictness everywhere: typos and validation holes fail at start-up, naming the key.

Unknown ``TRACEWIRE_*`` keys in a framework's config (Flask ``app.config``, a Starlette
``Config`` env file) raise, naming the key; the holes a new user hit (``propagate_to=""``,
``propagators=[]``, ``require_parent="true"`` from code) raise too, from ``Settings``, from
``configure()`` and from a middleware's keyword settings.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.config import Config

import tracewire
from tests.support.one_setting import clean_globals
from tracewire import Settings, TracewireMiddleware, TracewireWSGIMiddleware
from tracewire.flask import Tracewire
from tracewire.starlette import settings_from_config


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    with clean_globals(monkeypatch):
        yield


def _flask(**config: Any) -> Any:
    from flask import Flask

    app = Flask("strict")
    app.config.update(config)
    return app


async def _asgi(scope: Any, receive: Any, send: Any) -> None:
    raise AssertionError("never served")


def _wsgi(environ: Any, start_response: Any) -> list[bytes]:
    raise AssertionError("never served")


# ------------------------------------------------------------------ unknown keys: Flask
@pytest.mark.parametrize(
    "key", ["TRACEWIRE_PROPAGATOR", "TRACEWIRE_PROPAGATE_TOO", "TRACEWIRE_CLIENT_HOOK"]
)
def test_an_unknown_key_in_flask_config_raises_naming_it(key: str) -> None:
    app = _flask(**{key: "b3"})
    with pytest.raises(ValueError, match=key) as info:
        Tracewire(app)
    assert "TRACEWIRE_PROPAGATORS" in str(info.value)  # the valid keys are listed
    with pytest.raises(ValueError, match=key):
        Tracewire().init_app(_flask(**{key: "b3"}))


def test_a_bad_value_in_flask_config_names_the_key() -> None:
    with pytest.raises(ValueError, match="TRACEWIRE_PROPAGATORS") as info:
        Tracewire(_flask(TRACEWIRE_PROPAGATORS="b3mutli"))
    assert "b3multi" in str(info.value)  # the valid choices are listed
    with pytest.raises(ValueError, match="TRACEWIRE_REQUIRE_PARENT"):
        Tracewire(_flask(TRACEWIRE_REQUIRE_PARENT="maybe"))
    with pytest.raises(ValueError, match="TRACEWIRE_PROPAGATE_TO"):
        Tracewire(_flask(TRACEWIRE_PROPAGATE_TO=["re:("]))


# -------------------------------------------------------- unknown keys: Starlette Config
def test_an_unknown_key_in_a_starlette_env_file_raises_naming_it(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("TRACEWIRE_PROPAGATORS=b3\nTRACEWIRE_EXCLUDE_PATHS=/health\n")
    with pytest.raises(ValueError, match="TRACEWIRE_EXCLUDE_PATHS") as info:
        settings_from_config(Config(env_file))
    assert "TRACEWIRE_EXCLUDED_PATHS" in str(info.value)


def test_a_bad_value_in_a_starlette_env_file_names_the_key(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("TRACEWIRE_PROPAGATORS=b3mutli\n")
    with pytest.raises(ValueError, match="TRACEWIRE_PROPAGATORS"):
        settings_from_config(Config(env_file))
    env_file.write_text("OTEL_PROPAGATORS=zipkin-ish\n")
    with pytest.raises(ValueError, match="OTEL_PROPAGATORS"):
        settings_from_config(Config(env_file))


def test_a_starlette_env_file_is_read_like_the_environment(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("OTEL_PROPAGATORS=b3multi\nTRACEWIRE_EXCLUDED_PATHS=/health,/ready\n")
    settings = settings_from_config(Config(env_file))
    assert settings.propagators == ("b3multi",)
    assert settings.excluded_paths == ("/health", "/ready")
    env_file.write_text("OTEL_PROPAGATORS=b3multi\nTRACEWIRE_PROPAGATORS=b3\n")
    assert settings_from_config(Config(env_file)).propagators == ("b3",)


# ----------------------------------------------------------------- validation holes
HOLES = [
    pytest.param({"propagate_to": ""}, ValueError, "propagate_to", id="propagate_to-empty"),
    pytest.param({"baggage_to": " "}, ValueError, "baggage_to", id="baggage_to-blank"),
    pytest.param({"propagators": []}, ValueError, "propagators", id="propagators-empty-list"),
    pytest.param({"propagators": ""}, ValueError, "propagators", id="propagators-empty-str"),
    pytest.param({"inject": []}, ValueError, "inject", id="inject-empty-list"),
    pytest.param({"require_parent": "true"}, TypeError, "require_parent", id="require_parent-str"),
    pytest.param({"require_parent": 1}, TypeError, "require_parent", id="require_parent-int"),
]


@pytest.mark.parametrize(("fields", "error", "name"), HOLES)
def test_validation_holes_raise_from_code(
    fields: dict[str, Any], error: type[Exception], name: str
) -> None:
    with pytest.raises(error, match=name):
        Settings(**fields)
    with pytest.raises(error, match=name):
        tracewire.configure(**fields)
    assert tracewire.configured() is None  # a failed configure() changes nothing
    with pytest.raises(error, match=name):
        TracewireMiddleware(_asgi, **fields)
    with pytest.raises(error, match=name):
        TracewireWSGIMiddleware(_wsgi, **fields)


def test_what_the_holes_meant_is_still_sayable() -> None:
    assert Settings(propagate_to="none").propagate_to == ()
    assert Settings(propagate_to=[]).propagate_to == ()
    assert Settings(propagate_to="*").propagate_to is None
    assert Settings(propagators=["none"]).propagators == ("none",)
    assert Settings(require_parent=True).require_parent is True


def test_an_unknown_keyword_setting_on_a_middleware_raises_naming_it() -> None:
    with pytest.raises(TypeError, match="propagatorz"):
        TracewireMiddleware(_asgi, propagatorz=["b3"])
    with pytest.raises(TypeError, match="propagatorz"):
        TracewireWSGIMiddleware(_wsgi, propagatorz=["b3"])
    with pytest.raises(TypeError, match="propagatorz"):
        tracewire.configure(propagatorz=["b3"])

"""Settings: every key from the environment and mappings, precedence, propagator names, errors."""

from __future__ import annotations

import re
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from tracewire import Settings, propagation
from tracewire.compiled import compile_settings
from tracewire.propagators import B3Propagator, BaggagePropagator, TraceContextPropagator
from tracewire.settings import DEFAULT_REDACT_HEADERS, DEFAULT_REDACT_QUERY
from tracewire.trust import Rule


def sample_hook(*args: Any) -> None:
    """A hook for 'module:function' strings."""


class Holder:
    not_callable = 42

    @staticmethod
    def nested(*args: Any) -> None:
        """A hook reached through an attribute path."""


HOOK = "tests.test_settings:sample_hook"

# Every setting with a text value as it would appear in the environment, and what it becomes.
ENV_EXAMPLES: dict[str, tuple[str, object]] = {
    "propagators": (" b3multi, tracecontext ,", ("b3multi", "tracecontext")),
    "extract": ("b3", ("b3",)),
    "inject": ("tracecontext,baggage", ("tracecontext", "baggage")),
    "extract_policy": (" LAST ", "last"),
    "excluded_paths": (
        "/health, /static/*, re:^/internal/",
        ("/health", "/static/*", "re:^/internal/"),
    ),
    "server_request_hook": (HOOK, sample_hook),
    "server_response_hook": ("tests.test_settings:Holder.nested", Holder.nested),
    "client_request_hook": (HOOK, sample_hook),
    "client_response_hook": (HOOK, sample_hook),
    "capture_request_headers": ("X-Request-Id, User-Agent", ("x-request-id", "user-agent")),
    "capture_response_headers": ("Content-Type", ("content-type",)),
    "redact_headers": ("Authorization,X-Secret", ("authorization", "x-secret")),
    "response_propagation": ("Server-Timing", "server-timing"),
    "propagate_to": (
        "api.internal, *.svc.cluster.local, same-origin",
        ("api.internal", "*.svc.cluster.local", "same-origin"),
    ),
    "baggage_to": ("same-origin", ("same-origin",)),
    "require_parent": ("yes", True),
    "redact_query_params": ("token, X-Sig", ("token", "X-Sig")),
    "incoming": (
        "path:/public/* restart sampled=ignore; net:10.0.0.0/8 continue",
        (
            Rule(paths=("/public/*",), action="restart", sampled="ignore"),
            Rule(networks=("10.0.0.0/8",)),
        ),
    ),
    "trusted_proxies": ("10.0.0.0/8, ::1", ("10.0.0.0/8", "::1")),
    "excluded_urls": ("health, re:/client/.*/info", ("re:health", "re:/client/.*/info")),
    "client_excluded_urls": ("metadata.internal", ("re:metadata.internal",)),
    "client_excluded_headers": ("no", False),
    "capture_client_request_headers": (
        "X-Request-Id, re:x-tenant-.*",
        ("x-request-id", "re:x-tenant-.*"),
    ),
    "capture_client_response_headers": ("Content-Type", ("content-type",)),
    "semconv": ("HTTP/dup", "http/dup"),
    "background_spans": ("Linked", "linked"),
    "client_ip_header": ("Forwarded", "forwarded"),
    "tracestate_key": ("acme", "acme"),
    "baggage_attributes": ("user.id, tenant", ("user.id", "tenant")),
    "inject_to": (
        "*.legacy=b3multi; *=tracecontext,baggage",
        ((("*.legacy",), ("b3multi",)), (("*",), ("tracecontext", "baggage"))),
    ),
}


def test_examples_cover_every_setting() -> None:
    names = [f.name for f in Settings.env_fields()]
    assert sorted(names) == sorted(ENV_EXAMPLES)
    for f in Settings.env_fields():
        assert f.metadata["doc"], f.name


@pytest.mark.parametrize("name", list(ENV_EXAMPLES))
def test_every_setting_from_env(name: str) -> None:
    text, expected = ENV_EXAMPLES[name]
    settings = Settings.from_env({f"TRACEWIRE_{name.upper()}": text})
    assert getattr(settings, name) == expected
    row = next(r for r in settings.describe() if r[0] == name)
    assert row[2] == f"TRACEWIRE_{name.upper()}"


@pytest.mark.parametrize("name", list(ENV_EXAMPLES))
def test_every_setting_from_mapping(name: str) -> None:
    text, expected = ENV_EXAMPLES[name]
    settings = Settings.from_mapping({f"APP_{name.upper()}": text}, prefix="APP_")
    assert getattr(settings, name) == expected


@pytest.mark.parametrize(
    "name", [n for n in ENV_EXAMPLES if n not in ("require_parent", "client_excluded_headers")]
)
def test_every_setting_from_code_string(name: str) -> None:
    # A string in code is read the way the environment is (lists, names, import paths)...
    text, expected = ENV_EXAMPLES[name]
    assert getattr(Settings(**{name: text}), name) == expected


@pytest.mark.parametrize("text", ["true", "false", "yes", "1"])
def test_a_bool_in_code_must_be_a_bool(text: str) -> None:
    # ...but not booleans: in code "false" is truthy, so a string there is a mistake.
    with pytest.raises(TypeError, match="require_parent must be a bool, got str"):
        Settings(require_parent=text)


def test_defaults() -> None:
    settings = Settings()
    assert settings.propagators == ("tracecontext", "baggage")
    assert [n for n, _ in settings.composite.extractors] == ["tracecontext", "baggage"]
    assert [n for n, _ in settings.inject_propagator.injectors] == ["tracecontext", "baggage"]
    assert settings.extract_policy == "first"
    assert settings.response_propagation == "none"
    assert compile_settings(settings).excluded is None
    assert compile_settings(settings).may_propagate("anything.example", 443, "https")
    assert compile_settings(settings).may_send_baggage("anything.example")
    assert settings.redact_headers == DEFAULT_REDACT_HEADERS
    assert settings.redact_query_params == DEFAULT_REDACT_QUERY
    assert settings.require_parent is False
    assert Settings.from_env({}) == settings
    assert all(source == "default" for _, _, source in settings.describe())


def test_mapping_values_taken_as_they_are() -> None:
    pattern = re.compile(r"^/private/")
    settings = Settings.from_mapping(
        {
            "TRACEWIRE_EXCLUDED_PATHS": ["/health", pattern],
            "TRACEWIRE_REQUIRE_PARENT": True,
            "TRACEWIRE_SERVER_REQUEST_HOOK": sample_hook,
            "TRACEWIRE_PROPAGATORS": [TraceContextPropagator(), "b3"],
            "TRACEWIRE_PROPAGATE_TO": None,
            "UNRELATED": "ignored",
        }
    )
    assert settings.excluded_paths == ("/health", pattern)
    excluded = compile_settings(settings).excluded
    assert excluded is not None and excluded("/private/x")
    assert settings.require_parent is True
    assert settings.server_request_hook is sample_hook
    assert [n for n, _ in settings.composite.extractors] == ["TraceContextPropagator", "b3"]
    assert settings.propagate_to is None


def test_star_means_every_host() -> None:
    assert Settings.from_env({"TRACEWIRE_PROPAGATE_TO": "*"}).propagate_to is None
    assert compile_settings(Settings(propagate_to="*")).may_propagate("x.example")


def test_baggage_to_defaults_to_propagate_to() -> None:
    settings = Settings(propagate_to=["api.internal"])
    assert compile_settings(settings).may_send_baggage("api.internal")
    assert not compile_settings(settings).may_send_baggage("other.example")
    narrower = settings.replace(baggage_to=[])
    assert compile_settings(narrower).may_propagate("api.internal")
    assert not compile_settings(narrower).may_send_baggage("api.internal")


# ------------------------------------------------------------------------------ precedence


def test_precedence() -> None:
    env = {"OTEL_PROPAGATORS": "b3", "TRACEWIRE_PROPAGATORS": "b3multi"}
    assert Settings.from_env({"OTEL_PROPAGATORS": "b3"}).propagators == ("b3",)
    assert Settings.from_env(env).propagators == ("b3multi",)
    assert Settings.from_env(env, propagators=["tracecontext"]).propagators == ("tracecontext",)
    assert Settings.from_env({}).propagators == ("tracecontext", "baggage")


def test_sources_shown() -> None:
    settings = Settings.from_env(
        {"OTEL_PROPAGATORS": "b3", "TRACEWIRE_REQUIRE_PARENT": "1"}, extract_policy="last"
    )
    sources = {name: source for name, _, source in settings.describe()}
    assert sources["propagators"] == "OTEL_PROPAGATORS"
    assert sources["require_parent"] == "TRACEWIRE_REQUIRE_PARENT"
    assert sources["extract_policy"] == "code"  # an override in code; no variable to name
    assert sources["inject"] == "default"


def test_override_skips_a_broken_otel_propagators() -> None:
    env = {"OTEL_PROPAGATORS": "nope"}
    with pytest.raises(ValueError, match="in OTEL_PROPAGATORS"):
        Settings.from_env(env)
    assert Settings.from_env(env, propagators=["b3"]).propagators == ("b3",)
    assert Settings.from_env({**env, "TRACEWIRE_PROPAGATORS": "b3"}).propagators == ("b3",)


def test_otel_propagators_none() -> None:
    settings = Settings.from_env({"OTEL_PROPAGATORS": "none"})
    assert settings.composite.extractors == ()
    assert settings.inject_propagator.injectors == ()


def test_otel_propagators_names() -> None:
    settings = Settings.from_env({"OTEL_PROPAGATORS": "tracecontext,baggage,b3multi"})
    kinds = [type(p) for _, p in settings.composite.extractors]
    assert kinds == [TraceContextPropagator, BaggagePropagator, B3Propagator]


@pytest.mark.parametrize("blank", ["", "  ", "\t"])
def test_empty_variables_count_as_unset(blank: str) -> None:
    env = {f"TRACEWIRE_{f.name.upper()}": blank for f in Settings.env_fields()}
    env["OTEL_PROPAGATORS"] = "b3"
    settings = Settings.from_env(env)
    assert settings.propagators == ("b3",)
    assert settings == Settings(propagators=("b3",))
    assert Settings.from_env({"OTEL_PROPAGATORS": blank}).propagators == (
        "tracecontext",
        "baggage",
    )
    mapped = Settings.from_mapping(env)
    assert mapped.propagators == ("tracecontext", "baggage")  # a mapping has no OTEL fallback


def test_from_mapping_base_and_overrides() -> None:
    base = Settings.from_env({"TRACEWIRE_REQUIRE_PARENT": "true", "OTEL_PROPAGATORS": "b3"})
    settings = Settings.from_mapping(
        {"TRACEWIRE_EXTRACT_POLICY": "last"}, base=base, response_propagation="traceresponse"
    )
    assert settings.require_parent is True
    assert settings.propagators == ("b3",)
    assert settings.extract_policy == "last"
    assert settings.response_propagation == "traceresponse"


# ------------------------------------------------------------------------------ propagators


def test_propagator_names_are_case_insensitive() -> None:
    settings = Settings(propagators=[" TraceContext ", "B3"])
    assert [n for n, _ in settings.composite.extractors] == ["tracecontext", "b3"]


def test_builtins_win_over_entry_points() -> None:
    installed = propagation._entry_point_names()
    assert {"tracecontext", "baggage", "b3", "b3multi"} <= set(installed)
    settings = Settings(propagators=["tracecontext", "baggage", "b3", "b3multi"])
    kinds = [type(p) for _, p in settings.composite.extractors]
    assert kinds == [TraceContextPropagator, BaggagePropagator, B3Propagator, B3Propagator]
    b3, b3multi = (p for _, p in settings.composite.extractors[2:])
    assert isinstance(b3, B3Propagator) and b3.single_header
    assert isinstance(b3multi, B3Propagator) and not b3multi.single_header


def test_instances_passed_directly() -> None:
    otel = TraceContextTextMapPropagator()
    settings = Settings(propagators=[otel, "baggage"], inject=[B3Propagator(False)])
    assert settings.composite.extractors[0] == ("TraceContextTextMapPropagator", otel)
    assert [n for n, _ in settings.inject_propagator.injectors] == ["B3Propagator"]


def test_known_names() -> None:
    names = propagation.known_names()
    assert {"tracecontext", "baggage", "b3", "b3multi", "none"} <= set(names)
    assert names == sorted(names)


@pytest.fixture
def entry_points(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A tiny installed distribution registering test propagators as entry points."""
    package = tmp_path / "tw_test_props"
    package.mkdir()
    (package / "__init__.py").write_text(
        textwrap.dedent(
            """
            from opentelemetry.propagators.textmap import TextMapPropagator

            class Echo(TextMapPropagator):
                def extract(self, carrier, context=None, getter=None):
                    return context
                def inject(self, carrier, context=None, setter=None):
                    pass
                @property
                def fields(self):
                    return set()

            class NotAPropagator:
                pass

            def broken():
                raise RuntimeError("cannot start")
            """
        )
    )
    dist = tmp_path / "tw_test_props-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: tw-test-props\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[opentelemetry_propagator]\n"
        "echo = tw_test_props:Echo\n"
        "notone = tw_test_props:NotAPropagator\n"
        "broken = tw_test_props:broken\n"
        "missingmod = tw_test_props_nowhere:Thing\n"
        "tracecontext = tw_test_props:Echo\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    propagation._entry_point_names.cache_clear()
    yield tmp_path
    propagation._entry_point_names.cache_clear()
    sys.modules.pop("tw_test_props", None)


def test_entry_point_propagator(entry_points: Path) -> None:
    settings = Settings(propagators=["echo", "tracecontext"])
    (name, echo), (_, builtin) = settings.composite.extractors
    assert name == "echo" and type(echo).__name__ == "Echo"
    assert isinstance(echo, TextMapPropagator)
    assert isinstance(builtin, TraceContextPropagator)  # built-in still wins
    assert "echo" in propagation.known_names()


def test_entry_point_errors(entry_points: Path) -> None:
    with pytest.raises(TypeError, match="propagator 'notone' in propagators is not a Text"):
        Settings(propagators=["notone"])
    with pytest.raises(ValueError, match=r"'broken' in propagators could not be loaded.*start"):
        Settings(propagators=["broken"])
    with pytest.raises(ValueError, match="'missingmod' in TRACEWIRE_EXTRACT could not be load"):
        Settings.from_env({"TRACEWIRE_EXTRACT": "missingmod"})


def test_entry_point_table_monkeypatched(monkeypatch: pytest.MonkeyPatch) -> None:
    class FakeEntryPoint:
        name = "fake"

        def load(self) -> type[TextMapPropagator]:
            return TraceContextTextMapPropagator

    monkeypatch.setattr(propagation, "_entry_point_names", lambda: {"fake": FakeEntryPoint()})
    propagator = propagation.resolve("fake", "X")
    assert isinstance(propagator, TraceContextTextMapPropagator)
    assert "fake" in propagation.known_names()


# ---------------------------------------------------------------------------------- errors

KNOWN = "known: b3, b3multi, baggage, none, tracecontext"

ERRORS: list[tuple[str, dict[str, Any], type[Exception], str]] = [
    # (id, environment (or code kwargs under "code"), error, message)
    (
        "unknown-env",
        {"TRACEWIRE_PROPAGATORS": "b3mutli"},
        ValueError,
        "unknown propagator 'b3mutli' in TRACEWIRE_PROPAGATORS; known: ",
    ),
    (
        "unknown-otel",
        {"OTEL_PROPAGATORS": "tracecontext,zipkin"},
        ValueError,
        "unknown propagator 'zipkin' in OTEL_PROPAGATORS; known: ",
    ),
    (
        "unknown-extract",
        {"TRACEWIRE_EXTRACT": "w3c"},
        ValueError,
        "unknown propagator 'w3c' in TRACEWIRE_EXTRACT; known: ",
    ),
    (
        "not-installed",
        {"TRACEWIRE_INJECT": "xray"},
        ValueError,
        "propagator 'xray' in TRACEWIRE_INJECT is not installed; install the package "
        "'opentelemetry-propagator-aws-xray' to use it",
    ),
    (
        "jaeger-not-installed",
        {"OTEL_PROPAGATORS": "jaeger"},
        ValueError,
        "'opentelemetry-propagator-jaeger'",
    ),
    (
        "listed-twice",
        {"TRACEWIRE_PROPAGATORS": "b3,B3"},
        ValueError,
        "propagator 'b3' is listed twice in TRACEWIRE_PROPAGATORS",
    ),
    (
        "none-combined",
        {"OTEL_PROPAGATORS": "none,b3"},
        ValueError,
        "'none' in OTEL_PROPAGATORS cannot be combined with other propagators",
    ),
    (
        "policy",
        {"TRACEWIRE_EXTRACT_POLICY": "middle"},
        ValueError,
        "invalid TRACEWIRE_EXTRACT_POLICY 'middle'; valid choices: first, last",
    ),
    (
        "response-propagation",
        {"TRACEWIRE_RESPONSE_PROPAGATION": "headers"},
        ValueError,
        "invalid TRACEWIRE_RESPONSE_PROPAGATION 'headers'; valid choices: none, traceresponse, "
        "server-timing",
    ),
    (
        "bool",
        {"TRACEWIRE_REQUIRE_PARENT": "maybe"},
        ValueError,
        "invalid boolean 'maybe' in TRACEWIRE_REQUIRE_PARENT; use one of: 1, true, yes, on, "
        "0, false, no, off",
    ),
    (
        "hook-format",
        {"TRACEWIRE_SERVER_REQUEST_HOOK": "tests.test_settings.sample_hook"},
        ValueError,
        "invalid hook 'tests.test_settings.sample_hook' in TRACEWIRE_SERVER_REQUEST_HOOK; "
        "expected 'package.module:function'",
    ),
    (
        "hook-module",
        {"TRACEWIRE_CLIENT_REQUEST_HOOK": "no_such_module_xyz:hook"},
        ValueError,
        "cannot import hook 'no_such_module_xyz:hook' in TRACEWIRE_CLIENT_REQUEST_HOOK: No module",
    ),
    (
        "hook-attribute",
        {"TRACEWIRE_CLIENT_RESPONSE_HOOK": "tests.test_settings:nope"},
        ValueError,
        "cannot import hook 'tests.test_settings:nope' in TRACEWIRE_CLIENT_RESPONSE_HOOK",
    ),
    (
        "hook-not-callable",
        {"TRACEWIRE_SERVER_RESPONSE_HOOK": "tests.test_settings:Holder.not_callable"},
        TypeError,
        "hook 'tests.test_settings:Holder.not_callable' in TRACEWIRE_SERVER_RESPONSE_HOOK is not "
        "callable",
    ),
    (
        "bad-regex",
        {"TRACEWIRE_EXCLUDED_PATHS": "re:(unclosed"},
        ValueError,
        "invalid regular expression '(unclosed' in TRACEWIRE_EXCLUDED_PATHS",
    ),
    (
        "bad-host-regex",
        {"TRACEWIRE_BAGGAGE_TO": "re:[a-"},
        ValueError,
        "invalid regular expression '[a-' in TRACEWIRE_BAGGAGE_TO",
    ),
]


@pytest.mark.parametrize(
    ("env", "error", "message"), [pytest.param(e, x, m, id=i) for i, e, x, m in ERRORS]
)
def test_env_errors(env: dict[str, str], error: type[Exception], message: str) -> None:
    with pytest.raises(error) as info:
        Settings.from_env(env)
    assert message in str(info.value)
    if message.endswith("known: "):
        assert KNOWN in str(info.value)


CODE_ERRORS: list[tuple[str, dict[str, Any], type[Exception], str]] = [
    (
        "unknown",
        {"propagators": ["nope"]},
        ValueError,
        f"unknown propagator 'nope' in propagators; {KNOWN}",
    ),
    (
        "not-a-sequence",
        {"propagators": 3},
        TypeError,
        "propagators must be a sequence of propagator names or TextMapPropagator instances, "
        "got int: 3",
    ),
    (
        "bad-item",
        {"inject": ["b3", 7]},
        TypeError,
        "inject must be a sequence of propagator names or TextMapPropagator instances, got int",
    ),
    ("policy-type", {"extract_policy": 1}, TypeError, "extract_policy must be a string, got int"),
    ("policy", {"extract_policy": "middle"}, ValueError, "invalid extract_policy 'middle'"),
    (
        "hook",
        {"client_request_hook": 5},
        TypeError,
        "client_request_hook must be a callable or None, got int: 5",
    ),
    (
        "require-parent",
        {"require_parent": "maybe"},
        TypeError,
        "require_parent must be a bool, got str: 'maybe'",
    ),
    ("require-parent-type", {"require_parent": 1}, TypeError, "require_parent must be a bool"),
    (
        "headers",
        {"capture_request_headers": [b"x-id"]},
        TypeError,
        "capture_request_headers must be a sequence of strings, got bytes",
    ),
    (
        "patterns",
        {"excluded_paths": ["/ok", 5]},
        TypeError,
        "excluded_paths must be a sequence of strings or compiled regular expressions, got int",
    ),
    (
        "empty-pattern",
        {"propagate_to": ["api", ""]},
        TypeError,
        "propagate_to must be a sequence of strings or compiled regular expressions, got str: ''",
    ),
    (
        "bad-regex-object",
        {"excluded_paths": ["re:*"]},
        ValueError,
        "invalid regular expression '*' in excluded_paths",
    ),
]


@pytest.mark.parametrize(
    ("kwargs", "error", "message"), [pytest.param(k, x, m, id=i) for i, k, x, m in CODE_ERRORS]
)
def test_code_errors(kwargs: dict[str, Any], error: type[Exception], message: str) -> None:
    with pytest.raises(error) as info:
        Settings(**kwargs)
    assert message in str(info.value)


def test_mapping_error_names_the_key() -> None:
    with pytest.raises(ValueError, match="unknown propagator 'x' in FLASK_TW_PROPAGATORS"):
        Settings.from_mapping({"FLASK_TW_PROPAGATORS": "x"}, prefix="FLASK_TW_")
    with pytest.raises(TypeError, match="TRACEWIRE_REQUIRE_PARENT must be a bool, got int"):
        Settings.from_mapping({"TRACEWIRE_REQUIRE_PARENT": 1})


# ---------------------------------------------------------------------------------- replace


def test_replace_validates_and_rebuilds() -> None:
    settings = Settings.from_env({"OTEL_PROPAGATORS": "b3"})
    changed = settings.replace(propagators=["tracecontext"], extract_policy="last")
    assert [n for n, _ in changed.composite.extractors] == ["tracecontext"]
    assert changed.composite.policy == "last"
    assert settings.composite.policy == "first"  # the original is untouched
    with pytest.raises(ValueError, match="unknown propagator 'nope' in propagators;"):
        settings.replace(propagators=["nope"])  # named as in code, no longer OTEL_PROPAGATORS
    kept = settings.replace(require_parent=True)
    sources = {name: source for name, _, source in kept.describe()}
    assert sources["propagators"] == "OTEL_PROPAGATORS"


def test_frozen() -> None:
    settings = Settings()
    with pytest.raises(AttributeError):
        settings.require_parent = True  # type: ignore[misc]


def test_describe_shows_values() -> None:
    settings = Settings(
        propagators=[TraceContextPropagator(), "b3"],
        excluded_paths=[re.compile("^/x"), "/health"],
        server_request_hook=sample_hook,
    )
    rows = {name: value for name, value, _ in settings.describe()}
    assert rows["propagators"] == "TraceContextPropagator, b3"
    assert rows["excluded_paths"] == "re:^/x, /health"
    assert rows["server_request_hook"] == "tests.test_settings:sample_hook"
    assert rows["extract"] == "(default)"
    assert rows["capture_request_headers"] == "(none)"


def test_unknown_variables_warned_not_fatal(caplog: pytest.LogCaptureFixture) -> None:
    env = {"TRACEWIRE_PROPAGATOR": "b3", "TRACEWIRE_REQUIRE_PARENT": "1", "OTHER_X": "1"}
    with caplog.at_level("WARNING", logger="tracewire"):
        settings = Settings.from_env(env)
    assert settings.propagators == ("tracecontext", "baggage")  # the typo did nothing...
    assert "ignored unknown environment variable(s) TRACEWIRE_PROPAGATOR;" in caplog.text
    assert "TRACEWIRE_PROPAGATORS" in caplog.text  # ...and the message shows the right name
    assert Settings.unknown_keys(env) == ["TRACEWIRE_PROPAGATOR"]
    assert Settings.unknown_keys({"APP_X": 1, "APP_INJECT": 2}, "APP_") == ["APP_X"]

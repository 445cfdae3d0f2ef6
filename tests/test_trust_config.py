"""Configuring the trust settings: the text form (environment), code (``Rule`` objects,
strings, mappings), Flask ``app.config`` and Django settings; and errors that name the rule
and the part that is wrong.

The forms must give equal settings, and the settings must act on a real server: each source
is checked once end to end (a request whose SERVER span carries the rule that decided).
"""

from __future__ import annotations

import re
import secrets
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from tests.support.servers import WerkzeugThread, serving
from tests.support.trust_apps import provider_with, wsgi_probe
from tests.support.trust_services import uvicorn_service
from tests.support.trust_spans import memory_sink
from tracewire import Settings, TracewireWSGIMiddleware
from tracewire.django import settings_from_django
from tracewire.flask import settings_from_config
from tracewire.trust import Rule

GATEWAY_TEXT = (
    "path:/public/* restart sampled=ignore baggage=drop; net:10.0.0.0/8 continue; * restart"
)
GATEWAY_RULES = (
    Rule(paths=["/public/*"], action="restart", sampled="ignore", baggage="drop"),
    Rule(networks=["10.0.0.0/8"], action="continue"),
    Rule(action="restart"),
)
GATEWAY_MAPPINGS = [
    {"paths": ["/public/*"], "action": "restart", "sampled": "ignore", "baggage": "drop"},
    {"networks": "10.0.0.0/8"},
    {"action": "RESTART_WITH_LINK"},
]
ENV = {
    "TRACEWIRE_INCOMING": GATEWAY_TEXT,
    "TRACEWIRE_TRUSTED_PROXIES": "10.0.0.0/8, ::1",
    "TRACEWIRE_CLIENT_IP_HEADER": "Forwarded",
    "TRACEWIRE_TRACESTATE_KEY": "acme",
    "TRACEWIRE_BAGGAGE_ATTRIBUTES": "tenant, user.tier",
    "TRACEWIRE_INJECT_TO": "*.legacy.mesh=b3multi; *.partner.example=none",
}
CODE: dict[str, Any] = {
    "trusted_proxies": ["10.0.0.0/8", "::1"],
    "client_ip_header": "forwarded",
    "tracestate_key": "acme",
    "baggage_attributes": ["tenant", "user.tier"],
    "inject_to": {"*.legacy.mesh": ["b3multi"], "*.partner.example": ["none"]},
}


# ------------------------------------------------------------------------------ the forms
def test_text_form_from_the_environment() -> None:
    settings = Settings.from_env(ENV)
    assert settings.incoming == GATEWAY_RULES
    assert [str(r) for r in settings.incoming] == [
        "path:/public/* restart sampled=ignore baggage=drop",
        "net:10.0.0.0/8 continue",
        "* restart",
    ]
    assert settings.trusted_proxies == ("10.0.0.0/8", "::1")
    assert settings.client_ip_header == "forwarded"
    assert settings.tracestate_key == "acme"
    assert settings.baggage_attributes == ("tenant", "user.tier")
    assert settings.inject_to == (
        (("*.legacy.mesh",), ("b3multi",)),
        (("*.partner.example",), ("none",)),
    )
    assert settings.source("incoming") == "TRACEWIRE_INCOMING"


@pytest.mark.parametrize(
    "incoming",
    [GATEWAY_TEXT, GATEWAY_RULES, list(GATEWAY_RULES), GATEWAY_TEXT.split("; "), GATEWAY_MAPPINGS],
    ids=["text", "rules", "rule-list", "strings", "mappings"],
)
def test_every_code_form_gives_the_same_settings(incoming: Any) -> None:
    assert Settings(incoming=incoming, **CODE) == Settings.from_env(ENV)


def test_mixed_forms_in_one_list() -> None:
    mixed = [GATEWAY_RULES[0], "net:10.0.0.0/8 continue", {"action": "restart"}]
    assert Settings(incoming=mixed).incoming == GATEWAY_RULES


@pytest.mark.parametrize(
    "text",
    [
        "path:/public/*,/webhooks/* restart sampled=ignore baggage=drop",
        "net:10.0.0.0/8,::1 continue",
        "method:GET,HEAD ignore",
        "ours continue",
        "!ours restart",
        "* restart",
        "path:re:^/api/v[0-9]+/ method:POST restart baggage=tenant,user",
        "net:2001:db8::/32 ours ignore sampled=ignore",
    ],
)
def test_text_form_round_trips(text: str) -> None:
    (rule,) = Settings(incoming=text).incoming
    assert str(rule) == text
    assert Settings(incoming=str(rule)).incoming == (rule,)


def test_otep_names_are_accepted() -> None:
    rules = Settings(incoming="* RESTART_WITH_LINK; * restart_without_link; * Continue").incoming
    assert [r.action for r in rules] == ["restart", "ignore", "continue"]


def test_flask_config() -> None:
    config = {f"TRACEWIRE_{k.upper()}": v for k, v in CODE.items()}
    config["TRACEWIRE_INCOMING"] = GATEWAY_TEXT
    assert settings_from_config(config, base=Settings()) == Settings.from_env(ENV)
    # Python values (Rule objects) are taken as they are.
    config["TRACEWIRE_INCOMING"] = list(GATEWAY_RULES)
    assert settings_from_config(config, base=Settings()).incoming == GATEWAY_RULES


def test_django_style_settings() -> None:
    both = SimpleNamespace(
        TRACEWIRE_INCOMING=GATEWAY_MAPPINGS,
        TRACEWIRE=dict(CODE),
        DEBUG=True,
    )
    assert settings_from_django(both, base=Settings()) == Settings.from_env(ENV)
    text = SimpleNamespace(**ENV)
    assert settings_from_django(text, base=Settings()) == Settings.from_env(ENV)


def test_django_setting_given_twice_is_an_error() -> None:
    from django.core.exceptions import ImproperlyConfigured

    twice = SimpleNamespace(TRACEWIRE_INCOMING="* restart", TRACEWIRE={"incoming": "* ignore"})
    with pytest.raises(ImproperlyConfigured, match="incoming"):
        settings_from_django(twice, base=Settings())


# ------------------------------------------------------------------ errors: rule and part
@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"TRACEWIRE_INCOMING": "paht:/x restart"},
            "invalid rule 1 'paht:/x restart' in TRACEWIRE_INCOMING: unknown part 'paht:/x'",
        ),
        (
            {"TRACEWIRE_INCOMING": "net:10.0.0.0/8 continue; * restrat"},
            "invalid rule 2 '* restrat' in TRACEWIRE_INCOMING: unknown part 'restrat'",
        ),
        (
            {"TRACEWIRE_INCOMING": "Path:/x restart"},
            "invalid rule 1 'Path:/x restart' in TRACEWIRE_INCOMING: unknown part 'Path:/x'",
        ),
        (
            {"TRACEWIRE_INCOMING": "* continue; net:10.0.0.0/33 continue"},
            "invalid rule 2 'net:10.0.0.0/33 continue' in TRACEWIRE_INCOMING: "
            "invalid network '10.0.0.0/33'",
        ),
        (
            {"TRACEWIRE_INCOMING": "net:10.0.0.0/8,nope continue"},
            "invalid rule 1 'net:10.0.0.0/8,nope continue' in TRACEWIRE_INCOMING: "
            "invalid network 'nope'",
        ),
        (
            {"TRACEWIRE_INCOMING": "* continue sampled=maybe"},
            "invalid rule 1 '* continue sampled=maybe' in TRACEWIRE_INCOMING: "
            "sampled='maybe' is not one of honor, ignore",
        ),
        (
            {"TRACEWIRE_INCOMING": "* continue sampeld=ignore"},
            "invalid rule 1 '* continue sampeld=ignore' in TRACEWIRE_INCOMING: "
            "unknown part 'sampeld=ignore'",
        ),
        (
            {"TRACEWIRE_INCOMING": "path:re:( restart"},
            "invalid rule 1 'path:re:( restart' in TRACEWIRE_INCOMING: "
            "invalid regular expression '('",
        ),
        (
            {"TRACEWIRE_INJECT_TO": "*.legacy.mesh b3multi"},
            "invalid entry '*.legacy.mesh b3multi' in TRACEWIRE_INJECT_TO; "
            "expected 'HOSTS=PROPAGATORS'",
        ),
        (
            {"TRACEWIRE_INJECT_TO": "*.legacy.mesh=b4"},
            "unknown propagator 'b4' in TRACEWIRE_INJECT_TO for ('*.legacy.mesh',)",
        ),
        (
            {"TRACEWIRE_INJECT_TO": "*.x=none,b3"},
            "'none' in TRACEWIRE_INJECT_TO for ('*.x',) cannot be combined",
        ),
        (
            {"TRACEWIRE_INJECT_TO": "=b3"},
            "invalid entry '=b3' in TRACEWIRE_INJECT_TO",
        ),
        (
            {"TRACEWIRE_INJECT_TO": "re:(=b3"},
            "invalid regular expression '(' in TRACEWIRE_INJECT_TO",
        ),
        (
            {"TRACEWIRE_TRACESTATE_KEY": "ACME"},
            "invalid tracestate key 'ACME' in TRACEWIRE_TRACESTATE_KEY",
        ),
        (
            {"TRACEWIRE_TRACESTATE_KEY": "@acme"},
            "invalid tracestate key '@acme' in TRACEWIRE_TRACESTATE_KEY",
        ),
        (
            {"TRACEWIRE_TRACESTATE_KEY": "acme=1"},
            "invalid tracestate key 'acme=1' in TRACEWIRE_TRACESTATE_KEY",
        ),
        (
            {"TRACEWIRE_TRACESTATE_KEY": "a" * 257},
            "invalid tracestate key 'aaaa",
        ),
        (
            {"TRACEWIRE_TRUSTED_PROXIES": "10.0.0.0/8, 10.0.0.0/33"},
            "invalid network '10.0.0.0/33' in TRACEWIRE_TRUSTED_PROXIES",
        ),
        (
            {"TRACEWIRE_CLIENT_IP_HEADER": "x-real-ip"},
            "invalid TRACEWIRE_CLIENT_IP_HEADER 'x-real-ip'; valid choices: x-forwarded-for, "
            "forwarded",
        ),
    ],
)
def test_errors_name_the_rule_and_the_part(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        Settings.from_env(env)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"incoming": [Rule(), "* restrat"]}, ValueError, "invalid rule 2 '* restrat' in incoming"),
        (
            {"incoming": [{"paths": ["/x"], "actoin": "restart"}]},
            ValueError,
            "invalid rule 1 {'paths': ['/x'], 'actoin': 'restart'} in incoming",
        ),
        ({"incoming": [{"action": "restrat"}]}, ValueError, "action='restrat' is not one of"),
        ({"incoming": [{"baggage": 3}]}, ValueError, "baggage must be a sequence of strings"),
        ({"incoming": [{"ours": "yes"}]}, ValueError, "ours must be True, False or None"),
        ({"incoming": [{"when": "lambda: True"}]}, ValueError, "when must be a callable"),
        ({"incoming": [42]}, TypeError, "got int in rule 1"),
        ({"inject_to": {"*.x": ["nope"]}}, ValueError, "unknown propagator 'nope' in inject_to"),
        ({"inject_to": [("*.x",)]}, TypeError, "inject_to must be a mapping"),
        ({"tracestate_key": 3}, TypeError, "tracestate_key must be a string or None"),
        ({"tracestate_key": "Acme"}, ValueError, "invalid tracestate key 'Acme' in tracestate_key"),
        ({"trusted_proxies": ["10.0.0.300"]}, ValueError, "invalid network '10.0.0.300'"),
    ],
)
def test_code_errors_name_the_rule_and_the_part(
    kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=re.escape(message)):
        Settings(**kwargs)


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        (lambda: Rule(action="restrat"), "action='restrat' is not one of continue, restart"),
        (lambda: Rule(sampled="never"), "sampled='never' is not one of honor, ignore"),
        (lambda: Rule(networks=["10.0.0.0/33"]), "invalid network '10.0.0.0/33'"),
        (lambda: Rule(paths=["re:("]), "invalid regular expression"),
        (lambda: Rule(methods=[""]), "non-empty strings"),
    ],
)
def test_rule_objects_check_their_fields(rule: Any, message: str) -> None:
    with pytest.raises((ValueError, TypeError), match=re.escape(message)):
        rule()


def test_framework_errors_name_the_config_key() -> None:
    with pytest.raises(ValueError, match=re.escape("in app.config['TRACEWIRE_INCOMING']")):
        settings_from_config({"TRACEWIRE_INCOMING": "* restrat"}, base=Settings())
    with pytest.raises(ValueError, match=re.escape("in settings.TRACEWIRE_INCOMING")):
        settings_from_django(SimpleNamespace(TRACEWIRE_INCOMING="* restrat"), base=Settings())


@pytest.mark.parametrize("text", ["net: continue", "path: restart", "method: ignore"])
def test_an_empty_condition_is_an_error(text: str) -> None:
    with pytest.raises(ValueError, match="invalid rule 1"):
        Settings(incoming=text)


def test_an_empty_baggage_value_is_an_error() -> None:
    with pytest.raises(ValueError, match="baggage"):
        Settings(incoming="* continue baggage=")


@pytest.mark.parametrize(
    "text",
    [
        "restart ignore",
        "path:/a path:/b restart",
        "* sampled=ignore sampled=honor",
        "ours !ours restart",
    ],
)
def test_a_part_given_twice_is_an_error(text: str) -> None:
    with pytest.raises(ValueError, match="invalid rule 1"):
        Settings(incoming=text)


# ------------------------------------------------------------------ end to end, per source
def _ask_wsgi(app: Any, path: str, headers: dict[str, str]) -> None:
    with serving(WerkzeugThread(app)) as server:
        assert httpx.get(server.url + path, headers=headers, timeout=10).status_code == 200


TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.mark.parametrize("source", ["env", "flask", "django"])
def test_each_source_acts_on_a_real_server(source: str, monkeypatch: pytest.MonkeyPatch) -> None:
    provider, exporter = provider_with()
    rules = "path:/public/* restart baggage=drop; * continue"
    if source == "env":
        monkeypatch.setenv("TRACEWIRE_INCOMING", rules)
        app: Any = TracewireWSGIMiddleware(wsgi_probe(provider), tracer_provider=provider)
    elif source == "flask":
        from flask import Flask

        from tracewire.flask import Tracewire

        flask = Flask(__name__)
        flask.config["TRACEWIRE_INCOMING"] = rules
        flask.route("/public/<x>")(lambda x: "ok")
        Tracewire(flask, tracer_provider=provider)
        app = flask
    else:
        config = SimpleNamespace(TRACEWIRE={"incoming": rules.split("; ")})
        app = TracewireWSGIMiddleware(
            wsgi_probe(provider), settings_from_django(config), tracer_provider=provider
        )
    _ask_wsgi(app, "/public/x", {"traceparent": TRACEPARENT})
    span = memory_sink(exporter).server("/public/x")
    assert span["attributes"]["tracewire.policy.rule"] == "path:/public/* restart baggage=drop"
    assert span["links"][0]["trace_id"] == TRACEPARENT.split("-")[1]
    provider.shutdown()


def test_when_conditions_on_a_real_server() -> None:
    """``when=`` sees the request view; one that raises counts as false, and the request
    is answered as usual."""

    def raises(view: Any) -> bool:
        raise RuntimeError("the user's condition failed")

    def is_bot(view: Any) -> bool:
        return bool(view.user_agent == "bot/1.0")

    settings = Settings(
        incoming=[Rule(when=raises, action="ignore"), Rule(when=is_bot, action="restart")]
    )
    assert [str(r) for r in settings.incoming] == [
        "when:raises ignore",
        "when:is_bot restart",
    ]
    with uvicorn_service(settings) as service:
        bot, human = f"/w/{secrets.token_hex(4)}", f"/w/{secrets.token_hex(4)}"
        for path, agent in ((bot, "bot/1.0"), (human, "browser")):
            response = httpx.get(
                service.url + path,
                headers={"traceparent": TRACEPARENT, "user-agent": agent},
                timeout=10,
            )
            assert response.status_code == 200
        bot_span, human_span = service.spans.server(bot), service.spans.server(human)
    assert bot_span["attributes"]["tracewire.parent.source"] == "policy:restart"
    assert human_span["attributes"]["tracewire.parent.source"] == "header:tracecontext"
    assert "tracewire.policy.rule" not in human_span["attributes"]


def test_method_conditions_on_a_real_server() -> None:
    with uvicorn_service(Settings(incoming="method:post,DELETE restart")) as service:
        paths = {m: f"/m/{secrets.token_hex(4)}" for m in ("GET", "POST", "DELETE")}
        for method, path in paths.items():
            response = httpx.request(
                method, service.url + path, headers={"traceparent": TRACEPARENT}, timeout=10
            )
            assert response.status_code == 200
        sources = {
            m: service.spans.server(p)["attributes"]["tracewire.parent.source"]
            for m, p in paths.items()
        }
    assert sources == {
        "GET": "header:tracecontext",
        "POST": "policy:restart",
        "DELETE": "policy:restart",
    }


def test_when_sees_the_request_headers_under_asgi_as_under_wsgi() -> None:
    def admin(view: Any) -> bool:
        return bool(view.getter.get(view.carrier, "x-role") == ["admin"])

    settings = Settings(incoming=[Rule(when=admin, action="ignore")])
    rules = {}
    provider, exporter = provider_with()
    wsgi = TracewireWSGIMiddleware(wsgi_probe(provider), settings, tracer_provider=provider)
    with serving(WerkzeugThread(wsgi)) as server:
        httpx.get(server.url + "/w", headers={"x-role": "admin"}, timeout=10)
    rules["wsgi"] = memory_sink(exporter).server("/w")["attributes"].get("tracewire.policy.rule")
    with uvicorn_service(settings) as service:
        httpx.get(service.url + "/w", headers={"x-role": "admin"}, timeout=10)
        rules["asgi"] = service.spans.server("/w")["attributes"].get("tracewire.policy.rule")
    provider.shutdown()
    assert rules == {"wsgi": "when:admin ignore", "asgi": "when:admin ignore"}

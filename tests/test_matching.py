"""Path and host patterns: exact, glob, regex, host:port, same-origin."""

from __future__ import annotations

import re

import pytest

from tracewire import Settings
from tracewire.compiled import compile_settings
from tracewire.matching import HostMatcher, PathMatcher

PATHS = ["/health", "/static/*", "re:^/internal/", re.compile(r"\.php$"), "/v?/ping"]


@pytest.mark.parametrize(
    ("path", "excluded"),
    [
        ("/health", True),
        ("/health/", False),  # exact is exact
        ("/healthz", False),
        ("/HEALTH", False),  # paths are case-sensitive
        ("/static/app.js", True),
        ("/static/css/site.css", True),  # "*" crosses "/"
        ("/static", False),
        ("/internal/metrics", True),
        ("/api/internal/x", False),  # anchored by the regex itself
        ("/index.php", True),  # a compiled regex is searched
        ("/v1/ping", True),
        ("/v10/ping", False),
        ("/", False),
    ],
)
def test_path_matcher(path: str, excluded: bool) -> None:
    assert PathMatcher(PATHS, "excluded_paths")(path) is excluded


def test_settings_path_excluded() -> None:
    settings = Settings(excluded_paths="/health, re:^/admin")
    assert compile_settings(settings).excluded is not None
    assert compile_settings(settings).excluded("/admin/users")
    assert not compile_settings(settings).excluded("/users")
    assert compile_settings(Settings()).excluded is None  # nothing to check per request


HOSTS = ["api.internal", "*.svc.local", "re:^db[0-9]+\\.corp$", "pinned.example:8443", "*:9000"]


@pytest.mark.parametrize(
    ("host", "port", "scheme", "allowed"),
    [
        ("api.internal", None, None, True),
        ("API.Internal", 443, "https", True),  # hosts are case-insensitive
        ("x.api.internal", None, None, False),
        ("a.svc.local", 80, "http", True),
        ("a.b.svc.local", 80, "http", True),  # "*" crosses "."
        ("svc.local", 80, "http", False),
        ("db12.corp", 5432, None, True),
        ("db.corp", None, None, False),
        ("pinned.example", 8443, "https", True),
        ("pinned.example", 443, "https", False),
        ("pinned.example", None, "https", False),  # default port 443
        ("anything", 9000, "http", True),  # a glob also sees host:port
        ("anything", 9001, "http", False),
    ],
)
def test_host_matcher(host: str, port: int | None, scheme: str | None, allowed: bool) -> None:
    assert HostMatcher(HOSTS, "propagate_to")(host, port, scheme) is allowed


def test_default_ports() -> None:
    matcher = HostMatcher(["a.example:443", "b.example:80"], "propagate_to")
    assert matcher("a.example", None, "https")
    assert matcher("a.example", None, "WSS")
    assert not matcher("a.example", None, "http")
    assert matcher("b.example", None, "http")
    assert not matcher("b.example", None, None)  # no scheme, no port: cannot tell


def test_none_allows_all_empty_allows_none() -> None:
    assert HostMatcher(None, "x")("anything.example", 1, "http")
    assert not HostMatcher([], "x")("anything.example", 1, "http")


@pytest.mark.parametrize(
    ("target", "origin", "allowed"),
    [
        (("http", "app.local", 8000), ("http", "app.local", 8000), True),
        (("http", "APP.local", 8000), ("HTTP", "app.LOCAL", 8000), True),
        (("https", "app.local", None), ("https", "app.local", 443), True),
        (("https", "app.local", 443), ("https", "app.local", None), True),
        (("http", "app.local", 8001), ("http", "app.local", 8000), False),
        (("https", "app.local", 8000), ("http", "app.local", 8000), False),
        (("http", "other.local", 8000), ("http", "app.local", 8000), False),
    ],
)
def test_same_origin(
    target: tuple[str, str, int | None], origin: tuple[str, str, int | None], allowed: bool
) -> None:
    matcher = HostMatcher(["same-origin"], "propagate_to")
    assert matcher.same_origin
    scheme, host, port = target
    assert matcher(host, port, scheme, origin) is allowed


def test_same_origin_needs_an_origin() -> None:
    matcher = HostMatcher(["same-origin", "api.internal"], "propagate_to")
    assert not matcher("app.local", 8000, "http", None)
    assert matcher("api.internal", 8000, "http", None)
    assert not HostMatcher(["api.internal"], "x").same_origin


def test_invalid_regex_names_the_setting() -> None:
    with pytest.raises(ValueError, match=r"invalid regular expression '\(' in TRACEWIRE_X"):
        HostMatcher(["re:("], "TRACEWIRE_X")

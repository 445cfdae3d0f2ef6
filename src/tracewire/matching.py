"""Precompiled matchers for request paths and outgoing hosts, built once from settings.

Pattern forms, the same for every setting that takes patterns:

* ``"/health"`` or ``"api.internal"``: exactly that;
* ``"/static/*"`` or ``"*.internal"``: a glob over the whole value (``*`` crosses ``/`` and
  ``.``, so ``"*.internal"`` matches ``a.b.internal`` but not ``internal``);
* ``"re:^/internal/"`` or a compiled ``re.Pattern``: a regular expression *searched* in it.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence

from opentelemetry.context import create_key

from tracewire.authority import effective_port

__all__ = [
    "ORIGIN_KEY",
    "REGEX_PREFIX",
    "SAME_ORIGIN",
    "HostMatcher",
    "Origin",
    "PathMatcher",
    "PatternSpec",
    "validate_patterns",
]

PatternSpec = str | re.Pattern[str]

REGEX_PREFIX = "re:"
SAME_ORIGIN = "same-origin"

# The (scheme, host, port) of the request a server middleware is handling, set in the request's
# context so that outgoing calls can be compared with it for "same-origin".
ORIGIN_KEY = create_key("tracewire-server-origin")

Origin = tuple[str, str, int | None]


def _regex_source(pattern: PatternSpec, setting: str) -> str:
    source = pattern.pattern if isinstance(pattern, re.Pattern) else pattern[len(REGEX_PREFIX) :]
    try:
        re.compile(source)
    except re.error as exc:
        raise ValueError(f"invalid regular expression {source!r} in {setting}: {exc}") from exc
    return source


def validate_patterns(patterns: Sequence[PatternSpec], setting: str) -> None:
    """``ValueError`` naming ``setting`` for a regular expression that does not compile."""
    for pattern in patterns:
        if isinstance(pattern, re.Pattern) or pattern.startswith(REGEX_PREFIX):
            _regex_source(pattern, setting)


class _Patterns:
    """Exact values in a set, globs in one anchored regex, regexes in one searched regex."""

    def __init__(self, patterns: Sequence[PatternSpec], setting: str, *, fold: bool) -> None:
        exact: set[str] = set()
        globs: list[str] = []
        searches: list[str] = []
        for pattern in patterns:
            if isinstance(pattern, re.Pattern) or pattern.startswith(REGEX_PREFIX):
                searches.append(_regex_source(pattern, setting))
            elif any(c in pattern for c in "*?["):
                globs.append(fnmatch.translate(pattern.lower() if fold else pattern))
            else:
                exact.add(pattern.lower() if fold else pattern)
        flags = re.IGNORECASE if fold else 0
        self.exact = frozenset(exact)
        self.globs = re.compile("|".join(globs), flags) if globs else None
        self.search = (
            re.compile("|".join(f"(?:{s})" for s in searches), flags) if searches else None
        )

    def __call__(self, value: str) -> bool:
        if value in self.exact:
            return True
        if self.globs is not None and self.globs.match(value) is not None:
            return True
        return self.search is not None and self.search.search(value) is not None


class PathMatcher:
    """Matches a request path (never the full URL, never the query string)."""

    def __init__(self, patterns: Sequence[PatternSpec], setting: str) -> None:
        self._patterns = _Patterns(patterns, setting, fold=False)

    def __call__(self, path: str) -> bool:
        return self._patterns(path)


class HostMatcher:
    """Decides whether an outgoing request's host may receive trace headers.

    Besides the pattern forms above, a pattern is also tried on ``"host:port"`` (so
    ``"api.internal:8443"`` or ``"*.internal:8443"`` pin a port), and ``"same-origin"`` allows
    the scheme, host and port of the request being served. A missing port counts as the
    scheme's default (80 for http/ws, 443 for https/wss). ``None`` allows every host. Host
    names compare case-insensitively.
    """

    def __init__(self, patterns: Sequence[PatternSpec] | None, setting: str) -> None:
        self.allow_all = patterns is None
        items = list(patterns or ())
        self.same_origin = SAME_ORIGIN in items
        self._patterns = _Patterns([p for p in items if p != SAME_ORIGIN], setting, fold=True)

    def __call__(
        self,
        host: str,
        port: int | None = None,
        scheme: str | None = None,
        origin: Origin | None = None,
    ) -> bool:
        if self.allow_all:
            return True
        host = host.lower()
        if self._patterns(host):
            return True
        port = effective_port(port, scheme)
        if port is not None and self._patterns(f"{host}:{port}"):
            return True
        if not self.same_origin or origin is None or scheme is None:
            return False
        o_scheme, o_host, o_port = origin
        o_port = effective_port(o_port, o_scheme)
        return (o_scheme.lower(), o_host.lower(), o_port) == (scheme.lower(), host, port)

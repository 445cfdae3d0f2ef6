"""OpenTelemetry's own environment variables, and the tracewire setting each one sets.

Users arrive from the OpenTelemetry contrib instrumentations with these variables set; they
keep working. Precedence for every setting: code > ``TRACEWIRE_*`` > the variables below >
the defaults. ``tracewire check`` names the variable a value came from.

========================================================  =====================================
variable                                                  setting
========================================================  =====================================
``OTEL_PROPAGATORS``                                      ``propagators``
``OTEL_PYTHON_<FRAMEWORK>_EXCLUDED_URLS``, then           ``excluded_urls`` (server); the
``OTEL_PYTHON_EXCLUDED_URLS``                             framework is the component's
``OTEL_PYTHON_<HTTPX|REQUESTS>_EXCLUDED_URLS``, then      ``client_excluded_urls``
``OTEL_PYTHON_EXCLUDED_URLS``
``OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_*``    ``capture_request_headers`` /
                                                          ``capture_response_headers``
``OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_CLIENT_*``    ``capture_client_request_headers`` /
                                                          ``capture_client_response_headers``
``OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_``   ``redact_headers`` (added to the
``FIELDS``                                                defaults)
``OTEL_SEMCONV_STABILITY_OPT_IN`` (``http``, ``http/dup``) ``semconv``
========================================================  =====================================

Differences from the contrib packages, kept deliberately:

* exclusions are regular expressions searched in the full URL, as in contrib; tracewire's own
  ``excluded_paths`` (exact, glob, ``re:``) match the path only;
* header lists: an entry that is a plain header name is matched exactly (the fast path); one
  with regular-expression characters is a regular expression matched against the whole name
  (contrib treats every entry so), case-insensitively;
* the sanitize list is searched in each header name, plain names too, as in contrib; sanitised
  values are recorded as ``REDACTED`` (contrib: ``[REDACTED]``), the one marker tracewire uses
  for headers and query values alike, and tracewire's default redactions (``authorization``,
  ``cookie``, ...) stay on when the variable is set;
* attribute names keep the header's dashes (``http.request.header.x-request-id``), as the
  stable conventions say; contrib writes ``x_request_id``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = [
    "CAPTURE_VARIABLES",
    "CLIENT_LIBRARIES",
    "EXCLUDED_URLS",
    "FRAMEWORKS",
    "OTEL_PROPAGATORS",
    "SANITIZE",
    "SEMCONV_OPT_IN",
    "SEMCONV_VALUES",
    "component_exclusions",
    "excluded_urls_variable",
    "framework_exclusions",
    "frameworks_of",
    "header_patterns",
    "otel_values",
    "parse_semconv",
]

OTEL_PROPAGATORS = "OTEL_PROPAGATORS"
EXCLUDED_URLS = "OTEL_PYTHON_EXCLUDED_URLS"
SEMCONV_OPT_IN = "OTEL_SEMCONV_STABILITY_OPT_IN"
SEMCONV_VALUES = ("http", "http/dup")
_CAPTURE = "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_"
CAPTURE_VARIABLES = {
    "capture_request_headers": _CAPTURE + "SERVER_REQUEST",
    "capture_response_headers": _CAPTURE + "SERVER_RESPONSE",
    "capture_client_request_headers": _CAPTURE + "CLIENT_REQUEST",
    "capture_client_response_headers": _CAPTURE + "CLIENT_RESPONSE",
}
SANITIZE = _CAPTURE + "SANITIZE_FIELDS"

# The contrib packages' names, as in their OTEL_PYTHON_<NAME>_EXCLUDED_URLS.
FRAMEWORKS = ("FLASK", "DJANGO", "STARLETTE", "FASTAPI", "FALCON")
CLIENT_LIBRARIES = ("HTTPX", "REQUESTS")

# Characters that make a header-list entry a regular expression rather than a name.
_REGEX_CHARS = frozenset(".*+?[](){}|^$\\")


def excluded_urls_variable(name: str) -> str:
    """``OTEL_PYTHON_<NAME>_EXCLUDED_URLS`` for a framework or client library."""
    return f"OTEL_PYTHON_{name.upper()}_EXCLUDED_URLS"


def _list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def header_patterns(text: str, *, search: bool = False) -> tuple[str, ...]:
    """A contrib header list: names stay names, regular expressions become ``re:`` entries
    matched against the whole name. ``search``: every entry, a plain name too, is searched
    anywhere in the name, as contrib's sanitize list is (``session`` redacts
    ``x-session-id``): a redaction list errs on the side of hiding."""
    found: list[str] = []
    for item in _list(text):
        plain = not _REGEX_CHARS.intersection(item)
        if search:
            found.append(f"re:.*(?:{re.escape(item) if plain else item}).*")
        elif plain:
            found.append(item.lower())
        else:
            found.append(f"re:{item}")
    return tuple(found)


def parse_semconv(text: str, label: str) -> str | None:
    """``http`` or ``http/dup`` from the opt-in list (other signals' entries are ignored)."""
    found: str | None = None
    for item in _list(text):
        if not item.lower().startswith("http"):
            continue  # database, messaging, ...: not tracewire's
        if item.lower() not in SEMCONV_VALUES:
            raise ValueError(
                f"invalid {item!r} in {label}; for HTTP use one of: {', '.join(SEMCONV_VALUES)}"
            )
        if found != "http/dup":
            found = item.lower()
    return found


def _set(env: Mapping[str, Any], variable: str) -> str | None:
    value = env.get(variable)
    return value if isinstance(value, str) and value.strip() else None


def _excluded(env: Mapping[str, Any], specific: tuple[str, ...]) -> tuple[str, str] | None:
    for name in specific:
        variable = excluded_urls_variable(name)
        value = _set(env, variable)
        if value is not None:
            return value, variable
    value = _set(env, EXCLUDED_URLS)
    return None if value is None else (value, EXCLUDED_URLS)


def framework_exclusions(
    env: Mapping[str, Any], frameworks: tuple[str, ...]
) -> tuple[list[str], str] | None:
    """``(patterns, variable)`` of the first ``OTEL_PYTHON_<FRAMEWORK>_EXCLUDED_URLS`` set."""
    for name in frameworks:
        variable = excluded_urls_variable(name)
        value = _set(env, variable)
        if value is not None:
            return _list(value), variable
    return None


def component_exclusions(env: Mapping[str, Any]) -> list[tuple[str, str, tuple[Any, ...]]]:
    """``(variable, setting, patterns)`` for every framework's and client library's own
    ``OTEL_PYTHON_<NAME>_EXCLUDED_URLS`` that is set, checked (a bad regular expression is a
    ``ValueError`` naming the variable): what ``tracewire check`` shows beside the settings
    from the environment, which hold only the generic variable's."""
    from tracewire._kinds import URL_REGEXES

    found = []
    for names, setting in (
        (FRAMEWORKS, "excluded_urls"),
        (CLIENT_LIBRARIES, "client_excluded_urls"),
    ):
        for name in names:
            variable = excluded_urls_variable(name)
            value = _set(env, variable)
            if value is not None:
                found.append((variable, setting, URL_REGEXES.check(_list(value), variable)))
    return found


def frameworks_of(app: object) -> tuple[str, ...]:
    """The contrib framework names whose variables apply to ``app`` (by the module of its
    class, or of the object a bound ``wsgi_app`` belongs to)."""
    owner = getattr(app, "__self__", app)
    module = type(owner).__module__.partition(".")[0]
    return {
        "flask": ("FLASK",),
        "django": ("DJANGO",),
        "falcon": ("FALCON",),
        "fastapi": ("FASTAPI",),
        "starlette": ("FASTAPI", "STARLETTE"),  # FastAPI's stack is Starlette's inside
    }.get(module, ())


def _headers(env: Mapping[str, Any]) -> list[tuple[str, Any, str]]:
    found: list[tuple[str, Any, str]] = []
    for name, variable in CAPTURE_VARIABLES.items():
        value = _set(env, variable)
        if value is not None:
            found.append((name, header_patterns(value), variable))
    sanitize = _set(env, SANITIZE)
    if sanitize is not None:
        from tracewire.settings import DEFAULT_REDACT_HEADERS

        redact = (*DEFAULT_REDACT_HEADERS, *header_patterns(sanitize, search=True))
        found.append(("redact_headers", redact, SANITIZE))
    return found


def otel_values(
    env: Mapping[str, Any],
    skip: set[str],
    frameworks: tuple[str, ...] = (),
    libraries: tuple[str, ...] = (),
) -> tuple[dict[str, Any], dict[str, str]]:
    """``(values, labels)`` the OpenTelemetry variables in ``env`` set, for the settings not in
    ``skip`` (those set by code or ``TRACEWIRE_*``: a variable they shadow is not even read).

    ``frameworks`` / ``libraries``: the contrib names whose ``OTEL_PYTHON_<NAME>_EXCLUDED_URLS``
    come before the generic variable, for a component of that framework or library.
    """
    found: list[tuple[str, Any, str]] = []
    propagators = _set(env, OTEL_PROPAGATORS)
    if propagators is not None:
        found.append(("propagators", propagators, OTEL_PROPAGATORS))
    for name, specific in (("excluded_urls", frameworks), ("client_excluded_urls", libraries)):
        excluded = _excluded(env, specific)
        if excluded is not None:
            found.append((name, _list(excluded[0]), excluded[1]))
    found.extend(_headers(env))
    semconv = _set(env, SEMCONV_OPT_IN)
    if semconv is not None and "semconv" not in skip:
        chosen = parse_semconv(semconv, SEMCONV_OPT_IN)
        if chosen is not None:
            found.append(("semconv", chosen, SEMCONV_OPT_IN))
    values = {name: value for name, value, _ in found if name not in skip}
    labels = {name: variable for name, _, variable in found if name not in skip}
    return values, labels

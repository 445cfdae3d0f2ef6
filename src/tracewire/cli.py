"""The ``tracewire`` command: ``tracewire check`` and ``tracewire demo``."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from tracewire import __version__, otel_env
from tracewire._diagnostics import static_breakers
from tracewire.compiled import compile_settings
from tracewire.settings import Settings

__all__ = [
    "COMMANDS",
    "PRECEDENCE",
    "USAGE",
    "CheckError",
    "check",
    "demo",
    "find_settings",
    "load_app",
    "main",
]

PRECEDENCE = (
    "settings given to the component: settings=, keyword settings, or the framework's config "
    "(Flask app.config, a Starlette Config, Django settings)",
    "for an outgoing call made while serving a request: the serving middleware's settings",
    "the process default: tracewire.configure()",
    "the environment: TRACEWIRE_* variables, then OpenTelemetry's OTEL_* variables",
    "the built-in defaults",
)


class CheckError(Exception):
    """The app could not be loaded or holds no tracewire middleware."""


# ---------------------------------------------------------------------------- finding apps
def load_app(target: str) -> Any:
    """The object ``module:attribute`` names (``module:factory()`` calls the factory)."""
    module_name, colon, attribute = target.partition(":")
    if not colon or not module_name or not attribute:
        raise CheckError(f"--app {target!r}: expected 'module:attribute', e.g. 'myapp.main:app'")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # as uvicorn and gunicorn do
    try:
        found: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise CheckError(f"--app {target!r}: cannot import {module_name!r}: {exc}") from exc
    call = attribute.endswith("()")
    for part in attribute.removesuffix("()").split("."):
        try:
            found = getattr(found, part)
        except AttributeError as exc:
            raise CheckError(f"--app {target!r}: {module_name} has no {part!r}") from exc
    return found() if call else found


_WRAPPED = ("app", "wsgi_app", "_app", "application", "middleware_stack", "handler")


def _components(root: Any) -> Iterator[tuple[str, Settings]]:
    """``(where, settings)`` of every tracewire server component reachable from ``root``."""
    from tracewire.asgi import TracewireMiddleware
    from tracewire.wsgi import TracewireWSGIMiddleware

    seen: set[int] = set()
    todo: list[tuple[str, Any]] = [("app", root)]
    while todo and len(seen) < 256:
        where, obj = todo.pop(0)
        if obj is None or id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, TracewireMiddleware | TracewireWSGIMiddleware):
            yield f"{where} ({type(obj).__name__})", obj.settings
        if type(obj).__module__.startswith("django.core.handlers."):
            from tracewire.django import listed_settings

            listed = listed_settings()
            if listed is not None:
                yield f"{where} (settings.MIDDLEWARE: {listed[0]})", listed[1]
        for entry in getattr(obj, "user_middleware", None) or ():  # Starlette / FastAPI
            if getattr(entry, "cls", None) is TracewireMiddleware:
                # Built as Starlette will build it, around Starlette's own inner stack, so
                # that the framework's OTEL_PYTHON_<NAME>_EXCLUDED_URLS apply here as there.
                inner = getattr(obj, "router", None) or _no_app
                built = TracewireMiddleware(inner, *entry.args, **entry.kwargs)
                yield f"{where}.user_middleware (TracewireMiddleware)", built.settings
        todo.extend((f"{where}.{name}", getattr(obj, name, None)) for name in _WRAPPED)


async def _no_app(scope: Any, receive: Any, send: Any) -> None:  # pragma: no cover
    return None


def find_settings(root: Any) -> list[tuple[str, Settings]]:
    """The settings of each tracewire middleware in ``root`` (an app, however wrapped)."""
    found: list[tuple[str, Settings]] = []
    for where, settings in _components(root):
        if not any(settings is other for _, other in found):
            found.append((where, settings))
    return found


# ------------------------------------------------------------------------------- printing
def _print_settings(title: str, settings: Settings) -> None:
    rows = settings.describe()
    width = max(len(name) for name, _, _ in rows)
    print(title)
    for name, value, source in rows:
        print(f"  {name:<{width}}  {value}    [{source}]")
    print(f"  {'effective':<{width}}  {settings.composite!r}")


def _print_breakers(settings: Settings, *, check_sdk: bool) -> None:
    breakers = static_breakers(compile_settings(settings), check_sdk=check_sdk)
    print("what would break traces:" if breakers else "what would break traces: nothing found")
    for line in breakers:
        print(f"  - {line}")


def _print_exclusions(exclusions: Sequence[tuple[str, str, tuple[Any, ...]]]) -> None:
    # A framework's or library's own variable applies to that component only (it replaces
    # the generic OTEL_PYTHON_EXCLUDED_URLS there), so it is not in the rows above.
    if not exclusions:
        return
    print(
        "for one framework or client library, where neither code nor TRACEWIRE_* sets it "
        "(instead of OTEL_PYTHON_EXCLUDED_URLS):"
    )
    for variable, setting, patterns in exclusions:
        name = variable.removeprefix("OTEL_PYTHON_").removesuffix("_EXCLUDED_URLS").lower()
        shown = ", ".join(str(p) for p in patterns)
        print(f"  {setting} ({name})  {shown}    [{variable}]")


def check(argv: Sequence[str]) -> int:
    """Print the effective settings (of an app, or from the environment); 2 if invalid."""
    parser = argparse.ArgumentParser(
        prog="tracewire check",
        description="Validate tracewire settings and print them, with where each came from.",
    )
    parser.add_argument(
        "--app",
        metavar="MODULE:APP",
        help="check this app's settings (Flask, Starlette, FastAPI, Django asgi/wsgi, any "
        "app wrapped in a tracewire middleware), e.g. 'myapp.main:app' or 'myapp:create_app()'",
    )
    parser.add_argument(
        "--request",
        metavar="'METHOD PATH [from ADDRESS]'",
        help="explain what tracewire would do with this request, e.g. 'GET /public/x from "
        "203.0.113.9': how each propagator reads the headers, which context wins, which "
        "incoming rule matches",
    )
    parser.add_argument(
        "-H",
        "--header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="a header of --request (repeatable)",
    )
    args = parser.parse_args(argv)
    try:
        exclusions: list[tuple[str, str, tuple[Any, ...]]] = []
        if args.app is None:
            found = [("the environment", Settings.from_env())]
            exclusions = otel_env.component_exclusions(os.environ)
        else:
            found = find_settings(load_app(args.app))
            if not found:
                raise CheckError(f"--app {args.app!r}: no tracewire middleware found in it")
    except CheckError as exc:
        print(f"tracewire: {exc}", file=sys.stderr)
        return 1
    except (ValueError, TypeError) as exc:
        print(f"tracewire: invalid settings: {exc}", file=sys.stderr)
        return 2
    if args.request is not None:
        return _explain(found[0][1], args.request, args.header)
    for where, settings in found:
        _print_settings(f"tracewire settings (from {where}):", settings)
        _print_breakers(settings, check_sdk=args.app is not None)
    _print_exclusions(exclusions)
    print("precedence, highest first:")
    for number, line in enumerate(PRECEDENCE, 1):
        print(f"  {number}. {line}")
    return 0


def _explain(settings: Settings, request: str, headers: Sequence[str]) -> int:
    from tracewire._explain import explain

    try:
        lines = explain(settings, request, headers)
    except ValueError as exc:
        print(f"tracewire: {exc}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


def demo(argv: Sequence[str]) -> int:
    try:
        from tracewire.demo import main as demo_main
    except ImportError as exc:
        print(
            f"tracewire demo needs the demo extra: pip install 'tracewire[demo]' ({exc})",
            file=sys.stderr,
        )
        return 2
    result: int = demo_main(list(argv))
    return result


COMMANDS: dict[str, Callable[[Sequence[str]], int]] = {"check": check, "demo": demo}
USAGE = """usage: tracewire {check,demo} [options] | --version
  check   validate and print the settings (of --app MODULE:APP, else the environment)
  demo    run two real services and show one trace across both"""


def _run(args: list[str]) -> int:
    if args[:1] in (["--version"], ["-V"]):
        print(f"tracewire {__version__}")
        return 0
    if not args or args[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    command = COMMANDS.get(args[0])
    if command is None:
        print(USAGE, file=sys.stderr)
        return 2
    return command(args[1:])


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        code = _run(args)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (``tracewire check | head``): no traceback, nothing more to say.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

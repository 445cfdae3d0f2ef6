"""The ``tracewire`` command: ``tracewire check`` and ``tracewire demo``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from tracewire.settings import Settings


def check(argv: Sequence[str]) -> int:
    """Print the effective settings from the environment; exit 2 if they are invalid."""
    parser = argparse.ArgumentParser(
        prog="tracewire check",
        description="Validate tracewire settings from the environment and print them.",
    )
    parser.parse_args(argv)
    try:
        settings = Settings.from_env()
    except (ValueError, TypeError) as exc:
        print(f"tracewire: invalid settings: {exc}", file=sys.stderr)
        return 2
    rows = settings.describe()
    width = max(len(name) for name, _, _ in rows)
    print("tracewire settings (from the environment):")
    for name, value, source in rows:
        print(f"  {name:<{width}}  {value}    [{source}]")
    print(f"  {'effective':<{width}}  {settings.composite!r}")
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


COMMANDS = {"check": check, "demo": demo}


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help") or args[0] not in COMMANDS:
        print("usage: tracewire {check,demo} [options]", file=sys.stderr if args else sys.stdout)
        print("  check   validate and print the settings taken from the environment")
        print("  demo    run two real services and show one trace across both")
        return 0 if not args or args[0] in ("-h", "--help") else 2
    return COMMANDS[args[0]](args[1:])


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

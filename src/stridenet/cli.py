"""The ``stridenet`` command: parse the command line and hand off to the module that does the work.

Each subcommand lives in the package that owns its concept and exposes ``register(subparsers)``,
which adds its parser and sets ``handler``; those modules import NumPy and friends only inside the
handler, so ``stridenet --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand modules, in the order ``--help`` lists them
COMMAND_MODULES = (
    "stridenet.train.cli",
    "stridenet.models.cli",
    "stridenet.viz.cli",
    "stridenet.experiments.cli",
)


class UsageError(Exception):
    """A mistake on the command line or in a path: printed as one line, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stridenet",
        description="Convolutional networks from first principles on NumPy: train, inspect and explain.",
    )
    parser.add_argument("--version", action="version", version=_version())
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as error:
            if error.name != name:
                raise
            continue
        module.register(subparsers)
    return parser


def _version() -> str:
    from stridenet import __version__

    return f"stridenet {__version__}"


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 0
    from stridenet.errors import CheckpointError, DataError, ShapeError

    try:
        return int(args.handler(args) or 0)
    except (UsageError, DataError, CheckpointError, ShapeError, FileNotFoundError) as error:
        print(f"stridenet {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"stridenet {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

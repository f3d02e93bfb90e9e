"""The ``gdjax`` command: one module per subcommand, nothing else prints.

Each subcommand module defines ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args) -> int``; it imports the library only inside ``run`` so ``gdjax --help`` is
instant. Exit status: 0 done (a check passed), 1 a check failed, 2 the command cannot
run as asked (bad input, a path it cannot write, a missing optional package; one line on
stderr, never a traceback), 3 an internal error (one line; ``--debug`` shows the traceback).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# subcommand -> module under gdjax.cli
COMMANDS = {
    "verify": "verify",
    "check-derivative": "check_derivative",
    "trace": "trace",
    "train": "train",
    "reproduce": "reproduce",
    "bench": "bench",
}


def _module(command: str):
    return importlib.import_module(f"gdjax.cli.{COMMANDS[command]}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gdjax",
        description="Gradient descent done right, in JAX: check derivations, train, sweep.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        module = _module(command)
        p = sub.add_parser(command, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.add_argument("--debug", action="store_true", help="show the traceback of an error")
    return parser


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 400 else text[:397] + "..."


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``gdjax ARGV``; return the exit status (see the module docstring)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse has printed its usage line
        return int(exit_.code or 0)
    prefix = f"gdjax {args.command}: error:"
    try:
        return int(_module(args.command).run(args) or 0)
    except KeyboardInterrupt:
        print(f"gdjax {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if args.debug:
            raise
        if isinstance(err, ValueError | TypeError):  # gdjax.UsageError is both
            print(f"{prefix} {_one_line(err)}", file=sys.stderr)
            return 2
        if isinstance(err, ImportError):
            missing = getattr(err, "name", None) or _one_line(err)
            print(
                f"{prefix} this command needs the optional package {missing!r}; "
                f'install it with: pip install "gdjax[all]"',
                file=sys.stderr,
            )
            return 2
        if isinstance(err, OSError):
            where = f" ({err.filename})" if getattr(err, "filename", None) else ""
            print(f"{prefix} {err.strerror or _one_line(err)}{where}", file=sys.stderr)
            return 2
        print(
            f"gdjax {args.command}: internal error: {type(err).__name__}: {_one_line(err)} "
            f"(rerun with --debug for the traceback)",
            file=sys.stderr,
        )
        return 3


if __name__ == "__main__":
    sys.exit(main())

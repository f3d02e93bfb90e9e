"""The ``gdjax`` command: one module per subcommand, nothing else prints.

Each subcommand module defines ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args) -> int``; it imports the library only inside ``run`` so ``gdjax --help`` is
instant. Exit status: 0 done (a check passed), 1 a check failed, 2 the command cannot
run as asked (bad input, a path it cannot write, a missing optional package; one line on
stderr, never a traceback), 3 an internal error (one line; ``--debug`` shows the traceback).

Every command turns on JAX's persistent compilation cache in a user cache directory
(``$GDJAX_CACHE_DIR``, else ``$XDG_CACHE_HOME/gdjax/jax``, else ``~/.cache/gdjax/jax``),
so a second ``gdjax reproduce`` compiles little; ``--no-compile-cache`` or
``GDJAX_NO_COMPILE_CACHE=1`` turns it off. ``gdjax bench`` never uses it: its cold rows
measure compiling, which a cache hit would hide.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path

# subcommand -> module under gdjax.cli
COMMANDS = {
    "verify": "verify",
    "check-derivative": "check_derivative",
    "trace": "trace",
    "train": "train",
    "reproduce": "reproduce",
    "bench": "bench",
    "launch": "launch",
}


def _module(command: str):
    return importlib.import_module(f"gdjax.cli.{COMMANDS[command]}")


class OneLineParser(argparse.ArgumentParser):
    """An argparse parser whose usage errors are one line (and exit status 2)."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="gdjax",
        description="Gradient descent done right, in JAX: check derivations, train, sweep.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        module = _module(command)
        p = sub.add_parser(command, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.add_argument("--debug", action="store_true", help="show the traceback of an error")
        p.add_argument(
            "--no-compile-cache",
            action="store_true",
            help="do not use JAX's persistent compilation cache (~/.cache/gdjax/jax)",
        )
    return parser


def compile_cache_dir() -> Path:
    """Where the CLI keeps JAX's persistent compilation cache."""
    if os.environ.get("GDJAX_CACHE_DIR"):
        return Path(os.environ["GDJAX_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "gdjax" / "jax"


# commands that time compiling: a persistent cache hit would make "cold" a cache read
NO_CACHE_COMMANDS = frozenset({"bench"})


def _use_compile_cache(args: argparse.Namespace) -> None:
    if args.command in NO_CACHE_COMMANDS or args.no_compile_cache:
        return
    if os.environ.get("GDJAX_NO_COMPILE_CACHE", "") not in ("", "0"):
        return
    import jax

    try:
        path = compile_cache_dir()
        path.mkdir(parents=True, exist_ok=True)
    except OSError:  # no writable cache directory: run without one
        return
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.05)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


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
        _use_compile_cache(args)
        return int(_module(args.command).run(args) or 0)
    except KeyboardInterrupt:
        print(f"gdjax {args.command}: interrupted", file=sys.stderr)
        return 130
    except SystemExit as exit_:  # an experiment's own flags (it has printed the line)
        code = exit_.code
        return code if isinstance(code, int) else (0 if code is None else 2)
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

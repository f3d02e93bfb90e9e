"""``gdjax reproduce``: the main job, verify every model and run every experiment."""

from __future__ import annotations

import argparse

HELP = "the main job: verify every model and run every experiment"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="runs", help="where runs/<name>/ are written (runs)")
    p.add_argument("--fast", action="store_true", help="small sizes (as in the tests)")
    p.add_argument("--only", default=None, metavar="LIST", help="comma-separated experiments")


def run(args: argparse.Namespace) -> int:
    from gdjax.reproduce import cli_reproduce

    return cli_reproduce(args)

"""``gdjax train [EXPERIMENT [flags]]``: run one experiment, or list them."""

from __future__ import annotations

import argparse

HELP = "run one experiment: gdjax train EXPERIMENT [flags]"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("experiment", nargs="?", default=None, help="name (omit to list them)")
    p.add_argument("args", nargs=argparse.REMAINDER, help="flags passed to the experiment")


def run(args: argparse.Namespace) -> int:
    from gdjax.reproduce import cli_train

    return cli_train(args)

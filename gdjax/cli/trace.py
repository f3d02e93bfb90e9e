"""``gdjax trace MODEL``: a registry model's computation graph, with values and adjoints."""

from __future__ import annotations

import argparse

HELP = "draw a registry model's computation graph"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL_ID")
    p.add_argument("--at", default=None, metavar="JSON", help="parameters as JSON")
    p.add_argument("--svg", default=None, metavar="FILE", help="write the graph as SVG")
    p.add_argument("--png", default=None, metavar="FILE", help="write the graph as PNG")
    p.add_argument("--dot", action="store_true", help="print Graphviz DOT instead of a table")


def run(args: argparse.Namespace) -> int:
    from gdjax.trace import cli_trace

    return cli_trace(args)

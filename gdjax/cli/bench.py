"""``gdjax bench``: the benchmark, ratios against the expert's own code side by side."""

from __future__ import annotations

import argparse

HELP = "benchmark fit, sweep and backprop; ratios side by side"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", default=None, metavar="FILE", help="also write the results as JSON")
    p.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    p.add_argument(
        "--only", default=None, metavar="LIST", help="subset of: fit,sweep,pass,backprop"
    )


def run(args: argparse.Namespace) -> int:
    from gdjax.bench import cli_bench

    return cli_bench(args)

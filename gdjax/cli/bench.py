"""``gdjax bench``: the benchmark of a source checkout (``benchmarks/``), ratios side by side."""

from __future__ import annotations

import argparse
import json
import sys

HELP = "benchmark fit, sweep and backprop; ratios side by side (from a source checkout)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", default=None, metavar="FILE", help="also write the results as JSON")
    p.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    p.add_argument(
        "--only", default=None, metavar="LIST", help="subset of: expert,fit,sweep,pass,backprop"
    )


def run(args: argparse.Namespace) -> int:
    """Print the table (and write the JSON); 0 once it has run, whatever the ratios."""
    from gdjax.cli._checkout import benchmarks, writable_file

    json_path = None if args.json is None else writable_file("--json", args.json)
    bench = benchmarks("bench")
    only = bench.parse_only(args.only)
    bench.one_cpu_device_per_core()
    result = bench.run(only, quick=args.quick, log=lambda s: print(s, file=sys.stderr, flush=True))
    print(bench.format_table(result))
    if json_path is not None:
        with open(json_path, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=2)
            fh.write("\n")
    return 0

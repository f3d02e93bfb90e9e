"""``gdjax bench``: the benchmark of a source checkout (``benchmarks/``), ratios side by side."""

from __future__ import annotations

import argparse
import json
import os
import sys

HELP = "benchmark fit, sweep and backprop; ratios side by side (from a source checkout)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", default=None, metavar="FILE", help="also write the results as JSON")
    p.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    p.add_argument(
        "--only",
        default=None,
        metavar="LIST",
        help="subset of: expert,fit,sweep,pass,backprop,checker,scaling",
    )


def run(args: argparse.Namespace) -> int:
    """Print the table (and write the JSON); 0 once it has run, whatever the ratios.

    ``--json`` is checked (its folder exists and takes a file) before the benchmark runs."""
    from gdjax.cli._checkout import benchmarks, writable_file

    json_path = None if args.json is None else writable_file("--json", args.json)
    bench = benchmarks("bench")
    only = bench.parse_only(args.only)
    bench.one_cpu_device_per_core()
    result = bench.run(only, quick=args.quick, log=lambda s: print(s, file=sys.stderr, flush=True))
    print(bench.format_table(result))
    if json_path is not None:  # whole or not at all: a temporary file, then a rename
        tmp = json_path.with_name(f".{json_path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, json_path)
    return 0

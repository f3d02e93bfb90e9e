"""The ``gdjax`` command.

Each subcommand's flags are declared here; its work is done by a ``cli_*`` function in
the module that owns the feature (imported only when that subcommand runs, so
``gdjax --help`` is instant). A handler returns the exit status; a ``ValueError`` or
``TypeError`` from bad input is printed as one line and exits with 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# subcommand -> "module:function"
_HANDLERS = {
    "verify": "gdjax.check:cli_verify",
    "check-derivative": "gdjax.check:cli_check_derivative",
    "trace": "gdjax.trace:cli_trace",
    "bench": "gdjax.bench:cli_bench",
    "reproduce": "gdjax.reproduce:cli_reproduce",
    "train": "gdjax.reproduce:cli_train",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gdjax",
        description="Gradient descent done right, in JAX: check derivations, train, sweep.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "verify",
        help="check every model's hand-written backprop against autodiff and finite differences",
    )
    p.add_argument("models", nargs="*", metavar="MODEL", help="model ids (default: all)")
    p.add_argument("--json", action="store_true", help="print a JSON report instead of a table")
    p.add_argument("--points", type=int, default=100, help="random points per model (100)")
    p.add_argument("--seed", type=int, default=0, help="PRNG seed for the random points")

    p = sub.add_parser(
        "check-derivative",
        help="check a typed derivative formula, e.g. --f 'sin(x)**2' --df '2*sin(x)*cos(x)'",
    )
    p.add_argument("--f", required=True, metavar="EXPR", help="the function of VAR")
    p.add_argument("--df", required=True, metavar="EXPR", help="your formula for df/dVAR")
    p.add_argument("--var", default="x", help="the variable's name (default: x)")
    p.add_argument(
        "--points",
        default=None,
        metavar="LIST",
        help="comma-separated points, e.g. '-1,0.5,2' (default: a grid on [-2, 2])",
    )
    p.add_argument("--rtol", type=float, default=1e-6, help="relative tolerance (1e-6)")
    p.add_argument("--atol", type=float, default=1e-9, help="absolute tolerance (1e-9)")
    p.add_argument("--json", action="store_true", help="print a JSON report")
    p.add_argument(
        "--trace",
        action="store_true",
        help="print the graph of f at the first point where the formula disagrees",
    )

    p = sub.add_parser("trace", help="draw a registry model's computation graph")
    p.add_argument("model", metavar="MODEL_ID")
    p.add_argument("--at", default=None, metavar="JSON", help="parameters as JSON")
    p.add_argument("--svg", default=None, metavar="FILE", help="write the graph as SVG")
    p.add_argument("--png", default=None, metavar="FILE", help="write the graph as PNG")
    p.add_argument("--dot", action="store_true", help="print Graphviz DOT instead of a table")

    p = sub.add_parser("bench", help="benchmark fit, sweep and backprop; ratios side by side")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the results as JSON")
    p.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    p.add_argument(
        "--only", default=None, metavar="LIST", help="subset of: fit,sweep,pass,backprop"
    )

    p = sub.add_parser(
        "reproduce", help="the main job: verify every model and run every experiment"
    )
    p.add_argument("--out", default="runs", help="where runs/<name>/ are written (runs)")
    p.add_argument("--fast", action="store_true", help="small sizes (as in the tests)")
    p.add_argument("--only", default=None, metavar="LIST", help="comma-separated experiments")

    p = sub.add_parser("train", help="run one experiment: gdjax train EXPERIMENT [flags]")
    p.add_argument("experiment", nargs="?", default=None, help="name (omit to list them)")
    p.add_argument("args", nargs=argparse.REMAINDER, help="flags passed to the experiment")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    module_name, func_name = _HANDLERS[args.command].split(":")
    handler = getattr(importlib.import_module(module_name), func_name)
    try:
        return int(handler(args) or 0)
    except (ValueError, TypeError) as err:
        print(f"gdjax {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

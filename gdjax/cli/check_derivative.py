"""``gdjax check-derivative --f EXPR --df EXPR``: 0 right, 1 wrong, 2 unusable input.

The formulas are parsed by :func:`gdjax._expr.parse` (a whitelist, never ``eval``); a
formula outside it raises ``ExprError`` (a usage error: exit status 2).
"""

from __future__ import annotations

import argparse
import json
import sys

HELP = "check a typed derivative formula, e.g. --f 'sin(x)**2' --df '2*sin(x)*cos(x)'"


def add_arguments(p: argparse.ArgumentParser) -> None:
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


def run(args: argparse.Namespace) -> int:
    from gdjax.check import check_derivative

    points = None if args.points is None else _parse_points(args.points)
    report = check_derivative(args.f, args.df, points, rtol=args.rtol, atol=args.atol, var=args.var)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.table())
    if not report.ok and args.trace:
        first = report.rows[0].failing_points[0]
        text = _trace_table(args.f, report.xs[first], args.var)
        print(text, file=sys.stderr if args.json else sys.stdout)  # keep --json output JSON
    return 0 if report.ok else 1


def _parse_points(text: str) -> list[float]:
    from gdjax._validate import UsageError

    try:
        return [float(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise UsageError(
            f"--points must be comma-separated numbers such as '-1,0.5,2', got {text!r}."
        ) from None


def _trace_table(f_text: str, x: float, var: str) -> str:
    import jax
    import jax.numpy as jnp

    import gdjax as gd
    from gdjax._expr import parse

    with jax.enable_x64(True):
        graph = gd.trace(parse(f_text, var), jnp.float64(x))
        return f"\nThe graph of f at {var} = {x:g}:\n{graph.table()}"

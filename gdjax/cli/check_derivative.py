"""``gdjax check-derivative --f EXPR --df EXPR``: 0 right, 1 wrong, 2 unusable input.

Several variables: ``--var x,y --f EXPR --df "E1, E2"`` (one component per variable, in
the order of ``--var``); the report names the wrong component (``∂f/∂y``). Points are
``--points "1,2; 0.5,-1"`` (``;`` between points).

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
    p.add_argument(
        "--df", required=True, metavar="EXPR",
        help="your formula for df/dVAR; for several variables 'E1, E2' in the order of --var",
    )
    p.add_argument("--var", default="x", help="the variable's name, or names 'x,y' (default: x)")
    p.add_argument(
        "--points",
        default=None,
        metavar="LIST",
        help="comma-separated points, e.g. '-1,0.5,2' (default: a grid on [-2, 2]); for "
        "several variables points separated by ';', e.g. '1,2; 0.5,-1'",
    )
    p.add_argument("--rtol", type=float, default=1e-6, help="relative tolerance (1e-6)")
    p.add_argument("--atol", type=float, default=1e-9, help="absolute tolerance (1e-9)")
    p.add_argument("--json", action="store_true", help="print a JSON report")
    p.add_argument(
        "--trace",
        action="store_true",
        help="print the graph of f at the first point where the formula disagrees",
    )
    p.add_argument(
        "--html",
        default=None,
        metavar="FILE",
        help="write the graph of f at the first point where the formula disagrees (or the "
        "first point) as an interactive page, each variable coloured by agreement",
    )


def run(args: argparse.Namespace) -> int:
    from gdjax._expr import check_var
    from gdjax._validate import UsageError
    from gdjax.check import check_derivative

    for flag, text in (("--f", args.f), ("--df", args.df)):
        if not text.strip():
            raise UsageError(f"{flag} is empty; give a formula, e.g. {flag} 'sin(x)**2'.")
    names = [v.strip() for v in args.var.split(",")]
    for v in names:
        try:
            check_var(v)
        except ValueError as err:
            raise UsageError(f"--var {args.var!r}: {err}") from None
    html = None if args.html is None else _html_path(args.html)  # before any work
    points = None if args.points is None else _parse_points(args.points, len(names))
    report = check_derivative(
        args.f, args.df, points, rtol=args.rtol, atol=args.atol, var=",".join(names)
    )
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.table())
    if not report.ok and args.trace:
        bad = next(r for r in report.rows if not r.ok)
        first = (bad.failing_points or (0,))[0]
        text = _trace_table(args.f, report.xs[first], names)
        print(text, file=sys.stderr if args.json else sys.stdout)  # keep --json output JSON
    if html is not None:
        _write_html(args.f, report, names, html)
        print(f"wrote {html}", file=sys.stderr if args.json else sys.stdout)
    return 0 if report.ok else 1


def _html_path(text: str):
    from gdjax._validate import UsageError
    from gdjax.cli._checkout import writable_file

    path = writable_file("--html", text)
    if path.suffix.lower() not in (".html", ".htm"):
        raise UsageError(f"--html {text}: the file name must end in .html")
    return path


def _write_html(f_text: str, report, names: list[str], path) -> None:
    """The graph of f at the first failing point (or the first point), coloured by the
    report's rows (``df/dx`` on the input ``x``)."""
    import inspect

    import jax
    import jax.numpy as jnp

    import gdjax as gd
    from gdjax._expr import parse
    from gdjax.graph.html import check_html

    bad = next((r for r in report.rows if not r.ok), None)
    first = (bad.failing_points or (0,))[0] if bad is not None else 0
    x = report.xs[first]
    xs = (x,) if isinstance(x, float) else tuple(x)
    f = parse(f_text, tuple(names))

    def named(*args):  # the inputs carry the variables' names (the rows say ∂f/∂x)
        return f(*args)

    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    named.__signature__ = inspect.Signature([inspect.Parameter(n, kind) for n in names])
    with jax.enable_x64(True):
        graph = gd.trace(named, *(jnp.float64(v) for v in xs))
        where = ", ".join(f"{v} = {a:g}" for v, a in zip(names, xs))
        check_html(graph, report, path, title=f"f = {f_text} at {where}")


def _parse_points(text: str, n: int) -> list:
    from gdjax._validate import UsageError

    example = "'-1,0.5,2'" if n == 1 else "'1,2; 0.5,-1'"
    try:
        if n == 1:
            return [float(p) for p in text.split(",") if p.strip()]
        points = [[float(v) for v in p.split(",")] for p in text.split(";") if p.strip()]
    except ValueError:
        raise UsageError(
            f"--points must be comma-separated numbers such as {example}, got {text!r}."
        ) from None
    if any(len(p) != n for p in points):
        raise UsageError(
            f"--points: each point needs {n} values (one per --var), separated by ';', "
            f"e.g. {example}; got {text!r}."
        )
    return points


def _trace_table(f_text: str, x, names: list[str]) -> str:
    import jax
    import jax.numpy as jnp

    import gdjax as gd
    from gdjax._expr import parse

    xs = (x,) if isinstance(x, float) else tuple(x)
    with jax.enable_x64(True):
        graph = gd.trace(parse(f_text, tuple(names)), *(jnp.float64(v) for v in xs))
        where = ", ".join(f"{v} = {a:g}" for v, a in zip(names, xs))
        return f"\nThe graph of f at {where}:\n{graph.table()}"

r"""``check_derivative``: a formula for the derivative (or gradient) of a scalar function.

For one variable, ``df(x)`` is compared with ``jax.grad(f)(x)`` and with central
differences at each point (row ``df/dx``). For several variables ``x, y, ...`` (``var="x,y"``),
``df`` gives the components ``∂f/∂x, ∂f/∂y, ...`` in that order, and each component is a
row of its own (``∂f/∂y``), so the report names the wrong one. At a kink (``abs`` at 0,
``relu`` at 0, a tie in ``max``) a one-sided derivative or a subgradient passes, with a note.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gdjax._validate import UsageError, check_positive
from gdjax.check.compare import make_rows
from gdjax.check.diagnosis import diagnose
from gdjax.check.numerics import Plan, Tol, run_points
from gdjax.check.report import Report
from gdjax.check.subject import Subject, describe
from gdjax.models._base import Backprop

__all__ = ["check_derivative"]


def _variables(var: Any) -> tuple[str, ...]:
    from gdjax._expr import check_var

    if isinstance(var, str):
        names = tuple(v.strip() for v in var.split(","))
    elif isinstance(var, (tuple, list)):
        names = tuple(var)
    else:
        raise UsageError(f"`var` must be a name such as 'x' or names such as 'x,y'; got {var!r}.")
    for v in names:
        check_var(v)
    if len(set(names)) != len(names):
        raise UsageError(f"`var` names a variable twice: {var!r}; give each its own name.")
    return names


def _components(df: Any, names: tuple[str, ...]) -> Callable[..., Any]:
    from gdjax._expr import parse_components

    if isinstance(df, str):
        parts = parse_components(df, names)
        return lambda *xs: [p(*xs) for p in parts]
    if isinstance(df, (list, tuple)):
        if len(df) != len(names):
            raise UsageError(
                f"`df` must give one component per variable ({len(names)}), got {len(df)}."
            )
        parts = [_callable(f"df[{i}]", d, names) for i, d in enumerate(df)]
        return lambda *xs: [p(*xs) for p in parts]
    if callable(df):
        return lambda *xs: list(df(*xs))
    raise TypeError(f"`df` must be a function, a formula string or a list of them, got "
                    f"{type(df).__name__}.")


def _callable(arg: str, fn: Any, names: tuple[str, ...]) -> Callable[..., Any]:
    from gdjax._expr import parse

    if isinstance(fn, str):
        return parse(fn, names if len(names) > 1 else names[0])
    if not callable(fn):
        raise TypeError(f"`{arg}` must be a function of one scalar, got {type(fn).__name__}.")
    return fn


def check_derivative(
    f: Callable[..., jax.Array] | str,
    df: Callable[..., Any] | str | Sequence[Any],
    points: Sequence[Any] | jax.Array | None = None,
    *,
    rtol: float = 1e-7,
    atol: float = 1e-12,
    fd_rtol: float = 1e-6,
    var: str | Sequence[str] = "x",
) -> Report:
    r"""Check a formula ``df`` for the derivative of a scalar function ``f``, in float64.

    Args:
      f: a JAX-traceable scalar function of one scalar, or of one scalar per variable
        (or a formula string, see :func:`gdjax._expr.parse`).
      df: your derivative of ``f`` (callable or formula string); for several variables a
        string ``"E1, E2"``, a list of formulas/callables, or a callable returning the
        components, in the order of ``var``.
      points: the x values; default 21 points evenly spaced on [-2, 2]. For several
        variables, a list of points (each one value per variable); default 21 points drawn
        uniformly from [-2, 2]ⁿ (seed 0).
      rtol, atol, fd_rtol: tolerances, as in :func:`check_backprop`.
      var: the variable's name (``"x"``), or several, ``"x,y"``.

    Returns:
      A :class:`Report` with one row, ``df/dx``, or one per component, ``∂f/∂y``.

    Raises:
      ValueError: no points, non-finite points, ``f`` not finite at any point, a bad
        variable name, or a function that does not map scalars to a scalar.
      TypeError: ``f``/``df`` neither callables nor strings.
    """
    names = _variables(var)
    title = f"{describe(df)} as the derivative of {describe(f)}"
    multi = len(names) > 1
    f = _callable("f", f, names)
    df = _components(df, names) if multi else _callable("df", df, names)
    check_positive("rtol", rtol)
    check_positive("atol", atol, allow_zero=True)
    check_positive("fd_rtol", fd_rtol)
    xs = _as_points(points, len(names))
    tol = Tol(float(rtol), float(atol), float(fd_rtol))
    sym = "f"
    rows_named = [f"∂{sym}/∂{v}" for v in names] if multi else [f"d{sym}/d{names[0]}"]
    with jax.enable_x64(True):
        x0 = tuple(jnp.float64(v) for v in xs[0])
        _check_scalar("f", f, x0)
        if not multi:
            _check_scalar("df", df, x0)
        subject = Subject(
            id=rows_named[0] if not multi else f"∇f({', '.join(names)})",
            title=title,
            loss=lambda p, b: f(*p),
            backprop=lambda p, b: Backprop(f(*p), tuple(df(*p)) if multi else (df(*p),), {}),
            symbol=sym,
            leaf_names=tuple(names),
            declared_adjoints=(),
            check_loss=False,
        )
        n = len(names)
        plan = Plan(tuple((r, "derivative", 1) for r in rows_named), tuple(names), {}, (),
                    shapes=((),) * n, dtypes=("float64",) * n, leaf_index=tuple(range(n)))
        stacked = (tuple(xs[:, i] for i in range(n)), None)
        out = run_points(subject, plan, stacked, len(xs), [0])
        rows, skipped = make_rows(plan, out, tol)
        rows = tuple(r._replace(name=name) for r, name in zip(rows, rows_named))
        first = None
        if len(skipped) == len(xs):
            raise UsageError(
                "`f` or its derivative is not finite at any of the points; pass `points` "
                "inside its domain (e.g. x > 0 for log or sqrt)."
            )
        if not all(r.ok for r in rows):
            p = next(i for r in rows if not r.ok for i in r.failing_points)
            rows, first = diagnose(subject, plan, rows, out,
                                   (tuple(jnp.float64(v) for v in xs[p]), None), p)
    shown = tuple(float(v[0]) for v in xs) if not multi else tuple(tuple(map(float, v))
                                                                   for v in xs)
    rows = tuple(r._replace(note=_at_x(r.note, xs, names)) for r in rows)
    return Report(subject.id, title, rows, len(xs), skipped, shown, *tol, first_wrong=first)


def _at_x(note: str, xs: np.ndarray, names: tuple[str, ...]) -> str:
    """``"kink at point 10, element []"`` -> ``"kink at x = 0"``."""
    found = re.search(r"at point (\d+)(, element \[[^\]]*\])?", note)
    if not found:
        return note
    x = xs[int(found.group(1))]
    where = ", ".join(f"{v} = {float(a):g}" for v, a in zip(names, x))
    return note[: found.start()] + f"at {where}" + note[found.end():]


def _check_scalar(arg: str, fn: Callable, x0: tuple) -> None:
    try:
        shape = jnp.shape(jax.eval_shape(fn, *x0))
    except TypeError as err:
        raise UsageError(f"`{arg}` could not be called with {len(x0)} scalar(s): {err}") from None
    if shape != ():
        raise UsageError(
            f"`{arg}` must map a scalar to a scalar, but {arg}(x) has shape {shape}."
        )


def _as_points(points: Any, n: int) -> np.ndarray:
    """The points as an array ``(P, n)``."""
    if points is None:
        if n == 1:
            return np.linspace(-2.0, 2.0, 21)[:, None]
        return np.random.default_rng(0).uniform(-2.0, 2.0, (21, n))
    try:
        xs = np.asarray(points, dtype=np.float64)
    except (TypeError, ValueError):
        raise UsageError(f"`points` must be a list of numbers, got {points!r}.") from None
    if n == 1:
        xs = xs.reshape(-1) if xs.ndim == 0 else xs
        if xs.ndim != 1 or xs.size == 0:
            raise UsageError(
                f"`points` must be a non-empty 1-D list of numbers, got shape {xs.shape}."
            )
        xs = xs[:, None]
    elif xs.ndim != 2 or xs.shape[1] != n or xs.shape[0] == 0:
        raise UsageError(
            f"`points` must be a list of points with {n} values each (one per variable), "
            f"got shape {xs.shape}."
        )
    if not np.all(np.isfinite(xs)):
        raise UsageError("`points` holds NaN or inf; pass finite x values.")
    return xs

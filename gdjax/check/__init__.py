r"""Check a hand-written derivation against autodiff and finite differences.

``check_backprop(model)`` takes a model's hand-written backward pass (or your own
``(loss_fn, backprop_fn)`` pair) and compares, in float64, at the given point and at many
random points around it:

* every gradient leaf ``dL/dθ`` with ``jax.grad`` of the loss;
* every named adjoint ``dL/du`` with autodiff's adjoint of the intermediate ``u``, obtained
  by adding a zero *probe* ``p`` to ``u`` in the forward pass (``gd.name(u, "u")`` does it,
  see :mod:`gdjax.naming`) and differentiating with respect to the probe:
  :math:`\partial L(u + p)/\partial p |_{p=0} = \partial L/\partial u`;
* both with central finite differences,

  .. math:: D_h = \frac{L(\theta + h e_i) - L(\theta - h e_i)}{2h},
            \qquad h = \varepsilon^{1/3} \max(|\theta_i|, 1),

  whose own error is estimated from a second step, :math:`|D_h - D_{2h}|` (the
  :math:`O(h^2)` truncation error, Richardson's way), plus the round-off
  :math:`4\varepsilon (|L(\theta + h e_i)| + |L(\theta - h e_i)|)/h`.

An element passes when

.. math:: |g_\text{hand} - g_\text{autodiff}| \le \text{atol} + \text{rtol}\,|g_\text{autodiff}|
          \quad\text{and}\quad
          |g_\text{hand} - D_h| \le \text{atol} + \text{fd\_rtol}\,|D_h| + \text{est}(D_h).

The reported relative error is :math:`|g_\text{hand} - g_\text{ad}| /
(|g_\text{ad}| + \text{atol}/\text{rtol})`, so a row passes against autodiff exactly when
its relative error is at most ``rtol``.

The random points perturb every float leaf of params and batch by Gaussian noise scaled to
the leaf's size (0/1 labels are redrawn, integer leaves kept), seeded by ``key``. All points
run in one compiled program: ``vmap`` over the points, and over the elements for the finite
differences; the comparisons are done afterwards in NumPy.

``check_derivative(f, df)`` does the same for a formula ``df`` of a scalar function ``f``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gdjax._validate import (
    as_key,
    check_positive,
)
from gdjax.check.numerics import (
    Plan,
    Tol,
    leaf_roles,
    make_plan,
    make_rows,
    run_points,
    sample_points,
    to_float64,
)
from gdjax.check.report import Report, Row
from gdjax.check.subject import (
    Subject,
    as_seed,
    check_points,
    describe,
    resolve,
    validate_point,
)
from gdjax.models._base import Backprop, Model

__all__ = [
    "ModelCheck",
    "Report",
    "Row",
    "check_backprop",
    "check_derivative",
    "verify_models",
]


def check_backprop(
    model_or_functions: Model | str | tuple[Callable, Callable],
    params: Any = None,
    batch: Any = None,
    *,
    points: int = 100,
    key: jax.Array | int = 0,
    rtol: float = 1e-7,
    atol: float = 1e-12,
    fd_rtol: float = 1e-6,
    noise: float = 0.5,
) -> Report:
    r"""Compare a hand-written backprop with autodiff and finite differences, in float64.

    Args:
      model_or_functions: a registry id (``"G1"``), a :class:`gd.Model`, or your own pair
        ``(loss_fn, backprop_fn)`` with ``loss_fn(params, batch) -> scalar`` and
        ``backprop_fn(params, batch) -> gd.Backprop(loss, grads, adjoints)`` (or a tuple
        ``(loss, grads)`` / ``(loss, grads, adjoints)``). Adjoints are checked for the
        intermediates your loss tags with ``gd.name(x, label)``.
      params: the point to check at; default the model's ``example()`` params.
      batch: the data; default the model's example batch (None for data-free models).
      points: how many points: the given one plus ``points − 1`` random ones, each float
        leaf of params and batch moved by Gaussian noise (``noise``·its RMS); 0/1 labels
        redrawn; integer leaves kept.
      key: a ``jax.random`` key (or an int seed) that seeds the random points; default 0.
      rtol, atol: tolerance against autodiff: ``|hand − ad| ≤ atol + rtol·|ad|``.
      fd_rtol: tolerance against central differences, added to their estimated error.
      noise: the relative size of the random perturbations.

    Returns:
      A :class:`Report`: ``.ok``, ``.failures``, ``.rows``, ``.table()``, ``.to_dict()``.

    Raises:
      ValueError: unknown model id; params/batch not matching the model; NaN or inf in
        params or batch; a loss or gradient that is not finite at the given point.
      TypeError: arguments of the wrong type.
    """
    points = check_points(points)
    seed = as_seed(key)
    check_positive("rtol", rtol)
    check_positive("atol", atol, allow_zero=True)
    check_positive("fd_rtol", fd_rtol)
    check_positive("noise", noise, allow_zero=True)
    subject, params, batch = resolve(model_or_functions, params, batch)
    validate_point(params, batch)
    tol = Tol(float(rtol), float(atol), float(fd_rtol))
    with jax.enable_x64(True):
        params64, batch64 = to_float64(params), to_float64(batch)
        plan = make_plan(subject, params64, batch64)
        stacked = sample_points(
            seed, (params64, batch64), points, noise, leaf_roles(params64, batch64)
        )
        out = run_points(subject, plan, stacked, points)
    rows, skipped = make_rows(plan, out, tol)
    if 0 in skipped:
        raise ValueError(
            f"{subject.id}: the loss or its autodiff gradient is not finite at the given point "
            f"(params/batch); check there is nothing to divide by zero or log of zero there."
        )
    return Report(subject.id, subject.title, rows, points, skipped, (), *tol)


def check_derivative(
    f: Callable[[jax.Array], jax.Array] | str,
    df: Callable[[jax.Array], jax.Array] | str,
    points: Sequence[float] | jax.Array | None = None,
    *,
    rtol: float = 1e-7,
    atol: float = 1e-12,
    fd_rtol: float = 1e-6,
    var: str = "x",
) -> Report:
    r"""Check a formula ``df`` for the derivative of a scalar function ``f``, in float64.

    ``df(x)`` is compared with ``jax.grad(f)(x)`` and with central differences of ``f`` at
    each point; the report says at which x it is wrong.

    Args:
      f: a JAX-traceable scalar function of one scalar (or a formula string, see
        :func:`gdjax._expr.parse`).
      df: your derivative of ``f`` (callable or formula string).
      points: the x values; default 21 points evenly spaced on [-2, 2].
      rtol, atol, fd_rtol: tolerances, as in :func:`check_backprop`.
      var: the variable's name in formula strings and in the report (``"df/dx"``).

    Returns:
      A :class:`Report` with one row, ``df/dx``.

    Raises:
      ValueError: no points, non-finite points, ``f`` not finite at any point, or a
        function that does not map a scalar to a scalar.
      TypeError: ``f``/``df`` neither callables nor strings.
    """
    from gdjax._expr import parse

    title = f"{describe(df)} as the derivative of {describe(f)}"
    f = parse(f, var) if isinstance(f, str) else f
    df = parse(df, var) if isinstance(df, str) else df
    for arg, fn in (("f", f), ("df", df)):
        if not callable(fn):
            raise TypeError(f"`{arg}` must be a function of one scalar, got {type(fn).__name__}.")
    check_positive("rtol", rtol)
    check_positive("atol", atol, allow_zero=True)
    check_positive("fd_rtol", fd_rtol)
    xs = np.linspace(-2.0, 2.0, 21) if points is None else _as_points(points)
    tol = Tol(float(rtol), float(atol), float(fd_rtol))
    with jax.enable_x64(True):
        x0 = jnp.float64(xs[0])
        for arg, fn in (("f", f), ("df", df)):
            shape = jnp.shape(jax.eval_shape(fn, x0))
            if shape != ():
                raise ValueError(
                    f"`{arg}` must map a scalar to a scalar, but {arg}(x) has shape {shape}."
                )
        subject = Subject(
            id=f"df/d{var}",
            title=title,
            loss=lambda p, b: f(p),
            backprop=lambda p, b: Backprop(f(p), df(p), {}),
            symbol="f",
            leaf_names=(var,),
            declared_adjoints=(),
            check_loss=False,
        )
        plan = Plan(((f"df/d{var}", "derivative", 1),), (var,), {}, ())
        out = run_points(subject, plan, (xs, None), len(xs))
    rows, skipped = make_rows(plan, out, tol)
    if len(skipped) == len(xs):
        raise ValueError(
            "`f` or its derivative is not finite at any of the points; pass `points` inside "
            "its domain (e.g. x > 0 for log or sqrt)."
        )
    return Report(f"df/d{var}", subject.title, rows, len(xs), skipped, tuple(map(float, xs)), *tol)


def _as_points(points: Any) -> np.ndarray:
    try:
        xs = np.asarray(points, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"`points` must be a list of numbers, got {points!r}.") from None
    xs = xs.reshape(-1) if xs.ndim == 0 else xs
    if xs.ndim != 1 or xs.size == 0:
        raise ValueError(f"`points` must be a non-empty 1-D list of numbers, got shape {xs.shape}.")
    if not np.all(np.isfinite(xs)):
        raise ValueError("`points` holds NaN or inf; pass finite x values.")
    return xs


class ModelCheck(NamedTuple):
    """One registry model's check by :func:`verify_models`."""

    model: Model
    report: Report | None  # None when the check itself raised
    error: str  # "" unless the check raised: "TypeError: ..."
    seconds: float

    @property
    def ok(self) -> bool:
        return self.report is not None and self.report.ok


def verify_models(
    ids: Sequence[str] | None = None, *, points: int = 100, key: Any = 0
) -> Iterator[ModelCheck]:
    """:func:`check_backprop` on each registry model (default: all), one at a time.

    The arguments are checked before the first model runs, so a bad one is an error of
    the call, never a failed model. Model ``i`` draws its points from ``fold_in(key, i)``.
    A model whose check raises is yielded as failed with the error, and the others still run.
    """
    from gdjax import models

    points = check_points(points)
    base = as_key(key)
    chosen = [models.get(m) for m in ids] if ids else list(models.REGISTRY.values())
    for i, model in enumerate(chosen):
        t0 = time.perf_counter()
        try:
            report = check_backprop(model, points=points, key=jax.random.fold_in(base, i))
            error = ""
        except Exception as err:  # a broken model is a failure of that model, not of the call
            report, error = None, f"{type(err).__name__}: {err}"
        yield ModelCheck(model, report, error, time.perf_counter() - t0)

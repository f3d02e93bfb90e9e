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

At scale the finite differences are taken along a few random directions per quantity
(``fd="directions"``, the default above 256 elements): the comparison with autodiff is
element by element and exact, the finite differences are the independent witness, and the
cost does not grow with the number of elements. Where a quantity disagrees with autodiff,
its worst elements are also differenced one by one: a kink there (relu at 0, abs at 0, a
tie in max) with a valid one-sided derivative or subgradient passes with a note.

``check_derivative(f, df)`` does the same for a formula ``df`` of a scalar function ``f``;
``check_hvp`` for a Hessian-vector product.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import jax
import numpy as np

from gdjax._validate import as_key, check_choice, check_int, check_positive
from gdjax.check.compare import make_rows, phase2_cap
from gdjax.check.derivative import check_derivative
from gdjax.check.diagnosis import diagnose
from gdjax.check.hvp import check_hvp
from gdjax.check.numerics import (
    Tol,
    direction_noise,
    direction_rechecker,
    element_prober,
    leaf_roles,
    run_points,
    sample_points,
    theta_offsets,
    to_float64,
)
from gdjax.check.plan import host_values, make_plan
from gdjax.check.report import Report, Row
from gdjax.check.subject import as_seed, check_points, resolve, validate_point
from gdjax.models._base import Model

__all__ = [
    "ModelCheck",
    "Report",
    "Row",
    "check_backprop",
    "check_derivative",
    "check_hvp",
    "default_points",
    "verify_models",
]


def default_points(size: int) -> int:
    """100 points up to 2,000 elements (params + batch), then ``200,000 // size``: 14 at
    13,500 elements, 1 from 100,000 on."""
    return 100 if size <= 2_000 else max(1, min(100, 200_000 // size))


def check_backprop(
    model_or_functions: Model | str | tuple[Callable, Callable],
    params: Any = None,
    batch: Any = None,
    *,
    points: int | None = None,
    key: jax.Array | int = 0,
    rtol: float = 1e-7,
    atol: float = 1e-12,
    fd_rtol: float = 1e-6,
    noise: float = 0.5,
    fd: str = "auto",
    directions: int = 2,
) -> Report:
    r"""Compare a hand-written backprop with autodiff and finite differences, in float64.

    Args:
      model_or_functions: a registry id (``"G1"``), a :class:`gd.Model`, or your own pair
        ``(loss_fn, backprop_fn)`` with ``loss_fn(params, batch) -> scalar`` and
        ``backprop_fn(params, batch) -> gd.Backprop(loss, grads, adjoints)`` (or a tuple
        ``(loss, grads)`` / ``(loss, grads, adjoints)``). Adjoints are checked for the
        intermediates your loss tags with ``gd.name(x, label)``. The backprop may use
        NumPy (it is then called outside jit with float64 arrays); the loss must be JAX.
      params: the point to check at; default the model's ``example()`` params.
      batch: the data; default the model's example batch (None for data-free models).
      points: how many points: the given one plus ``points − 1`` random ones, each float
        leaf of params and batch moved by Gaussian noise (``noise``·its RMS); 0/1 labels
        redrawn; integer leaves kept. Default: 100 up to 2,000 elements of params and
        batch, then ``200,000 // size`` (1 from 10⁵ on), so a call is quick at every size.
      key: a ``jax.random`` key (or an int seed) that seeds the random points; default 0.
      rtol, atol: tolerance against autodiff: ``|hand − ad| ≤ atol + rtol·|ad|``.
      fd_rtol: tolerance against central differences, added to their estimated error.
      noise: the relative size of the random perturbations.
      fd: ``"elements"`` (every element differenced, for small models), ``"directions"``
        (``directions`` random directions per quantity, for any size) or ``"auto"``
        (elements up to 256 elements of params and probed adjoints).
      directions: random directions per quantity in ``fd="directions"``.

    Returns:
      A :class:`Report`: ``.ok``, ``.failures``, ``.first_wrong``, ``.rows`` (each with
      ``.cause`` and ``.inherits``), ``.table()``, ``.to_dict()``.

    Raises:
      ValueError: unknown model id; params/batch not matching the model; NaN or inf in
        params or batch; a loss or gradient that is not finite at the given point.
      TypeError: arguments of the wrong type.
    """
    if points is not None:
        points = check_points(points)
    seed = as_seed(key)
    check_positive("rtol", rtol)
    check_positive("atol", atol, allow_zero=True)
    check_positive("fd_rtol", fd_rtol)
    check_positive("noise", noise, allow_zero=True)
    check_choice("fd", fd, ("auto", "elements", "directions"))
    directions = check_int("directions", directions, what="an int (directions per quantity)")
    subject, params, batch = resolve(model_or_functions, params, batch)
    validate_point(params, batch, finite=False)
    params64, batch64 = to_float64(params), to_float64(batch)
    validate_point(params64, batch64)  # NumPy now: no compiled check
    tol = Tol(float(rtol), float(atol), float(fd_rtol))
    with jax.enable_x64(True):
        plan = make_plan(subject, params64, batch64, fd, directions)
        size = sum(np.size(x) for x in jax.tree_util.tree_leaves((params64, batch64)))
        n = points or default_points(size)
        stacked = sample_points(
            seed, (params64, batch64), n, noise, leaf_roles(params64, batch64)
        )
        hand = host_values(subject, plan, stacked, n) if plan.host else None
        out = run_points(subject, plan, stacked, n, seed, hand)

        def at(p: int) -> tuple[Any, Any]:
            return jax.tree_util.tree_map(lambda x: x[p], stacked)

        theta = size + sum(int(np.prod(s)) for s in plan.probed.values())
        cap = phase2_cap(theta)
        prober = element_prober(subject, plan, cap) if plan.fd == "directions" else None

        def probe(p: int, idx: np.ndarray) -> Any:
            return prober(*at(p), idx)

        rechecker = direction_rechecker(subject, plan) if plan.fd == "directions" else None

        def recheck(p: int) -> np.ndarray:
            noise = [z[p] for z in direction_noise(plan, stacked[0], n, seed)]
            h = None if hand is None else jax.tree_util.tree_map(lambda x: x[p], hand)
            return rechecker(at(p), noise, h)

        offsets = theta_offsets(plan, params64) if plan.fd == "directions" else None
        rows, skipped = make_rows(plan, out, tol, probe, offsets, recheck, cap)
        if 0 in skipped:
            raise ValueError(
                f"{subject.id}: the loss or its autodiff gradient is not finite at the given "
                f"point (params/batch); check there is nothing to divide by zero or log of "
                f"zero there."
            )
        first = None
        failing = [r for r in rows if r.status == "FAIL"]
        if failing:
            p = _diagnosis_point(failing)
            rows, first = diagnose(subject, plan, rows, out, at(p), p)
    return Report(subject.id, subject.title, rows, n, skipped, (), *tol,
                  first_wrong=first, notes=plan.notes, fd=plan.fd)


def _diagnosis_point(failing: list[Row]) -> int:
    """A point where most failing rows fail (point 0 when it is one of them)."""
    counts: dict[int, int] = {}
    for r in failing:
        for i in r.failing_points or ((r.worst[0],) if r.worst else (0,)):
            counts[i] = counts.get(i, 0) + 1
    best = max(counts.values())
    return 0 if counts.get(0) == best else min(i for i, c in counts.items() if c == best)


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

r"""``check_hvp``: a hand-written Hessian-vector product (or Hessian matrix), in float64.

For directions :math:`v` (every basis vector for up to 16 parameters, else a few random
Gaussian ones), the hand-written :math:`H v` is compared element by element with

* autodiff, forward-over-reverse: ``jax.jvp(jax.grad(L), (θ,), (v,))[1]``;
* central differences of the gradient,
  :math:`(\nabla L(\theta + t v) - \nabla L(\theta - t v)) / 2t` with
  :math:`t = \varepsilon^{1/3}`, whose error is estimated from the step :math:`2t`.

With ``hessian=True``, ``hvp_fn(params, batch)`` returns the whole Hessian of flat 1-D
``params`` as an ``(n, n)`` matrix, compared with ``jax.hessian`` and with the central
differences of the gradient along each basis vector.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from gdjax._validate import UsageError, check_int, check_positive
from gdjax.check.diagnosis import cause_of
from gdjax.check.numerics import EPS, FD_STEP, Tol, leaf_roles, sample_points, to_float64
from gdjax.check.report import MAX_LISTED, Report, Row
from gdjax.check.subject import as_seed, validate_point

__all__ = ["check_hvp"]


def check_hvp(
    loss_fn: Callable[[Any, Any], jax.Array],
    hvp_fn: Callable[..., Any],
    params: Any,
    batch: Any = None,
    *,
    points: int | None = None,
    directions: int = 4,
    key: jax.Array | int = 0,
    rtol: float = 1e-7,
    atol: float = 1e-12,
    fd_rtol: float = 1e-6,
    noise: float = 0.5,
    hessian: bool = False,
) -> Report:
    """Check ``hvp_fn(params, batch, v) -> H·v`` (a params-shaped tree) for ``loss_fn``.

    Args:
      loss_fn: ``loss_fn(params, batch) -> scalar``, JAX-traceable.
      hvp_fn: your Hessian-vector product ``hvp_fn(params, batch, v)``; with
        ``hessian=True``, your Hessian ``hvp_fn(params, batch) -> (n, n)`` for 1-D params.
      params, batch: the point (``batch`` may be None).
      points: the given point plus ``points − 1`` random ones (default 10 up to 20,000
        elements of params and batch, else 1).
      directions: random directions per point when params have more than 16 elements.
      key, rtol, atol, fd_rtol, noise: as in :func:`check_backprop`.
      hessian: check a whole Hessian matrix instead of a product.

    Returns:
      A :class:`Report` with one row per params leaf (``(Hv)[w]``), or one row ``H``.
    """
    if not callable(loss_fn) or not callable(hvp_fn):
        raise UsageError("check_hvp(loss_fn, hvp_fn, params, batch): pass two functions.")
    if params is None:
        raise UsageError("check_hvp: pass `params`, the point to check at.")
    validate_point(params, batch)
    directions = check_int("directions", directions, what="an int (random directions)")
    for arg, value in (("rtol", rtol), ("fd_rtol", fd_rtol)):
        check_positive(arg, value)
    check_positive("atol", atol, allow_zero=True)
    tol = Tol(float(rtol), float(atol), float(fd_rtol))
    with jax.enable_x64(True):
        p64, b64 = to_float64(params), to_float64(batch)
        flat, unravel = ravel_pytree(p64)
        n = int(flat.size)
        if hessian and (len(jax.tree_util.tree_leaves(p64)) != 1 or np.ndim(params) != 1):
            raise UsageError("check_hvp(..., hessian=True) needs `params` as one 1-D array.")
        size = n + sum(np.size(x) for x in jax.tree_util.tree_leaves(b64))
        count = check_int("points", points) if points is not None else (
            10 if size <= 20_000 else 1)
        seed = as_seed(key)
        stacked = sample_points(seed, (p64, b64), count, noise, leaf_roles(p64, b64))
        rng = np.random.default_rng(seed)
        basis = n <= 16 or hessian
        vs = np.eye(n) if basis else rng.standard_normal((directions, n)) / math.sqrt(n)
        hand_fns = _hand_programs(hvp_fn)
        sides = [
            _one_point(loss_fn, hand_fns, jax.tree_util.tree_map(lambda x, i=i: x[i], stacked),
                       vs, unravel, hessian)
            for i in range(count)
        ]
    hand, auto, fd, est = (np.stack([s[k] for s in sides]) for k in range(4))
    if not hessian:  # (points, directions, n): a leaf is a slice of the last axis
        hand, auto, fd, est = (x.reshape(count, len(vs), n) for x in (hand, auto, fd, est))
    names = _leaf_names(p64) if not hessian else ["H"]
    sizes = [n * n] if hessian else [int(np.size(x)) for x in jax.tree_util.tree_leaves(p64)]
    shapes = [(n, n)] if hessian else [np.shape(x) for x in jax.tree_util.tree_leaves(p64)]
    rows, start = [], 0
    for name, k, shape in zip(names, sizes, shapes):
        cut = slice(start, start + k)
        start += k
        rows.append(_row(name, shape, hand[..., cut], auto[..., cut], fd[..., cut],
                         est[..., cut], tol, basis and not hessian))
    first = next((r.name for r in rows if not r.ok), None)
    what = "Hessian matrix" if hessian else "Hessian-vector product"
    title = (f"hand-written {what} {getattr(hvp_fn, '__name__', 'hvp_fn')} vs jax.jvp of "
             f"jax.grad of {getattr(loss_fn, '__name__', 'loss_fn')}")
    return Report("check_hvp", title, tuple(rows), count, (), (), *tol, first_wrong=first,
                  notes=(f"{len(vs)} direction(s) v per point"
                         + (" (the basis vectors)" if basis else " (random)"),))


def _leaf_names(params: Any) -> list[str]:
    from gdjax.check.subject import _path_name

    top = "layers" if isinstance(params, (list, tuple)) else "params"
    return [f"(Hv)[{_path_name(path, top)}]"
            for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]]


def _hand_programs(hvp_fn: Callable) -> tuple[Callable, Callable, Callable]:
    """The hand-written side, compiled once per check: matrix, batched product, raw."""
    matrix = jax.jit(hvp_fn)
    products = jax.jit(lambda p, b, vt: jax.vmap(lambda v: ravel_pytree(hvp_fn(p, b, v))[0])(vt))
    return matrix, products, hvp_fn


def _one_point(loss_fn, hand_fns, point, vs, unravel, hessian):
    params, batch = point
    matrix, products, hvp_fn = hand_fns
    flat = ravel_pytree(params)[0]
    vs = jnp.asarray(vs)
    scale = jnp.maximum(jnp.abs(flat), 1.0)
    ad, fd, est = _SIDES(loss_fn, unravel, vs.shape[0], flat, batch, vs * scale)
    ad, fd, est = (np.asarray(x) for x in (ad, fd, est))
    if hessian:
        try:
            h = np.asarray(matrix(params, batch), np.float64)
        except jax.errors.TracerArrayConversionError:
            h = np.asarray(hvp_fn(np.asarray(params), batch), np.float64)
        if h.shape != (flat.size, flat.size):
            raise UsageError(f"the hand-written Hessian has shape {h.shape}; expected "
                             f"{(flat.size, flat.size)}.")
        # ad/fd hold H·(s_i e_i) per basis vector i: column i of H times s_i
        s = np.asarray(scale)
        return (h.ravel(), (ad / s[:, None]).T.ravel(), (fd / s[:, None]).T.ravel(),
                (est / s[:, None]).T.ravel())
    vt = [unravel(v) for v in np.asarray(vs * scale)]
    try:
        hv = products(params, batch, jax.tree_util.tree_map(lambda *x: jnp.stack(x), *vt))
        hand = np.asarray(hv, np.float64)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        hand = np.stack([
            np.asarray(ravel_pytree(jax.tree_util.tree_map(
                np.asarray, hvp_fn(jax.tree_util.tree_map(np.asarray, params), batch,
                                   jax.tree_util.tree_map(np.asarray, v))))[0], np.float64)
            for v in vt])
    if hand.shape != ad.shape:
        raise UsageError(f"hvp_fn(params, batch, v) must return a tree like params; got "
                         f"{hand.shape[1]} numbers for {ad.shape[1]} parameters.")
    return hand.ravel(), ad.ravel(), fd.ravel(), est.ravel()


def _sides(loss_fn, unravel, k, flat, batch, vs):
    """Per direction: autodiff H·v, central differences of the gradient, their error."""

    def grad(x: jax.Array) -> jax.Array:
        return ravel_pytree(jax.grad(loss_fn)(unravel(x), batch))[0]

    def one(v: jax.Array) -> tuple[jax.Array, ...]:
        hv = jax.jvp(grad, (flat,), (v,))[1]
        t = FD_STEP
        up, dn, up2, dn2 = (grad(flat + s * t * v) for s in (1.0, -1.0, 2.0, -2.0))
        d1 = (up - dn) / (2 * t)
        d2 = (up2 - dn2) / (4 * t)
        err = jnp.abs(d1 - d2) + 4 * EPS * (jnp.abs(up) + jnp.abs(dn)) / t
        return hv, d1, err

    return jax.lax.map(one, vs)


_SIDES = jax.jit(_sides, static_argnums=(0, 1, 2))


def _row(name, shape, hand, auto, fd, est, tol, basis) -> Row:
    """One row: points × (directions·elements) arrays, flattened per point."""
    hand, auto, fd, est = (x.reshape(x.shape[0], -1) for x in (hand, auto, fd, est))
    diff = np.nan_to_num(np.abs(hand - auto), nan=np.inf)
    fdiff = np.nan_to_num(np.abs(hand - fd), nan=np.inf)
    ad_fail = np.any(~(diff <= tol.atol + tol.rtol * np.abs(auto)), axis=1)
    fd_fail = np.any(~(fdiff <= tol.atol + tol.fd_rtol * np.abs(fd) + 2 * est), axis=1)
    failing = np.flatnonzero(ad_fail | fd_fail)
    p, e = np.unravel_index(np.argmax(diff), diff.shape)
    size = int(np.prod(shape))  # columns are directions x elements: the element is e mod size
    index = tuple(int(i) for i in np.unravel_index(e % size, shape)) if shape else None
    cause = None
    if failing.size:
        cause = cause_of(hand[failing], auto[failing], (), "float64", None) or "other"
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(diff > 0, diff / (np.abs(auto) + tol.atol / tol.rtol), 0.0)
        frel = np.where(fdiff > 0, fdiff / (np.abs(fd) + tol.atol / tol.fd_rtol), 0.0)
    return Row(
        name, "hvp", "FAIL" if failing.size else "ok",
        autodiff_abs=float(diff.max()), autodiff_rel=float(rel.max()),
        autodiff_fails=int(ad_fail.sum()), fd_abs=float(fdiff.max()),
        fd_rel=float(frel.max()), fd_error=float(est.max()), fd_fails=int(fd_fail.sum()),
        failing_points=tuple(int(i) for i in failing[:MAX_LISTED]),
        worst=(int(p), float(hand[p, e]), float(auto[p, e])), cause=cause, index=index,
        note="" if not basis else "directions: the basis vectors",
    )

r"""Loss landscapes of real runs: slices of the loss through the final parameters.

A landscape is the loss on a line or a plane through parameters :math:`\theta^*`:

.. math::

    f(\alpha) = \mathcal L(\theta^* + \alpha\,\delta), \qquad
    f(\alpha, \beta) = \mathcal L(\theta^* + \alpha\,\delta + \beta\,\eta),

evaluated on the whole grid of :math:`(\alpha, \beta)` in one compiled, vmapped program
(in chunks of ``chunk`` points, to bound memory). Two choices of directions:

* **Filter-normalised random directions** (Li, Xu, Taylor, Studer & Goldstein, NeurIPS
  2018, "Visualizing the Loss Landscape of Neural Nets"): draw :math:`d \sim \mathcal N(0,
  I)` shaped like the parameters, then rescale every *filter* to the norm of the same
  filter of :math:`\theta^*`, :math:`d_{i,j} \leftarrow d_{i,j}\,\|\theta_{i,j}\|/\|d_{i,j}\|`.
  For a dense layer stored as ``W: (n_out, n_in)`` a filter is one output unit, a row.
  Leaves with one dimension or none (biases) get a zero direction by default, as the
  paper does (``bias="zero"``), or are rescaled as one filter (``bias="filter"``).
  So the picture does not depend on the scale of each layer.
* **PCA directions of the trajectory** (the same paper, §7): with the recorded parameters
  :math:`\theta_0 … \theta_{T-1}` of a run (``fit(..., trajectory=True)``), stack
  :math:`M = [\theta_t - \theta^*]_t` and take its top right singular vectors; the
  trajectory's coordinates on the plane are :math:`M\,[\delta\ \eta]`, so the path of the
  run can be drawn on the contours it moved through.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from gdjax._validate import UsageError, as_key, check_choice, check_int

__all__ = [
    "Plane",
    "filter_normalized",
    "landscape",
    "pca_directions",
    "project",
    "random_directions",
]


def filter_normalized(params: Any, key: jax.Array | int, *, bias: str = "zero") -> Any:
    """One random direction shaped like ``params``, filter-normalised (Li et al., 2018).

    Leaves with ``ndim >= 2`` are rescaled row by row (axis 0 indexes the filters) to the
    norms of ``params``' rows; ``bias`` says what leaves with ``ndim <= 1`` get:
    ``"zero"`` (the paper's default) or ``"filter"`` (the whole leaf rescaled to its norm).
    """
    check_choice("bias", bias, ("zero", "filter"))
    return _filter_normalized(params, as_key(key), -1, bias)


@functools.partial(jax.jit, static_argnums=(3,))
def _filter_normalized(params: Any, key: jax.Array, index: Any, bias: str) -> Any:
    """Direction ``index`` of ``key`` (``fold_in(key, index)``; ``key`` itself for −1)."""
    key = jax.lax.cond(index < 0, lambda: key, lambda: jax.random.fold_in(key, index))
    flat, unravel = ravel_pytree(params)  # one draw for all leaves: one PRNG kernel
    noise = jax.tree_util.tree_leaves(unravel(jax.random.normal(key, flat.shape, flat.dtype)))
    leaves, tree = jax.tree_util.tree_flatten(params)
    out = []
    for d, p in zip(noise, leaves):
        p = jnp.asarray(p)
        d = d.astype(p.dtype)
        if p.ndim >= 2:
            axes = tuple(range(1, p.ndim))
            scale = jnp.linalg.norm(p, axis=axes, keepdims=True)
            d = d * scale / (jnp.linalg.norm(d, axis=axes, keepdims=True) + 1e-12)
        elif bias == "filter":
            d = d * jnp.linalg.norm(p) / (jnp.linalg.norm(d) + 1e-12)
        else:
            d = jnp.zeros_like(p)
        out.append(d)
    return jax.tree_util.tree_unflatten(tree, out)


def random_directions(
    params: Any, key: jax.Array | int, n: int = 2, *, bias: str = "zero"
) -> list[Any]:
    """``n`` independent filter-normalised directions (see :func:`filter_normalized`);
    direction ``i`` is drawn with ``jax.random.fold_in(key, i)``."""
    n = check_int("n", n)
    check_choice("bias", bias, ("zero", "filter"))
    key = as_key(key)
    return [_filter_normalized(params, key, i, bias) for i in range(n)]


class Plane(NamedTuple):
    """The plane of a trajectory's top principal directions.

    Attributes:
      directions: ``[δ, η]`` (or more), unit vectors over all leaves, shaped like params.
      coords: ``(T, n)`` the trajectory's coordinates :math:`(\\theta_t - \\theta^*)\\cdot d`.
      explained: ``(n,)`` the fraction of the trajectory's variance about
        :math:`\\theta^*` along each direction.
    """

    directions: list[Any]
    coords: np.ndarray
    explained: np.ndarray


def pca_directions(trajectory: Any, center: Any, n: int = 2) -> Plane:
    """The top ``n`` PCA directions of a recorded trajectory about ``center`` (Li et al.).

    Args:
      trajectory: ``FitResult.trajectory``: params with a leading axis ``T``; or a list
        of such, from several runs, pooled into one plane.
      center: the parameters the plane goes through (usually the final ones).
      n: how many directions.
    """
    n = check_int("n", n)
    flat_c, unravel = ravel_pytree(center)
    c = np.asarray(flat_c, np.float64)
    single = jax.tree_util.tree_structure(trajectory) == jax.tree_util.tree_structure(center)
    runs = [trajectory] if single else list(trajectory)
    rows = [_flat_rows(t, c.size) - c for t in runs]
    M = np.concatenate(rows)
    if n > min(M.shape):
        raise UsageError(f"`n` = {n} directions need at least {n} recorded points and params.")
    _, s, vt = np.linalg.svd(M, full_matrices=False)
    V = vt[:n]
    explained = s[:n] ** 2 / max(float(np.sum(s**2)), 1e-300)
    dirs = [unravel(jnp.asarray(v, flat_c.dtype)) for v in V]
    return Plane(dirs, rows[0] @ V.T if len(rows) == 1 else M @ V.T, explained)


def _flat_rows(traj: Any, size: int) -> np.ndarray:
    leaves = jax.tree_util.tree_leaves(traj)
    if not leaves:
        raise UsageError("`trajectory` holds no arrays: run fit(..., trajectory=True).")
    t = np.shape(leaves[0])[0]
    rows = np.concatenate([np.asarray(x, np.float64).reshape(t, -1) for x in leaves], axis=1)
    if rows.shape[1] != size:
        raise UsageError(
            f"`trajectory` has {rows.shape[1]} numbers per record but `center` has {size}: "
            f"pass the trajectory and the final params of the same run."
        )
    return rows


def project(points: Any, center: Any, plane: Plane) -> np.ndarray:
    """Coordinates ``(T, n)`` of another trajectory (params with a leading axis) on ``plane``."""
    c = np.asarray(ravel_pytree(center)[0], np.float64)
    V = np.stack([np.asarray(ravel_pytree(d)[0], np.float64) for d in plane.directions])
    return (_flat_rows(points, c.size) - c) @ V.T


def landscape(
    loss_fn,
    params: Any,
    batch: Any,
    directions: Sequence[Any],
    xs: Any,
    ys: Any = None,
    *,
    chunk: int = 256,
) -> np.ndarray:
    """The loss on a line or plane through ``params``, the whole grid in one program.

    Args:
      loss_fn: ``loss_fn(params, batch) -> scalar``.
      params: the centre :math:`\\theta^*`.
      batch: the data the loss is evaluated on (passed into ``jit`` as an argument).
      directions: one direction (1-D landscape) or two (2-D), each shaped like params.
      xs: the coefficients :math:`\\alpha` along the first direction.
      ys: the coefficients :math:`\\beta` along the second (2-D only).
      chunk: grid points per vmapped batch.

    Returns:
      ``(len(xs),)`` for one direction; ``(len(ys), len(xs))`` for two (``Z[i, j]`` at
      ``(xs[j], ys[i])``, the layout of :func:`gdjax.plot.landscape`). NumPy.
    """
    if not callable(loss_fn):
        raise UsageError(f"`loss_fn` must be a function loss_fn(params, batch), got {loss_fn!r}.")
    dirs = list(directions)
    if len(dirs) not in (1, 2):
        raise UsageError(f"`directions`: pass one or two directions, got {len(dirs)}.")
    if (len(dirs) == 2) != (ys is not None):
        raise UsageError("Pass `ys` exactly when there are two directions (a 2-D landscape).")
    for i, d in enumerate(dirs):
        if jax.tree_util.tree_structure(d) != jax.tree_util.tree_structure(params):
            raise UsageError(f"`directions[{i}]` must have the structure of `params`.")
    chunk = check_int("chunk", chunk)
    xs = np.asarray(xs, np.float64).ravel()
    if len(dirs) == 1:
        coefs = xs[:, None]
    else:
        gx, gy = np.meshgrid(xs, np.asarray(ys, np.float64).ravel())
        coefs = np.stack([gx.ravel(), gy.ravel()], axis=-1)
    # stacked on the host: eager device ops would each compile a small kernel
    stacked = jax.tree_util.tree_map(lambda *d: np.stack([np.asarray(x) for x in d]), *dirs)
    dtype = np.dtype(jnp.result_type(*jax.tree_util.tree_leaves(params)))
    coefs = coefs.astype(dtype)
    values = np.asarray(_evaluate(loss_fn, min(chunk, len(coefs)), coefs, params, stacked, batch))
    return values if len(dirs) == 1 else values.reshape(gx.shape)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _evaluate(loss_fn, chunk, coefs, params, stacked, batch):
    def at(c):
        point = jax.tree_util.tree_map(
            lambda p, d: p + jnp.tensordot(c, d, axes=1).astype(p.dtype), params, stacked
        )
        return loss_fn(point, batch)

    return jax.lax.map(at, coefs, batch_size=chunk)

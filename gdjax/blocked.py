r"""One-pass full-batch gradients for linear models with a pointwise loss.

A linear model with a pointwise loss (G3's logistic regression, R2's least squares) has

.. math::

    z = Xw + b, \qquad J(w, b) = \frac1m \sum_{i=1}^m \ell(z_i, y_i), \qquad
    \frac{\partial J}{\partial w} = \frac1m X^\top dz, \qquad
    \frac{\partial J}{\partial b} = \frac1m \sum_i dz_i, \qquad
    dz_i = \frac{\partial \ell}{\partial z}(z_i, y_i).

Written as two matrix products, ``z = X @ w`` and ``X.T @ dz``, a step reads ``X`` from
memory twice: for ``m = 400_000, n = 100`` in float32 that is 2 × 160 MB, and a step of
gradient descent is bound by memory, not arithmetic (``2mn`` flops per pass, half a flop
per byte read). Both products are sums over rows, so they can be done one block of rows at a
time, while the block is still in cache::

    for each block B of rows:
        z_B  = X_B w + b                   # reads X_B from memory
        dz_B = ℓ'(z_B, y_B)
        g   += X_Bᵀ dz_B                   # reads X_B again, from cache

which reads ``X`` from memory once. :func:`linear_value_and_grad` builds that loop
(``lax.fori_loop`` over full blocks, plus one ragged block when ``block_rows`` does not
divide ``m``) and returns a ``value_and_grad`` for :func:`gdjax.fit`. The result equals
``jax.value_and_grad`` of the loss up to the order of the floating-point sums.
:func:`sharded_linear_value_and_grad` runs one such loop per device over a mesh axis
(on a CPU with one device per core, every core streams its share of the rows).
docs/performance.md has the measured cost of a step against one ``X @ w``.

==============  ===================================  =========================
``loss``        :math:`\ell(z, y)`                   :math:`\partial\ell/\partial z`
==============  ===================================  =========================
``"logistic"``  :math:`\mathrm{softplus}(z) - yz`    :math:`\sigma(z) - y`
``"squared"``   :math:`(z - y)^2`                    :math:`2(z - y)`
==============  ===================================  =========================

``softplus(z) − y·z`` is the binary cross-entropy from logits,
``−(y log σ(z) + (1 − y) log(1 − σ(z)))``, in a form that stays finite at ``|z| = 1e4``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import PartitionSpec

__all__ = [
    "DEFAULT_BLOCK_BYTES",
    "LOSSES",
    "PointwiseLoss",
    "linear_value_and_grad",
    "sharded_linear_value_and_grad",
]

Params = dict[str, jax.Array]
ValueAndGrad = Callable[[Params, Any], tuple[jax.Array, Params]]

#: The default block holds about this many bytes of ``X`` (a block of rows stays in a
#: core's L2 cache between the two products; see docs/performance.md for the tuning).
DEFAULT_BLOCK_BYTES = 256 * 1024


class PointwiseLoss(NamedTuple):
    r"""A per-example loss of the linear output ``z``: ``value_and_dz(z, y) -> (ℓ, ∂ℓ/∂z)``."""

    value_and_dz: Callable[[jax.Array, jax.Array], tuple[jax.Array, jax.Array]]


def _logistic(z: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array]:
    r""":math:`\ell = \mathrm{softplus}(z) - yz` and :math:`\sigma(z) - y`, from one ``exp``.

    With :math:`e = \exp(-|z|) \in (0, 1]`: :math:`\mathrm{softplus}(z) = \max(z, 0) +
    \log(1 + e)` and :math:`\sigma(z) = 1/(1 + e)` for :math:`z \ge 0`, :math:`e/(1 + e)`
    otherwise; neither overflows at any ``z``.
    """
    e = jnp.exp(-jnp.abs(z))
    value = jnp.maximum(z, 0) + jnp.log1p(e) - y * z
    sigma = jnp.where(z >= 0, 1, e) / (1 + e)
    return value, sigma - y


def _squared(z: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array]:
    r""":math:`\ell = (z - y)^2` and :math:`2(z - y)`."""
    r = z - y
    return r * r, 2 * r


#: The pointwise losses by name: G3's cross-entropy from logits, R2's squared error.
LOSSES: dict[str, PointwiseLoss] = {
    "logistic": PointwiseLoss(_logistic),
    "squared": PointwiseLoss(_squared),
}


class _Sums(NamedTuple):
    """Running sums over the blocks done so far."""

    loss: jax.Array  # Σ ℓ(z_i, y_i)
    dw: jax.Array  # Σ x_i dz_i, shape (n,)
    db: jax.Array  # Σ dz_i


def _block_sums(fn: PointwiseLoss, w: jax.Array, b: jax.Array, x: jax.Array, y: jax.Array) -> _Sums:
    """The three sums over one block of rows ``x: (r, n)``, ``y: (r,)``."""
    value, dz = fn.value_and_dz(x @ w + b, y)
    # dz @ x is xᵀdz with x read from cache; XLA:CPU runs it ~2.5× faster than x.T @ dz
    return _Sums(jnp.sum(value), dz @ x, jnp.sum(dz))


def _add(a: _Sums, b: _Sums) -> _Sums:
    return _Sums(a.loss + b.loss, a.dw + b.dw, a.db + b.db)


def _unpack_batch(batch: Any) -> tuple[jax.Array, jax.Array]:
    if isinstance(batch, Mapping):
        keys = [k for k in ("X", "x") if k in batch]
        if len(keys) != 1 or "y" not in batch:
            raise ValueError(
                f"`batch` must be a pair (X, y) or a dict with keys 'X' (or 'x') and 'y', "
                f"got a dict with keys {sorted(batch)}."
            )
        return batch[keys[0]], batch["y"]
    if isinstance(batch, tuple | list) and len(batch) == 2:
        return batch[0], batch[1]
    raise TypeError(
        f"`batch` must be a pair (X, y) with X of shape (m, n) and y of shape (m,), "
        f"got {type(batch).__name__}."
    )


def _check_inputs(params: Any, x: jax.Array, y: jax.Array) -> tuple[int, int]:
    if not isinstance(params, Mapping) or not {"w", "b"} <= set(params):
        got = sorted(params) if isinstance(params, Mapping) else type(params).__name__
        raise ValueError(
            f"`params` must be a dict with keys 'w' (shape (n,)) and 'b' (a scalar), got "
            f"{got}. Use the params of G3 or R2 (their init() or example())."
        )
    if jnp.ndim(x) != 2:
        raise ValueError(
            f"`batch` X must have shape (m, n) (examples on axis 0), got {jnp.shape(x)}. "
            f"A (n, m) matrix as the documents write it is X.T."
        )
    m, n = jnp.shape(x)
    if m == 0 or n == 0:
        raise ValueError(f"`batch` X must have at least one row and one column, got {(m, n)}.")
    if jnp.size(y) != m:
        raise ValueError(f"`batch` y must hold m = {m} targets, got shape {jnp.shape(y)}.")
    if jnp.size(params["w"]) != n or jnp.size(params["b"]) != 1:
        raise ValueError(
            f"`params` w must hold n = {n} weights and b one bias, got w of shape "
            f"{jnp.shape(params['w'])} and b of shape {jnp.shape(params['b'])}."
        )
    dtypes = {jnp.result_type(a) for a in (x, y, params["w"], params["b"])}
    if len(dtypes) != 1:
        raise TypeError(
            f"`params` and `batch` must share one float dtype, got {sorted(map(str, dtypes))}. "
            f"Cast them, e.g. X.astype(jnp.float32)."
        )
    return m, n


def linear_value_and_grad(
    loss: str = "logistic",
    *,
    block_rows: int | None = None,
    unroll: int = 1,
    axis_name: str | None = None,
) -> ValueAndGrad:
    r"""A one-pass ``(params, (X, y)) -> (J, grads)`` for a linear model ``z = Xw + b``.

    ``J = (1/m) Σᵢ ℓ(zᵢ, yᵢ)`` with ``ℓ`` chosen by ``loss`` (``"logistic"``: G3's mean
    cross-entropy, ``"squared"``: R2's ``(1/m)‖ŷ − y‖²``); ``grads = {"w": Xᵀdz/m,
    "b": Σdz/m}``. Each block of ``block_rows`` rows of ``X`` is read once and used for both
    ``z`` and ``Xᵀdz`` while it is in cache.

    Args:
      loss: ``"logistic"`` or ``"squared"``.
      block_rows: rows per block; ``None`` picks about ``DEFAULT_BLOCK_BYTES`` of ``X``.
        A last, shorter block takes the rows left over when it does not divide ``m``.
      unroll: blocks per iteration of the compiled loop (``lax.fori_loop``'s ``unroll``).
      axis_name: inside ``shard_map`` with the rows of ``X`` split over this mesh axis:
        the per-shard sums are ``psum``-ed, so every shard returns the full-batch ``J``
        and gradient (see :func:`sharded_linear_value_and_grad`).

    Returns:
      ``value_and_grad(params, batch)`` with ``params = {"w": (n,), "b": ()}`` and
      ``batch = (X, y)`` (or ``{"X": X, "y": y}``), ``X: (m, n)``, ``y: (m,)``; it returns
      ``(J, {"w": dJ/dw, "b": dJ/db})`` (other keys of ``params`` are not allowed).
      Pure and traceable: pass it as ``gd.fit(..., value_and_grad=...)`` or ``jax.jit`` it.

    Example::

        from gdjax.blocked import linear_value_and_grad
        vg = linear_value_and_grad("logistic")
        result = gd.fit(gd.models.get("G3").loss, params, optax.sgd(0.1), (X, y),
                        steps=100, value_and_grad=vg)
    """
    if loss not in LOSSES:
        raise ValueError(f"`loss` must be one of {sorted(LOSSES)}, got {loss!r}.")
    for arg, value in (("block_rows", block_rows), ("unroll", unroll)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            raise ValueError(f"`{arg}` must be a positive int, got {value!r}.")
    fn = LOSSES[loss]

    def value_and_grad(params: Params, batch: Any) -> tuple[jax.Array, Params]:
        x, y = _unpack_batch(batch)
        m, n = _check_inputs(params, x, y)
        if set(params) != {"w", "b"}:
            raise ValueError(
                f"`params` must have exactly the keys 'w' and 'b', got {sorted(params)}."
            )
        dtype = jnp.result_type(x)
        w = jnp.reshape(params["w"], (n,))
        b = jnp.reshape(params["b"], ())
        y = jnp.reshape(y, (m,))
        rows = block_rows or max(1, DEFAULT_BLOCK_BYTES // (n * jnp.dtype(dtype).itemsize))
        rows = min(rows, m)
        full, ragged = divmod(m, rows)

        def body(i: jax.Array, acc: _Sums) -> _Sums:
            xb = lax.dynamic_slice_in_dim(x, i * rows, rows)
            yb = lax.dynamic_slice_in_dim(y, i * rows, rows)
            return _add(acc, _block_sums(fn, w, b, xb, yb))

        # The first block seeds the sums (so they carry the data's sharding type inside
        # shard_map); the loop adds blocks 1 .. full-1; a ragged block, if any, comes last.
        sums = _block_sums(fn, w, b, x[:rows], y[:rows])
        if full > 1:
            sums = lax.fori_loop(1, full, body, sums, unroll=unroll)
        if ragged:
            sums = _add(sums, _block_sums(fn, w, b, x[full * rows :], y[full * rows :]))
        count = jnp.asarray(m, dtype)
        if axis_name is not None:
            sums, count = lax.psum((sums, count), axis_name)
        grads = {
            "w": jnp.reshape(sums.dw / count, jnp.shape(params["w"])),
            "b": jnp.reshape(sums.db / count, jnp.shape(params["b"])),
        }
        return sums.loss / count, grads

    value_and_grad.__name__ = f"linear_value_and_grad_{loss}"
    value_and_grad.__qualname__ = value_and_grad.__name__
    return value_and_grad


def sharded_linear_value_and_grad(
    loss: str = "logistic",
    *,
    mesh: jax.sharding.Mesh,
    axis: str = "data",
    block_rows: int | None = None,
) -> ValueAndGrad:
    """:func:`linear_value_and_grad` with the rows of ``X`` split over a mesh axis.

    Each device runs the one-pass loop over its own rows (so every core of a CPU streams
    its share of ``X`` when the host has one device per core, e.g. with
    ``jax.config.update("jax_num_cpu_devices", os.cpu_count())`` before any JAX work),
    and the per-device sums are added with one ``psum`` of ``n + 2`` numbers.

    Args:
      loss, block_rows: as in :func:`linear_value_and_grad`.
      mesh: the device mesh; ``axis`` must be one of its axis names.
      axis: the mesh axis the rows are split over; ``m`` must be a multiple of its size.

    Returns:
      ``value_and_grad(params, (X, y)) -> (J, grads)``, the full-batch values, replicated.
    """
    if not isinstance(mesh, jax.sharding.Mesh):
        raise TypeError(f"`mesh` must be a jax.sharding.Mesh, got {type(mesh).__name__}.")
    if axis not in mesh.axis_names:
        raise ValueError(f"`axis` must be one of the mesh's axes {mesh.axis_names}, got {axis!r}.")
    local = linear_value_and_grad(loss, block_rows=block_rows, axis_name=axis)
    rows, rep = PartitionSpec(axis), PartitionSpec()

    def shard(params: Params, x: jax.Array, y: jax.Array) -> tuple[jax.Array, Params]:
        return local(params, (x, y))

    per_shard = jax.shard_map(shard, mesh=mesh, in_specs=(rep, rows, rows), out_specs=rep)

    def value_and_grad(params: Params, batch: Any) -> tuple[jax.Array, Params]:
        x, y = _unpack_batch(batch)
        size = mesh.shape[axis]
        if jnp.ndim(x) >= 1 and jnp.shape(x)[0] % size:
            raise ValueError(
                f"`batch` X has {jnp.shape(x)[0]} rows, not a multiple of the {size} devices "
                f"of mesh axis {axis!r}. Drop or pad rows so that they divide evenly."
            )
        return per_shard(params, x, y)

    value_and_grad.__name__ = f"sharded_linear_value_and_grad_{loss}"
    value_and_grad.__qualname__ = value_and_grad.__name__
    return value_and_grad

r"""Curvature without the Hessian: Lanczos on Hessian-vector products.

The Hessian :math:`H = \nabla^2_\theta \mathcal L(\theta; B)` is never formed. Its product
with a vector is forward-over-reverse differentiation, one ``jax.jvp`` of ``jax.grad``:

.. math::

    H v = \frac{d}{d\varepsilon} \nabla_\theta \mathcal L(\theta + \varepsilon v; B)
    \Big|_{\varepsilon = 0},

at about the cost of two gradients. Lanczos builds, from a random unit vector
:math:`q_1`, an orthonormal basis :math:`Q_m = [q_1 … q_m]` of the Krylov space
:math:`\{q_1, Hq_1, …, H^{m-1}q_1\}` in which :math:`T_m = Q_m^\top H Q_m` is
tridiagonal (:math:`\alpha_j = q_j^\top H q_j` on the diagonal, :math:`\beta_j` beside it):

.. math::

    \beta_j q_{j+1} = H q_j - \alpha_j q_j - \beta_{j-1} q_{j-1}.

Every new vector is orthogonalised again against all earlier ones (full
re-orthogonalisation, twice), so the basis stays orthonormal in floating point; when
:math:`\beta_j` vanishes (the Krylov space is invariant) the next vector is a fresh random
one orthogonal to the basis. The eigenvalues of :math:`T_m` (Ritz values) approach the
extreme eigenvalues of :math:`H` first; with :math:`m = n` (the number of parameters)
they are all of them, exactly up to rounding.

*Sharpness* is the largest eigenvalue :math:`\lambda_{\max}(H)`. Gradient descent with
step :math:`\eta` on a quadratic is stable only if :math:`\lambda_{\max} < 2/\eta`.

The spectral density is stochastic Lanczos quadrature (Golub & Meurant; Ghorbani, Krishnan
& Xiao, ICML 2019): for a random unit :math:`v` with Lanczos eigenpairs
:math:`(\theta_k, s_k)` of :math:`T_m`,
:math:`v^\top f(H) v \approx \sum_k s_{1k}^2 f(\theta_k)`, so the density
:math:`\phi(t) = \frac1n\sum_i \delta(t - \lambda_i)` is estimated by
:math:`\sum_k \tau_k \mathcal N(t; \theta_k, \sigma^2)` with :math:`\tau_k = s_{1k}^2`,
averaged over probes.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from gdjax._validate import UsageError, as_key, check_int

__all__ = [
    "Density",
    "SharpnessMonitor",
    "hessian_eigs",
    "hvp",
    "sharpness",
    "sharpness_monitor",
    "spectral_density",
]

LossFn = Callable[[Any, Any], jax.Array]


def hvp(loss_fn: LossFn, params: Any, batch: Any, v: Any) -> Any:
    """The Hessian-vector product :math:`H v` (``v`` shaped like ``params``), by
    ``jax.jvp`` of ``jax.grad``: forward-over-reverse, the Hessian never formed."""
    return jax.jvp(lambda p: jax.grad(loss_fn)(p, batch), (params,), (v,))[1]


def _flat_hvp(loss_fn: LossFn, params: Any, batch: Any) -> tuple[Callable, jax.Array, Callable]:
    flat, unravel = ravel_pytree(params)

    def grad_flat(x: jax.Array) -> jax.Array:
        return ravel_pytree(jax.grad(loss_fn)(unravel(x), batch))[0]

    def product(v: jax.Array) -> jax.Array:
        return jax.jvp(grad_flat, (flat,), (v.astype(flat.dtype),))[1]

    return product, flat, unravel


def _orthogonalise(w: jax.Array, Q: jax.Array, used: jax.Array) -> jax.Array:
    """``w`` minus its projection on the rows of ``Q`` marked ``used``, twice ("twice is
    enough", Kahan–Parlett)."""
    Qm = jnp.where(used[:, None], Q, 0.0)
    w = w - Qm.T @ (Qm @ w)
    return w - Qm.T @ (Qm @ w)


def _lanczos(
    product: Callable, n: int, m: int, key: jax.Array, dtype: Any
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``m`` Lanczos steps of the symmetric operator ``product`` on ``R^n``.

    Returns ``(alphas (m,), betas (m - 1,), Q (m, n))``: ``T = tridiag(betas, alphas,
    betas)`` and the orthonormal basis whose rows are ``q_1 … q_m``.
    """
    k0, k1 = jax.random.split(key)
    q0 = jax.random.normal(k0, (n,), dtype)
    fresh = jax.random.normal(k1, (m, n), dtype)
    tiny = jnp.finfo(dtype).eps
    Q = jnp.zeros((m + 1, n), dtype).at[0].set(q0 / jnp.linalg.norm(q0))
    rows = jnp.arange(m + 1)

    def step(j, carry):
        Q, alphas, betas = carry
        q = Q[j]
        hq = product(q)
        alpha = jnp.vdot(q, hq)
        used = rows <= j
        w = _orthogonalise(hq, Q, used)
        beta = jnp.linalg.norm(w)
        restart = beta <= tiny * (jnp.linalg.norm(hq) + tiny)
        r = _orthogonalise(fresh[j], Q, used)
        r = r / jnp.maximum(jnp.linalg.norm(r), tiny)
        nxt = jnp.where(restart, r, w / jnp.where(restart, 1.0, beta))
        beta = jnp.where(restart, 0.0, beta)
        return Q.at[j + 1].set(nxt), alphas.at[j].set(alpha), betas.at[j].set(beta)

    init = (Q, jnp.zeros((m,), dtype), jnp.zeros((m,), dtype))
    Q, alphas, betas = jax.lax.fori_loop(0, m, step, init)
    return alphas, betas[: m - 1], Q[:m]


def _tridiagonal(alphas: jax.Array, betas: jax.Array) -> jax.Array:
    return jnp.diag(alphas) + jnp.diag(betas, 1) + jnp.diag(betas, -1)


def _steps(iters: Any, n: int) -> int:
    return min(check_int("iters", iters), n)


def _check(loss_fn: Any, params: Any) -> int:
    if not callable(loss_fn):
        raise UsageError(f"`loss_fn` must be a function loss_fn(params, batch), got {loss_fn!r}.")
    leaves = jax.tree_util.tree_leaves(params)
    if not leaves:
        raise UsageError("`params` holds no arrays: pass the parameter pytree of the model.")
    for leaf in leaves:
        if not jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
            raise UsageError(
                f"`params` leaves must be float arrays (the Hessian is taken in them), got "
                f"dtype {jnp.result_type(leaf)}."
            )
    return int(sum(np.size(x) for x in leaves))


def hessian_eigs(
    loss_fn: LossFn,
    params: Any,
    batch: Any = None,
    *,
    k: int = 1,
    iters: int = 40,
    key: jax.Array | int = 0,
) -> tuple[jax.Array, Any]:
    """The ``k`` largest Hessian eigenvalues (descending) and their eigenvectors.

    Returns ``(values (k,), vectors)``: ``vectors`` is shaped like ``params`` with a
    leading axis ``k`` (unit norm over all leaves together; the Ritz vectors
    :math:`Q_m^\\top s_k`). Works under ``jit``/``vmap`` (``k``, ``iters`` static).
    """
    n = _check(loss_fn, params)
    k = check_int("k", k)
    m = _steps(iters, n)
    if k > m:
        raise UsageError(f"`k` = {k} eigenvalues need `iters` >= k (and k <= {n} parameters).")
    return _top_pairs(loss_fn, k, m, params, batch, as_key(key))


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _top_pairs(loss_fn, k, m, params, batch, key):
    product, flat, unravel = _flat_hvp(loss_fn, params, batch)
    alphas, betas, Q = _lanczos(product, flat.shape[0], m, key, flat.dtype)
    theta, S = jnp.linalg.eigh(_tridiagonal(alphas, betas))
    vectors = (Q.T @ S[:, ::-1][:, :k]).T  # (k, n): the Ritz vectors, largest first
    return theta[::-1][:k], jax.vmap(unravel)(vectors)


def sharpness(
    loss_fn: LossFn,
    params: Any,
    batch: Any = None,
    *,
    k: int = 1,
    iters: int = 40,
    key: jax.Array | int = 0,
) -> jax.Array:
    r"""The largest eigenvalue of the Hessian of ``loss_fn(params, batch)`` in ``params``.

    :math:`\lambda_{\max}(\nabla^2_\theta \mathcal L)` by ``iters`` Lanczos steps on
    Hessian-vector products (``jax.jvp`` of ``jax.grad``; see the module text), started
    from a random vector drawn with ``key``. For a model with at most ``iters``
    parameters the result is exact up to rounding.

    Args:
      loss_fn: ``loss_fn(params, batch) -> scalar``.
      params: the point (a pytree of float arrays).
      batch: the data the loss is taken on (full batch or one mini-batch).
      k: with ``k > 1``, the ``k`` largest eigenvalues, descending, shape ``(k,)``.
      iters: Lanczos steps (each one Hessian-vector product); capped at the number of
        parameters.
      key: PRNG key or int seed of the starting vector.

    Returns:
      A scalar array (``k = 1``) or ``(k,)``. Works under ``jit`` and ``vmap``.

    >>> import gdjax as gd
    >>> model = gd.models.get("R2"); params, batch = model.example()
    >>> lam = gd.sharpness(model.loss, params, batch)
    """
    values, _ = _eig_values(loss_fn, params, batch, k, iters, key)
    return values[0] if k == 1 else values


def _eig_values(loss_fn, params, batch, k, iters, key) -> tuple[jax.Array, None]:
    n = _check(loss_fn, params)
    k = check_int("k", k)
    m = _steps(iters, n)
    if k > m:
        raise UsageError(f"`k` = {k} eigenvalues need `iters` >= k (and k <= {n} parameters).")
    return _top_values(loss_fn, k, m, params, batch, as_key(key)), None


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _top_values(loss_fn, k, m, params, batch, key):
    product, flat, _ = _flat_hvp(loss_fn, params, batch)
    alphas, betas, _ = _lanczos(product, flat.shape[0], m, key, flat.dtype)
    return jnp.linalg.eigvalsh(_tridiagonal(alphas, betas))[::-1][:k]


class Density(NamedTuple):
    """A Hessian spectral density estimate (stochastic Lanczos quadrature).

    Attributes:
      grid: ``(G,)`` eigenvalue axis.
      density: ``(G,)`` the smoothed density :math:`\\phi(t)` (integrates to 1).
      nodes: ``(probes, m)`` Ritz values :math:`\\theta_k` of each probe.
      weights: ``(probes, m)`` their weights :math:`\\tau_k` (each row sums to 1).
    """

    grid: np.ndarray
    density: np.ndarray
    nodes: np.ndarray
    weights: np.ndarray


def spectral_density(
    loss_fn: LossFn,
    params: Any,
    batch: Any = None,
    *,
    iters: int = 40,
    probes: int = 4,
    key: jax.Array | int = 0,
    grid_size: int = 400,
    sigma: float | None = None,
) -> Density:
    r"""Estimate the Hessian eigenvalue density by stochastic Lanczos quadrature.

    ``probes`` independent Lanczos runs of ``iters`` steps; each gives nodes
    :math:`\theta_k` and weights :math:`\tau_k = s_{1k}^2`; the density is their average
    mixture of Gaussians of width ``sigma`` (default 1% of the spectrum's span), on a
    grid padded by ``5 sigma`` on either side. Host-side (returns NumPy).
    """
    n = _check(loss_fn, params)
    m = _steps(iters, n)
    probes = check_int("probes", probes)
    grid_size = check_int("grid_size", grid_size, minimum=2)
    keys = jax.random.split(as_key(key), probes)
    nodes, weights = _slq(loss_fn, m, params, batch, keys)
    nodes, weights = np.asarray(nodes, np.float64), np.asarray(weights, np.float64)
    lo, hi = float(nodes.min()), float(nodes.max())
    if sigma is None:
        sigma = 0.01 * max(hi - lo, 1e-12 + 1e-6 * max(abs(lo), abs(hi)))
    elif not (np.isfinite(sigma) and sigma > 0):
        raise UsageError(f"`sigma` must be a positive width in eigenvalues, got {sigma}.")
    grid = np.linspace(lo - 5 * sigma, hi + 5 * sigma, grid_size)
    gauss = np.exp(-0.5 * ((grid[None, None, :] - nodes[..., None]) / sigma) ** 2)
    gauss /= sigma * np.sqrt(2 * np.pi)
    density = np.einsum("pk,pkg->g", weights, gauss) / probes
    return Density(grid, density, nodes, weights)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _slq(loss_fn, m, params, batch, keys):
    product, flat, _ = _flat_hvp(loss_fn, params, batch)
    n = flat.shape[0]

    def one(key):
        alphas, betas, _ = _lanczos(product, n, m, key, flat.dtype)
        theta, S = jnp.linalg.eigh(_tridiagonal(alphas, betas))
        return theta, S[0] ** 2

    return jax.lax.map(one, keys)


@dataclasses.dataclass(frozen=True)
class SharpnessMonitor:
    """A ``fit(..., monitor=...)`` function: the sharpness at every recorded step.

    Called with a :class:`gdjax.train.StepInfo`, it returns ``{"sharpness": λ_max}`` (or
    ``(k,)`` top eigenvalues) of the Hessian of ``loss_fn`` at ``info.params`` on
    ``info.batch``, the step's own batch, with a start vector drawn from
    ``fold_in(key(seed), t)``. Instances with equal fields are equal, so the compiled
    program is reused.
    """

    loss_fn: LossFn
    iters: int = 20
    k: int = 1
    seed: int = 0

    def __call__(self, info: Any) -> dict[str, jax.Array]:
        key = jax.random.fold_in(jax.random.key(self.seed), info.t)
        values, _ = _eig_values(self.loss_fn, info.params, info.batch, self.k, self.iters, key)
        return {"sharpness": values[0] if self.k == 1 else values}


def sharpness_monitor(loss_fn: LossFn, *, iters: int = 20, k: int = 1, seed: int = 0):
    """A monitor for ``gd.fit``/``gd.sweep`` recording the sharpness at the recorded steps
    (``iters`` Lanczos steps each, inside the compiled loop): see :class:`SharpnessMonitor`.

    >>> mon = sharpness_monitor(model.loss, iters=20)
    >>> res = gd.fit(model.loss, params, gd.optim.gd(0.1), data, steps=500,
    ...              record_every=10, monitor=mon)
    >>> res.monitor["sharpness"]          # (50,) λ_max at steps 0, 10, …
    """
    if not callable(loss_fn):
        raise UsageError(f"`loss_fn` must be a function loss_fn(params, batch), got {loss_fn!r}.")
    iters, k = check_int("iters", iters), check_int("k", k)
    if k > iters:
        raise UsageError(f"`k` = {k} eigenvalues need `iters` >= k, got iters = {iters}.")
    seed = check_int("seed", seed, minimum=0)
    return SharpnessMonitor(loss_fn, iters, k, seed)

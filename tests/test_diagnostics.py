"""gdjax.diagnostics: sharpness and Hessian spectra against numpy.linalg.eigvalsh of the full
Hessian, and lr_find on quadratics of known curvature L (gradient descent diverges above 2/L)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import gdjax as gd
from gdjax.diagnostics import hessian_eigs, sharpness_monitor, spectral_density


def full_hessian_eigs(loss_fn, params, batch):
    """Eigenvalues (descending) of the full Hessian, formed by jax.hessian in float64."""
    with jax.enable_x64(True):
        p64, b64 = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), (params, batch))
        flat, unravel = ravel_pytree(p64)
        H = jax.jit(jax.hessian(lambda x, b: loss_fn(unravel(x), b)))(flat, b64)
    return np.linalg.eigvalsh(np.asarray(H, np.float64))[::-1]


def diagonal_quadratic(lams):
    """L(θ) = ½ Σ λᵢ θᵢ²: Hessian diag(λ), so λ_max = max λ and GD diverges above 2/λ_max."""
    lam = jnp.asarray(lams, jnp.float32)

    def loss(params, batch):
        return 0.5 * jnp.sum(lam * params["theta"] ** 2)

    return loss


def closed_form_hessian(model_id, params, batch):
    """R2: (2/m)[X 1]ᵀ[X 1]; G3: (1/m)[X 1]ᵀ diag(a(1 − a)) [X 1], a = σ(Xw + b); float64,
    in the order of ravel_pytree (b before w)."""
    X = np.asarray(batch[0], np.float64)
    Xb = np.column_stack([np.ones(len(X)), X])
    if model_id == "R2":
        return 2.0 * Xb.T @ Xb / len(X)
    z = X @ np.asarray(params["w"], np.float64) + float(params["b"])
    a = 1.0 / (1.0 + np.exp(-z))
    return Xb.T @ (Xb * (a * (1 - a))[:, None]) / len(X)


@pytest.mark.parametrize("model_id", ["R2", "G3"])
def test_sharpness_matches_eigvalsh_of_the_closed_form_hessian(model_id):
    model = gd.models.get(model_id)
    params, batch = model.example()
    if model_id == "G3":  # away from w = 0, where every a(1 − a) is 1/4
        params = {"w": jnp.array([0.7, -1.2], jnp.float32), "b": jnp.float32(0.3)}
    ref = np.linalg.eigvalsh(closed_form_hessian(model_id, params, batch))[::-1]
    top = np.asarray(gd.sharpness(model.loss, params, batch, k=3))
    np.testing.assert_allclose(top, ref, rtol=2e-5, atol=1e-6)


def test_sharpness_of_d1_matches_eigvalsh_of_jax_hessian():
    model = gd.models.get("D1")  # 3-4-4-3-2: tanh, sigmoid, ReLU, identity; 59 parameters
    params, batch = model.example()
    ref = full_hessian_eigs(model.loss, params, batch)
    top = np.asarray(gd.sharpness(model.loss, params, batch, k=3, iters=59))
    np.testing.assert_allclose(top, ref[:3], rtol=2e-5, atol=1e-6)


def test_sharpness_scalar_and_converges_before_n_steps():
    # 400 parameters, eigenvalues 0.01 … 1 and an isolated top one at 5: 30 Lanczos steps
    # find it (the Hessian-vector product is all Lanczos ever sees)
    lams = np.concatenate([np.linspace(0.01, 1.0, 399), [5.0]])
    loss = diagonal_quadratic(lams)
    params = {"theta": jnp.ones(400, jnp.float32)}
    lam = gd.sharpness(loss, params, None, iters=30)
    assert lam.shape == ()
    np.testing.assert_allclose(float(lam), 5.0, rtol=1e-5)


def test_hessian_eigs_vectors_are_eigenvectors():
    model = gd.models.get("R2")
    params, batch = model.example()
    H = closed_form_hessian("R2", params, batch)
    values, vectors = hessian_eigs(model.loss, params, batch, k=2, iters=3)
    for i in range(2):
        v = np.asarray(ravel_pytree(jax.tree.map(lambda x, i=i: x[i], vectors))[0], np.float64)
        np.testing.assert_allclose(np.linalg.norm(v), 1.0, rtol=1e-5)
        np.testing.assert_allclose(H @ v, float(values[i]) * v, atol=2e-5)


def test_spectral_density_nodes_are_the_eigenvalues_with_full_lanczos():
    lams = np.array([0.5, 1.0, 2.0, 3.0, 7.0, 11.0])
    loss = diagonal_quadratic(lams)
    params = {"theta": jnp.ones(6, jnp.float32)}
    d = spectral_density(loss, params, None, iters=6, probes=3, key=1)
    for row in d.nodes:  # m = n: the Ritz values are the spectrum itself
        np.testing.assert_allclose(np.sort(row), lams, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(d.weights.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(np.trapezoid(d.density, d.grid), 1.0, rtol=1e-3)


def test_sharpness_refuses_bad_arguments():
    model = gd.models.get("R2")
    params, batch = model.example()
    with pytest.raises(gd.UsageError, match="iters"):
        gd.sharpness(model.loss, params, batch, iters=0)
    with pytest.raises(gd.UsageError, match="`k`"):
        gd.sharpness(model.loss, params, batch, k=4)
    with pytest.raises(gd.UsageError, match="loss_fn"):
        gd.sharpness("loss", params, batch)
    with pytest.raises(gd.UsageError, match="iters"):
        sharpness_monitor(model.loss, iters=2, k=3)


# ----------------------------------------------------------------------------- lr_find


def test_lr_find_on_a_quadratic_of_known_L_suggests_below_two_over_L():
    lams = np.linspace(0.2, 4.0, 8)  # L = 4: GD diverges for η > 2/L = 0.5
    loss = diagonal_quadratic(lams)
    params = {"theta": jnp.ones(8, jnp.float32)}
    rates = np.geomspace(1e-3, 10.0, 36)  # none within 10% above 2/L
    res = gd.lr_find(loss, params, gd.optim.gd(0.1), None, steps=60, rates=rates)
    edge = 2.0 / 4.0
    np.testing.assert_array_equal(res.diverged, rates > edge)  # exactly the theory's edge
    assert res.edge == rates[rates > edge][0]  # the first tried rate above 2/L
    assert res.suggestion < edge and res.suggestion <= 0.5 * res.edge
    assert res.best < edge
    assert res.losses.shape == (36, 60)
    np.testing.assert_allclose(res.initial_loss, 0.5 * lams.sum(), rtol=1e-6)


def test_lr_find_refuses_bad_arguments():
    loss = diagonal_quadratic([1.0])
    params = {"theta": jnp.ones(1, jnp.float32)}
    with pytest.raises(gd.UsageError, match="increasing"):
        gd.lr_find(loss, params, gd.optim.gd(0.1), rates=[0.1, 0.01])
    with pytest.raises(gd.UsageError, match="min_lr"):
        gd.lr_find(loss, params, gd.optim.gd(0.1), min_lr=1.0, max_lr=0.1)
    with pytest.raises(gd.UsageError, match="safety"):
        gd.lr_find(loss, params, gd.optim.gd(0.1), safety=2.0)
    with pytest.raises(gd.UsageError, match="optimizer"):
        gd.lr_find(loss, params, object())
    res = gd.lr_find(loss, params, gd.optim.sgd, steps=5, rates=[0.5, 1.5, 2.5])  # a factory
    np.testing.assert_array_equal(res.diverged, [False, False, True])  # 2/L = 2
    assert res.suggestion == 0.5 and res.edge == 2.5

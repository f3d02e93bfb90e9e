"""gdjax.diagnostics inside runs and around them: recorded gradient norms against jax.grad
at the same steps, the sharpness monitor against gd.sharpness, the non-finite origin of a
planted overflow, and landscapes along known directions against direct evaluation."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gdjax as gd
from gdjax.diagnostics import (
    gradient_flow,
    landscape,
    leaf_names,
    nonfinite_origin,
    pca_directions,
    random_directions,
    sharpness_monitor,
)


@pytest.fixture(scope="module")
def d1_run():
    model = gd.models.get("D1")
    params, batch = model.example()
    res = gd.fit(model.loss, params, gd.optim.gd(0.05), batch, steps=12, record_every=4,
                 trajectory=True, monitor=gradient_flow)  # fmt: skip
    return model, batch, res


def test_recorded_gradient_norms_are_jax_grad_at_the_same_steps(d1_run):
    model, batch, res = d1_run
    assert leaf_names(res.params)[:2] == ["0.W", "0.b"]
    flow = res.monitor
    assert flow["grad_norm"].shape == (3, 8)  # records at t = 0, 4, 8; four layers × (W, b)
    grad = jax.jit(jax.grad(model.loss))
    for r in range(3):
        p_t = jax.tree.map(lambda x, r=r: x[r], res.trajectory)
        g = grad(p_t, batch)
        want = [float(jnp.linalg.norm(x)) for x in jax.tree.leaves(g)]
        np.testing.assert_allclose(flow["grad_norm"][r], want, rtol=1e-5)
        norms = [float(jnp.linalg.norm(x)) for x in jax.tree.leaves(p_t)]
        np.testing.assert_allclose(flow["param_norm"][r], norms, rtol=1e-5)
        # plain GD: u = −η g, so ‖u‖/‖θ‖ = η‖g‖/‖θ‖
        np.testing.assert_allclose(flow["update_ratio"][r], 0.05 * np.array(want) / norms,
                                   rtol=1e-5)  # fmt: skip


def test_sharpness_monitor_in_fit_is_gd_sharpness_at_the_recorded_params():
    model = gd.models.get("R2")
    params, batch = model.example()
    mon = sharpness_monitor(model.loss, iters=3)
    assert mon == sharpness_monitor(model.loss, iters=3)  # equal: the same compiled program
    res = gd.fit(model.loss, params, gd.optim.gd(0.02), batch, steps=6, record_every=3,
                 trajectory=True, monitor=mon)  # fmt: skip
    # R2 is a quadratic: one Hessian at every step, λ_max of (2/m)[X 1]ᵀ[X 1]
    X = np.column_stack([np.ones(4), np.asarray(batch[0], np.float64)])
    lam = np.linalg.eigvalsh(2 * X.T @ X / 4)[-1]
    np.testing.assert_allclose(res.monitor["sharpness"], [lam, lam], rtol=2e-5)


def test_nonfinite_origin_finds_a_planted_overflow():
    def loss(params, batch):
        X, y = batch
        z = gd.name(X @ params["w"], "z")
        e = gd.name(jnp.exp(z), "e")  # overflows in float32 for z > 88.7
        p = gd.name(e / jnp.sum(e), "p")
        return -jnp.sum(y * jnp.log(p))

    X, y = jnp.eye(3, dtype=jnp.float32), jnp.array([1.0, 0.0, 0.0], jnp.float32)
    origin = nonfinite_origin(loss, {"w": jnp.array([100.0, 1.0, 2.0], jnp.float32)}, (X, y))
    assert (origin.stage, origin.node, origin.op, origin.named) == ("forward", "e", "exp", "e")
    assert "e = exp(z)" in origin.message
    assert nonfinite_origin(loss, {"w": jnp.array([1.0, 1.0, 2.0], jnp.float32)}, (X, y)) is None
    bad = nonfinite_origin(loss, {"w": jnp.array([jnp.nan, 1.0, 2.0], jnp.float32)}, (X, y))
    assert bad.stage == "input" and bad.node == "w"


def test_nonfinite_origin_of_a_diverged_run_at_its_last_finite_params():
    model = gd.models.get("R3")  # two linear layers, L = (1/m)‖ŷ − y‖²
    params, batch = model.example()
    res = gd.fit(model.loss, params, gd.optim.gd(1e3), batch, steps=30)
    assert res.diverged and np.isfinite(jax.tree.leaves(res.params)[0]).all()
    origin = nonfinite_origin(model.loss, res.params, batch)
    # ŷ − y is still finite (about 1e27), its square overflows float32
    assert (origin.stage, origin.op, origin.named) == ("forward", "square", "J")
    assert "max |" in origin.message


def test_nonfinite_origin_of_a_gradient_only_overflow():
    def loss(params, batch):  # finite value, infinite slope: d√u/du at u = 0
        return jnp.sqrt(gd.name(params["x"] ** 2, "u"))

    origin = nonfinite_origin(loss, {"x": jnp.float32(0.0)}, None)
    assert (origin.stage, origin.node) == ("backward", "u")
    assert "sqrt(u)" in origin.message


def test_landscape_along_known_directions_is_direct_evaluation(d1_run):
    model, batch, res = d1_run
    center = res.params
    d1, d2 = random_directions(center, 0)
    xs, ys = np.linspace(-1, 1, 5), np.linspace(-0.5, 0.5, 3)
    Z = landscape(model.loss, center, batch, [d1, d2], xs, ys)
    line = landscape(model.loss, center, batch, [d1], xs)
    assert Z.shape == (3, 5) and line.shape == (5,)
    A, B = (g.ravel().astype(np.float32) for g in np.meshgrid(xs, ys))
    host = jax.tree.map(np.asarray, (center, d1, d2))
    points = jax.tree.map(  # every grid point's parameters, stacked (NumPy), then one vmap
        lambda p, u, v: p[None] + A.reshape((-1,) + (1,) * p.ndim) * u[None]
        + B.reshape((-1,) + (1,) * p.ndim) * v[None], *host)  # fmt: skip
    direct = jax.jit(jax.vmap(model.loss, in_axes=(0, None)))(points, batch)
    np.testing.assert_allclose(Z.ravel(), direct, rtol=1e-5)
    np.testing.assert_allclose(line, Z[1], rtol=1e-5)  # ys[1] = 0: the line through θ*
    # filter normalisation: each row of each W has the norm of θ*'s row; biases get zero
    for layer, dl in zip(center, d1):
        np.testing.assert_allclose(jnp.linalg.norm(dl["W"], axis=1),
                                   jnp.linalg.norm(layer["W"], axis=1), rtol=1e-5)  # fmt: skip
        assert not np.any(np.asarray(dl["b"]))


def test_pca_directions_recover_the_plane_of_a_planar_trajectory():
    rng = np.random.default_rng(0)
    u, v = np.linalg.qr(rng.standard_normal((10, 2)))[0].T
    center = {"theta": jnp.asarray(rng.standard_normal(10), jnp.float32)}
    a, b = np.linspace(3, 0, 20), 0.5 * np.sin(np.linspace(0, 3, 20))
    traj = {"theta": jnp.asarray(center["theta"] + np.outer(a, u) + np.outer(b, v), jnp.float32)}
    plane = pca_directions(traj, center)
    D = np.stack([np.asarray(d["theta"]) for d in plane.directions])
    np.testing.assert_allclose(D @ D.T, np.eye(2), atol=1e-5)
    basis = np.stack([u, v])
    np.testing.assert_allclose(np.abs(np.linalg.det(D @ basis.T)), 1.0, atol=1e-4)  # same plane
    np.testing.assert_allclose(plane.explained.sum(), 1.0, atol=1e-5)  # all variance in it
    back = plane.coords @ D  # the trajectory, rebuilt from its coordinates
    np.testing.assert_allclose(back, np.asarray(traj["theta"]) - np.asarray(center["theta"]),
                               atol=1e-4)  # fmt: skip


def test_landscape_refuses_bad_arguments(d1_run):
    model, batch, res = d1_run
    (d,) = random_directions(res.params, 0, n=1)
    with pytest.raises(gd.UsageError, match="ys"):
        landscape(model.loss, res.params, batch, [d], [0.0], [0.0])
    with pytest.raises(gd.UsageError, match="structure"):
        landscape(model.loss, res.params, batch, [{"w": 1.0}], [0.0])
    with pytest.raises(gd.UsageError, match="bias"):
        random_directions(res.params, 0, bias="copy")

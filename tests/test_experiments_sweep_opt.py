"""The lr_sweep and optimizers experiments in fast mode, against references computed here.

lr_sweep: 2/L from ``numpy.linalg.eigvalsh`` of the diabetes data's least-squares Hessian
(loaded and standardised here, in float64), and plain-NumPy float64 gradient descent at
the rates on either side of the edge. optimizers: the optimum of scikit-learn's
unpenalised ``LogisticRegression`` (not the script's SciPy call), and the winning
momentum run replayed with ``optax.sgd`` in a ``lax.scan`` written here.
"""

from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gdjax as gd

from _harness import load_experiment


def _standardized(x: np.ndarray) -> np.ndarray:
    return (x - x.mean(axis=0)) / x.std(axis=0)


def _files(out, name: str, pngs: tuple[str, ...]) -> dict:
    folder = out / name
    on_disk = json.loads((folder / "metrics.json").read_text())
    assert on_disk["experiment"] == name and on_disk["fast"] is True
    summary = (folder / "summary.md").read_text()
    for stem in pngs:
        data = (folder / f"{stem}.png").read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5_000, stem
        assert f"({stem}.png)" in summary
    return on_disk


# --------------------------------------------------------------------------- lr_sweep


@pytest.fixture(scope="module")
def sweep_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    metrics = load_experiment("lr_sweep").main(["--fast", "--out", str(out)])
    return metrics, out


@pytest.fixture(scope="module")
def diabetes64():
    from sklearn.datasets import load_diabetes

    raw = load_diabetes(scaled=False)
    y = raw.target.astype(np.float64)
    return _standardized(raw.data.astype(np.float64)), (y - y.mean()) / y.std()


def test_lr_sweep_edge_matches_eigvalsh(sweep_run, diabetes64):
    metrics, _ = sweep_run
    X, _ = diabetes64
    Xb = np.column_stack([X, np.ones(len(X))])
    two_over_L = 2.0 / np.linalg.eigvalsh(2.0 * Xb.T @ Xb / len(X)).max()
    np.testing.assert_allclose(metrics["two_over_L"], two_over_L, rtol=1e-5)
    # the smallest diverging rate lies within one grid spacing above 2/L, its neighbour below
    spacing = metrics["grid_spacing"]
    assert two_over_L <= metrics["alpha_diverge"] <= two_over_L * spacing
    assert metrics["alpha_converge"] < two_over_L
    np.testing.assert_allclose(metrics["alpha_diverge"] / metrics["alpha_converge"], spacing, 1e-5)
    # every rate is on its side of the edge
    lrs, diverged = np.asarray(metrics["learning_rates"]), np.asarray(metrics["diverged"])
    assert lrs.size == 96
    np.testing.assert_array_equal(diverged, lrs > two_over_L)
    assert metrics["ok"] and metrics["checks"][0]["name"] == "smallest diverging α (sweep)"


def test_lr_sweep_agrees_with_numpy_gradient_descent(sweep_run, diabetes64):
    """Float64 GD from the same start: the loss falls below the edge and grows above it."""
    metrics, _ = sweep_run
    X, y = diabetes64
    params = gd.models.get("R2").init(jax.random.key(0), n=X.shape[1])  # the script's seed 0
    theta0 = np.append(np.asarray(params["w"], np.float64), float(params["b"]))
    Xb = np.column_stack([X, np.ones(len(X))])

    def loss(theta):
        return float(np.mean((Xb @ theta - y) ** 2))

    def descend(alpha):
        theta = theta0.copy()
        for _ in range(metrics["steps"]):
            theta -= alpha * (2.0 / len(y)) * Xb.T @ (Xb @ theta - y)
        return loss(theta)

    np.testing.assert_allclose(metrics["initial_loss"], loss(theta0), rtol=1e-5)
    assert descend(metrics["alpha_converge"]) < loss(theta0)
    assert descend(metrics["alpha_diverge"]) > loss(theta0)
    # least squares, and the best rate's final loss close to it
    lstsq = np.linalg.lstsq(Xb, y, rcond=None)[0]
    np.testing.assert_allclose(metrics["lstsq_loss"], loss(lstsq), rtol=1e-6)
    best = int(np.argmin(np.abs(np.asarray(metrics["learning_rates"]) - metrics["alpha_best"])))
    np.testing.assert_allclose(metrics["final_loss"][best], descend(metrics["alpha_best"]), 1e-4)


def test_lr_sweep_is_one_program_and_writes_files(sweep_run):
    metrics, out = sweep_run
    timing = metrics["timing"]
    assert [t["runs"] for t in timing] == [1, 96]
    # retired (diverged) runs re-pack the live ones in power-of-two sizes: a program a size
    assert 0 < timing[0]["first_traces"] <= timing[1]["first_traces"]
    assert timing[1]["first_traces"] <= timing[0]["first_traces"] + 2 * math.ceil(math.log2(96))
    assert all(t["again_compiles"] == 0 for t in timing)
    _files(out, "lr_sweep", ("lr_sweep", "loss_curves", "sweep_time"))


# --------------------------------------------------------------------------- optimizers


@pytest.fixture(scope="module")
def opt_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    metrics = load_experiment("optimizers").main(["--fast", "--out", str(out)])
    return metrics, out


@pytest.fixture(scope="module")
def cancer64():
    from sklearn.datasets import load_breast_cancer

    raw = load_breast_cancer()
    cols = [i for i, f in enumerate(raw.feature_names) if str(f).startswith("mean ")]
    return _standardized(raw.data[:, cols].astype(np.float64)), raw.target.astype(np.float64)


def test_optimizers_reach_the_sklearn_optimum(opt_run, cancer64):
    from sklearn.linear_model import LogisticRegression

    metrics, out = opt_run
    X, y = cancer64
    clf = LogisticRegression(C=np.inf, tol=1e-12, max_iter=100_000).fit(X, y)
    z = X @ clf.coef_.ravel() + clf.intercept_[0]
    optimum = float(np.mean(np.logaddexp(0.0, -z) * y + np.logaddexp(0.0, z) * (1 - y)))
    np.testing.assert_allclose(metrics["reference_loss"], optimum, atol=1e-6)
    finals = {k: v["final_loss"] for k, v in metrics["best"].items()}
    assert set(finals) == {"GD", "momentum", "momentum, course notes", "Adam"}
    assert min(finals.values()) - optimum < 1e-3  # 300 steps
    assert all(f >= optimum - 1e-6 for f in finals.values())
    assert finals["momentum"] < finals["GD"]  # heavy ball beats GD on this ill-conditioned problem
    assert metrics["ok"] and metrics["checks"][0]["name"].startswith("best final loss")
    _files(out, "optimizers", ("loss_curves", "lr_tuning"))


def test_course_notes_momentum_is_a_rescaled_rate(opt_run):
    """V = βV + (1 − β)dW at α takes optax's steps at α(1 − β) = α/10: one decade on the grid."""
    metrics, _ = opt_run
    best = metrics["best"]
    ratio = best["momentum, course notes"]["learning_rate"] / best["momentum"]["learning_rate"]
    np.testing.assert_allclose(ratio, 10.0, rtol=1e-5)
    np.testing.assert_allclose(
        best["momentum, course notes"]["final_loss"], best["momentum"]["final_loss"], rtol=1e-5
    )
    ema = np.asarray(metrics["sweeps"]["momentum, course notes"], np.float64)
    trace = np.asarray(metrics["sweeps"]["momentum"], np.float64)
    stable = np.asarray(metrics["learning_rates"][:-4]) <= best["momentum"]["learning_rate"]
    np.testing.assert_allclose(ema[4:][stable], trace[:-4][stable], rtol=1e-4)


def test_winning_momentum_run_replays_with_optax(opt_run, cancer64):
    metrics, _ = opt_run
    ds = gd.data.breast_cancer(metrics["features"])
    g3 = gd.models.get("G3")
    params = g3.init(jax.random.key(0), n=len(metrics["features"]))
    opt = optax.sgd(metrics["best"]["momentum"]["learning_rate"], momentum=0.9)

    def step(carry, _):
        p, s = carry
        updates, s = opt.update(jax.grad(g3.loss)(p, (ds.X, ds.y)), s, p)
        return (optax.apply_updates(p, updates), s), None

    (final, _), _ = jax.lax.scan(step, (params, opt.init(params)), None, length=metrics["steps"])
    loss = float(g3.loss(final, (ds.X, ds.y)))
    np.testing.assert_allclose(metrics["best"]["momentum"]["final_loss"], loss, rtol=1e-5)
    assert jnp.isfinite(loss)

"""gdjax.data (loaders, synthetic generators) and gdjax.plot (PNG files)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gdjax as gd

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _assert_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, f"{path} is not a PNG"
    assert len(data) > 5_000, f"{path} is nearly empty ({len(data)} bytes)"


# --------------------------------------------------------------------------- loaders


@pytest.mark.parametrize(
    ("name", "x_shape", "y_shape"),
    [
        ("breast_cancer", (569, 30), (569,)),
        ("diabetes", (442, 10), (442,)),
        ("digits", (1797, 64), (1797, 10)),
    ],
)
def test_loaders_return_standardized_float32(name, x_shape, y_shape):
    ds = gd.data.load(name)
    assert ds.X.shape == x_shape and ds.y.shape == y_shape
    assert ds.X.dtype == jnp.float32 and ds.y.dtype == jnp.float32
    assert len(ds.feature_names) == x_shape[1] and ds.name == name
    X = np.asarray(ds.X, np.float64)
    std = X.std(0)
    varies = std > 0  # the digits' border pixels are constant: centred, not scaled
    np.testing.assert_allclose(X.mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(std[varies], 1.0, rtol=1e-5)
    assert varies.sum() >= x_shape[1] - 3


def test_loader_targets():
    from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits

    np.testing.assert_array_equal(gd.data.breast_cancer().y, load_breast_cancer().target)
    raw = load_diabetes(scaled=False).target
    y = np.asarray(gd.data.diabetes().y, np.float64)
    np.testing.assert_allclose(y, (raw - raw.mean()) / raw.std(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gd.data.diabetes(standardize_target=False).y, raw, rtol=1e-6)
    digits = gd.data.digits(one_hot=False, n_class=3)
    np.testing.assert_array_equal(digits.y, load_digits(n_class=3).target)
    np.testing.assert_array_equal(np.argmax(gd.data.digits().y, axis=1), load_digits().target)


def test_breast_cancer_picks_columns_by_name_and_index():
    by_name = gd.data.breast_cancer(["mean radius", "worst area"])
    by_index = gd.data.breast_cancer([0, 23])
    assert by_name.feature_names == ("mean radius", "worst area")
    np.testing.assert_array_equal(by_name.X, by_index.X)
    # standardised column by column: the same as standardising the raw column alone
    from sklearn.datasets import load_breast_cancer

    raw = load_breast_cancer().data[:, 23]
    np.testing.assert_allclose(by_name.X[:, 1], (raw - raw.mean()) / raw.std(), rtol=1e-5)


def test_standardize_keeps_constant_columns_finite():
    x = np.array([[1.0, 5.0], [3.0, 5.0], [5.0, 5.0]])
    z, mean, scale = gd.data.standardize(x)
    np.testing.assert_allclose(mean, [3.0, 5.0])
    np.testing.assert_allclose(scale, [np.sqrt(8 / 3), 1.0])
    np.testing.assert_allclose(z[:, 0], np.array([-2.0, 0.0, 2.0]) / np.sqrt(8 / 3))
    np.testing.assert_array_equal(z[:, 1], 0.0)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: gd.data.load("mnist"), "Unknown dataset"),
        (lambda: gd.data.breast_cancer(["no such column"]), "features"),
        (lambda: gd.data.breast_cancer([0, 0]), "features"),
        (lambda: gd.data.digits(n_class=11), "n_class"),
        (lambda: gd.data.linear_regression(jax.random.key(0), 0), "`m`"),
        (lambda: gd.data.linear_regression(jax.random.key(0), 5, 2, w=[1.0]), "`w`"),
        (lambda: gd.data.standardize(3.0), "`x`"),
    ],
)
def test_bad_arguments_raise_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_breast_cancer_features_must_be_a_list():
    with pytest.raises(TypeError, match="features"):
        gd.data.breast_cancer("mean radius")


# --------------------------------------------------------------------------- synthetic


@pytest.mark.parametrize("make", [gd.data.linear_regression, gd.data.logistic_classification])
def test_synthetic_data_is_deterministic_by_key(make):
    a, b = make(jax.random.key(7), 50, 3), make(jax.random.key(7), 50, 3)
    c = make(jax.random.key(8), 50, 3)
    np.testing.assert_array_equal(a.X, b.X)
    np.testing.assert_array_equal(a.y, b.y)
    assert a.X.shape == (50, 3) and a.y.shape == (50,) and a.X.dtype == jnp.float32
    assert not np.array_equal(a.X, c.X)


def test_linear_regression_follows_its_formula():
    key = jax.random.key(0)
    ds = gd.data.linear_regression(key, 20_000, 2, w=[2.0, -1.0], b=0.5, noise=0.0, x_mean=1.5)
    X, y = np.asarray(ds.X, np.float64), np.asarray(ds.y, np.float64)
    np.testing.assert_allclose(y, X @ [2.0, -1.0] + 0.5, rtol=1e-5, atol=1e-5)  # noise = 0
    np.testing.assert_allclose(X.mean(0), 1.5, atol=0.03)  # N(1.5, 1): 4σ/√m ≈ 0.03
    noisy = gd.data.linear_regression(key, 20_000, 2, w=[2.0, -1.0], b=0.5, noise=0.5)
    resid = np.asarray(noisy.y) - np.asarray(noisy.X) @ [2.0, -1.0] - 0.5
    assert np.std(resid) == pytest.approx(0.5, rel=0.03)


def test_logistic_classification_labels_follow_the_sigmoid():
    ds = gd.data.logistic_classification(jax.random.key(1), 20_000, 2, w=[3.0, 0.0], b=0.0)
    X, y = np.asarray(ds.X), np.asarray(ds.y)
    assert set(np.unique(y)) == {0.0, 1.0}
    # P(y = 1 | x1 > 0) = E[σ(3·x1) | x1 > 0] ≈ 0.8527 (numerical integral below)
    t = np.linspace(0, 10, 200_001)
    expected = np.trapezoid(2 / (1 + np.exp(-3 * t)) * np.exp(-(t**2) / 2) / np.sqrt(2 * np.pi), t)
    assert y[X[:, 0] > 0].mean() == pytest.approx(expected, abs=0.015)


# --------------------------------------------------------------------------- plots


def test_loss_curves_png(tmp_path):
    losses = 1.0 + np.exp(-np.arange(100) / 10.0)
    out = gd.plot.loss_curves(
        {"GD": losses, "with NaN": np.where(np.arange(100) > 50, np.nan, losses)},
        tmp_path / "sub" / "loss.png",
        title="t",
        reference=1.0,
    )
    assert out == tmp_path / "sub" / "loss.png"
    _assert_png(out)
    _assert_png(gd.plot.loss_curves({"GD": losses}, tmp_path / "lin.png", title="t", log=False))


def test_grid_evaluates_the_function_on_the_mesh():
    def f(p, scale):
        return scale * (p[0] ** 2 + 10.0 * p[1])

    xs, ys = np.linspace(-1, 1, 5), np.linspace(0, 2, 3)
    Z = gd.plot.grid(f, xs, ys, jnp.float32(2.0))
    assert Z.shape == (3, 5)
    np.testing.assert_allclose(Z, 2.0 * (xs[None, :] ** 2 + 10.0 * ys[:, None]), rtol=1e-6)


def test_landscape_png(tmp_path):
    xs, ys = np.linspace(-2, 2, 41), np.linspace(-1, 3, 31)
    Z = (xs[None, :] - 1) ** 2 + 3 * (ys[:, None] - 1) ** 2
    path = np.stack([np.linspace(-1.5, 1, 20), np.linspace(2.5, 1, 20)], axis=1)
    out = gd.plot.landscape(
        xs,
        ys,
        Z,
        tmp_path / "land.png",
        trajectories={"GD": path, "other": path[::2]},
        title="t",
        xlabel="w",
        ylabel="b",
        optimum=(1.0, 1.0),
    )
    _assert_png(out)


def test_lr_sweep_lines_panels_png(tmp_path):
    lr = np.geomspace(1e-3, 1.0, 12)
    final = np.where(lr > 0.5, np.inf, 1.0 / lr)
    _assert_png(
        gd.plot.lr_sweep(
            lr, final, tmp_path / "lr.png", title="t", edge=0.5, initial_loss=2.0, observed_edge=0.6
        )
    )
    x = np.arange(10)
    _assert_png(
        gd.plot.lines(
            x, {"a": x**2, "b": x + 1.0}, tmp_path / "lines.png", title="t", xlabel="x", ylabel="y"
        )
    )
    _assert_png(
        gd.plot.panels(
            {"left": {"a": x * 1.0}, "right": {"b": (x, x**0.5)}},
            tmp_path / "panels.png",
            title="t",
            xlabel="x",
            ylabel="y",
        )
    )

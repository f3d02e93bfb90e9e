"""Seed 002 (N1 by hand) and seed 003 (S1's typo, D1's vanishing gradients), fast mode.

The references are computed here: the article's surviving output 0.85049311458 (seed 002,
"A Closer Look Into The Math Behind Gradient Descent"), ``jax.grad`` of a loss written out
in this file, S1's printed and correct df/dx compared at x² = x and x² ≠ x by hand, and
the sigmoid bound σ' ≤ 1/4.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gdjax.models import network

from _harness import load_experiment

ARTICLE_OUTPUT = 0.85049311458  # seed 002's predicted output, the one number it kept


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return tmp_path_factory.mktemp("runs")


def _run(name: str, out) -> dict:
    metrics = load_experiment(name).main(["--fast", "--out", str(out)])
    on_disk = json.loads((out / name / "metrics.json").read_text())
    assert on_disk["experiment"] == name and on_disk["fast"] is True and on_disk["ok"]
    assert (out / name / "summary.md").stat().st_size > 0
    return metrics


def _png(path) -> None:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert len(data) > 5_000, f"{path} is nearly empty"


def _n1_loss(named: dict, x: jax.Array, t: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(½(t − a³_out)², a³_out) of the 2-2-2-1 network, from the article's formulas."""
    s = jax.nn.sigmoid
    h1 = s(named["w1"] * x[0] + named["w2"] * x[1] + named["b1_h1"])
    h2 = s(named["w3"] * x[0] + named["w4"] * x[1] + named["b1_h2"])
    g1 = s(named["w5"] * h1 + named["w6"] * h2 + named["b2_h1"])
    g2 = s(named["w7"] * h1 + named["w8"] * h2 + named["b2_h2"])
    out = s(named["w9"] * g1 + named["w10"] * g2 + named["b3_out"])
    return 0.5 * (t - out) ** 2, out


# --------------------------------------------------------------------------- seed 002


@pytest.fixture(scope="module")
def seed002(runs):
    return _run("seed002_network", runs)


def test_seed002_output_is_the_articles(seed002):
    assert seed002["output"] == pytest.approx(ARTICLE_OUTPUT, abs=1e-10)
    assert seed002["forward"]["a3_out"] == pytest.approx(ARTICLE_OUTPUT, abs=1e-10)
    first = seed002["checks"][0]
    assert first["reference"] == ARTICLE_OUTPUT and first["ok"]


def test_seed002_one_step_is_params_minus_half_jax_grad(seed002):
    before = seed002["before"]
    with jax.enable_x64(True):
        named = {k: jnp.float64(v) for k, v in before.items()}
        x, t = jnp.array([0.5, 1.0], jnp.float64), jnp.float64(1.0)
        grads = jax.grad(lambda w: _n1_loss(w, x, t)[0])(named)
        assert float(_n1_loss(named, x, t)[1]) == pytest.approx(ARTICLE_OUTPUT, abs=1e-10)
    assert set(seed002["gradients"]) == set(network.NAMES)
    for k in network.NAMES:
        g = float(grads[k])
        assert seed002["gradients"][k] == pytest.approx(g, rel=1e-10, abs=1e-15), k
        assert seed002["after"][k] == pytest.approx(before[k] - 0.5 * g, abs=1e-12), k
    # the article's chain rule, as printed for w10: (a³ − t)·a³(1 − a³)·a²_h2
    f = seed002["forward"]
    a3 = f["a3_out"]
    assert seed002["gradients"]["w10"] == pytest.approx((a3 - 1.0) * a3 * (1 - a3) * f["a2_h2"])


def test_seed002_training_approaches_the_target(seed002, runs):
    tr = seed002["training"]
    outputs = np.asarray(tr["outputs"])
    assert outputs[0] == pytest.approx(ARTICLE_OUTPUT, abs=1e-6)  # float32
    assert np.all(np.diff(outputs) > 0)
    assert 0.97 < tr["final_output"] < 1.0
    assert tr["final_output"] == pytest.approx(tr["reference_final_output"], abs=1e-4)
    losses = np.asarray(tr["losses"])
    np.testing.assert_allclose(losses, 0.5 * (1.0 - outputs) ** 2, rtol=1e-4)
    _png(runs / "seed002_network" / "n1_training.png")


# --------------------------------------------------------------------------- seed 003


@pytest.fixture(scope="module")
def seed003(runs):
    return _run("seed003_deep", runs)


def test_seed003_typo_caught_exactly_where_x_squared_differs_from_x(seed003):
    from gdjax.models import scalar

    s1 = seed003["s1"]
    xs = np.asarray(s1["points"])
    assert 0.0 in xs and 1.0 in xs and len(xs) >= 40
    differ = xs * xs != xs
    assert s1["printed_failures"] == int(differ.sum()) == len(xs) - 2
    assert s1["correct"]["ok"] and not s1["printed"]["ok"]
    # independent of the checker: at x = 0, 1 the printed formula equals the correct one,
    # elsewhere it does not (S1's printed √(x + exp(x²)) instead of √(x² + exp(x²)))
    with jax.enable_x64(True):
        x = jnp.asarray(xs)
        wrong = np.asarray(scalar.printed_derivative(x))
        right = np.asarray(jax.vmap(jax.grad(scalar.function))(x))
    np.testing.assert_allclose(wrong[~differ], right[~differ], rtol=1e-12)
    gap = np.abs(wrong - right)[differ & (xs != 0)]
    assert np.all(gap > 1e-6 * np.abs(right[differ & (xs != 0)]) + 1e-9)


def test_seed003_sigmoid_gradients_vanish_and_relu_tanh_do_not(seed003, runs):
    d1 = seed003["d1"]
    ratio = d1["ratio_first_to_last"]
    assert ratio["sigmoid"] <= 0.25**5  # five sigmoid layers between layer 1 and the output
    assert ratio["sigmoid"] < 1e-2 * min(ratio["relu"], ratio["tanh"])
    assert ratio["relu"] > 0.05 and ratio["tanh"] > 0.3
    norms = np.asarray(d1["norms_at_init"]["sigmoid_K6"])
    assert np.all(np.diff(norms) > 0)  # growing from the input side to the output
    # the key figure is the sigmoid ratio, first in the table
    first = seed003["checks"][0]
    assert first["value"] == pytest.approx(ratio["sigmoid"]) and first["ok"]
    # the sigmoid network learns only the best constant output: Σ_k var(y_k) on the digits
    from gdjax.data import digits

    y = np.asarray(digits().y, np.float64)
    assert d1["final_loss"]["sigmoid"] == pytest.approx(np.sum(y.var(0)), rel=0.01)
    assert max(d1["final_loss"]["tanh"], d1["final_loss"]["relu"]) < 0.8 * np.sum(y.var(0))
    for stem in ("s1_derivative", "d1_vanishing", "d1_training", "d1_gradient_flow"):
        _png(runs / "seed003_deep" / f"{stem}.png")


def test_side_by_side_needs_one_label_per_panel(tmp_path):
    import gdjax as gd

    data = {"a": {"x": [1.0, 2.0]}, "b": {"x": [2.0, 1.0], "y": ([0, 1], [1.0, 3.0])}}
    with pytest.raises(ValueError, match="one entry per panel"):
        gd.plot.side_by_side(data, tmp_path / "p.png", title="t", xlabel="x", ylabel=["y"])
    out = gd.plot.side_by_side(
        data, tmp_path / "p.png", title="t", xlabel=["x1", "x2"], ylabel=["y1", "y2"],
        log=[False, True], styles={"y": "--"}, sharey=False,
    )  # fmt: skip
    _png(out)

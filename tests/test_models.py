"""The document models G1–G3, R1–R4, S1, C1, C2: hand-written backprop against the truth.

For every model, at 100 random points in float64 (one compiled, vmapped program per model):
the hand-written ``backprop`` gives the same loss as ``loss``, the same gradients as
``jax.grad``, and the same adjoints as autodiff through zero probes on the named
intermediates; and a central finite difference along a random direction agrees with the
gradient. Then each model's own numbers: the worked examples, closed forms, stability.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gdjax as gd
from gdjax.models import chain, scalar
from tests.helpers import against_autodiff, assert_tree_allclose, autodiff_adjoints

IDS = ["G1", "G2", "G3", "R1", "R2", "R3", "R4", "S1", "C1", "C2"]
POINTS = 100


# --------------------------------------------------------------------------- helpers


def _f64(tree):
    return jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), tree)


def _stack_noisy(rng, tree, scale, points):
    """``points`` copies of ``tree`` with N(0, scale²) noise added to every entry."""
    return jax.tree.map(
        lambda x: np.asarray(x) + scale * rng.standard_normal((points, *np.shape(x))), tree
    )


def _sample(model_id, points, seed):
    """Random points near the model's example: params, batch, and unit directions.

    Drawn with numpy outside jit, so the compiled check holds no random-number code.
    """
    rng = np.random.default_rng(seed)
    params, batch = gd.models.get(model_id).example()
    params = _stack_noisy(rng, params, 0.5 if model_id == "S1" else 1.0, points)
    if batch is not None:
        X, y = batch
        X = _stack_noisy(rng, X, 1.0, points)
        if model_id in ("G2", "G3"):  # soft labels anywhere in [0, 1]
            y = rng.uniform(size=(points, *np.shape(y)))
        else:
            y = _stack_noisy(rng, y, 1.0, points)
        batch = (X, y)
    direction = jax.tree.map(lambda x: rng.standard_normal(x.shape), params)
    sq = sum(np.sum(d * d, axis=tuple(range(1, d.ndim))) for d in jax.tree.leaves(direction))
    direction = jax.tree.map(lambda d: d / np.sqrt(sq).reshape(-1, *(1,) * (d.ndim - 1)), direction)
    return _f64((params, batch, direction))


@functools.cache
def compiled(model_id):
    """``(params, batch) -> (backprop, loss, jax.grad of loss)``, jitted once per model."""
    m = gd.models.get(model_id)
    return jax.jit(lambda p, b: (m.backprop(p, b), m.loss(p, b), jax.grad(m.loss)(p, b)))


def _against_autodiff(model_id):
    """Everything compared at POINTS random points, as one jitted, vmapped program."""
    model = gd.models.get(model_id)
    return against_autodiff(model, *_sample(model_id, POINTS, seed=IDS.index(model_id)))


# --------------------------------------------------------------------------- every model


@pytest.mark.parametrize("model_id", IDS)
def test_backprop_matches_autodiff_and_finite_differences(model_id, x64):
    bp, loss, grads, adjoints, fd, directional = _against_autodiff(model_id)
    model = gd.models.get(model_id)
    assert set(bp.adjoints) == set(model.adjoint_names)
    assert jnp.all(jnp.isfinite(loss))
    np.testing.assert_allclose(bp.loss, loss, rtol=1e-12, atol=1e-12)
    assert_tree_allclose(bp.grads, grads, rtol=1e-10, atol=1e-11, err_msg=f"{model_id} grads")
    assert_tree_allclose(
        bp.adjoints, adjoints, rtol=1e-10, atol=1e-11, err_msg=f"{model_id} adjoints"
    )
    scale = jnp.abs(directional) + jnp.abs(loss) + 1.0
    np.testing.assert_array_less(jnp.abs(fd - directional) / scale, 1e-6)


@pytest.mark.parametrize("model_id", IDS)
def test_example_is_float32_and_consistent(model_id):
    model = gd.models.get(model_id)
    params, batch = model.example()
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves((params, batch)))
    init = model.init(jax.random.key(0))
    assert jax.tree.structure(init) == jax.tree.structure(params)
    assert all(
        a.shape == b.shape and a.dtype == b.dtype
        for a, b in zip(jax.tree.leaves(init), jax.tree.leaves(params))
    ), "init's default shapes must match example()"
    bp, loss, grads = compiled(model_id)(params, batch)
    assert bp.loss.dtype == jnp.float32
    np.testing.assert_allclose(bp.loss, loss, rtol=1e-6)
    assert_tree_allclose(bp.grads, grads, rtol=1e-5, atol=1e-6)
    assert model.id == model_id and model.doc == f"docs/models/{model_id}.md"


ADJOINT_SHAPES = {  # at the example: m = 4 examples, n = 2 features, k = 3 hidden units
    "G1": {"u": (), "v": ()},
    "G2": {"z": ()},
    "G3": {"z": (4,)},
    "R1": {"yhat": (4,)},
    "R2": {"yhat": (4,)},
    "R3": {"Z": (4, 3), "yhat": (4,)},
    "R4": {"Z": (4, 3), "A": (4, 3), "yhat": (4,)},
    "S1": dict.fromkeys("abcde", ()),
    "C1": {"f": (4,), "g": (4,), "h": (4,)},
    "C2": {"f": (), "f_k": (3,)},
}


@pytest.mark.parametrize("model_id", IDS)
def test_adjoints_have_the_shape_of_their_intermediate(model_id):
    bp, _, _ = compiled(model_id)(*gd.models.get(model_id).example())
    assert {k: a.shape for k, a in bp.adjoints.items()} == ADJOINT_SHAPES[model_id]


# --------------------------------------------------------------------------- worked examples


def test_g1_course_example():
    # Ng, "Derivatives with a Computation Graph": a = 5, b = 3, c = 2 gives J = 33.
    m = gd.models.get("G1")
    bp = m.backprop(*m.example())
    assert float(bp.loss) == 33.0
    assert {k: float(g) for k, g in bp.grads.items()} == {"a": 3.0, "b": 6.0, "c": 9.0}
    assert {k: float(g) for k, g in bp.adjoints.items()} == {"u": 3.0, "v": 3.0}


def test_g2_example_by_hand():
    # z = 1·1 − 0.5·2 + 0 = 0, a = 1/2, y = 1: L = log 2, dz = a − y = −1/2.
    m = gd.models.get("G2")
    bp = m.backprop(*m.example())
    np.testing.assert_allclose(bp.loss, math.log(2), rtol=1e-7)
    assert {k: float(g) for k, g in bp.grads.items()} == {"w1": -0.5, "w2": -1.0, "b": -0.5}
    assert float(bp.adjoints["z"]) == -0.5


def test_g3_example_by_hand():
    # w = 0, b = 0: every a = 1/2, J = log 2, dz = (1/2 − y)/4.
    m = gd.models.get("G3")
    params, (X, y) = m.example()
    bp = m.backprop(params, (X, y))
    np.testing.assert_allclose(bp.loss, math.log(2), rtol=1e-7)
    np.testing.assert_array_equal(bp.adjoints["z"], (0.5 - np.asarray(y)) / 4)
    np.testing.assert_array_equal(bp.grads["w"], [-0.5, 0.0625])
    assert float(bp.grads["b"]) == 0.0


def test_r1_r2_examples_by_hand():
    # R1: y = 2x + 1 at x = 1..4, w = b = 0: L = (9 + 25 + 49 + 81)/4 = 41,
    # dw = (2/4)·Σ(0 − y)·x = −(3 + 10 + 21 + 36)/2 = −35, db = −(3 + 5 + 7 + 9)/2 = −12.
    bp = gd.models.get("R1").backprop(*gd.models.get("R1").example())
    assert (float(bp.loss), float(bp.grads["w"]), float(bp.grads["b"])) == (41.0, -35.0, -12.0)
    # R2: residual ŷ − y = (−1, 2, 1, −4): L = 22/4, dŷ = r/2, dw = Xᵀdŷ = (−4, 3.5), db = −1.
    bp = gd.models.get("R2").backprop(*gd.models.get("R2").example())
    assert float(bp.loss) == 5.5 and float(bp.grads["b"]) == -1.0
    np.testing.assert_array_equal(bp.grads["w"], [-4.0, 3.5])
    np.testing.assert_array_equal(bp.adjoints["yhat"], [-0.5, 1.0, 0.5, -2.0])


def test_c2_reproduces_the_answers_numbers():
    # Seed 004: −0.2, 0.4 and 0.6 arrive at f, 0.8 in all; ∂/∂a = b·0.8, ∂/∂b = a·0.8.
    m = gd.models.get("C2")
    params, batch = m.example()
    bp = m.backprop(params, batch)
    np.testing.assert_allclose(bp.adjoints["f_k"], [-0.2, 0.4, 0.6], rtol=1e-7)
    np.testing.assert_allclose(bp.adjoints["f"], 0.8, rtol=1e-6)
    np.testing.assert_allclose(bp.grads["a"], float(params["b"]) * 0.8, rtol=1e-6)
    np.testing.assert_allclose(bp.grads["b"], float(params["a"]) * 0.8, rtol=1e-6)
    adjoints = autodiff_adjoints(m, params, batch, {"f": (), "f_k": (3,)})
    np.testing.assert_allclose(adjoints["f"], 0.8, rtol=1e-6)
    np.testing.assert_allclose(adjoints["f_k"], [-0.2, 0.4, 0.6], rtol=1e-7)


# --------------------------------------------------------------------------- S1


def test_s1_value_and_derivative_by_hand(x64):
    # x = 1/2: a = 1/4, b = e^(1/4) = 1.2840254166877414, c = 1.5340254166877414,
    # d = √c = 1.238557797071958, e = cos c = 0.03676262434378255, f = 1.2753204214157405;
    # sin c = 0.9993240262554273, df/dx = 2·½·(1 + b)·(1/(2d) − sin c) = −1.360431078598279.
    m = gd.models.get("S1")
    bp = m.backprop({"x": jnp.float64(0.5)})
    np.testing.assert_allclose(bp.loss, 1.2753204214157405, rtol=1e-14)
    np.testing.assert_allclose(bp.grads["x"], -1.360431078598279, rtol=1e-14)
    np.testing.assert_allclose(scalar.derivative(jnp.float64(0.5)), -1.360431078598279, rtol=1e-14)
    np.testing.assert_allclose(bp.adjoints["c"], 0.5 / 1.238557797071958 - 0.9993240262554273)


def test_s1_closed_form_matches_autodiff_and_the_printed_typo_does_not(x64):
    xs = jnp.linspace(-2.0, 2.0, 41, dtype=jnp.float64)
    autodiff = jax.vmap(jax.grad(scalar.function))(xs)
    np.testing.assert_allclose(scalar.derivative(xs), autodiff, rtol=1e-12, atol=1e-12)
    printed = scalar.printed_derivative(xs)
    # Where x² = x (x = 0, 1) the typo is invisible; elsewhere it is wrong.
    same = np.isclose(printed, autodiff, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(np.asarray(xs)[same], [0.0, 1.0], atol=1e-15)
    np.testing.assert_allclose(scalar.printed_derivative(jnp.float64(0.5)), -1.4274730033867988)
    assert gd.models.get("S1").extras["printed_derivative"] is scalar.printed_derivative


# --------------------------------------------------------------------------- closed forms


def _random_regression(seed, m=7, n=3):
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.standard_normal((m, n))), jnp.asarray(rng.standard_normal(m))


def _random_two_layer(seed, n=3, k=4):
    rng = np.random.default_rng(seed)
    shapes = {"W1": (k, n), "b1": (k,), "w2": (k,), "b2": ()}
    return {name: jnp.asarray(rng.standard_normal(shape)) for name, shape in shapes.items()}


def test_r1_gradient_is_the_closed_form(x64):
    x, y = _random_regression(1, n=1)
    x = x[:, 0]
    params = {"w": jnp.float64(0.7), "b": jnp.float64(-0.3)}
    bp, _, _ = compiled("R1")(params, (x, y))
    r = np.asarray(0.7 * x - 0.3 - y)
    np.testing.assert_allclose(bp.loss, np.mean(r**2), rtol=1e-13)
    np.testing.assert_allclose(bp.grads["w"], 2 / 7 * np.sum(r * np.asarray(x)), rtol=1e-13)
    np.testing.assert_allclose(bp.grads["b"], 2 / 7 * np.sum(r), rtol=1e-13)


def test_r2_gradient_is_the_closed_form_and_vanishes_at_least_squares(x64):
    X, y = _random_regression(2)
    params = {"w": jnp.array([0.5, -1.0, 2.0]), "b": jnp.float64(0.25)}
    bp, _, _ = compiled("R2")(params, (X, y))
    Xn, yn = np.asarray(X), np.asarray(y)
    dw = 2 / 7 * Xn.T @ (Xn @ [0.5, -1.0, 2.0] + 0.25 - yn)
    np.testing.assert_allclose(bp.grads["w"], dw, rtol=1e-12)
    # At the least-squares solution (numpy's lstsq with a column of ones) the gradient is 0.
    coef = np.linalg.lstsq(np.c_[Xn, np.ones(7)], yn, rcond=None)[0]
    opt = {"w": jnp.asarray(coef[:3]), "b": jnp.asarray(coef[3])}
    at_opt, _, _ = compiled("R2")(opt, (X, y))
    assert_tree_allclose(at_opt.grads, {"w": np.zeros(3), "b": 0.0}, atol=1e-12)


def test_r3_is_r2_with_collapsed_weights(x64):
    # Two linear layers are one: w = W1ᵀw2, b = b1·w2 + b2, so dW1 = w2 ⊗ dw_R2, db1 = w2·db_R2.
    X, y = _random_regression(4)
    params = _random_two_layer(5)
    W1, b1, w2, b2 = (params[k] for k in ("W1", "b1", "w2", "b2"))
    flat = {"w": W1.T @ w2, "b": b1 @ w2 + b2}
    r3, _, _ = compiled("R3")(params, (X, y))
    r2, _, _ = compiled("R2")(flat, (X, y))
    np.testing.assert_allclose(r3.loss, r2.loss, rtol=1e-13)
    np.testing.assert_allclose(r3.grads["W1"], np.outer(w2, r2.grads["w"]), rtol=1e-12)
    np.testing.assert_allclose(r3.grads["b1"], w2 * r2.grads["b"], rtol=1e-12)
    np.testing.assert_allclose(r3.grads["b2"], r2.grads["b"], rtol=1e-12)


def test_r4_hidden_adjoint_through_the_sigmoid(x64):
    X, y = _random_regression(6)
    params = _random_two_layer(7)
    bp, _, _ = compiled("R4")(params, (X, y))
    A = 1 / (1 + np.exp(-(np.asarray(X) @ np.asarray(params["W1"]).T + np.asarray(params["b1"]))))
    np.testing.assert_allclose(bp.adjoints["Z"], bp.adjoints["A"] * A * (1 - A), rtol=1e-13)
    np.testing.assert_allclose(bp.grads["w2"], A.T @ np.asarray(bp.adjoints["yhat"]), rtol=1e-12)


def test_g3_is_the_mean_of_g2(x64):
    X, _ = _random_regression(8, m=5, n=2)
    y = jnp.array([1.0, 0.0, 1.0, 1.0, 0.0], jnp.float64)
    g3 = {"w": jnp.array([0.3, -1.2]), "b": jnp.float64(0.4)}
    g2 = {"w1": g3["w"][0], "w2": g3["w"][1], "b": g3["b"]}
    per = jax.jit(jax.vmap(gd.models.get("G2").backprop, in_axes=(None, 0)))(g2, (X, y))
    bp, _, _ = compiled("G3")(g3, (X, y))
    np.testing.assert_allclose(bp.loss, np.mean(per.loss), rtol=1e-13)
    np.testing.assert_allclose(bp.grads["b"], np.mean(per.grads["b"]), rtol=1e-12)
    dw = [np.mean(per.grads["w1"]), np.mean(per.grads["w2"])]
    np.testing.assert_allclose(bp.grads["w"], dw, rtol=1e-12)
    # and the document's cross-entropy, written from a = σ(z), at these moderate z
    a = 1 / (1 + np.exp(-(np.asarray(X) @ np.asarray(g3["w"]) + 0.4)))
    yn = np.asarray(y)
    np.testing.assert_allclose(
        bp.loss, -np.mean(yn * np.log(a) + (1 - yn) * np.log(1 - a)), rtol=1e-13
    )
    np.testing.assert_allclose(bp.adjoints["z"], (a - yn) / 5, rtol=1e-12)


def test_c1_default_chain_closed_form(x64):
    # ŷ = c·(t² + b·t), t = tanh(a·x): ∂Loss/∂c = Σ 2(ŷ − y)(t² + b·t), and so on.
    a, b, c = 0.8, -0.4, 1.5
    x = np.linspace(-2, 2, 9)
    y = np.cos(x)
    params = {k: jnp.float64(v) for k, v in zip("abc", (a, b, c))}
    bp = gd.models.get("C1").backprop(params, (jnp.asarray(x), jnp.asarray(y)))
    t = np.tanh(a * x)
    r = c * (t * t + b * t) - y
    np.testing.assert_allclose(bp.loss, np.sum(r**2), rtol=1e-13)
    np.testing.assert_allclose(bp.grads["c"], np.sum(2 * r * (t * t + b * t)), rtol=1e-12)
    np.testing.assert_allclose(bp.grads["b"], np.sum(2 * r * c * t), rtol=1e-12)
    da = np.sum(2 * r * c * (2 * t + b) * x * (1 - t * t))
    np.testing.assert_allclose(bp.grads["a"], da, rtol=1e-12)


def test_make_c1_with_user_functions_and_a_wrong_partial(x64):
    # f(x, a) = exp(a·x), h(g, c) = sin(c·g): right partials pass, a wrong ∂f/∂a shows in da only.
    right = chain.make_c1(
        f=lambda x, a: jnp.exp(a * x),
        df_da=lambda x, a: x * jnp.exp(a * x),
        h=lambda g, c: jnp.sin(c * g),
        dh_dg=lambda g, c: c * jnp.cos(c * g),
        dh_dc=lambda g, c: g * jnp.cos(c * g),
    )
    wrong = chain.make_c1(
        f=right.extras["f"],
        df_da=lambda x, a: a * jnp.exp(a * x),  # the classic slip: a for x
        h=right.extras["h"],
        dh_dg=right.extras["dh_dg"],
        dh_dc=right.extras["dh_dc"],
    )
    params, batch = _f64(right.example())
    truth = jax.jit(jax.grad(right.loss))(params, batch)
    assert_tree_allclose(jax.jit(right.backprop)(params, batch).grads, truth, rtol=1e-12)
    bad = jax.jit(wrong.backprop)(params, batch).grads
    np.testing.assert_allclose(bad["b"], truth["b"], rtol=1e-12)
    np.testing.assert_allclose(bad["c"], truth["c"], rtol=1e-12)
    assert not np.isclose(bad["a"], truth["a"], rtol=1e-3)


# --------------------------------------------------------------------------- stability


@pytest.mark.parametrize("z", [1e4, -1e4])
@pytest.mark.parametrize("y", [0.0, 1.0])
def test_cross_entropy_is_finite_at_huge_logits_in_float32(z, y):
    # z = w1·1 + w2·0 + b = ±1e4. The loss is |z| when the label is wrong, 0 when right.
    want_loss = abs(z) if (z > 0) != (y == 1.0) else 0.0
    g2 = gd.models.get("G2")
    params = {"w1": jnp.float32(z), "w2": jnp.float32(0.0), "b": jnp.float32(0.0)}
    batch = (jnp.array([1.0, 0.0], jnp.float32), jnp.float32(y))
    g3 = gd.models.get("G3")
    p3 = {"w": jnp.array([z, 0.0], jnp.float32), "b": jnp.float32(0.0)}
    b3 = (batch[0][None, :], batch[1][None])
    for model, p, b in ((g2, params, batch), (g3, p3, b3)):
        bp, loss, grads = compiled(model.id)(p, b)
        assert float(bp.loss) == want_loss
        assert float(loss) == want_loss
        assert all(jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves((bp, grads)))
        assert_tree_allclose(bp.grads, grads)
        # dz = a − y is exactly 0 or ±1 there (over m = 1 for G3)
        assert float(jnp.sum(bp.adjoints["z"])) == float(z > 0) - y


# --------------------------------------------------------------------------- bad input


def test_wrong_feature_count_is_named():
    m = gd.models.get("R2")
    params, (X, y) = m.example()
    with pytest.raises(ValueError, match=r"n = 2"):
        m.loss(params, (jnp.ones((4, 3), jnp.float32), y))
    with pytest.raises(ValueError, match=r"m = 4"):
        m.backprop(params, (X, y[:3]))
    with pytest.raises(ValueError, match="x"):
        m.predict(params, jnp.ones((5, 3), jnp.float32))


def test_wrong_params_keys_and_types():
    m = gd.models.get("R3")
    params, batch = m.example()
    with pytest.raises(ValueError, match=r"Missing: \['b2'\]"):
        m.loss({k: v for k, v in params.items() if k != "b2"}, batch)
    with pytest.raises(ValueError, match=r"unexpected: \['W2'\]"):
        m.backprop({**params, "W2": params["W1"]}, batch)
    with pytest.raises(TypeError, match="must be a dict"):
        m.loss(list(params.values()), batch)
    with pytest.raises(ValueError, match="rank 1"):
        gd.models.get("G3").loss({"w": jnp.ones((2, 1)), "b": jnp.float32(0)}, batch)


def test_nan_in_batch_and_bad_batch_shape():
    m = gd.models.get("G3")
    params, (X, y) = m.example()
    with pytest.raises(ValueError, match="non-finite"):
        m.loss(params, (X.at[1, 0].set(jnp.nan), y))
    with pytest.raises(ValueError, match="non-finite"):
        gd.models.get("R1").backprop(*_nan_r1())
    with pytest.raises(TypeError, match=r"pair \(X, y\)"):
        m.loss(params, X)
    with pytest.raises(ValueError, match=r"outside \[0, 1\]"):
        m.loss(params, (X, 2 * y - 1))


def _nan_r1():
    params, (x, y) = gd.models.get("R1").example()
    return params, (x, y.at[0].set(jnp.inf))


def test_make_c1_rejects_non_functions():
    with pytest.raises(TypeError, match="`dh_dg` must be a function"):
        chain.make_c1(dh_dg=2.0)


def test_models_run_under_jit_and_predict():
    m = gd.models.get("R4")
    params, (X, y) = m.example()
    np.testing.assert_allclose(jax.jit(m.loss)(params, (X, y)), m.loss(params, (X, y)), rtol=1e-6)
    pred = m.predict(params, X)
    np.testing.assert_allclose(jnp.mean((pred - y) ** 2), m.loss(params, (X, y)), rtol=1e-6)
    g3 = gd.models.get("G3")
    p3, (X3, _) = g3.example()
    np.testing.assert_array_equal(g3.predict(p3, X3), np.full(4, 0.5))

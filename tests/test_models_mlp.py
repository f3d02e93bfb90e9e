"""D1 (any fully connected network, ``models.mlp``) and N1 (seed 002's 2-2-2-1 network).

For several architectures (each activation, K = 1…4 layers, both losses, the registry's D1
and N1), at 100 random points in float64, one compiled vmapped program per architecture:
the hand-written ``backprop`` gives the same loss as ``loss``, the same gradients as
``jax.grad``, the same adjoints as autodiff through zero probes on ``z1…zK, a1…aK``, and a
central finite difference along a random direction agrees with its gradient.

N1's numbers: the forward pass reproduces the output 0.85049311458 printed in seed 002
("A Closer Look Into The Math Behind Gradient Descent"), the gradients match the article's
per-weight chain rule evaluated by hand in numpy, and one step at α = 0.5 is one manual
update.
"""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gdjax as gd
from gdjax.models import mlp, network
from tests.helpers import against_autodiff, assert_tree_allclose

POINTS = 100
M = 5  # examples per batch at the random points

ARCHITECTURES = {
    "K1-sigmoid-sse": ((3, 2), "sigmoid", "sse"),
    "K2-tanh-half_sse": ((2, 3, 1), "tanh", "half_sse"),
    "K3-relu-sse": ((3, 4, 3, 2), "relu", "sse"),
    "K4-identity-half_sse": ((2, 3, 3, 2, 2), "identity", "half_sse"),
}


def _model(arch):
    if arch in ("D1", "N1"):
        return gd.models.get(arch)
    sizes, activation, loss = ARCHITECTURES[arch]
    return mlp.make(sizes, activation=activation, loss=loss)


def _sample(model, points, seed):
    """``points`` random (params, batch, unit direction) triples, float64, drawn with numpy."""
    rng = np.random.default_rng(seed)
    sizes = model.extras["sizes"]
    params = [
        {
            "W": rng.standard_normal((points, n_out, n_in)) * 1.5 / math.sqrt(n_in),
            "b": rng.standard_normal((points, n_out)) * 0.5,
        }
        for n_in, n_out in itertools.pairwise(sizes)
    ]
    batch = (rng.standard_normal((points, M, sizes[0])), rng.uniform(size=(points, M, sizes[-1])))
    direction = jax.tree.map(lambda x: rng.standard_normal(x.shape), params)
    sq = sum(np.sum(d * d, axis=tuple(range(1, d.ndim))) for d in jax.tree.leaves(direction))
    norm = np.sqrt(sq)
    direction = jax.tree.map(lambda d: d / norm.reshape(-1, *(1,) * (d.ndim - 1)), direction)
    return jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), (params, batch, direction))


def _against_autodiff(model, seed):
    return against_autodiff(model, *_sample(model, POINTS, seed))


# --------------------------------------------------------------------------- every network

ARCHS = [*ARCHITECTURES, "D1", "N1"]


@pytest.mark.parametrize("arch", ARCHS)
def test_backprop_matches_autodiff_and_finite_differences(arch, x64):
    model = _model(arch)
    bp, loss, grads, adjoints, fd, directional = _against_autodiff(model, ARCHS.index(arch))
    K = len(model.extras["sizes"]) - 1
    assert set(bp.adjoints) == {f"{v}{i}" for i in range(1, K + 1) for v in "za"}
    assert set(bp.adjoints) == set(model.adjoint_names)
    assert bool(jnp.all(jnp.isfinite(loss))) and bool(jnp.all(loss > 0))
    np.testing.assert_allclose(bp.loss, loss, rtol=1e-12)
    assert_tree_allclose(bp.grads, grads, rtol=1e-10, atol=1e-11, err_msg=f"{arch} grads")
    assert_tree_allclose(bp.adjoints, adjoints, rtol=1e-10, atol=1e-11, err_msg=f"{arch} adj")
    scale = jnp.abs(directional) + jnp.abs(loss) + 1.0
    np.testing.assert_array_less(jnp.abs(fd - directional) / scale, 1e-6)


@pytest.mark.parametrize("arch", ARCHS)
def test_example_is_float32_and_consistent(arch):
    model = _model(arch)
    params, (X, Y) = model.example()
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves((params, X, Y)))
    init = jax.eval_shape(model.init, jax.random.key(0))
    assert jax.tree.structure(init) == jax.tree.structure(params)
    assert [(a.shape, a.dtype) for a in jax.tree.leaves(init)] == [
        (a.shape, a.dtype) for a in jax.tree.leaves(params)
    ]

    @jax.jit
    def everything(params, batch):
        return model.backprop(params, batch), jax.value_and_grad(model.loss)(params, batch)

    bp, (loss, grads) = everything(params, (X, Y))
    np.testing.assert_allclose(bp.loss, loss, rtol=1e-6)
    assert_tree_allclose(bp.grads, grads, rtol=1e-5, atol=1e-6)
    sizes = model.extras["sizes"]
    for i, n in enumerate(sizes[1:], start=1):
        assert bp.adjoints[f"z{i}"].shape == bp.adjoints[f"a{i}"].shape == (X.shape[0], n)
    out = jax.eval_shape(model.predict, params, X)
    assert out.shape == (X.shape[0], sizes[-1]) and out.dtype == jnp.float32
    assert model.id == ("N1" if arch == "N1" else "D1")
    assert model.doc == f"docs/models/{model.id}.md"


def test_d1_uses_every_activation_and_the_text_loss():
    extras = gd.models.get("D1").extras
    assert sorted(extras["activations"]) == sorted(mlp.ACTIVATIONS)
    assert extras["loss"] == "sse"


def test_losses_and_predict_by_hand():
    # One identity layer: f = X·Wᵀ + b, so sse = Σ(Y − f)² and half_sse is half of it.
    X = jnp.asarray([[1.0, 2.0], [3.0, -1.0]])
    Y = jnp.asarray([[1.0], [0.0]])
    params = [{"W": jnp.asarray([[0.5, -1.0]]), "b": jnp.asarray([2.0])}]
    f = np.array([[0.5 - 2.0 + 2.0], [1.5 + 1.0 + 2.0]])  # [[0.5], [4.5]]
    sse = float(np.sum((np.asarray(Y) - f) ** 2))  # 0.25 + 20.25
    for loss, want, dloss in (("sse", sse, 2 * (f - Y)), ("half_sse", sse / 2, f - Y)):
        model = mlp.make((2, 1), "identity", loss)
        np.testing.assert_array_equal(model.predict(params, X), f)
        bp = model.backprop(params, (X, Y))
        assert float(bp.loss) == want == float(model.loss(params, (X, Y)))
        np.testing.assert_array_equal(bp.adjoints["a1"], dloss)
        np.testing.assert_array_equal(bp.grads[0]["W"], np.asarray(dloss).T @ np.asarray(X))


def test_layer_grad_norms():
    model = gd.models.get("D1")
    grads = jax.jit(model.backprop)(*model.example()).grads
    want = [math.sqrt(float(jnp.sum(g["W"] ** 2) + jnp.sum(g["b"] ** 2))) for g in grads]
    np.testing.assert_allclose(mlp.layer_grad_norms(grads), want, rtol=1e-6)
    want_w = [float(jnp.linalg.norm(g["W"])) for g in grads]
    np.testing.assert_allclose(mlp.layer_grad_norms(grads, include_bias=False), want_w, rtol=1e-6)
    with pytest.raises(TypeError, match="grads"):
        mlp.layer_grad_norms({"W": jnp.zeros(2)})


def test_init_is_scaled_per_activation():
    # Var(W) = 1/n_in (LeCun) for sigmoid/tanh/identity, 2/n_in (He) for ReLU; b = 0.
    for activation, gain in (("tanh", 1.0), ("relu", 2.0)):
        params = mlp.make((400, 300, 2), activation).init(jax.random.key(3))
        np.testing.assert_allclose(jnp.std(params[0]["W"]), math.sqrt(gain / 400), rtol=0.03)
        assert not jnp.any(params[0]["b"])


def test_jit_and_vmap_run_the_checks_on_tracers():
    model = gd.models.get("D1")
    params, batch = model.example()
    np.testing.assert_allclose(jax.jit(model.loss)(params, batch), model.loss(params, batch))


# --------------------------------------------------------------------------- N1's numbers


def _n1_by_hand(named, x, t):
    """Seed 002's forward pass and per-weight chain rule, node by node in float64 numpy."""
    s = lambda z: 1.0 / (1.0 + math.exp(-z))  # noqa: E731
    w = {k: float(v) for k, v in named.items()}
    a1_h1 = s(w["w1"] * x[0] + w["w2"] * x[1] + w["b1_h1"])
    a1_h2 = s(w["w3"] * x[0] + w["w4"] * x[1] + w["b1_h2"])
    a2_h1 = s(w["w5"] * a1_h1 + w["w6"] * a1_h2 + w["b2_h1"])
    a2_h2 = s(w["w7"] * a1_h1 + w["w8"] * a1_h2 + w["b2_h2"])
    out = s(w["w9"] * a2_h1 + w["w10"] * a2_h2 + w["b3_out"])
    d3 = (out - t) * out * (1 - out)  # ∂L/∂a³_out · ∂a³_out/∂z³_out
    d2_h1 = d3 * w["w9"] * a2_h1 * (1 - a2_h1)
    d2_h2 = d3 * w["w10"] * a2_h2 * (1 - a2_h2)
    d1_h1 = (d2_h1 * w["w5"] + d2_h2 * w["w7"]) * a1_h1 * (1 - a1_h1)
    d1_h2 = (d2_h1 * w["w6"] + d2_h2 * w["w8"]) * a1_h2 * (1 - a1_h2)
    grads = {
        "w1": d1_h1 * x[0], "w2": d1_h1 * x[1], "w3": d1_h2 * x[0], "w4": d1_h2 * x[1],
        "w5": d2_h1 * a1_h1, "w6": d2_h1 * a1_h2, "w7": d2_h2 * a1_h1, "w8": d2_h2 * a1_h2,
        "w9": d3 * a2_h1, "w10": d3 * a2_h2,
        "b1_h1": d1_h1, "b1_h2": d1_h2, "b2_h1": d2_h1, "b2_h2": d2_h2, "b3_out": d3,
    }  # fmt: skip
    return out, 0.5 * (t - out) ** 2, grads


def test_n1_reproduces_the_articles_output(x64):
    # Seed 002: "The final predicted output of the network is 0.85049311458."
    params, (X, _) = network.example(jnp.float64)
    out = gd.models.get("N1").predict(params, X)
    assert out.shape == (1, 1)
    np.testing.assert_allclose(float(out[0, 0]), 0.85049311458, rtol=0, atol=5e-12)
    by_hand, _, _ = _n1_by_hand(network.to_named(params), [0.5, 1.0], 1.0)
    np.testing.assert_allclose(by_hand, 0.85049311458, rtol=0, atol=5e-12)


def test_n1_float32_example_output():
    params, (X, _) = gd.models.get("N1").example()
    np.testing.assert_allclose(gd.models.get("N1").predict(params, X), [[0.85049311458]], rtol=1e-6)


def test_n1_gradients_are_the_articles_chain_rule(x64):
    params, (X, Y) = network.example(jnp.float64)
    _, loss, want = _n1_by_hand(network.to_named(params), np.asarray(X[0]), float(Y[0, 0]))
    got = network.gradients(params, (X, Y))
    assert list(got) == list(network.NAMES)
    np.testing.assert_allclose([got[k] for k in want], list(want.values()), rtol=1e-12)
    bp = gd.models.get("N1").backprop(params, (X, Y))
    np.testing.assert_allclose(bp.loss, loss, rtol=1e-12)
    nodes = network.named_adjoints(bp.adjoints)
    # δ³_out = ∂L/∂z³_out is the bias gradient; ∂L/∂a³_out = a³_out − t.
    np.testing.assert_allclose(nodes["z3_out"], [want["b3_out"]], rtol=1e-12)
    np.testing.assert_allclose(nodes["a3_out"], [0.85049311458 - 1.0], rtol=1e-10)
    np.testing.assert_allclose(nodes["z2_h2"], [want["b2_h2"]], rtol=1e-12)


def test_n1_one_step_is_one_manual_update(x64):
    params, batch = network.example(jnp.float64)
    result = jax.jit(network.step)(params, batch)  # α = 0.5, the article's learning rate
    grads = network.to_named(jax.jit(jax.grad(gd.models.get("N1").loss))(params, batch))
    before = network.to_named(params)
    manual = {k: before[k] - 0.5 * grads[k] for k in network.NAMES}
    assert_tree_allclose(result.after, manual, rtol=1e-14)
    assert_tree_allclose(result.gradients, grads, rtol=1e-12)
    assert_tree_allclose(network.to_named(result.params), manual, rtol=1e-14)
    assert float(gd.models.get("N1").loss(result.params, batch)) < float(result.loss)
    # The target 1 is above the output, so every weight and bias moves up.
    assert all(float(result.after[k]) > float(before[k]) for k in network.NAMES)


def test_n1_mapping_round_trips_and_places_each_weight():
    params = gd.models.get("N1").init(jax.random.key(7))
    named = network.to_named(params)
    assert list(named) == [*(f"w{i}" for i in range(1, 11)), *network.BIASES]
    assert_tree_allclose(network.from_named(named), params, rtol=0)
    assert_tree_allclose(network.to_named(network.from_named(named)), named, rtol=0)
    # w1…w10 in row-major order of W¹, W², W³; W[to, from].
    flat = jnp.concatenate([p["W"].ravel() for p in params])
    np.testing.assert_array_equal([named[f"w{i}"] for i in range(1, 11)], flat)
    assert float(named["w6"]) == float(params[1]["W"][0, 1])  # a¹_h2 -> h1 of layer 2
    assert float(named["w7"]) == float(params[1]["W"][1, 0])  # a¹_h1 -> h2 of layer 2
    assert float(named["w10"]) == float(params[2]["W"][0, 1])  # a²_h2 -> out


# --------------------------------------------------------------------------- bad input


def test_make_rejects_bad_arguments():
    with pytest.raises(ValueError, match="sizes"):
        mlp.make((3,))
    with pytest.raises(ValueError, match="positive integers"):
        mlp.make((3, 0, 1))
    with pytest.raises(TypeError, match="sizes"):
        mlp.make("3-2")
    with pytest.raises(ValueError, match=r"'swish'.*sigmoid, tanh, relu, identity"):
        mlp.make((3, 2), activation="swish")
    with pytest.raises(ValueError, match=r"1 name.*2 layer"):
        mlp.make((3, 2, 1), activation=["relu"])
    with pytest.raises(ValueError, match="loss"):
        mlp.make((3, 2), loss="mse")


def test_loss_rejects_bad_params_and_batches():
    model = gd.models.get("D1")
    params, (X, Y) = model.example()
    with pytest.raises(ValueError, match=r"2 layer.*needs 4"):
        model.loss(params[:2], (X, Y))
    with pytest.raises(TypeError, match="list of 4 layer dicts"):
        model.loss(params[0], (X, Y))
    bad = [{"W": params[0]["W"][:, :2], "b": params[0]["b"]}, *params[1:]]
    with pytest.raises(ValueError, match=r"params\[0\]\['W'\].*Layer 1 maps 3 units to 4"):
        model.loss(bad, (X, Y))
    with pytest.raises(ValueError, match="keys"):
        model.loss([{"W": params[0]["W"]}, *params[1:]], (X, Y))
    with pytest.raises(ValueError, match=r"batch X.*3 input feature"):
        model.loss(params, (X[:, :2], Y))
    with pytest.raises(ValueError, match=r"y\[:, None\]"):
        model.loss(params, (X, Y[:, 0]))
    with pytest.raises(ValueError, match=r"m = 3.*m = 4"):
        model.loss(params, (X, Y[:3]))
    with pytest.raises(ValueError, match="non-finite"):
        model.backprop(params, (X.at[1, 2].set(jnp.nan), Y))
    with pytest.raises(TypeError, match="pair"):
        model.loss(params, X)
    with pytest.raises(ValueError, match="non-finite"):
        model.predict(params, X.at[0, 0].set(jnp.inf))


def test_n1_helpers_reject_bad_input():
    named = network.to_named(gd.models.get("N1").example()[0])
    with pytest.raises(ValueError, match=r"Missing: \['w10'\]"):
        network.from_named({k: v for k, v in named.items() if k != "w10"})
    with pytest.raises(ValueError, match="unexpected: \\['w11'\\]"):
        network.from_named({**named, "w11": 0.0})
    with pytest.raises(ValueError, match="scalar"):
        network.from_named({**named, "w3": jnp.zeros(2)})
    with pytest.raises(TypeError, match="named"):
        network.from_named([1.0] * 15)
    with pytest.raises(ValueError, match="needs 3"):
        network.to_named(gd.models.get("D1").example()[0])
    with pytest.raises(ValueError, match="learning_rate"):
        network.step(*gd.models.get("N1").example(), learning_rate=-0.5)

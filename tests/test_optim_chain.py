"""gd.optim.chain: a pytree of its rules' numbers, so a new learning rate or clipping
threshold inside a chain does not compile again, a chain of K settings is swept, and the
checkpoint fingerprint sees its members' values. References: optax's own
``optax.chain(optax.clip_by_global_norm(c), optax.adam(lr))``, step by step."""

from __future__ import annotations

import logging

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gdjax as gd
from gdjax.train import compiles, resume

O = gd.optim


def loss(params, batch):
    X, y = batch
    return jnp.mean((jnp.tanh(X @ params["W"]) @ params["v"] - y) ** 2)


@pytest.fixture(scope="module")
def run():
    rng = np.random.default_rng(5)  # NumPy draws: no JAX kernels to compile
    X = rng.standard_normal((32, 4)).astype(np.float32)
    y = (3.0 * np.sin(X[:, 0] + X[:, 1])).astype(np.float32)  # large residuals: clipped
    params = {"W": rng.standard_normal((4, 5)).astype(np.float32), "v": np.ones(5, np.float32)}
    return jax.tree.map(jnp.asarray, params), (jnp.asarray(X), jnp.asarray(y))


def compiled() -> int:
    return gd.train.compilations()


def gradient_stream(steps=300):
    """A fixed sequence of gradients whose global norm falls from about 13 to 0.04, so the
    clip acts on the first half of the steps and not on the second."""
    rng = np.random.default_rng(0)
    scale = np.geomspace(3.0, 0.01, steps)
    W = rng.standard_normal((steps, 4, 5)) * scale[:, None, None]
    v = rng.standard_normal((steps, 5)) * scale[:, None]
    return {"W": jnp.asarray(W, jnp.float32), "v": jnp.asarray(v, jnp.float32)}


def stream_updates(grads, traced, *static):
    """Every step's updates of each optimizer fed ``grads`` (a lax.scan each, one jit):
    ``traced`` optimizers are the jit's arguments (their numbers traced, as gd.fit passes
    them), ``static`` ones are closed over."""
    params = jax.tree.map(lambda g: jnp.zeros(g.shape[1:]), grads)

    def go(opt, grads):
        def step(s, g):
            u, s = opt.update(g, s, params)
            return s, u

        return jax.lax.scan(step, opt.init(params), grads)[1]

    def all_of(traced, grads):
        return [go(o, grads) for o in (*traced, *static)]

    with jax.numpy_dtype_promotion("standard"):  # optax's own rules need it
        return jax.jit(all_of)(traced, grads)


def assert_close(a, b, rtol):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(x, y, rtol=rtol, atol=rtol * float(jnp.max(jnp.abs(y))))


# ------------------------------------------------------------------ the same updates


def test_chain_equals_optax_chain_step_by_step():
    grads = gradient_stream()
    norms = np.sqrt(sum(np.sum(np.asarray(g) ** 2, axis=tuple(range(1, g.ndim)))
                        for g in jax.tree.leaves(grads)))  # fmt: skip
    assert int(np.sum(norms > 1.0)) == 143  # clipped, then not
    ours = O.chain(O.clip_by_global_norm(0.5), O.adam(0.05))
    theirs = optax.chain(optax.clip_by_global_norm(0.5), optax.adam(0.05))
    same = optax.chain(O.clip_by_global_norm(0.5), O.adam(0.05))  # gd rules, closed over
    nested = optax.chain(ours)  # a drop-in for optax.chain (optax's closure, closed over)
    traced, ref, gd_rules, dropped = stream_updates(grads, (ours,), theirs, same, nested)
    assert_close(traced, ref, 1e-6)  # measured: ≤ 2.8e-7 of the largest update
    assert_close(dropped, ref, 1e-6)
    # the chain adds nothing to the arithmetic: optax.chain of the same gd rules to an ulp
    # or two (with c = 1.0 closed over, XLA folds x·1.0 away and reorders; measured on
    # jax 0.10.2: 52% of elements differ, by at most 5.7e-7 relative, 1.1e-8 absolute)
    for x, y in zip(jax.tree.leaves(traced), jax.tree.leaves(gd_rules)):
        np.testing.assert_allclose(x, y, rtol=2e-6, atol=0)
    # the clip alone is optax's, bit for bit (the same order of operations)
    for scale in (0.1, 10.0):
        g = jax.tree.map(lambda x, s=scale: s * x[0], grads)
        clip = O.clip_by_global_norm(1.0)
        mine = clip.update(g, clip.init(g))[0]
        ref = optax.clip_by_global_norm(1.0).update(g, optax.EmptyState())[0]
        for x, y in zip(jax.tree.leaves(mine), jax.tree.leaves(ref)):
            np.testing.assert_array_equal(x, y)


def test_chain_passes_extra_args_to_its_members():
    assert isinstance(O.chain(O.adam(1e-3)), optax.GradientTransformationExtraArgs)
    seen = []

    def update(u, s, params=None, *, value=None, **_):
        seen.append(value)
        return u, s

    spy = optax.GradientTransformationExtraArgs(lambda p: optax.EmptyState(), update)
    params = {"w": jnp.ones(2)}
    chained = O.chain(O.gd(0.1), spy)
    updates, _ = chained.update(params, chained.init(params), params, value=jnp.float32(2.0))
    new = optax.apply_updates(params, updates)
    assert seen == [2.0]  # an ExtraArgs member gets value=, as in optax.chain
    np.testing.assert_allclose(new["w"], [0.9, 0.9])


# ------------------------------------------------------------------- no recompile


def test_new_rate_or_threshold_in_a_chain_does_not_compile(run, caplog):
    params, data = run

    first = gd.fit(loss, params, O.chain(O.clip_by_global_norm(1.0), O.adam(1e-2)), data, steps=40)
    before = compiled()
    for c, lr in [(1.0, 3e-2), (0.25, 1e-2)]:
        res = gd.fit(loss, params, O.chain(O.clip_by_global_norm(c), O.adam(lr)), data, steps=40)
        assert res.losses.shape == (40,)
    assert compiled() == before
    assert not np.array_equal(res.losses, first.losses)  # other numbers, other run
    # a static choice inside the chain is another program (what fit's compile key sees)
    nest = O.chain(O.clip_by_global_norm(1.0), O.adam(1e-2, nesterov=True))
    assert O.partition(nest)[0] != O.partition(O.chain(O.clip_by_global_norm(1.0), O.adam(1.0)))[0]
    # optax.chain of gd rules is opaque: every new object compiles, and the log says why
    with caplog.at_level(logging.INFO, logger="gdjax"):
        for lr in (1e-2, 2e-2):
            opaque = optax.chain(O.clip_by_global_norm(1.0), O.adam(lr))
            gd.fit(loss, params, opaque, data, steps=40)
    assert compiled() == before + 2
    lines = [r.getMessage() for r in caplog.records if r.name == "gdjax"]
    assert lines[0].startswith("compiling: " + compiles.OPAQUE + "; new static setting")
    assert lines[1] == "compiling: " + compiles.OPAQUE  # only the object is new
    assert "compared by identity; use gd.optim.chain" in lines[1]


# ------------------------------------------------------------------------- sweeps


def test_sweep_of_a_chain_equals_fit_setting_by_setting(run):
    params, data = run
    rates = jnp.logspace(-3, -1, 8)
    opt = O.chain(O.clip_by_global_norm(1.0), O.adam(rates))
    assert O.num_settings(opt) == opt.num_settings == 8
    assert set(O.settings(opt)) == {"adam.learning_rate"}
    res = gd.sweep(loss, params, opt, data, steps=40)
    np.testing.assert_array_equal(res.settings["adam.learning_rate"], np.asarray(rates))
    assert res.runs.losses.shape == (8, 40)
    for i in (0, 7):
        one = gd.fit(loss, params, O.setting(opt, i), data, steps=40)
        np.testing.assert_allclose(res.runs.losses[i], one.losses, rtol=1e-5)
        np.testing.assert_allclose(res.runs.params["W"][i], one.params["W"], rtol=1e-5, atol=2e-6)
    assert res.best == {"adam.learning_rate": pytest.approx(float(rates[res.best_index]))}
    assert res.best_index == int(np.argmin(res.runs.final_loss))


def test_chain_settings_broadcast_names_and_refusals():
    both = O.chain(O.clip_by_global_norm(jnp.asarray([0.5, 1.0, 2.0])), O.sgd(0.1), O.sgd(0.2))
    assert O.num_settings(both) == 3
    assert np.shape(both.members[1].hyperparams["learning_rate"]) == (3,)  # broadcast
    assert set(O.settings(both)) == {"clip_by_global_norm.max_norm"}  # the one that varies
    # every setting equal: all are listed, a repeated rule by its position in the chain
    flat = O.chain(O.clip_by_global_norm(jnp.ones(3)), O.chain(O.sgd(0.1), O.sgd(0.2)))
    assert len(flat.members) == 3  # a chain in a chain is spliced in
    assert set(O.settings(flat)) == {
        "clip_by_global_norm.max_norm", "sgd[1].learning_rate", "sgd[2].learning_rate"}  # fmt: skip
    assert float(O.setting(both, 2).members[0].hyperparams["max_norm"]) == 2.0
    with pytest.raises(ValueError, match=r"member 0 .* holds 3 settings but member 1 .* holds 2"):
        O.chain(O.clip_by_global_norm(jnp.ones(3)), O.adam(jnp.asarray([0.1, 0.2])))
    with pytest.raises(ValueError, match=r"holds 3 settings .* gd.sweep"):
        both.init({"w": jnp.ones(2)})
    with pytest.raises(ValueError, match=r"`transforms\[1\]` is a function"):
        O.chain(O.gd(0.1), O.adam)
    with pytest.raises(ValueError, match=r"`max_norm`"):
        O.clip_by_global_norm(-1.0)
    with pytest.raises(ValueError, match=r"`max_norm\[1\]`"):
        O.clip_by_global_norm(jnp.asarray([1.0, 0.0]))
    # jit and vmap see the numbers as leaves; an optax member stays static, by identity
    theirs = optax.scale(-1.0)
    static, leaves = O.partition(O.chain(O.gd(0.1), theirs))
    assert static == O.partition(O.chain(O.gd(0.5), theirs))[0]
    assert static != O.partition(O.chain(O.gd(0.1), optax.scale(-1.0)))[0]
    assert leaves[1] == () and O.combine(static, leaves).members[1] is theirs
    grads = {"w": jnp.asarray([3.0, 4.0])}  # norm 5

    def first_update(opt):
        return opt.update(grads, opt.init(grads), grads)[0]["w"]

    two = O.chain(O.clip_by_global_norm(jnp.asarray([1.0, 10.0])), O.gd(1.0))
    out = jax.vmap(first_update)(two)
    np.testing.assert_allclose(out, [[-0.6, -0.8], [-3.0, -4.0]], rtol=1e-6)  # clipped, not


# -------------------------------------------------------------------- checkpoints


def test_fingerprint_sees_the_members_and_refuses_another_rate(run, tmp_path):
    params, data = run
    desc = resume.describe_optimizer(O.chain(O.clip_by_global_norm(1.0), O.adam(0.02)))
    assert desc["rule"] == "gd.optim.chain" and len(desc["members"]) == 2
    assert desc["members"][1]["hyperparameters"]["['hyperparams']['learning_rate']"] == "0.02"
    assert desc["members"][0]["hyperparameters"]["['hyperparams']['max_norm']"] == "1.0"

    def chained(lr, c=1.0):
        return O.chain(O.clip_by_global_norm(c), O.adam(lr))

    gd.fit(loss, params, chained(0.02), data, steps=40, checkpoint_dir=tmp_path)
    cases = {  # the message names the member and the value that differ
        r"members\[1\]\.hyperparameters.*learning_rate'\]: checkpoint \"0.02\"": chained(0.03),
        r"members\[0\]\.hyperparameters.*max_norm'\]: checkpoint \"1.0\"": chained(0.02, c=0.5),
    }
    for says, other in cases.items():
        with pytest.raises(ValueError, match=r"different run \(optimizer\." + says):
            gd.fit(loss, params, other, data, steps=40, checkpoint_dir=tmp_path)
    assert gd.fit(loss, params, chained(0.02), data, steps=40, checkpoint_dir=tmp_path).steps == 40

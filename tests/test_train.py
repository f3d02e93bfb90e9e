"""gd.fit and gd.sweep against plain Python loops of the same optax steps."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gdjax as gd
from gdjax import train
from tests.helpers import assert_tree_allclose


def logistic_loss(params, batch):
    """G3's mean cross-entropy, written plainly."""
    X, y = batch
    z = X @ params["w"] + params["b"]
    return jnp.mean(gd.losses.bce_with_logits(z, y))


@pytest.fixture(scope="module")
def problem():
    kx, kw = jax.random.split(jax.random.key(0))
    X = jax.random.normal(kx, (48, 3))
    y = (X @ jnp.array([1.0, -2.0, 0.5]) + 0.1 * jax.random.normal(kw, (48,)) > 0).astype(
        jnp.float32
    )
    params = {"w": jnp.zeros(3), "b": jnp.zeros(())}
    return params, (X, y)


def python_loop(loss_fn, params, opt, batches):
    """The common pattern: a Python loop of jitted optax steps; returns params, losses."""

    @jax.jit
    def step(p, s, batch):
        loss, g = jax.value_and_grad(loss_fn)(p, batch)
        u, s = opt.update(g, s, p)
        return optax.apply_updates(p, u), s, loss

    state, losses, trajectory = opt.init(params), [], []
    for batch in batches:
        trajectory.append(params)
        params, state, loss = step(params, state, batch)
        losses.append(loss)
    return params, np.array(losses), trajectory


def epoch_batches(data, key, batch_size, steps):
    """The documented mini-batch order: perm_e = permutation(fold_in(key, e), m), sliced."""
    m = jax.tree_util.tree_leaves(data)[0].shape[0]
    n_b = m // batch_size
    for t in range(steps):
        e, pos = divmod(t, n_b)
        perm = jax.random.permutation(jax.random.fold_in(key, e), m)
        idx = perm[pos * batch_size : (pos + 1) * batch_size]
        yield jax.tree_util.tree_map(lambda x, i=idx: x[i], data)


# ----------------------------------------------------------------------------- fit


@pytest.mark.parametrize("chunk_size", [None, 7])
def test_fit_equals_python_loop(problem, chunk_size):
    params, data = problem
    opt = gd.optim.adam(0.05)
    res = gd.fit(logistic_loss, params, opt, data, steps=30, chunk_size=chunk_size)
    ref, ref_losses, _ = python_loop(logistic_loss, params, opt, [data] * 30)
    assert_tree_allclose(res.params, ref, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(res.losses, ref_losses, rtol=1e-5)
    assert res.steps == 30 and not res.diverged and res.diverged_at == -1
    np.testing.assert_allclose(res.final_loss, logistic_loss(ref, data), rtol=1e-5)
    assert res.losses.shape == (30,) and res.key is None
    assert ref_losses[-1] < 0.5 * ref_losses[0]  # it learned something


def test_record_every_and_trajectory(problem):
    params, data = problem
    opt = optax.sgd(0.5)
    res = gd.fit(logistic_loss, params, opt, data, steps=20, record_every=3, trajectory=True)
    _, ref_losses, ref_traj = python_loop(logistic_loss, params, opt, [data] * 20)
    np.testing.assert_allclose(res.losses, ref_losses[::3], rtol=1e-5)
    assert res.losses.shape == (7,)  # steps 0, 3, ..., 18
    assert res.trajectory["w"].shape == (7, 3)
    assert_tree_allclose(
        jax.tree_util.tree_map(lambda x: x[2], res.trajectory), ref_traj[6], rtol=1e-5, atol=1e-7
    )


def test_minibatch_is_the_documented_epoch_order_and_reproducible(problem):
    params, data = problem
    opt = optax.sgd(0.3)
    key = jax.random.key(7)
    # m = 48, batch 10: 4 batches an epoch (8 examples skipped), 11 steps span 3 epochs
    res = gd.fit(logistic_loss, params, opt, data, steps=11, batch_size=10, key=key)
    ref, ref_losses, _ = python_loop(
        logistic_loss, params, opt, list(epoch_batches(data, key, 10, 11))
    )
    assert_tree_allclose(res.params, ref, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(res.losses, ref_losses, rtol=1e-5)

    again = gd.fit(logistic_loss, params, opt, data, steps=11, batch_size=10, key=key)
    assert_tree_allclose(again.params, res.params, rtol=0)
    other = gd.fit(logistic_loss, params, opt, data, steps=11, batch_size=10, key=jax.random.key(8))
    assert not np.allclose(other.losses, res.losses)


def quadratic(params, batch):
    return 0.5 * 4.0 * jnp.sum(params["w"] ** 2)


def expected_divergence(w0, lr, a=4.0):
    """Float32 simulation of w <- w - lr*a*w: first step whose loss or new w is not finite."""
    w = np.float32(w0)
    with np.errstate(over="ignore", invalid="ignore"):
        for t in range(10_000):
            loss = np.float32(0.5) * np.float32(a) * w * w
            new = w - np.float32(lr) * (np.float32(a) * w)
            if not (np.isfinite(loss) and np.isfinite(new)):
                return t, w
            w = new
    raise AssertionError("did not diverge")


@pytest.mark.parametrize("chunk_size", [None, 8])
def test_divergence_stops_at_the_step_with_finite_params(chunk_size):
    step, w_last = expected_divergence(1.0, 1.0)  # factor |1 - 4| = 3 per step
    assert 30 < step < 100
    res = gd.fit(
        quadratic, {"w": jnp.ones(1)}, optax.sgd(1.0), None, steps=200, chunk_size=chunk_size
    )
    assert res.diverged and res.diverged_at == step and res.steps == step
    np.testing.assert_array_equal(res.params["w"], [w_last])
    assert np.isfinite(np.asarray(res.params["w"])).all()
    assert res.losses.shape == (200,)  # NaN-padded after the diverged step
    assert not np.isfinite(res.losses[step]) and np.isfinite(res.losses[:step]).all()
    assert np.isnan(res.losses[step + 1 :]).all()
    assert res.final_loss == res.losses[step]  # the loss at the last finite params


def test_divergence_can_raise():
    with pytest.raises(train.DivergenceError, match=r"step \d+") as info:
        gd.fit(
            quadratic, {"w": jnp.ones(1)}, optax.sgd(1.0), None, steps=200, on_divergence="raise"
        )
    assert info.value.step == expected_divergence(1.0, 1.0)[0]
    assert np.isfinite(np.asarray(info.value.result.params["w"])).all()


def test_data_free_model_and_handwritten_backprop():
    g1 = gd.models.get("G1")
    params, _ = g1.example()
    opt = gd.optim.sgd(0.1)
    auto = gd.fit(g1.loss, params, opt, None, steps=5)
    manual = gd.fit(g1.loss, params, opt, None, steps=5, value_and_grad=g1.backprop)
    ref, ref_losses, _ = python_loop(g1.loss, params, opt, [None] * 5)
    assert_tree_allclose(auto.params, ref, rtol=1e-6)
    assert_tree_allclose(manual.params, ref, rtol=1e-6)
    np.testing.assert_allclose(manual.losses, ref_losses, rtol=1e-6)
    # closed form of the first step: dJ/da = 3, dJ/db = 3c = 6, dJ/dc = 3b = 9
    one = gd.fit(g1.loss, params, opt, None, steps=1)
    np.testing.assert_allclose([one.params[k] for k in "abc"], [4.7, 2.4, 1.1], rtol=1e-6)
    assert float(one.losses[0]) == 33.0


def test_progress_bar_goes_to_stderr(problem, capsys):
    params, data = problem
    gd.fit(logistic_loss, params, optax.sgd(0.1), data, steps=12, chunk_size=4, progress=True)
    assert "12/12" in capsys.readouterr().err
    gd.fit(logistic_loss, params, optax.sgd(0.1), data, steps=12, chunk_size=4, progress=False)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"steps": 0}, ValueError, "steps"),
        ({"steps": 2.5}, TypeError, "steps"),
        ({"batch_size": 100, "key": jax.random.key(0)}, ValueError, "100.*m=48"),
        ({"batch_size": 8}, ValueError, "key"),
        ({"on_divergence": "ignore"}, ValueError, "on_divergence"),
        ({"checkpoint_every": 5}, ValueError, "checkpoint_dir"),
        ({"record_every": 0}, ValueError, "record_every"),
    ],
)
def test_bad_arguments(problem, kwargs, error, match):
    params, data = problem
    kwargs = {"steps": 10, **kwargs}
    with pytest.raises(error, match=match):
        gd.fit(logistic_loss, params, optax.sgd(0.1), data, **kwargs)


def test_bad_inputs(problem):
    params, (X, y) = problem
    with pytest.raises(ValueError, match=r"data\[1\].*47"):
        gd.fit(logistic_loss, params, optax.sgd(0.1), (X, y[:47]), steps=1)
    with pytest.raises(ValueError, match="non-finite"):
        gd.fit(logistic_loss, params, optax.sgd(0.1), (X.at[0, 0].set(jnp.nan), y), steps=1)
    with pytest.raises(ValueError, match="params"):
        gd.fit(
            logistic_loss, {**params, "b": jnp.float32(jnp.inf)}, optax.sgd(0.1), (X, y), steps=1
        )
    with pytest.raises(TypeError, match="Call it first"):
        gd.fit(logistic_loss, params, optax.sgd, (X, y), steps=1)
    with pytest.raises(TypeError, match="GradientTransformation"):
        gd.fit(logistic_loss, params, "adam", (X, y), steps=1)
    with pytest.raises(ValueError, match="scalar"):
        gd.fit(lambda p, b: p["w"] * 1.0, params, optax.sgd(0.1), (X, y), steps=1)


def test_chunk_plan():
    from gdjax.train import planner

    # a chunk holds ~CHUNK_SECONDS of records, a power of two, whatever the run's length
    assert planner.capacity(1e-3, 1) == 128  # 0.25 s / 1 ms = 250 -> 128
    assert planner.capacity(1e-9, 1) == planner.MAX_RECORDS
    assert planner.capacity(1e-3, 10) == 16
    assert planner.capacity(1e-9, 1, trajectory_bytes=2**24) == 16  # 256 MiB / 16 MiB
    # the records of the chunk from step t: at most the capacity, ending at the run's
    # end and at the next checkpoint
    assert planner.chunk_records(0, 1000, 1, 128, None) == 128
    assert planner.chunk_records(960, 1000, 1, 128, None) == 40
    assert planner.chunk_records(0, 1000, 10, 128, 100) == 10
    assert planner.chunk_records(0, 25, 10, 128, None) == 3


def test_step_cost_counts_the_forward_jaxpr():
    """The planner's count of a jaxpr: 2·m·n·k flops for a matrix product, one per output
    element otherwise, a scan's body ``length`` times; and against XLA's own cost analysis
    of a product (the figure it replaced), within a factor of two."""
    from gdjax.train import planner

    def product(a, b):
        return jnp.tanh(a @ b)

    a, b = jnp.ones((8, 16)), jnp.ones((16, 4))
    flops, nbytes = planner.jaxpr_cost(jax.make_jaxpr(product)(a, b).jaxpr)
    assert flops == 2 * 8 * 16 * 4 + 8 * 4  # the product, then tanh of its 32 elements
    assert nbytes == 2 * 4 * (8 * 16 + 16 * 4 + 8 * 4)  # in and out, and the product's operands

    def scanned(a, b):
        return jax.lax.scan(lambda c, _: (product(c, b[:, :16]), None), a[:, :16], length=5)[0]

    f5, _ = planner.jaxpr_cost(jax.make_jaxpr(scanned)(a, jnp.ones((16, 16))).jaxpr)
    assert f5 >= 5 * (2 * 8 * 16 * 16)
    xla = jax.jit(product).lower(a, b).cost_analysis()
    assert 0.5 <= flops / xla["flops"] <= 2


# --------------------------------------------------------------------------- sweep


def test_sweep_equals_a_loop_of_fits(problem):
    params, data = problem
    lrs = jnp.array([0.01, 0.3, 1.0])
    res = gd.sweep(logistic_loss, params, optax.sgd, data, steps=25, learning_rates=lrs)
    assert res.losses.shape == (3, 25) and res.final_loss.shape == (3,)
    for i, lr in enumerate(np.asarray(lrs)):
        one = gd.fit(logistic_loss, params, optax.sgd(float(lr)), data, steps=25)
        assert_tree_allclose(
            jax.tree_util.tree_map(lambda x, i=i: x[i], res.params), one.params, rtol=2e-5
        )
        np.testing.assert_allclose(res.losses[i], one.losses, rtol=2e-5)
        np.testing.assert_allclose(res.final_loss[i], logistic_loss(one.params, data), rtol=2e-5)
    assert res.best_index == int(np.argmin(res.final_loss))
    assert res.best == {"learning_rate": pytest.approx(float(lrs[res.best_index]))}


def test_sweep_seeds_init_and_minibatches(problem):
    _, data = problem

    def init(key):
        return {"w": 0.1 * jax.random.normal(key, (3,)), "b": jnp.zeros(())}

    hp = gd.train.grid(learning_rate=[0.1, 0.5], b1=[0.8, 0.9])
    res = gd.sweep(
        logistic_loss,
        None,
        lambda learning_rate, b1: gd.optim.adam(learning_rate, b1=b1),
        data,
        steps=9,
        hyperparams=hp,
        seeds=2,
        init_fn=init,
        batch_size=16,
    )
    assert res.losses.shape == (8, 9)
    np.testing.assert_array_equal(res.settings["seed"], [0, 1] * 4)
    np.testing.assert_allclose(res.settings["b1"], np.repeat([0.8, 0.9, 0.8, 0.9], 2))
    i = 5  # learning_rate 0.5, b1 0.8, seed 1
    k_init, k_data = jax.random.split(jax.random.key(1))
    one = gd.fit(
        logistic_loss,
        init(k_init),
        gd.optim.adam(0.5, b1=0.8),
        data,
        steps=9,
        batch_size=16,
        key=k_data,
    )
    np.testing.assert_allclose(res.losses[i], one.losses, rtol=2e-5)
    assert_tree_allclose(
        jax.tree_util.tree_map(lambda x: x[i], res.params), one.params, rtol=2e-5, atol=1e-7
    )


def test_sweep_diverged_runs_freeze_alone():
    res = gd.sweep(
        quadratic, {"w": jnp.ones(1)}, gd.optim.sgd, None, steps=120, learning_rates=[0.1, 1.0]
    )
    step, w_last = expected_divergence(1.0, 1.0)
    np.testing.assert_array_equal(res.diverged, [False, True])
    np.testing.assert_array_equal(res.diverged_at, [-1, step])
    np.testing.assert_array_equal(res.params["w"][1], [w_last])
    np.testing.assert_allclose(res.params["w"][0], [0.6**120], rtol=1e-4)  # (1 - 0.4)^t
    assert res.best_index == 0 and np.isnan(res.losses[1, step + 1 :]).all()


def test_grid_is_a_product_last_axis_fastest():
    g = gd.train.grid(a=[1.0, 2.0], b=[10, 20, 30])
    np.testing.assert_array_equal(g["a"], [1, 1, 1, 2, 2, 2])
    np.testing.assert_array_equal(g["b"], [10, 20, 30, 10, 20, 30])
    with pytest.raises(ValueError, match="same length"):
        gd.sweep(
            quadratic,
            {"w": jnp.ones(1)},
            optax.sgd,
            None,
            steps=2,
            hyperparams={"learning_rate": [0.1, 0.2], "momentum": [0.9]},
        )
    with pytest.raises(TypeError, match="factory"):
        gd.sweep(quadratic, {"w": jnp.ones(1)}, optax.sgd(0.1), None, steps=2, learning_rates=[0.1])


@pytest.mark.parametrize("chunk_size", [1, 2, 3, None])
def test_an_update_that_overflows_is_not_applied(chunk_size):
    # L = w: the loss stays finite, but w ← w − 2e38 leaves float32 at the second step
    # (step 1: w = −2e38 → −4e38 = −inf), whether or not that step ends a chunk.
    res = gd.fit(
        lambda p, _: jnp.sum(p["w"]),
        {"w": jnp.zeros(1)},
        optax.sgd(2e38),
        None,
        steps=10,
        chunk_size=chunk_size,
    )
    assert res.diverged and res.diverged_at == 1 and res.steps == 1
    np.testing.assert_array_equal(res.params["w"], np.float32([-2e38]))
    np.testing.assert_array_equal(res.losses[:2], np.float32([0.0, -2e38]))
    assert np.isnan(res.losses[2:]).all() and res.losses.shape == (10,)

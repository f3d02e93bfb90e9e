"""``fit(..., monitor=fn)``: quantities recorded inside the compiled loop at recorded steps."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gdjax as gd


def loss(params, batch):
    X, y = batch
    return jnp.mean((jnp.tanh(X @ params["W"]) @ params["v"] - y) ** 2)


def grad_norms(info):
    """Per-leaf gradient norm, the update/parameter ratio of W, and the step counter."""
    norms = jax.tree_util.tree_map(jnp.linalg.norm, info.grads)
    ratio = jnp.linalg.norm(info.updates["W"]) / jnp.linalg.norm(info.params["W"])
    return {"grad": norms, "ratio": ratio, "t": info.t, "loss": info.loss}


@pytest.fixture(scope="module")
def run():
    kx, kw = jax.random.split(jax.random.key(5))
    X = jax.random.normal(kx, (32, 3))
    y = jnp.sin(X[:, 0])
    params = {"W": 0.5 * jax.random.normal(kw, (3, 5)), "v": jnp.ones(5) / 5}
    return params, (X, y)


def test_recorded_gradient_norms_equal_jax_grad_at_the_recorded_params(run):
    params, data = run
    lr = 0.2
    res = gd.fit(
        loss,
        params,
        gd.optim.sgd(lr),
        data,
        steps=30,
        record_every=4,
        trajectory=True,
        monitor=grad_norms,
    )
    mon = res.monitor
    assert mon["t"].tolist() == list(range(0, 30, 4))
    np.testing.assert_allclose(mon["loss"], res.losses, rtol=1e-6)
    for i in range(len(res.losses)):
        p_i = jax.tree_util.tree_map(lambda x, i=i: x[i], res.trajectory)
        g = jax.grad(loss)(p_i, data)
        for name in ("W", "v"):
            np.testing.assert_allclose(mon["grad"][name][i], jnp.linalg.norm(g[name]), rtol=1e-5)
        # plain GD: the update is -lr * g
        expected = lr * jnp.linalg.norm(g["W"]) / jnp.linalg.norm(p_i["W"])
        np.testing.assert_allclose(mon["ratio"][i], expected, rtol=1e-5)


def test_monitor_does_not_recompile_for_a_new_learning_rate(run):
    params, data = run
    gd.fit(loss, params, gd.optim.adam(1e-2), data, steps=10, monitor=grad_norms)
    before = gd.train.compilations()
    res = gd.fit(loss, params, gd.optim.adam(3e-2), data, steps=25, monitor=grad_norms)
    assert gd.train.compilations() == before
    assert res.monitor["grad"]["W"].shape == (25,)


def test_monitor_is_nan_after_divergence_and_refused_when_not_callable(run):
    params, data = run
    res = gd.fit(loss, params, gd.optim.sgd(1e4), data, steps=40, monitor=grad_norms)
    assert res.diverged
    d = res.diverged_at
    assert np.isnan(res.monitor["ratio"][d + 1 :]).all()
    assert np.isfinite(res.monitor["ratio"][:d]).all()
    assert res.monitor["t"].tolist() == [*range(d + 1), *[0] * (39 - d)]
    with pytest.raises(gd.UsageError, match="monitor"):
        gd.fit(loss, params, gd.optim.sgd(0.1), data, steps=3, monitor="norms")


def test_sweep_member_monitor_equals_fit(run):
    params, data = run
    rates = jnp.array([0.05, 0.2, 1e4, 0.5])
    sw = gd.sweep(
        loss, params, gd.optim.sgd(rates), data, steps=24, record_every=3, monitor=grad_norms
    )
    assert sw.runs.monitor["grad"]["W"].shape == (4, 8)
    for i, lr in enumerate(rates.tolist()):
        one = gd.fit(
            loss, params, gd.optim.sgd(lr), data, steps=24, record_every=3, monitor=grad_norms
        )
        np.testing.assert_allclose(
            sw.run(i).monitor["grad"]["W"], one.monitor["grad"]["W"], rtol=2e-5, atol=1e-6
        )
        assert sw.run(i).monitor["t"].tolist() == one.monitor["t"].tolist()


def test_checkpoint_resume_keeps_the_monitor_history(run, tmp_path):
    params, data = run
    opt = gd.optim.sgd(0.1)
    whole = gd.fit(loss, params, opt, data, steps=40, record_every=2, monitor=grad_norms)
    saved = dict(checkpoint_dir=tmp_path, checkpoint_every=10, chunk_size=10)
    gd.fit(loss, params, opt, data, steps=40, record_every=2, monitor=grad_norms, **saved)
    # a finished checkpoint resumes to the same result, history included
    again = gd.fit(loss, params, opt, data, steps=40, record_every=2, monitor=grad_norms, **saved)
    np.testing.assert_array_equal(again.monitor["grad"]["W"], whole.monitor["grad"]["W"])
    np.testing.assert_array_equal(again.monitor["t"], whole.monitor["t"])


def test_patience_retires_runs_that_stopped_improving_and_keeps_their_state(run):
    """A tiny learning rate still improves; a zero-gradient run (momentum 0, lr below
    float32's resolution of the loss) does not and retires at the first chunk boundary
    past its window, with its parameters as they were then."""
    params, data = run
    rates = jnp.array([0.2, 1e-30, 0.05])
    sw = gd.sweep(loss, params, gd.optim.sgd(rates), data, steps=60, chunk_size=10, patience=20)
    assert sw.retired_at.tolist()[0] == -1 and sw.retired_at.tolist()[2] == -1
    t = int(sw.retired_at[1])
    assert t == 30  # the first check with records older than the 20-step window that
    # did not improve: at step 30 (records 0..9 vs 10..29)
    assert int(sw.runs.steps[1]) == t
    assert np.isnan(sw.losses[1, t:]).all() and np.isfinite(sw.losses[1, :t]).all()
    np.testing.assert_allclose(sw.run(1).params["W"], params["W"], rtol=1e-6)
    # the others equal their own fits
    for i in (0, 2):
        one = gd.fit(loss, params, gd.optim.sgd(float(rates[i])), data, steps=60)
        np.testing.assert_allclose(sw.run(i).params["W"], one.params["W"], rtol=2e-5)
    assert sw.best_index == 0
    with pytest.raises(gd.UsageError, match="patience"):
        gd.sweep(loss, params, gd.optim.sgd(rates), data, steps=6, patience=0)


def test_results_show_in_a_notebook_as_a_table_with_the_final_loss(run):
    params, data = run
    res = gd.fit(loss, params, gd.optim.sgd(0.1), data, steps=12)
    page = res._repr_html_()
    assert "<table" in page and "<svg" in page
    assert f"{float(res.final_loss):.6g}" in page
    sw = gd.sweep(loss, params, gd.optim.sgd(jnp.array([0.1, 0.2])), data, steps=12)
    assert "<table" in sw._repr_html_()


@pytest.mark.parametrize("kw", [{}, {"batch_size": 8, "key": 0}], ids=["full", "mini"])
def test_a_raised_divergence_says_where_the_first_non_finite_value_appeared(kw):
    """exp overflows in float32 above ~88.7: the error names the tagged exp node."""

    def overflowing(p, b):
        X, y = b
        z = gd.name(X @ p["w"], "z")
        e = gd.name(jnp.exp(z), "e")
        return jnp.mean((e - y) ** 2)

    X = jax.random.normal(jax.random.key(0), (32, 3))
    with pytest.raises(gd.DivergenceError) as err:
        gd.fit(
            overflowing,
            {"w": jnp.ones(3)},
            gd.optim.sgd(10.0),
            (X, jnp.ones(32)),
            steps=50,
            on_divergence="raise",
            **kw,
        )
    assert "e = exp(z)" in err.value.origin and "Where: the first non-finite" in str(err.value)
    assert np.isfinite(err.value.result.params["w"]).all()

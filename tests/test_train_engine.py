"""Engine v2: no recompiles, one engine for fit and sweep, retired runs, honest checkpoints."""

from __future__ import annotations

import logging
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gdjax as gd
from gdjax import checkpoint, train
from gdjax.train import dots, resume
from tests.helpers import assert_tree_allclose


def loss(params, batch):
    X, y = batch
    return jnp.mean((jnp.tanh(X @ params["W"]) @ params["v"] - y) ** 2)


@pytest.fixture(scope="module")
def run():
    kx, kw = jax.random.split(jax.random.key(3))
    X = jax.random.normal(kx, (40, 4))
    y = jnp.cos(X[:, 0] - X[:, 1])
    params = {"W": 0.5 * jax.random.normal(kw, (4, 6)), "v": jnp.ones(6) / 6}
    return params, (X, y)


def compiles() -> int:
    """Run programs compiled so far (the jit caches of the chunk and of the fresh run)."""
    return gd.train.compilations()


def expert_scan(params, opt, data, steps):
    """What an expert writes: a jitted lax.scan of value_and_grad + an optax update."""

    def step(carry, _):
        p, s = carry
        value, g = jax.value_and_grad(loss)(p, data)
        u, s = opt.update(g, s, p)
        return (optax.apply_updates(p, u), s), value

    with jax.numpy_dtype_promotion("standard"):  # optax's own rules need it
        (p, _), losses = jax.jit(lambda p: jax.lax.scan(step, (p, opt.init(p)), length=steps))(
            params
        )
    return p, losses


def test_new_learning_rate_beta_steps_or_key_does_not_recompile(run):
    params, data = run
    gd.fit(loss, params, gd.optim.adam(1e-2), data, steps=50)
    before = compiles()
    for opt, steps in [
        (gd.optim.adam(3e-2), 50),
        (gd.optim.adam(1e-3, b1=0.8, b2=0.99), 50),
        (gd.optim.adam(1e-2), 77),
        (gd.optim.adam(1e-2), 1000),
    ]:
        res = gd.fit(loss, params, opt, data, steps=steps)
        assert res.losses.shape == (steps,)
    assert compiles() == before
    # mini-batches: a new seed or key is data too
    gd.fit(loss, params, gd.optim.sgd(0.1), data, steps=20, batch_size=8, key=0)
    mid = compiles()
    gd.fit(loss, params, gd.optim.sgd(0.3), data, steps=33, batch_size=8, key=jax.random.key(9))
    assert compiles() == mid
    # a static choice is a new program (and only then)
    gd.fit(
        loss,
        params,
        gd.optim.sgd(0.1, momentum=0.9, nesterov=True),
        data,
        steps=20,
        batch_size=8,
        key=0,
    )
    assert compiles() == mid + 1


def test_a_loss_written_again_is_the_same_program(run):
    """``gd.fit(lambda p, b: ..., ...)`` in a loop: the same code and closed-over values
    are the same program; another value (a new penalty) is another, and is the one used."""
    params, data = run
    results, counts = [], []

    def penalised(lam):  # a new function object at every call
        return lambda p, b: loss(p, b) + lam * jnp.sum(p["v"] ** 2)

    for lam in (0.0, 0.0, 0.5, 0.5):
        before = compiles()
        results.append(gd.fit(penalised(lam), params, gd.optim.sgd(0.1), data, steps=30))
        counts.append(compiles() - before)
    assert counts[1] == 0 and counts[3] == 0 and counts[2] == 1
    np.testing.assert_array_equal(results[0].losses, results[1].losses)
    expected = gd.fit(lambda p, b: loss(p, b) + 0.5 * jnp.sum(p["v"] ** 2), params,
                      gd.optim.sgd(0.1), data, steps=30)
    np.testing.assert_array_equal(results[2].losses, expected.losses)
    assert not np.array_equal(results[0].losses, results[2].losses)


def test_new_schedule_numbers_and_step_counts_do_not_recompile(run):
    """A schedule's numbers (initial value, decay rate, floor, peak) and its step counts
    (transition_steps, warmup/decay steps, boundaries) are leaves; its kind and options
    (staircase) are static (docs/optimizers.md, Schedules)."""
    params, data = run
    O = gd.optim

    def fit(opt):
        return gd.fit(loss, params, opt, data, steps=60)

    fit(O.adam(O.exponential_decay(1e-2, 20, 0.5, end_value=1e-4), b1=0.9))
    fit(O.sgd(O.warmup_cosine_decay_schedule(0.0, 0.1, 5, 50, end_value=0.0)))
    fit(O.sgd(O.piecewise_constant(0.1, {10: 0.5, 30: 0.1})))
    before = compiles()
    a = fit(O.adam(O.exponential_decay(3e-2, 15, 0.7, 4, end_value=1e-3), b1=0.8))
    b = fit(O.sgd(O.warmup_cosine_decay_schedule(0.01, 0.3, 7, 45, end_value=0.02)))
    c = fit(O.sgd(O.piecewise_constant(0.2, {40: 0.2, 5: 0.5})))
    assert compiles() == before
    # and the new numbers are the ones used: the expert's optax run of the same rule
    for res, theirs in [
        (a, optax.adam(optax.exponential_decay(3e-2, 15, 0.7, 4, end_value=1e-3), b1=0.8)),
        (b, optax.sgd(optax.warmup_cosine_decay_schedule(0.01, 0.3, 7, 45, end_value=0.02))),
        (c, optax.sgd(optax.piecewise_constant_schedule(0.2, {5: 0.5, 40: 0.2}))),
    ]:
        _, losses = expert_scan(params, theirs, data, 60)
        np.testing.assert_allclose(res.losses, losses, rtol=2e-5)
    fit(O.adam(O.exponential_decay(1e-2, 20, 0.5, end_value=1e-4, staircase=True), b1=0.9))
    assert compiles() == before + 1  # an option: static


def test_a_sweep_over_step_counts_is_one_program(run):
    """K decay lengths in one rule (or through a factory) are K runs of one program, run
    i equal to fit with decay length i."""
    params, data = run
    O = gd.optim
    lengths = jnp.asarray([10.0, 30.0, 60.0])
    runs = gd.sweep(loss, params, O.sgd(O.cosine_decay(0.3, lengths, alpha=0.1)), data, steps=60)
    again = gd.sweep(
        loss,
        params,
        lambda decay_steps: O.sgd(O.cosine_decay(0.3, decay_steps, alpha=0.1)),
        data,
        steps=60,
        hyperparams={"decay_steps": lengths},
    )
    for i, t in enumerate([10, 30, 60]):
        alone = gd.fit(loss, params, O.sgd(O.cosine_decay(0.3, t, alpha=0.1)), data, steps=60)
        np.testing.assert_allclose(runs.runs.losses[i], alone.losses, rtol=1e-5)
        np.testing.assert_allclose(again.runs.losses[i], alone.losses, rtol=1e-5)
    assert not np.allclose(runs.runs.losses[0], runs.runs.losses[2])
    with pytest.raises(gd.UsageError, match=r"`decay_steps\[1\]` must be a whole number"):
        O.cosine_decay(0.3, jnp.asarray([10.0, 2.5]))


def test_fit_equals_the_expert_scan(run, monkeypatch):
    # the same optax object in both: without the CPU rewrite of small products
    # (gdjax.train.dots), the engine adds nothing to the arithmetic
    params, data = run
    monkeypatch.setattr(dots, "MAX_CONTRACTION", 0)
    for opt in (optax.adam(0.02), optax.sgd(0.1, momentum=0.9)):
        with jax.numpy_dtype_promotion("standard"):
            res = gd.fit(loss, params, opt, data, steps=300)
        p, losses = expert_scan(params, opt, data, 300)
        assert_tree_allclose(res.params, p, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(res.losses, losses, rtol=1e-6)


def test_fit_with_small_products_written_out_equals_the_expert_scan_to_rounding(run):
    # X @ W contracts 4 elements: on CPU a sum of 4 products. Measured over 100 steps:
    # 4e-7 in the parameters, 5e-7 relative in the losses (Adam)
    params, data = run
    for opt in (optax.adam(0.02), optax.sgd(0.1, momentum=0.9)):
        with jax.numpy_dtype_promotion("standard"):
            res = gd.fit(loss, params, opt, data, steps=100)
        p, losses = expert_scan(params, opt, data, 100)
        assert_tree_allclose(res.params, p, rtol=1e-5, atol=2e-6)
        np.testing.assert_allclose(res.losses, losses, rtol=5e-6)


def test_a_rule_with_settings_sweeps_and_member_equals_fit(run):
    params, data = run
    # member i = fit with setting i, to float32 rounding: vmap batches the matrix products,
    # which may sum in another order; over 40 Adam steps that stays below 1e-4 relative
    lrs = jnp.array([0.001, 0.01, 0.03])
    res = gd.sweep(loss, params, gd.optim.adam(lrs, b1=0.8), data, steps=40)
    np.testing.assert_allclose(res.settings["learning_rate"], lrs)
    assert res.runs.losses.shape == (3, 40) and res.final_loss.shape == (3,)
    for i, lr in enumerate(np.asarray(lrs)):
        one = gd.fit(loss, params, gd.optim.adam(float(lr), b1=0.8), data, steps=40)
        np.testing.assert_allclose(res.losses[i], one.losses, rtol=1e-4)
        assert_tree_allclose(res.run(i).params, one.params, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(res.final_loss[i], one.final_loss, rtol=1e-4)
    with pytest.raises(ValueError, match=r"gd\.sweep"):
        gd.fit(loss, params, gd.optim.adam(lrs), data, steps=5)


SCALE = 1.0  # a global that a factory reads (test_a_factory_written_again_...)


def quadratic(params, _):
    return 2.0 * jnp.sum(params["w"] ** 2)  # curvature 4: GD diverges above lr = 0.5


def test_diverged_runs_retire_with_their_last_finite_state():
    lrs = jnp.array([0.1, 0.2, 0.6, 0.7, 0.8, 1.0, 0.3])
    res = gd.sweep(quadratic, {"w": jnp.ones(2)}, gd.optim.sgd(lrs), None, steps=400, chunk_size=16)
    diverged = np.asarray(lrs) > 0.5
    np.testing.assert_array_equal(res.diverged, diverged)
    for i, lr in enumerate(np.asarray(lrs)):
        one = gd.fit(quadratic, {"w": jnp.ones(2)}, gd.optim.sgd(float(lr)), None, steps=400)
        assert int(res.diverged_at[i]) == one.diverged_at
        np.testing.assert_array_equal(res.params["w"][i], one.params["w"])
        np.testing.assert_array_equal(np.isnan(res.losses[i]), np.isnan(one.losses))
    assert not diverged[res.best_index]
    every = gd.sweep(
        quadratic, {"w": jnp.ones(2)}, gd.optim.sgd(jnp.array([0.9, 1.0])), None, steps=200
    )
    assert every.best_index is None and every.best == {}


def test_a_rule_function_as_factory_is_one_rule_of_k_settings(run, monkeypatch):
    """gd.sweep(..., gd.optim.adam, hyperparams=...) builds one rule of K settings (its
    elements checked at once), not K rules: the same runs as the rule built by hand,
    and as a factory of optax's own adam (traced settings) to float32 rounding."""
    from gdjax.optim import _split

    params, data = run
    lrs, b1s = jnp.array([0.003, 0.01, 0.03]), jnp.array([0.8, 0.9, 0.95])
    calls = []
    spec = _split._SPECS["adam"]
    counted = lambda **kw: calls.append(kw) or spec.public(**kw)  # noqa: E731
    monkeypatch.setitem(_split._SPECS, "adam", _split._Spec(spec.build, spec.kinds, counted))
    hyper = {"learning_rate": lrs, "b1": b1s}
    as_factory = gd.sweep(loss, params, counted, data, steps=30, hyperparams=hyper)
    assert len(calls) == 1 and calls[0]["learning_rate"] is lrs  # once, with the arrays
    by_hand = gd.sweep(loss, params, gd.optim.adam(lrs, b1=b1s), data, steps=30)
    np.testing.assert_array_equal(as_factory.losses, by_hand.losses)
    assert set(as_factory.settings) == {"learning_rate", "b1"}
    np.testing.assert_array_equal(as_factory.settings["b1"], b1s)
    with jax.numpy_dtype_promotion("standard"):  # optax's own rules need it
        optax_factory = gd.sweep(
            loss, params, lambda learning_rate, b1: optax.adam(learning_rate, b1=b1), data,
            steps=30, hyperparams=hyper,
        )
    np.testing.assert_allclose(as_factory.losses, optax_factory.losses, rtol=2e-5)


def test_a_factory_written_again_is_the_same_program_and_checked_once(run, monkeypatch):
    """A lambda evaluated again (a loop, a notebook cell) is the same code with the same
    values: it neither compiles nor checks its settings again. Another closed-over value
    is another program; a value that cannot be compared (an array) keeps identity."""
    from gdjax.train import settings
    from gdjax.train.factory import function_key

    params, data = run
    lrs = jnp.array([0.01, 0.03])
    made, sgd = [], optax.sgd
    monkeypatch.setattr(optax, "sgd", lambda *a, **k: made.append(a) or sgd(*a, **k))
    monkeypatch.setattr(settings, "_CHECKED", {})

    def factory_of(momentum):
        return lambda learning_rate: optax.sgd(learning_rate, momentum)

    def sweep(factory):
        with jax.numpy_dtype_promotion("standard"):  # optax's own rules need it
            return gd.sweep(loss, params, factory, data, steps=20, learning_rates=lrs)

    first = sweep(factory_of(0.9))
    before, built = compiles(), len(made)
    assert built > 2  # each setting checked on the host, then the programs traced
    again = sweep(factory_of(0.9))  # a new function object: the same code and values
    assert compiles() == before and len(made) == built  # not compiled, not checked again
    np.testing.assert_array_equal(again.losses, first.losses)
    other = sweep(factory_of(0.5))  # another momentum: another program, checked again
    assert compiles() == before + 1 and len(made) == 2 * built
    assert not np.array_equal(other.losses, first.losses)

    def closes_over(a):
        return lambda learning_rate: optax.scale(-learning_rate * a[0])

    f = closes_over(np.ones(2))
    assert function_key(f) is f  # a NumPy array may change: the function is its own key
    a = jnp.ones(2)  # a jax.Array cannot: by identity
    assert function_key(closes_over(a)) == function_key(closes_over(a))
    assert function_key(closes_over(a)) != function_key(closes_over(jnp.ones(2)))
    class Config:  # a bound method is its object's: never the same as another object's
        def __init__(self, momentum):
            self.momentum = momentum

        def opt(self, learning_rate):
            return optax.sgd(learning_rate, self.momentum)

    assert function_key(Config(0.9).opt) != function_key(Config(0.5).opt)
    assert function_key(factory_of(0.9)) == function_key(factory_of(0.9))
    inner = lambda: lambda learning_rate: optax.sgd(learning_rate * SCALE)  # noqa: E731
    before = function_key(inner)
    monkeypatch.setitem(globals(), "SCALE", 2.0)  # read by the function inside it
    assert function_key(inner) != before
    assert function_key(factory_of(0.9)) != function_key(factory_of(0.5))


def test_sweep_refuses_a_bad_setting_by_name():
    with pytest.raises(ValueError, match=r"setting 1 \(learning_rate=-0\.1\)"):
        gd.sweep(
            quadratic, {"w": jnp.ones(2)}, gd.optim.sgd, None, steps=3, learning_rates=[0.1, -0.1]
        )
    with pytest.raises(ValueError, match=r"setting 2 \(learning_rate=nan\).*finite"):
        gd.sweep(
            quadratic, {"w": jnp.ones(2)}, gd.optim.sgd, None, steps=3,
            learning_rates=[0.1, 0.2, float("nan")],
        )
    with pytest.raises(ValueError, match="momentum"):
        gd.sweep(
            quadratic,
            {"w": jnp.ones(2)},
            gd.optim.sgd,
            None,
            steps=3,
            hyperparams={"learning_rate": [0.1, 0.1], "momentum": [0.5, 1.0]},
        )


# ------------------------------------------------------------------------- checkpoints


def test_resume_with_another_optimizer_is_refused_saying_what_differs(run, tmp_path):
    params, data = run
    gd.fit(loss, params, gd.optim.adam(0.02), data, steps=30, checkpoint_dir=tmp_path)
    cases = {
        "learning_rate']: checkpoint \"0.02\", this run \"0.03\"": gd.optim.adam(0.03),
        "b1']: checkpoint \"0.9\", this run \"0.5\"": gd.optim.adam(0.02, b1=0.5),
        "optimizer.rule: checkpoint": gd.optim.rmsprop(0.02),
    }
    for says, other in cases.items():
        with pytest.raises(ValueError, match=r"different run \(optimizer") as err:
            gd.fit(loss, params, other, data, steps=30, checkpoint_dir=tmp_path)
        assert says in str(err.value), str(err.value)
    same = gd.fit(loss, params, gd.optim.adam(0.02), data, steps=30, checkpoint_dir=tmp_path)
    assert same.steps == 30


def test_checkpoint_dir_is_checked_before_training(run, tmp_path):
    params, data = run
    a_file = tmp_path / "f"
    a_file.write_text("x")
    calls = []
    counting = lambda p, b: (calls.append(1), loss(p, b))[1]  # noqa: E731
    with pytest.raises(ValueError, match="is a file"):
        gd.fit(counting, params, gd.optim.sgd(0.1), data, steps=5, checkpoint_dir=a_file)
    with pytest.raises(ValueError, match="not writable"):
        gd.fit(counting, params, gd.optim.sgd(0.1), data, steps=5, checkpoint_dir=a_file / "d")
    assert len(calls) <= 1  # traced for its shape at most, never trained


def test_a_second_run_on_a_held_directory_is_refused(run, tmp_path):
    params, data = run
    with resume.locked(tmp_path):
        with pytest.raises(ValueError, match="in use by another run"):
            gd.fit(loss, params, gd.optim.sgd(0.1), data, steps=5, checkpoint_dir=tmp_path)
    gd.fit(loss, params, gd.optim.sgd(0.1), data, steps=5, checkpoint_dir=tmp_path)


def test_a_failed_save_keeps_the_result_and_says_where_the_last_good_one_is(
    run, tmp_path, monkeypatch
):
    params, data = run
    real, n = checkpoint.save, []

    def flaky(path, tree, meta):
        if path.name == train.CHECKPOINT_NAME:
            n.append(1)
            if len(n) == 2:
                raise OSError(28, "No space left on device")
        return real(path, tree, meta)

    monkeypatch.setattr(checkpoint, "save", flaky)
    res = gd.fit(
        loss,
        params,
        gd.optim.sgd(0.1),
        data,
        steps=40,
        checkpoint_dir=tmp_path,
        checkpoint_every=10,
    )
    full = gd.fit(loss, params, gd.optim.sgd(0.1), data, steps=40)
    assert_tree_allclose(res.params, full.params, rtol=0)
    assert "step 20 failed" in res.checkpoint_error
    assert "last good checkpoint" in res.checkpoint_error and "step 10" in res.checkpoint_error


def test_checkpoint_size_does_not_grow_with_the_history(run, tmp_path):
    params, data = run
    sizes = []
    for steps in (100, 2000):
        d = tmp_path / str(steps)
        gd.fit(
            loss,
            params,
            gd.optim.sgd(0.1),
            data,
            steps=steps,
            checkpoint_dir=d,
            checkpoint_every=50,
        )
        sizes.append(os.path.getsize(d / train.CHECKPOINT_NAME))
    assert sizes[1] - sizes[0] < 2000  # the segment list grows by a few bytes a save
    resumed = gd.fit(
        loss,
        params,
        gd.optim.sgd(0.1),
        data,
        steps=2000,
        checkpoint_dir=tmp_path / "2000",
        checkpoint_every=50,
    )
    full = gd.fit(loss, params, gd.optim.sgd(0.1), data, steps=2000)
    np.testing.assert_array_equal(resumed.losses, full.losses)  # history from the segments


def test_a_compile_says_why(run, caplog):
    params, data = run

    def fresh_loss(p, b):
        return loss(p, b)

    with caplog.at_level(logging.INFO, logger="gdjax"):
        gd.fit(fresh_loss, params, gd.optim.sgd(0.1), data, steps=5)
        gd.fit(fresh_loss, params, gd.optim.sgd(0.3), data, steps=9)  # data, not code
        gd.fit(fresh_loss, params, gd.optim.sgd(0.1, momentum=0.9, nesterov=True), data, steps=5)
        O = gd.optim
        for staircase, T in [(False, 10), (False, 30), (True, 30)]:  # a count: data
            sched = O.exponential_decay(0.1, T, 0.5, staircase=staircase)
            gd.fit(fresh_loss, params, O.sgd(sched), data, steps=5)
    lines = [r.getMessage() for r in caplog.records if r.name == "gdjax"]
    assert len(lines) == 4 and "first program" in lines[0]  # T = 30 compiled nothing
    assert "new static setting opt_static=" in lines[1] and "nesterov" in lines[1]
    # a schedule's kind and options are named, not only the rule's
    assert "learning_rate=exponential_decay(end_value=None, staircase=False)" in lines[2]
    assert "staircase=True" in lines[3] and "(was gd.optim.sgd(learning_rate=exp" in lines[3]


def test_a_directory_held_by_another_process_is_refused(run, tmp_path):
    import subprocess
    import sys
    import time

    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from gdjax.train import resume\n"
            "with resume.locked(Path(sys.argv[1])):\n"
            "    print('held', flush=True); time.sleep(60)",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        params, data = run
        with pytest.raises(ValueError, match="in use by another run"):
            gd.fit(loss, params, gd.optim.sgd(0.1), data, steps=5, checkpoint_dir=tmp_path)
    finally:
        holder.kill()
        holder.wait(timeout=30)
    time.sleep(0.1)  # the system released the lock with the process
    gd.fit(loss, params, gd.optim.sgd(0.1), data, steps=5, checkpoint_dir=tmp_path)


def test_a_history_larger_than_memory_is_refused_before_any_work(run):
    params, data = run
    with pytest.raises(gd.UsageError, match="record_every"):
        gd.fit(loss, params, gd.optim.sgd(0.1), data, steps=2**31 - 2)
    with pytest.raises(gd.UsageError, match="record_every"):
        gd.sweep(loss, params, gd.optim.sgd(jnp.full(4096, 0.1)), data, steps=2**30)
    with pytest.raises(gd.UsageError, match="steps"):
        gd.sweep(loss, params, gd.optim.sgd(jnp.full(2, 0.1)), data, steps=2**40)

"""The lean engine: chunks that consume their state, replays, and what is read once.

A chunk's state is donated to the program (no copy into the loop), a chunk flags its own
divergence (a single run from the sum of its recorded losses), the inputs' check travels
with the first chunk, and
the final loss comes from the chunk that ends the run. Each test compares with a plain
reference: a Python loop of the same update, the loss at the returned parameters, or
the run without the feature.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gdjax as gd
from gdjax.train import program, start
from gdjax.train import run as run_module


def loss(params, batch):
    X, y = batch
    return jnp.mean((X @ params["w"] + params["b"] - y) ** 2)


@pytest.fixture(scope="module")
def problem():
    X = jax.random.normal(jax.random.key(0), (64, 3))
    y = X @ jnp.array([1.0, -2.0, 0.5]) + 0.3
    return {"w": jnp.zeros(3), "b": jnp.zeros(())}, (X, y)


def reference(params, data, lr, steps):
    """Plain gradient descent in Python, stopping at the first non-finite loss or update
    (the careful step's rule): (last finite params, diverged_at, losses)."""
    p, losses = params, []
    for t in range(steps):
        value, g = jax.value_and_grad(loss)(p, data)
        new = jax.tree.map(lambda a, b: a - lr * b, p, g)
        finite = np.isfinite(value) and all(np.isfinite(x).all() for x in jax.tree.leaves(new))
        losses.append(float(value))
        if not finite:
            return p, t, np.array(losses)
        p = new
    return p, -1, np.array(losses)


@pytest.mark.parametrize("chunk_size", [None, 4, 7])
def test_a_run_that_diverges_keeps_its_last_finite_state_in_any_chunk(problem, chunk_size):
    params, data = problem
    lr, steps = 1.5, 60  # unstable: the error grows each step until it overflows
    ref_p, ref_at, ref_losses = reference(params, data, lr, steps)
    assert ref_at > 8  # the divergence falls after the first chunks, not in the first
    res = gd.fit(loss, params, gd.optim.sgd(lr), data, steps=steps, chunk_size=chunk_size)
    assert res.diverged and res.diverged_at == ref_at
    for name in params:
        np.testing.assert_allclose(res.params[name], ref_p[name], rtol=1e-5)
    np.testing.assert_allclose(res.losses[:ref_at], ref_losses[:ref_at], rtol=1e-5)
    assert np.isnan(res.losses[ref_at + 1 :]).all()
    np.testing.assert_allclose(res.final_loss, loss(res.params, data), rtol=1e-6)


def test_the_chunks_counts_are_kept_int32_arrays_of_their_values(monkeypatch):
    monkeypatch.setattr(run_module, "_COUNTS", {})
    a = run_module._count(20_000)
    assert a.dtype == jnp.int32 and int(a) == 20_000
    assert run_module._count(20_000) is a  # made once
    for i in range(300):  # bounded: cleared when full, and still right
        assert int(run_module._count(i)) == i
    assert len(run_module._COUNTS) <= 256


def test_a_divergence_in_the_first_chunk_replays_from_a_fresh_start(problem):
    params, data = problem
    ref_p, ref_at, _ = reference(params, data, 1.5, 60)
    res = gd.fit(loss, params, gd.optim.sgd(1.5), data, steps=60, chunk_size=4096)
    assert res.diverged_at == ref_at
    np.testing.assert_allclose(res.params["w"], ref_p["w"], rtol=1e-5)


def test_the_callers_arrays_are_never_consumed(problem, tmp_path):
    params, data = problem
    before = jax.tree.map(np.array, params)
    for kwargs in ({}, {"chunk_size": 3}, {"checkpoint_dir": tmp_path, "chunk_size": 5}):
        res = gd.fit(loss, params, gd.optim.adam(0.05), data, steps=20, **kwargs)
        again = gd.fit(loss, res.params, gd.optim.adam(0.05), data, steps=5)  # reusable
        assert np.isfinite(np.asarray(again.params["w"])).all()
    gd.fit(loss, params, gd.optim.sgd(1.5), data, steps=60, chunk_size=4)  # with a replay
    gd.sweep(loss, params, gd.optim.sgd(jnp.asarray([0.01, 1.5])), data, steps=60, chunk_size=4)
    for name in params:  # still readable, and unchanged
        np.testing.assert_array_equal(np.asarray(params[name]), before[name])


def test_a_false_alarm_of_the_lean_chunk_goes_on_from_the_careful_state(problem, monkeypatch):
    params, data = problem
    plain = gd.fit(loss, params, gd.optim.sgd(0.05), data, steps=30, chunk_size=5)
    calls = []
    real_drive = run_module.drive

    def drive(*args, diverged, **kwargs):  # the host says the second chunk diverged; it did not
        def alarm_once(state, outputs, n):
            calls.append(n)
            return True if len(calls) == 2 else diverged(state, outputs, n)

        return real_drive(*args, diverged=alarm_once, **kwargs)

    monkeypatch.setattr(run_module, "drive", drive)
    res = gd.fit(loss, params, gd.optim.sgd(0.05), data, steps=30, chunk_size=5)
    assert len(calls) == 6 and not res.diverged  # every chunk ran and was read once
    np.testing.assert_array_equal(res.losses, plain.losses)
    np.testing.assert_array_equal(res.params["w"], plain.params["w"])


def test_a_chunk_runs_no_step_unless_its_inputs_passed(problem):
    params, data = problem
    opt = gd.optim.sgd(0.1)
    prog = program.Program(
        loss, None, gd.optim.partition(opt)[0], 8, 1, None, None, False, np.dtype("float32")
    )
    leaves = gd.optim.partition(opt)[1]
    for ok, moved in ((np.bool_(False), 0), (np.bool_(True), 5)):
        state, _ = start.compiled_start(prog, params, leaves, data)
        end, losses, *_ = program.compiled_chunk(prog, state, data, None, leaves, 0, 5, 5, ok)
        assert int(end.t) == moved
        assert np.count_nonzero(np.asarray(losses)) == moved


def test_a_fresh_run_of_one_chunk_is_one_program_equal_to_the_chunked_run(problem, monkeypatch):
    params, data = problem
    calls = []
    for name in ("compiled_start", "compiled_chunk", "compiled_fresh"):
        real = getattr(run_module, name)
        monkeypatch.setattr(
            run_module, name, lambda *a, _f=real, _n=name: calls.append(_n) or _f(*a)
        )
    one = gd.fit(loss, params, gd.optim.adam(0.05), data, steps=30)
    assert calls == ["compiled_fresh"]  # the start and the chunk in one call
    calls.clear()
    chunked = gd.fit(loss, params, gd.optim.adam(0.05), data, steps=30, chunk_size=7)
    assert calls == ["compiled_start"] + ["compiled_chunk"] * 5
    np.testing.assert_array_equal(one.losses, chunked.losses)
    for name in params:
        np.testing.assert_array_equal(one.params[name], chunked.params[name])
    assert one.final_loss == chunked.final_loss


def test_a_fresh_sweeps_first_chunk_is_one_program_equal_to_the_chunked_sweep(problem, monkeypatch):
    from gdjax.train import pool, sweeping

    params, data = problem
    calls = []
    for module, name in (
        (sweeping, "compiled_start"),
        (sweeping, "compiled_fresh"),
        (pool, "compiled_chunk"),
    ):
        real = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *a, _f=real, _n=name: calls.append(_n) or _f(*a))

    def init(key):  # each seed its own start: the runs' parameters are batched
        return {"w": jax.random.normal(key, (3,)), "b": jnp.zeros(())}

    rates = gd.optim.adam(jnp.asarray([0.01, 0.05, 0.2]))
    kw = dict(steps=30, seeds=2, init_fn=init)
    one = gd.sweep(loss, params, rates, data, **kw)
    assert calls == ["compiled_fresh"]  # the runs' start and the chunk in one call
    calls.clear()
    chunked = gd.sweep(loss, params, rates, data, chunk_size=7, **kw)
    assert calls == ["compiled_fresh"] + ["compiled_chunk"] * 4
    np.testing.assert_array_equal(one.runs.losses, chunked.runs.losses)
    for name in params:
        np.testing.assert_array_equal(one.runs.params[name], chunked.runs.params[name])
    np.testing.assert_array_equal(one.runs.final_loss, chunked.runs.final_loss)
    for i in (0, 5):  # run i: setting i // 2, seed i % 2
        alone = gd.fit(
            loss,
            init(jax.random.split(jax.random.key(i % 2))[0]),
            gd.optim.adam([0.01, 0.05, 0.2][i // 2]),
            data,
            steps=30,
        )
        np.testing.assert_allclose(one.runs.losses[i], alone.losses, rtol=1e-5, atol=1e-7)


def test_a_fresh_run_with_non_finite_inputs_runs_no_step(problem):
    params, data = problem
    opt = gd.optim.sgd(0.1)
    static, leaves = gd.optim.partition(opt)
    prog = program.Program(loss, None, static, 8, 1, None, None, False, np.dtype("float32"))
    for w, moved in ((jnp.full(3, jnp.nan), 0), (params["w"], 5)):
        end, losses, *_, ok = start.compiled_fresh(
            prog, {**params, "w": w}, data, None, leaves, 0, 5, 5
        )
        assert int(end.t) == moved and bool(ok) == (moved > 0) and bool(end.stopped) == (moved == 0)
        assert np.count_nonzero(np.asarray(losses)) == moved


def test_nan_data_is_refused_by_name_and_the_run_computes_nothing(problem):
    params, (X, y) = problem
    bad = np.asarray(y).copy()
    bad[7] = np.nan
    with pytest.raises(gd.UsageError, match=r"`data\[1\]` holds 1 non-finite"):
        gd.fit(loss, params, gd.optim.sgd(0.1), (X, bad), steps=10**6)  # returns at once


def test_a_sweep_refuses_nan_inputs_by_name_after_a_first_chunk_of_no_step(problem):
    params, (X, y) = problem
    bad = np.asarray(y).copy()
    bad[7] = np.nan
    rates = gd.optim.sgd(jnp.asarray([0.01, 0.1]))
    with pytest.raises(gd.UsageError, match=r"`data\[1\]` holds 1 non-finite"):
        gd.sweep(loss, params, rates, (X, bad), steps=10**6)  # returns at once
    nan_b = {**params, "b": jnp.asarray(np.nan)}
    with pytest.raises(gd.UsageError, match=r"`params\['b'\]` holds 1 non-finite"):
        gd.sweep(loss, nan_b, rates, (X, y), steps=10**6)


@pytest.mark.parametrize("batch_size", [None, 16])
def test_the_final_loss_is_the_loss_of_the_returned_parameters(problem, batch_size):
    params, data = problem
    res = gd.fit(
        loss, params, gd.optim.adam(0.1), data, steps=25, batch_size=batch_size, key=0, chunk_size=8
    )
    np.testing.assert_allclose(res.final_loss, loss(res.params, data), rtol=1e-6)


@pytest.mark.parametrize("chunk_size, patience", [(None, None), (7, None), (7, 5)])
def test_a_sweeps_final_losses_hold_for_runs_that_ended_early(problem, chunk_size, patience):
    params, data = problem
    lrs = jnp.asarray([0.01, 0.1, 0.5, 1.2, 5.0])
    res = gd.sweep(
        loss, params, gd.optim.sgd(lrs), data, steps=40, chunk_size=chunk_size, patience=patience
    )
    direct = jax.vmap(loss, in_axes=(0, None))(res.runs.params, data)
    np.testing.assert_allclose(res.final_loss, direct, rtol=1e-5)  # float32, vmapped
    if patience is None:  # and member i is the standalone fit
        for i, lr in enumerate(np.asarray(lrs)):
            one = gd.fit(
                loss, params, gd.optim.sgd(float(lr)), data, steps=40, chunk_size=chunk_size
            )
            assert one.diverged_at == res.diverged_at[i]
            np.testing.assert_allclose(
                one.final_loss, res.final_loss[i], rtol=1e-4
            )  # 40 steps x1.5


def test_a_second_sweep_with_new_rates_compiles_nothing(problem):
    params, data = problem
    gd.sweep(loss, params, gd.optim.sgd(jnp.geomspace(1e-3, 0.1, 16)), data, steps=30)
    n = gd.train.compilations()
    res = gd.sweep(loss, params, gd.optim.sgd(jnp.geomspace(1e-2, 0.5, 16)), data, steps=45)
    assert gd.train.compilations() == n and res.losses.shape == (16, 45)


def test_sgd_with_a_constant_rate_keeps_no_count_and_a_schedule_does():
    params = {"w": jnp.ones(2)}
    assert jax.tree.leaves(gd.optim.sgd(0.1).init(params)) == []
    sched = gd.optim.sgd(gd.optim.exponential_decay(0.1, 10, 0.5))
    state = sched.init(params)
    _, state = sched.update({"w": jnp.ones(2)}, state, params)
    assert [int(x) for x in jax.tree.leaves(state)] == [1]


@pytest.mark.parametrize("chunk_size", [None, 3])
def test_a_non_finite_loss_with_finite_parameters_is_caught(chunk_size):
    # the loss jumps to +inf once w passes 0.5 while its gradient stays finite (the jump is
    # behind stop_gradient), so only the recorded loss shows it; w_t = 1 - 0.9^t
    def jump(params, _):
        w = params["w"]
        return (w - 1.0) ** 2 + jnp.where(jax.lax.stop_gradient(w) > 0.5, jnp.inf, 0.0)

    res = gd.fit(
        jump, {"w": jnp.zeros(())}, gd.optim.sgd(0.05), None, steps=20, chunk_size=chunk_size
    )
    first = next(t for t in range(20) if 1 - 0.9**t > 0.5)  # t = 7
    assert res.diverged and res.diverged_at == first
    np.testing.assert_allclose(res.params["w"], 1 - 0.9**first, rtol=1e-5)
    assert np.isinf(res.losses[first]) and np.isfinite(res.losses[:first]).all()


def test_finite_losses_whose_sum_overflows_are_a_false_alarm_not_a_divergence(monkeypatch):
    # every loss is 2e38, finite in float32; the lean chunk's running sum overflows at the
    # second record and raises its flag, and the careful replay finds nothing wrong
    def flat(params, _):
        return jnp.float32(2e38) + 0.0 * params["w"]

    replays = []

    def spy(name):  # a chunk of a run (run_chunk), or a fresh run of one chunk (_fresh)
        real = getattr(run_module.Run, name)

        def chunk(self, prog, *args):
            replays.append(prog.careful)
            return real(self, prog, *args)

        monkeypatch.setattr(run_module.Run, name, chunk)

    spy("run_chunk"), spy("_fresh")
    res = gd.fit(flat, {"w": jnp.ones(())}, gd.optim.sgd(0.1), None, steps=5)
    assert replays == [False, True]  # the lean chunk, then its careful replay
    assert not res.diverged and res.diverged_at == -1 and res.steps == 5
    np.testing.assert_array_equal(res.losses, np.full(5, 2e38, np.float32))
    np.testing.assert_array_equal(res.params["w"], 1.0)  # the gradient is zero


@pytest.mark.parametrize("chunk_size", [None, 3])
def test_a_sweeps_non_finite_loss_with_finite_parameters_is_caught_per_run(chunk_size):
    # the same jump, swept: run i has w_t = 1 - (1 - 2·lr_i)^t and its loss turns +inf at
    # the first t where w_t > 0.5; its parameters stay finite, only the records show it
    def jump(params, _):
        w = params["w"]
        return (w - 1.0) ** 2 + jnp.where(jax.lax.stop_gradient(w) > 0.5, jnp.inf, 0.0)

    lrs = np.array([0.005, 0.01, 0.05, 0.1], np.float32)
    res = gd.sweep(
        jump, {"w": jnp.zeros(())}, gd.optim.sgd(lrs), None, steps=40, chunk_size=chunk_size
    )
    first = [next((t for t in range(40) if 1 - (1 - 2 * lr) ** t > 0.5), -1) for lr in lrs]
    assert first == [-1, 35, 7, 4]  # lr = 0.005 needs 69 steps
    np.testing.assert_array_equal(res.diverged_at, first)
    w = [1 - (1 - 2 * lr) ** (t if t >= 0 else 40) for lr, t in zip(lrs, first, strict=True)]
    np.testing.assert_allclose(res.runs.params["w"], w, rtol=1e-5)
    assert res.best_index == 0  # the only run that did not diverge


def test_all_finite_reads_every_inexact_leaf_of_any_dtype_and_skips_integers():
    # the in-program check behind every refusal of non-finite inputs and every lean
    # chunk's divergence flag: one reduction over all leaves, whatever their dtypes
    tree = {
        "w": jnp.ones((3, 2)),
        "h": jnp.ones(4, jnp.float16),
        "b": jnp.ones((), jnp.bfloat16),
        "n": jnp.arange(3),
    }
    assert bool(jax.jit(program.all_finite)(tree))
    for name, bad in (("w", jnp.inf), ("h", jnp.nan), ("b", -jnp.inf)):
        x = tree[name]
        broken = {**tree, name: x.reshape(-1).at[-1].set(bad).reshape(x.shape)}
        assert not bool(jax.jit(program.all_finite)(broken)), name
    assert bool(program.all_finite({"n": jnp.arange(3)}))  # no inexact leaf: nothing to fail
    assert bool(program.all_finite({"h": jnp.asarray([65504.0], jnp.float16)}))  # its largest

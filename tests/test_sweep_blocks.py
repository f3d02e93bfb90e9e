"""A CPU sweep of many runs goes as equal blocks of runs, one program call each.

Each test shrinks ``pool.BLOCK_RUNS`` so that a handful of runs makes several blocks, and
compares with the same sweep in one block: the results must agree run by run (to float32
rounding: XLA may vectorize a narrower block differently), divergence, retirement and
best run included, and the blocks must share one compiled program.
"""

from __future__ import annotations

import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gdjax as gd
from gdjax.train import pool


def loss(params, batch):
    X, y = batch
    return jnp.mean((X @ params["w"] + params["b"] - y) ** 2)


@pytest.fixture(scope="module")
def problem():
    X = jax.random.normal(jax.random.key(1), (48, 3))
    y = X @ jnp.array([0.5, -1.0, 2.0]) - 0.2
    return {"w": jnp.zeros(3), "b": jnp.zeros(())}, (X, y)


# ten rates, the last three diverge (the loss's curvature is about 2·λmax(XᵀX/m) ≈ 3)
RATES = jnp.asarray([0.003, 0.01, 0.03, 0.1, 0.2, 0.4, 0.6, 1.5, 3.0, 9.0])


def both(monkeypatch, **kw):
    """(one block, blocks of 4) of the same sweep."""
    whole = gd.sweep(**kw)
    monkeypatch.setattr(pool, "BLOCK_RUNS", 4)
    return whole, gd.sweep(**kw)


def assert_same(a, b):
    np.testing.assert_array_equal(a.diverged_at, b.diverged_at)
    np.testing.assert_array_equal(a.retired_at, b.retired_at)
    np.testing.assert_array_equal(a.runs.steps, b.runs.steps)
    assert a.best_index == b.best_index
    # float32 rounding is relative to the losses' scale (~10 at step 0), not to a loss
    # that has fallen to 1e-5: hence the absolute floor
    np.testing.assert_allclose(a.losses, b.losses, rtol=1e-5, atol=1e-7, equal_nan=True)
    np.testing.assert_allclose(a.final_loss, b.final_loss, rtol=1e-5, atol=1e-7)
    for x, y in zip(jax.tree.leaves(a.runs.params), jax.tree.leaves(b.runs.params), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("chunk_size, patience", [(None, None), (7, None), (7, 6)])
def test_blocks_give_the_sweep_of_one_block(problem, monkeypatch, chunk_size, patience):
    params, data = problem
    whole, blocks = both(
        monkeypatch,
        loss_fn=loss,
        params=params,
        optimizer=gd.optim.sgd(RATES),
        data=data,
        steps=40,
        chunk_size=chunk_size,
        patience=patience,
    )
    if patience is None:  # the test exercises divergence (a growing loss retires first)
        assert (whole.diverged_at[-3:] >= 0).all() and (whole.diverged_at[:-3] == -1).all()
    else:  # and retirement
        assert (whole.retired_at >= 0).any()
    assert_same(whole, blocks)


def test_blocks_keep_each_seeds_mini_batches(problem, monkeypatch):
    params, data = problem
    whole, blocks = both(
        monkeypatch,
        loss_fn=loss,
        params=params,
        optimizer=gd.optim.sgd(RATES[:5]),
        data=data,
        steps=30,
        seeds=2,
        batch_size=16,
        chunk_size=10,
    )
    assert_same(whole, blocks)


def test_the_blocks_share_one_program_and_a_second_sweep_compiles_nothing(problem, monkeypatch):
    params, data = problem
    monkeypatch.setattr(pool, "BLOCK_RUNS", 4)

    def fresh(p, b):  # a loss of its own: nothing compiled for it yet
        return loss(p, b) * 1.0

    n = gd.train.compilations()
    gd.sweep(fresh, params, gd.optim.sgd(RATES[:7] / 2), data, steps=20)  # 2 blocks of 4
    assert gd.train.compilations() == n + 1
    res = gd.sweep(fresh, params, gd.optim.sgd(RATES[:7] / 3), data, steps=25)
    assert gd.train.compilations() == n + 1 and res.losses.shape == (7, 25)


@pytest.mark.parametrize(
    "runs, expected", [(4, (1, 4)), (5, (2, 3)), (10, (3, 4)), (13, (4, 4)), (16, (4, 4))]
)
def test_as_few_equal_blocks_as_cover_the_runs(monkeypatch, runs, expected):
    monkeypatch.setattr(pool, "BLOCK_RUNS", 4)
    p = pool.Pool(prog=None, data=None, key=None, n_runs=runs, steps=1)
    assert p._blocks(runs) == expected
    assert p._slots(runs) == expected[0] * expected[1]


def test_a_chunk_of_enough_runs_is_split_over_the_cores(problem, monkeypatch):
    # with two cores and blocks of at least 3 runs, 7 runs make 2 blocks (of 4: the last
    # slot repeats run 7), run at once on two threads, and agree with one block
    params, data = problem
    monkeypatch.setattr(pool, "_cores", lambda: 2)
    p = pool.Pool(prog=None, data=None, key=None, n_runs=7, steps=30)
    monkeypatch.setattr(pool, "MIN_BLOCK_RUNS", 3)
    monkeypatch.setattr(pool, "MIN_THREAD_RUN_STEPS", 90)  # 3 runs x 30 steps
    assert p._blocks(7) == (2, 4) and p._blocks(5) == (1, 5)
    p.steps = 29  # too little work per block for a thread: one block
    assert p._blocks(7) == (1, 7)
    monkeypatch.setattr(pool, "MIN_BLOCK_RUNS", 1 << 30)
    kw = dict(loss_fn=loss, params=params, optimizer=gd.optim.sgd(RATES[3:]), data=data, steps=30)
    whole = gd.sweep(**kw)
    monkeypatch.setattr(pool, "MIN_BLOCK_RUNS", 3)
    threads = []
    chunk = pool.compiled_chunk

    def spy(*args):
        threads.append(threading.current_thread().name)
        return chunk(*args)

    monkeypatch.setattr(pool, "compiled_chunk", spy)
    gd.sweep(**kw)  # compiles the block program (its first block runs alone)
    threads.clear()
    split = gd.sweep(**kw)
    assert set(threads[:2]) == {"MainThread", "gdjax-block_0"}  # one block each
    assert (whole.diverged_at >= 0).any()  # the replay of diverged runs is in it too
    assert_same(whole, split)


def test_an_error_in_a_block_on_another_thread_is_raised_by_the_sweep():
    def fails(i):
        if i == 1:
            raise RuntimeError("block 1 failed")
        return i

    with pytest.raises(RuntimeError, match="block 1 failed"):
        pool._each(fails, 3, warm=object())
    assert pool._each(lambda i: i * i, 5, warm=object()) == [0, 1, 4, 9, 16]

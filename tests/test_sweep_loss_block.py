"""A sweep's step loop writes its losses in small blocks (train/program.py): the same
records, run for run, as the standalone fit."""

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest

import gdjax as gd
from gdjax.train import records
from gdjax.train.program import Program


def _prog(capacity):
    return Program(
        loss_fn=None,
        value_and_grad=None,
        opt_static=None,
        capacity=capacity,
        record_every=1,
        n_examples=None,
        batch_size=None,
        trajectory=False,
        loss_dtype=np.dtype("float32"),
    )


def test_the_block_is_the_largest_power_of_two_that_fits_and_divides_the_capacity():
    block = records.loss_block
    f32 = np.dtype("float32")
    assert block(_prog(4096), (16,), f32) == 8  # 8 x 16 x 4 bytes = 512
    assert block(_prog(4096), (3,), f32) == 32  # 42 fit; the power of two below
    assert block(_prog(4096), (128,), f32) == 1  # one record is 512 bytes already
    assert block(_prog(12), (16,), f32) == 4  # 8 does not divide 12
    assert block(_prog(7), (16,), f32) == 1
    assert block(_prog(4096), (), f32) == 1  # one run: no blocks
    assert block(dataclasses.replace(_prog(4096), trajectory=True), (16,), f32) == 1
    small, large = np.zeros((16, 2, 2), f32), np.zeros((64, 2, 2), f32)  # 256, 1,024 bytes
    assert block(_prog(4096), (16,), f32, {"W": small}) == 8
    assert block(_prog(4096), (16,), f32, {"W": large}) == 1  # the body is not small then


@pytest.mark.parametrize("record_every", [1, 3])
def test_a_blocked_sweep_equals_each_fit_with_a_partial_last_block(record_every):
    # 37 steps: with blocks of 8 (16 runs) the last block is partial, and with
    # record_every=3 the last record is too (13 records, the last of one step)
    n1 = gd.models.get("N1")
    params, batch = n1.example()
    rates = jnp.asarray(np.geomspace(1e-2, 2.0, 16), jnp.float32)
    swept = gd.sweep(
        n1.loss, params, gd.optim.sgd(rates), batch, steps=37, record_every=record_every
    )
    assert swept.runs.losses.shape == (16, -(-37 // record_every))
    for i in (0, 7, 15):
        alone = gd.fit(
            n1.loss, params, gd.optim.sgd(rates[i]), batch, steps=37, record_every=record_every
        )
        np.testing.assert_allclose(swept.runs.losses[i], alone.losses, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(swept.runs.final_loss[i], alone.final_loss, rtol=1e-5)


def _squares(params, batch):
    X, y = batch
    return jnp.mean((X @ params["w"] + params["b"] - y) ** 2)


def test_a_blocked_sweep_that_diverges_keeps_each_runs_last_good_state():
    # least squares: gradient descent diverges above lr = 2 / (the Hessian's largest
    # eigenvalue); the replay (the careful step) is blocked too
    X = jnp.asarray(np.random.default_rng(0).normal(size=(8, 2)), jnp.float32)
    y = X @ jnp.asarray([1.0, -2.0]) + 0.5
    params = {"w": jnp.zeros(2), "b": jnp.zeros(())}
    rates = jnp.asarray(np.geomspace(1e-2, 1e3, 16), jnp.float32)
    swept = gd.sweep(_squares, params, gd.optim.sgd(rates), (X, y), steps=40)
    diverged = np.asarray(swept.runs.diverged)
    assert diverged.any() and not diverged.all()
    for i in (0, int(np.argmax(diverged)), 15):
        alone = gd.fit(_squares, params, gd.optim.sgd(rates[i]), (X, y), steps=40)
        assert bool(alone.diverged) == bool(diverged[i])
        assert int(alone.diverged_at) == int(swept.runs.diverged_at[i])
        np.testing.assert_allclose(swept.runs.losses[i], alone.losses, rtol=1e-5, atol=1e-6)

"""Compiling a new run's program with Python's garbage collector paused, and only then.

The loss records whether the collector runs while it is traced: a new program is traced
inside ``fit``/``sweep``'s pause, a warm call traces nothing and pauses nothing, and the
collector is as the caller left it afterwards, also when the call fails.
"""

from __future__ import annotations

import gc

import jax.numpy as jnp
import pytest

import gdjax as gd
from gdjax.train import compiles


def traced_with_collector(seen):
    def loss(params, batch):
        seen.append(gc.isenabled())
        X, y = batch
        return jnp.mean((X @ params["w"] - y) ** 2)

    return loss


def problem(n=3):
    X = jnp.arange(12.0 * n).reshape(12, n) / (12.0 * n)  # in [0, 1): rates up to 0.3 converge
    return {"w": jnp.zeros(n)}, (X, X.sum(1))


@pytest.mark.parametrize("kind", ["fit", "sweep"])
def test_a_new_program_is_traced_with_the_collector_paused(kind, monkeypatch):
    seen = []
    loss = traced_with_collector(seen)
    params, data = problem(5)  # shapes of this test's own: a program not built before
    if kind == "fit":
        res = gd.fit(loss, params, gd.optim.sgd(0.1), data, steps=20)
    else:
        res = gd.sweep(loss, params, gd.optim.sgd(jnp.asarray([0.05, 0.1])), data, steps=20)
        res = res.runs
    assert seen and not any(seen)  # every trace of the loss ran with it paused
    assert gc.isenabled()  # and it runs again after
    assert float(jnp.max(jnp.asarray(res.final_loss))) < float(jnp.mean(data[1] ** 2))

    calls = []
    monkeypatch.setattr(gc, "disable", lambda: calls.append("disable"))
    seen.clear()
    if kind == "fit":
        gd.fit(loss, params, gd.optim.sgd(0.2), data, steps=30)  # warm: new lr and steps
    else:
        gd.sweep(loss, params, gd.optim.sgd(jnp.asarray([0.2, 0.3])), data, steps=30)
    assert seen == [] and calls == []  # nothing traced, nothing paused


def test_a_collector_the_caller_paused_stays_paused_and_a_failure_restores_it():
    params, data = problem(7)
    gc.disable()
    try:
        gd.fit(traced_with_collector([]), params, gd.optim.sgd(0.1), data, steps=5)
        assert not gc.isenabled()
    finally:
        gc.enable()

    def broken(params, batch):
        raise RuntimeError("the loss fails while traced")

    with pytest.raises(RuntimeError, match="fails while traced"):
        gd.fit(broken, params, gd.optim.sgd(0.1), data, steps=5)
    assert gc.isenabled()
    with compiles.collector_paused(False):  # a warm call: nothing changes
        assert gc.isenabled()

"""A CPU sweep lays its small state out with the runs axis innermost (gdjax.train.layout).

The layout is a constraint on the step's input and output state: the logical shapes and
the arithmetic do not change, so the runs must equal the same sweep in the default
layout (to float32 rounding: XLA may fuse and vectorize the two differently) and each
run the standalone ``fit``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gdjax as gd
from gdjax.train import layout


def test_only_small_leaves_of_two_or_more_axes_are_laid_out():
    k = 8
    tree = {
        "W": jnp.zeros((k, 2, 2)),  # 4 elements per run: runs innermost
        "b": jnp.zeros((k, 2)),  # 2 per run: runs innermost
        "count": jnp.zeros((k,), jnp.int32),  # one per run: nothing to lay out
    }

    def constrained(tree, limit):
        jaxpr = jax.make_jaxpr(lambda t: layout.runs_innermost(t, limit))(tree)
        eqns = [e for e in jaxpr.eqns if "layout" in e.primitive.name]
        return sorted(tuple(e.invars[0].aval.shape) for e in eqns)

    assert constrained(tree, 64) == [(k, 2), (k, 2, 2)]
    assert constrained(tree, 0) == []
    # one large leaf (a product kernel's operand, 100 elements per run): none of them
    assert constrained({**tree, "big": jnp.zeros((k, 10, 10))}, 64) == []
    assert layout.limit() == (layout.MAX_ELEMENTS if jax.default_backend() == "cpu" else 0)

    # data larger than that: the step is left as it is (its time goes to the products)
    def step(state):
        return (state,)

    assert layout.step_with_runs_innermost(step, 64, jnp.zeros((569, 30))) is step
    assert layout.step_with_runs_innermost(step, 64, jnp.zeros((1, 2))) is not step


def test_the_laid_out_sweep_equals_the_default_layout_and_fit(monkeypatch):
    n1 = gd.models.get("N1")
    params, batch = n1.example()
    rates = jnp.asarray(np.geomspace(1e-2, 3.0, layout.MIN_RUNS), jnp.float32)

    def sweep():
        return gd.sweep(n1.loss, params, gd.optim.adam(rates), batch, steps=150)

    laid_out = sweep()
    monkeypatch.setattr(layout, "MAX_ELEMENTS", 0)  # part of the program's key
    before = gd.train.compilations()
    default = sweep()
    assert gd.train.compilations() == before + 1  # another program, not the same one
    np.testing.assert_allclose(laid_out.runs.losses, default.runs.losses, rtol=1e-5, atol=1e-7)
    assert laid_out.best_index == default.best_index
    for i in (0, 20, layout.MIN_RUNS - 1):
        alone = gd.fit(n1.loss, params, gd.optim.adam(rates[i]), batch, steps=150)
        np.testing.assert_allclose(laid_out.runs.losses[i], alone.losses, rtol=1e-5, atol=1e-7)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the layout is a CPU choice")
@pytest.mark.parametrize("runs", [3, layout.MIN_RUNS])
def test_the_compiled_sweep_carries_the_runs_innermost(runs):
    # XLA's text of the sweep's program (its start and first chunk) names the layout of
    # its loop state: N1's (K, 2, 2) weights stored {0,2,1} (runs fastest), not row-major
    # {2,1,0}; fewer than MIN_RUNS runs stay row-major (the copies in and out would cost
    # more)
    from gdjax.train import sweeping

    n1 = gd.models.get("N1")
    params, batch = n1.example()
    seen = {}
    real = sweeping.compiled_fresh

    def spy(*args):
        seen["args"] = args
        return real(*args)

    sweeping.compiled_fresh = spy
    try:
        rates = jnp.asarray(np.linspace(0.1, 0.3, runs), jnp.float32)
        gd.sweep(n1.loss, params, gd.optim.sgd(rates), batch, steps=5)
    finally:
        sweeping.compiled_fresh = real
    text = real.lower(*seen["args"]).compile().as_text()
    innermost = f"f32[{runs},2,2]{{0,2,1}}" in text
    assert innermost == (runs >= layout.MIN_RUNS)

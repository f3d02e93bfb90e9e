"""Assertion helpers shared by the tests."""

from __future__ import annotations

import jax
import numpy as np


def assert_tree_allclose(actual, expected, *, rtol=1e-7, atol=0.0, err_msg=""):
    """``np.testing.assert_allclose`` over two pytrees of the same structure."""
    s_a, s_e = jax.tree_util.tree_structure(actual), jax.tree_util.tree_structure(expected)
    assert s_a == s_e, f"structures differ: {s_a} vs {s_e}"
    pairs = zip(
        jax.tree_util.tree_flatten_with_path(actual)[0], jax.tree_util.tree_leaves(expected)
    )
    for (path, a), e in pairs:
        np.testing.assert_allclose(
            np.asarray(a),
            np.asarray(e),
            rtol=rtol,
            atol=atol,
            err_msg=f"{err_msg} at {jax.tree_util.keystr(path)}",
        )


def autodiff_adjoints(model, params, batch, shapes):
    """dL/d(name) for each named intermediate: the gradient w.r.t. a zero probe on it.

    ``shapes`` maps each name to the shape of its intermediate.
    """
    import jax.numpy as jnp

    from gdjax.naming import probe_adjoints

    dtype = jax.tree.leaves(params)[0].dtype
    like = {k: jnp.zeros(s, dtype) for k, s in shapes.items()}
    return probe_adjoints(model.loss, params, batch, like)


def against_autodiff(model, params, batch, direction, *, h=1e-6):
    """At a stack of points (leading axis), in one jitted vmapped program: the hand-written
    backprop, autodiff's loss, grads and adjoints, and a central difference of the loss
    along ``direction`` next to the hand-written directional derivative."""
    import jax.numpy as jnp

    def one(params, batch, v):
        bp = model.backprop(params, batch)
        shapes = {k: a.shape for k, a in bp.adjoints.items()}
        loss, grads = jax.value_and_grad(model.loss)(params, batch)
        adjoints = autodiff_adjoints(model, params, batch, shapes)

        def step(s):
            return jax.tree.map(lambda p, d: p + s * h * d, params, v)

        fd = (model.loss(step(1.0), batch) - model.loss(step(-1.0), batch)) / (2 * h)
        pairs = zip(jax.tree.leaves(bp.grads), jax.tree.leaves(v), strict=True)
        directional = sum(jnp.sum(g * d) for g, d in pairs)
        return bp, loss, grads, adjoints, fd, directional

    return jax.jit(jax.vmap(one))(params, batch, direction)

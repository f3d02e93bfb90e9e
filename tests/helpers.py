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

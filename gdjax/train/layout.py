r"""A sweep's small arrays with the runs axis innermost in memory (XLA's CPU backend).

A sweep carries, for each parameter of shape ``s``, one array of shape ``(K, *s)``: the
K runs' copies. XLA stores it row-major, so for N1's 2×2 weight the K copies of one
element lie 4 floats apart, and each elementwise operation of a step (the small
products of :mod:`gdjax.train.dots` are such operations) reads its operands with a
stride. Laid out with the runs axis innermost (a layout constraint on the step's input
and output state; the logical shape, and so every index, is unchanged) the same
operation reads K consecutive floats of each element. N1, SGD, 1,024 runs × 100 steps:
the chunk alone from 1.48–1.52 to 1.10 ms (10th percentile of 300 calls, in three
processes each).

Only a state whose every leaf has at most :data:`MAX_ELEMENTS` elements per run, with
data of at most as many elements per leaf, in a program of at least :data:`MIN_RUNS`
runs, is laid out so. A large matrix is multiplied
by a product kernel, which wants its rows whole; a state laid out half one way and half
the other pays for copies between the two (a 30-8-1 tanh network's sweep with only its
small leaves laid out so: 8 % slower); and with more data the step's time goes to the
products with it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

try:  # an experimental API (as of JAX 0.10, the version this was measured with)
    from jax.experimental.layout import Layout, with_layout_constraint
except ImportError:  # pragma: no cover
    Layout = with_layout_constraint = None
_SUPPORTED = with_layout_constraint is not None and jax.__version_info__ >= (0, 10)

__all__ = [
    "MAX_ELEMENTS",
    "MIN_RUNS",
    "limit",
    "runs_innermost",
    "small",
    "step_with_runs_innermost",
]

#: Leaves of at most this many elements per run get the runs axis innermost (0: none).
MAX_ELEMENTS = 64
#: ... in a program of at least this many runs: with fewer, the copies in and out of the
#: layout cost more than the strided reads (N1, SGD, 1,000 steps: 16 runs 2.94 -> 3.69
#: ms with it, 64 runs 6.42 -> 6.17, 256 runs x 300 steps 4.79 -> 3.99). Read when a
#: program is traced: the number of runs is in its shapes.
MIN_RUNS = 64


def limit() -> int:
    """The size limit a sweep compiled now uses: :data:`MAX_ELEMENTS` on CPU, 0 (the
    default layout) elsewhere, and with a JAX older than 0.10 (its layout API was
    another)."""
    if not _SUPPORTED or jax.default_backend() != "cpu":
        return 0
    return MAX_ELEMENTS


def small(tree: Any, max_elements: int) -> bool:
    """Whether every leaf of ``tree`` (leaves ``(K, *shape)``) holds at most
    ``max_elements`` elements per run."""
    leaves = jax.tree_util.tree_leaves(tree)
    return max_elements > 0 and all(math.prod(x.shape[1:]) <= max_elements for x in leaves)


def runs_innermost(tree: Any, max_elements: int) -> Any:
    """``tree`` (leaves ``(K, *shape)``) with every leaf of ``2 ≤ ndim`` laid out with
    its runs axis innermost, when every leaf is :func:`small` (else as it is: a state
    laid out half one way and half the other pays for the copies between them)."""

    def one(x: Any) -> Any:
        if x.ndim < 2:
            return x
        return with_layout_constraint(x, Layout(major_to_minor=(*range(1, x.ndim), 0)))

    return jax.tree_util.tree_map(one, tree) if small(tree, max_elements) else tree


def step_with_runs_innermost(step: Callable, max_elements: int, data: Any) -> Callable:
    """A vmapped step ``(state, *rest) -> (state, *outputs)`` whose state (its
    parameters and optimizer state) goes in and comes out laid out so, when ``data``
    (shared by the runs) is small too: with more, the step's time goes to products with
    the data, and a layout chosen for the state only moves it (breast cancer's 569 × 30
    with 64 runs of a logistic regression: 4 % slower)."""
    data_small = all(np.size(x) <= max_elements for x in jax.tree_util.tree_leaves(data))
    if max_elements <= 0 or not data_small:
        return step

    def laid_out(state):  # the parameters and optimizer state decide together
        if jax.tree_util.tree_leaves(state.params)[0].shape[0] < MIN_RUNS:
            return state
        params, opt_state = runs_innermost((state.params, state.opt_state), max_elements)
        return state._replace(params=params, opt_state=opt_state)

    def constrained(state, *rest):
        new, *outputs = step(laid_out(state), *rest)
        return (laid_out(new), *outputs)

    return constrained

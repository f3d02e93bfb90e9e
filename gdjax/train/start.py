"""Around the chunk: the state at step 0, and a kept copy.

A run begins with :func:`compiled_start`: one small program that builds the state at step
0 and checks that every value of ``params`` and ``data`` is finite, a flag that the first
chunk reads before its first step. A chunk consumes (donates) the state it is given, so
the host takes :data:`keep` of a state it still needs. A fresh run of one chunk is
:data:`compiled_fresh`: the start and the chunk in one program.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gdjax.train.factory import optimizer_of
from gdjax.train.program import Params, Program, State, all_finite, compiled_chunk, run_chunk

__all__ = ["compilations", "compiled_fresh", "compiled_start", "init_state", "keep"]


def init_state(opt_static: Any, settings_axis: bool, batched_params: bool, params, opt_leaves):
    """The state at step 0 (with a leading runs axis in a sweep)."""

    def one(params, leaves):
        return State(
            params=params,
            opt_state=optimizer_of(opt_static, leaves).init(params),
            t=jnp.zeros((), jnp.int32),
            stopped=jnp.zeros((), bool),
            diverged_at=jnp.full((), -1, jnp.int32),
        )

    if settings_axis:
        return jax.vmap(one, in_axes=(0 if batched_params else None, 0))(params, opt_leaves)
    return one(params, opt_leaves)


def _start(opt_static, settings_axis, batched_params, params, opt_leaves, data):
    state = init_state(opt_static, settings_axis, batched_params, params, opt_leaves)
    if settings_axis:  # the runs' counters come from the host (see compiled_start)
        state = state._replace(t=None, stopped=None, diverged_at=None)
    return state, all_finite((params, data))


_compiled_start = jax.jit(_start, static_argnums=(0, 1, 2))


def compiled_start(prog: Program, params: Params, opt_leaves, data) -> tuple[State, jax.Array]:
    """The state at step 0, and whether every value of ``params`` and ``data`` is
    finite: one small compiled program, keyed by the optimizer's static part and the
    shapes only.

    In a sweep the state has no counters (None): the chunk makes them (every run it is
    given is live, at its first step). As outputs of this program they would be three
    more large buffers, and XLA's CPU runtime runs a program of more than eight
    operations on large buffers, not one chain of them, on its thread pool instead of
    inline (N1, SGD, 1,024 runs: 48 µs instead of 123); as NumPy arrays, three host
    transfers at every chunk.
    """
    return _compiled_start(
        prog.opt_static, prog.settings_axis, prog.batched_params, params, opt_leaves, data
    )


def _fresh(prog: Program, params, data, key, opt_leaves, t0, n_steps, n_records):
    """:func:`_start` and :func:`~gdjax.train.program.run_chunk` in one program, for one
    run or a sweep's runs; returns the chunk's outputs and the inputs' check.

    For one run the state at step 0 is made in a ``lax.cond`` on the check: its buffers
    are then the conditional's own, which the loop may update in place. Made outside it,
    the loop would start from the caller's (undonated) parameters, and XLA would copy
    each one into it as an operation of its own, putting the program over the CPU
    runtime's inline-execution threshold (N1: 180 µs a call instead of 65). A sweep's
    runs are made by broadcasting (new buffers already), and a chunk runs no step of
    them unless the check holds.
    """
    if prog.settings_axis:
        opt_static, batched = prog.opt_static, prog.batched_params
        state, ok = _start(opt_static, True, batched, params, opt_leaves, data)
        return (*run_chunk(prog, state, data, key, opt_leaves, t0, n_steps, n_records, ok), ok)

    def begin(params):
        return init_state(prog.opt_static, False, False, params, opt_leaves)

    def refused(params):  # an input is not finite: no step runs, the host names it
        return begin(jax.tree.map(jnp.zeros_like, params))._replace(stopped=jnp.ones((), bool))

    ok = all_finite((params, data))
    state = jax.lax.cond(ok, begin, refused, params)
    return (*run_chunk(prog, state, data, key, opt_leaves, t0, n_steps, n_records, ok), ok)


# A fresh run's first chunk (for one run: when it is the only one, the common short
# run): one program call, not two (N1, 200 steps: ~65 µs instead of ~85 for the start
# and the chunk; a sweep of 1,024 N1 runs × 100 steps: ~60 µs less). Its parameters are
# the caller's, so nothing is donated.
compiled_fresh = jax.jit(_fresh, static_argnums=0)


def compilations() -> int:
    """Run programs (chunks, and fresh runs of one chunk) compiled so far in this
    process: the sizes of their jit caches."""
    return compiled_chunk._cache_size() + compiled_fresh._cache_size()


_copy = jax.jit(lambda tree: jax.tree.map(jnp.copy, tree))


def keep(tree: Any) -> Any:
    """A copy of a state (or any tree), for a chunk to consume while the host keeps this
    one; a tree already on the host is its own (a chunk copies host arrays in)."""
    if all(isinstance(x, np.ndarray) for x in jax.tree_util.tree_leaves(tree)):
        return tree
    return _copy(tree)

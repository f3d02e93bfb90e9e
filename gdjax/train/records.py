"""What a chunk returns besides its state: its records, and the final loss.

A chunk records the loss (and, if asked, the parameters and a monitor's output) at the
first step of every ``record_every``; its buffers hold ``prog.capacity`` records, the
records it did not make blank (NaN, zeros in an integer leaf). Where the run ends in it,
it also returns the loss of the final parameters on the whole data.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["LOSS_BLOCK_BYTES", "blank", "final_loss", "loss_block", "loss_of", "record_index"]


#: A sweep's step loop writes its losses into a block of at most this many bytes (a
#: multiple of records), copied into the chunk's buffer after each block.
LOSS_BLOCK_BYTES = 512


def loss_block(prog: Any, lead: tuple, dtype, carried: Any = ()) -> int:
    """Records per block of a sweep's loss buffer: the largest power of two dividing
    ``prog.capacity`` with a block of at most :data:`LOSS_BLOCK_BYTES` (1: no blocks,
    also where an array of ``carried``, the loop's state and data, is larger: the body
    is not small then anyway).

    XLA's CPU runtime runs a loop body in the calling thread, one operation after the
    other, when every buffer it touches is at most 512 bytes (or it has at most 8
    operations); otherwise it hands each iteration's operations to its thread pool. The
    body that writes each step's losses into the whole (capacity × runs) buffer is
    never small; one that writes a small block can be (a hand-written N1 sweep of 16
    runs × 1,000 steps: 1.56 -> 0.86 ms). With a trajectory or a monitor the buffers
    are large anyway.
    """
    if not lead or prog.trajectory or prog.monitor is not None:
        return 1
    if any(np.size(x) * x.dtype.itemsize > LOSS_BLOCK_BYTES for x in jax.tree.leaves(carried)):
        return 1
    limit = LOSS_BLOCK_BYTES // (np.dtype(dtype).itemsize * lead[0])
    block = 1
    while block * 2 <= limit and prog.capacity % (block * 2) == 0:
        block *= 2
    return block


def record_index(t, t0, record_every: int):
    """The records made from step ``t0`` to step ``t``: ``ceil((t - t0) / record_every)``
    (a record's first step is ``t0 + i * record_every``; the last may end early, at the
    run's end). The loop carries the step alone, so nothing is left to add after it."""
    if record_every == 1:
        return t - t0
    return -((t0 - t) // record_every)


def blank(shape, dtype) -> jax.Array:
    """A record buffer: NaN for float entries (unrecorded), zeros otherwise."""
    if jnp.issubdtype(dtype, jnp.inexact):
        return jnp.full(shape, jnp.nan, dtype)
    return jnp.zeros(shape, dtype)


def loss_of(loss_fn: Callable, params: Any, data: Any, batched: bool) -> jax.Array:
    """The loss of ``params`` on the whole ``data`` (per run, with ``batched``)."""
    return jax.vmap(loss_fn, in_axes=(0, None))(params, data) if batched else loss_fn(params, data)


final_loss = jax.jit(loss_of, static_argnums=(0, 3))

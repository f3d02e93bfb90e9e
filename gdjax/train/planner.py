"""How long a chunk is: from XLA's cost estimate of one step, never from ``steps``.

A chunk is what the host waits for between progress updates and checkpoints. Its
*capacity* (the records its buffers hold) is part of the compiled program; the number
of records a chunk actually makes is an argument. So the capacity depends only on the
step's cost (a chunk of about ``CHUNK_SECONDS``), the record interval and the size of a
recorded trajectory, and a run of another length reuses the program.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

MAX_RECORDS = 1 << 16  # records a chunk holds at most
BUFFER_BYTES = 1 << 20  # a chunk's loss buffer over all runs (filled and read every chunk)
CHUNK_SECONDS = 0.25  # target wall time of one chunk: a few progress updates a second
TRAJECTORY_BYTES = 1 << 28  # what a chunk's recorded parameters may take on the device

# Nominal throughput used to turn XLA's cost estimate of one step into seconds.
_SPEED = {"cpu": (1e10, 1e10, 2e-7), "gpu": (2e13, 1e12, 2e-6), "tpu": (5e13, 1e12, 2e-6)}
_MEMO: dict[Any, float] = {}


def abstract(tree: Any) -> tuple:
    """A hashable description of ``tree``'s structure, shapes and dtypes."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    return treedef, tuple(
        (x.shape, x.dtype) if hasattr(x, "dtype") else (jnp.shape(x), jnp.result_type(x))
        for x in leaves
    )


def step_seconds(memo_key: Any, one_step: Callable, *args: Any) -> float:
    """A deterministic estimate of one step's time from XLA's flop and byte counts.

    ``one_step(*args)`` is lowered (never run); the estimate is memoised under
    ``memo_key`` (the program and the argument shapes), so repeated calls pay once.
    """
    memo_key = (memo_key, abstract(args), jax.default_backend())
    if memo_key in _MEMO:
        return _MEMO[memo_key]
    try:
        cost = jax.jit(one_step).lower(*args).cost_analysis()
        if isinstance(cost, list | tuple):  # older jax: one dict per computation
            cost = cost[0] if cost else {}
        flops, nbytes = float(cost.get("flops", 0.0)), float(cost.get("bytes accessed", 0.0))
    except Exception:  # cost analysis is best effort; any failure means "unknown"
        flops, nbytes = 1e6, 1e6
    f, b, overhead = _SPEED.get(jax.default_backend(), _SPEED["gpu"])
    seconds = max(flops / f, nbytes / b) + overhead
    if len(_MEMO) > 256:
        _MEMO.clear()
    _MEMO[memo_key] = seconds
    return seconds


def _pow2_floor(n: int) -> int:
    return 1 << (max(1, n).bit_length() - 1)


def capacity(step_s: float, record_every: int, trajectory_bytes: int = 0, runs: int = 1) -> int:
    """Records per chunk: about ``CHUNK_SECONDS`` of steps, a power of two, with a loss
    buffer of at most ``BUFFER_BYTES`` for the ``runs`` of a sweep."""
    records = int(CHUNK_SECONDS / (step_s * record_every))
    records = min(records, BUFFER_BYTES // (4 * runs))
    if trajectory_bytes:
        records = min(records, TRAJECTORY_BYTES // max(1, trajectory_bytes))
    return _pow2_floor(min(MAX_RECORDS, max(1, records)))


def chunk_records(t: int, steps: int, record_every: int, cap: int, every: int | None) -> int:
    """Records the chunk starting at step ``t`` makes: at most ``cap``, ending at ``steps``
    and at the next multiple of ``every`` (checkpoints fall on its multiples)."""
    end = steps if every is None else min(steps, (t // every + 1) * every)
    return max(1, min(cap, -(-(end - t) // record_every)))


def sized(
    prog: Any, chunk_size: int | None, one_run: tuple, *, runs: int = 1, trajectory_bytes: int = 0
) -> Any:
    """``prog`` with its chunk capacity: from ``chunk_size`` steps, or from XLA's cost of one
    step of one run (``one_run``: its state, data, key and optimizer leaves, arrays or
    shapes) times ``runs``. Logs why, when this is a program not built before."""
    from gdjax.train.compiles import log_compile
    from gdjax.train.program import single_step

    if chunk_size is not None:
        cap = max(1, chunk_size // prog.record_every)
    else:
        one = dataclasses.replace(prog, settings_axis=False)
        seconds = step_seconds(one, functools.partial(single_step, one), *one_run) * runs
        cap = capacity(seconds, prog.record_every, trajectory_bytes, runs=runs)
    prog = dataclasses.replace(prog, capacity=cap)
    log_compile(prog)
    return prog


def planned(
    prog: Any,
    chunk_size: int | None,
    params,
    data,
    key,
    opt_leaves,
    *,
    runs: int = 1,
    trajectory_bytes: int = 0,
) -> tuple[Any, Any]:
    """``prog`` sized (:func:`sized`) from one run's shapes (``params``, ``opt_leaves`` and
    ``key`` of one run; nothing is computed), and the shapes of one record of its
    monitor (None without one)."""
    from gdjax.train.program import monitor_like
    from gdjax.train.start import init_state

    state = jax.eval_shape(
        lambda p, o: init_state(prog.opt_static, False, False, p, o), params, opt_leaves
    )
    one = (state, data, key, opt_leaves)
    prog = sized(prog, chunk_size, one, runs=runs, trajectory_bytes=trajectory_bytes)
    return prog, monitor_like(prog, *one)


def remember(table: dict, key: Any, value: Any, limit: int = 256) -> Any:
    """``table[key] = value`` in a memo of at most ``limit`` entries; returns ``value``."""
    if len(table) >= limit:
        table.clear()
    table[key] = value
    return value

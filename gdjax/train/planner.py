"""How long a chunk is: from an estimate of one step's cost, never from ``steps``.

A chunk is what the host waits for between progress updates and checkpoints. Its
*capacity* (the records its buffers hold) is part of the compiled program; the number
of records a chunk actually makes is an argument. So the capacity depends only on the
step's cost (a chunk of about ``CHUNK_SECONDS``), the record interval and the size of a
recorded trajectory, and a run of another length reuses the program.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

MAX_RECORDS = 1 << 16  # records a chunk holds at most
SWEEP_RECORDS = 1 << 12  # ... in a sweep (see capacity)
BUFFER_BYTES = 1 << 20  # a chunk's loss buffer over all runs (filled and read every chunk)
CHUNK_SECONDS = 0.25  # target wall time of one chunk: a few progress updates a second
TRAJECTORY_BYTES = 1 << 28  # what a chunk's recorded parameters may take on the device

# Nominal throughput used to turn the estimated cost of one step into seconds.
_SPEED = {"cpu": (1e10, 1e10, 2e-7), "gpu": (2e13, 1e12, 2e-6), "tpu": (5e13, 1e12, 2e-6)}
_MEMO: dict[Any, float] = {}


def abstract(tree: Any) -> tuple:
    """A hashable description of ``tree``'s structure, shapes and dtypes."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    return treedef, tuple(
        (x.shape, x.dtype) if hasattr(x, "dtype") else (jnp.shape(x), jnp.result_type(x))
        for x in leaves
    )


def batch_shapes(data: Any, batch_size: int | None) -> Any:
    """The shapes of one step's batch: ``data``'s, with ``batch_size`` examples if given."""

    def one(x):
        shape = jnp.shape(x) if batch_size is None else (batch_size, *jnp.shape(x)[1:])
        return jax.ShapeDtypeStruct(shape, jnp.result_type(x))

    return jax.tree_util.tree_map(one, data)


def step_seconds(prog: Any, params: Any, data: Any) -> float:
    """A deterministic estimate of one step's time, from the loss's forward pass.

    The forward pass is traced once (never lowered, compiled or run) and its jaxpr
    counted (:func:`jaxpr_cost`); a step is about three forward passes (the loss and its
    gradient) and a few passes over the parameters (the update). Memoised per loss,
    shapes and backend.
    """
    batch = batch_shapes(data, prog.batch_size)
    memo_key = (prog.loss_fn, abstract((params, batch)), jax.default_backend())
    if memo_key in _MEMO:
        return _MEMO[memo_key]
    try:
        flops, nbytes = jaxpr_cost(jax.make_jaxpr(prog.loss_fn)(params, batch).jaxpr)
    except Exception:  # the estimate is best effort; any failure means "unknown"
        flops, nbytes = 1e6, 1e6
    sizes = [(_size(x), _size(x) * jnp.dtype(x.dtype).itemsize) for x in jax.tree.leaves(params)]
    n_params, p_bytes = sum(n for n, _ in sizes), sum(b for _, b in sizes)
    f, b, overhead = _SPEED.get(jax.default_backend(), _SPEED["gpu"])
    seconds = max((3 * flops + 10 * n_params) / f, (3 * nbytes + 4 * p_bytes) / b) + overhead
    if len(_MEMO) > 256:
        _MEMO.clear()
    _MEMO[memo_key] = seconds
    return seconds


def jaxpr_cost(jaxpr: Any) -> tuple[float, float]:
    """(flops, bytes) of a jaxpr, roughly as XLA's cost analysis counts them after fusion:
    ``2·m·n·k`` for a matrix product (and its convolution analogue), one flop per output
    element of any other operation; bytes for the jaxpr's inputs and outputs and each
    product's operands (elementwise chains fuse). A scan's body counts ``length`` times,
    a loop's body once, a ``cond`` its dearest branch."""
    flops = 0.0
    nbytes = float(sum(_nbytes(v) for v in (*jaxpr.invars, *jaxpr.outvars)))
    for eqn in jaxpr.eqns:
        subs = [j for v in eqn.params.values() for j in _jaxprs(v)]
        name = eqn.primitive.name
        if subs:
            costs = [jaxpr_cost(j) for j in subs]
            if name == "cond":
                f, b = max(costs)
            else:
                f, b = sum(c[0] for c in costs), sum(c[1] for c in costs)
            times = eqn.params.get("length", 1) if name == "scan" else 1
            flops, nbytes = flops + times * f, nbytes + times * b
            continue
        out = sum(_size(v.aval) for v in eqn.outvars)
        if name in ("dot_general", "conv_general_dilated"):
            lhs, rhs = (v.aval for v in eqn.invars[:2])
            if name == "dot_general":
                (contract, _), _ = eqn.params["dimension_numbers"]
                k = 1
                for d in contract:
                    k *= lhs.shape[d]
            else:  # each output element: one kernel window over the input features
                k = _size(rhs) // max(1, rhs.shape[eqn.params["dimension_numbers"].rhs_spec[0]])
            flops += 2.0 * out * k
            nbytes += sum(_nbytes(v) for v in (*eqn.invars, *eqn.outvars))
        else:
            flops += out
    return flops, nbytes


def _jaxprs(value: Any) -> list:
    """The jaxprs inside an equation's parameter (a closed or open jaxpr, or a tuple)."""
    if hasattr(value, "eqns"):
        return [value]
    if hasattr(getattr(value, "jaxpr", None), "eqns"):
        return [value.jaxpr]
    if isinstance(value, tuple | list):
        return [j for v in value for j in _jaxprs(v)]
    return []


def _size(aval: Any) -> int:
    n = 1
    for d in getattr(aval, "shape", ()):
        n *= int(d)
    return n


def _nbytes(var: Any) -> int:
    aval = getattr(var, "aval", None)
    dtype = getattr(aval, "dtype", None)
    if dtype is None or not hasattr(dtype, "itemsize"):
        return 0
    return _size(aval) * dtype.itemsize


def _pow2_floor(n: int) -> int:
    return 1 << (max(1, n).bit_length() - 1)


def capacity(step_s: float, record_every: int, trajectory_bytes: int = 0, runs: int = 1) -> int:
    """Records per chunk: about ``CHUNK_SECONDS`` of steps, a power of two, with a loss
    buffer of at most ``BUFFER_BYTES`` for the ``runs`` of a sweep, and at most
    ``SWEEP_RECORDS`` records there.

    A sweep's buffer is filled when a chunk starts and scanned when it ends, whatever
    the records made: N1, 16 runs × 20 steps, 1.58 ms a call with 16,384 records (1 MiB),
    1.16 ms with 4,096."""
    records = int(CHUNK_SECONDS / (step_s * record_every))
    records = min(records, BUFFER_BYTES // (4 * runs), MAX_RECORDS if runs == 1 else SWEEP_RECORDS)
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

    if chunk_size is not None:
        cap = max(1, chunk_size // prog.record_every)
    else:
        state, data = one_run[:2]
        seconds = step_seconds(prog, state.params, data) * runs
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

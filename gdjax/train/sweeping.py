"""``gd.sweep``: many runs (hyperparameter settings × seeds) as one vmapped program.

The runs advance together, one unbatched loop over the steps whose body is ``jax.vmap``
of :func:`gdjax.fit`'s step. Between chunks, runs that diverged are *retired*: their
chunk is replayed with the careful step (so each keeps its last finite state and the
step it diverged at), and the live runs are re-packed, so the compute follows the live
runs. Re-packed sizes are powers of two (one compilation per size at most).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from gdjax._validate import UsageError, as_key, check_finite, check_int
from gdjax.train import args as A
from gdjax.train import planner
from gdjax.train.loop import Progress, nan_after
from gdjax.train.placement import fetch, place
from gdjax.train.program import (
    Program,
    compiled_chunk,
    compiled_init,
    final_loss,
    monitor_like,
)
from gdjax.train.results import FitResult, SweepResult
from gdjax.train.settings import optimizer_parts

Params = Any
Data = Any


def _take(tree: Any, idx: Any) -> Any:
    """Rows ``idx`` of every leaf, gathered on the host (no eager device op to compile)."""
    return jax.tree_util.tree_map(lambda x: np.asarray(x)[idx], fetch(tree))


def _one(tree: Any) -> Any:
    """The shapes of one run: every leaf without its leading runs axis."""
    return jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), tree)


def _padded(idx: np.ndarray, size: int) -> np.ndarray:
    """``idx`` followed by repeats of its last entry, ``size`` in all."""
    return np.concatenate([idx, np.repeat(idx[-1:], size - idx.size)])


def _sweep_mesh(mesh: Any, m: int | None):
    """(devices of "settings", the batch sharding or None, the data sharding) of a
    sweep's mesh, or a refusal that says what the mesh needs."""
    if not isinstance(mesh, Mesh) or "settings" not in mesh.axis_names:
        raise UsageError(
            "sweep: `mesh` must be a jax.sharding.Mesh with an axis named \"settings\" (the "
            "runs are split over it), e.g. Mesh(np.array(jax.devices()), (\"settings\",))."
        )
    extra = set(mesh.axis_names) - {"settings", "data"}
    if extra:
        raise UsageError(
            f"sweep: `mesh` axes must be \"settings\" and optionally \"data\", got "
            f"{mesh.axis_names}."
        )
    if "data" not in mesh.axis_names:
        return mesh.shape["settings"], None, NamedSharding(mesh, PartitionSpec())
    n_data = mesh.shape["data"]
    if m is None or m % n_data:
        raise UsageError(
            f"sweep: the mesh's \"data\" axis has {n_data} devices, but `data` has "
            f"{m} examples; pass a multiple of {n_data} (or a mesh without \"data\")."
        )
    batch = NamedSharding(mesh, PartitionSpec("data"))
    return mesh.shape["settings"], batch, batch


def sweep(
    loss_fn,
    params: Params,
    optimizer: Any,
    data: Data = None,
    *,
    steps: int,
    learning_rates: Any = None,
    hyperparams: Mapping[str, Any] | None = None,
    seeds: int | Any = None,
    init_fn: Callable[[jax.Array], Params] | None = None,
    batch_size: int | None = None,
    key: jax.Array | int | None = None,
    record_every: int = 1,
    value_and_grad: Callable[[Params, Data], Any] | None = None,
    progress: bool | None = None,
    chunk_size: int | None = None,
    monitor: Callable[..., Any] | None = None,
    mesh: Mesh | None = None,
) -> SweepResult:
    """Run :func:`fit` for many hyperparameter settings and seeds as one vmapped program.

    Args:
      loss_fn, params, data, steps, batch_size, record_every, value_and_grad: as in
        :func:`fit`; ``params`` is every run's start unless ``init_fn`` is given.
      optimizer: the same as :func:`fit`'s, holding K settings: a ``gd.optim`` rule built
        with 1-D arrays (``gd.optim.adam(jnp.logspace(-4, -1, 32), b1=0.9)``); or a factory
        called with keyword hyperparameters inside the program (``gd.optim.sgd``,
        ``lambda learning_rate, b1: optax.adam(learning_rate, b1=b1)``) together with
        ``learning_rates`` or ``hyperparams``.
      learning_rates: 1-D array; shorthand for ``hyperparams={"learning_rate": ...}``.
      hyperparams: name -> 1-D array, all of length K (zipped; see :func:`grid`).
      seeds: an int S (seeds ``0 … S-1``) or a 1-D array of ints, crossed with the
        settings: K·S runs, the seed varying fastest. Seed ``s`` has the key
        ``jax.random.key(s)`` (or ``fold_in(key, s)`` when ``key`` is given), split into
        ``k_init, k_data``: ``init_fn(k_init)`` draws its parameters, ``k_data`` its
        mini-batch order.
      init_fn: ``init_fn(key) -> params`` (needs ``seeds``).
      key: without seeds, the mini-batch key (or int seed) shared by every run.
      progress, chunk_size, monitor: as in :func:`fit` (``runs.monitor`` has a leading
        runs axis).
      mesh: a ``jax.sharding.Mesh`` with an axis ``"settings"``: the runs are split over
        its devices (padded to a multiple of their number), the data replicated; a second
        axis ``"data"`` also shards every run's examples. In one process or several
        (``jax.distributed``; every process passes the same arguments).

    Returns:
      A :class:`SweepResult`. Run ``i`` equals ``fit`` with setting ``i`` (to float32
      rounding: the vmapped arithmetic may be ordered differently).
    """
    if not callable(loss_fn):
        raise UsageError(f"`loss_fn` must be a function loss_fn(params, batch), got {loss_fn!r}.")
    steps = check_int("steps", steps)
    record_every = check_int("record_every", record_every)
    if chunk_size is not None:
        chunk_size = check_int("chunk_size", chunk_size)
    if monitor is not None and not callable(monitor):
        raise UsageError(
            f"`monitor` must be a function monitor(info) -> pytree of arrays, got {monitor!r}."
        )
    static, leaves, named, n_settings = optimizer_parts(optimizer, learning_rates, hyperparams)

    seed_arr = None
    if seeds is not None:
        seed_arr = np.arange(seeds) if isinstance(seeds, int | np.integer) else np.asarray(seeds)
        bad = seed_arr.ndim != 1 or seed_arr.size == 0 or seed_arr.dtype.kind not in "iu"
        if bad or (seed_arr < 0).any():
            raise UsageError(
                f"`seeds` must be a positive int or a 1-D array of ints >= 0, got {seeds!r}."
            )
    if init_fn is not None and seed_arr is None:
        raise UsageError("`init_fn` draws parameters per seed: pass `seeds` too, e.g. seeds=4.")

    data = A.as_arrays("data", data)
    check_finite("data", data)
    m = A.n_examples(data)
    if batch_size is not None:
        batch_size = check_int("batch_size", batch_size)
        if key is None and seed_arr is None:
            raise UsageError(
                f"`batch_size={batch_size}` draws shuffled mini-batches: pass `key` (or "
                f"`seeds`), e.g. key=jax.random.key(0)."
            )
    settings_sharding = batch_sharding = data_sharding = None
    n_dev = 1
    if mesh is not None:
        n_dev, batch_sharding, data_sharding = _sweep_mesh(mesh, m)
        settings_sharding = NamedSharding(mesh, PartitionSpec("settings"))
    A.check_batch(batch_size, m, 1 if batch_sharding is None else mesh.shape["data"])

    # ---- the K·S runs ----------------------------------------------------------------
    n_seeds = 1 if seed_arr is None else seed_arr.size
    if n_seeds > 1:
        leaves = jax.tree_util.tree_map(lambda v: np.repeat(np.asarray(v), n_seeds, 0), leaves)
    out_settings = {n: np.repeat(np.asarray(v), n_seeds) for n, v in named.items()}
    batched_params = batched_key = False
    run_key = None
    if seed_arr is not None:
        seeds_flat = np.tile(seed_arr, n_settings)
        out_settings["seed"] = jnp.asarray(seeds_flat)
        base = None if key is None else as_key(key)

        def seed_keys(s):
            k = jax.random.key(s) if base is None else jax.random.fold_in(base, s)
            return jax.random.split(k)

        keys = jax.vmap(seed_keys)(jnp.asarray(seeds_flat, jnp.uint32))
        if init_fn is not None:
            params, batched_params = jax.vmap(init_fn)(keys[:, 0]), True
        if batch_size is not None:
            run_key, batched_key = keys[:, 1], True
    elif batch_size is not None:
        run_key = as_key(key)
    params = A.as_arrays("params", params)
    A.check_params(params)
    check_finite("params", params)
    one_params = _one(params) if batched_params else params
    loss_dtype = A.check_loss(loss_fn, one_params, data, batch_size)

    prog = Program(
        loss_fn=loss_fn,
        value_and_grad=value_and_grad,
        opt_static=static,
        capacity=1,
        record_every=record_every,
        n_examples=m,
        batch_size=batch_size,
        trajectory=False,
        loss_dtype=loss_dtype,
        settings_axis=True,
        batched_key=batched_key,
        batched_params=batched_params,
        monitor=monitor,
        batch_sharding=batch_sharding,
    )
    n_runs = n_settings * n_seeds
    state = compiled_init(prog, params, leaves)
    one_key = None if run_key is None else (_one(run_key) if batched_key else run_key)
    one_run = (_one(state), data, one_key, _one(leaves))
    prog = planner.sized(prog, chunk_size, one_run, runs=n_runs)
    seen_like = monitor_like(prog, *one_run)
    placed = data if mesh is None else place(data, data_sharding)
    pool = _Pool(prog, placed, run_key, n_runs, steps, seen_like, n_dev, settings_sharding)
    final = pool.run(state, leaves, progress)

    n_rec = -(-steps // record_every)
    on_device = all(isinstance(x, jax.Array) for x in jax.tree_util.tree_leaves(final["params"]))
    fl = final_loss(loss_fn, final["params"], placed if on_device else data, True)
    final, fl = fetch((final, fl))  # one transfer of everything still on the device
    losses = final["losses"][:, :n_rec]
    if (final["diverged_at"] >= 0).any():
        losses = nan_after(losses, final["diverged_at"], record_every)
    stopped = final["stopped"]
    runs = FitResult(
        params=final["params"],
        opt_state=final["opt_state"],
        losses=losses,
        final_loss=fl,
        steps=np.where(stopped, final["diverged_at"], steps),
        diverged=stopped,
        diverged_at=final["diverged_at"],
        trajectory=None,
        key=run_key,
        monitor=None if seen_like is None else _nan_after(final["monitor"], final, record_every),
    )
    score = np.where(stopped, np.inf, np.asarray(fl, np.float64))
    score = np.where(np.isnan(score), np.inf, score)
    best_index = None if np.isinf(score).all() else int(np.argmin(score))
    best = (
        {}
        if best_index is None
        else {n: np.asarray(v)[best_index].item() for n, v in out_settings.items()}
    )
    return SweepResult(settings=out_settings, runs=runs, best_index=best_index, best=best)


@dataclasses.dataclass
class _Pool:
    """The live runs of a sweep, chunk by chunk; diverged runs retire with their state."""

    prog: Program
    data: Any
    key: Any
    n_runs: int
    steps: int
    seen_like: Any = None  # one record of the monitor's output (None without one)
    quantum: int = 1  # the number of slots is a multiple of the "settings" devices
    sharding: NamedSharding | None = None  # the slots' sharding on a mesh

    def _chunk(self, prog, state, leaves, idx, t, n_records):
        key = self.key[idx] if self.prog.batched_key else self.key
        if self.sharding is not None:
            state, leaves = place((state, leaves), self.sharding)
            if key is not None:
                key = place(key, self.sharding if prog.batched_key else self._replicated)
        out = compiled_chunk(prog, state, self.data, key, leaves, t, self.steps, n_records)
        return out[0], *fetch(out[1:])

    @property
    def _replicated(self) -> NamedSharding:
        return NamedSharding(self.sharding.mesh, PartitionSpec())

    def _slots(self, n: int) -> int:
        """Slots for ``n`` live runs: a power of two (few sizes, few compilations), a
        multiple of ``quantum``, at most the padded number of runs."""
        top = -(-self.n_runs // self.quantum) * self.quantum
        if n == self.n_runs:
            return top
        return min(top, -(-(1 << (n - 1).bit_length()) // self.quantum) * self.quantum)

    def run(self, state, leaves, progress) -> dict[str, Any]:
        prog, re = self.prog, self.prog.record_every
        careful = dataclasses.replace(prog, careful=True)
        n_rec_total = -(-self.steps // re)
        losses = np.full((self.n_runs, n_rec_total), np.nan, prog.loss_dtype)
        seen = None
        if self.seen_like is not None:
            seen = jax.tree_util.tree_map(
                lambda x: _blank_host((self.n_runs, n_rec_total, *x.shape), x.dtype),
                self.seen_like,
            )

        def keep_records(runs, rows, buf, n):  # records ``rows`` of ``runs`` from a chunk
            if seen is not None:
                jax.tree_util.tree_map(lambda d, b: _store(d, runs, rows, b, n), seen, buf)
        out = None  # the runs' final states on the host, made at the first retirement

        def host_out():
            return jax.tree_util.tree_map(
                lambda x: np.zeros((self.n_runs, *x.shape[1:]), x.dtype), state._asdict()
            )

        live = _padded(np.arange(self.n_runs), self._slots(self.n_runs))
        if live.size > self.n_runs:  # slots past the runs repeat the last run
            state, leaves = _take(state, live), _take(leaves, live)
        n_live, t = self.n_runs, 0
        bar = Progress(progress, self.steps, 0, -(-self.steps // (prog.capacity * re)), "sweep")
        try:
            while t < self.steps and n_live:
                n_records = planner.chunk_records(t, self.steps, re, prog.capacity, None)
                r0 = t // re
                end, buf, _, mon = self._chunk(prog, state, leaves, live, t, n_records)
                stopped = fetch(end.stopped)[:n_live]
                t_end = min(t + n_records * re, self.steps)
                rows = slice(r0, min(r0 + n_records, n_rec_total))
                losses[live[:n_live], rows] = np.asarray(buf)[: rows.stop - r0, :n_live].T
                keep_records(live[:n_live], rows, mon, n_live)
                if stopped.any():  # replay the diverged runs' chunk with the careful step
                    bad = np.flatnonzero(stopped)
                    sel = _padded(bad, self._slots(bad.size))
                    again, buf2, _, mon2 = self._chunk(
                        careful, _take(state, sel), _take(leaves, sel), live[sel], t, n_records
                    )
                    out = host_out() if out is None else out
                    for name, value in again._asdict().items():
                        out[name] = _put(out[name], live[bad], value, bad.size)
                    losses[live[bad], rows] = np.asarray(buf2)[: rows.stop - r0, : bad.size].T
                    keep_records(live[bad], rows, mon2, bad.size)
                keep = np.flatnonzero(~stopped)
                if out is None and keep.size == live.size == self.n_runs and t_end >= self.steps:
                    out = dict(end._asdict())  # no run retired: the device arrays as they are
                elif keep.size and (stopped.any() or t_end >= self.steps):
                    out = host_out() if out is None else out
                    for name, value in end._asdict().items():
                        out[name] = _put(out[name], live[keep], _take(value, keep), keep.size)
                if stopped.any() and keep.size:  # re-pack the live runs
                    sel = _padded(keep, self._slots(keep.size))
                    state, leaves, live = _take(end, sel), _take(leaves, sel), live[sel]
                else:
                    state = end
                n_live, t = keep.size, t_end
                bar.update(t, None)
        finally:
            bar.close()
        out["losses"] = losses
        out["monitor"] = seen
        return out


def _store(dst: np.ndarray, runs: np.ndarray, rows: slice, buf: Any, n: int) -> None:
    """``dst[runs, rows] = buf[records, :n]`` for a record-major chunk buffer."""
    dst[runs, rows] = np.swapaxes(np.asarray(buf)[: rows.stop - rows.start, :n], 0, 1)


def _blank_host(shape, dtype) -> np.ndarray:
    return np.full(shape, np.nan if np.issubdtype(dtype, np.inexact) else 0, dtype)


def _nan_after(tree: Any, final: dict[str, Any], record_every: int) -> Any:
    """NaN (0 in integer leaves) in every leaf ``(K, T, ...)`` after each run's diverged
    step."""

    def one(x):
        steps_of = np.arange(x.shape[1]) * record_every
        d = np.asarray(final["diverged_at"])[:, None]
        after = (d >= 0) & (steps_of > d)
        blank = np.nan if np.issubdtype(x.dtype, np.inexact) else 0
        return np.where(after.reshape(after.shape + (1,) * (x.ndim - 2)), blank, x)

    return jax.tree_util.tree_map(one, tree)


def _put(target: Any, rows: np.ndarray, value: Any, n: int) -> Any:
    """``target[rows] = value[:n]`` leaf by leaf, on host copies."""

    def one(dst, src):
        dst = np.array(dst)
        dst[rows] = np.asarray(src)[:n]
        return dst

    return jax.tree_util.tree_map(one, target, fetch(value))

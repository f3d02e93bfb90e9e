"""``gd.sweep``: many runs (hyperparameter settings × seeds) as one vmapped program.

The runs advance together, one unbatched loop over the steps whose body is ``jax.vmap``
of :func:`gdjax.fit`'s step. Between chunks, runs that diverged are *retired*: their
chunk is replayed with the careful step (so each keeps its last finite state and the
step it diverged at), and the live runs are re-packed, so the compute follows the live
runs. Re-packed sizes are powers of two (one compilation per size at most).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gdjax import optim
from gdjax._validate import UsageError, as_key, check_finite, check_int
from gdjax.train import args as A
from gdjax.train import planner
from gdjax.train.loop import Progress, nan_after
from gdjax.train.program import (
    Factory,
    Program,
    compiled_chunk,
    compiled_init,
    final_loss,
)
from gdjax.train.results import FitResult, SweepResult

Params = Any
Data = Any


def grid(**axes: Any) -> dict[str, jax.Array]:
    """The Cartesian product of 1-D hyperparameter axes, flattened for :func:`sweep`.

    >>> grid(learning_rate=[0.1, 0.01], b1=[0.9, 0.99])["b1"]
    Array([0.9 , 0.99, 0.9 , 0.99], dtype=float32)

    The last axis varies fastest (``itertools.product`` order).
    """
    if not axes:
        raise UsageError("grid: pass at least one axis, e.g. grid(learning_rate=[0.1, 0.01]).")
    values = {}
    for name, v in axes.items():
        arr = np.asarray(v)
        if arr.ndim != 1 or arr.size == 0:
            raise UsageError(f"grid: `{name}` must be a non-empty 1-D sequence, got {v!r}.")
        values[name] = arr
    rows = list(itertools.product(*values.values()))
    return {
        name: jnp.asarray(np.array([r[i] for r in rows], dtype=values[name].dtype))
        for i, name in enumerate(values)
    }


def _settings(learning_rates, hyperparams) -> dict[str, jax.Array]:
    if learning_rates is not None and hyperparams is not None:
        if "learning_rate" in hyperparams:
            raise UsageError(
                "Pass the learning rates once: either `learning_rates` or "
                "hyperparams['learning_rate'], not both."
            )
        hyperparams = {"learning_rate": learning_rates, **hyperparams}
    elif learning_rates is not None:
        hyperparams = {"learning_rate": learning_rates}
    elif hyperparams is None:
        raise UsageError(
            "sweep: with an optimizer factory, pass `learning_rates=[...]` or "
            "`hyperparams={name: [...]}` (see gd.train.grid); or pass a gd.optim rule "
            "built with arrays, e.g. gd.optim.sgd(jnp.logspace(-3, 0, 64))."
        )
    if not isinstance(hyperparams, Mapping) or not hyperparams:
        raise UsageError("`hyperparams` must be a non-empty dict name -> 1-D array.")
    settings: dict[str, jax.Array] = {}
    for name, v in hyperparams.items():
        arr = jnp.asarray(v)
        if arr.ndim != 1 or arr.shape[0] == 0:
            raise UsageError(
                f"hyperparameter `{name}` must be a non-empty 1-D array, got shape {arr.shape}."
            )
        check_finite(f"hyperparams[{name!r}]", arr)
        settings[name] = arr
    sizes = {n: a.shape[0] for n, a in settings.items()}
    if len(set(sizes.values())) > 1:
        raise UsageError(
            f"Hyperparameter arrays must all have the same length K (settings are zipped), "
            f"got {sizes}. Use gd.train.grid(...) for a product grid."
        )
    return settings


def _optimizer_parts(optimizer, learning_rates, hyperparams):
    """(static part, leaves with a leading axis K, named settings, K) of the sweep's optimizer.

    A ``gd.optim`` rule built with 1-D arrays is split by :func:`gdjax.optim.partition`; a
    factory is called once per concrete setting so that each is checked as ``fit`` checks
    its optimizer, then inside the program with the traced settings.
    """
    if optim.num_settings(optimizer) is not None:
        if learning_rates is not None or hyperparams is not None:
            raise UsageError(
                "sweep: the optimizer already holds its settings; do not also pass "
                "`learning_rates`/`hyperparams`."
            )
        k = optim.num_settings(optimizer)
        static, leaves = optim.partition(optimizer)
        leaves = jax.tree_util.tree_map(
            lambda x: np.broadcast_to(np.asarray(x), (k,)) if np.ndim(x) == 0 else x, leaves
        )
        return static, leaves, optim.settings(optimizer), k
    if hasattr(optimizer, "update") or not callable(optimizer):
        raise UsageError(
            "sweep: `optimizer` must be a gd.optim rule built with arrays of settings (e.g. "
            "gd.optim.sgd(jnp.logspace(-3, 0, 64))) or a factory of hyperparameters (e.g. "
            "gd.optim.sgd, or lambda learning_rate: optax.adam(learning_rate))."
        )
    settings = _settings(learning_rates, hyperparams)
    k = next(iter(settings.values())).shape[0]
    host = {n: np.asarray(v) for n, v in settings.items()}
    for i in range(k):
        try:
            optimizer(**{n: v[i].item() for n, v in host.items()})
        except (ValueError, TypeError) as err:
            setting = ", ".join(f"{n}={v[i].item():g}" for n, v in host.items())
            raise UsageError(f"sweep: setting {i} ({setting}) is refused: {err}") from None
    return Factory(optimizer), settings, settings, k


def _take(tree: Any, idx: Any) -> Any:
    """Rows ``idx`` of every leaf, gathered on the host (no eager device op to compile)."""
    return jax.tree_util.tree_map(lambda x: np.asarray(x)[idx], tree)


def _one(tree: Any) -> Any:
    """The shapes of one run: every leaf without its leading runs axis."""
    return jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), tree)


def _bucket(n: int, k: int) -> int:
    return k if n == k else min(k, 1 << (n - 1).bit_length())


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
      progress, chunk_size: as in :func:`fit`.

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
    static, leaves, named, n_settings = _optimizer_parts(optimizer, learning_rates, hyperparams)

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
    A.check_batch(batch_size, m, 1)

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
    )
    n_runs = n_settings * n_seeds
    state = compiled_init(prog, params, leaves)
    one_key = None if run_key is None else (_one(run_key) if batched_key else run_key)
    prog = planner.sized(prog, chunk_size, (_one(state), data, one_key, _one(leaves)), runs=n_runs)
    final = _Pool(prog, data, run_key, n_runs, steps).run(state, leaves, progress)

    n_rec = -(-steps // record_every)
    losses = nan_after(final["losses"][:, :n_rec], final["diverged_at"], record_every)
    stopped = final["stopped"]
    fl = final_loss(loss_fn, final["params"], data, True)
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

    def _chunk(self, prog, state, leaves, idx, t, n_records):
        key = self.key[idx] if self.prog.batched_key else self.key
        return compiled_chunk(prog, state, self.data, key, leaves, t, self.steps, n_records)

    def run(self, state, leaves, progress) -> dict[str, Any]:
        prog, re = self.prog, self.prog.record_every
        careful = dataclasses.replace(prog, careful=True)
        n_rec_total = -(-self.steps // re)
        losses = np.full((self.n_runs, n_rec_total), np.nan, prog.loss_dtype)
        out = jax.tree_util.tree_map(lambda x: np.array(x), state._asdict())
        live = np.arange(self.n_runs)  # run index of each slot (padding repeats the last)
        n_live, t = self.n_runs, 0
        bar = Progress(progress, self.steps, 0, -(-self.steps // (prog.capacity * re)), "sweep")
        try:
            while t < self.steps and n_live:
                n_records = planner.chunk_records(t, self.steps, re, prog.capacity, None)
                r0 = t // re
                end, buf, _ = self._chunk(prog, state, leaves, live, t, n_records)
                stopped = np.asarray(end.stopped)[:n_live]
                t_end = min(t + n_records * re, self.steps)
                rows = slice(r0, min(r0 + n_records, n_rec_total))
                losses[live[:n_live], rows] = np.asarray(buf)[: rows.stop - r0, :n_live].T
                if stopped.any():  # replay the diverged runs' chunk with the careful step
                    bad = np.flatnonzero(stopped)
                    size = _bucket(bad.size, self.n_runs)
                    sel = np.concatenate([bad, np.repeat(bad[-1:], size - bad.size)])
                    again, buf2, _ = self._chunk(
                        careful, _take(state, sel), _take(leaves, sel), live[sel], t, n_records
                    )
                    for name, value in again._asdict().items():
                        out[name] = _put(out[name], live[bad], value, bad.size)
                    losses[live[bad], rows] = np.asarray(buf2)[: rows.stop - r0, : bad.size].T
                keep = np.flatnonzero(~stopped)
                if keep.size and (stopped.any() or t_end >= self.steps):
                    for name, value in end._asdict().items():
                        out[name] = _put(out[name], live[keep], _take(value, keep), keep.size)
                if stopped.any() and keep.size:  # re-pack the live runs
                    size = _bucket(keep.size, self.n_runs)
                    sel = np.concatenate([keep, np.repeat(keep[-1:], size - keep.size)])
                    state, leaves, live = _take(end, sel), _take(leaves, sel), live[sel]
                else:
                    state = end
                n_live, t = keep.size, t_end
                bar.update(t, None)
        finally:
            bar.close()
        out["losses"] = losses
        return out


def _put(target: Any, rows: np.ndarray, value: Any, n: int) -> Any:
    """``target[rows] = value[:n]`` leaf by leaf, on host copies."""

    def one(dst, src):
        dst = np.array(dst)
        dst[rows] = np.asarray(src)[:n]
        return dst

    return jax.tree_util.tree_map(one, target, value)

"""``gd.sweep``: many runs (hyperparameter settings × seeds) as one vmapped program.

The runs advance together, one unbatched loop over the steps whose body is ``jax.vmap``
of :func:`gdjax.fit`'s step. Between chunks, runs that diverged are *retired*: their
chunk is replayed with the careful step (so each keeps its last finite state and the
step it diverged at), and the live runs are re-packed, so the compute follows the live
runs. Re-packed sizes are powers of two (one compilation per size at most).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from gdjax._validate import UsageError, as_key, check_in_range, check_int
from gdjax.train import args as A
from gdjax.train import dots, layout, planner
from gdjax.train.compiles import collector_paused
from gdjax.train.factory import keyed
from gdjax.train.loop import nan_after
from gdjax.train.placement import fetch, place
from gdjax.train.pool import Pool, take
from gdjax.train.program import Program
from gdjax.train.records import final_loss
from gdjax.train.results import FitResult, SweepResult
from gdjax.train.settings import optimizer_parts
from gdjax.train.start import compiled_fresh, compiled_start

Params = Any
Data = Any


def _one(tree: Any) -> Any:
    """The shapes of one run: every leaf without its leading runs axis."""
    return jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), tree)


def _sweep_mesh(mesh: Any, m: int | None):
    """(devices of "settings", the batch sharding or None, the data sharding) of a
    sweep's mesh, or a refusal that says what the mesh needs."""
    if not isinstance(mesh, Mesh) or "settings" not in mesh.axis_names:
        raise UsageError(
            'sweep: `mesh` must be a jax.sharding.Mesh with an axis named "settings" (the '
            'runs are split over it), e.g. Mesh(np.array(jax.devices()), ("settings",)).'
        )
    extra = set(mesh.axis_names) - {"settings", "data"}
    if extra:
        raise UsageError(
            f'sweep: `mesh` axes must be "settings" and optionally "data", got {mesh.axis_names}.'
        )
    if "data" not in mesh.axis_names:
        return mesh.shape["settings"], None, NamedSharding(mesh, PartitionSpec())
    n_data = mesh.shape["data"]
    if m is None or m % n_data:
        raise UsageError(
            f'sweep: the mesh\'s "data" axis has {n_data} devices, but `data` has '
            f'{m} examples; pass a multiple of {n_data} (or a mesh without "data").'
        )
    batch = NamedSharding(mesh, PartitionSpec("data"))
    return mesh.shape["settings"], batch, batch


#: What a sweep's arguments' structure decides (its sized program and the monitor's
#: record), checked and built once per structure.
_PLANS: dict[Any, tuple[Program, Any]] = {}


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
    patience: int | None = None,
    min_delta: float = 0.0,
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
      patience: retire a run whose lowest recorded loss has not improved (by more than
        ``min_delta`` relative) over its last ``patience`` steps; checked between chunks
        (``chunk_size`` sets how often), so the compute follows the runs still learning.
        A retired run keeps its state at that chunk's end; ``retired_at`` says when.
      min_delta: the relative improvement ``patience`` asks for (default 0: any).
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
    steps = A.check_steps(steps)
    record_every = check_int("record_every", record_every)
    if chunk_size is not None:
        chunk_size = check_int("chunk_size", chunk_size)
    if monitor is not None and not callable(monitor):
        raise UsageError(
            f"`monitor` must be a function monitor(info) -> pytree of arrays, got {monitor!r}."
        )
    if value_and_grad is not None and not callable(value_and_grad):
        raise UsageError("`value_and_grad` must be a function (params, batch) -> (loss, grads).")
    # the same code and values: the same program (gdjax/train/factory.py)
    loss_fn, value_and_grad, monitor = keyed(loss_fn), keyed(value_and_grad), keyed(monitor)
    if patience is not None:
        patience = check_int("patience", patience)
    check_in_range("min_delta", min_delta, 0.0, 1.0)
    min_delta = float(min_delta)
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
    m = A.n_examples(data)  # (cheap checks first: the examples, the batch, the mesh)
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
    params, params_sig = A.arrays("params", params)
    n_runs = n_settings * n_seeds
    A.check_history(steps, record_every, 8, runs=n_runs)
    memo_key = (
        loss_fn,
        value_and_grad,
        monitor,
        static,
        params_sig,
        A.signature(data),
        A.signature(leaves),
        A.signature(run_key),
        batch_size,
        record_every,
        chunk_size,
        n_runs,
        batched_key,
        batched_params,
        batch_sharding,
        dots.MAX_CONTRACTION,
        layout.MAX_ELEMENTS if mesh is None else 0,
    )
    planned = _PLANS.get(memo_key)
    with collector_paused(planned is None):  # a new program: traced and compiled here
        if planned is None:
            A.check_params(params)
            one_params = _one(params) if batched_params else params
            prog = Program(
                loss_fn=loss_fn,
                value_and_grad=value_and_grad,
                opt_static=static,
                capacity=1,
                record_every=record_every,
                n_examples=m,
                batch_size=batch_size,
                trajectory=False,
                loss_dtype=A.check_loss(loss_fn, one_params, data, batch_size),
                settings_axis=True,
                batched_key=batched_key,
                batched_params=batched_params,
                monitor=monitor,
                batch_sharding=batch_sharding,
                small_dots=dots.limit(),
                runs_innermost=layout.limit() if mesh is None else 0,  # (a mesh places them)
            )
            one_key = None if run_key is None else (_one(run_key) if batched_key else run_key)
            one = planner.planned(
                prog, chunk_size, one_params, data, one_key, _one(leaves), runs=n_runs
            )
            planned = planner.remember(_PLANS, memo_key, one)
        prog, seen_like = planned

        def start(runs):  # the state at step 0 of the runs ``runs`` (None: all), checked
            if runs is None:
                return compiled_start(prog, params, leaves, data)
            own = take(params, runs) if batched_params else params
            return compiled_start(prog, own, take(leaves, runs), data)

        # start + first chunk; all n_runs slots unpadded are the runs in order
        def fresh(runs, prog, key, own_leaves, t, n_steps, n_records):
            own = take(params, runs) if batched_params and runs.size != n_runs else params
            return compiled_fresh(prog, own, data, key, own_leaves, t, n_steps, n_records)

        placed = data if mesh is None else place(data, data_sharding)
        pool = Pool(
            prog,
            placed,
            run_key,
            n_runs,
            steps,
            seen_like,
            n_dev,
            settings_sharding,
            patience,
            min_delta,
            start,
            lambda: A.refuse_non_finite(params, data),  # read with the first chunk
            memo_key,
            fresh if mesh is None else None,
        )
        final = pool.run(leaves, progress)

    n_rec = -(-steps // record_every)
    fl, ended = final.pop("final_loss"), final.pop("ended")
    final = fetch(final)  # one transfer of everything still on the device
    if not ended.all():  # runs retired (or diverged) before the last chunk
        fl = np.where(ended, fl, fetch(final_loss(loss_fn, final["params"], data, True)))
    losses = final["losses"][:, :n_rec]
    if (final["diverged_at"] >= 0).any():
        losses = nan_after(losses, final["diverged_at"], record_every)
    stopped = final["stopped"]
    runs = FitResult(
        params=final["params"],
        opt_state=final["opt_state"],
        losses=losses,
        final_loss=fl,
        steps=np.where(
            stopped,
            final["diverged_at"],
            np.where(final["retired_at"] >= 0, final["retired_at"], steps),
        ),
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
    return SweepResult(
        settings=out_settings,
        runs=runs,
        best_index=best_index,
        best=best,
        retired_at=final["retired_at"],
    )


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

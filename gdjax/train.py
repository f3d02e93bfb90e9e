r"""Compiled training runs (:func:`fit`) and vmapped sweeps of runs (:func:`sweep`).

A run is gradient descent with any ``optax.GradientTransformation``:

.. math::

    g_t = \nabla_\theta \mathcal L(\theta_t; B_t), \qquad
    (u_t, s_{t+1}) = \mathrm{update}(g_t, s_t, \theta_t), \qquad
    \theta_{t+1} = \theta_t + u_t,

for ``t = 0 … steps-1``, where the batch :math:`B_t` is the whole data set (full batch) or
the ``t``-th slice of ``batch_size`` examples of a shuffled epoch (mini-batch).

The whole run is one ``jax.jit``-compiled ``lax.scan``, cut into chunks of a fixed
length so that the host can update a progress bar and write checkpoints between them.
The chunk is compiled once: its length never changes, steps past the end of the run are
masked, and the host dispatches chunk ``k + 1`` before it reads chunk ``k``'s results, so
the device never waits for the host. Data enters the compiled program as an argument.

Divergence is detected on the device: a step whose loss, or whose updated parameters,
are not finite is not applied; the run is frozen at the last finite parameters from then
on, the step is recorded, and the host stops after that chunk.

:func:`sweep` runs many settings of the optimizer's hyperparameters (learning rates,
momenta, ...) and many seeds as one ``jax.vmap`` of the same program; a diverged run
freezes without touching the others.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import itertools
import json
import math
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from gdjax import checkpoint as _ckpt
from gdjax._validate import check_finite

__all__ = [
    "DivergenceError",
    "FitResult",
    "SweepResult",
    "fit",
    "grid",
    "sweep",
]

Params = Any
Data = Any
LossFn = Callable[[Params, Data], jax.Array]

CHECKPOINT_NAME = "checkpoint.npz"
_MAX_CHUNK = 1 << 17  # steps per chunk, at most
_CHUNK_SECONDS = 0.25  # target wall time of one chunk: a few progress updates a second


# --------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------


class FitResult(NamedTuple):
    """What :func:`fit` returns.

    Attributes:
      params: the final parameters (the last finite ones if the run diverged).
      opt_state: the optimizer state that goes with ``params``.
      losses: recorded losses, shape ``(T,)``: ``losses[i]`` is the loss at
        ``params_t`` for ``t = i * record_every``, before that step's update. A diverged
        run's history ends with the first non-finite loss if that step was recorded.
      steps: the number of updates applied (``steps`` unless the run diverged).
      diverged: whether a non-finite loss or update stopped the run.
      diverged_at: the step ``t`` whose loss/update was non-finite, or None.
      trajectory: with ``trajectory=True``, the recorded ``params_t``, each leaf stacked
        on a leading axis of length ``T`` (aligned with ``losses``); otherwise None.
      key: the PRNG key that drew the mini-batches (None for full-batch runs).
    """

    params: Params
    opt_state: optax.OptState
    losses: jax.Array
    steps: int
    diverged: bool
    diverged_at: int | None
    trajectory: Params | None
    key: jax.Array | None


class SweepResult(NamedTuple):
    """What :func:`sweep` returns, for ``K`` runs (settings × seeds).

    Attributes:
      settings: name -> ``(K,)`` array: the hyperparameters of each run, and ``"seed"``
        when seeds were given.
      losses: ``(K, T)`` recorded losses (NaN after a run diverged).
      final_loss: ``(K,)`` loss of each run's final parameters on the whole data.
      params: the final parameters, each leaf with a leading axis ``K``.
      diverged: ``(K,)`` bool.
      diverged_at: ``(K,)`` int, the step at which each run diverged, -1 if it did not.
      best_index: the run with the lowest ``final_loss`` among those that did not diverge
        (0 if every run diverged).
      best: that run's hyperparameters, name -> Python scalar.
    """

    settings: dict[str, jax.Array]
    losses: jax.Array
    final_loss: jax.Array
    params: Params
    diverged: jax.Array
    diverged_at: jax.Array
    best_index: int
    best: dict[str, Any]


class DivergenceError(FloatingPointError):
    """Raised by ``fit(..., on_divergence="raise")``; ``.step`` and ``.result`` say more."""

    def __init__(self, step: int, result: FitResult):
        super().__init__(
            f"fit: the loss or the update became non-finite at step {step} (loss "
            f"{_last_recorded(result.losses)}). The last finite parameters are in "
            f"`err.result.params`. Lower the learning rate, or pass on_divergence='stop'."
        )
        self.step = step
        self.result = result


def _last_recorded(losses: Any) -> str:
    arr = np.asarray(losses)
    return repr(float(arr[-1])) if arr.size else "not recorded"


# --------------------------------------------------------------------------------------
# The compiled program
# --------------------------------------------------------------------------------------


class _State(NamedTuple):
    """The scan carry: everything a run needs to continue (and what a checkpoint holds)."""

    params: Params
    opt_state: optax.OptState
    t: jax.Array  # int32: index of the next step (advances even when masked)
    stopped: jax.Array  # bool: the run diverged; nothing changes any more
    diverged_at: jax.Array  # int32: the step that diverged, -1 if none


@dataclasses.dataclass(frozen=True)
class _FixedOptimizer:
    """``fit``'s optimizer, as a (hashable) factory of no hyperparameters."""

    optimizer: optax.GradientTransformation

    def __call__(self, hyper: Mapping[str, jax.Array]) -> optax.GradientTransformation:
        return self.optimizer


@dataclasses.dataclass(frozen=True)
class _OptimizerFactory:
    """``sweep``'s optimizer: the user's factory called with traced hyperparameters."""

    factory: Callable[..., optax.GradientTransformation]

    def __call__(self, hyper: Mapping[str, jax.Array]) -> optax.GradientTransformation:
        opt = self.factory(**hyper)
        _check_optimizer(opt, "sweep: `optimizer(**hyperparams)`")
        return opt


@dataclasses.dataclass(frozen=True)
class _Config:
    """Static description of the compiled program (hashable: the jit cache key)."""

    loss_fn: LossFn
    value_and_grad: Callable | None
    make_opt: Callable[[Mapping[str, jax.Array]], optax.GradientTransformation]
    records: int  # records per chunk
    record_every: int  # steps per record; chunk length = records * record_every
    n_examples: int | None  # m, for mini-batches
    batch_size: int | None  # None: full batch
    trajectory: bool
    batch_sharding: NamedSharding | None = None
    careful: bool = True  # see _step

    @property
    def chunk(self) -> int:
        return self.records * self.record_every


def _loss_and_grads(cfg: _Config, params: Params, batch: Data) -> tuple[jax.Array, Params]:
    if cfg.value_and_grad is None:
        loss, grads = jax.value_and_grad(cfg.loss_fn)(params, batch)
    else:
        out = cfg.value_and_grad(params, batch)
        if hasattr(out, "loss") and hasattr(out, "grads"):  # gdjax.Backprop
            loss, grads = out.loss, out.grads
        elif isinstance(out, tuple) and len(out) == 2:
            loss, grads = out
        else:
            raise TypeError(
                "`value_and_grad(params, batch)` must return (loss, grads) or a "
                f"gdjax.Backprop, got {type(out).__name__}."
            )
        if jax.tree_util.tree_structure(grads) != jax.tree_util.tree_structure(params):
            raise ValueError(
                "`value_and_grad` returned grads whose structure differs from params': "
                f"{jax.tree_util.tree_structure(grads)} vs "
                f"{jax.tree_util.tree_structure(params)}."
            )
    if jnp.shape(loss) != ():
        raise ValueError(
            f"`loss_fn` must return a scalar, got shape {jnp.shape(loss)}. Reduce it, e.g. "
            f"with jnp.mean over the examples."
        )
    return loss, grads


def _permutation(key: jax.Array, epoch: jax.Array, m: int) -> jax.Array:
    """The example order of epoch ``epoch``: a permutation drawn from ``fold_in(key, epoch)``."""
    return jax.random.permutation(jax.random.fold_in(key, epoch), m)


def _batch(cfg: _Config, data: Data, key: jax.Array, t: jax.Array, perm: jax.Array):
    """The batch of step ``t`` and the (possibly refreshed) permutation of its epoch.

    Epoch ``e = t // n_b`` visits examples in the order ``perm_e``, in ``n_b = m // b``
    consecutive slices of ``b``; the last ``m mod b`` examples of each (different)
    permutation are skipped that epoch.
    """
    if cfg.batch_size is None:
        return data, perm
    b, m = cfg.batch_size, cfg.n_examples
    n_b = m // b
    epoch, pos = t // n_b, t % n_b
    perm = lax.cond(pos == 0, lambda: _permutation(key, epoch, m), lambda: perm)
    idx = lax.dynamic_slice_in_dim(perm, pos * b, b)
    batch = jax.tree_util.tree_map(lambda x: jnp.take(x, idx, axis=0), data)
    if cfg.batch_sharding is not None:
        batch = lax.with_sharding_constraint(batch, cfg.batch_sharding)
    return batch, perm


def _all_finite(tree: Any) -> jax.Array:
    checks = [
        jnp.all(jnp.isfinite(x))
        for x in jax.tree_util.tree_leaves(tree)
        if jnp.issubdtype(jnp.result_type(x), jnp.inexact)
    ]
    return jnp.all(jnp.stack(checks)) if checks else jnp.bool_(True)


def _step(cfg, opt, data, key, n_steps, state: _State, perm):
    """One step: returns the new state, the epoch permutation and the step's loss.

    Two variants of the same update (``cfg.careful``):

    * careful: a step past ``n_steps`` or after divergence is masked, and a step whose
      loss or new parameters are not finite is not applied (one select per leaf);
    * lean: the update alone, plus a ``stopped`` flag raised by a non-finite loss. The
      host runs only full chunks this way, and replays a chunk that raised the flag with
      the careful variant, so results are the same; the lean body stays small enough for
      XLA:CPU to compile the whole loop as one function (no per-op dispatch).

    The loss of a masked step is whatever the frozen parameters give; the host drops
    those records.
    """
    batch, perm = _batch(cfg, data, key, state.t, perm)
    loss, grads = _loss_and_grads(cfg, state.params, batch)
    if isinstance(opt, optax.GradientTransformationExtraArgs):
        updates, opt_state = opt.update(
            grads,
            state.opt_state,
            state.params,
            value=loss,
            grad=grads,
            value_fn=lambda p: cfg.loss_fn(p, batch),
        )
    else:
        updates, opt_state = opt.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    if not cfg.careful:
        stopped = state.stopped | ~jnp.isfinite(loss)
        return (
            state._replace(params=params, opt_state=opt_state, t=state.t + 1, stopped=stopped),
            perm,
            loss,
        )

    active = (state.t < n_steps) & ~state.stopped
    finite = jnp.isfinite(loss) & _all_finite(params)
    accept = active & finite
    bad = active & ~finite

    def keep(new, old):
        return jax.tree_util.tree_map(lambda n, o: jnp.where(accept, n, o), new, old)

    new_state = _State(
        params=keep(params, state.params),
        opt_state=keep(opt_state, state.opt_state),
        t=state.t + 1,
        stopped=state.stopped | bad,
        diverged_at=jnp.where(bad, state.t, state.diverged_at),
    )
    return new_state, perm, loss


def _chunk(cfg: _Config, state: _State, data: Data, key, hyper, n_steps):
    """``cfg.chunk`` steps as nested scans: ``records`` records of ``record_every`` steps.

    Returns the new state and, per record, the loss (and params) at its first step.
    """
    opt = cfg.make_opt(hyper)
    step = functools.partial(_step, cfg, opt, data, key, n_steps)
    if cfg.batch_size is None:
        perm = jnp.zeros((0,), jnp.int32)
    else:
        n_b = cfg.n_examples // cfg.batch_size
        perm = _permutation(key, state.t // n_b, cfg.n_examples)

    def inner(carry, _):
        state, perm, _ = step(*carry)
        return (state, perm), None

    def record(carry, _):
        state, perm = carry
        snapshot = state.params if cfg.trajectory else None
        state, perm, loss = step(state, perm)
        if cfg.record_every > 1:
            (state, perm), _ = lax.scan(inner, (state, perm), length=cfg.record_every - 1)
        return (state, perm), (loss, snapshot)

    (state, _), (losses, traj) = lax.scan(record, (state, perm), length=cfg.records)
    if not cfg.careful:  # an update that overflowed on the chunk's last step: replay it too
        state = state._replace(stopped=state.stopped | ~_all_finite(state.params))
    return state, losses, traj


def _init_state(cfg: _Config, params: Params, hyper) -> _State:
    opt = cfg.make_opt(hyper)
    return _State(
        params=params,
        opt_state=opt.init(params),
        t=jnp.zeros((), jnp.int32),
        stopped=jnp.zeros((), bool),
        diverged_at=jnp.full((), -1, jnp.int32),
    )


_run_chunk = jax.jit(_chunk, static_argnums=0)


def _sweep_chunk(cfg, state, data, key, hyper, n_steps, key_axis):
    run = jax.vmap(
        lambda s, k, h: _chunk(cfg, s, data, k, h, n_steps),
        in_axes=(0, key_axis, 0),
    )
    return run(state, key, hyper)


_run_sweep_chunk = jax.jit(_sweep_chunk, static_argnums=(0, 6))


def _sweep_init_impl(cfg: _Config, params, hyper, params_axis):
    return jax.vmap(lambda p, h: _init_state(cfg, p, h), in_axes=(params_axis, 0))(params, hyper)


_sweep_init = jax.jit(_sweep_init_impl, static_argnums=(0, 3))


def _final_loss_impl(loss_fn, params, data):
    return jax.vmap(loss_fn, in_axes=(0, None))(params, data)


_final_loss = jax.jit(_final_loss_impl, static_argnums=0)


# --------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------


def _check_optimizer(opt: Any, arg: str = "optimizer") -> None:
    if isinstance(opt, optax.GradientTransformation):
        return
    if callable(opt) and not hasattr(opt, "update"):
        raise TypeError(
            f"`{arg}` must be an optax.GradientTransformation, got the function "
            f"{getattr(opt, '__name__', opt)!r}. Call it first, e.g. "
            f"optimizer=gd.optim.adam(1e-3)."
        )
    raise TypeError(
        f"`{arg}` must be an optax.GradientTransformation (with .init and .update), got "
        f"{type(opt).__name__}. Pass e.g. optimizer=gd.optim.sgd(0.1) or optax.adam(1e-3)."
    )


def _check_int(arg: str, value: Any, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"`{arg}` must be an int, got {value!r}.")
    if value < minimum:
        raise ValueError(f"`{arg}` must be an int >= {minimum}, got {value}.")
    return int(value)


def _n_examples(data: Data) -> int | None:
    """The common leading-axis size of ``data``'s leaves (None when it has none)."""
    leaves = jax.tree_util.tree_flatten_with_path(data)[0]
    if not leaves:
        return None
    sizes = {}
    for path, leaf in leaves:
        shape = jnp.shape(leaf)
        if not shape:
            raise ValueError(
                f"`data{jax.tree_util.keystr(path)}` is a scalar; every leaf of `data` needs "
                f"the examples on axis 0, e.g. x.reshape(-1, 1)."
            )
        sizes[jax.tree_util.keystr(path)] = shape[0]
    if len(set(sizes.values())) > 1:
        first, m = next(iter(sizes.items()))
        other, n = next((p, s) for p, s in sizes.items() if s != m)
        raise ValueError(
            f"Leaves of `data` disagree on the number of examples (axis 0): "
            f"`data{first}` has {m} but `data{other}` has {n}. Put the examples on axis 0 "
            f"of every leaf."
        )
    return next(iter(sizes.values()))


def _as_arrays(arg: str, tree: Any) -> Any:
    try:
        return jax.tree_util.tree_map(jnp.asarray, tree)
    except TypeError as e:
        raise TypeError(f"`{arg}` must be a pytree of arrays ({e}).") from e


def _check_batch(batch_size: int | None, m: int | None, mesh_size: int) -> None:
    if batch_size is None:
        return
    if m is None:
        raise ValueError(
            f"`batch_size={batch_size}` needs data with examples on axis 0, but `data` has "
            f"no arrays. Use batch_size=None for a data-free loss."
        )
    if batch_size > m:
        raise ValueError(
            f"`batch_size={batch_size}` is larger than the number of examples m={m}. "
            f"Pass batch_size <= {m}, or batch_size=None for full-batch descent."
        )
    if batch_size % mesh_size:
        raise ValueError(
            f"`batch_size={batch_size}` is not divisible by the {mesh_size} devices of "
            f"`mesh`. Pass a multiple of {mesh_size}."
        )


def _data_axis(mesh: Mesh) -> str:
    if not isinstance(mesh, Mesh):
        raise TypeError(
            f"`mesh` must be a jax.sharding.Mesh, got {type(mesh).__name__}. Build one with "
            f"Mesh(jax.devices(), ('data',))."
        )
    if "data" in mesh.axis_names:
        return "data"
    if len(mesh.axis_names) == 1:
        return mesh.axis_names[0]
    raise ValueError(
        f"`mesh` has axes {mesh.axis_names} and none is named 'data'. Name the batch axis "
        f"'data', e.g. Mesh(devices, ('data',))."
    )


def _normalise_key(key: Any, arg: str = "key") -> jax.Array:
    if isinstance(key, int | np.integer) and not isinstance(key, bool):
        raise TypeError(
            f"`{arg}` must be a PRNG key, got the int {key}: pass jax.random.key({key})."
        )
    key = jnp.asarray(key) if not isinstance(key, jax.Array) else key
    if not (jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key) or key.dtype == jnp.uint32):
        raise TypeError(f"`{arg}` must be a PRNG key such as jax.random.key(0), got {key!r}.")
    return key


# --------------------------------------------------------------------------------------
# Chunk length
# --------------------------------------------------------------------------------------

# Nominal throughput used to turn XLA's cost estimate of one step into seconds.
_SPEED = {"cpu": (1e10, 1e10, 2e-7), "gpu": (2e13, 1e12, 2e-6), "tpu": (5e13, 1e12, 2e-6)}


_STEP_SECONDS: dict[Any, Any] = {}  # memo of per-program planning (step time, loss dtype)


def _abstract(tree: Any) -> tuple:
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    return treedef, tuple((jnp.shape(x), str(jnp.result_type(x))) for x in leaves)


def _estimate_step_seconds(cfg: _Config, state, data, key, hyper) -> float:
    """A deterministic estimate of one step's time from XLA's flop and byte counts.

    Cached by the program and the shapes, so repeated ``fit`` calls pay for it once.
    """
    cache_key = (cfg, _abstract((state, data, key, hyper)), jax.default_backend())
    if cache_key in _STEP_SECONDS:
        return _STEP_SECONDS[cache_key]

    def one(state, data, key, hyper):
        opt = cfg.make_opt(hyper)
        perm = jnp.arange(cfg.n_examples or 0, dtype=jnp.int32)
        return _step(cfg, opt, data, key, jnp.int32(1), state, perm)[0]

    try:
        cost = jax.jit(one).lower(state, data, key, hyper).cost_analysis()
        if isinstance(cost, list | tuple):  # older jax: one dict per computation
            cost = cost[0] if cost else {}
        flops, nbytes = float(cost.get("flops", 0.0)), float(cost.get("bytes accessed", 0.0))
    except Exception:  # cost analysis is best effort; any failure means "unknown"
        flops, nbytes = 1e6, 1e6
    f, b, overhead = _SPEED.get(jax.default_backend(), _SPEED["gpu"])
    seconds = max(flops / f, nbytes / b) + overhead
    if len(_STEP_SECONDS) > 256:
        _STEP_SECONDS.clear()
    _STEP_SECONDS[cache_key] = seconds
    return seconds


def _largest_divisor(q: int, limit: int) -> int:
    """The largest divisor of ``q`` that is at most ``limit`` (``q, limit >= 1``)."""
    best, d = 1, 1
    while d * d <= q:
        if q % d == 0:
            best = max([best, *(x for x in (d, q // d) if x <= limit)])
        d += 1
    return best


def _chunk_records(
    steps: int, record_every: int, checkpoint_every: int | None, step_seconds: float
) -> int:
    """Records per chunk: a short run is one chunk; a long one, ~_CHUNK_SECONDS a chunk.

    Where a divisor of reasonable size exists, the chunk length divides ``steps`` (so no
    chunk needs masked steps) and ``checkpoint_every`` (so checkpoints fall exactly on
    its multiples).
    """
    total_records = -(-steps // record_every)
    target = min(_MAX_CHUNK, max(1, int(_CHUNK_SECONDS / step_seconds)))
    target_records = max(1, target // record_every)
    if checkpoint_every is None and total_records <= target_records:
        return total_records
    want = min(total_records, target_records)
    if checkpoint_every is not None:
        want = min(want, checkpoint_every // record_every)
    candidates = []  # numbers the chunk length should divide, best first
    if steps % record_every == 0:
        whole = steps // record_every
        candidates.append(
            whole if checkpoint_every is None else math.gcd(whole, checkpoint_every // record_every)
        )
    if checkpoint_every is not None:
        candidates.append(checkpoint_every // record_every)
    for q in candidates:
        best = _largest_divisor(q, want)
        if best * 4 >= want:
            return best
    return want


# --------------------------------------------------------------------------------------
# The host loop
# --------------------------------------------------------------------------------------


def _drive(run_chunk, state, t0, steps, chunk, *, on_chunk, stopped, replay=None):
    """Dispatch chunks back to back, one ahead of the host; return the final state.

    ``run_chunk(state, t) -> (state, *outputs)`` runs the chunk that starts at step ``t``.
    ``on_chunk(state, outputs, t_end)`` is called for each finished chunk, in order,
    while the next chunk is already running. The loop ends at ``steps`` or when
    ``stopped(state)`` says the run(s) diverged; ``replay(start_state, t)``, if given,
    then re-runs that chunk (with the careful program) and its results are kept.
    """
    final, pending, t = state, None, t0
    while True:
        launched = None
        if t < steps:
            new_state, *outputs = run_chunk(state, t)
            launched = (state, t, new_state, outputs, min(t + chunk, steps))
            state, t = new_state, t + chunk
        if pending is not None:
            start, t_start, end, outputs, t_end = pending
            if stopped(end) and replay is not None:
                end, *outputs = replay(start, t_start)
            on_chunk(end, outputs, t_end)
            final = end
            if stopped(end):
                return final
        if launched is None:
            return final
        pending = launched


class _Progress:
    """A tqdm bar over the steps, updated between chunks (or nothing at all)."""

    def __init__(self, show: bool | None, total: int, initial: int, n_chunks: int, desc: str):
        if show is None:
            show = n_chunks > 1 and sys.stderr.isatty()
        self.bar = None
        if show:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=desc, unit="step", leave=True)

    def update(self, t: int, loss: float | None) -> None:
        if self.bar is not None:
            self.bar.update(t - self.bar.n)
            if loss is not None:
                self.bar.set_postfix(loss=f"{loss:.4g}", refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _last_finite(losses: np.ndarray) -> float | None:
    finite = losses[np.isfinite(losses)]
    return float(finite[-1]) if finite.size else None


# --------------------------------------------------------------------------------------
# Checkpoints of a fit
# --------------------------------------------------------------------------------------


def _tree_summary(tree: Any) -> list[list[Any]]:
    return [
        [jax.tree_util.keystr(p), list(jnp.shape(x)), jnp.result_type(x).name]
        for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]
    ]


def _tree_sha256(tree: Any) -> str:
    h = hashlib.sha256()
    for path, x in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if jax.dtypes.issubdtype(jnp.result_type(x), jax.dtypes.prng_key):
            x = jax.random.key_data(x)
        h.update(jax.tree_util.keystr(path).encode())
        h.update(np.ascontiguousarray(np.asarray(x)).tobytes())
    return h.hexdigest()


def _fingerprint(params, data, key, *, steps, batch_size, record_every, trajectory) -> dict:
    """What makes two runs the same run (the optimizer's hyperparameters are not seen)."""
    return {
        "steps": steps,
        "batch_size": batch_size,
        "record_every": record_every,
        "trajectory": trajectory,
        "params": _tree_summary(params),
        "params_sha256": _tree_sha256(params),
        "data": _tree_summary(data),
        "data_sha256": _tree_sha256(data),
        "key_sha256": None if key is None else _tree_sha256(key),
    }


def _checkpoint_tree(state: _State, key, losses, traj) -> dict[str, Any]:
    tree = {"state": state, "losses": losses}
    if key is not None:
        tree["key"] = key
    if traj is not None:
        tree["trajectory"] = traj
    return tree


def _resume(path: Path, fingerprint: dict, like: dict, params):
    """Load a checkpoint of this run, or refuse it with the reason."""
    meta = _ckpt.read_metadata(path)
    if meta.get("kind") != "gdjax.fit":
        raise ValueError(f"Checkpoint {str(path)!r} is refused: it was not written by gd.fit.")
    saved = meta.get("fingerprint", {})
    diff = [k for k in fingerprint if saved.get(k) != fingerprint[k]]
    if diff:
        detail = "; ".join(
            f"{k}: checkpoint {_short(saved.get(k))}, this run {_short(fingerprint[k])}"
            for k in diff
        )
        raise ValueError(
            f"Checkpoint {str(path)!r} is refused: it belongs to a different run ({detail}). "
            f"Use another `checkpoint_dir` for this run, or delete the file to start afresh."
        )
    n_rec = int(meta["records"])
    like = dict(like)
    like["losses"] = np.zeros((n_rec,), np.asarray(like["losses"]).dtype)
    if "trajectory" in like:
        like["trajectory"] = jax.tree_util.tree_map(
            lambda x: np.zeros((n_rec, *jnp.shape(x)), jnp.result_type(x)), params
        )
    tree, _ = _ckpt.load(path, like=like)
    return tree


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


# --------------------------------------------------------------------------------------
# fit
# --------------------------------------------------------------------------------------


def fit(
    loss_fn: LossFn,
    params: Params,
    optimizer: optax.GradientTransformation,
    data: Data = None,
    *,
    steps: int,
    batch_size: int | None = None,
    key: jax.Array | None = None,
    record_every: int = 1,
    trajectory: bool = False,
    value_and_grad: Callable[[Params, Data], Any] | None = None,
    progress: bool | None = None,
    on_divergence: str = "stop",
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int | None = None,
    mesh: Mesh | None = None,
    chunk_size: int | None = None,
) -> FitResult:
    r"""Minimise ``loss_fn(params, batch)`` for ``steps`` steps of ``optimizer``, compiled.

    Each step computes :math:`(\mathcal L_t, g_t)` = ``value_and_grad(params_t, B_t)``,
    then ``updates, opt_state = optimizer.update(g_t, opt_state, params_t)`` and
    ``params_{t+1} = optax.apply_updates(params_t, updates)``.

    Args:
      loss_fn: ``loss_fn(params, batch) -> scalar``; ``batch`` has the structure of ``data``.
      params: the initial parameters (a pytree of arrays).
      optimizer: an ``optax.GradientTransformation`` (``gd.optim.*`` or optax's own).
        The compiled run is cached per optimizer object: a Python loop of ``fit`` calls,
        each with a new ``sgd(lr)``, compiles every time; use :func:`sweep` to run many
        learning rates as one program.
      data: a pytree of arrays with the examples on axis 0 (e.g. ``(X, y)``), or None for
        a data-free loss (G1, S1).
      steps: the number of updates.
      batch_size: None for full-batch descent; otherwise each step uses ``batch_size``
        examples of a shuffled epoch (permutation from ``fold_in(key, epoch)``; the last
        ``m mod batch_size`` examples of each epoch's permutation are skipped).
      key: PRNG key of the mini-batch order (required with ``batch_size``).
      record_every: record the loss (and params) every this many steps.
      trajectory: also record the parameters at the recorded steps.
      value_and_grad: replaces ``jax.value_and_grad(loss_fn)``: a hand-written backprop
        returning ``(loss, grads)`` or a :class:`gdjax.Backprop`.
      progress: show a tqdm bar (None: when stderr is a terminal and the run has more
        than one chunk).
      on_divergence: ``"stop"`` (return the last finite parameters, ``diverged=True``) or
        ``"raise"`` (:class:`DivergenceError` naming the step).
      checkpoint_dir: save the run to ``checkpoint_dir/checkpoint.npz``, and resume from
        it when it holds a checkpoint of the same run.
      checkpoint_every: save every this many steps (a multiple of ``record_every``;
        default: after every chunk).
      mesh: a ``jax.sharding.Mesh``: the examples are sharded over its ``"data"`` axis
        (data parallel), parameters replicated.
      chunk_size: steps per compiled chunk (default: chosen so a chunk takes ~0.25 s).

    Returns:
      A :class:`FitResult`.
    """
    if not callable(loss_fn):
        raise TypeError(f"`loss_fn` must be a function loss_fn(params, batch), got {loss_fn!r}.")
    _check_optimizer(optimizer)
    steps = _check_int("steps", steps)
    record_every = _check_int("record_every", record_every)
    if on_divergence not in ("stop", "raise"):
        raise ValueError(f"`on_divergence` must be 'stop' or 'raise', got {on_divergence!r}.")
    if value_and_grad is not None and not callable(value_and_grad):
        raise TypeError("`value_and_grad` must be a function (params, batch) -> (loss, grads).")
    if checkpoint_every is not None:
        if checkpoint_dir is None:
            raise ValueError("`checkpoint_every` needs `checkpoint_dir`: pass both.")
        checkpoint_every = _check_int("checkpoint_every", checkpoint_every)
        if checkpoint_every % record_every:
            raise ValueError(
                f"`checkpoint_every={checkpoint_every}` must be a multiple of "
                f"`record_every={record_every}`."
            )
    if chunk_size is not None:
        chunk_size = _check_int("chunk_size", chunk_size)

    params = _as_arrays("params", params)
    check_finite("params", params)
    data = _as_arrays("data", data)
    check_finite("data", data)
    m = _n_examples(data)
    mesh_size = 1
    if mesh is not None:
        axis = _data_axis(mesh)
        mesh_size = mesh.shape[axis]
        if m is not None and m % mesh_size:
            raise ValueError(
                f"`data` has m={m} examples, not divisible by the {mesh_size} devices of "
                f"`mesh`. Drop or pad examples to a multiple of {mesh_size}."
            )
    if batch_size is not None:
        batch_size = _check_int("batch_size", batch_size)
        if key is None:
            raise ValueError(
                f"`batch_size={batch_size}` draws shuffled mini-batches: pass `key`, e.g. "
                f"key=jax.random.key(0), so that the run is reproducible."
            )
    _check_batch(batch_size, m, mesh_size)
    key = None if batch_size is None else _normalise_key(key)

    batch_sharding = None
    if mesh is not None:
        batch_sharding = NamedSharding(mesh, PartitionSpec(axis))
        replicated = NamedSharding(mesh, PartitionSpec())
        data = jax.device_put(data, batch_sharding)
        params = jax.device_put(params, replicated)
        if key is not None:
            key = jax.device_put(key, replicated)

    cfg = _Config(
        loss_fn=loss_fn,
        value_and_grad=value_and_grad,
        make_opt=_FixedOptimizer(optimizer),
        records=1,
        record_every=record_every,
        n_examples=m,
        batch_size=batch_size,
        trajectory=bool(trajectory),
        batch_sharding=batch_sharding,
    )
    loss_dtype = _check_loss(loss_fn, params, data, batch_size)
    state = _init_state(cfg, params, {})
    if chunk_size is not None:
        records = max(1, chunk_size // record_every)
    else:
        seconds = _estimate_step_seconds(cfg, state, data, key, {})
        records = _chunk_records(steps, record_every, checkpoint_every, seconds)
    cfg = dataclasses.replace(cfg, records=records)
    chunk = cfg.chunk

    # ---- resume -------------------------------------------------------------------
    losses_hist: list[np.ndarray] = []
    traj_hist: list[Any] = []
    ckpt_path = None
    if checkpoint_dir is not None:
        ckpt_path = Path(checkpoint_dir) / CHECKPOINT_NAME
        fingerprint = _fingerprint(
            params,
            data,
            key,
            steps=steps,
            batch_size=batch_size,
            record_every=record_every,
            trajectory=bool(trajectory),
        )
        for stale in ckpt_path.parent.glob(f".{CHECKPOINT_NAME}.*.tmp"):
            stale.unlink(missing_ok=True)  # half-written by a run killed mid-save
        if ckpt_path.exists():
            like = _checkpoint_tree(
                state,
                key,
                np.zeros((0,), loss_dtype),
                params if trajectory else None,
            )
            tree = _resume(ckpt_path, fingerprint, like, params)
            state = tree["state"]
            if mesh is not None:
                state = jax.device_put(state, replicated)
            losses_hist.append(np.asarray(tree["losses"]))
            if trajectory:
                traj_hist.append(jax.tree_util.tree_map(np.asarray, tree["trajectory"]))
    t0 = int(state.t)

    n_chunks = -(-(steps - min(t0, steps)) // chunk)
    bar = _Progress(progress, steps, min(t0, steps), n_chunks, "fit")
    n_steps = jnp.int32(steps)
    last_saved = [t0]

    lean = dataclasses.replace(cfg, careful=False)

    def run_chunk(s: _State, t: int):
        program = lean if t + chunk <= steps else cfg  # the tail chunk is masked
        return _run_chunk(program, s, data, key, {}, n_steps)

    def replay(s: _State, t: int):
        return _run_chunk(cfg, s, data, key, {}, n_steps)

    def save(s: _State, t_end: int) -> None:
        n_rec = -(-t_end // record_every)
        losses = np.concatenate(losses_hist)[:n_rec]
        traj = _stack_host(traj_hist, n_rec) if trajectory else None
        _ckpt.save(
            ckpt_path,
            _checkpoint_tree(s, key, losses, traj),
            {"kind": "gdjax.fit", "step": t_end, "records": n_rec, "fingerprint": fingerprint},
        )
        last_saved[0] = t_end

    def on_chunk(s: _State, outputs, t_end: int) -> None:
        losses, traj = jax.device_get(outputs)
        losses_hist.append(losses)
        if trajectory:
            traj_hist.append(traj)
        done = t_end >= steps or bool(s.stopped)
        bar.update(t_end, _last_finite(losses))
        if ckpt_path is not None:
            every = checkpoint_every or chunk
            if done or t_end // every > last_saved[0] // every:
                save(s, t_end)

    try:
        if not bool(state.stopped):  # a checkpoint of a diverged run has nothing to do
            state = _drive(
                run_chunk,
                state,
                t0,
                steps,
                chunk,
                on_chunk=on_chunk,
                stopped=lambda s: bool(s.stopped),
                replay=replay,
            )
    finally:
        bar.close()

    diverged = bool(state.stopped)
    diverged_at = int(state.diverged_at) if diverged else None
    last_step = diverged_at if diverged else steps - 1
    n_rec = last_step // record_every + 1
    losses = np.concatenate(losses_hist)[:n_rec] if losses_hist else np.zeros((0,), np.float32)
    result = FitResult(
        params=state.params,
        opt_state=state.opt_state,
        losses=jnp.asarray(losses),
        steps=diverged_at if diverged else steps,
        diverged=diverged,
        diverged_at=diverged_at,
        trajectory=(
            jax.tree_util.tree_map(jnp.asarray, _stack_host(traj_hist, n_rec))
            if trajectory
            else None
        ),
        key=key,
    )
    if diverged and on_divergence == "raise":
        raise DivergenceError(diverged_at, result)
    return result


def _check_loss(loss_fn: LossFn, params: Params, data: Data, batch_size: int | None) -> np.dtype:
    """Trace ``loss_fn`` once on a batch's shapes; it must return a scalar. Its dtype."""
    cache_key = ("loss", loss_fn, _abstract((params, data)), batch_size)
    if cache_key in _STEP_SECONDS:
        return _STEP_SECONDS[cache_key]

    def batch_shape(x):
        shape = jnp.shape(x) if batch_size is None else (batch_size, *jnp.shape(x)[1:])
        return jax.ShapeDtypeStruct(shape, jnp.result_type(x))

    out = jax.eval_shape(loss_fn, params, jax.tree_util.tree_map(batch_shape, data))
    if not hasattr(out, "shape") or out.shape != ():
        raise ValueError(
            f"`loss_fn` must return a scalar, got {getattr(out, 'shape', out)}. Reduce it, "
            f"e.g. with jnp.mean over the examples."
        )
    _STEP_SECONDS[cache_key] = np.dtype(out.dtype)
    return np.dtype(out.dtype)


def _stack_host(chunks: list[Any], n: int) -> Any:
    """Concatenate per-chunk stacked trees (leading axis) on the host; keep ``n`` rows."""
    return jax.tree_util.tree_map(lambda *xs: np.concatenate(xs)[:n], *chunks)


# --------------------------------------------------------------------------------------
# sweep
# --------------------------------------------------------------------------------------


def grid(**axes: Any) -> dict[str, jax.Array]:
    """The Cartesian product of 1-D hyperparameter axes, flattened for :func:`sweep`.

    >>> grid(learning_rate=[0.1, 0.01], b1=[0.9, 0.99])["b1"]
    Array([0.9 , 0.99, 0.9 , 0.99], dtype=float32)

    The last axis varies fastest (``itertools.product`` order).
    """
    if not axes:
        raise ValueError("grid: pass at least one axis, e.g. grid(learning_rate=[0.1, 0.01]).")
    values = {}
    for name, v in axes.items():
        arr = np.asarray(v)
        if arr.ndim != 1 or arr.size == 0:
            raise ValueError(f"grid: `{name}` must be a non-empty 1-D sequence, got {v!r}.")
        values[name] = arr
    rows = list(itertools.product(*values.values()))
    return {
        name: jnp.asarray(np.array([r[i] for r in rows], dtype=values[name].dtype))
        for i, name in enumerate(values)
    }


def _settings(learning_rates, hyperparams) -> dict[str, jax.Array]:
    if learning_rates is not None and hyperparams is not None:
        if "learning_rate" in hyperparams:
            raise ValueError(
                "Pass the learning rates once: either `learning_rates` or "
                "hyperparams['learning_rate'], not both."
            )
        hyperparams = {"learning_rate": learning_rates, **hyperparams}
    elif learning_rates is not None:
        hyperparams = {"learning_rate": learning_rates}
    elif hyperparams is None:
        raise ValueError(
            "sweep: pass `learning_rates=[...]` or `hyperparams={name: [...]}` (see gd.train.grid)."
        )
    if not isinstance(hyperparams, Mapping) or not hyperparams:
        raise TypeError("`hyperparams` must be a non-empty dict name -> 1-D array.")
    settings: dict[str, jax.Array] = {}
    for name, v in hyperparams.items():
        arr = jnp.asarray(v)
        if arr.ndim != 1 or arr.shape[0] == 0:
            raise ValueError(
                f"hyperparameter `{name}` must be a non-empty 1-D array, got shape {arr.shape}."
            )
        check_finite(f"hyperparams[{name!r}]", arr)
        settings[name] = arr
    sizes = {n: a.shape[0] for n, a in settings.items()}
    if len(set(sizes.values())) > 1:
        raise ValueError(
            f"Hyperparameter arrays must all have the same length K (settings are zipped), "
            f"got {sizes}. Use gd.train.grid(...) for a product grid."
        )
    return settings


def sweep(
    loss_fn: LossFn,
    params: Params,
    optimizer: Callable[..., optax.GradientTransformation],
    data: Data = None,
    *,
    steps: int,
    learning_rates: Any = None,
    hyperparams: Mapping[str, Any] | None = None,
    seeds: int | Any = None,
    init_fn: Callable[[jax.Array], Params] | None = None,
    batch_size: int | None = None,
    key: jax.Array | None = None,
    record_every: int = 1,
    value_and_grad: Callable[[Params, Data], Any] | None = None,
    progress: bool | None = None,
    chunk_size: int | None = None,
) -> SweepResult:
    """Run :func:`fit` for many hyperparameter settings and seeds as one vmapped program.

    Args:
      loss_fn, params, data, steps, batch_size, record_every, value_and_grad: as in
        :func:`fit`; ``params`` is every run's start unless ``init_fn`` is given.
      optimizer: a factory called with keyword hyperparameters inside the compiled
        program, e.g. ``gd.optim.sgd`` or ``lambda learning_rate, b1: optax.adam(
        learning_rate, b1=b1)``; it must accept traced scalars.
      learning_rates: 1-D array; shorthand for ``hyperparams={"learning_rate": ...}``.
      hyperparams: name -> 1-D array, all of length K (zipped; see :func:`grid`).
      seeds: an int S (seeds ``0 … S-1``) or a 1-D array of ints, crossed with the
        settings: K·S runs, the seed varying fastest. Seed ``s`` has the key
        ``jax.random.key(s)`` (or ``fold_in(key, s)`` when ``key`` is given), split into
        ``k_init, k_data``: ``init_fn(k_init)`` draws its parameters, ``k_data`` its
        mini-batch order.
      init_fn: ``init_fn(key) -> params`` (needs ``seeds``).
      key: without seeds, the mini-batch key shared by every run.
      progress, chunk_size: as in :func:`fit`.

    Returns:
      A :class:`SweepResult`. Run ``i`` equals
      ``fit(loss_fn, params_i, optimizer(**setting_i), data, key=k_data_i, ...)``.
    """
    if not callable(loss_fn):
        raise TypeError(f"`loss_fn` must be a function loss_fn(params, batch), got {loss_fn!r}.")
    if isinstance(optimizer, optax.GradientTransformation) or not callable(optimizer):
        raise TypeError(
            "sweep: `optimizer` must be a factory of hyperparameters, e.g. gd.optim.sgd or "
            "lambda learning_rate: optax.adam(learning_rate), not an optimizer instance."
        )
    steps = _check_int("steps", steps)
    record_every = _check_int("record_every", record_every)
    if chunk_size is not None:
        chunk_size = _check_int("chunk_size", chunk_size)
    settings = _settings(learning_rates, hyperparams)
    n_settings = next(iter(settings.values())).shape[0]

    if seeds is not None:
        seed_arr = np.arange(seeds) if isinstance(seeds, int | np.integer) else np.asarray(seeds)
        bad = seed_arr.ndim != 1 or seed_arr.size == 0 or seed_arr.dtype.kind not in "iu"
        if bad or (seed_arr < 0).any():
            raise ValueError(
                f"`seeds` must be a positive int or a 1-D array of ints >= 0, got {seeds!r}."
            )
    else:
        seed_arr = None
    if init_fn is not None and seed_arr is None:
        raise ValueError("`init_fn` draws parameters per seed: pass `seeds` too, e.g. seeds=4.")

    data = _as_arrays("data", data)
    check_finite("data", data)
    m = _n_examples(data)
    if batch_size is not None:
        batch_size = _check_int("batch_size", batch_size)
        if key is None and seed_arr is None:
            raise ValueError(
                f"`batch_size={batch_size}` draws shuffled mini-batches: pass `key` (or "
                f"`seeds`), e.g. key=jax.random.key(0)."
            )
    _check_batch(batch_size, m, 1)

    # ---- the K·S runs -------------------------------------------------------------------
    n_seeds = 1 if seed_arr is None else seed_arr.size
    hyper = {n: jnp.repeat(v, n_seeds) for n, v in settings.items()}
    out_settings = dict(hyper)
    params_axis = None
    run_key, key_axis = None, None
    if seed_arr is not None:
        seeds_flat = np.tile(seed_arr, n_settings)
        out_settings["seed"] = jnp.asarray(seeds_flat)
        base = None if key is None else _normalise_key(key)

        def seed_keys(s):
            k = jax.random.key(s) if base is None else jax.random.fold_in(base, s)
            return jax.random.split(k)

        keys = jax.vmap(seed_keys)(jnp.asarray(seeds_flat, jnp.uint32))
        if init_fn is not None:
            params = jax.vmap(init_fn)(keys[:, 0])
            params_axis = 0
        if batch_size is not None:
            run_key, key_axis = keys[:, 1], 0
    elif batch_size is not None:
        run_key = _normalise_key(key)
    params = _as_arrays("params", params)
    check_finite("params", params)
    one_params = params if params_axis is None else jax.tree_util.tree_map(lambda x: x[0], params)
    _check_loss(loss_fn, one_params, data, batch_size)

    cfg = _Config(
        loss_fn=loss_fn,
        value_and_grad=value_and_grad,
        make_opt=_OptimizerFactory(optimizer),
        records=1,
        record_every=record_every,
        n_examples=m,
        batch_size=batch_size,
        trajectory=False,
    )
    state = _sweep_init(cfg, params, hyper, params_axis)
    n_runs = n_settings * n_seeds
    if chunk_size is not None:
        records = max(1, chunk_size // record_every)
    else:
        one = jax.tree_util.tree_map(lambda x: x[0], (state, hyper))
        one_key = run_key if key_axis is None else run_key[0]
        seconds = _estimate_step_seconds(cfg, one[0], data, one_key, one[1]) * n_runs
        records = _chunk_records(steps, record_every, None, seconds)
    cfg = dataclasses.replace(cfg, records=records)

    losses_hist: list[np.ndarray] = []
    bar = _Progress(progress, steps, 0, -(-steps // cfg.chunk), "sweep")
    n_steps = jnp.int32(steps)

    def run_chunk(s, t):
        new_state, losses, _ = _run_sweep_chunk(cfg, s, data, run_key, hyper, n_steps, key_axis)
        return new_state, losses

    def on_chunk(s, outputs, t_end):
        (losses,) = jax.device_get(outputs)
        losses_hist.append(losses)
        bar.update(t_end, None)

    try:
        state = _drive(
            run_chunk,
            state,
            0,
            steps,
            cfg.chunk,
            on_chunk=on_chunk,
            stopped=lambda s: bool(jnp.all(s.stopped)),
        )
    finally:
        bar.close()

    n_rec = -(-steps // record_every)
    losses = np.concatenate(losses_hist, axis=1)[:, :n_rec]
    diverged, diverged_at = np.asarray(state.stopped), np.asarray(state.diverged_at)
    recorded_step = np.arange(n_rec) * record_every
    losses[diverged[:, None] & (recorded_step[None, :] > diverged_at[:, None])] = np.nan
    losses = jnp.asarray(losses)
    final_loss = _final_loss(loss_fn, state.params, data)
    score = np.where(diverged, np.inf, np.asarray(final_loss, np.float64))
    score = np.where(np.isnan(score), np.inf, score)
    best_index = int(np.argmin(score))
    best = {n: np.asarray(v)[best_index].item() for n, v in out_settings.items()}
    return SweepResult(
        settings=out_settings,
        losses=losses,
        final_loss=final_loss,
        params=state.params,
        diverged=jnp.asarray(diverged),
        diverged_at=jnp.asarray(diverged_at),
        best_index=best_index,
        best=best,
    )

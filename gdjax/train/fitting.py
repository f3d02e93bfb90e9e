"""``gd.fit``: one training run, compiled once, checkpointed, resumable."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from gdjax import optim
from gdjax._validate import UsageError, as_key, check_choice, check_int
from gdjax.train import args as A
from gdjax.train import dots, planner
from gdjax.train import resume as R
from gdjax.train.compiles import collector_paused
from gdjax.train.factory import keyed
from gdjax.train.placement import place
from gdjax.train.program import (
    LossFn,
    Program,
    StepInfo,
)
from gdjax.train.results import FitResult
from gdjax.train.run import Run

Params = Any
Data = Any


def fit(
    loss_fn: LossFn,
    params: Params,
    optimizer: optax.GradientTransformation,
    data: Data = None,
    *,
    steps: int,
    batch_size: int | None = None,
    key: jax.Array | int | None = None,
    record_every: int = 1,
    trajectory: bool = False,
    value_and_grad: Callable[[Params, Data], Any] | None = None,
    progress: bool | None = None,
    on_divergence: str = "stop",
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int | None = None,
    mesh: Mesh | None = None,
    chunk_size: int | None = None,
    monitor: Callable[[StepInfo], Any] | None = None,
) -> FitResult:
    r"""Minimise ``loss_fn(params, batch)`` for ``steps`` steps of ``optimizer``, compiled.

    Each step computes :math:`(\mathcal L_t, g_t)` = ``value_and_grad(params_t, B_t)``,
    then ``updates, opt_state = optimizer.update(g_t, opt_state, params_t)`` and
    ``params_{t+1} = optax.apply_updates(params_t, updates)``.

    The compiled program is keyed by the loss, the shapes, and the optimizer's *static*
    choices only: a ``gd.optim`` rule's numeric hyperparameters (learning rate, β's, eps,
    a schedule's constants), ``steps``, the key and the data values are arguments, so a
    second call that changes them does not compile again. (A plain optax transformation
    is one static object: each new one compiles once.)

    Args:
      loss_fn: ``loss_fn(params, batch) -> scalar``; ``batch`` has the structure of ``data``.
      params: the initial parameters (a pytree of float arrays).
      optimizer: an ``optax.GradientTransformation`` (``gd.optim.*`` or optax's own).
      data: a pytree of arrays with the examples on axis 0 (e.g. ``(X, y)``), or None for
        a data-free loss (G1, S1).
      steps: the number of updates.
      batch_size: None for full-batch descent; otherwise each step uses ``batch_size``
        examples of a shuffled epoch (permutation from ``fold_in(key, epoch)``; the last
        ``m mod batch_size`` examples of each epoch's permutation are skipped).
      key: the mini-batch order's PRNG key, or an int seed (required with ``batch_size``).
      record_every: record the loss (and params) every this many steps.
      trajectory: also record the parameters at the recorded steps.
      value_and_grad: replaces ``jax.value_and_grad(loss_fn)``: a hand-written backprop
        returning ``(loss, grads)`` or a :class:`gdjax.Backprop`.
      progress: show a tqdm bar (None: when stderr is a terminal and the run has more
        than one chunk).
      on_divergence: ``"stop"`` (return the last finite parameters, ``diverged=True``) or
        ``"raise"`` (:class:`DivergenceError` naming the step).
      checkpoint_dir: save the run there, and resume from it when it holds a checkpoint
        of the same run (see :mod:`gdjax.train.resume`); checked before training starts.
        With several processes it must be one directory all of them see: process 0
        writes it, every process resumes from it.
      checkpoint_every: save every this many steps (a multiple of ``record_every``;
        default: after every chunk).
      mesh: a ``jax.sharding.Mesh``: the examples are sharded over its ``"data"`` axis
        (data parallel), parameters replicated. With several processes
        (``jax.distributed``), every process passes the same arguments (the same full
        ``data``, or a global ``jax.Array`` of it) and gets the same result.
      chunk_size: steps per chunk between progress updates (default: ~0.25 s of steps).
      monitor: ``monitor(info) -> pytree of arrays``, called inside the compiled loop at
        every recorded step with a :class:`gdjax.train.StepInfo` (``t``, ``params``,
        ``grads``, ``updates``, ``loss``, ``batch``); its outputs come back stacked in
        ``FitResult.monitor`` (NumPy, aligned with ``losses``, NaN after divergence). It is
        part of the compile key, as ``loss_fn`` is, compared by its code and the values it
        reads (:mod:`gdjax.train.factory`): written again, it reuses the program.
        See :mod:`gdjax.diagnostics` for ready-made monitors.

    Returns:
      A :class:`FitResult`.
    """
    if not callable(loss_fn):
        raise UsageError(f"`loss_fn` must be a function loss_fn(params, batch), got {loss_fn!r}.")
    A.check_optimizer(optimizer)
    if optim.num_settings(optimizer) is not None:
        raise UsageError(
            f"`optimizer` holds {optim.num_settings(optimizer)} settings of its "
            f"hyperparameters; fit runs one. Use gd.sweep to run them all at once."
        )
    steps = A.check_steps(steps)
    record_every = check_int("record_every", record_every)
    check_choice("on_divergence", on_divergence, ("stop", "raise"))
    if value_and_grad is not None and not callable(value_and_grad):
        raise UsageError("`value_and_grad` must be a function (params, batch) -> (loss, grads).")
    if checkpoint_every is not None:
        if checkpoint_dir is None:
            raise UsageError("`checkpoint_every` needs `checkpoint_dir`: pass both.")
        checkpoint_every = check_int("checkpoint_every", checkpoint_every)
        if checkpoint_every % record_every:
            raise UsageError(
                f"`checkpoint_every={checkpoint_every}` must be a multiple of "
                f"`record_every={record_every}`."
            )
    if chunk_size is not None:
        chunk_size = check_int("chunk_size", chunk_size)
    if monitor is not None and not callable(monitor):
        raise UsageError(
            f"`monitor` must be a function monitor(info) -> pytree of arrays, got {monitor!r}."
        )

    opt_static, opt_leaves = optim.partition(optimizer)
    params, params_sig = A.arrays("params", params)
    data, data_sig = A.arrays("data", data)
    traj_bytes = _nbytes(params_sig) if trajectory else 0
    A.check_history(steps, record_every, 8 + traj_bytes)
    if batch_size is not None:
        batch_size = check_int("batch_size", batch_size)
        if key is None:
            raise UsageError(
                f"`batch_size={batch_size}` draws shuffled mini-batches: pass `key`, e.g. "
                f"key=jax.random.key(0) or key=0, so that the run is reproducible."
            )
    key = None if batch_size is None else as_key(key)
    path = None
    with contextlib.ExitStack() as held:
        if checkpoint_dir is not None:  # before anything is traced or compiled
            nbytes = 4 * _nbytes(params_sig)  # + opt state
            path = R.preflight(Path(checkpoint_dir), nbytes)
            if jax.process_index() == 0:  # process 0 writes (and holds) the checkpoint
                held.enter_context(R.locked(path.parent))
        plan = _plan(
            held,
            (params_sig, data_sig, key is None),
            keyed(loss_fn),  # the same code and values: the same program (train/factory.py)
            params,
            opt_static,
            opt_leaves,
            data,
            key,
            mesh,
            batch_size=batch_size,
            record_every=record_every,
            trajectory=bool(trajectory),
            value_and_grad=keyed(value_and_grad),
            chunk_size=chunk_size,
            monitor=keyed(monitor),
        )
        prog = plan.prog
        if mesh is not None:
            replicated = NamedSharding(mesh, PartitionSpec())
            data = place(data, prog.batch_sharding)
            params, opt_leaves = place((params, opt_leaves), replicated)
            if key is not None:
                key = place(key, replicated)
        run = Run(
            prog,
            data,
            key,
            opt_leaves,
            steps,
            checkpoint_every,
            params,
            plan.monitor_like,
            bad_input=lambda: A.refuse_non_finite(params, data),  # read with chunk 1
            careful=plan.careful,
            like=plan.like,
        )
        saver, state = None, None  # None: fresh (Run.train begins it)
        if path is not None:
            state = run.begin()
            fp = R.fingerprint(
                params,
                data,
                key,
                optimizer,
                steps=steps,
                batch_size=batch_size,
                record_every=record_every,
                trajectory=bool(trajectory),
                monitor=None if monitor is None else _name(monitor),
            )
            state, segments = run.resume(path, fp, state, run.params)
            # every process resumes from the same files; only process 0 writes them
            saver = R.Saver(path, fp, segments) if jax.process_index() == 0 else None
            if mesh is not None:
                state = place(state, NamedSharding(mesh, PartitionSpec()))
        state = run.train(state, progress, saver)
    return run.result(state, on_divergence, saver)


@dataclasses.dataclass(frozen=True)
class _Plan:
    """What a fit's arguments' structure decides, checked and built once per structure."""

    prog: Program  # sized
    careful: Program  # prog with the careful step
    monitor_like: Any  # one record of the monitor's output (None without one)
    like: dict[str, Any]  # zero records of each recorded quantity


_PLANS: dict[Any, _Plan] = {}


def _plan(
    held: contextlib.ExitStack,
    signature,
    loss_fn,
    params,
    opt_static,
    opt_leaves,
    data,
    key,
    mesh,
    *,
    batch_size,
    record_every,
    trajectory,
    value_and_grad,
    chunk_size,
    monitor,
) -> _Plan:
    """The run's program: from the memo when a call with the same loss, optimizer
    statics, argument shapes and options was checked before; else every check that
    depends on them (dtypes, examples, batch, mesh, the loss's output) and the chunk size,
    with the garbage collector paused in ``held`` from here to the end of the run (its
    program is traced and compiled then).
    """
    memo_key = (
        loss_fn,
        value_and_grad,
        monitor,
        opt_static,
        signature,
        batch_size,
        record_every,
        trajectory,
        chunk_size,
        mesh,
        dots.MAX_CONTRACTION,
    )
    plan = _PLANS.get(memo_key)
    if plan is not None:
        return plan
    held.enter_context(collector_paused(True))
    A.check_params(params)
    m = A.n_examples(data)
    mesh_size, batch_sharding = 1, None
    if mesh is not None:
        axis = A.data_axis(mesh)
        mesh_size = mesh.shape[axis]
        if m is not None and m % mesh_size:
            raise UsageError(
                f"`data` has m={m} examples, not divisible by the {mesh_size} devices of "
                f"`mesh`. Drop or pad examples to a multiple of {mesh_size}."
            )
        batch_sharding = NamedSharding(mesh, PartitionSpec(axis))
    A.check_batch(batch_size, m, mesh_size)
    loss_dtype = A.check_loss(loss_fn, params, data, batch_size)
    prog = Program(
        loss_fn=loss_fn,
        value_and_grad=value_and_grad,
        opt_static=opt_static,
        capacity=1,
        record_every=record_every,
        n_examples=m,
        batch_size=batch_size,
        trajectory=trajectory,
        loss_dtype=loss_dtype,
        batch_sharding=batch_sharding,
        monitor=monitor,
        small_dots=dots.limit(),
    )
    traj_bytes = _nbytes(signature[0]) if trajectory else 0  # signature: (params, data, key)
    prog, seen = planner.planned(
        prog, chunk_size, params, data, key, opt_leaves, trajectory_bytes=traj_bytes
    )
    like = Run(prog, None, None, None, 1, None, params, seen).like
    plan = _Plan(prog, dataclasses.replace(prog, careful=True), seen, like)
    return planner.remember(_PLANS, memo_key, plan)


def _nbytes(signature) -> int:
    """The bytes of the arrays that an :func:`args.arrays` signature describes."""
    return sum(int(np.prod(a.shape)) * np.dtype(a.dtype).itemsize for a in signature[1])


def _name(fn: Any) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', type(fn).__name__)}"

r"""The compiled program of a run: one chunk of steps as a ``lax.while_loop``.

A step is

.. math::
    (\mathcal L_t, g_t) = \mathrm{value\_and\_grad}(\theta_t, B_t), \quad
    (u_t, s_{t+1}) = \mathrm{update}(g_t, s_t, \theta_t), \quad
    \theta_{t+1} = \theta_t + u_t.

Everything that may change between calls without changing the program is an
*argument*: the data, the key, the optimizer's numeric hyperparameters (the leaves of
:func:`gdjax.optim.partition`), the run's length and the number of records in this
chunk. What shapes the program is the hashable :class:`Program`, the jit cache key. So a
new learning rate, a new ``steps`` or a new seed runs the same executable.

Two variants of the step (``Program.careful``):

* lean: the update alone. The chunk's ``stopped`` flag is raised by non-finite parameters
  at its end, a non-finite loss at a step it does not record, and a non-finite recorded
  loss: a single run checks the running sum of its recorded losses (one scalar add per
  record; a reduction over the buffer at the end would put the chunk over XLA's
  inline-execution threshold; a sum that overflows on finite losses only costs a
  replay), a sweep reduces its buffer (it runs on XLA's thread pool either way). The host
  runs every chunk this way and reads its flags (a run's one), never scans its losses;
* careful: a step whose loss or new parameters are not finite is not applied and the run
  freezes at the last finite parameters, recording the step. The host replays a chunk
  that diverged with this variant, from the chunk's start, so a diverged run keeps its
  last good state while the common case pays for none of the checks.

The lean chunk's per-step work is the expert's own ``scan`` body and one write of the
loss: no flag, and no permutation carry in full-batch runs. The chunk consumes its input
state (donated buffers): without that, XLA copies every parameter into the loop and
returns unchanged inputs as copies, and XLA's CPU client, seeing more than eight
independent operations around the loop, runs the program on its thread pool instead of
inline (~0.1 ms more per call, as much as 2,000 N1 steps).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax import lax
from jax.sharding import NamedSharding

from gdjax.train.dots import small_dots
from gdjax.train.factory import optimizer_of
from gdjax.train.layout import step_with_runs_innermost
from gdjax.train.records import blank, loss_block, loss_of, record_index

Params = Any
Data = Any
LossFn = Callable[[Params, Data], jax.Array]


class StepInfo(NamedTuple):
    r"""What a ``monitor`` sees at a recorded step ``t`` (inside the compiled loop).

    ``params`` are :math:`\theta_t` (before the update), ``grads`` :math:`g_t` at them,
    ``updates`` :math:`u_t` (so :math:`\theta_{t+1} = \theta_t + u_t`), ``loss``
    :math:`\mathcal L(\theta_t; B_t)` and ``batch`` :math:`B_t`.
    """

    t: jax.Array
    params: Params
    grads: Params
    updates: Params
    loss: jax.Array
    batch: Data


class State(NamedTuple):
    """The loop carry: everything a run needs to continue (and what a checkpoint holds)."""

    params: Params
    opt_state: optax.OptState
    t: jax.Array  # int32: index of the next step
    stopped: jax.Array  # bool: the run diverged; nothing changes any more
    diverged_at: jax.Array  # int32: the step that diverged, -1 if none


@dataclasses.dataclass(frozen=True)
class Program:
    """Static description of the compiled program (hashable: the jit cache key)."""

    loss_fn: LossFn
    value_and_grad: Callable | None
    opt_static: Any  # gdjax.optim.partition(optimizer)[0]
    capacity: int  # records a chunk can hold (its buffers' length)
    record_every: int
    n_examples: int | None  # m, for mini-batches
    batch_size: int | None  # None: full batch
    trajectory: bool
    loss_dtype: Any  # numpy dtype of the loss
    batch_sharding: NamedSharding | None = None
    careful: bool = False
    settings_axis: bool = False  # a sweep: state, key and leaves have a leading runs axis
    batched_key: bool = False  # (sweep) one key per run
    batched_params: bool = False  # (sweep) one initial params per run
    monitor: Callable[[StepInfo], Any] | None = None  # recorded at the recorded steps
    small_dots: int = 0  # products of at most this many contracted elements: multiply-adds
    runs_innermost: int = 0  # (sweep) state leaves this small per run: runs axis innermost

    def optimizer(self, leaves: Any) -> optax.GradientTransformation:
        return optimizer_of(self.opt_static, leaves)


def loss_and_grads(prog: Program, params: Params, batch: Data) -> tuple[jax.Array, Params]:
    if prog.value_and_grad is None:
        loss, grads = jax.value_and_grad(prog.loss_fn)(params, batch)
    else:
        out = prog.value_and_grad(params, batch)
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


def permutation(key: jax.Array, epoch: jax.Array, m: int) -> jax.Array:
    """The example order of epoch ``epoch``: a permutation drawn from ``fold_in(key, epoch)``."""
    return jax.random.permutation(jax.random.fold_in(key, epoch), m)


def _batch(prog: Program, data: Data, key: jax.Array, t: jax.Array, perm: jax.Array):
    """The batch of step ``t`` and the (possibly refreshed) permutation of its epoch.

    Epoch ``e = t // n_b`` visits examples in the order ``perm_e``, in ``n_b = m // b``
    consecutive slices of ``b``; the last ``m mod b`` examples of each (different)
    permutation are skipped that epoch.
    """
    if prog.batch_size is None:
        return data, perm
    b, m = prog.batch_size, prog.n_examples
    n_b = m // b
    epoch, pos = t // n_b, t % n_b
    perm = lax.cond(pos == 0, lambda: permutation(key, epoch, m), lambda: perm)
    idx = lax.dynamic_slice_in_dim(perm, pos * b, b)
    batch = jax.tree_util.tree_map(lambda x: jnp.take(x, idx, axis=0), data)
    if prog.batch_sharding is not None:
        batch = lax.with_sharding_constraint(batch, prog.batch_sharding)
    return batch, perm


def all_finite(tree: Any) -> jax.Array:
    """Whether every value of ``tree``'s inexact leaves is finite: one reduction over
    the concatenation of the leaves of each dtype (XLA fuses it: nothing is copied). One
    reduction per leaf made N1's fresh program 60 ms slower to lower (its 14 leaves,
    checked twice)."""
    groups: dict[Any, list[jax.Array]] = {}
    for x in jax.tree_util.tree_leaves(tree):
        if jnp.issubdtype(jnp.result_type(x), jnp.inexact):
            groups.setdefault(jnp.result_type(x), []).append(jnp.ravel(x))
    checks = [jnp.all(jnp.isfinite(jnp.concatenate(xs))) for xs in groups.values()]
    return functools.reduce(jnp.logical_and, checks, jnp.bool_(True))


def _step(prog: Program, opt, data, key, t, state: State, perm, observe: bool = False):
    """Step ``t``: the new state, the epoch permutation, the step's loss and (with
    ``observe``) ``prog.monitor`` of the step's :class:`StepInfo` (else None).

    ``t`` is the step's index, one unbatched counter for every run of a sweep; the
    state's own ``t`` is left as it is (the chunk sets it once, at its end).
    """
    batch, perm = _batch(prog, data, key, t, perm)
    loss, grads = loss_and_grads(prog, state.params, batch)
    if isinstance(opt, optax.GradientTransformationExtraArgs):
        updates, opt_state = opt.update(
            grads,
            state.opt_state,
            state.params,
            value=loss,
            grad=grads,
            value_fn=lambda p: prog.loss_fn(p, batch),
        )
    else:
        updates, opt_state = opt.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    seen = None
    if observe and prog.monitor is not None:
        seen = prog.monitor(StepInfo(t, state.params, grads, updates, loss, batch))
    if not prog.careful:  # the flag is raised by the caller where it is needed
        new = state._replace(params=params, opt_state=opt_state)
        return new, perm, loss, seen

    finite = jnp.isfinite(loss) & all_finite(params)
    accept = finite & ~state.stopped
    bad = ~finite & ~state.stopped

    def keep(new, old):
        return jax.tree_util.tree_map(lambda n, o: jnp.where(accept, n, o), new, old)

    new = state._replace(
        params=keep(params, state.params),
        opt_state=keep(opt_state, state.opt_state),
        stopped=state.stopped | bad,
        diverged_at=jnp.where(bad, t, state.diverged_at),
    )
    return new, perm, loss, seen


def run_chunk(prog: Program, state: State, data, key, opt_leaves, t0, n_steps, n_records, ok):
    """Up to ``n_records`` records of ``record_every`` steps from step ``t0``, ending early
    at ``n_steps`` (or, for one run, when it stops). None at all unless ``ok`` (a bool
    array: the host's check of the inputs, read after the chunk instead of before it).

    With ``prog.settings_axis`` the state, key and optimizer leaves carry a leading axis
    of runs and each step is ``jax.vmap``-ed over it; the loop counter stays a scalar, so
    the loop itself is not batched (no per-iteration select over the carry). The state
    given has no counters (``t``, ``stopped``, ``diverged_at`` are None): a sweep hands a
    chunk only live runs, all at ``t0``, so they are made here (three host transfers
    fewer per call) and returned as the other runs' are.

    Returns the new state and buffers of length ``prog.capacity``: the loss (and params,
    and ``prog.monitor``'s output) at the first step of each record; entries past the
    records made hold NaN (zeros). Also the loss of the final parameters on the whole
    data (per run) when the run ends in this chunk (it reached ``n_steps``, or one run
    stopped), else NaN.
    """
    batched = prog.settings_axis
    key_axis = 0 if prog.batched_key else None
    if batched:  # the runs' counters: every run a chunk is given is live and at step t0
        n_runs = jax.tree_util.tree_leaves(opt_leaves)[0].shape[0]
        state = state._replace(
            t=jnp.full((n_runs,), t0, jnp.int32),
            stopped=jnp.zeros((n_runs,), bool),
            diverged_at=jnp.full((n_runs,), -1, jnp.int32),
        )

    def one_step(state, perm, key, leaves, t):
        return _step(prog, prog.optimizer(leaves), data, key, t, state, perm)

    def observed(state, perm, key, leaves, t):
        return _step(prog, prog.optimizer(leaves), data, key, t, state, perm, True)

    # small matrix products as multiply-adds, on CPU (gdjax.train.dots)
    one_step, observed = (small_dots(f, prog.small_dots) for f in (one_step, observed))

    def first_perm(key):
        if prog.batch_size is None:
            return None
        return permutation(key, t0 // (prog.n_examples // prog.batch_size), prog.n_examples)

    if batched:
        axes = (0, 0, key_axis, 0, None)
        step, step_seen = (
            step_with_runs_innermost(jax.vmap(f, in_axes=axes), prog.runs_innermost, data)
            for f in (one_step, observed)
        )
        if prog.batch_size is None:
            perm = None
        elif key_axis is None:
            perm = jnp.broadcast_to(first_perm(key), (n_runs, *first_perm(key).shape))
        else:
            perm = jax.vmap(first_perm)(key)
    else:
        step, step_seen, perm = one_step, observed, first_perm(key)

    # Only a careful single run stops at the step that diverged; otherwise the loop runs
    # the records the host asked for (they end at ``n_steps``), a lean run's flag is sticky
    # and the host replays its chunk.
    stop_early = prog.careful and not batched

    def running(state):
        return ~state.stopped if stop_early else True

    def put(buffers, i, values):
        return jax.tree_util.tree_map(lambda b, v: b.at[i].set(v.astype(b.dtype)), buffers, values)

    def record(carry, base=0):
        t, state, perm, losses, traj, seen, total = carry
        i = record_index(t, t0, prog.record_every) - base  # into losses (a block of them)
        if prog.trajectory:
            traj = put(traj, i, state.params)
        first = step if prog.monitor is None else step_seen
        state, perm, loss, out = first(state, perm, key, opt_leaves, t)
        losses = lax.dynamic_update_index_in_dim(losses, loss.astype(losses.dtype), i, 0)
        if total is not None:
            total = total + loss.astype(total.dtype)
        if prog.monitor is not None:
            seen = put(seen, i, out)
        end = jnp.minimum(t + prog.record_every, n_steps)
        t = t + 1
        if prog.record_every > 1:

            def more(c):
                return (c[0] < end) & running(c[1])

            def inner(c):  # an unrecorded step: its loss raises the flag here
                s, p, loss, _ = step(c[1], c[2], key, opt_leaves, c[0])
                if not prog.careful:
                    s = s._replace(stopped=s.stopped | ~jnp.isfinite(loss))
                return c[0] + 1, s, p

            t, state, perm = lax.while_loop(more, inner, (t, state, perm))
        return t, state, perm, losses, traj, seen, total

    def cond(carry):
        i = record_index(carry[0], t0, prog.record_every)
        return (i < n_records) & running(carry[1]) & ok

    # buffers are record-major, (capacity, runs...): record i is one contiguous write
    lead = (state.t.shape[0],) if batched else ()
    losses = jnp.zeros((prog.capacity, *lead), prog.loss_dtype)

    def buffers(like):
        return jax.tree_util.tree_map(lambda p: blank((prog.capacity, *p.shape), p.dtype), like)

    traj = buffers(state.params) if prog.trajectory else None
    seen = None
    if prog.monitor is not None:
        t = jnp.asarray(t0, jnp.int32)
        like = jax.eval_shape(lambda *a: step_seen(*a)[3], state, perm, key, opt_leaves, t)
        seen = buffers(like)
    # a lean single run: the sum of its recorded losses (finite only if every one is)
    total = None
    if not (prog.careful or batched):
        total = jnp.zeros((), jnp.promote_types(prog.loss_dtype, jnp.float32))
    block = loss_block(prog, lead, losses.dtype, (state, perm, data))
    if block > 1:  # the records in blocks: the step's loop then holds only small buffers

        def record_block(carry):
            t, state, perm, losses, traj, seen, total = carry
            j = record_index(t, t0, prog.record_every)  # a multiple of block

            def more(c):
                i = record_index(c[0], t0, prog.record_every)
                return (i < n_records) & (i < j + block)

            def one(c):
                return record((*c, traj, seen, total), base=j)[:4]

            small = jnp.zeros((block, *lead), losses.dtype)
            t, state, perm, small = lax.while_loop(more, one, (t, state, perm, small))
            losses = lax.dynamic_update_slice_in_dim(losses, small, j, 0)
            return t, state, perm, losses, traj, seen, total

        body = record_block
    else:
        body = record
    carry = (jnp.asarray(t0, jnp.int32), state, perm, losses, traj, seen, total)
    t, state, _, losses, traj, seen, total = lax.while_loop(cond, body, carry)
    state = state._replace(t=jnp.broadcast_to(t, state.t.shape))  # the runs step together
    if not prog.careful:  # an update that overflowed without a non-finite loss: replay too
        check = jax.vmap(all_finite) if batched else all_finite
        stopped = state.stopped | ~check(state.params)
        if batched:  # and a non-finite recorded loss (the records not made hold zeros)
            stopped = stopped | ~jnp.isfinite(losses).all(0)
        else:  # and inputs that were not finite (no step ran): one flag for the host
            stopped = stopped | ~jnp.isfinite(total) | ~ok
        state = state._replace(stopped=stopped)
    # where the run ends here (all runs of a sweep reach n_steps together; one run may
    # also stop), the loss of its final parameters on the whole data, in this program
    ends = t >= n_steps if batched else (t >= n_steps) | state.stopped
    final = lax.cond(
        ok & ends,
        lambda: loss_of(prog.loss_fn, state.params, data, batched).astype(prog.loss_dtype),
        lambda: jnp.full(lead, jnp.nan, prog.loss_dtype),
    )
    return state, losses, traj, seen, final


# run_chunk, compiled: one executable per Program and argument shapes. It consumes
# ``state``: its buffers are donated to the output (see the module's docstring).
compiled_chunk = jax.jit(run_chunk, static_argnums=0, donate_argnums=1)


def monitor_like(prog: Program, state: State, data, key, opt_leaves) -> Any:
    """The shapes and dtypes of one run's ``prog.monitor`` output (None without one)."""
    if prog.monitor is None:
        return None
    perm = jnp.arange(prog.n_examples or 0, dtype=jnp.int32)

    def seen(state, data, key, leaves):
        opt = prog.optimizer(leaves)
        return _step(prog, opt, data, key, state.t, state, perm, True)[3]

    return jax.eval_shape(seen, state, data, key, opt_leaves)

r"""Small composable transforms, each one line of an optimizer's update equations.

Every transform is an :class:`optax.GradientTransformation`: ``init(params) -> state`` and
``update(updates, state, params) -> (updates, state)``. Each is written for one array
(the ``_*_leaf`` functions) and lifted to pytrees leaf by leaf. This module holds
``scale``, ``scale_by_learning_rate``, ``trace`` and ``add_decayed_weights``, and
re-exports ``chain`` (:mod:`gdjax.optim._chain`, a pytree of its gd.optim rules);
the adaptive scalings (``scale_by_rms``, ``scale_by_adam``, ``scale_by_rss``) live in
:mod:`gdjax.optim.scaling` and are re-exported here. The optimizers in
:mod:`gdjax.optim.rules` are chains of these, e.g. Adam is

.. math::  u = -\alpha_t \cdot \hat m_t / (\sqrt{\hat v_t + \bar\epsilon} + \epsilon)
   \quad = \quad \text{chain}(\text{scale\_by\_adam}, \text{scale\_by\_learning\_rate}).

Hyperparameters may be Python numbers or JAX scalars, traced ones included; a learning
rate or weight decay may also be a schedule (a function of the step count, which the
state carries). A transform closes over its hyperparameters; the rules of
:mod:`gdjax.optim.rules` are pytrees that rebuild their chain from their leaves.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gdjax._validate import UsageError, check_bool, check_choice
from gdjax.optim._chain import ChainState, chain
from gdjax.optim._util import (
    STATE_OF,
    Scalar,
    ScalarOrSchedule,
    beta_parts,
    cast,
    check_beta,
    check_dtype,
    check_grads,
    check_learning_rate,
    check_nonnegative,
    check_state,
    increment,
    map_leaves,
    zero_count,
)
from gdjax.optim.scaling import (
    ScaleByAdamState,
    ScaleByRmsState,
    ScaleByRssState,
    scale_by_adam,
    scale_by_rms,
    scale_by_rss,
)

__all__ = [
    "AddDecayedWeightsState",
    "ChainState",
    "ScaleByAdamState",
    "ScaleByLearningRateState",
    "ScaleByRmsState",
    "ScaleByRssState",
    "ScaleState",
    "TraceState",
    "add_decayed_weights",
    "chain",
    "scale",
    "scale_by_adam",
    "scale_by_learning_rate",
    "scale_by_rms",
    "scale_by_rss",
    "trace",
]


def _value_at(h: ScalarOrSchedule, count: jax.Array) -> Scalar:
    return h(count) if callable(h) else h


# ---------------------------------------------------------------------------------------
# scale, scale_by_learning_rate


class ScaleState(NamedTuple):
    """``scale`` keeps nothing; the empty state still tells init and update apart."""


def scale(step_size: Scalar) -> optax.GradientTransformation:
    """``u ← c·u`` for a fixed scalar ``c = step_size``."""

    def init(params: Any) -> ScaleState:
        del params
        return ScaleState()

    def update(updates: Any, state: ScaleState, params: Any = None) -> tuple[Any, ScaleState]:
        del params
        check_state(state, ScaleState, "scale")
        return jax.tree.map(lambda u: cast(step_size, u) * u, updates), state

    return optax.GradientTransformation(init, update)


class ScaleByLearningRateState(NamedTuple):
    count: jax.Array  # t: updates done so far (int32), the argument of a schedule


def scale_by_learning_rate(
    learning_rate: ScalarOrSchedule, *, flip_sign: bool = True
) -> optax.GradientTransformation:
    r"""``u ← −α_t·u``: a step down the slope (``+α_t·u`` with ``flip_sign=False``).

    ``learning_rate`` is a positive number α or a schedule, a function of the step count
    :math:`t = 0, 1, \ldots` that returns :math:`\alpha_t`. As in optax, only a schedule
    keeps a count (:class:`ScaleByLearningRateState`); a constant's state is empty
    (:class:`ScaleState`), so a plain step does no more work than ``α·u``.
    """
    check_learning_rate("learning_rate", learning_rate)
    check_bool("flip_sign", flip_sign)
    scheduled = callable(learning_rate)
    kind = ScaleByLearningRateState if scheduled else ScaleState

    def init(params: Any) -> ScaleByLearningRateState | ScaleState:
        del params
        return ScaleByLearningRateState(count=zero_count()) if scheduled else ScaleState()

    def update(updates, state, params=None):
        check_state(state, kind, "scale_by_learning_rate")
        if params is not None:
            check_grads(updates, params, "`params`")
        alpha = learning_rate(state.count) if scheduled else learning_rate
        step = -alpha if flip_sign else alpha
        updates = jax.tree.map(lambda u: cast(step, u) * u, updates)
        return updates, (ScaleByLearningRateState(increment(state.count)) if scheduled else state)

    return optax.GradientTransformation(init, update)


# ---------------------------------------------------------------------------------------
# trace: heavy-ball and Nesterov momentum


class TraceState(NamedTuple):
    trace: Any  # v, the velocity; same pytree as params


MomentumStyle = Literal["trace", "ema"]


def _trace_leaf(g, v, *, decay, nesterov, ema):
    # The β·v product is formed in the accumulator's dtype, then joins g's dtype.
    beta, one_minus_beta = beta_parts(decay)
    beta_v = (cast(beta, v) * v).astype(g.dtype)
    g_in = cast(one_minus_beta, g) * g if ema else g
    v_new = g_in + beta_v
    u = g_in + cast(beta, g) * v_new if nesterov else v_new
    return u, v_new.astype(v.dtype)


def trace(
    decay: Scalar,
    nesterov: bool = False,
    accumulator_dtype: Any = None,
    *,
    momentum_style: MomentumStyle = "trace",
) -> optax.GradientTransformation:
    r"""Momentum: a velocity that remembers past updates.

    .. math::
        v_t = \beta v_{t-1} + g_t \quad(\texttt{"trace"}: \text{optax, PyTorch}),
        \qquad v_t = \beta v_{t-1} + (1-\beta) g_t \quad(\texttt{"ema"}: \text{course notes}).

    Returns :math:`u_t = v_t`, or with Nesterov :math:`u_t = \beta v_t + g_t`
    (:math:`\beta v_t + (1-\beta) g_t` for ``"ema"``). With ``v_0 = 0``, the ``"ema"`` velocity
    is exactly :math:`(1-\beta)` times the ``"trace"`` one.
    """
    check_beta("momentum", decay)
    check_bool("nesterov", nesterov)
    check_choice("momentum_style", momentum_style, ("trace", "ema"))
    check_dtype("accumulator_dtype", accumulator_dtype)

    def init(params: Any) -> TraceState:
        return TraceState(
            trace=jax.tree.map(lambda p: jnp.zeros_like(p, dtype=accumulator_dtype), params)
        )

    def update(updates, state, params=None):
        del params
        check_state(state, TraceState, "trace (momentum)")
        check_grads(updates, state.trace, STATE_OF)
        updates, velocity = map_leaves(
            lambda g, v: _trace_leaf(
                g, v, decay=decay, nesterov=nesterov, ema=momentum_style == "ema"
            ),
            2,
            updates,
            state.trace,
        )
        return updates, TraceState(trace=velocity)

    return optax.GradientTransformation(init, update)


# ---------------------------------------------------------------------------------------
# add_decayed_weights: decoupled weight decay


_MASK_FIX = (
    "Pass a pytree of bools with the keys/nesting of the params, or of a prefix of them "
    "(a bool for a whole subtree: mask={'layer': False, 'head': True}), or a function "
    "params -> such a pytree."
)


def check_mask_leaves(mask: Any, where: str = "`mask`") -> None:
    """Every leaf of a mask is a bool (Python, NumPy, or a boolean array)."""
    for path, leaf in jax.tree_util.tree_flatten_with_path(mask)[0]:
        ok = isinstance(leaf, bool | np.bool_) or (
            isinstance(leaf, np.ndarray | jax.Array) and leaf.dtype == np.bool_
        )
        if not ok:
            raise UsageError(
                f"{where}{jax.tree_util.keystr(path)} is {leaf!r}, not True or False. " + _MASK_FIX
            )


def full_mask(mask: Any, params: Any) -> Any:
    """The mask spread over ``params``: a bool leaf of a prefix mask covers its subtree."""
    check_mask_leaves(mask)
    try:
        return jax.tree.map(lambda keep, sub: jax.tree.map(lambda _: keep, sub), mask, params)
    except (ValueError, TypeError):
        raise UsageError(
            f"`mask` is not shaped like the params (nor like a prefix of them).\n  mask: "
            f"{jax.tree.structure(mask)}\n  params: {jax.tree.structure(params)}\n" + _MASK_FIX
        ) from None


class AddDecayedWeightsState(NamedTuple):
    count: jax.Array  # t, the argument of a weight-decay schedule


def add_decayed_weights(
    weight_decay: ScalarOrSchedule = 0.0,
    mask: Any | Callable[[Any], Any] | None = None,
) -> optax.GradientTransformation:
    r"""``u ← u + λ_t·w``: pull each weight toward zero.

    ``mask`` (a pytree of bools shaped like the params or like a prefix of them, as
    ``optax.masked`` takes it, or a function of the params that returns one) selects the
    weights that decay; the others pass through unchanged.
    """
    check_nonnegative("weight_decay", weight_decay, schedule_ok=True)
    if mask is not None and not callable(mask):
        check_mask_leaves(mask)

    def keep_of(params):
        keep = mask(params) if callable(mask) else mask
        if keep is None:
            return jax.tree.map(lambda _: True, params)
        return full_mask(keep, params)

    def init(params: Any) -> AddDecayedWeightsState:
        keep_of(params)  # a mask that does not fit the params is refused here, not later
        return AddDecayedWeightsState(count=zero_count())

    def update(updates, state, params=None):
        check_state(state, AddDecayedWeightsState, "add_decayed_weights (weight decay)")
        if params is None:
            raise ValueError(
                "`params` is None, but weight decay needs the current weights: call "
                "`opt.update(grads, state, params)`."
            )
        check_grads(updates, params, "`params`")
        lam = _value_at(weight_decay, state.count)
        keep = keep_of(params)

        def leaf(u, w, k):
            decayed = u + cast(lam, u) * w
            if isinstance(k, bool | np.bool_):
                return decayed if k else u
            return jnp.where(k, decayed, u)

        updates = jax.tree.map(leaf, updates, params, keep)
        return updates, AddDecayedWeightsState(count=increment(state.count))

    return optax.GradientTransformation(init, update)

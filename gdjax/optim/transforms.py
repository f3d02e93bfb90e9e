r"""Small composable transforms, each one line of an optimizer's update equations.

Every transform is an :class:`optax.GradientTransformation`: ``init(params) -> state`` and
``update(updates, state, params) -> (updates, state)``. Each is written for one array
(the ``_*_leaf`` functions) and lifted to pytrees leaf by leaf. The optimizers in
:mod:`gdjax.optim.rules` are chains of these, e.g. Adam is

.. math::  u = -\alpha_t \cdot \hat m_t / (\sqrt{\hat v_t + \bar\epsilon} + \epsilon)
   \quad = \quad \text{chain}(\text{scale\_by\_adam}, \text{scale\_by\_learning\_rate}).

Hyperparameters may be Python numbers or JAX scalars, traced ones included; a learning
rate or weight decay may also be a schedule (a function of the step count, which the
state carries).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gdjax._validate import check_bool, check_choice
from gdjax.optim._util import (
    Scalar,
    ScalarOrSchedule,
    cast,
    check_beta,
    check_eps,
    check_grads,
    check_learning_rate,
    check_nonnegative,
    check_state,
    debias,
    increment,
    map_leaves,
    zero_count,
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

_STATE_OF = "the optimizer state (made by init from params)"


def _value_at(h: ScalarOrSchedule, count: jax.Array) -> Scalar:
    return h(count) if callable(h) else h


# ---------------------------------------------------------------------------------------
# chain


class ChainState(tuple):
    """The states of a chain's transforms, in order: ``state[i]`` belongs to transform i."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"ChainState{tuple.__repr__(self)}"


def chain(*transforms: optax.GradientTransformation) -> optax.GradientTransformation:
    """Apply ``transforms`` one after the other: ``u ← T_k(… T_1(g))``."""

    def init(params: Any) -> ChainState:
        return ChainState(t.init(params) for t in transforms)

    def update(updates: Any, state: ChainState, params: Any = None) -> tuple[Any, ChainState]:
        check_state(state, ChainState, "this optimizer")
        if len(state) != len(transforms):
            raise TypeError(
                f"`state` has {len(state)} parts but this optimizer has {len(transforms)} "
                f"transforms. Pass the state made by this optimizer's `init(params)`."
            )
        new_state = []
        for transform, inner in zip(transforms, state):
            updates, inner = transform.update(updates, inner, params)
            new_state.append(inner)
        return updates, ChainState(new_state)

    return optax.GradientTransformation(init, update)


jax.tree_util.register_pytree_with_keys(
    ChainState,
    lambda s: (tuple((jax.tree_util.SequenceKey(i), c) for i, c in enumerate(s)), None),
    lambda _, children: ChainState(children),
    flatten_func=lambda s: (tuple(s), None),
)


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
    :math:`t = 0, 1, \ldots` that returns :math:`\alpha_t`.
    """
    check_learning_rate("learning_rate", learning_rate)
    check_bool("flip_sign", flip_sign)

    def init(params: Any) -> ScaleByLearningRateState:
        del params
        return ScaleByLearningRateState(count=zero_count())

    def update(updates, state, params=None):
        check_state(state, ScaleByLearningRateState, "scale_by_learning_rate")
        if params is not None:
            check_grads(updates, params, "`params`")
        alpha = _value_at(learning_rate, state.count)
        step = -alpha if flip_sign else alpha
        updates = jax.tree.map(lambda u: cast(step, u) * u, updates)
        return updates, ScaleByLearningRateState(count=increment(state.count))

    return optax.GradientTransformation(init, update)


# ---------------------------------------------------------------------------------------
# trace: heavy-ball and Nesterov momentum


class TraceState(NamedTuple):
    trace: Any  # v, the velocity; same pytree as params


MomentumStyle = Literal["trace", "ema"]


def _trace_leaf(g, v, *, decay, nesterov, ema):
    # The β·v product is formed in the accumulator's dtype, then joins g's dtype.
    beta_v = (cast(decay, v) * v).astype(g.dtype)
    g_in = cast(1 - decay, g) * g if ema else g
    v_new = g_in + beta_v
    u = g_in + cast(decay, g) * v_new if nesterov else v_new
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

    def init(params: Any) -> TraceState:
        return TraceState(
            trace=jax.tree.map(lambda p: jnp.zeros_like(p, dtype=accumulator_dtype), params)
        )

    def update(updates, state, params=None):
        del params
        check_state(state, TraceState, "trace (momentum)")
        check_grads(updates, state.trace, _STATE_OF)
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
# scale_by_rms: RMSprop's denominator


class ScaleByRmsState(NamedTuple):
    count: jax.Array  # t, for bias correction
    nu: Any  # s: EMA of g², same pytree as params
    mu: Any  # EMA of g (centered RMSprop only; else None)


def _inverse_root(s, eps, eps_in_sqrt):
    """``1/√(s + ε)`` or ``1/(√s + ε)``."""
    if eps_in_sqrt:
        return jax.lax.rsqrt(s + cast(eps, s))
    return 1 / (jnp.sqrt(s) + cast(eps, s))


def scale_by_rms(
    decay: Scalar = 0.9,
    eps: Scalar = 1e-8,
    initial_scale: Scalar = 0.0,
    eps_in_sqrt: bool = True,
    bias_correction: bool = False,
    centered: bool = False,
) -> optax.GradientTransformation:
    r"""RMSprop's rescaling of the gradient by a running root mean square.

    .. math::
        s_t = \beta s_{t-1} + (1-\beta) g_t^2, \qquad
        u_t = g_t / \sqrt{s_t + \epsilon} \ \ (\texttt{eps\_in\_sqrt}) \quad\text{or}\quad
        g_t / (\sqrt{s_t} + \epsilon).

    ``centered`` subtracts the squared running mean :math:`m_t^2` from :math:`s_t`
    (:math:`m_t = \beta m_{t-1} + (1-\beta) g_t`); ``bias_correction`` divides
    :math:`s_t, m_t` by :math:`1-\beta^t`; :math:`s_0` = ``initial_scale``.
    """
    check_beta("decay", decay)
    check_eps("eps", eps)
    check_nonnegative("initial_scale", initial_scale)
    for arg, flag in [("eps_in_sqrt", eps_in_sqrt), ("bias_correction", bias_correction)]:
        check_bool(arg, flag)
    check_bool("centered", centered)

    def init(params: Any) -> ScaleByRmsState:
        return ScaleByRmsState(
            count=zero_count(),
            nu=jax.tree.map(lambda p: jnp.full_like(p, initial_scale), params),
            mu=jax.tree.map(jnp.zeros_like, params) if centered else None,
        )

    def leaf(g, s, m, count):
        s = cast(1 - decay, g) * (g * g) + cast(decay, g) * s
        if centered:
            m = cast(1 - decay, g) * g + cast(decay, g) * m
        s_hat, m_hat = s, m
        if bias_correction:
            s_hat = s / debias(decay, count, g)
            m_hat = m / debias(decay, count, g) if centered else None
        variance = s_hat - m_hat * m_hat if centered else s_hat
        return _inverse_root(variance, eps, eps_in_sqrt) * g, s, m

    def update(updates, state, params=None):
        del params
        check_state(state, ScaleByRmsState, "scale_by_rms (RMSprop)")
        check_grads(updates, state.nu, _STATE_OF)
        count = increment(state.count)
        mu = state.mu if centered else updates  # a stand-in that leaf() ignores
        updates, nu, mu = map_leaves(lambda g, s, m: leaf(g, s, m, count), 3, updates, state.nu, mu)
        return updates, ScaleByRmsState(count=count, nu=nu, mu=mu if centered else None)

    return optax.GradientTransformation(init, update)


# ---------------------------------------------------------------------------------------
# scale_by_adam


class ScaleByAdamState(NamedTuple):
    count: jax.Array  # t: steps done (int32)
    mu: Any  # m: EMA of g (first moment)
    nu: Any  # v: EMA of g² (second moment)


def scale_by_adam(
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    eps: Scalar = 1e-8,
    eps_root: Scalar = 0.0,
    mu_dtype: Any = None,
    *,
    nesterov: bool = False,
    bias_correction: bool = True,
) -> optax.GradientTransformation:
    r"""Adam's direction: bias-corrected first moment over the root of the second.

    .. math::
        m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \qquad
        v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2, \\
        \hat m_t = m_t / (1-\beta_1^t), \qquad \hat v_t = v_t / (1-\beta_2^t), \qquad
        u_t = \hat m_t / (\sqrt{\hat v_t + \bar\epsilon} + \epsilon).

    ``bias_correction=False`` uses :math:`m_t, v_t` as they are. ``nesterov`` (NAdam)
    replaces :math:`\hat m_t` by
    :math:`\beta_1 m_t/(1-\beta_1^{t+1}) + (1-\beta_1) g_t/(1-\beta_1^t)`.
    ``mu_dtype`` stores :math:`m` in another dtype (e.g. bfloat16).
    """
    check_beta("b1", b1)
    check_beta("b2", b2)
    check_eps("eps", eps)
    check_nonnegative("eps_root", eps_root)
    check_bool("nesterov", nesterov)
    check_bool("bias_correction", bias_correction)

    def init(params: Any) -> ScaleByAdamState:
        return ScaleByAdamState(
            count=zero_count(),
            mu=jax.tree.map(lambda p: jnp.zeros_like(p, dtype=mu_dtype), params),
            nu=jax.tree.map(jnp.zeros_like, params),
        )

    def leaf(g, m_prev, v_prev, t):
        # β₁·m is formed in m's storage dtype (mu_dtype), then joins g's dtype.
        m = cast(1 - b1, g) * g + (cast(b1, m_prev) * m_prev).astype(g.dtype)
        v = cast(1 - b2, g) * (g * g) + cast(b2, g) * v_prev
        if nesterov:
            m_next, g_now = m, g
            if bias_correction:
                m_next, g_now = m / debias(b1, increment(t), g), g / debias(b1, t, g)
            m_hat = cast(b1, g) * m_next + cast(1 - b1, g) * g_now
        else:
            m_hat = m / debias(b1, t, g) if bias_correction else m
        v_hat = v / debias(b2, t, g) if bias_correction else v
        u = m_hat / (jnp.sqrt(v_hat + cast(eps_root, g)) + cast(eps, g))
        return u, m.astype(m_prev.dtype), v.astype(v_prev.dtype)

    def update(updates, state, params=None):
        del params
        check_state(state, ScaleByAdamState, "scale_by_adam (Adam)")
        check_grads(updates, state.nu, _STATE_OF)
        count = increment(state.count)
        updates, mu, nu = map_leaves(
            lambda g, m, v: leaf(g, m, v, count), 3, updates, state.mu, state.nu
        )
        return updates, ScaleByAdamState(count=count, mu=mu, nu=nu)

    return optax.GradientTransformation(init, update)


# ---------------------------------------------------------------------------------------
# scale_by_rss: AdaGrad's denominator


class ScaleByRssState(NamedTuple):
    sum_of_squares: Any  # G: running sum of g², same pytree as params


def scale_by_rss(
    initial_accumulator_value: Scalar = 0.1, eps: Scalar = 1e-7, eps_in_sqrt: bool = True
) -> optax.GradientTransformation:
    r"""AdaGrad's rescaling by the root of the sum of all squared gradients so far.

    .. math::
        G_t = G_{t-1} + g_t^2, \qquad u_t = g_t / \sqrt{G_t + \epsilon}
        \quad(\text{or } g_t / (\sqrt{G_t} + \epsilon)),

    with :math:`G_0` = ``initial_accumulator_value`` and :math:`u_t = 0` wherever
    :math:`G_t = 0` (a coordinate that has never seen a gradient does not move).
    """
    check_nonnegative("initial_accumulator_value", initial_accumulator_value)
    check_eps("eps", eps)
    check_bool("eps_in_sqrt", eps_in_sqrt)

    def init(params: Any) -> ScaleByRssState:
        return ScaleByRssState(
            sum_of_squares=jax.tree.map(
                lambda p: jnp.full_like(p, initial_accumulator_value), params
            )
        )

    def leaf(g, s):
        s = g * g + s
        return jnp.where(s > 0, _inverse_root(s, eps, eps_in_sqrt), 0) * g, s

    def update(updates, state, params=None):
        del params
        check_state(state, ScaleByRssState, "scale_by_rss (AdaGrad)")
        check_grads(updates, state.sum_of_squares, _STATE_OF)
        updates, sum_of_squares = map_leaves(leaf, 2, updates, state.sum_of_squares)
        return updates, ScaleByRssState(sum_of_squares=sum_of_squares)

    return optax.GradientTransformation(init, update)


# ---------------------------------------------------------------------------------------
# add_decayed_weights: decoupled weight decay


def _check_mask(mask: Any, params: Any) -> None:
    if jax.tree.structure(mask) != jax.tree.structure(params):
        raise ValueError(
            f"`mask` does not have the structure of `params`.\n  mask: "
            f"{jax.tree.structure(mask)}\n  params: {jax.tree.structure(params)}\n"
            f"Pass a pytree of bools with the same keys/nesting as the params (True = decay), "
            f"or a function params -> such a pytree."
        )


class AddDecayedWeightsState(NamedTuple):
    count: jax.Array  # t, the argument of a weight-decay schedule


def add_decayed_weights(
    weight_decay: ScalarOrSchedule = 0.0,
    mask: Any | Callable[[Any], Any] | None = None,
) -> optax.GradientTransformation:
    r"""``u ← u + λ_t·w``: pull each weight toward zero.

    ``mask`` (a pytree of bools shaped like the params, or a function of the params that
    returns one) selects the weights that decay; the others pass through unchanged.
    """
    check_nonnegative("weight_decay", weight_decay, schedule_ok=True)

    def init(params: Any) -> AddDecayedWeightsState:
        del params
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
        keep = mask(params) if callable(mask) else mask
        if keep is None:
            keep = jax.tree.map(lambda _: True, params)
        _check_mask(keep, params)

        def leaf(u, w, k):
            decayed = u + cast(lam, u) * w
            if isinstance(k, bool | np.bool_):
                return decayed if k else u
            return jnp.where(k, decayed, u)

        updates = jax.tree.map(leaf, updates, params, keep)
        return updates, AddDecayedWeightsState(count=increment(state.count))

    return optax.GradientTransformation(init, update)

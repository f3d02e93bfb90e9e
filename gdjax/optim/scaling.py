r"""The adaptive scalings: RMSprop's, Adam's and AdaGrad's denominators.

Each is an :class:`optax.GradientTransformation` written for one array (the ``leaf``
functions) and lifted to pytrees leaf by leaf, like the rest of
:mod:`gdjax.optim.transforms` (which re-exports them). A decay rate β may be a Python
number, a JAX scalar (traced ones included) or a :class:`~gdjax.optim._util.Beta`, β with
its complement :math:`1-β` rounded once from the caller's number.

Complex parameters are handled as optax handles them: a second moment averages the squared
modulus :math:`|g|^2` (real, not :math:`g \cdot g`), stored in the parameters' dtype with a
zero imaginary part, and the denominator built from it is real.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from gdjax._validate import check_bool
from gdjax.optim._util import (
    STATE_OF,
    Scalar,
    abs_sq,
    beta_parts,
    cast,
    check_beta,
    check_dtype,
    check_eps,
    check_grads,
    check_nonnegative,
    check_state,
    debias,
    increment,
    map_leaves,
    real_dtype,
    zero_count,
)

__all__ = [
    "ScaleByAdamState",
    "ScaleByRmsState",
    "ScaleByRssState",
    "inverse_root",
    "scale_by_adam",
    "scale_by_rms",
    "scale_by_rss",
]


def _ema_sq(g, s_prev, beta, one_minus_beta):
    """``β·s + (1 − β)·|g|²`` in the real dtype of ``g`` (``s`` may be stored complex)."""
    r = real_dtype(g)
    return jnp.asarray(one_minus_beta, r) * abs_sq(g) + jnp.asarray(beta, r) * jnp.real(s_prev)


def _times(scale_real, g):
    """``g`` times a real array, in ``g``'s dtype (complex ``g`` keeps its phase)."""
    return scale_real.astype(g.dtype) * g  # this order: XLA rounds g·s and s·g apart


# ---------------------------------------------------------------------------------------
# scale_by_rms: RMSprop's denominator


class ScaleByRmsState(NamedTuple):
    count: jax.Array  # t, for bias correction
    nu: Any  # s: EMA of g², same pytree as params
    mu: Any  # EMA of g (centered RMSprop only; else None)


def inverse_root(s, eps, eps_in_sqrt):
    """``1/√(s + ε)`` or ``1/(√s + ε)`` (``s`` real)."""
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

    beta, one_minus_beta = beta_parts(decay)

    def leaf(g, s_prev, m, count):
        s = _ema_sq(g, s_prev, beta, one_minus_beta)  # real
        if centered:
            m = cast(one_minus_beta, g) * g + cast(beta, g) * m
        s_hat, m_hat = s, m
        if bias_correction:
            s_hat = s / debias(decay, count, s)
            m_hat = m / debias(decay, count, g) if centered else None
        variance = s_hat - abs_sq(m_hat) if centered else s_hat
        u = _times(inverse_root(variance, eps, eps_in_sqrt), g)
        return u, s.astype(s_prev.dtype), m

    def update(updates, state, params=None):
        del params
        check_state(state, ScaleByRmsState, "scale_by_rms (RMSprop)")
        check_grads(updates, state.nu, STATE_OF)
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
    check_dtype("mu_dtype", mu_dtype)
    check_bool("nesterov", nesterov)
    check_bool("bias_correction", bias_correction)

    def init(params: Any) -> ScaleByAdamState:
        return ScaleByAdamState(
            count=zero_count(),
            mu=jax.tree.map(lambda p: jnp.zeros_like(p, dtype=mu_dtype), params),
            nu=jax.tree.map(jnp.zeros_like, params),
        )

    (beta1, one_minus_b1), (beta2, one_minus_b2) = beta_parts(b1), beta_parts(b2)

    def leaf(g, m_prev, v_prev, t):
        # β₁·m is formed in m's storage dtype (mu_dtype), then joins g's dtype.
        m = cast(one_minus_b1, g) * g + (cast(beta1, m_prev) * m_prev).astype(g.dtype)
        v = _ema_sq(g, v_prev, beta2, one_minus_b2)  # real: |g|², as optax
        if nesterov:
            m_next, g_now = m, g
            if bias_correction:
                m_next, g_now = m / debias(b1, increment(t), g), g / debias(b1, t, g)
            m_hat = cast(beta1, g) * m_next + cast(one_minus_b1, g) * g_now
        else:
            m_hat = m / debias(b1, t, g) if bias_correction else m
        v_hat = v / debias(b2, t, v) if bias_correction else v
        denominator = jnp.sqrt(v_hat + cast(eps_root, v)) + cast(eps, v)
        u = m_hat / denominator.astype(m_hat.dtype)
        return u, m.astype(m_prev.dtype), v.astype(v_prev.dtype)

    def update(updates, state, params=None):
        del params
        check_state(state, ScaleByAdamState, "scale_by_adam (Adam)")
        check_grads(updates, state.nu, STATE_OF)
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

    def leaf(g, s_prev):
        s = abs_sq(g) + jnp.real(s_prev)  # real: |g|², as optax
        scaling = jnp.where(s > 0, inverse_root(s, eps, eps_in_sqrt), jnp.zeros((), s.dtype))
        return _times(scaling, g), s.astype(s_prev.dtype)

    def update(updates, state, params=None):
        del params
        check_state(state, ScaleByRssState, "scale_by_rss (AdaGrad)")
        check_grads(updates, state.sum_of_squares, STATE_OF)
        updates, sum_of_squares = map_leaves(leaf, 2, updates, state.sum_of_squares)
        return updates, ScaleByRssState(sum_of_squares=sum_of_squares)

    return optax.GradientTransformation(init, update)

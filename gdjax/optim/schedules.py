r"""Learning-rate schedules: functions of the step count :math:`t = 0, 1, 2, \ldots`.

Pass one anywhere a learning rate (or AdamW's weight decay) is accepted; the optimizer's
state carries the count. Values (``init_value``, ``decay_rate``, …) may be traced JAX
scalars, so a sweep can ``vmap`` over them; step counts are Python ints. Argument names
follow optax's schedules of the same kind.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from gdjax._validate import check_bool, check_scalar
from gdjax.optim._util import Scalar, Schedule, as_float, check_nonnegative, check_steps

__all__ = ["constant", "cosine_decay", "exponential_decay", "linear_warmup", "piecewise_constant"]


def _time(count: jax.Array | int, *values: Scalar) -> jax.Array:
    """The step count as a float of the values' common dtype."""
    return jnp.asarray(count).astype(jnp.result_type(*values, float))


def constant(value: Scalar) -> Schedule:
    r""":math:`\alpha_t = \alpha`."""
    check_nonnegative("value", value)

    def schedule(count: jax.Array) -> jax.Array:
        return jnp.full_like(_time(count, value), value)

    return schedule


def exponential_decay(
    init_value: Scalar,
    transition_steps: int,
    decay_rate: Scalar,
    transition_begin: int = 0,
    staircase: bool = False,
    end_value: Scalar | None = None,
) -> Schedule:
    r"""Exponential decay: :math:`\alpha_t = \alpha_0 \, r^{(t - t_0)/T}` for :math:`t > t_0`.

    :math:`\alpha_0` = ``init_value``, :math:`r` = ``decay_rate``, :math:`T` =
    ``transition_steps``, :math:`t_0` = ``transition_begin`` (constant before it).
    ``staircase`` floors the exponent, decaying by :math:`r` every :math:`T` steps (PyTorch's
    ``StepLR``); ``end_value`` bounds the value (from below when :math:`r < 1`).
    """
    check_nonnegative("init_value", init_value)
    check_steps("transition_steps", transition_steps)
    check_scalar("decay_rate", decay_rate)
    check_nonnegative("decay_rate", decay_rate)
    check_steps("transition_begin", transition_begin, allow_zero=True)
    check_bool("staircase", staircase)
    if end_value is not None:
        check_nonnegative("end_value", end_value)

    def schedule(count: jax.Array) -> jax.Array:
        t = _time(count, init_value, decay_rate)
        exponent = jnp.maximum(t - transition_begin, 0) / transition_steps
        if staircase:
            exponent = jnp.floor(exponent)
        value = init_value * jnp.power(jnp.asarray(decay_rate, t.dtype), exponent)
        if end_value is not None:
            value = jnp.where(
                jnp.asarray(decay_rate) < 1,
                jnp.maximum(value, end_value),
                jnp.minimum(value, end_value),
            )
        return value

    return schedule


def piecewise_constant(
    init_value: Scalar, boundaries_and_scales: dict[int, Scalar] | None = None
) -> Schedule:
    r"""Piecewise constant: :math:`\alpha_t = \alpha_0 \prod_{b \le t} s_b`.

    ``boundaries_and_scales`` maps a step :math:`b` to the factor :math:`s_b` applied from
    that step on, e.g. ``{1000: 0.1, 2000: 0.1}`` divides the rate by 10 at steps 1000 and
    2000 (PyTorch's ``MultiStepLR``).
    """
    check_nonnegative("init_value", init_value)
    items = sorted((boundaries_and_scales or {}).items())
    for boundary, factor in items:
        check_steps("boundaries_and_scales key", boundary, allow_zero=True)
        check_nonnegative(f"boundaries_and_scales[{boundary}]", factor)

    def schedule(count: jax.Array) -> jax.Array:
        t = _time(count, init_value, *(s for _, s in items))
        value = jnp.full_like(t, init_value)
        for boundary, factor in items:
            value = jnp.where(t >= boundary, value * factor, value)
        return value

    return schedule


def cosine_decay(
    init_value: Scalar, decay_steps: int, alpha: Scalar = 0.0, exponent: Scalar = 1.0
) -> Schedule:
    r"""Cosine decay from :math:`\alpha_0` to :math:`a\,\alpha_0` over :math:`T` steps.

    .. math::
        c_t = \tfrac12\bigl(1 + \cos(\pi \min(t, T)/T)\bigr), \qquad
        \alpha_t = \alpha_0 \bigl((1 - a)\, c_t^{p} + a\bigr)

    with :math:`T` = ``decay_steps``, :math:`a` = ``alpha``, :math:`p` = ``exponent``.
    """
    check_nonnegative("init_value", init_value)
    check_steps("decay_steps", decay_steps)
    check_nonnegative("alpha", alpha)
    check_scalar("exponent", exponent)

    def schedule(count: jax.Array) -> jax.Array:
        t = _time(count, init_value, alpha, exponent)
        c = 0.5 * (1 + jnp.cos(math.pi * jnp.minimum(t, decay_steps) / decay_steps))
        return init_value * ((1 - alpha) * c**exponent + alpha)

    return schedule


def linear_warmup(
    peak_value: Scalar,
    warmup_steps: int,
    init_value: Scalar = 0.0,
    then: Schedule | None = None,
) -> Schedule:
    r"""Rise linearly from ``init_value`` to ``peak_value`` over ``warmup_steps`` steps.

    .. math::
        \alpha_t = \alpha_{\text{init}} + (\alpha_{\text{peak}} - \alpha_{\text{init}})\, t/W
        \quad (t < W), \qquad \alpha_t = \text{then}(t - W) \quad (t \ge W)

    ``then`` (default: constant ``peak_value``) is the schedule that takes over, counted
    from the end of the warmup, e.g. ``then=cosine_decay(peak_value, 1000)``.
    """
    check_nonnegative("peak_value", peak_value)
    check_steps("warmup_steps", warmup_steps)
    check_nonnegative("init_value", init_value)
    if then is not None and not callable(then):
        raise TypeError(
            f"`then` must be a schedule (a function of the step count), got {then!r}. "
            f"Wrap a number as gd.optim.constant(value)."
        )
    after = then or constant(peak_value)

    def schedule(count: jax.Array) -> jax.Array:
        t = _time(count, peak_value, init_value)
        ramp = init_value + (peak_value - init_value) * (t / warmup_steps)
        later = as_float(after(jnp.maximum(jnp.asarray(count) - warmup_steps, 0)))
        return jnp.where(t < warmup_steps, ramp, later.astype(ramp.dtype))

    return schedule

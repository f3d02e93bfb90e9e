r"""Learning-rate schedules: functions of the step count :math:`t = 0, 1, 2, \ldots`.

Pass one anywhere a learning rate (or AdamW's weight decay) is accepted; the optimizer's
state carries the count. Each is a :class:`PytreeSchedule`: callable as ``schedule(t)``,
and a JAX pytree whose leaves are its numbers (``init_value``, ``decay_rate``, ``alpha``,
...) and its step counts (``transition_steps``, ``decay_steps``, the boundaries of
:func:`piecewise_constant`), while its kind is static. So an optimizer with a schedule is
data like any other (:mod:`gdjax.optim._split`): a new decay rate or a new
``decay_steps`` runs the same compiled program, a number may be traced, and a 1-D array
of K numbers (or step counts) makes K schedules for ``jax.vmap``. Names and arguments follow optax's
schedules; like optax's, a schedule's values may be negative (a schedule can drive any
scalar), but a rule refuses one whose value as a learning rate or weight decay is
negative at any breakpoint (see :func:`gdjax.optim._schedule.check_schedule_values`).
Step counts must be whole numbers (a Python int, or an array of whole numbers; stored as
floats of the schedule's dtype, as the formulas use them): ``transition_steps`` and
``decay_steps`` at least 1, ``transition_begin`` at least 0 (optax turns the first into a
constant schedule and the second into 0, with a warning; gdjax refuses both, see
docs/conventions.md).
"""

from __future__ import annotations

import math
from typing import Any

import jax.numpy as jnp
import numpy as np

from gdjax._validate import UsageError, check_bool, check_positive, is_concrete
from gdjax.optim._schedule import (
    PytreeSchedule,
    check_real,
    count_leaf,
    evaluate,
    make_schedule,
    register_kind,
    schedule_arg,
    shift,
    shifted,
    steps_as,
    time_of,
)
from gdjax.optim._util import Scalar, Schedule, as_float

__all__ = [
    "PytreeSchedule",
    "constant",
    "cosine_decay",
    "exponential_decay",
    "linear_schedule",
    "linear_warmup",
    "piecewise_constant",
    "polynomial_schedule",
]


def _decay_rate(arg: str, value: Any) -> None:
    check_real(arg, value)
    if is_concrete(value) and float(value) == 0:
        raise UsageError(
            f"`{arg}` is 0, which is ambiguous: optax returns the constant init_value for it, "
            f"the formula drops to 0 after the first transition. Say which: "
            f"gd.optim.constant(init_value), or piecewise_constant(init_value, {{T: 0.0}})."
        )
    check_positive(arg, value)


# ---------------------------------------------------------------------------------------
# The schedules, their formulas and their breakpoints.


def _transition_breakpoints(values, **_):
    """A transition's start and end (exponential decay, polynomial): per setting."""
    begin = np.asarray(values["transition_begin"])
    return [begin, begin + np.asarray(values["transition_steps"])]


def constant(value: Scalar) -> PytreeSchedule:
    r""":math:`\alpha_t = \alpha`."""
    return make_schedule("constant", {"value": (value, check_real)}, {})


def _constant(count, value):
    return jnp.full_like(time_of(count, value), value)


register_kind("constant", _constant, lambda values: [])


def exponential_decay(
    init_value: Scalar,
    transition_steps: int,
    decay_rate: Scalar,
    transition_begin: int = 0,
    staircase: bool = False,
    end_value: Scalar | None = None,
) -> PytreeSchedule:
    r"""Exponential decay: :math:`\alpha_t = \alpha_0 \, r^{(t - t_0)/T}` for :math:`t > t_0`.

    :math:`\alpha_0` = ``init_value``, :math:`r` = ``decay_rate`` (> 0), :math:`T` =
    ``transition_steps``, :math:`t_0` = ``transition_begin`` (constant before it).
    ``staircase`` floors the exponent, decaying by :math:`r` every :math:`T` steps (PyTorch's
    ``StepLR``); ``end_value`` bounds the value (from below when :math:`r < 1`, from above
    otherwise). ``decay_rate=0`` is refused: optax returns the constant ``init_value`` for
    it, the formula a drop to 0 after one step; say which with :func:`constant` or
    :func:`piecewise_constant`.
    """
    steps = {
        "transition_steps": count_leaf("transition_steps", transition_steps),
        "transition_begin": count_leaf("transition_begin", transition_begin, allow_zero=True),
    }
    check_bool("staircase", staircase)
    numeric = {
        "init_value": (init_value, check_real),
        "decay_rate": (decay_rate, _decay_rate),
        "end_value": (end_value, check_real),
    }
    static = {"staircase": bool(staircase)}
    return make_schedule("exponential_decay", numeric, static, steps)


def _exponential_decay(
    count, init_value, decay_rate, end_value, transition_steps, transition_begin, staircase
):
    t = time_of(count, init_value, decay_rate)
    begin, span = steps_as(t, transition_begin, transition_steps)
    exponent = jnp.maximum(t - begin, 0) / span
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


register_kind(
    "exponential_decay",
    _exponential_decay,
    _transition_breakpoints,
)


def piecewise_constant(
    init_value: Scalar, boundaries_and_scales: dict[int, Scalar] | None = None
) -> PytreeSchedule:
    r"""Piecewise constant: :math:`\alpha_t = \alpha_0 \prod_{b \le t} s_b`.

    ``boundaries_and_scales`` maps a step :math:`b` to the factor :math:`s_b` applied from
    that step on, e.g. ``{1000: 0.1, 2000: 0.1}`` divides the rate by 10 at steps 1000 and
    2000 (PyTorch's ``MultiStepLR``). Boundaries and factors are leaves (as the tuples
    ``boundaries`` and ``scales``, in the order of the boundaries); their number is static.
    """
    if boundaries_and_scales is not None and not isinstance(boundaries_and_scales, dict):
        raise UsageError(
            f"`boundaries_and_scales` must be a dict step -> factor, e.g. {{1000: 0.1}}; got "
            f"{type(boundaries_and_scales).__name__}."
        )
    items = list((boundaries_and_scales or {}).items())
    bounds = [count_leaf("boundaries_and_scales key", b, allow_zero=True) for b, _ in items]
    order = sorted(range(len(items)), key=lambda i: float(bounds[i]))
    numeric = {
        "init_value": (init_value, check_real),
        "scales": (tuple(items[i][1] for i in order), check_real),
    }
    steps = {"boundaries": tuple(bounds[i] for i in order)}
    return make_schedule("piecewise_constant", numeric, {}, steps)


def _piecewise_constant(count, init_value, boundaries, scales):
    t = time_of(count, init_value, *scales)
    value = jnp.full_like(t, init_value)
    for boundary, factor in zip(boundaries, scales, strict=True):
        value = jnp.where(t >= steps_as(t, boundary), value * factor, value)
    return value


register_kind("piecewise_constant", _piecewise_constant, lambda values: list(values["boundaries"]))


def cosine_decay(
    init_value: Scalar, decay_steps: int, alpha: Scalar = 0.0, exponent: Scalar = 1.0
) -> PytreeSchedule:
    r"""Cosine decay from :math:`\alpha_0` to :math:`a\,\alpha_0` over :math:`T` steps.

    .. math::
        c_t = \tfrac12\bigl(1 + \cos(\pi \min(t, T)/T)\bigr), \qquad
        \alpha_t = \alpha_0 \bigl((1 - a)\, c_t^{p} + a\bigr)

    with :math:`T` = ``decay_steps`` (any whole number ≥ 1, also past int32: it enters
    the formula as a float), :math:`a` = ``alpha``, :math:`p` = ``exponent``.
    """
    steps = {"decay_steps": count_leaf("decay_steps", decay_steps)}
    numeric = {
        "init_value": (init_value, check_real),
        "alpha": (alpha, check_real),
        "exponent": (exponent, check_real),
    }
    return make_schedule("cosine_decay", numeric, {}, steps)


def _cosine_decay(count, init_value, alpha, exponent, decay_steps):
    t = time_of(count, init_value, alpha, exponent)
    steps = steps_as(t, decay_steps)  # a float: no int32 overflow for T >= 2**31
    c = 0.5 * (1 + jnp.cos(math.pi * jnp.minimum(t, steps) / steps))
    return init_value * ((1 - alpha) * c**exponent + alpha)


register_kind("cosine_decay", _cosine_decay, lambda values: [values["decay_steps"]])


def polynomial_schedule(
    init_value: Scalar,
    end_value: Scalar,
    power: Scalar,
    transition_steps: int,
    transition_begin: int = 0,
) -> PytreeSchedule:
    r"""Polynomial from ``init_value`` to ``end_value`` over ``transition_steps`` steps.

    .. math::
        \alpha_t = (\alpha_0 - \alpha_\infty)
        \Bigl(1 - \frac{\min(\max(t - t_0, 0), T)}{T}\Bigr)^{p} + \alpha_\infty

    with :math:`p` = ``power``, :math:`T` = ``transition_steps`` (≥ 1), :math:`t_0` =
    ``transition_begin`` (constant ``init_value`` before it), as optax's.
    """
    steps = {
        "transition_steps": count_leaf("transition_steps", transition_steps),
        "transition_begin": count_leaf("transition_begin", transition_begin, allow_zero=True),
    }
    numeric = {
        "init_value": (init_value, check_real),
        "end_value": (end_value, check_real),
        "power": (power, check_real),
    }
    return make_schedule("polynomial_schedule", numeric, {}, steps)


def _polynomial(count, init_value, end_value, power, transition_steps, transition_begin):
    t = time_of(count, init_value, end_value, power)
    begin, span = steps_as(t, transition_begin, transition_steps)
    done = jnp.clip(t - begin, 0, span)
    return (init_value - end_value) * (1 - done / span) ** power + end_value


register_kind(
    "polynomial_schedule",
    _polynomial,
    _transition_breakpoints,
)


def linear_schedule(
    init_value: Scalar, end_value: Scalar, transition_steps: int, transition_begin: int = 0
) -> PytreeSchedule:
    r"""A straight line from ``init_value`` to ``end_value`` over ``transition_steps`` steps,
    from step ``transition_begin`` on: :func:`polynomial_schedule` with ``power=1``."""
    return polynomial_schedule(init_value, end_value, 1.0, transition_steps, transition_begin)


def linear_warmup(
    peak_value: Scalar,
    warmup_steps: int,
    init_value: Scalar = 0.0,
    then: Schedule | None = None,
) -> PytreeSchedule:
    r"""Rise linearly from ``init_value`` to ``peak_value`` over ``warmup_steps`` steps.

    .. math::
        \alpha_t = \alpha_{\text{init}} + (\alpha_{\text{peak}} - \alpha_{\text{init}})\, t/W
        \quad (t < W), \qquad \alpha_t = \text{then}(t - W) \quad (t \ge W)

    ``then`` (default: constant ``peak_value``) is the schedule that takes over, counted
    from the end of the warmup, e.g. ``then=cosine_decay(peak_value, 1000)``. A gdjax
    schedule there is part of the pytree; a function of your own is static.
    """
    steps = {"warmup_steps": count_leaf("warmup_steps", warmup_steps)}
    if then is not None:
        schedule_arg("then", then)
    numeric = {
        "peak_value": (peak_value, check_real),
        "init_value": (init_value, check_real),
    }
    if isinstance(then, PytreeSchedule):
        numeric["then"] = (then, None)
        return make_schedule("linear_warmup", numeric, {}, steps)
    return make_schedule("linear_warmup", numeric, {"then": then}, steps)


def _linear_warmup(count, peak_value, init_value, warmup_steps, then=None):
    t = time_of(count, peak_value, init_value)
    warmup = steps_as(t, warmup_steps)
    ramp = init_value + (peak_value - init_value) * (t / warmup)
    if then is None:
        later = jnp.full_like(ramp, peak_value)
    else:
        later = as_float(evaluate(then, shift(count, warmup_steps)))
    return jnp.where(t < warmup, ramp, later.astype(ramp.dtype))


register_kind(
    "linear_warmup",
    _linear_warmup,
    lambda values, then=None: shifted(values.get("then", then), values["warmup_steps"]),
)

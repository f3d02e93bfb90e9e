r"""Learning-rate schedules: functions of the step count :math:`t = 0, 1, 2, \ldots`.

Pass one anywhere a learning rate (or AdamW's weight decay) is accepted; the optimizer's
state carries the count. Each is a :class:`PytreeSchedule`: callable as ``schedule(t)``,
and a JAX pytree whose leaves are its numbers (``init_value``, ``decay_rate``, ``alpha``,
...) while its kind and its step counts (``transition_steps``, ``decay_steps``, the
boundaries of :func:`piecewise_constant`) are static. So an optimizer with a schedule is
data like any other (:mod:`gdjax.optim.rule`), a number may be traced, and a 1-D array of
K numbers makes K schedules for ``jax.vmap``. Argument names follow optax's schedules.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from gdjax._validate import check_bool, check_scalar
from gdjax.optim._hyper import (
    as_leaf,
    broadcast_settings,
    check_elements,
    check_one_setting,
    check_user_schedule,
    freeze,
    settings_count,
    show,
    thaw,
)
from gdjax.optim._util import Scalar, Schedule, as_float, check_nonnegative, check_steps

__all__ = [
    "PytreeSchedule",
    "constant",
    "cosine_decay",
    "exponential_decay",
    "linear_warmup",
    "piecewise_constant",
]


class PytreeSchedule:
    """A gdjax schedule: ``schedule(count)``, and a pytree of its numeric constants.

    ``kind`` and ``static`` (step counts, flags) are the pytree's aux data, ``values``
    (a dict of float leaves, or nested schedules) its children. Two schedules of the same
    kind and step counts have equal tree structures whatever their numbers.
    """

    __slots__ = ("kind", "static", "values")

    def __init__(self, kind: str, values: Mapping[str, Any], static: tuple) -> None:
        self.kind, self.values, self.static = kind, dict(values), static

    def __call__(self, count: jax.Array | int) -> jax.Array:
        check_one_setting(self.values, f"{self.kind} schedule")
        statics = {name: thaw(v) for name, v in self.static}
        return _FORMULAS[self.kind](count, **self.values, **statics)

    @property
    def num_settings(self) -> int | None:
        """K for a schedule of K settings (1-D leaves), None for one schedule."""
        return settings_count(self.values)

    def __repr__(self) -> str:
        args = [f"{k}={show(thaw(v))}" for k, v in (*self.values.items(), *self.static)]
        return f"{self.kind}({', '.join(args)})"


def _flatten_with_keys(s: PytreeSchedule):
    names = tuple(sorted(s.values))
    children = tuple((jax.tree_util.DictKey(n), s.values[n]) for n in names)
    return children, (s.kind, names, s.static)


def _unflatten(aux, children) -> PytreeSchedule:
    kind, names, static = aux
    return PytreeSchedule(kind, dict(zip(names, children)), static)


jax.tree_util.register_pytree_with_keys(
    PytreeSchedule,
    _flatten_with_keys,
    _unflatten,
    flatten_func=lambda s: (tuple(s.values[n] for n in sorted(s.values)), _flatten_with_keys(s)[1]),
)


def _make(kind: str, numeric: Mapping[str, tuple[Any, Callable]], static: Mapping[str, Any]):
    """Validate each number (each element of a 1-D one) and build the schedule."""
    values, statics = {}, dict(static)
    for name, (value, check) in numeric.items():
        if value is None:
            statics[name] = None
        elif isinstance(value, dict):  # piecewise_constant's factors, by boundary
            values[name] = {b: _leaf(f"{name}[{b}]", v, check) for b, v in value.items()}
        else:
            values[name] = _leaf(name, value, check)
    values = broadcast_settings(values, settings_count(values))
    return PytreeSchedule(kind, values, tuple(sorted((n, freeze(v)) for n, v in statics.items())))


def _leaf(arg: str, value: Any, check: Callable[[str, Any], None]) -> Any:
    leaf = as_leaf(arg, value)
    check_elements(arg, leaf, check)
    return leaf


def _time(count: jax.Array | int, *values: Scalar) -> jax.Array:
    """The step count as a float of the values' common dtype."""
    return jnp.asarray(count).astype(jnp.result_type(*values, float))


# ---------------------------------------------------------------------------------------
# The schedules and their formulas.


def constant(value: Scalar) -> PytreeSchedule:
    r""":math:`\alpha_t = \alpha`."""
    return _make("constant", {"value": (value, check_nonnegative)}, {})


def _constant(count, value):
    return jnp.full_like(_time(count, value), value)


def exponential_decay(
    init_value: Scalar,
    transition_steps: int,
    decay_rate: Scalar,
    transition_begin: int = 0,
    staircase: bool = False,
    end_value: Scalar | None = None,
) -> PytreeSchedule:
    r"""Exponential decay: :math:`\alpha_t = \alpha_0 \, r^{(t - t_0)/T}` for :math:`t > t_0`.

    :math:`\alpha_0` = ``init_value``, :math:`r` = ``decay_rate``, :math:`T` =
    ``transition_steps``, :math:`t_0` = ``transition_begin`` (constant before it).
    ``staircase`` floors the exponent, decaying by :math:`r` every :math:`T` steps (PyTorch's
    ``StepLR``); ``end_value`` bounds the value (from below when :math:`r < 1`).
    """
    check_steps("transition_steps", transition_steps)
    check_steps("transition_begin", transition_begin, allow_zero=True)
    check_bool("staircase", staircase)
    numeric = {
        "init_value": (init_value, check_nonnegative),
        "decay_rate": (decay_rate, check_nonnegative),
        "end_value": (end_value, check_nonnegative),
    }
    static = {
        "transition_steps": int(transition_steps),
        "transition_begin": int(transition_begin),
        "staircase": bool(staircase),
    }
    return _make("exponential_decay", numeric, static)


def _exponential_decay(
    count, init_value, decay_rate, end_value, transition_steps, transition_begin, staircase
):
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


def piecewise_constant(
    init_value: Scalar, boundaries_and_scales: dict[int, Scalar] | None = None
) -> PytreeSchedule:
    r"""Piecewise constant: :math:`\alpha_t = \alpha_0 \prod_{b \le t} s_b`.

    ``boundaries_and_scales`` maps a step :math:`b` to the factor :math:`s_b` applied from
    that step on, e.g. ``{1000: 0.1, 2000: 0.1}`` divides the rate by 10 at steps 1000 and
    2000 (PyTorch's ``MultiStepLR``). The boundaries are static, the factors leaves.
    """
    items = sorted((boundaries_and_scales or {}).items())
    for boundary, _ in items:
        check_steps("boundaries_and_scales key", boundary, allow_zero=True)
    numeric = {
        "init_value": (init_value, check_nonnegative),
        "boundaries_and_scales": ({int(b): s for b, s in items}, check_nonnegative),
    }
    return _make("piecewise_constant", numeric, {})


def _piecewise_constant(count, init_value, boundaries_and_scales):
    items = sorted(boundaries_and_scales.items())
    t = _time(count, init_value, *(s for _, s in items))
    value = jnp.full_like(t, init_value)
    for boundary, factor in items:
        value = jnp.where(t >= boundary, value * factor, value)
    return value


def cosine_decay(
    init_value: Scalar, decay_steps: int, alpha: Scalar = 0.0, exponent: Scalar = 1.0
) -> PytreeSchedule:
    r"""Cosine decay from :math:`\alpha_0` to :math:`a\,\alpha_0` over :math:`T` steps.

    .. math::
        c_t = \tfrac12\bigl(1 + \cos(\pi \min(t, T)/T)\bigr), \qquad
        \alpha_t = \alpha_0 \bigl((1 - a)\, c_t^{p} + a\bigr)

    with :math:`T` = ``decay_steps``, :math:`a` = ``alpha``, :math:`p` = ``exponent``.
    """
    check_steps("decay_steps", decay_steps)
    numeric = {
        "init_value": (init_value, check_nonnegative),
        "alpha": (alpha, check_nonnegative),
        "exponent": (exponent, check_scalar),
    }
    return _make("cosine_decay", numeric, {"decay_steps": int(decay_steps)})


def _cosine_decay(count, init_value, alpha, exponent, decay_steps):
    t = _time(count, init_value, alpha, exponent)
    c = 0.5 * (1 + jnp.cos(math.pi * jnp.minimum(t, decay_steps) / decay_steps))
    return init_value * ((1 - alpha) * c**exponent + alpha)


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
    schedule there is part of the pytree; a function of your own is static (its value
    at step 0 is checked when it is concrete).
    """
    check_steps("warmup_steps", warmup_steps)
    if then is not None and not callable(then):
        raise TypeError(
            f"`then` must be a schedule (a function of the step count), got {then!r}. "
            f"Wrap a number as gd.optim.constant(value)."
        )
    numeric = {
        "peak_value": (peak_value, check_nonnegative),
        "init_value": (init_value, check_nonnegative),
    }
    static: dict[str, Any] = {"warmup_steps": int(warmup_steps)}
    if isinstance(then, PytreeSchedule):
        schedule = _make("linear_warmup", numeric, static)
        values = {**schedule.values, "then": then}
        return PytreeSchedule(
            "linear_warmup", broadcast_settings(values, settings_count(values)), schedule.static
        )
    if then is not None:
        check_user_schedule("then", then)
    return _make("linear_warmup", numeric, {**static, "then": then})


def _linear_warmup(count, peak_value, init_value, warmup_steps, then=None):
    t = _time(count, peak_value, init_value)
    ramp = init_value + (peak_value - init_value) * (t / warmup_steps)
    if then is None:
        later = jnp.full_like(ramp, peak_value)
    else:
        later = as_float(then(jnp.maximum(jnp.asarray(count) - warmup_steps, 0)))
    return jnp.where(t < warmup_steps, ramp, later.astype(ramp.dtype))


_FORMULAS: dict[str, Callable[..., jax.Array]] = {
    "constant": _constant,
    "exponential_decay": _exponential_decay,
    "piecewise_constant": _piecewise_constant,
    "cosine_decay": _cosine_decay,
    "linear_warmup": _linear_warmup,
}

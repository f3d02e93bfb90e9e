r"""Schedules made of schedules: :func:`join_schedules` and
:func:`warmup_cosine_decay_schedule`, optax's two of that name (see
:mod:`gdjax.optim.schedules` for the single-piece ones and what all of them share).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np

from gdjax._validate import UsageError, is_concrete
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

__all__ = ["join_schedules", "warmup_cosine_decay_schedule"]


def join_schedules(schedules: Sequence[Schedule], boundaries: Sequence[int]) -> PytreeSchedule:
    r"""Schedule :math:`i` from boundary :math:`b_{i-1}` on, counted from there.

    .. math::  \alpha_t = s_i(t - b_{i-1}) \quad\text{for } b_{i-1} \le t < b_i
       \qquad (b_{-1} = 0)

    as optax's ``join_schedules``: ``len(boundaries) == len(schedules) - 1``, boundaries
    increasing whole numbers (leaves: a new boundary is not a new program). gdjax
    schedules are part of the pytree; functions of your own are static.
    """
    if not isinstance(schedules, list | tuple) or not schedules:
        raise UsageError(f"`schedules` must be a non-empty list of schedules, got {schedules!r}.")
    if not isinstance(boundaries, list | tuple):
        raise UsageError(f"`boundaries` must be a list of steps, got {boundaries!r}.")
    if len(boundaries) != len(schedules) - 1:
        raise UsageError(
            f"`boundaries` has {len(boundaries)} steps for {len(schedules)} schedules; give "
            f"one boundary between each two schedules ({len(schedules) - 1})."
        )
    bounds = tuple(
        count_leaf(f"boundaries[{i}]", b, allow_zero=True) for i, b in enumerate(boundaries)
    )
    if all(is_concrete(b) for b in bounds) and any(
        np.any(np.asarray(b1) <= np.asarray(b0)) for b0, b1 in itertools.pairwise(bounds)
    ):
        raise UsageError(f"`boundaries` must increase, got {list(boundaries)}.")
    numeric, own = {}, []
    for i, sched in enumerate(schedules):
        schedule_arg(f"schedules[{i}]", sched)
        if isinstance(sched, PytreeSchedule):
            numeric[f"s{i:03d}"] = (sched, None)
        else:
            own.append((i, sched))
    static = {"own": tuple(own), "n": len(schedules)}
    return make_schedule("join_schedules", numeric, static, {"boundaries": bounds})


def _join(count, boundaries, own, n, **nested):
    parts = {**{int(k[1:]): s for k, s in nested.items()}, **dict(own)}
    count = jnp.asarray(count)
    value = as_float(evaluate(parts[0], count))
    for i, b in enumerate(boundaries, start=1):
        later = as_float(evaluate(parts[i], shift(count, b)))
        before = count < jnp.asarray(b).astype(count.dtype)
        value = jnp.where(before, value, later.astype(value.dtype))
    return value


def _join_breakpoints(values, own, n):
    parts = {**{int(k[1:]): s for k, s in values.items() if k != "boundaries"}, **dict(own)}
    starts = [0, *values["boundaries"]]
    return [p for i in range(n) for p in shifted(parts[i], starts[i])]


register_kind("join_schedules", _join, _join_breakpoints)


def warmup_cosine_decay_schedule(
    init_value: Scalar,
    peak_value: Scalar,
    warmup_steps: int,
    decay_steps: int,
    end_value: Scalar = 0.0,
    exponent: Scalar = 1.0,
) -> PytreeSchedule:
    r"""Linear warmup from ``init_value`` to ``peak_value``, then cosine to ``end_value``.

    .. math::
        \alpha_t = \alpha_0 + (\alpha_p - \alpha_0)\,t/W \quad (t < W), \qquad
        \alpha_t = (\alpha_p - \alpha_e)\, c^{\,p} + \alpha_e, \quad
        c = \tfrac12\Bigl(1 + \cos\frac{\pi \min(t - W, D - W)}{D - W}\Bigr) \quad (t \ge W)

    with :math:`W` = ``warmup_steps`` (≥ 0), :math:`D` = ``decay_steps`` (> W: it counts
    the warmup, as optax's), :math:`p` = ``exponent``. As optax's, a ``peak_value`` of 0
    gives 0 after the warmup whatever ``end_value`` is.
    """
    steps = {
        "warmup_steps": count_leaf("warmup_steps", warmup_steps, allow_zero=True),
        "decay_steps": count_leaf("decay_steps", decay_steps),
    }
    w, d = steps["warmup_steps"], steps["decay_steps"]
    if is_concrete(w) and is_concrete(d) and np.any(np.asarray(d) <= np.asarray(w)):
        raise UsageError(
            f"`decay_steps` ({decay_steps}) must exceed `warmup_steps` ({warmup_steps}): it "
            f"is the schedule's whole length, warmup included."
        )
    numeric = {
        "init_value": (init_value, check_real),
        "peak_value": (peak_value, check_real),
        "end_value": (end_value, check_real),
        "exponent": (exponent, check_real),
    }
    return make_schedule("warmup_cosine_decay_schedule", numeric, {}, steps)


def _warmup_cosine(count, init_value, peak_value, end_value, exponent, warmup_steps, decay_steps):
    t = time_of(count, init_value, peak_value, end_value, exponent)
    warmup = steps_as(t, warmup_steps)
    span = jnp.asarray(decay_steps - warmup_steps).astype(t.dtype)  # exact in the leaves' dtype
    ramp = init_value + (peak_value - init_value) * (t / jnp.maximum(warmup, 1))
    c = 0.5 * (1 + jnp.cos(math.pi * jnp.clip(t - warmup, 0, span) / span))
    cosine = (peak_value - end_value) * c**exponent + end_value
    cosine = jnp.where(peak_value == 0, jnp.zeros_like(cosine), cosine)  # optax: alpha = 0
    return jnp.where(t < warmup, ramp, cosine)


register_kind(
    "warmup_cosine_decay_schedule",
    _warmup_cosine,
    lambda values: [values["warmup_steps"], values["decay_steps"]],
)

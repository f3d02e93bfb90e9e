"""Section ``sweep``: :func:`gdjax.sweep` over K learning rates against K fit calls.

Claim (b): a sweep is one vmapped program, so it beats ``K`` :func:`gdjax.fit` calls one
after another (goal ≥ 10 at K = 1024).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import optax

from ._timing import Row, fit_or_none, quiet, ready, speedup_row, sweep_or_none, timed

NAME = "sweep"

#: Sizes for ``--quick``: a smoke test, not a measurement.
QUICK: dict[str, Any] = {"k": 8, "steps": 10, "time_budget_s": 5.0}


def bench(
    *,
    model: str = "N1",
    k: int = 1024,
    steps: int = 100,
    learning_rate_range: tuple[float, float] = (1e-3, 1.0),
    time_budget_s: float = 120.0,
) -> tuple[list[Row], dict[str, Any]]:
    """(b) ``gd.sweep`` over ``k`` learning rates vs ``k`` ``gd.fit`` calls in a loop.

    The loop is what a user writes: ``for lr in lrs: gd.fit(..., optax.sgd(lr), ...)``;
    each side's first call (compilation) is timed apart, then one warm run of each is
    timed. If the loop's first calls show that ``k`` calls would take longer than
    ``time_budget_s``, it stops early and its time is scaled to ``k`` calls (the row's
    note says so). A second row compares with ``k`` calls of one warm ``fit`` (the same
    optimizer object every time, so nothing recompiles): the least any loop of ``fit``
    calls can cost.
    """
    from gdjax.models import REGISTRY

    fit, sweep = fit_or_none(), sweep_or_none()
    if fit is None or sweep is None:
        return [], {"skipped": "gdjax.train.fit/sweep are not available"}
    if model not in REGISTRY:
        return [], {"skipped": f"model {model} is not in the registry yet"}
    mdl = REGISTRY[model]
    params, batch = mdl.example()
    lo, hi = learning_rate_range
    lrs = np.geomspace(lo, hi, k).astype(np.float32)
    fixed_opt = optax.sgd(float(lrs[0]))

    def run_sweep() -> Any:
        res = sweep(mdl.loss, params, optax.sgd, batch, steps=steps, learning_rates=lrs)
        return res.losses

    def run_fit(opt: optax.GradientTransformation) -> Any:
        res = fit(mdl.loss, params, opt, batch, steps=steps, progress=False)
        return res.losses

    def timed_loop(make_opt: Callable[[float], optax.GradientTransformation]) -> tuple[float, int]:
        done, t0 = 0, time.perf_counter()
        for lr in lrs:
            ready(run_fit(make_opt(float(lr))))
            done += 1
            if done >= 16 and (time.perf_counter() - t0) / done * k > time_budget_s:
                break
        return (time.perf_counter() - t0) / done * k, done

    with quiet():
        sweep_cold = timed(run_sweep)
        sweep_warm = timed(run_sweep)
        fit_first = timed(lambda: run_fit(optax.sgd(float(lrs[0]))))
        loop_s, done = timed_loop(optax.sgd)
        fixed_first = timed(lambda: run_fit(fixed_opt))
        cached_s, cached_done = timed_loop(lambda _: fixed_opt)

    def note(n: int) -> str:
        return "" if n == k else f"measured {n} calls, scaled to {k}"

    rows = [
        speedup_row(
            NAME,
            f"{model} sweep of {k} learning rates vs {k} fit calls",
            "gd.sweep",
            "gd.fit(optax.sgd(lr)) in a loop",
            sweep_warm,
            loop_s,
            unit="run",
            goal=">= 10",
            note=note(done),
        ),
        speedup_row(
            NAME,
            f"{model} sweep of {k} learning rates vs {k} warm fit calls",
            "gd.sweep",
            "gd.fit, one optimizer, no recompiles",
            sweep_warm,
            cached_s,
            unit="run",
            note=note(cached_done),
        ),
    ]
    info = {
        "model": model,
        "k": k,
        "steps": steps,
        "sweep_cold_s": sweep_cold,
        "sweep_warm_s": sweep_warm,
        "loop_first_call_s": fit_first,
        "loop_calls_measured": done,
        "loop_s": loop_s,
        "warm_fit_first_call_s": fixed_first,
        "warm_fit_calls_measured": cached_done,
        "warm_fit_loop_s": cached_s,
    }
    return rows, info

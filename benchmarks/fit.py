"""Section ``fit``: :func:`gdjax.fit` against a Python loop of jitted optax steps.

Claim (a): ``gd.fit`` runs the steps as one compiled ``lax.scan`` (progress bar and loss
history on), so a step costs far less than a step of the common loop that calls a
``jax.jit``-ed step and appends the loss to a list (goal ≥ 100 on N1).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

import jax
import optax

from ._timing import Row, fit_or_none, median, quiet, speedup_row, time_side_by_side, timed

NAME = "fit"

#: Sizes for ``--quick``: a smoke test, not a measurement.
QUICK: dict[str, Any] = {"loop_steps": 50, "fit_steps": (100, 1000), "repeats": 2}


def _loop_run(
    loss_fn: Callable, params: Any, opt: optax.GradientTransformation, batch: Any, steps: int
) -> Callable[[bool], Any]:
    """The common pattern: a jitted optax step in a Python loop, with tqdm and a history.

    The returned ``run(sync)`` does ``steps`` steps; ``sync=True`` appends ``float(loss)``
    each step (a device sync per step, what most scripts do), ``sync=False`` keeps the
    device arrays and converts them once at the end.
    """
    from tqdm.auto import tqdm

    @jax.jit
    def step(params, opt_state, batch):
        loss, grads = jax.value_and_grad(loss_fn)(params, batch)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    def run(sync: bool) -> Any:
        p, s = params, opt.init(params)
        history: list[Any] = []
        for _ in tqdm(range(steps), file=sys.stderr, mininterval=0.1):
            p, s, loss = step(p, s, batch)
            history.append(float(loss) if sync else loss)
        if not sync:
            history = [float(x) for x in jax.device_get(history)]
        return p, history

    return run


def bench(
    *,
    models: Sequence[str] = ("N1", "G3"),
    loop_steps: int = 2_000,
    fit_steps: tuple[int, int] = (20_000, 200_000),
    repeats: int = 5,
    learning_rate: float = 0.1,
) -> tuple[list[Row], dict[str, Any]]:
    """(a) ``gd.fit`` (progress on, ``record_every=1``) vs a Python loop of jitted steps.

    Times per step from warm runs (compilation left out: each program runs once before
    timing; compile times, first run minus a warm run, are in the info). Both sides draw a
    tqdm bar, sent to a buffer with the rest of the output. Two kinds of fit time:

    * ``whole run``: a run of ``T1 = fit_steps[0]`` steps divided by ``T1``, everything a
      call does included (validation, planning, the bar); the goal (≥ 100 on N1) is here;
    * ``marginal``: ``(t(T2) − t(T1)) / (T2 − T1)``, the cost of one more step.

    The loop is timed with ``float(loss)`` appended each step (``float history``: a sync
    per step, what most scripts do) and with the device scalars kept and converted at the
    end (``async history``).
    """
    from gdjax.models import REGISTRY

    fit = fit_or_none()
    if fit is None:
        return [], {"skipped": "gdjax.train.fit is not available"}
    rows: list[Row] = []
    info: dict[str, Any] = {"loop_steps": loop_steps, "fit_steps": list(fit_steps)}
    info["compile_s"] = {}
    missing = [mid for mid in models if mid not in REGISTRY]
    if missing:
        info["skipped"] = f"models not in the registry yet: {missing}"
    for mid in (mid for mid in models if mid in REGISTRY):
        model_rows, compile_s = _fit_rows(
            fit, REGISTRY[mid], loop_steps, fit_steps, repeats, learning_rate
        )
        rows.extend(model_rows)
        info["compile_s"][mid] = compile_s
    return rows, info


def _fit_rows(
    fit: Callable,
    model: Any,
    loop_steps: int,
    fit_steps: tuple[int, int],
    repeats: int,
    learning_rate: float,
) -> tuple[list[Row], dict[str, float]]:
    """The rows of one model, and its compile times."""
    t1, t2 = fit_steps
    params, batch = model.example()
    opt = optax.sgd(learning_rate)
    loop = _loop_run(model.loss, params, opt, batch, loop_steps)

    def run_fit(steps: int) -> Any:
        res = fit(model.loss, params, opt, batch, steps=steps, progress=True, record_every=1)
        return res.params, res.losses

    with quiet():
        cold = {"fit": timed(lambda: run_fit(t1)), "loop": timed(lambda: loop(True))}
        times = time_side_by_side(
            {
                "fit T1": lambda: run_fit(t1),
                "fit T2": lambda: run_fit(t2),
                "loop sync": lambda: loop(True),
                "loop async": lambda: loop(False),
            },
            repeats=repeats,
        )
    med = {k: median(v) for k, v in times.items()}
    compile_s = {"fit": cold["fit"] - med["fit T1"], "loop": cold["loop"] - med["loop sync"]}
    fit_times = {
        "whole run": med["fit T1"] / t1,
        "marginal": (med["fit T2"] - med["fit T1"]) / (t2 - t1),
    }
    rows = []
    for kind, label in (("loop sync", "float history"), ("loop async", "async history")):
        for fit_kind, t_fit in fit_times.items():
            rows.append(
                speedup_row(
                    NAME,
                    f"{model.id} fit ({fit_kind}) vs jit loop ({label})",
                    f"gd.fit, {fit_kind}",
                    f"jit step in a loop, {label}",
                    t_fit,
                    med[kind] / loop_steps,
                    unit="step",
                    goal=">= 100" if model.id == "N1" and fit_kind == "whole run" else "",
                    note=f"fit T={t1}" if fit_kind == "whole run" else f"T={t1}..{t2}",
                )
            )
    return rows, compile_s

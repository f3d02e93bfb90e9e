"""Section ``expert``: gdjax against what a JAX expert writes by hand, side by side.

The baselines, each about ten lines:

* a run: ``jax.jit`` of a ``lax.scan`` over ``value_and_grad`` + an optax update,
  recording the loss each step;
* a sweep: ``jax.vmap`` of that scan over ``optax.inject_hyperparams(optax.sgd)``'s
  learning rate.

Rows (the goals of "Training engine v2"):

* N1, 20,000 steps: warm ``gd.fit`` / warm expert scan (≤ 1.1), and both cold;
* G3 on breast cancer: ``fit`` with a new ``gd.optim.adam(lr)`` each call, or a new
  ``steps``, against the same call warm (≤ 1.5: nothing recompiles); and with a new
  ``decay_steps`` of a cosine schedule against the same schedule warm;
* N1, 1,024 learning rates × 100 steps: ``gd.sweep`` / expert ``vmap(scan)`` (≤ 1.0; also
  with the factory form ``gd.optim.sgd, learning_rates=``), the same × 1,000 steps
  (where the loops, not the fixed costs, decide), 4,096 rates × 1,000 steps (a real
  size, where one ``vmap`` of every run slows down), and the sweep's
  time per run-step against the arithmetic of one N1 step (~80 flops).
"""

from __future__ import annotations

import itertools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ._timing import Row, cost_row, median, quiet, time_side_by_side, timed

NAME = "expert"

#: Sizes for ``--quick``: a smoke test, not a measurement.
QUICK: dict[str, Any] = {
    "steps": 500,
    "settings": 16,
    "sweep_steps": 20,
    "long_steps": 40,
    "big_settings": 32,
    "repeats": 2,
}

N1_FLOPS = 80  # one forward and backward of the 2-2-2-1 network, by hand

#: The rows of ~2 ms calls (the N1 fit, the short sweep) take this many times the
#: rounds (63 by default, ~0.3 s): on a shared 2-core machine a median of 21 such
#: rounds moved by ±5 % from one run to the next.
SHORT = 3


def expert_scan(loss_fn, opt, steps: int):
    """The expert's run: jit(scan(value_and_grad + optax)), recording every loss."""

    def run(params, batch):
        def step(carry, _):
            p, s = carry
            value, g = jax.value_and_grad(loss_fn)(p, batch)
            u, s = opt.update(g, s, p)
            return (optax.apply_updates(p, u), s), value

        (p, _), losses = jax.lax.scan(step, (params, opt.init(params)), length=steps)
        return p, losses

    return jax.jit(run)


def expert_sweep(loss_fn, steps: int):
    """The expert's sweep: vmap of the scan over inject_hyperparams(sgd)'s learning rate."""
    opt = optax.inject_hyperparams(optax.sgd)(learning_rate=0.1)

    def one(lr, params, batch):
        def step(carry, _):
            p, s = carry
            value, g = jax.value_and_grad(loss_fn)(p, batch)
            u, s = opt.update(g, s, p)
            return (optax.apply_updates(p, u), s), value

        s0 = opt.init(params)
        s0.hyperparams["learning_rate"] = lr
        (p, _), losses = jax.lax.scan(step, (params, s0), length=steps)
        return p, losses

    return jax.jit(jax.vmap(one, in_axes=(0, None, None)))


def bench(
    *,
    steps: int = 20_000,
    settings: int = 1024,
    sweep_steps: int = 100,
    long_steps: int = 1000,
    big_settings: int = 4096,
    repeats: int = 21,
) -> tuple[list[Row], dict[str, Any]]:
    import gdjax as gd

    rows: list[Row] = []
    info: dict[str, Any] = {"steps": steps, "settings": settings, "sweep_steps": sweep_steps}
    n1 = gd.models.get("N1")
    params, batch = n1.example()
    with quiet(), jax.numpy_dtype_promotion("standard"):
        # ---- one run: N1 -------------------------------------------------------------
        ours, theirs = gd.optim.sgd(0.5), optax.sgd(0.5)
        scan = expert_scan(n1.loss, theirs, steps)
        fit = gd.fit  # imports gdjax.train now: "cold" is compile time, as optax's import is
        cold = {
            "expert": timed(lambda: scan(params, batch)),
            "fit": timed(lambda: fit(n1.loss, params, ours, batch, steps=steps).params),
        }
        t = time_side_by_side(
            {
                "fit": lambda: gd.fit(n1.loss, params, ours, batch, steps=steps).params,
                "expert": lambda: scan(params, batch),
            },
            repeats=SHORT * repeats,
        )
        tf, te = median(t["fit"]), median(t["expert"])
        rows.append(
            cost_row(
                NAME,
                f"N1 {steps} steps, warm fit / expert scan",
                "gd.fit",
                "jit(scan) + optax",
                tf / steps,
                te / steps,
                unit="step",
                goal="<= 1.1",
            )
        )
        rows.append(
            cost_row(
                NAME,
                f"N1 {steps} steps, cold fit / cold expert scan",
                "gd.fit",
                "jit(scan) + optax",
                cold["fit"],
                cold["expert"],
                unit="call",
            )
        )
        info["n1_cold_s"] = cold

        # ---- no recompiles: G3 on breast cancer --------------------------------------
        g3 = gd.models.get("G3")
        X, y, *_ = gd.data.breast_cancer()
        gp = g3.init(jax.random.key(0), n=X.shape[1])
        lrs = iter(np.geomspace(1e-3, 1e-1, 10_000))
        # new lengths around 500, so that each call does the same work as the 500-step one
        lengths = itertools.cycle([*range(490, 500), *range(501, 511)])

        def run_same():
            return gd.fit(g3.loss, gp, gd.optim.adam(0.01), (X, y), steps=500).params

        def run_new_lr():
            opt = gd.optim.adam(float(next(lrs)))
            return gd.fit(g3.loss, gp, opt, (X, y), steps=500).params

        def run_new_steps():
            return gd.fit(g3.loss, gp, gd.optim.adam(0.01), (X, y), steps=next(lengths)).params

        decays = itertools.cycle(range(100, 1100, 10))  # a schedule's length: a leaf

        def run_same_decay():
            opt = gd.optim.adam(gd.optim.cosine_decay(0.01, 300))
            return gd.fit(g3.loss, gp, opt, (X, y), steps=500).params

        def run_new_decay():
            opt = gd.optim.adam(gd.optim.cosine_decay(0.01, next(decays)))
            return gd.fit(g3.loss, gp, opt, (X, y), steps=500).params

        t = time_side_by_side(
            {
                "same": run_same,
                "new lr": run_new_lr,
                "new steps": run_new_steps,
                "same decay": run_same_decay,
                "new decay": run_new_decay,
            },
            repeats=repeats,
        )
        rows.append(
            cost_row(
                NAME,
                "G3 fit with a new cosine decay_steps / the same schedule warm",
                "fit, new decay_steps",
                "fit, same schedule",
                median(t["new decay"]),
                median(t["same decay"]),
                unit="call",
                goal="<= 1.5",
            )
        )
        for kind in ("new lr", "new steps"):
            rows.append(
                cost_row(
                    NAME,
                    f"G3 fit with a {kind} / the same call warm",
                    f"fit, {kind}",
                    "fit, same call",
                    median(t[kind]),
                    median(t["same"]),
                    unit="call",
                    goal="<= 1.5",
                )
            )

        # ---- a sweep: N1 over many learning rates ------------------------------------
        def sweep_row(
            n_lrs: int, n_steps: int, reps: int, goal: str = "", factory: bool = False
        ) -> float:
            """Time gd.sweep against the expert's vmap(scan) side by side; add the row (and
            with ``factory`` one for the factory form, ``gd.optim.sgd, learning_rates=``)."""
            lrs = jnp.asarray(np.geomspace(1e-3, 3.0, n_lrs), jnp.float32)
            scan = expert_sweep(n1.loss, n_steps)

            def ours():
                return gd.sweep(n1.loss, params, gd.optim.sgd(lrs), batch, steps=n_steps).params

            def ours_factory():
                sgd = gd.optim.sgd
                return gd.sweep(n1.loss, params, sgd, batch, steps=n_steps, learning_rates=lrs)

            fns = {"sweep": ours, "expert": lambda: scan(lrs, params, batch)}
            if factory:
                fns["factory"] = lambda: ours_factory().params
            t = time_side_by_side(fns, repeats=reps)
            forms = [("sweep", "")] + ([("factory", ", factory form")] if factory else [])
            for form, label in forms:
                rows.append(
                    cost_row(
                        NAME,
                        f"N1 sweep {n_lrs} lrs x {n_steps} steps{label} / expert vmap(scan)",
                        "gd.sweep",
                        "vmap(scan), inject_hyperparams",
                        median(t[form]),
                        median(t["expert"]),
                        unit="call",
                        goal=goal,
                    )
                )
            return median(t["sweep"])

        ts = sweep_row(settings, sweep_steps, SHORT * repeats, goal="<= 1.0", factory=True)
        # ten times longer: the loops themselves, the fixed costs amortised
        sweep_row(settings, long_steps, max(3, repeats // 3))
        # a real size, where one vmap of every run slows down
        sweep_row(big_settings, long_steps, max(3, repeats // 7))
        per = ts / (settings * sweep_steps)
        rows.append(
            Row(
                NAME,
                "N1 sweep per run-step / 80 flops at 1 flop/ns",
                "gd.sweep",
                "80 flops",
                per,
                N1_FLOPS * 1e-9,
                unit="run-step",
                ratio=per / (N1_FLOPS * 1e-9),
                note=f"{per * 1e9:.0f} ns per run-step",
            )
        )
    return rows, info

"""Optimizer comparison: seven update rules on one convex problem, each at its best rate.

G3 (logistic regression, mean cross-entropy) on scikit-learn's breast-cancer data, the
ten "mean …" features (standardised). Radius, perimeter and area are nearly collinear,
so the Hessian at the optimum has a condition number of about 2·10⁴: a hard problem for
plain gradient descent, where momentum and per-coordinate scaling should pay off. The
classes overlap, so the loss has a finite minimiser.

* Every rule of ``gd.optim`` — GD, momentum (β = 0.9), Nesterov, RMSprop, Adam, AdamW,
  AdaGrad, with optax's defaults for everything but the rate — and the course notes'
  momentum (``momentum_style="ema"``) run the same number of full-batch steps from the
  same start (``--fast``: GD, both momenta and Adam only). Each rule's learning rate is
  picked by one ``gd.sweep`` over a log-spaced grid (one compiled program per rule):
  the rate with the lowest mean loss over the last tenth of the steps.
* The reference is the optimum that SciPy's L-BFGS finds on an independent NumPy
  objective in float64. No run may end below it (up to float32 rounding), and the
  best run must reach it.
* The course notes' momentum V = βV + (1 − β)·dW is the optax/PyTorch one with α·(1 − β):
  on a grid with n points per decade and β = 0.9, the "ema" sweep's run i + n must equal
  the "trace" sweep's run i (up to the trace rule's best rate, where both are stable).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

import jax
import numpy as np
import optax

import gdjax as gd

from _harness import (
    Run,
    at_most,
    close,
    experiment_parser,
    holds,
    logistic_lbfgs,
    logistic_objective,
    markdown_table,
)

NAME = "optimizers"
BETA = 0.9  # momentum of the three momentum rules
RULES: dict[str, tuple[str, Callable[..., optax.GradientTransformation]]] = {
    "GD": ("gd(α)", gd.optim.gd),
    "momentum": (
        f"sgd(α, momentum={BETA})",
        lambda learning_rate: gd.optim.sgd(learning_rate, momentum=BETA),
    ),
    "Nesterov": (
        f"sgd(α, momentum={BETA}, nesterov=True)",
        lambda learning_rate: gd.optim.sgd(learning_rate, momentum=BETA, nesterov=True),
    ),
    "momentum, course notes": (
        f'sgd(α, momentum={BETA}, momentum_style="ema")',
        lambda learning_rate: gd.optim.sgd(learning_rate, momentum=BETA, momentum_style="ema"),
    ),
    "RMSprop": ("rmsprop(α)", gd.optim.rmsprop),
    "Adam": ("adam(α)", gd.optim.adam),
    "AdamW": ("adamw(α)  (weight_decay=1e-4)", gd.optim.adamw),
    "AdaGrad": ("adagrad(α)", gd.optim.adagrad),
}
FAST_RULES = ("GD", "momentum", "momentum, course notes", "Adam")  # --fast: four sweeps


def reference_optimum(X: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """(J*, ‖∇J(θ*)‖, condition number of the Hessian at θ*), by SciPy's L-BFGS in float64."""
    theta, loss = logistic_lbfgs(X, y)
    Xb = np.column_stack([X, np.ones(len(y))])
    p = 0.5 * (1.0 + np.tanh(0.5 * (Xb @ theta)))
    eig = np.linalg.eigvalsh((Xb * (p * (1.0 - p))[:, None]).T @ Xb / len(y))
    grad_norm = float(np.linalg.norm(logistic_objective(theta, X, y)[1]))
    return loss, grad_norm, float(eig[-1] / eig[0])


def tuned_index(losses: np.ndarray, diverged: np.ndarray) -> int:
    """The rate with the lowest mean loss over the last tenth of the run.

    Not ``SweepResult.best_index`` (the lowest final loss): at the edge of stability an
    adaptive rule's loss spikes and falls again, and a rate can win by ending in a dip.
    """
    tail = losses[:, -max(1, losses.shape[1] // 10) :].astype(np.float64)
    score = np.where(diverged, np.inf, np.nan_to_num(tail.mean(axis=1), nan=np.inf))
    return int(np.argmin(score))


def main(argv: list[str] | None = None) -> dict:
    p = experiment_parser(NAME, __doc__)
    p.add_argument("--steps", type=int, default=None, help="full-batch steps (1000; fast 300)")
    p.add_argument(
        "--per-decade", type=int, default=None, help="learning rates per decade (8; fast 4)"
    )
    args = p.parse_args(argv)
    run = Run(args, NAME, __doc__)
    steps = args.steps or (300 if args.fast else 1000)
    per_decade = args.per_decade or (4 if args.fast else 8)
    lo, hi = -3, 3  # learning rates 10^lo … 10^hi
    lrs = np.logspace(lo, hi, (hi - lo) * per_decade + 1).astype(np.float32)

    names = [f for f in gd.data.breast_cancer().feature_names if f.startswith("mean ")]
    ds = gd.data.breast_cancer(names)
    data = (ds.X, ds.y)
    loss_ref, grad_ref, cond = reference_optimum(
        np.asarray(ds.X, np.float64), np.asarray(ds.y, np.float64)
    )
    g3 = gd.models.get("G3")
    params = g3.init(jax.random.key(args.seed), n=len(names))
    initial = float(g3.loss(params, data))

    rules = {k: RULES[k] for k in FAST_RULES} if args.fast else RULES
    results = {}
    for label, (_, factory) in rules.items():
        t0 = time.perf_counter()
        sw = gd.sweep(g3.loss, params, factory, data, steps=steps, learning_rates=lrs)
        final = np.asarray(sw.final_loss, np.float64)
        best = tuned_index(np.asarray(sw.losses), np.asarray(sw.diverged))
        results[label] = {
            "final": np.where(np.asarray(sw.diverged), np.nan, final),
            "best_lr": float(lrs[best]),
            "best_final": float(final[best]),
            "curve": np.asarray(sw.losses[best]),
            "diverged": int(np.sum(np.asarray(sw.diverged))),
            "seconds": time.perf_counter() - t0,
        }
    bests = {k: r["best_final"] for k, r in results.items()}
    winner = min(bests, key=bests.get)

    # the course notes' momentum at α is optax's at α·(1 − β): a grid shift of one decade.
    # Compared up to optax's best rate; above it the heavy ball is unstable and bounded
    # only by the saturating loss, so rounding differences grow chaotically.
    shift = per_decade  # 1 − β = 0.1 is one decade
    ema, trace = results["momentum, course notes"]["final"], results["momentum"]["final"]
    stable = lrs[:-shift] <= results["momentum"]["best_lr"]
    ema_gap = float(np.max(np.abs(ema[shift:] - trace[:-shift])[stable] / trace[:-shift][stable]))
    best_ratio = results["momentum, course notes"]["best_lr"] / results["momentum"]["best_lr"]

    ema_label = "momentum, course notes"
    gd.plot.loss_curves(
        {f"{k} (α = {r['best_lr']:.3g})": r["curve"] for k, r in results.items()},
        run.png("loss_curves", "Loss above the L-BFGS optimum, each rule at its best rate"),
        title=f"G3 on breast-cancer data (10 features): {steps} full-batch steps",
        reference=loss_ref,
        reference_label="L-BFGS optimum",
        styles={f"{ema_label} (α = {results[ema_label]['best_lr']:.3g})": "--"},
        legend_loc="lower left",
    )
    gd.plot.lines(
        lrs,
        {k: r["final"] - loss_ref for k, r in results.items()},
        run.png("lr_tuning", "Each rule's final loss against its learning rate"),
        title=f"Learning-rate sweeps: one gd.sweep per rule, {len(lrs)} rates each",
        xlabel="learning rate α",
        ylabel=f"final loss − L-BFGS optimum (after {steps} steps)",
        log=True,
        logx=True,
        styles={ema_label: "--"},
        legend_loc="upper left",
    )

    tol = 1e-3 if args.fast else 1e-5  # how close the best rule gets in `steps` steps
    checks = [
        close(f"best final loss ({winner})", bests[winner], loss_ref, atol=tol),
        holds(
            "no run ends below the L-BFGS optimum",
            all(np.nanmin(r["final"]) >= loss_ref - 1e-6 for r in results.values()),
            min(np.nanmin(r["final"]) for r in results.values()) - loss_ref,
            "min final loss − J* ≥ −1e-6",
        ),
        at_most("momentum: best final loss (≤ GD's)", bests["momentum"], bests["GD"]),
        close("course-notes momentum at α = optax's at α(1 − β)", ema_gap, 0.0, atol=1e-3),
        close("reference: ‖∇J(θ*)‖ at L-BFGS's optimum", grad_ref, 0.0, atol=1e-6),
    ]
    table = markdown_table(
        [
            "rule",
            "gd.optim call",
            "best α",
            "final loss",
            "− L-BFGS optimum",
            "diverged",
            "sweep s",
        ],
        [
            [
                k,
                f"`{RULES[k][0]}`",
                r["best_lr"],
                r["best_final"],
                r["best_final"] - loss_ref,
                f"{r['diverged']}/{len(lrs)}",
                f"{r['seconds']:.2f}",
            ]
            for k, r in results.items()
        ],
    )
    sections = [
        f"## Final loss after {steps} full-batch steps, each rule at its best rate\n\n"
        f"Features: {', '.join(names)}; m = {len(ds.y)}. Start: seed {args.seed}, loss "
        f"{initial:.4f}. Rates: {len(lrs)} from 1e{lo} to 1e{hi} ({per_decade} per decade); "
        f"the best has the lowest mean loss over the last tenth of the steps.\n\n{table}\n\n"
        f"L-BFGS (SciPy, float64): J* = {loss_ref:.8f}, ‖∇J‖ = {grad_ref:.1e}; condition "
        f"number of the Hessian at the optimum {cond:.3g}.",
        "## The course notes' momentum\n\n"
        "V = βV + (1 − β)·dW takes the steps of V = βV + dW with the rate α·(1 − β), so its "
        "sweep is the optax sweep shifted by one decade: up to optax's best rate, the largest "
        f"relative difference of the final losses is {ema_gap:.1e} (float32 rounding of α), "
        f"and the best rates differ by the factor 1/(1 − β) = {best_ratio:.4g}. Above the "
        "best rate the heavy ball is unstable, bounded only by the saturating loss, and "
        "the rounding differences grow.",
    ]
    out = run.finish(
        checks=checks,
        metrics={
            "features": names,
            "steps": steps,
            "learning_rates": lrs,
            "reference_loss": loss_ref,
            "reference_grad_norm": grad_ref,
            "hessian_condition": cond,
            "initial_loss": initial,
            "best": {
                k: {"learning_rate": r["best_lr"], "final_loss": r["best_final"]}
                for k, r in results.items()
            },
            "sweeps": {k: r["final"] for k, r in results.items()},
            "curves": {k: r["curve"] for k, r in results.items()},
            "ema_vs_trace_rel_gap": ema_gap,
            "ema_vs_trace_best_lr_ratio": best_ratio,
        },
        sections=sections,
    )
    print((run.dir / "summary.md").read_text())
    return out


if __name__ == "__main__":
    sys.exit(0 if main()["ok"] else 1)

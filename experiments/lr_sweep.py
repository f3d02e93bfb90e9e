"""Learning-rate sweep: where plain gradient descent diverges, against the theory's 2/L.

R2 (least squares, ŷ = X·w + b, L(θ) = (1/m)‖ŷ − y‖²) on scikit-learn's diabetes data
is a quadratic with the constant Hessian H = (2/m)[X 1]ᵀ[X 1]. Gradient descent moves the
error along each eigenvector of H by the factor 1 − α·λᵢ per step, so it converges for
every α < 2/L and diverges for α > 2/L, where L = λ_max(H); for α ≤ 1/L no component
changes sign (no overshoot).

* One ``gd.sweep`` runs GD for 256 log-spaced learning rates as one vmapped, compiled
  program. A run *diverges* when its loss ends above where it started (or overflows).
  The smallest diverging rate on the grid is compared with 2/L from
  ``numpy.linalg.eigvalsh`` in float64: it must lie within one grid spacing above it,
  with every rate below 2/L converging and every rate above it diverging.
* The best rate's final loss against the least-squares loss (``numpy.linalg.lstsq``),
  within the theory's bound max_i (1 − α·λᵢ)^(2T) · (L(θ₀) − L*).
* One program: the sweep's wall time and XLA compilations for 1 … 256 runs, against a
  Python loop of ``gd.fit`` calls (each with a new optimizer, so each compiles).
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np

import gdjax as gd

from _harness import Run, at_most, close, experiment_parser, holds, markdown_table

NAME = "lr_sweep"
COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


@contextlib.contextmanager
def count_compiles() -> Iterator[list[int]]:
    """Count XLA backend compilations inside the ``with`` block (``counter[0]``).

    Uses ``jax.monitoring``'s compile-duration event. The listener stays registered (the
    public API cannot remove it) but counts only while its block is open.
    """
    counter, active = [0], [True]

    def listener(event: str, duration: float, **kwargs: object) -> None:
        if active[0] and event == COMPILE_EVENT:
            counter[0] += 1

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield counter
    finally:
        active[0] = False


def hessian_spectrum(X: np.ndarray) -> np.ndarray:
    """Eigenvalues (ascending) of R2's Hessian (2/m)[X 1]ᵀ[X 1], in float64."""
    Xb = np.column_stack([X, np.ones(len(X))])
    return np.linalg.eigvalsh(2.0 * Xb.T @ Xb / len(X))


def least_squares_loss(X: np.ndarray, y: np.ndarray) -> float:
    """min over (w, b) of (1/m)‖Xw + b − y‖², by ``numpy.linalg.lstsq`` in float64."""
    Xb = np.column_stack([X, np.ones(len(y))])
    theta, *_ = np.linalg.lstsq(Xb, y, rcond=None)
    return float(np.mean((Xb @ theta - y) ** 2))


def counting(loss_fn: Callable) -> tuple[Callable, list[int]]:
    """A fresh copy of ``loss_fn`` that counts how often JAX traces (or calls) it."""
    count = [0]

    def loss(params, batch):
        count[0] += 1
        return loss_fn(params, batch)

    return loss, count


def timed_sweeps(
    loss_fn: Callable, params: dict, data: tuple, grids: list[jax.Array], steps: int
) -> tuple[list[dict[str, float]], gd.train.SweepResult]:
    """Wall time, XLA compilations and traces of the loss of ``gd.sweep`` on each grid.

    Each grid gets a fresh copy of the loss function, so its first call compiles anew;
    the second call reuses that program. Returns the rows and the last grid's sweep.
    """
    rows, sw = [], None
    for lrs in grids:
        fresh, traces = counting(loss_fn)
        timings = {"runs": int(lrs.shape[0])}
        for label in ("first", "again"):
            with count_compiles() as compiles:
                t0 = time.perf_counter()
                sw = gd.sweep(fresh, params, gd.optim.gd, data, steps=steps, learning_rates=lrs)
                jax.block_until_ready(sw.final_loss)
                timings[f"{label}_s"] = time.perf_counter() - t0
            timings[f"{label}_compiles"] = compiles[0]
            timings[f"{label}_traces"] = traces[0]
            traces[0] = 0
        rows.append(timings)
    return rows, sw


def timed_fit_loop(loss_fn: Callable, params: dict, data: tuple, n: int, steps: int) -> float:
    """Seconds per ``gd.fit`` call in a Python loop over n learning rates."""
    t0 = time.perf_counter()
    for lr in np.logspace(-3.0, -1.0, n):
        res = gd.fit(loss_fn, params, gd.optim.gd(float(lr)), data, steps=steps, progress=False)
        jax.block_until_ready(res.losses)
    return (time.perf_counter() - t0) / n


def main(argv: list[str] | None = None) -> dict:
    p = experiment_parser(NAME, __doc__)
    p.add_argument("--rates", type=int, default=None, help="learning rates (256; fast 96)")
    p.add_argument("--steps", type=int, default=None, help="GD steps per run (1000; fast 400)")
    args = p.parse_args(argv)
    run = Run(args, NAME, __doc__)
    n_rates = args.rates or (96 if args.fast else 256)
    steps = args.steps or (400 if args.fast else 1000)
    lo, hi = -3.0, 0.0  # the grid: 10^lo … 10^hi, log-spaced
    spacing = 10.0 ** ((hi - lo) / (n_rates - 1))  # ratio of neighbouring rates

    ds = gd.data.diabetes()
    data = (ds.X, ds.y)
    X64, y64 = np.asarray(ds.X, np.float64), np.asarray(ds.y, np.float64)
    eig = hessian_spectrum(X64)
    L, mu = float(eig[-1]), float(eig[0])
    edge = 2.0 / L
    loss_star = least_squares_loss(X64, y64)

    r2 = gd.models.get("R2")
    params = r2.init(jax.random.key(args.seed), n=X64.shape[1])
    lrs = jnp.logspace(lo, hi, n_rates)
    # the sweep, timed beside smaller ones: wall time and compilations against K
    small = (1,) if args.fast else (1, 16)
    grids = [jnp.logspace(lo, hi, k) for k in small] + [lrs]
    timing, sw = timed_sweeps(r2.loss, params, data, grids, steps)
    n_fits = 1 if args.fast else 3
    fit_s = timed_fit_loop(r2.loss, params, data, n_fits, steps)

    alpha = np.asarray(lrs, np.float64)
    final = np.asarray(sw.final_loss, np.float64)
    overflow = np.asarray(sw.diverged) | ~np.isfinite(final)
    initial = float(r2.loss(params, data))
    diverged = overflow | (final > initial)
    first_div = int(np.argmax(diverged)) if diverged.any() else None
    alpha_div = float(alpha[first_div]) if first_div is not None else float("nan")
    alpha_conv = float(alpha[first_div - 1]) if first_div else float("nan")
    wrong_side = int(np.sum(diverged != (alpha > edge)))

    best = sw.best_index
    alpha_best = float(alpha[best])
    rate = float(np.max((1.0 - alpha_best * eig) ** 2))  # per-step contraction of the gap
    gap_bound = rate**steps * (initial - loss_star) + 1e-6  # + float32 rounding of the loss

    gd.plot.lr_sweep(
        alpha,
        np.where(overflow, np.nan, final - loss_star),
        run.png("lr_sweep", "Final loss against learning rate, with 2/L from the Hessian"),
        title=f"GD on R2 (diabetes): {n_rates} learning rates in one vmapped run, {steps} steps",
        edge=edge,
        initial_loss=initial - loss_star,
        observed_edge=alpha_div,
        marks={"1/L (no overshoot)": 1.0 / L},
        ylabel="final loss − least-squares loss",
    )
    picks = {
        "α = 1/(2L)": 0.5 / L,
        "α = 1/L": 1.0 / L,
        "largest converging α": alpha_conv,
        "smallest diverging α": alpha_div,
        "α ≈ 1.2·(2/L)": 1.2 * edge,
    }
    curves = {}
    for label, a in picks.items():
        i = int(np.argmin(np.abs(np.log(alpha / a))))
        curves[f"{label} = {alpha[i]:.4g}"] = np.asarray(sw.losses[i])
    gd.plot.loss_curves(
        curves,
        run.png("loss_curves", "Loss curves of five learning rates from the sweep"),
        title="GD on R2 (diabetes): below 2/L the loss falls, above it grows",
        reference=loss_star,
        reference_label="least squares",
    )
    ks = [t["runs"] for t in timing]
    curves = {
        "gd.sweep, first call (compile + run)": [t["first_s"] for t in timing],
        "gd.sweep, called again (compiled)": [t["again_s"] for t in timing],
        f"K separate gd.fit calls (extrapolated from {n_fits})": [fit_s * k for k in ks],
    }
    gd.plot.lines(
        ks,
        curves,
        run.png("sweep_time", "Wall time of a sweep against the number of runs"),
        title=f"One compiled program: GD on R2, {steps} steps per run",
        xlabel="number of runs K (learning rates)",
        ylabel="wall time (s)",
        log=True,
        logx=True,
        styles=dict(zip(curves, ("o-", "o-", "o--"))),
    )

    # the runs that diverge retire and the live ones are re-packed in power-of-two sizes,
    # each size one more program (a lean one, and a careful one for the replay): at most
    # 2·log2(K) more than at K = 1, never one per run
    base = timing[0]["first_traces"]
    same_traces = all(
        t["first_traces"] <= base + 2 * math.ceil(math.log2(t["runs"])) for t in timing
    )
    cached = all(t["again_compiles"] == 0 for t in timing)
    checks = [
        close("smallest diverging α (sweep)", alpha_div, edge, rtol=spacing - 1.0),
        holds(
            "grid splits at 2/L: α < 2/L converge, α > 2/L diverge",
            wrong_side == 0,
            wrong_side,
            "0 rates on the wrong side",
        ),
        holds(
            "2/L between neighbouring grid rates",
            alpha_conv < edge <= alpha_div and first_div is not None,
            alpha_conv,
            f"largest converging α < 2/L = {edge:.6g}",
        ),
        at_most("best rate: final loss − least squares", final[best] - loss_star, gap_bound),
        holds(
            "one program a size: traces grow at most as 2·log2 K, none when called again",
            same_traces and cached,
            timing[-1]["first_traces"],
            f"<= {base} + 2·log2 K traces ({base} at K = 1); 0 compilations when called again",
        ),
    ]
    theory = markdown_table(
        ["quantity", "value"],
        [
            ["L = λ_max(H), numpy.linalg.eigvalsh (float64)", L],
            ["μ = λ_min(H)", mu],
            ["2/L: divergence edge of GD", edge],
            ["1/L: largest rate with no overshoot", 1.0 / L],
            ["2/(L + μ): fastest asymptotic rate", 2.0 / (L + mu)],
            ["largest converging α on the grid", alpha_conv],
            ["smallest diverging α on the grid", alpha_div],
            ["grid spacing (ratio of neighbours)", spacing],
            ["sweep's best α", alpha_best],
            [f"best α: final loss after {steps} steps", float(final[best])],
            ["least-squares loss (numpy.linalg.lstsq)", loss_star],
        ],
    )
    times = markdown_table(
        ["runs K", "first call (s)", "traces of the loss", "XLA compilations", "again (s)"],
        [
            [
                t["runs"],
                f"{t['first_s']:.3f}",
                t["first_traces"],
                t["first_compiles"],
                f"{t['again_s']:.3f}",
            ]
            for t in timing
        ],
    )
    sections = [
        f"## Divergence edge ({n_rates} rates from 1e{lo:.0f} to 1e{hi:.0f}, {steps} steps)\n\n"
        f"{theory}\n\nA run counts as diverged when its final loss is above its initial "
        f"loss {initial:.4g} (or overflows): {int(diverged.sum())} of {n_rates} runs, "
        f"{int(overflow.sum())} of them overflowing. The whole sweep took "
        f"{timing[-1]['first_s']:.2f} s, compilation included.",
        f"## One compiled program ({steps} steps per run)\n\n{times}\n\n"
        f"A Python loop of `gd.fit` calls, one per learning rate, takes {fit_s:.3f} s per "
        "call (the first compiles; a new learning rate is data, not a new program). A sweep "
        f"traces the loss {timing[0]['first_traces']} times at K = 1 and "
        f"{timing[-1]['first_traces']} at K = {timing[-1]['runs']}: runs that diverge retire "
        "and the live ones are re-packed, one program per power-of-two size; a second call "
        "with the same shapes compiles nothing.",
    ]
    out = run.finish(
        checks=checks,
        metrics={
            "steps": steps,
            "hessian_eigenvalues": eig,
            "L": L,
            "two_over_L": edge,
            "grid_spacing": spacing,
            "alpha_diverge": alpha_div,
            "alpha_converge": alpha_conv,
            "alpha_best": alpha_best,
            "lstsq_loss": loss_star,
            "initial_loss": initial,
            "learning_rates": alpha,
            "final_loss": final,
            "diverged": diverged,
            "overflowed": overflow,
            "timing": timing,
            "fit_seconds_each": fit_s,
        },
        sections=sections,
    )
    print((run.dir / "summary.md").read_text())
    return out


if __name__ == "__main__":
    sys.exit(0 if main()["ok"] else 1)

"""Edge of stability: full-batch GD on an MLP on digits, the sharpness rises to 2/η and stays.

Cohen, Kaur, Li, Kolter & Talwalkar (ICLR 2021), "Gradient Descent on Neural Networks
Typically Occurs at the Edge of Stability": with step η, gradient descent on a quadratic
is stable only while the sharpness λ_max(∇²L) < 2/η. On neural networks trained by
full-batch GD the sharpness rises ("progressive sharpening") until it reaches 2/η, then
hovers just around it while the loss keeps falling, non-monotonically.

* D1-style network 64 → 32 → 32 → 10 (tanh, tanh, linear) on the first m digits of
  scikit-learn's 8×8 digits, loss L = (1/2m)·Σ‖y − f(x)‖² (one-hot targets), the same
  start for every η; one ``gd.sweep`` runs the three step sizes together.
* The sharpness is recorded inside the compiled loop at every recorded step by
  ``gd.diagnostics.sharpness_monitor`` (Lanczos on Hessian-vector products of the full
  batch), and checked once against ``gd.sharpness`` at the final parameters.
* The check, for each η: over the last third of the run, the median sharpness lies within
  ±10% of 2/η and its maximum below 1.2 × 2/η.
"""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import numpy as np

import gdjax as gd
from gdjax.diagnostics import sharpness_monitor
from gdjax.models import mlp

from _harness import Run, close, experiment_parser, holds, markdown_table

NAME = "edge_of_stability"
WIDTH = 32
BAND = 0.10  # the median over the last third within ±10% of 2/η
PEAK = 1.20  # and the maximum below 1.2 × 2/η


def network() -> gd.Model:
    return mlp.make((64, WIDTH, WIDTH, 10), activation=["tanh", "tanh", "identity"])


def make_loss(net: gd.Model):
    def loss(params, batch):
        """L = (1/2m)·Σ‖y − f(x)‖²: D1's summed squared error, halved and averaged."""
        return 0.5 * net.loss(params, batch) / batch[0].shape[0]

    return loss


def main(argv: list[str] | None = None) -> dict:
    p = experiment_parser(NAME, __doc__)
    p.add_argument("--m", type=int, default=None, help="digits used (256; fast 128)")
    p.add_argument("--steps", type=int, default=None, help="GD steps (1000; fast 400)")
    p.add_argument("--etas", default="0.3,0.4,0.5", help="comma-separated step sizes η")
    args = p.parse_args(argv)
    run = Run(args, NAME, __doc__)
    m = args.m or (128 if args.fast else 256)
    steps = args.steps or (400 if args.fast else 1000)
    etas = np.array([float(e) for e in args.etas.split(",")])
    every = max(1, steps // 40)

    ds = gd.data.digits()
    data = (ds.X[:m], ds.y[:m])
    net = network()
    loss = make_loss(net)
    params0 = net.init(jax.random.key(args.seed))
    monitor = sharpness_monitor(loss, iters=15)
    sw = gd.sweep(loss, params0, gd.optim.gd(jnp.asarray(etas, jnp.float32)), data, steps=steps,
                  record_every=every, monitor=monitor, chunk_size=steps)  # fmt: skip
    sharp = np.asarray(sw.runs.monitor["sharpness"], np.float64)  # (runs, records)
    losses = np.asarray(sw.runs.losses, np.float64)
    t = np.arange(sharp.shape[1]) * every
    initial = float(sharp[0, 0])  # the monitor's record at step 0: the same for every η
    last = slice(2 * sharp.shape[1] // 3, None)
    final_params = jax.tree.map(lambda x: x[0], sw.runs.params)
    recheck = float(gd.sharpness(loss, final_params, data, iters=30))

    checks, rows = [], []
    for i, eta in enumerate(etas):
        edge = 2.0 / eta
        med, peak = float(np.median(sharp[i, last])), float(np.max(sharp[i, last]))
        checks.append(close(f"η = {eta:g}: median sharpness, last third", med, edge, rtol=BAND))
        checks.append(holds(f"η = {eta:g}: max sharpness, last third ≤ {PEAK} × 2/η",
                            peak <= PEAK * edge, peak, f"≤ {PEAK * edge:.4g}"))  # fmt: skip
        rows.append([f"{eta:g}", edge, initial, float(np.min(sharp[i, 1:])), med, peak,
                     float(sw.runs.final_loss[i])])  # fmt: skip
    checks.append(close("monitor vs gd.sharpness at the end (η = "f"{etas[0]:g})",
                        sharp[0, -1], recheck, rtol=0.15))  # fmt: skip
    checks.append(holds("no run diverged", not np.any(sw.runs.diverged), 0, "none"))

    curves = {f"η = {e:g}": (t, sharp[i]) for i, e in enumerate(etas)}
    curves |= {f"2/η = {2 / e:.3g}": (t, np.full(t.shape, 2 / e)) for e in etas}
    gd.plot.side_by_side(
        {
            "sharpness λ_max(∇²L) at the recorded steps": curves,
            "training loss (full batch)": {
                f"η = {e:g}": (t, losses[i]) for i, e in enumerate(etas)
            },
        },
        run.png("sharpness", "Sharpness rises to 2/η and hovers there (dotted: 2/η)"),
        title=f"Edge of stability: full-batch GD, 64-{WIDTH}-{WIDTH}-10 tanh MLP, {m} digits",
        xlabel="step",
        ylabel=["λ_max (Lanczos, 15 Hessian-vector products)", "L (log scale)"],
        log=[False, True],
        styles={f"2/η = {2 / e:.3g}": ":" for e in etas},
    )
    table = markdown_table(
        ["η", "2/η", "sharpness at init", "lowest", "median, last third", "max, last third",
         "final loss"], rows)  # fmt: skip
    out = run.finish(
        checks=checks,
        metrics={
            "m": m,
            "steps": steps,
            "record_every": every,
            "etas": etas,
            "two_over_eta": 2 / etas,
            "initial_sharpness": initial,
            "sharpness": {f"{e:g}": sharp[i] for i, e in enumerate(etas)},
            "losses": {f"{e:g}": losses[i] for i, e in enumerate(etas)},
            "final_sharpness_recheck": recheck,
        },
        sections=[f"## Sharpness against 2/η ({steps} steps, recorded every {every})\n\n{table}"],
    )
    print((run.dir / "summary.md").read_text())
    return out


if __name__ == "__main__":
    sys.exit(0 if main()["ok"] else 1)

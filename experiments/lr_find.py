"""Learning-rate finder: gd.lr_find on R2, G3 and D1, against 2/L and a full sweep's best rate.

``gd.lr_find`` runs every rate of a log-spaced grid as its own short run from the same
start, all of them one vmapped program, and suggests a rate below the edge where the runs
diverge (see docs/diagnostics.md). Full-batch gradient descent throughout.

* R2, least squares on scikit-learn's diabetes data: a quadratic with Hessian
  (2/m)[X 1]ᵀ[X 1], so GD diverges exactly above 2/L (L its largest eigenvalue, from
  numpy.linalg.eigvalsh in float64). Checks: the finder's edge is the first tried rate
  above 2/L, and the suggestion is below 2/L.
* G3, logistic regression on all 1797 digits (64 standardised pixels, y = 1 for an odd
  digit), from w = 0, b = 0. Its Hessian is (1/m)[X 1]ᵀ diag(σ(1 − σ)) [X 1] with
  σ(1 − σ) ≤ 1/4, so the loss is L-smooth with L = λ_max((1/4m)[X 1]ᵀ[X 1]) in closed
  form, attained at the start, and the descent lemma makes every run with η < 2/L
  decrease its loss at every step. Checks: every finder curve with η < 2/L is monotone
  and none of them is called diverged (the edge is at or above 2/L). The logistic loss is
  not a quadratic: its curvature falls as the fit improves, so the runs survive rates far
  above 2/L, and the suggestion sits above it.
* D1, a 64-32-10 tanh network on the digits (one-hot targets, L = (1/2m)Σ‖y − f‖²), and
  G3: the suggestion against the best rate of a *full* sweep, the same grid run 4 times as
  long (``gd.sweep``); the check: the suggestion lies in [best/10, best].
"""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import numpy as np

import gdjax as gd
from gdjax.models import mlp

from _harness import Run, at_most, experiment_parser, holds, markdown_table

NAME = "lr_find"
FACTOR = 10.0  # the suggestion within a factor 10 below a full sweep's best rate


def g3_problem(m: int) -> tuple:
    ds = gd.data.digits(one_hot=False)
    X, digit = ds.X[:m], np.asarray(ds.y[:m])
    y = jnp.asarray(digit % 2, jnp.float32)
    X64 = np.column_stack([np.asarray(X, np.float64), np.ones(m)])
    L = float(np.linalg.eigvalsh(X64.T @ X64 / (4 * m))[-1])
    params = {"w": jnp.zeros(X.shape[1], jnp.float32), "b": jnp.float32(0.0)}
    return gd.models.get("G3").loss, params, (X, y), L


def r2_problem() -> tuple:
    ds = gd.data.diabetes()
    X64 = np.column_stack([np.asarray(ds.X, np.float64), np.ones(len(ds.y))])
    L = float(np.linalg.eigvalsh(2.0 * X64.T @ X64 / len(ds.y))[-1])
    params = {"w": jnp.zeros(ds.X.shape[1], jnp.float32), "b": jnp.float32(0.0)}
    return gd.models.get("R2").loss, params, (ds.X, ds.y), L


def d1_problem(m: int, seed: int) -> tuple:
    ds = gd.data.digits()
    net = mlp.make((64, 32, 10), activation=["tanh", "identity"])

    def loss(params, batch):
        return 0.5 * net.loss(params, batch) / batch[0].shape[0]

    return loss, net.init(jax.random.key(seed)), (ds.X[:m], ds.y[:m])


def full_sweep_best(loss, params, data, rates: np.ndarray, steps: int) -> tuple[float, np.ndarray]:
    """The best rate of the same grid run ``steps`` steps: the lowest final loss among the
    runs that neither overflowed nor ended above the initial loss."""
    res = gd.lr_find(loss, params, gd.optim.gd(0.1), data, steps=steps, rates=rates)
    return res.best, np.where(res.diverged, np.nan, res.final_loss)


def main(argv: list[str] | None = None) -> dict:
    p = experiment_parser(NAME, __doc__)
    p.add_argument("--steps", type=int, default=None, help="steps per finder run (60; fast 20)")
    p.add_argument("--num", type=int, default=None, help="rates tried (24; fast 12)")
    p.add_argument("--models", default="R2,G3,D1", help="comma-separated subset of R2,G3,D1")
    args = p.parse_args(argv)
    run = Run(args, NAME, __doc__)
    steps = args.steps or (20 if args.fast else 60)
    num = args.num or (12 if args.fast else 24)
    m = 256 if args.fast else 512

    r2_loss, r2_params, r2_data, L2 = r2_problem()
    g3_loss, g3_params, g3_data, L = g3_problem(1797)  # all digits: not separable
    chosen = [c.strip() for c in args.models.split(",")]
    if "R2" not in chosen or "G3" not in chosen or not set(chosen) <= {"R2", "G3", "D1"}:
        p.error(f"--models must hold R2 and G3 (and may hold D1), got {args.models!r}")
    problems = {"R2": (r2_loss, r2_params, r2_data), "G3": (g3_loss, g3_params, g3_data)}
    if "D1" in chosen:
        problems["D1"] = d1_problem(m, args.seed)
    edges = {"R2": 2 / L2, "G3": 2 / L}
    found, sweeps, rows = {}, {}, []
    for name, (loss, params, data) in problems.items():
        res = gd.lr_find(loss, params, gd.optim.gd(0.1), data, steps=steps, min_lr=1e-3,
                         max_lr=300.0 if name == "G3" else 30.0, num=num)  # fmt: skip
        best, final = full_sweep_best(loss, params, data, res.rates, 4 * steps)
        found[name], sweeps[name] = res, (best, final)
        marks = {"best rate of the full sweep": best}
        marks |= {"2/L": edges[name]} if name in edges else {}
        res.plot(run.png(f"lr_find_{name}", f"{name}: the finder's loss against the rate"),
                 title=f"gd.lr_find on {name} ({steps} steps per rate, {num} rates)",
                 marks=marks)  # fmt: skip
        rows.append([name, res.suggestion, res.best, res.edge or "–", best,
                     edges.get(name, "–")])  # fmt: skip
    r2, g3 = found["R2"], found["G3"]
    above = r2.rates[r2.rates > 2 / L2]
    below_g3 = g3.rates < 2 / L
    curves = g3.losses[below_g3]
    rises = float(np.max(np.diff(curves, axis=1) / curves[:, :-1])) if curves.size else np.nan
    checks = [
        at_most("R2: suggestion ≤ 2/L (quadratic, L = λ_max of (2/m)[X 1]ᵀ[X 1])",
                r2.suggestion, 2 / L2),
        holds("R2: the edge is the first tried rate above 2/L",
              above.size > 0 and r2.edge == above[0], r2.edge or np.nan, f"{above[0]:.4g}"),
        holds("G3: every curve with η < 2/L decreases at every step (descent lemma)",
              rises <= 1e-6, rises, "largest relative rise ≤ 1e-6"),
        holds("G3: no rate below 2/L is called diverged (edge ≥ 2/L)",
              not g3.diverged[below_g3].any(), g3.edge or np.nan, f"2/L = {2 / L:.4g}"),
    ]  # fmt: skip
    for name in [n for n in ("G3", "D1") if n in found]:
        res, best = found[name], sweeps[name][0]
        checks.append(holds(
            f"{name}: suggestion in [best/{FACTOR:g}, best] of a 4× longer full sweep",
            best / FACTOR <= res.suggestion <= best, res.suggestion,
            f"best = {best:.4g}"))  # fmt: skip
    if "D1" in found:
        checks.append(holds("D1: the finder saw the divergence edge",
                            found["D1"].edge is not None, found["D1"].edge or np.nan,
                            "an edge on the grid"))  # fmt: skip

    table = markdown_table(
        ["model", "suggestion", "finder's best", "finder's edge", "full sweep's best",
         "2/L"],
        rows,
    )
    out = run.finish(
        checks=checks,
        metrics={
            "steps": steps,
            "num": num,
            "m": m,
            "two_over_L": edges,
            "g3_largest_relative_rise_below_2_over_L": rises,
            **{
                name: {
                    "rates": res.rates,
                    "final_loss": res.final_loss,
                    "diverged": res.diverged,
                    "suggestion": res.suggestion,
                    "best": res.best,
                    "edge": res.edge,
                    "full_sweep_best": sweeps[name][0],
                    "full_sweep_final_loss": sweeps[name][1],
                }
                for name, res in found.items()
            },
        },
        sections=[f"## The finder against the references\n\n{table}"],
    )
    print((run.dir / "summary.md").read_text())
    return out


if __name__ == "__main__":
    sys.exit(0 if main()["ok"] else 1)

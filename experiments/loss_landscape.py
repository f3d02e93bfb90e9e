"""Loss landscapes of D1 on digits: filter-normalised random directions and the runs' PCA plane.

Li, Xu, Taylor, Studer & Goldstein (NeurIPS 2018), "Visualizing the Loss Landscape of
Neural Nets", as ``gd.diagnostics`` does it, the whole grid one vmapped program:

* D1, a 64-32-10 tanh network on the first m digits (one-hot targets,
  L = (1/2m)Σ‖y − f‖²), trained from one start by full-batch gradient descent, momentum
  and Adam, each recording its trajectory (``fit(..., trajectory=True)``).
* Around GD's final parameters θ*: L(θ* + αδ) and L(θ* + αδ + βη) along two
  filter-normalised random directions (each row of each weight matrix rescaled to the
  norm of θ*'s row; biases not moved).
* For each run, the plane of the top two principal directions of its trajectory about its
  own final parameters, the loss on it as contours and the path projected on it.
* Checks against direct evaluation: the grids' centre is L(θ*), and grid points agree
  with ``loss(θ* + αδ + βη)`` computed point by point (a separate vmap, no grid code).
"""

from __future__ import annotations

import sys

import jax
import numpy as np

import gdjax as gd
from gdjax.diagnostics import landscape, pca_directions, project, random_directions
from gdjax.models import mlp

from _harness import Run, close, experiment_parser, holds, markdown_table

NAME = "loss_landscape"


def make_problem(m: int, seed: int):
    ds = gd.data.digits()
    net = mlp.make((64, 32, 10), activation=["tanh", "identity"])

    def loss(params, batch):
        return 0.5 * net.loss(params, batch) / batch[0].shape[0]

    return loss, net.init(jax.random.key(seed)), (ds.X[:m], ds.y[:m])


def direct(loss, center, dirs, coefs: np.ndarray, batch) -> np.ndarray:
    """``loss(center + Σ c_k d_k)`` at each row of ``coefs``: parameters stacked, one vmap."""
    c = np.asarray(coefs, np.float32)

    def point(p, *ds):  # on the host, in NumPy
        p, shape = np.asarray(p), (-1,) + (1,) * np.ndim(p)
        return p[None] + sum(c[:, k].reshape(shape) * np.asarray(d)[None] for k, d in enumerate(ds))

    points = jax.tree.map(point, center, *dirs)
    return np.asarray(jax.jit(jax.vmap(loss, in_axes=(0, None)))(points, batch))


def random_2d(run: Run, xs: np.ndarray, Z: np.ndarray) -> None:
    """The 2-D random-direction landscape, centred at θ* = (0, 0)."""
    gd.plot.landscape(
        xs, xs, Z,
        run.png("random_2d", "2-D landscape along two filter-normalised random directions"),
        trajectories={},
        title="D1 on digits: L(θ* + αδ + βη), filter-normalised δ, η",
        xlabel="α (δ)", ylabel="β (η)",
    )  # fmt: skip


def main(argv: list[str] | None = None) -> dict:
    p = experiment_parser(NAME, __doc__)
    p.add_argument("--steps", type=int, default=None, help="training steps (300; fast 60)")
    p.add_argument("--grid", type=int, default=None, help="grid points per axis (25; fast 11)")
    args = p.parse_args(argv)
    run = Run(args, NAME, __doc__)
    steps = args.steps or (60 if args.fast else 300)
    n = args.grid or (11 if args.fast else 25)
    m = 256 if args.fast else 512
    loss, params0, data = make_problem(m, args.seed)

    optimizers = {
        "GD (α = 0.3)": gd.optim.gd(0.3),
        "momentum (α = 0.05, β = 0.9)": gd.optim.sgd(0.05, momentum=0.9),
        "Adam (α = 0.01)": gd.optim.adam(0.01),
    }
    every = max(1, steps // 50)
    runs = {label: gd.fit(loss, params0, opt, data, steps=steps, record_every=every,
                          trajectory=True, chunk_size=steps)
            for label, opt in optimizers.items()}  # fmt: skip
    center = runs["GD (α = 0.3)"].params
    center_loss = float(jax.jit(loss)(center, data))

    # ---- filter-normalised random directions: 1-D and 2-D
    d1, d2 = random_directions(center, args.seed)
    xs = np.linspace(-1.0, 1.0, n)
    line = landscape(loss, center, data, [d1], np.linspace(-1.0, 1.0, 4 * n + 1))
    Z = landscape(loss, center, data, [d1, d2], xs, xs)
    gd.plot.lines(
        np.linspace(-1.0, 1.0, 4 * n + 1),
        {"L(θ* + αδ)": line},
        run.png("random_1d", "1-D landscape along a filter-normalised random direction"),
        title="D1 on digits: the loss along a filter-normalised random direction",
        xlabel="α",
        ylabel="loss",
    )
    random_2d(run, xs, Z)

    # ---- each run's own PCA plane, about its own final parameters (Li et al., §7)
    planes, paths, grids = {}, {}, {}
    for label, r in runs.items():
        plane = pca_directions(r.trajectory, r.params)
        end = jax.tree.map(lambda x: np.asarray(x)[None], r.params)
        full = jax.tree.map(lambda a, b: np.concatenate([np.asarray(a), b]), r.trajectory, end)
        xy = project(full, r.params, plane)
        pad = 0.2 * (xy.max(0) - xy.min(0)) + 1e-3
        gx = np.linspace(xy[:, 0].min() - pad[0], xy[:, 0].max() + pad[0], n)
        gy = np.linspace(xy[:, 1].min() - pad[1], xy[:, 1].max() + pad[1], n)
        Zp = landscape(loss, r.params, data, plane.directions, gx, gy)
        planes[label], paths[label], grids[label] = plane, xy, (gx, gy, Zp)
        short = label.split(" ")[0]
        gd.plot.landscape(
            gx, gy, Zp,
            run.png(f"pca_{short.lower()}", f"{label}: its path on its PCA plane"),
            trajectories={label: xy},
            title=f"D1 on digits, {short}: the path on its PCA plane "
            f"({100 * plane.explained.sum():.0f}% of its variance)",
            xlabel=f"PC 1 ({100 * plane.explained[0]:.0f}%)",
            ylabel=f"PC 2 ({100 * plane.explained[1]:.0f}%)",
        )  # fmt: skip

    # ---- checks against direct evaluation
    rng = np.random.default_rng(args.seed)
    idx = rng.integers(0, n, size=(6, 2))
    coefs = np.column_stack([xs[idx[:, 1]], xs[idx[:, 0]]])
    want = direct(loss, center, [d1, d2], coefs, data)
    got = Z[idx[:, 0], idx[:, 1]]
    err = float(np.max(np.abs(got - want) / np.abs(want)))
    gx, gy, Zp = grids["Adam (α = 0.01)"]
    adam = runs["Adam (α = 0.01)"]
    pc = np.column_stack([gx[idx[:, 1]], gy[idx[:, 0]]])
    want_p = direct(loss, adam.params, planes["Adam (α = 0.01)"].directions, pc, data)
    err_p = float(np.max(np.abs(Zp[idx[:, 0], idx[:, 1]] - want_p) / np.abs(want_p)))
    mid = n // 2
    finals = {label: float(r.final_loss) for label, r in runs.items()}
    checks = [
        close("random 2-D grid vs direct evaluation (max rel.)", err, 0.0, atol=1e-5),
        close("Adam's PCA-plane grid vs direct evaluation (max rel.)", err_p, 0.0, atol=1e-5),
        close("grid centre = L(θ*)", Z[mid, mid], center_loss, rtol=1e-5),
        holds("θ* is the lowest point of the 1-D random slice", np.argmin(line) == 2 * n,
              float(np.min(line)), f"L(θ*) = {center_loss:.4g}"),
        holds("every optimizer lowered the loss", max(finals.values()) < float(runs[
            "GD (α = 0.3)"].losses[0]), max(finals.values()), "below the initial loss"),
    ]  # fmt: skip
    table = markdown_table(
        ["optimizer", "final loss", "variance on PC 1", "on PC 2", "path length on the plane"],
        [[k, finals[k], planes[k].explained[0], planes[k].explained[1],
          float(np.sum(np.linalg.norm(np.diff(v, axis=0), axis=1)))]
         for k, v in paths.items()],
    )  # fmt: skip
    out = run.finish(
        checks=checks,
        metrics={
            "m": m,
            "steps": steps,
            "grid": n,
            "center_loss": center_loss,
            "final_loss": finals,
            "pca_explained": {k: v.explained for k, v in planes.items()},
            "paths": paths,
            "random_1d": line,
        },
        sections=[
            f"## Three optimizers ({steps} steps), each on its own PCA plane\n\n{table}\n\n"
            "The random-direction landscapes are centred at GD's end θ*."
        ],
    )
    print((run.dir / "summary.md").read_text())
    return out


if __name__ == "__main__":
    sys.exit(0 if main()["ok"] else 1)

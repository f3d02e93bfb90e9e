"""Seed 001: R1–R4 trained by gradient descent; R1's loss landscape with five optimizers' paths.

* R1 (univariate, synthetic data y = 2x − 1 + noise) and R2 (multivariate, scikit-learn's
  diabetes data, 10 standardised features) trained by full-batch GD with the step
  α = 2/(L + μ), L and μ the extreme eigenvalues of the Hessian (2/m)[X 1]ᵀ[X 1], against
  the closed-form least-squares solution from ``numpy.linalg.lstsq`` in float64.
* R3 (two stacked linear layers) and R4 (the same with a sigmoid) on the diabetes data.
  R3 is still a linear function of x, so its best loss is the least-squares loss; R4's
  hidden sigmoid layer lets it go below it.
* The picture of seed 001: R1's loss over (w, b) as contours, with the paths of GD,
  mini-batch GD, momentum, RMSprop and Adam from the same red starting point.
"""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import numpy as np

import gdjax as gd

from _harness import Run, at_most, close, experiment_parser, markdown_table

NAME = "seed001_regression"
START = {"w": 4.5, "b": 4.0}  # R1's common starting point for the landscape


def least_squares(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    """(θ* = (w, b), (1/m)‖Xw + b − y‖²) from ``numpy.linalg.lstsq`` in float64."""
    Xb = np.column_stack([X, np.ones(len(y))])
    theta, *_ = np.linalg.lstsq(Xb, y, rcond=None)
    return theta, float(np.mean((Xb @ theta - y) ** 2))


def gd_step(X: np.ndarray) -> float:
    """α = 2/(L + μ), the fastest fixed GD step on (1/m)‖Xw + b − y‖² (Hessian (2/m)XᵀX)."""
    Xb = np.column_stack([X, np.ones(len(X))])
    eig = np.linalg.eigvalsh(2.0 * Xb.T @ Xb / len(X))
    return float(2.0 / (eig[-1] + eig[0]))


def theta_of(params: dict) -> np.ndarray:
    """(w, b) of R1/R2 as one float64 vector, in ``least_squares``'s order."""
    return np.concatenate([np.ravel(params["w"]), np.ravel(params["b"])]).astype(np.float64)


def rel_error(params: dict, theta: np.ndarray) -> float:
    got = theta_of(params)
    return float(np.linalg.norm(got - theta) / np.linalg.norm(theta))


def landscape(
    run: Run, batch: tuple, theta: np.ndarray, steps: int, seed: int
) -> tuple[dict, dict]:
    """Paths of five optimizers on R1's loss, drawn on its contours; (paths, final losses).

    Each path is ``(steps + 1, 2)``: (w, b) before every update, then after the last.
    """
    r1 = gd.models.get("R1")
    start = {k: jnp.float32(v) for k, v in START.items()}
    optimizers = {
        "GD (α = 0.1)": (gd.optim.gd(0.1), None),
        "mini-batch GD (16, α = 0.1)": (gd.optim.gd(0.1), 16),
        "momentum (α = 0.02, β = 0.8)": (gd.optim.sgd(0.02, momentum=0.8), None),
        "RMSprop (α = 0.1)": (gd.optim.rmsprop(0.1), None),
        "Adam (α = 0.3)": (gd.optim.adam(0.3), None),
    }
    paths, finals = {}, {}
    for i, (label, (opt, batch_size)) in enumerate(optimizers.items()):
        res = gd.fit(
            r1.loss,
            start,
            opt,
            batch,
            steps=steps,
            batch_size=batch_size,
            key=jax.random.key(seed + i),
            trajectory=True,
        )
        # the trajectory holds the params before each update (it starts at START); the
        # params after the last update are res.params
        traj = np.column_stack([np.asarray(res.trajectory["w"]), np.asarray(res.trajectory["b"])])
        end = [float(res.params["w"]), float(res.params["b"])]
        paths[label] = np.vstack([traj, end])
        finals[label] = float(r1.loss(res.params, batch))

    def loss_at(point: jax.Array, data: tuple) -> jax.Array:
        return r1.loss({"w": point[0], "b": point[1]}, data)

    ws = np.linspace(-1.5, 5.5, 121)
    bs = np.linspace(-4.5, 5.0, 121)
    Z = gd.plot.grid(loss_at, ws, bs, batch)
    gd.plot.landscape(
        ws,
        bs,
        Z,
        run.png("r1_landscape", "R1's loss landscape with the paths of five optimizers"),
        trajectories=paths,
        title=f"R1 loss landscape: {steps} steps of five optimizers",
        xlabel="w (slope)",
        ylabel="b (intercept)",
        optimum=theta,
    )
    return paths, finals


def main(argv: list[str] | None = None) -> dict:
    p = experiment_parser(NAME, __doc__)
    p.add_argument("--m", type=int, default=100, help="R1's number of examples")
    p.add_argument("--steps", type=int, default=None, help="GD steps for R2–R4 (4000; fast 3000)")
    p.add_argument("--hidden", type=int, default=8, help="R3/R4 hidden units k")
    args = p.parse_args(argv)
    run = Run(args, NAME, __doc__)
    steps = args.steps or (3000 if args.fast else 4000)
    key = jax.random.key(args.seed)
    k_data, k_r3, k_r4 = jax.random.split(key, 3)

    # R1: synthetic y = 2x − 1 + noise, x off-centre so that w and b are coupled
    ds1 = gd.data.linear_regression(k_data, args.m, 1, w=[2.0], b=-1.0, noise=0.5, x_mean=1.5)
    batch1 = (ds1.X[:, 0], ds1.y)
    theta1, ref1 = least_squares(np.asarray(ds1.X, np.float64), np.asarray(ds1.y, np.float64))
    r1 = gd.models.get("R1")
    fit1 = gd.fit(
        r1.loss,
        {"w": jnp.float32(0.0), "b": jnp.float32(0.0)},
        gd.optim.gd(gd_step(ds1.X)),
        batch1,
        steps=steps,
    )

    # R2–R4 on the diabetes data
    ds = gd.data.diabetes()
    batch = (ds.X, ds.y)
    X64, y64 = np.asarray(ds.X, np.float64), np.asarray(ds.y, np.float64)
    theta2, ref2 = least_squares(X64, y64)
    r2, r3, r4 = (gd.models.get(i) for i in ("R2", "R3", "R4"))
    n = X64.shape[1]
    zeros2 = {"w": jnp.zeros(n, jnp.float32), "b": jnp.float32(0.0)}
    fit2 = gd.fit(r2.loss, zeros2, gd.optim.gd(gd_step(X64)), batch, steps=steps)
    fit3 = gd.fit(r3.loss, r3.init(k_r3, n=n, k=args.hidden), gd.optim.gd(0.1), batch, steps=steps)
    fit4 = gd.fit(r4.loss, r4.init(k_r4, n=n, k=args.hidden), gd.optim.gd(0.3), batch, steps=steps)
    loss = {
        m.id: float(m.loss(f.params, b))
        for m, f, b in ((r1, fit1, batch1), (r2, fit2, batch), (r3, fit3, batch), (r4, fit4, batch))
    }
    err1, err2 = rel_error(fit1.params, theta1), rel_error(fit2.params, theta2)

    gd.plot.loss_curves(
        {
            "R2: linear": fit2.losses,
            f"R3: two linear layers (k = {args.hidden})": fit3.losses,
            f"R4: linear–sigmoid–linear (k = {args.hidden})": fit4.losses,
        },
        run.png("diabetes_loss", "R2–R4 on the diabetes data, with the least-squares loss"),
        title="Diabetes data: gradient descent on R2, R3, R4",
        ylabel="mean squared error (standardised y)",
        log=False,
        reference=ref2,
        reference_label="least squares (numpy.linalg.lstsq)",
    )
    land_steps = 30 if args.fast else 60
    paths, finals = landscape(run, batch1, theta1, land_steps, args.seed)

    checks = [
        close("R2 ‖θ − θ_lstsq‖/‖θ_lstsq‖", err2, 0.0, atol=1e-5),
        close("R1 ‖θ − θ_lstsq‖/‖θ_lstsq‖", err1, 0.0, atol=1e-5),
        close("R1 final loss", loss["R1"], ref1, rtol=1e-5),
        close("R2 final loss", loss["R2"], ref2, rtol=1e-5),
        close("R3 final loss (linear, so = lstsq)", loss["R3"], ref2, rtol=1e-3),
        at_most("R4 final loss (below lstsq)", loss["R4"], ref2),
    ]
    table = markdown_table(
        ["model", "data", "final loss", "least-squares loss", "relative parameter error"],
        [
            ["R1", f"synthetic, m = {args.m}", loss["R1"], ref1, f"{err1:.2e}"],
            ["R2", "diabetes, n = 10", loss["R2"], ref2, f"{err2:.2e}"],
            ["R3", f"diabetes, k = {args.hidden}", loss["R3"], ref2, "–"],
            ["R4", f"diabetes, k = {args.hidden}", loss["R4"], ref2, "–"],
        ],
    )
    land = markdown_table(["optimizer", f"R1 loss after {land_steps} steps"], list(finals.items()))
    sections = [
        f"## Gradient descent vs least squares ({steps} steps)\n\n{table}",
        f"## R1's landscape (optimum: w = {theta1[0]:.4f}, b = {theta1[1]:.4f}, "
        f"loss {ref1:.4f})\n\n{land}",
    ]
    out = run.finish(
        checks=checks,
        metrics={
            "steps": steps,
            "final_loss": loss,
            "lstsq_loss": {"R1": ref1, "R2": ref2},
            "lstsq_theta": {"R1": theta1, "R2": theta2},
            "rel_error": {"R1": err1, "R2": err2},
            "gd_theta": {"R1": theta_of(fit1.params), "R2": theta_of(fit2.params)},
            "initial_loss": {
                f"R{i}": f.losses[0] for i, f in enumerate((fit1, fit2, fit3, fit4), 1)
            },
            "landscape_final_loss": finals,
            "landscape_paths": paths,
        },
        sections=sections,
    )
    print((run.dir / "summary.md").read_text())
    return out


if __name__ == "__main__":
    sys.exit(0 if main()["ok"] else 1)

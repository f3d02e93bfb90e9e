"""Seed 000: G1's graph by hand, G2's one-example step, G3 trained by GD on breast-cancer data.

* G1, J = 3(a + b·c) at a = 5, b = 3, c = 2: the forward values and the right-to-left
  adjoints, hand-written backprop beside autodiff and the course's published numbers
  (J = 33, dJ/da = 3, dJ/db = 6, dJ/dc = 9).
* G2, one example: z, a, L, then dz = a − y, dw1, dw2, db and the weights after one step
  w ← w − α·dw, checked against ``jax.grad`` and against one update of ``gd.optim.gd(α)``.
* G3, mean cross-entropy on scikit-learn's breast-cancer data (5 standardised features):
  full-batch gradient descent with step 1/L, where L = λ_max([X 1]ᵀ[X 1]/m)/4 bounds the
  Hessian, against the optimum that SciPy's L-BFGS finds on an independent NumPy
  objective in float64 (and scikit-learn's unpenalised LogisticRegression as a cross-check).

All 30 features together separate the two classes exactly, so the unregularised loss has
no finite minimiser (its infimum 0 is approached as ‖w‖ → ∞); five of the "mean" features
leave the classes overlapping and the minimiser finite.
"""

from __future__ import annotations

import sys

import jax
import numpy as np
import optax

import gdjax as gd

from _harness import (
    Run,
    autodiff_adjoints,
    close,
    experiment_parser,
    logistic_lbfgs,
    logistic_objective,
    markdown_table,
)

NAME = "seed000_logistic"
FEATURES = (
    "mean radius",
    "mean texture",
    "mean smoothness",
    "mean concave points",
    "mean fractal dimension",
)
# Ng, "Neural Networks and Deep Learning", Derivatives with a Computation Graph.
G1_PUBLISHED = {"J": 33.0, "a": 3.0, "b": 6.0, "c": 9.0}


def g1_table() -> tuple[list[list[object]], float]:
    """Rows (quantity, hand-written, autodiff, published); the largest |hand − autodiff|."""
    model = gd.models.get("G1")
    params, batch = model.example()
    bp = model.backprop(params, batch)
    auto_grads = jax.grad(model.loss)(params, batch)
    auto_adj = autodiff_adjoints(model, params, batch)
    a, b, c = (float(params[k]) for k in "abc")
    rows: list[list[object]] = [
        ["u = b·c", b * c, "–", 6.0],
        ["v = a + u", a + b * c, "–", 11.0],
        ["J = 3v", float(bp.loss), float(model.loss(params, batch)), G1_PUBLISHED["J"]],
        ["dJ/dv", float(bp.adjoints["v"]), float(auto_adj["v"]), 3.0],
        ["dJ/du", float(bp.adjoints["u"]), float(auto_adj["u"]), 3.0],
    ]
    rows += [[f"dJ/d{k}", float(bp.grads[k]), float(auto_grads[k]), G1_PUBLISHED[k]] for k in "abc"]
    err = max(abs(r[1] - r[3]) for r in rows)
    return rows, err


def g2_step(alpha: float) -> tuple[list[list[object]], dict[str, float]]:
    """G2's forward values, gradients and one GD step; and the largest disagreements."""
    model = gd.models.get("G2")
    params, batch = model.example()
    (x1, x2), y = np.asarray(batch[0], np.float64), float(batch[1])
    bp = model.backprop(params, batch)
    auto = jax.grad(model.loss)(params, batch)
    opt = gd.optim.gd(alpha)
    updates, _ = opt.update(bp.grads, opt.init(params), params)
    stepped = optax.apply_updates(params, updates)
    w = {k: float(v) for k, v in params.items()}
    z = w["w1"] * x1 + w["w2"] * x2 + w["b"]
    a = 1.0 / (1.0 + np.exp(-z))
    rows: list[list[object]] = [
        ["z = w1·x1 + w2·x2 + b", z, "–"],
        ["a = σ(z)", a, "–"],
        ["L = −(y log a + (1−y) log(1−a))", float(bp.loss), float(model.loss(params, batch))],
        [
            "dz = a − y",
            float(bp.adjoints["z"]),
            float(autodiff_adjoints(model, params, batch)["z"]),
        ],
    ]
    rows += [[f"d{k}", float(bp.grads[k]), float(auto[k])] for k in ("w1", "w2", "b")]
    manual = {k: w[k] - alpha * float(bp.grads[k]) for k in w}
    rows += [[f"{k} ← {k} − α·d{k}", manual[k], float(stepped[k])] for k in ("w1", "w2", "b")]
    errs = {
        "grad": max(abs(float(bp.grads[k]) - float(auto[k])) for k in w),
        "step": max(abs(manual[k] - float(stepped[k])) for k in w),
        "dz": abs(float(bp.adjoints["z"]) - (a - y)),
    }
    return rows, errs


def reference_optimum(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float, float]:
    """(θ*, J(θ*)) by SciPy's L-BFGS in float64; and scikit-learn's J as a cross-check."""
    from sklearn.linear_model import LogisticRegression

    theta, loss = logistic_lbfgs(X, y)
    # C = ∞: no penalty (scikit-learn ≥ 1.8 deprecates penalty=None for this)
    clf = LogisticRegression(C=np.inf, tol=1e-10, max_iter=10_000).fit(X, y)
    theta_sk = np.concatenate([clf.coef_.ravel(), clf.intercept_])
    return theta, loss, logistic_objective(theta_sk, X, y)[0]


def main(argv: list[str] | None = None) -> dict:
    p = experiment_parser(NAME, __doc__)
    p.add_argument("--alpha", type=float, default=0.1, help="G2's learning rate")
    p.add_argument("--steps", type=int, default=None, help="G3's GD steps (1000; fast: 300)")
    args = p.parse_args(argv)
    run = Run(args, NAME, __doc__)
    steps = args.steps or (300 if args.fast else 1000)

    g1_rows, g1_err = g1_table()
    g2_rows, g2_err = g2_step(args.alpha)

    ds = gd.data.breast_cancer(FEATURES)
    X64, y64 = np.asarray(ds.X, np.float64), np.asarray(ds.y, np.float64)
    theta_ref, loss_ref, loss_sklearn = reference_optimum(X64, y64)
    Xb = np.column_stack([X64, np.ones(len(y64))])
    smoothness = float(np.linalg.eigvalsh(Xb.T @ Xb / len(y64)).max() / 4)
    lr = 1.0 / smoothness

    g3 = gd.models.get("G3")
    params = g3.init(jax.random.key(args.seed), n=X64.shape[1])
    result = gd.fit(g3.loss, params, gd.optim.gd(lr), (ds.X, ds.y), steps=steps)
    final = float(g3.loss(result.params, (ds.X, ds.y)))
    theta = np.concatenate([np.asarray(result.params["w"]), [float(result.params["b"])]])
    param_err = float(np.linalg.norm(theta - theta_ref) / np.linalg.norm(theta_ref))
    accuracy = float(np.mean((np.asarray(g3.predict(result.params, ds.X)) > 0.5) == (y64 > 0.5)))

    # mini-batch GD (32 examples a step) on the same problem, for the loss-curve picture
    mini = gd.fit(
        g3.loss,
        params,
        gd.optim.gd(lr),
        (ds.X, ds.y),
        steps=steps,
        batch_size=32,
        key=jax.random.key(args.seed + 1),
        trajectory=True,
    )
    # mini.losses are the losses of the 32-example batches (noisy, often below the
    # optimum of the whole data); plot the whole data's loss at every iterate instead
    mini_losses = jax.vmap(g3.loss, in_axes=(0, None))(mini.trajectory, (ds.X, ds.y))
    curves = {
        f"full-batch GD, α = 1/L = {lr:.3g}": result.losses,
        "mini-batch GD (32), same α (loss on all data)": mini_losses,
    }
    gd.plot.loss_curves(
        curves,
        run.png("g3_loss", "G3: loss above the L-BFGS optimum, log scale"),
        title="G3 on breast-cancer data (5 features): GD converges to the optimum",
        reference=loss_ref,
        reference_label="L-BFGS optimum",
    )

    checks = [
        close("G3 final loss", final, loss_ref, atol=1e-4),
        close("G3 reference: scikit-learn loss", loss_sklearn, loss_ref, atol=1e-6),
        close("G3 parameters ‖θ−θ*‖/‖θ*‖", param_err, 0.0, atol=1e-2),
        close("G1 J and gradients vs published", g1_err, 0.0, atol=1e-6),
        close("G2 gradients vs jax.grad", g2_err["grad"], 0.0, atol=1e-6),
        close("G2 dz vs a − y (float64)", g2_err["dz"], 0.0, atol=1e-6),
        close("G2 step vs gd.optim.gd(α) update", g2_err["step"], 0.0, atol=1e-6),
    ]
    g1_md = markdown_table(["quantity", "hand-written", "autodiff", "published"], g1_rows)
    g2_md = markdown_table(["quantity", "by hand (float64)", "autodiff / gd.optim.gd"], g2_rows)
    x, y = g2_model_batch()
    sections = [
        f"## G1: J = 3(a + b·c) at a = 5, b = 3, c = 2\n\n{g1_md}",
        f"## G2: one example x = {x}, y = {y}, one step with α = {args.alpha}\n\n{g2_md}",
        "## G3: breast-cancer data, full-batch gradient descent\n\n"
        f"Features: {', '.join(FEATURES)} (standardised), m = {len(y64)}. "
        f"Step α = 1/L = {lr:.4g}, {steps} steps from a random start (seed {args.seed}).\n\n"
        + markdown_table(
            ["", "loss J"],
            [
                ["gdjax GD, final", final],
                ["SciPy L-BFGS (float64), reference", loss_ref],
                ["scikit-learn LogisticRegression(C=∞), no penalty", loss_sklearn],
                ["mini-batch GD (32), final", float(g3.loss(mini.params, (ds.X, ds.y)))],
            ],
        )
        + f"\n\nTraining accuracy {accuracy:.4f}; relative parameter error {param_err:.2e}.",
    ]
    out = run.finish(
        checks=checks,
        metrics={
            "g1": {"rows": [[str(c) for c in r] for r in g1_rows], "max_error": g1_err},
            "g2": {"alpha": args.alpha, "errors": g2_err},
            "g3": {
                "features": list(FEATURES),
                "steps": steps,
                "learning_rate": lr,
                "final_loss": final,
                "reference_loss": loss_ref,
                "sklearn_loss": loss_sklearn,
                "param_rel_error": param_err,
                "accuracy": accuracy,
                "losses": np.asarray(result.losses),
            },
        },
        sections=sections,
    )
    print((run.dir / "summary.md").read_text())
    return out


def g2_model_batch() -> tuple[list[float], float]:
    """G2's example input, as plain numbers for the summary."""
    _, (x, y) = gd.models.get("G2").example()
    return [float(v) for v in x], float(y)


if __name__ == "__main__":
    sys.exit(0 if main()["ok"] else 1)

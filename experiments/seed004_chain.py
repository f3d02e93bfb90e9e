"""Seed 004: the chain rule through h(g(f(x, a), b), c) (C1) and through a fan-out (C2).

* C1 with f(x, a) = tanh(a·x), the question's g(y, b) = y² + b·y and h(g, c) = c·g: the
  hand-written backward pass (the question's three products ∂Loss/∂h·∂h/∂g·…, summed
  over the points) checked against autodiff and finite differences at many points; the
  same chain with a wrong ∂h/∂c is caught; then a, b, c fitted by gradient descent to
  noise-free data made with known values, which the fit must recover (up to the
  symmetry (a, b) → (−a, −b) of an odd f).
* C2, f(a, b) = a·b read by three consumers whose gradients −0.2, 0.4 and 0.6 arrive at f:
  they add to 0.8 (the answer's number), then ∂/∂a = b·0.8 and ∂/∂b = a·0.8.
* Both computation graphs, drawn by ``gd.trace`` with every node's value and adjoint.
"""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import numpy as np

import gdjax as gd

from _harness import Run, autodiff_adjoints, close, experiment_parser, holds, markdown_table

NAME = "seed004_chain"
TRUTH = {"a": 0.8, "b": -0.5, "c": 1.5}
C2_ARRIVING = (-0.2, 0.4, 0.6)  # the answer's incoming gradients; their sum is 0.8


def chain_data(key: jax.Array, n: int) -> tuple[jax.Array, jax.Array]:
    """x ~ U(−2, 2), y = ŷ(x) at the true a, b, c (noise-free: the minimum loss is 0)."""
    model = gd.models.get("C1")
    x = jax.random.uniform(key, (n,), jnp.float32, -2.0, 2.0)
    truth = {k: jnp.float32(v) for k, v in TRUTH.items()}
    return x, model.predict(truth, x)


def wrong_c1() -> gd.Model:
    """C1 with a typical slip: ∂h/∂c written as c instead of g (for h = c·g)."""
    return gd.models.chain.make_c1(
        dh_dc=lambda g, c: c * jnp.ones_like(g), title="C1 with ∂h/∂c = c (wrong; it is g)"
    )


def main(argv: list[str] | None = None) -> dict:
    p = experiment_parser(NAME, __doc__)
    p.add_argument("--points", type=int, default=64, help="C1's data points N")
    p.add_argument("--steps", type=int, default=None, help="GD steps (2000; fast 600)")
    p.add_argument("--lr", type=float, default=0.005, help="C1's GD step (the loss is a sum)")
    args = p.parse_args(argv)
    run = Run(args, NAME, __doc__)
    steps = args.steps or (600 if args.fast else 2000)
    k_data, k_init, k_check = jax.random.split(jax.random.key(args.seed), 3)
    c1, c2 = gd.models.get("C1"), gd.models.get("C2")

    check_points = 20 if args.fast else 100
    rep_c1 = gd.check_backprop(c1, points=check_points, key=k_check)
    rep_bad = gd.check_backprop(wrong_c1(), points=check_points, key=k_check)

    batch = chain_data(k_data, args.points)
    params0 = c1.init(k_init)
    fit = gd.fit(c1.loss, params0, gd.optim.gd(args.lr), batch, steps=steps)
    found = {k: float(v) for k, v in fit.params.items()}
    sign = 1.0 if found["a"] * TRUTH["a"] > 0 else -1.0  # f odd: (a, b) and (−a, −b) agree
    recovered = {"a": sign * found["a"], "b": sign * found["b"], "c": found["c"]}
    param_err = max(abs(recovered[k] - TRUTH[k]) for k in TRUTH)
    final = float(c1.loss(fit.params, batch))

    p2, b2 = c2.example()
    bp2 = c2.backprop(p2, b2)
    auto2 = jax.grad(c2.loss)(p2, b2)
    adj2 = autodiff_adjoints(c2, p2, b2)
    fan_in = float(bp2.adjoints["f"])
    c2_err = max(
        abs(float(bp2.grads["a"]) - float(auto2["a"])),
        abs(float(bp2.grads["b"]) - float(auto2["b"])),
        abs(fan_in - float(adj2["f"])),
    )

    gd.plot.loss_curves(
        {f"GD, α = {args.lr}": fit.losses},
        run.png("c1_loss", "C1 fitted by gradient descent to noise-free data"),
        title="C1: ŷ = c·(f² + b·f), f = tanh(a·x), fitted by GD",
        ylabel="Loss = Σₙ (ŷₙ − yₙ)²",
    )
    p1, b1 = c1.example()
    gd.trace(c1.loss, p1, b1).save(run.png("c1_graph", "C1's graph at its example point"))
    gd.trace(c2.loss, p2, b2).save(run.png("c2_graph", "C2's graph: the fan-out adds at f"))

    checks = [
        close("C2 gradient arriving at f (sum)", fan_in, sum(C2_ARRIVING), atol=1e-6),
        holds("C1 hand-written backprop passes", rep_c1.ok, check_points, "autodiff + FD"),
        holds("C1 with wrong ∂h/∂c is caught", not rep_bad.ok, len(rep_bad.failures), "FAIL"),
        close("C1 fit: max |param − truth|", param_err, 0.0, atol=1e-2),
        close("C1 fit: final loss", final, 0.0, atol=1e-4),
        close("C2 ∂/∂a = b·0.8", float(bp2.grads["a"]), float(p2["b"]) * 0.8, atol=1e-6),
        close("C2 ∂/∂b = a·0.8", float(bp2.grads["b"]), float(p2["a"]) * 0.8, atol=1e-6),
        close("C2 hand-written vs autodiff", c2_err, 0.0, atol=1e-6),
    ]
    arriving = [float(v) for v in bp2.adjoints["f_k"]]
    sections = [
        "## C1: check of the hand-written chain rule\n\n```text\n" + rep_c1.table() + "\n```\n\n"
        "With ∂h/∂c written as c instead of g, the checker says:\n\n```text\n"
        + rep_bad.table()
        + "\n```",
        "## C1 fitted by gradient descent\n\n"
        + markdown_table(
            ["", "a", "b", "c"],
            [
                ["truth", TRUTH["a"], TRUTH["b"], TRUTH["c"]],
                ["start", *(float(params0[k]) for k in "abc")],
                ["found", found["a"], found["b"], found["c"]],
            ],
        )
        + f"\n\nFinal loss {final:.3e} after {steps} steps of GD (α = {args.lr}), N = "
        f"{args.points}.",
        "## C2: fan-out\n\n"
        + markdown_table(
            ["quantity", "hand-written", "autodiff", "published"],
            [
                *[
                    [f"arriving from consumer {k + 1}", v, float(adj2["f_k"][k]), C2_ARRIVING[k]]
                    for k, v in enumerate(arriving)
                ],
                ["∂Loss/∂f (their sum)", fan_in, float(adj2["f"]), sum(C2_ARRIVING)],
                ["∂Loss/∂a = b·∂Loss/∂f", float(bp2.grads["a"]), float(auto2["a"]), "–"],
                ["∂Loss/∂b = a·∂Loss/∂f", float(bp2.grads["b"]), float(auto2["b"]), "–"],
            ],
        ),
    ]
    out = run.finish(
        checks=checks,
        metrics={
            "c1": {
                "truth": TRUTH,
                "found": found,
                "final_loss": final,
                "losses": np.asarray(fit.losses),
                "check": rep_c1.to_dict(),
                "wrong_check_failures": list(rep_bad.failures),
            },
            "c2": {"arriving": arriving, "sum": fan_in, "grads": bp2.grads},
        },
        sections=sections,
    )
    print((run.dir / "summary.md").read_text())
    return out


if __name__ == "__main__":
    sys.exit(0 if main()["ok"] else 1)

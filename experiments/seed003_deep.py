"""Seed 003: S1's derivative checked at many points, its typo caught; vanishing gradients in D1.

* S1, f(x) = √(x² + exp(x²)) + cos(x² + exp(x²)): ``gd.check_derivative`` compares the
  correct df/dx and the textbook's printed one (√(x + exp(x²)) in the first denominator)
  with autodiff and finite differences at 41 points on [−2, 2]. The correct formula passes
  everywhere; the printed one fails at every point except x = 0 and x = 1, where x² = x
  and the typo changes nothing.
* D1, fᵢ = σ(Aᵢ₋₁fᵢ₋₁ + bᵢ₋₁), on scikit-learn's 8×8 digits (64 pixels → 10 one-hot
  outputs, L = mean over examples of ‖y − f_K‖²): K = 1 … 6 layers of width 64 with
  sigmoid, tanh or ReLU hidden layers and a linear output layer, at the model's own
  initialisation (LeCun; He for ReLU). The per-layer gradient norms ‖(∂L/∂Aᵢ, ∂L/∂bᵢ)‖
  (``mlp.layer_grad_norms`` of the hand-written backprop, checked against ``jax.grad``)
  fall from the output layer to the input layer by about a factor σ' ≤ 1/4 per sigmoid
  layer, and stay of one size with tanh and ReLU. The three 6-layer networks are then
  trained by the same gradient descent: the sigmoid one barely moves. During that run
  ``gd.diagnostics.gradient_flow`` records every layer's gradient norm inside the compiled
  loop (``fit(..., monitor=...)``), checked at step 0 against the hand-written norms: the
  picture of the gradients flowing (or not) while the networks train.
"""

from __future__ import annotations

import functools
import sys

import jax
import jax.numpy as jnp
import numpy as np

import gdjax as gd
from gdjax.models import mlp, scalar

from _harness import Run, close, experiment_parser, holds, markdown_table

NAME = "seed003_deep"
ACTIVATIONS = ("sigmoid", "tanh", "relu")
WIDTH = 64  # = the 64 pixels, so every hidden weight matrix has one shape (fast to compile)
DEEPEST = 6
LEARNING_RATE = 0.05  # the largest of 0.01, 0.02, 0.05, 0.1 at which the ReLU net converges


# ----------------------------------------------------------------------------- S1


def s1_checks(xs: np.ndarray) -> dict[str, gd.Report]:
    """``gd.check_derivative`` of S1's correct and printed df/dx at ``xs``, and at x² = x."""
    f = scalar.function
    return {
        "correct": gd.check_derivative(f, scalar.derivative, xs),
        "printed": gd.check_derivative(f, scalar.printed_derivative, xs),
        "printed at x = 0, 1": gd.check_derivative(f, scalar.printed_derivative, [0.0, 1.0]),
    }


def s1_curves(x: np.ndarray) -> dict[str, np.ndarray]:
    """The correct and printed df/dx and autodiff's ``jax.grad(f)`` at ``x``, in float64."""

    @jax.jit
    def curves(x: jax.Array) -> dict[str, jax.Array]:
        return {
            "correct": scalar.derivative(x),
            "printed": scalar.printed_derivative(x),
            "autodiff": jax.vmap(jax.grad(scalar.function))(x),
        }

    with jax.enable_x64(True):
        return {k: np.asarray(v) for k, v in curves(jnp.asarray(x, jnp.float64)).items()}


# ----------------------------------------------------------------------------- D1


def network(activation: str, depth: int) -> gd.Model:
    """D1 with ``depth`` layers: 64 → 64 → … → 10, ``activation`` hidden, a linear output."""
    sizes = (64,) + (WIDTH,) * (depth - 1) + (10,)
    return mlp.make(sizes, activation=[activation] * (depth - 1) + ["identity"])


def grad_norms(nets: dict, params: dict, X: jax.Array, Y: jax.Array) -> dict:
    """Per-layer norms of ∂L/∂θ for L = (1/m)·Σ‖y − f_K‖²: hand-written and ``jax.grad``.

    Returns ``{name: (hand-written norms, autodiff norms or None)}``; autodiff is computed for
    the deepest networks only (they are the ones the key figure is read from).
    """
    m = X.shape[0]
    out = {}
    for name, net in nets.items():
        hand = mlp.layer_grad_norms(net.backprop(params[name], (X, Y)).grads) / m
        auto = None
        if name[1] == DEEPEST:
            auto = mlp.layer_grad_norms(jax.grad(net.loss)(params[name], (X, Y))) / m
        out[name] = (hand, auto)
    return out


def train_together(nets: dict, params: dict, data: tuple, steps: int) -> tuple[dict, dict, dict]:
    """Gradient descent on the three deepest networks at once, in one compiled ``gd.fit``.

    The loss is the sum of the networks' own losses; as no parameter is shared, each
    network's gradient is that of its own loss, so this is three independent runs of
    ``gd.optim.gd`` with the same step. ``gd.diagnostics.gradient_flow`` records every
    leaf's gradient norm inside the compiled loop at the recorded steps. Returns (final
    params, each network's loss curve, ``{activation: (steps, (T, K) layer norms)}``).
    """

    def total(p: dict, batch: tuple) -> jax.Array:
        return sum(nets[a].loss(p[a], batch) for a in nets) / batch[0].shape[0]

    every = max(1, steps // 50)
    fit = gd.fit(total, params, gd.optim.gd(LEARNING_RATE), data, steps=steps, trajectory=True,
                 record_every=every, chunk_size=steps,
                 monitor=gd.diagnostics.gradient_flow)  # fmt: skip

    @jax.jit
    def curves(traj: dict, X: jax.Array, Y: jax.Array) -> dict:
        def loss_of(net: gd.Model, q: list) -> jax.Array:
            return net.loss(q, (X, Y)) / X.shape[0]

        return {a: jax.vmap(functools.partial(loss_of, net))(traj[a]) for a, net in nets.items()}

    steps_axis = np.arange(0, steps, every)
    losses = {a: (steps_axis, np.asarray(c)) for a, c in curves(fit.trajectory, *data).items()}
    names = gd.diagnostics.leaf_names(params)  # "relu.0.W", "relu.0.b", …
    leaf = np.asarray(fit.monitor["grad_norm"], np.float64)
    flow = {}
    for a in nets:  # ‖(∂L/∂Aᵢ, ∂L/∂bᵢ)‖ from the two leaf norms of layer i
        sq = {n: leaf[:, j] ** 2 for j, n in enumerate(names) if n.startswith(f"{a}.")}
        layers = len(params[a])
        flow[a] = np.sqrt(np.stack([sq[f"{a}.{i}.W"] + sq[f"{a}.{i}.b"] for i in range(layers)], 1))
    return fit.params, losses, (steps_axis, flow)


def main(argv: list[str] | None = None) -> dict:
    p = experiment_parser(NAME, __doc__)
    p.add_argument("--steps", type=int, default=None, help="GD steps, 6-layer nets (300; fast 60)")
    args = p.parse_args(argv)
    run = Run(args, NAME, __doc__)
    steps = args.steps or (60 if args.fast else 300)
    depths = (2, DEEPEST) if args.fast else tuple(range(1, DEEPEST + 1))

    # ---- S1: the printed derivative's typo, caught
    xs = np.round(np.linspace(-2.0, 2.0, 41), 10)  # holds x = 0 and x = 1 exactly
    reports = s1_checks(xs)
    typo_fails = reports["printed"].rows[0].autodiff_fails
    expected_fails = int(np.sum(xs * xs != xs))
    x_dense = np.round(np.linspace(-2.0, 2.0, 801), 10)
    s1 = s1_curves(x_dense)

    # ---- D1: gradient norms at initialisation, K = 1 … 6, three activations
    ds = gd.data.digits()
    data = (ds.X, ds.y)
    keys = dict(zip(ACTIVATIONS, jax.random.split(jax.random.key(args.seed), len(ACTIVATIONS))))
    nets = {(a, k): network(a, k) for a in ACTIVATIONS for k in depths}
    params0 = {(a, k): net.init(jax.random.fold_in(keys[a], k)) for (a, k), net in nets.items()}
    norms_of = jax.jit(lambda params, X, Y: grad_norms(nets, params, X, Y))
    at_init = norms_of(params0, *data)
    init = {name: np.asarray(h) for name, (h, _) in at_init.items()}
    autodiff_err = max(
        float(jnp.max(jnp.abs(h - a) / a)) for h, a in at_init.values() if a is not None
    )

    # ---- the 6-layer networks trained; their norms afterwards (same compiled function)
    deep = {a: nets[a, DEEPEST] for a in ACTIVATIONS}
    trained, losses, (flow_t, flow) = train_together(
        deep, {a: params0[a, DEEPEST] for a in ACTIVATIONS}, data, steps)  # fmt: skip
    flow_err = max(float(np.max(np.abs(flow[a][0] - init[a, DEEPEST]) / init[a, DEEPEST]))
                   for a in ACTIVATIONS)  # fmt: skip
    after = norms_of(params0 | {(a, DEEPEST): trained[a] for a in ACTIVATIONS}, *data)
    after = {a: np.asarray(after[a, DEEPEST][0]) for a in ACTIVATIONS}
    final_loss = {a: float(losses[a][1][-1]) for a in ACTIVATIONS}
    y = np.asarray(ds.y, np.float64)
    constant_loss = float(np.sum(y.var(axis=0)))  # min over constant outputs c of mean ‖y − c‖²

    ratio = {a: float(init[a, DEEPEST][0] / init[a, DEEPEST][-1]) for a in ACTIVATIONS}
    per_layer = ratio["sigmoid"] ** (1 / (DEEPEST - 1))  # geometric mean shrink per layer
    bound = 0.25 ** (DEEPEST - 1)

    # ---- pictures
    x_lim = np.abs(x_dense) <= 1.5
    err_floor = 1e-17
    gd.plot.side_by_side(
        {
            "df/dx on [−1.5, 1.5]": {
                "correct df/dx": (
                    x_dense[x_lim],
                    s1["correct"][x_lim],
                ),
                "printed df/dx, with √(x + exp(x²))": (x_dense[x_lim], s1["printed"][x_lim]),
                "autodiff jax.grad(f)": (x_dense[x_lim][::20], s1["autodiff"][x_lim][::20]),
            },
            "|formula − autodiff| on [−2, 2] (float64)": {
                "correct df/dx": (
                    x_dense,
                    np.maximum(np.abs(s1["correct"] - s1["autodiff"]), err_floor),
                ),
                "printed df/dx, with √(x + exp(x²))": (
                    x_dense,
                    np.maximum(np.abs(s1["printed"] - s1["autodiff"]), err_floor),
                ),
            },
        },
        run.png("s1_derivative", "S1: the correct and the printed df/dx against autodiff"),
        title="S1: the printed derivative is wrong wherever x² ≠ x (exact only at x = 0 and 1)",
        xlabel="x",
        ylabel=["df/dx", f"absolute error (zero drawn at {err_floor:g})"],
        log=[False, True],
        styles={"printed df/dx, with √(x + exp(x²))": "--", "autodiff jax.grad(f)": "o"},
    )
    layers = np.arange(1, DEEPEST + 1)
    slope = "σ' ≤ 1/4: slope (1/4) per layer"
    gd.plot.side_by_side(
        {
            f"K = {DEEPEST}, at initialisation": {
                **{a: (layers, init[a, DEEPEST]) for a in ACTIVATIONS},
                slope: (layers, init["sigmoid", DEEPEST][-1] * 0.25 ** (DEEPEST - layers)),
            },
            f"K = {DEEPEST}, after {steps} steps of GD": {
                a: (layers, after[a]) for a in ACTIVATIONS
            },
            "layer 1 (input side) vs depth, at init": {
                a: (np.array(depths), [init[a, k][0] for k in depths]) for a in ACTIVATIONS
            },
        },
        run.png("d1_vanishing", "D1: per-layer gradient norms; sigmoid's vanish towards the input"),
        title="D1 on digits (width 64, linear output layer): gradient norm ‖(∂L/∂Aᵢ, ∂L/∂bᵢ)‖ "
        "per layer",
        xlabel=["layer i (1 = input side)", "layer i (1 = input side)", "number of layers K"],
        ylabel=["gradient norm (log scale)"] * 3,
        log=True,
        styles={a: "o-" for a in ACTIVATIONS} | {slope: ":"},
        sharey=True,
    )
    gd.plot.side_by_side(
        {f"{a} hidden layers": {f"layer {i + 1}": (flow_t, flow[a][:, i]) for i in range(DEEPEST)}
         for a in ACTIVATIONS},
        run.png("d1_gradient_flow", "D1, 6 layers: per-layer gradient norms recorded in the run"),
        title=f"D1, {DEEPEST} layers: ‖(∂L/∂Aᵢ, ∂L/∂bᵢ)‖ during GD, recorded inside the compiled "
        "loop (gd.diagnostics.gradient_flow)",
        xlabel="step",
        ylabel=["gradient norm (log scale)"] * 3,
        log=True,
        sharey=True,
    )  # fmt: skip
    gd.plot.loss_curves(
        {f"{a} hidden layers": losses[a] for a in ACTIVATIONS},
        run.png("d1_training", "D1, 6 layers: gradient descent with sigmoid, tanh, ReLU"),
        title=f"D1, {DEEPEST} layers on digits: gradient descent, α = {LEARNING_RATE}",
        ylabel="L = mean ‖y − f_K‖² (log scale)",
    )

    checks = [
        holds(
            f"{DEEPEST}-layer sigmoid: ‖∇ layer 1‖/‖∇ layer {DEEPEST}‖",
            ratio["sigmoid"] <= bound
            and ratio["sigmoid"] < 0.01 * min(ratio["tanh"], ratio["relu"]),
            ratio["sigmoid"],
            f"≤ (1/4)^{DEEPEST - 1} = {bound:.2g}; < 1% of tanh's {ratio['tanh']:.2g}, "
            f"relu's {ratio['relu']:.2g}",
        ),
        holds("S1 printed df/dx: typo caught where x² ≠ x", typo_fails == expected_fails,
              typo_fails, f"{expected_fails} of {len(xs)} points"),
        holds("S1 printed df/dx: agrees at x = 0, 1 (x² = x)",
              reports["printed at x = 0, 1"].ok, 2, "passes"),
        holds("S1 correct df/dx passes at every point", reports["correct"].ok, len(xs),
              "autodiff + FD"),
        close("D1 layer norms: backprop vs jax.grad (rel.)", autodiff_err, 0.0, atol=1e-4),
        close("in-run gradient flow at step 0 vs backprop's norms (rel.)", flow_err, 0.0,
              atol=1e-4),
        close(f"sigmoid net's loss after {steps} steps vs best constant output",
              final_loss["sigmoid"], constant_loss, rtol=0.01),
        holds(f"after {steps} steps tanh and ReLU are below the best constant output",
              max(final_loss["tanh"], final_loss["relu"]) < 0.8 * constant_loss,
              max(final_loss["tanh"], final_loss["relu"]), f"< 0.8 × {constant_loss:.4g}"),
    ]  # fmt: skip

    width = max(depths)
    norm_rows = [
        [f"{a}, K = {k}", *[f"{v:.3g}" for v in init[a, k]], *["–"] * (width - k),
         f"{init[a, k][0] / init[a, k][-1]:.3g}"]
        for a in ACTIVATIONS
        for k in depths
    ]  # fmt: skip
    sections = [
        "## S1: the correct and the printed derivative\n\n```text\n"
        + reports["printed"].table()
        + "\n```\n\nAt x = 0 and x = 1 only:\n\n```text\n"
        + reports["printed at x = 0, 1"].table()
        + "\n```\n\nThe correct formula:\n\n```text\n"
        + reports["correct"].table()
        + "\n```",
        "## D1: gradient norms per layer at initialisation\n\n"
        f"‖(∂L/∂Aᵢ, ∂L/∂bᵢ)‖ for L = (1/m)·Σ‖y − f_K‖² on all m = {ds.X.shape[0]} digits, "
        "layer 1 the input side, layer K the (linear) output layer, and the ratio layer 1 / "
        f"layer K. With sigmoid the norm shrinks by a factor {per_layer:.3g} per layer "
        f"(geometric mean, K = {DEEPEST}); each sigmoid layer contributes a factor "
        "σ'(z) ≤ 1/4.\n\n"
        + markdown_table(
            ["network", *[f"i = {i}" for i in range(1, width + 1)], "ratio 1 / K"], norm_rows
        ),
        f"## D1, {DEEPEST} layers, trained by gradient descent (α = {LEARNING_RATE}, full "
        f"batch, {steps} steps)\n\n"
        + markdown_table(
            ["hidden layers", "loss at init", "loss after", "‖∇ layer 1‖ after",
             f"‖∇ layer {DEEPEST}‖ after"],
            [[a, float(losses[a][1][0]), final_loss[a], after[a][0], after[a][-1]]
             for a in ACTIVATIONS],
        ),
    ]  # fmt: skip
    out = run.finish(
        checks=checks,
        metrics={
            "s1": {
                "points": xs,
                "printed_failures": typo_fails,
                "correct": reports["correct"].to_dict(),
                "printed": reports["printed"].to_dict(),
            },
            "d1": {
                "width": WIDTH,
                "depths": list(depths),
                "ratio_first_to_last": ratio,
                "sigmoid_shrink_per_layer": per_layer,
                "norms_at_init": {f"{a}_K{k}": init[a, k] for a, k in init},
                "norms_after_training": after,
                "steps": steps,
                "learning_rate": LEARNING_RATE,
                "final_loss": final_loss,
                "gradient_flow_steps": flow_t,
                "gradient_flow": flow,
            },
        },
        sections=sections,
    )
    print((run.dir / "summary.md").read_text())
    return out


if __name__ == "__main__":
    sys.exit(0 if main()["ok"] else 1)

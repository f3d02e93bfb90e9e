"""Seed 002: the 2-2-2-1 sigmoid network (N1) worked by hand, one step at α = 0.5, then trained.

* Forward: every node's z and a = σ(z), hidden layer 1, hidden layer 2, output, as the
  article lays them out, at the example that reproduces the article's one surviving number,
  the predicted output 0.85049311458 (its inputs and weights were lost with its images;
  the chosen values are in docs/models/N1.md).
* Backward: the article's chain-rule terms for w10, w9, w5 and w1, then all ten weight
  gradients (and the five bias gradients) three ways: N1's hand-written backprop
  (``network.gradients``), ``jax.grad`` in float64, and the article's formulas evaluated
  node by node in plain Python floats.
* Update: the article's section 5, the given weights, their gradients and the weights after
  one step wᵢ ← wᵢ − 0.5·∂L/∂wᵢ (``network.step``), checked against params − 0.5·jax.grad
  and against the first step of ``gd.fit`` with ``gd.optim.gd(0.5)``.
* Training: the same gradient descent until the output approaches the target t = 1, checked
  against the descent run node by node in float64.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

import gdjax as gd
from gdjax.models import network

from _harness import Run, close, experiment_parser, holds, markdown_table

NAME = "seed002_network"
ALPHA = 0.5  # the article's learning rate
ARTICLE_OUTPUT = 0.85049311458  # the article's predicted output, the one number it kept
WEIGHTS = tuple(network.WEIGHTS)  # w1 … w10
_NODES = (
    ("Hidden layer 1, node 1", "1_h1"),
    ("Hidden layer 1, node 2", "1_h2"),
    ("Hidden layer 2, node 1", "2_h1"),
    ("Hidden layer 2, node 2", "2_h2"),
    ("Output node", "3_out"),
)


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def article_pass(
    w: Mapping[str, float], x: tuple[float, float], t: float
) -> tuple[dict[str, float], dict[str, list[tuple[str, float]]], dict[str, float]]:
    """The article's forward and backward pass, node by node, in plain Python floats.

    Independent of gdjax's layer-matrix code: every line is one of the article's formulas,
    with its weight numbering (docs/models/N1.md). δ is ∂L/∂z of a node, σ' = a(1 − a).

    Returns:
      ``(forward, terms, grads)``: every node's ``z…``/``a…`` and the loss ``L``; the
      article's chain-rule terms for w10, w9, w5 and w1; ``∂L/∂`` every weight and bias.
    """
    x1, x2 = x
    f: dict[str, float] = {}
    f["z1_h1"] = w["w1"] * x1 + w["w2"] * x2 + w["b1_h1"]
    f["z1_h2"] = w["w3"] * x1 + w["w4"] * x2 + w["b1_h2"]
    f["a1_h1"], f["a1_h2"] = _sigmoid(f["z1_h1"]), _sigmoid(f["z1_h2"])
    f["z2_h1"] = w["w5"] * f["a1_h1"] + w["w6"] * f["a1_h2"] + w["b2_h1"]
    f["z2_h2"] = w["w7"] * f["a1_h1"] + w["w8"] * f["a1_h2"] + w["b2_h2"]
    f["a2_h1"], f["a2_h2"] = _sigmoid(f["z2_h1"]), _sigmoid(f["z2_h2"])
    f["z3_out"] = w["w9"] * f["a2_h1"] + w["w10"] * f["a2_h2"] + w["b3_out"]
    f["a3_out"] = _sigmoid(f["z3_out"])
    f["L"] = 0.5 * (t - f["a3_out"]) ** 2

    a1, a2, out = (f["a1_h1"], f["a1_h2"]), (f["a2_h1"], f["a2_h2"]), f["a3_out"]
    dL_da3 = -(t - out)  # ∂L/∂a³_out
    da3_dz3 = out * (1 - out)  # ∂a³_out/∂z³_out
    d3 = dL_da3 * da3_dz3  # δ³_out
    d2 = (d3 * w["w9"] * a2[0] * (1 - a2[0]), d3 * w["w10"] * a2[1] * (1 - a2[1]))
    dL_da1_h1 = (d2[0] * w["w5"], d2[1] * w["w7"])  # through H1 and through H2 of layer 2
    dL_da1_h2 = (d2[0] * w["w6"], d2[1] * w["w8"])
    d1 = (sum(dL_da1_h1) * a1[0] * (1 - a1[0]), sum(dL_da1_h2) * a1[1] * (1 - a1[1]))
    g = {
        "w1": d1[0] * x1, "w2": d1[0] * x2, "w3": d1[1] * x1, "w4": d1[1] * x2,
        "w5": d2[0] * a1[0], "w6": d2[0] * a1[1], "w7": d2[1] * a1[0], "w8": d2[1] * a1[1],
        "w9": d3 * a2[0], "w10": d3 * a2[1],
        "b1_h1": d1[0], "b1_h2": d1[1], "b2_h1": d2[0], "b2_h2": d2[1], "b3_out": d3,
    }  # fmt: skip
    terms = {  # the article's section 4, gradient by gradient: (term, value)
        "w10": [
            ("first term ∂L/∂a³_out = −(t − a³_out)", dL_da3),
            ("second term ∂a³_out/∂z³_out = a³_out(1 − a³_out)", da3_dz3),
            ("third term ∂z³_out/∂w10 = a²_h2", a2[1]),
            ("combined ∂L/∂w10", g["w10"]),
        ],
        "w9": [
            ("first two terms as for w10: δ³_out", d3),
            ("third term ∂z³_out/∂w9 = a²_h1", a2[0]),
            ("combined ∂L/∂w9", g["w9"]),
        ],
        "w5": [
            ("first term ∂L/∂a²_h1 = δ³_out·∂z³_out/∂a²_h1 = δ³_out·w9", d3 * w["w9"]),
            ("second term ∂a²_h1/∂z²_h1 = a²_h1(1 − a²_h1)", a2[0] * (1 - a2[0])),
            ("third term ∂z²_h1/∂w5 = a¹_h1", a1[0]),
            ("combined ∂L/∂w5", g["w5"]),
        ],
        "w1": [
            ("term 1, through H1 of layer 2: δ²_h1·w5", dL_da1_h1[0]),
            ("term 1, through H2 of layer 2: δ²_h2·w7", dL_da1_h1[1]),
            ("term 1 combined ∂L/∂a¹_h1", sum(dL_da1_h1)),
            ("term 2 ∂a¹_h1/∂z¹_h1 = a¹_h1(1 − a¹_h1)", a1[0] * (1 - a1[0])),
            ("term 3 ∂z¹_h1/∂w1 = x1", x1),
            ("combined ∂L/∂w1", g["w1"]),
        ],
    }
    return f, terms, g


def article_descent(
    w: Mapping[str, float], x: tuple[float, float], t: float, steps: int
) -> tuple[np.ndarray, np.ndarray]:
    """``steps`` steps of wᵢ ← wᵢ − α·∂L/∂wᵢ with :func:`article_pass`: (losses, outputs).

    ``losses[s]``, ``outputs[s]`` are L and a³_out before step s (as ``gd.fit`` records).
    """
    w = dict(w)
    losses, outputs = np.empty(steps), np.empty(steps)
    for s in range(steps):
        f, _, g = article_pass(w, x, t)
        losses[s], outputs[s] = f["L"], f["a3_out"]
        w = {k: v - ALPHA * g[k] for k, v in w.items()}
    return losses, outputs


def one_step_float64() -> dict[str, object]:
    """N1's forward output, gradients and one step at α = 0.5, all in float64.

    Besides ``network.step``'s hand-written gradients and update, ``jax.grad`` of the loss
    and the update ``params − α·jax.grad`` computed from it, as references.
    """
    model = gd.models.get("N1")

    @jax.jit
    def compute(params: list, batch: tuple) -> dict:
        st = network.step(params, batch, ALPHA)
        grads = jax.grad(model.loss)(params, batch)
        expected = jax.tree.map(lambda p, g: p - ALPHA * g, params, grads)
        return {
            "output": model.predict(params, batch[0])[0, 0],
            "loss": st.loss,
            "before": st.before,
            "gradients": st.gradients,
            "after": st.after,
            "autodiff": network.to_named(grads),
            "expected_after": network.to_named(expected),
        }

    with jax.enable_x64(True):
        params, batch = model.example(jnp.float64)
        out = jax.tree.map(float, compute(params, batch))
        out["x"] = tuple(float(v) for v in batch[0][0])
        out["t"] = float(batch[1][0, 0])
    return out


def _g(v: float) -> str:
    """11 significant digits, as the article prints its numbers."""
    return f"{v:.11g}"


def _max_diff(a: Mapping[str, float], b: Mapping[str, float]) -> float:
    return max(abs(a[k] - b[k]) for k in a)


def main(argv: list[str] | None = None) -> dict:
    p = experiment_parser(NAME, __doc__)
    p.add_argument("--steps", type=int, default=None, help="training steps (5000; fast 1000)")
    args = p.parse_args(argv)
    run = Run(args, NAME, __doc__)
    steps = args.steps or (1000 if args.fast else 5000)

    # ---- one step, float64: gdjax's hand-written backprop, jax.grad, the article by hand
    one = one_step_float64()
    fwd, terms, by_hand = article_pass(one["before"], one["x"], one["t"])
    hand, auto = one["gradients"], one["autodiff"]

    # ---- training in float32 with gd.fit; its first step must be network.step's
    model = gd.models.get("N1")
    params, batch = model.example()
    # steps + 1 recorded points: params_t for t = 0 … steps (gd.fit records before a step)
    fit = gd.fit(model.loss, params, gd.optim.gd(ALPHA), batch, steps=steps + 1,
                 trajectory=True, chunk_size=steps + 1)  # fmt: skip
    outputs = np.asarray(jax.jit(jax.vmap(model.predict, (0, None)))(fit.trajectory, batch[0]))
    outputs = outputs[:, 0, 0].astype(np.float64)
    losses = np.asarray(fit.losses, np.float64)
    first_step = network.to_named(jax.tree.map(lambda leaf: leaf[1], fit.trajectory))
    step_err = _max_diff({k: float(v) for k, v in first_step.items()}, one["after"])
    ref_losses, ref_outputs = article_descent(one["before"], one["x"], one["t"], steps + 1)
    final_output = float(outputs[steps])

    gd.plot.side_by_side(
        {
            "loss L = ½(t − a³_out)²": {
                "gd.fit, gd.optim.gd(0.5), float32": losses,
                "article's formulas by hand, float64": ref_losses,
            },
            "output a³_out": {
                "gd.fit, gd.optim.gd(0.5), float32": outputs,
                "article's formulas by hand, float64": ref_outputs,
                f"target t = {one['t']:g}": (np.array([0, steps]), np.full(2, one["t"])),
            },
        },
        run.png("n1_training", "N1 trained by gradient descent (α = 0.5) towards t = 1"),
        title=f"N1, the 2-2-2-1 sigmoid network: {steps} steps of gradient descent, α = 0.5",
        xlabel="step",
        ylabel=["loss (log scale)", "network output"],
        log=[True, False],
        styles={"article's formulas by hand, float64": "--", f"target t = {one['t']:g}": ":"},
    )

    checks = [
        close("N1 output a³_out (float64)", one["output"], ARTICLE_OUTPUT, atol=1e-10),
        close("output: article's formulas by hand vs gdjax", fwd["a3_out"], one["output"],
              atol=1e-12),
        close("gradients: hand-written vs jax.grad", _max_diff(hand, auto), 0.0, atol=1e-12),
        close("gradients: article by hand vs jax.grad", _max_diff(by_hand, auto), 0.0,
              atol=1e-12),
        close("step: network.step vs params − 0.5·jax.grad",
              _max_diff(one["after"], one["expected_after"]), 0.0, atol=1e-12),
        close("gd.fit's first step vs network.step (float32)", step_err, 0.0, atol=1e-6),
        close(f"output after {steps} steps vs float64 by hand", final_output,
              ref_outputs[steps], atol=1e-4),
        holds("output rises towards t at every step", np.all(np.diff(outputs) > 0),
              final_output, "monotone"),
    ]  # fmt: skip

    forward = "\n\n".join(
        f"**{title}**: z = {fwd['z' + node]:.11g}, a = σ(z) = {fwd['a' + node]:.11g}"
        for title, node in _NODES
    )
    grad_names = (*WEIGHTS[::-1], *network.BIASES)
    sections = [
        f"## Forward propagation\n\nInputs x1, x2 = {one['x'][0]:g}, {one['x'][1]:g}, target "
        f"t = {one['t']:g}; the weights are those of the update table below.\n\n{forward}\n\n"
        f"The final predicted output of the network is {one['output']:.11f} (the article: "
        f"{ARTICLE_OUTPUT}). Loss L = ½(t − a³_out)² = {one['loss']:.11g}.",
        "## Backward propagation: the article's terms\n\n"
        + markdown_table(
            ["gradient", "term", "value"],
            [[f"∂L/∂{k}", term, _g(v)] for k, rows in terms.items() for term, v in rows],
        )
        + "\n\nThe gradients of w6, w7, w8 and of w2, w3, w4 follow the same pattern.",
        "## All gradients\n\n"
        + markdown_table(
            ["", "hand-written (network.gradients)", "jax.grad", "article by hand (floats)"],
            [[k, *map(_g, (hand[k], auto[k], by_hand[k]))] for k in grad_names],
        ),
        f"## Update weights (α = {ALPHA})\n\n"
        + markdown_table(
            ["", "given weight", "gradient", "weight after update"],
            [
                [k, *map(_g, (one["before"][k], hand[k], one["after"][k]))]
                for k in (*WEIGHTS, *network.BIASES)
            ],
        ),
        f"## Training\n\n{steps} steps of gradient descent (α = {ALPHA}, float32, `gd.fit`): "
        f"the output goes from {outputs[0]:.6f} to {final_output:.6f} (target {one['t']:g}), "
        f"the loss from {losses[0]:.4e} to {losses[steps]:.4e}. The "
        f"article's formulas by hand in float64 end at output {ref_outputs[steps]:.6f}.",
    ]
    out = run.finish(
        checks=checks,
        metrics={
            "alpha": ALPHA,
            "article_output": ARTICLE_OUTPUT,
            "output": one["output"],
            "forward": fwd,
            "terms": terms,
            "before": one["before"],
            "gradients": hand,
            "autodiff_gradients": auto,
            "after": one["after"],
            "training": {
                "steps": steps,
                "losses": losses,
                "outputs": outputs,
                "final_output": final_output,
                "reference_final_output": ref_outputs[steps],
            },
        },
        sections=sections,
    )
    print((run.dir / "summary.md").read_text())
    return out


if __name__ == "__main__":
    sys.exit(0 if main()["ok"] else 1)

"""The graph explorer page (no browser): the numbers it carries, its groups, the overlay.

References: G1's hand calculation (seed 000: u = 6, v = 11, J = 33; dJ/db = 6, dJ/dc = 9),
seed 004's fan-out (−0.2 + 0.4 + 0.6 = 0.8), N1's predicted output 0.85049311458
(seed 002), and jax.grad. The page's script is exercised in tests/test_browser.py.
"""

from __future__ import annotations

import json
import re
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gdjax as gd
from gdjax import cli
from gdjax.graph import html
from gdjax.models import mlp


def payload(page: str) -> dict:
    m = re.search(r'<script id="gd-data" type="application/json">(.*?)</script>', page, re.S)
    assert m is not None
    return json.loads(m.group(1))


def nodes_of(page: str) -> dict[str, dict]:
    return {n["name"]: n for n in payload(page)["nodes"]}


def g1_graph():
    m = gd.models.get("G1")
    return gd.trace(m.loss, *m.example())


def test_g1_page_has_every_value_adjoint_and_partial(tmp_path):
    path = tmp_path / "g1.html"
    page = g1_graph().to_html(path)
    assert path.read_text(encoding="utf-8") == page
    nodes = nodes_of(page)
    assert {k: (n["value"], n["adjoint"]) for k, n in nodes.items()} == {
        "a": ("5", "3"),
        "b": ("3", "6"),
        "c": ("2", "9"),
        "u": ("6", "3"),
        "v": ("11", "3"),
        "J": ("33", "1"),
    }
    labels = {(e["src"], e["dst"]): e["label"] for e in payload(page)["edges"]}
    # ∂u/∂b = c = 2, and dJ/du·2 = 6 flows back; ∂J/∂v = 3, and 1·3 = 3 flows back.
    assert labels[("b", "u")] == "∂ 2  ← 6" and labels[("v", "J")] == "∂ 3  ← 3"
    assert nodes["J"]["kind"] == "output" and nodes["u"]["kind"] == "named"
    # self-contained: no script, style or image is fetched from anywhere
    assert not re.search(r'(src|href)\s*=\s*["\']?(https?:)?//', page)
    assert "<script src" not in page and "@import" not in page


def test_fan_out_sum_and_full_arrays():
    def c2(a, b, v):  # seed 004: f = a·b read by three consumers
        f = gd.name(a * b, "f")
        return jnp.sum(v * jnp.broadcast_to(f, v.shape))

    page = gd.trace(c2, 2.0, 3.0, jnp.array([-0.2, 0.4, 0.6])).to_html()
    f = nodes_of(page)["f"]
    assert f["fan"] == "-0.2 + 0.4 + 0.6" and f["fanout"] and f["adjoint"] == "0.8"
    v = nodes_of(page)["v"]["detail"]["value"]
    assert v["shape"] == [3] and v["values"] == ["-0.2", "0.4", "0.6"]
    assert v["min"] == "-0.2" and v["max"] == "0.6"
    np.testing.assert_allclose(float(v["norm"]), np.linalg.norm([-0.2, 0.4, 0.6]), rtol=1e-6)


def test_large_arrays_are_cut_at_max_values():
    page = gd.trace(lambda x: jnp.sum(jnp.sin(x)), jnp.linspace(0, 1, 5000)).to_html()
    x = nodes_of(page)["x"]["detail"]["value"]
    assert x["size"] == 5000 and x["truncated"] and len(x["values"]) == html.MAX_VALUES
    adj = nodes_of(page)["x"]["detail"]["adjoint"]  # d/dx Σ sin x = cos x
    np.testing.assert_allclose(float(adj["values"][-1]), np.cos(float(x["values"][-1])), rtol=1e-5)


def test_a_name_cannot_end_the_data_block():
    page = gd.trace(lambda x: gd.name(x * 2, "</script><b>x") + 1.0, 1.0).to_html()
    assert page.count("</script>") == 2  # the data block and the explorer's script
    assert "</script><b>x" in nodes_of(page)


def test_layers_of_n1_and_a_six_layer_d1():
    n1 = gd.models.get("N1")
    page = gd.trace(n1.loss, *n1.example()).to_html()
    data = payload(page)
    labels = [g["label"] for g in data["groups"]]
    assert labels == ["layer 1: z1, a1", "layer 2: z2, a2", "layer 3: z3, a3"]
    assert all(g["collapsed"] for g in data["groups"])  # 27 nodes: opens collapsed
    nodes = nodes_of(page)
    assert nodes["params[0]['W']"]["groups"] == ["layer:1:"]  # a layer holds its weights
    assert nodes["batch[0]"]["groups"] == [] and nodes["J"]["groups"] == []
    # the collapsed layer 3 shows a3: the article's predicted output
    assert data["groups"][2]["exit"] == "a3"
    np.testing.assert_allclose(float(nodes["a3"]["value"].strip("[]")), 0.85049311458, rtol=1e-6)

    d6 = mlp.make((3, 4, 4, 4, 4, 4, 2))
    data = payload(gd.trace(d6.loss, *d6.example()).to_html())
    assert [g["size"] for g in data["groups"]] == [7] * 6
    assert [g["exit"] for g in data["groups"]] == [f"a{k}" for k in range(1, 7)]


def test_jitted_functions_and_loops_are_groups():
    @jax.jit
    def layer(w, x):
        return jnp.tanh(w * x + 1.0)

    def f(w, x, xs):
        h = layer(w, layer(w, x))

        def body(c, xi):
            return c * xi, c + xi

        carry, ys = jax.lax.scan(body, h, xs)
        return carry + jnp.sum(ys)

    graph = gd.trace(f, 0.5, 2.0, jnp.arange(1.0, 4.0))
    data = payload(graph.to_html())
    by_label = {g["label"]: g for g in data["groups"]}
    jits = [g for g in data["groups"] if g["label"] == "layer (jit)"]
    assert len(jits) == 2 and all(g["size"] == 3 for g in jits)  # mul, add, tanh
    (loop,) = [g for g in data["groups"] if g["id"].startswith("loop:")]
    assert loop["size"] == 2 and loop["label"].startswith("scan ")
    assert set(by_label) == {"layer (jit)", loop["label"]}


def test_repr_html_is_the_page_in_an_iframe():
    graph = g1_graph()
    frame = graph._repr_html_()
    assert frame.startswith("<div><iframe srcdoc=") and 'sandbox="allow-scripts"' in frame
    assert "&quot;u&quot;" in frame and "<script>" not in frame  # all escaped into srcdoc


# -- hand-written vs autodiff -------------------------------------------------------------


def _loss(p, batch):
    u = gd.name(p["b"] * p["c"], "u")
    v = gd.name(p["a"] + u, "v")
    return 3 * v


def _slipped(p, batch):  # dJ/dv written as 2 instead of 3: everything before it inherits it
    J = 3 * (p["a"] + p["b"] * p["c"])
    dv = 2 * jnp.ones_like(p["a"])
    return J, {"a": dv, "b": p["c"] * dv, "c": p["b"] * dv}, {"u": dv, "v": dv}


PARAMS = {"a": jnp.float32(5), "b": jnp.float32(3), "c": jnp.float32(2)}


def _row(name, ok, kind="adjoint", **extra):
    return types.SimpleNamespace(name=name, ok=ok, kind=kind, **extra)


def test_planted_slip_marks_the_first_wrong_step_and_what_inherits_it():
    report = gd.check_backprop((_loss, _slipped), PARAMS, None, points=4)
    graph = gd.trace(_loss, PARAMS, None)
    page = html.check_html(graph, report, hand=_slipped(PARAMS, None))
    nodes = nodes_of(page)
    assert nodes["v"]["check"]["status"] == "first" and nodes["v"]["check"]["hand"] == "2"
    assert nodes["v"]["adjoint"] == "3"  # autodiff's, beside the hand-written 2
    for name in ("u", "a", "b", "c"):
        assert nodes[name]["check"]["status"] in ("inherited", "wrong"), name
    assert nodes["b"]["check"]["hand"] == "4" and nodes["b"]["adjoint"] == "6"
    assert nodes["J"]["check"]["status"] == "ok" and nodes["J"]["check"]["hand"] == "33"
    assert "First wrong step: dL/dv" in page


def test_overlay_reads_reports_before_and_after_the_diagnosis_fields():
    graph = gd.trace(_loss, PARAMS, None)
    rows = [_row("L", True, "loss"), _row("dL/da", False, "grad"), _row("dL/du", False)]
    rows.append(_row("dL/dv", False))
    old = types.SimpleNamespace(subject="old", rows=rows)  # no first_wrong, no inherits
    nodes = nodes_of(html.check_html(graph, old))
    # backprop runs from the output back: v is the first wrong step, u and a feed it
    assert nodes["v"]["check"]["status"] == "first"
    assert nodes["u"]["check"] == {
        **nodes["u"]["check"],
        "status": "inherited",
        "inherits": "dL/dv",
    }
    assert nodes["a"]["check"]["status"] == "inherited"

    rows = [_row("dL/du", False, cause="a factor c is missing", inherits=None)]
    rows.append(_row("dL/da", False, kind="grad", inherits="dL/du"))
    new = types.SimpleNamespace(subject="new", rows=rows, first_wrong="dL/du")
    nodes = nodes_of(html.check_html(graph, new))
    assert nodes["u"]["check"]["status"] == "first"
    assert nodes["u"]["check"]["cause"] == "a factor c is missing"
    assert nodes["a"]["check"]["badge"] == "inherits dL/du"
    assert nodes["v"]["check"] is None  # no row names v


def _two_layers(params, x):
    h = gd.name(jnp.tanh(params[0]["W"] @ x + params[0]["b"]), "h1")
    return jnp.sum((params[1]["W"] @ h) ** 2)


def test_gradient_rows_of_a_layer_list_find_their_inputs():
    params = [
        {"W": jnp.array([[0.5, -1.0], [2.0, 0.1]]), "b": jnp.array([0.1, -0.2])},
        {"W": jnp.array([[1.0, 3.0]])},
    ]
    x = jnp.array([1.0, 2.0])
    graph = gd.trace(_two_layers, params, x)
    rows = [_row("dL/dlayers[1].W", False, "grad"), _row("dL/dlayers[0].b", True, "grad")]
    rows.append(_row("dL/dw7", False, "grad"))  # names no node: listed in the summary
    report = types.SimpleNamespace(subject="2 layers", rows=rows, first_wrong="dL/dlayers[1].W")
    grads = jax.tree.map(lambda g: 2 * g, graph.grads(0))  # a "hand-written" off by 2
    page = html.check_html(graph, report, hand=(None, grads, {}))
    nodes = nodes_of(page)
    assert nodes["params[1]['W']"]["check"]["status"] == "first"
    assert nodes["b"]["check"]["status"] == "ok"  # params[0]['b'], short name b
    hand = nodes["params[1]['W']"]["detail"]["hand"]["values"]
    auto = jax.grad(_two_layers)(params, x)[1]["W"].ravel()
    np.testing.assert_allclose(np.array(hand, float), 2 * auto, rtol=1e-6)
    assert "rows not drawn as nodes: dL/dw7 (wrong)" in page


# -- command line ---------------------------------------------------------------------------


def test_cli_trace_and_verify_write_the_page(tmp_path, capsys):
    out = tmp_path / "g1.html"
    assert cli.main(["trace", "G1", "--html", str(out)]) == 0
    assert nodes_of(out.read_text(encoding="utf-8"))["u"]["value"] == "6"
    check = tmp_path / "g1-check.html"
    assert cli.main(["verify", "G1", "--points", "3", "--html", str(check)]) == 0
    nodes = nodes_of(check.read_text(encoding="utf-8"))
    assert nodes["u"]["check"]["status"] == "ok" and nodes["u"]["check"]["hand"] == "3"
    assert f"wrote {check}" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["verify", "--html", "{d}/x.html"], "exactly one MODEL"),
        (["verify", "G1", "G2", "--html", "{d}/x.html"], "exactly one MODEL"),
        (["verify", "G1", "--html", "{d}/none/x.html"], "does not exist"),
        (["verify", "G1", "--html", "{d}"], "is a folder"),
        (["verify", "G1", "--html", "{d}/x.svg"], "must end in .html"),
        (["trace", "G1", "--html", "{d}/none/x.html"], "does not exist"),
    ],
)
def test_cli_html_paths_are_checked_first(argv, message, tmp_path, capsys):
    argv = [a.format(d=tmp_path) for a in argv]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1

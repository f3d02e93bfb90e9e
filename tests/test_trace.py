"""The graph explainer: values and adjoints per node, names, views, CLI, errors.

References: the hand calculation of G1 (seed 000: u = 6, v = 11, J = 33 at a = 5, b = 3,
c = 2; dJ/dv = dJ/du = dJ/da = 3, dJ/db = 6, dJ/dc = 9), seed 004's fan-out
(−0.2 + 0.4 + 0.6 = 0.8), S1's closed-form derivative (seed 003), and jax.grad.
"""

from __future__ import annotations

import functools
import importlib
import json
import re
import shutil
import subprocess

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gdjax as gd
from gdjax import cli, naming
from gdjax.graph import Graph, name_p, render, trace
from tests.helpers import assert_tree_allclose

G1 = gd.models.get("G1")


def s1(x):
    """S1 of seed 003, with its intermediate names a…e."""
    a = gd.name(x**2, "a")
    b = gd.name(jnp.exp(a), "b")
    c = gd.name(a + b, "c")
    d = gd.name(jnp.sqrt(c), "d")
    e = gd.name(jnp.cos(c), "e")
    return d + e


def s1_derivative(x):
    """The corrected closed form of seed 003 (seeds/README.md)."""
    c = x**2 + np.exp(x**2)
    return 2 * x * (1 + np.exp(x**2)) * (1 / (2 * np.sqrt(c)) - np.sin(c))


def fan_out(a, b):
    """Seed 004: f = a·b feeds three places that send back −0.2, 0.4 and 0.6."""
    f = gd.name(a * b, "f")
    return -0.2 * f + 0.4 * f + 0.6 * f


def logistic_loss(w, b, X, y):
    """Binary cross-entropy of logistic regression, from the logits z = Xw + b."""
    z = gd.name(X @ w + b, "z")
    return jnp.mean(jnp.logaddexp(0.0, z) - y * z)


def _logistic_point(m=6, n=3):
    kx, kw, ky = jax.random.split(jax.random.key(0), 3)
    X = jax.random.normal(kx, (m, n))
    w = jax.random.normal(kw, (n,))
    y = (jax.random.uniform(ky, (m,)) < 0.5).astype(X.dtype)
    return w, jnp.asarray(0.3, X.dtype), X, y


# -- values and adjoints ----------------------------------------------------------------


def test_g1_values_and_adjoints_match_the_hand_calculation():
    params, batch = G1.example()
    graph = trace(G1.loss, params, batch)
    values = {n.name: float(n.value) for n in graph.nodes}
    adjoints = {n.name: float(n.adjoint) for n in graph.nodes}
    assert values == {"a": 5, "b": 3, "c": 2, "u": 6, "v": 11, "J": 33}
    assert adjoints == {"a": 3, "b": 6, "c": 9, "u": 3, "v": 3, "J": 1}
    assert graph["u"].op == "mul" and graph["u"].inputs == ("b", "c")
    assert graph["v"].expr == "a + u" and graph["J"].expr == "3 * v"
    assert graph.inputs == ("a", "b", "c") and graph.outputs == ("J",)
    assert graph.output is graph["J"]


def test_g1_adjoints_match_the_model_backprop():
    params = G1.init(jax.random.key(3))
    graph = trace(G1.loss, params)
    bp = G1.backprop(params)
    assert_tree_allclose(graph.grads(0), bp.grads, rtol=1e-6)
    for label in G1.adjoint_names:
        np.testing.assert_allclose(graph[label].adjoint, bp.adjoints[label], rtol=1e-6)


def test_scalar_edges_carry_the_local_partials():
    graph = trace(G1.loss, *G1.example())
    partial = {(e.src, e.dst): float(e.partial) for e in graph.edges}
    # ∂u/∂b = c = 2, ∂u/∂c = b = 3, ∂v/∂a = ∂v/∂u = 1, ∂J/∂v = 3.
    assert partial == {("b", "u"): 2, ("c", "u"): 3, ("a", "v"): 1, ("u", "v"): 1, ("v", "J"): 3}
    # What flows back along each edge is dJ/d(dst) · ∂dst/∂src.
    for e in graph.edges:
        expected = graph[e.dst].adjoint * e.partial
        np.testing.assert_allclose(e.cotangent, expected, rtol=1e-6)


def test_fan_out_sums_what_arrives():
    graph = trace(fan_out, 2.0, 3.0)
    uses = graph.consumers("f")
    np.testing.assert_allclose([float(e.cotangent) for e in uses], [-0.2, 0.4, 0.6], rtol=1e-6)
    np.testing.assert_allclose(graph["f"].adjoint, 0.8, rtol=1e-6)
    # ∂/∂a = b·0.8, ∂/∂b = a·0.8.
    np.testing.assert_allclose(graph["a"].adjoint, 3 * 0.8, rtol=1e-6)
    np.testing.assert_allclose(graph["b"].adjoint, 2 * 0.8, rtol=1e-6)
    assert "-0.2 + 0.4 + 0.6" in graph.table()


def test_every_adjoint_is_the_sum_over_outgoing_edges():
    graph = trace(logistic_loss, *_logistic_point())
    for node in graph.nodes:
        uses = graph.consumers(node.name)
        if node.adjoint is None or not uses or node.name in graph.outputs:
            continue
        total = sum(e.cotangent for e in uses)
        np.testing.assert_allclose(node.adjoint, total, rtol=1e-6, atol=1e-7)


def test_s1_values_and_derivative_against_the_closed_form(x64):
    x = 0.7
    graph = trace(s1, jnp.float64(x), output_name="f")
    np.testing.assert_allclose(graph["a"].value, x**2)
    np.testing.assert_allclose(graph["b"].value, np.exp(x**2))
    np.testing.assert_allclose(
        graph["f"].value, np.sqrt(x**2 + np.exp(x**2)) + np.cos(x**2 + np.exp(x**2))
    )
    np.testing.assert_allclose(graph["x"].adjoint, s1_derivative(x), rtol=1e-12)
    # c fans out to d and e: dJ/dc = 1/(2√c) − sin c.
    c = x**2 + np.exp(x**2)
    np.testing.assert_allclose(graph["c"].adjoint, 1 / (2 * np.sqrt(c)) - np.sin(c), rtol=1e-12)
    assert {e.dst for e in graph.consumers("c")} == {"d", "e"}


def _with_kwargs(p, *, scale):
    return scale * jnp.sum(jnp.tanh(p["layers"][0]["w"]) * p["layers"][1]["w"]) + p["bias"] ** 3


@pytest.mark.parametrize(
    "f, point",
    [
        (G1.loss, lambda: (({"a": 0.3, "b": -1.2, "c": 2.5},), {})),
        (s1, lambda: ((0.9,), {})),
        (fan_out, lambda: ((1.5, -0.5), {})),
        (logistic_loss, lambda: (_logistic_point(), {})),
        (
            _with_kwargs,
            lambda: (
                ({"layers": [{"w": jnp.arange(3.0)}, {"w": jnp.ones(3)}], "bias": 0.5},),
                {"scale": 2.0},
            ),
        ),
    ],
    ids=["G1", "S1", "fan-out", "logistic", "pytree+kwargs"],
)
def test_input_adjoints_equal_jax_grad(f, point, x64):
    args, kwargs = point()  # made here, so in float64
    graph = trace(f, *args, **kwargs)
    argnums = tuple(range(len(args)))
    expected = jax.grad(functools.partial(f, **kwargs), argnums=argnums)(*args)
    actual = tuple(graph.grads(i) for i in argnums)
    assert_tree_allclose(actual, expected, rtol=1e-12, atol=1e-15)
    if kwargs:  # keyword arguments are inputs too
        dscale = jax.grad(lambda s: f(*args, scale=s))(kwargs["scale"])
        np.testing.assert_allclose(graph.grads("scale"), dscale, rtol=1e-12)


def test_cotangent_gives_a_vector_jacobian_product():
    x = jnp.array([0.5, -1.0, 2.0])
    ct = jnp.array([1.0, 2.0, -3.0])
    graph = trace(lambda x: jnp.sin(x) * x, x, cotangent=ct)
    _, vjp = jax.vjp(lambda x: jnp.sin(x) * x, x)
    np.testing.assert_allclose(graph.grads(0), vjp(ct)[0], rtol=1e-6)
    np.testing.assert_allclose(graph.output.adjoint, ct)


# -- names ------------------------------------------------------------------------------


def test_names_from_arguments_and_pytree_paths():
    def f(params, x, *rest):
        return jnp.sum(params["w"] * x) + params["nested"]["w"] + rest[0]

    graph = trace(f, {"w": jnp.ones(2), "nested": {"w": 1.0}}, jnp.ones(2), 4.0)
    # "w" is ambiguous, so both keep their full paths; x and rest take argument names.
    assert graph.inputs == ("params['nested']['w']", "params['w']", "x", "rest[0]")
    assert graph["x"].op == "input" and graph["params['w']"].expr == "params['w']"
    # An unambiguous leaf gets its short key, and its full path still finds it.
    g1 = trace(G1.loss, *G1.example())
    assert g1["params['b']"] is g1["b"]


def test_gd_name_labels_duplicates_and_names_on_inputs():
    def f(x):
        y = gd.name(x, "y")  # a name on an input: an identity node
        z = gd.name(jnp.sin(y), "z")
        z2 = gd.name(jnp.cos(z), "z")  # the same label again
        return z2 + gd.name(2.0, "two")

    graph = trace(f, 0.5)
    assert [n.name for n in graph.nodes] == ["x", "y", "z", "z#2", "two", "J"]
    assert graph["y"].op == "name" and graph["y"].inputs == ("x",)
    assert graph["z#2"].expr == "cos(z)" and graph["two"].op == "const"
    with pytest.raises(KeyError, match=r"gd\.name"):
        graph["nope"]
    assert "nope" not in graph and "z" in graph


def test_unnamed_intermediates_get_short_operation_names():
    graph = trace(lambda x: jnp.exp(x) * jnp.exp(2 * x), 0.1)
    assert [n.name for n in graph.nodes] == ["x", "exp1", "mul1", "exp2", "J"]


def test_names_survive_vmap_grad_and_nested_jit():
    def inner(t):
        return gd.name(jnp.sin(t) * 2.0, "s")

    def f(x):
        y = jax.vmap(inner)(x)
        dy = jax.grad(lambda t: jnp.sum(inner(t)))(x)
        return jnp.sum(y * dy) + jnp.sum(jax.jit(inner)(x))

    x = jnp.array([0.1, 0.2])
    graph = trace(f, x)
    assert [n.name for n in graph.nodes if n.name.startswith("s")][:3] == ["sin1", "s", "sin2"]
    assert "s#3" in graph  # the copy inside jit is inlined, name kept
    np.testing.assert_allclose(graph.grads(), jax.grad(f)(x), rtol=1e-6)
    assert naming.active_hooks() == ()  # the hook is gone after tracing


def test_trace_agrees_with_the_probe_adjoints():
    params = {"a": 0.3, "b": -1.2, "c": 2.5}

    def probed(probes):
        with naming.probing(probes):
            return G1.loss(params)

    probe_adj = jax.grad(probed)({"u": 0.0, "v": 0.0})
    graph = trace(G1.loss, params)
    for label in ("u", "v"):
        np.testing.assert_allclose(graph[label].adjoint, probe_adj[label], rtol=1e-6)
    with naming.probing({"u": jnp.float32(0.0)}):  # probes and the trace together
        np.testing.assert_allclose(trace(G1.loss, params)["a"].adjoint, 3.0)


def test_name_primitive_under_jit_grad_vmap():
    def h(x):
        return jnp.sum(name_p.bind(x, label="q") ** 3)

    x = jnp.array([1.0, -2.0])
    np.testing.assert_allclose(jax.jit(jax.grad(h))(x), 3 * x**2)
    np.testing.assert_allclose(jax.vmap(jax.grad(h))(x), 3 * x**2)
    np.testing.assert_allclose(jax.jit(jax.vmap(jax.hessian(h)))(x[:, None])[:, 0, 0], 6 * x)
    (t,) = jax.linear_transpose(lambda v: name_p.bind(v, label="q"), x)(x)
    np.testing.assert_allclose(t, x)

    # The mark lowers to nothing: XLA's optimized program is the unmarked one, op for op
    # (shape and opcode; names and location metadata, which hold the checkout's path,
    # are left out), and the primitive's name appears nowhere in it.
    def compiled(fn):
        hlo = jax.jit(fn).lower(x).compile().as_text()
        return hlo, re.findall(r"= (\S+) ([\w-]+)\(", hlo)

    hlo, marked_ops = compiled(lambda v: name_p.bind(v, label="q") * 2)
    _, plain_ops = compiled(lambda v: v * 2)
    assert "multiply" in {op for _, op in plain_ops} and marked_ops == plain_ops
    assert name_p.name not in hlo


# -- nested computations ----------------------------------------------------------------


def test_nested_jit_is_inlined_and_sigmoid_is_one_node():
    @jax.jit
    def layer(w, x):
        return jax.nn.sigmoid(gd.name(jnp.dot(w, x), "z"))

    def f(w, x):
        return jnp.sum(jax.jit(layer)(w, x) ** 2)

    w, x = jnp.array([[0.5, -1.0], [2.0, 0.1]]), jnp.array([1.0, 3.0])
    graph = trace(f, w, x)
    assert "jit" not in {n.op for n in graph.nodes}
    a = next(n for n in graph.nodes if n.op == "logistic")
    assert a.expr == "sigmoid(z)" and a.inputs == ("z",)
    assert_tree_allclose((graph.grads(0), graph.grads(1)), jax.grad(f, (0, 1))(w, x), rtol=1e-6)


def test_custom_derivative_rules_are_one_node_and_used():
    @jax.custom_vjp
    def clipped(x):
        return x

    clipped.defvjp(lambda x: (x, None), lambda _, g: (0.5 * g,))  # a rule autodiff can't see

    def f(x):
        return clipped(jnp.sin(x)) + jax.nn.relu(x)

    graph = trace(f, 0.0)  # relu at 0: its custom JVP says 0
    np.testing.assert_allclose(graph["x"].adjoint, jax.grad(f)(0.0))
    np.testing.assert_allclose(graph["x"].adjoint, 0.5)
    ops = {n.op: n for n in graph.nodes}
    assert ops["custom_vjp_call"].expr == "clipped(sin1)"
    assert ops["custom_jvp_call"].expr == "relu(x)"
    assert "own derivative rule" in ops["custom_vjp_call"].note


def test_scan_is_one_node_with_a_note():
    def f(x, xs):
        def body(c, xi):
            return gd.name(c * xi + 1.0, "h"), c

        return jax.lax.scan(body, x, xs)[0]

    x, xs = jnp.float32(0.5), jnp.array([1.0, 2.0, 3.0])
    graph = trace(f, x, xs)
    (loop,) = [n for n in graph.nodes if n.op == "scan" and n.name in graph.outputs]
    assert "scan over 3 steps" in loop.note and "names inside: h" in loop.note
    assert "h" not in graph
    np.testing.assert_allclose(float(loop.value), ((0.5 * 1 + 1) * 2 + 1) * 3 + 1)
    assert_tree_allclose((graph.grads(0), graph.grads(1)), jax.grad(f, (0, 1))(x, xs), rtol=1e-6)
    assert "scan over 3 steps" in graph.table()


def test_while_loop_shows_forward_values_and_says_why_there_is_no_adjoint():
    def f(x, y, z):
        u = gd.name(x * 2.0, "u")
        w = jax.lax.while_loop(lambda c: c[1] < 3, lambda c: (c[0] * u, c[1] + 1), (y, 0))[0]
        return w + z**2

    graph = trace(f, 1.5, 2.0, 0.5)
    loop = next(n for n in graph.nodes if n.op == "while" and n.name != "while2")
    np.testing.assert_allclose(float(loop.value), 2.0 * 3.0**3)  # y·u³ with u = 2x = 3
    np.testing.assert_allclose(float(graph.output.value), 54.25)
    assert "forward only" in loop.note and "lax.scan" in loop.note
    assert float(loop.adjoint) == 1.0  # the loop's own adjoint is known: J = w + z²
    for name in ("x", "y", "u"):  # upstream of the loop: no adjoint, and the reason
        assert graph[name].adjoint is None and "while loop" in graph[name].note
    np.testing.assert_allclose(graph["z"].adjoint, 1.0)  # z does not pass through the loop
    assert graph.grads(2) is not None and graph.grads(0) is None
    assert all(e.cotangent is None for e in graph.edges if e.dst == loop.name)
    table = graph.table()
    assert "forward only" in table and re.search(
        r"^u\s+mul\s+x \* 2\s+f32\[\]\s+3\s+-", table, re.M
    )


def test_a_while_loop_inside_a_scan_body_is_no_jax_error():
    def f(x, xs):
        def body(c, xi):
            c2 = jax.lax.while_loop(lambda t: t[1] < 2, lambda t: (t[0] * xi, t[1] + 1), (c, 0))
            return c2[0], c2[0]

        return jax.lax.scan(body, x, xs)[0] + x

    graph = trace(f, 1.5, jnp.array([1.0, 2.0]))
    np.testing.assert_allclose(float(graph.output.value), 1.5 * 1 * 1 * 2 * 2 + 1.5)
    loop = next(n for n in graph.nodes if n.op == "scan")
    assert "its body holds a while loop" in loop.note
    assert graph["x"].adjoint is None and graph["xs"].adjoint is None


# -- views --------------------------------------------------------------------------------


def test_table_shows_values_adjoints_and_array_summaries():
    table = trace(logistic_loss, *_logistic_point(m=6, n=3)).table()
    lines = table.splitlines()
    assert lines[0].split() == [
        "name",
        "op",
        "expression",
        "shape",
        "value",
        "adjoint",
        "adjoint",
        "is",
        "the",
        "sum",
    ]
    row = next(line for line in lines if line.startswith("X "))
    assert "f32[6,3]" in row and "mean" in row
    assert re.search(r"^z\s+add\s+\S+ \+ b\s+f32\[6\]", table, re.M)


def _parse_dot(text):
    nodes = dict(re.findall(r'^\s*(n\d+) \[label="([^"]*?)(?:\\n|")', text, re.M))
    edges = re.findall(r"^\s*(n\d+) -> (n\d+)", text, re.M)
    return nodes, edges


def test_to_dot_has_every_node_and_the_fan_out_edges():
    graph = trace(fan_out, 2.0, 3.0)
    dot = graph.to_dot()
    assert dot.startswith("digraph") and dot.rstrip().endswith("}")
    nodes, edges = _parse_dot(dot)
    heads = {label.split(" = ")[0] for label in nodes.values()}
    assert heads == {n.name for n in graph.nodes}
    assert len(edges) == len(graph.edges)
    f_id = next(i for i, label in nodes.items() if label.startswith("f = "))
    assert sum(src == f_id for src, _ in edges) == 3
    assert "adjoint 0.8" in dot and "= -0.2 + 0.4 + 0.6" in dot


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz `dot` is not installed")
def test_dot_binary_parses_the_output_and_save_writes_svg(tmp_path):
    graph = trace(s1, 0.5)
    done = subprocess.run(["dot", "-Tplain"], input=graph.to_dot().encode(), capture_output=True)
    assert done.returncode == 0, done.stderr
    assert sum(line.startswith(b"node ") for line in done.stdout.splitlines()) == len(graph)
    path = graph.save(tmp_path / "s1.svg")
    assert "<svg" in path.read_text()


def test_save_falls_back_to_matplotlib_without_dot(tmp_path, monkeypatch):
    monkeypatch.setattr(render, "_dot_binary", lambda: None)
    graph = trace(s1, 0.5)
    svg = graph.save(tmp_path / "s1.svg")
    assert "<svg" in svg.read_text()
    png = graph.save(tmp_path / "s1.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(RuntimeError, match="apt-get install graphviz"):
        graph.save(tmp_path / "s1b.svg", engine="graphviz")
    assert graph.save(tmp_path / "g.dot").read_text() == graph.to_dot()
    with pytest.raises(ValueError, match=r"\.svg, \.png"):
        graph.save(tmp_path / "g.jpg")


def test_save_explains_when_nothing_can_draw(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(render, "_dot_binary", lambda: None)
    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    with pytest.raises(RuntimeError, match="neither is installed"):
        trace(fan_out, 1.0, 1.0).save(tmp_path / "g.svg")


# -- command line -------------------------------------------------------------------------


def test_cli_trace_prints_the_g1_table(capsys):
    assert cli.main(["trace", "G1"]) == 0
    out = capsys.readouterr().out
    # name, op, expression, shape, value, adjoint
    assert re.search(r"^u\s+mul\s+b \* c\s+f32\[\]\s+6\s+3$", out, re.M)
    assert re.search(r"^v\s+add\s+a \+ u\s+f32\[\]\s+11\s+3$", out, re.M)
    assert re.search(r"^J\s+mul\s+3 \* v\s+f32\[\]\s+33\s+1$", out, re.M)
    for leaf, adjoint in zip("abc", (3, 6, 9)):
        assert re.search(
            rf"^{leaf}\s+input\s+params\['{leaf}'\]\s+f32\[\]\s+\d+\s+{adjoint}$", out, re.M
        )


def test_cli_trace_at_json_svg_and_dot(tmp_path, capsys):
    svg = tmp_path / "g1.svg"
    assert cli.main(["trace", "g1", "--at", '{"a": 1, "c": 4}', "--svg", str(svg)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^J\s+mul\s+3 \* v\s+f32\[\]\s+39\s+1$", out, re.M)  # 3(1 + 3·4)
    assert "<svg" in svg.read_text()
    assert cli.main(["trace", "G1", "--dot"]) == 0
    assert capsys.readouterr().out.startswith("digraph")


@pytest.mark.parametrize(
    "at, message",
    [
        ('{"d": 1}', "unknown key"),
        ('{"a": [1, 2]}', "shape"),
        ("{a: 1}", "not valid JSON"),
        ("[1]", "JSON object"),
        ('{"a": "x"}', "--at['a'] must hold numbers"),
        ('{"a": "1.5"}', "--at['a'] must hold numbers"),  # NumPy would read it as 1.5
        ('{"b": true}', "--at['b'] must hold numbers, got true (bool)"),
        ('{"c": null}', "--at['c'] must hold numbers"),
        ('{"a": NaN}', "--at['a'] must hold finite numbers, got nan"),
        ('{"b": -Infinity}', "--at['b'] must hold finite numbers, got -inf"),
        ('{"c": 1e39}', "--at['c'] holds a number too large for float32"),
        ('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested too deeply"),
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ],
)
def test_cli_trace_rejects_bad_at(at, message, capsys):
    assert cli.main(["trace", "G1", "--at", at]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def test_cli_trace_at_takes_lists_for_a_layer_list(capsys):
    at = '[{"W": [[0.1, 0.2], [0.3, 0.4]]}, {"b": [1, 2]}, {"b": [true]}]'
    assert cli.main(["trace", "N1", "--at", at]) == 2
    assert "--at[2]['b'] must hold numbers, got true" in capsys.readouterr().err


@pytest.mark.parametrize(
    "flag, where, message",
    [
        ("--svg", "/nonexistent-gdjax/g.svg", "the folder /nonexistent-gdjax does not exist"),
        ("--svg", "{d}", "is a folder; give a file name"),
        ("--png", "{d}/g.svg", "must end in .png"),
        ("--html", "{d}", "is a folder"),
    ],
)
def test_cli_trace_output_paths_are_checked_before_tracing(
    flag, where, message, tmp_path, capsys, monkeypatch
):
    import gdjax.graph

    def no_trace(*args, **kwargs):
        raise AssertionError("traced before the path was checked")

    monkeypatch.setattr(gdjax.graph, "trace", no_trace)
    assert cli.main(["trace", "G1", flag, where.format(d=tmp_path)]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_cli_trace_without_any_drawing_engine_says_so_first(tmp_path, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(render, "_dot_binary", lambda: None)
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "matplotlib" else real(n, *a)
    )
    assert cli.main(["trace", "G1", "--svg", str(tmp_path / "g.svg")]) == 2
    assert "apt-get install graphviz" in capsys.readouterr().err
    assert not (tmp_path / "g.svg").exists()


# -- errors -------------------------------------------------------------------------------


def test_non_scalar_output_without_cotangent_is_a_clear_error():
    with pytest.raises(ValueError, match="cotangent="):
        trace(lambda x: x * 2, jnp.ones(3))
    with pytest.raises(ValueError, match="shape"):
        trace(lambda x: x * 2, jnp.ones(3), cotangent=jnp.ones(2))
    with pytest.raises(ValueError, match="structure"):
        trace(lambda x: x * 2, jnp.ones(3), cotangent=(jnp.ones(3),))


def test_untraceable_function_is_a_clear_error():
    def branchy(x):
        return x if x > 0 else -x

    with pytest.raises(TypeError, match=r"cannot be traced by JAX.*jnp\.where"):
        trace(branchy, 1.0)
    with pytest.raises(TypeError, match="cannot be traced"):
        trace(lambda x: float(x) * 2.0, 1.0)
    assert naming.active_hooks() == ()
    with pytest.raises(TypeError, match="callable"):
        trace("not a function", 1.0)
    with pytest.raises(TypeError, match="`mode` is a str"):
        trace(lambda x, mode: x, 1.0, "fast")


def test_gd_trace_is_the_function_whatever_was_imported():
    # The library lives in the package gdjax.graph, so no submodule shadows the function.
    import gdjax.graph as g

    assert importlib.import_module("gdjax.graph") is g and gd.graph is g
    assert gd.trace is trace and g.trace is trace and gd.Graph is Graph
    graph = gd.trace(G1.loss, *G1.example())
    assert isinstance(graph, Graph) and float(graph["J"].value) == 33.0


def test_arrivals_expand_a_broadcast_fan_out():
    def c2(a, b, v):  # C2 of seed 004: f = a·b read by three consumers as one vector
        f = gd.name(a * b, "f")
        return jnp.sum(v * jnp.broadcast_to(f, v.shape))

    graph = trace(c2, 2.0, 3.0, jnp.array([-0.2, 0.4, 0.6]))
    np.testing.assert_allclose([float(c) for c in graph.arrivals("f")], [-0.2, 0.4, 0.6], rtol=1e-6)
    np.testing.assert_allclose(graph["f"].adjoint, 0.8, rtol=1e-6)
    assert "-0.2 + 0.4 + 0.6" in graph.table()


_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**30), 10**30)
    | st.text(max_size=4)
    | st.floats(allow_nan=True, allow_infinity=True),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=8,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(value=st.dictionaries(st.sampled_from(["a", "b", "c", "z"]), _JSON, max_size=3) | _JSON)
def test_cli_trace_at_fuzzed_is_a_result_or_one_line_refusal(value, capsys):
    """Any JSON for --at: exit 0 (a graph) or 2 (one line naming the problem), never a
    traceback."""
    code = cli.main(["trace", "g1", "--at", json.dumps(value)])
    out, err = capsys.readouterr()
    assert code in (0, 2), (value, code, err)
    assert "Traceback" not in out + err
    if code == 2:
        assert err.count("\n") == 1 and "--at" in err, err

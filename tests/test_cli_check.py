"""`gdjax verify`, `gdjax check-derivative` and the formula parser behind it."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gdjax as gd
from gdjax._expr import ExprError, parse
from gdjax.cli import main
from gdjax.models import REGISTRY, graph

S1_F = "sqrt(x**2 + exp(x**2)) + cos(x**2 + exp(x**2))"
# seed 003, line 10, as printed: √(x + exp(x²)) in the first denominator
S1_PRINTED = (
    "(2*x + 2*x*exp(x**2)) / (2*sqrt(x + exp(x**2))) - sin(x**2 + exp(x**2))*(2*x + exp(x**2)*2*x)"
)
S1_RIGHT = "2*x*(1 + exp(x**2)) * (1/(2*sqrt(x**2 + exp(x**2))) - sin(x**2 + exp(x**2)))"


# --------------------------------------------------------------------------- gdjax verify


def test_verify_g1_exits_0(capsys):
    assert main(["verify", "G1", "--points", "10"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("G1: computation graph")
    assert "verify: 1 model(s), all ok" in out


def test_verify_json(capsys):
    assert main(["verify", "--json", "g1", "--points", "5", "--seed", "1"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is True and data["failed"] == []
    (g1,) = data["models"]
    assert g1["subject"] == "G1" and g1["points"] == 5 and all(r["ok"] for r in g1["rows"])


def test_verify_exits_1_and_names_the_failing_leaf(capsys, monkeypatch):
    def wrong(params, batch=None):
        bp = graph.backprop(params, batch)
        return bp._replace(grads={**bp.grads, "c": 2 * bp.grads["c"]})

    bad = dataclasses.replace(graph.G1, id="XG1", backprop=wrong)
    monkeypatch.setitem(REGISTRY, "XG1", bad)
    assert main(["verify", "G1", "XG1", "--points", "4"]) == 1
    out = capsys.readouterr().out
    assert "FAIL dJ/dc: hand-written differs from autodiff by" in out
    assert "verify: 2 model(s), FAILED: XG1" in out


def test_verify_unknown_model_exits_2(capsys):
    assert main(["verify", "G9"]) == 2
    assert "Unknown model id 'G9'" in capsys.readouterr().err


def test_verify_bad_points_exits_2(capsys):
    assert main(["verify", "G1", "--points", "0"]) == 2
    assert "`points` must be an int (how many points to check) >= 1" in capsys.readouterr().err


# --------------------------------------------------------------------------- check-derivative


def test_check_derivative_flags_s1_as_printed(capsys):
    assert main(["check-derivative", "--f", S1_F, "--df", S1_PRINTED]) == 1
    out = capsys.readouterr().out
    assert "FAIL df/dx: hand-written differs from autodiff" in out
    assert "at 19/21 points" in out and "wrong at x = -2, -1.8, -1.6" in out


def test_check_derivative_passes_the_corrected_formula(capsys):
    assert main(["check-derivative", "--f", S1_F, "--df", S1_RIGHT]) == 0
    assert "ok: every quantity agrees at all 21 points" in capsys.readouterr().out


def test_check_derivative_points_var_and_json(capsys):
    argv = ["check-derivative", "--f", "t**3", "--df", "3*t**2", "--var", "t", "--json"]
    assert main([*argv, "--points=-1, 0.5,2"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is True and data["xs"] == [-1.0, 0.5, 2.0] and data["subject"] == "df/dt"


def test_check_derivative_trace_shows_the_graph_at_the_first_failing_point(capsys):
    assert main(["check-derivative", "--f", "sin(x)**2", "--df", "sin(x)", "--trace"]) == 1
    out = capsys.readouterr().out
    # the first grid point, x = -2, is already wrong: sin(-2) ≠ 2 sin(-2) cos(-2)
    assert "The graph of f at x = -2" in out or "gdjax.trace is not available" in out


@pytest.mark.parametrize(
    ("f", "df", "extra", "message"),
    [
        ("x^2", "2*x", [], "write `x**2`"),
        ("x**2", "__import__('os')", [], "`__import__` is not an allowed function"),
        ("y**2", "2*y", [], "unknown name `y`"),
        ("x**2", "2*x", ["--points", "1,two"], "--points must be comma-separated numbers"),
        ("x**2", "2*x", ["--var", "exp"], "taken by a function"),
        ("log(x)", "1/x", ["--points=-1,-2"], "not finite at any of the points"),
    ],
)
def test_check_derivative_unusable_input_exits_2(capsys, f, df, extra, message):
    assert main(["check-derivative", "--f", f, "--df", df, *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gdjax check-derivative: error:") and message in err


def test_console_script_runs_in_a_subprocess():
    script = Path(sys.executable).with_name("gdjax")
    if not script.exists():
        pytest.skip("the gdjax console script is not installed next to this Python")
    argv = [str(script), "check-derivative", "--f", S1_F, "--df", S1_PRINTED, "--points", "2"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 1, done.stderr
    assert "FAIL df/dx" in done.stdout and "wrong at x = 2" in done.stdout


# --------------------------------------------------------------------------- the parser


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("__import__('os')", "`__import__` is not an allowed function"),
        ("x.real", "`x.real`: attribute access is not allowed"),
        ("open('f')", "`open` is not an allowed function"),
        ("lambda: x", "a lambda expression is not allowed"),
        ("(lambda y: y)(x)", "only the listed functions may be called"),
        ("x^2", "`^` is not a power here"),
        ("x[0]", "indexing is not allowed"),
        ("'x'", "is not a number"),
        ("sin(x, 2)", "sin takes 1 argument, got 2"),
        ("sin(x=1)", "pass the arguments of sin by position"),
        ("x % 2", "the operator `%` is not allowed"),
        ("x if x else 1", "if ... else"),
        ("2 +", "not a valid formula"),
        ("", "the formula is empty"),
        ("exp", "`exp` is a function: call it"),
        ("x" + "+x" * 2000, "characters long"),
    ],
)
def test_parser_refuses_with_a_clear_message(text, message):
    with pytest.raises(ExprError, match=None) as info:
        parse(text)
    assert message in str(info.value)
    assert isinstance(info.value, ValueError)


def test_parser_message_lists_what_is_allowed():
    with pytest.raises(ExprError) as info:
        parse("x.real")
    assert "allowed: numbers, the variable `x`, the constants pi and e" in str(info.value)
    assert "sigmoid" in str(info.value) and "softplus" in str(info.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2*x + 1", lambda x: 2 * x + 1),
        ("-x**2", lambda x: -(x**2)),  # ** binds tighter than unary minus, as in Python
        ("x**-1 + x**0.5", lambda x: 1 / x + math.sqrt(x)),
        ("sigmoid(x) * softplus(x)", lambda x: (1 / (1 + math.exp(-x))) * math.log1p(math.exp(x))),
        (
            "sqrt(exp(log1p(x))) - cos(pi*x) + e",
            lambda x: math.sqrt(1 + x) - math.cos(math.pi * x) + math.e,
        ),
        (
            "atan(x) + arcsin(x/4) + tanh(x) + relu(x - 1) + abs(-x)",
            lambda x: math.atan(x) + math.asin(x / 4) + math.tanh(x) + max(x - 1, 0) + x,
        ),
        ("max(x, 2) + min(x, 2) + pow(x, 3)", lambda x: max(x, 2) + min(x, 2) + x**3),
        ("3", lambda x: 3.0),
    ],
)
def test_parser_compiles_to_the_same_values_as_python_math(text, expected):
    fn = parse(text)
    with jax.enable_x64(True):
        for x in (0.3, 1.7, 2.5):
            assert float(fn(jnp.float64(x))) == pytest.approx(expected(x), rel=1e-14)


def test_parsed_formula_is_a_jax_function():
    fn = parse("x**3 - 2*sin(x)")
    with jax.enable_x64(True):
        xs = jnp.linspace(-2.0, 2.0, 5)
        grads = jax.vmap(jax.grad(fn))(xs)
        np.testing.assert_allclose(grads, 3 * xs**2 - 2 * jnp.cos(xs), rtol=1e-14)
        assert jax.jit(fn)(xs).dtype == jnp.float64
    assert parse("3")(jnp.ones(4, jnp.float32)).dtype == jnp.float32
    assert parse("3")(jnp.ones(4, jnp.float32)).shape == (4,)
    # an integer power is exact and differentiable at negative x
    assert float(jax.grad(parse("x**3"))(-2.0)) == 12.0
    assert gd.check_derivative("x**3", "3*x**2", [-2.0, 0.0, 2.0]).ok


def test_parser_argument_types():
    with pytest.raises(TypeError, match="must be a string"):
        parse(3)  # type: ignore[arg-type]
    with pytest.raises(ExprError, match="plain name"):
        parse("x", var="x y")
    with pytest.raises(ExprError, match="taken by a function or constant"):
        parse("e", var="e")


def test_check_derivative_html_marks_the_wrong_component(tmp_path, capsys):
    """MML example 5.15's f = x² + 2xy + y³: ∂f/∂y = 2x + 3y², written with 2y² instead."""
    from gdjax.cli import main

    page = tmp_path / "f.html"
    argv = ["check-derivative", "--var", "x,y", "--f", "x**2 + 2*x*y + y**3"]
    argv += ["--df", "2*x + 2*y, 2*x + 2*y**2", "--points", "1,2", "--html", str(page)]
    assert main(argv) == 1
    text = page.read_text()
    assert "FIRST WRONG" in text and "∂f/∂y" in text
    assert main([*argv[:-1], str(tmp_path / "f.svg")]) == 2  # refused before any work
    assert "must end in .html" in capsys.readouterr().err

"""`gdjax check-derivative` with several variables, bad variable names, long and deep
formulas, and hypothesis fuzzing of the formula parser (nothing is ever executed)."""

from __future__ import annotations

import builtins
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gdjax._expr import MAX_DEPTH, ExprError, parse, parse_components
from gdjax.check import check_derivative
from gdjax.cli import main

F = "x**2 + 2*x*y + y**3"  # MML example 5.15: ∇f = (2x + 2y, 2x + 3y²)


def test_gradient_of_two_variables_names_the_wrong_component(capsys):
    argv = ["check-derivative", "--var", "x,y", "--f", F]
    assert main([*argv, "--df", "2*x + 2*y, 2*x + 3*y**2"]) == 0
    assert "ok: every quantity agrees at all 21 points" in capsys.readouterr().out
    argv = ["check-derivative", "--var", "x,y", "--f", F, "--df", "2*x + 2*y, 2*x + 2*y**2",
            "--points", "1,2; 0.5,-1", "--json"]
    assert main(argv) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["failures"] == ["∂f/∂y"] and data["first_wrong"] == "∂f/∂y"
    assert data["xs"] == [[1.0, 2.0], [0.5, -1.0]]
    worst = data["rows"][1]["worst"]  # at (1, 2): 2 + 8 = 10 against 2 + 12 = 14
    assert (worst["hand_written"], worst["autodiff"]) == (10.0, 14.0)


def test_gradient_api_and_a_sign_error():
    report = check_derivative(F, "2*x + 2*y, -(2*x + 3*y**2)", [[1.0, 2.0]], var="x,y")
    assert report.failures == ("∂f/∂y",) and report.rows[1].cause == "sign"
    with pytest.raises(ValueError, match="one component per variable"):
        check_derivative(F, "2*x + 2*y", var="x,y")
    with pytest.raises(ValueError, match="2 values each"):
        check_derivative(F, "2*x + 2*y, 2*x", [1.0, 2.0], var="x,y")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--var", "lambda"], "is a Python keyword"),
        (["--var", "True"], "is a Python keyword"),
        (["--var", "\U0001d465"], "a variable is a plain ASCII name"),  # math-italic x
        (["--var", "x,x"], "twice"),
        (["--var", "x,y", "--points", "1,2,3"], "each point needs 2 values"),
    ],
)
def test_bad_variables_are_refused_with_the_rule(capsys, extra, message):
    assert main(["check-derivative", "--f", "x", "--df", "1", *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize("flag", ["--f", "--df"])
def test_an_empty_formula_names_its_flag(capsys, flag):
    argv = {"--f": "x**2", "--df": "2*x", flag: "  "}
    assert main(["check-derivative", "--f", argv["--f"], "--df", argv["--df"]]) == 2
    assert f"{flag} is empty" in capsys.readouterr().err


def test_a_flat_sum_of_950_terms_is_handled_and_deep_nesting_refused(capsys):
    flat = "+".join(["x"] * 950)
    assert main(["check-derivative", "--f", flat, "--df", "950", "--points", "0.5,2"]) == 0
    deep = "sin(" * (MAX_DEPTH + 5) + "x" + ")" * (MAX_DEPTH + 5)
    assert main(["check-derivative", "--f", deep, "--df", "1"]) == 2
    assert f"at most {MAX_DEPTH}" in capsys.readouterr().err
    long_product = "*".join(["x"] * 600)
    assert float(parse(long_product)(1.0)) == 1.0


@pytest.mark.parametrize("argv", [["--f", "sin(" * 300 + "x" + ")" * 300, "--df", "1"]])
def test_the_real_command_exits_2_without_a_traceback(argv):
    script = Path(sys.executable).with_name("gdjax")
    if not script.exists():
        pytest.skip("the gdjax console script is not installed next to this Python")
    done = subprocess.run([str(script), "check-derivative", *argv], capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 2 and "Traceback" not in done.stdout + done.stderr
    assert done.stderr.startswith("gdjax check-derivative: error:")


def test_parser_still_refuses_code():
    for text in ("__import__('os').system('true')", "x.__class__", "lambda: 1",
                 "[x for x in (1,)]", "(x := 2)", "globals()"):
        with pytest.raises(ExprError):
            parse(text)
    with pytest.raises(ExprError, match="one component per variable"):
        parse_components("x, y, x", ("x", "y"))


_TOKENS = st.sampled_from([
    "x", "y", "1", "2.5", "1e3", "pi", "e", "+", "-", "*", "/", "**", "^", "(", ")", ",",
    "sin(", "exp(", "max(", "log(", "__import__(", "'os'", ".", "lambda", ":", "[", "]",
    "for", "in", "=", " ", "open(", "x.real", "\U0001d465", "%", "@", "if", "else",
])


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(_TOKENS, max_size=25).map("".join))
def test_fuzz_parser_refuses_or_compiles_and_never_executes(monkeypatch, text):
    def forbidden(*args, **kwargs):
        raise AssertionError(f"the parser executed something for {text!r}")

    with monkeypatch.context() as m:
        for name in ("eval", "exec", "open"):  # ast.parse itself needs compile()
            m.setattr(builtins, name, forbidden)
        m.setattr(os, "system", forbidden)
        try:
            fn = parse(text, ("x", "y"))
        except ExprError:
            return
    assert callable(fn)


@settings(max_examples=8, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(_TOKENS, min_size=1, max_size=12).map("".join))
def test_fuzz_cli_exit_codes(capsys, text):
    code = main(["check-derivative", "--f", text, "--df", text, "--points", "0.5"])
    out = capsys.readouterr()
    assert code in (0, 1, 2) and "Traceback" not in out.out + out.err

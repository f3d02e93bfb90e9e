"""A safe parser for typed formulas such as ``"2*x*cos(x**2)"``.

``parse(text, var="x")`` reads ``text`` with Python's :mod:`ast` module and compiles it to a
JAX function of one variable. Nothing is ever ``eval``'d: the syntax tree is walked against
an explicit whitelist, and every node that is not on it is refused with a message that
names the offending piece and says what is allowed.

Allowed:

* numbers (``2``, ``0.5``, ``1e-3``), the one variable (``x`` unless told otherwise), the
  constants ``pi`` and ``e``;
* unary ``-``/``+``, binary ``+ - * / **`` and parentheses;
* calls of the functions in :data:`FUNCTIONS` with positional arguments only.

``^`` is refused with a hint to write ``**`` (in Python ``^`` is exclusive-or, and a
formula that silently meant something else is exactly what a checker must not accept).
"""

from __future__ import annotations

import ast
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

__all__ = ["CONSTANTS", "FUNCTIONS", "ExprError", "parse"]

_MAX_LENGTH = 2000

Fn = Callable[[jax.Array], Any]


class ExprError(ValueError):
    """A formula that is not in the allowed language (a ``ValueError``)."""


def _relu(x: jax.Array) -> jax.Array:
    return jnp.maximum(x, 0.0)


# name -> (function, number of arguments)
FUNCTIONS: dict[str, tuple[Callable[..., jax.Array], int]] = {
    "sqrt": (jnp.sqrt, 1),
    "exp": (jnp.exp, 1),
    "expm1": (jnp.expm1, 1),
    "log": (jnp.log, 1),
    "log1p": (jnp.log1p, 1),
    "log2": (jnp.log2, 1),
    "log10": (jnp.log10, 1),
    "sin": (jnp.sin, 1),
    "cos": (jnp.cos, 1),
    "tan": (jnp.tan, 1),
    "sinh": (jnp.sinh, 1),
    "cosh": (jnp.cosh, 1),
    "tanh": (jnp.tanh, 1),
    "arcsin": (jnp.arcsin, 1),
    "asin": (jnp.arcsin, 1),
    "arccos": (jnp.arccos, 1),
    "acos": (jnp.arccos, 1),
    "arctan": (jnp.arctan, 1),
    "atan": (jnp.arctan, 1),
    "arcsinh": (jnp.arcsinh, 1),
    "asinh": (jnp.arcsinh, 1),
    "arccosh": (jnp.arccosh, 1),
    "acosh": (jnp.arccosh, 1),
    "arctanh": (jnp.arctanh, 1),
    "atanh": (jnp.arctanh, 1),
    "sigmoid": (jax.nn.sigmoid, 1),
    "softplus": (jax.nn.softplus, 1),
    "relu": (_relu, 1),
    "abs": (jnp.abs, 1),
    "sign": (jnp.sign, 1),
    "erf": (jax.scipy.special.erf, 1),
    "pow": (jnp.power, 2),
    "min": (jnp.minimum, 2),
    "max": (jnp.maximum, 2),
}

CONSTANTS: dict[str, float] = {"pi": math.pi, "e": math.e}

_BINARY = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
    ast.Pow: lambda a, b: a**b,
}
_UNARY = {ast.USub: lambda a: -a, ast.UAdd: lambda a: +a}

# Friendly names for the node types people actually type by mistake.
_WHAT = {
    ast.Attribute: "attribute access",
    ast.Subscript: "indexing",
    ast.Lambda: "a lambda expression",
    ast.Compare: "a comparison",
    ast.BoolOp: "`and`/`or`",
    ast.IfExp: "an `if ... else` expression",
    ast.List: "a list",
    ast.Tuple: "a tuple",
    ast.Dict: "a dict",
    ast.Set: "a set",
    ast.ListComp: "a comprehension",
    ast.GeneratorExp: "a generator",
    ast.JoinedStr: "an f-string",
    ast.NamedExpr: "`:=`",
    ast.Starred: "`*` unpacking",
}


def _allowed(var: str) -> str:
    return (
        f"allowed: numbers, the variable `{var}`, the constants pi and e, "
        f"+ - * / ** and parentheses, and the functions {', '.join(sorted(FUNCTIONS))}"
    )


def parse(text: str, var: str = "x") -> Callable[[jax.Array], jax.Array]:
    """Compile the formula ``text`` in the variable ``var`` to a JAX function.

    Args:
      text: the formula, e.g. ``"sqrt(x**2 + exp(x**2)) + cos(x**2 + exp(x**2))"``.
      var: the name of the variable (a Python identifier, not a function or constant name).

    Returns:
      ``fn(x) -> array`` of the same shape and dtype as ``x``; JAX-traceable, so it can be
      differentiated, ``vmap``-ped and ``jit``-ted.

    Raises:
      ExprError (a ValueError): the formula is empty, not valid syntax, or uses anything
        outside the whitelist; the message names the offending piece.
      TypeError: ``text`` or ``var`` is not a string.
    """
    if not isinstance(text, str):
        raise TypeError(f"the formula must be a string, got {type(text).__name__}.")
    if not isinstance(var, str):
        raise TypeError(f"`var` must be a string such as 'x', got {var!r}.")
    if not var.isidentifier() or var.startswith("_"):
        raise ExprError(f"`var` must be a plain name such as 'x' or 't', got {var!r}.")
    if var in FUNCTIONS or var in CONSTANTS:
        raise ExprError(f"`var` = {var!r} is taken by a function or constant; pick another name.")
    text = text.strip()
    if not text:
        raise ExprError("the formula is empty.")
    if len(text) > _MAX_LENGTH:
        raise ExprError(f"the formula is {len(text)} characters long; at most {_MAX_LENGTH}.")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as err:
        where = f" at column {err.offset}" if err.offset else ""
        raise ExprError(f"{text!r} is not a valid formula: {err.msg}{where}.") from None
    except (RecursionError, MemoryError, ValueError):
        raise ExprError(f"{text!r} is nested too deeply or is not a valid formula.") from None
    try:
        body = _compile(tree.body, var)
    except RecursionError:
        raise ExprError("the formula is nested too deeply.") from None

    if any(isinstance(n, ast.Name) and n.id == var for n in ast.walk(tree)):
        return lambda x: body(jnp.asarray(x))

    def constant(x: jax.Array) -> jax.Array:  # still has x's shape and dtype
        x = jnp.asarray(x)
        return body(x) + jnp.zeros_like(x)

    return constant


def _compile(node: ast.AST, var: str) -> Fn:
    """Turn one whitelisted node into a function of the variable (recursively)."""
    if isinstance(node, ast.Constant):
        value = node.value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ExprError(
                f"`{ast.unparse(node)}` is not a number; formulas hold only real numbers; "
                + _allowed(var)
            )
        if isinstance(value, int) and abs(value) > 2**53:
            raise ExprError(f"the number {value} is too large; write it as a float, e.g. 1e20.")
        if not math.isfinite(value):
            raise ExprError(f"the number {ast.unparse(node)} is not finite.")
        return _constant(float(value))
    if isinstance(node, ast.Name):
        if node.id == var:
            return lambda x: x
        if node.id in CONSTANTS:
            return _constant(CONSTANTS[node.id])
        if node.id in FUNCTIONS:
            raise ExprError(f"`{node.id}` is a function: call it, e.g. {node.id}({var}).")
        raise ExprError(
            f"unknown name `{node.id}`: the only variable is `{var}` "
            f"(use --var to name it differently); " + _allowed(var)
        )
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        op, operand = _UNARY[type(node.op)], _compile(node.operand, var)
        return lambda x: op(operand(x))
    if isinstance(node, ast.BinOp):
        if isinstance(node.op, ast.BitXor):
            left, right = ast.unparse(node.left), ast.unparse(node.right)
            raise ExprError(
                f"`{ast.unparse(node)}`: `^` is not a power here (in Python it is exclusive-or); "
                f"write `{left}**{right}`."
            )
        if type(node.op) not in _BINARY:
            raise ExprError(
                f"`{ast.unparse(node)}`: the operator `{_op_symbol(node.op)}` is not allowed; "
                + _allowed(var)
            )
        left = _compile(node.left, var)
        n = _small_int(node.right) if isinstance(node.op, ast.Pow) else None
        if n is not None:  # x**2: an integer power, exact and differentiable at x < 0
            return lambda x: left(x) ** n
        op, right = _BINARY[type(node.op)], _compile(node.right, var)
        return lambda x: op(left(x), right(x))
    if isinstance(node, ast.Call):
        return _compile_call(node, var)
    what = _WHAT.get(type(node), f"a {type(node).__name__} expression")
    raise ExprError(f"`{ast.unparse(node)}`: {what} is not allowed; " + _allowed(var))


def _constant(value: float) -> Fn:
    """A number, as an array of the variable's dtype (never Python arithmetic)."""
    return lambda x: jnp.asarray(value, dtype=x.dtype)


def _small_int(node: ast.AST) -> int | None:
    """``n`` if ``node`` is an integer literal (or its negation) with |n| <= 64."""
    sign = 1
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        sign = -1 if isinstance(node.op, ast.USub) else 1
        node = node.operand
    if isinstance(node, ast.Constant) and type(node.value) is int and abs(node.value) <= 64:
        return sign * node.value
    return None


def _compile_call(node: ast.Call, var: str) -> Fn:
    text = ast.unparse(node)
    if not isinstance(node.func, ast.Name):
        raise ExprError(
            f"`{text}`: only the listed functions may be called, by their bare name; "
            + _allowed(var)
        )
    fname = node.func.id
    if fname not in FUNCTIONS:
        raise ExprError(
            f"`{text}`: `{fname}` is not an allowed function; "
            f"allowed functions: {', '.join(sorted(FUNCTIONS))}."
        )
    if node.keywords or any(isinstance(a, ast.Starred) for a in node.args):
        raise ExprError(f"`{text}`: pass the arguments of {fname} by position, without names or *.")
    func, arity = FUNCTIONS[fname]
    if len(node.args) != arity:
        plural = "argument" if arity == 1 else "arguments"
        raise ExprError(f"`{text}`: {fname} takes {arity} {plural}, got {len(node.args)}.")
    args = [_compile(a, var) for a in node.args]
    if arity == 1:
        (arg,) = args
        return lambda x: func(arg(x))
    return lambda x: func(*(a(x) for a in args))


def _op_symbol(op: ast.operator) -> str:
    symbols = {
        ast.FloorDiv: "//",
        ast.Mod: "%",
        ast.MatMult: "@",
        ast.LShift: "<<",
        ast.RShift: ">>",
        ast.BitOr: "|",
        ast.BitAnd: "&",
    }
    return symbols.get(type(op), type(op).__name__)

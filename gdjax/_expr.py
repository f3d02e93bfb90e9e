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

Several variables: ``parse(text, ("x", "y"))`` gives ``fn(x, y)``, and
:func:`parse_components` reads ``"E1, E2"`` as one function per component. Flat sums and
products of any length are compiled without recursion; other nesting is limited to
:data:`MAX_DEPTH` levels. Only ASCII is accepted (Python would silently read a
math-italic ``𝑥`` as ``x``).

``^`` is refused with a hint to write ``**`` (in Python ``^`` is exclusive-or, and a
formula that silently meant something else is exactly what a checker must not accept).
"""

from __future__ import annotations

import ast
import keyword
import math
import warnings
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

__all__ = ["CONSTANTS", "FUNCTIONS", "MAX_DEPTH", "ExprError", "check_var", "parse",
           "parse_components"]

_MAX_LENGTH = 2000
MAX_DEPTH = 100  # nesting levels (a flat sum or product counts as one)

Fn = Callable[[tuple[jax.Array, ...]], Any]


class ExprError(ValueError):
    """A formula that is not in the allowed language (a ``ValueError``)."""


def _relu(x: jax.Array) -> jax.Array:
    return jnp.maximum(x, 0.0)


_INVERSE = ("sin", "cos", "tan", "sinh", "cosh", "tanh")

# name -> (function, number of arguments); arcsin/asin ... arctanh/atanh are the inverses

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
    **{f"{pre}{n}": (getattr(jnp, f"arc{n}"), 1) for n in _INVERSE for pre in ("arc", "a")},
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


def _allowed(names: tuple[str, ...]) -> str:
    what = f"the variable `{names[0]}`" if len(names) == 1 else "the variables " + ", ".join(
        f"`{v}`" for v in names
    )
    return (
        f"allowed: numbers, {what}, the constants pi and e, "
        f"+ - * / ** and parentheses, and the functions {', '.join(sorted(FUNCTIONS))}"
    )


VAR_RULE = (
    "a variable is a plain ASCII name: a letter, then letters, digits or _ (e.g. x, t, w2), "
    "not a Python keyword (lambda, True, ...) and not a function or constant name"
)


def check_var(var: Any) -> str:
    """``var`` if it is a usable variable name, else an ExprError stating the rule."""
    if not isinstance(var, str):
        raise TypeError(f"`var` must be a string such as 'x', got {var!r}.")
    if not var.isascii() or not var.isidentifier() or var.startswith("_"):
        raise ExprError(f"`var` must be a plain name such as 'x' or 't', got {var!r}: {VAR_RULE}.")
    if keyword.iskeyword(var) or keyword.issoftkeyword(var):
        raise ExprError(f"`var` = {var!r} is a Python keyword: {VAR_RULE}.")
    if var in FUNCTIONS or var in CONSTANTS:
        raise ExprError(f"`var` = {var!r} is taken by a function or constant; pick another name.")
    return var


def _names(var: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    names = (var,) if isinstance(var, str) else tuple(var)
    if not names:
        raise ExprError(f"name at least one variable: {VAR_RULE}.")
    for v in names:
        check_var(v)
    if len(set(names)) != len(names):
        raise ExprError(f"the variables {', '.join(names)} repeat a name; give each its own.")
    return names


def _read(text: Any) -> ast.Expression:
    if not isinstance(text, str):
        raise TypeError(f"the formula must be a string, got {type(text).__name__}.")
    text = text.strip()
    if not text:
        raise ExprError("the formula is empty.")
    if len(text) > _MAX_LENGTH:
        raise ExprError(f"the formula is {len(text)} characters long; at most {_MAX_LENGTH}.")
    odd = next((c for c in text if not c.isascii()), None)
    if odd is not None:
        raise ExprError(
            f"the formula holds the character {odd!r} (U+{ord(odd):04X}) at column "
            f"{text.index(odd) + 1}; write formulas in plain ASCII (x, not a math-italic 𝑥)."
        )
    try:
        with warnings.catch_warnings():  # "1for": Python warns, the formula is refused
            warnings.simplefilter("ignore", SyntaxWarning)
            tree = ast.parse(text, mode="eval")
    except SyntaxError as err:
        where = f" at column {err.offset}" if err.offset else ""
        raise ExprError(f"{_short(text)!r} is not a valid formula: {err.msg}{where}.") from None
    except (RecursionError, MemoryError, ValueError):
        raise ExprError(f"the formula is nested too deeply (at most {MAX_DEPTH} levels).") from None
    depth = _depth(tree.body)
    if depth > MAX_DEPTH:
        raise ExprError(
            f"the formula is nested {depth} levels deep; at most {MAX_DEPTH} (flat sums and "
            f"products of any length are fine)."
        )
    return tree


def _short(text: str) -> str:
    return text if len(text) <= 80 else text[:77] + "..."


def _family(node: ast.AST) -> int:
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub)):
        return 1
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Mult, ast.Div)):
        return 2
    return 0


def _depth(root: ast.AST) -> int:
    """Nesting depth, without recursion; a chain ``a + b - c + ...`` is one level."""
    deepest, stack = 0, [(root, 1)]
    while stack:
        node, d = stack.pop()
        deepest = max(deepest, d)
        fam = _family(node)
        for child in ast.iter_child_nodes(node):
            same = fam and child is getattr(node, "left", None) and _family(child) == fam
            stack.append((child, d if same else d + 1))
    return deepest


def _function(body: Fn, tree: ast.AST, names: tuple[str, ...]) -> Callable[..., jax.Array]:
    uses = any(isinstance(n, ast.Name) and n.id in names for n in ast.walk(tree))

    def fn(*xs: Any) -> jax.Array:
        if len(xs) != len(names):
            raise TypeError(f"the formula takes {len(names)} argument(s) ({', '.join(names)}).")
        env = tuple(jnp.asarray(x) for x in xs)
        if uses:
            return body(env)
        return body(env) + jnp.zeros_like(env[0])  # still has x's shape and dtype

    return fn


def parse(text: str, var: str | tuple[str, ...] = "x") -> Callable[..., jax.Array]:
    """Compile the formula ``text`` in the variable ``var`` to a JAX function.

    Args:
      text: the formula, e.g. ``"sqrt(x**2 + exp(x**2)) + cos(x**2 + exp(x**2))"``.
      var: the name of the variable (a plain ASCII name, not a keyword, function or
        constant name), or a tuple of names for a function of several variables.

    Returns:
      ``fn(x)`` (or ``fn(x, y, ...)``) -> array of the same shape and dtype as ``x``;
      JAX-traceable, so it can be differentiated, ``vmap``-ped and ``jit``-ted.

    Raises:
      ExprError (a ValueError): the formula is empty, not valid syntax, too deep, or uses
        anything outside the whitelist; the message names the offending piece.
      TypeError: ``text`` or ``var`` is not a string.
    """
    if not isinstance(text, str):
        raise TypeError(f"the formula must be a string, got {type(text).__name__}.")
    names = _names(var)
    tree = _read(text)
    return _function(_compile(tree.body, names), tree.body, names)


def parse_components(text: str, var: tuple[str, ...]) -> list[Callable[..., jax.Array]]:
    """``"E1, E2, ..."`` -> one function of the variables per component."""
    names = _names(var)
    tree = _read(text)
    parts = tree.body.elts if isinstance(tree.body, ast.Tuple) else [tree.body]
    if len(parts) != len(names):
        raise ExprError(
            f"give one component per variable ({len(names)}: {', '.join(names)}), "
            f"separated by commas; got {len(parts)}."
        )
    return [_function(_compile(p, names), p, names) for p in parts]


def _snippet(node: ast.AST) -> str:
    try:
        return _short(ast.unparse(node))
    except RecursionError:
        return f"a {type(node).__name__}"


def _compile(node: ast.AST, names: tuple[str, ...]) -> Fn:
    """Turn one whitelisted node into a function of the variables' tuple."""
    if isinstance(node, ast.Constant):
        value = node.value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ExprError(
                f"`{_snippet(node)}` is not a number; formulas hold only real numbers; "
                + _allowed(names)
            )
        if isinstance(value, int) and abs(value) > 2**53:
            raise ExprError(f"the number {value} is too large; write it as a float, e.g. 1e20.")
        if not math.isfinite(value):
            raise ExprError(f"the number {_snippet(node)} is not finite.")
        return _constant(float(value))
    if isinstance(node, ast.Name):
        if node.id in names:
            i = names.index(node.id)
            return lambda env: env[i]
        if node.id in CONSTANTS:
            return _constant(CONSTANTS[node.id])
        if node.id in FUNCTIONS:
            raise ExprError(f"`{node.id}` is a function: call it, e.g. {node.id}({names[0]}).")
        only = f"the only variable is `{names[0]}`" if len(names) == 1 else (
            "the variables are " + ", ".join(names))
        raise ExprError(
            f"unknown name `{node.id}`: {only} (use --var to name them differently); "
            + _allowed(names)
        )
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        op, operand = _UNARY[type(node.op)], _compile(node.operand, names)
        return lambda env: op(operand(env))
    if isinstance(node, ast.BinOp):
        if isinstance(node.op, ast.BitXor):
            left, right = _snippet(node.left), _snippet(node.right)
            raise ExprError(
                f"`{_snippet(node)}`: `^` is not a power here (in Python it is exclusive-or); "
                f"write `{left}**{right}`."
            )
        if type(node.op) not in _BINARY:
            raise ExprError(
                f"`{_snippet(node)}`: the operator `{_op_symbol(node.op)}` is not allowed; "
                + _allowed(names)
            )
        if _family(node):
            return _chain(node, names)
        left = _compile(node.left, names)
        n = _small_int(node.right) if isinstance(node.op, ast.Pow) else None
        if n is not None:  # x**2: an integer power, exact and differentiable at x < 0
            return lambda env: left(env) ** n
        op, right = _BINARY[type(node.op)], _compile(node.right, names)
        return lambda env: op(left(env), right(env))
    if isinstance(node, ast.Call):
        return _compile_call(node, names)
    what = _WHAT.get(type(node), f"a {type(node).__name__} expression")
    raise ExprError(f"`{_snippet(node)}`: {what} is not allowed; " + _allowed(names))


def _chain(node: ast.BinOp, names: tuple[str, ...]) -> Fn:
    """``a + b - c + ...`` (or ``a * b / c ...``) as a loop, not nested calls."""
    fam = _family(node)
    links = []
    while isinstance(node, ast.BinOp) and _family(node) == fam:
        if type(node.op) not in _BINARY:
            break
        links.append((_BINARY[type(node.op)], node.right))
        node = node.left
    first = _compile(node, names)
    steps = [(op, _compile(right, names)) for op, right in reversed(links)]

    def run(env: tuple[jax.Array, ...]) -> jax.Array:
        value = first(env)
        for op, term in steps:
            value = op(value, term(env))
        return value

    return run


def _constant(value: float) -> Fn:
    """A number, as an array of the variables' dtype (never Python arithmetic)."""
    return lambda env: jnp.asarray(value, dtype=env[0].dtype)


def _small_int(node: ast.AST) -> int | None:
    """``n`` if ``node`` is an integer literal (or its negation) with |n| <= 64."""
    sign = 1
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        sign = -1 if isinstance(node.op, ast.USub) else 1
        node = node.operand
    if isinstance(node, ast.Constant) and type(node.value) is int and abs(node.value) <= 64:
        return sign * node.value
    return None


def _compile_call(node: ast.Call, names: tuple[str, ...]) -> Fn:
    text = _snippet(node)
    if not isinstance(node.func, ast.Name):
        raise ExprError(
            f"`{text}`: only the listed functions may be called, by their bare name; "
            + _allowed(names)
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
    args = [_compile(a, names) for a in node.args]
    if arity == 1:
        (arg,) = args
        return lambda env: func(arg(env))
    return lambda env: func(*(a(env) for a in args))


def _op_symbol(op: ast.operator) -> str:
    symbols = {ast.FloorDiv: "//", ast.Mod: "%", ast.MatMult: "@", ast.LShift: "<<",
               ast.RShift: ">>", ast.BitOr: "|", ast.BitAnd: "&"}
    return symbols.get(type(op), type(op).__name__)

"""From a jaxpr to a flat list of steps on node ids: the first layer of the trace.

:class:`_Builder` walks a jaxpr equation by equation, inlining ``jit``/``closed_call``/
``checkpoint`` bodies and turning ``name_p`` marks into node names; every other equation
becomes one :class:`_Step` whose outputs are new nodes (:class:`_Proto`). Loops, ``cond``
and functions with their own derivative rule stay one step each, with a note.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.extend.core import ClosedJaxpr, Jaxpr, Literal

from gdjax.graph.primitive import name_p

# Call-like primitives whose body is inlined into the graph.
_INLINE = frozenset({"jit", "pjit", "closed_call", "core_call", "checkpoint", "remat"})
# Shorter display names for some primitives.
_DISPLAY = {
    "logistic": "sigmoid",
    "integer_pow": "pow",
    "reduce_sum": "sum",
    "reduce_max": "max",
    "reduce_min": "min",
    "reduce_prod": "prod",
    "dot_general": "dot",
    "convert_element_type": "convert",
    "broadcast_in_dim": "broadcast",
    "custom_jvp_call": "custom_jvp",
    "custom_vjp_call": "custom_vjp",
}


class _Lit(NamedTuple):
    """A literal constant inside a jaxpr equation (not a node)."""

    val: Any


@dataclasses.dataclass
class _Proto:
    """A node while the graph is being built (names are given at the end)."""

    kind: str  # "input" | "const" | "op" | "name"
    op: str
    value: Any
    label: str | None = None
    path: str = ""
    step: int = -1
    note: str = ""
    scope: tuple[str, ...] = ()  # the inlined calls it was computed in, outermost first


@dataclasses.dataclass
class _Step:
    """One primitive application: ``outs = prim.bind(*atoms, **params)``."""

    prim: Any
    params: dict[str, Any]
    ctx: Any
    atoms: list[int | _Lit]
    outs: list[int]
    display: str

    def call(self, *vals: Any) -> Any:
        with self.ctx.manager:
            out = self.prim.bind(*vals, **self.prim.get_bind_params(self.params))
        return list(out) if self.prim.multiple_results else out


class _Builder:
    """Walks a jaxpr, inlining call bodies, into a flat list of steps on node ids.

    Nodes computed by a step hold their abstract value (shape, dtype) until
    :func:`_forward` evaluates them.
    """

    def __init__(self) -> None:
        self.protos: list[_Proto] = []
        self.steps: list[_Step] = []
        self.scope: list[str] = []  # keys of the calls being inlined: "layer@1"
        self.calls = 0

    def new(self, proto: _Proto) -> int:
        if proto.kind != "input":
            proto.scope = tuple(self.scope)
        self.protos.append(proto)
        return len(self.protos) - 1

    def walk(self, jaxpr: Jaxpr, consts: Sequence[int | _Lit], args: Sequence[int | _Lit]):
        env: dict[Any, int | _Lit] = {}
        env.update(zip(jaxpr.constvars, consts))
        env.update(zip(jaxpr.invars, args))

        def read(v: Any) -> int | _Lit:
            return _Lit(v.val) if isinstance(v, Literal) else env[v]

        for eqn in jaxpr.eqns:
            atoms = [read(v) for v in eqn.invars]
            prim = eqn.primitive
            if prim is name_p:
                env[eqn.outvars[0]] = self.named(atoms[0], eqn)
            elif prim.name in _INLINE and _sub_jaxpr(eqn.params) is not None:
                sub, sub_consts = _sub_jaxpr(eqn.params)
                self.calls += 1
                self.scope.append(f"{_call_label(prim.name, eqn.params)}@{self.calls}")
                try:
                    const_ids = [
                        self.new(_Proto("const", "const", jnp.asarray(c))) for c in sub_consts
                    ]
                    env.update(zip(eqn.outvars, self.walk(sub, const_ids, atoms)))
                finally:
                    self.scope.pop()
            elif _is_noop_convert(eqn):
                env[eqn.outvars[0]] = atoms[0]
            else:
                env.update(zip(eqn.outvars, self.apply(eqn, atoms)))
        return [read(v) for v in jaxpr.outvars]

    def named(self, atom: int | _Lit, eqn: Any) -> int:
        label = eqn.params["label"]
        if isinstance(atom, _Lit):
            return self.new(_Proto("const", "const", jnp.asarray(atom.val), label=label))
        proto = self.protos[atom]
        if proto.kind == "op" and proto.label is None:
            proto.label = label
            return atom
        # An input or an already named value: a separate identity node carries the name.
        return self.apply(eqn, [atom], kind="name", label=label)[0]

    def apply(self, eqn: Any, atoms: list[int | _Lit], kind: str = "op", label=None) -> list[int]:
        prim = eqn.primitive
        display, note = _describe(prim, eqn.params)
        step = _Step(prim, dict(eqn.params), eqn.ctx, atoms, [], display)
        op = "name" if kind == "name" else prim.name
        step.outs = [
            self.new(_Proto(kind, op, v.aval, label=label, step=len(self.steps), note=note))
            for v in eqn.outvars
        ]
        self.steps.append(step)
        return step.outs


def _call_label(prim_name: str, params: Mapping[str, Any]) -> str:
    """How an inlined call is shown as a group: the jitted function's name, or the kind."""
    name = params.get("name")
    if isinstance(name, str) and name and name != "<lambda>":
        return name
    return {"checkpoint": "checkpoint", "remat": "checkpoint"}.get(prim_name, prim_name)


def _sub_jaxpr(params: Mapping[str, Any]) -> tuple[Jaxpr, list[Any]] | None:
    sub = params.get("jaxpr", params.get("call_jaxpr"))
    if isinstance(sub, ClosedJaxpr):
        return sub.jaxpr, list(sub.consts)
    if isinstance(sub, Jaxpr):
        return sub, []
    return None


def _is_noop_convert(eqn: Any) -> bool:
    """``convert_element_type`` that only drops weak typing: the same value."""
    if eqn.primitive.name != "convert_element_type":
        return False
    (x,), (y,) = eqn.invars, eqn.outvars
    return x.aval.dtype == y.aval.dtype and x.aval.shape == y.aval.shape


def _inner_labels(params: Mapping[str, Any]) -> list[str]:
    """Labels of ``gd.name`` marks inside the nested jaxprs of an equation."""
    found: list[str] = []

    def visit(jaxpr: Jaxpr) -> None:
        for eqn in jaxpr.eqns:
            if eqn.primitive is name_p and eqn.params["label"] not in found:
                found.append(eqn.params["label"])
            for sub in jax.extend.core.jaxprs_in_params(eqn.params):
                visit(sub)

    for sub in jax.extend.core.jaxprs_in_params(params):
        visit(sub)
    return found


def _describe(prim: Any, params: Mapping[str, Any]) -> tuple[str, str]:
    """(display name, note) for an equation shown as one node."""
    name = prim.name
    if name in ("custom_jvp_call", "custom_vjp_call"):
        sub = params.get("call_jaxpr")
        fname = getattr(getattr(getattr(sub, "jaxpr", None), "debug_info", None), "func_name", "")
        kind = name.removesuffix("_call")
        display = fname or _DISPLAY[name]
        return display, f"{kind} function shown as one node; its own derivative rule is used"
    subs = list(jax.extend.core.jaxprs_in_params(params))
    if not subs:
        return _DISPLAY.get(name, name), ""
    inner = _inner_labels(params)
    where = f"; names inside: {', '.join(inner)}" if inner else ""
    if name == "scan":
        what = f"scan over {params['length']} steps shown as one node"
    elif name == "while":
        what = "while loop shown as one node"
    elif name == "cond":
        what = f"cond with {len(params['branches'])} branches shown as one node"
    else:
        what = f"{name} with a nested computation shown as one node"
    return _DISPLAY.get(name, name), what + where


def _edge_keys(b: _Builder) -> list[tuple[int, int, int]]:
    """(step, input position, output index) of every edge, in evaluation order."""
    return [
        (s, pos, k)
        for s, step in enumerate(b.steps)
        for pos, a in enumerate(step.atoms)
        if isinstance(a, int)
        for k in range(len(step.outs))
    ]

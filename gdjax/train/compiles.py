"""Why a program compiles (the static fields that changed since the last one built), and
compiling it with Python's cyclic garbage collector paused."""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import logging
from collections.abc import Iterator
from typing import Any

import jax

from gdjax.optim._parts import ChainStatic, Opaque, opaque_objects
from gdjax.train.program import Program

_SEEN: dict[Any, Program] = {}  # the last program seen per loss function (for explain)
_KNOWN: set[Program] = set()
OPAQUE = (
    "new optimizer object (a plain optax transformation is compared by identity; use "
    "gd.optim.chain to keep hyperparameters as data)"
)


def explain(prog: Program) -> str | None:
    """Why ``prog`` is a new program: the fields that differ from the last one built for
    the same loss (None when it was built before: the compiled executable is reused).

    ``gd.fit`` and ``gd.sweep`` log it on the ``"gdjax"`` logger at INFO level, the ask of
    jax#4390: ``logging.getLogger("gdjax").setLevel(logging.INFO)`` shows it.
    """
    if prog in _KNOWN:
        return None
    if len(_KNOWN) > 1024:
        _KNOWN.clear()
    _KNOWN.add(prog)
    last = _SEEN.get(prog.loss_fn)
    _SEEN[prog.loss_fn] = prog
    if last is None:
        return f"compiling: first program for loss {getattr(prog.loss_fn, '__name__', '?')}"
    reasons, fields = [], dataclasses.fields(Program)
    if prog.opt_static != last.opt_static and _holds_new_object(prog.opt_static, last.opt_static):
        reasons.append(OPAQUE)
        if _only_objects(prog.opt_static, last.opt_static):
            fields = [f for f in fields if f.name != "opt_static"]
    changed = [
        f"{f.name}={_short(getattr(prog, f.name))} (was {_short(getattr(last, f.name))})"
        for f in fields
        if getattr(prog, f.name) != getattr(last, f.name)
    ]
    if changed or not reasons:
        reasons.append("new static setting " + ("; ".join(changed) or "(new shapes or dtypes)"))
    return "compiling: " + "; ".join(reasons)


def _holds_new_object(static: Any, last: Any) -> bool:
    """Whether ``static`` holds an optimizer object by identity (an optax transformation,
    an ``optax.chain``) that ``last`` did not hold."""
    seen = {id(o) for o in opaque_objects(last)}
    return any(id(o) not in seen for o in opaque_objects(static))


def _only_objects(static: Any, last: Any) -> bool:
    """Whether the two static parts differ only in the objects they hold by identity."""
    if isinstance(static, Opaque) and isinstance(last, Opaque):
        return True
    if isinstance(static, ChainStatic) and isinstance(last, ChainStatic):
        pairs = list(zip(static.members, last.members))
        return len(static.members) == len(last.members) and all(
            _only_objects(a, b) for a, b in pairs if a != b
        )
    return False


def log_compile(prog: Program) -> None:
    """Log :func:`explain`'s reason on the ``"gdjax"`` logger when ``prog`` is new (in
    process 0 only, when several processes run one program)."""
    why = explain(prog)
    if why is not None and jax.process_index() == 0:
        logging.getLogger("gdjax").info(why)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


@contextlib.contextmanager
def collector_paused(new: bool) -> Iterator[None]:
    """Python's cyclic garbage collector paused in the block when ``new`` (a run whose
    program is built and compiled in it), as ``timeit`` pauses it; as it was after.

    Tracing makes many long-lived objects, and each collection of the oldest generation
    walks every object of the process (~110,000 with jax and gdjax imported): N1, 20,000
    steps, a cold ``fit`` took ~320 ms with it running and ~275 without. Reference
    counting still frees everything else; cycles are collected once it runs again.
    """
    if not new or not gc.isenabled():  # a warm call, or the caller paused it already
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()

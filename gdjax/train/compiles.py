"""Why a program compiles: the static fields that changed since the last one built."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from gdjax.train.program import Program

_SEEN: dict[Any, Program] = {}  # the last program seen per loss function (for explain)
_KNOWN: set[Program] = set()


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
    changed = [
        f"{f.name}={_short(getattr(prog, f.name))} (was {_short(getattr(last, f.name))})"
        for f in dataclasses.fields(Program)
        if getattr(prog, f.name) != getattr(last, f.name)
    ]
    return "compiling: new static setting " + ("; ".join(changed) or "(new shapes or dtypes)")


def log_compile(prog: Program) -> None:
    """Log :func:`explain`'s reason on the ``"gdjax"`` logger when ``prog`` is new."""
    why = explain(prog)
    if why is not None:
        logging.getLogger("gdjax").info(why)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."

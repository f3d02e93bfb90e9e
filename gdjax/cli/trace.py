"""``gdjax trace MODEL``: a registry model's computation graph, with values and adjoints."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

HELP = "draw a registry model's computation graph"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL_ID")
    p.add_argument("--at", default=None, metavar="JSON", help="parameters as JSON")
    p.add_argument("--svg", default=None, metavar="FILE", help="write the graph as SVG")
    p.add_argument("--png", default=None, metavar="FILE", help="write the graph as PNG")
    p.add_argument(
        "--html",
        default=None,
        metavar="FILE",
        help="write the interactive explorer (one self-contained HTML file)",
    )
    p.add_argument("--dot", action="store_true", help="print Graphviz DOT instead of a table")


def run(args: argparse.Namespace) -> int:
    """``gdjax trace MODEL_ID``: the model's graph at its example point (or ``--at``)."""
    from gdjax import models
    from gdjax.graph import trace

    outputs = _outputs(args)  # every path checked before any work
    model = models.get(args.model)
    params, batch = model.example()
    if args.at is not None:
        params = _params_at(args.at, params)
    graph = trace(model.loss, params, batch)
    print(graph.to_dot() if args.dot else f"{model.id}: {model.title}\n\n{graph.table()}")
    for flag, path in outputs:
        if flag == "--html":
            graph.to_html(path, title=f"{model.id}: {model.title}")
            print(f"wrote {path}")
        else:
            print(f"wrote {graph.save(path)}")
    return 0


def _outputs(args: argparse.Namespace) -> list[tuple[str, Any]]:
    """The (flag, path) pairs to write, each checked: a file name with the flag's suffix in
    a folder that exists and can be written; for a picture, something that can draw it."""
    from gdjax._validate import UsageError
    from gdjax.cli._checkout import writable_file

    out = []
    for flag, suffix in (("--svg", ".svg"), ("--png", ".png"), ("--html", ".html")):
        given = getattr(args, flag[2:])
        if given is None:
            continue
        path = writable_file(flag, given)
        if path.suffix.lower() not in (suffix, ".htm" if suffix == ".html" else suffix):
            raise UsageError(f"{flag} {given}: the file name must end in {suffix}")
        out.append((flag, path))
    if any(flag in ("--svg", "--png") for flag, _ in out):
        _check_drawing()
    return out


def _check_drawing() -> None:
    """A picture needs Graphviz's ``dot`` or matplotlib: say so before tracing."""
    import importlib.util

    from gdjax._validate import UsageError
    from gdjax.graph import render

    if render._dot_binary() is None and importlib.util.find_spec("matplotlib") is None:
        raise UsageError(
            "--svg/--png need Graphviz's dot (apt-get install graphviz) or matplotlib "
            "(pip install matplotlib); neither is installed. --html and --dot need neither."
        )


def _params_at(text: str, example: Any) -> Any:
    """The example parameters with the values of the JSON ``text`` put in."""
    import json

    from gdjax._validate import UsageError

    if len(text) > MAX_AT_CHARS:
        raise UsageError(f"--at is {len(text)} characters long; the limit is {MAX_AT_CHARS}.")
    try:
        given = json.loads(text)  # NaN and Infinity parse; _merge refuses them by key
    except json.JSONDecodeError as err:
        raise UsageError(
            f"--at is not valid JSON ({err}). Example: --at '{{\"a\": 1.0}}'."
        ) from None
    except RecursionError:
        raise UsageError(
            "--at is nested too deeply; give the parameters as a JSON object of numbers "
            "or lists of numbers, e.g. --at '{\"a\": 1.0}'."
        ) from None
    return _merge(given, example, "--at")


MAX_AT_CHARS = 1_000_000


def _check_numbers(given: Any, where: str) -> None:
    """Every leaf of ``given`` (a number or nested lists) is a finite int or float, not a
    bool or a string: NumPy would otherwise turn "1.5" and true into numbers silently."""
    import math

    from gdjax._validate import UsageError

    stack = [given]
    while stack:
        x = stack.pop()
        if isinstance(x, list):
            stack.extend(x)
        elif isinstance(x, bool) or not isinstance(x, int | float):
            raise UsageError(
                f"{where} must hold numbers, got {json_text(x)} ({type(x).__name__}); "
                f"write it as a JSON number, e.g. 1.0."
            )
        elif isinstance(x, float) and not math.isfinite(x):
            raise UsageError(f"{where} must hold finite numbers, got {x}.")


def json_text(x: Any) -> str:
    import json

    text = json.dumps(x)
    return text if len(text) <= 40 else text[:37] + "..."


def _merge(given: Any, example: Any, where: str) -> Any:
    """``example`` with the entries of ``given`` (parsed JSON) put in, checked leaf by leaf.

    Raises:
      UsageError: naming ``where`` (``--at['a']``): an unknown key, a wrong structure or
        shape, or a value that is not a number.
    """
    import jax.numpy as jnp
    import numpy as np

    from gdjax._validate import UsageError

    if isinstance(example, Mapping):
        if not isinstance(given, Mapping):
            raise UsageError(f"{where} must be a JSON object with keys {sorted(example)}.")
        unknown = sorted(set(given) - set(example))
        if unknown:
            raise UsageError(
                f"{where} has unknown key(s) {unknown}; the model's parameters are "
                f"{sorted(example)}."
            )
        return {
            k: _merge(given[k], v, f"{where}[{k!r}]") if k in given else v
            for k, v in example.items()
        }
    if isinstance(example, list | tuple):
        if not isinstance(given, list) or len(given) != len(example):
            raise UsageError(f"{where} must be a JSON list of {len(example)} entries.")
        return type(example)(
            _merge(g, e, f"{where}[{i}]") for i, (g, e) in enumerate(zip(given, example))
        )
    _check_numbers(given, where)
    try:
        with np.errstate(over="ignore"):
            value = np.asarray(given, dtype=np.asarray(example).dtype)
    except (TypeError, ValueError, OverflowError):
        raise UsageError(f"{where} must hold numbers, got {given!r}.") from None
    if not np.all(np.isfinite(value)):  # finite in JSON, but too large for the dtype
        raise UsageError(f"{where} holds a number too large for {value.dtype}.")
    if value.shape != np.shape(example):
        raise UsageError(
            f"{where} has shape {value.shape}, but the model expects {np.shape(example)}."
        )
    return jnp.asarray(value)

"""What the experiment scripts of ``experiments/`` share: the checks, the run folder, the
references, and finding the scripts (``gdjax train`` / ``gdjax reproduce`` use it).

Each experiment is a plain script ``experiments/<name>.py`` with ``main(argv) -> dict``
that writes ``runs/<name>/metrics.json``, its PNG plots and a ``summary.md``. Scripts build
on the helpers here (``experiments/`` is on ``sys.path`` when a script runs, whether as
``python experiments/<name>.py`` or through ``gdjax train``)::

    from _harness import Run, close, experiment_parser

    args = experiment_parser(NAME, __doc__).parse_args(argv)
    run = Run(args, NAME, __doc__)
    ...
    return run.finish(checks=[close("final loss", loss, ref, atol=1e-4)], metrics={...})

The scripts live in a source checkout, beside ``gdjax/``; they are not part of an
installed wheel.

A run's outputs appear together or not at all, and a second writer of the same folder is
refused: see ``experiments/_outputs.py``.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import math
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple

import numpy as np
from _outputs import OutputFolder, check_plotting, writing

__all__ = [
    "Check",
    "ResultRow",
    "Run",
    "at_most",
    "autodiff_adjoints",
    "check_plotting",
    "close",
    "describe",
    "experiment_parser",
    "experiments_dir",
    "holds",
    "list_experiments",
    "load_experiment",
    "logistic_lbfgs",
    "logistic_objective",
    "markdown_table",
    "result_row",
    "results_table",
    "to_jsonable",
    "writing",
]

# ----------------------------------------------------------------------------- references


def logistic_objective(theta: np.ndarray, X: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """G3's mean cross-entropy of σ(X·w + b) and its gradient in NumPy float64, written
    independently of gdjax; ``theta = (w, b)`` stacked."""
    z = X @ theta[:-1] + theta[-1]
    loss = np.mean(y * np.logaddexp(0.0, -z) + (1.0 - y) * np.logaddexp(0.0, z))
    r = (0.5 * (1.0 + np.tanh(0.5 * z)) - y) / len(y)  # (σ(z) − y)/m without overflow
    return float(loss), np.concatenate([X.T @ r, [r.sum()]])


def logistic_lbfgs(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    """The reference optimum ``(θ*, J(θ*))`` of :func:`logistic_objective`, by SciPy's
    L-BFGS in float64 with tight tolerances."""
    from scipy.optimize import minimize

    res = minimize(
        logistic_objective,
        np.zeros(X.shape[1] + 1),
        args=(X, y),
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": 10_000, "gtol": 1e-12, "ftol": 1e-15},
    )
    return res.x, float(res.fun)


# ----------------------------------------------------------------------------- checks


class Check(NamedTuple):
    """One key number of an experiment against its independent reference.

    Attributes:
      name: what is compared, e.g. ``"final loss"``.
      value: the number gdjax produced.
      reference: the independent number (closed form, solver, published value), or a
        short description when the check is a property rather than a number.
      criterion: how they are compared, e.g. ``"|Δ| ≤ 1e-4"``.
      ok: whether the criterion holds.
    """

    name: str
    value: float
    reference: float | str | None
    criterion: str
    ok: bool


def close(name: str, value: Any, reference: Any, *, rtol: float = 0.0, atol: float = 0.0) -> Check:
    """``|value − reference| ≤ atol + rtol·|reference|`` (NaN never passes)."""
    v, r = float(value), float(reference)
    ok = bool(abs(v - r) <= atol + rtol * abs(r))
    parts = ([f"{atol:g}"] if atol else []) + ([f"{rtol:g}·|ref|"] if rtol else [])
    return Check(name, v, r, "|Δ| ≤ " + (" + ".join(parts) or "0"), ok)


def at_most(name: str, value: Any, bound: Any) -> Check:
    """``value ≤ bound`` (NaN never passes)."""
    v, b = float(value), float(bound)
    return Check(name, v, b, "≤ reference", bool(v <= b))


def holds(name: str, ok: Any, value: Any, reference: str) -> Check:
    """A property that holds or not; ``value`` is the number that shows it."""
    return Check(name, float(value), reference, "holds", bool(ok))


# ----------------------------------------------------------------------------- runs


def to_jsonable(x: Any) -> Any:
    """Arrays to lists, NumPy/JAX scalars to Python numbers, NaN/inf to None."""
    if isinstance(x, Mapping):
        return {str(k): to_jsonable(v) for k, v in x.items()}
    if isinstance(x, tuple) and hasattr(x, "_asdict"):
        return to_jsonable(x._asdict())
    if isinstance(x, list | tuple):
        return [to_jsonable(v) for v in x]
    if isinstance(x, str | bool) or x is None:
        return x
    if isinstance(x, Path):
        return str(x)
    arr = np.asarray(x)
    if arr.dtype == bool:
        return arr.tolist()
    if arr.dtype.kind in "iu":
        return arr.tolist()
    if arr.dtype.kind == "f":
        out = arr.astype(np.float64).tolist()
        return _nan_to_none(out)
    raise TypeError(f"cannot write {type(x).__name__} to metrics.json")


def _nan_to_none(v: Any) -> Any:
    if isinstance(v, list):
        return [_nan_to_none(u) for u in v]
    return v if math.isfinite(v) else None


def _seed(text: str) -> int:
    """An argparse type: a seed is a whole number in [0, 2**32)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"{value} is not in [0, 2**32)")
    return value


def experiment_parser(name: str, doc: str | None) -> argparse.ArgumentParser:
    """The flags every experiment has: ``--out``, ``--seed``, ``--fast``."""
    from gdjax.cli import OneLineParser

    p = OneLineParser(
        prog=f"gdjax train {name}",
        description=(doc or name).strip().splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--out", default="runs", help="runs are written to OUT/<name>/")
    p.add_argument("--seed", type=_seed, default=0, help="PRNG seed: the same seed, the same run")
    p.add_argument("--fast", action="store_true", help="small sizes (the test suite's mode)")
    return p


class Run:
    """The output folder of one experiment run, ``<out>/<name>/``.

    ``run.png("loss")`` gives the path of a picture; ``run.finish(...)`` writes
    ``metrics.json`` and ``summary.md`` and publishes the folder: until then ``run.dir``
    is a hidden staging folder beside it, and ``<out>/<name>/`` keeps the last finished
    run's files. ``--out`` and matplotlib are checked, and the lock taken, before any work.
    """

    def __init__(self, args: argparse.Namespace, name: str, doc: str | None) -> None:
        self.name, self.title, self.args = name, (doc or name).strip().splitlines()[0], args
        self._folder = OutputFolder(args.out, name)  # checks --out and matplotlib, locks
        self.final, self.dir = self._folder.final, self._folder.dir
        self.pictures: list[tuple[str, Path]] = []
        self._t0 = time.perf_counter()

    def png(self, stem: str, caption: str) -> Path:
        """The path for picture ``<stem>.png``, listed in the summary with ``caption``."""
        path = self.dir / f"{stem}.png"
        self.pictures.append((caption, path))
        return path

    def finish(
        self,
        *,
        checks: Sequence[Check],
        metrics: Mapping[str, Any],
        sections: Sequence[str] = (),
    ) -> dict[str, Any]:
        """Write ``metrics.json`` and ``summary.md``, publish the folder as
        ``<out>/<name>/``; return the metrics as plain Python."""
        out = {
            "experiment": self.name,
            "title": self.title,
            "seed": self.args.seed,
            "fast": bool(self.args.fast),
            "ok": all(c.ok for c in checks),
            "seconds": round(time.perf_counter() - self._t0, 3),
            "out_dir": str(self.final),
            "checks": [c._asdict() for c in checks],
            **metrics,
        }
        out = to_jsonable(out)
        (self.dir / "metrics.json").write_text(json.dumps(out, indent=2) + "\n")
        (self.dir / "summary.md").write_text(self._summary(checks, sections))
        self._publish()
        return out

    def _publish(self) -> None:
        self._folder.publish()
        self.pictures = [(cap, self.final / p.name) for cap, p in self.pictures]
        self.dir = self.final

    def _summary(self, checks: Sequence[Check], sections: Sequence[str]) -> str:
        mode = "fast mode" if self.args.fast else "full mode"
        lines = [
            f"# {self.name}: {self.title}",
            "",
            f"Run with seed {self.args.seed}, {mode}. Reproduce: "
            f"`gdjax train {self.name} --seed {self.args.seed}"
            f"{' --fast' if self.args.fast else ''}`.",
            "",
            "| check | value | reference | criterion | status |",
            "|---|---|---|---|---|",
        ]
        for c in checks:
            ref = _fmt(c.reference) if not isinstance(c.reference, str) else c.reference
            status = "PASS" if c.ok else "**FAIL**"
            cells = (c.name, _fmt(c.value), ref, c.criterion, status)
            lines.append("| " + " | ".join(_cell(x) for x in cells) + " |")
        for s in sections:
            lines += ["", s.strip()]
        if self.pictures:
            lines += ["", "## Pictures", ""]
            lines += [f"![{cap}]({p.name})" + "\n" for cap, p in self.pictures]
        return "\n".join(lines).rstrip() + "\n"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table; numbers are printed with 6 significant digits."""
    cells = [[_cell(c if isinstance(c, str) else _fmt(c)) for c in row] for row in rows]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines)


def autodiff_adjoints(model: Any, params: Any, batch: Any) -> dict[str, Any]:
    """Autodiff's ``dL/du`` for every intermediate ``u`` the model names, through zero
    probes (:func:`gdjax.naming.probe_adjoints`), independently of its hand-written
    backprop (which is used only for the intermediates' shapes)."""
    from gdjax.naming import probe_adjoints

    shapes = model.backprop(params, batch).adjoints
    return probe_adjoints(model.loss, params, batch, {k: shapes[k] for k in model.adjoint_names})


def _cell(text: str) -> str:
    """A Markdown table cell: a ``|`` inside it (``|Δ|``) must not end the cell."""
    return text.replace("|", "\\|")


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, str):
        return v
    v = float(v)
    if v == 0 or 1e-3 <= abs(v) < 1e5:
        return f"{v:.6g}"
    return f"{v:.4e}"


# ----------------------------------------------------------------------------- discovery


def experiments_dir() -> Path:
    """The folder of the experiment scripts (this file's folder)."""
    return Path(__file__).resolve().parent


def _order(name: str) -> tuple[int, str]:
    return (0 if name.startswith("seed") else 1, name)


def list_experiments() -> list[str]:
    """The experiment names, seed documents first (``seed000_…``), then the questions."""
    names = [p.stem for p in experiments_dir().glob("*.py") if not p.stem.startswith("_")]
    return sorted(names, key=_order)


def load_experiment(name: str) -> ModuleType:
    """Import ``experiments/<name>.py`` afresh as a module (it must define ``main``).

    The script imports this module as ``_harness``: its folder goes on ``sys.path`` (as
    ``python experiments/<name>.py`` does), and this module is registered under that name.
    """
    known = list_experiments()
    if name not in known:
        raise ValueError(f"unknown experiment {name!r}. Known: {', '.join(known)}.")
    folder = str(experiments_dir())
    if folder not in sys.path:
        sys.path.insert(0, folder)
    sys.modules.setdefault("_harness", sys.modules[__name__])
    path = experiments_dir() / f"{name}.py"
    module_name = f"_experiments.{name}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None and spec.loader is not None  # a .py file always has a loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    if not callable(getattr(module, "main", None)):
        raise ValueError(f"{path} defines no main(argv) function.")
    return module


def describe(name: str) -> str:
    """The first line of ``experiments/<name>.py``'s docstring ("" if it has none)."""
    try:
        doc = ast.get_docstring(ast.parse((experiments_dir() / f"{name}.py").read_text())) or ""
    except SyntaxError:
        doc = ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


# ----------------------------------------------------------------------------- results


class ResultRow(NamedTuple):
    """One line of ``gdjax reproduce``'s closing table."""

    name: str
    key: str
    reference: str
    status: str  # "PASS", "FAIL" or "ERROR"
    seconds: float


def result_row(
    name: str, metrics: Mapping[str, Any] | None, error: str, seconds: float
) -> ResultRow:
    """The table line of one experiment: its first check is the key figure; ``metrics``
    is ``None`` when the script raised ``error``."""
    if metrics is None:
        return ResultRow(name, error, "–", "ERROR", seconds)
    status = "PASS" if metrics["ok"] else "FAIL"
    first = metrics["checks"][0] if metrics["checks"] else None
    if first is None:
        return ResultRow(name, "–", "–", status, seconds)
    ref = first["reference"]
    ref_text = ref if isinstance(ref, str) else _fmt(ref)
    return ResultRow(
        name,
        f"{first['name']} = {_fmt(first['value'])}",
        f"{ref_text} ({first['criterion']})",
        status,
        seconds,
    )


def results_table(rows: Sequence[ResultRow]) -> str:
    """The rows as a fixed-width table: experiment, key figure, reference, status, seconds."""
    head = ResultRow("experiment", "key figure", "reference", "status", 0.0)
    cols = [max(len(getattr(r, f)) for r in (head, *rows)) for f in ("name", "key", "reference")]
    fmt = f"{{:<{cols[0]}}}  {{:<{cols[1]}}}  {{:<{cols[2]}}}  {{:<6}}  {{:>7}}"
    lines = [fmt.format(head.name, head.key, head.reference, head.status, "seconds")]
    lines.append("-" * len(lines[0]))
    lines += [fmt.format(r.name, r.key, r.reference, r.status, f"{r.seconds:.1f}") for r in rows]
    return "\n".join(lines)

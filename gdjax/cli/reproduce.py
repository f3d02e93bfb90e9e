"""``gdjax reproduce``: the main job, verify every model and run every experiment.

First :func:`gdjax.check.verify_models` (one line per model), then every experiment script
of the checkout's ``experiments/`` with a progress bar (each one's output goes to
``OUT/<name>/log.txt``, or ``OUT/<name>.failed.log`` when it fails), then a table:
experiment, key figure, reference, status, seconds. ``--out`` and ``--only`` are checked
before any work; each experiment's folder is published whole and locked while it runs.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import time
from pathlib import Path
from types import ModuleType

HELP = "the main job: verify every model and run every experiment (from a source checkout)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="runs", help="where runs/<name>/ are written (runs)")
    p.add_argument("--fast", action="store_true", help="small sizes (as in the tests)")
    p.add_argument("--only", default=None, metavar="LIST", help="comma-separated experiments")


def _chosen(only: str | None, known: list[str]) -> list[str]:
    """The experiments ``--only`` names, in the known order (all of them for ``None``)."""
    from gdjax._validate import UsageError

    if only is None:
        return known
    wanted = [s.strip() for s in only.split(",") if s.strip()]
    if not wanted:
        raise UsageError(f"--only names no experiment; known: {', '.join(known)}")
    unknown = [w for w in wanted if w not in known]
    if unknown:
        raise UsageError(f"--only: unknown experiment(s) {unknown}; known: {', '.join(known)}")
    return [n for n in known if n in wanted]


def _verify(fast: bool) -> bool:
    """Print one line per registry model; whether all of them pass."""
    from gdjax.check import verify_models

    ok = True
    for c in verify_models(None, points=10 if fast else 100, key=0):
        ok &= c.ok
        detail = f"  ({c.error})" if c.error else ""
        status = "ok  " if c.ok else "FAIL"
        print(f"  {status} {c.model.id:<3} {c.model.title:<52} {c.seconds:5.1f} s{detail}")
    return ok


def _write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` whole: a temporary file beside it, then a rename."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _run_one(h: ModuleType, name: str, out: Path, fast: bool) -> tuple[dict | None, str]:
    """Run experiment ``name`` holding its folder's lock; ``(metrics, "")`` or
    ``(None, error)``. Its output goes to ``OUT/<name>/log.txt`` beside the run's files, or,
    when it fails, to ``OUT/<name>.failed.log`` (the last good ``<name>/`` is left alone)."""
    argv = ["--out", str(out)] + (["--fast"] if fast else [])
    log = io.StringIO()
    try:
        with h.writing(out, name) as folder:
            try:
                with contextlib.redirect_stdout(log):
                    metrics = h.load_experiment(name).main(argv)
            except Exception as err:  # one broken experiment must not hide the others
                failed = out / f"{name}.failed.log"
                _write(failed, f"{log.getvalue()}\n{type(err).__name__}: {err}\n")
                return None, f"{type(err).__name__}: {err} (log: {failed})"
            _write(folder / "log.txt", log.getvalue())
            (out / f"{name}.failed.log").unlink(missing_ok=True)  # an earlier failure's
            return metrics, ""
    except (OSError, ValueError) as err:  # the folder is locked by another run, unwritable
        return None, f"{type(err).__name__}: {err}"


def run(args: argparse.Namespace) -> int:
    """0 when every model and every experiment's checks pass, 1 otherwise."""
    from tqdm.auto import tqdm

    from gdjax._validate import UsageError
    from gdjax.cli._checkout import harness, writable_dir

    h = harness("reproduce")
    names = _chosen(args.only, h.list_experiments())
    out = writable_dir("--out", args.out, create=True)
    h.check_plotting()  # every experiment draws: refuse now, not after the models
    for name in names:
        if (out / name).exists() and not (out / name).is_dir():
            raise UsageError(f"--out {out}: {out / name} is a file, not a folder")
    t_start = time.perf_counter()

    print("1/2  verify: hand-written backprop vs autodiff vs finite differences")
    verified = _verify(args.fast)

    print(f"\n2/2  experiments ({len(names)}), each writing {out}/<name>/")
    rows = []
    bar = tqdm(names, unit="exp", dynamic_ncols=True, file=sys.stdout)
    for name in bar:
        bar.set_description(f"{name:<18}")
        t0 = time.perf_counter()
        metrics, error = _run_one(h, name, out, args.fast)
        rows.append(h.result_row(name, metrics, error[:60], time.perf_counter() - t0))
    bar.close()

    total = time.perf_counter() - t_start
    print()
    print(h.results_table(rows))
    good = verified and all(r.status == "PASS" for r in rows)
    print(
        f"\nverify: {'all models ok' if verified else 'SOME MODELS FAIL'}; "
        f"experiments: {sum(r.status == 'PASS' for r in rows)}/{len(rows)} pass; "
        f"{total:.0f} s in all."
    )
    print(f"Runs, metrics and plots: {out.resolve()}/<name>/ (summary.md, metrics.json, *.png)")
    return 0 if good else 1

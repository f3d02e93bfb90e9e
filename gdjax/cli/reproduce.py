"""``gdjax reproduce``: the main job, verify every model and run every experiment.

First :func:`gdjax.check.verify_models` (one line per model), then every experiment script
of the checkout's ``experiments/`` with a progress bar (each one's output goes to
``OUT/<name>/log.txt``), then a table: experiment, key figure, reference, status, seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import time

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


def run(args: argparse.Namespace) -> int:
    """0 when every model and every experiment's checks pass, 1 otherwise."""
    from tqdm.auto import tqdm

    from gdjax.cli._checkout import harness, writable_dir

    h = harness("reproduce")
    names = _chosen(args.only, h.list_experiments())
    out = writable_dir("--out", args.out)
    t_start = time.perf_counter()

    print("1/2  verify: hand-written backprop vs autodiff vs finite differences")
    verified = _verify(args.fast)

    print(f"\n2/2  experiments ({len(names)}), each writing {out}/<name>/")
    rows = []
    bar = tqdm(names, unit="exp", dynamic_ncols=True, file=sys.stdout)
    for name in bar:
        bar.set_description(f"{name:<18}")
        t0 = time.perf_counter()
        metrics, error = None, ""
        argv = ["--out", str(out)] + (["--fast"] if args.fast else [])
        log = io.StringIO()
        try:
            with contextlib.redirect_stdout(log):
                metrics = h.load_experiment(name).main(argv)
        except Exception as err:  # one broken experiment must not hide the others
            error = f"{type(err).__name__}: {err}"
        (out / name).mkdir(parents=True, exist_ok=True)
        (out / name / "log.txt").write_text(log.getvalue() + (f"\n{error}\n" if error else ""))
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

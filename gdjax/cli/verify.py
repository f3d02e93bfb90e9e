"""``gdjax verify [MODEL ...]``: every model's hand-written backprop against autodiff."""

from __future__ import annotations

import argparse
import json

HELP = "check every model's hand-written backprop against autodiff and finite differences"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("models", nargs="*", metavar="MODEL", help="model ids (default: all)")
    p.add_argument("--json", action="store_true", help="print a JSON report instead of a table")
    p.add_argument("--points", type=int, default=100, help="random points per model (100)")
    p.add_argument("--seed", type=int, default=0, help="PRNG seed for the random points")
    p.add_argument(
        "--html",
        default=None,
        metavar="FILE",
        help="with one MODEL: write its graph with hand-written beside autodiff (HTML)",
    )


def run(args: argparse.Namespace) -> int:
    """0 when every model passes, 1 when one fails."""
    from gdjax.check import verify_models

    html_path = _html_path(args)  # checked before any model runs
    checks = list(verify_models(args.models, points=args.points, key=args.seed))
    if html_path is not None:
        _write_html(checks[0], html_path)
    failed = [c.model.id for c in checks if not c.ok]
    if args.json:
        models = [
            c.report.to_dict()
            if c.report is not None
            else {"subject": c.model.id, "title": c.model.title, "ok": False, "error": c.error}
            for c in checks
        ]
        print(json.dumps({"ok": not failed, "failed": failed, "models": models}, indent=2))
    else:
        texts = [
            c.report.table()
            if c.report is not None
            else f"{c.model.id}: {c.model.title}\nFAIL {c.model.id}: the check raised {c.error}"
            for c in checks
        ]
        print("\n\n".join(texts))
        verdict = f"FAILED: {', '.join(failed)}" if failed else "all ok"
        print(f"\nverify: {len(checks)} model(s), {verdict}")
        if html_path is not None:
            print(f"wrote {html_path}")
    return 1 if failed else 0


def _html_path(args: argparse.Namespace):
    """The ``--html`` file, checked: one MODEL, a writable ``.html`` path."""
    if args.html is None:
        return None
    from gdjax._validate import UsageError
    from gdjax.cli._checkout import writable_file

    if len(args.models) != 1:
        raise UsageError(
            f"--html draws one model's graph; name exactly one MODEL (got "
            f"{len(args.models) or 'none'}), e.g. gdjax verify N1 --html n1.html"
        )
    path = writable_file("--html", args.html)
    if path.suffix.lower() not in (".html", ".htm"):
        raise UsageError(f"--html {args.html}: the file name must end in .html")
    return path


def _write_html(check, path) -> None:
    """The model's graph at its example point, each named step coloured by the check."""
    from gdjax.graph import trace
    from gdjax.graph.html import check_html, to_html

    model = check.model
    params, batch = model.example()
    graph = trace(model.loss, params, batch)
    title = f"{model.id}: hand-written backprop vs autodiff"
    if check.report is None:
        to_html(graph, path, title=f"{title} (the check raised {check.error})")
        return
    check_html(graph, check.report, path, hand=model.backprop(params, batch), title=title)

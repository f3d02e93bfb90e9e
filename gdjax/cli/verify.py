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


def run(args: argparse.Namespace) -> int:
    """0 when every model passes, 1 when one fails."""
    from gdjax.check import verify_models

    checks = list(verify_models(args.models, points=args.points, key=args.seed))
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
    return 1 if failed else 0

"""``gdjax train [EXPERIMENT [flags]]``: run one experiment of a source checkout, or list them."""

from __future__ import annotations

import argparse

HELP = "run one experiment: gdjax train EXPERIMENT [flags]"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("experiment", nargs="?", default=None, help="name (omit to list them)")
    p.add_argument("args", nargs=argparse.REMAINDER, help="flags passed to the experiment")


def run(args: argparse.Namespace) -> int:
    """0 when the experiment's checks pass (or it lists them), 1 when one fails."""
    from gdjax.cli._checkout import harness

    h = harness("train")
    if args.experiment is None:
        print("Experiments (run one with `gdjax train NAME [--fast] [--seed N] [--out DIR]`):")
        for name in h.list_experiments():
            print(f"  {name:<20} {h.describe(name)}")
        return 0
    metrics = h.load_experiment(args.experiment).main(list(args.args))
    status = "all checks pass" if metrics["ok"] else "SOME CHECKS FAIL"
    print(
        f"\n{args.experiment}: {status} ({metrics['seconds']:.1f} s). "
        f"Results in {metrics.get('out_dir', '')}/"
    )
    return 0 if metrics["ok"] else 1

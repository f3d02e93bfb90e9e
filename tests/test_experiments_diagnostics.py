"""The diagnostics experiments in fast mode: edge_of_stability, lr_find, loss_landscape; each
listed by the harness (so in gdjax reproduce and gdjax train NAME). seed003_deep's in-run
gradient flow is one of its own checks (step 0 against the hand-written norms), run by
tests/test_experiments_seed002_003.py, which requires every check to pass."""

from __future__ import annotations

import json

import numpy as np
import pytest

from _harness import list_experiments, load_experiment

NEW = ("edge_of_stability", "lr_find", "loss_landscape")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return tmp_path_factory.mktemp("runs")


def _run(name: str, out, *extra: str) -> dict:
    metrics = load_experiment(name).main(["--fast", "--out", str(out), *extra])
    on_disk = json.loads((out / name / "metrics.json").read_text())
    assert on_disk["experiment"] == name and on_disk["fast"] is True
    failed = [c["name"] for c in on_disk["checks"] if not c["ok"]]
    assert on_disk["ok"], f"{name}: failed checks {failed}"
    return metrics


def _png(path) -> None:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5_000, path


def test_the_new_experiments_are_listed():
    assert set(NEW) <= set(list_experiments())


def test_edge_of_stability_sharpness_hovers_at_two_over_eta(runs):
    out = _run("edge_of_stability", runs, "--etas", "0.4,0.5", "--steps", "240")
    for eta in (0.4, 0.5):
        s = np.asarray(out["sharpness"][f"{eta:g}"], np.float64)
        assert s[0] > 2 / eta  # it starts sharper than 2/η, then falls and settles
        assert abs(np.median(s[len(s) * 2 // 3 :]) - 2 / eta) <= 0.1 * 2 / eta
    _png(runs / "edge_of_stability" / "sharpness.png")


def test_lr_find_suggests_below_the_edges(runs):
    # R2 and G3 only: their checks are the closed-form ones (D1's compile is the costly one)
    out = _run("lr_find", runs, "--num", "10", "--steps", "15", "--models", "R2,G3")
    r2, g3 = out["R2"], out["G3"]
    # R2 is a quadratic on real data (diabetes): the edge is the first tried rate above 2/L
    assert r2["suggestion"] < out["two_over_L"]["R2"] < r2["edge"]
    rates = np.asarray(r2["rates"])
    assert r2["edge"] == rates[rates > out["two_over_L"]["R2"]][0]
    assert not any(d for r, d in zip(g3["rates"], g3["diverged"]) if r < out["two_over_L"]["G3"])
    for name in ("R2", "G3"):
        _png(runs / "lr_find" / f"lr_find_{name}.png")


def test_loss_landscape_grids_match_direct_evaluation(runs):
    out = _run("loss_landscape", runs, "--grid", "7", "--steps", "30")
    for explained in out["pca_explained"].values():
        assert 0.5 < sum(explained) <= 1.0 + 1e-9
    for stem in ("random_1d", "random_2d", "pca_gd", "pca_momentum", "pca_adam"):
        _png(runs / "loss_landscape" / f"{stem}.png")

"""What Jupyter shows (gdjax._notebook), and the tutorial notebook run from top to bottom.

The tutorial (docs/tutorial.ipynb) is executed with nbclient in a fresh kernel; its own
cells assert the numbers (G1: u = 6, dJ/du = 3; the planted slip found at dL/dv).
"""

from __future__ import annotations

import re
import types
from pathlib import Path

import numpy as np
import pytest

import gdjax as gd
from gdjax._notebook import fit_result_html, loss_curve_svg, report_html

TUTORIAL = Path(__file__).resolve().parent.parent / "docs" / "tutorial.ipynb"


def _result(losses, *, diverged_at=-1, final=0.25, steps=None):
    losses = np.asarray(losses, dtype=np.float32)
    return types.SimpleNamespace(
        params={},
        losses=losses,
        final_loss=np.float32(final),
        steps=np.int32(len(losses) if steps is None else steps),
        diverged=np.bool_(diverged_at >= 0),
        diverged_at=np.int32(diverged_at),
    )


def _cells(page: str) -> dict[str, str]:
    return dict(re.findall(r"<th[^>]*>([^<]*)</th><td[^>]*>([^<]*)</td>", page))


def test_fit_result_table_and_curve():
    page = fit_result_html(_result([1.0, 0.5, 0.25, 0.125], final=0.0625))
    assert _cells(page) == {
        "steps": "4",
        "diverged": "no",
        "recorded losses": "4",
        "first loss": "1",
        "last recorded": "0.125",
        "final loss": "0.0625",
    }
    assert "<svg" in page and "log10 loss" in page


def test_a_diverged_run_leaves_its_nan_padding_out_of_the_curve():
    page = fit_result_html(_result([2.0, 4.0, np.inf, np.nan, np.nan], diverged_at=2, steps=2))
    cells = _cells(page)
    assert cells["diverged"] == "yes, at step 2" and cells["last recorded"] == "4"
    (points,) = re.findall(r'points="([^"]*)"', page)
    assert len(points.split()) == 2  # the two finite losses only


def test_loss_curve_geometry():
    svg = loss_curve_svg([100.0, 10.0, 1.0], width=224, height=130)
    (points,) = re.findall(r'points="([^"]*)"', svg)
    xy = np.array([p.split(",") for p in points.split()], dtype=float)
    # log axis: one decade per step, equal drops; x from the left pad to the right edge
    np.testing.assert_allclose(np.diff(xy[:, 1]), [50.0, 50.0])
    np.testing.assert_allclose(xy[[0, -1], 0], [24.0, 218.0])
    assert "log10 loss" in svg
    assert "(loss)" in loss_curve_svg([1.0, -1.0, 0.5])  # a negative loss: linear axis
    assert loss_curve_svg([np.nan, 1.0]) == ""


def test_sweep_results_are_summarised_by_run():
    runs = _result([[1.0, 0.5], [1.0, np.nan]])
    runs.diverged = np.array([False, True])
    runs.final_loss = np.array([0.4, np.nan], dtype=np.float32)
    cells = _cells(fit_result_html(runs))
    assert cells["runs"] == "2" and cells["diverged"] == "1 of 2"
    assert cells["final loss"] == "0.4"


def test_report_table_names_failures():
    import jax.numpy as jnp

    def loss(p, batch):
        return 3 * (p["a"] + gd.name(p["b"] * p["c"], "u"))

    def backprop(p, batch):  # dJ/db should be 3c
        one = jnp.ones_like(p["a"])
        return (
            3 * (p["a"] + p["b"] * p["c"]),
            {"a": 3 * one, "b": 3 * p["b"], "c": 3 * p["b"]},
            {"u": 3 * one},
        )

    params = {"a": jnp.float32(5), "b": jnp.float32(3), "c": jnp.float32(2)}
    page = report_html(gd.check_backprop((loss, backprop), params, None, points=3))
    assert "FAILED" in page
    rows = re.findall(r"<tr>(.*?)</tr>", page)
    wrong = [r for r in rows if "dL/db" in r]
    assert len(wrong) == 1 and "#e03131" in wrong[0]
    assert sum("#2f9e44" in r for r in rows) == 4  # L, dL/da, dL/dc, dL/du agree


def test_the_tutorial_notebook_runs(tmp_path):
    nbformat = pytest.importorskip("nbformat", reason="pip install nbformat (test extra)")
    nbclient = pytest.importorskip("nbclient", reason="pip install nbclient (test extra)")
    pytest.importorskip("ipykernel", reason="pip install ipykernel (test extra)")
    nb = nbformat.read(TUTORIAL, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert errors == []
    text = "\n".join(
        o.get("text", "")
        for c in nb.cells
        for o in c.get("outputs", [])
        if o.output_type == "stream"
    )
    assert "first wrong step: dL/dv" in text and "best:" in text
    graph_cell = next(c for c in nb.cells if "graph = gd.trace" in c.source)
    html_out = [o for o in graph_cell.outputs if o.output_type == "execute_result"]
    assert html_out and "text/html" in html_out[0]["data"]  # Graph._repr_html_

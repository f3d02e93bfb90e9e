"""The one-pass gradient of gdjax.blocked, and the `gdjax bench` harness (no timings)."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gdjax.blocked import linear_value_and_grad, sharded_linear_value_and_grad
from gdjax.losses import bce_with_logits
from tests.helpers import assert_tree_allclose


def _logistic(params, batch):
    X, y = batch
    return jnp.mean(bce_with_logits(X @ params["w"] + params["b"], y))


def _squared(params, batch):
    X, y = batch
    return jnp.mean(jnp.square(X @ params["w"] + params["b"] - y))


REFERENCE = {"logistic": _logistic, "squared": _squared}


def _problem(m, n, dtype, seed=0):
    kx, kw, ky = jax.random.split(jax.random.key(seed), 3)
    X = jax.random.normal(kx, (m, n), dtype)
    w = jax.random.normal(kw, (n,), dtype)
    y = (jax.random.uniform(ky, (m,), dtype) < jax.nn.sigmoid(X @ w)).astype(dtype)
    params = {"w": 0.5 * w, "b": jnp.asarray(0.3, dtype)}
    return params, (X, y)


# m = 1000 with block_rows 128 leaves a ragged last block of 104 rows; 1024 divides exactly;
# block_rows > m is one (ragged) block.
@pytest.mark.parametrize("loss", ["logistic", "squared"])
@pytest.mark.parametrize(("m", "block_rows"), [(1000, 128), (1024, 128), (37, 64)])
def test_one_pass_equals_autodiff_float64(x64, loss, m, block_rows):
    params, batch = _problem(m, 7, jnp.float64)
    vg = jax.jit(linear_value_and_grad(loss, block_rows=block_rows))
    value, grads = vg(params, batch)
    ref_value, ref_grads = jax.value_and_grad(REFERENCE[loss])(params, batch)
    assert value.dtype == jnp.float64 and grads["w"].dtype == jnp.float64
    np.testing.assert_allclose(value, ref_value, rtol=1e-12)
    assert_tree_allclose(grads, ref_grads, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("loss", ["logistic", "squared"])
def test_one_pass_equals_autodiff_float32(loss):
    params, batch = _problem(5000, 20, jnp.float32, seed=1)
    value, grads = jax.jit(linear_value_and_grad(loss, block_rows=300, unroll=2))(params, batch)
    with jax.enable_x64(True):  # the reference in float64, so only our rounding is measured
        p64 = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), params)
        b64 = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), batch)
        ref_value, ref_grads = jax.value_and_grad(REFERENCE[loss])(p64, b64)
        ref_value, ref_grads = np.asarray(ref_value), jax.tree_util.tree_map(np.asarray, ref_grads)
    assert value.dtype == jnp.float32
    np.testing.assert_allclose(value, ref_value, rtol=1e-5)
    scale = np.max(np.abs(ref_grads["w"]))
    np.testing.assert_allclose(grads["w"], ref_grads["w"], rtol=1e-5, atol=1e-5 * scale)
    np.testing.assert_allclose(grads["b"], ref_grads["b"], rtol=1e-5, atol=1e-5 * scale)


def test_matches_the_registry_models(x64):
    """Same numbers as G3's and R2's own losses (jax.grad) on their data layout."""
    from gdjax.models import get

    for model_id, loss in (("G3", "logistic"), ("R2", "squared")):
        params, batch = _problem(301, 5, jnp.float64, seed=2)
        value, grads = linear_value_and_grad(loss, block_rows=64)(params, batch)
        ref_value, ref_grads = jax.value_and_grad(get(model_id).loss)(params, batch)
        np.testing.assert_allclose(value, ref_value, rtol=1e-12, err_msg=model_id)
        assert_tree_allclose(grads, ref_grads, rtol=1e-12, atol=1e-14, err_msg=model_id)


def test_sharded_over_a_mesh_equals_autodiff(x64):
    """shard_map over the rows with a psum of the sums (here on the devices there are)."""
    from jax.sharding import Mesh

    devices = jax.devices()
    params, batch = _problem(120 * len(devices), 4, jnp.float64, seed=4)
    mesh = Mesh(np.array(devices), ("rows",))
    vg = sharded_linear_value_and_grad("squared", mesh=mesh, axis="rows", block_rows=50)
    value, grads = jax.jit(vg)(params, batch)
    ref_value, ref_grads = jax.value_and_grad(_squared)(params, batch)
    np.testing.assert_allclose(value, ref_value, rtol=1e-12)
    assert_tree_allclose(grads, ref_grads, rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match="axis"):
        sharded_linear_value_and_grad(mesh=mesh, axis="data")
    if len(devices) > 1:
        with pytest.raises(ValueError, match="multiple"):
            vg(params, (batch[0][1:], batch[1][1:]))


def test_axis_name_adds_the_shards():
    """Under vmap with an axis name, each of 3 shards returns the mean over all of them."""
    params, (X, y) = _problem(300, 5, jnp.float32, seed=5)
    vg = linear_value_and_grad("logistic", block_rows=40, axis_name="shards")
    values, grads = jax.vmap(vg, in_axes=(None, 0), axis_name="shards")(
        params, (X.reshape(3, 100, 5), y.reshape(3, 100))
    )
    ref_value, ref_grads = jax.value_and_grad(_logistic)(params, (X, y))
    np.testing.assert_allclose(values, np.full(3, ref_value), rtol=1e-5)
    np.testing.assert_allclose(grads["w"], np.tile(ref_grads["w"], (3, 1)), rtol=1e-5, atol=1e-6)


def test_logistic_is_finite_at_huge_logits():
    params = {"w": jnp.array([1e4], jnp.float32), "b": jnp.float32(0.0)}
    batch = (jnp.array([[1.0], [-1.0]], jnp.float32), jnp.array([0.0, 1.0], jnp.float32))
    value, grads = linear_value_and_grad("logistic")(params, batch)
    # both examples are wrong by a margin of 1e4: loss = 1e4 each, dz = (1, -1)
    np.testing.assert_allclose(value, 1e4, rtol=1e-6)
    np.testing.assert_allclose(grads["w"], [1.0], rtol=1e-6)
    np.testing.assert_allclose(grads["b"], 0.0, atol=1e-6)


def _fit_or_skip():
    train = pytest.importorskip("gdjax.train")
    return train.fit


def test_as_value_and_grad_of_fit():
    """fit with the one-pass gradient follows the same path as plain GD with jax.grad."""
    fit = _fit_or_skip()
    params, batch = _problem(999, 6, jnp.float32, seed=3)
    vg = linear_value_and_grad("logistic", block_rows=100)
    res = fit(_logistic, params, optax.sgd(0.5), batch, steps=20, value_and_grad=vg)
    p = params
    losses = []
    for _ in range(20):
        value, g = jax.value_and_grad(_logistic)(p, batch)
        losses.append(value)
        p = jax.tree_util.tree_map(lambda a, d: a - 0.5 * d, p, g)
    assert_tree_allclose(res.params, p, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(res.losses, np.asarray(losses), rtol=1e-5)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="loss"):
        linear_value_and_grad("hinge")
    with pytest.raises(ValueError, match="block_rows"):
        linear_value_and_grad(block_rows=0)
    vg = linear_value_and_grad()
    params, (X, y) = _problem(10, 3, jnp.float32)
    with pytest.raises(ValueError, match=r"X must have shape \(m, n\)"):
        vg(params, (X[0], y))
    with pytest.raises(ValueError, match="y must hold m = 10"):
        vg(params, (X, y[:5]))
    with pytest.raises(ValueError, match="keys 'w'"):
        vg({"W": params["w"]}, (X, y))
    with pytest.raises(TypeError, match="pair"):
        vg(params, X)


def test_cli_bench_quick_writes_json(tmp_path, capsys):
    from gdjax.cli import main

    out = tmp_path / "bench.json"
    assert main(["bench", "--quick", "--only", "pass,backprop", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert set(result) == {"machine", "quick", "sections", "rows"}
    assert result["quick"] is True and result["machine"]["cpu_count"] >= 1
    assert set(result["sections"]) == {"pass", "backprop"}
    passes = {r["name"]: r for r in result["sections"]["pass"]["rows"]}
    one_pass = passes["G3 logistic step / X@w (one-pass)"]
    assert one_pass["goal"] == "<= 1.3" and one_pass["ratio"] > 0
    assert one_pass["met"] == (one_pass["ratio"] <= 1.3)
    assert np.isclose(one_pass["ratio"], one_pass["t_candidate"] / one_pass["t_baseline"])
    ids = {r["name"].split()[0] for r in result["sections"]["backprop"]["rows"]}
    assert {"G1", "G3", "R2"} <= ids
    printed = capsys.readouterr().out
    assert "G3 logistic step / X@w (one-pass)" in printed and "ratio" in printed


def test_only_rejects_unknown_sections(capsys):
    from gdjax.cli import main

    assert main(["bench", "--only", "pass,speed"]) == 2
    assert "fit,sweep,pass,backprop" in capsys.readouterr().err


def test_bench_json_folder_is_checked_before_running(tmp_path, capsys):
    import time

    from gdjax.cli import main

    t0 = time.perf_counter()
    assert main(["bench", "--json", str(tmp_path / "no_such_dir" / "x.json")]) == 2
    assert time.perf_counter() - t0 < 5.0  # refused before any section ran
    captured = capsys.readouterr()
    assert "--json" in captured.err and "does not exist" in captured.err
    assert "bench fit" not in captured.err and "Traceback" not in captured.err
    assert main(["bench", "--json", str(tmp_path)]) == 2  # a folder, not a file
    assert "--json" in capsys.readouterr().err


def test_bench_from_an_installed_wheel_is_refused(tmp_path, monkeypatch, capsys):
    """Without benchmarks/ beside the package the command says what it needs."""
    import gdjax
    from gdjax.cli import main

    (tmp_path / "gdjax").mkdir()
    monkeypatch.setattr(gdjax, "__file__", str(tmp_path / "gdjax" / "__init__.py"))
    assert main(["bench", "--quick"]) == 2
    err = capsys.readouterr().err
    assert "needs a source checkout of gdjax" in err and "benchmarks/" in err


def test_benchmark_helpers_and_import_changes_no_jax_setting():
    before = jax.config.jax_num_cpu_devices
    import benchmarks
    from benchmarks._timing import Row, time_side_by_side

    assert jax.config.jax_num_cpu_devices == before  # only the benchmark's entry sets it
    assert set(benchmarks.SECTIONS) == {
        "expert",
        "fit",
        "sweep",
        "pass",
        "backprop",
        "checker",
        "scaling",
    }
    assert set(benchmarks.QUICK) == set(benchmarks.SECTIONS)
    assert benchmarks.parse_only(" pass, backprop ") == ["pass", "backprop"]
    for bad in (",", "", "speed"):
        with pytest.raises(ValueError, match="expert,fit,sweep,pass,backprop"):
            benchmarks.parse_only(bad)
    times = time_side_by_side({"a": lambda: 1, "b": lambda: 2}, repeats=3, number=2)
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3}
    row = Row("pass", "x", "c", "b", 1.2, 1.0, "call", 1.2, goal="<= 1.3")
    assert row.met and row.to_dict()["met"] is True
    assert Row("fit", "x", "c", "b", 1.0, 50.0, "step", 50.0, goal=">= 100").met is False
    assert Row("fit", "x", "c", "b", 1.0, 1.0, "step", 1.0).met is None
